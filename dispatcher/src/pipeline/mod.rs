//! The delivery pipeline: accept (validate, apply idempotency, commit) → route (one job per
//! recipient, in its priority lane) → deliver (channels in order, retries with backoff,
//! every attempt recorded) → a final status per recipient, announced on the bus.
//!
//! Every step is recorded before the next begins, so a restart continues where the store
//! says, never from the start: a channel is attempted again only if its attempt was in
//! flight at the instant of the crash.

mod accept;
pub mod content;
pub mod decide;
mod stops;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herald_common::api::{Accepted, ChannelKind, Outcome, RecipientStatus, UserProfile};
use herald_common::config::RetryPolicy;
use herald_common::subjects::Subjects;
use herald_common::time::now_ms;
use herald_engine::store::{AttemptRecord, JobNext, JobState, MessageRecord, Templates};
use herald_engine::{Bus, SlotTaken, Slots, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use herald_engine::{JobQueue, Lease, Settle};

use crate::channels::{AttemptResult, Channels, Delivery};
use crate::ordering::{Turn, Turns};
use crate::stages::templates;
use decide::{Facts, Next, Note, Policy, Receipts, Step};

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
    pub critical_categories: Vec<String>,
    pub quiet_hours: Option<herald_common::api::QuietHours>,
    pub default_timezone: String,
    pub caps: Vec<herald_common::config::CapConfig>,
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
    policy: Policy,
    turns: Arc<Turns>,
    templates: Arc<dyn Templates>,
    slots: Arc<dyn Slots>,
    cache: templates::Cache,
    /// Rendered content shared by the recipients who read the same text.
    shared: content::Shared,
    /// Each template's latest version as last read, and when: accepts within
    /// [`LATEST_FRESH`] of a read do not ask the store again.
    latest: std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
    /// Status webhooks, when the engine has them.
    hooks: Option<Arc<crate::webhooks::Hooks>>,
}

/// The parts of the engine a pipeline uses.
pub struct PipelineParts {
    pub store: Arc<dyn Store>,
    pub templates: Arc<dyn Templates>,
    pub slots: Arc<dyn Slots>,
    pub bus: Arc<dyn Bus>,
    pub queue: Arc<dyn JobQueue>,
    pub hooks: Option<Arc<crate::webhooks::Hooks>>,
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

impl Pipeline {
    pub fn new(
        parts: PipelineParts,
        subjects: Subjects,
        channels: Channels,
        config: PipelineConfig,
    ) -> Arc<Pipeline> {
        let policy = Policy {
            retry: config.retry.clone(),
            critical: config.critical_categories.clone(),
            quiet_hours: config.quiet_hours.clone(),
            timezone: config.default_timezone.clone(),
            caps: config.caps.clone(),
        };
        Arc::new(Pipeline {
            store: parts.store,
            bus: parts.bus,
            subjects,
            channels,
            queue: parts.queue,
            alerts: crate::alerts::Alerts::new(config.alerts.clone()),
            stats: Counters::default(),
            config,
            policy,
            turns: Arc::default(),
            templates: parts.templates,
            slots: parts.slots,
            cache: templates::Cache::default(),
            shared: content::Shared::default(),
            latest: std::sync::Mutex::new(std::collections::HashMap::new()),
            hooks: parts.hooks,
        })
    }

