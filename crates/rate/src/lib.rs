//! Token bucket with time passed in: message rates in signaling, request
//! rates and bandwidth in TURN.

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
        self.take_n(1, now)
    }

    /// Takes `n` tokens (bytes, say) if there are that many.
    pub fn take_n(&mut self, n: u32, now: Instant) -> bool {
        self.refill(now);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// True when the bucket has refilled completely, i.e. it has not been
    /// used lately and can be forgotten.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
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
    fn byte_budget() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000.0, t0);
        assert!(b.take_n(600, t0));
        assert!(!b.take_n(600, t0));
        assert!(!b.is_full(t0));
        assert!(b.take_n(400, t0));
        assert!(b.take_n(600, t0 + Duration::from_millis(600)));
        assert!(b.is_full(t0 + Duration::from_secs(5)));
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
