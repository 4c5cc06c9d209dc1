//! Status webhooks on the cluster engine: endpoints in a KV bucket (key = webhook id);
//! deliveries on `<p>.hooks.<webhook>` in a work-queue stream, one durable consumer per
//! webhook pulled by every dispatcher (a retry is a nak with its delay, so a waiting retry
//! holds no worker and a dispatcher's crash hands its deliveries to the others after
//! `ack_wait`); the delivery log on `<p>.hooklog.<webhook>`, the newest [`LOG_LIMIT`] kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{AckKind, Message, stream};
use async_trait::async_trait;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::NatsEngine;
use super::kv_json::backend;
use super::kv_json::{get_json_latest, put_json};
use crate::hooks::{
    HookAttempt, HookDelivery, HookLease, HookSettle, HookSettler, WebhookRecord, Webhooks,
};
use crate::store::{StoreError, StoreResult};

type Consumer = consumer::Consumer<pull::Config>;

pub struct NatsHooks {
    engine: NatsEngine,
    deliveries: stream::Stream,
    log: stream::Stream,
    consumers: Mutex<HashMap<String, Consumer>>,
    /// Changes to the webhooks bucket, made by any dispatcher.
    watch: tokio::sync::Mutex<Option<async_nats::jetstream::kv::Watch>>,
}

fn consumer_name(webhook: &str) -> String {
    format!("hook-{webhook}")
}

impl NatsHooks {
    pub async fn new(engine: NatsEngine) -> StoreResult<NatsHooks> {
        super::patiently(|| Box::pin(Self::open(engine.clone()))).await
    }

    async fn open(engine: NatsEngine) -> StoreResult<NatsHooks> {
        let deliveries = engine
            .js
            .get_stream(&engine.names.hooks)
            .await
            .map_err(|e| backend("webhook stream", e))?;
        let log = engine
            .js
            .get_stream(&engine.names.hook_log)
            .await
            .map_err(|e| backend("webhook log stream", e))?;
        let engine_watch = engine.buckets.webhooks.watch_all().await.ok();
        Ok(NatsHooks {
            engine,
            deliveries,
            log,
            consumers: Mutex::new(HashMap::new()),
            // Watching from now on: a change after this, even before the first read of the
            // list, is announced.
            watch: tokio::sync::Mutex::new(engine_watch),
        })
    }

    fn subject(&self, webhook: &str) -> String {
        format!("{}.hooks.{webhook}", self.engine.subjects.prefix())
    }

    fn log_subject(&self, webhook: &str) -> String {
        format!("{}.hooklog.{webhook}", self.engine.subjects.prefix())
    }

    async fn consumer(&self, webhook: &str) -> StoreResult<Consumer> {
        if let Some(c) = self
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(webhook)
        {
            return Ok(c.clone());
        }
        let name = consumer_name(webhook);
        let consumer = self
            .deliveries
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.subject(webhook),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.engine.options.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| backend("webhook consumer", e))?;
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(webhook.to_string(), consumer.clone());
        Ok(consumer)
    }
}

struct AckSettler {
    message: Message,
    client: async_nats::Client,
    log_subject: String,
}

#[async_trait]
impl HookSettler for AckSettler {
    async fn settle(self: Box<Self>, how: HookSettle, attempt: HookAttempt) {
        // The log line is a core publish the log stream keeps: best effort, it never holds
        // the delivery back.
        if let Ok(json) = serde_json::to_vec(&attempt)
            && let Err(e) = self
                .client
                .publish(self.log_subject.clone(), json.into())
                .await
        {
            tracing::debug!(error = %e, "could not log a webhook attempt");
        }
        let kind = match how {
            HookSettle::Done => AckKind::Ack,
            HookSettle::Retry(after) => AckKind::Nak(Some(after)),
        };
        if let Err(e) = self.message.ack_with(kind).await {
            // Unsettled, it comes back after ack_wait: at least once.
            tracing::warn!(error = %e, "could not settle a webhook delivery");
        }
    }
}

#[async_trait]
impl Webhooks for NatsHooks {
    async fn put_webhook(&self, hook: &WebhookRecord) -> StoreResult<()> {
        put_json(&self.engine.buckets.webhooks, &hook.id, hook).await?;
        self.consumer(&hook.id).await?;
        Ok(())
    }

