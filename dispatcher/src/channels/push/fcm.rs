//! Firebase Cloud Messaging, HTTP v1: `POST {base}/v1/projects/{project}/messages:send`
//! with an OAuth2 access token from the service account's JWT-bearer grant. The token is
//! minted once and reused until five minutes before it expires (one mint an hour, not one
//! per send), by one minter at a time.
//!
//! Errors are classified on `details[].errorCode` (not on `status`): `UNREGISTERED` and a
//! token FCM calls invalid mean the device is gone; `QUOTA_EXCEEDED` waits a minute or
//! more; `UNAVAILABLE`/`INTERNAL` are transient; a 401 refreshes the token and tries once
//! more.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald_common::api::Priority;
use herald_common::config::FcmConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{PushProvider, PushRequest, string_values, token_of};
use crate::channels::providers::Verdict;
use crate::channels::{ClientOptions, retry_after, snippet, transport_error};

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// FCM asks for at least a minute of back-off on `QUOTA_EXCEEDED`.
const QUOTA_WAIT: Duration = Duration::from_secs(60);

/// The fields of a service-account key file that Herald uses.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
    project_id: String,
}

#[derive(Clone)]
struct Token {
    value: String,
    renew_at: Instant,
}

pub struct Fcm {
    http: reqwest::Client,
    send_url: String,
    client_email: String,
    key_id: Option<String>,
    key: EncodingKey,
    token_uri: String,
    token: RwLock<Option<Token>>,
    /// One mint at a time: senders that find the token stale wait for it.
    minting: tokio::sync::Mutex<()>,
    name: String,
}

impl Fcm {
    /// Reads the service-account file and builds the client (no request is made).
    pub fn new(config: &FcmConfig, client: &ClientOptions) -> Result<Fcm, String> {
        let path = &config.credentials_file;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a service-account key file: {e}", path.display()))?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|e| {
            format!(
                "{}: private_key is not an RSA key in PEM: {e}",
                path.display()
            )
        })?;
        herald_common::config::check_http_url(&account.token_uri)
            .map_err(|e| format!("{}: token_uri {e}", path.display()))?;
        let http = client.build(false).map_err(|e| e.to_string())?;
        Ok(Fcm {
            http,
            send_url: format!(
                "{}/v1/projects/{}/messages:send",
                config.url, account.project_id
            ),
            client_email: account.client_email,
            key_id: account.private_key_id,
            key,
            token_uri: account.token_uri,
            token: RwLock::new(None),
            minting: tokio::sync::Mutex::new(()),
            name: config.id.name.clone(),
        })
    }

    fn current(&self) -> Option<String> {
        let token = self.token.read().ok()?;
        token
            .as_ref()
            .filter(|t| Instant::now() < t.renew_at)
            .map(|t| t.value.clone())
    }

    /// A valid access token: the cached one, or a new one (minted by one caller).
    async fn access_token(&self, force: bool) -> Result<String, Verdict> {
        if !force && let Some(t) = self.current() {
            return Ok(t);
        }
        let _minting = self.minting.lock().await;
        if !force && let Some(t) = self.current() {
            return Ok(t);
        }
        let token = self.mint().await?;
        if let Ok(mut slot) = self.token.write() {
            *slot = Some(token.clone());
        }
        Ok(token.value)
    }

    async fn mint(&self) -> Result<Token, Verdict> {
        let now = herald_common::time::now_ms() / 1000;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let assertion =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| Verdict::Failover {
                detail: format!("cannot sign the token request: {e}"),
            })?;
        let response = self
            .http
            .post(&self.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        #[derive(Deserialize)]
        struct Granted {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        match serde_json::from_str::<Granted>(&body) {
            Ok(g) if status.is_success() => {
                metrics::counter!("herald_push_token_mints_total", "platform" => "fcm", "provider" => self.name.clone())
                    .increment(1);
                let lifetime = Duration::from_secs(g.expires_in.unwrap_or(3600));
                Ok(Token {
                    value: g.access_token,
                    renew_at: Instant::now() + lifetime.saturating_sub(RENEW_BEFORE),
                })
            }
            _ if status.is_server_error() => Err(Verdict::transient(format!(
                "token endpoint: HTTP {}",
                status.as_u16()
            ))),
            _ => Err(Verdict::Failover {
                detail: format!(
                    "token endpoint refused the service account (HTTP {}): {}",
                    status.as_u16(),
                    snippet(&body)
                ),
            }),
        }
    }
}

/// The FCM v1 message for one device (SPEC §7: priority, TTL, collapse key).
pub fn message(req: &PushRequest<'_>, token: &str) -> Value {
    let n = req.notification;
    let high = req.priority == Priority::High;
    let mut notification = serde_json::Map::new();
    if let Some(t) = &n.title {
        notification.insert("title".into(), json!(t));
    }
    if let Some(b) = &n.body {
        notification.insert("body".into(), json!(b));
    }
    let mut android = json!({ "priority": if high { "HIGH" } else { "NORMAL" } });
    if let Some(ttl) = req.ttl_s {
        android["ttl"] = json!(format!("{}s", ttl.min(2_419_200)));
    }
    if let Some(key) = &n.collapse_key {
        android["collapse_key"] = json!(key);
    }
    let mut android_notification = serde_json::Map::new();
    if let Some(badge) = n.badge {
        android_notification.insert("notification_count".into(), json!(badge));
    }
    if let Some(sound) = &n.sound {
        android_notification.insert("sound".into(), json!(sound));
    }
    if !android_notification.is_empty() {
        android["notification"] = Value::Object(android_notification);
    }
    let mut aps = serde_json::Map::new();
    if let Some(badge) = n.badge {
        aps.insert("badge".into(), json!(badge));
    }
    if let Some(sound) = &n.sound {
        aps.insert("sound".into(), json!(sound));
    }
    let mut apns_headers = json!({ "apns-priority": if high { "10" } else { "5" } });
    if let Some(key) = &n.collapse_key {
        apns_headers["apns-collapse-id"] = json!(key);
    }
    let mut msg = json!({
        "token": token,
        "data": string_values(n.data.as_ref()),
        "android": android,
        "apns": { "headers": apns_headers, "payload": { "aps": aps } },
        "webpush": { "headers": { "Urgency": if high { "high" } else { "normal" } } },
    });
    if !notification.is_empty() {
        msg["notification"] = Value::Object(notification);
    }
    json!({ "message": msg })
}

