//! HTTP API types (SPEC §3): request and response bodies, statuses, outcomes and error codes.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::validate_user_id;

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The most recipients one `POST /v1/messages` may name.
pub const MAX_RECIPIENTS: usize = 1000;
/// The longest `ack_timeout_ms` a message may ask for.
pub const MAX_ACK_TIMEOUT_MS: u64 = 300_000;
/// The longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", stringify!($name), " '{}' (expected one of: {})"),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// A delivery channel. New channels (push, chat) are added here and in the dispatcher's
    /// channel registry.
    ChannelKind { InApp => "in_app", Email => "email", Sms => "sms" }
);

string_enum!(
    /// How a recipient's channels are used.
    Strategy { Fallback => "fallback", All => "all" }
);

string_enum!(
    /// Delivery priority; each has its own lane, so high never waits behind low.
    Priority { High => "high", Normal => "normal", Low => "low" }
);

string_enum!(
    /// Where one recipient's delivery stands.
    RecipientStatus {
        Pending => "pending",
        Delivered => "delivered",
        Sent => "sent",
        Failed => "failed",
        Expired => "expired",
    }
);

string_enum!(
    /// What one attempt on one channel came to.
    Outcome {
        Acked => "acked",
        Offline => "offline",
        AckTimeout => "ack_timeout",
        Sent => "sent",
        TransientError => "transient_error",
        PermanentError => "permanent_error",
        Skipped => "skipped",
    }
);

string_enum!(
    /// A message's overall status, derived from its recipients.
    MessageStatus { Pending => "pending", Delivered => "delivered", Failed => "failed", Partial => "partial" }
);

impl RecipientStatus {
    pub fn is_final(self) -> bool {
        self != RecipientStatus::Pending
    }
}

impl Priority {
    /// Lane index: 0 is the most urgent.
    pub fn lane(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl MessageStatus {
    /// SPEC: pending while any recipient is; delivered when all are delivered or sent;
    /// failed when all failed; otherwise partial.
    pub fn derive(statuses: impl IntoIterator<Item = RecipientStatus>) -> MessageStatus {
        let (mut any, mut pending, mut ok, mut failed) = (false, false, true, true);
        for s in statuses {
            any = true;
            pending |= s == RecipientStatus::Pending;
            ok &= matches!(s, RecipientStatus::Delivered | RecipientStatus::Sent);
            failed &= s == RecipientStatus::Failed;
        }
        match () {
            _ if !any => MessageStatus::Failed,
            _ if pending => MessageStatus::Pending,
            _ if ok => MessageStatus::Delivered,
            _ if failed => MessageStatus::Failed,
            _ => MessageStatus::Partial,
        }
    }
}

/// A recipient: a user id, or an object with contact fields that override the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RecipientSpec {
    Id(String),
    Inline(InlineRecipient),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineRecipient {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl RecipientSpec {
    pub fn user_id(&self) -> &str {
        match self {
            RecipientSpec::Id(id) => id,
            RecipientSpec::Inline(r) => &r.user_id,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmailContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SmsContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `POST /v1/messages` (and a `herald.send` publish).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub to: Vec<RecipientSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl SendRequest {
    /// Checks everything the contract requires; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.to.is_empty() {
            return Err("'to' must name at least one recipient".into());
        }
        if self.to.len() > MAX_RECIPIENTS {
            return Err(format!(
                "'to' names {} recipients; the limit is {MAX_RECIPIENTS}",
                self.to.len()
            ));
        }
        for (i, r) in self.to.iter().enumerate() {
            validate_user_id(r.user_id()).map_err(|e| format!("to[{i}]: {e}"))?;
            if let RecipientSpec::Inline(r) = r {
                if let Some(email) = &r.email {
                    validate_email(email).map_err(|e| format!("to[{i}].email: {e}"))?;
                }
                if let Some(phone) = &r.phone {
                    validate_phone(phone).map_err(|e| format!("to[{i}].phone: {e}"))?;
                }
            }
        }
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&self.title) && blank(&self.body) {
            return Err("one of 'title' or 'body' is required".into());
        }
        if self
            .data
            .as_ref()
            .is_some_and(|d| !d.is_object() && !d.is_null())
        {
            return Err("'data' must be a JSON object".into());
        }
        if let Some(channels) = &self.channels {
            validate_channels(channels).map_err(|e| format!("channels: {e}"))?;
        }
        if self.ttl_s == Some(0) {
            return Err("'ttl_s' must be at least 1".into());
        }
        if let Some(ms) = self.ack_timeout_ms
            && !(1..=MAX_ACK_TIMEOUT_MS).contains(&ms)
        {
            return Err(format!(
                "'ack_timeout_ms' must be between 1 and {MAX_ACK_TIMEOUT_MS}"
            ));
        }
        if let Some(key) = &self.idempotency_key {
            validate_idempotency_key(key)?;
        }
        Ok(())
    }
}

/// Checks a channel list: not empty, no repeats.
pub fn validate_channels(channels: &[ChannelKind]) -> Result<(), String> {
    if channels.is_empty() {
        return Err("at least one channel is required".into());
    }
    for (i, c) in channels.iter().enumerate() {
        if channels[..i].contains(c) {
            return Err(format!("'{c}' is listed twice"));
        }
    }
    Ok(())
}

pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} bytes"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("idempotency key must not contain control characters".into());
    }
    Ok(())
}

