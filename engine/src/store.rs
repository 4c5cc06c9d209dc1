//! The durable store contract: what the dispatcher records about each message, user
//! profiles, and the per-user inboxes and per-topic histories that gateways replay.

use async_trait::async_trait;
use herald_common::api::{
    AttemptView, ChannelKind, ChatContent, DeadLetterPage, DeviceAddress, DeviceOutcome,
    DeviceView, EmailContent, Escalate, MessageView, Outcome, Priority, PushContent,
    RecipientStatus, SmsContent, Strategy, TemplateSpec, UserProfile,
};
use herald_common::protocol::MessageContent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage error: {0}")]
    Backend(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One recipient as accepted: the user and any contact fields given inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientRecord {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// An accepted message, normalised: everything delivery needs, defaults applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageRecord {
    pub id: String,
    pub created_at: i64,
    pub priority: Priority,
    pub strategy: Strategy,
    pub channels: Vec<ChannelKind>,
    pub ack_timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatContent>,
    /// The template version it was accepted with, and its variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRef>,
    /// The message's locale, for recipients whose profile has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Not before this instant (Unix ms): recipients are `scheduled` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate: Option<Escalate>,
    /// The name of the API key that sent it (SPEC §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub recipients: Vec<RecipientRecord>,
}

/// Which template version a message renders, with what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub version: u32,
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
}

impl MessageRecord {
    /// When its recipients' first step is due: `send_at`, else when it was accepted.
    pub fn first_due(&self) -> i64 {
        self.send_at.unwrap_or(self.created_at).max(self.created_at)
    }

    /// The status its recipients start in.
    pub fn first_status(&self) -> RecipientStatus {
        match self.send_at {
            Some(at) if at > self.created_at => RecipientStatus::Scheduled,
            _ => RecipientStatus::Pending,
        }
    }

    /// The channel list step `phase` walks: the message's, or the escalation's.
    pub fn channels_of(&self, phase: &Phase) -> &[ChannelKind] {
        match (phase, &self.escalate) {
            (Phase::Escalated, Some(e)) => &e.channels,
            _ => &self.channels,
        }
    }

    /// Every channel the message may use: its own, then its escalation's.
    pub fn all_channels(&self) -> Vec<ChannelKind> {
        let mut all = self.channels.clone();
        if let Some(e) = &self.escalate {
            all.extend(e.channels.iter().filter(|c| !self.channels.contains(c)));
        }
        all
    }

    /// What inboxes keep and clients see.
    pub fn content(&self) -> MessageContent {
        MessageContent {
            id: self.id.clone(),
            title: self.title.clone(),
            body: self.body.clone(),
            data: self.data.clone(),
            created_at: herald_common::time::rfc3339(self.created_at),
        }
    }
}

/// Claim on an idempotency key: the key and a digest of the request body.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: String,
    pub body_hash: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AcceptOutcome {
    /// Stored; delivery may start.
    Created,
    /// The key was used before with the same body: the original answer.
    Duplicate {
        message_id: String,
        recipients: usize,
    },
    /// The key was used before with a different body.
    Conflict,
    /// The key is being accepted by another request right now (cluster engine); retry.
    InProgress,
}

/// Where one recipient's delivery will continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    pub idx: u32,
    /// Index into the message's `channels` of the channel to try next.
    pub channel_idx: u32,
    /// Attempts already made on that channel.
    pub channel_attempt: u32,
    /// Not before this instant (Unix ms).
    pub due_at: i64,
    /// For strategy `all`: the best result so far.
    pub best: Option<(RecipientStatus, ChannelKind)>,
    /// `push`: devices already done with for this message (accepted, refused for good, or
    /// gone), so a retry after a transient failure goes only to the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Phase::is_deliver")]
    pub phase: Phase,
    /// The recipient's frequency-cap slot is taken (it counts once, whatever happens next).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cap_taken: bool,
    /// A channel was attempted (not only skipped by the user's preferences): with nothing
    /// sent, the recipient ends `failed` rather than `skipped`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tried: bool,
}

