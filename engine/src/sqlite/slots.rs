//! Sliding-window slots in SQLite (frequency caps, robot pacing): one row per taken slot.
//! One writer thread runs every write, so taking a slot is atomic without more locking.

use async_trait::async_trait;
use rusqlite::params;

use super::SqliteStore;
use crate::store::{SlotTaken, Slots, StoreResult, take_from};

#[async_trait]
impl Slots for SqliteStore {
    async fn take_slot(
        &self,
        key: &str,
        token: &str,
        limit: u32,
        window_ms: i64,
        now: i64,
    ) -> StoreResult<SlotTaken> {
        let (key, token) = (key.to_string(), token.to_string());
        self.write(move |c| {
            c.prepare_cached("DELETE FROM slots WHERE key = ?1 AND at <= ?2")?
                .execute(params![key, now - window_ms])?;
            let mut slots: Vec<(String, i64)> = c
                .prepare_cached("SELECT token, at FROM slots WHERE key = ?1")?
                .query_map([&key], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let before = slots.len();
            let taken = take_from(&mut slots, &token, limit, window_ms, now);
            if slots.len() > before {
                c.prepare_cached("INSERT INTO slots (key, token, at) VALUES (?1, ?2, ?3)")?
                    .execute(params![key, token, now])?;
            }
            Ok(taken)
        })
        .await
    }
}
