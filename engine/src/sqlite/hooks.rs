//! Status webhooks in SQLite: the endpoints (`webhooks`), every queued delivery
//! (`hook_deliveries`: in memory too, per webhook, ordered by due time) and the delivery
//! log (`hook_log`, the newest [`LOG_LIMIT`] per webhook).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use herald_common::time::now_ms;
use rusqlite::{Connection, params};
use tokio_util::sync::CancellationToken;

use super::{SqliteStore, corrupt};
use crate::hooks::{
    HookAttempt, HookDelivery, HookLanes, HookLease, HookSettle, HookSettler, LOG_LIMIT, Queued,
    WebhookRecord, Webhooks,
};
use crate::store::{AttemptRecord, JobNext, StoreResult};

/// Refills the in-memory queues from the rows, on open.
pub(super) fn load(c: &Connection) -> rusqlite::Result<HookLanes> {
    let lanes = HookLanes::default();
    let mut stmt = c.prepare("SELECT webhook, id, body, attempt, due_at FROM hook_deliveries")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Queued {
                id: r.get(1)?,
                body: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                attempt: r.get(3)?,
            },
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (webhook, queued, due) = row?;
        lanes.push(&webhook, due, queued);
    }
    Ok(lanes)
}

/// Log lines written, to trim each webhook's log now and then rather than on every line.
static LOG_WRITES: AtomicU64 = AtomicU64::new(0);

/// Adds a line to a webhook's log; now and then trims it to the newest [`LOG_LIMIT`].
fn log_line(c: &Connection, webhook: &str, line: &str, trim: bool) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO hook_log (webhook, entry) VALUES (?1, ?2)")?
        .execute(params![webhook, line])?;
    if trim {
        c.prepare_cached(
            "DELETE FROM hook_log WHERE webhook = ?1 AND seq <= (
                 SELECT seq FROM hook_log WHERE webhook = ?1
                 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?
        .execute(params![webhook, LOG_LIMIT as i64])?;
    }
    Ok(())
}

/// Inserts queued deliveries; says which were new (one queued already is left alone).
fn insert_rows(c: &Connection, rows: &[HookDelivery], now: i64) -> rusqlite::Result<Vec<bool>> {
    let mut insert = c.prepare_cached(
        "INSERT OR IGNORE INTO hook_deliveries (id, webhook, body, attempt, due_at)
         VALUES (?1, ?2, ?3, 1, ?4)",
    )?;
    let mut inserted = Vec::with_capacity(rows.len());
    for d in rows {
        inserted.push(insert.execute(params![d.id, d.webhook, d.body.as_ref(), now])? == 1);
    }
    Ok(inserted)
}

impl SqliteStore {
    /// After the commit: the new deliveries join their webhooks' in-memory queues (one
    /// queued already, announced again after a crash, is not queued twice).
    fn queue_inserted(&self, deliveries: Vec<HookDelivery>, inserted: Vec<bool>, now: i64) {
        for (d, _) in deliveries.into_iter().zip(inserted).filter(|(_, new)| *new) {
            self.hooks.push(
                &d.webhook,
                now,
                Queued {
                    id: d.id,
                    attempt: 1,
                    body: d.body,
                },
            );
        }
    }
}

struct RowSettler {
    store: SqliteStore,
    webhook: String,
    queued: Queued,
}

