//! Delivery channels. Each turns one recipient of one message into one attempt with an
//! outcome; the pipeline decides what happens next (retry, next channel, done). A new
//! channel (push, chat) implements [`Channel`] and is added to [`Channels`].

pub mod email;
pub mod in_app;
pub mod sms;

use std::sync::Arc;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome, UserProfile};
use herald_engine::store::{MessageRecord, RecipientRecord};

/// Everything a channel may use for one attempt.
pub struct Delivery<'a> {
    pub message: &'a MessageRecord,
    pub idx: u32,
    pub recipient: &'a RecipientRecord,
    pub profile: Option<&'a UserProfile>,
    /// This job's turn among the recipient's jobs (in-app passes it once its frame is
    /// appended and published; the pipeline passes it after any other first attempt).
    pub turn: &'a crate::ordering::Turn,
}

impl Delivery<'_> {
    /// The recipient's email: inline on the message first, then the stored profile.
    pub fn email(&self) -> Option<&str> {
        self.recipient
            .email
            .as_deref()
            .or_else(|| self.profile.and_then(|p| p.email.as_deref()))
    }

    pub fn phone(&self) -> Option<&str> {
        self.recipient
            .phone
            .as_deref()
            .or_else(|| self.profile.and_then(|p| p.phone.as_deref()))
    }

    /// A stable id for this (message, recipient) pair, the same on every retry and restart,
    /// so receivers can drop a duplicate sent at the instant of a crash.
    pub fn delivery_id(&self) -> String {
        format!("{}.{}", self.message.id, self.idx)
    }
}

/// One attempt's result.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl AttemptResult {
    pub fn new(outcome: Outcome, detail: impl Into<Option<String>>) -> Self {
        AttemptResult {
            outcome,
            detail: detail.into(),
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync + 'static {
    fn kind(&self) -> ChannelKind;
    async fn attempt(&self, delivery: &Delivery<'_>) -> AttemptResult;
}

/// The configured channels, looked up by kind.
#[derive(Clone, Default)]
pub struct Channels {
    channels: Vec<Arc<dyn Channel>>,
}

impl Channels {
    pub fn new(channels: Vec<Arc<dyn Channel>>) -> Self {
        Channels { channels }
    }

    pub fn get(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        self.channels.iter().find(|c| c.kind() == kind)
    }
}