/// A light check: one `@` with text on both sides, no spaces; the SMTP server decides the rest.
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(format!("'{email}' is not an email address"))
    }
}

/// E.164: `+` then 6–15 digits.
pub fn validate_phone(phone: &str) -> Result<(), String> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "'{phone}' is not an E.164 phone number like +15550001111"
        ))
    }
}

/// `202` answer to an accepted send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    pub status: String,
    pub recipients: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub channel: ChannelKind,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub user_id: String,
    pub status: RecipientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    pub attempts: Vec<AttemptView>,
    /// Extension: when a live session reported the message as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

/// `GET /v1/messages/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: String,
    pub status: MessageStatus,
    pub created_at: String,
    /// Extension: the message's priority.
    pub priority: Priority,
    pub recipients: Vec<RecipientView>,
}

/// A recipient whose delivery ended `failed` or `expired` (extension:
/// `GET /v1/dead-letters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The message id.
    pub id: String,
    pub user_id: String,
    pub status: RecipientStatus,
    /// When it ended.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub attempts: Vec<AttemptView>,
}

/// A page of dead letters, newest first; pass `next` as `before` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    pub next: Option<String>,
}

/// `GET /v1/stats` (extension): this dispatcher's counters since it started, and the live
/// sessions on every gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Stats {
    pub sessions: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub sent: u64,
    pub failed: u64,
    pub expired: u64,
    pub fallbacks: u64,
    pub retries: u64,
}

/// `GET /v1/messages?user=…` (extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    pub items: Vec<MessageView>,
}

/// `POST /v1/tokens` (extension): mint a client token with the configured secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: String,
    /// Where clients connect, when `HERALD_PUBLIC_WS_URL` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
}

/// `POST /v1/topics/{topic}/messages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicPublish {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicAccepted {
    pub id: String,
    pub seq: u64,
}

/// `PUT/GET /v1/users/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserProfile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Channel name → allowed. A channel set to `false` is skipped as "opted out".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub preferences: BTreeMap<String, bool>,
}

impl UserProfile {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(email) = &self.email {
            validate_email(email).map_err(|e| format!("email: {e}"))?;
        }
        if let Some(phone) = &self.phone {
            validate_phone(phone).map_err(|e| format!("phone: {e}"))?;
        }
        for key in self.preferences.keys() {
            key.parse::<ChannelKind>()
                .map_err(|e| format!("preferences: {e}"))?;
        }
        Ok(())
    }

    /// Whether the user allows `channel` (absent means allowed).
    pub fn allows(&self, channel: ChannelKind) -> bool {
        self.preferences
            .get(channel.as_str())
            .copied()
            .unwrap_or(true)
    }
}

