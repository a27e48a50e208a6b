//! Candidate gathering, sans-IO: host candidates from the interface
//! addresses the driver passes in, server-reflexive candidates from STUN
//! Binding queries (and their retransmissions), relay candidates from one
//! TURN client per TURN server.
//!
//! [`Gatherer`] owns the queries, the TURN relays and the list of local
//! candidates str0m accepted. It owns no socket, task or clock:
//! - the driver feeds it datagrams from the STUN/TURN servers
//!   ([`Gatherer::handle_udp`]) and frames from TURN/TCP connections
//!   ([`Gatherer::handle_tcp_frame`]); relayed application data comes back
//!   borrowed from the input, so the receive path does not allocate;
//! - sends what [`Gatherer::poll_stun_transmit`] and
//!   [`Gatherer::drain_relay_transmits`] hand out;
//! - acts on [`Gatherer::poll_output`]: offer a candidate to str0m (and say
//!   [`Gatherer::accepted`] if it took it), connect or drop a TURN/TCP
//!   connection;
//! - calls [`Gatherer::handle_timeout`] once [`Gatherer::poll_timeout`] is
//!   due.
//!
//! Relays have stable ids that are never reused: an ICE restart that
//! replaces a dead relay gives the new one a new id and tells the driver to
//! drop the old one's connection, so a late frame from it finds nobody.

use crate::config::{Resolved, TurnTransport};
use crate::CandidateType;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use str0m::Candidate;
use tracing::{debug, trace, warn};

/// Stable id of one TURN relay.
pub(crate) type RelayId = u64;

const STUN_TRIES: u32 = 5;

/// What the driver has to do.
#[derive(Debug)]
pub(crate) enum Output {
    /// Offer this candidate to str0m; call [`Gatherer::accepted`] if it
    /// takes it.
    Candidate {
        cand: Candidate,
        kind: CandidateType,
        relay: Option<TurnTransport>,
    },
    /// Open a TCP connection to this TURN server for `relay`; with `tls`,
    /// run TLS on it for that server name (`turns:`).
    ConnectTcp {
        relay: RelayId,
        server: SocketAddr,
        tls: Option<String>,
    },
    /// `relay` is gone: close its TCP connection.
    DropTcp { relay: RelayId },
}

/// What a datagram from the network was.
pub(crate) enum Input<'a> {
    /// Ours (a STUN answer or TURN control traffic), nothing more to do.
    Consumed,
    /// Application data relayed by a TURN server: it enters str0m as if it
    /// arrived from `peer` on the relayed address.
    Relayed {
        peer: SocketAddr,
        relayed: SocketAddr,
        payload: &'a [u8],
    },
    /// Not for the gatherer (ICE, DTLS, SRTP from a peer).
    NotOurs,
}

/// A STUN Binding request to learn a server-reflexive address.
struct StunQuery {
    server: SocketAddr,
    tid: [u8; 12],
    next_send: Instant,
    tries: u32,
    done: bool,
    /// Due to go out (set by `handle_timeout`).
    send_now: bool,
}

struct Relay {
    id: RelayId,
    server: SocketAddr,
    transport: TurnTransport,
    client: turn::client::Client,
    /// TCP relays hold their packets until the connection is up.
    connected: bool,
    relayed: Option<SocketAddr>,
    done: bool,
}

pub(crate) struct LocalCand {
    pub cand: Candidate,
    pub kind: CandidateType,
    pub relay: Option<TurnTransport>,
}

/// The local ports of the UDP sockets, one per address family we have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ports {
    pub v4: Option<u16>,
    pub v6: Option<u16>,
}

impl Ports {
    fn for_addr(&self, a: SocketAddr) -> Option<u16> {
        if a.is_ipv4() {
            self.v4
        } else {
            self.v6
        }
    }
}

