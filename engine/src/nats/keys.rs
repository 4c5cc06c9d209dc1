//! API keys created through the API, on the cluster engine: one KV entry per key name (the
//! key's hash only) and one per key and UTC day counting its use (compare-and-set).

use async_trait::async_trait;
use futures::StreamExt;

use super::kv_json::{backend, create_json, get_json_latest, modify};
use super::store::NatsStore;
use crate::keys::{ApiKeyRecord, Keys};
use crate::store::StoreResult;

#[async_trait]
impl Keys for NatsStore {
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<bool> {
        create_json(&self.engine().buckets.api_keys, &key.name, key).await
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let bucket = &self.engine().buckets.api_keys;
        let mut keys = bucket.keys().await.map_err(|e| backend("key list", e))?;
        let mut out = Vec::new();
        while let Some(name) = keys.next().await {
            let name = name.map_err(|e| backend("key list", e))?;
            if let Some((k, _)) = get_json_latest::<ApiKeyRecord>(bucket, &name).await? {
                out.push(k);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_api_key(&self, name: &str) -> StoreResult<bool> {
        let bucket = &self.engine().buckets.api_keys;
        if get_json_latest::<ApiKeyRecord>(bucket, name)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        bucket
            .purge(name)
            .await
            .map_err(|e| backend("key delete", e))?;
        Ok(true)
    }

    async fn add_key_usage(&self, name: &str, day: i64, n: u64) -> StoreResult<u64> {
        modify::<u64, u64>(
            &self.engine().buckets.key_usage,
            &format!("{name}.{day}"),
            |used| {
                let total = used.unwrap_or(0) + n;
                Ok((Some(total), total))
            },
        )
        .await
    }
}
