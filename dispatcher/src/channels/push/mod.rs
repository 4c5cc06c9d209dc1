//! The `push` channel (SPEC §7): one attempt per recipient goes to every active device of
//! the user at once — FCM for Android, APNs for iOS, Web Push for browsers — and is `sent`
//! when any device's provider accepted it. Each device's result is recorded on the attempt;
//! a device its provider reports gone is deactivated at once; a retry after a transient
//! failure goes only to the devices that did not get it.

pub mod apns;
pub mod fcm;
pub mod keys;
pub mod webpush;

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;
use herald_common::api::{
    ChannelKind, DeviceAddress, DeviceOutcome, Outcome, Platform, Priority, PushNotification,
};
use herald_common::time::now_ms;
use herald_engine::{DeviceRecord, Devices};

use super::providers::{Providers, Routed, Verdict};
use super::{AttemptResult, Channel, Delivery};

/// One notification for one device.
pub struct PushRequest<'a> {
    pub device: &'a DeviceRecord,
    pub notification: &'a PushNotification,
    pub message_id: &'a str,
    pub priority: Priority,
    /// Seconds the push service may keep it for an unreachable device.
    pub ttl_s: Option<u64>,
}

/// One push provider (an FCM project, an APNs key, a VAPID key).
#[async_trait]
pub trait PushProvider: Send + Sync {
    async fn send(&self, req: &PushRequest<'_>) -> Verdict;
}

/// The push providers of each platform.
pub struct PushProviders {
    pub fcm: Providers<Box<dyn PushProvider>>,
    pub apns: Providers<Box<dyn PushProvider>>,
    pub webpush: Providers<Box<dyn PushProvider>>,
}

impl PushProviders {
    fn of(&self, platform: Platform) -> &Providers<Box<dyn PushProvider>> {
        match platform {
            Platform::Fcm => &self.fcm,
            Platform::Apns => &self.apns,
            Platform::Webpush => &self.webpush,
        }
    }
}

pub struct Push {
    devices: Arc<dyn Devices>,
    providers: PushProviders,
}

impl Push {
    pub fn new(devices: Arc<dyn Devices>, providers: PushProviders) -> Push {
        Push { devices, providers }
    }
}

/// A device's result, and whether the device is done with for this message.
struct DeviceResult {
    outcome: DeviceOutcome,
    done: bool,
    retry_after: Option<std::time::Duration>,
}

fn device_result(device: &DeviceRecord, routed: Routed) -> (DeviceResult, Option<String>) {
    let provider = routed.provider.clone();
    let detail = routed.detail();
    let (outcome, done, gone) = match &routed.verdict {
        Verdict::Sent { .. } => (Outcome::Sent, true, None),
        Verdict::Transient { .. } => (Outcome::TransientError, false, None),
        Verdict::Failover { .. } | Verdict::Permanent { .. } => {
            (Outcome::PermanentError, true, None)
        }
        Verdict::Gone { reason } => (Outcome::PermanentError, true, Some(reason.clone())),
    };
    let retry_after = match &routed.verdict {
        Verdict::Transient { retry_after, .. } => *retry_after,
        _ => None,
    };
    let result = DeviceResult {
        outcome: DeviceOutcome {
            device_id: device.device_id.clone(),
            outcome,
            provider,
            detail,
        },
        done,
        retry_after,
    };
    (result, gone)
}

#[async_trait]
impl Channel for Push {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Push
    }

    async fn attempt(&self, d: &Delivery<'_>) -> AttemptResult {
        let user = &d.recipient.user_id;
        let devices = match self.devices.devices(user).await {
            Ok(list) => list,
            Err(e) => {
                return AttemptResult::new(Outcome::TransientError, format!("devices: {e}"));
            }
        };
        let active: Vec<&DeviceRecord> = devices.iter().filter(|d| d.active).collect();
        if active.is_empty() {
            return AttemptResult::new(Outcome::Skipped, "no active device".to_string());
        }
        let todo: Vec<&DeviceRecord> = active
            .iter()
            .copied()
            .filter(|dev| !d.state.done_devices.contains(&dev.device_id))
            .collect();
        let m = d.message;
        let notification = PushNotification::of(
            m.title.as_deref(),
            m.body.as_deref(),
            m.data
                .as_ref()
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .as_ref(),
            m.push.as_ref(),
        );
        let sent_at = now_ms();
        let ttl_s = m.expires_at.map(|e| ((e - sent_at).max(0) / 1000) as u64);
        let results = join_all(todo.iter().map(|device| {
            let notification = &notification;
            async move {
                let platform = device.address.platform();
                let providers = self.providers.of(platform);
                if providers.is_empty() {
                    let outcome = DeviceOutcome {
                        device_id: device.device_id.clone(),
                        outcome: Outcome::Skipped,
                        provider: None,
                        detail: Some(format!("no {platform} provider is configured")),
                    };
                    return DeviceResult {
                        outcome,
                        done: true,
                        retry_after: None,
                    };
                }
                let req = PushRequest {
                    device,
                    notification,
                    message_id: &m.id,
                    priority: m.priority,
                    ttl_s,
                };
                let routed = providers.send(|p| p.send(&req)).await;
                let (result, gone) = device_result(device, routed);
                if let Some(reason) = gone {
                    self.deactivate(user, device, &reason, sent_at).await;
                }
                result
            }
        }))
        .await;
        aggregate(results, &d.state.done_devices)
    }
}