#[async_trait]
impl HookSettler for RowSettler {
    async fn settle(self: Box<Self>, how: HookSettle, attempt: HookAttempt) {
        let RowSettler {
            store,
            webhook,
            mut queued,
        } = *self;
        let (w, id) = (webhook.clone(), queued.id.clone());
        let line = serde_json::to_string(&attempt).unwrap_or_default();
        let trim = LOG_WRITES
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(100);
        let written = match how {
            HookSettle::Done => {
                store
                    .write(move |c| {
                        log_line(c, &w, &line, trim)?;
                        c.prepare_cached(
                            "DELETE FROM hook_deliveries WHERE webhook = ?1 AND id = ?2",
                        )?
                        .execute(params![w, id])
                    })
                    .await
            }
            HookSettle::Retry(after) => {
                let due = now_ms() + after.as_millis() as i64;
                queued.attempt += 1;
                let attempt = queued.attempt;
                let written = store
                    .write(move |c| {
                        log_line(c, &w, &line, trim)?;
                        c.prepare_cached(
                            "UPDATE hook_deliveries SET attempt = ?3, due_at = ?4
                             WHERE webhook = ?1 AND id = ?2",
                        )?
                        .execute(params![w, id, attempt, due])
                    })
                    .await;
                // Deleted meanwhile: the webhook is gone.
                if matches!(written, Ok(1)) {
                    store.hooks.push(&webhook, due, queued);
                }
                written
            }
        };
        if let Err(e) = written {
            tracing::warn!(webhook = %webhook, error = %e, "could not record a webhook delivery");
        }
    }
}

#[async_trait]
impl Webhooks for SqliteStore {
    async fn put_webhook(&self, hook: &WebhookRecord) -> StoreResult<()> {
        let json =
            serde_json::to_string(hook).map_err(|e| crate::StoreError::Backend(e.to_string()))?;
        let id = hook.id.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO webhooks (id, record) VALUES (?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
            )?
            .execute(params![id, json])?;
            Ok(())
        })
        .await
    }

    async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT record FROM webhooks ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for json in rows {
                out.push(serde_json::from_str::<WebhookRecord>(&json?).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let id_ = id.to_string();
        let deleted = self
            .write(move |c| {
                let n = c
                    .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                    .execute([&id_])?;
                c.prepare_cached("DELETE FROM hook_deliveries WHERE webhook = ?1")?
                    .execute([&id_])?;
                c.prepare_cached("DELETE FROM hook_log WHERE webhook = ?1")?
                    .execute([&id_])?;
                Ok(n > 0)
            })
            .await?;
        self.hooks.remove(id);
        Ok(deleted)
    }

    async fn advance_queueing(
        &self,
        message_id: &str,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
        deliveries: Vec<HookDelivery>,
    ) -> Option<StoreResult<()>> {
        let now = now_ms();
        let rows = deliveries.clone();
        let message_id = message_id.to_string();
        let inserted = self
            .write(move |c| {
                super::messages::advance_rows(c, &message_id, idx, &attempt, &next)?;
                insert_rows(c, &rows, now)
            })
            .await;
        Some(inserted.map(|inserted| self.queue_inserted(deliveries, inserted, now)))
    }

    async fn enqueue_hooks(&self, deliveries: Vec<HookDelivery>) -> StoreResult<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let rows = deliveries.clone();
        let inserted = self.write(move |c| insert_rows(c, &rows, now)).await?;
        self.queue_inserted(deliveries, inserted, now);
        Ok(())
    }

    async fn next_hooks(
        &self,
        webhook: &str,
        max: usize,
        stop: &CancellationToken,
    ) -> Option<Vec<HookLease>> {
        let due = self.hooks.pop(webhook, max, stop).await?;
        Some(
            due.into_iter()
                .map(|queued| {
                    let delivery = HookDelivery {
                        id: queued.id.clone(),
                        webhook: webhook.to_string(),
                        body: queued.body.clone(),
                    };
                    let attempt = queued.attempt;
                    HookLease::new(
                        delivery,
                        attempt,
                        Box::new(RowSettler {
                            store: self.clone(),
                            webhook: webhook.to_string(),
                            queued,
                        }),
                    )
                })
                .collect(),
        )
    }

    async fn hook_backlog(&self, webhook: &str) -> StoreResult<u64> {
        let webhook = webhook.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT COUNT(*) FROM hook_deliveries WHERE webhook = ?1")?
                .query_row([webhook], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
        .await
    }

    async fn hook_log(&self, webhook: &str, limit: usize) -> StoreResult<Vec<HookAttempt>> {
        let webhook = webhook.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT entry FROM hook_log WHERE webhook = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![webhook, limit as i64], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for json in rows {
                out.push(serde_json::from_str::<HookAttempt>(&json?).map_err(corrupt)?);
            }
            Ok(out)
        })
        .await
    }
}
