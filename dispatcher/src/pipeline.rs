//! The delivery pipeline: accept (validate, apply idempotency, commit) → route (one job per
//! recipient, in its priority lane) → deliver (channels in order, retries with backoff,
//! every attempt recorded) → a final status per recipient, announced on the bus.
//!
//! Every step is recorded before the next begins, so a restart continues where the store
//! says, never from the start: a channel is attempted again only if its attempt was in
//! flight at the instant of the crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use herald_common::api::{
    Accepted, ChannelKind, Outcome, Priority, PushNotification, RecipientSpec, RecipientStatus,
    SendRequest, Strategy, UserProfile,
};
use herald_common::config::RetryPolicy;
use herald_common::events::StatusEvent;
use herald_common::subjects::Subjects;
use herald_common::time::{now_ms, rfc3339};
use herald_engine::store::{
    AcceptOutcome, AttemptRecord, IdempotencyClaim, JobNext, JobState, MessageRecord,
    RecipientRecord,
};
use herald_engine::{Bus, Store, StoreError};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use herald_engine::{JobQueue, Lease, Settle};

use crate::channels::{AttemptResult, Channels, Delivery};
use crate::ordering::{Turn, Turns};

/// How long a job waits before retrying when its step could not be recorded.
const STORE_RETRY_MS: i64 = 5000;

/// Settings the pipeline applies to every message.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub alerts: herald_common::config::AlertConfig,
    pub default_channels: Vec<ChannelKind>,
    pub ack_timeout: Duration,
    pub retry: RetryPolicy,
    pub lane_concurrency: usize,
}

/// Why a send was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcceptError {
    #[error("{0}")]
    Invalid(String),
    #[error("this idempotency key was already used with a different request body")]
    Conflict,
    #[error("a request with this idempotency key is being accepted right now; retry shortly")]
    InProgress,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Pipeline {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    channels: Channels,
    queue: Arc<dyn JobQueue>,
    alerts: crate::alerts::Alerts,
    stats: Counters,
    config: PipelineConfig,
    turns: Arc<Turns>,
}

/// What this dispatcher has done since it started (`GET /v1/stats`).
#[derive(Default)]
pub struct Counters {
    accepted: AtomicU64,
    delivered: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    fallbacks: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, sessions: u64) -> herald_common::api::Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        herald_common::api::Stats {
            sessions,
            accepted: get(&self.accepted),
            delivered: get(&self.delivered),
            sent: get(&self.sent),
            failed: get(&self.failed),
            expired: get(&self.expired),
            fallbacks: get(&self.fallbacks),
            retries: get(&self.retries),
            providers: Vec::new(),
        }
    }
}

