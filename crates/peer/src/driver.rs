//! The task behind a [`crate::PeerConnection`]: it owns str0m's `Rtc`, the
//! UDP sockets, the TURN clients and the STUN gathering transactions, and
//! turns handle commands into `SdpApi` calls.
//!
//! str0m's contract is followed to the letter: after every input or API call
//! the driver drains `poll_output` until it yields a timeout, and feeds
//! `Input::Timeout` when that time comes.
//!
//! Demultiplexing of one UDP socket: datagrams from a TURN server go to that
//! TURN client (relayed data comes out and enters `Rtc` as if it arrived on
//! the relayed address); STUN responses whose transaction id is one of our
//! Binding requests complete server-reflexive gathering; everything else
//! (ICE checks, DTLS, SRTP) goes to `Rtc`.

use crate::config::{Config, HostCandidates, Resolved, TurnTransport};
use crate::jsep::{
    IceCandidateInit, Jsep, LocalAction, RemoteAction, SdpType, SessionDescription, SignalingState,
};
use crate::net::{Datagram, UdpSock, BATCH, SLOT};
use crate::{
    CandidateInfo, CandidatePair, CandidateType, ChannelShared, ChannelState, DataChannel,
    DataChannelInit, Error, Event, IceConnectionState, MediaFrame, Message, PeerConnectionState,
    RemoteTrack, Stats, TrackSender,
};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tracing::{debug, trace, warn};

type Reply<T> = oneshot::Sender<Result<T, Error>>;

pub(crate) enum Cmd {
    CreateOffer {
        reply: Reply<SessionDescription>,
    },
    CreateAnswer {
        reply: Reply<SessionDescription>,
    },
    SetLocal {
        desc: Option<SessionDescription>,
        reply: Reply<Option<SessionDescription>>,
    },
    SetRemote {
        desc: SessionDescription,
        reply: Reply<()>,
    },
    AddCandidate {
        candidate: Option<IceCandidateInit>,
        reply: Reply<()>,
    },
    RestartIce {
        reply: Reply<()>,
    },
    CreateChannel {
        label: String,
        init: DataChannelInit,
        reply: Reply<DataChannel>,
    },
    AddTrack {
        kind: MediaKind,
        reply: Reply<TrackSender>,
    },
    GetSignalingState {
        reply: Reply<SignalingState>,
    },
    GetStats {
        reply: Reply<Stats>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    ChannelSend {
        id: u64,
        binary: bool,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    ChannelFlush {
        id: u64,
        reply: Reply<()>,
    },
    ChannelClose {
        id: u64,
    },
    WriteMedia {
        track: u64,
        mid: Option<Mid>,
        frame: MediaFrame,
    },
    RequestKeyframe {
        mid: Mid,
    },
    // From helper tasks.
    TcpConnected {
        turn: usize,
        tx: mpsc::UnboundedSender<Vec<u8>>,
    },
    TcpFrame {
        turn: usize,
        data: Vec<u8>,
    },
    TcpClosed {
        turn: usize,
        why: String,
    },
    MdnsResolved {
        line: String,
        name: String,
        ip: Option<IpAddr>,
    },
}

/// A STUN Binding request to learn a server-reflexive address.
struct StunQuery {
    server: SocketAddr,
    tid: [u8; 12],
    next_send: Instant,
    tries: u32,
    done: bool,
}

const STUN_TRIES: u32 = 5;

struct TurnRelay {
    server: SocketAddr,
    transport: TurnTransport,
    client: turn::client::Client,
    tcp: Option<mpsc::UnboundedSender<Vec<u8>>>,
    relayed: Option<SocketAddr>,
    done: bool,
}

struct LocalCand {
    cand: Candidate,
    kind: CandidateType,
    relay: Option<TurnTransport>,
}

struct Chan {
    label: String,
    config: ChannelConfig,
    cid: Option<ChannelId>,
    /// Added to the session (not merely part of a pending offer).
    confirmed: bool,
    state: watch::Sender<ChannelState>,
    msgs: mpsc::UnboundedSender<Message>,
    pending: VecDeque<(bool, Vec<u8>, Reply<()>)>,
    flush: Vec<Reply<()>>,
}

struct LocalTrack {
    kind: MediaKind,
    mid: Option<Mid>,
    confirmed: bool,
}

pub(crate) struct Driver {
    cfg: Config,
    rtc: Rtc,
    jsep: Jsep,
    /// Weak, so the task ends once the application drops every handle.
    cmd_tx: mpsc::WeakUnboundedSender<Cmd>,
    cmd_rx: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::UnboundedSender<Event>,

    udp4: Option<UdpSock>,
    udp6: Option<UdpSock>,
    buf: Vec<u8>,
    datagrams: Vec<Datagram>,
    /// Datagrams the kernel would not take yet (socket buffer full).
    backlog: VecDeque<(Option<IpAddr>, SocketAddr, Vec<u8>)>,

    stun: Vec<StunQuery>,
    turns: Vec<TurnRelay>,
    servers: Vec<Resolved>,
    locals: Vec<LocalCand>,
    /// Candidates found before the first setLocalDescription wait here.
    unsent: Vec<usize>,
    local_set: bool,
    gather_started: Instant,
    end_sent: bool,
    local_ufrag: String,
    first_mid: String,

    remote_set: bool,
    remote_ufrag: Option<String>,
    remote_kinds: HashMap<SocketAddr, CandidateType>,
    queued_remote: Vec<Candidate>,
    remote_count: usize,

    pending_offer: Option<(String, SdpPendingOffer)>,
    last_answer: Option<String>,
    remote_offer: Option<SdpOffer>,
    restart_wanted: bool,
    negotiation_needed_sent: bool,
    app_negotiated: bool,

    chans: HashMap<u64, Chan>,
    by_cid: HashMap<ChannelId, u64>,
    next_id: u64,
    tracks: HashMap<u64, LocalTrack>,
    remote_tracks: HashMap<Mid, mpsc::UnboundedSender<MediaFrame>>,

    ice_state: IceConnectionState,
    conn_state: PeerConnectionState,
    dtls_up: bool,
    disconnected_since: Option<Instant>,
    /// The local base and remote address data last went out on: the
    /// selected pair, known the moment it changes.
    path: Option<(SocketAddr, SocketAddr)>,
    stats: Stats,
    closed: bool,
    rtc_timeout: Option<Instant>,
    /// Last datagram str0m accepted, for our own consent check: str0m keeps
    /// a pair alive for 15 s after the peer's last check, too slow to call
    /// a vanished peer `disconnected` "within seconds".
    last_rx: Option<Instant>,
    /// str0m's own view, to return to when traffic resumes.
    agent_state: IceConnectionState,
    chan_rx: HashMap<u64, mpsc::UnboundedReceiver<Message>>,
    mdns: bool,
    /// Created at the first `.local` candidate (binds UDP 5353).
    resolver: Option<mdns::Resolver>,
}

fn now() -> Instant {
    Instant::now()
}

impl Driver {
    pub fn new(
        cfg: Config,
        servers: Vec<Resolved>,
        cmd_tx: mpsc::UnboundedSender<Cmd>,
        cmd_rx: mpsc::UnboundedReceiver<Cmd>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Driver, Error> {
        let start = now();
        let rtc = Rtc::builder()
            .set_stats_interval(Some(Duration::from_millis(500)))
            .set_sctp_max_buffered_amount(cfg.channel_buffer)
            .build(start);
        let udp4 = match UdpSock::bind(false, cfg.udp_port) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("no IPv4 UDP socket: {e}");
                None
            }
        };
        let udp6 = UdpSock::bind(true, 0)
            .map_err(|e| debug!("no IPv6 UDP socket: {e}"))
            .ok();
        if udp4.is_none() && udp6.is_none() {
            return Err(Error::Io(std::io::Error::other(
                "cannot bind any UDP socket",
            )));
        }
        let mdns = cfg.resolve_mdns;
        let mut d = Driver {
            cfg,
            rtc,
            jsep: Jsep::default(),
            cmd_tx: cmd_tx.downgrade(),
            cmd_rx,
            events,
            udp4,
            udp6,
            buf: vec![0; BATCH * SLOT],
            datagrams: Vec::with_capacity(BATCH * 4),
            backlog: VecDeque::new(),
            stun: Vec::new(),
            turns: Vec::new(),
            servers,
            locals: Vec::new(),
            unsent: Vec::new(),
            local_set: false,
            gather_started: start,
            end_sent: false,
            local_ufrag: String::new(),
            first_mid: "0".into(),
            remote_set: false,
            remote_ufrag: None,
            remote_kinds: HashMap::new(),
            queued_remote: Vec::new(),
            remote_count: 0,
            pending_offer: None,
            last_answer: None,
            remote_offer: None,
            restart_wanted: false,
            negotiation_needed_sent: false,
            app_negotiated: false,
            chans: HashMap::new(),
            by_cid: HashMap::new(),
            next_id: 1,
            tracks: HashMap::new(),
            remote_tracks: HashMap::new(),
            ice_state: IceConnectionState::New,
            conn_state: PeerConnectionState::New,
            dtls_up: false,
            disconnected_since: None,
            path: None,
            stats: Stats::default(),
            closed: false,
            rtc_timeout: None,
            last_rx: None,
            agent_state: IceConnectionState::New,
            chan_rx: HashMap::new(),
            mdns,
            resolver: None,
        };
        d.gather(start, true);
        Ok(d)
    }

    // ---------------------------------------------------------------- gathering

    /// Starts (or, after an ICE restart, redoes) gathering. Host candidates
    /// are immediate; STUN and TURN answers trickle in later.
    fn gather(&mut self, now: Instant, first: bool) {
        self.gather_started = now;
        self.end_sent = false;
        if !self.cfg.relay_only && first {
            for ip in self.host_ips() {
                let sock = if ip.is_ipv4() { &self.udp4 } else { &self.udp6 };
                let Some(sock) = sock else { continue };
                let addr = SocketAddr::new(ip, sock.port);
                match Candidate::host(addr, "udp") {
                    Ok(c) => self.add_local(c, CandidateType::Host, None),
                    Err(e) => debug!("skipping host candidate {addr}: {e}"),
                }
            }
        }
        let servers = self.servers.clone();
        if !self.cfg.relay_only {
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
                if self.sock_for(addr).is_none() {
                    continue;
                }
                self.stun.push(StunQuery {
                    server: addr,
                    tid: rand::random(),
                    next_send: now,
                    tries: 0,
                    done: false,
                });
            }
        }
        for s in servers {
            let Resolved::Turn {
                addr,
                transport,
                username,
                password,
            } = s
            else {
                continue;
            };
            if transport == TurnTransport::Udp && self.sock_for(addr).is_none() {
                continue;
            }
            // Keep a live allocation across an ICE restart; replace dead ones.
            if let Some(i) = self
                .turns
                .iter()
                .position(|t| t.server == addr && t.transport == transport)
            {
                let st = self.turns[i].client.state();
                if matches!(
                    st,
                    turn::client::State::Allocated | turn::client::State::Allocating
                ) {
                    continue;
                }
                self.turns.remove(i);
            }
            let mut tc = turn::client::Config::new(
                addr,
                match transport {
                    TurnTransport::Udp => turn::client::Transport::Udp,
                    TurnTransport::Tcp => turn::client::Transport::Tcp,
                },
                username,
                password,
            );
            tc.seed = rand::random();
            tc.software = Some("switchboard-peer".into());
            let mut client = turn::client::Client::new(tc);
            if let Err(e) = client.allocate(now) {
                warn!("TURN {addr}: {e}");
                continue;
            }
            let idx = self.turns.len();
            self.turns.push(TurnRelay {
                server: addr,
                transport,
                client,
                tcp: None,
                relayed: None,
                done: false,
            });
            if transport == TurnTransport::Tcp {
                tokio::spawn(tcp_turn(idx, addr, self.strong_tx()));
            }
        }
    }

