//! The embedded engine's bus: NATS-core semantics inside one process. Publishing is a map
//! lookup plus `try_send` to each subscriber's bounded channel; it never awaits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Bus, BusError, BusMsg, CleanupGuard, PendingReply, RequestError, Subscription};

const REPLY_PREFIX: &str = "_INBOX.";

/// Where replies to one request go: the first reply, or every reply.
enum ReplySlot {
    Once(oneshot::Sender<Result<Bytes, RequestError>>),
    Many(mpsc::UnboundedSender<Bytes>),
}

struct Sub {
    id: u64,
    group: Option<String>,
    sink: mpsc::Sender<BusMsg>,
}

#[derive(Default)]
struct Inner {
    subs: DashMap<String, Vec<Sub>>,
    replies: DashMap<String, ReplySlot>,
    next_id: AtomicU64,
}

/// An in-process bus. Cheap to clone; all clones share subscriptions.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Delivers one message; returns how many subscribers it was handed to.
    fn deliver(&self, subject: &str, reply: Option<&str>, payload: Bytes) -> usize {
        if subject.starts_with(REPLY_PREFIX) {
            let many = match self.inner.replies.get(subject).as_deref() {
                Some(ReplySlot::Many(tx)) => {
                    let _ = tx.send(payload.clone());
                    true
                }
                Some(ReplySlot::Once(_)) => false,
                None => return 0,
            };
            if !many && let Some((_, ReplySlot::Once(slot))) = self.inner.replies.remove(subject) {
                let _ = slot.send(Ok(payload));
            }
            return 1;
        }
        let Some(subs) = self.inner.subs.get(subject) else {
            return 0;
        };
        let msg = BusMsg {
            subject: subject.to_string(),
            reply: reply.map(str::to_string),
            payload,
        };
        let mut handed = 0;
        let mut groups_served: Vec<&str> = Vec::new();
        // Queue groups: pick one live member per group, rotating by message.
        let rotate = self.next_id() as usize;
        for sub in subs.iter() {
            match &sub.group {
                None => {
                    if !sub.sink.is_closed() {
                        handed += 1;
                        let _ = sub.sink.try_send(msg.clone());
                    }
                }
                Some(group) if !groups_served.contains(&group.as_str()) => {
                    groups_served.push(group);
                    let members: Vec<&Sub> = subs
                        .iter()
                        .filter(|s| s.group.as_deref() == Some(group) && !s.sink.is_closed())
                        .collect();
                    if !members.is_empty() {
                        handed += 1;
                        let _ = members[rotate % members.len()].sink.try_send(msg.clone());
                    }
                }
                Some(_) => {}
            }
        }
        handed
    }

    fn add(&self, subject: &str, group: Option<&str>, sink: mpsc::Sender<BusMsg>) -> Subscription {
        let id = self.next_id();
        self.inner
            .subs
            .entry(subject.to_string())
            // Most subjects (one per user) have one subscriber: no room for four.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Sub {
                id,
                group: group.map(str::to_string),
                sink,
            });
        let inner = Arc::clone(&self.inner);
        let subject = subject.to_string();
        Subscription::new(CleanupGuard::new(move || {
            inner.subs.remove_if_mut(&subject, |_, subs| {
                subs.retain(|s| s.id != id);
                subs.is_empty()
            });
        }))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        self.deliver(subject, None, payload);
        Ok(())
    }

    async fn request(&self, subject: &str, payload: Bytes) -> Result<PendingReply, BusError> {
        let reply = format!("{REPLY_PREFIX}{}", self.next_id());
        let (tx, rx) = oneshot::channel();
        self.inner
            .replies
            .insert(reply.clone(), ReplySlot::Once(tx));
        let inner = Arc::clone(&self.inner);
        let slot_name = reply.clone();
        let cleanup = CleanupGuard::new(move || {
            inner.replies.remove(&slot_name);
        });
        if self.deliver(subject, Some(&reply), payload) == 0
            && let Some((_, ReplySlot::Once(slot))) = self.inner.replies.remove(&reply)
        {
            let _ = slot.send(Err(RequestError::NoResponders));
        }
        Ok(PendingReply::new(rx, Some(cleanup)))
    }

    async fn gather(
        &self,
        subject: &str,
        payload: Bytes,
        window: Duration,
    ) -> Result<Vec<Bytes>, BusError> {
        let reply = format!("{REPLY_PREFIX}{}", self.next_id());
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.inner
            .replies
            .insert(reply.clone(), ReplySlot::Many(tx));
        let handed = self.deliver(subject, Some(&reply), payload);
        let mut replies = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        // In-process, the number of listeners is known: stop as soon as all have answered.
        while replies.len() < handed {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => replies.push(r),
                _ => break,
            }
        }
        self.inner.replies.remove(&reply);
        Ok(replies)
    }

    async fn subscribe(
        &self,
        subject: &str,
        sink: mpsc::Sender<BusMsg>,
    ) -> Result<Subscription, BusError> {
        Ok(self.add(subject, None, sink))
    }

    async fn queue_subscribe(
        &self,
        subject: &str,
        group: &str,
        sink: mpsc::Sender<BusMsg>,
    ) -> Result<Subscription, BusError> {
        Ok(self.add(subject, Some(group), sink))
    }

    fn is_ready(&self) -> bool {
        true
    }
}
