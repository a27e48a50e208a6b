//! The task behind a [`crate::PeerConnection`]: the tokio loop around the
//! sans-IO parts. It owns str0m's `Rtc`, the UDP sockets and the helper
//! tasks (TURN over TCP, mDNS), feeds the parts what arrives and carries
//! out what they ask for:
//! - [`crate::gather`]: host, server-reflexive and relay candidates;
//! - [`crate::channels`]: the data channel table, its write queue and
//!   flush waiters;
//! - [`crate::liveness`]: connection states and the consent timer;
//! - [`crate::tcp_turn`]: the TCP connections of TURN/TCP relays;
//! - [`crate::negotiation`]: the JSEP state; the glue below turns its
//!   decisions into `SdpApi` calls.
//!
//! str0m's contract is followed to the letter, in one place: every
//! mutation of the `Rtc` goes through [`Driver::mutate`], which drains
//! `poll_output` until it yields a timeout; `Input::Timeout` is fed on
//! every pass of the loop.
//!
//! Demultiplexing of one UDP socket: datagrams from a STUN/TURN server go
//! to the gatherer (relayed data comes out and enters `Rtc` as if it
//! arrived on the relayed address); everything else (ICE checks, DTLS,
//! SRTP) goes to `Rtc`.

use crate::channels::Channels;
use crate::config::{Config, HostCandidates, Resolved, TurnTransport};
use crate::gather::{self, Gatherer, Ports, RelayId};
use crate::jsep::{
    IceCandidateInit, LocalAction, RemoteAction, SdpType, SessionDescription, SignalingState,
};
use crate::liveness::{Change, Liveness};
use crate::negotiation::{Negotiation, RemoteCandidate};
use crate::net::{Datagram, UdpSock, BATCH, SLOT};
use crate::redundancy::{LossMeter, Redundancy};
use crate::tcp_turn::TcpTurns;
use crate::{
    CandidateInfo, CandidatePair, CandidateType, DataChannel, DataChannelInit, Error, Event,
    IceConnectionState, MediaFrame, PathBytes, RedundancyStats, RemoteTrack, Stats, TrackSender,
};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::format::PayloadParams;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};
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
        stream: Option<String>,
        reply: Reply<TrackSender>,
    },
    GetSignalingState {
        reply: Reply<SignalingState>,
    },
    GetDescriptions {
        reply: Reply<(Option<SessionDescription>, Option<SessionDescription>)>,
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
    TrackParams {
        track: u64,
        mid: Option<Mid>,
        reply: Reply<Vec<PayloadParams>>,
    },
    // From helper tasks. `turn` is the relay's stable id.
    TcpConnected {
        turn: RelayId,
        tx: mpsc::UnboundedSender<Vec<u8>>,
    },
    TcpFrame {
        turn: RelayId,
        data: Vec<u8>,
    },
    TcpClosed {
        turn: RelayId,
        why: String,
    },
    MdnsResolved {
        line: String,
        name: String,
        ip: Option<IpAddr>,
    },
}

struct LocalTrack {
    kind: MediaKind,
    /// The `a=msid` stream the line belongs to; `None`: one of its own.
    stream: Option<String>,
    mid: Option<Mid>,
    confirmed: bool,
}

pub(crate) struct Driver {
    cfg: Config,
    rtc: Rtc,
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

    gatherer: Gatherer,
    tcp: TcpTurns,
    /// Candidates found before the first setLocalDescription wait here
    /// (indices into the gatherer's locals).
    unsent: Vec<usize>,
    end_sent: bool,
    neg: Negotiation,
    /// The last offer or answer set locally and remotely (what
    /// `currentLocalDescription`/`currentRemoteDescription` roughly are).
    last_local: Option<SessionDescription>,
    last_remote: Option<SessionDescription>,

    chans: Channels,
    /// Reused list of channels with queued writes.
    busy: Vec<u64>,
    next_track: u64,
    tracks: HashMap<u64, LocalTrack>,
    remote_tracks: HashMap<Mid, mpsc::UnboundedSender<MediaFrame>>,

