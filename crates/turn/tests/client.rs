//! The sans-IO TURN client against the in-process server core, on a fake
//! clock: every packet between them goes through [`Net::pump`], which can
//! "lose" packets in either direction, and time only moves when a test
//! says so.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun::attr::{AddressFamily, ErrorCode, Lifetime, Nonce, XorRelayedAddress};
use stun::{ChannelData, Class, Message, MessageType, MessageWriter, Method, TransactionId};
use turn::auth::Credentials;
use turn::client::{Client, Config, Error, Event, Op, State, Transport, MAX_QUEUED_BYTES};
use turn::policy::PeerPolicy;
use turn::server::{self, Action, BindError, Bound, FiveTuple, Quota, RelayId, Relays, Server};

const REALM: &str = "client.test";
const UNIX0: u64 = 1_800_000_000;
const SECRET: &[u8] = b"rest-secret";
/// Public-looking peers, so the server's default policy lets them through.
const PEER: &str = "8.8.4.4:9000";
const PEER2: &str = "1.1.1.1:53";
const CLIENT: &str = "192.0.2.10:40000";
const SERVER: &str = "203.0.113.200:3478";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Relay sockets on 198.51.100.1, numbered from port 50001.
#[derive(Default)]
struct Ports {
    next: u32,
    live: HashSet<u32>,
}

impl Relays for Ports {
    fn bind(
        &mut self,
        family: AddressFamily,
        _even: bool,
        _reserve: bool,
    ) -> Result<(Bound, Option<[u8; 8]>), BindError> {
        if family != AddressFamily::V4 {
            return Err(BindError::Family);
        }
        self.next += 1;
        self.live.insert(self.next);
        Ok((
            (
                RelayId(self.next),
                SocketAddr::new([198, 51, 100, 1].into(), 50000 + self.next as u16),
            ),
            None,
        ))
    }
    fn claim(&mut self, _token: [u8; 8]) -> Option<Bound> {
        None
    }
    fn release(&mut self, id: RelayId) {
        assert!(self.live.remove(&id.0), "relay {id:?} released twice");
    }
}

/// One client, one server, a wire between them and a clock.
struct Net {
    server: Server,
    relays: Ports,
    client: Client,
    tuple: FiveTuple,
    start: Instant,
    now: Instant,
    /// Control events with the time (since start) they were drained.
    events: Vec<(Duration, Event)>,
    /// Packets the server relayed to peers.
    to_peer: Vec<(SocketAddr, Vec<u8>)>,
    /// Application data the client got: (peer, channel, payload).
    received: Vec<(SocketAddr, Option<u16>, Vec<u8>)>,
    /// Every packet the client sent, with its send time.
    sent: Vec<(Duration, Vec<u8>)>,
    /// Lose this many of the next client→server packets.
    drop_up: usize,
    /// Lose this many of the next server→client packets.
    drop_down: usize,
    /// Lose everything client→server.
    blackhole: bool,
}

fn server_with(cfg: server::Config) -> Server {
    let mut creds = Credentials::new(REALM);
    creds.add_user("alice", "alice-pw");
    creds.set_secret(SECRET);
    let mut policy = PeerPolicy::new(vec![], vec![]);
    policy.add_own(addr(SERVER).ip());
    Server::new(
        cfg,
        Arc::new(creds),
        Arc::new(policy),
        Quota::new(100, 10),
        [7; 32],
    )
}

fn config(transport: Transport, password: &str) -> Config {
    let mut c = Config::new(addr(SERVER), transport, "alice", password);
    c.seed = 42;
    c
}

impl Net {
    fn new(transport: Transport) -> Net {
        Net::with(server::Config::default(), config(transport, "alice-pw"))
    }

