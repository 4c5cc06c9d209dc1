//! Status webhooks (SPEC §11): every status change a webhook asks for is queued durably for
//! it and POSTed with Standard Webhooks signing, retried on the configured schedule (27 h
//! by default) and then given up, which disables the webhook and raises an alert.
//!
//! Each enabled webhook has its own worker here, with its own bound on POSTs in flight, and
//! its own queue in the engine: a slow or failing endpoint only ever waits on itself. On the
//! cluster engine every dispatcher runs a worker per webhook on the same shared consumer.
//! The list of webhooks is read again whenever the engine says it changed (on the cluster
//! engine a KV watch: one created or disabled through another dispatcher is seen within
//! milliseconds) and every [`REFRESH`] in any case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_common::api::{WebhookAttemptView, WebhookCreate, WebhookDisabled, WebhookView};
use herald_common::config::WebhookSettings;
use herald_common::time::{now_ms, rfc3339};
use herald_common::webhooks::{decode_secret, headers, new_secret};
use herald_engine::hooks::{Disabled, HookAttempt};
use herald_engine::{HookDelivery, HookLease, HookSettle, StoreError, WebhookRecord, Webhooks};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channels::{snippet, transport_error};

/// How often the list of webhooks is read again without a change announced.
const REFRESH: Duration = Duration::from_secs(10);