impl Push {
    async fn deactivate(&self, user: &str, device: &DeviceRecord, reason: &str, sent_at: i64) {
        let platform = device.address.platform();
        let reason = format!("{platform}: {reason}");
        match self
            .devices
            .deactivate_device(user, &device.device_id, &reason, sent_at)
            .await
        {
            Ok(true) => {
                metrics::counter!("herald_push_devices_deactivated_total", "platform" => platform.as_str())
                    .increment(1);
                tracing::info!(user_id = %user, device_id = %device.device_id, reason = %reason, "device deactivated");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user_id = %user, device_id = %device.device_id, error = %e, "could not deactivate a device")
            }
        }
    }
}

/// The attempt all devices make: sent if any accepted; else transient if any may succeed
/// later; else permanent.
fn aggregate(results: Vec<DeviceResult>, already_done: &[String]) -> AttemptResult {
    let any = |o: Outcome| results.iter().any(|r| r.outcome.outcome == o);
    let outcome = if any(Outcome::Sent) {
        Outcome::Sent
    } else if any(Outcome::TransientError) {
        Outcome::TransientError
    } else if results.is_empty() {
        // A retry with every device already done with (it cannot come to this, as a
        // finished device set ends the attempt): nothing left to send to.
        Outcome::PermanentError
    } else if results
        .iter()
        .all(|r| r.outcome.outcome == Outcome::Skipped)
    {
        Outcome::Skipped
    } else {
        Outcome::PermanentError
    };
    let count = |o: Outcome| results.iter().filter(|r| r.outcome.outcome == o).count();
    let detail = format!(
        "{} of {} devices: {} sent, {} transient, {} failed",
        results.len(),
        results.len() + already_done.len(),
        count(Outcome::Sent),
        count(Outcome::TransientError),
        count(Outcome::PermanentError) + count(Outcome::Skipped),
    );
    let provider = results
        .iter()
        .find(|r| r.outcome.outcome == Outcome::Sent)
        .and_then(|r| r.outcome.provider.clone());
    let retry_after = results.iter().filter_map(|r| r.retry_after).max();
    let mut done_devices = already_done.to_vec();
    done_devices.extend(
        results
            .iter()
            .filter(|r| r.done)
            .map(|r| r.outcome.device_id.clone()),
    );
    AttemptResult {
        provider,
        devices: results.into_iter().map(|r| r.outcome).collect(),
        done_devices,
        retry_after,
        ..AttemptResult::new(outcome, detail)
    }
}

/// FCM `data` values must be strings: strings stay, anything else is its JSON text.
pub fn string_values(
    data: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Map<String, serde_json::Value> {
    data.map(|d| {
        d.iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), serde_json::Value::String(s))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The device's token, for the providers that take one.
pub fn token_of(device: &DeviceRecord) -> Option<&str> {
    match &device.address {
        DeviceAddress::Fcm { token } | DeviceAddress::Apns { token, .. } => Some(token),
        DeviceAddress::Webpush { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, outcome: Outcome, done: bool) -> DeviceResult {
        DeviceResult {
            outcome: DeviceOutcome {
                device_id: id.into(),
                outcome,
                provider: Some("p".into()),
                detail: None,
            },
            done,
            retry_after: None,
        }
    }

    #[test]
    fn any_accepted_device_makes_it_sent_and_retries_go_to_the_rest() {
        let a = aggregate(
            vec![
                r("phone", Outcome::Sent, true),
                r("tablet", Outcome::PermanentError, true),
            ],
            &[],
        );
        assert_eq!(a.outcome, Outcome::Sent);
        assert_eq!(a.done_devices, ["phone", "tablet"]);
        let b = aggregate(
            vec![
                r("phone", Outcome::TransientError, false),
                r("old", Outcome::PermanentError, true),
            ],
            &["watch".to_string()],
        );
        assert_eq!(b.outcome, Outcome::TransientError);
        assert_eq!(
            b.done_devices,
            ["watch", "old"],
            "only the transient one is retried"
        );
        let c = aggregate(vec![r("x", Outcome::PermanentError, true)], &[]);
        assert_eq!(c.outcome, Outcome::PermanentError);
    }

    #[test]
    fn fcm_data_values_become_strings() {
        let data = serde_json::json!({"order": 42, "ok": true, "name": "x", "nested": {"a": 1}});
        let out = string_values(data.as_object());
        assert_eq!(out["order"], "42");
        assert_eq!(out["ok"], "true");
        assert_eq!(out["name"], "x");
        assert_eq!(out["nested"], "{\"a\":1}");
    }
}
