//! API keys created through the API (SPEC §11): stored by name with the SHA-256 of the key
//! (never the key), and each key's usage per UTC day for its daily quota.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub name: String,
    /// Hex SHA-256 of the key.
    pub hash: String,
    pub scopes: Vec<String>,
    /// Messages it may send per UTC day (`None`: no quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_quota: Option<u64>,
    /// Requests per second (`None`: `HERALD_API_RATE_LIMIT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    pub created_at: i64,
}

#[async_trait]
pub trait Keys: Send + Sync + 'static {
    /// Stores a new key; `false` if the name is taken.
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool>;
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn delete_api_key(&self, name: &str) -> StoreResult<bool>;
    /// Adds `n` to what key `name` used on `day` (days since the epoch, UTC); returns the
    /// total after.
    async fn add_key_usage(&self, name: &str, day: i64, n: u64) -> StoreResult<u64>;
}
