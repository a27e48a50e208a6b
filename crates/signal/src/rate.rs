//! Token bucket used for per-connection message rate limits.

use std::time::Instant;

/// Holds up to `capacity` tokens and refills `rate` tokens per second.
/// Time is passed in, so tests can drive it with a fake clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, rate: f64, now: Instant) -> Self {
        let capacity = f64::from(capacity.max(1));
        TokenBucket {
            capacity,
            rate: rate.max(0.0),
            tokens: capacity,
            updated: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, 2.0, t0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0));
        // Half a second at 2/s refills one token.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long pause refills only up to the capacity.
        let t2 = t1 + Duration::from_secs(100);
        assert!(b.take(t2) && b.take(t2) && b.take(t2));
        assert!(!b.take(t2));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1.0, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 - Duration::from_secs(5)));
        assert!(b.take(t0 + Duration::from_secs(1)));
    }
}
