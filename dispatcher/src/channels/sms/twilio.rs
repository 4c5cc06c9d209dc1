//! Twilio (SPEC §2): `POST <url>/2010-04-01/Accounts/<account>/Messages.json`, form fields
//! `To`, `From`, `Body`, HTTP basic auth `account:token`.

use async_trait::async_trait;
use herald_common::config::SmsProviderConfig;

use super::{Sms, SmsProvider, answer_detail, classify_status};
use crate::channels::providers::Verdict;
use crate::channels::transport_error;

pub struct Twilio {
    http: reqwest::Client,
    config: SmsProviderConfig,
}

impl Twilio {
    pub fn new(http: reqwest::Client, config: SmsProviderConfig) -> Twilio {
        Twilio { http, config }
    }
}

#[async_trait]
impl SmsProvider for Twilio {
    async fn send(&self, sms: &Sms<'_>) -> Verdict {
        let Some(base) = self.config.url.as_deref() else {
            return Verdict::permanent("no SMS URL");
        };
        let account = self.config.account.as_deref().unwrap_or_default();
        let url = format!("{base}/2010-04-01/Accounts/{account}/Messages.json");
        let from = self.config.from.as_deref().unwrap_or_default();
        let req = self
            .http
            .post(url)
            .basic_auth(account, self.config.token.as_ref().map(|t| t.expose()))
            .form(&[("To", sms.to), ("From", from), ("Body", sms.text)]);
        match req.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let detail = answer_detail(status, &body);
                // 401/403: this account's credentials; another provider may work.
                if matches!(status.as_u16(), 401 | 403) {
                    return Verdict::Failover { detail };
                }
                classify_status(status, detail)
            }
            Err(e) => transport_error(e),
        }
    }
}
