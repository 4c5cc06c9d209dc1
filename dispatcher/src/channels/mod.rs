//! Delivery channels. Each turns one recipient of one message into one attempt with an
//! outcome; the pipeline decides what happens next (retry, next channel, done). A channel
//! with several providers sends through [`providers::Providers`] (failover, circuits); a
//! provider only classifies one answer into a [`providers::Verdict`].
//!
//! `in_app` (bus + inbox), `push` (FCM, APNs, Web Push per device), `email` (SMTP relays),
//! `sms` (generic, Twilio, Aliyun, Tencent), and the chat robots in `chat` (DingTalk,
//! Feishu, WeCom, Slack, the signed generic webhook).

pub mod chat;
pub mod email;
pub mod in_app;
pub mod providers;
pub mod push;
pub mod signing;
pub mod sms;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, DeviceOutcome, Outcome, UserProfile};
use herald_engine::store::{JobState, MessageRecord, RecipientRecord};

use providers::{Routed, Verdict};

/// Everything a channel may use for one attempt.
pub struct Delivery<'a> {
    pub message: &'a MessageRecord,
    pub idx: u32,
    pub recipient: &'a RecipientRecord,
    pub profile: Option<&'a UserProfile>,
    /// Where the recipient's delivery stands (e.g. the push devices already done with).
    pub state: &'a JobState,
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
    /// The provider that answered.
    pub provider: Option<String>,
    /// `push`: each device's result, and the devices now done with for this message.
    pub devices: Vec<DeviceOutcome>,
    pub done_devices: Vec<String>,
    /// A provider's own wait before a retry (`Retry-After`, a rate limit's window).
    pub retry_after: Option<Duration>,
    /// Not attempted yet: try again at this instant (Unix ms), without counting an attempt
    /// (a robot's pace of 20 messages a minute was reached: queue, don't fail).
    pub later: Option<i64>,
}

impl AttemptResult {
    pub fn new(outcome: Outcome, detail: impl Into<Option<String>>) -> Self {
        AttemptResult {
            outcome,
            detail: detail.into(),
            provider: None,
            devices: Vec::new(),
            done_devices: Vec::new(),
            retry_after: None,
            later: None,
        }
    }

    /// The attempt a provider's (or providers') verdict makes.
    pub fn routed(routed: Routed) -> AttemptResult {
        let detail = routed.detail();
        let (outcome, retry_after) = match &routed.verdict {
            Verdict::Sent { .. } => (Outcome::Sent, None),
            Verdict::Transient { retry_after, .. } => (Outcome::TransientError, *retry_after),
            Verdict::Failover { .. } | Verdict::Permanent { .. } | Verdict::Gone { .. } => {
                (Outcome::PermanentError, None)
            }
        };
        AttemptResult {
            provider: routed.provider,
            retry_after,
            ..AttemptResult::new(outcome, detail)
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

/// Why an outbound HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HERALD_TLS_CA_FILE: {0}")]
    CaFile(String),
    #[error("cannot build an HTTP client: {0}")]
    Build(String),
}

/// How a provider's HTTP client is built: every provider gets its own long-lived client
/// (pooled connections, HTTP/2 where the provider speaks it), trusting the system roots
/// plus `HERALD_TLS_CA_FILE`.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub timeout: Duration,
    pub ca_file: Option<std::path::PathBuf>,
}

impl ClientOptions {
    pub fn build(&self, h2_prior_knowledge: bool) -> Result<reqwest::Client, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")));
        if h2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::CaFile(format!("cannot read {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::CaFile(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(ClientError::CaFile(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))
    }
}

/// The client options of each kind of provider, from the configuration.
pub struct ChannelClients {
    pub sms: ClientOptions,
    pub push: ClientOptions,
    pub chat: ClientOptions,
}

impl ChannelClients {
    pub fn of(config: &herald_common::config::Config) -> ChannelClients {
        let with = |timeout| ClientOptions {
            timeout,
            ca_file: config.tls_ca_file.clone(),
        };
        ChannelClients {
            sms: with(config.sms_timeout),
            push: with(config.push_timeout),
            chat: with(config.chat_timeout),
        }
    }
}

/// A transport error said without the URL: provider URLs hold tokens (a robot's
/// `access_token`, a webhook's key), and details reach the API and the logs.
pub fn transport_error(e: reqwest::Error) -> Verdict {
    let e = e.without_url();
    if e.is_timeout() {
        Verdict::transient("timed out")
    } else if e.is_connect() {
        Verdict::transient(format!("cannot connect: {}", source_text(&e)))
    } else {
        Verdict::transient(format!("request failed: {}", source_text(&e)))
    }
}

fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text = format!("{text}: {s}");
        cur = s.source();
    }
    text
}

/// A `Retry-After` header in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The first characters of a body, for an attempt's detail.
pub fn snippet(body: &str) -> String {
    let s: String = body.chars().take(200).collect();
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