/// Where a recipient is in its message's plan (SPEC §9 escalation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Through the message's channels.
    #[default]
    Deliver,
    /// Delivered in the app; waiting until `until` for a read (or ack) before escalating.
    Awaiting { until: i64 },
    /// Not read in time: through the escalation's channels.
    Escalated,
}

impl Phase {
    pub fn is_deliver(&self) -> bool {
        *self == Phase::Deliver
    }
}

impl JobState {
    /// The first step of recipient `idx`, due at `due_at`.
    pub fn start(idx: u32, due_at: i64) -> JobState {
        JobState {
            idx,
            channel_idx: 0,
            channel_attempt: 0,
            due_at,
            best: None,
            done_devices: Vec::new(),
            phase: Phase::Deliver,
            cap_taken: false,
            tried: false,
        }
    }
}

/// An attempt to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub channel: ChannelKind,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: i64,
    /// The provider that answered (offline channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `push`: each device's result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceOutcome>,
}

impl AttemptRecord {
    pub fn new(channel: ChannelKind, outcome: Outcome, detail: Option<String>, at: i64) -> Self {
        AttemptRecord {
            channel,
            outcome,
            detail,
            at,
            provider: None,
            devices: Vec::new(),
        }
    }

    pub fn view(&self) -> AttemptView {
        AttemptView {
            channel: self.channel,
            outcome: self.outcome,
            detail: self.detail.clone(),
            at: herald_common::time::rfc3339(self.at),
            provider: self.provider.clone(),
            devices: self.devices.clone(),
        }
    }
}

/// What happens to a job after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum JobNext {
    /// Keep going from this state.
    Continue(JobState),
    /// The recipient reached a final status; the job is removed.
    Finish {
        status: RecipientStatus,
        channel: Option<ChannelKind>,
    },
}

pub use herald_common::events::Receipt;

/// What a stop from outside asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Cancel a recipient not yet final (ends `canceled`).
    Cancel,
    /// End an escalation wait that a read (or ack) satisfied (ends `delivered`).
    Satisfied,
}

impl Stop {
    pub fn status(self) -> RecipientStatus {
        match self {
            Stop::Cancel => RecipientStatus::Canceled,
            Stop::Satisfied => RecipientStatus::Delivered,
        }
    }

    /// The channel the recipient ends on (a satisfied wait: the in-app delivery).
    pub fn channel(self) -> Option<ChannelKind> {
        match self {
            Stop::Cancel => None,
            Stop::Satisfied => Some(ChannelKind::InApp),
        }
    }

    /// Whether a job in `state` may be stopped this way.
    pub fn applies(self, state: &JobState) -> bool {
        match self {
            Stop::Cancel => true,
            Stop::Satisfied => matches!(state.phase, Phase::Awaiting { .. }),
        }
    }
}

/// A message with the jobs of its unfinished recipients (for restart recovery).
#[derive(Debug, Clone)]
pub struct PendingMessage {
    pub record: MessageRecord,
    pub jobs: Vec<JobState>,
}

