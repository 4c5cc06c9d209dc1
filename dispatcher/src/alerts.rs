//! The platform's own alerts: a recipient whose delivery finally failed (a dead letter),
//! and a channel whose error rate passes a threshold. Each is announced once — on the
//! metric `herald_alerts_total{kind}`, in the log, and as a JSON POST to
//! `HERALD_ALERT_WEBHOOK` — not once per retry. The webhook URL comes from configuration
//! only; nothing from a message body is ever fetched.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_common::api::{ChannelKind, Outcome, RecipientStatus};
use herald_common::config::AlertConfig;
use herald_common::time::{now_ms, rfc3339};
use serde_json::{Value, json};

/// Per channel: the recent attempts, counted in buckets of a tenth of the window (so an
/// attempt costs O(1) however many there are), and whether an alert is currently raised.
#[derive(Default)]
struct Window {
    /// (bucket start, attempts, errors), oldest first.
    buckets: VecDeque<(Instant, u64, u64)>,
    total: u64,
    errors: u64,
    raised: bool,
}

impl Window {
    fn add(&mut self, now: Instant, failed: bool, window: Duration) {
        let width = window / 10;
        match self.buckets.back_mut() {
            Some((start, n, e)) if now.duration_since(*start) < width => {
                *n += 1;
                *e += u64::from(failed);
            }
            _ => self.buckets.push_back((now, 1, u64::from(failed))),
        }
        self.total += 1;
        self.errors += u64::from(failed);
        while let Some(&(start, n, e)) = self.buckets.front() {
            if now.duration_since(start) <= window {
                break;
            }
            self.buckets.pop_front();
            self.total -= n;
            self.errors -= e;
        }
    }
}

pub struct Alerts {
    config: AlertConfig,
    client: Option<reqwest::Client>,
    windows: Mutex<HashMap<ChannelKind, Window>>,
}

impl Alerts {
    pub fn new(config: AlertConfig) -> Alerts {
        let client = config.webhook.as_ref().and_then(|_| {
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .ok()
        });
        Alerts {
            config,
            client,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt toward its channel's error rate; raises the alert when the rate
    /// crosses the threshold, and re-arms it once the rate falls back below.
    pub fn attempt(&self, channel: ChannelKind, outcome: Outcome) {
        let failed = matches!(outcome, Outcome::TransientError | Outcome::PermanentError);
        let counted = failed || matches!(outcome, Outcome::Sent | Outcome::Acked);
        if !counted {
            return;
        }
        let now = Instant::now();
        let raise = {
            let Ok(mut windows) = self.windows.lock() else {
                return;
            };
            let w = windows.entry(channel).or_default();
            w.add(now, failed, self.config.window);
            let (total, errors) = (w.total as usize, w.errors as usize);
            let rate = errors as f64 / total.max(1) as f64;
            let over = total >= self.config.min_attempts as usize && rate > self.config.error_rate;
            match (over, w.raised) {
                (true, false) => {
                    w.raised = true;
                    Some((errors, total, rate))
                }
                (false, true) if rate <= self.config.error_rate => {
                    w.raised = false;
                    None
                }
                _ => None,
            }
        };
        if let Some((errors, total, rate)) = raise {
            self.raise(
                "channel_error_rate",
                json!({"channel": channel, "errors": errors, "attempts": total,
                       "rate": (rate * 1000.0).round() / 1000.0,
                       "window_s": self.config.window.as_secs(), "threshold": self.config.error_rate}),
            );
        }
    }

    /// A recipient reached a final status; a failure is a dead letter and an alert.
    pub fn finished(
        &self,
        message_id: &str,
        user_id: &str,
        status: RecipientStatus,
        detail: Option<&str>,
    ) {
        if status != RecipientStatus::Failed {
            return;
        }
        metrics::counter!("herald_dead_letters_total").increment(1);
        self.raise(
            "message_failed",
            json!({"id": message_id, "user_id": user_id, "status": status, "last_error": detail}),
        );
    }

    /// A status webhook was disabled: an event's retries were used up.
    pub fn webhook_disabled(&self, id: &str, reason: &str) {
        self.raise("webhook_disabled", json!({"webhook": id, "reason": reason}));
    }

    fn raise(&self, kind: &'static str, details: Value) {
        metrics::counter!("herald_alerts_total", "kind" => kind).increment(1);
        tracing::warn!(alert = kind, details = %details, "alert");
        let (Some(client), Some(url)) = (&self.client, &self.config.webhook) else {
            return;
        };
        let body = json!({"alert": kind, "at": rfc3339(now_ms()), "details": details});
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            for delay in [0u64, 1, 5] {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_secs(delay)).await;
                }
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::warn!(
                        status = r.status().as_u16(),
                        "alert webhook refused the alert"
                    ),
                    Err(e) => tracing::warn!(error = %e, "alert webhook unreachable"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> Alerts {
        Alerts::new(AlertConfig {
            webhook: None,
            error_rate: 0.5,
            min_attempts: 4,
            window: Duration::from_secs(60),
        })
    }

    fn raised(a: &Alerts, c: ChannelKind) -> bool {
        a.windows.lock().unwrap().get(&c).is_some_and(|w| w.raised)
    }

    #[test]
    fn raises_once_past_the_threshold_and_rearms_below() {
        let a = alerts();
        for _ in 0..3 {
            a.attempt(ChannelKind::Sms, Outcome::TransientError);
        }
        assert!(!raised(&a, ChannelKind::Sms), "too few attempts to judge");
        a.attempt(ChannelKind::Sms, Outcome::PermanentError);
        assert!(raised(&a, ChannelKind::Sms));
        for _ in 0..10 {
            a.attempt(ChannelKind::Sms, Outcome::Sent);
        }
        assert!(!raised(&a, ChannelKind::Sms), "re-armed once healthy");
        a.attempt(ChannelKind::Email, Outcome::Offline);
        assert!(
            !raised(&a, ChannelKind::Email),
            "offline is not a channel error"
        );
    }
}
