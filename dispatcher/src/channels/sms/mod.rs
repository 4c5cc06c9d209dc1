//! SMS through HTTP providers — the `generic` JSON shape, Twilio, Aliyun and Tencent Cloud —
//! with failover between them ([`Providers`]). With no provider URL, each SMS is appended
//! as a JSON line to `outbox/sms.jsonl`.

mod aliyun;
mod generic;
mod tencent;
mod twilio;

use std::path::PathBuf;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome};
use herald_common::config::{SmsKind, SmsProviderConfig};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::providers::{Providers, Registry, Verdict};
use super::{AttemptResult, Channel, ClientError, ClientOptions, Delivery};

/// One SMS to send.
pub struct Sms<'a> {
    /// E.164.
    pub to: &'a str,
    pub text: &'a str,
    /// Stable across retries (generic: `Idempotency-Key`; Aliyun: `OutId`).
    pub id: &'a str,
}

/// One SMS provider: one request, one classified answer.
#[async_trait]
pub trait SmsProvider: Send + Sync {
    async fn send(&self, sms: &Sms<'_>) -> Verdict;
}

/// The `sms` channel.
pub struct SmsChannel {
    providers: Providers<Box<dyn SmsProvider>>,
}

#[derive(Debug, thiserror::Error)]
#[error("SMS provider '{name}': {source}")]
pub struct SmsSetupError {
    name: String,
    source: ClientError,
}

/// Appends each SMS to a JSON-lines file (no provider configured).
struct Outbox {
    file: PathBuf,
    lock: Mutex<()>,
}

#[async_trait]
impl SmsProvider for Outbox {
    async fn send(&self, sms: &Sms<'_>) -> Verdict {
        let line = json!({"id": sms.id, "to": sms.to, "text": sms.text,
            "at": herald_common::time::rfc3339(herald_common::time::now_ms())});
        let _guard = self.lock.lock().await;
        match append_line(&self.file, &line.to_string()).await {
            Ok(()) => Verdict::Sent {
                id: Some(format!("filed {}", self.file.display())),
            },
            Err(e) => Verdict::transient(format!("outbox: {e}")),
        }
    }
}

/// Classifies a provider's HTTP status the way SPEC §2 says: 2xx sent; 408, 429 and 5xx
/// transient; other 4xx permanent.
pub fn classify_status(status: reqwest::StatusCode, detail: String) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Sent { id: Some(detail) },
        408 | 429 | 500..=599 => Verdict::transient(detail),
        _ => Verdict::permanent(detail),
    }
}

impl SmsChannel {
    pub fn new(
        configs: &[SmsProviderConfig],
        outbox: PathBuf,
        client: &ClientOptions,
        circuit: herald_common::config::CircuitConfig,
        registry: &Registry,
    ) -> Result<SmsChannel, SmsSetupError> {
        let mut list = Vec::new();
        for c in configs {
            let provider: Box<dyn SmsProvider> = match &c.url {
                None => Box::new(Outbox {
                    file: outbox.join("sms.jsonl"),
                    lock: Mutex::new(()),
                }),
                Some(_) => {
                    let http = client.build(false).map_err(|source| SmsSetupError {
                        name: c.id.name.clone(),
                        source,
                    })?;
                    match c.kind {
                        SmsKind::Generic => Box::new(generic::Generic::new(http, c.clone())),
                        SmsKind::Twilio => Box::new(twilio::Twilio::new(http, c.clone())),
                        SmsKind::Aliyun => Box::new(aliyun::Aliyun::new(http, c.clone())),
                        SmsKind::Tencent => Box::new(tencent::Tencent::new(http, c.clone())),
                    }
                }
            };
            let kind = if c.url.is_some() {
                c.kind.as_str()
            } else {
                "outbox"
            };
            list.push((c.id.clone(), kind, provider));
        }
        Ok(SmsChannel {
            providers: Providers::new(ChannelKind::Sms, list, circuit, registry),
        })
    }

    fn text(d: &Delivery<'_>) -> String {
        let m = d.message;
        m.sms
            .as_ref()
            .and_then(|s| s.text.clone())
            .or_else(|| match (&m.title, &m.body) {
                (Some(t), Some(b)) => Some(format!("{t}: {b}")),
                (Some(t), None) => Some(t.clone()),
                (None, Some(b)) => Some(b.clone()),
                (None, None) => None,
            })
            .unwrap_or_default()
    }
}

#[async_trait]
impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn attempt(&self, d: &Delivery<'_>) -> AttemptResult {
        let Some(to) = d.phone() else {
            return AttemptResult::new(Outcome::Skipped, "no phone number".to_string());
        };
        let text = SmsChannel::text(d);
        let id = d.delivery_id();
        let sms = Sms {
            to,
            text: &text,
            id: &id,
        };
        let routed = self.providers.send(|p| p.send(&sms)).await;
        AttemptResult::routed(routed)
    }
}

/// The provider's message id (`sid` for Twilio, `id` for most others), if it gave one.
pub fn provider_id(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    ["sid", "id", "message_id"]
        .iter()
        .find_map(|k| v.get(k).and_then(|s| s.as_str()).map(str::to_string))
}

/// What a generic or Twilio answer says, for the attempt's detail.
pub fn answer_detail(status: reqwest::StatusCode, body: &str) -> String {
    let mut detail = format!("HTTP {}", status.as_u16());
    if let Some(id) = provider_id(body) {
        detail.push_str(&format!(" id={id}"));
    } else if !status.is_success() && !body.is_empty() {
        detail.push_str(&format!(": {}", super::snippet(body)));
    }
    detail
}

async fn append_line(file: &std::path::Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .await?;
    f.write_all(format!("{line}\n").as_bytes()).await?;
    f.sync_data().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn statuses_classify_as_the_spec_says() {
        for (code, sent, transient) in [
            (200, true, false),
            (201, true, false),
            (408, false, true),
            (429, false, true),
            (500, false, true),
            (503, false, true),
            (400, false, false),
            (401, false, false),
            (404, false, false),
        ] {
            let v = classify_status(StatusCode::from_u16(code).unwrap(), String::new());
            assert_eq!(matches!(v, Verdict::Sent { .. }), sent, "{code}");
            assert_eq!(matches!(v, Verdict::Transient { .. }), transient, "{code}");
        }
    }
}
