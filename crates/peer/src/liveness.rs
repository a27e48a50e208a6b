//! Liveness of the connection, sans-IO: maps str0m's ICE agent state and
//! the DTLS handshake onto `iceConnectionState` / `connectionState`, and
//! runs our own consent timer.
//!
//! str0m keeps a pair alive for 15 s after the peer's last check, too slow
//! to call a vanished peer `disconnected` "within seconds". So every
//! datagram str0m accepts is reported here ([`Liveness::handle_receive`]);
//! silence for `disconnected_after` makes the connection `disconnected`,
//! and `failed_after` more of it makes it `failed`. Traffic that comes back
//! before then returns to str0m's own view.
//!
//! It owns no clock: every input takes `now`, [`Liveness::poll_timeout`]
//! says when [`Liveness::handle_timeout`] is due, and state changes come
//! out of [`Liveness::poll_change`] in the order they happened.

use crate::{IceConnectionState, PeerConnectionState};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One change the application is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Ice(IceConnectionState),
    Conn(PeerConnectionState),
}

pub(crate) struct Liveness {
    disconnected_after: Duration,
    failed_after: Duration,
    ice: IceConnectionState,
    conn: PeerConnectionState,
    /// str0m's own view, to return to when traffic resumes.
    agent: IceConnectionState,
    dtls_up: bool,
    disconnected_since: Option<Instant>,
    /// Last datagram str0m accepted.
    last_rx: Option<Instant>,
    changes: VecDeque<Change>,
}

fn is_up(s: IceConnectionState) -> bool {
    matches!(
        s,
        IceConnectionState::Connected | IceConnectionState::Completed
    )
}

impl Liveness {
    pub fn new(disconnected_after: Duration, failed_after: Duration) -> Liveness {
        Liveness {
            disconnected_after,
            failed_after,
            ice: IceConnectionState::New,
            conn: PeerConnectionState::New,
            agent: IceConnectionState::New,
            dtls_up: false,
            disconnected_since: None,
            last_rx: None,
            changes: VecDeque::new(),
        }
    }

    #[cfg(test)]
    pub fn ice_state(&self) -> IceConnectionState {
        self.ice
    }

    /// ICE is connected or completed (a selected pair carries data).
    pub fn is_connected(&self) -> bool {
        is_up(self.ice)
    }

    /// str0m's ICE agent changed state.
    pub fn handle_agent_state(&mut self, now: Instant, s: str0m::IceConnectionState) {
        use str0m::IceConnectionState as S;
        let ours = match s {
            S::New => IceConnectionState::New,
            S::Checking => IceConnectionState::Checking,
            S::Connected => IceConnectionState::Connected,
            S::Completed => IceConnectionState::Completed,
            S::Disconnected => IceConnectionState::Disconnected,
        };
        self.agent = ours;
        self.disconnected_since = (ours == IceConnectionState::Disconnected).then_some(now);
        self.set(ours);
    }

    /// The DTLS handshake finished.
    pub fn handle_dtls_connected(&mut self) {
        self.dtls_up = true;
        self.update_conn();
    }

