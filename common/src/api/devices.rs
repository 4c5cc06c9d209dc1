//! Devices for the `push` channel (SPEC §7): what an app registers, and what the API shows.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The longest device id.
pub const MAX_DEVICE_ID: usize = 128;
/// The longest FCM registration token Herald accepts (they are about 160 characters).
pub const MAX_FCM_TOKEN: usize = 4096;

string_enum!(
    /// Which push service reaches a device.
    Platform { Fcm => "fcm", Apns => "apns", Webpush => "webpush" }
);

/// A browser's push subscription (`PushSubscription.toJSON()`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebPushSubscription {
    /// The push service URL the browser gave.
    #[schema(
        pattern = r"^https?://[^/\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*$",
        min_length = 1,
        max_length = 2048
    )]
    pub endpoint: String,
    pub keys: WebPushKeys,
    /// Ignored: browsers send it, Herald treats a 404/410 as the end of a subscription.
    #[serde(
        default,
        rename = "expirationTime",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f64>)]
    pub expiration_time: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebPushKeys {
    /// base64url of the browser's 65-byte uncompressed P-256 public key.
    #[schema(pattern = "^[A-Za-z0-9_-]{86}[AEIMQUYcgkosw048]=?$")]
    pub p256dh: String,
    /// base64url of the 16-byte authentication secret.
    #[schema(pattern = "^[A-Za-z0-9_-]{21}[AQgw](==)?$")]
    pub auth: String,
}

/// `PUT /v1/users/{id}/devices/{device_id}` and `PUT /v1/me/devices/{device_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRegistration {
    pub platform: Platform,
    /// FCM registration token, or the APNs device token in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 4096)]
    pub token: Option<String>,
    /// APNs: the app's bundle id (default `HERALD_APNS_TOPIC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9.-]{1,255}$")]
    pub topic: Option<String>,
    /// Web Push: the browser's subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<WebPushSubscription>,
}

/// Where a device is reached, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case")]
pub enum DeviceAddress {
    Fcm {
        token: String,
    },
    Apns {
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    Webpush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
}

impl DeviceAddress {
    pub fn platform(&self) -> Platform {
        match self {
            DeviceAddress::Fcm { .. } => Platform::Fcm,
            DeviceAddress::Apns { .. } => Platform::Apns,
            DeviceAddress::Webpush { .. } => Platform::Webpush,
        }
    }

    /// What makes two registrations the same device: the token, or the endpoint.
    pub fn identity(&self) -> &str {
        match self {
            DeviceAddress::Fcm { token } | DeviceAddress::Apns { token, .. } => token,
            DeviceAddress::Webpush { endpoint, .. } => endpoint,
        }
    }
}

/// Checks a device id: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_device_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID {
        return Err(format!("device id must be 1-{MAX_DEVICE_ID} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
    {
        return Err(format!(
            "device id '{id}' may hold only letters, digits and . : _ -"
        ));
    }
    Ok(())
}

/// Decodes unpadded base64url of `len` bytes, or the same with its one correct padding.
fn b64url(field: &str, text: &str, len: usize) -> Result<Vec<u8>, String> {
    let padding = ["", "==", "="][len % 3];
    let trimmed = text.strip_suffix(padding).unwrap_or(text);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| format!("{field} is not base64url"))?;
    if bytes.len() != len {
        return Err(format!(
            "{field} must decode to {len} bytes, not {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

impl DeviceRegistration {
    /// Checks the registration and says which field is wrong.
    pub fn validate(&self) -> Result<DeviceAddress, String> {
        let token = || {
            // Not trimmed: the schema's pattern has no room for spaces, and the server
            // refuses what the schema refuses.
            self.token
                .as_deref()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("'token' is required for platform {}", self.platform))
        };
        let only = |field: &str, present: bool| {
            if present {
                Err(format!(
                    "'{field}' does not apply to platform {}",
                    self.platform
                ))
            } else {
                Ok(())
            }
        };
        match self.platform {
            Platform::Fcm => {
                only("subscription", self.subscription.is_some())?;
                only("topic", self.topic.is_some())?;
                let token = token()?;
                if token.len() > MAX_FCM_TOKEN
                    || !token
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b":_-.".contains(&b))
                {
                    return Err("'token' is not an FCM registration token".into());
                }
                Ok(DeviceAddress::Fcm {
                    token: token.to_string(),
                })
            }
            Platform::Apns => {
                only("subscription", self.subscription.is_some())?;
                let token = token()?;
                if !(32..=200).contains(&token.len())
                    || token.len() % 2 != 0
                    || !token.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err("'token' must be the APNs device token in hex".into());
                }
                if let Some(topic) = &self.topic
                    && (topic.is_empty()
                        || topic.len() > 255
                        || !topic
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b)))
                {
                    return Err(format!("'topic' '{topic}' is not an app bundle id"));
                }
                Ok(DeviceAddress::Apns {
                    token: token.to_ascii_lowercase(),
                    topic: self.topic.clone(),
                })
            }
            Platform::Webpush => {
                only("token", self.token.is_some())?;
                only("topic", self.topic.is_some())?;
                let Some(sub) = &self.subscription else {
                    return Err("'subscription' is required for platform webpush".into());
                };
                let endpoint = sub.endpoint.as_str();
                if let Err(e) = crate::config::check_http_url(endpoint) {
                    return Err(format!("'subscription.endpoint' {e}"));
                }
                let key = b64url("'subscription.keys.p256dh'", &sub.keys.p256dh, 65)?;
                if p256::PublicKey::from_sec1_bytes(&key).is_err() {
                    return Err("'subscription.keys.p256dh' is not a P-256 public key".into());
                }
                b64url("'subscription.keys.auth'", &sub.keys.auth, 16)?;
                Ok(DeviceAddress::Webpush {
                    endpoint: endpoint.to_string(),
                    p256dh: sub.keys.p256dh.trim_end_matches('=').to_string(),
                    auth: sub.keys.auth.trim_end_matches('=').to_string(),
                })
            }
        }
    }
}

