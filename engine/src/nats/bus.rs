//! The cluster engine's bus: NATS core. Requests use one wildcard reply subscription per
//! process (not one per request) and learn "no responders" from the server's 503 status.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, StatusCode};
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Bus, BusError, BusMsg, CleanupGuard, PendingReply, RequestError, Subscription};

enum ReplySlot {
    Once(oneshot::Sender<Result<Bytes, RequestError>>),
    Many(mpsc::UnboundedSender<Option<Bytes>>),
}

#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    reply_prefix: Arc<str>,
    replies: Arc<DashMap<u64, ReplySlot>>,
    next: Arc<AtomicU64>,
}

fn bus_err(e: impl std::fmt::Display) -> BusError {
    BusError::Other(e.to_string())
}

impl NatsBus {
    /// Subscribes the process's reply subject and starts routing replies.
    pub async fn new(client: Client) -> Result<NatsBus, BusError> {
        let reply_prefix: Arc<str> = Arc::from(client.new_inbox());
        let mut replies_sub = client
            .subscribe(format!("{reply_prefix}.*"))
            .await
            .map_err(bus_err)?;
        let replies: Arc<DashMap<u64, ReplySlot>> = Arc::default();
        let routes = Arc::clone(&replies);
        tokio::spawn(async move {
            while let Some(msg) = replies_sub.next().await {
                let Some(token) = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                let no_responders = msg.status == Some(StatusCode::NO_RESPONDERS);
                let once = match routes.get(&token).as_deref() {
                    Some(ReplySlot::Many(tx)) => {
                        let _ = tx.send((!no_responders).then(|| msg.payload.clone()));
                        false
                    }
                    Some(ReplySlot::Once(_)) => true,
                    None => false,
                };
                if once && let Some((_, ReplySlot::Once(slot))) = routes.remove(&token) {
                    let _ = slot.send(if no_responders {
                        Err(RequestError::NoResponders)
                    } else {
                        Ok(msg.payload)
                    });
                }
            }
        });
        Ok(NatsBus {
            client,
            reply_prefix,
            replies,
            next: Arc::new(AtomicU64::new(1)),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn slot(&self, slot: ReplySlot) -> (u64, String, CleanupGuard) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.replies.insert(token, slot);
        let replies = Arc::clone(&self.replies);
        let guard = CleanupGuard::new(move || {
            replies.remove(&token);
        });
        (token, format!("{}.{token}", self.reply_prefix), guard)
    }

    fn forward(mut sub: async_nats::Subscriber, sink: mpsc::Sender<BusMsg>) -> Subscription {
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let msg = BusMsg {
                    subject: m.subject.to_string(),
                    reply: m.reply.map(|r| r.to_string()),
                    payload: m.payload,
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = sink.try_send(msg) {
                    break;
                }
            }
        });
        let abort = task.abort_handle();
        // Aborting drops the subscriber, which unsubscribes.
        Subscription::new(CleanupGuard::new(move || abort.abort()))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.client
            .publish(subject.to_string(), payload)
            .await
            .map_err(bus_err)
    }

    async fn request(&self, subject: &str, payload: Bytes) -> Result<PendingReply, BusError> {
        let (tx, rx) = oneshot::channel();
        let (_, reply, guard) = self.slot(ReplySlot::Once(tx));
        self.client
            .publish_with_reply(subject.to_string(), reply, payload)
            .await
            .map_err(bus_err)?;
        Ok(PendingReply::new(rx, Some(guard)))
    }

    async fn gather(
        &self,
        subject: &str,
        payload: Bytes,
        window: Duration,
    ) -> Result<Vec<Bytes>, BusError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_, reply, _guard) = self.slot(ReplySlot::Many(tx));
        self.client
            .publish_with_reply(subject.to_string(), reply, payload)
            .await
            .map_err(bus_err)?;
        let deadline = tokio::time::Instant::now() + window;
        let mut replies = Vec::new();
        while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            match reply {
                Some(r) => replies.push(r),
                None => break, // no responders
            }
        }
        Ok(replies)
    }

    async fn subscribe(
        &self,
        subject: &str,
        sink: mpsc::Sender<BusMsg>,
    ) -> Result<Subscription, BusError> {
        let sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .map_err(bus_err)?;
        // Make sure the server has the interest before we say it is there.
        self.client.flush().await.map_err(bus_err)?;
        Ok(Self::forward(sub, sink))
    }

    async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
        sink: mpsc::Sender<BusMsg>,
    ) -> Result<Subscription, BusError> {
        let sub = self
            .client
            .queue_subscribe(subject.to_string(), group.to_string())
            .await
            .map_err(bus_err)?;
        self.client.flush().await.map_err(bus_err)?;
        Ok(Self::forward(sub, sink))
    }

    fn is_ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
