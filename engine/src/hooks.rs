//! Status webhooks (SPEC §11): the registered endpoints, the durable queue of their
//! deliveries and a log of every attempt.
//!
//! Each webhook has its own queue, so that retrying one slow or failing endpoint never
//! holds back another's callbacks. The embedded engine keeps each queue in memory over
//! SQLite rows (refilled on start); the cluster engine keeps one JetStream consumer per
//! webhook, shared by every dispatcher, so a dispatcher crash neither loses nor stalls one.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_common::time::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::StoreResult;

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// Event names (`sent`, `read`…) or `*` for all.
    pub events: Vec<String>,
    /// The `whsec_…` signing secret: shown once, when created.
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: i64,
    /// Set when the endpoint kept failing; no new events are queued for it until it is
    /// enabled again (what was queued waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {
    pub at: i64,
    pub reason: String,
}

impl WebhookRecord {
    /// Whether events named `event` go to this endpoint.
    pub fn wants(&self, event: &str) -> bool {
        self.disabled.is_none() && self.events.iter().any(|e| e == "*" || e == event)
    }
}

/// One event to POST to one endpoint; `id` is its stable `webhook-id`.
#[derive(Debug, Clone, PartialEq)]
pub struct HookDelivery {
    pub id: String,
    pub webhook: String,
    pub body: Bytes,
}

/// How a leased delivery ends for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookSettle {
    /// Delivered, or given up: it leaves the queue.
    Done,
    /// POST it again after this long.
    Retry(Duration),
}

#[async_trait]
pub trait HookSettler: Send + Sync {
    /// Settles the delivery and adds `attempt` to the webhook's log (one write where the
    /// engine can).
    async fn settle(self: Box<Self>, how: HookSettle, attempt: HookAttempt);
}

/// A delivery handed to one worker; `attempt` counts from 1.
pub struct HookLease {
    pub delivery: HookDelivery,
    pub attempt: u32,
    settler: Box<dyn HookSettler>,
}

impl HookLease {
    pub fn new(delivery: HookDelivery, attempt: u32, settler: Box<dyn HookSettler>) -> Self {
        HookLease {
            delivery,
            attempt,
            settler,
        }
    }

    /// Settles the delivery, logging what this attempt came to.
    pub async fn settle(self, how: HookSettle, attempt: HookAttempt) {
        self.settler.settle(how, attempt).await
    }
}

/// What one POST came to, in the webhook's delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookAttempt {
    /// The `webhook-id` of the delivery.
    pub delivery: String,
    pub event: String,
    pub message_id: String,
    pub attempt: u32,
    /// Unix milliseconds.
    pub at: i64,
    /// `delivered`, `retrying` or `failed` (retries used up).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Attempts kept per webhook in its log.
pub const LOG_LIMIT: usize = 1000;

#[async_trait]
pub trait Webhooks: Send + Sync + 'static {
    async fn put_webhook(&self, hook: &WebhookRecord) -> StoreResult<()>;
    async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>>;
    /// Deletes the webhook, its queue and its log; `false` if there was none.
    async fn delete_webhook(&self, id: &str) -> StoreResult<bool>;
    /// Queues deliveries durably: once this returns they survive a crash. A delivery
    /// queued twice with the same id (a status announced again after a crash) may be
    /// POSTed twice, with the same `webhook-id`.
    async fn enqueue_hooks(&self, deliveries: Vec<HookDelivery>) -> StoreResult<()>;
    /// Waits for the next due deliveries of `webhook`, at most `max`; `None` once `stop`
    /// fires.
    async fn next_hooks(
        &self,
        webhook: &str,
        max: usize,
        stop: &CancellationToken,
    ) -> Option<Vec<HookLease>>;
    /// Deliveries waiting or being attempted for `webhook`.
    async fn hook_backlog(&self, webhook: &str) -> StoreResult<u64>;
    /// The newest `limit` attempts, newest first.
    async fn hook_log(&self, webhook: &str, limit: usize) -> StoreResult<Vec<HookAttempt>>;
    /// Records a job's final step and queues its webhook deliveries in one transaction, where
    /// the engine can (`None`: it cannot; record, then [`Webhooks::enqueue_hooks`]). Then a
    /// crash between the two cannot lose the events.
    async fn advance_queueing(
        &self,
        _message_id: &str,
        _idx: u32,
        _attempt: Option<crate::store::AttemptRecord>,
        _next: crate::store::JobNext,
        _deliveries: Vec<HookDelivery>,
    ) -> Option<StoreResult<()>> {
        None
    }

    /// Returns when the list of webhooks may have changed through another process (the
    /// embedded engine has no other: never).
    async fn webhooks_changed(&self) {
        std::future::pending::<()>().await
    }
}

