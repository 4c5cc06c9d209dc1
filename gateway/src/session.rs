//! One WebSocket session: a single task that owns the connection's reading side and
//! `select!`s over inbound frames, its wire's signals (a close asked for, bytes waiting for
//! the socket), the heartbeat and token expiry. Live frames do not pass through the task:
//! the hub writes them to the socket itself (see [`crate::wire`]). A session's error ends
//! that session only.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use herald_common::auth::Claims;
use herald_common::events::Receipt;
use herald_common::protocol::{ClientFrame, MessageFrame, ServerFrame, close};
use herald_common::ratelimit::TokenBucket;
use herald_common::time::now_ms;
use herald_common::topic::validate_topic;
use herald_engine::store::{StoreError, StoreResult};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tungstenite::Message;
use tungstenite::protocol::WebSocketContext;

use crate::hub::{SessionShared, join_close_code};
use crate::server::GatewayState;
use crate::wire::{self, Flushed, Wire, WireError};

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
    last_seen: Instant,
    /// Inbound frames allowed (acks are free: a resume may ask for a thousand).
    inbound: Option<TokenBucket>,
}

/// A session and its socket, in one heap allocation: an `async fn` keeps its arguments
/// both as captured upvars and as moved-in locals, so passing these by value would store
/// them twice in every idle session's task.
struct Live {
    session: Session,
    socket: Arc<TcpStream>,
}