    async fn webhooks(&self) -> StoreResult<Vec<WebhookRecord>> {
        let bucket = &self.engine.buckets.webhooks;
        let mut keys = match bucket.keys().await {
            Ok(k) => k,
            Err(e) => return Err(backend("webhook list", e)),
        };
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| backend("webhook list", e))?;
            if let Some((hook, _)) = get_json_latest::<WebhookRecord>(bucket, &key).await? {
                out.push(hook);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn delete_webhook(&self, id: &str) -> StoreResult<bool> {
        let bucket = &self.engine.buckets.webhooks;
        if get_json_latest::<WebhookRecord>(bucket, id)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        bucket
            .purge(id)
            .await
            .map_err(|e| backend("webhook delete", e))?;
        self.consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let _ = self.deliveries.delete_consumer(&consumer_name(id)).await;
        let _ = self.deliveries.purge().filter(self.subject(id)).await;
        let _ = self.log.purge().filter(self.log_subject(id)).await;
        Ok(true)
    }

    async fn enqueue_hooks(&self, deliveries: Vec<HookDelivery>) -> StoreResult<()> {
        let publishes = deliveries.into_iter().map(|d| async move {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", d.id.as_str());
            let ack = self
                .engine
                .js
                .publish_with_headers(self.subject(&d.webhook), headers, d.body)
                .await
                .map_err(|e| StoreError::Unavailable(format!("webhook queue: {e}")))?;
            ack.await
                .map_err(|e| StoreError::Unavailable(format!("webhook queue: {e}")))?;
            Ok::<_, StoreError>(())
        });
        futures::future::try_join_all(publishes).await?;
        Ok(())
    }

    async fn next_hooks(
        &self,
        webhook: &str,
        max: usize,
        stop: &CancellationToken,
    ) -> Option<Vec<HookLease>> {
        loop {
            let consumer = match self.consumer(webhook).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(webhook, error = %e, "webhook consumer unavailable");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => return None,
                    }
                }
            };
            let messages = super::queue::fetch_batch(&consumer, max.max(1), stop).await?;
            let leases: Vec<HookLease> = messages
                .into_iter()
                .map(|m| {
                    let attempt = m.info().map(|i| i.delivered as u32).unwrap_or(1);
                    let id = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Msg-Id"))
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default();
                    let delivery = HookDelivery {
                        id,
                        webhook: webhook.to_string(),
                        body: m.payload.clone(),
                    };
                    let settler = AckSettler {
                        message: m,
                        client: self.engine.client.clone(),
                        log_subject: self.log_subject(webhook),
                    };
                    HookLease::new(delivery, attempt.max(1), Box::new(settler))
                })
                .collect();
            return Some(leases);
        }
    }

    async fn hook_backlog(&self, webhook: &str) -> StoreResult<u64> {
        let mut consumer = self.consumer(webhook).await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| backend("webhook consumer", e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    async fn webhooks_changed(&self) {
        let mut watch = self.watch.lock().await;
        if watch.is_none() {
            match self.engine.buckets.webhooks.watch_all().await {
                Ok(w) => *watch = Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the webhooks");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return;
                }
            }
        }
        if let Some(w) = watch.as_mut() {
            match w.next().await {
                Some(Ok(_)) => {}
                // Ended or failed: watch again (and read the list meanwhile).
                _ => {
                    *watch = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn hook_log(&self, webhook: &str, limit: usize) -> StoreResult<Vec<HookAttempt>> {
        match self
            .log
            .direct_get_last_for_subject(self.log_subject(webhook))
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), stream::DirectGetErrorKind::NotFound) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(backend("webhook log", e)),
        }
        let consumer = self
            .log
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.log_subject(webhook),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| backend("webhook log", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| backend("webhook log", e))?;
        let mut out = std::collections::VecDeque::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let m = match next {
                Ok(Some(Ok(m))) => m,
                // Nothing (more) in the log.
                Ok(None) | Err(_) => break,
                Ok(Some(Err(e))) => return Err(backend("webhook log", e)),
            };
            let pending = m.info().map(|i| i.pending).unwrap_or(0);
            if let Ok(entry) = serde_json::from_slice::<HookAttempt>(&m.payload) {
                out.push_back(entry);
                if out.len() > limit {
                    out.pop_front();
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(out.into_iter().rev().collect())
    }
}
