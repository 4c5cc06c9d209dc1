//! Aliyun SMS (`SendSms`, API version 2017-05-25) with the V3 request signature
//! (`ACS3-HMAC-SHA256`): the parameters go in the query string, the body is empty, and the
//! request is signed over its method, path, sorted query, the `host` and `x-acs-*` headers
//! and the body's hash. Aliyun sends only approved templates: the text goes into the
//! configured template parameter (`content` unless `param` says otherwise).
//!
//! Answers: HTTP 200 with `Code` `OK` is sent; other codes are classified below (per-number
//! flow control is transient; an account out of service or balance fails over).

use async_trait::async_trait;
use herald_common::config::SmsProviderConfig;
use serde::Deserialize;

use super::{Sms, SmsProvider};
use crate::channels::providers::Verdict;
use crate::channels::signing::{hex, hmac_sha256, rfc3986, sha256_hex};
use crate::channels::{snippet, transport_error};

pub struct Aliyun {
    http: reqwest::Client,
    config: SmsProviderConfig,
}

impl Aliyun {
    pub fn new(http: reqwest::Client, config: SmsProviderConfig) -> Aliyun {
        Aliyun { http, config }
    }
}

/// A signed request: the query string and the headers to send.
#[derive(Debug, PartialEq)]
pub struct Signed {
    pub query: String,
    pub headers: Vec<(String, String)>,
}

/// One RPC call to sign: where, which action of which API version, with what parameters.
pub struct Call<'a> {
    pub host: &'a str,
    pub action: &'a str,
    pub version: &'a str,
    pub params: &'a [(&'a str, &'a str)],
}

