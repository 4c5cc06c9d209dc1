//! Inboxes and topic histories in SQLite: one table each, a gapless seq per user or topic
//! kept in `streams` (head, and the floor below which entries were trimmed).

use async_trait::async_trait;
use herald_common::protocol::MessageContent;
use herald_common::time::now_ms;
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, corrupt};
use crate::store::{History, HistoryPage, StoreResult};

/// Which sequenced stream a history call is about.
#[derive(Clone, Copy)]
enum StreamKind {
    Inbox,
    Topic,
}

impl StreamKind {
    fn code(self) -> i64 {
        match self {
            StreamKind::Inbox => 0,
            StreamKind::Topic => 1,
        }
    }
    fn table(self) -> &'static str {
        match self {
            StreamKind::Inbox => "inbox",
            StreamKind::Topic => "topic_history",
        }
    }
    fn key(self) -> &'static str {
        match self {
            StreamKind::Inbox => "user_id",
            StreamKind::Topic => "topic",
        }
    }
}

fn append_stream(
    conn: &Connection,
    kind: StreamKind,
    name: &str,
    content: &MessageContent,
    expires_at: Option<i64>,
    limit: u64,
) -> rusqlite::Result<u64> {
    let (table, key) = (kind.table(), kind.key());
    if let Some(seq) = conn
        .prepare_cached(&format!(
            "SELECT seq FROM {table} WHERE {key} = ?1 AND message_id = ?2"
        ))?
        .query_row(params![name, content.id], |r| r.get::<_, i64>(0))
        .optional()?
    {
        return Ok(seq as u64);
    }
    let (head, floor) = stream_bounds(conn, kind, name)?;
    let seq = head + 1;
    let json = serde_json::to_string(content).map_err(corrupt)?;
    conn.prepare_cached(&format!(
        "INSERT INTO {table} ({key}, seq, message_id, content, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?
    .execute(params![name, seq as i64, content.id, json, expires_at])?;
    let new_floor = floor.max((seq + 1).saturating_sub(limit)).max(1);
    if new_floor > floor {
        conn.prepare_cached(&format!(
            "DELETE FROM {table} WHERE {key} = ?1 AND seq < ?2"
        ))?
        .execute(params![name, new_floor as i64])?;
    }
    conn.prepare_cached(
        "INSERT INTO streams (kind, name, head, floor) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, name) DO UPDATE SET head = excluded.head, floor = excluded.floor",
    )?
    .execute(params![kind.code(), name, seq as i64, new_floor as i64])?;
    Ok(seq)
}

/// `(head, floor)`: the newest seq, and the oldest seq still kept (1 until trimming starts).
fn stream_bounds(conn: &Connection, kind: StreamKind, name: &str) -> rusqlite::Result<(u64, u64)> {
    Ok(conn
        .prepare_cached("SELECT head, floor FROM streams WHERE kind = ?1 AND name = ?2")?
        .query_row(params![kind.code(), name], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })
        .optional()?
        .unwrap_or((0, 1)))
}

fn read_stream(
    conn: &Connection,
    kind: StreamKind,
    name: &str,
    since: u64,
    limit: usize,
) -> rusqlite::Result<HistoryPage> {
    let (table, key) = (kind.table(), kind.key());
    let (head, floor) = stream_bounds(conn, kind, name)?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT seq, content FROM {table} WHERE {key} = ?1 AND seq > ?2
         AND (expires_at IS NULL OR expires_at > ?3) ORDER BY seq LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            name,
            since.min(i64::MAX as u64) as i64,
            now_ms(),
            limit as i64
        ],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
    )?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, json) = row?;
        let content: MessageContent = serde_json::from_str(&json).map_err(corrupt)?;
        entries.push((seq, content));
    }
    Ok(HistoryPage {
        entries,
        head,
        complete: since.saturating_add(1) >= floor || head <= since,
    })
}

#[async_trait]
impl History for SqliteStore {
    async fn append_inbox(
        &self,
        user_id: &str,
        content: &MessageContent,
        expires_at: Option<i64>,
    ) -> StoreResult<u64> {
        let (user_id, content, limit) = (
            user_id.to_string(),
            content.clone(),
            self.options.inbox_limit,
        );
        self.write(move |c| {
            append_stream(c, StreamKind::Inbox, &user_id, &content, expires_at, limit)
        })
        .await
    }

    async fn read_inbox(
        &self,
        user_id: &str,
        since: u64,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let user_id = user_id.to_string();
        self.read(move |c| read_stream(c, StreamKind::Inbox, &user_id, since, limit))
            .await
    }

    async fn append_topic(&self, topic: &str, content: &MessageContent) -> StoreResult<u64> {
        let (topic, content, limit) =
            (topic.to_string(), content.clone(), self.options.topic_limit);
        self.write(move |c| append_stream(c, StreamKind::Topic, &topic, &content, None, limit))
            .await
    }

    async fn read_topic(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage> {
        let topic = topic.to_string();
        self.read(move |c| read_stream(c, StreamKind::Topic, &topic, since, limit))
            .await
    }
}
