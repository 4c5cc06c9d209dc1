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
/// once full again, so the map holds only keys that are busy right now.
pub struct KeyedLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    /// `None` when `per_second` is 0 (unlimited). The burst is twice the rate.
    pub fn new(per_second: u32) -> Option<KeyedLimiter<K>> {
        (per_second > 0).then(|| KeyedLimiter {
            rate: f64::from(per_second),
            burst: f64::from(per_second) * 2.0,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 10_000 {
            let now = Instant::now();
            buckets.retain(|_, b| !b.idle(now));
        }
        buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst))
            .take()
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
    fn refills_over_time() {
        let mut b = TokenBucket::new(1000.0, 1.0);
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.take().is_ok());
    }
}
