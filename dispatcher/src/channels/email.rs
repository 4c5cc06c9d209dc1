//! Email through SMTP (lettre's pooled async transport: `smtp://`, STARTTLS, `smtps://`),
//! or, with no `HERALD_SMTP_URL`, as `.eml` files in the outbox directory.
//!
//! Each mail carries `Message-ID: <message-id.recipient-index@herald>`, stable across
//! retries and restarts, so a receiver can drop a copy sent at the instant of a crash.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{AttemptResult, Channel, Delivery};

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

pub struct Email {
    from: Mailbox,
    transport: Transport,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("HERALD_SMTP_FROM '{0}' is not a valid address: {1}")]
    From(String, String),
    #[error("HERALD_SMTP_URL is not usable: {0}")]
    Url(String),
}

/// lettre spells STARTTLS `tls=required`; Herald's docs say `tls=starttls`. Accept both.
fn lettre_url(url: &str) -> String {
    url.replace("tls=starttls", "tls=required")
}

impl Email {
    pub fn smtp(url: &str, from: &str, timeout: Duration) -> Result<Email, EmailSetupError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url))
            .map_err(|e| EmailSetupError::Url(e.to_string()))?
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(16)
                    .idle_timeout(Duration::from_secs(30)),
            )
            .build();
        Ok(Email {
            from: parse_from(from)?,
            transport: Transport::Smtp(transport),
        })
    }

    pub fn outbox(dir: PathBuf, from: &str) -> Result<Email, EmailSetupError> {
        Ok(Email {
            from: parse_from(from)?,
            transport: Transport::Outbox(dir),
        })
    }

    fn build(&self, d: &Delivery<'_>, to: Mailbox) -> Result<Message, String> {
        let m = d.message;
        let custom = m.email.as_ref();
        let subject = custom
            .and_then(|e| e.subject.clone())
            .or_else(|| m.title.clone())
            .unwrap_or_else(|| "Notification".to_string());
        let text = custom
            .and_then(|e| e.text.clone())
            .or_else(|| m.body.clone())
            .or_else(|| m.title.clone())
            .unwrap_or_default();
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@herald>", d.delivery_id())));
        let built = match custom.and_then(|e| e.html.clone()) {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
            None => builder.header(ContentType::TEXT_PLAIN).body(text),
        };
        built.map_err(|e| e.to_string())
    }
}

fn parse_from(from: &str) -> Result<Mailbox, EmailSetupError> {
    from.parse().map_err(|e: lettre::address::AddressError| {
        EmailSetupError::From(from.into(), e.to_string())
    })
}

fn classify(e: &lettre::transport::smtp::Error) -> Outcome {
    if e.is_permanent() {
        Outcome::PermanentError
    } else {
        // 4xx replies, timeouts, refused or dropped connections, TLS trouble: try again.
        Outcome::TransientError
    }
}

#[async_trait]
impl Channel for Email {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn attempt(&self, d: &Delivery<'_>) -> AttemptResult {
        let Some(address) = d.email() else {
            return AttemptResult::new(Outcome::Skipped, "no email address".to_string());
        };
        let to: Mailbox = match address.parse() {
            Ok(to) => to,
            Err(e) => {
                return AttemptResult::new(
                    Outcome::PermanentError,
                    format!("invalid address '{address}': {e}"),
                );
            }
        };
        let message = match self.build(d, to) {
            Ok(m) => m,
            Err(e) => return AttemptResult::new(Outcome::PermanentError, e),
        };
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => {
                    let code = response.code().to_string();
                    let text = response.message().next().unwrap_or("").to_string();
                    AttemptResult::new(Outcome::Sent, format!("{code} {text}").trim().to_string())
                }
                Err(e) => AttemptResult::new(classify(&e), format!("smtp: {e}")),
            },
            Transport::Outbox(dir) => match file_mail(dir, &d.delivery_id(), &message.formatted())
                .await
            {
                Ok(path) => AttemptResult::new(Outcome::Sent, format!("filed {}", path.display())),
                Err(e) => AttemptResult::new(Outcome::TransientError, format!("outbox: {e}")),
            },
        }
    }
}

/// Writes `<dir>/<id>.eml` atomically (temp file, then rename).
async fn file_mail(dir: &std::path::Path, id: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{id}.eml"));
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttls_is_spelled_for_lettre() {
        assert_eq!(
            lettre_url("smtp://u:p@h:587?tls=starttls"),
            "smtp://u:p@h:587?tls=required"
        );
        assert_eq!(lettre_url("smtps://h:465"), "smtps://h:465");
    }
}
