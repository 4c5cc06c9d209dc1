//! The hub: who is connected to this gateway and to which topics, and the bus interest that
//! follows from it. A gateway subscribes to a user's subject when that user's first session
//! arrives and drops it when the last one leaves (after `linger`, re-checked), so "no
//! responders" on a user subject means "offline" cluster-wide.
//!
//! Invariant: the fan-out path ([`Hub::route`]) never awaits and never encodes: it parses
//! the frame head once, then writes the same shared bytes to each session's socket (one
//! non-blocking send each; see [`crate::wire`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use herald_common::events::{PRESENCE_QUERY, READ_NOTICE};
use herald_common::protocol::{FrameHead, close};
use herald_common::subjects::Subjects;
use herald_engine::{Bus, BusMsg, Subscription};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tungstenite::Utf8Bytes;

use crate::wire::{Delivery, Outbound, Wire};

/// Most bus messages the relay takes at once: what queued while it wrote the last batch
/// goes out together, one send per session (64 × ~250 B stays under the 16 KiB at which
/// tungstenite writes out on its own).
const RELAY_BATCH: usize = 64;

/// Payload a gateway replies with when a session acked a personal message.
pub const ACK_REPLY: &[u8] = b"acked";

/// What the hub knows about one live session.
pub struct SessionShared {
    pub id: u64,
    pub user: Arc<str>,
    pub wire: Wire,
}

struct Interest {
    sessions: Vec<Arc<SessionShared>>,
    sub: Option<Subscription>,
    subscribing: bool,
}

impl Interest {
    fn new() -> Self {
        Interest {
            // Most users have one session here; a topic's list grows as it needs.
            sessions: Vec::with_capacity(1),
            sub: None,
            subscribing: false,
        }
    }
}

struct PendingAck {
    reply: String,
    since: Instant,
}

/// Ack slots are per user and message (one message may go to many users on one gateway).
/// User ids hold no whitespace, so the newline cannot be forged.
fn ack_key(user: &str, id: &str) -> String {
    format!("{user}\n{id}")
}

/// Why a session could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("this user already has {0} sessions")]
    TooManySessions(usize),
    #[error("cannot subscribe on the bus: {0}")]
    Bus(String),
}

pub struct Hub {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    sink: mpsc::Sender<BusMsg>,
    users: DashMap<String, Interest>,
    topics: DashMap<String, Interest>,
    pending_acks: DashMap<String, PendingAck>,
    max_sessions_per_user: usize,
    linger: Duration,
    sessions: AtomicU64,
    /// `herald_gateway_frames_sent_total`, looked up once (every fan-out counts into it).
    pub frames_sent: metrics::Counter,
}

/// Which map an interest lives in.
#[derive(Clone, Copy)]
enum Kind {
    User,
    Topic,
}

impl Hub {
    /// Creates the hub and the channel its bus subscriptions feed; run [`Hub::relay`] on it.
    pub fn new(
        bus: Arc<dyn Bus>,
        subjects: Subjects,
        max_sessions_per_user: usize,
        linger: Duration,
    ) -> (Arc<Hub>, mpsc::Receiver<BusMsg>) {
        let (sink, rx) = mpsc::channel(64 * 1024);
        let hub = Arc::new(Hub {
            bus,
            subjects,
            sink,
            users: DashMap::new(),
            topics: DashMap::new(),
            pending_acks: DashMap::new(),
            max_sessions_per_user,
            linger,
            sessions: AtomicU64::new(0),
            frames_sent: metrics::counter!("herald_gateway_frames_sent_total"),
        });
        (hub, rx)
    }

    fn map(&self, kind: Kind) -> &DashMap<String, Interest> {
        match kind {
            Kind::User => &self.users,
            Kind::Topic => &self.topics,
        }
    }

    fn subject(&self, kind: Kind, key: &str) -> String {
        match kind {
            Kind::User => self.subjects.user(key),
            Kind::Topic => self.subjects.topic(key),
        }
    }

