//! WeCom (企业微信) group robot: `POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`
//! (the key in the URL is the credential; there is no signature). Answers `{"errcode":0}`;
//! 45009 is the rate limit (20 messages a minute per robot), 93000 an invalid key.

use std::time::Duration;

use herald_common::api::{ChannelKind, RobotAddress};
use serde_json::json;

use super::{ChatMessage, Robot, answer_json, code_of, text_field};
use crate::channels::providers::Verdict;

pub struct WeCom;

impl Robot for WeCom {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Wecom
    }

    fn pace(&self) -> Option<(u32, Duration)> {
        Some((20, Duration::from_secs(60)))
    }

    fn request(
        &self,
        http: &reqwest::Client,
        to: &RobotAddress,
        msg: &ChatMessage<'_>,
        _now: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let body = match msg.markdown {
            Some(md) => json!({"msgtype": "markdown", "markdown": {"content": md}}),
            None => json!({"msgtype": "text", "text": {"content": msg.text}}),
        };
        Ok(http.post(&to.url).json(&body))
    }

    fn classify(&self, status: u16, _: &reqwest::header::HeaderMap, body: &str) -> Verdict {
        let v = match answer_json(status, body) {
            Ok(v) => v,
            Err(verdict) => return verdict,
        };
        let code = code_of(&v, &["errcode"]);
        let detail = format!(
            "errcode {}: {}",
            code.unwrap_or(-1),
            text_field(&v, &["errmsg"])
        );
        match code {
            Some(0) if (200..300).contains(&status) => Verdict::Sent { id: None },
            Some(45009) => Verdict::Transient {
                detail,
                retry_after: Some(Duration::from_secs(60)),
            },
            _ if status >= 500 => Verdict::transient(detail),
            _ => Verdict::permanent(detail),
        }
    }
}