pub(crate) struct Gatherer {
    servers: Vec<Resolved>,
    relay_only: bool,
    timeout: Duration,
    ports: Ports,
    stun: Vec<StunQuery>,
    relays: Vec<Relay>,
    next_relay: RelayId,
    locals: Vec<LocalCand>,
    started: Instant,
    out: VecDeque<Output>,
    /// Reused buffer for Binding requests.
    req: Vec<u8>,
}

impl Gatherer {
    pub fn new(
        now: Instant,
        servers: Vec<Resolved>,
        relay_only: bool,
        timeout: Duration,
        ports: Ports,
    ) -> Gatherer {
        Gatherer {
            servers,
            relay_only,
            timeout,
            ports,
            stun: Vec::new(),
            relays: Vec::new(),
            next_relay: 1,
            locals: Vec::new(),
            started: now,
            out: VecDeque::new(),
            req: Vec::with_capacity(20),
        }
    }

    /// Starts (or, after an ICE restart, redoes) gathering. Host candidates
    /// (`hosts`, the first time only) are immediate; STUN and TURN answers
    /// trickle in later.
    pub fn start(&mut self, now: Instant, hosts: &[IpAddr], first: bool) {
        self.started = now;
        if !self.relay_only && first {
            for &ip in hosts {
                let Some(port) = self.ports.for_addr(SocketAddr::new(ip, 0)) else {
                    continue;
                };
                let addr = SocketAddr::new(ip, port);
                match Candidate::host(addr, "udp") {
                    Ok(c) => self.offer(c, CandidateType::Host, None),
                    Err(e) => debug!("skipping host candidate {addr}: {e}"),
                }
            }
        }
        let servers = std::mem::take(&mut self.servers);
        if !self.relay_only {
            // A new mapping may exist after a network change, so ask again.
            self.stun.clear();
            for s in &servers {
                let addr = match s {
                    Resolved::Stun(a) => *a,
                    Resolved::Turn {
                        addr,
                        transport: TurnTransport::Udp,
                        ..
                    } => *addr,
                    Resolved::Turn { .. } => continue,
                };
                if self.ports.for_addr(addr).is_none() {
                    continue;
                }
                let tid = rand::random();
                self.stun.push(StunQuery {
                    server: addr,
                    tid,
                    next_send: now,
                    tries: 0,
                    done: false,
                    send_now: false,
                });
            }
        }
        for s in &servers {
            let Resolved::Turn {
                addr,
                transport,
                host,
                username,
                password,
            } = s
            else {
                continue;
            };
            let (addr, transport) = (*addr, *transport);
            if transport == TurnTransport::Udp && self.ports.for_addr(addr).is_none() {
                continue;
            }
            // Keep a live allocation across an ICE restart; replace dead ones.
            if let Some(i) = self
                .relays
                .iter()
                .position(|t| t.server == addr && t.transport == transport)
            {
                if matches!(
                    self.relays[i].client.state(),
                    turn::client::State::Allocated | turn::client::State::Allocating
                ) {
                    continue;
                }
                let old = self.relays.remove(i);
                if old.transport != TurnTransport::Udp {
                    self.out.push_back(Output::DropTcp { relay: old.id });
                }
            }
            let mut tc = turn::client::Config::new(
                addr,
                match transport {
                    TurnTransport::Udp => turn::client::Transport::Udp,
                    // TLS carries the same framing as TCP.
                    TurnTransport::Tcp | TurnTransport::Tls => turn::client::Transport::Tcp,
                },
                username.clone(),
                password.clone(),
            );
            tc.seed = rand::random();
            tc.software = Some("switchboard-peer".into());
            let mut client = turn::client::Client::new(tc);
            if let Err(e) = client.allocate(now) {
                warn!("TURN {addr}: {e}");
                continue;
            }
            let id = self.next_relay;
            self.next_relay += 1;
            self.relays.push(Relay {
                id,
                server: addr,
                transport,
                client,
                connected: transport == TurnTransport::Udp,
                relayed: None,
                done: false,
            });
            if transport != TurnTransport::Udp {
                self.out.push_back(Output::ConnectTcp {
                    relay: id,
                    server: addr,
                    tls: (transport == TurnTransport::Tls).then(|| host.clone()),
                });
            }
        }
        self.servers = servers;
    }

