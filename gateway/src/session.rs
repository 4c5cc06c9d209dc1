//! One WebSocket session: a single task that owns the socket and `select!`s over inbound
//! frames, its outbox, the heartbeat, token expiry and shutdown. A session's error ends
//! that session only.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{FutureExt, SinkExt};
use herald_common::auth::Claims;
use herald_common::protocol::{ClientFrame, MessageFrame, ServerFrame, close};
use herald_common::ratelimit::TokenBucket;
use herald_common::time::now_ms;
use herald_common::topic::validate_topic;
use tokio::time::Instant;

use crate::hub::{SessionShared, join_close_code};
use crate::outbox::{Outbound, Outbox};
use crate::server::GatewayState;

/// Personal seqs remembered per session to keep "each id at most once" across a resume.
const SENT_MEMORY: usize = 512;
/// Close code for a client silent for two heartbeat intervals.
pub const CLOSE_SILENT: u16 = 1001;

/// How a session ends.
enum End {
    /// Send a close frame with this code and reason.
    Close(u16, &'static str),
    /// The peer left or the socket broke; nothing more to send.
    Gone,
}

type Step = Result<(), End>;

/// When a session next has something to do on its own.
struct Deadlines {
    beat: Instant,
    expiry: Instant,
}

impl Deadlines {
    fn next(&self) -> Instant {
        self.beat.min(self.expiry)
    }
}

struct Session {
    gw: Arc<GatewayState>,
    shared: Arc<SessionShared>,
    /// What the session keeps of its token: when it expires and the topics it may join.
    expires: u64,
    may_join: Box<[String]>,
    sent: BTreeSet<u64>,
    topics: Topics,
    last_seen: Instant,
    batch: Vec<Outbound>,
    /// Inbound frames allowed (acks are free: a resume may ask for a thousand).
    inbound: Option<TokenBucket>,
}

/// A session and its socket, in one heap allocation: an `async fn` keeps its arguments
/// both as captured upvars and as moved-in locals, so passing these (≈ 650 bytes) by value
/// would store them twice in every idle session's task.
struct Live {
    session: Session,
    socket: WebSocket,
}

/// Runs one upgraded connection to its end.
/// Not an `async fn`: each async layer copies its arguments into its own state, so the
/// session is built here and only its one future is what every idle session's task holds.
pub(crate) fn run(
    gw: Arc<GatewayState>,
    socket: WebSocket,
    claims: Claims,
) -> impl Future<Output = ()> {
    let id = gw.next_session_id();
    let shared = Arc::new(SessionShared {
        id,
        user: Arc::from(claims.sub.as_str()),
        outbox: Outbox::new(gw.config.limits.session_queue_bytes),
    });
    let rate = gw.config.limits.client_frames_per_s;
    let session = Session {
        gw,
        shared,
        expires: claims.exp,
        may_join: claims.topics.unwrap_or_default().into_boxed_slice(),
        sent: BTreeSet::new(),
        topics: Topics::default(),
        last_seen: Instant::now(),
        batch: Vec::new(),
        inbound: (rate > 0).then(|| TokenBucket::new(f64::from(rate), f64::from(rate) * 2.0)),
    };
    let live = Box::new(Live { session, socket });
    run_live(live)
}

async fn run_live(mut live: Box<Live>) {
    let Live { session, socket } = &mut *live;
    session.run(socket).await;
}

/// The id a client sees in `welcome`: the gateway instance and a counter (not stored: an
/// idle session should not hold a string it needs once).
fn session_id(gw: &GatewayState, id: u64) -> String {
    format!("{}-{id:x}", gw.instance)
}

/// The topics a session joined, with the last seq it has of each. A few per session, so a
/// list: one small allocation and a scan cheaper than hashing (a map costs ~140 bytes for
/// one topic, and every idle subscriber holds it).
#[derive(Default)]
struct Topics(Vec<(Arc<str>, u64)>);

impl Topics {
    fn get(&self, topic: &str) -> Option<&u64> {
        self.0
            .iter()
            .find(|(t, _)| &**t == topic)
            .map(|(_, seq)| seq)
    }

    fn get_mut(&mut self, topic: &str) -> Option<&mut u64> {
        self.0
            .iter_mut()
            .find(|(t, _)| &**t == topic)
            .map(|(_, seq)| seq)
    }

