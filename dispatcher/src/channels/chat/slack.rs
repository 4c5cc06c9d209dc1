//! Slack incoming webhook: `POST https://hooks.slack.com/services/…` with `{"text"}` (and a
//! `mrkdwn` section for markdown). Answers 200 `ok`; errors are plain-text bodies
//! (`no_service`, `invalid_payload`, …), all permanent; over its rate (about one a second)
//! Slack answers 429 with `Retry-After`.

use std::time::Duration;

use herald_common::api::{ChannelKind, RobotAddress};
use serde_json::json;

use super::{ChatMessage, Robot};
use crate::channels::providers::Verdict;
use crate::channels::{retry_after, snippet};

pub struct Slack;

impl Robot for Slack {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Slack
    }

    fn pace(&self) -> Option<(u32, Duration)> {
        // "1 per second, short bursts allowed".
        Some((60, Duration::from_secs(60)))
    }

    fn request(
        &self,
        http: &reqwest::Client,
        to: &RobotAddress,
        msg: &ChatMessage<'_>,
        _now: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let body = match msg.markdown {
            Some(md) => json!({
                "text": msg.text,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": md}}],
            }),
            None => json!({"text": msg.text}),
        };
        Ok(http.post(&to.url).json(&body))
    }

    fn classify(&self, status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> Verdict {
        let detail = format!("HTTP {status}: {}", snippet(body));
        match status {
            200..=299 if body.trim() == "ok" => Verdict::Sent { id: None },
            200..=299 => Verdict::transient(format!("unexpected answer {detail}")),
            429 | 500..=599 => Verdict::Transient {
                detail,
                retry_after: retry_after(headers),
            },
            _ => Verdict::permanent(detail),
        }
    }
}
