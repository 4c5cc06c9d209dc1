//! The generic webhook: the message as JSON, POSTed to the profile's URL and signed as
//! Standard Webhooks (`webhook-id` = the delivery id, stable on every retry, so receivers
//! de-duplicate; `webhook-timestamp`; `webhook-signature` with the profile's `whsec_`
//! secret). 2xx is sent; 410 means the endpoint is gone; 429 and 5xx are retried.

use std::time::Duration;

use herald_common::api::{ChannelKind, RobotAddress};
use herald_common::webhooks;
use serde_json::json;

use super::{ChatMessage, Robot};
use crate::channels::providers::Verdict;
use crate::channels::{retry_after, snippet};

pub struct Webhook;

impl Robot for Webhook {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn pace(&self) -> Option<(u32, Duration)> {
        None
    }

    fn request(
        &self,
        http: &reqwest::Client,
        to: &RobotAddress,
        msg: &ChatMessage<'_>,
        now: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let body = json!({
            "type": "message",
            "id": msg.message_id,
            "user_id": msg.user_id,
            "title": msg.title,
            "body": msg.body,
            "text": msg.text,
            "markdown": msg.markdown,
            "data": msg.data,
            "created_at": herald_common::time::rfc3339(msg.created_at),
        })
        .to_string();
        let mut request = http
            .post(&to.url)
            .header("content-type", "application/json");
        if let Some(secret) = &to.secret {
            let key = webhooks::decode_secret(secret)?;
            for (name, value) in
                webhooks::headers(&key, &msg.delivery_id, now / 1000, body.as_bytes())
            {
                request = request.header(name, value);
            }
        } else {
            request = request.header("webhook-id", msg.delivery_id.as_str());
        }
        Ok(request.body(body))
    }

    fn classify(&self, status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> Verdict {
        let detail = format!("HTTP {status}: {}", snippet(body));
        match status {
            200..=299 => Verdict::Sent { id: None },
            429 | 502 | 503 | 504 | 500 | 408 => Verdict::Transient {
                detail,
                retry_after: retry_after(headers),
            },
            _ => Verdict::permanent(detail),
        }
    }
}
