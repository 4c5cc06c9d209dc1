//! Email through SMTP relays (lettre's pooled async transport: `smtp://`, STARTTLS,
//! `smtps://`), with failover between them ([`Providers`]), or, with no relay configured, as
//! `.eml` files in the outbox directory.
//!
//! Each mail carries `Message-ID: <message-id.recipient-index@herald>`, stable across
//! retries and restarts, so a receiver can drop a copy sent at the instant of a crash.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::stages::templates::text_of_html;
use crate::stages::unsubscribe::Unsubscribe;
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::providers::{Providers, Registry, Verdict};
use super::{AttemptResult, Channel, Delivery};

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

/// One relay: where it sends and as whom.
pub struct Relay {
    from: Mailbox,
    transport: Transport,
}

pub struct Email {
    providers: Providers<Relay>,
    /// Links for mail of non-critical categories (when a public URL is configured).
    unsubscribe: Option<Unsubscribe>,
    critical: Vec<String>,
}

/// `List-Unsubscribe: <https://…>` (RFC 2369).
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("email provider '{0}': the sender '{1}' is not a valid address: {2}")]
    From(String, String, String),
    #[error("email provider '{0}': the SMTP URL is not usable: {1}")]
    Url(String, String),
}

/// lettre spells STARTTLS `tls=required`; Herald's docs say `tls=starttls`. Accept both.
fn lettre_url(url: &str) -> String {
    url.replace("tls=starttls", "tls=required")
}

impl Relay {
    fn smtp(url: &str, from: Mailbox, timeout: Duration) -> Result<Relay, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url))
            .map_err(|e| e.to_string())?
            .timeout(Some(timeout))
            .pool_config(
                PoolConfig::new()
                    .max_size(16)
                    .idle_timeout(Duration::from_secs(30)),
            )
            .build();
        Ok(Relay {
            from,
            transport: Transport::Smtp(transport),
        })
    }

    fn build(
        &self,
        d: &Delivery<'_>,
        to: Mailbox,
        unsubscribe: Option<&str>,
    ) -> Result<Message, String> {
        let m = d.message;
        let custom = m.email.as_ref();
        let subject = custom
            .and_then(|e| e.subject.clone())
            .or_else(|| m.title.clone())
            .unwrap_or_else(|| "Notification".to_string());
        // The text part: the message's own, else the HTML's text, else the body.
        let text = custom
            .and_then(|e| e.text.clone())
            .or_else(|| custom.and_then(|e| e.html.as_deref()).map(text_of_html))
            .or_else(|| m.body.clone())
            .or_else(|| m.title.clone())
            .unwrap_or_default();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@herald>", d.delivery_id())));
        if let Some(link) = unsubscribe {
            // RFC 8058 one-click: mail clients POST `List-Unsubscribe=One-Click` to it.
            builder = builder
                .header(ListUnsubscribe(format!("<{link}>")))
                .header(ListUnsubscribePost);
        }
        let built = match custom.and_then(|e| e.html.clone()) {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
            None => builder.header(ContentType::TEXT_PLAIN).body(text),
        };
        built.map_err(|e| e.to_string())
    }

    async fn send(&self, d: &Delivery<'_>, to: &Mailbox, unsubscribe: Option<&str>) -> Verdict {
        let message = match self.build(d, to.clone(), unsubscribe) {
            Ok(m) => m,
            Err(e) => return Verdict::permanent(e),
        };
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => {
                    let code = response.code().to_string();
                    let text = response.message().next().unwrap_or("").to_string();
                    Verdict::Sent {
                        id: Some(format!("{code} {text}").trim().to_string()),
                    }
                }
                Err(e) => classify(&e),
            },
            Transport::Outbox(dir) => {
                match file_mail(dir, &d.delivery_id(), &message.formatted()).await {
                    Ok(path) => Verdict::Sent {
                        id: Some(format!("filed {}", path.display())),
                    },
                    Err(e) => Verdict::transient(format!("outbox: {e}")),
                }
            }
        }
    }
}

impl Email {
    /// Adds unsubscribe links to mail of categories not in `critical`.
    pub fn with_unsubscribe(mut self, links: Option<Unsubscribe>, critical: &[String]) -> Self {
        self.unsubscribe = links;
        self.critical = critical.to_vec();
        self
    }

    /// Checks the relays' senders and URLs without building transports (which need a
    /// running runtime): for `herald check-config` and start-up.
    pub fn check(
        configs: &[herald_common::config::EmailProviderConfig],
    ) -> Result<(), EmailSetupError> {
        for c in configs {
            parse_from(&c.from).map_err(|e| {
                EmailSetupError::From(c.id.name.clone(), c.from.clone(), e.to_string())
            })?;
            if let Some(url) = &c.url {
                AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url.expose()))
                    .map_err(|e| EmailSetupError::Url(c.id.name.clone(), e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The configured relays, in order; one with no URL files mail in `outbox`.
    pub fn new(
        configs: &[herald_common::config::EmailProviderConfig],
        outbox: PathBuf,
        timeout: Duration,
        circuit: herald_common::config::CircuitConfig,
        registry: &Registry,
    ) -> Result<Email, EmailSetupError> {
        let mut list = Vec::new();
        for c in configs {
            let from = parse_from(&c.from).map_err(|e| {
                EmailSetupError::From(c.id.name.clone(), c.from.clone(), e.to_string())
            })?;
            let (kind, relay) = match &c.url {
                Some(url) => (
                    "smtp",
                    Relay::smtp(url.expose(), from, timeout)
                        .map_err(|e| EmailSetupError::Url(c.id.name.clone(), e))?,
                ),
                None => (
                    "outbox",
                    Relay {
                        from,
                        transport: Transport::Outbox(outbox.clone()),
                    },
                ),
            };
            list.push((c.id.clone(), kind, relay));
        }
        Ok(Email {
            providers: Providers::new(ChannelKind::Email, list, circuit, registry),
            unsubscribe: None,
            critical: Vec::new(),
        })
    }
}

fn parse_from(from: &str) -> Result<Mailbox, lettre::address::AddressError> {
    from.parse()
}

/// An SMTP failure: a 5xx refusal of the message is permanent, except the relay's own
/// authentication (530, 535: another relay may take it); 4xx replies, timeouts, refused or
/// dropped connections and TLS trouble are worth trying again (or on another relay).
fn classify(e: &lettre::transport::smtp::Error) -> Verdict {
    let detail = format!("smtp: {e}");
    let code = e.status().map(|c| c.to_string());
    match code.as_deref() {
        Some("530" | "535" | "534" | "538") => Verdict::Failover { detail },
        _ if e.is_permanent() => Verdict::permanent(detail),
        _ => Verdict::transient(detail),
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
        let link = match (&self.unsubscribe, d.message.category.as_deref()) {
            (Some(u), Some(category)) if !self.critical.iter().any(|c| c == category) => {
                Some(u.link(&d.recipient.user_id, category))
            }
            _ => None,
        };
        let routed = self
            .providers
            .send(|relay| relay.send(d, &to, link.as_deref()))
            .await;
        AttemptResult::routed(routed)
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