    /// Adds a session to an interest, subscribing on the bus when it is the first one.
    /// Returns once the bus subscription is active, so nothing sent after is missed.
    async fn join(
        self: &Arc<Self>,
        kind: Kind,
        key: &str,
        session: &Arc<SessionShared>,
        limit: usize,
    ) -> Result<(), JoinError> {
        let must_subscribe = {
            let mut entry = self
                .map(kind)
                .entry(key.to_string())
                .or_insert_with(Interest::new);
            if entry.sessions.len() >= limit {
                return Err(JoinError::TooManySessions(entry.sessions.len()));
            }
            entry.sessions.push(Arc::clone(session));
            let first = entry.sub.is_none() && !entry.subscribing;
            entry.subscribing |= first;
            first
        };
        if !must_subscribe {
            return Ok(());
        }
        let result = self
            .bus
            .subscribe(&self.subject(kind, key), self.sink.clone())
            .await;
        let mut outcome = Ok(());
        let mut orphan = None;
        if let Some(mut entry) = self.map(kind).get_mut(key) {
            entry.subscribing = false;
            match result {
                Ok(sub) => entry.sub = Some(sub),
                Err(e) => {
                    entry.sessions.retain(|s| s.id != session.id);
                    outcome = Err(JoinError::Bus(e.to_string()));
                }
            }
        } else if let Ok(sub) = result {
            orphan = Some(sub);
        }
        drop(orphan);
        self.map(kind)
            .remove_if(key, |_, e| e.sessions.is_empty() && !e.subscribing);
        outcome
    }