    live: Liveness,
    /// The local base and remote address data last went out on: the
    /// selected pair, known the moment it changes.
    path: Option<(SocketAddr, SocketAddr)>,
    /// Whether `path` goes through a TURN server (ours or the peer's).
    path_relayed: bool,
    /// The last (source, destination) data arrived on and whether it was
    /// relayed: looked up once per change, not per datagram.
    rx_path: Option<(SocketAddr, SocketAddr, bool)>,
    /// `neg.kinds_version()` when `path_relayed` and `rx_path` were
    /// worked out: a candidate signaled since may change the answer.
    kinds_seen: u64,
    paths: PathBytes,
    stats: Stats,
    /// Loss of the peer's datagrams, and whether we send copies.
    loss: LossMeter,
    redundancy: Redundancy,
    copies: u64,
    closed: bool,
    rtc_timeout: Option<Instant>,
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
        let mut builder = Rtc::builder()
            .set_stats_interval(Some(Duration::from_millis(500)))
            .set_sctp_max_buffered_amount(cfg.channel_buffer);
        builder.set_initial_stun_rto(cfg.ice_check_rto);
        let rtc = builder.build(start);
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
        let ports = Ports {
            v4: udp4.as_ref().map(|s| s.port),
            v6: udp6.as_ref().map(|s| s.port),
        };
        let gatherer = Gatherer::new(start, servers, cfg.relay_only, cfg.gather_timeout, ports);
        let mdns = cfg.resolve_mdns;
        let live = Liveness::new(cfg.disconnected_after, cfg.failed_after);
        let chans = Channels::new(cfg.channel_buffer);
        let redundancy = cfg.redundancy;
        let mut d = Driver {
            cfg,
            rtc,
            cmd_tx: cmd_tx.downgrade(),
            cmd_rx,
            events,
            udp4,
            udp6,
            buf: vec![0; BATCH * SLOT],
            datagrams: Vec::with_capacity(BATCH * 4),
            backlog: VecDeque::new(),
            gatherer,
            tcp: TcpTurns::default(),
            unsent: Vec::new(),
            end_sent: false,
            neg: Negotiation::default(),
            last_local: None,
            last_remote: None,
            chans,
            busy: Vec::new(),
            next_track: 1,
            tracks: HashMap::new(),
            remote_tracks: HashMap::new(),
            live,
            path: None,
            path_relayed: false,
            rx_path: None,
            kinds_seen: 0,
            paths: PathBytes::default(),
            stats: Stats::default(),
            loss: LossMeter::for_mode(redundancy.mode),
            redundancy: Redundancy::new(redundancy),
            copies: 0,
            closed: false,
            rtc_timeout: None,
            mdns,
            resolver: None,
        };
        d.gather(start, true);
        Ok(d)
    }

    // ---------------------------------------------------------------- str0m's rule

    /// Every mutation of the `Rtc` goes through here: `f` runs, then
    /// `poll_output` is drained until str0m hands out its next timeout.
    /// Draining never mutates the `Rtc` itself, so this does not nest.
    fn mutate<R>(&mut self, now: Instant, f: impl FnOnce(&mut Self) -> R) -> R {
        let r = f(self);
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
                    self.liveness(|l| l.set(IceConnectionState::Failed));
                    self.rtc_timeout = None;
                    break;
                }
            }
        }
        r
    }

    /// Runs `f` on the liveness state and tells the application what
    /// changed, in order.
    fn liveness(&mut self, f: impl FnOnce(&mut Liveness)) {
        f(&mut self.live);
        while let Some(c) = self.live.poll_change() {
            let _ = self.events.send(match c {
                Change::Ice(s) => Event::IceConnectionState(s),
                Change::Conn(s) => Event::ConnectionState(s),
            });
        }
    }

    // ---------------------------------------------------------------- gathering

    /// Starts (or, after an ICE restart, redoes) gathering.
    fn gather(&mut self, now: Instant, first: bool) {
        self.end_sent = false;
        let hosts = if first && !self.cfg.relay_only {
            host_ips(&self.cfg.host_candidates)
        } else {
            Vec::new()
        };
        self.gatherer.start(now, &hosts, first);
        self.gather_outputs(now);
    }

    /// Carries out what the gatherer asks for: Binding requests, local
    /// candidates, TURN/TCP connections.
    fn gather_outputs(&mut self, now: Instant) {
        while let Some((server, pkt)) = self.gatherer.poll_stun_transmit() {
            send_via(&self.udp4, &self.udp6, &mut self.backlog, None, server, pkt);
        }
        while let Some(o) = self.gatherer.poll_output() {
            match o {
                gather::Output::Candidate { cand, kind, relay } => {
                    let added =
                        self.mutate(now, |d| d.rtc.add_local_candidate(cand.clone()).is_some());
                    if !added {
                        debug!("str0m refused local candidate {cand:?} (redundant)");
                        continue;
                    }
                    if let Some(idx) = self.gatherer.accepted(cand, kind, relay) {
                        if self.neg.local_set {
                            self.emit_candidate(idx);
                        } else {
                            self.unsent.push(idx);
                        }
                    }
                }
                gather::Output::ConnectTcp { relay, server, tls } => {
                    let tx = self.strong_tx();
                    let tls = tls.map(|name| (name, self.cfg.tls.clone()));
                    self.tcp.connect(relay, server, tls, tx);
                }
                gather::Output::DropTcp { relay } => self.tcp.remove(relay),
            }
        }
    }

    /// Sends what the TURN clients queued, straight from their queues.
    fn flush_relays(&mut self) {
        let Driver {
            gatherer,
            tcp,
            udp4,
            udp6,
            backlog,
            ..
        } = self;
        gatherer.drain_relay_transmits(|relay, transport, dst, data| match transport {
            TurnTransport::Tcp | TurnTransport::Tls => tcp.send(relay, data),
            TurnTransport::Udp => send_via(udp4, udp6, backlog, None, dst, data),
        });
    }

    fn emit_candidate(&mut self, idx: usize) {
        let init = self.neg.candidate_init(&self.gatherer.locals()[idx].cand);
        self.emit(Event::IceCandidate(Some(init)));
    }

    fn check_end_of_candidates(&mut self, now: Instant) {
        if self.neg.local_set && !self.end_sent && self.gatherer.is_done(now) {
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
        for t in [
            self.rtc_timeout,
            self.gatherer.poll_timeout(),
            (!self.end_sent && self.neg.local_set).then(|| self.gatherer.deadline()),
            self.live.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        {
            d = d.min(t);
        }
        d.max(now)
    }

    /// Runs every timer that is due and drains every output queue.
    fn pump(&mut self, now: Instant) {
        self.gatherer.handle_timeout(now);
        self.gather_outputs(now);
        self.liveness(|l| l.handle_timeout(now));
        // Time is fed on every pass, not only when str0m's last deadline is
        // due: after an API call (accept_offer) the ICE agent only leaves
        // `New` inside handle_timeout, and str0m's previous deadline may lie
        // far ahead, which left an answerer that never sent a check.
        self.mutate(now, |d| {
            if let Err(e) = d.rtc.handle_input(Input::Timeout(now)) {
                warn!("str0m timeout: {e}");
            }
        });
        self.write_channels(now);
        self.flush_relays();
        self.check_end_of_candidates(now);
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
            self.write_channels(t);
            self.flush_relays();
        }
        self.buf = buf;
        self.datagrams = list;
    }

    fn datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        match self.gatherer.handle_udp(now, source, destination, data) {
            gather::Input::NotOurs => self.rtc_receive(now, source, destination, data),
            gather::Input::Relayed {
                peer,
                relayed,
                payload,
            } => self.rtc_receive(now, peer, relayed, payload),
            gather::Input::Consumed => self.gather_outputs(now),
        }
    }

    fn tcp_frame(&mut self, now: Instant, relay: RelayId, data: &[u8]) {
        match self.gatherer.handle_tcp_frame(now, relay, data) {
            gather::Input::Relayed {
                peer,
                relayed,
                payload,
            } => self.rtc_receive(now, peer, relayed, payload),
            gather::Input::Consumed | gather::Input::NotOurs => self.gather_outputs(now),
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
        if !stun::is_stun(data) {
            self.check_path_kinds();
            let relayed = match self.rx_path {
                Some((s, d, relayed)) if s == source && d == destination => relayed,
                _ => {
                    let relayed = self.relayed(destination, source);
                    self.rx_path = Some((source, destination, relayed));
                    relayed
                }
            };
            let t = if relayed {
                &mut self.paths.relay
            } else {
                &mut self.paths.direct
            };
            t.received += data.len() as u64;
            self.loss.datagram(data);
            self.redundancy.update(self.loss.estimate());
        }
        self.mutate(now, |d| match d.rtc.handle_input(Input::Receive(now, r)) {
            Ok(()) => d.liveness(|l| l.handle_receive(now)),
            Err(e) => debug!("str0m rejected a datagram from {source}: {e}"),
        });
    }

    /// Sends what str0m wants sent: over a TURN allocation when the source
    /// is one of our relayed addresses, from the host socket otherwise.
    fn transmit(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if !stun::is_stun(data) {
            self.check_path_kinds();
            // Non-STUN traffic only goes out on the selected pair.
            let path = Some((source, destination));
            if self.path != path {
                let had = self.path.is_some();
                self.path = path;
                self.path_relayed = self.relayed(source, destination);
                if had {
                    self.emit(Event::SelectedPairChanged);
                }
            }
            let t = if self.path_relayed {
                &mut self.paths.relay
            } else {
                &mut self.paths.direct
            };
            t.sent += data.len() as u64;
            if self.redundancy.copy(data, self.loss.peer_sent_copies()) {
                // The copy goes first and the same way; see crate::redundancy.
                t.sent += data.len() as u64;
                self.copies += 1;
                self.send_datagram(now, source, destination, data);
            }
        }
        self.send_datagram(now, source, destination, data);
    }

    /// One datagram out: through TURN when `source` is a relayed address.
    fn send_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        data: &[u8],
    ) {
        if self.gatherer.send_relayed(now, source, destination, data) {
            return;
        }
        let src = (!source.ip().is_unspecified()).then_some(source.ip());
        send_via(
            &self.udp4,
            &self.udp6,
            &mut self.backlog,
            src,
            destination,
            data,
        );
    }

    fn sock_for(&self, dst: SocketAddr) -> Option<&UdpSock> {
        if dst.is_ipv4() {
            self.udp4.as_ref()
        } else {
            self.udp6.as_ref()
        }
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
            E::IceConnectionStateChange(s) => self.liveness(|l| l.handle_agent_state(now, s)),
            E::Connected => self.liveness(|l| l.handle_dtls_connected()),
            E::ChannelOpen(cid, label) => {
                if let Some(id) = self.chans.handle_open(cid, label) {
                    let dc = self.chans.handle(id, self.strong_tx());
                    self.emit(Event::DataChannel(dc));
                }
            }
            E::ChannelData(d) => self.chans.handle_data(d.id, d.binary, d.data),
            E::ChannelClose(cid) => self.chans.handle_close(cid),
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
                self.stats.loss_out = s.egress_loss_fraction.map(f64::from);
                self.stats.loss_in = s.ingress_loss_fraction.map(f64::from);
                if let Some(p) = s.selected_candidate_pair {
                    self.stats.rtt_ms = p.current_round_trip_time.map(|d| d.as_secs_f64() * 1000.0);
                }
            }
            E::Closed => self.liveness(|l| l.set(IceConnectionState::Closed)),
            _ => {}
        }
    }

    // ---------------------------------------------------------------- channels

    /// Moves queued messages into str0m's SCTP buffer while it has room,
    /// one write (one mutation, drained) at a time, and answers flush
    /// waiters once a channel's buffer is empty.
    fn write_channels(&mut self, now: Instant) {
        let mut busy = std::mem::take(&mut self.busy);
        busy.clear();
        self.chans.busy(&mut busy);
        for &id in &busy {
            while let Some((cid, w)) = self.chans.pop_write(id) {
                let r = self.mutate(now, |d| {
                    d.rtc.channel(cid).map(|mut ch| ch.write(w.binary, &w.data))
                });
                match r {
                    Some(Ok(true)) => {
                        let _ = w.reply.send(Ok(()));
                    }
                    Some(Err(e)) => {
                        let _ = w.reply.send(Err(Error::Rtc(e.to_string())));
                    }
                    // No room yet (or str0m has no such channel yet).
                    Some(Ok(false)) | None => {
                        self.chans.unpop_write(id, w);
                        break;
                    }
                }
            }
            if let Some(cid) = self.chans.wants_flush(id) {
                if let Some(mut ch) = self.rtc.channel(cid) {
                    let buffered = ch.buffered_amount();
                    self.chans.handle_buffered(id, buffered);
                }
            }
        }
        self.busy = busy;
    }

    // ---------------------------------------------------------------- commands

    /// One call per command; replies go back as they are.
    fn command(&mut self, c: Cmd) {
        let t = now();
        match c {
            Cmd::CreateOffer { reply } => answer(reply, self.create_offer(t)),
            Cmd::CreateAnswer { reply } => answer(reply, self.create_answer(t)),
            Cmd::SetLocal { desc, reply } => answer(reply, self.set_local(t, desc)),
            Cmd::SetRemote { desc, reply } => answer(reply, self.set_remote(t, desc)),
            Cmd::AddCandidate { candidate, reply } => {
                answer(reply, self.add_remote_candidate(t, candidate))
            }
            Cmd::RestartIce { reply } => answer(reply, self.restart_ice()),
            Cmd::CreateChannel { label, init, reply } => {
                answer(reply, self.create_channel(t, label, init))
            }
            Cmd::AddTrack {
                kind,
                stream,
                reply,
            } => answer(reply, self.add_track(kind, stream)),
            Cmd::GetSignalingState { reply } => answer(reply, Ok(self.neg.state())),
            Cmd::GetDescriptions { reply } => answer(
                reply,
                Ok((self.last_local.clone(), self.last_remote.clone())),
            ),
            Cmd::GetStats { reply } => answer(reply, Ok(self.current_stats())),
            Cmd::Close { reply } => {
                self.shutdown();
                let _ = reply.send(());
            }
            Cmd::ChannelSend {
                id,
                binary,
                data,
                reply,
            } => self.channel_send(t, id, binary, data, reply),
            Cmd::ChannelFlush { id, reply } => self.channel_flush(t, id, reply),
            Cmd::ChannelClose { id } => self.close_channel(t, id),
            Cmd::WriteMedia { track, mid, frame } => self.write_media(t, track, mid, frame),
            Cmd::RequestKeyframe { mid } => self.request_keyframe(t, mid),
            Cmd::TrackParams { track, mid, reply } => {
                let mid = mid.or_else(|| self.tracks.get(&track).and_then(|t| t.mid));
                let params = match mid {
                    Some(mid) => self.mutate(t, |d| {
                        d.rtc
                            .writer(mid)
                            .map(|w| w.payload_params().copied().collect())
                            .unwrap_or_default()
                    }),
                    None => Vec::new(),
                };
                answer(reply, Ok(params))
            }
            Cmd::TcpConnected { turn, tx } => self.tcp_connected(turn, tx),
            Cmd::TcpFrame { turn, data } => self.tcp_frame(t, turn, &data),
            Cmd::TcpClosed { turn, why } => self.tcp_closed(turn, &why),
            Cmd::MdnsResolved { line, name, ip } => self.mdns_resolved(t, line, name, ip),
        }
    }

    fn channel_send(
        &mut self,
        now: Instant,
        id: u64,
        binary: bool,
        data: Vec<u8>,
        reply: Reply<()>,
    ) {
        self.chans.send(id, binary, data, reply);
        self.write_channels(now);
    }

    fn channel_flush(&mut self, now: Instant, id: u64, reply: Reply<()>) {
        self.chans.flush(id, reply);
        self.write_channels(now);
    }

    fn tcp_connected(&mut self, relay: RelayId, tx: mpsc::UnboundedSender<Vec<u8>>) {
        if self.tcp.connected(relay, tx) {
            self.gatherer.handle_tcp_connected(relay);
        }
    }

    fn tcp_closed(&mut self, relay: RelayId, why: &str) {
        self.tcp.remove(relay);
        self.gatherer.handle_tcp_closed(relay, why);
    }

    fn restart_ice(&mut self) -> Result<(), Error> {
        if self.closed || self.neg.state() == SignalingState::Closed {
            return Err(Error::Closed);
        }
        self.neg.restart_wanted = true;
        self.neg.renegotiate();
        self.maybe_negotiation_needed();
        Ok(())
    }

    fn add_track(&mut self, kind: MediaKind, stream: Option<String>) -> Result<TrackSender, Error> {
        if self.neg.state() == SignalingState::Closed {
            return Err(Error::Closed);
        }
        let id = self.next_track;
        self.next_track += 1;
        self.tracks.insert(
            id,
            LocalTrack {
                kind,
                stream,
                mid: None,
                confirmed: false,
            },
        );
        self.neg.renegotiate();
        self.maybe_negotiation_needed();
        Ok(crate::new_track_sender(kind, id, self.strong_tx()))
    }

    fn close_channel(&mut self, now: Instant, id: u64) {
        if let Some(cid) = self.chans.get(id).and_then(|c| c.cid) {
            self.mutate(now, |d| d.rtc.direct_api().close_data_channel(cid));
        }
        self.chans.close(id);
    }

    fn write_media(&mut self, now: Instant, track: u64, mid: Option<Mid>, frame: MediaFrame) {
        let mid = mid.or_else(|| self.tracks.get(&track).and_then(|t| t.mid));
        let Some(mid) = mid else { return };
        self.mutate(now, |d| {
            let Some(w) = d.rtc.writer(mid) else {
                return;
            };
            let Some(pt) = w.match_params(frame.params) else {
                return;
            };
            if let Err(e) = w.write(pt, frame.network_time, frame.time, frame.data) {
                debug!("media write on {mid}: {e}");
            }
        });
    }

    fn request_keyframe(&mut self, now: Instant, mid: Mid) {
        self.mutate(now, |d| {
            if let Some(mut w) = d.rtc.writer(mid) {
                let kind = str0m::media::KeyframeRequestKind::Pli;
                if w.is_request_keyframe_possible(kind) {
                    let _ = w.request_keyframe(None, kind);
                }
            }
        });
    }

    fn mdns_resolved(&mut self, now: Instant, line: String, name: String, ip: Option<IpAddr>) {
        match ip {
            Some(ip) => {
                let line = line.replacen(&name, &ip.to_string(), 1);
                match Candidate::from_sdp_string(&line) {
                    Ok(c) => self.add_remote(now, c),
                    Err(e) => debug!("resolved mDNS candidate does not parse: {e}"),
                }
            }
            None => {
                debug!("mDNS name {name} did not resolve; relying on peer-reflexive discovery")
            }
        }
    }

    /// Forgets what `relayed` answered if the remote candidates changed.
    fn check_path_kinds(&mut self) {
        let v = self.neg.kinds_version();
        if v != self.kinds_seen {
            self.kinds_seen = v;
            self.rx_path = None;
            if let Some((src, dst)) = self.path {
                self.path_relayed = self.relayed(src, dst);
            }
        }
    }

    /// Whether local `local` and remote `remote` talk through a TURN
    /// server: `local` is one of our relayed addresses, or `remote` is a
    /// relay candidate the peer signaled.
    fn relayed(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        self.gatherer.relay_transport(local).is_some()
            || self.neg.remote_kind(remote) == Some(CandidateType::Relay)
    }

    fn current_stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.paths = self.paths;
        s.local_candidates = self.gatherer.locals().len();
        s.remote_candidates = self.neg.remote_count();
        s.redundancy = RedundancyStats {
            loss_in: self.loss.estimate(),
            active: self.redundancy.active(),
            copies: self.copies,
        };
        s.selected_pair = self.path.map(|(src, dst)| {
            let local = match self.gatherer.relay_transport(src) {
                Some(relay) => CandidateInfo {
                    kind: CandidateType::Relay,
                    protocol: "udp",
                    address: src,
                    relay_protocol: relay.map(|t| match t {
                        TurnTransport::Udp => "udp",
                        TurnTransport::Tcp => "tcp",
                        TurnTransport::Tls => "tls",
                    }),
                },
                None => CandidateInfo {
                    kind: CandidateType::Host,
                    protocol: "udp",
                    address: src,
                    relay_protocol: None,
                },
            };
            let kind = self.neg.remote_kind(dst).unwrap_or(CandidateType::Prflx);
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
        if !self.live.is_connected() {
            s.selected_pair = None;
        }
        s
    }

    // ---------------------------------------------------------------- negotiation

    fn create_channel(
        &mut self,
        now: Instant,
        label: String,
        init: DataChannelInit,
    ) -> Result<DataChannel, Error> {
        if self.neg.state() == SignalingState::Closed {
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
        let id = self.chans.add(label, config.clone(), None, false);
        if self.neg.app_negotiated && self.neg.state() == SignalingState::Stable {
            // An SCTP association exists: str0m opens it in-band at once.
            self.mutate(now, |d| {
                let mut api = d.rtc.sdp_api();
                let cid = api.add_channel_with_config(config);
                if api.apply().is_some() {
                    warn!("str0m wanted a negotiation for a second data channel");
                }
                d.chans.bind(id, cid, true);
            });
        } else {
            self.neg.renegotiate();
            self.maybe_negotiation_needed();
        }
        Ok(self.chans.handle(id, self.strong_tx()))
    }

    fn maybe_negotiation_needed(&mut self) {
        let unconfirmed =
            self.chans.any_unconfirmed() || self.tracks.values().any(|t| !t.confirmed);
        if self.neg.poll_needed(unconfirmed) {
            self.emit(Event::NegotiationNeeded);
        }
    }

    fn create_offer(&mut self, now: Instant) -> Result<SessionDescription, Error> {
        self.neg.jsep.check_create_offer()?;
        // Every new offer recreates the wanted changes (a pending offer is
        // invalidated by the next apply, so nothing is lost).
        self.neg.drop_offer();
        let restart = self.neg.restart_wanted;
        let applied = self.mutate(now, |d| {
            let mut api = d.rtc.sdp_api();
            let mut bound = Vec::new();
            for (id, c) in d.chans.iter() {
                if !c.confirmed {
                    bound.push((id, api.add_channel_with_config(c.config.clone())));
                }
            }
            let mut mids = Vec::new();
            for (id, t) in &d.tracks {
                if !t.confirmed {
                    mids.push((
                        *id,
                        api.add_media(t.kind, Direction::SendRecv, t.stream.clone(), None, None),
                    ));
                }
            }
            if restart {
                api.ice_restart(true);
            }
            let applied = api.apply();
            // Without an offer only direct changes were made (extra
            // channels on an existing association): those exist now.
            let direct = applied.is_none();
            for (id, cid) in bound {
                d.chans.bind(id, cid, direct);
            }
            if !direct {
                for (id, mid) in mids {
                    if let Some(t) = d.tracks.get_mut(&id) {
                        t.mid = Some(mid);
                    }
                }
            }
            applied
        });
        let Some((offer, pending)) = applied else {
            return Err(Error::NothingToNegotiate);
        };
        let sdp = offer.to_sdp_string();
        self.neg.learn_local_sdp(&sdp);
        if restart {
            // New credentials: ask STUN again, the mapping may have moved.
            self.gather(now, false);
        }
        self.neg.set_offer(sdp.clone(), pending);
        Ok(SessionDescription::offer(sdp))
    }

    fn create_answer(&mut self, now: Instant) -> Result<SessionDescription, Error> {
        self.neg.jsep.check_create_answer()?;
        if let Some(a) = self.neg.answer() {
            return Ok(SessionDescription::answer(a.to_string()));
        }
        let offer = self.neg.take_remote_offer().ok_or(Error::Jsep(
            crate::JsepError::InvalidModification("no remote offer"),
        ))?;
        let had_app = offer.to_sdp_string().contains("m=application");
        let answer: SdpAnswer = match self.mutate(now, |d| d.rtc.sdp_api().accept_offer(offer)) {
            Ok(a) => a,
            Err(e) => {
                // str0m may have partly applied it; the offer is gone either way.
                self.neg.jsep.reset_to_stable();
                self.emit(Event::SignalingState(self.neg.state()));
                return Err(Error::InvalidSdp(e.to_string()));
            }
        };
        // accept_offer voided any pending offer of ours: forget its str0m
        // ids exactly as a rollback does.
        self.rollback_local();
        if had_app {
            self.neg.app_negotiated = true;
        }
        for c in self.neg.take_queued() {
            self.add_remote(now, c);
        }
        let sdp = answer.to_sdp_string();
        self.neg.learn_local_sdp(&sdp);
        self.neg.set_answer(sdp.clone());
        Ok(SessionDescription::answer(sdp))
    }

    fn set_local(
        &mut self,
        now: Instant,
        desc: Option<SessionDescription>,
    ) -> Result<Option<SessionDescription>, Error> {
        let desc = match desc {
            Some(d) => d,
            None => match self.neg.state() {
                SignalingState::HaveRemoteOffer => self.create_answer(now)?,
                SignalingState::Stable | SignalingState::HaveLocalOffer => {
                    self.create_offer(now)?
                }
                SignalingState::Closed => return Err(Error::Closed),
            },
        };
        // Check the description is ours before moving the state.
        let ours = match desc.kind {
            SdpType::Offer => {
                self.neg.is_our_offer(&desc.sdp) || self.neg.state() == SignalingState::Closed
            }
            SdpType::Answer => {
                self.neg.is_our_answer(&desc.sdp)
                    || self.neg.state() != SignalingState::HaveRemoteOffer
            }
            _ => true,
        };
        if !ours {
            return Err(Error::ModifiedSdp);
        }
        let action = self.neg.jsep.set_local(desc.kind)?;
        if matches!(desc.kind, SdpType::Offer | SdpType::Answer) {
            self.last_local = Some(desc.clone());
        }
        match action {
            LocalAction::UseOffer => {}
            LocalAction::UseAnswer => {
                self.neg.answer_done();
                self.confirm_after_answer(now);
            }
            LocalAction::DropLocalOffer => self.rollback_local(),
        }
        self.emit(Event::SignalingState(self.neg.state()));
        if !self.neg.local_set {
            self.neg.local_set = true;
            for idx in std::mem::take(&mut self.unsent) {
                self.emit_candidate(idx);
            }
        }
        if self.neg.state() == SignalingState::Stable {
            self.neg.renegotiate();
            self.maybe_negotiation_needed();
        }
        self.check_end_of_candidates(now);
        Ok(Some(desc))
    }

    /// After we answered: channels str0m could add directly now that an
    /// association exists are added; the rest wait for our next offer.
    fn confirm_after_answer(&mut self, now: Instant) {
        if !self.neg.app_negotiated {
            return;
        }
        for id in self.chans.unbound() {
            let Some(cfg) = self.chans.get(id).map(|c| c.config.clone()) else {
                continue;
            };
            self.mutate(now, |d| {
                let mut api = d.rtc.sdp_api();
                let cid = api.add_channel_with_config(cfg);
                if api.apply().is_some() {
                    warn!(
                        "str0m wanted a negotiation for a data channel on an existing association"
                    );
                }
                d.chans.bind(id, cid, true);
            });
        }
    }

    fn rollback_local(&mut self) {
        self.neg.drop_offer();
        self.chans.rollback();
        for t in self.tracks.values_mut() {
            if !t.confirmed {
                t.mid = None;
            }
        }
    }

    fn set_remote(&mut self, now: Instant, desc: SessionDescription) -> Result<(), Error> {
        // Parse before touching the state, so bad SDP changes nothing.
        let parsed_offer = match desc.kind {
            SdpType::Offer => Some(
                SdpOffer::from_sdp_string(&desc.sdp)
                    .map_err(|e| Error::InvalidSdp(e.to_string()))?,
            ),
            _ => None,
        };
        let parsed_answer = match desc.kind {
            SdpType::Answer if self.neg.state() == SignalingState::HaveLocalOffer => Some(
                SdpAnswer::from_sdp_string(&desc.sdp)
                    .map_err(|e| Error::InvalidSdp(e.to_string()))?,
            ),
            _ => None,
        };
        let action = self.neg.jsep.set_remote(desc.kind)?;
        match action {
            RemoteAction::StoreOffer | RemoteAction::RollbackThenStoreOffer => {
                if action == RemoteAction::RollbackThenStoreOffer {
                    self.rollback_local();
                    self.emit(Event::SignalingState(SignalingState::Stable));
                }
                if let Some(offer) = parsed_offer {
                    self.neg.store_remote_offer(offer);
                }
                self.neg.learn_remote_sdp(&desc.sdp);
                self.last_remote = Some(desc.clone());
            }
            RemoteAction::ApplyAnswer => {
                // Both exist in have-local-offer; if str0m ever disagrees,
                // fail the call rather than the process.
                let (Some(pending), Some(answer)) = (self.neg.take_offer(), parsed_answer) else {
                    self.neg.jsep.reset_to_stable();
                    self.rollback_local();
                    self.emit(Event::SignalingState(self.neg.state()));
                    return Err(Error::InvalidSdp("no pending offer for this answer".into()));
                };
                if let Err(e) = self.mutate(now, |d| d.rtc.sdp_api().accept_answer(pending, answer))
                {
                    self.neg.jsep.reset_to_stable();
                    self.rollback_local();
                    self.emit(Event::SignalingState(self.neg.state()));
                    return Err(Error::InvalidSdp(e.to_string()));
                }
                self.neg.learn_remote_sdp(&desc.sdp);
                self.last_remote = Some(desc.clone());
                if desc.sdp.contains("m=application") {
                    self.neg.app_negotiated = true;
                }
                self.chans.confirm_bound();
                for t in self.tracks.values_mut() {
                    if t.mid.is_some() {
                        t.confirmed = true;
                    }
                }
                self.neg.restart_wanted = false;
                for c in self.neg.take_queued() {
                    self.add_remote(now, c);
                }
            }
            RemoteAction::DropRemoteOffer => self.neg.drop_remote_offer(),
        }
        self.neg.remote_applied();
        self.emit(Event::SignalingState(self.neg.state()));
        if self.neg.state() == SignalingState::Stable {
            self.neg.renegotiate();
            self.maybe_negotiation_needed();
        }
        Ok(())
    }

    fn add_remote_candidate(
        &mut self,
        now: Instant,
        init: Option<IceCandidateInit>,
    ) -> Result<(), Error> {
        match self.neg.remote_candidate(init)? {
            Some(RemoteCandidate::Add(c)) => self.add_remote(now, c),
            Some(RemoteCandidate::Mdns { line, host }) => self.resolve_mdns(line, host),
            None => {}
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

    fn add_remote(&mut self, now: Instant, c: Candidate) {
        self.neg.note_remote(&c);
        self.mutate(now, |d| d.rtc.add_remote_candidate(c));
    }

    fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        let t = now();
        self.neg.jsep.close();
        self.chans.close_all();
        self.mutate(t, |d| d.rtc.disconnect());
        self.gatherer.close(t);
        self.flush_relays();
        self.flush_backlog();
        self.liveness(|l| l.set(IceConnectionState::Closed));
        self.emit(Event::SignalingState(SignalingState::Closed));
        self.closed = true;
    }
}

/// The interface addresses host candidates are made of.
fn host_ips(hc: &HostCandidates) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = match hc {
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

fn answer<T>(reply: Reply<T>, r: Result<T, Error>) {
    let _ = reply.send(r);
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
