//! DingTalk custom robot: `POST https://oapi.dingtalk.com/robot/send?access_token=…`, signed
//! (加签) with `timestamp` (ms) and `sign` = base64(HMAC-SHA256(secret, "timestamp\nsecret"))
//! in the query. Answers `{"errcode":0}` when posted; 310000 is a bad signature, keyword or
//! IP (permanent); sending faster than 20 a minute blocks the robot for 10 minutes.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use herald_common::api::{ChannelKind, RobotAddress};
use serde_json::json;

use super::{ChatMessage, Robot, answer_json, code_of, text_field};
use crate::channels::providers::Verdict;
use crate::channels::signing::{hmac_sha256, rfc3986};

pub struct DingTalk;

/// A rate-limited robot is blocked for 10 minutes.
const BLOCKED: Duration = Duration::from_secs(600);

/// The `sign` query value for a secret at `timestamp_ms`.
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    );
    rfc3986(&STANDARD.encode(mac))
}

impl Robot for DingTalk {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Dingtalk
    }

    fn pace(&self) -> Option<(u32, Duration)> {
        Some((20, Duration::from_secs(60)))
    }

    fn request(
        &self,
        http: &reqwest::Client,
        to: &RobotAddress,
        msg: &ChatMessage<'_>,
        now: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let mut url = to.url.clone();
        if let Some(secret) = &to.secret {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{sep}timestamp={now}&sign={}", sign(secret, now));
        }
        let body = match msg.markdown {
            Some(md) => json!({
                "msgtype": "markdown",
                "markdown": {"title": msg.title.unwrap_or("Notification"), "text": md},
            }),
            None => json!({"msgtype": "text", "text": {"content": msg.text}}),
        };
        Ok(http.post(url).json(&body))
    }

    fn classify(&self, status: u16, _: &reqwest::header::HeaderMap, body: &str) -> Verdict {
        let v = match answer_json(status, body) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        let code = code_of(&v, &["errcode"]);
        let message = text_field(&v, &["errmsg"]);
        let detail = format!("errcode {}: {message}", code.unwrap_or(-1));
        match code {
            Some(0) if (200..300).contains(&status) => Verdict::Sent { id: None },
            Some(130101) => Verdict::Transient {
                detail,
                retry_after: Some(BLOCKED),
            },
            _ if message.contains("too fast") => Verdict::Transient {
                detail,
                retry_after: Some(BLOCKED),
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
        assert_eq!(sign("SECexample", 1_700_000_000_000), PINNED);
        let h = reqwest::header::HeaderMap::new();
        assert!(matches!(
            DingTalk.classify(200, &h, r#"{"errcode":0,"errmsg":"ok"}"#),
            Verdict::Sent { .. }
        ));
        assert!(matches!(
            DingTalk.classify(200, &h, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Verdict::Permanent { .. }
        ));
        assert!(matches!(
            DingTalk.classify(200, &h, r#"{"errcode":130101,"errmsg":"send too fast"}"#),
            Verdict::Transient { .. }
        ));
        assert!(matches!(
            DingTalk.classify(200, &h, "<html>"),
            Verdict::Transient { .. }
        ));
    }

    const PINNED: &str = "uroalHrWHORz59talE1o26b8HuX2kOp8WlAN91F9Pj0%3D";
}