    fn with(server_cfg: server::Config, cfg: Config) -> Net {
        let now = Instant::now();
        let transport = cfg.transport;
        Net {
            server: server_with(server_cfg),
            relays: Ports::default(),
            client: Client::new(cfg),
            tuple: FiveTuple {
                client: addr(CLIENT),
                server: addr(SERVER),
                transport,
            },
            start: now,
            now,
            events: vec![],
            to_peer: vec![],
            received: vec![],
            sent: vec![],
            drop_up: 0,
            drop_down: 0,
            blackhole: false,
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn unix(&self) -> u64 {
        UNIX0 + self.elapsed().as_secs()
    }

    /// Carries packets both ways until the client has nothing more to say.
    fn pump(&mut self) {
        let mut out = Vec::new();
        while let Some(t) = self.client.poll_transmit() {
            assert_eq!(t.destination, addr(SERVER));
            let pkt = t.data.to_vec();
            self.sent.push((self.elapsed(), pkt.clone()));
            if self.blackhole || self.drop_up > 0 {
                self.drop_up = self.drop_up.saturating_sub(1);
                continue;
            }
            let unix = self.unix();
            match self.server.handle_client(
                self.now,
                unix,
                self.tuple,
                &pkt,
                &mut out,
                &mut self.relays,
            ) {
                Action::ToClient { data, .. } => {
                    let data = data.to_vec();
                    if self.drop_down > 0 {
                        self.drop_down -= 1;
                    } else {
                        self.deliver(&data);
                    }
                }
                Action::ToPeer { peer, data, .. } => self.to_peer.push((peer, data.to_vec())),
                Action::None => {}
            }
        }
        while let Some(e) = self.client.poll_event() {
            self.events.push((self.elapsed(), e));
        }
    }

    fn deliver(&mut self, data: &[u8]) {
        if let Some(d) = self.client.handle_input(self.now, data) {
            self.received.push((d.peer, d.channel, d.payload.to_vec()));
        }
    }

    /// Moves the clock forward by `d`, firing every client timer on time.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        for _ in 0..100_000 {
            match self.client.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = self.now.max(t);
                    self.client.handle_timeout(self.now);
                    self.server.handle_timeout(self.now, &mut self.relays);
                    self.pump();
                }
                _ => {
                    self.now = target;
                    self.server.handle_timeout(self.now, &mut self.relays);
                    return;
                }
            }
        }
        panic!("client timers never settle");
    }

    /// A datagram from `peer` to relay socket 1.
    fn peer_sends(&mut self, peer: &str, payload: &[u8]) {
        let mut out = Vec::new();
        if let Action::ToClient { data, .. } =
            self.server
                .handle_peer(self.now, RelayId(1), addr(peer), payload, &mut out)
        {
            let data = data.to_vec();
            self.deliver(&data);
        }
    }

    fn take_events(&mut self) -> Vec<Event> {
        self.pump();
        self.events.drain(..).map(|(_, e)| e).collect()
    }

    fn allocate(&mut self) -> SocketAddr {
        self.client.allocate(self.now).unwrap();
        let ev = self.take_events();
        let [Event::Allocated { relayed, .. }] = ev[..] else {
            panic!("expected Allocated, got {ev:?}")
        };
        relayed
    }

    fn permit(&mut self, peer: &str) {
        let ip = addr(peer).ip();
        self.client.create_permission(self.now, ip).unwrap();
        assert_eq!(self.take_events(), [Event::PermissionCreated { peer: ip }]);
    }

    fn bind(&mut self, peer: &str) -> u16 {
        let n = self.client.bind_channel(self.now, addr(peer)).unwrap();
        assert_eq!(
            self.take_events(),
            [Event::ChannelBound {
                peer: addr(peer),
                channel: n
            }]
        );
        n
    }

    /// Sends through the relay and returns what reached the peer.
    fn send(&mut self, peer: &str, payload: &[u8]) -> Option<Vec<u8>> {
        self.to_peer.clear();
        self.client.send_to(addr(peer), payload).unwrap();
        self.pump();
        assert!(self.to_peer.len() <= 1);
        self.to_peer.pop().map(|(p, d)| {
            assert_eq!(p, addr(peer));
            d
        })
    }

    fn failures(&self) -> Vec<&Event> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| matches!(e, Event::Failed { .. }))
            .collect()
    }
}

#[test]
fn allocate_goes_through_the_401_round() {
    let mut n = Net::new(Transport::Udp);
    assert_eq!(n.client.state(), State::Idle);
    n.client.allocate(n.now).unwrap();
    assert_eq!(n.client.state(), State::Allocating);
    assert_eq!(n.client.allocate(n.now), Err(Error::AlreadyAllocated));
    let ev = n.take_events();
    assert_eq!(
        ev,
        [Event::Allocated {
            relayed: addr("198.51.100.1:50001"),
            mapped: Some(addr(CLIENT)),
            lifetime: Duration::from_secs(600),
        }]
    );
    // One unsigned Allocate (answered 401), one signed.
    assert_eq!(n.sent.len(), 2);
    let first = Message::parse(&n.sent[0].1).unwrap();
    let second = Message::parse(&n.sent[1].1).unwrap();
    assert!(!first.has_integrity() && second.has_integrity());
    assert_ne!(first.transaction_id(), second.transaction_id());
    assert!(second.verify_fingerprint().is_ok());
    assert_eq!(n.client.state(), State::Allocated);
    assert_eq!(n.client.relayed(), Some(addr("198.51.100.1:50001")));
    assert_eq!(n.client.mapped(), Some(addr(CLIENT)));
    assert_eq!(n.server.allocations(), 1);
    assert_eq!(n.client.stats().unmatched + n.client.stats().malformed, 0);
}