    fn offer(&mut self, cand: Candidate, kind: CandidateType, relay: Option<TurnTransport>) {
        if self.is_known(&cand, kind) {
            return;
        }
        self.out.push_back(Output::Candidate { cand, kind, relay });
    }

    fn is_known(&self, c: &Candidate, kind: CandidateType) -> bool {
        self.locals
            .iter()
            .any(|l| l.cand.addr() == c.addr() && l.kind == kind)
    }

    /// str0m took a candidate from [`Output::Candidate`]. Returns its index
    /// in [`Self::locals`], `None` for a duplicate.
    pub fn accepted(
        &mut self,
        cand: Candidate,
        kind: CandidateType,
        relay: Option<TurnTransport>,
    ) -> Option<usize> {
        if self.is_known(&cand, kind) {
            return None;
        }
        trace!("local candidate {cand:?}");
        self.locals.push(LocalCand { cand, kind, relay });
        Some(self.locals.len() - 1)
    }

    /// Local candidates str0m accepted, in the order they were found.
    pub fn locals(&self) -> &[LocalCand] {
        &self.locals
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Every query answered or given up on, or the gathering timeout passed.
    pub fn is_done(&self, now: Instant) -> bool {
        let pending_stun = self.stun.iter().any(|q| !q.done);
        let pending_turn = self.relays.iter().any(|t| !t.done);
        (!pending_stun && !pending_turn) || now >= self.deadline()
    }

    /// When gathering gives up on silent servers.
    pub fn deadline(&self) -> Instant {
        self.started + self.timeout
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let stun = self.stun.iter().filter(|q| !q.done).map(|q| q.next_send);
        let turn = self.relays.iter().filter_map(|t| t.client.poll_timeout());
        stun.chain(turn).min()
    }

    /// STUN retransmissions (RFC 8489: RTO doubling from 250 ms) and TURN
    /// timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for q in &mut self.stun {
            if q.done || now < q.next_send {
                continue;
            }
            if q.tries >= STUN_TRIES {
                q.done = true;
                debug!("STUN {} did not answer", q.server);
                continue;
            }
            q.tries += 1;
            q.next_send = now + Duration::from_millis(250 << q.tries.min(5));
            q.send_now = true;
        }
        for i in 0..self.relays.len() {
            if self.relays[i]
                .client
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.relays[i].client.handle_timeout(now);
            }
            self.relay_events(i);
        }
    }

    /// The next Binding request to send: (server, packet).
    pub fn poll_stun_transmit(&mut self) -> Option<(SocketAddr, &[u8])> {
        let q = self.stun.iter_mut().find(|q| q.send_now)?;
        q.send_now = false;
        self.req.clear();
        stun::MessageWriter::new(
            &mut self.req,
            stun::MessageType::BINDING_REQUEST,
            stun::TransactionId(q.tid),
        )
        .finish();
        Some((q.server, &self.req))
    }

    /// Hands every queued TURN packet to `send(relay, transport, server,
    /// packet)`, straight from the TURN clients' queues (no copy). A TCP
    /// relay keeps its queue until its connection is up.
    pub fn drain_relay_transmits(
        &mut self,
        mut send: impl FnMut(RelayId, TurnTransport, SocketAddr, &[u8]),
    ) {
        for t in &mut self.relays {
            if !t.connected {
                continue;
            }
            while let Some(tx) = t.client.poll_transmit() {
                send(t.id, t.transport, tx.destination, tx.data);
            }
        }
    }

    /// A datagram from the network. Only datagrams from our STUN/TURN
    /// servers are consumed; the check is a short scan, no allocation.
    pub fn handle_udp<'a>(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &'a [u8],
    ) -> Input<'a> {
        // A TURN server also answers our srflx Binding requests.
        if self.stun_response(source, destination, data) {
            return Input::Consumed;
        }
        match self
            .relays
            .iter()
            .position(|t| t.transport == TurnTransport::Udp && t.server == source)
        {
            Some(i) => self.relay_input(now, i, data),
            None => Input::NotOurs,
        }
    }

    /// One whole STUN/ChannelData frame from `relay`'s TCP connection.
    /// Frames from a relay that is gone are dropped.
    pub fn handle_tcp_frame<'a>(
        &mut self,
        now: Instant,
        relay: RelayId,
        data: &'a [u8],
    ) -> Input<'a> {
        match self.relays.iter().position(|t| t.id == relay) {
            Some(i) => self.relay_input(now, i, data),
            None => Input::Consumed,
        }
    }

    pub fn handle_tcp_connected(&mut self, relay: RelayId) -> bool {
        match self.relays.iter_mut().find(|t| t.id == relay) {
            Some(t) => {
                t.connected = true;
                true
            }
            None => false,
        }
    }

    pub fn handle_tcp_closed(&mut self, relay: RelayId, why: &str) {
        if let Some(t) = self.relays.iter_mut().find(|t| t.id == relay) {
            warn!("TURN/{:?} {}: {why}", t.transport, t.server);
            t.done = true;
            t.relayed = None;
        }
    }

    fn relay_input<'a>(&mut self, now: Instant, i: usize, data: &'a [u8]) -> Input<'a> {
        let relayed = self.relays[i].relayed;
        let pd = self.relays[i].client.handle_input(now, data);
        let input = match (pd, relayed) {
            (Some(pd), Some(relayed)) => Input::Relayed {
                peer: pd.peer,
                relayed,
                payload: pd.payload,
            },
            _ => Input::Consumed,
        };
        self.relay_events(i);
        input
    }

    /// Sends `data` to `destination` over the relay whose relayed address
    /// is `source`. False if `source` is not one of ours.
    pub fn send_relayed(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        let Some(t) = self.relays.iter_mut().find(|t| t.relayed == Some(source)) else {
            return false;
        };
        let c = &mut t.client;
        if c.channel(destination).is_none() {
            // ChannelBind also installs the permission; until it is
            // confirmed, data goes out in Send indications.
            let _ = c.bind_channel(now, destination);
        }
        if let Err(e) = c.send_to(destination, data) {
            debug!("TURN send to {destination}: {e}");
        }
        true
    }

    /// Releases every allocation (the packets still have to be sent).
    pub fn close(&mut self, now: Instant) {
        for t in &mut self.relays {
            let _ = t.client.close(now);
        }
    }

    /// How a local address relays: `Some` for one of our relayed addresses.
    pub fn relay_transport(&self, local: SocketAddr) -> Option<Option<TurnTransport>> {
        self.locals
            .iter()
            .find(|l| l.cand.addr() == local && l.kind == CandidateType::Relay)
            .map(|l| l.relay)
    }

    fn host_base(&self, v4: bool) -> Option<SocketAddr> {
        self.locals
            .iter()
            .find(|l| l.kind == CandidateType::Host && l.cand.addr().is_ipv4() == v4)
            .map(|l| l.cand.addr())
    }

    /// Completes a srflx query if `data` answers one. True if consumed.
    fn stun_response(&mut self, source: SocketAddr, destination: SocketAddr, data: &[u8]) -> bool {
        if data.len() < 20 || !stun::is_stun(data) {
            return false;
        }
        let Some(qi) = self
            .stun
            .iter()
            .position(|q| !q.done && q.server == source && data[8..20] == q.tid)
        else {
            return false;
        };
        let Ok(msg) = stun::Message::parse(data) else {
            return true;
        };
        self.stun[qi].done = true;
        if msg.class() != stun::Class::SuccessResponse {
            debug!("STUN {source} refused Binding");
            return true;
        }
        let Ok(Some(mapped)) = msg.get::<stun::attr::XorMappedAddress>() else {
            return true;
        };
        // The base is the local address the answer arrived on.
        let base = if destination.ip().is_unspecified() {
            match self.host_base(mapped.is_ipv4()) {
                Some(b) => b,
                None => return true,
            }
        } else {
            destination
        };
        if let Ok(c) = Candidate::server_reflexive(mapped, base, "udp") {
            self.offer(c, CandidateType::Srflx, None);
        }
        true
    }

    fn relay_events(&mut self, i: usize) {
        while let Some(ev) = self.relays[i].client.poll_event() {
            self.relay_event(i, ev);
        }
    }

    fn relay_event(&mut self, i: usize, ev: turn::client::Event) {
        use turn::client::Event as E;
        match ev {
            E::Allocated {
                relayed, mapped, ..
            } => {
                let port = self.ports.for_addr(relayed).unwrap_or(0);
                let t = &mut self.relays[i];
                t.relayed = Some(relayed);
                t.done = true;
                let transport = t.transport;
                let base = SocketAddr::new(
                    if relayed.is_ipv4() {
                        IpAddr::from([0u8; 4])
                    } else {
                        IpAddr::from([0u16; 8])
                    },
                    port,
                );
                debug!("TURN {} allocated {relayed} over {transport:?}", t.server);
                match Candidate::relayed(relayed, base, "udp") {
                    Ok(c) => self.offer(c, CandidateType::Relay, Some(transport)),
                    Err(e) => warn!("relay candidate {relayed}: {e}"),
                }
                if let (Some(m), false, TurnTransport::Udp) = (mapped, self.relay_only, transport) {
                    if let Some(base) = self.host_base(m.is_ipv4()) {
                        if let Ok(c) = Candidate::server_reflexive(m, base, "udp") {
                            self.offer(c, CandidateType::Srflx, None);
                        }
                    }
                }
            }
            E::Failed { op, code, reason } => {
                if matches!(op, turn::client::Op::Allocate) {
                    warn!(
                        "TURN {}: allocation failed ({code:?}): {reason}",
                        self.relays[i].server
                    );
                    self.relays[i].done = true;
                } else {
                    // E.g. 403 for a peer the server's policy refuses (private
                    // addresses by default): that pair just never works.
                    debug!(
                        "TURN {}: {op:?} failed ({code:?}): {reason}",
                        self.relays[i].server
                    );
                }
            }
            E::Closed => self.relays[i].relayed = None,
            other => trace!("TURN event {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: Ports = Ports {
        v4: Some(5000),
        v6: None,
    };
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn outputs(g: &mut Gatherer) -> Vec<Output> {
        std::iter::from_fn(|| g.poll_output()).collect()
    }

    fn stun_sends(g: &mut Gatherer) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| g.poll_stun_transmit().map(|(a, p)| (a, p.to_vec()))).collect()
    }

    fn relay_sends(g: &mut Gatherer) -> Vec<(RelayId, Vec<u8>)> {
        let mut v = Vec::new();
        g.drain_relay_transmits(|id, _, _, data| v.push((id, data.to_vec())));
        v
    }

    /// The server's answer to `request`: an error, or a success with
    /// XOR-MAPPED-ADDRESS `mapped`.
    fn answer(request: &[u8], mapped: Option<SocketAddr>) -> Vec<u8> {
        let req = stun::Message::parse(request).unwrap();
        let mut out = Vec::new();
        match mapped {
            Some(m) => {
                let mut w = stun::MessageWriter::success_response(&mut out, &req);
                w.add::<stun::attr::XorMappedAddress>(m).unwrap();
                w.finish();
            }
            None => {
                let e = stun::attr::ErrorCodeValue {
                    code: 400,
                    reason: "Bad Request",
                };
                stun::MessageWriter::error_response(&mut out, &req, e)
                    .unwrap()
                    .finish();
            }
        }
        out
    }

    fn tcp_turn(a: &str) -> Resolved {
        Resolved::Turn {
            addr: addr(a),
            transport: TurnTransport::Tcp,
            host: a.into(),
            username: "u".into(),
            password: "p".into(),
        }
    }

    #[test]
    fn host_candidates_come_from_the_given_addresses() {
        let t0 = Instant::now();
        let mut g = Gatherer::new(t0, vec![], false, TIMEOUT, PORTS);
        let hosts = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        g.start(t0, &hosts, true);
        let out = outputs(&mut g);
        // No IPv6 socket: only the IPv4 address, on the socket's port.
        let [Output::Candidate { cand, kind, relay }] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(cand.addr(), addr("127.0.0.1:5000"));
        assert_eq!((*kind, *relay), (CandidateType::Host, None));
        assert_eq!(g.accepted(cand.clone(), *kind, None), Some(0));
        // Known candidates are not offered twice.
        assert_eq!(g.accepted(cand.clone(), *kind, None), None);
        g.start(t0, &hosts, false);
        assert!(outputs(&mut g).is_empty());
        assert!(g.is_done(t0), "nothing to wait for");
        // Relay-only: no host candidates at all.
        let mut g = Gatherer::new(t0, vec![], true, TIMEOUT, PORTS);
        g.start(t0, &hosts, true);
        assert!(outputs(&mut g).is_empty());
    }

    #[test]
    fn srflx_query_retransmits_then_gives_up() {
        let t0 = Instant::now();
        let server = addr("127.0.0.1:3478");
        let mut g = Gatherer::new(t0, vec![Resolved::Stun(server)], false, TIMEOUT, PORTS);
        g.start(t0, &[], true);
        assert_eq!(g.poll_timeout(), Some(t0));
        assert!(
            stun_sends(&mut g).is_empty(),
            "nothing before the timer runs"
        );
        let mut sends = Vec::new();
        let mut t = t0;
        while let Some(next) = g.poll_timeout() {
            assert!(next >= t);
            t = next;
            g.handle_timeout(t);
            for (to, pkt) in stun_sends(&mut g) {
                assert_eq!(to, server);
                let m = stun::Message::parse(&pkt).unwrap();
                assert_eq!(
                    (m.method(), m.class()),
                    (stun::Method::BINDING, stun::Class::Request)
                );
                sends.push(t - t0);
            }
        }
        let ms = |n| Duration::from_millis(n);
        // RTO doubling from 250 ms (the first wait is 500 ms).
        assert_eq!(sends, [ms(0), ms(500), ms(1500), ms(3500), ms(7500)]);
        assert_eq!(t - t0, ms(15500), "gave up one RTO after the last send");
        assert!(g.is_done(t));
        assert!(outputs(&mut g).is_empty());
    }

    #[test]
    fn srflx_answer_makes_a_candidate_on_the_receiving_base() {
        let t0 = Instant::now();
        let server = addr("127.0.0.1:3478");
        let mut g = Gatherer::new(t0, vec![Resolved::Stun(server)], false, TIMEOUT, PORTS);
        g.start(t0, &[], true);
        g.handle_timeout(t0);
        let [(_, req)] = &stun_sends(&mut g)[..] else {
            panic!()
        };
        assert!(!g.is_done(t0));
        let base = addr("127.0.0.1:5000");
        // Peer traffic and answers from elsewhere are not ours.
        assert!(matches!(
            g.handle_udp(t0, addr("127.0.0.1:9"), base, &[0x16; 40]),
            Input::NotOurs
        ));
        let mapped = addr("192.0.2.7:40000");
        let resp = answer(req, Some(mapped));
        assert!(matches!(
            g.handle_udp(t0, addr("127.0.0.1:9"), base, &resp),
            Input::NotOurs
        ));
        assert!(matches!(
            g.handle_udp(t0, server, base, &resp),
            Input::Consumed
        ));
        let out = outputs(&mut g);
        let [Output::Candidate { cand, kind, .. }] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(*kind, CandidateType::Srflx);
        assert_eq!(cand.addr(), mapped);
        assert_eq!(cand.local(), base);
        assert!(g.is_done(t0));
        assert_eq!(g.poll_timeout(), None, "no more retransmissions");
    }

    #[test]
    fn gathering_gives_up_at_its_timeout() {
        let t0 = Instant::now();
        let server = addr("127.0.0.1:3478");
        let timeout = Duration::from_secs(2);
        let mut g = Gatherer::new(t0, vec![Resolved::Stun(server)], false, timeout, PORTS);
        g.start(t0, &[], true);
        assert_eq!(g.deadline(), t0 + timeout);
        assert!(!g.is_done(t0 + timeout - Duration::from_millis(1)));
        assert!(g.is_done(t0 + timeout));
    }

    #[test]
    fn restart_replaces_a_dead_relay_under_a_new_id() {
        let t0 = Instant::now();
        let (a, b) = ("127.0.0.1:3478", "127.0.0.1:3479");
        let mut g = Gatherer::new(t0, vec![tcp_turn(a), tcp_turn(b)], true, TIMEOUT, PORTS);
        g.start(t0, &[], true);
        let out = outputs(&mut g);
        assert!(
            matches!(
                &out[..],
                [
                    Output::ConnectTcp {
                        relay: 1,
                        server: sa,
                        tls: None
                    },
                    Output::ConnectTcp {
                        relay: 2,
                        server: sb,
                        tls: None
                    }
                ] if *sa == addr(a) && *sb == addr(b)
            ),
            "{out:?}"
        );
        // TCP relays hold their Allocate until connected.
        assert!(relay_sends(&mut g).is_empty());
        assert!(g.handle_tcp_connected(1));
        assert!(g.handle_tcp_connected(2));
        let sends = relay_sends(&mut g);
        let [(1, alloc_a), (2, alloc_b)] = &sends[..] else {
            panic!("{sends:?}")
        };
        // A refuses: relay 1 is dead, relay 2 still allocating.
        assert!(matches!(
            g.handle_tcp_frame(t0, 1, &answer(alloc_a, None)),
            Input::Consumed
        ));
        assert!(!g.is_done(t0));

        let t1 = t0 + Duration::from_secs(1);
        g.start(t1, &[], false);
        let out = outputs(&mut g);
        assert!(
            matches!(
                &out[..],
                [
                    Output::DropTcp { relay: 1 },
                    Output::ConnectTcp {
                        relay: 3,
                        server: sa,
                        tls: None
                    }
                ] if *sa == addr(a)
            ),
            "{out:?}"
        );
        // A late frame or connect for the old id finds nobody.
        assert!(!g.handle_tcp_connected(1));
        assert!(matches!(
            g.handle_tcp_frame(t1, 1, &answer(alloc_b, None)),
            Input::Consumed
        ));
        g.handle_tcp_closed(1, "aborted");
        assert!(g.handle_tcp_connected(3));
        let sends = relay_sends(&mut g);
        let [(3, alloc_a2)] = &sends[..] else {
            panic!("{sends:?}")
        };
        // Frames reach the relay their id names: B's answer on relay 3 is
        // not B's, on relay 2 it is.
        g.handle_tcp_frame(t1, 3, &answer(alloc_b, None));
        g.handle_tcp_frame(t1, 3, &answer(alloc_a2, None));
        assert!(!g.is_done(t1), "relay 2 still waits for its answer");
        g.handle_tcp_frame(t1, 2, &answer(alloc_b, None));
        assert!(g.is_done(t1));
        // A second restart replaces both dead relays, never reusing an id.
        g.start(t1, &[], false);
        let ids: Vec<_> = outputs(&mut g)
            .into_iter()
            .map(|o| match o {
                Output::DropTcp { relay } => (false, relay),
                Output::ConnectTcp { relay, .. } => (true, relay),
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(ids, [(false, 3), (true, 4), (false, 2), (true, 5)]);
    }
}
