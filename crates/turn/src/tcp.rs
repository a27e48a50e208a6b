//! Deadlines and per-source caps for TURN over TCP and TLS, sans-IO.
//!
//! A stream connection costs the server a file descriptor for as long as it
//! stays open, whether or not it ever allocates. [`ConnClock`] decides when
//! one has to go: a connection with no allocation gets
//! [`TcpLimits::allocate_timeout`] from its accept (or from the moment its
//! allocation ended) to make one, and a connection with an allocation is
//! closed after [`TcpLimits::idle_timeout`] without a byte from the client.
//! [`PerIpCap`] bounds how many connections one source address holds at
//! once. Time and allocation state are passed in; the driver
//! (`switchboard::relay`) asks once a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The deadlines of a TURN stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Time from accept (TLS handshake included) to a successful Allocate;
    /// a connection whose allocation is gone (expired, or refreshed to
    /// lifetime 0) gets the same time to make another one.
    pub allocate_timeout: Duration,
    /// Silence from the client, while it has an allocation, before the
    /// connection is closed.
    pub idle_timeout: Duration,
}

impl Default for TcpLimits {
    /// 10 s to allocate (a client allocates within a round trip or two of
    /// connecting), 600 s of silence (the default allocation lifetime:
    /// every client that keeps an allocation refreshes it sooner, and one
    /// that relays also refreshes its permissions every 300 s).
    fn default() -> Self {
        TcpLimits {
            allocate_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Why a connection's time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No allocation within [`TcpLimits::allocate_timeout`].
    NoAllocation,
    /// Nothing from the client for [`TcpLimits::idle_timeout`].
    Idle,
}

/// The clock of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnClock {
    /// When the connection last stood without an allocation: its accept,
    /// or the check that first saw its allocation gone. `None` while it has
    /// one.
    unallocated_since: Option<Instant>,
    last_rx: Instant,
}

impl ConnClock {
    /// A connection accepted at `opened`, with no allocation yet.
    pub fn new(opened: Instant) -> Self {
        ConnClock {
            unallocated_since: Some(opened),
            last_rx: opened,
        }
    }

    /// Bytes arrived from the client.
    pub fn received(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// Whether the connection's time is up at `now`, given whether it has
    /// an allocation now. Sending without allocating does not buy time:
    /// the allocate deadline counts from the accept, not from the last
    /// byte.
    pub fn check(&mut self, now: Instant, allocated: bool, limits: &TcpLimits) -> Option<Expiry> {
        if allocated {
            self.unallocated_since = None;
            return (now.saturating_duration_since(self.last_rx) >= limits.idle_timeout)
                .then_some(Expiry::Idle);
        }
        let since = *self.unallocated_since.get_or_insert(now);
        (now.saturating_duration_since(since) >= limits.allocate_timeout)
            .then_some(Expiry::NoAllocation)
    }
}

/// Concurrent connections per source: an IPv4 address, or an IPv6 /64 (one
/// host's usual share, so a client cannot get round the cap by hopping
/// addresses inside its own prefix). Shared by the acceptors; a slot is
/// held by the connection it was taken for and given back when dropped.
#[derive(Debug)]
pub struct PerIpCap {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under a [`PerIpCap`]; dropping it frees it.
#[derive(Debug)]
pub struct IpSlot {
    cap: Option<Arc<PerIpCap>>,
    key: IpAddr,
}

impl PerIpCap {
    /// At most `max` connections per source; 0 means no cap.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerIpCap {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, or `None` when the source
    /// already holds `max`.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = source_key(ip);
        if self.max == 0 {
            return Some(IpSlot { cap: None, key });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            cap: Some(self.clone()),
            key,
        })
    }

    /// Connections `ip`'s source holds now.
    pub fn held(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&source_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(cap) = &self.cap else { return };
        let mut counts = cap.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limits() -> TcpLimits {
        TcpLimits {
            allocate_timeout: 10 * S,
            idle_timeout: 60 * S,
        }
    }

    #[test]
    fn no_allocation_expires_from_accept_whatever_is_sent() {
        let t0 = Instant::now();
        let l = limits();
        let mut c = ConnClock::new(t0);
        assert_eq!(c.check(t0 + 9 * S, false, &l), None);
        // Binding requests (or garbage) do not buy time.
        c.received(t0 + 9 * S);
        assert_eq!(c.check(t0 + 10 * S, false, &l), Some(Expiry::NoAllocation));
    }

    #[test]
    fn allocated_expires_after_idle_and_activity_extends_it() {
        let t0 = Instant::now();
        let l = limits();
        let mut c = ConnClock::new(t0);
        c.received(t0 + 2 * S);
        assert_eq!(c.check(t0 + 3 * S, true, &l), None);
        // Past the allocate deadline, but allocated: only silence counts.
        assert_eq!(c.check(t0 + 61 * S, true, &l), None);
        c.received(t0 + 61 * S);
        assert_eq!(c.check(t0 + 120 * S, true, &l), None);
        assert_eq!(c.check(t0 + 121 * S, true, &l), Some(Expiry::Idle));
    }

    #[test]
    fn allocation_gone_restarts_the_allocate_deadline() {
        let t0 = Instant::now();
        let l = limits();
        let mut c = ConnClock::new(t0);
        c.received(t0 + S);
        assert_eq!(c.check(t0 + 2 * S, true, &l), None);
        c.received(t0 + 30 * S);
        // The allocation is gone (deleted by a Refresh of lifetime 0).
        assert_eq!(c.check(t0 + 31 * S, false, &l), None);
        assert_eq!(c.check(t0 + 40 * S, false, &l), None);
        assert_eq!(c.check(t0 + 41 * S, false, &l), Some(Expiry::NoAllocation));
        // A new allocation in time saves it.
        let mut c = ConnClock::new(t0);
        assert_eq!(c.check(t0 + S, true, &l), None);
        assert_eq!(c.check(t0 + 20 * S, false, &l), None);
        assert_eq!(c.check(t0 + 25 * S, true, &l), None);
    }

    #[test]
    fn per_ip_cap_counts_slots_until_dropped() {
        let cap = PerIpCap::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = cap.try_acquire(a).unwrap();
        let s2 = cap.try_acquire(a).unwrap();
        assert!(cap.try_acquire(a).is_none());
        let s3 = cap.try_acquire(b).unwrap();
        assert_eq!((cap.held(a), cap.held(b)), (2, 1));
        drop(s1);
        let s4 = cap.try_acquire(a).unwrap();
        drop((s2, s3, s4));
        assert_eq!((cap.held(a), cap.held(b)), (0, 0));
        assert!(cap.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn per_ip_cap_groups_ipv6_by_64_and_unmaps_ipv4() {
        let cap = PerIpCap::new(1);
        let _x = cap.try_acquire("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(cap
            .try_acquire("2001:db8:1:2:ffff::9".parse().unwrap())
            .is_none());
        assert!(cap
            .try_acquire("2001:db8:1:3::1".parse().unwrap())
            .is_some());
        let _y = cap.try_acquire("192.0.2.7".parse().unwrap()).unwrap();
        assert!(cap
            .try_acquire("::ffff:192.0.2.7".parse().unwrap())
            .is_none());
    }

    #[test]
    fn zero_is_no_cap() {
        let cap = PerIpCap::new(0);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let slots: Vec<_> = (0..1000).map(|_| cap.try_acquire(ip).unwrap()).collect();
        assert_eq!(slots.len(), 1000);
        assert_eq!(cap.held(ip), 0);
    }
}