/// A registered device, as the API shows it (tokens are not shown in full).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub device_id: String,
    pub platform: Platform,
    /// The last characters of the token (or the endpoint's host), to tell devices apart.
    pub hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub active: bool,
    /// Why it stopped getting pushes (e.g. `fcm: UNREGISTERED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_reason: Option<String>,
    pub registered_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<String>,
}

/// `GET /v1/users/{id}/devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// What one device's push came to (on the attempt of a `push` channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceOutcome {
    pub device_id: String,
    pub outcome: super::Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reg(v: serde_json::Value) -> Result<DeviceAddress, String> {
        serde_json::from_value::<DeviceRegistration>(v)
            .map_err(|e| e.to_string())?
            .validate()
    }

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";

    #[test]
    fn registrations_are_checked_field_by_field() {
        assert!(matches!(
            reg(json!({"platform": "fcm", "token": "dGVzdA:APA91b-x_y"})),
            Ok(DeviceAddress::Fcm { .. })
        ));
        assert!(
            reg(json!({"platform": "fcm"}))
                .unwrap_err()
                .contains("'token'")
        );
        assert!(
            reg(json!({"platform": "fcm", "token": "bad token!"}))
                .unwrap_err()
                .contains("FCM")
        );
        assert!(reg(json!({"platform": "pager", "token": "x"})).is_err());
        let apns = "a".repeat(64);
        assert!(
            reg(json!({"platform": "apns", "token": apns, "topic": "com.example.app"})).is_ok()
        );
        assert!(
            reg(json!({"platform": "apns", "token": "zz"}))
                .unwrap_err()
                .contains("hex")
        );
        let sub = |endpoint: &str, p256dh: &str, auth: &str| json!({"platform": "webpush", "subscription": {"endpoint": endpoint, "keys": {"p256dh": p256dh, "auth": auth}}});
        assert!(
            reg(sub(
                "https://push.example/x",
                P256DH,
                "BTBZMqHH6r4Tts7J_aSIgg"
            ))
            .is_ok()
        );
        assert!(
            reg(sub(
                "ftp://push.example/x",
                P256DH,
                "BTBZMqHH6r4Tts7J_aSIgg"
            ))
            .unwrap_err()
            .contains("endpoint")
        );
        assert!(
            reg(sub(
                "https://push.example/x",
                "AAAA",
                "BTBZMqHH6r4Tts7J_aSIgg"
            ))
            .unwrap_err()
            .contains("p256dh")
        );
        assert!(
            reg(sub("https://push.example/x", P256DH, "short"))
                .unwrap_err()
                .contains("auth")
        );
        assert!(validate_device_id("phone-1").is_ok());
        assert!(validate_device_id("a/b").is_err());
    }
}
