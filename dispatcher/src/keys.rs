//! API keys created through the API (SPEC §11): checked beside the configured ones, in
//! constant time, against their SHA-256 (the store never holds a key). Every dispatcher
//! keeps the list in memory; a create or delete tells all of them on `<prefix>.keys.changed`
//! and waits for their answers, so when it returns the key works — or stops working — on
//! every dispatcher that answered (a KV watch is not needed: a dispatcher that missed the
//! call re-reads the list every [`REFRESH`]).
//!
//! Daily quotas are counted per UTC day in the store, shared by all dispatchers: each takes
//! a small block of the quota at a time and spends it locally, so a send costs a store
//! write only once per block; blocks another dispatcher holds unused count as used, never
//! the other way round (a key can come short of its quota, never over it).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use herald_common::auth::Scopes;
use herald_common::subjects::Subjects;
use herald_common::time::now_ms;
use herald_engine::{ApiKeyRecord, Bus, Keys, StoreError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the list is read again without being told.
const REFRESH: Duration = Duration::from_secs(10);
/// How long a create or delete waits for the other dispatchers' answers.
const ANNOUNCE_WINDOW: Duration = Duration::from_millis(300);

struct Entry {
    digest: [u8; 32],
    name: String,
    scopes: Scopes,
    daily_quota: Option<u64>,
    rate_limit: Option<u32>,
}

/// The block of a key's quota this dispatcher holds for today.
#[derive(Default)]
struct Block {
    day: i64,
    left: u64,
}

pub struct DynamicKeys {
    store: Arc<dyn Keys>,
    bus: Arc<dyn Bus>,
    subject: String,
    entries: RwLock<Vec<Entry>>,
    blocks: tokio::sync::Mutex<HashMap<String, Block>>,
}

/// A presented key that matched one created through the API.
pub struct Found {
    pub name: String,
    pub scopes: Scopes,
    pub daily_quota: Option<u64>,
    /// Requests per second, instead of `HERALD_API_RATE_LIMIT`.
    pub rate_limit: Option<u32>,
}

pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Today, as days since the epoch (UTC), and the seconds until it ends.
fn today() -> (i64, u64) {
    let now = now_ms();
    let day = now.div_euclid(86_400_000);
    let left = ((day + 1) * 86_400_000 - now) / 1000;
    (day, left.max(1) as u64)
}

impl DynamicKeys {
    pub async fn start(
        store: Arc<dyn Keys>,
        bus: Arc<dyn Bus>,
        subjects: &Subjects,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<DynamicKeys>, String> {
        let keys = Arc::new(DynamicKeys {
            store,
            bus: Arc::clone(&bus),
            subject: format!("{}.keys.changed", subjects.prefix()),
            entries: RwLock::new(Vec::new()),
            blocks: tokio::sync::Mutex::new(HashMap::new()),
        });
        let (tx, mut rx) = mpsc::channel(64);
        let sub = bus
            .subscribe(&keys.subject, tx)
            .await
            .map_err(|e| format!("cannot subscribe to key changes: {e}"))?;
        keys.refresh().await.map_err(|e| e.to_string())?;
        let k = Arc::clone(&keys);
        tracker.spawn(async move {
            let _sub = sub;
            loop {
                let msg = tokio::select! {
                    m = rx.recv() => m,
                    _ = tokio::time::sleep(REFRESH) => None,
                    _ = shutdown.cancelled() => return,
                };
                if let Err(e) = k.refresh().await {
                    tracing::warn!(error = %e, "could not read the API keys");
                }
                if let Some(reply) = msg.and_then(|m| m.reply) {
                    let _ = k.bus.publish(&reply, Bytes::from_static(b"ok")).await;
                }
            }
        });
        Ok(keys)
    }

    async fn refresh(&self) -> Result<(), StoreError> {
        let records = self.store.api_keys().await?;
        let entries = records
            .into_iter()
            .filter_map(|r| {
                Some(Entry {
                    digest: unhex(&r.hash)?,
                    scopes: Scopes::from_names(&r.scopes).ok()?,
                    name: r.name,
                    daily_quota: r.daily_quota,
                    rate_limit: r.rate_limit,
                })
            })
            .collect();
        *self.entries.write().unwrap_or_else(|p| p.into_inner()) = entries;
        Ok(())
    }

    /// Tells every dispatcher to read the list again, and waits (briefly) for their answers.
    async fn announce(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not read the API keys");
        }
        if let Err(e) = self
            .bus
            .gather(&self.subject, Bytes::new(), ANNOUNCE_WINDOW)
            .await
        {
            tracing::warn!(error = %e, "could not tell the dispatchers of a key change");
        }
    }

    /// The key created through the API that `presented` is, if any (every stored digest is
    /// compared, in constant time).
    pub fn find(&self, presented: &str) -> Option<Found> {
        let d = digest(presented);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut found = None;
        for (i, e) in entries.iter().enumerate() {
            if bool::from(e.digest.ct_eq(&d)) {
                found = Some(i);
            }
        }
        let e = &entries[found?];
        Some(Found {
            name: e.name.clone(),
            scopes: e.scopes,
            daily_quota: e.daily_quota,
            rate_limit: e.rate_limit,
        })
    }

    pub async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.store.api_keys().await
    }

    /// Stores a new key; `false` if the name is taken. Works everywhere once this returns.
    pub async fn create(&self, record: &ApiKeyRecord) -> Result<bool, StoreError> {
        let created = self.store.create_api_key(record).await?;
        if created {
            self.announce().await;
        }
        Ok(created)
    }

    /// Deletes a key; stops working everywhere once this returns.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_api_key(name).await?;
        if deleted {
            self.announce().await;
        }
        Ok(deleted)
    }

    /// Takes one message of key `name`'s daily `quota`; `Err(seconds)` until the day ends
    /// once it is used up.
    pub async fn take(&self, name: &str, quota: u64) -> Result<(), u64> {
        let (day, until_midnight) = today();
        let mut blocks = self.blocks.lock().await;
        let block = blocks.entry(name.to_string()).or_default();
        if block.day != day {
            *block = Block { day, left: 0 };
        }
        if block.left == 0 {
            let size = (quota / 100).clamp(1, 100);
            match self.store.add_key_usage(name, day, size).await {
                Ok(total) => {
                    let before = total - size;
                    block.left = quota.saturating_sub(before).min(size);
                }
                Err(e) => {
                    // The quota cannot be counted now: let the message through (the store
                    // that failed here will refuse or accept the send itself).
                    tracing::warn!(key = name, error = %e, "could not count a key's quota");
                    return Ok(());
                }
            }
        }
        if block.left == 0 {
            return Err(until_midnight);
        }
        block.left -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let d = digest("hk_secret");
        assert_eq!(unhex(&crate::channels::signing::hex(&d)), Some(d));
        assert_eq!(unhex("zz"), None);
    }
}
