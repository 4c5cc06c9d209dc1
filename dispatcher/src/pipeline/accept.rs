//! Accepting a send: validate, check the template against the variables, apply
//! idempotency, commit, queue one job per recipient.

use std::sync::Arc;

use herald_common::api::{
    Accepted, ChannelKind, MAX_SCHEDULE_AHEAD_MS, Priority, PushNotification, RecipientSpec,
    SendRequest, Strategy,
};
use herald_common::time::{now_ms, parse_rfc3339};
use herald_engine::store::{
    AcceptOutcome, IdempotencyClaim, MessageRecord, RecipientRecord, TemplateRef,
};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::{AcceptError, Counters, Pipeline, Render, accepted, content};
use crate::stages::templates;

/// The idempotency digest covers the request as sent, minus the key itself.
pub(super) fn body_hash(req: &SendRequest) -> Vec<u8> {
    let mut canonical = req.clone();
    canonical.idempotency_key = None;
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

impl Pipeline {
    /// Builds the stored form of a request: defaults applied, recipients de-duplicated.
    pub fn record(&self, req: &SendRequest, id: String, now: i64) -> MessageRecord {
        let mut recipients: Vec<RecipientRecord> = Vec::with_capacity(req.to.len());
        for spec in &req.to {
            let (user_id, email, phone) = match spec {
                RecipientSpec::Id(id) => (id.clone(), None, None),
                RecipientSpec::Inline(r) => (r.user_id.clone(), r.email.clone(), r.phone.clone()),
            };
            if recipients.iter().any(|r| r.user_id == user_id) {
                continue;
            }
            recipients.push(RecipientRecord {
                user_id,
                email,
                phone,
            });
        }
        MessageRecord {
            id,
            created_at: now,
            priority: req.priority.unwrap_or(Priority::Normal),
            strategy: req.strategy.unwrap_or(Strategy::Fallback),
            channels: req
                .channels
                .clone()
                .unwrap_or_else(|| self.config.default_channels.clone()),
            ack_timeout_ms: req
                .ack_timeout_ms
                .unwrap_or(self.config.ack_timeout.as_millis() as u64),
            expires_at: req.ttl_s.map(|s| {
                // A scheduled message's time to live counts from its send time.
                let from = req
                    .send_at
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .map_or(now, |at| at.max(now));
                from.saturating_add(
                    i64::try_from(s)
                        .unwrap_or(i64::MAX / 1000)
                        .saturating_mul(1000),
                )
            }),
            title: req.title.clone(),
            body: req.body.clone(),
            data: req
                .data
                .as_ref()
                .and_then(|d| RawValue::from_string(d.to_string()).ok()),
            email: req.email.clone(),
            sms: req.sms.clone(),
            push: req.push.clone(),
            chat: req.chat.clone(),
            // Filled in by `accept` with the version it checks against.
            template: None,
            locale: req.locale.clone(),
            category: req.category.clone(),
            send_at: req
                .send_at
                .as_deref()
                .and_then(parse_rfc3339)
                .filter(|at| *at > now),
            cancel_key: req.cancel_key.clone(),
            escalate: req.escalate.clone(),
            sender: None,
            recipients,
        }
    }

    /// Accepts a send: once this returns `Ok`, the message is durable and delivery has begun.
    /// The flag is `false` when the answer is a replay of an earlier idempotent request.
    pub async fn accept(
        &self,
        req: SendRequest,
        header_key: Option<String>,
        sender: Option<String>,
    ) -> Result<(Accepted, bool), AcceptError> {
        req.validate().map_err(AcceptError::Invalid)?;
        let key = match (header_key, req.idempotency_key.clone()) {
            (Some(h), Some(f)) if h != f => {
                return Err(AcceptError::Invalid(
                    "Idempotency-Key header and idempotency_key field differ".into(),
                ));
            }
            (h, f) => h.or(f),
        };
        if let Some(k) = &key {
            herald_common::api::validate_idempotency_key(k).map_err(AcceptError::Invalid)?;
        }
        let now = now_ms();
        if let Some(at) = req.send_at.as_deref().and_then(parse_rfc3339)
            && at - now > MAX_SCHEDULE_AHEAD_MS
        {
            return Err(AcceptError::Invalid(format!(
                "'send_at' is more than {} days ahead",
                MAX_SCHEDULE_AHEAD_MS / 86_400_000
            )));
        }
        let claim = key.map(|key| IdempotencyClaim {
            key,
            body_hash: body_hash(&req),
        });
        let mut record = self.record(&req, ulid::Ulid::generate().to_string(), now);
        record.sender = sender;
        // What push would carry: the message's own content, or the template's trial render.
        let mut sample = None;
        if let Some(name) = &req.template {
            let vars = req.vars.clone().unwrap_or_default();
            let (compiled, rendered) = self.check_template(name, &vars, &record).await?;
            record.template = Some(TemplateRef {
                name: name.clone(),
                version: compiled.version,
                vars,
            });
            let content = Arc::new(content::apply(&record, &rendered));
            sample = Some((compiled, rendered.locale, content));
        }
        if record.channels.contains(&ChannelKind::Push) {
            let m = sample.as_ref().map_or(&record, |(_, _, c)| &**c);
            let data = m
                .data
                .as_ref()
                .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok());
            PushNotification::of(
                m.title.as_deref(),
                m.body.as_deref(),
                data.as_ref(),
                m.push.as_ref(),
            )
            .check_size()
            .map_err(AcceptError::Invalid)?;
        }
        match self.store.accept(&record, claim).await? {
            AcceptOutcome::Created => {
                if let Some((compiled, locale, content)) = &sample {
                    let first = record.recipients.first().map_or("", |r| r.user_id.as_str());
                    self.share_content(compiled, content, locale, first);
                }
                let n = record.recipients.len();
                metrics::counter!("herald_messages_accepted_total", "priority" => record.priority.as_str())
                    .increment(1);
                Counters::bump(&self.stats.accepted);
                let message = Arc::new(record);
                self.queue.enqueue_accepted(Arc::clone(&message)).await?;
                Ok((accepted(message.id.clone(), n), true))
            }
            AcceptOutcome::Duplicate {
                message_id,
                recipients,
            } => Ok((accepted(message_id, recipients), false)),
            AcceptOutcome::Conflict => Err(AcceptError::Conflict),
            AcceptOutcome::InProgress => Err(AcceptError::InProgress),
        }
    }

    /// The template's latest version, once it is known to render with `vars`: every
    /// variable it uses is given, and the message's locale renders (a sample for checks).
    async fn check_template(
        &self,
        name: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
        record: &MessageRecord,
    ) -> Result<(Arc<templates::Compiled>, templates::Rendered), AcceptError> {
        let compiled = match self.compiled(name, None).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(AcceptError::Invalid(format!(
                    "template: no template named '{name}'"
                )));
            }
            Err(Render::Unavailable(e)) => return Err(AcceptError::Store(e)),
            Err(Render::Failed(why)) => {
                return Err(AcceptError::Invalid(format!("template '{name}': {why}")));
            }
        };
        compiled.check_vars(vars).map_err(AcceptError::Invalid)?;
        let locale = compiled
            .pick_locale(&[record.locale.as_deref()])
            .to_string();
        let to = templates::Recipient {
            user_id: record.recipients.first().map_or("", |r| r.user_id.as_str()),
            timezone: &self.policy.timezone,
        };
        let rendered = compiled
            .render_for(&locale, vars, &to, &record.all_channels())
            .map_err(|e| AcceptError::Invalid(format!("template '{name}': {e}")))?;
        Ok((compiled, rendered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idempotency_digest_ignores_only_the_key() {
        let a: SendRequest = serde_json::from_value(
            serde_json::json!({"to":["a"],"title":"x","idempotency_key":"k"}),
        )
        .unwrap();
        let b: SendRequest =
            serde_json::from_value(serde_json::json!({"to":["a"],"title":"x"})).unwrap();
        let c: SendRequest =
            serde_json::from_value(serde_json::json!({"to":["a"],"title":"y"})).unwrap();
        assert_eq!(body_hash(&a), body_hash(&b));
        assert_ne!(body_hash(&a), body_hash(&c));
    }
}