    /// str0m accepted a datagram from the peer. On the receive path: no
    /// allocation unless the state changes.
    pub fn handle_receive(&mut self, now: Instant) {
        self.last_rx = Some(now);
        // Traffic is back (e.g. a NAT rebinding healed by itself).
        if self.ice == IceConnectionState::Disconnected && is_up(self.agent) {
            self.disconnected_since = None;
            self.set(self.agent);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if is_up(self.ice)
            && self
                .last_rx
                .is_some_and(|t| now >= t + self.disconnected_after)
        {
            tracing::debug!(
                "nothing from the peer for {:?}: disconnected",
                self.disconnected_after
            );
            self.disconnected_since = Some(now);
            self.set(IceConnectionState::Disconnected);
        }
        if let Some(since) = self.disconnected_since {
            if now >= since + self.failed_after && self.ice == IceConnectionState::Disconnected {
                self.disconnected_since = None;
                self.set(IceConnectionState::Failed);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let failed = self.disconnected_since.map(|s| s + self.failed_after);
        let silent = self
            .last_rx
            .filter(|_| is_up(self.ice))
            .map(|t| t + self.disconnected_after);
        match (failed, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_change(&mut self) -> Option<Change> {
        self.changes.pop_front()
    }

    /// Forces a state (failed when str0m gives up, closed on close).
    pub fn set(&mut self, s: IceConnectionState) {
        if self.ice == s {
            return;
        }
        self.ice = s;
        self.changes.push_back(Change::Ice(s));
        self.update_conn();
    }

    fn update_conn(&mut self) {
        use IceConnectionState as I;
        let next = match self.ice {
            I::Closed => PeerConnectionState::Closed,
            I::Failed => PeerConnectionState::Failed,
            I::Disconnected => PeerConnectionState::Disconnected,
            I::New => PeerConnectionState::New,
            I::Checking => PeerConnectionState::Connecting,
            I::Connected | I::Completed if self.dtls_up => PeerConnectionState::Connected,
            I::Connected | I::Completed => PeerConnectionState::Connecting,
        };
        if next != self.conn {
            self.conn = next;
            self.changes.push_back(Change::Conn(next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::IceConnectionState as S;
    use IceConnectionState as I;
    use PeerConnectionState as P;

    const DISC: Duration = Duration::from_secs(3);
    const FAIL: Duration = Duration::from_secs(5);

    fn changes(l: &mut Liveness) -> Vec<Change> {
        std::iter::from_fn(|| l.poll_change()).collect()
    }

    /// A liveness that is connected (ICE and DTLS) at `t0`.
    fn connected(t0: Instant) -> Liveness {
        let mut l = Liveness::new(DISC, FAIL);
        l.handle_agent_state(t0, S::Checking);
        l.handle_agent_state(t0, S::Connected);
        l.handle_dtls_connected();
        l.handle_receive(t0);
        l
    }

    #[test]
    fn connected_needs_ice_and_dtls() {
        let t0 = Instant::now();
        let mut l = Liveness::new(DISC, FAIL);
        assert_eq!(l.poll_timeout(), None);
        l.handle_agent_state(t0, S::Checking);
        l.handle_agent_state(t0, S::Connected);
        assert_eq!(
            changes(&mut l),
            [
                Change::Ice(I::Checking),
                Change::Conn(P::Connecting),
                Change::Ice(I::Connected)
            ]
        );
        l.handle_dtls_connected();
        assert_eq!(changes(&mut l), [Change::Conn(P::Connected)]);
        l.handle_agent_state(t0, S::Completed);
        assert_eq!(changes(&mut l), [Change::Ice(I::Completed)]);
        assert!(l.is_connected());
    }

    #[test]
    fn silence_means_disconnected_then_failed() {
        let t0 = Instant::now();
        let mut l = connected(t0);
        changes(&mut l);
        let t1 = t0 + Duration::from_secs(1);
        l.handle_receive(t1);
        assert_eq!(l.poll_timeout(), Some(t1 + DISC));
        // Just before the deadline nothing happens.
        l.handle_timeout(t1 + DISC - Duration::from_millis(1));
        assert!(changes(&mut l).is_empty());
        let t2 = t1 + DISC;
        l.handle_timeout(t2);
        assert_eq!(
            changes(&mut l),
            [Change::Ice(I::Disconnected), Change::Conn(P::Disconnected)]
        );
        assert_eq!(l.poll_timeout(), Some(t2 + FAIL));
        l.handle_timeout(t2 + FAIL);
        assert_eq!(
            changes(&mut l),
            [Change::Ice(I::Failed), Change::Conn(P::Failed)]
        );
        assert_eq!(l.poll_timeout(), None);
        // Late traffic does not revive a failed connection.
        l.handle_receive(t2 + FAIL + Duration::from_secs(1));
        assert!(changes(&mut l).is_empty());
        assert_eq!(l.ice_state(), I::Failed);
    }

    #[test]
    fn traffic_before_failure_returns_to_the_agents_view() {
        let t0 = Instant::now();
        let mut l = connected(t0);
        changes(&mut l);
        l.handle_timeout(t0 + DISC);
        assert_eq!(l.ice_state(), I::Disconnected);
        changes(&mut l);
        l.handle_receive(t0 + DISC + Duration::from_secs(1));
        assert_eq!(
            changes(&mut l),
            [Change::Ice(I::Connected), Change::Conn(P::Connected)]
        );
        // The failure timer is off again.
        assert_eq!(
            l.poll_timeout(),
            Some(t0 + DISC + Duration::from_secs(1) + DISC)
        );
    }

    #[test]
    fn agent_disconnect_starts_the_failure_timer() {
        let t0 = Instant::now();
        let mut l = connected(t0);
        changes(&mut l);
        let t1 = t0 + Duration::from_millis(500);
        l.handle_agent_state(t1, S::Disconnected);
        assert_eq!(
            changes(&mut l),
            [Change::Ice(I::Disconnected), Change::Conn(P::Disconnected)]
        );
        assert_eq!(l.poll_timeout(), Some(t1 + FAIL));
        // Traffic while str0m itself says disconnected changes nothing.
        l.handle_receive(t1 + Duration::from_secs(1));
        assert!(changes(&mut l).is_empty());
        l.handle_agent_state(t1 + Duration::from_secs(2), S::Connected);
        assert_eq!(
            changes(&mut l),
            [Change::Ice(I::Connected), Change::Conn(P::Connected)]
        );
    }

    #[test]
    fn closed_is_final_and_told_once() {
        let t0 = Instant::now();
        let mut l = connected(t0);
        changes(&mut l);
        l.set(I::Closed);
        l.set(I::Closed);
        assert_eq!(
            changes(&mut l),
            [Change::Ice(I::Closed), Change::Conn(P::Closed)]
        );
        assert_eq!(l.poll_timeout(), None);
    }
}
