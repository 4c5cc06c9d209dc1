//! The `Store` on SQLite: messages, recipients, attempts and jobs, users.

use std::collections::BTreeMap;

use async_trait::async_trait;
use herald_common::api::{
    DeadLetter, DeadLetterPage, DeviceOutcome, MessageStatus, MessageView, Priority, RecipientView,
    UserProfile,
};
use herald_common::time::{now_ms, rfc3339};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, channel_of, corrupt, status_of};
use crate::store::{
    AcceptOutcome, AttemptRecord, IdempotencyClaim, JobNext, JobState, MessageRecord,
    PendingMessage, Phase, Receipt, Stop, Store, StoreError, StoreResult,
};

/// The columns of `attempts` that make an [`AttemptRecord`], in this order.
const ATTEMPT_COLUMNS: &str = "channel, outcome, detail, at, provider, devices";

/// An attempt from a row of [`ATTEMPT_COLUMNS`] starting at column `from`.
fn attempt_of(r: &Row<'_>, from: usize) -> rusqlite::Result<AttemptRecord> {
    let devices: Option<String> = r.get(from + 5)?;
    Ok(AttemptRecord {
        channel: channel_of(&r.get::<_, String>(from)?)?,
        outcome: r.get::<_, String>(from + 1)?.parse().map_err(corrupt)?,
        detail: r.get(from + 2)?,
        at: r.get(from + 3)?,
        provider: r.get(from + 4)?,
        devices: match devices {
            Some(json) => serde_json::from_str::<Vec<DeviceOutcome>>(&json).map_err(corrupt)?,
            None => Vec::new(),
        },
    })
}

/// What of a job's state has no column of its own (stored as JSON in `ext`).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct JobExt {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    done_devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Phase::is_deliver")]
    phase: Phase,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cap_taken: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tried: bool,
}

impl JobExt {
    fn of(state: &JobState) -> Option<String> {
        let ext = JobExt {
            done_devices: state.done_devices.clone(),
            phase: state.phase.clone(),
            cap_taken: state.cap_taken,
            tried: state.tried,
        };
        if ext.done_devices.is_empty() && ext.phase.is_deliver() && !ext.cap_taken && !ext.tried {
            return None;
        }
        serde_json::to_string(&ext).ok()
    }