    fn insert(&mut self, topic: Arc<str>, seq: u64) {
        match self.0.iter_mut().find(|(t, _)| *t == topic) {
            Some(entry) => entry.1 = seq,
            None => {
                // Room for this one only: most sessions join one or two topics.
                self.0.reserve_exact(1);
                self.0.push((topic, seq));
            }
        }
    }

    fn remove(&mut self, topic: &str) -> Option<Arc<str>> {
        let at = self.0.iter().position(|(t, _)| &**t == topic)?;
        Some(self.0.swap_remove(at).0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(t, _)| &**t)
    }
}

fn text_of(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.encode()))
}

fn is_too_big(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        source = err.source();
    }
    false
}

impl Session {
    async fn run(&mut self, socket: &mut WebSocket) {
        metrics::counter!("herald_gateway_connects_total").increment(1);
        if let Err(e) = Box::pin(self.gw.hub.register(&self.shared)).await {
            tracing::info!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, error = %e, "session refused");
            let code = join_close_code(&e);
            let _ = close_socket(socket, code, "too many sessions for this user").await;
            metrics::counter!("herald_gateway_disconnects_total", "code" => code.to_string())
                .increment(1);
            return;
        }
        tracing::debug!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, "session open");
        // Registered just as the gateway began to drain (after the hub's last sweep).
        if self.gw.shutdown.is_cancelled() {
            self.shared.outbox.close(close::RESTARTING);
        }
        let welcome = text_of(&ServerFrame::Welcome {
            session_id: session_id(&self.gw, self.shared.id),
            user_id: self.shared.user.to_string(),
            heartbeat_s: self.gw.config.heartbeat.as_secs(),
        });
        let end = match Box::pin(socket.send(welcome)).await {
            Ok(()) => self.serve(socket).await,
            Err(_) => End::Gone,
        };
        let code = match end {
            End::Close(code, reason) => {
                let _ = Box::pin(close_socket(socket, code, reason)).await;
                code
            }
            End::Gone => 1006,
        };
        tracing::debug!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, code, "session closed");
        metrics::counter!("herald_gateway_disconnects_total", "code" => code.to_string())
            .increment(1);
        self.gw.hub.unregister(&self.shared, self.topics.names());
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let exp_in = Duration::from_millis(
            (i64::try_from(self.expires)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000)
                - now_ms())
            .max(0) as u64,
        );
        // One timer for both deadlines a session has (the next heartbeat and token expiry):
        // each idle session holds one timer. Shutdown arrives through the outbox (the hub
        // drains every session), so no session holds a shutdown waiter either.
        let mut deadlines = Deadlines {
            beat: Instant::now() + self.gw.config.heartbeat,
            expiry: Instant::now() + exp_in,
        };
        let timer = tokio::time::sleep_until(deadlines.next());
        tokio::pin!(timer);
        loop {
            let step = tokio::select! {
                biased;
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= deadlines.expiry {
                        Err(End::Close(close::UNAUTHORIZED, "token expired"))
                    } else if now < deadlines.beat {
                        Ok(())
                    } else if self.last_seen.elapsed() > self.gw.config.heartbeat * 2 {
                        Err(End::Close(CLOSE_SILENT, "no heartbeat"))
                    } else {
                        deadlines.beat = now + self.gw.config.heartbeat;
                        // Boxed: a ping's send state exists only while it runs, not in
                        // every idle session's task.
                        let ping = Box::pin(socket.send(Message::Ping(bytes::Bytes::new())));
                        ping.await.map_err(|_| End::Gone)
                    }
                }
                // Boxed, like inbound handling: a flush's state exists only while it runs.
                _ = self.shared.outbox.ready() => Box::pin(self.flush_outbox(socket)).await,
                // Boxed: an inbound frame's handling holds its state only while it runs.
                inbound = socket.recv() => Box::pin(self.on_inbound(socket, inbound)).await,
            };
            if let Err(end) = step {
                return end;
            }
            let next = deadlines.next();
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
        }
    }

    async fn on_inbound(
        &mut self,
        socket: &mut WebSocket,
        inbound: Option<Result<Message, axum::Error>>,
    ) -> Step {
        let msg = match inbound {
            None => return Err(End::Gone),
            Some(Err(e)) if is_too_big(&e) => {
                metrics::counter!("herald_gateway_oversized_frames_total").increment(1);
                return Err(End::Close(close::TOO_BIG, "frame too big"));
            }
            Some(Err(_)) => return Err(End::Gone),
            Some(Ok(msg)) => msg,
        };
        self.last_seen = Instant::now();
        let is_ack = matches!(&msg, Message::Text(t) if t.contains("\"ack\"") && t.len() < 256);
        if !is_ack
            && let Some(bucket) = &mut self.inbound
            && bucket.take().is_err()
        {
            metrics::counter!("herald_gateway_flood_closes_total").increment(1);
            return Err(End::Close(close::SLOW_CONSUMER, "too many frames"));
        }
        match msg {
            Message::Text(text) => self.on_frame(socket, &text).await,
            Message::Binary(_) => {
                send(
                    socket,
                    &ServerFrame::error(
                        "unsupported_frame",
                        "binary frames are not supported; send JSON text",
                    ),
                )
                .await
            }
            Message::Ping(_) | Message::Pong(_) => Ok(()),
            Message::Close(_) => Err(End::Gone),
        }
    }

    async fn on_frame(&mut self, socket: &mut WebSocket, text: &str) -> Step {
        let frame = match ClientFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                metrics::counter!("herald_gateway_bad_frames_total").increment(1);
                return send(socket, &ServerFrame::error(e.code, e.message)).await;
            }
        };
        match frame {
            ClientFrame::Ack { id } => {
                self.gw.hub.ack(&self.shared.user, &id).await;
                Ok(())
            }
            ClientFrame::Read { id } => {
                self.gw.publish_read(&self.shared.user, &id).await;
                Ok(())
            }
            ClientFrame::Ping => send(socket, &ServerFrame::Pong).await,
            ClientFrame::Resume { since } => self.resume(socket, since).await,
            ClientFrame::Subscribe { topic, since } => self.subscribe(socket, topic, since).await,
            ClientFrame::Unsubscribe { topic } => {
                if let Some(topic) = self.topics.remove(topic.as_str()) {
                    self.gw.hub.unsubscribe_topic(&topic, self.shared.id);
                }
                send(socket, &ServerFrame::Unsubscribed { topic }).await
            }
        }
    }

    fn mark_sent(&mut self, seq: u64) -> bool {
        let fresh = self.sent.insert(seq);
        if self.sent.len() > SENT_MEMORY {
            self.sent.pop_first();
        }
        fresh
    }

    async fn resume(&mut self, socket: &mut WebSocket, since: u64) -> Step {
        let page = match self
            .gw
            .history
            .read_inbox(&self.shared.user, since, self.gw.config.inbox_limit)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, error = %e, "resume failed");
                return send(
                    socket,
                    &ServerFrame::error("unavailable", "history is unavailable; retry the resume"),
                )
                .await;
            }
        };
        let mut replayed = 0;
        for (seq, content) in &page.entries {
            if !self.mark_sent(*seq) {
                continue;
            }
            let text = MessageFrame::new(content, None, *seq).encode();
            socket
                .feed(Message::Text(text.into()))
                .await
                .map_err(|_| End::Gone)?;
            replayed += 1;
        }
        let resumed = ServerFrame::Resumed {
            seq: page.head,
            replayed,
            complete: page.complete,
        };
        socket
            .feed(text_of(&resumed))
            .await
            .map_err(|_| End::Gone)?;
        socket.flush().await.map_err(|_| End::Gone)
    }

    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        topic: String,
        since: Option<u64>,
    ) -> Step {
        if let Err(e) = validate_topic(&topic) {
            return send(
                socket,
                &ServerFrame::error("invalid_topic", format!("'{topic}': {e}")),
            )
            .await;
        }
        if !herald_common::auth::may_subscribe(&self.may_join, &topic) {
            tracing::info!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, topic = %topic, "subscribe refused by token claims");
            return Err(End::Close(
                close::FORBIDDEN_TOPIC,
                "topic not allowed by token",
            ));
        }
        if let Some(last) = self.topics.get(topic.as_str()) {
            let frame = ServerFrame::Subscribed {
                topic,
                seq: *last,
                replayed: None,
                complete: None,
            };
            return send(socket, &frame).await;
        }
        if self.topics.len() >= self.gw.config.limits.max_topics_per_session {
            return send(
                socket,
                &ServerFrame::error(
                    "too_many_topics",
                    format!(
                        "a session may hold at most {} topics",
                        self.gw.config.limits.max_topics_per_session
                    ),
                ),
            )
            .await;
        }
        if let Err(e) = self.gw.hub.subscribe_topic(&topic, &self.shared).await {
            tracing::warn!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, topic = %topic, error = %e, "topic subscribe failed");
            return send(
                socket,
                &ServerFrame::error("unavailable", "cannot subscribe right now; retry"),
            )
            .await;
        }
        let topic: Arc<str> = Arc::from(topic);
        // Joined first, read second: anything published meanwhile is queued in the outbox
        // and de-duplicated by seq when it drains.
        let (since_q, limit) = match since {
            Some(s) => (s, self.gw.config.topic_history_limit),
            None => (u64::MAX, 0),
        };
        let page = match self.gw.history.read_topic(&topic, since_q, limit).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, topic = %topic, error = %e, "topic history unavailable");
                self.topics.insert(Arc::clone(&topic), 0);
                let frame = ServerFrame::error(
                    "history_unavailable",
                    "subscribed, but history could not be read",
                );
                return send(socket, &frame).await;
            }
        };
        let mut last = since.map_or(page.head, |s| s.min(page.head));
        let mut replayed = 0;
        for (seq, content) in &page.entries {
            let text = MessageFrame::new(content, Some(&topic), *seq).encode();
            socket
                .feed(Message::Text(text.into()))
                .await
                .map_err(|_| End::Gone)?;
            last = last.max(*seq);
            replayed += 1;
        }
        self.topics.insert(Arc::clone(&topic), last);
        let frame = ServerFrame::Subscribed {
            topic: topic.to_string(),
            seq: page.head.max(last),
            replayed: since.map(|_| replayed),
            complete: since.map(|_| page.complete),
        };
        socket.feed(text_of(&frame)).await.map_err(|_| End::Gone)?;
        socket.flush().await.map_err(|_| End::Gone)
    }

    /// Writes everything queued, skipping what this session already sent, then flushes once.
    async fn flush_outbox(&mut self, socket: &mut WebSocket) -> Step {
        let close_code = self.shared.outbox.drain(&mut self.batch);
        let mut written = 0u64;
        let mut batch = std::mem::take(&mut self.batch);
        for item in batch.drain(..) {
            let text = match item {
                Outbound::Personal { seq, text } => {
                    if !self.mark_sent(seq) {
                        continue;
                    }
                    text
                }
                Outbound::Topic { topic, seq, text } => match self.topics.get_mut(&topic) {
                    Some(last) if seq > *last => {
                        *last = seq;
                        text
                    }
                    _ => continue,
                },
            };
            if socket.feed(Message::Text(text)).await.is_err() {
                return Err(End::Gone);
            }
            written += 1;
        }
        // Keep a small batch buffer between bursts, not the largest one ever drained (at
        // 10,000 sessions a burst's buffers would otherwise stay: ~25 KB each).
        self.batch = if batch.capacity() > 64 {
            Vec::new()
        } else {
            batch
        };
        if written > 0 {
            // Most flushes complete at once (the socket has room): only one that waits gets
            // a deadline, so the fan-out does not register a timer per session per batch.
            let mut flush = socket.flush();
            let flushed = match std::future::poll_fn(|cx| Poll::Ready(flush.poll_unpin(cx))).await {
                Poll::Ready(done) => Ok(done),
                // A peer that stops reading must not pin this task forever.
                Poll::Pending => tokio::time::timeout(self.gw.config.heartbeat * 2, flush).await,
            };
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(End::Gone),
                Err(_) => {
                    metrics::counter!("herald_gateway_slow_consumers_total").increment(1);
                    return Err(End::Gone);
                }
            }
            self.gw.frames_sent.increment(written);
        }
        match close_code {
            Some(code) if code == close::SLOW_CONSUMER => Err(End::Close(code, "slow consumer")),
            Some(code) if code == close::RESTARTING => Err(End::Close(code, "server restarting")),
            Some(code) => Err(End::Close(code, "closed by server")),
            None => Ok(()),
        }
    }
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Step {
    socket.send(text_of(frame)).await.map_err(|_| End::Gone)
}

async fn close_socket(
    socket: &mut WebSocket,
    code: u16,
    reason: &'static str,
) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })))
        .await?;
    // Give the peer a moment to answer the close, without letting it hold us.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    Ok(())
}