    /// Where templates are stored.
    pub fn templates(&self) -> &Arc<dyn Templates> {
        &self.templates
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

    /// Runs one recipient's delivery until it finishes or waits for a retry.
    async fn deliver(self: Arc<Self>, lease: Lease, turn: Turn) {
        if let Some(done) = lease.finished {
            if let Some(r) = lease
                .job
                .message
                .recipients
                .get(lease.job.state.idx as usize)
            {
                let id = &lease.job.message.id;
                self.announce(id, &r.user_id, done.status.into(), done.channel, now_ms())
                    .await;
            }
            lease.settle(Settle::Done).await;
            return;
        }
        let message = Arc::clone(&lease.job.message);
        let st = lease.job.state.clone();
        let settle = self.run_job(&message, st, &turn).await;
        lease.settle(settle).await;
    }

    /// The delivery loop of one recipient: gathers facts, asks [`decide`], carries the
    /// answer out; says how its lease ends.
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
        let profile = match self.store.user(&recipient.user_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(message_id = %message.id, error = %e, "profile unavailable; will retry");
                return unrecorded(recorded);
            }
        };
        let mut receipts: Option<Receipts> = None;
        // The recipient's rendering of a templated message (made before its first attempt).
        let mut content: Option<Arc<MessageRecord>> = None;
        // What went wrong last, for the failure alert.
        let mut last_error: Option<String> = None;
        // An attempt not recorded yet: recorded with the next step (one write, not two).
        let mut unsaved: Option<AttemptRecord> = None;
        loop {
            let facts = Facts {
                now: now_ms(),
                message,
                state: &st,
                profile: profile.as_ref(),
                receipts,
            };
            let (attempt, next) = match decide::plan(&self.policy, &facts) {
                Step::LoadReceipts => match self.store.receipts(&message.id, st.idx).await {
                    Ok((read_at, acked_at)) => {
                        receipts = Some(Receipts { read_at, acked_at });
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(message_id = %message.id, error = %e, "receipts unavailable; will retry");
                        return unrecorded(recorded);
                    }
                },
                Step::TakeCap {
                    key,
                    per_user,
                    window_ms,
                } => {
                    let token = format!("{}.{}", message.id, st.idx);
                    match self
                        .slots
                        .take_slot(&key, &token, per_user, window_ms, facts.now)
                        .await
                    {
                        Ok(SlotTaken::Granted) => {
                            st.cap_taken = true;
                            continue;
                        }
                        Ok(SlotTaken::Full { .. }) => {
                            let cap = crate::stages::caps::cap_for(
                                &self.policy.caps,
                                message.category.as_deref(),
                            );
                            let Some(cap) = cap else { continue };
                            match decide::capped(&facts, cap) {
                                Step::Move { note, next } => (note.map(note_record), next),
                                _ => continue,
                            }
                        }
                        Err(e) => {
                            tracing::warn!(message_id = %message.id, error = %e, "frequency cap unavailable; will retry");
                            return unrecorded(recorded);
                        }
                    }
                }
                Step::Move { note, next } => (note.map(note_record).or(unsaved.take()), next),
                Step::Attempt(kind) => {
                    if kind == ChannelKind::InApp {
                        // Inbox seqs in the order the jobs were taken (see `Turns`).
                        turn.wait().await;
                    }
                    if content.is_none() {
                        match self.content_for(message, recipient, profile.as_ref()).await {
                            Ok(c) => content = Some(c),
                            Err(Render::Unavailable(e)) => {
                                tracing::warn!(message_id = %message.id, error = %e, "template unavailable; will retry");
                                return unrecorded(recorded);
                            }
                            Err(Render::Failed(why)) => {
                                let note = AttemptRecord::new(
                                    kind,
                                    Outcome::PermanentError,
                                    Some(format!("template: {why}")),
                                    now_ms(),
                                );
                                last_error = note.detail.clone();
                                let next = Next::Finish {
                                    status: RecipientStatus::Failed,
                                    channel: None,
                                };
                                match self
                                    .carry_out(message, &mut st, Some(note), next, &last_error)
                                    .await
                                {
                                    Carried::Settle(s) => return s,
                                    Carried::Unrecorded => return unrecorded(recorded),
                                    Carried::Continue(_) => continue,
                                }
                            }
                        }
                    }
                    let rendered = content.as_deref().unwrap_or(message);
                    let result = match self.channels.get(kind) {
                        Some(channel) => {
                            let delivery = Delivery {
                                message: rendered,
                                idx: st.idx,
                                recipient,
                                profile: profile.as_ref(),
                                state: &st,
                                turn,
                            };
                            channel.attempt(&delivery).await
                        }
                        None => AttemptResult::new(
                            Outcome::Skipped,
                            format!("channel {kind} is not configured"),
                        ),
                    };
                    // Past the first attempt, whatever its channel: later jobs need not
                    // wait for this one's retries or fallbacks.
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
                    let retry_after = result.retry_after.unwrap_or_default();
                    let retry = &self.config.retry;
                    let facts = Facts { now: at, ..facts };
                    let next = decide::after(
                        &self.policy,
                        &facts,
                        kind,
                        result.outcome,
                        |n| {
                            // The provider's own wait (Retry-After, a robot's block) when longer.
                            retry
                                .backoff(n, rand::random::<f64>())
                                .max(retry_after)
                                .as_millis() as i64
                        },
                        result.done_devices,
                    );
                    let mut attempt = AttemptRecord {
                        provider: result.provider,
                        devices: result.devices,
                        ..AttemptRecord::new(kind, result.outcome, result.detail, at)
                    };
                    if let Next::Go {
                        gave_up: Some(n), ..
                    } = &next
                    {
                        let detail = attempt.detail.take().unwrap_or_default();
                        attempt.detail = Some(format!("{detail} (gave up after {n} attempts)"));
                    }
                    (Some(attempt), next)
                }
            };
            match self
                .carry_out(message, &mut st, attempt, next, &last_error)
                .await
            {
                Carried::Settle(s) => return s,
                Carried::Unrecorded => return unrecorded(recorded),
                Carried::Continue(pending) => {
                    unsaved = pending;
                    if unsaved.is_none() {
                        recorded = st.clone();
                    }
                }
            }
        }
    }

