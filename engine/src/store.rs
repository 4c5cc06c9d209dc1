//! The durable store contract: what the dispatcher records about each message, user
//! profiles, and the per-user inboxes and per-topic histories that gateways replay.

use async_trait::async_trait;
use herald_common::api::{
    AttemptView, ChannelKind, DeadLetterPage, EmailContent, MessageView, Outcome, Priority,
    RecipientStatus, SmsContent, Strategy, UserProfile,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub recipients: Vec<RecipientRecord>,
}

impl MessageRecord {
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
}

/// An attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub channel: ChannelKind,
    pub outcome: Outcome,
    pub detail: Option<String>,
    pub at: i64,
}

impl AttemptRecord {
    pub fn view(&self) -> AttemptView {
        AttemptView {
            channel: self.channel,
            outcome: self.outcome,
            detail: self.detail.clone(),
            at: herald_common::time::rfc3339(self.at),
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

    /// Notes that `user_id` read message `id` (first read wins).
    async fn mark_read(&self, id: &str, user_id: &str, at: i64) -> StoreResult<()>;

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