/// `GET /v1/users/{id}` answer: the profile plus its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    #[serde(flatten)]
    pub profile: UserProfile,
}

/// `GET /v1/users/{id}/presence`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Presence {
    pub online: bool,
    pub sessions: u64,
}

string_enum!(
    /// Error codes of the JSON error body, each with one HTTP status.
    ErrorCode {
        InvalidRequest => "invalid_request",
        Unauthorized => "unauthorized",
        Forbidden => "forbidden",
        NotFound => "not_found",
        MethodNotAllowed => "method_not_allowed",
        IdempotencyInProgress => "idempotency_in_progress",
        IdempotencyConflict => "idempotency_conflict",
        TooLarge => "too_large",
        UnsupportedMediaType => "unsupported_media_type",
        RateLimited => "rate_limited",
        Internal => "internal",
        Unavailable => "unavailable",
    }
);

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::IdempotencyInProgress => 409,
            ErrorCode::IdempotencyConflict => 422,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

/// `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> SendRequest {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn the_spec_example_parses_and_validates() {
        let req = parse(json!({
            "to": ["alice", {"user_id": "bob", "email": "bob@example.com", "phone": "+15550001111"}],
            "title": "Order shipped", "body": "Your order #42 is on its way",
            "data": {"order_id": 42}, "channels": ["in_app", "email", "sms"],
            "strategy": "fallback", "priority": "normal", "ttl_s": 86400, "ack_timeout_ms": 3000,
            "email": {"subject": "Order shipped", "text": "…", "html": "…"},
            "sms": {"text": "Order #42 shipped"}, "idempotency_key": "order-42-shipped"
        }));
        assert_eq!(req.validate(), Ok(()));
        assert_eq!(req.to[1].user_id(), "bob");
        assert_eq!(req.priority, Some(Priority::Normal));
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        let bad = [
            json!({"to": [], "title": "x"}),
            json!({"to": ["a"]}),
            json!({"to": ["a"], "title": "  "}),
            json!({"to": ["a b"], "title": "x"}),
            json!({"to": ["a"], "title": "x", "channels": []}),
            json!({"to": ["a"], "title": "x", "channels": ["sms", "sms"]}),
            json!({"to": ["a"], "title": "x", "ttl_s": 0}),
            json!({"to": ["a"], "title": "x", "ack_timeout_ms": 0}),
            json!({"to": [{"user_id": "a", "email": "nope"}], "title": "x"}),
            json!({"to": [{"user_id": "a", "phone": "555"}], "title": "x"}),
        ];
        for v in bad {
            assert!(parse(v.clone()).validate().is_err(), "{v}");
        }
        assert!(
            serde_json::from_value::<SendRequest>(json!({"to": ["a"], "channels": ["fax"]}))
                .is_err()
        );
    }

    #[test]
    fn message_status_is_derived_from_recipients() {
        use RecipientStatus::*;
        assert_eq!(
            MessageStatus::derive([Pending, Sent]),
            MessageStatus::Pending
        );
        assert_eq!(
            MessageStatus::derive([Delivered, Sent]),
            MessageStatus::Delivered
        );
        assert_eq!(
            MessageStatus::derive([Failed, Failed]),
            MessageStatus::Failed
        );
        assert_eq!(
            MessageStatus::derive([Failed, Sent]),
            MessageStatus::Partial
        );
        assert_eq!(MessageStatus::derive([Expired]), MessageStatus::Partial);
    }

    #[test]
    fn error_codes_map_to_statuses() {
        assert_eq!(ErrorCode::IdempotencyConflict.http_status(), 422);
        let body = serde_json::to_value(ErrorBody::new(ErrorCode::TooLarge, "big")).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "too_large", "message": "big"}})
        );
    }
}
