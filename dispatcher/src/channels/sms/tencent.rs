//! Tencent Cloud SMS (`SendSms`, API version 2021-01-11) with the `TC3-HMAC-SHA256`
//! signature: a JSON body, signed over the method, path, the `content-type` and `host`
//! headers and the body's hash, with a key derived from the secret, the date and the
//! service (`sms`). The clock must be within 5 minutes of Tencent's.
//!
//! Answers come as HTTP 200 either way: `Response.Error` for the request, or one
//! `Response.SendStatusSet[]` entry per number whose `Code` is `Ok` when sent.

use async_trait::async_trait;
use herald_common::config::SmsProviderConfig;
use serde::Deserialize;

use super::{Sms, SmsProvider};
use crate::channels::providers::Verdict;
use crate::channels::signing::{hex, hmac_sha256, sha256_hex};
use crate::channels::{snippet, transport_error};

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

pub struct Tencent {
    http: reqwest::Client,
    config: SmsProviderConfig,
}

impl Tencent {
    pub fn new(http: reqwest::Client, config: SmsProviderConfig) -> Tencent {
        Tencent { http, config }
    }
}

/// The `Authorization` header for a TC3 request with this body, at `timestamp` (Unix
/// seconds).
pub fn authorization(
    host: &str,
    body: &str,
    secret_id: &str,
    secret_key: &str,
    timestamp: i64,
) -> String {
    let date = herald_common::time::rfc3339(timestamp * 1000)[..10].to_string();
    let canonical_request = format!(
        "POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n\ncontent-type;host\n{}",
        sha256_hex(body.as_bytes())
    );
    let scope = format!("{date}/sms/tc3_request");
    let string_to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac_sha256(&k_date, b"sms");
    let k_signing = hmac_sha256(&k_service, b"tc3_request");
    let signature = hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    format!(
        "TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}"
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    response: Response,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    error: Option<ApiError>,
    #[serde(default)]
    send_status_set: Vec<SendStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiError {
    code: String,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendStatus {
    code: String,
    message: Option<String>,
    serial_no: Option<String>,
}

/// A request-level error code.
fn classify_error(code: &str, message: &str) -> Verdict {
    let detail = format!("{code}: {message}");
    if code.starts_with("AuthFailure") || code.starts_with("UnauthorizedOperation") {
        Verdict::Failover { detail }
    } else if code == "RequestLimitExceeded"
        || code.starts_with("InternalError")
        || code == "ResourceUnavailable"
    {
        Verdict::transient(detail)
    } else if code == "FailedOperation.InsufficientBalanceInSmsPackage" {
        Verdict::Failover { detail }
    } else {
        Verdict::permanent(detail)
    }
}

/// A per-number code.
fn classify_status(s: SendStatus) -> Verdict {
    let detail = format!("{}: {}", s.code, s.message.as_deref().unwrap_or(""));
    match s.code.as_str() {
        "Ok" => Verdict::Sent { id: s.serial_no },
        c if c.starts_with("LimitExceeded") => Verdict::transient(detail),
        "FailedOperation.InsufficientBalanceInSmsPackage" => Verdict::Failover { detail },
        _ => Verdict::permanent(detail),
    }
}

#[async_trait]
impl SmsProvider for Tencent {
    async fn send(&self, sms: &Sms<'_>) -> Verdict {
        let c = &self.config;
        let (
            Some(base),
            Some(secret_id),
            Some(secret_key),
            Some(app_id),
            Some(sign_name),
            Some(template),
        ) = (
            c.url.as_deref(),
            c.account.as_deref(),
            c.token.as_ref(),
            c.app_id.as_deref(),
            c.sign_name.as_deref(),
            c.template.as_deref(),
        )
        else {
            return Verdict::Failover {
                detail: "tencent provider is missing its credentials or template".into(),
            };
        };
        let Some(host) = reqwest::Url::parse(base).ok().and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
        }) else {
            return Verdict::Failover {
                detail: "tencent URL has no host".into(),
            };
        };
        let body = serde_json::json!({
            "PhoneNumberSet": [sms.to],
            "SmsSdkAppId": app_id,
            "SignName": sign_name,
            "TemplateId": template,
            "TemplateParamSet": [sms.text],
            "SessionContext": sms.id,
        })
        .to_string();
        let timestamp = herald_common::time::now_ms() / 1000;
        let req = self
            .http
            .post(format!("{}/", base.trim_end_matches('/')))
            .header("content-type", CONTENT_TYPE)
            .header("x-tc-action", "SendSms")
            .header("x-tc-version", "2021-01-11")
            .header("x-tc-region", c.region.as_str())
            .header("x-tc-timestamp", timestamp.to_string())
            .header(
                "authorization",
                authorization(&host, &body, secret_id, secret_key.expose(), timestamp),
            )
            .body(body);
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Envelope>(&text) {
            Ok(Envelope {
                response: Response { error: Some(e), .. },
            }) => classify_error(&e.code, e.message.as_deref().unwrap_or("")),
            Ok(Envelope {
                response: Response {
                    send_status_set, ..
                },
            }) => match send_status_set.into_iter().next() {
                Some(s) => classify_status(s),
                None => Verdict::transient("no status for the number in the answer"),
            },
            Err(_) => Verdict::transient(format!(
                "unreadable answer (HTTP {}): {}",
                status.as_u16(),
                snippet(&text)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: computed independently (Python hashlib/hmac) from the same inputs.
    #[test]
    fn signs_as_tc3_says() {
        let body = r#"{"PhoneNumberSet":["+8613800000000"],"SmsSdkAppId":"1400000000","SignName":"Herald","TemplateId":"100","TemplateParamSet":["hi"]}"#;
        assert_eq!(
            authorization(
                "sms.tencentcloudapi.com",
                body,
                "AKIDexample",
                "key-example",
                1_795_600_000
            ),
            PINNED_TC3
        );
    }

    const PINNED_TC3: &str = "TC3-HMAC-SHA256 Credential=AKIDexample/2026-11-25/sms/tc3_request, SignedHeaders=content-type;host, Signature=07001c979983e595402726a2d290626f1670e873531635a929f5fc920e5b18a8";

    #[test]
    fn codes_classify() {
        let s = |code: &str| SendStatus {
            code: code.into(),
            message: None,
            serial_no: Some("x".into()),
        };
        assert!(matches!(classify_status(s("Ok")), Verdict::Sent { .. }));
        assert!(matches!(
            classify_status(s("LimitExceeded.PhoneNumberThirtySecondLimit")),
            Verdict::Transient { .. }
        ));
        assert!(matches!(
            classify_status(s("FailedOperation.InsufficientBalanceInSmsPackage")),
            Verdict::Failover { .. }
        ));
        assert!(matches!(
            classify_status(s("InvalidParameterValue.IncorrectPhoneNumber")),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            classify_error("AuthFailure.SignatureFailure", ""),
            Verdict::Failover { .. }
        ));
        assert!(matches!(
            classify_error("RequestLimitExceeded", ""),
            Verdict::Transient { .. }
        ));
    }
}