    fn parse(json: Option<String>) -> rusqlite::Result<JobExt> {
        match json {
            Some(json) => serde_json::from_str(&json).map_err(corrupt),
            None => Ok(JobExt::default()),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn accept(
        &self,
        record: &MessageRecord,
        claim: Option<IdempotencyClaim>,
    ) -> StoreResult<AcceptOutcome> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Backend(e.to_string()))?;
        let id = record.id.clone();
        let created_at = record.created_at;
        let priority = record.priority;
        let (status, due) = (record.first_status(), record.first_due());
        let cancel_key = record.cancel_key.clone();
        let users: Vec<String> = record
            .recipients
            .iter()
            .map(|r| r.user_id.clone())
            .collect();
        self.write(move |c| {
            if let Some(claim) = &claim {
                let prior = c
                    .prepare_cached(
                        "SELECT body_hash, message_id, recipients FROM idempotency WHERE key = ?1",
                    )?
                    .query_row([&claim.key], |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()?;
                if let Some((hash, message_id, recipients)) = prior {
                    return Ok(if hash == claim.body_hash {
                        AcceptOutcome::Duplicate {
                            message_id,
                            recipients: recipients as usize,
                        }
                    } else {
                        AcceptOutcome::Conflict
                    });
                }
                c.prepare_cached(
                    "INSERT INTO idempotency (key, body_hash, message_id, recipients, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    claim.key,
                    claim.body_hash,
                    id,
                    users.len() as i64,
                    created_at
                ])?;
            }
            c.prepare_cached(
                "INSERT INTO messages (id, created_at, priority, record) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, created_at, priority.as_str(), json])?;
            let mut recipient = c.prepare_cached(
                "INSERT INTO recipients (message_id, idx, user_id, status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut job = c.prepare_cached(
                "INSERT INTO jobs (message_id, idx, channel_idx, channel_attempt, due_at)
                 VALUES (?1, ?2, 0, 0, ?3)",
            )?;
            for (idx, user) in users.iter().enumerate() {
                recipient.execute(params![id, idx as i64, user, status.as_str(), created_at])?;
                job.execute(params![id, idx as i64, due])?;
            }
            if let Some(key) = &cancel_key {
                c.prepare_cached(
                    "INSERT INTO cancel_keys (key, message_id, recipients) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![key, id, users.len() as i64])?;
            }
            Ok(AcceptOutcome::Created)
        })
        .await
    }

    async fn advance(
        &self,
        message_id: &str,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
    ) -> StoreResult<()> {
        let message_id = message_id.to_string();
        self.write(move |c| advance_rows(c, &message_id, idx, &attempt, &next))
            .await
    }

    async fn pending(&self) -> StoreResult<Vec<PendingMessage>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT j.message_id, j.idx, j.channel_idx, j.channel_attempt, j.due_at,
                        j.best_status, j.best_channel, m.record, j.ext
                 FROM jobs j JOIN messages m ON m.id = j.message_id
                 ORDER BY j.message_id, j.idx",
            )?;
            let mut rows = stmt.query([])?;
            let mut out: Vec<PendingMessage> = Vec::new();
            while let Some(r) = rows.next()? {
                let message_id: String = r.get(0)?;
                let best = match (
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ) {
                    (Some(s), Some(ch)) => Some((status_of(&s)?, channel_of(&ch)?)),
                    _ => None,
                };
                let ext = JobExt::parse(r.get(8)?)?;
                let job = JobState {
                    idx: r.get(1)?,
                    channel_idx: r.get(2)?,
                    channel_attempt: r.get(3)?,
                    due_at: r.get(4)?,
                    best,
                    done_devices: ext.done_devices,
                    phase: ext.phase,
                    cap_taken: ext.cap_taken,
                    tried: ext.tried,
                };
                match out.last_mut() {
                    Some(p) if p.record.id == message_id => p.jobs.push(job),
                    _ => {
                        let json: String = r.get(7)?;
                        let record: MessageRecord = serde_json::from_str(&json).map_err(corrupt)?;
                        out.push(PendingMessage {
                            record,
                            jobs: vec![job],
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn message(&self, id: &str) -> StoreResult<Option<MessageView>> {
        let id = id.to_string();
        self.read(move |c| {
            let Some((created_at, priority, sender)) = c
                .prepare_cached(
                    "SELECT created_at, priority, json_extract(record, '$.sender') FROM messages WHERE id = ?1",
                )?
                .query_row([&id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let priority: Priority = priority.parse().map_err(corrupt)?;
            let mut recipients: BTreeMap<u32, RecipientView> = BTreeMap::new();
            let mut stmt = c.prepare_cached(
                "SELECT idx, user_id, status, channel, read_at FROM recipients
                 WHERE message_id = ?1 ORDER BY idx",
            )?;
            let mut rows = stmt.query([&id])?;
            while let Some(r) = rows.next()? {
                let channel = r.get::<_, Option<String>>(3)?;
                recipients.insert(
                    r.get(0)?,
                    RecipientView {
                        user_id: r.get(1)?,
                        status: status_of(&r.get::<_, String>(2)?)?,
                        channel: channel.as_deref().map(channel_of).transpose()?,
                        attempts: Vec::new(),
                        read_at: r.get::<_, Option<i64>>(4)?.map(rfc3339),
                    },
                );
            }
            let mut stmt = c.prepare_cached(&format!(
                "SELECT idx, {ATTEMPT_COLUMNS} FROM attempts WHERE message_id = ?1 ORDER BY rowid"
            ))?;
            let mut rows = stmt.query([&id])?;
            while let Some(r) = rows.next()? {
                let idx: u32 = r.get(0)?;
                let attempt = attempt_of(r, 1)?;
                if let Some(rv) = recipients.get_mut(&idx) {
                    rv.attempts.push(attempt.view());
                }
            }
            let recipients: Vec<RecipientView> = recipients.into_values().collect();
            Ok(Some(MessageView {
                status: MessageStatus::derive(recipients.iter().map(|r| r.status)),
                id,
                created_at: rfc3339(created_at),
                priority,
                sender,
                recipients,
            }))
        })
        .await
    }

    async fn record(&self, id: &str) -> StoreResult<Option<MessageRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            let json = c
                .prepare_cached("SELECT record FROM messages WHERE id = ?1")?
                .query_row([&id], |r| r.get::<_, String>(0))
                .optional()?;
            json.map(|j| serde_json::from_str(&j).map_err(corrupt))
                .transpose()
        })
        .await
    }

    async fn mark_receipt(
        &self,
        id: &str,
        user_id: &str,
        kind: Receipt,
        at: i64,
    ) -> StoreResult<Vec<u32>> {
        let (id, user_id) = (id.to_string(), user_id.to_string());
        let sql = match kind {
            Receipt::Read => {
                "UPDATE recipients SET read_at = ?3
                 WHERE message_id = ?1 AND user_id = ?2 AND read_at IS NULL RETURNING idx"
            }
            Receipt::Ack => {
                "UPDATE recipients SET acked_at = ?3
                 WHERE message_id = ?1 AND user_id = ?2 AND acked_at IS NULL RETURNING idx"
            }
        };
        self.write(move |c| {
            let mut stmt = c.prepare_cached(sql)?;
            let rows = stmt.query_map(params![id, user_id, at], |r| r.get::<_, u32>(0))?;
            rows.collect()
        })
        .await
    }

    async fn receipts(&self, id: &str, idx: u32) -> StoreResult<(Option<i64>, Option<i64>)> {
        let id = id.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT read_at, acked_at FROM recipients WHERE message_id = ?1 AND idx = ?2",
            )?
            .query_row(params![id, idx], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((None, None)))
        })
        .await
    }

    async fn stop(&self, id: &str, idx: u32, stop: Stop, at: i64) -> StoreResult<bool> {
        let id = id.to_string();
        let index = self.job_index();
        self.write(move |c| {
            index.try_stop(&id, idx, || {
                let ext: Option<Option<String>> = c
                    .prepare_cached("SELECT ext FROM jobs WHERE message_id = ?1 AND idx = ?2")?
                    .query_row(params![id, idx], |r| r.get(0))
                    .optional()?;
                let Some(ext) = ext else {
                    return Ok(false); // final already
                };
                let phase = JobExt::parse(ext)?.phase;
                let state = JobState {
                    phase,
                    ..JobState::start(idx, 0)
                };
                if !stop.applies(&state) {
                    return Ok(false);
                }
                c.prepare_cached("DELETE FROM jobs WHERE message_id = ?1 AND idx = ?2")?
                    .execute(params![id, idx])?;
                c.prepare_cached(
                    "UPDATE recipients SET status = ?3, updated_at = ?4,
                     channel = COALESCE(?5, channel) WHERE message_id = ?1 AND idx = ?2",
                )?
                .execute(params![
                    id,
                    idx,
                    stop.status().as_str(),
                    at,
                    stop.channel().map(|c| c.as_str())
                ])?;
                Ok(true)
            })
        })
        .await
    }

    async fn cancel_group(&self, cancel_key: &str) -> StoreResult<Vec<(String, u32)>> {
        let key = cancel_key.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT message_id, recipients FROM cancel_keys WHERE key = ?1 ORDER BY message_id",
            )?;
            let rows = stmt.query_map([&key], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn put_user(&self, id: &str, profile: &UserProfile) -> StoreResult<()> {
        let id = id.to_string();
        let json =
            serde_json::to_string(profile).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO users (id, profile, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
            )?
            .execute(params![id, json, now_ms()])?;
            Ok(())
        })
        .await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserProfile>> {
        let id = id.to_string();
        self.read(move |c| {
            let json = c
                .prepare_cached("SELECT profile FROM users WHERE id = ?1")?
                .query_row([&id], |r| r.get::<_, String>(0))
                .optional()?;
            json.map(|j| serde_json::from_str(&j).map_err(corrupt))
                .transpose()
        })
        .await
    }

    async fn delete_user(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([&id])?
                > 0)
        })
        .await
    }

    async fn messages_for_user(
        &self,
        user_id: &str,
        limit: usize,
    ) -> StoreResult<Vec<MessageView>> {
        let user_id = user_id.to_string();
        let ids = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT DISTINCT message_id FROM recipients WHERE user_id = ?1 ORDER BY message_id DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![user_id, limit as i64], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(view) = self.message(&id).await? {
                out.push(view);
            }
        }
        Ok(out)
    }

    async fn dead_letters(
        &self,
        limit: usize,
        before: Option<&str>,
    ) -> StoreResult<DeadLetterPage> {
        // Cursor: "<updated_at>.<message_id>.<idx>" of the last item shown.
        let cursor = before.and_then(|c| {
            let mut parts = c.splitn(3, '.');
            Some((
                parts.next()?.parse::<i64>().ok()?,
                parts.next()?.to_string(),
                parts.next()?.parse::<i64>().ok()?,
            ))
        });
        self.read(move |c| {
            // With no cursor, start above every possible row.
            let (at, id, idx) = cursor.unwrap_or((i64::MAX, "\u{10FFFF}".to_string(), i64::MAX));
            let mut stmt = c.prepare_cached(
                "SELECT r.message_id, r.idx, r.user_id, r.status, r.updated_at, json_extract(m.record, '$.title')
                 FROM recipients r JOIN messages m ON m.id = r.message_id
                 WHERE r.status IN ('failed', 'expired')
                   AND (r.updated_at, r.message_id, r.idx) < (?1, ?2, ?3)
                 ORDER BY r.updated_at DESC, r.message_id DESC, r.idx DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![at, id, idx, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            })?;
            let mut items = Vec::new();
            let mut last = None;
            for row in rows {
                let (message_id, idx, user_id, status, updated_at, title) = row?;
                let mut attempts = Vec::new();
                let mut q = c.prepare_cached(&format!(
                    "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE message_id = ?1 AND idx = ?2 ORDER BY rowid"
                ))?;
                let mut arows = q.query(params![message_id, idx])?;
                while let Some(a) = arows.next()? {
                    attempts.push(attempt_of(a, 0)?.view());
                }
                last = Some(format!("{updated_at}.{message_id}.{idx}"));
                items.push(DeadLetter {
                    id: message_id,
                    user_id,
                    status: status_of(&status)?,
                    at: rfc3339(updated_at),
                    title,
                    attempts,
                });
            }
            let next = if items.len() == limit { last } else { None };
            Ok(DeadLetterPage { items, next })
        })
        .await
    }

    async fn is_ready(&self) -> bool {
        !self.writer.is_closed()
            && self
                .read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
                .await
                .is_ok()
    }
}

