//! HTTP API types (SPEC §3, §7): statuses, outcomes and error codes here; request and response
//! bodies by resource in `messages`, `users` and `devices`.

use serde::{Deserialize, Serialize};

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

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
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

mod devices;
mod inbox;
mod keys;
mod messages;
mod templates;
mod users;
mod webhooks;

pub use devices::*;
pub use inbox::*;
pub use keys::*;
pub use messages::*;

/// Whole numbers as JSON Schema's `integer` has them: `3`, and `3.0` too (generated
/// clients and schemathesis send both). For `#[serde(deserialize_with = ...)]`.
pub(crate) mod whole {
    use serde::Deserialize as _;

    fn from_number<T: TryFrom<u64>, E: serde::de::Error>(n: &serde_json::Number) -> Result<T, E> {
        n.as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
                    .map(|f| f as u64)
            })
            .and_then(|u| T::try_from(u).ok())
            .ok_or_else(|| E::custom(format!("{n} is not a whole number in range")))
    }

    pub fn option<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: TryFrom<u64>,
    {
        Option::<serde_json::Number>::deserialize(d)?
            .map(|n| from_number(&n))
            .transpose()
    }

    pub fn required<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: TryFrom<u64>,
    {
        from_number(&serde_json::Number::deserialize(d)?)
    }
}
pub use templates::*;
pub use users::*;
pub use webhooks::*;

string_enum!(
    /// A delivery channel (SPEC §7). A new channel is added here and in the dispatcher's
    /// channel registry.
    ChannelKind {
        InApp => "in_app",
        Push => "push",
        Email => "email",
        Sms => "sms",
        Dingtalk => "dingtalk",
        Feishu => "feishu",
        Wecom => "wecom",
        Slack => "slack",
        Webhook => "webhook",
    }
);

impl ChannelKind {
    /// The chat and webhook channels, addressed by the profile's `chat` object.
    pub fn is_chat(self) -> bool {
        matches!(
            self,
            ChannelKind::Dingtalk
                | ChannelKind::Feishu
                | ChannelKind::Wecom
                | ChannelKind::Slack
                | ChannelKind::Webhook
        )
    }
}

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
        Scheduled => "scheduled",
        Delivered => "delivered",
        Sent => "sent",
        Failed => "failed",
        Expired => "expired",
        Canceled => "canceled",
        Skipped => "skipped",
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
        Deferred => "deferred",
        Unread => "unread",
    }
);

string_enum!(
    /// A message's overall status, derived from its recipients.
    MessageStatus { Pending => "pending", Delivered => "delivered", Failed => "failed", Partial => "partial", Canceled => "canceled", Skipped => "skipped" }
);

impl RecipientStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RecipientStatus::Pending | RecipientStatus::Scheduled)
    }
}

// The enums come from `string_enum!`, which takes no `#[default]` on a variant.
#[allow(clippy::derivable_impls)]
impl Default for Priority {
    fn default() -> Self {
        Priority::Normal
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Strategy {
    fn default() -> Self {
        Strategy::Fallback
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
    /// SPEC: pending while any recipient is (or is scheduled); delivered when all are
    /// delivered or sent; failed when all failed; (ext) canceled when all were canceled;
    /// otherwise partial. Recipients skipped by their preferences or a cap do not count,
    /// unless all were: then the message is `skipped`.
    pub fn derive(statuses: impl IntoIterator<Item = RecipientStatus>) -> MessageStatus {
        let (mut any, mut pending, mut ok, mut failed, mut canceled) =
            (false, false, true, true, true);
        let mut skipped = false;
        for s in statuses {
            if s == RecipientStatus::Skipped {
                skipped = true;
                continue;
            }
            any = true;
            pending |= !s.is_final();
            ok &= matches!(s, RecipientStatus::Delivered | RecipientStatus::Sent);
            failed &= s == RecipientStatus::Failed;
            canceled &= s == RecipientStatus::Canceled;
        }
        match () {
            _ if !any && skipped => MessageStatus::Skipped,
            _ if !any => MessageStatus::Failed,
            _ if pending => MessageStatus::Pending,
            _ if ok => MessageStatus::Delivered,
            _ if failed => MessageStatus::Failed,
            _ if canceled => MessageStatus::Canceled,
            _ => MessageStatus::Partial,
        }
    }
}

/// `GET /v1/stats` (extension): this dispatcher's counters since it started, the live
/// sessions on every gateway, and each provider's health.
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
    #[serde(default)]
    pub providers: Vec<ProviderHealth>,
}

/// A provider circuit's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// One provider's counters (on this dispatcher) and its circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProviderHealth {
    pub channel: ChannelKind,
    /// The configured name.
    pub name: String,
    /// What it is: `fcm`, `apns`, `webpush`, `smtp`, `outbox`, `twilio`, `aliyun`…
    pub kind: String,
    pub sent: u64,
    pub failed: u64,
    pub circuit: CircuitState,
}

/// `POST /v1/tokens` (extension): mint a client token with the configured secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRequest {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    /// Lifetime in seconds (default 3600, at most 7 days).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::option"
    )]
    #[schema(minimum = 1, maximum = 604800)]
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
        Conflict => "conflict",
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
            ErrorCode::Conflict => 409,
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
