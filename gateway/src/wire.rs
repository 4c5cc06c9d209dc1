//! A session's socket and protocol state, shared by the fan-out path and the session's task.
//!
//! The hub writes a frame straight to the socket: one non-blocking send, as in the simplest
//! broadcast loop, with no queue and no task to wake. What the socket does not take at once
//! stays in tungstenite's write buffer, bounded in bytes; the session's task is told and
//! finishes the write when the socket is writable again. A frame that would pass the bound
//! means the client is too slow: the session closes with `4008` instead of growing.
//!
//! While the task replays history (`resume`, `subscribe`) live frames are held, then written
//! after the replay and de-duplicated by seq, so a client sees every seq once and in order.
//!
//! Every write happens under one lock per session and never waits: tungstenite's
//! [`WebSocketContext`] is the protocol (framing, control frames, limits) and the socket is
//! driven by readiness (`try_read`/`try_write`), so whole frames go out in the order taken.

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use herald_common::protocol::close;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketContext};
use tungstenite::{Message, Utf8Bytes};

/// Personal seqs remembered per session to keep "each id at most once" across a resume.
const SENT_MEMORY: usize = 512;

/// Room in tungstenite's write buffer beyond a session's backlog bound: the largest frame
/// Herald writes (a message is at most `MAX_BODY_BYTES` of JSON, plus its envelope).
pub const FRAME_ROOM: usize = 2 * herald_common::api::MAX_BODY_BYTES;

/// One frame for a session, already encoded and shared between sessions.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A personal message with its per-user `seq`.
    Personal { seq: u64, text: Utf8Bytes },
    /// A topic message with its per-topic `seq`.
    Topic {
        topic: Arc<str>,
        seq: u64,
        text: Utf8Bytes,
    },
    /// A notice with no seq (an inbox `read`): every session gets it, nothing is replayed.
    Notice { text: Utf8Bytes },
}

impl Outbound {
    /// What holding it costs: payload plus a fixed charge for the slot.
    fn cost(&self) -> usize {
        64 + self.text().len()
    }

    fn text(&self) -> &Utf8Bytes {
        match self {
            Outbound::Personal { text, .. }
            | Outbound::Topic { text, .. }
            | Outbound::Notice { text } => text,
        }
    }
}

/// Why frames offered to a session were not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Over the session's byte bound: it closes with `4008`.
    Full,
    /// The session is closing.
    Closed,
}

/// A write the task started and must see through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    Done,
    /// Bytes wait for the socket; call [`Wire::finish`].
    Pending,
}

/// Why a session cannot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the socket is closed or broken")]
    Closed,
    #[error("the write buffer is full")]
    Full,
    #[error("the peer took nothing for too long")]
    Stalled,
}

/// What the session's task is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// Close with this code.
    pub close: Option<u16>,
    /// Bytes wait for the socket.
    pub pending: bool,
}

/// The topics a session joined, with the last seq it has of each. A few per session, so a
/// list: one small allocation and a scan cheaper than hashing (a map costs ~140 bytes for
/// one topic, and every idle subscriber holds it).
#[derive(Default)]
struct Topics(Vec<(Arc<str>, u64)>);

impl Topics {
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
}

/// Std I/O over a tokio socket that never waits: `WouldBlock` when it is not ready.
struct Io<'a>(&'a TcpStream);

impl io::Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

struct State {
    ws: WebSocketContext,
    /// Gone once the session's task has ended (the task holds the other reference).
    socket: Option<Arc<TcpStream>>,
    /// Set while the task replays history: live frames wait in `held`.
    holding: bool,
    held: Vec<Outbound>,
    held_bytes: usize,
    /// The write buffer holds bytes the socket has not taken.
    pending: bool,
    /// Bytes of the frames added while `pending`: the backlog the bound applies to (a
    /// frame that finds the socket keeping up goes out whatever its size).
    backlog: usize,
    max_backlog: usize,
    /// Set once: the close code the session must end with.
    close: Option<u16>,
    topics: Topics,
    sent: BTreeSet<u64>,
}

impl State {
    /// Whether the session still needs this frame (and records that it has it now).
    fn fresh(&mut self, item: &Outbound) -> bool {
        match item {
            Outbound::Personal { seq, .. } => mark_sent(&mut self.sent, *seq),
            Outbound::Notice { .. } => true,
            Outbound::Topic { topic, seq, .. } => match self.topics.get_mut(topic) {
                Some(last) if *seq > *last => {
                    *last = *seq;
                    true
                }
                _ => false,
            },
        }
    }