    fn host_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = match &self.cfg.host_candidates {
            HostCandidates::Only(v) => v.clone(),
            hc => {
                let loopback = matches!(hc, HostCandidates::InterfacesAndLoopback);
                if_addrs::get_if_addrs()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i.ip())
                    .filter(|ip| loopback || !ip.is_loopback())
                    .filter(|ip| match ip {
                        IpAddr::V4(v4) => !v4.is_link_local(),
                        // Link-local IPv6 needs a scope id SDP cannot carry.
                        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
                    })
                    .collect()
            }
        };
        ips.sort();
        ips.dedup();
        ips
    }

    fn sock_for(&self, dst: SocketAddr) -> Option<&UdpSock> {
        if dst.is_ipv4() {
            self.udp4.as_ref()
        } else {
            self.udp6.as_ref()
        }
    }

    fn add_local(&mut self, c: Candidate, kind: CandidateType, relay: Option<TurnTransport>) {
        if self
            .locals
            .iter()
            .any(|l| l.cand.addr() == c.addr() && l.kind == kind)
        {
            return;
        }
        let added = self.rtc.add_local_candidate(c.clone()).is_some();
        if !added {
            debug!("str0m refused local candidate {c:?} (redundant)");
            return;
        }
        trace!("local candidate {c:?}");
        self.locals.push(LocalCand {
            cand: c,
            kind,
            relay,
        });
        let idx = self.locals.len() - 1;
        if self.local_set {
            self.emit_candidate(idx);
        } else {
            self.unsent.push(idx);
        }
    }

    fn emit_candidate(&mut self, idx: usize) {
        let line = self.locals[idx].cand.to_sdp_string();
        let init = IceCandidateInit {
            candidate: line,
            sdp_mid: Some(self.first_mid.clone()),
            sdp_m_line_index: Some(0),
            username_fragment: (!self.local_ufrag.is_empty()).then(|| self.local_ufrag.clone()),
        };
        self.emit(Event::IceCandidate(Some(init)));
    }

    fn gathering_done(&self, now: Instant) -> bool {
        let pending_stun = self.stun.iter().any(|q| !q.done);
        let pending_turn = self.turns.iter().any(|t| !t.done);
        (!pending_stun && !pending_turn) || now >= self.gather_started + self.cfg.gather_timeout
    }

    fn check_end_of_candidates(&mut self, now: Instant) {
        if self.local_set && !self.end_sent && self.gathering_done(now) {
            self.end_sent = true;
            self.emit(Event::IceCandidate(None));
        }
    }

    /// A sender for helper tasks and handles. With no handle left it is a
    /// dead end, which is what those tasks should see.
    fn strong_tx(&self) -> mpsc::UnboundedSender<Cmd> {
        self.cmd_tx
            .upgrade()
            .unwrap_or_else(|| mpsc::unbounded_channel().0)
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    // ---------------------------------------------------------------- main loop

    pub async fn run(mut self) {
        loop {
            let t = now();
            self.pump(t);
            if self.closed {
                break;
            }
            let deadline = self.next_deadline(t);
            let backlog = !self.backlog.is_empty();
            tokio::select! {
                biased;
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => { self.shutdown(); break; }
                },
                r = readable(&self.udp4) => { if r.is_ok() { self.read_udp(false); } }
                r = readable(&self.udp6) => { if r.is_ok() { self.read_udp(true); } }
                _ = writable(&self.udp4, &self.udp6), if backlog => self.flush_backlog(),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
        debug!("peer connection task ends");
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        let mut d = now + Duration::from_secs(1);
        if let Some(t) = self.rtc_timeout {
            d = d.min(t);
        }
        for q in &self.stun {
            if !q.done {
                d = d.min(q.next_send);
            }
        }
        for t in &self.turns {
            if let Some(x) = t.client.poll_timeout() {
                d = d.min(x);
            }
        }
        if !self.end_sent && self.local_set {
            d = d.min(self.gather_started + self.cfg.gather_timeout);
        }
        if let Some(s) = self.disconnected_since {
            d = d.min(s + self.cfg.failed_after);
        }
        if let Some(t) = self.last_rx {
            if matches!(
                self.ice_state,
                IceConnectionState::Connected | IceConnectionState::Completed
            ) {
                d = d.min(t + self.cfg.disconnected_after);
            }
        }
        d.max(now)
    }

    /// Runs every timer that is due and drains every output queue.
    fn pump(&mut self, now: Instant) {
        // STUN gathering retransmissions (RFC 8489: RTO doubling from 250 ms).
        let mut to_send = Vec::new();
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
            to_send.push((q.server, q.tid));
        }
        for (server, tid) in to_send {
            let mut buf = Vec::with_capacity(20);
            stun::MessageWriter::new(
                &mut buf,
                stun::MessageType::BINDING_REQUEST,
                stun::TransactionId(tid),
            )
            .finish();
            self.send_udp(None, server, &buf);
        }
        for i in 0..self.turns.len() {
            if self.turns[i]
                .client
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.turns[i].client.handle_timeout(now);
            }
        }
        if matches!(
            self.ice_state,
            IceConnectionState::Connected | IceConnectionState::Completed
        ) && self
            .last_rx
            .is_some_and(|t| now >= t + self.cfg.disconnected_after)
        {
            debug!(
                "nothing from the peer for {:?}: disconnected",
                self.cfg.disconnected_after
            );
            self.disconnected_since = Some(now);
            self.set_ice_state(IceConnectionState::Disconnected);
        }
        if let Some(since) = self.disconnected_since {
            if now >= since + self.cfg.failed_after
                && self.ice_state == IceConnectionState::Disconnected
            {
                self.disconnected_since = None;
                self.set_ice_state(IceConnectionState::Failed);
            }
        }
        // Time is fed on every pass, not only when str0m's last deadline is
        // due: after an API call (accept_offer) the ICE agent only leaves
        // `New` inside handle_timeout, and str0m's previous deadline may lie
        // far ahead, which left an answerer that never sent a check.
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            warn!("str0m timeout: {e}");
        }
        self.drain_rtc(now);
        self.drain_turns(now);
        self.check_end_of_candidates(now);
    }

    fn drain_rtc(&mut self, now: Instant) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => self.transmit(now, t.source, t.destination, &t.contents),
                Ok(Output::Event(e)) => self.rtc_event(now, e),
                Err(e) => {
                    warn!("str0m failed: {e}");
                    self.set_ice_state(IceConnectionState::Failed);
                    self.rtc_timeout = None;
                    break;
                }
            }
        }
        self.retry_channel_writes();
    }

    fn drain_turns(&mut self, now: Instant) {
        for i in 0..self.turns.len() {
            while let Some(ev) = self.turns[i].client.poll_event() {
                self.turn_event(now, i, ev);
            }
            // Disjoint borrows: the transmit is sent straight from the TURN
            // client's queue, no copy on the UDP path.
            let Driver {
                turns,
                udp4,
                udp6,
                backlog,
                ..
            } = self;
            let t = &mut turns[i];
            if t.transport == TurnTransport::Tcp && t.tcp.is_none() {
                continue; // Wait for the connection; the client keeps its queue.
            }
            while let Some(tx) = t.client.poll_transmit() {
                match &t.tcp {
                    // The writer task owns its buffers: one copy per TCP frame.
                    Some(tcp) => {
                        let _ = tcp.send(tx.data.to_vec());
                    }
                    None => send_via(udp4, udp6, backlog, None, tx.destination, tx.data),
                }
            }
        }
    }

    fn turn_event(&mut self, _now: Instant, i: usize, ev: turn::client::Event) {
        use turn::client::Event as E;
        match ev {
            E::Allocated {
                relayed, mapped, ..
            } => {
                let port = self.sock_for(relayed).map(|s| s.port).unwrap_or(0);
                let t = &mut self.turns[i];
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
                    Ok(c) => self.add_local(c, CandidateType::Relay, Some(transport)),
                    Err(e) => warn!("relay candidate {relayed}: {e}"),
                }
                if let (Some(m), false, TurnTransport::Udp) =
                    (mapped, self.cfg.relay_only, transport)
                {
                    if let Some(host) = self.locals.iter().find(|l| {
                        l.kind == CandidateType::Host && l.cand.addr().is_ipv4() == m.is_ipv4()
                    }) {
                        let base = host.cand.addr();
                        if let Ok(c) = Candidate::server_reflexive(m, base, "udp") {
                            self.add_local(c, CandidateType::Srflx, None);
                        }
                    }
                }
            }
            E::Failed { op, code, reason } => {
                if matches!(op, turn::client::Op::Allocate) {
                    warn!(
                        "TURN {}: allocation failed ({code:?}): {reason}",
                        self.turns[i].server
                    );
                    self.turns[i].done = true;
                } else {
                    // E.g. 403 for a peer the server's policy refuses (private
                    // addresses by default): that pair just never works.
                    debug!(
                        "TURN {}: {op:?} failed ({code:?}): {reason}",
                        self.turns[i].server
                    );
                }
            }
            E::Closed => self.turns[i].relayed = None,
            other => trace!("TURN event {other:?}"),
        }
    }

    // ---------------------------------------------------------------- packets

    fn read_udp(&mut self, v6: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut list = std::mem::take(&mut self.datagrams);
        // A bounded number of batches per wake-up keeps commands flowing.
        for _ in 0..8 {
            list.clear();
            let sock = if v6 { &self.udp6 } else { &self.udp4 };
            let Some(sock) = sock else { break };
            match sock.recv_batch(&mut buf, &mut list) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    warn!("UDP receive: {e}");
                    break;
                }
            }
            let t = now();
            for d in &list {
                self.datagram(t, d.source, d.destination, &buf[d.start..d.start + d.len]);
            }
            self.drain_rtc(t);
            self.drain_turns(t);
        }
        self.buf = buf;
        self.datagrams = list;
    }

    fn datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if let Some(i) = self
            .turns
            .iter()
            .position(|t| t.transport == TurnTransport::Udp && t.server == source)
        {
            // A TURN server also answers our srflx Binding requests.
            if self.stun_response(now, source, destination, data) {
                return;
            }
            self.turn_input(now, i, data);
            return;
        }
        if self.stun_response(now, source, destination, data) {
            return;
        }
        self.rtc_receive(now, source, destination, data);
    }

    fn turn_input(&mut self, now: Instant, i: usize, data: &[u8]) {
        let relayed = self.turns[i].relayed;
        if let Some(pd) = self.turns[i].client.handle_input(now, data) {
            if let Some(relayed) = relayed {
                let (peer, payload) = (pd.peer, pd.payload);
                self.rtc_receive(now, peer, relayed, payload);
            }
        }
    }

    fn rtc_receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        let Ok(r) = Receive::new(Protocol::Udp, source, destination, data) else {
            trace!("ignoring unparseable datagram from {source}");
            return;
        };
        match self.rtc.handle_input(Input::Receive(now, r)) {
            Ok(()) => {
                self.last_rx = Some(now);
                // Traffic is back (e.g. a NAT rebinding healed by itself).
                if self.ice_state == IceConnectionState::Disconnected
                    && matches!(
                        self.agent_state,
                        IceConnectionState::Connected | IceConnectionState::Completed
                    )
                {
                    self.disconnected_since = None;
                    self.set_ice_state(self.agent_state);
                }
            }
            Err(e) => debug!("str0m rejected a datagram from {source}: {e}"),
        }
    }

    /// Completes a srflx query if `data` answers one. True if consumed.
    fn stun_response(
        &mut self,
        _now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) -> bool {
        if !stun::is_stun(data) || data.len() < 20 {
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
            match self.locals.iter().find(|l| {
                l.kind == CandidateType::Host && l.cand.addr().is_ipv4() == mapped.is_ipv4()
            }) {
                Some(h) => h.cand.addr(),
                None => return true,
            }
        } else {
            destination
        };
        if let Ok(c) = Candidate::server_reflexive(mapped, base, "udp") {
            self.add_local(c, CandidateType::Srflx, None);
        }
        true
    }

    /// Sends what str0m wants sent: over a TURN allocation when the source
    /// is one of our relayed addresses, from the host socket otherwise.
    fn transmit(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if !stun::is_stun(data) {
            // Non-STUN traffic only goes out on the selected pair.
            let path = Some((source, destination));
            if self.path != path {
                let had = self.path.is_some();
                self.path = path;
                if had {
                    self.emit(Event::SelectedPairChanged);
                }
            }
        }
        if let Some(i) = self.turns.iter().position(|t| t.relayed == Some(source)) {
            let c = &mut self.turns[i].client;
            if c.channel(destination).is_none() {
                // ChannelBind also installs the permission; until it is
                // confirmed, data goes out in Send indications.
                let _ = c.bind_channel(now, destination);
            }
            if let Err(e) = c.send_to(destination, data) {
                debug!("TURN send to {destination}: {e}");
            }
            return;
        }
        let src = (!source.ip().is_unspecified()).then_some(source.ip());
        self.send_udp(src, destination, data);
    }

    fn send_udp(&mut self, src: Option<IpAddr>, dst: SocketAddr, data: &[u8]) {
        send_via(&self.udp4, &self.udp6, &mut self.backlog, src, dst, data);
    }

    fn flush_backlog(&mut self) {
        while let Some((src, dst, data)) = self.backlog.front() {
            let Some(sock) = self.sock_for(*dst) else {
                self.backlog.pop_front();
                continue;
            };
            match sock.try_send(*src, *dst, data) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => debug!("UDP send to {dst}: {e}"),
                Ok(()) => {}
            }
            self.backlog.pop_front();
        }
    }

    // ---------------------------------------------------------------- str0m events

    fn rtc_event(&mut self, now: Instant, e: str0m::Event) {
        use str0m::Event as E;
        match e {
            E::IceConnectionStateChange(s) => {
                use str0m::IceConnectionState as S;
                let ours = match s {
                    S::New => IceConnectionState::New,
                    S::Checking => IceConnectionState::Checking,
                    S::Connected => IceConnectionState::Connected,
                    S::Completed => IceConnectionState::Completed,
                    S::Disconnected => IceConnectionState::Disconnected,
                };
                self.agent_state = ours;
                if ours == IceConnectionState::Disconnected {
                    self.disconnected_since = Some(now);
                } else {
                    self.disconnected_since = None;
                }
                self.set_ice_state(ours);
            }
            E::Connected => {
                self.dtls_up = true;
                self.update_conn_state();
            }
            E::ChannelOpen(cid, label) => {
                if let Some(id) = self.by_cid.get(&cid).copied() {
                    if let Some(c) = self.chans.get_mut(&id) {
                        c.confirmed = true;
                        let _ = c.state.send_replace(ChannelState::Open);
                    }
                } else {
                    let id = self.new_chan(
                        label.clone(),
                        ChannelConfig {
                            label,
                            ..Default::default()
                        },
                        Some(cid),
                        true,
                    );
                    let _ = self.chans[&id].state.send_replace(ChannelState::Open);
                    let dc = self.handle_for(id);
                    self.emit(Event::DataChannel(dc));
                }
            }
            E::ChannelData(d) => {
                if let Some(c) = self.by_cid.get(&d.id).and_then(|id| self.chans.get(id)) {
                    let msg = if d.binary {
                        Message::Binary(d.data)
                    } else {
                        Message::Text(String::from_utf8_lossy(&d.data).into_owned())
                    };
                    let _ = c.msgs.send(msg);
                }
            }
            E::ChannelClose(cid) => {
                if let Some(id) = self.by_cid.remove(&cid) {
                    self.close_chan(id);
                }
            }
            E::ChannelBufferedAmountLow(_) => {}
            E::MediaAdded(m) => {
                let receiving = matches!(m.direction, Direction::RecvOnly | Direction::SendRecv);
                let can_send = matches!(m.direction, Direction::SendOnly | Direction::SendRecv);
                let ours = self.tracks.values().any(|t| t.mid == Some(m.mid));
                if receiving && !self.remote_tracks.contains_key(&m.mid) {
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.remote_tracks.insert(m.mid, tx);
                    self.emit(Event::Track(RemoteTrack {
                        mid: m.mid,
                        kind: m.kind,
                        can_send: can_send || ours,
                        frames: rx,
                    }));
                }
            }
            E::MediaData(m) => {
                if let Some(tx) = self.remote_tracks.get(&m.mid) {
                    let _ = tx.send(MediaFrame {
                        params: m.params,
                        time: m.time,
                        network_time: m.network_time,
                        data: m.data,
                    });
                }
            }
            E::KeyframeRequest(k) => self.emit(Event::KeyframeRequest { mid: k.mid }),
            E::PeerStats(s) => {
                self.stats.bytes_sent = s.peer_bytes_tx;
                self.stats.bytes_received = s.peer_bytes_rx;
                if let Some(p) = s.selected_candidate_pair {
                    self.stats.rtt_ms = p.current_round_trip_time.map(|d| d.as_secs_f64() * 1000.0);
                }
            }
            E::Closed => {
                self.set_ice_state(IceConnectionState::Closed);
            }
            _ => {}
        }
    }

    fn set_ice_state(&mut self, s: IceConnectionState) {
        if self.ice_state == s {
            return;
        }
        self.ice_state = s;
        self.emit(Event::IceConnectionState(s));
        self.update_conn_state();
    }

    fn update_conn_state(&mut self) {
        use IceConnectionState as I;
        let next = match self.ice_state {
            I::Closed => PeerConnectionState::Closed,
            I::Failed => PeerConnectionState::Failed,
            I::Disconnected => PeerConnectionState::Disconnected,
            I::New => PeerConnectionState::New,
            I::Checking => PeerConnectionState::Connecting,
            I::Connected | I::Completed if self.dtls_up => PeerConnectionState::Connected,
            I::Connected | I::Completed => PeerConnectionState::Connecting,
        };
        if next != self.conn_state {
            self.conn_state = next;
            self.emit(Event::ConnectionState(next));
        }
    }

    // ---------------------------------------------------------------- channels

    fn new_chan(
        &mut self,
        label: String,
        config: ChannelConfig,
        cid: Option<ChannelId>,
        confirmed: bool,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (state, _) = watch::channel(ChannelState::Connecting);
        let (msgs, rx) = mpsc::unbounded_channel();
        self.chans.insert(
            id,
            Chan {
                label,
                config,
                cid,
                confirmed,
                state,
                msgs,
                pending: VecDeque::new(),
                flush: Vec::new(),
            },
        );
        self.chan_rx.insert(id, rx);
        if let Some(cid) = cid {
            self.by_cid.insert(cid, id);
        }
        id
    }

    fn handle_for(&mut self, id: u64) -> DataChannel {
        let c = &self.chans[&id];
        let rx = self.chan_rx.remove(&id).expect("receiver taken once");
        DataChannel(Arc::new(ChannelShared {
            id,
            label: c.label.clone(),
            state: c.state.subscribe(),
            rx: Mutex::new(rx),
            cmd: self.strong_tx(),
        }))
    }

    fn close_chan(&mut self, id: u64) {
        if let Some(mut c) = self.chans.remove(&id) {
            let _ = c.state.send_replace(ChannelState::Closed);
            for (_, _, r) in c.pending.drain(..) {
                let _ = r.send(Err(Error::ChannelState("closed")));
            }
            for r in c.flush.drain(..) {
                let _ = r.send(Err(Error::ChannelState("closed")));
            }
            if let Some(cid) = c.cid {
                self.by_cid.remove(&cid);
            }
        }
    }

    /// Moves queued messages into str0m's SCTP buffer while it has room and
    /// answers flush waiters once a channel's buffer is empty.
    fn retry_channel_writes(&mut self) {
        let mut wrote = false;
        for c in self.chans.values_mut() {
            let Some(cid) = c.cid else { continue };
            if !c.pending.is_empty() {
                let Some(mut ch) = self.rtc.channel(cid) else {
                    continue;
                };
                while let Some((binary, data, _)) = c.pending.front() {
                    match ch.write(*binary, data) {
                        Ok(true) => {
                            let (_, _, r) = c.pending.pop_front().expect("front exists");
                            let _ = r.send(Ok(()));
                            wrote = true;
                        }
                        Ok(false) => break,
                        Err(e) => {
                            let (_, _, r) = c.pending.pop_front().expect("front exists");
                            let _ = r.send(Err(Error::Rtc(e.to_string())));
                        }
                    }
                }
            }
            if !c.flush.is_empty() {
                let Some(mut ch) = self.rtc.channel(cid) else {
                    continue;
                };
                if ch.buffered_amount() == 0 && c.pending.is_empty() {
                    for r in c.flush.drain(..) {
                        let _ = r.send(Ok(()));
                    }
                }
            }
        }
        let _ = wrote;
    }

    // ---------------------------------------------------------------- commands

    fn command(&mut self, c: Cmd) {
        let t = now();
        match c {
            Cmd::CreateOffer { reply } => {
                let r = self.create_offer(t);
                let _ = reply.send(r);
            }
            Cmd::CreateAnswer { reply } => {
                let r = self.create_answer();
                let _ = reply.send(r);
            }
            Cmd::SetLocal { desc, reply } => {
                let r = self.set_local(t, desc);
                let _ = reply.send(r);
            }
            Cmd::SetRemote { desc, reply } => {
                let r = self.set_remote(desc);
                let _ = reply.send(r);
            }
            Cmd::AddCandidate { candidate, reply } => {
                let r = self.add_remote_candidate(candidate);
                let _ = reply.send(r);
            }
            Cmd::RestartIce { reply } => {
                let r = if self.closed || self.jsep.state() == SignalingState::Closed {
                    Err(Error::Closed)
                } else {
                    self.restart_wanted = true;
                    self.negotiation_needed_sent = false;
                    self.maybe_negotiation_needed();
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Cmd::CreateChannel { label, init, reply } => {
                let r = self.create_channel(label, init);
                let _ = reply.send(r);
            }
            Cmd::AddTrack { kind, reply } => {
                let r = if self.jsep.state() == SignalingState::Closed {
                    Err(Error::Closed)
                } else {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.tracks.insert(
                        id,
                        LocalTrack {
                            kind,
                            mid: None,
                            confirmed: false,
                        },
                    );
                    self.negotiation_needed_sent = false;
                    self.maybe_negotiation_needed();
                    Ok(crate::new_track_sender(kind, id, self.strong_tx()))
                };
                let _ = reply.send(r);
            }
            Cmd::GetSignalingState { reply } => {
                let _ = reply.send(Ok(self.jsep.state()));
            }
            Cmd::GetStats { reply } => {
                let s = self.current_stats();
                let _ = reply.send(Ok(s));
            }
            Cmd::Close { reply } => {
                self.shutdown();
                let _ = reply.send(());
            }
            Cmd::ChannelSend {
                id,
                binary,
                data,
                reply,
            } => {
                let Some(c) = self.chans.get_mut(&id) else {
                    let _ = reply.send(Err(Error::ChannelState("closed")));
                    return;
                };
                if *c.state.borrow() != ChannelState::Open {
                    let _ = reply.send(Err(Error::ChannelState("not open yet")));
                    return;
                }
                let max = self.cfg.channel_buffer;
                if data.len() > max {
                    let _ = reply.send(Err(Error::MessageTooLarge(data.len(), max)));
                    return;
                }
                c.pending.push_back((binary, data, reply));
                self.retry_channel_writes();
            }
            Cmd::ChannelFlush { id, reply } => match self.chans.get_mut(&id) {
                Some(c) => {
                    c.flush.push(reply);
                    self.retry_channel_writes();
                }
                None => {
                    let _ = reply.send(Err(Error::ChannelState("closed")));
                }
            },
            Cmd::ChannelClose { id } => {
                if let Some(cid) = self.chans.get(&id).and_then(|c| c.cid) {
                    self.rtc.direct_api().close_data_channel(cid);
                }
                self.close_chan(id);
            }
            Cmd::WriteMedia { track, mid, frame } => {
                let mid = mid.or_else(|| self.tracks.get(&track).and_then(|t| t.mid));
                let Some(mid) = mid else { return };
                let Some(w) = self.rtc.writer(mid) else {
                    return;
                };
                let Some(pt) = w.match_params(frame.params) else {
                    return;
                };
                if let Err(e) = w.write(pt, frame.network_time, frame.time, frame.data) {
                    debug!("media write on {mid}: {e}");
                }
            }
            Cmd::RequestKeyframe { mid } => {
                if let Some(mut w) = self.rtc.writer(mid) {
                    let kind = str0m::media::KeyframeRequestKind::Pli;
                    if w.is_request_keyframe_possible(kind) {
                        let _ = w.request_keyframe(None, kind);
                    }
                }
            }
            Cmd::TcpConnected { turn, tx } => {
                if let Some(t) = self.turns.get_mut(turn) {
                    t.tcp = Some(tx);
                }
            }
            Cmd::TcpFrame { turn, data } => {
                if turn < self.turns.len() {
                    self.turn_input(t, turn, &data);
                }
            }
            Cmd::TcpClosed { turn, why } => {
                if let Some(tr) = self.turns.get_mut(turn) {
                    warn!("TURN/TCP {}: {why}", tr.server);
                    tr.done = true;
                    tr.relayed = None;
                }
            }
            Cmd::MdnsResolved { line, name, ip } => match ip {
                Some(ip) => {
                    let line = line.replacen(&name, &ip.to_string(), 1);
                    match Candidate::from_sdp_string(&line) {
                        Ok(c) => self.add_remote(c),
                        Err(e) => debug!("resolved mDNS candidate does not parse: {e}"),
                    }
                }
                None => {
                    debug!("mDNS name {name} did not resolve; relying on peer-reflexive discovery")
                }
            },
        }
    }

    fn current_stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.local_candidates = self.locals.len();
        s.remote_candidates = self.remote_count;
        s.selected_pair = self.path.map(|(src, dst)| {
            let local = match self
                .locals
                .iter()
                .find(|l| l.cand.addr() == src && l.kind == CandidateType::Relay)
            {
                Some(l) => CandidateInfo {
                    kind: CandidateType::Relay,
                    protocol: "udp",
                    address: src,
                    relay_protocol: l.relay.map(|t| match t {
                        TurnTransport::Udp => "udp",
                        TurnTransport::Tcp => "tcp",
                    }),
                },
                None => CandidateInfo {
                    kind: CandidateType::Host,
                    protocol: "udp",
                    address: src,
                    relay_protocol: None,
                },
            };
            let kind = self
                .remote_kinds
                .get(&dst)
                .copied()
                .unwrap_or(CandidateType::Prflx);
            CandidatePair {
                local,
                remote: CandidateInfo {
                    kind,
                    protocol: "udp",
                    address: dst,
                    relay_protocol: None,
                },
            }
        });
        if !matches!(
            self.ice_state,
            IceConnectionState::Connected | IceConnectionState::Completed
        ) {
            s.selected_pair = None;
        }
        s
    }

    fn create_channel(
        &mut self,
        label: String,
        init: DataChannelInit,
    ) -> Result<DataChannel, Error> {
        if self.jsep.state() == SignalingState::Closed {
            return Err(Error::Closed);
        }
        let config = ChannelConfig {
            label: label.clone(),
            ordered: init.ordered,
            reliability: match init.max_retransmits {
                None => Reliability::Reliable,
                Some(n) => Reliability::MaxRetransmits { retransmits: n },
            },
            negotiated: None,
            protocol: init.protocol,
        };
        let id = self.new_chan(label, config.clone(), None, false);
        if self.app_negotiated && self.jsep.state() == SignalingState::Stable {
            // An SCTP association exists: str0m opens it in-band at once.
            let mut api = self.rtc.sdp_api();
            let cid = api.add_channel_with_config(config);
            if api.apply().is_some() {
                warn!("str0m wanted a negotiation for a second data channel");
            }
            self.bind_chan(id, cid, true);
        } else {
            self.negotiation_needed_sent = false;
            self.maybe_negotiation_needed();
        }
        Ok(self.handle_for(id))
    }

    fn bind_chan(&mut self, id: u64, cid: ChannelId, confirmed: bool) {
        if let Some(c) = self.chans.get_mut(&id) {
            if let Some(old) = c.cid.replace(cid) {
                self.by_cid.remove(&old);
            }
            c.confirmed = confirmed;
            self.by_cid.insert(cid, id);
        }
    }

    fn has_wanted_changes(&self) -> bool {
        self.restart_wanted
            || self.chans.values().any(|c| !c.confirmed)
            || self.tracks.values().any(|t| !t.confirmed)
    }

    fn maybe_negotiation_needed(&mut self) {
        if self.jsep.state() == SignalingState::Stable
            && !self.negotiation_needed_sent
            && self.has_wanted_changes()
        {
            self.negotiation_needed_sent = true;
            self.emit(Event::NegotiationNeeded);
        }
    }

    fn create_offer(&mut self, now: Instant) -> Result<SessionDescription, Error> {
        self.jsep.check_create_offer()?;
        // Every new offer recreates the wanted changes (a pending offer is
        // invalidated by the next apply, so nothing is lost).
        self.pending_offer = None;
        let mut api = self.rtc.sdp_api();
        let mut bound = Vec::new();
        for (id, c) in &self.chans {
            if !c.confirmed {
                bound.push((*id, api.add_channel_with_config(c.config.clone())));
            }
        }
        let mut mids = Vec::new();
        for (id, t) in &self.tracks {
            if !t.confirmed {
                mids.push((
                    *id,
                    api.add_media(t.kind, Direction::SendRecv, None, None, None),
                ));
            }
        }
        let restart = self.restart_wanted;
        if restart {
            api.ice_restart(true);
        }
        let Some((offer, pending)) = api.apply() else {
            // Only direct changes (extra channels on an existing association).
            for (id, cid) in bound {
                self.bind_chan(id, cid, true);
            }
            return Err(Error::NothingToNegotiate);
        };
        for (id, cid) in bound {
            self.bind_chan(id, cid, false);
        }
        for (id, mid) in mids {
            if let Some(t) = self.tracks.get_mut(&id) {
                t.mid = Some(mid);
            }
        }
        let sdp = offer.to_sdp_string();
        self.learn_local_sdp(&sdp);
        if restart {
            // New credentials: ask STUN again, the mapping may have moved.
            self.gather(now, false);
        }
        self.pending_offer = Some((sdp.clone(), pending));
        Ok(SessionDescription::offer(sdp))
    }

    fn learn_local_sdp(&mut self, sdp: &str) {
        if let Some(u) = sdp_attr(sdp, "ice-ufrag") {
            self.local_ufrag = u.to_string();
        }
        if let Some(m) = sdp_attr(sdp, "mid") {
            self.first_mid = m.to_string();
        }
    }

    fn create_answer(&mut self) -> Result<SessionDescription, Error> {
        self.jsep.check_create_answer()?;
        if let Some(a) = &self.last_answer {
            return Ok(SessionDescription::answer(a.clone()));
        }
        let offer =
            self.remote_offer
                .take()
                .ok_or(Error::Jsep(crate::JsepError::InvalidModification(
                    "no remote offer",
                )))?;
        let had_app = offer.to_sdp_string().contains("m=application");
        let answer: SdpAnswer = match self.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                // str0m may have partly applied it; the offer is gone either way.
                self.jsep.reset_to_stable();
                self.emit(Event::SignalingState(self.jsep.state()));
                return Err(Error::InvalidSdp(e.to_string()));
            }
        };
        // accept_offer voided any pending offer of ours: forget its str0m
        // ids exactly as a rollback does.
        self.rollback_local();
        if had_app {
            self.app_negotiated = true;
        }
        for c in std::mem::take(&mut self.queued_remote) {
            self.add_remote(c);
        }
        let sdp = answer.to_sdp_string();
        self.learn_local_sdp(&sdp);
        self.last_answer = Some(sdp.clone());
        Ok(SessionDescription::answer(sdp))
    }

    fn set_local(
        &mut self,
        now: Instant,
        desc: Option<SessionDescription>,
    ) -> Result<Option<SessionDescription>, Error> {
        let desc = match desc {
            Some(d) => d,
            None => match self.jsep.state() {
                SignalingState::HaveRemoteOffer => self.create_answer()?,
                SignalingState::Stable | SignalingState::HaveLocalOffer => {
                    self.create_offer(now)?
                }
                SignalingState::Closed => return Err(Error::Closed),
            },
        };
        // Check the description is ours before moving the state.
        match desc.kind {
            SdpType::Offer => {
                let ok = self
                    .pending_offer
                    .as_ref()
                    .is_some_and(|(s, _)| *s == desc.sdp);
                if !ok && self.jsep.state() != SignalingState::Closed {
                    return Err(Error::ModifiedSdp);
                }
            }
            SdpType::Answer => {
                let ok = self.last_answer.as_deref() == Some(desc.sdp.as_str());
                if !ok && self.jsep.state() == SignalingState::HaveRemoteOffer {
                    return Err(Error::ModifiedSdp);
                }
            }
            _ => {}
        }
        let action = self.jsep.set_local(desc.kind)?;
        match action {
            LocalAction::UseOffer => {}
            LocalAction::UseAnswer => {
                self.last_answer = None;
                self.confirm_after_answer();
            }
            LocalAction::DropLocalOffer => self.rollback_local(),
        }
        self.emit(Event::SignalingState(self.jsep.state()));
        if !self.local_set {
            self.local_set = true;
            for idx in std::mem::take(&mut self.unsent) {
                self.emit_candidate(idx);
            }
        }
        if self.jsep.state() == SignalingState::Stable {
            self.negotiation_needed_sent = false;
            self.maybe_negotiation_needed();
        }
        self.check_end_of_candidates(now);
        Ok(Some(desc))
    }

    /// After we answered: channels str0m could add directly now that an
    /// association exists are added; the rest wait for our next offer.
    fn confirm_after_answer(&mut self) {
        if !self.app_negotiated {
            return;
        }
        let ids: Vec<u64> = self
            .chans
            .iter()
            .filter(|(_, c)| !c.confirmed && c.cid.is_none())
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            let cfg = self.chans[&id].config.clone();
            let mut api = self.rtc.sdp_api();
            let cid = api.add_channel_with_config(cfg);
            if api.apply().is_some() {
                warn!("str0m wanted a negotiation for a data channel on an existing association");
            }
            self.bind_chan(id, cid, true);
        }
    }

    fn rollback_local(&mut self) {
        self.pending_offer = None;
        for c in self.chans.values_mut() {
            if !c.confirmed {
                if let Some(cid) = c.cid.take() {
                    self.by_cid.remove(&cid);
                }
            }
        }
        for t in self.tracks.values_mut() {
            if !t.confirmed {
                t.mid = None;
            }
        }
    }

    fn set_remote(&mut self, desc: SessionDescription) -> Result<(), Error> {
        // Parse before touching the state, so bad SDP changes nothing.
        let parsed_offer = match desc.kind {
            SdpType::Offer => Some(
                SdpOffer::from_sdp_string(&desc.sdp)
                    .map_err(|e| Error::InvalidSdp(e.to_string()))?,
            ),
            _ => None,
        };
        let parsed_answer = match desc.kind {
            SdpType::Answer if self.jsep.state() == SignalingState::HaveLocalOffer => Some(
                SdpAnswer::from_sdp_string(&desc.sdp)
                    .map_err(|e| Error::InvalidSdp(e.to_string()))?,
            ),
            _ => None,
        };
        let action = self.jsep.set_remote(desc.kind)?;
        match action {
            RemoteAction::StoreOffer | RemoteAction::RollbackThenStoreOffer => {
                if action == RemoteAction::RollbackThenStoreOffer {
                    self.rollback_local();
                    self.emit(Event::SignalingState(SignalingState::Stable));
                }
                self.remote_offer = parsed_offer;
                self.last_answer = None;
                self.learn_remote_sdp(&desc.sdp);
            }
            RemoteAction::ApplyAnswer => {
                // Both exist in have-local-offer; if str0m ever disagrees,
                // fail the call rather than the process.
                let (Some((_, pending)), Some(answer)) = (self.pending_offer.take(), parsed_answer)
                else {
                    self.jsep.reset_to_stable();
                    self.rollback_local();
                    self.emit(Event::SignalingState(self.jsep.state()));
                    return Err(Error::InvalidSdp("no pending offer for this answer".into()));
                };
                if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
                    self.jsep.reset_to_stable();
                    self.rollback_local();
                    self.emit(Event::SignalingState(self.jsep.state()));
                    return Err(Error::InvalidSdp(e.to_string()));
                }
                self.learn_remote_sdp(&desc.sdp);
                if desc.sdp.contains("m=application") {
                    self.app_negotiated = true;
                }
                for c in self.chans.values_mut() {
                    if c.cid.is_some() {
                        c.confirmed = true;
                    }
                }
                for t in self.tracks.values_mut() {
                    if t.mid.is_some() {
                        t.confirmed = true;
                    }
                }
                if self.restart_wanted {
                    self.restart_wanted = false;
                }
                for c in std::mem::take(&mut self.queued_remote) {
                    self.add_remote(c);
                }
            }
            RemoteAction::DropRemoteOffer => {
                self.remote_offer = None;
                self.last_answer = None;
                self.queued_remote.clear();
            }
        }
        self.remote_set = true;
        self.emit(Event::SignalingState(self.jsep.state()));
        if self.jsep.state() == SignalingState::Stable {
            self.negotiation_needed_sent = false;
            self.maybe_negotiation_needed();
        }
        Ok(())
    }

    fn learn_remote_sdp(&mut self, sdp: &str) {
        let ufrag = sdp_attr(sdp, "ice-ufrag").map(str::to_string);
        if ufrag != self.remote_ufrag {
            self.remote_kinds.clear();
        }
        self.remote_ufrag = ufrag;
        for line in sdp.lines() {
            if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    if let Ok(cand) = Candidate::from_sdp_string(c) {
                        self.remote_kinds.insert(cand.addr(), kind_of(&cand));
                        self.remote_count += 1;
                    }
                }
            }
        }
    }

    fn add_remote_candidate(&mut self, init: Option<IceCandidateInit>) -> Result<(), Error> {
        if self.jsep.state() == SignalingState::Closed {
            return Err(Error::Closed);
        }
        if !self.remote_set {
            return Err(Error::Jsep(crate::JsepError::InvalidState {
                op: "addIceCandidate before setRemoteDescription",
                state: self.jsep.state(),
            }));
        }
        let Some(init) = init else { return Ok(()) };
        let line = init.candidate.trim();
        if line.is_empty() {
            return Ok(()); // end-of-candidates
        }
        let line = line.strip_prefix("a=").unwrap_or(line);
        if let (Some(u), Some(cur)) = (&init.username_fragment, &self.remote_ufrag) {
            if u != cur {
                debug!("dropping candidate for old ufrag {u}");
                return Ok(());
            }
        }
        // Chromium hides host addresses behind random `.local` names.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !fields[0].starts_with("candidate:") || fields[6] != "typ" {
            return Err(Error::InvalidCandidate(format!(
                "not an ICE candidate line: {line:?}"
            )));
        }
        if !fields[2].eq_ignore_ascii_case("udp") {
            debug!("ignoring non-UDP candidate {line}");
            return Ok(());
        }
        let host = fields[4];
        if host.ends_with(".local") {
            self.resolve_mdns(line.to_string(), host.to_string());
            return Ok(());
        }
        let c =
            Candidate::from_sdp_string(line).map_err(|e| Error::InvalidCandidate(e.to_string()))?;
        if self.jsep.state() == SignalingState::HaveRemoteOffer && self.remote_offer.is_some() {
            self.queued_remote.push(c);
        } else {
            self.add_remote(c);
        }
        Ok(())
    }

    fn resolve_mdns(&mut self, line: String, name: String) {
        if !self.mdns {
            return;
        }
        if self.resolver.is_none() {
            match mdns::Resolver::new() {
                Ok(r) => self.resolver = Some(r),
                Err(e) => {
                    // Peer-reflexive discovery still finds the address once
                    // the browser's checks arrive.
                    debug!("no mDNS resolver: {e}");
                    self.mdns = false;
                    return;
                }
            }
        }
        let r = self.resolver.clone().expect("set above");
        let tx = self.strong_tx();
        tokio::spawn(async move {
            let ip = match r.resolve(&name, Duration::from_secs(3)).await {
                Ok(ips) => ips
                    .iter()
                    .copied()
                    .find(|ip| ip.is_ipv4())
                    .or_else(|| ips.first().copied()),
                Err(e) => {
                    debug!("mDNS {name}: {e}");
                    None
                }
            };
            let _ = tx.send(Cmd::MdnsResolved { line, name, ip });
        });
    }

    fn add_remote(&mut self, c: Candidate) {
        self.remote_kinds.entry(c.addr()).or_insert(kind_of(&c));
        self.remote_count += 1;
        self.rtc.add_remote_candidate(c);
    }

    fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        let t = now();
        self.jsep.close();
        for id in self.chans.keys().copied().collect::<Vec<_>>() {
            self.close_chan(id);
        }
        self.rtc.disconnect();
        self.drain_rtc(t);
        for tr in &mut self.turns {
            let _ = tr.client.close(t);
        }
        self.drain_turns(t);
        self.flush_backlog();
        self.set_ice_state(IceConnectionState::Closed);
        self.emit(Event::SignalingState(SignalingState::Closed));
        self.closed = true;
    }
}