/// Runs one upgraded connection to its end. `ws` is its protocol state after the handshake.
/// Not an `async fn`: each async layer copies its arguments into its own state, so the
/// session is built here and only its one future is what every idle session's task holds.
pub(crate) fn run(
    gw: Arc<GatewayState>,
    socket: TcpStream,
    ws: WebSocketContext,
    claims: Claims,
) -> impl Future<Output = ()> {
    let id = gw.next_session_id();
    let socket = Arc::new(socket);
    let shared = Arc::new(SessionShared {
        id,
        user: Arc::from(claims.sub.as_str()),
        wire: Wire::new(
            ws,
            Arc::clone(&socket),
            gw.config.limits.session_queue_bytes,
        ),
    });
    let rate = gw.config.limits.client_frames_per_s;
    let session = Session {
        gw,
        shared,
        expires: claims.exp,
        may_join: claims.topics.unwrap_or_default().into_boxed_slice(),
        last_seen: Instant::now(),
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

/// How a session ends when its wire cannot write.
fn end_of(e: WireError) -> End {
    match e {
        // The peer took nothing for too long: it is gone (no close frame would get through).
        WireError::Stalled => {
            metrics::counter!("herald_gateway_slow_consumers_total").increment(1);
            End::Gone
        }
        WireError::Full => End::Close(close::SLOW_CONSUMER, "slow consumer"),
        WireError::Closed => End::Gone,
    }
}

fn text_of(frame: &ServerFrame) -> Message {
    Message::Text(frame.encode().into())
}

impl Session {
    /// How long a write may wait for a client that takes nothing.
    fn patience(&self) -> Duration {
        self.gw.config.heartbeat * 2
    }

    async fn run(&mut self, socket: &TcpStream) {
        metrics::counter!("herald_gateway_connects_total").increment(1);
        if let Err(e) = Box::pin(self.gw.hub.register(&self.shared)).await {
            tracing::info!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, error = %e, "session refused");
            let code = join_close_code(&e);
            Box::pin(self.close_socket(socket, code, "too many sessions for this user")).await;
            self.shared.wire.detach();
            metrics::counter!("herald_gateway_disconnects_total", "code" => code.to_string())
                .increment(1);
            return;
        }
        tracing::debug!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, "session open");
        // Registered just as the gateway began to drain (after the hub's last sweep).
        if self.gw.shutdown.is_cancelled() {
            self.shared.wire.close(close::RESTARTING);
        }
        let welcome = text_of(&ServerFrame::Welcome {
            session_id: session_id(&self.gw, self.shared.id),
            user_id: self.shared.user.to_string(),
            heartbeat_s: self.gw.config.heartbeat.as_secs(),
        });
        let end = match Box::pin(self.send_all(socket, [welcome])).await {
            Ok(()) => self.serve(socket).await,
            Err(end) => end,
        };
        let code = match end {
            End::Close(code, reason) => {
                Box::pin(self.close_socket(socket, code, reason)).await;
                code
            }
            End::Gone => 1006,
        };
        tracing::debug!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, code, "session closed");
        metrics::counter!("herald_gateway_disconnects_total", "code" => code.to_string())
            .increment(1);
        let topics = self.shared.wire.topic_names();
        self.shared.wire.detach();
        self.gw
            .hub
            .unregister(&self.shared, topics.iter().map(|t| &**t));
    }

    async fn serve(&mut self, socket: &TcpStream) -> End {
        let exp_in = Duration::from_millis(
            (i64::try_from(self.expires)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000)
                - now_ms())
            .max(0) as u64,
        );
        // One timer for both deadlines a session has (the next heartbeat and token expiry):
        // each idle session holds one timer. Shutdown arrives through the wire (the hub
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
                        Box::pin(self.send_all(socket, [wire::ping()])).await
                    }
                }
                // Boxed, like inbound handling: a flush's state exists only while it runs.
                _ = self.shared.wire.signalled() => Box::pin(self.on_signal(socket)).await,
                ready = socket.readable() => match ready {
                    // Boxed: an inbound frame's handling holds its state only while it runs.
                    Ok(()) => Box::pin(self.on_readable(socket)).await,
                    Err(_) => Err(End::Gone),
                },
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

    /// The hub asked for a close, or left bytes the socket did not take yet.
    async fn on_signal(&mut self, socket: &TcpStream) -> Step {
        let signal = self.shared.wire.signal();
        match signal.close {
            // Counted by the hub when the frame did not fit.
            Some(code) if code == close::SLOW_CONSUMER => {
                return Err(End::Close(code, "slow consumer"));
            }
            Some(code) if code == close::RESTARTING => {
                return Err(End::Close(code, "server restarting"));
            }
            Some(code) => return Err(End::Close(code, "closed by server")),
            None => {}
        }
        if signal.pending {
            self.finish(socket).await?;
        }
        Ok(())
    }

    /// Waits until the socket has taken what is buffered; a peer that stops reading must
    /// not pin this task forever.
    async fn finish(&self, socket: &TcpStream) -> Step {
        self.shared
            .wire
            .finish(socket, self.patience())
            .await
            .map_err(end_of)
    }

    /// Handles every message the socket has now.
    async fn on_readable(&mut self, socket: &TcpStream) -> Step {
        loop {
            let msg = match self.shared.wire.read() {
                Ok(Some(msg)) => msg,
                Ok(None) => return Ok(()),
                Err(tungstenite::Error::Capacity(_)) => {
                    metrics::counter!("herald_gateway_oversized_frames_total").increment(1);
                    return Err(End::Close(close::TOO_BIG, "frame too big"));
                }
                // RFC 6455 §7.1.7: say why before dropping the connection (best effort:
                // closing is bounded by `close_socket`).
                Err(tungstenite::Error::Protocol(e)) => {
                    metrics::counter!("herald_gateway_protocol_errors_total").increment(1);
                    tracing::debug!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, error = %e, "protocol error");
                    return Err(End::Close(close::PROTOCOL_ERROR, "protocol error"));
                }
                Err(tungstenite::Error::Utf8(_)) => {
                    metrics::counter!("herald_gateway_protocol_errors_total").increment(1);
                    return Err(End::Close(close::INVALID_PAYLOAD, "invalid UTF-8"));
                }
                Err(_) => return Err(End::Gone),
            };
            self.on_message(socket, msg).await?;
        }
    }

    async fn on_message(&mut self, socket: &TcpStream, msg: Message) -> Step {
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
                self.send(
                    socket,
                    &ServerFrame::error(
                        "unsupported_frame",
                        "binary frames are not supported; send JSON text",
                    ),
                )
                .await
            }
            // tungstenite has queued the pong: send it now, not with the next frame.
            Message::Ping(_) => self.send_all(socket, std::iter::empty()).await,
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => {
                // tungstenite has queued the reply to the client's close: send it, briefly.
                let _ = self
                    .shared
                    .wire
                    .send(socket, std::iter::empty(), Duration::from_millis(200))
                    .await;
                Err(End::Gone)
            }
        }
    }

    async fn on_frame(&mut self, socket: &TcpStream, text: &str) -> Step {
        let frame = match ClientFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => {
                metrics::counter!("herald_gateway_bad_frames_total").increment(1);
                return self
                    .send(socket, &ServerFrame::error(e.code, e.message))
                    .await;
            }
        };
        match frame {
            ClientFrame::Ack { id } => {
                if !self.gw.hub.ack(&self.shared.user, &id).await {
                    // Late (or for a replay): still a receipt an escalation may wait for.
                    self.gw
                        .publish_receipt(&self.shared.user, &id, Receipt::Ack)
                        .await;
                }
                Ok(())
            }
            ClientFrame::Read { id } => {
                self.gw
                    .publish_receipt(&self.shared.user, &id, Receipt::Read)
                    .await;
                Ok(())
            }
            ClientFrame::Ping => self.send(socket, &ServerFrame::Pong).await,
            ClientFrame::Resume { since } => {
                // Live frames wait while the replay is written, then follow it.
                self.shared.wire.hold();
                let replayed = self.resume(socket, since).await;
                let released = self.release(socket).await;
                replayed.and(released)
            }
            ClientFrame::Subscribe { topic, since } => {
                self.shared.wire.hold();
                let joined = self.subscribe(socket, topic, since).await;
                let released = self.release(socket).await;
                joined.and(released)
            }
            ClientFrame::Unsubscribe { topic } => {
                if let Some(topic) = self.shared.wire.leave_topic(topic.as_str()) {
                    self.gw.hub.unsubscribe_topic(&topic, self.shared.id);
                }
                self.send(socket, &ServerFrame::Unsubscribed { topic })
                    .await
            }
        }
    }

    /// Ends a hold: what arrived during the replay follows it.
    async fn release(&self, socket: &TcpStream) -> Step {
        match self.shared.wire.release() {
            Ok((written, flushed)) => {
                self.gw.hub.frames_sent.increment(written);
                if flushed == Flushed::Pending {
                    self.finish(socket).await?;
                }
                Ok(())
            }
            Err(e) => Err(end_of(e)),
        }
    }

    /// Writes the task's own frames, waiting while the socket is full.
    async fn send_all(&self, socket: &TcpStream, msgs: impl IntoIterator<Item = Message>) -> Step {
        self.shared
            .wire
            .send(socket, msgs, self.patience())
            .await
            .map_err(end_of)
    }

    async fn send(&self, socket: &TcpStream, frame: &ServerFrame) -> Step {
        self.send_all(socket, [text_of(frame)]).await
    }

    async fn resume(&mut self, socket: &TcpStream, since: u64) -> Step {
        let (history, user) = (&self.gw.history, &self.shared.user);
        let limit = self.gw.config.inbox_limit;
        let page = match patiently(|| history.read_inbox(user, since, limit)).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, error = %e, "resume failed");
                return self
                    .send(
                        socket,
                        &ServerFrame::error(
                            "unavailable",
                            "history is unavailable; retry the resume",
                        ),
                    )
                    .await;
            }
        };
        let mut frames = Vec::with_capacity(page.entries.len() + 1);
        for (seq, content) in &page.entries {
            if self.shared.wire.mark_sent(*seq) {
                let text = MessageFrame::new(content, None, *seq).encode();
                frames.push(Message::Text(text.into()));
            }
        }
        let resumed = ServerFrame::Resumed {
            seq: page.head,
            replayed: frames.len() as u64,
            complete: page.complete,
        };
        frames.push(text_of(&resumed));
        self.send_all(socket, frames).await
    }

    async fn subscribe(&mut self, socket: &TcpStream, topic: String, since: Option<u64>) -> Step {
        if let Err(e) = validate_topic(&topic) {
            return self
                .send(
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
        if let Some(last) = self.shared.wire.topic_seq(topic.as_str()) {
            let frame = ServerFrame::Subscribed {
                topic,
                seq: last,
                replayed: None,
                complete: None,
            };
            return self.send(socket, &frame).await;
        }
        let most = self.gw.config.limits.max_topics_per_session;
        if self.shared.wire.topic_count() >= most {
            return self
                .send(
                    socket,
                    &ServerFrame::error(
                        "too_many_topics",
                        format!("a session may hold at most {most} topics"),
                    ),
                )
                .await;
        }
        if let Err(e) = self.gw.hub.subscribe_topic(&topic, &self.shared).await {
            tracing::warn!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, topic = %topic, error = %e, "topic subscribe failed");
            return self
                .send(
                    socket,
                    &ServerFrame::error("unavailable", "cannot subscribe right now; retry"),
                )
                .await;
        }
        let topic: Arc<str> = Arc::from(topic);
        // Joined first, read second: anything published meanwhile is held by the wire and
        // de-duplicated by seq when the hold ends.
        let (since_q, limit) = match since {
            Some(s) => (s, self.gw.config.topic_history_limit),
            None => (u64::MAX, 0),
        };
        let history = &self.gw.history;
        let page = match patiently(|| history.read_topic(&topic, since_q, limit)).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(session_id = %session_id(&self.gw, self.shared.id), user_id = %self.shared.user, topic = %topic, error = %e, "topic history unavailable");
                self.shared.wire.join_topic(Arc::clone(&topic), 0);
                let frame = ServerFrame::error(
                    "history_unavailable",
                    "subscribed, but history could not be read",
                );
                return self.send(socket, &frame).await;
            }
        };
        let mut last = since.map_or(page.head, |s| s.min(page.head));
        let mut frames = Vec::with_capacity(page.entries.len() + 1);
        for (seq, content) in &page.entries {
            let text = MessageFrame::new(content, Some(&topic), *seq).encode();
            frames.push(Message::Text(text.into()));
            last = last.max(*seq);
        }
        let replayed = frames.len() as u64;
        self.shared.wire.join_topic(Arc::clone(&topic), last);
        frames.push(text_of(&ServerFrame::Subscribed {
            topic: topic.to_string(),
            seq: page.head.max(last),
            replayed: since.map(|_| replayed),
            complete: since.map(|_| page.complete),
        }));
        self.send_all(socket, frames).await
    }

    /// Sends a close frame and gives the peer a moment to answer it, without letting it
    /// hold us.
    async fn close_socket(&self, socket: &TcpStream, code: u16, reason: &'static str) {
        let wire = &self.shared.wire;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            match wire.send_close(code, reason) {
                Ok(Flushed::Done) => {}
                Ok(Flushed::Pending) => {
                    if wire.finish(socket, Duration::from_secs(1)).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
            loop {
                match wire.read() {
                    Ok(Some(Message::Close(_))) | Err(_) => return,
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        if socket.readable().await.is_err() {
                            return;
                        }
                    }
                }
            }
        })
        .await;
    }
}

/// Waits between tries of a history read the store could not answer: about ten seconds in
/// all, the length of a JetStream leader election after a node dies. Meanwhile the session
/// holds its live frames — there are none to hold, as nothing is appended to a history
/// without its leader either.
const HISTORY_RETRY_MS: [u64; 7] = [100, 200, 400, 800, 1600, 3200, 3200];

/// Runs a history read until it answers, or until [`HISTORY_RETRY_MS`] is spent on a store
/// that stays unavailable (corrupt data is not retried).
async fn patiently<T, F, Fut>(mut read: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut waits = HISTORY_RETRY_MS.iter();
    loop {
        match read().await {
            Err(StoreError::Unavailable(e) | StoreError::Backend(e)) => match waits.next() {
                Some(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                None => return Err(StoreError::Unavailable(e)),
            },
            done => return done,
        }
    }
}
