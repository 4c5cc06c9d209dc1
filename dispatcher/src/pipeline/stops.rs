//! Stops from outside a recipient's job: cancels (SPEC §10) and receipts (a read that
//! ends an escalation wait, SPEC §9). The store decides, atomically with any dispatcher
//! taking the job: a job being attempted is not stopped, and a stopped job never starts.

use bytes::Bytes;
use herald_common::api::{EscalateUnless, RecipientStatus};
use herald_common::events::{EventStatus, ReadReceipt, Receipt, StatusEvent};
use herald_common::time::{now_ms, rfc3339};
use herald_engine::StoreError;
use herald_engine::store::{MessageRecord, Stop};

use super::Pipeline;

impl Pipeline {
    /// Cancels every recipient of message `id` not yet attempted nor being attempted;
    /// `None` if there is no such message.
    pub async fn cancel_message(&self, id: &str) -> Result<Option<u32>, StoreError> {
        let Some(record) = self.store.record(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.cancel_recipients(&record).await?))
    }

    /// Cancels the recipients of every message accepted with `cancel_key`.
    pub async fn cancel_group(&self, cancel_key: &str) -> Result<u32, StoreError> {
        let mut canceled = 0;
        for (id, _) in self.store.cancel_group(cancel_key).await? {
            if let Some(record) = self.store.record(&id).await? {
                canceled += self.cancel_recipients(&record).await?;
            }
        }
        Ok(canceled)
    }

    async fn cancel_recipients(&self, record: &MessageRecord) -> Result<u32, StoreError> {
        let mut canceled = 0;
        let now = now_ms();
        for (idx, r) in record.recipients.iter().enumerate() {
            if self
                .store
                .stop(&record.id, idx as u32, Stop::Cancel, now)
                .await?
            {
                canceled += 1;
                metrics::counter!("herald_recipients_final_total", "status" => "canceled")
                    .increment(1);
                self.announce(
                    &record.id,
                    &r.user_id,
                    RecipientStatus::Canceled.into(),
                    None,
                    now,
                )
                .await;
            }
        }
        Ok(canceled)
    }

    /// Records a receipt from a session; a first `read` is announced, and ends the
    /// recipient's escalation wait if it was waiting for one.
    pub async fn receipt(&self, receipt: &ReadReceipt) -> Result<(), StoreError> {
        let first = self
            .store
            .mark_receipt(&receipt.id, &receipt.user_id, receipt.kind, receipt.at)
            .await?;
        if first.is_empty() {
            return Ok(());
        }
        if receipt.kind == Receipt::Read {
            self.announce(
                &receipt.id,
                &receipt.user_id,
                EventStatus::READ,
                None,
                receipt.at,
            )
            .await;
        }
        let Some(record) = self.store.record(&receipt.id).await? else {
            return Ok(());
        };
        let Some(escalate) = &record.escalate else {
            return Ok(());
        };
        if receipt.kind == Receipt::Ack && escalate.unless == EscalateUnless::Read {
            return Ok(());
        }
        for idx in first {
            if self
                .store
                .stop(&record.id, idx, Stop::Satisfied, now_ms())
                .await?
            {
                self.announce(
                    &record.id,
                    &receipt.user_id,
                    RecipientStatus::Delivered.into(),
                    Some(herald_common::api::ChannelKind::InApp),
                    now_ms(),
                )
                .await;
            }
        }
        Ok(())
    }

    /// Publishes a status event on `<prefix>.events.<status>` and queues it for the status
    /// webhooks that want it.
    pub(super) async fn announce(
        &self,
        id: &str,
        user_id: &str,
        status: EventStatus,
        channel: Option<herald_common::api::ChannelKind>,
        at: i64,
    ) {
        if let Some(payload) = event_payload(id, user_id, status, channel, at) {
            self.publish_event(id, user_id, status, payload, true).await;
        }
    }

    /// Publishes an event's payload (and queues it for webhooks unless that was done with
    /// the status's own record).
    pub(super) async fn publish_event(
        &self,
        id: &str,
        user_id: &str,
        status: EventStatus,
        payload: Bytes,
        queue_hooks: bool,
    ) {
        if queue_hooks && let Some(hooks) = &self.hooks {
            hooks.announce(status.as_str(), id, user_id, &payload).await;
        }
        let subject = self.subjects.event(status.as_str());
        if let Err(e) = self.bus.publish(&subject, payload).await {
            tracing::warn!(message_id = %id, error = %e, "could not publish status event");
        }
    }
}

/// The JSON of a status event (SPEC §5).
pub(super) fn event_payload(
    id: &str,
    user_id: &str,
    status: EventStatus,
    channel: Option<herald_common::api::ChannelKind>,
    at: i64,
) -> Option<Bytes> {
    let event = StatusEvent {
        id: id.to_string(),
        user_id: user_id.to_string(),
        status,
        channel,
        at: rfc3339(at),
    };
    serde_json::to_vec(&event).ok().map(Bytes::from)
}