#[test]
fn permission_channel_and_data_both_ways() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    let peer = addr(PEER);
    assert_eq!(
        n.client.send_to(peer, b"x"),
        Err(Error::NoPermission(peer.ip()))
    );
    n.permit(PEER);
    assert!(n.client.has_permission(peer.ip()));
    assert_eq!(n.server.permissions(), 1);
    // Creating it again is a no-op.
    n.client.create_permission(n.now, peer.ip()).unwrap();
    assert_eq!(n.take_events(), []);

    // Send indication out, Data indication in.
    let sent_before = n.sent.len();
    assert_eq!(
        n.send(PEER, b"hello peer").as_deref(),
        Some(&b"hello peer"[..])
    );
    let ind = Message::parse(&n.sent[sent_before].1).unwrap();
    assert_eq!(ind.message_type(), MessageType::indication(Method::SEND));
    n.peer_sends(PEER, b"hello client");
    assert_eq!(n.received, [(peer, None, b"hello client".to_vec())]);

    // Channel: ChannelData both ways.
    let ch = n.bind(PEER);
    assert_eq!(ch, 0x4000);
    assert_eq!(n.client.channel(peer), Some(ch));
    assert_eq!(n.client.bind_channel(n.now, peer), Ok(ch), "idempotent");
    assert_eq!(n.server.channels(), 1);
    let before = n.sent.len();
    assert_eq!(
        n.send(PEER, b"via channel").as_deref(),
        Some(&b"via channel"[..])
    );
    let frame = &n.sent[before].1;
    assert_eq!(frame.len(), 4 + 11, "UDP ChannelData is not padded");
    assert_eq!(ChannelData::parse(frame).unwrap().channel(), ch);
    n.peer_sends(PEER, b"back");
    assert_eq!(n.received[1], (peer, Some(ch), b"back".to_vec()));

    // A second peer by permission only.
    n.permit(PEER2);
    assert_eq!(n.send(PEER2, b"two").as_deref(), Some(&b"two"[..]));
    n.peer_sends(PEER2, b"owt");
    assert_eq!(n.received[2], (addr(PEER2), None, b"owt".to_vec()));
    // Empty payloads are fine too.
    assert_eq!(n.send(PEER, b"").as_deref(), Some(&b""[..]));
    assert_eq!(n.client.stats().data_sent, 4);
    assert_eq!(n.client.stats().data_received, 3);
    assert!(n.failures().is_empty());
}

#[test]
fn channel_bind_alone_covers_the_permission_and_refreshes_it() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    let ch = n.bind(PEER);
    assert_eq!(n.send(PEER, b"a").as_deref(), Some(&b"a"[..]));
    // Past the 300 s permission lifetime the channel still carries data,
    // because the client refreshes the permission the binding installed.
    n.advance(secs(400.0));
    assert_eq!(n.send(PEER, b"b").as_deref(), Some(&b"b"[..]));
    n.peer_sends(PEER, b"c");
    assert_eq!(n.received, [(addr(PEER), Some(ch), b"c".to_vec())]);
    assert!(n.failures().is_empty(), "{:?}", n.events);
}

#[test]
fn refreshes_keep_everything_alive() {
    let cfg = server::Config {
        nonce_lifetime: Duration::from_secs(86_400),
        ..Default::default()
    };
    let mut n = Net::with(cfg, config(Transport::Udp, "alice-pw"));
    n.allocate();
    n.permit(PEER);
    let ch = n.bind(PEER2);
    let first_refresh = n.client.poll_timeout().unwrap() - n.now;
    assert_eq!(
        first_refresh,
        Duration::from_secs(240),
        "permission refresh comes first"
    );

    n.advance(secs(2000.0));
    let refreshed: Vec<Duration> = n
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Refreshed { .. }))
        .map(|(t, _)| *t)
        .collect();
    // 80% of 600 s, again and again.
    assert_eq!(
        refreshed,
        [secs(480.0), secs(960.0), secs(1440.0), secs(1920.0)]
    );
    assert!(n.failures().is_empty(), "{:?}", n.events);
    assert_eq!(
        (
            n.server.allocations(),
            n.server.permissions(),
            n.server.channels()
        ),
        (1, 2, 1)
    );

    // Count the refresh requests by method.
    let count = |m: Method| {
        n.sent
            .iter()
            .filter_map(|(_, p)| Message::parse(p).ok())
            .filter(|msg| msg.class() == Class::Request && msg.method() == m)
            .count()
    };
    assert_eq!(count(Method::REFRESH), 4);
    // Two permissions at 240, 480, ... 1920 (8 rounds) plus the first one.
    assert_eq!(count(Method::CREATE_PERMISSION), 1 + 2 * 8);
    // 540, 1080, 1620 plus the first bind.
    assert_eq!(count(Method::CHANNEL_BIND), 4);

    assert_eq!(n.send(PEER, b"late").as_deref(), Some(&b"late"[..]));
    assert_eq!(n.send(PEER2, b"later").as_deref(), Some(&b"later"[..]));
    n.peer_sends(PEER2, b"back");
    assert_eq!(n.received, [(addr(PEER2), Some(ch), b"back".to_vec())]);
}

