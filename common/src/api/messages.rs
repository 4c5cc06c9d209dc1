//! Messages (SPEC §3): what a backend sends, and where it went.

use serde::{Deserialize, Serialize};

use super::{
    ChannelKind, DeviceOutcome, MAX_ACK_TIMEOUT_MS, MAX_IDEMPOTENCY_KEY, MAX_RECIPIENTS,
    MessageStatus, Outcome, Priority, RecipientStatus, Strategy,
};
use crate::ids::validate_user_id;

/// A recipient: a user id, or an object with contact fields that override the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RecipientSpec {
    Id(String),
    Inline(InlineRecipient),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineRecipient {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$",
        max_length = 254
    )]
    pub email: Option<String>,
    /// E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^\+[0-9]{6,15}$")]
    pub phone: Option<String>,
}

impl RecipientSpec {
    pub fn user_id(&self) -> &str {
        match self {
            RecipientSpec::Id(id) => id,
            RecipientSpec::Inline(r) => &r.user_id,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmailContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SmsContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `"push"`: what app and browser notifications show, over the message's own content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Replaces the message's `data` for push (FCM gets every value as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// The app icon's badge count (APNs `badge`, FCM `notification_count`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    #[schema(minimum = 0, maximum = 99999)]
    pub badge: Option<u32>,
    /// A sound name the app ships (`default` for the system sound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub sound: Option<String>,
    /// Replaces an earlier notification with the same key still on the device (APNs
    /// `apns-collapse-id`, FCM `collapse_key`, Web Push `Topic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,32}$")]
    pub collapse_key: Option<String>,
}

/// `"chat"`: what chat robots and the generic webhook post, over `title`/`body`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4000)]
    pub text: Option<String>,
    /// Sent as the robot's markdown message where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4000)]
    pub markdown: Option<String>,
}

/// The largest push payload, in bytes (FCM's and APNs' limit; Web Push's after encryption).
pub const MAX_PUSH_BYTES: usize = 4096;

/// A notification as every push service is given it: the message's content with `push`
/// applied. Its JSON size is what the 4 KB limit is checked against at accept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushNotification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    pub badge: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
}

impl PushNotification {
    /// `title`/`body`/`data` of the message, each overridden by `push`.
    pub fn of(
        title: Option<&str>,
        body: Option<&str>,
        data: Option<&serde_json::Value>,
        push: Option<&PushContent>,
    ) -> PushNotification {
        let pick = |own: Option<&str>, over: Option<&String>| {
            over.cloned().or_else(|| own.map(str::to_string))
        };
        let data = push
            .and_then(|p| p.data.as_ref())
            .or(data)
            .and_then(|d| d.as_object().cloned());
        PushNotification {
            title: pick(title, push.and_then(|p| p.title.as_ref())),
            body: pick(body, push.and_then(|p| p.body.as_ref())),
            data,
            badge: push.and_then(|p| p.badge),
            sound: push.and_then(|p| p.sound.clone()),
            collapse_key: push.and_then(|p| p.collapse_key.clone()),
        }
    }