/// Sends one datagram from the socket of `dst`'s family; a full socket
/// buffer queues it (copied only then) for `flush_backlog`.
fn send_via(
    udp4: &Option<UdpSock>,
    udp6: &Option<UdpSock>,
    backlog: &mut VecDeque<(Option<IpAddr>, SocketAddr, Vec<u8>)>,
    src: Option<IpAddr>,
    dst: SocketAddr,
    data: &[u8],
) {
    if !backlog.is_empty() {
        if backlog.len() < 4096 {
            backlog.push_back((src, dst, data.to_vec()));
        }
        return;
    }
    let sock = if dst.is_ipv4() { udp4 } else { udp6 };
    let Some(sock) = sock else { return };
    match sock.try_send(src, dst, data) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            backlog.push_back((src, dst, data.to_vec()))
        }
        Err(e) => debug!("UDP send to {dst}: {e}"),
    }
}

fn kind_of(c: &Candidate) -> CandidateType {
    use str0m::CandidateKind as K;
    match c.kind() {
        K::Host => CandidateType::Host,
        K::ServerReflexive => CandidateType::Srflx,
        K::PeerReflexive => CandidateType::Prflx,
        K::Relayed => CandidateType::Relay,
    }
}

/// The first `a=NAME:VALUE` in an SDP.
fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

