//! API keys created through the API, in SQLite: `api_keys` (the record as JSON, the key's
//! hash only) and `key_usage` (per key and UTC day).

use async_trait::async_trait;
use rusqlite::params;

use super::{SqliteStore, corrupt};
use crate::keys::{ApiKeyRecord, Keys};
use crate::store::StoreResult;

#[async_trait]
impl Keys for SqliteStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool> {
        let json =
            serde_json::to_string(key).map_err(|e| crate::StoreError::Backend(e.to_string()))?;
        let name = key.name.clone();
        self.write(move |c| {
            let n = c
                .prepare_cached("INSERT OR IGNORE INTO api_keys (name, record) VALUES (?1, ?2)")?
                .execute(params![name, json])?;
            Ok(n == 1)
        })
        .await
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT record FROM api_keys ORDER BY name")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for json in rows {
                out.push(serde_json::from_str::<ApiKeyRecord>(&json?).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_api_key(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM api_keys WHERE name = ?1")?
                .execute([&name])?;
            c.prepare_cached("DELETE FROM key_usage WHERE name = ?1")?
                .execute([&name])?;
            Ok(n > 0)
        })
        .await
    }

    async fn add_key_usage(&self, name: &str, day: i64, n: u64) -> StoreResult<u64> {
        let name = name.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM key_usage WHERE name = ?1 AND day < ?2")?
                .execute(params![name, day])?;
            c.prepare_cached(
                "INSERT INTO key_usage (name, day, used) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, day) DO UPDATE SET used = used + excluded.used
                 RETURNING used",
            )?
            .query_row(params![name, day, n as i64], |r| r.get::<_, i64>(0))
            .map(|u| u as u64)
        })
        .await
    }
}
