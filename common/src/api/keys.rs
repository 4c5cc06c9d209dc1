//! API keys created through the API (SPEC §11).

use serde::{Deserialize, Serialize};

/// `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    /// 1–64 of `[A-Za-z0-9_-]`: the `sender` of its messages.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// `send`, `read`, `admin` (default: all three).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 3)]
    pub scopes: Option<Vec<KeyScope>>,
    /// Messages it may send per UTC day (none: no quota).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    #[schema(minimum = 1, maximum = 1_000_000_000_u64)]
    pub daily_quota: Option<u64>,
    /// Requests per second this key may make (burst: twice that), instead of
    /// `HERALD_API_RATE_LIMIT` (none: that setting).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    #[schema(minimum = 1, maximum = 100_000)]
    pub rate_limit: Option<u32>,
}

/// A scope name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^(send|read|admin)$")]
pub struct KeyScope(pub String);

/// A key as the API shows it; `key` only in the answer to its creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyView {
    pub name: String,
    pub scopes: Vec<String>,
    /// `config` (HERALD_API_KEYS) or `api` (created here).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u64>,
    /// Requests per second, when the key has a rate of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The key itself: shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}