    /// Records what [`decide`] said and moves the job on. `Continue` carries an attempt
    /// still to record when the next step is the final one (recorded with it).
    async fn carry_out(
        &self,
        message: &MessageRecord,
        st: &mut JobState,
        attempt: Option<AttemptRecord>,
        next: Next,
        last_error: &Option<String>,
    ) -> Carried {
        match next {
            Next::Finish { status, channel } => {
                let error = (status == RecipientStatus::Failed)
                    .then(|| last_error.clone())
                    .flatten();
                match self
                    .finish(message, st.idx, attempt, status, channel, error)
                    .await
                {
                    true => Carried::Settle(Settle::Done),
                    false => Carried::Unrecorded,
                }
            }
            Next::Retry(state) | Next::Wait(state) => {
                let retry = state.channel_attempt > st.channel_attempt;
                if retry {
                    let kind = attempt.as_ref().map_or("", |a| a.channel.as_str());
                    metrics::counter!("herald_retries_total", "channel" => kind).increment(1);
                    Counters::bump(&self.stats.retries);
                }
                *st = state;
                let next = JobNext::Continue(st.clone());
                match self.advance(message, st.idx, attempt, next).await {
                    true => Carried::Settle(Settle::Retry(st.clone())),
                    false => Carried::Unrecorded,
                }
            }
            Next::Go {
                state, fallback, ..
            } => {
                if fallback && let Some(a) = &attempt {
                    metrics::counter!("herald_fallbacks_total", "from" => a.channel.as_str())
                        .increment(1);
                    Counters::bump(&self.stats.fallbacks);
                }
                *st = state;
                if st.channel_idx as usize >= message.channels_of(&st.phase).len() {
                    // The list's end: the final status comes next, with this attempt.
                    return Carried::Continue(attempt);
                }
                let next = JobNext::Continue(st.clone());
                match self.advance(message, st.idx, attempt, next).await {
                    true => Carried::Continue(None),
                    false => Carried::Unrecorded,
                }
            }
        }
    }

    /// What the recipient's channels send: the message itself, or its template rendered
    /// in the recipient's language from the version it was accepted with.
    async fn content_for(
        &self,
        message: &Arc<MessageRecord>,
        recipient: &herald_engine::store::RecipientRecord,
        profile: Option<&UserProfile>,
    ) -> Result<Arc<MessageRecord>, Render> {
        let Some(t) = &message.template else {
            return Ok(Arc::clone(message));
        };
        let compiled = self
            .compiled(&t.name, Some(t.version))
            .await?
            .ok_or_else(|| {
                Render::Failed(format!("version {} of '{}' is gone", t.version, t.name))
            })?;
        let locale = compiled
            .pick_locale(&[
                profile.and_then(|p| p.locale.as_deref()),
                message.locale.as_deref(),
            ])
            .to_string();
        let timezone = profile
            .and_then(|p| p.timezone.as_deref())
            .unwrap_or(&self.policy.timezone);
        let key = content_key(&compiled, message, &locale, timezone, &recipient.user_id);
        if let Some(shared) = self.shared.get(&key) {
            return Ok(shared);
        }
        let to = templates::Recipient {
            user_id: &recipient.user_id,
            timezone,
        };
        let rendered = compiled
            .render_for(&locale, &t.vars, &to, &message.all_channels())
            .map_err(|e| Render::Failed(e.to_string()))?;
        let content = Arc::new(content::apply(message, &rendered));
        self.shared.put(key, Arc::clone(&content));
        Ok(content)
    }

    /// The latest version of `name`: as read in the last [`LATEST_FRESH`], else from the
    /// store. A `PUT` or `DELETE` through this dispatcher is seen at once
    /// ([`Pipeline::template_changed`]); through another dispatcher, within that time.
    async fn latest_version(&self, name: &str) -> Result<Option<u32>, Render> {
        let now = std::time::Instant::now();
        if let Ok(latest) = self.latest.lock()
            && let Some((v, at)) = latest.get(name)
            && now.duration_since(*at) < LATEST_FRESH
        {
            return Ok(Some(*v));
        }
        let read = self
            .templates
            .latest_template(name)
            .await
            .map_err(Render::Unavailable)?;
        if let (Some(v), Ok(mut latest)) = (read, self.latest.lock()) {
            if latest.len() >= 1024 {
                latest.clear();
            }
            latest.insert(name.to_string(), (v, now));
        }
        Ok(read)
    }

    /// A template was stored or deleted here: the next accept reads its latest version.
    pub fn template_changed(&self, name: &str) {
        if let Ok(mut latest) = self.latest.lock() {
            latest.remove(name);
        }
    }

