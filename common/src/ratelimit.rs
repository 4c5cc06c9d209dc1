//! Token buckets: a rate per second with a burst. One bucket per API key, per WebSocket
//! session (inbound frames) and per source address (connects).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate: per_second,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token; `Err(wait)` says how long until one is available.
    pub fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Whether the bucket has been idle long enough to be full again (safe to forget).
    fn idle(&self, now: Instant) -> bool {
        now.duration_since(self.last).as_secs_f64() * self.rate + self.tokens >= self.burst
    }
}

/// Buckets by key (API key index, source address…), created on first use and forgotten
/// once full again, so the map holds only keys that are busy right now. Each bucket's
/// burst is twice its rate.
pub struct KeyedLimiter<K> {
    /// Per second for keys without a rate of their own; 0 = unlimited.
    default: u32,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    /// `None` when `per_second` is 0 (unlimited).
    pub fn new(per_second: u32) -> Option<KeyedLimiter<K>> {
        (per_second > 0).then(|| KeyedLimiter::with_default(per_second))
    }

    /// A limiter whose keys may each have their own rate ([`check_at`](Self::check_at));
    /// `per_second` is for the others, 0 = unlimited.
    pub fn with_default(per_second: u32) -> KeyedLimiter<K> {
        KeyedLimiter {
            default: per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key`'s bucket at the default rate.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.check_at(key, None)
    }

    /// Takes one token of `key`'s bucket at `per_second` (`None`: the default; 0:
    /// unlimited). A key whose rate changed starts a full bucket at the new rate.
    pub fn check_at(&self, key: &K, per_second: Option<u32>) -> Result<(), Duration> {
        let rate = f64::from(per_second.unwrap_or(self.default));
        if rate == 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 10_000 {
            let now = Instant::now();
            buckets.retain(|_, b| !b.idle(now));
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(rate, rate * 2.0));
        if bucket.rate != rate {
            *bucket = TokenBucket::new(rate, rate * 2.0);
        }
        bucket.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses() {
        let r = KeyedLimiter::new(5).unwrap();
        for _ in 0..10 {
            assert!(r.check(&0).is_ok());
        }
        let wait = r.check(&0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(r.check(&1).is_ok(), "keys are limited separately");
        assert!(KeyedLimiter::<u8>::new(0).is_none());
    }

    #[test]
    fn a_key_may_have_its_own_rate() {
        let r = KeyedLimiter::with_default(0);
        for _ in 0..1000 {
            assert!(r.check(&"plain").is_ok(), "no default: unlimited");
        }
        for _ in 0..6 {
            assert!(r.check_at(&"slow", Some(3)).is_ok());
        }
        assert!(r.check_at(&"slow", Some(3)).is_err(), "burst of twice 3");
        assert!(
            r.check_at(&"slow", Some(100)).is_ok(),
            "a raised rate starts a new bucket"
        );
        let r = KeyedLimiter::with_default(1);
        assert!(r.check_at(&"k", Some(0)).is_ok() && r.check_at(&"k", Some(0)).is_ok());
        assert!(r.check(&"d").is_ok() && r.check(&"d").is_ok());
        assert!(r.check(&"d").is_err(), "the default: 1/s, burst 2");
    }

    #[test]
    fn refills_over_time() {
        let mut b = TokenBucket::new(1000.0, 1.0);
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.take().is_ok());
    }
}