#[test]
fn requested_lifetime_sets_the_refresh_interval() {
    let mut cfg = config(Transport::Udp, "alice-pw");
    cfg.lifetime = Some(Duration::from_secs(1800));
    let mut n = Net::with(server::Config::default(), cfg);
    n.client.allocate(n.now).unwrap();
    let ev = n.take_events();
    assert!(
        matches!(ev[..], [Event::Allocated { lifetime, .. }] if lifetime == Duration::from_secs(1800))
    );
    n.advance(secs(1500.0));
    let refreshed: Vec<Duration> = n
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Refreshed { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(refreshed, [secs(1440.0)]);
    let refresh = n
        .sent
        .iter()
        .rev()
        .filter_map(|(_, p)| Message::parse(p).ok())
        .find(|m| m.method() == Method::REFRESH);
    assert_eq!(refresh.unwrap().get::<Lifetime>(), Ok(Some(1800)));
}

#[test]
fn stale_nonce_is_replaced_and_the_request_retried() {
    let cfg = server::Config {
        nonce_lifetime: Duration::from_secs(100),
        ..Default::default()
    };
    let mut n = Net::with(cfg, config(Transport::Udp, "alice-pw"));
    n.allocate();
    n.permit(PEER);
    // The permission refresh at 240 s meets an expired nonce: 438, then a
    // retry with the fresh nonce.
    n.advance(secs(250.0));
    assert_eq!(n.client.stats().stale_nonces, 1);
    assert!(n.failures().is_empty(), "{:?}", n.events);
    let around_240: Vec<Message<'_>> = n
        .sent
        .iter()
        .filter(|(t, _)| *t == secs(240.0))
        .map(|(_, p)| Message::parse(p).unwrap())
        .collect();
    assert_eq!(around_240.len(), 2, "the refresh and its retry");
    assert_ne!(
        around_240[0].get::<Nonce>().unwrap(),
        around_240[1].get::<Nonce>().unwrap()
    );
    // A new operation after another expiry recovers the same way.
    n.advance(secs(150.0));
    n.permit(PEER2);
    assert_eq!(n.client.stats().stale_nonces, 2);
    assert_eq!(n.send(PEER2, b"fresh").as_deref(), Some(&b"fresh"[..]));
    assert_eq!(n.server.permissions(), 2);
}

#[test]
fn lost_request_is_retransmitted() {
    let mut n = Net::new(Transport::Udp);
    n.drop_up = 1;
    n.client.allocate(n.now).unwrap();
    n.pump();
    assert_eq!(n.client.poll_timeout(), Some(n.now + secs(0.5)));
    n.advance(secs(0.5));
    assert_eq!(n.client.stats().retransmits, 1);
    assert_eq!(
        n.sent[0].1, n.sent[1].1,
        "a retransmission is byte-identical"
    );
    assert!(matches!(n.events[..], [(t, Event::Allocated { .. })] if t == secs(0.5)));
}

#[test]
fn lost_response_is_recovered_by_retransmission() {
    let mut n = Net::new(Transport::Udp);
    n.client.allocate(n.now).unwrap();
    let first = n.client.poll_transmit().unwrap().data.to_vec();
    let mut out = Vec::new();
    let Action::ToClient { data, .. } =
        n.server
            .handle_client(n.now, UNIX0, n.tuple, &first, &mut out, &mut n.relays)
    else {
        panic!()
    };
    let data = data.to_vec();
    n.deliver(&data);
    n.drop_down = 1;
    n.pump();
    assert_eq!(n.server.allocations(), 1, "the server allocated");
    assert!(n.events.is_empty(), "but the client does not know");
    n.advance(secs(0.5));
    // The server recognises the retransmitted Allocate and answers again.
    assert!(
        matches!(n.events[..], [(_, Event::Allocated { .. })]),
        "{:?}",
        n.events
    );
    assert_eq!(n.server.allocations(), 1);
}

#[test]
fn gives_up_after_rc_sends() {
    let mut n = Net::new(Transport::Udp);
    n.blackhole = true;
    n.client.allocate(n.now).unwrap();
    n.pump();
    n.advance(secs(60.0));
    let times: Vec<Duration> = n.sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5].map(secs));
    assert_eq!(n.events.len(), 1);
    let (t, Event::Failed { op, code, .. }) = &n.events[0] else {
        panic!("{:?}", n.events)
    };
    assert_eq!((*t, *op, *code), (secs(39.5), Op::Allocate, None));
    assert_eq!(n.client.state(), State::Failed);
    assert_eq!(n.client.poll_timeout(), None);
    // And it can try again.
    n.blackhole = false;
    n.client.allocate(n.now).unwrap();
    n.pump();
    assert_eq!(n.client.state(), State::Allocated);
}

