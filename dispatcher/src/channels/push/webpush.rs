//! Web Push: RFC 8030 delivery to the browser's push service, the payload encrypted for the
//! subscription (RFC 8291, `aes128gcm`, by `web-push-native`), the request signed with the
//! server's VAPID key (RFC 8292: an ES256 JWT for the endpoint's origin, and the public
//! key). A VAPID token is reused for its origin for an hour (it is valid for 12).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_common::api::{DeviceAddress, Priority};
use herald_common::config::WebPushConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::json;

use super::{PushProvider, PushRequest};
use crate::channels::providers::Verdict;
use crate::channels::{ClientOptions, retry_after, snippet, transport_error};

/// RFC 8291: one record of at most 4096 bytes leaves 3993 for the plaintext.
pub const MAX_PLAINTEXT: usize = 3993;
/// How long a push service keeps a message for an offline browser, unless the message says.
const DEFAULT_TTL_S: u64 = 28 * 86_400;
/// A VAPID token is signed for 12 hours and reused for one.
const VAPID_VALID: Duration = Duration::from_secs(12 * 3600);
const VAPID_REUSE: Duration = Duration::from_secs(3600);

pub struct WebPush {
    http: reqwest::Client,
    key: EncodingKey,
    /// base64url of the uncompressed public key: `k=` and `GET /v1/webpush/key`.
    public_key: String,
    subject: String,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl WebPush {
    pub fn new(config: &WebPushConfig, client: &ClientOptions) -> Result<WebPush, String> {
        let secret = super::keys::read_p256(&config.private_key_file)?;
        Ok(WebPush {
            http: client.build(false).map_err(|e| e.to_string())?,
            key: super::keys::es256(&secret)?,
            public_key: public_key_b64(&secret),
            subject: config.subject.clone(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The VAPID JWT for an endpoint's origin.
    fn vapid(&self, audience: &str) -> Result<String, Verdict> {
        if let Ok(tokens) = self.tokens.lock()
            && let Some((t, made)) = tokens.get(audience)
            && made.elapsed() < VAPID_REUSE
        {
            return Ok(t.clone());
        }
        let exp = (herald_common::time::now_ms() / 1000) as u64 + VAPID_VALID.as_secs();
        let claims = json!({ "aud": audience, "exp": exp, "sub": self.subject });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)
            .map_err(|e| Verdict::Failover {
                detail: format!("cannot sign the VAPID token: {e}"),
            })?;
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.len() > 1000 {
                tokens.clear();
            }
            tokens.insert(audience.to_string(), (token.clone(), Instant::now()));
        }
        Ok(token)
    }
}

/// A new VAPID key pair: the private key as PKCS#8 PEM, and the public key as browsers
/// take it (`herald vapid`).
pub fn new_key_pair() -> Result<(String, String), String> {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    Ok((pem.to_string(), public_key_b64(&secret)))
}

/// The public half of a VAPID key as browsers take it (`applicationServerKey`).
pub fn public_key_b64(secret: &p256::SecretKey) -> String {
    URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes())
}

/// `scheme://host[:port]` of an endpoint (the VAPID `aud`).
pub fn origin(endpoint: &str) -> Option<String> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// What the page's service worker receives (`event.data.json()`).
pub fn payload(req: &PushRequest<'_>) -> Vec<u8> {
    let n = req.notification;
    let mut body = json!({ "id": req.message_id });
    if let Some(t) = &n.title {
        body["title"] = json!(t);
    }
    if let Some(b) = &n.body {
        body["body"] = json!(b);
    }
    if let Some(d) = &n.data {
        body["data"] = serde_json::Value::Object(d.clone());
    }
    if let Some(badge) = n.badge {
        body["badge"] = json!(badge);
    }
    body.to_string().into_bytes()
}

/// Classifies a push service's answer (RFC 8030 §5, RFC 8292).
pub fn classify(status: u16, body: &str, headers: &reqwest::header::HeaderMap) -> Verdict {
    let detail = format!("HTTP {status}: {}", snippet(body));
    match status {
        200..=299 => Verdict::Sent {
            id: headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        },
        404 | 410 => Verdict::Gone {
            reason: format!("subscription gone (HTTP {status})"),
        },
        // The VAPID key does not match the one the subscription was made for.
        401 | 403 => Verdict::Failover { detail },
        429 | 500..=599 => Verdict::Transient {
            detail,
            retry_after: retry_after(headers),
        },
        _ => Verdict::permanent(detail),
    }
}

#[async_trait]
impl PushProvider for WebPush {
    async fn send(&self, req: &PushRequest<'_>) -> Verdict {
        let DeviceAddress::Webpush {
            endpoint,
            p256dh,
            auth,
        } = &req.device.address
        else {
            return Verdict::permanent("not a Web Push subscription");
        };
        let (Ok(ua_public), Ok(auth)) = (
            URL_SAFE_NO_PAD
                .decode(p256dh)
                .ok()
                .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
                .ok_or(()),
            URL_SAFE_NO_PAD.decode(auth),
        ) else {
            return Verdict::Gone {
                reason: "the subscription's keys do not decode".into(),
            };
        };
        if auth.len() != 16 {
            return Verdict::Gone {
                reason: "the subscription's auth secret is not 16 bytes".into(),
            };
        }
        let plaintext = payload(req);
        if plaintext.len() > MAX_PLAINTEXT {
            return Verdict::permanent(format!(
                "payload is {} bytes; Web Push takes {MAX_PLAINTEXT}",
                plaintext.len()
            ));
        }
        let mut secret = web_push_native::Auth::default();
        secret.copy_from_slice(&auth);
        let auth = secret;
        let body = match web_push_native::encrypt(plaintext, &ua_public, &auth) {
            Ok(b) => b,
            Err(e) => return Verdict::permanent(format!("cannot encrypt: {e}")),
        };
        let Some(audience) = origin(endpoint) else {
            return Verdict::Gone {
                reason: "the endpoint is not a URL".into(),
            };
        };
        let jwt = match self.vapid(&audience) {
            Ok(t) => t,
            Err(v) => return v,
        };
        let urgency = match req.priority {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        };
        let mut request = self
            .http
            .post(endpoint)
            .header("ttl", req.ttl_s.unwrap_or(DEFAULT_TTL_S).to_string())
            .header("urgency", urgency)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header(
                "authorization",
                format!("vapid t={jwt}, k={}", self.public_key),
            )
            .body(body);
        if let Some(topic) = &req.notification.collapse_key {
            request = request.header("topic", topic.as_str());
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                classify(status, &text, &headers)
            }
            Err(e) => transport_error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn origins_and_answers() {
        assert_eq!(
            origin("https://fcm.googleapis.com/fcm/send/abc").as_deref(),
            Some("https://fcm.googleapis.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:9000/push/1").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        let h = HeaderMap::new();
        assert!(matches!(classify(201, "", &h), Verdict::Sent { .. }));
        assert!(matches!(classify(410, "", &h), Verdict::Gone { .. }));
        assert!(matches!(classify(404, "", &h), Verdict::Gone { .. }));
        assert!(matches!(classify(413, "", &h), Verdict::Permanent { .. }));
        assert!(matches!(classify(429, "", &h), Verdict::Transient { .. }));
    }

    #[test]
    fn the_payload_decrypts_with_the_subscription_key() {
        let ua = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let auth = web_push_native::Auth::from([7u8; 16]);
        let sealed =
            web_push_native::encrypt(b"{\"title\":\"hi\"}".to_vec(), &ua.public_key(), &auth)
                .unwrap();
        let opened = web_push_native::decrypt(sealed, &ua, &auth).unwrap();
        assert_eq!(opened, b"{\"title\":\"hi\"}");
    }
}