/// A job's step in rows: its attempt, then its next state or its final status. Shared by
/// `advance` and the webhook-queueing finish (one transaction for both).
pub(super) fn advance_rows(
    c: &Connection,
    message_id: &str,
    idx: u32,
    attempt: &Option<AttemptRecord>,
    next: &JobNext,
) -> rusqlite::Result<()> {
    if let Some(a) = &attempt {
        let devices = (!a.devices.is_empty())
            .then(|| serde_json::to_string(&a.devices))
            .transpose()
            .map_err(corrupt)?;
        c.prepare_cached(
            "INSERT INTO attempts (message_id, idx, channel, outcome, detail, at, provider, devices)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            message_id,
            idx,
            a.channel.as_str(),
            a.outcome.as_str(),
            a.detail,
            a.at,
            a.provider,
            devices
        ])?;
    }
    match &next {
        JobNext::Continue(s) => {
            c.prepare_cached(
                "UPDATE jobs SET channel_idx = ?3, channel_attempt = ?4, due_at = ?5,
                 best_status = ?6, best_channel = ?7, ext = ?8 WHERE message_id = ?1 AND idx = ?2",
            )?
            .execute(params![
                message_id,
                idx,
                s.channel_idx,
                s.channel_attempt,
                s.due_at,
                s.best.map(|b| b.0.as_str()),
                s.best.map(|b| b.1.as_str()),
                JobExt::of(s),
            ])?;
            // A scheduled recipient's first step: it is under way.
            c.prepare_cached(
                "UPDATE recipients SET status = 'pending'
                 WHERE message_id = ?1 AND idx = ?2 AND status = 'scheduled'",
            )?
            .execute(params![message_id, idx])?;
        }
        JobNext::Finish { status, channel } => {
            c.prepare_cached("DELETE FROM jobs WHERE message_id = ?1 AND idx = ?2")?
                .execute(params![message_id, idx])?;
            c.prepare_cached(
                "UPDATE recipients SET status = ?3, channel = ?4, updated_at = ?5
                 WHERE message_id = ?1 AND idx = ?2",
            )?
            .execute(params![
                message_id,
                idx,
                status.as_str(),
                channel.map(|c| c.as_str()),
                now_ms()
            ])?;
        }
    }
    Ok(())
}