#[test]
fn tcp_sends_once_and_waits_ti() {
    let mut n = Net::new(Transport::Tcp);
    n.blackhole = true;
    n.client.allocate(n.now).unwrap();
    n.pump();
    n.advance(secs(60.0));
    assert_eq!(n.sent.len(), 1);
    assert!(
        matches!(n.events[..], [(t, Event::Failed { op: Op::Allocate, code: None, .. })] if t == secs(39.5))
    );
}

#[test]
fn tcp_channel_data_is_padded() {
    let mut n = Net::new(Transport::Tcp);
    n.allocate();
    let ch = n.bind(PEER);
    let before = n.sent.len();
    assert_eq!(n.send(PEER, b"odd").as_deref(), Some(&b"odd"[..]));
    assert_eq!(n.sent[before].1.len(), 8, "4-byte header + 3 bytes + 1 pad");
    n.peer_sends(PEER, b"12345");
    assert_eq!(n.received, [(addr(PEER), Some(ch), b"12345".to_vec())]);
    assert_eq!(n.client.stats().retransmits, 0);
}

#[test]
fn wrong_password_fails_with_401() {
    let mut n = Net::with(
        server::Config::default(),
        config(Transport::Udp, "not-the-password"),
    );
    n.client.allocate(n.now).unwrap();
    let ev = n.take_events();
    assert!(
        matches!(
            ev[..],
            [Event::Failed {
                op: Op::Allocate,
                code: Some(401),
                ..
            }]
        ),
        "{ev:?}"
    );
    assert_eq!(n.sent.len(), 2, "one retry with credentials, then give up");
    assert_eq!(n.client.state(), State::Failed);
    assert_eq!(n.client.poll_timeout(), None);
}

#[test]
fn rest_credentials_from_the_shared_secret() {
    let mut cfg = Config::with_secret(
        addr(SERVER),
        Transport::Udp,
        SECRET,
        "native-peer",
        3600,
        UNIX0,
    );
    cfg.seed = 1;
    let mut n = Net::with(server::Config::default(), cfg);
    n.allocate();
    // A credential from the wrong secret is refused.
    let cfg = Config::with_secret(
        addr(SERVER),
        Transport::Udp,
        b"wrong",
        "native-peer",
        3600,
        UNIX0,
    );
    let mut n = Net::with(server::Config::default(), cfg);
    n.client.allocate(n.now).unwrap();
    assert!(matches!(
        n.take_events()[..],
        [Event::Failed {
            code: Some(401),
            ..
        }]
    ));
}

#[test]
fn server_refusals_become_failed_events() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    n.client.create_permission(n.now, lo).unwrap();
    let ev = n.take_events();
    let [Event::Failed { op, code, reason }] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (*op, *code, reason.as_str()),
        (Op::CreatePermission { peer: lo }, Some(403), "Forbidden")
    );
    assert!(!n.client.has_permission(lo));
    assert_eq!(
        n.client.send_to(SocketAddr::new(lo, 1), b"x"),
        Err(Error::NoPermission(lo))
    );
    // Loopback channel: 403 as well, and the channel is forgotten.
    let ch = n.client.bind_channel(n.now, addr("127.0.0.1:9")).unwrap();
    let ev = n.take_events();
    assert!(
        matches!(ev[..], [Event::Failed { op: Op::ChannelBind { channel, .. }, code: Some(403), .. }] if channel == ch),
        "{ev:?}"
    );
    assert_eq!(n.client.channel(addr("127.0.0.1:9")), None);
    // The allocation is unharmed.
    assert_eq!(n.client.state(), State::Allocated);
}

