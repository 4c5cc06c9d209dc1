//! Email through SMTP relays (lettre's pooled async transport: `smtp://`, STARTTLS,
//! `smtps://`), with failover between them ([`Providers`]), or, with no relay configured, as
//! `.eml` files in the outbox directory.
//!
//! Each mail carries `Message-ID: <message-id.recipient-index@herald>`, stable across
//! retries and restarts, so a receiver can drop a copy sent at the instant of a crash.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome};
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::stages::templates::text_of_html;
use crate::stages::unsubscribe::Unsubscribe;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::providers::{Providers, Registry, Verdict};
use super::{AttemptResult, Channel, Delivery};

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

/// One relay: where it sends, as whom, and how its mail is signed.
pub struct Relay {
    from: Mailbox,
    transport: Transport,
    dkim: Option<Arc<Signers>>,
}

/// A relay's DKIM signers: for single-part mail, and for `multipart/alternative` (whose
/// `Content-Type` lettre writes only when it formats the mail, after signing, so it is not
/// among the signed headers there).
struct Signers {
    single: DkimConfig,
    multipart: DkimConfig,
}

/// How relays' connections are verified and their mail signed.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// PEM roots trusted beside the built-in (Mozilla) ones (`HERALD_TLS_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    pub dkim: Option<herald_common::config::DkimSettings>,
}

/// The headers a signature covers: what receivers show and what RFC 8058 requires be
/// signed (`List-Unsubscribe`, `List-Unsubscribe-Post`). One not in a mail is signed as
/// absent, so it cannot be added on the way.
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The DKIM key as lettre takes it: PKCS#1 PEM (a PKCS#8 `BEGIN PRIVATE KEY` file, what
/// `openssl genpkey` writes, is converted).
fn dkim_key(pem: &str) -> Result<DkimSigningKey, String> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let pkcs1 = if pem.contains("BEGIN PRIVATE KEY") {
        rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| format!("not an RSA private key: {e}"))?
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| e.to_string())?
            .to_string()
    } else {
        pem.to_string()
    };
    DkimSigningKey::new(&pkcs1, DkimSigningAlgorithm::Rsa)
        .map_err(|e| format!("not an RSA private key in PEM: {e}"))
}

fn signers(
    settings: &herald_common::config::DkimSettings,
    key_pem: &str,
    from: &Mailbox,
) -> Result<Signers, String> {
    let domain = settings
        .domain
        .clone()
        .unwrap_or_else(|| from.email.domain().to_ascii_lowercase());
    let config = |multipart: bool| -> Result<DkimConfig, String> {
        Ok(DkimConfig::new(
            settings.selector.clone(),
            domain.clone(),
            dkim_key(key_pem)?,
            SIGNED
                .iter()
                .filter(|h| !(multipart && **h == "Content-Type"))
                .map(|h| HeaderName::new_from_ascii_str(h))
                .collect(),
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        ))
    };
    Ok(Signers {
        single: config(false)?,
        multipart: config(true)?,
    })
}

/// How a relay URL asks for TLS, and the host its certificate must name.
fn tls_of(url: &str, roots: &[u8]) -> Result<Option<Tls>, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let mode = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.to_string());
    let params = || {
        let certificate =
            Certificate::from_pem(roots).map_err(|e| format!("{}: {e}", "HERALD_TLS_CA_FILE"))?;
        TlsParameters::builder(host.clone())
            .add_root_certificate(certificate)
            .build_rustls()
            .map_err(|e| e.to_string())
    };
    Ok(match (parsed.scheme(), mode.as_deref()) {
        ("smtps", _) => Some(Tls::Wrapper(params()?)),
        (_, Some("required" | "starttls")) => Some(Tls::Required(params()?)),
        (_, Some("opportunistic")) => Some(Tls::Opportunistic(params()?)),
        _ => None,
    })
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
    #[error("HERALD_TLS_CA_FILE: {0}")]
    CaFile(String),
    #[error("HERALD_DKIM_KEY_FILE: {0}")]
    Dkim(String),
}

/// lettre spells STARTTLS `tls=required`; Herald's docs say `tls=starttls`. Accept both.
fn lettre_url(url: &str) -> String {
    url.replace("tls=starttls", "tls=required")
}

