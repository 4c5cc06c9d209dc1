//! Backend publishes on `<prefix>.send` (cluster engine): each is accepted exactly like
//! `POST /v1/messages`, with its `Nats-Msg-Id` as the idempotency key. What cannot be
//! accepted is announced on `<prefix>.events.rejected`, since there is no HTTP answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_common::api::SendRequest;
use herald_common::events::Rejected;
use herald_common::subjects::Subjects;
use herald_engine::Bus;
use herald_engine::nats::JetStreamQueue;
use herald_engine::nats::queue::RawSend;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{AcceptError, Pipeline};

pub async fn run(
    queue: Arc<JetStreamQueue>,
    pipeline: Arc<Pipeline>,
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    shutdown: CancellationToken,
) {
    while let Some(send) = queue.next_send(&shutdown).await {
        let req: SendRequest = match crate::strict_json::parse(&send.payload) {
            Ok(r) => r,
            Err(e) => {
                reject(
                    &bus,
                    &subjects,
                    &send,
                    "invalid_request",
                    format!("invalid JSON body: {e}"),
                )
                .await;
                send.done().await;
                continue;
            }
        };
        // Without a Nats-Msg-Id or key, the stream sequence still makes redelivery safe.
        let key = send
            .msg_id
            .clone()
            .or_else(|| req.idempotency_key.clone())
            .unwrap_or_else(|| format!("send-seq-{}", send.seq));
        let header_key = if req.idempotency_key.is_some() && send.msg_id.is_none() {
            None
        } else {
            Some(key)
        };
        match pipeline.accept(req, header_key, None).await {
            Ok((accepted, fresh)) => {
                tracing::debug!(message_id = %accepted.id, fresh, seq = send.seq, "accepted from herald.send");
                send.done().await;
            }
            Err(AcceptError::Invalid(m)) => {
                reject(&bus, &subjects, &send, "invalid_request", m).await;
                send.done().await;
            }
            Err(AcceptError::Conflict) => {
                let m = AcceptError::Conflict.to_string();
                reject(&bus, &subjects, &send, "idempotency_conflict", m).await;
                send.done().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, seq = send.seq, "cannot accept a send now; retrying");
                send.later(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn reject(
    bus: &Arc<dyn Bus>,
    subjects: &Subjects,
    send: &RawSend,
    code: &str,
    message: String,
) {
    tracing::info!(seq = send.seq, code, %message, "rejected a publish on herald.send");
    let event = Rejected {
        seq: send.seq,
        msg_id: send.msg_id.clone(),
        code: code.to_string(),
        message,
    };
    if let Ok(payload) = serde_json::to_vec(&event) {
        let _ = bus
            .publish(&subjects.event("rejected"), Bytes::from(payload))
            .await;
    }
}