#[test]
fn allocation_lost_on_the_server_is_reported_at_the_next_refresh() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    n.server.close_all(&mut n.relays);
    n.advance(secs(500.0));
    let f = n.failures();
    assert!(
        matches!(
            f[..],
            [Event::Failed {
                op: Op::Refresh,
                code: Some(437),
                ..
            }]
        ),
        "{f:?}"
    );
    assert_eq!(n.client.state(), State::Failed);
    assert_eq!(n.client.send_to(addr(PEER), b"x"), Err(Error::NotAllocated));
}

#[test]
fn unanswered_refreshes_retry_until_the_allocation_expires() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    n.blackhole = true;
    n.advance(secs(700.0));
    let refreshes = n
        .sent
        .iter()
        .filter_map(|(_, p)| Message::parse(p).ok())
        .filter(|m| m.method() == Method::REFRESH)
        .map(|m| m.transaction_id())
        .collect::<HashSet<_>>();
    // New transactions at 480, 519.5, 559 and 598.5 s, each given up after
    // 39.5 s, until the allocation expires at 600 s.
    assert_eq!(refreshes.len(), 4);
    let f: Vec<_> = n
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Failed { .. }))
        .collect();
    assert!(
        matches!(f[..], [(t, Event::Failed { op: Op::Refresh, code: None, .. })] if *t == secs(600.0)),
        "{f:?}"
    );
    assert_eq!(n.client.poll_timeout(), None);
}

#[test]
fn close_releases_the_allocation() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    n.permit(PEER);
    n.bind(PEER2);
    n.client.close(n.now).unwrap();
    assert_eq!(n.client.state(), State::Closing);
    assert_eq!(n.take_events(), [Event::Closed]);
    let close = Message::parse(&n.sent.last().unwrap().1).unwrap();
    assert_eq!(
        (close.method(), close.get::<Lifetime>()),
        (Method::REFRESH, Ok(Some(0)))
    );
    assert_eq!(n.server.allocations(), 0);
    assert!(n.relays.live.is_empty());
    assert_eq!(n.client.state(), State::Closed);
    assert_eq!(n.client.send_to(addr(PEER), b"x"), Err(Error::NotAllocated));
    assert_eq!(n.client.poll_timeout(), None);
    assert_eq!(n.client.close(n.now), Err(Error::NotAllocated));
    // A new allocation after closing works.
    n.allocate();
}

#[test]
fn close_without_an_answer_still_ends_closed() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    n.blackhole = true;
    n.client.close(n.now).unwrap();
    n.advance(secs(60.0));
    let ev: Vec<_> = n.events.iter().map(|(_, e)| e.clone()).collect();
    assert!(
        matches!(
            ev[..],
            [
                Event::Failed {
                    op: Op::Close,
                    code: None,
                    ..
                },
                Event::Closed
            ]
        ),
        "{ev:?}"
    );
    assert_eq!(n.client.state(), State::Closed);
}

#[test]
fn close_while_allocating_without_credentials_is_immediate() {
    let mut n = Net::new(Transport::Udp);
    n.client.allocate(n.now).unwrap();
    n.client.close(n.now).unwrap();
    assert_eq!(n.client.poll_event(), Some(Event::Closed));
    // The queued Allocate may still go out; its answer is ignored.
    n.pump();
    assert_eq!(n.client.state(), State::Closed);
    assert!(n.client.stats().unmatched >= 1);
}