/// The idempotency digest covers the request as sent, minus the key itself.
fn body_hash(req: &SendRequest) -> Vec<u8> {
    let mut canonical = req.clone();
    canonical.idempotency_key = None;
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

impl Pipeline {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        channels: Channels,
        queue: Arc<dyn JobQueue>,
        config: PipelineConfig,
    ) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            store,
            bus,
            subjects,
            channels,
            queue,
            alerts: crate::alerts::Alerts::new(config.alerts.clone()),
            stats: Counters::default(),
            config,
            turns: Arc::default(),
        })
    }

    pub fn stats(&self) -> &Counters {
        &self.stats
    }

    /// Starts the delivery workers of every lane.
    pub fn start(self: &Arc<Self>, shutdown: CancellationToken, tracker: &TaskTracker) {
        let me = Arc::clone(self);
        crate::scheduler::start_lanes(
            Arc::clone(&self.queue),
            self.config.lane_concurrency,
            move |lease: Lease| {
                let me = Arc::clone(&me);
                let span = tracing::info_span!("deliver", message_id = %lease.job.message.id, idx = lease.job.state.idx);
                // Taken here, in the order the queue hands jobs out (an unknown recipient,
                // which `run_job` reports, takes a turn of its own).
                let user = lease
                    .job
                    .message
                    .recipients
                    .get(lease.job.state.idx as usize);
                let turn = me.turns.take(user.map_or("", |r| r.user_id.as_str()));
                async move { me.deliver(lease, turn).await }.instrument(span)
            },
            shutdown,
            tracker,
        );
    }

    /// Builds the stored form of a request: defaults applied, recipients de-duplicated.
    pub fn record(&self, req: &SendRequest, id: String, now: i64) -> MessageRecord {
        let mut recipients: Vec<RecipientRecord> = Vec::with_capacity(req.to.len());
        for spec in &req.to {
            let (user_id, email, phone) = match spec {
                RecipientSpec::Id(id) => (id.clone(), None, None),
                RecipientSpec::Inline(r) => (r.user_id.clone(), r.email.clone(), r.phone.clone()),
            };
            if recipients.iter().any(|r| r.user_id == user_id) {
                continue;
            }
            recipients.push(RecipientRecord {
                user_id,
                email,
                phone,
            });
        }
        MessageRecord {
            id,
            created_at: now,
            priority: req.priority.unwrap_or(Priority::Normal),
            strategy: req.strategy.unwrap_or(Strategy::Fallback),
            channels: req
                .channels
                .clone()
                .unwrap_or_else(|| self.config.default_channels.clone()),
            ack_timeout_ms: req
                .ack_timeout_ms
                .unwrap_or(self.config.ack_timeout.as_millis() as u64),
            expires_at: req.ttl_s.map(|s| {
                now.saturating_add(
                    i64::try_from(s)
                        .unwrap_or(i64::MAX / 1000)
                        .saturating_mul(1000),
                )
            }),
            title: req.title.clone(),
            body: req.body.clone(),
            data: req
                .data
                .as_ref()
                .and_then(|d| RawValue::from_string(d.to_string()).ok()),
            email: req.email.clone(),
            sms: req.sms.clone(),
            push: req.push.clone(),
            chat: req.chat.clone(),
            recipients,
        }
    }

    /// Accepts a send: once this returns `Ok`, the message is durable and delivery has begun.
    /// The flag is `false` when the answer is a replay of an earlier idempotent request.
    pub async fn accept(
        &self,
        req: SendRequest,
        header_key: Option<String>,
    ) -> Result<(Accepted, bool), AcceptError> {
        req.validate().map_err(AcceptError::Invalid)?;
        let key = match (header_key, req.idempotency_key.clone()) {
            (Some(h), Some(f)) if h != f => {
                return Err(AcceptError::Invalid(
                    "Idempotency-Key header and idempotency_key field differ".into(),
                ));
            }
            (h, f) => h.or(f),
        };
        if let Some(k) = &key {
            herald_common::api::validate_idempotency_key(k).map_err(AcceptError::Invalid)?;
        }
        let claim = key.map(|key| IdempotencyClaim {
            key,
            body_hash: body_hash(&req),
        });
        let now = now_ms();
        let record = self.record(&req, ulid::Ulid::generate().to_string(), now);
        if record.channels.contains(&ChannelKind::Push) {
            PushNotification::of(
                req.title.as_deref(),
                req.body.as_deref(),
                req.data.as_ref(),
                req.push.as_ref(),
            )
            .check_size()
            .map_err(AcceptError::Invalid)?;
        }
        match self.store.accept(&record, claim).await? {
            AcceptOutcome::Created => {
                let n = record.recipients.len();
                metrics::counter!("herald_messages_accepted_total", "priority" => record.priority.as_str())
                    .increment(1);
                Counters::bump(&self.stats.accepted);
                let message = Arc::new(record);
                self.queue.enqueue_accepted(Arc::clone(&message)).await?;
                Ok((accepted(message.id.clone(), n), true))
            }
            AcceptOutcome::Duplicate {
                message_id,
                recipients,
            } => Ok((accepted(message_id, recipients), false)),
            AcceptOutcome::Conflict => Err(AcceptError::Conflict),
            AcceptOutcome::InProgress => Err(AcceptError::InProgress),
        }
    }

    /// Runs one recipient's delivery until it finishes or waits for a retry.
    async fn deliver(self: Arc<Self>, lease: Lease, turn: Turn) {
        let message = Arc::clone(&lease.job.message);
        let st = lease.job.state.clone();
        let settle = self.run_job(&message, st, &turn).await;
        lease.settle(settle).await;
    }

    /// The delivery loop of one recipient; says how its lease ends.
    async fn run_job(&self, message: &Arc<MessageRecord>, mut st: JobState, turn: &Turn) -> Settle {
        let Some(recipient) = message.recipients.get(st.idx as usize) else {
            tracing::error!(message_id = %message.id, idx = st.idx, "job for an unknown recipient");
            return Settle::Done;
        };
        // The last state the store holds: where a retry resumes if recording fails.
        let mut recorded = st.clone();
        let unrecorded = |mut state: JobState| {
            state.due_at = now_ms() + STORE_RETRY_MS;
            Settle::Retry(state)
        };
        let mut profile: Option<Option<UserProfile>> = None;
        // What went wrong last, for the failure alert.
        let mut last_error: Option<String> = None;
        // The attempt on the last channel, recorded together with the final status: one
        // write instead of two.
        let mut last_attempt: Option<AttemptRecord> = None;
        loop {
            let now = now_ms();
            if message.expires_at.is_some_and(|e| now >= e) {
                return match self
                    .finish(
                        message,
                        st.idx,
                        last_attempt.take(),
                        RecipientStatus::Expired,
                        None,
                        last_error.clone(),
                    )
                    .await
                {
                    true => Settle::Done,
                    false => unrecorded(recorded),
                };
            }
            let Some(&kind) = message.channels.get(st.channel_idx as usize) else {
                let (status, channel) = match st.best {
                    Some((s, c)) => (s, Some(c)),
                    None => (RecipientStatus::Failed, None),
                };
                let attempt = last_attempt.take();
                return match self
                    .finish(
                        message,
                        st.idx,
                        attempt,
                        status,
                        channel,
                        last_error.clone(),
                    )
                    .await
                {
                    true => Settle::Done,
                    false => unrecorded(recorded),
                };
            };
            if kind == ChannelKind::InApp {
                // Inbox seqs in the order the jobs were taken (see `Turns`).
                turn.wait().await;
            }
            if profile.is_none() {
                match self.store.user(&recipient.user_id).await {
                    Ok(p) => profile = Some(p),
                    Err(e) => {
                        tracing::warn!(message_id = %message.id, error = %e, "profile unavailable; will retry");
                        return unrecorded(recorded);
                    }
                }
            }
            let profile_ref = profile.as_ref().and_then(|p| p.as_ref());
            let result = if profile_ref.is_some_and(|p| !p.allows(kind)) {
                AttemptResult::new(Outcome::Skipped, format!("opted out of {kind}"))
            } else if let Some(channel) = self.channels.get(kind) {
                let delivery = Delivery {
                    message,
                    idx: st.idx,
                    recipient,
                    profile: profile_ref,
                    state: &st,
                    turn,
                };
                channel.attempt(&delivery).await
            } else {
                AttemptResult::new(
                    Outcome::Skipped,
                    format!("channel {kind} is not configured"),
                )
            };
            // Past the first attempt, whatever its channel: later jobs need not wait for
            // this one's retries or fallbacks.
            turn.pass();
            if let Some(later) = result.later {
                // Not attempted: the channel is at its pace; come back when it has room.
                st.due_at = later;
                return Settle::Retry(st);
            }
            let at = now_ms();
            metrics::counter!("herald_attempts_total", "channel" => kind.as_str(), "outcome" => result.outcome.as_str())
                .increment(1);
            tracing::debug!(message_id = %message.id, channel = %kind, outcome = %result.outcome, detail = ?result.detail, "attempt");
            self.alerts.attempt(kind, result.outcome);
            if result.outcome != Outcome::Acked && result.outcome != Outcome::Sent {
                last_error = Some(format!(
                    "{kind}: {}",
                    result.detail.as_deref().unwrap_or(result.outcome.as_str())
                ));
            }
            let attempt_no = st.channel_attempt + 1;
            if kind == ChannelKind::Push {
                st.done_devices = result.done_devices;
            }
            let retry_after = result.retry_after;
            let mut attempt = AttemptRecord {
                provider: result.provider,
                devices: result.devices,
                ..AttemptRecord::new(kind, result.outcome, result.detail, at)
            };
            match result.outcome {
                Outcome::Acked | Outcome::Sent => {
                    let status = if result.outcome == Outcome::Acked {
                        RecipientStatus::Delivered
                    } else {
                        RecipientStatus::Sent
                    };
                    if message.strategy == Strategy::Fallback {
                        return match self
                            .finish(message, st.idx, Some(attempt), status, Some(kind), None)
                            .await
                        {
                            true => Settle::Done,
                            false => unrecorded(recorded),
                        };
                    }
                    st.best = better(st.best, (status, kind));
                }
                Outcome::TransientError if attempt_no < self.config.retry.attempts => {
                    // The provider's own wait (Retry-After, a robot's block) when longer.
                    let wait = self
                        .config
                        .retry
                        .backoff(attempt_no, rand::random::<f64>())
                        .max(retry_after.unwrap_or_default());
                    st.channel_attempt = attempt_no;
                    st.due_at = at + wait.as_millis() as i64;
                    metrics::counter!("herald_retries_total", "channel" => kind.as_str())
                        .increment(1);
                    Counters::bump(&self.stats.retries);
                    let next = JobNext::Continue(st.clone());
                    return match self.advance(message, st.idx, Some(attempt), next).await {
                        true => Settle::Retry(st),
                        false => unrecorded(recorded),
                    };
                }
                Outcome::TransientError => {
                    let detail = attempt.detail.take().unwrap_or_default();
                    attempt.detail =
                        Some(format!("{detail} (gave up after {attempt_no} attempts)"));
                }
                Outcome::Offline
                | Outcome::AckTimeout
                | Outcome::PermanentError
                | Outcome::Skipped => {}
            }
            if st.best.is_none() && (st.channel_idx as usize + 1) < message.channels.len() {
                metrics::counter!("herald_fallbacks_total", "from" => kind.as_str()).increment(1);
                Counters::bump(&self.stats.fallbacks);
            }
            st.channel_idx += 1;
            st.channel_attempt = 0;
            st.done_devices.clear();
            st.due_at = at;
            if st.channel_idx as usize >= message.channels.len() {
                last_attempt = Some(attempt);
                continue;
            }
            if !self
                .advance(
                    message,
                    st.idx,
                    Some(attempt),
                    JobNext::Continue(st.clone()),
                )
                .await
            {
                return unrecorded(recorded);
            }
            recorded = st.clone();
        }
    }

    /// Records a step, retrying a failing store a few times. `false`: not recorded; the job
    /// stays at its last recorded step and is resumed from there on the next start.
    async fn advance(
        &self,
        message: &MessageRecord,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
    ) -> bool {
        for delay_ms in [0u64, 100, 1000, 5000] {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            match self
                .store
                .advance(&message.id, idx, attempt.clone(), next.clone())
                .await
            {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(message_id = %message.id, error = %e, "cannot record delivery step")
                }
            }
        }
        false
    }

    /// Records a final status and announces it; `false` if it could not be recorded.
    async fn finish(
        &self,
        message: &MessageRecord,
        idx: u32,
        attempt: Option<AttemptRecord>,
        status: RecipientStatus,
        channel: Option<ChannelKind>,
        last_error: Option<String>,
    ) -> bool {
        let last_error = last_error.or_else(|| attempt.as_ref().and_then(|a| a.detail.clone()));
        if !self
            .advance(message, idx, attempt, JobNext::Finish { status, channel })
            .await
        {
            return false;
        }
        let now = now_ms();
        metrics::histogram!("herald_delivery_seconds", "status" => status.as_str())
            .record((now - message.created_at).max(0) as f64 / 1000.0);
        metrics::counter!("herald_recipients_final_total", "status" => status.as_str())
            .increment(1);
        let Some(recipient) = message.recipients.get(idx as usize) else {
            return true;
        };
        self.alerts.finished(
            &message.id,
            &recipient.user_id,
            status,
            last_error.as_deref(),
        );
        Counters::bump(match status {
            RecipientStatus::Delivered => &self.stats.delivered,
            RecipientStatus::Sent => &self.stats.sent,
            RecipientStatus::Failed => &self.stats.failed,
            _ => &self.stats.expired,
        });
        let event = StatusEvent {
            id: message.id.clone(),
            user_id: recipient.user_id.clone(),
            status,
            channel,
            at: rfc3339(now),
        };
        if let Ok(payload) = serde_json::to_vec(&event) {
            let subject = self.subjects.event(status.as_str());
            if let Err(e) = self.bus.publish(&subject, Bytes::from(payload)).await {
                tracing::warn!(message_id = %message.id, error = %e, "could not publish status event");
            }
        }
        true
    }
}

