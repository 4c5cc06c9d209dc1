//! Chat robots and the generic signed webhook (SPEC §7): `dingtalk`, `feishu`, `wecom`,
//! `slack`, `webhook`, each posting to the address in the user's profile (`chat.<kind>`),
//! in its service's own message format and signature. These services answer HTTP 200 with
//! an error code in the body, so every robot reads the body to classify its answer.
//!
//! Each robot is paced to its published rate (DingTalk and WeCom: 20 messages a minute per
//! robot) with a slot shared by every dispatcher: a message over the pace waits for the
//! next free slot instead of failing. Robot URLs hold the robot's token: they never appear
//! in details or logs.

mod dingtalk;
mod feishu;
mod slack;
mod webhook;
mod wecom;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use herald_common::api::{ChannelKind, Outcome, RobotAddress};
use herald_common::time::now_ms;
use herald_engine::{SlotTaken, Slots};

use super::providers::{Routed, Verdict};
use super::{AttemptResult, Channel, ClientOptions, Delivery, transport_error};

/// What a robot posts.
pub struct ChatMessage<'a> {
    pub title: Option<&'a str>,
    /// Plain text: `chat.text`, else the title and body.
    pub text: String,
    /// `chat.markdown`, when the message has one.
    pub markdown: Option<&'a str>,
    pub delivery_id: String,
    pub message_id: &'a str,
    pub user_id: &'a str,
    pub body: Option<&'a str>,
    pub data: Option<serde_json::Value>,
    pub created_at: i64,
}

/// One chat service: how it is addressed, signed and answers.
pub trait Robot: Send + Sync {
    fn kind(&self) -> ChannelKind;
    /// Messages per window one robot takes.
    fn pace(&self) -> Option<(u32, Duration)>;
    /// The request for one message (`now` in Unix ms, for signatures).
    fn request(
        &self,
        http: &reqwest::Client,
        to: &RobotAddress,
        msg: &ChatMessage<'_>,
        now: i64,
    ) -> Result<reqwest::RequestBuilder, String>;
    fn classify(&self, status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> Verdict;
}

pub struct Chat {
    robot: Box<dyn Robot>,
    http: reqwest::Client,
    slots: Arc<dyn Slots>,
}

impl Chat {
    /// Every chat channel, with one HTTP client each.
    pub fn all(client: &ClientOptions, slots: Arc<dyn Slots>) -> Result<Vec<Chat>, String> {
        let robots: Vec<Box<dyn Robot>> = vec![
            Box::new(dingtalk::DingTalk),
            Box::new(feishu::Feishu),
            Box::new(wecom::WeCom),
            Box::new(slack::Slack),
            Box::new(webhook::Webhook),
        ];
        robots
            .into_iter()
            .map(|robot| {
                Ok(Chat {
                    robot,
                    http: client.build(false).map_err(|e| e.to_string())?,
                    slots: Arc::clone(&slots),
                })
            })
            .collect()
    }
}

/// The plain text of a message: `chat.text`, else "title\nbody".
fn text_of(d: &Delivery<'_>) -> String {
    let m = d.message;
    if let Some(t) = m.chat.as_ref().and_then(|c| c.text.clone()) {
        return t;
    }
    match (&m.title, &m.body) {
        (Some(t), Some(b)) => format!("{t}\n{b}"),
        (Some(t), None) => t.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => String::new(),
    }
}

/// The key a robot's pace is counted under (the URL's digest: it holds the token).
fn pace_key(kind: ChannelKind, url: &str) -> String {
    format!(
        "robot:{kind}:{}",
        super::signing::sha256_hex(url.as_bytes())
    )
}

#[async_trait]
impl Channel for Chat {
    fn kind(&self) -> ChannelKind {
        self.robot.kind()
    }

    async fn attempt(&self, d: &Delivery<'_>) -> AttemptResult {
        let kind = self.robot.kind();
        let Some(to) = d.profile.and_then(|p| p.chat.get(kind)) else {
            return AttemptResult::new(
                Outcome::Skipped,
                format!("no {kind} address in the profile"),
            );
        };
        let now = now_ms();
        if let Some((limit, window)) = self.robot.pace() {
            let key = pace_key(kind, &to.url);
            match self
                .slots
                .take_slot(
                    &key,
                    &d.delivery_id(),
                    limit,
                    window.as_millis() as i64,
                    now,
                )
                .await
            {
                Ok(SlotTaken::Granted) => {}
                Ok(SlotTaken::Full { until }) => {
                    metrics::counter!("herald_chat_paced_total", "channel" => kind.as_str())
                        .increment(1);
                    return AttemptResult {
                        later: Some(until),
                        ..AttemptResult::new(
                            Outcome::Skipped,
                            format!(
                                "{kind} robot at its pace of {limit} per {}s",
                                window.as_secs()
                            ),
                        )
                    };
                }
                Err(e) => {
                    return AttemptResult::new(Outcome::TransientError, format!("pace: {e}"));
                }
            }
        }
        let m = d.message;
        let data = m
            .data
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok());
        let msg = ChatMessage {
            title: m.title.as_deref(),
            text: text_of(d),
            markdown: m.chat.as_ref().and_then(|c| c.markdown.as_deref()),
            delivery_id: d.delivery_id(),
            message_id: &m.id,
            user_id: &d.recipient.user_id,
            body: m.body.as_deref(),
            data,
            created_at: m.created_at,
        };
        let verdict = match self.robot.request(&self.http, to, &msg, now) {
            Err(e) => Verdict::permanent(e),
            Ok(request) => match request.send().await {
                Err(e) => transport_error(e),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let body = response.text().await.unwrap_or_default();
                    self.robot.classify(status, &headers, &body)
                }
            },
        };
        AttemptResult::routed(Routed {
            verdict,
            provider: None,
            tried: Vec::new(),
        })
    }
}

/// The JSON body of a robot's answer, or why it is not one.
fn answer_json(status: u16, body: &str) -> Result<serde_json::Value, Verdict> {
    serde_json::from_str(body).map_err(|_| {
        let detail = format!(
            "unreadable answer (HTTP {status}): {}",
            super::snippet(body)
        );
        if status >= 500 || status == 429 {
            Verdict::transient(detail)
        } else if (200..300).contains(&status) {
            // A robot that answers 200 with garbage: nothing says it was posted.
            Verdict::transient(detail)
        } else {
            Verdict::permanent(detail)
        }
    })
}

/// The numeric code field of a robot's answer (`errcode`, `code`, `StatusCode`).
fn code_of(v: &serde_json::Value, fields: &[&str]) -> Option<i64> {
    fields
        .iter()
        .find_map(|f| v.get(*f).and_then(|c| c.as_i64()))
}

fn text_field(v: &serde_json::Value, fields: &[&str]) -> String {
    fields
        .iter()
        .find_map(|f| v.get(*f).and_then(|c| c.as_str()))
        .unwrap_or("")
        .to_string()
}