    /// Refuses a notification over [`MAX_PUSH_BYTES`], saying which part is too big.
    pub fn check_size(&self) -> Result<(), String> {
        let total = json_len(self);
        if total <= MAX_PUSH_BYTES {
            return Ok(());
        }
        let mut parts = [
            ("title", self.title.as_ref().map_or(0, json_len)),
            ("body", self.body.as_ref().map_or(0, json_len)),
            ("data", self.data.as_ref().map_or(0, json_len)),
        ];
        parts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        Err(format!(
            "the push payload is {total} bytes, over the {MAX_PUSH_BYTES} that FCM, APNs and Web Push take: {} is {} bytes ({} {}, {} {})",
            parts[0].0, parts[0].1, parts[1].0, parts[1].1, parts[2].0, parts[2].1
        ))
    }
}

fn json_len<T: Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// `POST /v1/messages` (and a `herald.send` publish).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendRequest {
    #[schema(min_items = 1, max_items = 1000)]
    pub to: Vec<RecipientSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelKind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    #[schema(minimum = 1)]
    pub ttl_s: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::whole::option"
    )]
    #[schema(minimum = 1, maximum = 300000)]
    pub ack_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatContent>,
    /// A stored template (SPEC §8) rendered per recipient; then `title`/`body` are not
    /// required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub template: Option<String>,
    /// The template's variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub vars: Option<serde_json::Map<String, serde_json::Value>>,
    /// The locale for recipients whose profile has none (BCP 47, e.g. `zh-CN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 35,
        pattern = r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?$"
    )]
    pub locale: Option<String>,
    /// What kind of message this is (SPEC §9): preferences, caps and critical bypasses go
    /// by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub category: Option<String>,
    /// Deliver at (RFC 3339, at most a year ahead; past means now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub send_at: Option<String>,
    /// Groups messages for `POST /v1/messages/cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub cancel_key: Option<String>,
    /// After an in-app delivery, go on to more channels unless it is read (or acked) in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate: Option<Escalate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// What `escalate.unless` waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalateUnless {
    /// A session reported the message read.
    #[default]
    Read,
    /// A session acked the message (it reached the app).
    Ack,
}

/// SPEC §9: `{"after_s":600,"unless":"read","channels":["email"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalate {
    #[schema(minimum = 1, maximum = 604800)]
    #[serde(deserialize_with = "super::whole::required")]
    pub after_s: u64,
    #[serde(default)]
    pub unless: EscalateUnless,
    #[schema(min_items = 1)]
    pub channels: Vec<ChannelKind>,
}

/// Checks a `cancel_key`: 1–128 characters (code points, as the schema counts), no
/// control characters.
pub fn validate_cancel_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().count() > 128 || key.chars().any(char::is_control) {
        return Err("'cancel_key' must be 1-128 characters, no control characters".into());
    }
    Ok(())
}

/// The longest `send_at` ahead of now.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 366 * 86_400_000;
/// The longest escalation wait (a week).
pub const MAX_ESCALATE_S: u64 = 7 * 86_400;

impl SendRequest {
    /// Checks everything the contract requires; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.to.is_empty() {
            return Err("'to' must name at least one recipient".into());
        }
        if self.to.len() > MAX_RECIPIENTS {
            return Err(format!(
                "'to' names {} recipients; the limit is {MAX_RECIPIENTS}",
                self.to.len()
            ));
        }
        for (i, r) in self.to.iter().enumerate() {
            validate_user_id(r.user_id()).map_err(|e| format!("to[{i}]: {e}"))?;
            if let RecipientSpec::Inline(r) = r {
                if let Some(email) = &r.email {
                    validate_email(email).map_err(|e| format!("to[{i}].email: {e}"))?;
                }
                if let Some(phone) = &r.phone {
                    validate_phone(phone).map_err(|e| format!("to[{i}].phone: {e}"))?;
                }
            }
        }
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if self.template.is_none() && blank(&self.title) && blank(&self.body) {
            return Err("one of 'title', 'body' or 'template' is required".into());
        }
        if let Some(name) = &self.template {
            super::validate_template_name(name).map_err(|e| format!("template: {e}"))?;
        } else if self.vars.is_some() {
            return Err("'vars' is for a 'template'".into());
        }
        if let Some(locale) = &self.locale {
            super::validate_locale(locale).map_err(|e| format!("locale: {e}"))?;
        }
        if let Some(category) = &self.category {
            validate_category(category)?;
        }
        if let Some(key) = &self.cancel_key {
            validate_cancel_key(key)?;
        }
        if let Some(at) = &self.send_at
            && crate::time::parse_rfc3339(at).is_none()
        {
            return Err(format!(
                "'send_at' '{at}' is not an RFC 3339 time like 2026-12-24T09:00:00+01:00"
            ));
        }
        if let Some(e) = &self.escalate {
            if !(1..=MAX_ESCALATE_S).contains(&e.after_s) {
                return Err(format!(
                    "escalate.after_s must be between 1 and {MAX_ESCALATE_S}"
                ));
            }
            validate_channels(&e.channels).map_err(|m| format!("escalate.channels: {m}"))?;
            if e.channels.contains(&ChannelKind::InApp) {
                return Err("escalate.channels: escalation goes beyond in_app".into());
            }
        }
        if self
            .data
            .as_ref()
            .is_some_and(|d| !d.is_object() && !d.is_null())
        {
            return Err("'data' must be a JSON object".into());
        }
        if let Some(channels) = &self.channels {
            validate_channels(channels).map_err(|e| format!("channels: {e}"))?;
        }
        if self.ttl_s == Some(0) {
            return Err("'ttl_s' must be at least 1".into());
        }
        if let Some(ms) = self.ack_timeout_ms
            && !(1..=MAX_ACK_TIMEOUT_MS).contains(&ms)
        {
            return Err(format!(
                "'ack_timeout_ms' must be between 1 and {MAX_ACK_TIMEOUT_MS}"
            ));
        }
        if let Some(push) = &self.push {
            push.validate().map_err(|e| format!("push.{e}"))?;
        }
        if let Some(chat) = &self.chat {
            for (field, text) in [("text", &chat.text), ("markdown", &chat.markdown)] {
                if text.as_ref().is_some_and(|t| t.len() > MAX_CHAT_TEXT) {
                    return Err(format!(
                        "chat.{field} is over {MAX_CHAT_TEXT} bytes (robots refuse longer)"
                    ));
                }
            }
        }
        if let Some(key) = &self.idempotency_key {
            validate_idempotency_key(key)?;
        }
        Ok(())
    }
}