/// Signs an Aliyun RPC call (V3) at `date` with a fresh `nonce`: the parameters go in the
/// query; the body is empty.
pub fn sign(call: &Call<'_>, key_id: &str, secret: &str, date: &str, nonce: &str) -> Signed {
    let Call {
        host,
        action,
        version,
        params,
    } = *call;
    let mut query: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (rfc3986(k), rfc3986(v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let payload_hash = sha256_hex(b"");
    let mut headers = vec![
        ("host".to_string(), host.to_string()),
        ("x-acs-action".to_string(), action.to_string()),
        ("x-acs-content-sha256".to_string(), payload_hash.clone()),
        ("x-acs-date".to_string(), date.to_string()),
        ("x-acs-signature-nonce".to_string(), nonce.to_string()),
        ("x-acs-version".to_string(), version.to_string()),
    ];
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request =
        format!("POST\n/\n{query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let string_to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let signature = hex(&hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes()));
    headers.retain(|(k, _)| k != "host");
    headers.push((
        "authorization".into(),
        format!(
            "ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders={signed_headers},Signature={signature}"
        ),
    ));
    Signed { query, headers }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    code: Option<String>,
    message: Option<String>,
    biz_id: Option<String>,
}

/// What an Aliyun `Code` means for Herald.
fn classify(code: &str, message: &str, biz_id: Option<String>) -> Verdict {
    let detail = format!("{code}: {message}");
    match code {
        "OK" => Verdict::Sent { id: biz_id },
        // Flow control per number and signature, and Aliyun's own throttling: later.
        "isv.BUSINESS_LIMIT_CONTROL" | "Throttling.User" | "Throttling" | "ServiceUnavailable" => {
            Verdict::transient(detail)
        }
        // This account cannot send now (suspended, out of money, over its own limits):
        // another provider can.
        "isv.OUT_OF_SERVICE"
        | "isv.AMOUNT_NOT_ENOUGH"
        | "isv.DAY_LIMIT_CONTROL"
        | "isv.MONTH_LIMIT_CONTROL"
        | "SignatureDoesNotMatch"
        | "InvalidAccessKeyId.NotFound"
        | "InvalidAccessKeyId.Inactive"
        | "Forbidden.RAM"
        | "isv.SMS_SIGNATURE_ILLEGAL"
        | "isv.SMS_TEMPLATE_ILLEGAL" => Verdict::Failover { detail },
        _ => Verdict::permanent(detail),
    }
}

#[async_trait]
impl SmsProvider for Aliyun {
    async fn send(&self, sms: &Sms<'_>) -> Verdict {
        let c = &self.config;
        let (Some(base), Some(key_id), Some(secret), Some(sign_name), Some(template)) = (
            c.url.as_deref(),
            c.account.as_deref(),
            c.token.as_ref(),
            c.sign_name.as_deref(),
            c.template.as_deref(),
        ) else {
            return Verdict::Failover {
                detail: "aliyun provider is missing its credentials or template".into(),
            };
        };
        let Ok(url) = reqwest::Url::parse(base) else {
            return Verdict::Failover {
                detail: "aliyun URL does not parse".into(),
            };
        };
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Verdict::Failover {
                    detail: "aliyun URL has no host".into(),
                };
            }
        };
        let param = serde_json::json!({ c.param.as_str(): sms.text }).to_string();
        let date = herald_common::time::rfc3339(herald_common::time::now_ms());
        // Aliyun wants seconds: 2026-12-01T10:00:00Z.
        let date = format!("{}Z", &date[..19]);
        let nonce = ulid::Ulid::generate().to_string();
        let params = [
            ("PhoneNumbers", sms.to),
            ("SignName", sign_name),
            ("TemplateCode", template),
            ("TemplateParam", param.as_str()),
            ("OutId", sms.id),
        ];
        let call = Call {
            host: &host,
            action: "SendSms",
            version: "2017-05-25",
            params: &params,
        };
        let signed = sign(&call, key_id, secret.expose(), &date, &nonce);
        let mut req = self
            .http
            .post(format!("{}/?{}", base.trim_end_matches('/'), signed.query));
        for (k, v) in &signed.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => return transport_error(e),
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        match serde_json::from_str::<Answer>(&body) {
            Ok(Answer {
                code: Some(code),
                message,
                biz_id,
            }) => classify(&code, message.as_deref().unwrap_or(""), biz_id),
            _ if status.is_server_error() => {
                Verdict::transient(format!("HTTP {}: {}", status.as_u16(), snippet(&body)))
            }
            _ => Verdict::transient(format!(
                "unreadable answer (HTTP {}): {}",
                status.as_u16(),
                snippet(&body)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned: computed independently (Python hashlib/hmac) from the same inputs.
    #[test]
    fn signs_as_aliyun_v3_says() {
        let call = Call {
            host: "dysmsapi.aliyuncs.com",
            action: "SendSms",
            version: "2017-05-25",
            params: &[
                ("PhoneNumbers", "+8613800000000"),
                ("SignName", "Herald"),
                ("TemplateCode", "SMS_1"),
                ("TemplateParam", "{\"content\":\"hi\"}"),
            ],
        };
        let signed = sign(
            &call,
            "LTAIexample",
            "secret-example",
            "2026-12-01T10:00:00Z",
            "nonce-1",
        );
        assert_eq!(
            signed.query,
            "PhoneNumbers=%2B8613800000000&SignName=Herald&TemplateCode=SMS_1&TemplateParam=%7B%22content%22%3A%22hi%22%7D"
        );
        let auth = &signed
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert_eq!(auth, PINNED_ALIYUN);
    }

    const PINNED_ALIYUN: &str = "ACS3-HMAC-SHA256 Credential=LTAIexample,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=82046b154d5c31a4641a29be692ceaa60d47d47d6ec3b1b6650d1e15bc6f68f2";

    #[test]
    fn codes_classify() {
        assert!(matches!(
            classify("OK", "OK", Some("b".into())),
            Verdict::Sent { .. }
        ));
        assert!(matches!(
            classify("isv.BUSINESS_LIMIT_CONTROL", "", None),
            Verdict::Transient { .. }
        ));
        assert!(matches!(
            classify("isv.AMOUNT_NOT_ENOUGH", "", None),
            Verdict::Failover { .. }
        ));
        assert!(matches!(
            classify("isv.MOBILE_NUMBER_ILLEGAL", "", None),
            Verdict::Permanent { .. }
        ));
    }
}