    /// Removes a session from an interest; the bus subscription goes when nobody is left.
    fn leave(self: &Arc<Self>, kind: Kind, key: &str, session_id: u64) {
        let emptied = {
            let Some(mut entry) = self.map(kind).get_mut(key) else {
                return;
            };
            entry.sessions.retain(|s| s.id != session_id);
            entry.sessions.is_empty()
        };
        if !emptied {
            return;
        }
        if self.linger.is_zero() {
            self.map(kind)
                .remove_if(key, |_, e| e.sessions.is_empty() && !e.subscribing);
            return;
        }
        let hub = Arc::clone(self);
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(hub.linger).await;
            hub.map(kind)
                .remove_if(&key, |_, e| e.sessions.is_empty() && !e.subscribing);
        });
    }

    /// Registers a new session of its user (subscribing the user's subject if needed).
    pub async fn register(self: &Arc<Self>, session: &Arc<SessionShared>) -> Result<(), JoinError> {
        self.join(
            Kind::User,
            &session.user,
            session,
            self.max_sessions_per_user,
        )
        .await?;
        self.sessions.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("herald_gateway_sessions").increment(1.0);
        Ok(())
    }

    /// Removes a session everywhere: its user and the given topics.
    pub fn unregister<'a>(
        self: &Arc<Self>,
        session: &SessionShared,
        topics: impl Iterator<Item = &'a str>,
    ) {
        for topic in topics {
            self.leave(Kind::Topic, topic, session.id);
        }
        self.leave(Kind::User, &session.user, session.id);
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("herald_gateway_sessions").decrement(1.0);
    }

    pub async fn subscribe_topic(
        self: &Arc<Self>,
        topic: &str,
        session: &Arc<SessionShared>,
    ) -> Result<(), JoinError> {
        self.join(Kind::Topic, topic, session, usize::MAX).await
    }

    pub fn unsubscribe_topic(self: &Arc<Self>, topic: &str, session_id: u64) {
        self.leave(Kind::Topic, topic, session_id);
    }

    /// Live sessions of `user` on this gateway.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.users.get(user).map_or(0, |e| e.sessions.len())
    }

    /// Live sessions on this gateway.
    pub fn session_count(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// A session acked message `id`: answer the dispatcher's request, once. Passes a
    /// session's ack to the dispatcher waiting for it; `false` if none waits.
    pub async fn ack(&self, user: &str, id: &str) -> bool {
        let Some((_, pending)) = self.pending_acks.remove(&ack_key(user, id)) else {
            return false;
        };
        if let Err(e) = self
            .bus
            .publish(&pending.reply, Bytes::from_static(ACK_REPLY))
            .await
        {
            tracing::warn!(message_id = %id, error = %e, "could not send ack reply");
        }
        true
    }

    /// Forgets ack slots older than `max_age` (the dispatcher has stopped waiting).
    pub fn sweep_acks(&self, max_age: Duration) {
        self.pending_acks.retain(|_, p| p.since.elapsed() < max_age);
    }

    /// Fans one bus message out to the local sessions it concerns. Never awaits.
    pub fn route(&self, msg: BusMsg) {
        if msg.subject == self.subjects.gateways() {
            if let Some(reply) = msg.reply {
                let bus = Arc::clone(&self.bus);
                let count = self.session_count();
                tokio::spawn(async move {
                    let _ = bus.publish(&reply, Bytes::from(count.to_string())).await;
                });
            }
        } else if let Some(topic) = self.subjects.topic_of(&msg.subject) {
            self.route_topic(topic, std::iter::once(msg.payload));
        } else if let Some(user) = self.subjects.user_of(&msg.subject) {
            self.route_personal(&user, msg.reply, msg.payload);
        }
    }

    fn route_personal(&self, user: &str, reply: Option<String>, payload: Bytes) {
        if payload.as_ref() == PRESENCE_QUERY {
            self.answer_presence(user, reply);
            return;
        }
        if payload.starts_with(READ_NOTICE) {
            // An inbox read on some session or through the API: every session's badge.
            let (Ok(text), Some(entry)) = (Utf8Bytes::try_from(payload), self.users.get(user))
            else {
                return;
            };
            let sent = deliver(&entry.sessions, &[Outbound::Notice { text }]);
            self.frames_sent.increment(sent);
            return;
        }
        let Some((id, seq)) = FrameHead::parse(&payload).map(|h| (h.id.into_owned(), h.seq)) else {
            tracing::warn!(user_id = %user, "dropping a personal frame without id/seq");
            return;
        };
        let Ok(text) = Utf8Bytes::try_from(payload) else {
            return;
        };
        let Some(entry) = self.users.get(user) else {
            return;
        };
        if entry.sessions.is_empty() {
            // Lingering interest: nobody here to ack, so no reply; the sender times out.
            return;
        }
        if let Some(reply) = reply {
            self.pending_acks.insert(
                ack_key(user, &id),
                PendingAck {
                    reply,
                    since: Instant::now(),
                },
            );
        }
        let frame = Outbound::Personal { seq, text };
        let sent = deliver(&entry.sessions, std::slice::from_ref(&frame));
        self.frames_sent.increment(sent);
    }

    /// Answers a cluster-wide presence query with this gateway's session count. Runs on
    /// the relay task, so it only spawns the (awaiting) publish.
    fn answer_presence(&self, user: &str, reply: Option<String>) {
        let Some(reply) = reply else { return };
        let count = self.sessions_of(user);
        let bus = Arc::clone(&self.bus);
        tokio::spawn(async move {
            let _ = bus.publish(&reply, Bytes::from(count.to_string())).await;
        });
    }

    /// Fans consecutive messages of one topic out together: each session gets them all in
    /// one send (how a broadcaster under load coalesces instead of paying a send per frame).
    fn route_topic(&self, topic: &str, payloads: impl Iterator<Item = Bytes>) {
        let topic: Arc<str> = Arc::from(topic);
        let frames: Vec<Outbound> = payloads
            .filter_map(|payload| {
                let seq = FrameHead::parse(&payload)?.seq;
                let text = Utf8Bytes::try_from(payload).ok()?;
                Some(Outbound::Topic {
                    topic: Arc::clone(&topic),
                    seq,
                    text,
                })
            })
            .collect();
        if frames.is_empty() {
            return;
        }
        // A snapshot, so the map's shard is not locked while every socket is written (a
        // session joining or leaving meanwhile would block its worker thread).
        let Some(sessions) = self.topics.get(&*topic).map(|e| e.sessions.clone()) else {
            return;
        };
        let sent = deliver(&sessions, &frames);
        self.frames_sent.increment(sent);
        metrics::counter!("herald_gateway_topic_deliveries_total")
            .increment((sessions.len() * frames.len()) as u64);
    }

    /// Routes a batch of bus messages in order, topic runs together.
    pub fn route_batch(&self, batch: &mut Vec<BusMsg>) {
        let mut rest = batch.drain(..).peekable();
        while let Some(msg) = rest.next() {
            let Some(topic) = self.subjects.topic_of(&msg.subject) else {
                self.route(msg);
                continue;
            };
            let mut run = vec![msg.payload];
            while let Some(next) = rest.next_if(|m| m.subject == msg.subject) {
                run.push(next.payload);
            }
            self.route_topic(topic, run.into_iter());
        }
    }

    /// Tells every session to close with `code`.
    pub fn close_all(&self, code: u16) {
        for entry in self.users.iter() {
            for s in &entry.sessions {
                s.wire.close(code);
            }
        }
    }

    /// Every session held right now.
    fn sessions(&self) -> Vec<Arc<SessionShared>> {
        let mut all = Vec::new();
        for entry in self.users.iter() {
            all.extend(entry.sessions.iter().cloned());
        }
        all
    }

    /// On shutdown, closes every session with `1012` spread evenly over `window` (in a random
    /// order), so clients reconnect elsewhere a few at a time instead of all at once. One
    /// task drains them all: a session does not hold a shutdown waiter of its own.
    pub async fn drain_on(self: Arc<Self>, shutdown: CancellationToken, window: Duration) {
        use rand::seq::SliceRandom;
        shutdown.cancelled().await;
        let mut sessions = self.sessions();
        sessions.shuffle(&mut rand::rng());
        let started = tokio::time::Instant::now();
        let total = sessions.len().max(1) as f64;
        for (n, session) in sessions.iter().enumerate() {
            let due = started + window.mul_f64(n as f64 / total);
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            session.wire.close(close::RESTARTING);
        }
        // Sessions that registered while the snapshot was taken.
        self.close_all(close::RESTARTING);
    }

    /// Consumes the bus messages of this gateway's subscriptions until the bus closes.
    pub async fn relay(self: Arc<Self>, mut rx: mpsc::Receiver<BusMsg>) {
        // Every gateway answers "how many sessions do you hold" (console, stats).
        let _census = match self
            .bus
            .subscribe(&self.subjects.gateways(), self.sink.clone())
            .await
        {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer session counts");
                None
            }
        };
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(RELAY_BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, RELAY_BATCH) => match n {
                    0 => break,
                    _ => self.route_batch(&mut batch),
                },
                _ = sweep.tick() => self.sweep_acks(Duration::from_millis(herald_common::api::MAX_ACK_TIMEOUT_MS)),
            }
        }
    }
}

/// Writes `frames` to each session (one send per session); returns the frames written
/// (held frames count when the hold ends).
fn deliver(sessions: &[Arc<SessionShared>], frames: &[Outbound]) -> u64 {
    let mut written = 0;
    for session in sessions {
        match session.wire.deliver(frames) {
            Ok(n) => written += n,
            // Counted once here; the session's task closes it with `4008`.
            Err(Delivery::Full) => {
                metrics::counter!("herald_gateway_slow_consumers_total").increment(1)
            }
            Err(Delivery::Closed) => {}
        }
    }
    written
}

/// The close code for a session refused at join.
pub fn join_close_code(err: &JoinError) -> u16 {
    match err {
        JoinError::TooManySessions(_) => close::TOO_MANY_SESSIONS,
        JoinError::Bus(_) => close::RESTARTING,
    }
}
