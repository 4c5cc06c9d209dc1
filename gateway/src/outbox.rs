//! A session's outbound queue: bounded in bytes, filled by the fan-out path without ever
//! waiting, drained in batches by the session task. Full means the client is too slow:
//! the queue closes itself with `4008` instead of growing.
//!
//! An idle session's queue holds no heap memory (an empty `VecDeque` does not allocate).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

use axum::extract::ws::Utf8Bytes;
use herald_common::protocol::close;
use tokio::sync::Notify;

/// One frame waiting to be written, already encoded and shared between sessions.
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
}

impl Outbound {
    fn cost(&self) -> usize {
        // Payload plus a fixed charge for the slot itself.
        64 + match self {
            Outbound::Personal { text, .. } | Outbound::Topic { text, .. } => text.len(),
        }
    }
}

#[derive(Default)]
struct State {
    items: VecDeque<Outbound>,
    bytes: usize,
    /// Set once: the close code the session must end with.
    close: Option<u16>,
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    max_bytes: usize,
}

/// The frame did not fit: the session has been told to close with `4008`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Outbox {
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_bytes,
        }
    }

    /// Queues a frame without waiting. Over the byte limit, the session is marked for a
    /// `4008` close and the frame is dropped.
    pub fn push(&self, item: Outbound) -> Result<(), Full> {
        let cost = item.cost();
        {
            let Ok(mut st) = self.state.lock() else {
                return Err(Full);
            };
            if st.close.is_some() {
                return Err(Full);
            }
            if st.bytes + cost > self.max_bytes {
                st.close = Some(close::SLOW_CONSUMER);
                st.items.clear();
                st.items.shrink_to_fit();
                st.bytes = 0;
                drop(st);
                self.notify.notify_one();
                return Err(Full);
            }
            st.bytes += cost;
            st.items.push_back(item);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Asks the session to close with `code` (the first request wins).
    pub fn close(&self, code: u16) {
        if let Ok(mut st) = self.state.lock() {
            st.close.get_or_insert(code);
        }
        self.notify.notify_one();
    }

    /// Waits until there is something to do.
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Moves every queued frame into `into`, returning the close code if one was asked for.
    pub fn drain(&self, into: &mut Vec<Outbound>) -> Option<u16> {
        let Ok(mut st) = self.state.lock() else {
            return Some(close::SLOW_CONSUMER);
        };
        into.extend(st.items.drain(..));
        st.bytes = 0;
        if st.items.capacity() > 64 {
            st.items.shrink_to_fit();
        }
        st.close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Outbound {
        Outbound::Personal {
            seq: 1,
            text: Utf8Bytes::from("x".repeat(n)),
        }
    }

    #[test]
    fn fills_then_closes_with_slow_consumer() {
        let q = Outbox::new(1000);
        assert!(q.push(frame(400)).is_ok());
        assert!(q.push(frame(400)).is_ok());
        assert_eq!(q.push(frame(400)), Err(Full));
        let mut out = Vec::new();
        assert_eq!(q.drain(&mut out), Some(close::SLOW_CONSUMER));
        assert!(
            out.is_empty(),
            "a slow consumer's backlog is dropped, not kept"
        );
        assert_eq!(q.push(frame(1)), Err(Full));
    }

    #[test]
    fn draining_frees_room() {
        let q = Outbox::new(1000);
        q.push(frame(400)).unwrap();
        let mut out = Vec::new();
        assert_eq!(q.drain(&mut out), None);
        assert_eq!(out.len(), 1);
        q.push(frame(400)).unwrap();
        q.push(frame(400)).unwrap();
    }
}
