//! Several providers per channel: which one goes first (by weight), failover to the next on
//! a transient error or an open circuit — at once, before any backoff — and a circuit per
//! provider that opens after repeated transient failures and half-opens after a cool-down.
//! Written once for every channel; a provider itself only turns one request into one
//! [`Verdict`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_common::api::{ChannelKind, CircuitState, ProviderHealth};
use herald_common::config::{CircuitConfig, ProviderName};

/// What one provider said about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Accepted (with the provider's id for it, when it gave one).
    Sent { id: Option<String> },
    /// Try again later (rate limit, outage, timeout); `retry_after` when the provider said.
    Transient {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// This provider cannot take it (credentials, balance, quota): the next one may.
    Failover { detail: String },
    /// Refused for good (bad address, bad content): no provider will take it.
    Permanent { detail: String },
    /// The device (or subscription) no longer exists: deactivate it.
    Gone { reason: String },
}

impl Verdict {
    pub fn transient(detail: impl Into<String>) -> Verdict {
        Verdict::Transient {
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn permanent(detail: impl Into<String>) -> Verdict {
        Verdict::Permanent {
            detail: detail.into(),
        }
    }

    pub fn detail(&self) -> Option<&str> {
        match self {
            Verdict::Sent { id } => id.as_deref(),
            Verdict::Transient { detail, .. }
            | Verdict::Failover { detail }
            | Verdict::Permanent { detail } => Some(detail),
            Verdict::Gone { reason } => Some(reason),
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Verdict::Sent { .. } => "sent",
            Verdict::Transient { .. } => "transient",
            Verdict::Failover { .. } => "failover",
            Verdict::Permanent { .. } => "permanent",
            Verdict::Gone { .. } => "gone",
        }
    }
}

#[derive(Debug)]
enum Circuit {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial request is out; others skip this provider until it answers.
    HalfOpen,
}

/// One provider's circuit and counters.
#[derive(Debug)]
pub struct Health {
    circuit: Mutex<Circuit>,
    config: CircuitConfig,
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Health {
    fn new(config: CircuitConfig) -> Health {
        Health {
            circuit: Mutex::new(Circuit::Closed { failures: 0 }),
            config,
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Whether a request may go to this provider now (taking the half-open trial if so).
    fn admit(&self, now: Instant) -> Result<(), Instant> {
        let Ok(mut c) = self.circuit.lock() else {
            return Ok(());
        };
        match *c {
            Circuit::Closed { .. } => Ok(()),
            Circuit::Open { until } if now >= until => {
                *c = Circuit::HalfOpen;
                Ok(())
            }
            Circuit::Open { until } => Err(until),
            // The trial is out: wait for its answer.
            Circuit::HalfOpen => Err(now + Duration::from_secs(1)),
        }
    }

    /// Counts an answer: transient failures (and failovers) in a row open the circuit; any
    /// other answer means the provider works.
    fn record(&self, verdict: &Verdict, now: Instant) {
        let failing = matches!(
            verdict,
            Verdict::Transient { .. } | Verdict::Failover { .. }
        );
        if matches!(verdict, Verdict::Sent { .. }) {
            self.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut c) = self.circuit.lock() else {
            return;
        };
        *c = match (&*c, failing) {
            (_, false) => Circuit::Closed { failures: 0 },
            (Circuit::Closed { failures }, true) if failures + 1 < self.config.failures => {
                Circuit::Closed {
                    failures: failures + 1,
                }
            }
            (_, true) => Circuit::Open {
                until: now + self.config.cooldown,
            },
        };
    }

    pub fn state(&self) -> CircuitState {
        match self.circuit.lock().map(|c| match *c {
            Circuit::Closed { .. } => CircuitState::Closed,
            Circuit::Open { .. } => CircuitState::Open,
            Circuit::HalfOpen => CircuitState::HalfOpen,
        }) {
            Ok(s) => s,
            Err(_) => CircuitState::Closed,
        }
    }
}

/// One registered provider: its channel, name, kind and health.
type Registered = (ChannelKind, String, &'static str, Arc<Health>);

/// Every provider of every channel, for `/v1/stats` and the console.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Registered>>>,
}

impl Registry {
    pub fn stats(&self) -> Vec<ProviderHealth> {
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries
            .iter()
            .map(|(channel, name, kind, h)| ProviderHealth {
                channel: *channel,
                name: name.clone(),
                kind: kind.to_string(),
                sent: h.sent.load(Ordering::Relaxed),
                failed: h.failed.load(Ordering::Relaxed),
                circuit: h.state(),
            })
            .collect()
    }

    fn add(&self, channel: ChannelKind, name: &str, kind: &'static str, health: Arc<Health>) {
        if let Ok(mut e) = self.entries.lock() {
            e.push((channel, name.to_string(), kind, health));
        }
    }
}

/// One configured provider.
pub struct Provider<P> {
    pub name: String,
    weight: u32,
    pub inner: P,
    health: Arc<Health>,
}

/// The outcome of sending through a channel's providers.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub verdict: Verdict,
    /// The provider whose answer this is (none when every circuit was open).
    pub provider: Option<String>,
    /// What the providers tried before it said, for the attempt's detail.
    pub tried: Vec<String>,
}

impl Routed {
    /// The verdict's detail, after what the failed-over providers said.
    pub fn detail(&self) -> Option<String> {
        let own = self.verdict.detail().map(str::to_string);
        if self.tried.is_empty() {
            return own;
        }
        let mut parts = self.tried.clone();
        if let (Some(p), Some(d)) = (&self.provider, &own) {
            parts.push(format!("{p}: {d}"));
        }
        Some(parts.join("; "))
    }
}

/// A channel's providers, in configuration order.
pub struct Providers<P> {
    channel: ChannelKind,
    list: Vec<Provider<P>>,
}

impl<P> Providers<P> {
    /// Providers built from their configured names; each registers its health.
    pub fn new(
        channel: ChannelKind,
        providers: Vec<(ProviderName, &'static str, P)>,
        circuit: CircuitConfig,
        registry: &Registry,
    ) -> Providers<P> {
        let list = providers
            .into_iter()
            .map(|(id, kind, inner)| {
                let health = Arc::new(Health::new(circuit));
                registry.add(channel, &id.name, kind, Arc::clone(&health));
                Provider {
                    name: id.name,
                    weight: id.weight,
                    inner,
                    health,
                }
            })
            .collect();
        Providers { channel, list }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider<P>> {
        self.list.iter()
    }

    /// The order to try providers in: one picked by weight first, then the others by
    /// weight (heaviest first), weight-0 providers last. `pick` is uniform in [0, 1).
    fn order(&self, pick: f64) -> Vec<&Provider<P>> {
        let total: u64 = self.list.iter().map(|p| u64::from(p.weight)).sum();
        let mut rest: Vec<&Provider<P>> = self.list.iter().collect();
        rest.sort_by_key(|p| std::cmp::Reverse(p.weight));
        if total == 0 {
            return rest;
        }
        let mut point = (pick.clamp(0.0, 1.0) * total as f64) as u64;
        let first = self
            .list
            .iter()
            .position(|p| {
                let w = u64::from(p.weight);
                if point < w {
                    true
                } else {
                    point -= w;
                    false
                }
            })
            .unwrap_or(0);
        let first = &self.list[first];
        rest.retain(|p| !std::ptr::eq(*p, first));
        rest.insert(0, first);
        rest
    }

    /// Sends through the providers: the first by weight, then on down the list while a
    /// provider answers transient or failover, skipping open circuits.
    pub async fn send<'a, F, Fut>(&'a self, mut attempt: F) -> Routed
    where
        F: FnMut(&'a P) -> Fut,
        Fut: Future<Output = Verdict>,
    {
        let mut tried = Vec::new();
        let mut reopens: Option<Instant> = None;
        let mut last: Option<(Verdict, String)> = None;
        let mut any_transient = false;
        for p in self.order(rand::random::<f64>()) {
            if let Err(until) = p.health.admit(Instant::now()) {
                reopens = Some(reopens.map_or(until, |r| r.min(until)));
                tried.push(format!("{}: circuit open", p.name));
                continue;
            }
            let verdict = attempt(&p.inner).await;
            p.health.record(&verdict, Instant::now());
            metrics::counter!("herald_provider_requests_total", "channel" => self.channel.as_str(), "provider" => p.name.clone(), "result" => verdict.label())
                .increment(1);
            let failing = matches!(
                verdict,
                Verdict::Transient { .. } | Verdict::Failover { .. }
            );
            any_transient |= matches!(verdict, Verdict::Transient { .. });
            // What the provider before this one said goes on the trail.
            if let Some((v, name)) = last.take() {
                tried.push(format!("{name}: {}", v.detail().unwrap_or("failed")));
            }
            if !failing {
                return Routed {
                    verdict,
                    provider: Some(p.name.clone()),
                    tried,
                };
            }
            last = Some((verdict, p.name.clone()));
        }
        match last {
            // Every provider failed: the last one's answer stands, except that when the
            // last could not take it (failover) but an earlier one only failed for now, the
            // whole is worth a retry.
            Some((Verdict::Failover { detail }, name)) if any_transient => Routed {
                verdict: Verdict::transient(detail),
                provider: Some(name),
                tried,
            },
            Some((verdict, name)) => Routed {
                verdict,
                provider: Some(name),
                tried,
            },
            None => Routed {
                verdict: Verdict::Transient {
                    detail: "every provider's circuit is open".into(),
                    retry_after: reopens.map(|r| r.saturating_duration_since(Instant::now())),
                },
                provider: None,
                tried: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CircuitConfig {
        CircuitConfig {
            failures: 2,
            cooldown: Duration::from_millis(50),
        }
    }

    fn providers(weights: &[(&str, u32)]) -> Providers<String> {
        let list = weights
            .iter()
            .map(|(n, w)| {
                (
                    ProviderName {
                        name: n.to_string(),
                        weight: *w,
                    },
                    "test",
                    n.to_string(),
                )
            })
            .collect();
        Providers::new(ChannelKind::Sms, list, config(), &Registry::default())
    }

    #[test]
    fn the_first_is_picked_by_weight_and_the_rest_follow_heaviest_first() {
        let p = providers(&[("a", 1), ("b", 3), ("c", 0)]);
        let names = |pick| {
            p.order(pick)
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0.0), ["a", "b", "c"]);
        assert_eq!(names(0.3), ["b", "a", "c"]);
        assert_eq!(names(0.99), ["b", "a", "c"]);
        let zero = providers(&[("x", 0), ("y", 0)]);
        assert_eq!(zero.order(0.5).len(), 2);
    }

    #[tokio::test]
    async fn a_transient_error_moves_to_the_next_provider_at_once() {
        let p = providers(&[("primary", 1), ("backup", 0)]);
        let routed = p
            .send(|name| {
                let name = name.clone();
                async move {
                    if name == "primary" {
                        Verdict::transient("HTTP 503")
                    } else {
                        Verdict::Sent {
                            id: Some("b-1".into()),
                        }
                    }
                }
            })
            .await;
        assert_eq!(routed.provider.as_deref(), Some("backup"));
        assert!(matches!(routed.verdict, Verdict::Sent { .. }));
        assert_eq!(routed.tried, ["primary: HTTP 503"]);
    }

    #[tokio::test]
    async fn a_permanent_error_does_not_fail_over() {
        let p = providers(&[("primary", 1), ("backup", 0)]);
        let routed = p
            .send(|_| async { Verdict::permanent("invalid number") })
            .await;
        assert_eq!(routed.provider.as_deref(), Some("primary"));
        assert!(matches!(routed.verdict, Verdict::Permanent { .. }));
    }

    #[tokio::test]
    async fn a_circuit_opens_after_failures_skips_then_half_opens_and_recovers() {
        let p = providers(&[("primary", 1), ("backup", 0)]);
        let calls = std::sync::Mutex::new(Vec::new());
        let up = std::sync::atomic::AtomicBool::new(false);
        let send = || {
            p.send(|name| {
                calls.lock().unwrap().push(name.clone());
                let primary_up = up.load(Ordering::Relaxed);
                let name = name.clone();
                async move {
                    match (name.as_str(), primary_up) {
                        ("primary", false) => Verdict::transient("HTTP 503"),
                        _ => Verdict::Sent { id: None },
                    }
                }
            })
        };
        for _ in 0..2 {
            assert_eq!(send().await.provider.as_deref(), Some("backup"));
        }
        assert_eq!(p.list[0].health.state(), CircuitState::Open);
        calls.lock().unwrap().clear();
        let routed = send().await;
        assert_eq!(routed.provider.as_deref(), Some("backup"));
        assert_eq!(
            *calls.lock().unwrap(),
            ["backup"],
            "an open circuit is skipped"
        );
        assert_eq!(routed.tried, ["primary: circuit open"]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        up.store(true, Ordering::Relaxed);
        calls.lock().unwrap().clear();
        let routed = send().await;
        assert_eq!(
            routed.provider.as_deref(),
            Some("primary"),
            "half-open: one trial"
        );
        assert_eq!(p.list[0].health.state(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn every_circuit_open_is_transient_until_one_reopens() {
        let p = providers(&[("only", 1)]);
        for _ in 0..2 {
            p.send(|_| async { Verdict::transient("down") }).await;
        }
        let routed = p.send(|_| async { Verdict::Sent { id: None } }).await;
        match routed.verdict {
            Verdict::Transient { retry_after, .. } => {
                assert!(retry_after.is_some_and(|r| r <= Duration::from_millis(50)))
            }
            other => panic!("{other:?}"),
        }
    }
}
