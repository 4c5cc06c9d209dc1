//! In-app delivery: append to the user's inbox (so `resume` can replay it), then ask on the
//! user's subject. No subscriber → `offline` at once; a gateway's reply → `acked`; silence
//! for `ack_timeout_ms` → `ack_timeout`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_common::api::{ChannelKind, Outcome};
use herald_common::protocol::MessageFrame;
use herald_common::subjects::Subjects;
use herald_engine::{Bus, History, RequestError};

use super::{AttemptResult, Channel, Delivery};
use crate::ordering::OrderLocks;

pub struct InApp {
    bus: Arc<dyn Bus>,
    history: Arc<dyn History>,
    subjects: Subjects,
    order: OrderLocks,
}

impl InApp {
    pub fn new(bus: Arc<dyn Bus>, history: Arc<dyn History>, subjects: Subjects) -> Self {
        InApp {
            bus,
            history,
            subjects,
            order: OrderLocks::new(1024),
        }
    }
}

#[async_trait]
impl Channel for InApp {
    fn kind(&self) -> ChannelKind {
        ChannelKind::InApp
    }

    async fn attempt(&self, d: &Delivery<'_>) -> AttemptResult {
        let user = &d.recipient.user_id;
        let content = d.message.content();
        let pending = {
            // Append and publish under the user's lock so frames leave in seq order.
            let _order = self.order.lock(user).await;
            let seq = match self
                .history
                .append_inbox(user, &content, d.message.expires_at)
                .await
            {
                Ok(seq) => seq,
                Err(e) => {
                    return AttemptResult::new(Outcome::TransientError, format!("inbox: {e}"));
                }
            };
            let frame = MessageFrame::new(&content, None, seq).encode();
            let asked = self
                .bus
                .request(&self.subjects.user(user), Bytes::from(frame))
                .await;
            // The frame has its seq and is on its way: the next job for this user may go.
            d.turn.pass();
            match asked {
                Ok(pending) => pending,
                Err(e) => return AttemptResult::new(Outcome::TransientError, format!("bus: {e}")),
            }
        };
        let timeout = Duration::from_millis(d.message.ack_timeout_ms);
        match pending.wait(timeout).await {
            Ok(_) => AttemptResult::new(Outcome::Acked, None),
            Err(RequestError::NoResponders) => {
                AttemptResult::new(Outcome::Offline, "no live session".to_string())
            }
            Err(RequestError::Timeout) => AttemptResult::new(
                Outcome::AckTimeout,
                format!("no ack within {} ms", d.message.ack_timeout_ms),
            ),
            Err(RequestError::Bus(e)) => {
                AttemptResult::new(Outcome::TransientError, format!("bus: {e}"))
            }
        }
    }
}