impl Relay {
    fn smtp(
        url: &str,
        from: Mailbox,
        timeout: Duration,
        roots: Option<&[u8]>,
    ) -> Result<Relay, String> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url))
            .map_err(|e| e.to_string())?;
        // Extra roots replace lettre's own TLS set-up of the same mode (its roots stay).
        if let Some(roots) = roots
            && let Some(tls) = tls_of(url, roots)?
        {
            builder = builder.tls(tls);
        }
        let transport = builder
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
            dkim: None,
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
        let html = custom.and_then(|e| e.html.clone());
        let multipart = html.is_some();
        let built = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(text, html)),
            None => builder.header(ContentType::TEXT_PLAIN).body(text),
        };
        let mut message = built.map_err(|e| e.to_string())?;
        if let Some(signers) = &self.dkim {
            message.sign(if multipart {
                &signers.multipart
            } else {
                &signers.single
            });
        }
        Ok(message)
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
        security: &Security,
    ) -> Result<(), EmailSetupError> {
        let (roots, key) = security.load()?;
        for c in configs {
            let from = parse_from(&c.from).map_err(|e| {
                EmailSetupError::From(c.id.name.clone(), c.from.clone(), e.to_string())
            })?;
            if let Some(url) = &c.url {
                AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url(url.expose()))
                    .map_err(|e| EmailSetupError::Url(c.id.name.clone(), e.to_string()))?;
                if let Some(roots) = &roots {
                    tls_of(url.expose(), roots)
                        .map_err(|e| EmailSetupError::Url(c.id.name.clone(), e))?;
                }
            }
            if let (Some(settings), Some(pem)) = (&security.dkim, &key) {
                signers(settings, pem, &from).map_err(EmailSetupError::Dkim)?;
            }
        }
        Ok(())
    }

    /// The configured relays, in order; one with no URL files mail in `outbox`.
    pub fn new(
        configs: &[herald_common::config::EmailProviderConfig],
        outbox: PathBuf,
        timeout: Duration,
        security: &Security,
        circuit: herald_common::config::CircuitConfig,
        registry: &Registry,
    ) -> Result<Email, EmailSetupError> {
        let (roots, key) = security.load()?;
        let mut list = Vec::new();
        for c in configs {
            let from = parse_from(&c.from).map_err(|e| {
                EmailSetupError::From(c.id.name.clone(), c.from.clone(), e.to_string())
            })?;
            let dkim = match (&security.dkim, &key) {
                (Some(settings), Some(pem)) => Some(Arc::new(
                    signers(settings, pem, &from).map_err(EmailSetupError::Dkim)?,
                )),
                _ => None,
            };
            let (kind, mut relay) = match &c.url {
                Some(url) => (
                    "smtp",
                    Relay::smtp(url.expose(), from, timeout, roots.as_deref())
                        .map_err(|e| EmailSetupError::Url(c.id.name.clone(), e))?,
                ),
                None => (
                    "outbox",
                    Relay {
                        from,
                        transport: Transport::Outbox(outbox.clone()),
                        dkim: None,
                    },
                ),
            };
            relay.dkim = dkim;
            list.push((c.id.clone(), kind, relay));
        }
        Ok(Email {
            providers: Providers::new(ChannelKind::Email, list, circuit, registry),
            unsubscribe: None,
            critical: Vec::new(),
        })
    }
}

impl Security {
    pub fn of(config: &herald_common::config::Config) -> Security {
        Security {
            ca_file: config.tls_ca_file.clone(),
            dkim: config.dkim.clone(),
        }
    }

    /// The extra roots and the DKIM key, read from their files.
    fn load(&self) -> Result<(Option<Vec<u8>>, Option<String>), EmailSetupError> {
        let roots = match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    EmailSetupError::CaFile(format!("cannot read {}: {e}", path.display()))
                })?;
                Certificate::from_pem(&pem)
                    .map_err(|e| EmailSetupError::CaFile(format!("{}: {e}", path.display())))?;
                Some(pem)
            }
            None => None,
        };
        let key = match &self.dkim {
            Some(d) => Some(std::fs::read_to_string(&d.key_file).map_err(|e| {
                EmailSetupError::Dkim(format!("cannot read {}: {e}", d.key_file.display()))
            })?),
            None => None,
        };
        Ok((roots, key))
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
        // The relay offers no AUTH mechanism Herald speaks: this relay cannot take it.
        None if e.is_client() && detail.contains("authentication mechanism") => {
            Verdict::Failover { detail }
        }
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
