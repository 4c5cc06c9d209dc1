//! The generic SMS provider (SPEC §2): `POST <url>` with JSON `{"to","from","text"}` and
//! `Authorization: Bearer <token>`.

use async_trait::async_trait;
use herald_common::config::SmsProviderConfig;
use serde_json::json;

use super::{Sms, SmsProvider, answer_detail, classify_status};
use crate::channels::providers::Verdict;
use crate::channels::transport_error;

pub struct Generic {
    http: reqwest::Client,
    config: SmsProviderConfig,
}

impl Generic {
    pub fn new(http: reqwest::Client, config: SmsProviderConfig) -> Generic {
        Generic { http, config }
    }
}

#[async_trait]
impl SmsProvider for Generic {
    async fn send(&self, sms: &Sms<'_>) -> Verdict {
        let Some(url) = self.config.url.as_deref() else {
            return Verdict::permanent("no SMS URL");
        };
        let mut req = self
            .http
            .post(url)
            .header("Idempotency-Key", sms.id)
            .json(&json!({"to": sms.to, "from": self.config.from, "text": sms.text}));
        if let Some(token) = &self.config.token {
            req = req.bearer_auth(token.expose());
        }
        match req.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                classify_status(status, answer_detail(status, &body))
            }
            Err(e) => transport_error(e),
        }
    }
}
