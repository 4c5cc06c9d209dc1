//! Feishu / Lark custom bot: `POST https://open.feishu.cn/open-apis/bot/v2/hook/<token>`,
//! signed with `timestamp` (seconds) and `sign` = base64(HMAC-SHA256(key =
//! "timestamp\nsecret", message = "")) in the JSON body. Answers `{"code":0}` (older ones
//! `{"StatusCode":0}`); 19021 is a bad signature or stale timestamp, 11232 the rate limit
//! (100 a minute, 5 a second).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_common::api::{ChannelKind, RobotAddress};
use serde_json::json;

use super::{ChatMessage, Robot, answer_json, code_of, text_field};
use crate::channels::providers::Verdict;
use crate::channels::signing::hmac_sha256;

pub struct Feishu;

pub fn sign(secret: &str, timestamp_s: i64) -> String {
    STANDARD.encode(hmac_sha256(
        format!("{timestamp_s}\n{secret}").as_bytes(),
        b"",
    ))
}

impl Robot for Feishu {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Feishu
    }

    fn pace(&self) -> Option<(u32, Duration)> {
        Some((100, Duration::from_secs(60)))
    }

    fn request(
        &self,
        http: &reqwest::Client,
        to: &RobotAddress,
        msg: &ChatMessage<'_>,
        now: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let mut body = match msg.markdown {
            Some(md) => json!({
                "msg_type": "interactive",
                "card": {
                    "header": {"title": {"tag": "plain_text", "content": msg.title.unwrap_or("Notification")}},
                    "elements": [{"tag": "markdown", "content": md}],
                },
            }),
            None => json!({"msg_type": "text", "content": {"text": msg.text}}),
        };
        if let Some(secret) = &to.secret {
            let ts = now / 1000;
            body["timestamp"] = json!(ts.to_string());
            body["sign"] = json!(sign(secret, ts));
        }
        Ok(http.post(&to.url).json(&body))
    }

    fn classify(&self, status: u16, _: &reqwest::header::HeaderMap, body: &str) -> Verdict {
        let v = match answer_json(status, body) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        let code = code_of(&v, &["code", "StatusCode"]);
        let detail = format!(
            "code {}: {}",
            code.unwrap_or(-1),
            text_field(&v, &["msg", "StatusMessage"])
        );
        match code {
            Some(0) if (200..300).contains(&status) => Verdict::Sent { id: None },
            Some(11232) => Verdict::Transient {
                detail,
                retry_after: Some(Duration::from_secs(1)),
            },
            _ if status >= 500 => Verdict::transient(detail),
            _ => Verdict::permanent(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_classifies() {
        // The documented construction, computed independently (Python hmac/base64).
        assert_eq!(sign("feishu-secret", 1_700_000_000), PINNED);
        let h = reqwest::header::HeaderMap::new();
        assert!(matches!(
            Feishu.classify(200, &h, r#"{"code":0,"msg":"success"}"#),
            Verdict::Sent { .. }
        ));
        assert!(matches!(
            Feishu.classify(200, &h, r#"{"StatusCode":0}"#),
            Verdict::Sent { .. }
        ));
        assert!(matches!(
            Feishu.classify(200, &h, r#"{"code":19021,"msg":"sign match fail"}"#),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            Feishu.classify(200, &h, r#"{"code":11232,"msg":"frequency limited"}"#),
            Verdict::Transient { .. }
        ));
    }

    const PINNED: &str = "OrBzY1Y01Gq+HgJsl+7OfWcMVwc7YocohQm5iiZwjhU=";
}