/// A message category (SPEC §9): `[a-z0-9_-]`, 1–64 characters.
pub fn validate_category(category: &str) -> Result<(), String> {
    if category.is_empty()
        || category.len() > 64
        || !category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "category '{category}' must be 1-64 characters of [a-z0-9_-]"
        ));
    }
    Ok(())
}

/// The longest chat text (WeCom takes 4096 bytes of markdown; DingTalk and Feishu more).
pub const MAX_CHAT_TEXT: usize = 4000;

impl PushContent {
    fn validate(&self) -> Result<(), String> {
        if self.data.as_ref().is_some_and(|d| !d.is_object()) {
            return Err("data must be a JSON object".into());
        }
        if let Some(key) = &self.collapse_key
            && (key.is_empty()
                || key.len() > 32
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err("collapse_key must be 1-32 characters of [A-Za-z0-9_-]".into());
        }
        if self
            .sound
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 64)
        {
            return Err("sound must be 1-64 characters".into());
        }
        if self.badge.is_some_and(|b| b > 99_999) {
            return Err("badge must be at most 99999".into());
        }
        Ok(())
    }
}

/// Checks a channel list: not empty, no repeats.
pub fn validate_channels(channels: &[ChannelKind]) -> Result<(), String> {
    if channels.is_empty() {
        return Err("at least one channel is required".into());
    }
    for (i, c) in channels.iter().enumerate() {
        if channels[..i].contains(c) {
            return Err(format!("'{c}' is listed twice"));
        }
    }
    Ok(())
}

pub fn validate_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} bytes"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("idempotency key must not contain control characters".into());
    }
    Ok(())
}

/// A light check: one `@` with text on both sides, no spaces; the SMTP server decides the rest.
pub fn validate_email(email: &str) -> Result<(), String> {
    let ok = email.chars().count() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(format!("'{email}' is not an email address"))
    }
}

/// E.164: `+` then 6–15 digits.
pub fn validate_phone(phone: &str) -> Result<(), String> {
    let digits = phone.strip_prefix('+').unwrap_or("");
    if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!(
            "'{phone}' is not an E.164 phone number like +15550001111"
        ))
    }
}

/// `202` answer to an accepted send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Accepted {
    pub id: String,
    pub status: String,
    pub recipients: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub channel: ChannelKind,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub at: String,
    /// The configured name of the provider that answered (offline channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `push`: what each device's push came to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub user_id: String,
    pub status: RecipientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    pub attempts: Vec<AttemptView>,
    /// Extension: when a live session reported the message as read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

