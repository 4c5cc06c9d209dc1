//! Apple Push Notification service over HTTP/2 with token auth: `POST {base}/3/device/{token}`
//! with an ES256 provider token (JWT: `kid` = key id, `iss` = team id, `iat`) reused for 50
//! minutes — Apple refuses tokens older than an hour and answers
//! `TooManyProviderTokenUpdates` to ones renewed more often than every 20 — over one pooled
//! HTTP/2 connection carrying many streams. `http://` bases speak HTTP/2 cleartext with prior
//! knowledge (for tests and proxies).

use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald_common::api::{DeviceAddress, Priority};
use herald_common::config::ApnsConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{PushProvider, PushRequest};
use crate::channels::providers::Verdict;
use crate::channels::{ClientOptions, retry_after, snippet, transport_error};

/// How long one provider token is used.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);

pub struct Apns {
    http: reqwest::Client,
    base: String,
    key_id: String,
    team_id: String,
    key: EncodingKey,
    topic: Option<String>,
    token: RwLock<Option<(String, Instant)>>,
    name: String,
}

impl Apns {
    pub fn new(config: &ApnsConfig, client: &ClientOptions) -> Result<Apns, String> {
        let key = super::keys::read_p256(&config.key_file)?;
        let http = client
            .build(config.url.starts_with("http://"))
            .map_err(|e| e.to_string())?;
        Ok(Apns {
            http,
            base: config.url.clone(),
            key_id: config.key_id.clone(),
            team_id: config.team_id.clone(),
            key: super::keys::es256(&key)?,
            topic: config.topic.clone(),
            token: RwLock::new(None),
            name: config.id.name.clone(),
        })
    }

    /// The provider token: the current one while it is younger than 50 minutes.
    fn provider_token(&self, renew: bool) -> Result<String, Verdict> {
        if !renew
            && let Ok(t) = self.token.read()
            && let Some((token, made)) = t.as_ref()
            && made.elapsed() < TOKEN_LIFETIME
        {
            return Ok(token.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = json!({ "iss": self.team_id, "iat": herald_common::time::now_ms() / 1000 });
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| Verdict::Failover {
                detail: format!("cannot sign the provider token: {e}"),
            })?;
        metrics::counter!("herald_push_token_mints_total", "platform" => "apns", "provider" => self.name.clone())
            .increment(1);
        if let Ok(mut slot) = self.token.write() {
            *slot = Some((token.clone(), Instant::now()));
        }
        Ok(token)
    }
}

/// The `aps` payload: the alert, badge and sound, with the message's data beside `aps`.
pub fn payload(req: &PushRequest<'_>) -> Value {
    let n = req.notification;
    let mut aps = serde_json::Map::new();
    let mut alert = serde_json::Map::new();
    if let Some(t) = &n.title {
        alert.insert("title".into(), json!(t));
    }
    if let Some(b) = &n.body {
        alert.insert("body".into(), json!(b));
    }
    if !alert.is_empty() {
        aps.insert("alert".into(), Value::Object(alert));
    } else {
        aps.insert("content-available".into(), json!(1));
    }
    if let Some(badge) = n.badge {
        aps.insert("badge".into(), json!(badge));
    }
    if let Some(sound) = &n.sound {
        aps.insert("sound".into(), json!(sound));
    }
    let mut body = serde_json::Map::new();
    for (k, v) in n.data.iter().flatten() {
        if k != "aps" {
            body.insert(k.clone(), v.clone());
        }
    }
    body.insert("aps".into(), Value::Object(aps));
    Value::Object(body)
}

/// Classifies an APNs error answer (`{"reason"}`).
pub fn classify(status: u16, body: &str, headers: &reqwest::header::HeaderMap) -> Verdict {
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| snippet(body));
    let detail = format!("HTTP {status} {reason}");
    match (status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Verdict::Gone { reason },
        (403, "ExpiredProviderToken") => Verdict::transient(detail),
        (403, _) => Verdict::Failover { detail },
        (429 | 500..=599, _) => Verdict::Transient {
            detail,
            retry_after: retry_after(headers),
        },
        _ => Verdict::permanent(detail),
    }
}

#[async_trait]
impl PushProvider for Apns {
    async fn send(&self, req: &PushRequest<'_>) -> Verdict {
        let DeviceAddress::Apns { token, topic } = &req.device.address else {
            return Verdict::permanent("not an APNs device");
        };
        let Some(topic) = topic.as_ref().or(self.topic.as_ref()) else {
            return Verdict::permanent(
                "no apns-topic: register the device with a topic or set HERALD_APNS_TOPIC",
            );
        };
        let body = payload(req);
        let alert = body["aps"].get("alert").is_some();
        // A background push must go with priority 5.
        let priority = if alert && req.priority == Priority::High {
            "10"
        } else {
            "5"
        };
        let url = format!("{}/3/device/{token}", self.base);
        // An expired provider token (403 ExpiredProviderToken) is renewed and tried once.
        for renew in [false, true] {
            let jwt = match self.provider_token(renew) {
                Ok(t) => t,
                Err(v) => return v,
            };
            let mut request = self
                .http
                .post(&url)
                .header("authorization", format!("bearer {jwt}"))
                .header("apns-topic", topic.as_str())
                .header("apns-push-type", if alert { "alert" } else { "background" })
                .header("apns-priority", priority)
                .header("apns-id", uuid_of(req.message_id, &req.device.device_id))
                .json(&body);
            if let Some(ttl) = req.ttl_s {
                let expires = herald_common::time::now_ms() / 1000 + ttl as i64;
                request = request.header("apns-expiration", expires.to_string());
            }
            if let Some(key) = &req.notification.collapse_key {
                request = request.header("apns-collapse-id", key.as_str());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => return transport_error(e),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            if status == 200 {
                let id = headers
                    .get("apns-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                return Verdict::Sent { id };
            }
            let text = response.text().await.unwrap_or_default();
            let verdict = classify(status, &text, &headers);
            if !renew && status == 403 && text.contains("ExpiredProviderToken") {
                continue;
            }
            return verdict;
        }
        Verdict::transient("APNs refused a fresh provider token")
    }
}

/// A stable UUID for one device's notification (APNs echoes `apns-id`; a repeat after a
/// crash carries the same one).
fn uuid_of(message_id: &str, device_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{message_id}/{device_id}").as_bytes());
    let hex = crate::channels::signing::hex(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    #[test]
    fn answers_classify_as_apple_documents() {
        let h = HeaderMap::new();
        let r = |reason: &str| format!("{{\"reason\":\"{reason}\"}}");
        assert!(matches!(
            classify(410, &r("Unregistered"), &h),
            Verdict::Gone { .. }
        ));
        assert!(matches!(
            classify(400, &r("BadDeviceToken"), &h),
            Verdict::Gone { .. }
        ));
        assert!(matches!(
            classify(400, &r("BadTopic"), &h),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            classify(429, &r("TooManyRequests"), &h),
            Verdict::Transient { .. }
        ));
        assert!(matches!(
            classify(503, &r("ServiceUnavailable"), &h),
            Verdict::Transient { .. }
        ));
        assert!(matches!(
            classify(403, &r("InvalidProviderToken"), &h),
            Verdict::Failover { .. }
        ));
        assert!(matches!(
            classify(413, &r("PayloadTooLarge"), &h),
            Verdict::Permanent { .. }
        ));
        assert_eq!(uuid_of("m", "d").len(), 36);
        assert_eq!(uuid_of("m", "d"), uuid_of("m", "d"));
    }
}