    /// Offers the content rendered at accept to the recipients who read the same text.
    pub(crate) fn share_content(
        &self,
        compiled: &templates::Compiled,
        content: &Arc<MessageRecord>,
        locale: &str,
        user_id: &str,
    ) {
        let key = content_key(compiled, content, locale, &self.policy.timezone, user_id);
        self.shared.put(key, Arc::clone(content));
    }

    /// A template version compiled (`None`: the latest), from the cache when it is there.
    pub async fn compiled(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<Arc<templates::Compiled>>, Render> {
        let version = match version {
            Some(v) => v,
            None => match self.latest_version(name).await? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        if let Some(c) = self.cache.get(name, version) {
            return Ok(Some(c));
        }
        let Some(record) = self
            .templates
            .template(name, Some(version))
            .await
            .map_err(Render::Unavailable)?
        else {
            return Ok(None);
        };
        let compiled = templates::Compiled::compile(name, record.version, &record.spec, false)
            .map_err(|e| Render::Failed(e.to_string()))?;
        Ok(Some(self.cache.put(compiled)))
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
        let now = now_ms();
        let user_id = message
            .recipients
            .get(idx as usize)
            .map_or("", |r| r.user_id.as_str());
        let payload = stops::event_payload(&message.id, user_id, status.into(), channel, now);
        // The status and its webhook deliveries in one commit where the engine can: a crash
        // between recording one and queueing the other would lose the events.
        let deliveries = match (&self.hooks, &payload) {
            (Some(h), Some(p)) => h.deliveries(status.as_str(), &message.id, user_id, p),
            _ => Vec::new(),
        };
        let next = JobNext::Finish { status, channel };
        let queued = if deliveries.is_empty() {
            if !self.advance(message, idx, attempt, next).await {
                return false;
            }
            false
        } else {
            match self
                .advance_queueing(message, idx, attempt, next, deliveries)
                .await
            {
                Some(queued) => queued,
                None => return false,
            }
        };
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
        let counter = match status {
            RecipientStatus::Delivered => Some(&self.stats.delivered),
            RecipientStatus::Sent => Some(&self.stats.sent),
            RecipientStatus::Failed => Some(&self.stats.failed),
            RecipientStatus::Expired => Some(&self.stats.expired),
            _ => None,
        };
        if let Some(c) = counter {
            Counters::bump(c);
        }
        if let Some(payload) = payload {
            self.publish_event(
                &message.id,
                &recipient.user_id,
                status.into(),
                payload,
                !queued,
            )
            .await;
        }
        true
    }

    /// Records a final step with its webhook deliveries (retrying like [`Self::advance`]):
    /// `Some(true)` recorded and queued together, `Some(false)` recorded only (the engine
    /// queues separately), `None` not recorded.
    async fn advance_queueing(
        &self,
        message: &MessageRecord,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
        deliveries: Vec<herald_engine::HookDelivery>,
    ) -> Option<bool> {
        let Some(hooks) = &self.hooks else {
            return self
                .advance(message, idx, attempt, next)
                .await
                .then_some(false);
        };
        for delay_ms in [0u64, 100, 1000, 5000] {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let done = hooks
                .store()
                .advance_queueing(
                    &message.id,
                    idx,
                    attempt.clone(),
                    next.clone(),
                    deliveries.clone(),
                )
                .await;
            match done {
                Some(Ok(())) => return Some(true),
                Some(Err(e)) => {
                    tracing::error!(message_id = %message.id, error = %e, "cannot record delivery step")
                }
                None => {
                    return self
                        .advance(message, idx, attempt, next)
                        .await
                        .then_some(false);
                }
            }
        }
        None
    }
}

/// How carrying a decision out ended.
enum Carried {
    /// The lease ends so.
    Settle(Settle),
    /// Could not be recorded: retry from the last recorded step.
    Unrecorded,
    /// On with the loop (with an attempt still to record, if any).
    Continue(Option<AttemptRecord>),
}

/// Why a template could not be rendered for a recipient.
pub enum Render {
    /// The store could not be read: try again later.
    Unavailable(StoreError),
    /// The template cannot be rendered with these variables (the recipient fails).
    Failed(String),
}

fn note_record(note: Note) -> AttemptRecord {
    AttemptRecord::new(note.channel, note.outcome, Some(note.detail), now_ms())
}

fn accepted(id: String, recipients: usize) -> Accepted {
    Accepted {
        id,
        status: "accepted".into(),
        recipients,
    }
}

/// How long a template's latest version, once read, is taken as the latest.
const LATEST_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Which recipients share a render: same message, locale and zone; and the same user when
/// the template reads `user`.
fn content_key(
    compiled: &templates::Compiled,
    message: &MessageRecord,
    locale: &str,
    timezone: &str,
    user_id: &str,
) -> content::Key {
    (
        message.id.clone(),
        locale.to_string(),
        timezone.to_string(),
        compiled.personal().then(|| user_id.to_string()),
    )
}