/// `GET /v1/messages/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: String,
    pub status: MessageStatus,
    pub created_at: String,
    /// Extension: the message's priority.
    pub priority: Priority,
    /// The name of the API key that sent it (SPEC §11); absent for `herald.send`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub recipients: Vec<RecipientView>,
}

/// A recipient whose delivery ended `failed` or `expired` (extension:
/// `GET /v1/dead-letters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The message id.
    pub id: String,
    pub user_id: String,
    pub status: RecipientStatus,
    /// When it ended.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub attempts: Vec<AttemptView>,
}

/// A page of dead letters, newest first; pass `next` as `before` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    pub next: Option<String>,
}

/// `GET /v1/messages?user=…` (extension).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    pub items: Vec<MessageView>,
}

/// `POST /v1/topics/{topic}/messages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicPublish {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

impl TopicPublish {
    /// One of `title`, `body` (not blank) or `data` (an object) is required.
    pub fn validate(&self) -> Result<(), String> {
        if self.data.as_ref().is_some_and(|d| !d.is_object()) {
            return Err("data must be a JSON object".into());
        }
        let blank = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&self.title) && blank(&self.body) && self.data.is_none() {
            return Err("one of 'title', 'body' or 'data' is required".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicAccepted {
    pub id: String,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> SendRequest {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn a_topic_message_needs_content_and_an_object_for_data() {
        let t = |v: serde_json::Value| {
            serde_json::from_value::<TopicPublish>(v)
                .unwrap()
                .validate()
        };
        assert_eq!(
            t(json!({"title": "", "body": "", "data": [null, null]})),
            Err("data must be a JSON object".into())
        );
        assert!(t(json!({"title": " ", "body": ""})).is_err());
        assert!(t(json!({"data": {"k": 1}})).is_ok());
        assert!(t(json!({"title": "Hi"})).is_ok());
    }

    #[test]
    fn the_spec_example_parses_and_validates() {
        let req = parse(json!({
            "to": ["alice", {"user_id": "bob", "email": "bob@example.com", "phone": "+15550001111"}],
            "title": "Order shipped", "body": "Your order #42 is on its way",
            "data": {"order_id": 42}, "channels": ["in_app", "email", "sms"],
            "strategy": "fallback", "priority": "normal", "ttl_s": 86400, "ack_timeout_ms": 3000,
            "email": {"subject": "Order shipped", "text": "…", "html": "…"},
            "sms": {"text": "Order #42 shipped"}, "idempotency_key": "order-42-shipped"
        }));
        assert_eq!(req.validate(), Ok(()));
        assert_eq!(req.to[1].user_id(), "bob");
        assert_eq!(req.priority, Some(Priority::Normal));
    }

    #[test]
    fn refuses_what_the_contract_refuses() {
        let bad = [
            json!({"to": [], "title": "x"}),
            json!({"to": ["a"]}),
            json!({"to": ["a"], "title": "  "}),
            json!({"to": ["a b"], "title": "x"}),
            json!({"to": ["a"], "title": "x", "channels": []}),
            json!({"to": ["a"], "title": "x", "channels": ["sms", "sms"]}),
            json!({"to": ["a"], "title": "x", "ttl_s": 0}),
            json!({"to": ["a"], "title": "x", "ack_timeout_ms": 0}),
            json!({"to": [{"user_id": "a", "email": "nope"}], "title": "x"}),
            json!({"to": [{"user_id": "a", "phone": "555"}], "title": "x"}),
        ];
        for v in bad {
            assert!(parse(v.clone()).validate().is_err(), "{v}");
        }
        assert!(
            serde_json::from_value::<SendRequest>(json!({"to": ["a"], "channels": ["fax"]}))
                .is_err()
        );
    }
}

/// `POST /v1/messages/cancel` (SPEC §10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub cancel_key: String,
}

/// The answer to a cancel: how many recipients it stopped (those not yet attempted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Canceled {
    pub canceled: u32,
}
