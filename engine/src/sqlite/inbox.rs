//! Inbox marks in SQLite: one row per user, the marks as JSON.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, corrupt};
use crate::inbox::{Inbox, InboxChange, InboxMarks};
use crate::store::StoreResult;

fn load(c: &Connection, user_id: &str) -> rusqlite::Result<InboxMarks> {
    let json: Option<String> = c
        .prepare_cached("SELECT marks FROM inbox_marks WHERE user_id = ?1")?
        .query_row([user_id], |r| r.get(0))
        .optional()?;
    match json {
        Some(j) => serde_json::from_str(&j).map_err(corrupt),
        None => Ok(InboxMarks::default()),
    }
}

#[async_trait]
impl Inbox for SqliteStore {
    async fn inbox_marks(&self, user_id: &str) -> StoreResult<InboxMarks> {
        let user_id = user_id.to_string();
        self.read(move |c| load(c, &user_id)).await
    }

    async fn change_inbox(
        &self,
        user_id: &str,
        change: InboxChange,
        at: i64,
    ) -> StoreResult<InboxMarks> {
        let user_id = user_id.to_string();
        self.write(move |c| {
            let mut marks = load(c, &user_id)?;
            marks.apply(&change, at);
            let json = serde_json::to_string(&marks).map_err(corrupt)?;
            c.prepare_cached(
                "INSERT INTO inbox_marks (user_id, marks) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET marks = excluded.marks",
            )?
            .execute(params![user_id, json])?;
            Ok(marks)
        })
        .await
    }
}