/// Messages, their fate, and user profiles.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Durably stores a new message with one pending job per recipient, applying the
    /// idempotency claim atomically with it. Returning `Ok` means it survives a crash.
    async fn accept(
        &self,
        record: &MessageRecord,
        claim: Option<IdempotencyClaim>,
    ) -> StoreResult<AcceptOutcome>;

    /// Records an attempt (if any) and the job's next state in one step.
    async fn advance(
        &self,
        message_id: &str,
        idx: u32,
        attempt: Option<AttemptRecord>,
        next: JobNext,
    ) -> StoreResult<()>;

    /// Every message that still has unfinished recipients.
    async fn pending(&self) -> StoreResult<Vec<PendingMessage>>;

    async fn message(&self, id: &str) -> StoreResult<Option<MessageView>>;

    /// A message's stored record.
    async fn record(&self, id: &str) -> StoreResult<Option<MessageRecord>>;

    /// Notes that `user_id` read (or, `Receipt::Ack`, acked) message `id` — the first time
    /// wins — and says the recipient indexes of that user's it was the first time for.
    async fn mark_receipt(
        &self,
        id: &str,
        user_id: &str,
        kind: Receipt,
        at: i64,
    ) -> StoreResult<Vec<u32>>;

    /// When recipient `idx` of message `id` was read and acked (by any session).
    async fn receipts(&self, id: &str, idx: u32) -> StoreResult<(Option<i64>, Option<i64>)>;

    /// Ends a recipient's waiting job from outside (a cancel, or a read that ends an
    /// escalation wait): `true` when it was waiting as `stop` requires and is now final.
    /// A job a dispatcher is running is not the store's to stop: see [`JobQueue::stop`].
    async fn stop(&self, id: &str, idx: u32, stop: Stop, at: i64) -> StoreResult<bool>;

    /// The messages accepted with `cancel_key`, with their number of recipients.
    async fn cancel_group(&self, cancel_key: &str) -> StoreResult<Vec<(String, u32)>>;

    async fn put_user(&self, id: &str, profile: &UserProfile) -> StoreResult<()>;
    async fn user(&self, id: &str) -> StoreResult<Option<UserProfile>>;
    /// `true` when a profile was deleted.
    async fn delete_user(&self, id: &str) -> StoreResult<bool>;

    /// The most recent messages sent to `user_id`, newest first.
    async fn messages_for_user(&self, user_id: &str, limit: usize)
    -> StoreResult<Vec<MessageView>>;

    /// Recipients that ended `failed` or `expired`, newest first, before `cursor`.
    async fn dead_letters(&self, limit: usize, before: Option<&str>)
    -> StoreResult<DeadLetterPage>;

    /// Whether the store can take writes now (for `/readyz`).
    async fn is_ready(&self) -> bool;
}

/// A page of history: entries with `seq > since`, oldest first.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub entries: Vec<(u64, MessageContent)>,
    /// The newest seq in this stream (0 when empty).
    pub head: u64,
    /// `false` when entries after `since` were trimmed away.
    pub complete: bool,
}

/// Per-user inboxes and per-topic histories, each with its own gapless `seq`.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Appends a personal message to `user_id`'s inbox and returns its seq; appending the
    /// same message id again returns the seq it already has.
    async fn append_inbox(
        &self,
        user_id: &str,
        content: &MessageContent,
        expires_at: Option<i64>,
    ) -> StoreResult<u64>;

    async fn read_inbox(&self, user_id: &str, since: u64, limit: usize)
    -> StoreResult<HistoryPage>;

    async fn append_topic(&self, topic: &str, content: &MessageContent) -> StoreResult<u64>;

    async fn read_topic(&self, topic: &str, since: u64, limit: usize) -> StoreResult<HistoryPage>;
}

/// A registered device (SPEC §7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: String,
    pub address: DeviceAddress,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_reason: Option<String>,
    /// When it was last registered (Unix ms); the least recent goes first past the limit.
    pub registered_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<i64>,
}

impl DeviceRecord {
    pub fn view(&self) -> DeviceView {
        let hint = match &self.address {
            DeviceAddress::Webpush { endpoint, .. } => endpoint
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_string(),
            DeviceAddress::Fcm { token } | DeviceAddress::Apns { token, .. } => {
                let tail: String = token.chars().rev().take(6).collect();
                format!("…{}", tail.chars().rev().collect::<String>())
            }
        };
        DeviceView {
            device_id: self.device_id.clone(),
            platform: self.address.platform(),
            hint,
            topic: match &self.address {
                DeviceAddress::Apns { topic, .. } => topic.clone(),
                _ => None,
            },
            active: self.active,
            deactivated_reason: self.deactivated_reason.clone(),
            registered_at: herald_common::time::rfc3339(self.registered_at),
            deactivated_at: self.deactivated_at.map(herald_common::time::rfc3339),
        }
    }
}