/// Classifies an FCM error answer.
pub fn classify(status: u16, body: &str, headers: &reqwest::header::HeaderMap) -> Verdict {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let Some(error) = error else {
        // Not FCM's JSON (a 502 from a proxy arrives as an HTML page).
        let detail = format!("HTTP {status}: {}", snippet(body));
        return if status >= 500 || status == 429 {
            Verdict::Transient {
                detail,
                retry_after: retry_after(headers),
            }
        } else {
            Verdict::permanent(detail)
        };
    };
    let details = error.get("details").and_then(Value::as_array);
    let code = details
        .and_then(|d| {
            d.iter()
                .find_map(|x| x.get("errorCode").and_then(Value::as_str))
        })
        .or_else(|| error.get("status").and_then(Value::as_str))
        .unwrap_or("UNKNOWN");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let detail = format!("{code}: {message}");
    let names_token = details.is_some_and(|d| {
        d.iter().any(|x| {
            x.get("fieldViolations")
                .and_then(Value::as_array)
                .is_some_and(|v| {
                    v.iter()
                        .any(|f| f.get("field").and_then(Value::as_str) == Some("message.token"))
                })
        })
    }) || message.contains("not a valid FCM registration token");
    match code {
        "UNREGISTERED" | "SENDER_ID_MISMATCH" => Verdict::Gone {
            reason: code.to_string(),
        },
        "INVALID_ARGUMENT" if names_token => Verdict::Gone {
            reason: "invalid registration token".into(),
        },
        "QUOTA_EXCEEDED" => Verdict::Transient {
            detail,
            retry_after: Some(retry_after(headers).unwrap_or(QUOTA_WAIT).max(QUOTA_WAIT)),
        },
        "UNAVAILABLE" | "INTERNAL" => Verdict::Transient {
            detail,
            retry_after: retry_after(headers),
        },
        // The APNs or web-push credential in Firebase is wrong: configuration, keep the token.
        "THIRD_PARTY_AUTH_ERROR" | "PERMISSION_DENIED" | "UNAUTHENTICATED" => {
            Verdict::Failover { detail }
        }
        _ if status >= 500 => Verdict::transient(detail),
        _ => Verdict::permanent(detail),
    }
}

#[async_trait]
impl PushProvider for Fcm {
    async fn send(&self, req: &PushRequest<'_>) -> Verdict {
        let Some(token) = token_of(req.device) else {
            return Verdict::permanent("not an FCM device");
        };
        let body = message(req, token);
        // A 401 means the token went stale early (revoked, clock skew): mint and try once.
        for force in [false, true] {
            let access = match self.access_token(force).await {
                Ok(t) => t,
                Err(v) => return v,
            };
            let response = match self
                .http
                .post(&self.send_url)
                .bearer_auth(access)
                .json(&body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => return transport_error(e),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                let name = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
                return Verdict::Sent { id: name };
            }
            if status == 401 && !force {
                continue;
            }
            return classify(status, &text, &headers);
        }
        Verdict::Failover {
            detail: "FCM refused a fresh access token (401)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn fcm_error(status: u16, code: &str) -> String {
        json!({"error": {"code": status, "message": "m", "status": "X",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}})
        .to_string()
    }

    #[test]
    fn errors_classify_on_the_error_code() {
        let h = HeaderMap::new();
        assert!(matches!(
            classify(404, &fcm_error(404, "UNREGISTERED"), &h),
            Verdict::Gone { .. }
        ));
        assert!(matches!(
            classify(403, &fcm_error(403, "SENDER_ID_MISMATCH"), &h),
            Verdict::Gone { .. }
        ));
        assert!(matches!(
            classify(503, &fcm_error(503, "UNAVAILABLE"), &h),
            Verdict::Transient { .. }
        ));
        match classify(429, &fcm_error(429, "QUOTA_EXCEEDED"), &h) {
            Verdict::Transient { retry_after, .. } => assert!(retry_after >= Some(QUOTA_WAIT)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(401, &fcm_error(401, "THIRD_PARTY_AUTH_ERROR"), &h),
            Verdict::Failover { .. }
        ));
        assert!(matches!(
            classify(400, &fcm_error(400, "INVALID_ARGUMENT"), &h),
            Verdict::Permanent { .. }
        ));
        let bad_token = json!({"error": {"code": 400, "message": "The registration token is not a valid FCM registration token", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}}).to_string();
        assert!(matches!(
            classify(400, &bad_token, &h),
            Verdict::Gone { .. }
        ));
        assert!(matches!(
            classify(502, "<html>bad gateway</html>", &h),
            Verdict::Transient { .. }
        ));
    }
}