pub struct Hooks {
    store: Arc<dyn Webhooks>,
    client: reqwest::Client,
    settings: WebhookSettings,
    alerts: crate::alerts::Alerts,
    list: RwLock<Arc<Vec<Arc<WebhookRecord>>>>,
    /// The worker of each enabled webhook.
    workers: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// The stable `webhook-id` of one event to one webhook: the same if the status is ever
/// announced again (after a crash), so receivers de-duplicate.
fn delivery_id(webhook: &str, message_id: &str, user_id: &str, event: &str) -> String {
    let mut h = Sha256::new();
    for part in [webhook, message_id, user_id, event] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    format!("msg_{}", crate::channels::signing::hex(&digest[..16]))
}

/// What the log keeps of an event body, without parsing it twice.
#[derive(serde::Deserialize)]
struct EventHead {
    id: String,
    status: String,
}

pub fn view(hook: &WebhookRecord, secret: bool, backlog: Option<u64>) -> WebhookView {
    WebhookView {
        id: hook.id.clone(),
        url: hook.url.clone(),
        events: hook.events.clone(),
        description: hook.description.clone(),
        created_at: rfc3339(hook.created_at),
        secret: secret.then(|| hook.secret.clone()),
        disabled: hook.disabled.as_ref().map(|d| WebhookDisabled {
            at: rfc3339(d.at),
            reason: d.reason.clone(),
        }),
        backlog,
    }
}

pub fn attempt_view(a: HookAttempt) -> WebhookAttemptView {
    WebhookAttemptView {
        webhook_id: a.delivery,
        event: a.event,
        message_id: a.message_id,
        attempt: a.attempt,
        at: rfc3339(a.at),
        outcome: a.outcome,
        status_code: a.status_code,
        error: a.error,
        duration_ms: a.duration_ms,
    }
}

impl Hooks {
    /// Loads the webhooks and starts a worker for each enabled one.
    pub async fn start(
        store: Arc<dyn Webhooks>,
        client: reqwest::Client,
        settings: WebhookSettings,
        alerts: crate::alerts::Alerts,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Arc<Hooks>, StoreError> {
        let hooks = Arc::new(Hooks {
            store,
            client,
            settings,
            alerts,
            list: RwLock::new(Arc::new(Vec::new())),
            workers: Mutex::new(HashMap::new()),
            shutdown,
            tracker: tracker.clone(),
        });
        hooks.refresh().await?;
        let h = Arc::clone(&hooks);
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(REFRESH) => {}
                    _ = h.store.webhooks_changed() => {}
                    _ = h.shutdown.cancelled() => return,
                }
                if let Err(e) = h.refresh().await {
                    tracing::warn!(error = %e, "could not read the webhooks");
                }
            }
        });
        Ok(hooks)
    }

    /// Reads the list again; starts and stops workers to match.
    async fn refresh(self: &Arc<Self>) -> Result<(), StoreError> {
        let list: Vec<Arc<WebhookRecord>> = self
            .store
            .webhooks()
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        self.install(list);
        Ok(())
    }

    fn install(self: &Arc<Self>, list: Vec<Arc<WebhookRecord>>) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        workers.retain(|id, stop| {
            let keep = list.iter().any(|h| &h.id == id && h.disabled.is_none());
            if !keep {
                stop.cancel();
            }
            keep
        });
        for hook in list.iter().filter(|h| h.disabled.is_none()) {
            if workers.contains_key(&hook.id) {
                continue;
            }
            let stop = self.shutdown.child_token();
            workers.insert(hook.id.clone(), stop.clone());
            self.tracker
                .spawn(Arc::clone(self).work(Arc::clone(hook), stop));
        }
        metrics::gauge!("herald_webhooks").set(list.len() as f64);
        *self.list.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
    }

    pub fn list(&self) -> Arc<Vec<Arc<WebhookRecord>>> {
        Arc::clone(&self.list.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn store(&self) -> &Arc<dyn Webhooks> {
        &self.store
    }

    /// The deliveries of one event: one per webhook that wants it.
    pub fn deliveries(
        &self,
        event: &str,
        message_id: &str,
        user_id: &str,
        body: &Bytes,
    ) -> Vec<HookDelivery> {
        self.list()
            .iter()
            .filter(|h| h.wants(event))
            .map(|h| HookDelivery {
                id: delivery_id(&h.id, message_id, user_id, event),
                webhook: h.id.clone(),
                body: body.clone(),
            })
            .collect()
    }

    /// Queues the event for every webhook that wants it; returns once it is durable.
    pub async fn announce(&self, event: &str, message_id: &str, user_id: &str, body: &Bytes) {
        let deliveries = self.deliveries(event, message_id, user_id, body);
        if deliveries.is_empty() {
            return;
        }
        let n = deliveries.len() as u64;
        if let Err(e) = self.store.enqueue_hooks(deliveries).await {
            metrics::counter!("herald_webhook_events_lost_total").increment(n);
            tracing::error!(message_id, event, error = %e, "could not queue a status webhook");
        }
    }

    pub async fn create(self: &Arc<Self>, req: WebhookCreate) -> Result<WebhookRecord, StoreError> {
        let hook = WebhookRecord {
            id: format!(
                "wh_{}",
                ulid::Ulid::generate().to_string().to_ascii_lowercase()
            ),
            url: req.url,
            events: req.events.into_iter().map(|e| e.0).collect(),
            secret: new_secret(),
            description: req.description,
            created_at: now_ms(),
            disabled: None,
        };
        self.store.put_webhook(&hook).await?;
        self.refresh().await?;
        Ok(hook)
    }

    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<bool, StoreError> {
        let deleted = self.store.delete_webhook(id).await?;
        self.refresh().await?;
        Ok(deleted)
    }

    /// Enables a webhook again (its waiting deliveries go out); `None` if there is none.
    pub async fn enable(self: &Arc<Self>, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        let Some(mut hook) = self
            .store
            .webhooks()
            .await?
            .into_iter()
            .find(|h| h.id == id)
        else {
            return Ok(None);
        };
        hook.disabled = None;
        self.store.put_webhook(&hook).await?;
        self.refresh().await?;
        Ok(Some(hook))
    }

    async fn disable(self: &Arc<Self>, hook: &WebhookRecord, reason: String) {
        let mut hook = hook.clone();
        hook.disabled = Some(Disabled {
            at: now_ms(),
            reason: reason.clone(),
        });
        if let Err(e) = self.store.put_webhook(&hook).await {
            tracing::warn!(webhook = %hook.id, error = %e, "could not disable a webhook");
            return;
        }
        self.alerts.webhook_disabled(&hook.id, &reason);
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not read the webhooks");
        }
    }

    /// One webhook's worker: takes due deliveries as POST slots free up.
    async fn work(self: Arc<Self>, hook: Arc<WebhookRecord>, stop: CancellationToken) {
        let Ok(key) = decode_secret(&hook.secret) else {
            tracing::error!(webhook = %hook.id, "webhook secret is unreadable; not delivering");
            return;
        };
        let key: Arc<[u8]> = key.into();
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        loop {
            let first = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.cancelled() => return,
            };
            let mut permits = vec![first];
            while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(p);
            }
            let Some(leases) = self.store.next_hooks(&hook.id, permits.len(), &stop).await else {
                return;
            };
            for (lease, permit) in leases.into_iter().zip(permits) {
                let (me, hook, key) = (Arc::clone(&self), Arc::clone(&hook), Arc::clone(&key));
                self.tracker.spawn(async move {
                    me.post(&hook, &key, lease).await;
                    drop(permit);
                });
            }
        }
    }

    async fn post(self: &Arc<Self>, hook: &WebhookRecord, key: &[u8], lease: HookLease) {
        let delivery = lease.delivery.clone();
        let started = Instant::now();
        let timestamp = now_ms() / 1000;
        let mut request = self
            .client
            .post(&hook.url)
            .timeout(self.settings.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers(key, &delivery.id, timestamp, &delivery.body) {
            request = request.header(name, value);
        }
        let (status_code, error, retry_after) =
            match request.body(delivery.body.clone()).send().await {
                Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None, None),
                Ok(r) => {
                    let code = r.status().as_u16();
                    let after = crate::channels::retry_after(r.headers());
                    let body = r.text().await.unwrap_or_default();
                    let text = if body.trim().is_empty() {
                        format!("HTTP {code}")
                    } else {
                        format!("HTTP {code}: {}", snippet(&body))
                    };
                    (Some(code), Some(text), after)
                }
                Err(e) => (
                    None,
                    Some(
                        transport_error(e)
                            .detail()
                            .unwrap_or("request failed")
                            .to_string(),
                    ),
                    None,
                ),
            };
        let attempt = lease.attempt;
        let schedule = &self.settings.retry_schedule;
        let (outcome, settle) = match &error {
            None => ("delivered", HookSettle::Done),
            Some(_) if (attempt as usize) <= schedule.len() => {
                let wait = schedule[attempt as usize - 1];
                // ±20 % so that many retries of one outage do not arrive together.
                let jittered = wait.mul_f64(0.8 + 0.4 * rand::random::<f64>());
                let wait = retry_after.map_or(jittered, |a| a.max(jittered));
                ("retrying", HookSettle::Retry(wait))
            }
            Some(_) => ("failed", HookSettle::Done),
        };
        metrics::counter!("herald_webhook_attempts_total", "outcome" => outcome).increment(1);
        let head: Option<EventHead> = serde_json::from_slice(&delivery.body).ok();
        let entry = HookAttempt {
            delivery: delivery.id.clone(),
            event: head.as_ref().map(|h| h.status.clone()).unwrap_or_default(),
            message_id: head.map(|h| h.id).unwrap_or_default(),
            attempt,
            at: now_ms(),
            outcome: outcome.to_string(),
            status_code,
            error: error.clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        lease.settle(settle, entry).await;
        if outcome == "failed" {
            let reason = format!(
                "delivery {} failed {attempt} times over the retry schedule; last: {}",
                delivery.id,
                error.unwrap_or_default()
            );
            self.disable(hook, reason).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_id_is_stable_and_differs_per_webhook_and_event() {
        let a = delivery_id("wh_1", "m1", "u1", "sent");
        assert_eq!(a, delivery_id("wh_1", "m1", "u1", "sent"));
        assert!(a.starts_with("msg_") && a.len() == 36);
        assert_ne!(a, delivery_id("wh_2", "m1", "u1", "sent"));
        assert_ne!(a, delivery_id("wh_1", "m1", "u1", "read"));
        assert_ne!(a, delivery_id("wh_1", "m1", "u2", "sent"));
    }
}
