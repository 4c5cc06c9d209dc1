//! SMS through an HTTP provider (reqwest): the `generic` JSON shape or Twilio's form API.
//! With no `HERALD_SMS_URL`, each SMS is appended as a JSON line to `outbox/sms.jsonl`.
//! 2xx = sent; 408, 429 and 5xx = transient; other 4xx = permanent (SPEC §2).

use std::path::PathBuf;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome};
use herald_common::config::{SmsConfig, SmsProvider};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{AttemptResult, Channel, Delivery};

enum Sender {
    Http {
        client: reqwest::Client,
        config: SmsConfig,
    },
    Outbox {
        file: PathBuf,
        lock: Mutex<()>,
    },
}

pub struct Sms {
    sender: Sender,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the SMS HTTP client: {0}")]
pub struct SmsSetupError(String);

/// Classifies a provider's HTTP status.
pub fn classify(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Sent,
        408 | 429 | 500..=599 => Outcome::TransientError,
        _ => Outcome::PermanentError,
    }
}

impl Sms {
    pub fn http(config: SmsConfig) -> Result<Sms, SmsSetupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SmsSetupError(e.to_string()))?;
        Ok(Sms {
            sender: Sender::Http { client, config },
        })
    }

    pub fn outbox(dir: PathBuf) -> Sms {
        Sms {
            sender: Sender::Outbox {
                file: dir.join("sms.jsonl"),
                lock: Mutex::new(()),
            },
        }
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

async fn post(
    client: &reqwest::Client,
    config: &SmsConfig,
    to: &str,
    text: &str,
    id: &str,
) -> AttemptResult {
    let Some(base) = config.url.as_deref() else {
        return AttemptResult::new(Outcome::PermanentError, "no SMS URL".to_string());
    };
    let request = match config.provider {
        SmsProvider::Generic => {
            let mut req = client
                .post(base)
                .header("Idempotency-Key", id)
                .json(&json!({"to": to, "from": config.from, "text": text}));
            if let Some(token) = &config.token {
                req = req.bearer_auth(token.expose());
            }
            req
        }
        SmsProvider::Twilio => {
            let account = config.account.as_deref().unwrap_or_default();
            let url = format!("{base}/2010-04-01/Accounts/{account}/Messages.json");
            let from = config.from.as_deref().unwrap_or_default();
            client
                .post(url)
                .basic_auth(account, config.token.as_ref().map(|t| t.expose()))
                .form(&[("To", to), ("From", from), ("Body", text)])
        }
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let outcome = classify(status);
            let mut detail = format!("HTTP {}", status.as_u16());
            if let Some(sid) = provider_id(&body) {
                detail.push_str(&format!(" id={sid}"));
            } else if outcome != Outcome::Sent && !body.is_empty() {
                detail.push_str(&format!(": {}", body.chars().take(200).collect::<String>()));
            }
            AttemptResult::new(outcome, detail)
        }
        Err(e) => AttemptResult::new(
            Outcome::TransientError,
            if e.is_timeout() {
                "provider timed out".to_string()
            } else {
                format!("provider unreachable: {e}")
            },
        ),
    }
}

/// The provider's message id (`sid` for Twilio, `id` for most others), if it gave one.
fn provider_id(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    ["sid", "id", "message_id"]
        .iter()
        .find_map(|k| v.get(k).and_then(|s| s.as_str()).map(str::to_string))
}

#[async_trait]
impl Channel for Sms {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn attempt(&self, d: &Delivery<'_>) -> AttemptResult {
        let Some(to) = d.phone() else {
            return AttemptResult::new(Outcome::Skipped, "no phone number".to_string());
        };
        let text = Sms::text(d);
        match &self.sender {
            Sender::Http { client, config } => {
                post(client, config, to, &text, &d.delivery_id()).await
            }
            Sender::Outbox { file, lock } => {
                let line = json!({"id": d.delivery_id(), "to": to, "text": text,
                    "at": herald_common::time::rfc3339(herald_common::time::now_ms())});
                let _guard = lock.lock().await;
                match append_line(file, &line.to_string()).await {
                    Ok(()) => {
                        AttemptResult::new(Outcome::Sent, format!("filed {}", file.display()))
                    }
                    Err(e) => AttemptResult::new(Outcome::TransientError, format!("outbox: {e}")),
                }
            }
        }
    }
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

    #[test]
    fn statuses_classify_as_the_spec_says() {
        for (code, outcome) in [
            (200, Outcome::Sent),
            (201, Outcome::Sent),
            (408, Outcome::TransientError),
            (429, Outcome::TransientError),
            (500, Outcome::TransientError),
            (503, Outcome::TransientError),
            (400, Outcome::PermanentError),
            (401, Outcome::PermanentError),
            (404, Outcome::PermanentError),
        ] {
            assert_eq!(
                classify(StatusCode::from_u16(code).unwrap()),
                outcome,
                "{code}"
            );
        }
    }
}