fn accepted(id: String, recipients: usize) -> Accepted {
    Accepted {
        id,
        status: "accepted".into(),
        recipients,
    }
}

/// For strategy `all`: delivered beats sent; otherwise the first success stays.
fn better(
    best: Option<(RecipientStatus, ChannelKind)>,
    new: (RecipientStatus, ChannelKind),
) -> Option<(RecipientStatus, ChannelKind)> {
    match best {
        Some((RecipientStatus::Sent, _)) if new.0 == RecipientStatus::Delivered => Some(new),
        Some(b) => Some(b),
        None => Some(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_beats_sent_for_strategy_all() {
        use ChannelKind::*;
        use RecipientStatus::*;
        assert_eq!(better(None, (Sent, Email)), Some((Sent, Email)));
        assert_eq!(
            better(Some((Sent, Email)), (Delivered, InApp)),
            Some((Delivered, InApp))
        );
        assert_eq!(
            better(Some((Sent, Email)), (Sent, Sms)),
            Some((Sent, Email))
        );
    }

    #[test]
    fn the_idempotency_digest_ignores_only_the_key() {
        let a: SendRequest = serde_json::from_value(
            serde_json::json!({"to":["a"],"title":"x","idempotency_key":"k"}),
        )
        .unwrap();
        let b: SendRequest =
            serde_json::from_value(serde_json::json!({"to":["a"],"title":"x"})).unwrap();
        let c: SendRequest =
            serde_json::from_value(serde_json::json!({"to":["a"],"title":"y"})).unwrap();
        assert_eq!(body_hash(&a), body_hash(&b));
        assert_ne!(body_hash(&a), body_hash(&c));
    }
}
