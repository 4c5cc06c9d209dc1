//! Templates in SQLite: one row per version, and a head per name (its latest version and
//! whether it was deleted; versions stay for the messages accepted with them).

use async_trait::async_trait;
use herald_common::api::TemplateSpec;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, corrupt};
use crate::store::{StoreResult, TemplateRecord, Templates};

#[async_trait]
impl Templates for SqliteStore {
    async fn put_template(&self, name: &str, spec: &TemplateSpec, now: i64) -> StoreResult<u32> {
        let name = name.to_string();
        let json = serde_json::to_string(spec)
            .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
        self.write(move |c| {
            let latest: Option<u32> = c
                .prepare_cached("SELECT latest FROM template_heads WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            let version = latest.unwrap_or(0) + 1;
            c.prepare_cached(
                "INSERT INTO templates (name, version, spec, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name, version, json, now])?;
            c.prepare_cached(
                "INSERT INTO template_heads (name, latest, deleted) VALUES (?1, ?2, 0)
                 ON CONFLICT (name) DO UPDATE SET latest = excluded.latest, deleted = 0",
            )?
            .execute(params![name, version])?;
            Ok(version)
        })
        .await
    }

    async fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<TemplateRecord>> {
        let name = name.to_string();
        self.read(move |c| {
            let version = match version {
                Some(v) => v,
                None => {
                    let head: Option<(u32, bool)> = c
                        .prepare_cached(
                            "SELECT latest, deleted FROM template_heads WHERE name = ?1",
                        )?
                        .query_row([&name], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    match head {
                        Some((v, false)) => v,
                        _ => return Ok(None),
                    }
                }
            };
            let row: Option<(String, i64)> = c
                .prepare_cached(
                    "SELECT spec, created_at FROM templates WHERE name = ?1 AND version = ?2",
                )?
                .query_row(params![name, version], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(json, created_at)| {
                Ok(TemplateRecord {
                    name: name.clone(),
                    version,
                    created_at,
                    spec: serde_json::from_str(&json).map_err(corrupt)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn latest_template(&self, name: &str) -> StoreResult<Option<u32>> {
        let name = name.to_string();
        self.read(move |c| {
            let head: Option<(u32, bool)> = c
                .prepare_cached("SELECT latest, deleted FROM template_heads WHERE name = ?1")?
                .query_row([&name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(head.and_then(|(v, deleted)| (!deleted).then_some(v)))
        })
        .await
    }

    async fn templates(&self) -> StoreResult<Vec<(String, u32)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, latest FROM template_heads WHERE deleted = 0 ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn delete_template(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE template_heads SET deleted = 1 WHERE name = ?1 AND deleted = 0",
            )?
            .execute([&name])?
                > 0)
        })
        .await
    }
}
