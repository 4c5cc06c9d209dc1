//! Per-API-key rate limiting: a token bucket per key (rate per second, burst of twice that).

use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Vec<Mutex<Bucket>>,
}

impl RateLimiter {
    /// `None` when `per_second` is 0 (unlimited).
    pub fn new(per_second: u32, keys: usize) -> Option<RateLimiter> {
        if per_second == 0 {
            return None;
        }
        let rate = f64::from(per_second);
        let burst = rate * 2.0;
        let now = Instant::now();
        Some(RateLimiter {
            rate,
            burst,
            buckets: (0..keys)
                .map(|_| {
                    Mutex::new(Bucket {
                        tokens: burst,
                        last: now,
                    })
                })
                .collect(),
        })
    }

    /// Takes one token for key `key`; `Err(wait)` says how long until one is available.
    pub fn check(&self, key: usize) -> Result<(), Duration> {
        let Some(bucket) = self.buckets.get(key) else {
            return Ok(());
        };
        let Ok(mut b) = bucket.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses() {
        let r = RateLimiter::new(5, 2).unwrap();
        for _ in 0..10 {
            assert!(r.check(0).is_ok());
        }
        let wait = r.check(0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(r.check(1).is_ok(), "keys are limited separately");
        assert!(RateLimiter::new(0, 1).is_none());
    }
}