#[test]
fn forged_and_stray_responses_are_ignored() {
    let mut n = Net::new(Transport::Udp);
    n.client.allocate(n.now).unwrap();
    // Let the 401 round happen but intercept the signed Allocate.
    let first = n.client.poll_transmit().unwrap().data.to_vec();
    let mut out = Vec::new();
    let Action::ToClient { data, .. } =
        n.server
            .handle_client(n.now, UNIX0, n.tuple, &first, &mut out, &mut n.relays)
    else {
        panic!()
    };
    let challenge = data.to_vec();
    n.deliver(&challenge);
    let signed = n.client.poll_transmit().unwrap().data.to_vec();
    let req = Message::parse(&signed).unwrap();

    // A success signed with the wrong key.
    let mut forged = Vec::new();
    let mut w = MessageWriter::success_response(&mut forged, &req);
    w.add::<XorRelayedAddress>(addr("6.6.6.6:666")).unwrap();
    w.add_message_integrity(b"not our key").unwrap();
    w.finish();
    n.deliver(&forged);
    // An unsigned success.
    let mut unsigned = Vec::new();
    let mut w = MessageWriter::success_response(&mut unsigned, &req);
    w.add::<XorRelayedAddress>(addr("6.6.6.6:666")).unwrap();
    w.finish();
    n.deliver(&unsigned);
    // An error signed with the wrong key.
    let mut bad_err = Vec::new();
    let mut w = MessageWriter::error_response(
        &mut bad_err,
        &req,
        stun::attr::ErrorCodeValue::standard(403),
    )
    .unwrap();
    w.add_message_integrity(b"not our key").unwrap();
    w.finish();
    n.deliver(&bad_err);
    assert_eq!(n.client.stats().bad_integrity, 3);
    // A response to a transaction we never started, and a replay of the 401.
    let mut stray = Vec::new();
    MessageWriter::new(
        &mut stray,
        MessageType::success(Method::ALLOCATE),
        TransactionId([1; 12]),
    )
    .finish();
    n.deliver(&stray);
    n.deliver(&challenge);
    assert_eq!(n.client.stats().unmatched, 2);
    // An error response without ERROR-CODE.
    let mut no_code = Vec::new();
    MessageWriter::new(
        &mut no_code,
        MessageType::error(Method::ALLOCATE),
        req.transaction_id(),
    )
    .finish();
    n.deliver(&no_code);
    // Requests and stray indications.
    n.deliver(&signed);
    assert_eq!(n.client.stats().ignored, 1);
    assert!(n.client.poll_event().is_none());
    assert_eq!(n.client.state(), State::Allocating);

    // The genuine answer still works.
    let Action::ToClient { data, .. } =
        n.server
            .handle_client(n.now, UNIX0, n.tuple, &signed, &mut out, &mut n.relays)
    else {
        panic!()
    };
    let data = data.to_vec();
    n.deliver(&data);
    assert!(
        matches!(n.client.poll_event(), Some(Event::Allocated { relayed, .. }) if relayed.ip() == IpAddr::from([198, 51, 100, 1]))
    );

    // Data from peers and channels we never set up is dropped.
    let mut ind = Vec::new();
    let mut w = MessageWriter::new(
        &mut ind,
        MessageType::indication(Method::DATA),
        TransactionId([2; 12]),
    );
    w.add::<stun::attr::XorPeerAddress>(addr(PEER)).unwrap();
    w.add::<stun::attr::Data>(b"spoof").unwrap();
    w.finish();
    n.deliver(&ind);
    let mut cd = Vec::new();
    ChannelData::new(0x4123, b"spoof")
        .unwrap()
        .encode(&mut cd, false);
    n.deliver(&cd);
    assert_eq!(n.client.stats().unknown_peer, 2);
    assert!(n.received.is_empty());
}

/// Deterministic xorshift for the mutation test.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn garbage_and_mutated_responses_never_panic() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    n.permit(PEER);
    n.bind(PEER);
    // Collect genuine server→client packets to mutate.
    let mut samples: Vec<Vec<u8>> = vec![];
    let mut out = Vec::new();
    for payload in [&b"abc"[..], b"", &[0u8; 300]] {
        if let Action::ToClient { data, .. } =
            n.server
                .handle_peer(n.now, RelayId(1), addr(PEER), payload, &mut out)
        {
            samples.push(data.to_vec());
        }
    }
    n.client.create_permission(n.now, addr(PEER2).ip()).unwrap();
    let req = n.client.poll_transmit().unwrap().data.to_vec();
    let Action::ToClient { data, .. } =
        n.server
            .handle_client(n.now, UNIX0, n.tuple, &req, &mut out, &mut n.relays)
    else {
        panic!()
    };
    samples.push(data.to_vec());
    let mut seed = 0x1234_5678_9abc_def0u64;
    for i in 0..20_000 {
        let mut pkt = samples[i % samples.len()].clone();
        match xorshift(&mut seed) % 4 {
            0 => {
                let k = (xorshift(&mut seed) as usize) % pkt.len().max(1);
                if let Some(b) = pkt.get_mut(k) {
                    *b ^= 1 << (xorshift(&mut seed) % 8);
                }
            }
            1 => pkt.truncate((xorshift(&mut seed) as usize) % (pkt.len() + 1)),
            2 => pkt.extend((0..xorshift(&mut seed) % 9).map(|_| xorshift(&mut seed) as u8)),
            _ => {
                pkt = (0..xorshift(&mut seed) % 64)
                    .map(|_| xorshift(&mut seed) as u8)
                    .collect()
            }
        }
        let _ = n.client.handle_input(n.now, &pkt);
    }
    n.client.handle_input(n.now, &[]);
    assert!(n.client.stats().malformed > 0);
    assert_eq!(n.client.state(), State::Allocated);
}