/// In-memory per-webhook queues ordered by due time, for the embedded engine (its rows
/// hold the truth).
#[derive(Default)]
pub struct HookLanes {
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
}

#[derive(Default)]
struct Lane {
    due: Mutex<BinaryHeap<Reverse<(i64, u64, Queued)>>>,
    notify: Notify,
    order: std::sync::atomic::AtomicU64,
}

/// A delivery waiting in memory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Queued {
    pub id: String,
    pub attempt: u32,
    pub body: Bytes,
}

impl HookLanes {
    fn lane(&self, webhook: &str) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(lanes.entry(webhook.to_string()).or_default())
    }

    /// Queues a delivery due at `due` (Unix ms).
    pub fn push(&self, webhook: &str, due: i64, queued: Queued) {
        let lane = self.lane(webhook);
        let order = lane
            .order
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lane.due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reverse((due, order, queued)));
        lane.notify.notify_one();
    }

    /// Waits for the next due deliveries of `webhook`, at most `max`.
    pub async fn pop(
        &self,
        webhook: &str,
        max: usize,
        stop: &CancellationToken,
    ) -> Option<Vec<Queued>> {
        let lane = self.lane(webhook);
        loop {
            let wait = {
                let mut due = lane.due.lock().unwrap_or_else(|p| p.into_inner());
                let now = now_ms();
                match due.peek() {
                    Some(Reverse((at, _, _))) if *at <= now => {
                        let mut out = Vec::new();
                        while out.len() < max.max(1) {
                            match due.peek() {
                                Some(Reverse((at, _, _))) if *at <= now => {}
                                _ => break,
                            }
                            if let Some(Reverse((_, _, q))) = due.pop() {
                                out.push(q);
                            }
                        }
                        return Some(out);
                    }
                    Some(Reverse((at, _, _))) => Duration::from_millis((*at - now_ms()) as u64),
                    None => Duration::from_secs(3600),
                }
            };
            tokio::select! {
                _ = lane.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Forgets a deleted webhook's queue.
    pub fn remove(&self, webhook: &str) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lane) = lanes.remove(webhook) {
            lane.due.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: &str) -> Queued {
        Queued {
            id: id.into(),
            attempt: 1,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn a_lane_hands_out_due_deliveries_in_due_order_and_waits_for_later_ones() {
        let lanes = HookLanes::default();
        let stop = CancellationToken::new();
        let now = now_ms();
        lanes.push("a", now + 150, queued("later"));
        lanes.push("a", now - 10, queued("first"));
        lanes.push("b", now - 20, queued("other"));
        lanes.push("a", now - 5, queued("second"));
        let ids = |v: Vec<Queued>| v.into_iter().map(|q| q.id).collect::<Vec<_>>();
        assert_eq!(ids(lanes.pop("a", 1, &stop).await.unwrap()), ["first"]);
        assert_eq!(ids(lanes.pop("a", 5, &stop).await.unwrap()), ["second"]);
        let started = std::time::Instant::now();
        assert_eq!(ids(lanes.pop("a", 5, &stop).await.unwrap()), ["later"]);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(ids(lanes.pop("b", 5, &stop).await.unwrap()), ["other"]);
        stop.cancel();
        assert!(lanes.pop("a", 5, &stop).await.is_none());
    }

    #[test]
    fn a_disabled_webhook_wants_nothing() {
        let mut hook = WebhookRecord {
            id: "wh_1".into(),
            url: "http://x".into(),
            events: vec!["sent".into(), "read".into()],
            secret: String::new(),
            description: None,
            created_at: 0,
            disabled: None,
        };
        assert!(hook.wants("sent") && !hook.wants("failed"));
        hook.events = vec!["*".into()];
        assert!(hook.wants("failed"));
        hook.disabled = Some(Disabled {
            at: 1,
            reason: "x".into(),
        });
        assert!(!hook.wants("failed"));
    }
}
