//! A fixed-size log-linear latency histogram: exact below 256 ns, then 256
//! buckets per power of two (under 0.4 % relative error), up to about
//! 18 minutes. Recording is an index computation and an increment, so the
//! packet loops never allocate.

const SUB_BITS: u32 = 8;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped to 2^40 ns (about 18 minutes).
const MAX_EXP: u32 = 40;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) << SUB_BITS) as usize;

pub struct Histogram {
    counts: Box<[u32]>,
    total: u64,
    max: u64,
}

fn index(v: u64) -> usize {
    let v = v.min((1 << MAX_EXP) - 1);
    if v < SUB {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() - SUB_BITS;
    (((e + 1) as u64) << SUB_BITS) as usize + ((v >> e) - SUB) as usize
}

/// Middle of bucket `i`, the value reported for it.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = (i >> SUB_BITS) - 1;
    let low = ((i & (SUB - 1)) + SUB) << e;
    low + (1u64 << e) / 2
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0u32; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        let i = index(ns);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.total += 1;
        self.max = self.max.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), in ns; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return value(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_monotonic_and_value_inside_bucket() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(7).chain([1 << 39, (1 << 40) - 1]) {
            let i = index(v);
            assert!(i >= last, "index not monotonic at {v}");
            assert!(i < BUCKETS);
            last = i;
            let mid = value(i);
            let err = (mid as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.004 || v < SUB, "{v} -> bucket {i} value {mid}");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.005, "{p50}");
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.005, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        let mut g = Histogram::new();
        g.merge(&h);
        assert_eq!(g.count(), 1000);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
