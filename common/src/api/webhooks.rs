//! Status webhooks (SPEC §11): what a backend registers, and what the API shows of them.

use serde::{Deserialize, Serialize};

use crate::config::check_http_url;

/// The events a webhook may ask for: every final recipient status, and `read`.
pub const WEBHOOK_EVENTS: &[&str] = &[
    "delivered",
    "sent",
    "failed",
    "expired",
    "canceled",
    "skipped",
    "read",
];

/// The longest webhook URL.
pub const MAX_WEBHOOK_URL: usize = 2048;

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    /// Where events are POSTed.
    #[schema(
        pattern = r"^https?://[^/\s\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*$",
        min_length = 8,
        max_length = 2048
    )]
    pub url: String,
    /// Which events: `delivered`, `sent`, `failed`, `expired`, `canceled`, `skipped`,
    /// `read`, or `*` for all.
    #[schema(min_items = 1, max_items = 8)]
    pub events: Vec<WebhookEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub description: Option<String>,
}

/// An event name, or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(value_type = String, pattern = "^(delivered|sent|failed|expired|canceled|skipped|read|\\*)$")]
pub struct WebhookEvent(pub String);

impl WebhookCreate {
    pub fn validate(&self) -> Result<(), String> {
        if self.url.len() > MAX_WEBHOOK_URL {
            return Err(format!("url: longer than {MAX_WEBHOOK_URL} characters"));
        }
        check_http_url(&self.url).map_err(|e| format!("url {e}"))?;
        if self.events.is_empty() {
            return Err("events: name at least one event (or \"*\")".into());
        }
        if self.events.len() > 8 {
            return Err("events: at most 8".into());
        }
        for e in &self.events {
            if e.0 != "*" && !WEBHOOK_EVENTS.contains(&e.0.as_str()) {
                return Err(format!(
                    "events: unknown event '{}' (expected one of: {}, or *)",
                    e.0,
                    WEBHOOK_EVENTS.join(", ")
                ));
            }
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 200)
        {
            return Err("description: longer than 200 characters".into());
        }
        Ok(())
    }
}

/// A webhook as the API shows it; `secret` only in the answer to its creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
    /// The signing secret (`whsec_…`): shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Set once the endpoint kept failing past its last retry; `POST …/enable` resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<WebhookDisabled>,
    /// Deliveries waiting or in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDisabled {
    pub at: String,
    pub reason: String,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// One POST of one event, in a webhook's delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAttemptView {
    /// The `webhook-id` header: the same on every retry of one event.
    pub webhook_id: String,
    pub event: String,
    pub message_id: String,
    pub attempt: u32,
    pub at: String,
    /// `delivered`, `retrying` or `failed` (retries used up).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookDeliveries {
    pub deliveries: Vec<WebhookAttemptView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(url: &str, events: &[&str]) -> WebhookCreate {
        WebhookCreate {
            url: url.into(),
            events: events.iter().map(|e| WebhookEvent(e.to_string())).collect(),
            description: None,
        }
    }

    #[test]
    fn urls_and_events_are_checked_naming_the_field() {
        assert!(
            create("https://hooks.example.com/h", &["sent", "read"])
                .validate()
                .is_ok()
        );
        assert!(create("http://127.0.0.1:9/h", &["*"]).validate().is_ok());
        let e = create("ftp://x/h", &["sent"]).validate().unwrap_err();
        assert!(e.starts_with("url") && e.contains("http://"), "{e}");
        let e = create("https:///h", &["sent"]).validate().unwrap_err();
        assert!(e.starts_with("url") && e.contains("no host"), "{e}");
        let e = create("https://x/h", &[]).validate().unwrap_err();
        assert!(e.starts_with("events"), "{e}");
        let e = create("https://x/h", &["sent", "opened"])
            .validate()
            .unwrap_err();
        assert!(e.starts_with("events") && e.contains("'opened'"), "{e}");
    }
}