/// Applies a registration to a user's device list: replaces the device with this id, drops
/// another id holding the same token (one device, however often it registers), and keeps
/// at most `max`, dropping the least recently registered. Both engines use this.
pub fn register_device(
    devices: &mut Vec<DeviceRecord>,
    device_id: &str,
    address: DeviceAddress,
    now: i64,
    max: usize,
) -> DeviceRecord {
    devices.retain(|d| d.device_id != device_id && d.address.identity() != address.identity());
    let record = DeviceRecord {
        device_id: device_id.to_string(),
        address,
        active: true,
        deactivated_reason: None,
        registered_at: now,
        deactivated_at: None,
    };
    devices.push(record.clone());
    devices.sort_by_key(|d| d.registered_at);
    let excess = devices.len().saturating_sub(max.max(1));
    devices.drain(..excess);
    record
}

/// A user's push devices.
#[async_trait]
pub trait Devices: Send + Sync + 'static {
    /// Registers (or re-registers) a device; see [`register_device`].
    async fn put_device(
        &self,
        user_id: &str,
        device_id: &str,
        address: DeviceAddress,
        now: i64,
        max: usize,
    ) -> StoreResult<DeviceRecord>;

    /// Every device of the user, least recently registered first.
    async fn devices(&self, user_id: &str) -> StoreResult<Vec<DeviceRecord>>;

    /// `true` when a device was deleted.
    async fn delete_device(&self, user_id: &str, device_id: &str) -> StoreResult<bool>;

    /// Marks a device gone because its provider said so for a push sent at `sent_at`:
    /// unless it registered again after that. `true` when it was active and now is not.
    async fn deactivate_device(
        &self,
        user_id: &str,
        device_id: &str,
        reason: &str,
        sent_at: i64,
    ) -> StoreResult<bool>;
}

/// Whether [`Slots::take_slot`] gave a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTaken {
    Granted,
    /// Every slot of the window is taken until this instant (Unix ms).
    Full {
        until: i64,
    },
}

/// Sliding-window counters shared by every dispatcher: frequency caps (SPEC §9) and the
/// pace of chat robots (20 messages a minute).
#[async_trait]
pub trait Slots: Send + Sync + 'static {
    /// Takes one of `limit` slots of `key` in the window `window_ms` before `now`, for
    /// `token`: taking again with the same token is the same slot (a retry or a restart
    /// does not count twice). Atomic: two dispatchers never both take the last slot.
    async fn take_slot(
        &self,
        key: &str,
        token: &str,
        limit: u32,
        window_ms: i64,
        now: i64,
    ) -> StoreResult<SlotTaken>;
}

/// The sliding-window rule both engines apply to the slots of one key: `(token, at)` pairs.
pub fn take_from(
    slots: &mut Vec<(String, i64)>,
    token: &str,
    limit: u32,
    window_ms: i64,
    now: i64,
) -> SlotTaken {
    slots.retain(|(_, at)| *at > now - window_ms);
    if slots.iter().any(|(t, _)| t == token) {
        return SlotTaken::Granted;
    }
    if slots.len() < limit as usize {
        slots.push((token.to_string(), now));
        return SlotTaken::Granted;
    }
    let oldest = slots.iter().map(|(_, at)| *at).min().unwrap_or(now);
    SlotTaken::Full {
        until: oldest + window_ms,
    }
}

/// One version of a stored template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    pub version: u32,
    pub created_at: i64,
    pub spec: TemplateSpec,
}

/// Templates (SPEC §8): every `PUT` is a new version; versions are kept after a delete so
/// messages accepted earlier render as they were accepted.
#[async_trait]
pub trait Templates: Send + Sync + 'static {
    /// Stores a new version; answers its number (1, 2, …).
    async fn put_template(&self, name: &str, spec: &TemplateSpec, now: i64) -> StoreResult<u32>;
    /// A version (`None`: the latest, unless the template was deleted).
    async fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<TemplateRecord>>;
    /// The latest version's number, without its body (`None`: no such template, or
    /// deleted): what an accept asks, before it finds the compiled version in its cache.
    async fn latest_template(&self, name: &str) -> StoreResult<Option<u32>>;
    /// Every template not deleted, with its latest version.
    async fn templates(&self) -> StoreResult<Vec<(String, u32)>>;
    /// `true` when there was one to delete.
    async fn delete_template(&self, name: &str) -> StoreResult<bool>;
}