    /// Buffers `msg` and, unless `flush` is false or bytes already wait, writes it out.
    fn write(&mut self, msg: Message, flush: bool) -> Result<Flushed, WireError> {
        let len = msg.len();
        if self.pending && self.backlog + len > self.max_backlog {
            return Err(WireError::Full);
        }
        let State {
            ws,
            socket,
            pending,
            backlog,
            ..
        } = self;
        let Some(socket) = socket else {
            return Err(WireError::Closed);
        };
        let mut io = Io(socket);
        let mut written = ws.write(&mut io, msg);
        if written.is_ok() && flush && !*pending {
            written = ws.flush(&mut io);
        }
        let flushed = match written {
            Ok(()) if *pending => Flushed::Pending,
            Ok(()) => Flushed::Done,
            Err(e) if would_block(&e) => {
                *pending = true;
                Flushed::Pending
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => return Err(WireError::Full),
            Err(_) => return Err(WireError::Closed),
        };
        if flushed == Flushed::Pending {
            *backlog += len;
        }
        Ok(flushed)
    }

    /// Writes out what the buffer holds.
    fn flush(&mut self) -> Result<Flushed, WireError> {
        let State { ws, socket, .. } = self;
        let Some(socket) = socket else {
            return Err(WireError::Closed);
        };
        match ws.flush(&mut Io(socket)) {
            Ok(()) => {
                self.pending = false;
                self.backlog = 0;
                Ok(Flushed::Done)
            }
            Err(e) if would_block(&e) => {
                self.pending = true;
                Ok(Flushed::Pending)
            }
            Err(_) => Err(WireError::Closed),
        }
    }
}

fn mark_sent(sent: &mut BTreeSet<u64>, seq: u64) -> bool {
    let fresh = sent.insert(seq);
    if sent.len() > SENT_MEMORY {
        sent.pop_first();
    }
    fresh
}

pub struct Wire {
    state: Mutex<State>,
    notify: Notify,
    /// Most bytes waiting for the socket, or held during a replay.
    max_backlog: usize,
}

impl Wire {
    /// `ws` is the protocol state after the handshake (with whatever the client sent along);
    /// its `max_write_buffer_size` must leave room for `max_backlog` plus the largest frame.
    pub fn new(ws: WebSocketContext, socket: Arc<TcpStream>, max_backlog: usize) -> Self {
        Wire {
            state: Mutex::new(State {
                ws,
                socket: Some(socket),
                holding: false,
                held: Vec::new(),
                held_bytes: 0,
                pending: false,
                backlog: 0,
                max_backlog,
                close: None,
                topics: Topics::default(),
                sent: BTreeSet::new(),
            }),
            notify: Notify::new(),
            max_backlog,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, WireError> {
        self.state.lock().map_err(|_| WireError::Closed)
    }

    /// The fan-out path: writes `items` now, in order, with one send for all of them (or
    /// holds them during a replay). Never waits. Returns how many were written.
    pub fn deliver(&self, items: &[Outbound]) -> Result<u64, Delivery> {
        let Ok(mut st) = self.lock() else {
            return Err(Delivery::Closed);
        };
        if st.close.is_some() {
            return Err(Delivery::Closed);
        }
        if st.holding {
            let cost: usize = items.iter().map(Outbound::cost).sum();
            if !st.held.is_empty() && st.held_bytes + cost > self.max_backlog {
                return Err(self.overflow(st));
            }
            st.held_bytes += cost;
            st.held.extend_from_slice(items);
            return Ok(0);
        }
        let mut written = 0;
        for item in items {
            if !st.fresh(item) {
                continue;
            }
            match st.write(Message::Text(item.text().clone()), false) {
                Ok(_) => written += 1,
                Err(WireError::Full) => return Err(self.overflow(st)),
                Err(_) => return Err(self.broken(st)),
            }
        }
        if written == 0 {
            return Ok(0);
        }
        let flushed = if st.pending {
            Ok(Flushed::Pending)
        } else {
            st.flush()
        };
        match flushed {
            Ok(Flushed::Done) => Ok(written),
            Ok(Flushed::Pending) => {
                drop(st);
                self.notify.notify_one();
                Ok(written)
            }
            Err(_) => Err(self.broken(st)),
        }
    }

    /// The socket failed: have the task end the session.
    fn broken(&self, mut st: MutexGuard<'_, State>) -> Delivery {
        st.close.get_or_insert(close::SLOW_CONSUMER);
        drop(st);
        self.notify.notify_one();
        Delivery::Closed
    }

    /// The client is too slow: drop what is held and have the task close with `4008`.
    fn overflow(&self, mut st: MutexGuard<'_, State>) -> Delivery {
        st.close.get_or_insert(close::SLOW_CONSUMER);
        st.held = Vec::new();
        st.held_bytes = 0;
        drop(st);
        self.notify.notify_one();
        Delivery::Full
    }

    /// Asks the session to close with `code` (the first request wins).
    pub fn close(&self, code: u16) {
        if let Ok(mut st) = self.lock() {
            st.close.get_or_insert(code);
        }
        self.notify.notify_one();
    }

    /// Waits until the task has something to do ([`Wire::signal`] says what).
    pub async fn signalled(&self) {
        self.notify.notified().await
    }

    pub fn signal(&self) -> Signal {
        match self.lock() {
            Ok(st) => Signal {
                close: st.close,
                pending: st.pending,
            },
            Err(_) => Signal {
                close: Some(close::SLOW_CONSUMER),
                pending: false,
            },
        }
    }

    /// Reads the next client message, `None` when the socket has nothing more now.
    pub fn read(&self) -> Result<Option<Message>, tungstenite::Error> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| tungstenite::Error::AlreadyClosed)?;
        let State { ws, socket, .. } = &mut *st;
        let Some(socket) = socket else {
            return Err(tungstenite::Error::AlreadyClosed);
        };
        match ws.read(&mut Io(socket)) {
            Ok(msg) => Ok(Some(msg)),
            Err(e) if would_block(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `msgs` (the task's own frames) and flushes once; waits while the socket is
    /// full, at most `patience` at a time without progress.
    pub async fn send(
        &self,
        socket: &TcpStream,
        msgs: impl IntoIterator<Item = Message>,
        patience: Duration,
    ) -> Result<(), WireError> {
        for msg in msgs {
            let written = self.lock()?.write(msg, false)?;
            if written == Flushed::Pending {
                self.finish(socket, patience).await?;
            }
        }
        let flushed = self.lock()?.flush()?;
        if flushed == Flushed::Pending {
            self.finish(socket, patience).await?;
        }
        Ok(())
    }

    /// Waits until the socket has taken every buffered byte; `Stalled` if it takes nothing
    /// for `patience`.
    pub async fn finish(&self, socket: &TcpStream, patience: Duration) -> Result<(), WireError> {
        loop {
            if self.lock()?.flush()? == Flushed::Done {
                return Ok(());
            }
            match tokio::time::timeout(patience, socket.writable()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WireError::Closed),
                Err(_) => return Err(WireError::Stalled),
            }
        }
    }

    /// Holds live frames until [`Wire::release`] (for a replay).
    pub fn hold(&self) {
        if let Ok(mut st) = self.lock() {
            st.holding = true;
        }
    }

    /// Ends a hold: writes what was held that the session still needs, in arrival order.
    /// Returns how many frames were written.
    pub fn release(&self) -> Result<(u64, Flushed), WireError> {
        let mut st = self.lock()?;
        st.holding = false;
        st.held_bytes = 0;
        let held = std::mem::take(&mut st.held);
        let mut written = 0;
        for item in held {
            if st.fresh(&item) {
                st.write(Message::Text(item.text().clone()), false)?;
                written += 1;
            }
        }
        Ok((written, st.flush()?))
    }

    /// Records personal `seq` as sent; false if it already was.
    pub fn mark_sent(&self, seq: u64) -> bool {
        self.lock()
            .map(|mut st| mark_sent(&mut st.sent, seq))
            .unwrap_or(false)
    }

    /// The last seq the session has of `topic`, if it joined it.
    pub fn topic_seq(&self, topic: &str) -> Option<u64> {
        self.lock()
            .ok()
            .and_then(|mut st| st.topics.get_mut(topic).copied())
    }

    pub fn join_topic(&self, topic: Arc<str>, seq: u64) {
        if let Ok(mut st) = self.lock() {
            st.topics.insert(topic, seq);
        }
    }

    pub fn leave_topic(&self, topic: &str) -> Option<Arc<str>> {
        self.lock().ok().and_then(|mut st| st.topics.remove(topic))
    }

    pub fn topic_count(&self) -> usize {
        self.lock().map(|st| st.topics.0.len()).unwrap_or(0)
    }

    pub fn topic_names(&self) -> Vec<Arc<str>> {
        self.lock()
            .map(|st| st.topics.0.iter().map(|(t, _)| Arc::clone(t)).collect())
            .unwrap_or_default()
    }

    /// Sends a close frame (nothing is written after it).
    pub fn send_close(&self, code: u16, reason: &'static str) -> Result<Flushed, WireError> {
        let mut st = self.lock()?;
        st.close.get_or_insert(code);
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(reason),
        };
        st.write(Message::Close(Some(frame)), true)
    }

    /// Lets go of the socket (the session has ended): the fan-out path finds it closed.
    pub fn detach(&self) {
        if let Ok(mut st) = self.lock() {
            st.close.get_or_insert(close::RESTARTING);
            st.socket = None;
            st.held = Vec::new();
        }
    }
}

/// A ping with no payload.
pub fn ping() -> Message {
    Message::Ping(Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::Role;

    /// A connected pair: the server side wrapped in a `Wire`, and the client's socket.
    async fn pair(max: usize) -> (Wire, Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let server = Arc::new(accepted.unwrap().0);
        let config = tungstenite::protocol::WebSocketConfig::default()
            .write_buffer_size(0)
            .max_write_buffer_size(max + FRAME_ROOM);
        let ws = WebSocketContext::new(Role::Server, Some(config));
        (
            Wire::new(ws, Arc::clone(&server), max),
            server,
            client.unwrap(),
        )
    }

    fn topic(seq: u64, text: &str) -> Outbound {
        Outbound::Topic {
            topic: Arc::from("news"),
            seq,
            text: Utf8Bytes::from(text.to_string()),
        }
    }

    async fn read_text(client: &mut TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; n];
        client.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn writes_live_frames_at_once_and_skips_what_the_session_has() {
        let (wire, _server, mut client) = pair(1 << 20).await;
        assert_eq!(wire.deliver(&[topic(1, "a")]), Ok(0), "not joined");
        wire.join_topic(Arc::from("news"), 1);
        assert_eq!(wire.deliver(&[topic(1, "a")]), Ok(0), "seq 1 is had");
        assert_eq!(wire.deliver(&[topic(2, "bc")]), Ok(1));
        // A batch goes out together; a seq the session has is skipped within it.
        let batch = [topic(3, "d"), topic(3, "d"), topic(4, "e")];
        assert_eq!(wire.deliver(&batch), Ok(2));
        // Unmasked server text frames: 0x81, length, payload.
        assert_eq!(
            read_text(&mut client, 10).await,
            b"\x81\x02bc\x81\x01d\x81\x01e"
        );
    }

    #[tokio::test]
    async fn holds_during_a_replay_then_writes_in_order_without_duplicates() {
        let (wire, server, mut client) = pair(1 << 20).await;
        wire.hold();
        wire.join_topic(Arc::from("news"), 0);
        assert_eq!(wire.deliver(&[topic(2, "2")]), Ok(0));
        assert_eq!(wire.deliver(&[topic(3, "3")]), Ok(0));
        // The replay covers seqs 1 and 2.
        wire.send(
            &server,
            [Message::Text("1".into()), Message::Text("2".into())],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        wire.join_topic(Arc::from("news"), 2);
        assert_eq!(wire.release().unwrap(), (1, Flushed::Done));
        assert_eq!(
            read_text(&mut client, 9).await,
            b"\x81\x011\x81\x012\x81\x013"
        );
    }

    #[tokio::test]
    async fn a_frame_over_the_bound_still_reaches_a_client_that_keeps_up() {
        let (wire, _server, mut client) = pair(1024).await;
        wire.join_topic(Arc::from("news"), 0);
        let big = "x".repeat(4000);
        for seq in 1..=3 {
            assert_eq!(wire.deliver(&[topic(seq, &big)]), Ok(1));
            // 0x81, 126, a 16-bit length, the payload.
            let frame = read_text(&mut client, 4 + big.len()).await;
            assert_eq!(&frame[..4], &[0x81, 126, 0x0f, 0xa0]);
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_as_slow() {
        let (wire, server, _client) = pair(64 * 1024).await;
        wire.join_topic(Arc::from("news"), 0);
        let big = "x".repeat(16 * 1024);
        let mut seq = 0;
        let outcome = loop {
            seq += 1;
            match wire.deliver(&[topic(seq, &big)]) {
                Ok(_) => continue,
                Err(other) => break other,
            }
        };
        assert_eq!(outcome, Delivery::Full);
        assert!(seq > 4, "the kernel's buffers took some first ({seq})");
        let signal = wire.signal();
        assert_eq!(signal.close, Some(close::SLOW_CONSUMER));
        assert!(signal.pending);
        assert_eq!(
            wire.deliver(&[topic(seq + 1, "late")]),
            Err(Delivery::Closed)
        );
        assert_eq!(
            wire.finish(&server, Duration::from_millis(50)).await,
            Err(WireError::Stalled)
        );
    }
}