#[test]
fn same_seed_same_bytes() {
    let run = |seed| {
        let mut cfg = config(Transport::Udp, "alice-pw");
        cfg.seed = seed;
        let mut n = Net::with(server::Config::default(), cfg);
        n.allocate();
        n.permit(PEER);
        n.sent.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn queue_is_bounded_and_reused() {
    let mut n = Net::new(Transport::Udp);
    n.allocate();
    n.permit(PEER);
    let payload = vec![0xAB; 1200];
    // Undrained, the queue fills up and says so.
    let mut queued = 0;
    loop {
        match n.client.send_to(addr(PEER), &payload) {
            Ok(()) => queued += 1,
            Err(e) => {
                assert_eq!(e, Error::QueueFull);
                break;
            }
        }
    }
    assert!(
        (MAX_QUEUED_BYTES / 1300..=MAX_QUEUED_BYTES / 1200 + 1).contains(&queued),
        "{queued}"
    );
    let mut drained = 0;
    while let Some(t) = n.client.poll_transmit() {
        let m = Message::parse(t.data).unwrap();
        assert_eq!(
            m.get::<stun::attr::Data>().unwrap().map(<[u8]>::len),
            Some(1200)
        );
        drained += 1;
    }
    assert_eq!(drained, queued);
    // Drained, it takes more again, one at a time, indefinitely.
    for _ in 0..5000 {
        n.client.send_to(addr(PEER), &payload).unwrap();
        assert!(n.client.poll_transmit().is_some());
    }
    // Oversized payloads are refused up front.
    assert_eq!(
        n.client.send_to(addr(PEER), &vec![0; 70_000]),
        Err(Error::TooLarge(70_000))
    );
}

#[test]
fn error_codes_carry_the_servers_reason() {
    // A second client on another 5-tuple, same user, over a per-user quota
    // of one: 486 with the server's reason phrase.
    let mut creds = Credentials::new(REALM);
    creds.add_user("alice", "alice-pw");
    let quota = Quota::new(100, 1);
    let mut server = Server::new(
        server::Config::default(),
        Arc::new(creds),
        Arc::new(PeerPolicy::new(vec![], vec![])),
        quota,
        [1; 32],
    );
    let mut relays = Ports::default();
    let now = Instant::now();
    let mut outcomes = vec![];
    for (i, client) in ["192.0.2.1:1000", "192.0.2.2:1000"].into_iter().enumerate() {
        let mut cfg = config(Transport::Udp, "alice-pw");
        cfg.seed = i as u64;
        let mut c = Client::new(cfg);
        let tuple = FiveTuple {
            client: addr(client),
            server: addr(SERVER),
            transport: Transport::Udp,
        };
        c.allocate(now).unwrap();
        let mut out = Vec::new();
        while let Some(t) = c.poll_transmit() {
            let pkt = t.data.to_vec();
            if let Action::ToClient { data, .. } =
                server.handle_client(now, UNIX0, tuple, &pkt, &mut out, &mut relays)
            {
                let data = data.to_vec();
                if let Ok(m) = Message::parse(&data) {
                    if let Ok(Some(e)) = m.get::<ErrorCode>() {
                        assert!(e.code == 401 || e.code == 486);
                    }
                }
                c.handle_input(now, &data);
            }
        }
        outcomes.push(c.poll_event().unwrap());
    }
    assert!(matches!(outcomes[0], Event::Allocated { .. }));
    let Event::Failed { op, code, reason } = &outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(
        (*op, *code, reason.as_str()),
        (Op::Allocate, Some(486), "Allocation Quota Reached")
    );
}

#[test]
fn software_is_sent_and_unencodable_requests_fail_cleanly() {
    let mut cfg = config(Transport::Udp, "alice-pw");
    cfg.software = Some("switchboard-test".into());
    let mut n = Net::with(server::Config::default(), cfg);
    n.allocate();
    let m = Message::parse(&n.sent[1].1).unwrap();
    assert_eq!(
        m.get::<stun::attr::Software>(),
        Ok(Some("switchboard-test"))
    );

    // A username over the STUN limit cannot be signed: the Allocate fails
    // locally after the 401 instead of sending garbage.
    let mut cfg = config(Transport::Udp, "alice-pw");
    cfg.username = "x".repeat(600);
    let mut n = Net::with(server::Config::default(), cfg);
    n.client.allocate(n.now).unwrap();
    let ev = n.take_events();
    assert!(
        matches!(&ev[..], [Event::Failed { op: Op::Allocate, code: None, reason }] if reason.contains("encode")),
        "{ev:?}"
    );
    assert_eq!(n.sent.len(), 1);
    assert_eq!(n.client.poll_timeout(), None);
}