async fn readable(s: &Option<UdpSock>) -> std::io::Result<()> {
    match s {
        Some(s) => s.sock.readable().await,
        None => std::future::pending().await,
    }
}

async fn writable(a: &Option<UdpSock>, b: &Option<UdpSock>) {
    // Either socket may be the one that filled up; waking early is harmless.
    match (a, b) {
        (Some(a), Some(b)) => {
            tokio::select! { _ = a.sock.writable() => {}, _ = b.sock.writable() => {} }
        }
        (Some(a), None) => {
            let _ = a.sock.writable().await;
        }
        (None, Some(b)) => {
            let _ = b.sock.writable().await;
        }
        (None, None) => std::future::pending().await,
    }
}

/// Connects to a TURN server over TCP and shuttles frames both ways.
async fn tcp_turn(idx: usize, addr: SocketAddr, cmd: mpsc::UnboundedSender<Cmd>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream =
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = cmd.send(Cmd::TcpClosed {
                    turn: idx,
                    why: format!("connect: {e}"),
                });
                return;
            }
            Err(_) => {
                let _ = cmd.send(Cmd::TcpClosed {
                    turn: idx,
                    why: "connect timed out".into(),
                });
                return;
            }
        };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    if cmd.send(Cmd::TcpConnected { turn: idx, tx }).is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let why = loop {
        match rd.read(&mut chunk).await {
            Ok(0) => break "closed by server".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break e.to_string(),
        }
        let mut off = 0;
        let bad = loop {
            match stun::frame_len(&buf[off..]) {
                Ok(Some(f)) if buf.len() - off >= f.len() => {
                    let data = buf[off..off + f.len()].to_vec();
                    off += f.len();
                    if cmd.send(Cmd::TcpFrame { turn: idx, data }).is_err() {
                        writer.abort();
                        return;
                    }
                }
                Ok(_) => break false,
                Err(_) => break true,
            }
        };
        buf.drain(..off);
        if bad {
            break "lost TURN framing".to_string();
        }
    };
    writer.abort();
    let _ = cmd.send(Cmd::TcpClosed { turn: idx, why });
}
