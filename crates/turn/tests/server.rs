//! The TURN state machine driven with a fake clock and fake relay sockets:
//! allocate → permission → channel → data → refresh → expiry, and every
//! error code the server can answer.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stun::attr::{
    AddressFamily, Data, ErrorCode, Lifetime, Nonce, Realm, RequestedAddressFamily,
    RequestedTransport, Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
    PROTOCOL_TCP, PROTOCOL_UDP,
};
use stun::{
    long_term_key, AttrType, ChannelData, Class, Message, MessageType, MessageWriter, Method,
    TransactionId,
};
use turn::auth::{rest_credential, Credentials};
use turn::policy::PeerPolicy;
use turn::server::{
    Action, BindError, Config, FiveTuple, Quota, RelayId, Relays, Server, Stats, Transport,
};

const REALM: &str = "switchboard.test";
const UNIX0: u64 = 1_800_000_000;

/// Hands out relay ports on 198.51.100.1 (v4 only), up to `limit`.
struct FakeRelays {
    next: u32,
    limit: usize,
    bound: HashSet<u32>,
    reserved: Vec<([u8; 8], (RelayId, SocketAddr))>,
}

impl FakeRelays {
    fn new(limit: usize) -> Self {
        FakeRelays {
            next: 0,
            limit,
            bound: HashSet::new(),
            reserved: vec![],
        }
    }
}

impl Relays for FakeRelays {
    fn bind(
        &mut self,
        family: AddressFamily,
        _even: bool,
        reserve_next: bool,
    ) -> Result<((RelayId, SocketAddr), Option<[u8; 8]>), BindError> {
        if family != AddressFamily::V4 {
            return Err(BindError::Family);
        }
        let need = if reserve_next { 2 } else { 1 };
        if self.bound.len() + need > self.limit {
            return Err(BindError::Exhausted);
        }
        let mut one = || {
            self.next += 1;
            self.bound.insert(self.next);
            (
                RelayId(self.next),
                SocketAddr::new("198.51.100.1".parse().unwrap(), 50000 + self.next as u16),
            )
        };
        let first = one();
        let token = reserve_next.then(|| {
            let second = one();
            let token = [second.0 .0 as u8; 8];
            self.reserved.push((token, second));
            token
        });
        Ok((first, token))
    }
    fn claim(&mut self, token: [u8; 8]) -> Option<(RelayId, SocketAddr)> {
        let i = self.reserved.iter().position(|(t, _)| *t == token)?;
        Some(self.reserved.remove(i).1)
    }
    fn release(&mut self, id: RelayId) {
        assert!(self.bound.remove(&id.0), "released twice or never bound");
    }
}

struct World {
    server: Server,
    relays: FakeRelays,
    now: Instant,
    unix: u64,
    quota: Arc<Quota>,
    secret: Vec<u8>,
}

fn world_with(cfg: Config, max_total: usize, max_per_user: usize, relay_limit: usize) -> World {
    let mut creds = Credentials::new(REALM);
    creds.add_user("alice", "alice-pw");
    creds.add_user("bob", "bob-pw");
    let secret = b"rest-secret".to_vec();
    creds.set_secret(secret.clone());
    let mut policy = PeerPolicy::new(vec![], vec![]);
    policy.add_own("203.0.113.200".parse().unwrap());
    // 203.0.113.0/24 is documentation space, so peers live on public-looking
    // addresses that the default policy lets through.
    let quota = Quota::new(max_total, max_per_user);
    World {
        server: Server::new(
            cfg,
            Arc::new(creds),
            Arc::new(policy),
            quota.clone(),
            [9; 32],
        ),
        relays: FakeRelays::new(relay_limit),
        now: Instant::now(),
        unix: UNIX0,
        quota,
        secret,
    }
}

fn world() -> World {
    world_with(Config::default(), 100, 10, 100)
}

const PEER: &str = "8.8.4.4:9000";
const PEER2: &str = "1.1.1.1:53";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tuple(client: &str) -> FiveTuple {
    FiveTuple {
        client: addr(client),
        server: addr("203.0.113.200:3478"),
        transport: Transport::Udp,
    }
}

/// A TURN client's view: its 5-tuple, credentials and the nonce it holds.
struct Client {
    tuple: FiveTuple,
    user: String,
    password: String,
    nonce: Option<String>,
    tid: u8,
}

/// What came back: a decoded copy of the response.
#[derive(Debug)]
struct Reply {
    class: Class,
    code: Option<u16>,
    bytes: Vec<u8>,
}

impl Reply {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.bytes).unwrap()
    }
    fn ok(&self) -> &Self {
        assert_eq!(
            self.class,
            Class::SuccessResponse,
            "expected success, got {:?}",
            self.code
        );
        self
    }
}

impl Client {
    fn new(tuple: FiveTuple, user: &str, password: &str) -> Self {
        Client {
            tuple,
            user: user.into(),
            password: password.into(),
            nonce: None,
            tid: 0,
        }
    }

    fn key(&self) -> stun::integrity::Key {
        long_term_key(&self.user, REALM, &self.password)
    }

    /// Sends a request built by `attrs`; signs it when a nonce is held.
    fn request(
        &mut self,
        w: &mut World,
        method: Method,
        attrs: impl Fn(&mut MessageWriter<'_>),
    ) -> Reply {
        self.tid += 1;
        let mut buf = Vec::new();
        let mut mw = MessageWriter::new(
            &mut buf,
            MessageType::request(method),
            TransactionId([self.tid; 12]),
        );
        attrs(&mut mw);
        if let Some(n) = &self.nonce {
            mw.add::<Username>(&self.user).unwrap();
            mw.add::<Realm>(REALM).unwrap();
            mw.add::<Nonce>(n).unwrap();
            mw.add_message_integrity(&self.key()).unwrap();
        }
        mw.add_fingerprint().unwrap();
        mw.finish();
        self.send(w, &buf)
    }

    fn send(&mut self, w: &mut World, packet: &[u8]) -> Reply {
        let mut out = Vec::new();
        match w
            .server
            .handle_client(w.now, w.unix, self.tuple, packet, &mut out, &mut w.relays)
        {
            Action::ToClient { tuple, data } => {
                assert_eq!(tuple, self.tuple);
                let m = Message::parse(data).expect("server sends valid STUN");
                assert!(
                    m.verify_fingerprint().is_ok(),
                    "fingerprint echoes the request's"
                );
                let code = m.get::<ErrorCode>().unwrap().map(|e| e.code);
                if m.class() == Class::SuccessResponse && self.nonce.is_some() {
                    m.verify_message_integrity(&self.key())
                        .expect("success is signed");
                }
                Reply {
                    class: m.class(),
                    code,
                    bytes: data.to_vec(),
                }
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Allocate with the 401 → retry dance; returns the relayed address.
    fn allocate(&mut self, w: &mut World) -> SocketAddr {
        let first = self.request(w, Method::ALLOCATE, |m| {
            m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        });
        if first.code == Some(401) {
            self.take_nonce(&first);
            let r = self.request(w, Method::ALLOCATE, |m| {
                m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
            });
            return r.ok().msg().require::<XorRelayedAddress>().unwrap();
        }
        first.ok().msg().require::<XorRelayedAddress>().unwrap()
    }

    fn take_nonce(&mut self, r: &Reply) {
        let m = r.msg();
        assert_eq!(m.require::<Realm>().unwrap(), REALM);
        self.nonce = Some(m.require::<Nonce>().unwrap().to_string());
    }

    fn permit(&mut self, w: &mut World, peer: &str) -> Reply {
        let p = addr(peer);
        self.request(w, Method::CREATE_PERMISSION, move |m| {
            m.add::<XorPeerAddress>(p).unwrap();
        })
    }

    fn bind_channel(&mut self, w: &mut World, number: u16, peer: &str) -> Reply {
        let p = addr(peer);
        self.request(w, Method::CHANNEL_BIND, move |m| {
            m.add_raw(
                AttrType::CHANNEL_NUMBER,
                &[(number >> 8) as u8, number as u8, 0, 0],
            )
            .unwrap();
            m.add::<XorPeerAddress>(p).unwrap();
        })
    }

    fn refresh(&mut self, w: &mut World, lifetime: Option<u32>) -> Reply {
        self.request(w, Method::REFRESH, move |m| {
            if let Some(l) = lifetime {
                m.add::<Lifetime>(l).unwrap();
            }
        })
    }

    fn channel_data(
        &self,
        w: &mut World,
        number: u16,
        payload: &[u8],
    ) -> Option<(RelayId, SocketAddr, Vec<u8>)> {
        let mut pkt = Vec::new();
        ChannelData::new(number, payload)
            .unwrap()
            .encode(&mut pkt, false);
        let mut out = Vec::new();
        match w
            .server
            .handle_client(w.now, w.unix, self.tuple, &pkt, &mut out, &mut w.relays)
        {
            Action::ToPeer { relay, peer, data } => Some((relay, peer, data.to_vec())),
            Action::None => None,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn from_peer(w: &mut World, relay: RelayId, peer: &str, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match w
        .server
        .handle_peer(w.now, relay, addr(peer), payload, &mut out)
    {
        Action::ToClient { data, .. } => Some(data.to_vec()),
        Action::None => None,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn binding_reports_the_mapped_address() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "", "");
    let r = c.request(&mut w, Method::BINDING, |_| {});
    assert_eq!(
        r.ok().msg().require::<XorMappedAddress>().unwrap(),
        addr("192.0.2.10:40000")
    );
    // Quiet by default: no SOFTWARE attribute, and no OTHER-ADDRESS
    // without a second STUN address.
    assert!(r.msg().get_raw(AttrType::SOFTWARE).is_none());
    assert!(r.msg().get_raw(AttrType::OTHER_ADDRESS).is_none());
}

#[test]
fn binding_names_the_other_address_when_configured() {
    let cfg = Config {
        other_address: Some(addr("198.51.100.7:3479")),
        ..Config::default()
    };
    let mut w = world_with(cfg, 100, 100, 100);
    let mut c = Client::new(tuple("192.0.2.10:40000"), "", "");
    let r = c.request(&mut w, Method::BINDING, |_| {});
    let m = r.ok().msg();
    assert_eq!(
        m.require::<stun::attr::OtherAddress>().unwrap(),
        addr("198.51.100.7:3479")
    );
    assert_eq!(
        m.require::<XorMappedAddress>().unwrap(),
        addr("192.0.2.10:40000")
    );
}

#[test]
fn full_relay_lifecycle() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    let first = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!((first.class, first.code), (Class::ErrorResponse, Some(401)));
    c.take_nonce(&first);
    let r = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    let m = r.ok().msg();
    let relayed = m.require::<XorRelayedAddress>().unwrap();
    assert_eq!(relayed.ip(), "198.51.100.1".parse::<IpAddr>().unwrap());
    assert_eq!(m.require::<Lifetime>().unwrap(), 600);
    assert_eq!(m.require::<XorMappedAddress>().unwrap(), c.tuple.client);
    let relay = RelayId(1);

    // No permission yet: peer traffic is dropped.
    assert_eq!(from_peer(&mut w, relay, PEER, b"early"), None);

    c.permit(&mut w, PEER).ok();
    // Data indication towards the client while no channel is bound.
    let got = from_peer(&mut w, relay, PEER, b"hello client").unwrap();
    let ind = Message::parse(&got).unwrap();
    assert_eq!(ind.message_type(), MessageType::indication(Method::DATA));
    assert_eq!(ind.require::<XorPeerAddress>().unwrap(), addr(PEER));
    assert_eq!(ind.require::<Data>().unwrap(), b"hello client");

    // Send indication towards the peer.
    let mut send = Vec::new();
    let mut sw = MessageWriter::new(
        &mut send,
        MessageType::indication(Method::SEND),
        TransactionId([77; 12]),
    );
    sw.add::<XorPeerAddress>(addr(PEER)).unwrap();
    sw.add::<Data>(b"hello peer").unwrap();
    sw.finish();
    let mut out = Vec::new();
    assert_eq!(
        w.server
            .handle_client(w.now, w.unix, c.tuple, &send, &mut out, &mut w.relays),
        Action::ToPeer {
            relay,
            peer: addr(PEER),
            data: b"hello peer"
        }
    );

    // Channel bind, then ChannelData both ways.
    c.bind_channel(&mut w, 0x4001, PEER).ok();
    assert_eq!(
        c.channel_data(&mut w, 0x4001, b"via channel"),
        Some((relay, addr(PEER), b"via channel".to_vec()))
    );
    let back = from_peer(&mut w, relay, PEER, b"back").unwrap();
    let cd = ChannelData::parse(&back).unwrap();
    assert_eq!((cd.channel(), cd.data()), (0x4001, &b"back"[..]));
    // Unbound channel numbers go nowhere.
    assert_eq!(c.channel_data(&mut w, 0x4002, b"x"), None);
    assert_eq!(
        (
            w.server.allocations(),
            w.server.permissions(),
            w.server.channels()
        ),
        (1, 1, 1)
    );

    // Permissions last 300 s; refresh the allocation past that and the
    // permission lapses while the allocation lives on.
    w.now += Duration::from_secs(301);
    w.unix += 301;
    assert_eq!(
        c.channel_data(&mut w, 0x4001, b"late"),
        None,
        "permission expired"
    );
    // A short request is raised to the default lifetime (RFC 8656 §7.3).
    assert_eq!(
        c.refresh(&mut w, Some(30))
            .ok()
            .msg()
            .require::<Lifetime>()
            .unwrap(),
        600
    );
    c.refresh(&mut w, Some(1200)).ok();
    assert_eq!(
        c.refresh(&mut w, Some(99_999))
            .ok()
            .msg()
            .require::<Lifetime>()
            .unwrap(),
        3600
    );
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!((w.server.allocations(), w.server.permissions()), (1, 0));

    // Channels last 600 s, then a new bind is needed.
    c.bind_channel(&mut w, 0x4001, PEER).ok();
    w.now += Duration::from_secs(601);
    w.unix += 601;
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.server.channels(), 0);

    // The allocation expires after its lifetime without refresh.
    w.now += Duration::from_secs(3600);
    w.unix += 3600;
    w.server.handle_timeout(w.now, &mut w.relays);
    assert_eq!(w.server.allocations(), 0);
    assert!(w.relays.bound.is_empty(), "relay socket released");
    assert_eq!(w.quota.total(), 0);

    let s = w.server.stats();
    assert_eq!((s.packets_to_peer, s.packets_to_client), (2, 2));
    assert!(s.dropped_no_permission >= 3);
}

#[test]
fn refresh_zero_deletes_and_then_437() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    assert_eq!(
        c.refresh(&mut w, Some(0))
            .ok()
            .msg()
            .require::<Lifetime>()
            .unwrap(),
        0
    );
    assert_eq!(w.server.allocations(), 0);
    assert!(w.relays.bound.is_empty());
    assert_eq!(c.refresh(&mut w, None).code, Some(437));
    assert_eq!(c.permit(&mut w, PEER).code, Some(437));
}

#[test]
fn a_ceiling_below_the_default_lifetime_is_raised_not_a_panic() {
    let cfg = Config {
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(60),
        ..Config::default()
    };
    let mut w = world_with(cfg, 100, 100, 100);
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    for asked in [30, 600, 7200] {
        let granted = c
            .refresh(&mut w, Some(asked))
            .ok()
            .msg()
            .require::<Lifetime>()
            .unwrap();
        assert_eq!(granted, 600, "asked for {asked} s");
    }
}

#[test]
fn allocate_errors() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    // Second Allocate on the same 5-tuple with a new transaction: 437.
    let r = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(437));

    // Nonces are bound to the client IP: same IP, another port.
    let mut d = Client::new(tuple("192.0.2.10:40001"), "alice", "alice-pw");
    d.nonce = c.nonce.clone();
    // Missing REQUESTED-TRANSPORT: 400.
    assert_eq!(d.request(&mut w, Method::ALLOCATE, |_| {}).code, Some(400));
    // TCP relaying is not offered: 442.
    let r = d.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_TCP).unwrap();
    });
    assert_eq!(r.code, Some(442));
    // IPv6 relay not configured: 440.
    let r = d.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        m.add::<RequestedAddressFamily>(AddressFamily::V6).unwrap();
    });
    assert_eq!(r.code, Some(440));
    // A comprehension-required attribute the server does not know: 420.
    let r = d.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        m.add_raw(AttrType(0x0042), &[1, 2, 3, 4]).unwrap();
    });
    assert_eq!(r.code, Some(420));
    assert_eq!(w.server.allocations(), 1);
    assert_eq!(w.quota.total(), 1, "refused requests hold no quota");
}

#[test]
fn retransmitted_allocate_gets_the_same_answer() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    c.tid -= 1; // same transaction id as the successful Allocate
    let r = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    r.ok();
    assert_eq!(w.server.allocations(), 1);
}

#[test]
fn even_port_reservation_hands_out_the_next_port() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    let mut rtp = Client::new(tuple("192.0.2.10:40001"), "alice", "alice-pw");
    rtp.nonce = c.nonce.clone();
    let r = rtp.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        m.add::<stun::attr::EvenPort>(true).unwrap();
    });
    let m = r.ok().msg();
    let rtp_addr = m.require::<XorRelayedAddress>().unwrap();
    let token = m.require::<stun::attr::ReservationToken>().unwrap();
    let mut rtcp = Client::new(tuple("192.0.2.10:40002"), "alice", "alice-pw");
    rtcp.nonce = c.nonce.clone();
    let r = rtcp.request(&mut w, Method::ALLOCATE, move |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        m.add::<stun::attr::ReservationToken>(token).unwrap();
    });
    let rtcp_addr = r.ok().msg().require::<XorRelayedAddress>().unwrap();
    assert_eq!(rtcp_addr.port(), rtp_addr.port() + 1);
    // A token works once.
    let mut again = Client::new(tuple("192.0.2.10:40003"), "alice", "alice-pw");
    again.nonce = c.nonce.clone();
    let r = again.request(&mut w, Method::ALLOCATE, move |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        m.add::<stun::attr::ReservationToken>(token).unwrap();
    });
    assert_eq!(r.code, Some(508));
    // EVEN-PORT together with a token is malformed.
    let r = again.request(&mut w, Method::ALLOCATE, move |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        m.add::<stun::attr::EvenPort>(false).unwrap();
        m.add::<stun::attr::ReservationToken>(token).unwrap();
    });
    assert_eq!(r.code, Some(400));
}

#[test]
fn authentication_errors() {
    let mut w = world();
    // Wrong password: 401, counted.
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "wrong");
    let first = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    c.take_nonce(&first);
    let r = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(401));
    // Unknown user: 401.
    c.user = "mallory".into();
    assert_eq!(
        c.request(&mut w, Method::ALLOCATE, |m| {
            m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
        })
        .code,
        Some(401)
    );
    assert_eq!(w.server.stats().auth_failures, 2);

    // Time-limited credentials work until they expire.
    let (user, pass) = rest_credential(&w.secret, "web", 60, w.unix);
    let mut rc = Client::new(tuple("192.0.2.10:40002"), &user, &pass);
    rc.nonce = c.nonce.clone();
    rc.allocate(&mut w);
    let (user, pass) = rest_credential(&w.secret, "web", 60, w.unix - 120);
    let mut old = Client::new(tuple("192.0.2.10:40003"), &user, &pass);
    old.nonce = c.nonce.clone();
    let r = old.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(401), "expired REST credential");

    // Another valid user on someone else's allocation: 441.
    let mut a = Client::new(tuple("192.0.2.10:40004"), "alice", "alice-pw");
    a.nonce = c.nonce.clone();
    a.allocate(&mut w);
    a.user = "bob".into();
    a.password = "bob-pw".into();
    assert_eq!(a.refresh(&mut w, None).code, Some(441));
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_one() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    w.now += Duration::from_secs(601);
    w.unix += 601;
    let r = c.refresh(&mut w, None);
    assert_eq!(r.code, Some(438));
    c.take_nonce(&r);
    c.refresh(&mut w, None).ok();
    // A nonce minted for another client address is not accepted either.
    let mut other = Client::new(tuple("192.0.2.99:1"), "alice", "alice-pw");
    other.nonce = c.nonce.clone();
    let r = other.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(438));
    // A garbage nonce: 438 as well.
    other.nonce = Some("not-a-nonce".into());
    assert_eq!(other.refresh(&mut w, None).code, Some(438));
}

#[test]
fn peer_policy_and_channel_rules() {
    let mut w = world();
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    // The server's own address (203.0.113.200) is refused like the
    // reserved ranges, and so are IPv6 spellings of them.
    for peer in [
        "127.0.0.1:80",
        "[::ffff:127.0.0.1]:80",
        "[::ffff:7f00:1]:80",
        "[64:ff9b::a00:1]:80",
        "10.0.0.1:80",
        "169.254.169.254:80",
        "203.0.113.200:3478",
        "[::ffff:203.0.113.200]:1",
    ] {
        assert_eq!(c.permit(&mut w, peer).code, Some(403), "{peer}");
    }
    assert_eq!(w.server.stats().denied_peers, 8);
    // A public IPv6 peer on this IPv4 relay: the family does not match.
    assert_eq!(c.permit(&mut w, "[2606:4700::1111]:443").code, Some(443));
    // One bad peer in a multi-peer CreatePermission refuses all of them.
    let r = c.request(&mut w, Method::CREATE_PERMISSION, |m| {
        m.add::<XorPeerAddress>(addr(PEER)).unwrap();
        m.add::<XorPeerAddress>(addr("10.1.1.1:1")).unwrap();
    });
    assert_eq!(r.code, Some(403));
    assert_eq!(w.server.permissions(), 0);
    // No peer at all: 400.
    assert_eq!(
        c.request(&mut w, Method::CREATE_PERMISSION, |_| {}).code,
        Some(400)
    );

    // Channel numbers outside 0x4000-0x4FFF: 400.
    assert_eq!(c.bind_channel(&mut w, 0x3FFF, PEER).code, Some(400));
    assert_eq!(c.bind_channel(&mut w, 0x5000, PEER).code, Some(400));
    c.bind_channel(&mut w, 0x4000, PEER).ok();
    // Rebinding the same pair refreshes; mixing pairs is refused.
    c.bind_channel(&mut w, 0x4000, PEER).ok();
    assert_eq!(c.bind_channel(&mut w, 0x4000, PEER2).code, Some(400));
    assert_eq!(c.bind_channel(&mut w, 0x4001, PEER).code, Some(400));
    assert_eq!(
        c.bind_channel(&mut w, 0x4001, "127.0.0.1:5").code,
        Some(403)
    );
}

#[test]
fn allow_list_opens_loopback() {
    let mut w = world();
    let mut creds = Credentials::new(REALM);
    creds.add_user("alice", "alice-pw");
    let policy = PeerPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], vec![]);
    w.server = Server::new(
        Config::default(),
        Arc::new(creds),
        Arc::new(policy),
        w.quota.clone(),
        [1; 32],
    );
    let mut c = Client::new(tuple("127.0.0.1:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    c.permit(&mut w, "127.0.0.1:9").ok();
    assert_eq!(c.permit(&mut w, "10.0.0.1:9").code, Some(403));
}

#[test]
fn quotas() {
    let mut w = world_with(Config::default(), 3, 2, 100);
    let mut nonce = None;
    for i in 0..2 {
        let mut c = Client::new(
            tuple(&format!("192.0.2.10:{}", 40000 + i)),
            "alice",
            "alice-pw",
        );
        c.nonce = nonce.clone();
        c.allocate(&mut w);
        nonce = c.nonce.clone();
    }
    let mut c = Client::new(tuple("192.0.2.10:40009"), "alice", "alice-pw");
    c.nonce = nonce.clone();
    let r = c.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(486), "per-user quota");
    let mut b = Client::new(tuple("192.0.2.10:50001"), "bob", "bob-pw");
    b.nonce = nonce.clone();
    b.allocate(&mut w);
    let mut b2 = Client::new(tuple("192.0.2.10:50002"), "bob", "bob-pw");
    b2.nonce = nonce.clone();
    let r = b2.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(508), "server-wide quota");

    // Relay ports running out is 508 too, and gives the quota back.
    let mut w = world_with(Config::default(), 10, 10, 1);
    let mut c = Client::new(tuple("192.0.2.10:1"), "alice", "alice-pw");
    c.allocate(&mut w);
    let mut d = Client::new(tuple("192.0.2.10:2"), "alice", "alice-pw");
    d.nonce = c.nonce.clone();
    let r = d.request(&mut w, Method::ALLOCATE, |m| {
        m.add::<RequestedTransport>(PROTOCOL_UDP).unwrap();
    });
    assert_eq!(r.code, Some(508));
    assert_eq!(w.quota.total(), 1);
}

#[test]
fn bandwidth_limit_drops_excess() {
    let cfg = Config {
        bandwidth: 1000,
        ..Config::default()
    };
    let mut w = world_with(cfg, 10, 10, 10);
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    c.bind_channel(&mut w, 0x4000, PEER).ok();
    let payload = [0u8; 400];
    let sent = (0..5)
        .filter(|_| c.channel_data(&mut w, 0x4000, &payload).is_some())
        .count();
    assert_eq!(sent, 2);
    w.now += Duration::from_secs(1);
    assert!(c.channel_data(&mut w, 0x4000, &payload).is_some());
    assert_eq!(w.server.stats().dropped_bandwidth, 3);
}

#[test]
fn the_total_bandwidth_caps_all_allocations_together() {
    let cfg = Config {
        bandwidth: 0,
        total_bandwidth: 1000,
        ..Config::default()
    };
    let mut w = world_with(cfg, 10, 10, 10);
    let mut a = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    let mut b = Client::new(tuple("192.0.2.11:40000"), "alice", "alice-pw");
    for c in [&mut a, &mut b] {
        c.allocate(&mut w);
        c.bind_channel(&mut w, 0x4000, PEER).ok();
    }
    let payload = [0u8; 400];
    // 1000 bytes between the two: two packets pass, then neither.
    assert!(a.channel_data(&mut w, 0x4000, &payload).is_some());
    assert!(b.channel_data(&mut w, 0x4000, &payload).is_some());
    assert!(a.channel_data(&mut w, 0x4000, &payload).is_none());
    assert!(b.channel_data(&mut w, 0x4000, &payload).is_none());
    let st = w.server.stats();
    assert_eq!((st.dropped_total_bandwidth, st.dropped_bandwidth), (2, 0));
    w.now += Duration::from_secs(1);
    assert!(b.channel_data(&mut w, 0x4000, &payload).is_some());
}

#[test]
fn unauthenticated_requests_are_throttled_per_source() {
    let cfg = Config {
        unauth_rate: 1.0,
        unauth_burst: 3,
        ..Config::default()
    };
    let mut w = world_with(cfg, 10, 10, 10);
    let mut c = Client::new(tuple("192.0.2.10:40000"), "", "");
    let mut buf = Vec::new();
    let mut mw = MessageWriter::new(
        &mut buf,
        MessageType::BINDING_REQUEST,
        TransactionId([1; 12]),
    );
    mw.add_fingerprint().unwrap();
    mw.finish();
    let mut answered = 0;
    for _ in 0..10 {
        let mut out = Vec::new();
        if let Action::ToClient { .. } =
            w.server
                .handle_client(w.now, w.unix, c.tuple, &buf, &mut out, &mut w.relays)
        {
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(w.server.stats().throttled, 7);
    // Another source is not affected.
    c.tuple = tuple("192.0.2.11:1");
    c.request(&mut w, Method::BINDING, |_| {}).ok();
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut w = world();
    let t = tuple("192.0.2.10:1");
    let mut out = Vec::new();
    for pkt in [
        &b""[..],
        &[0x00],
        &[0x40, 0x00, 0x00, 0x10, 1],
        &[0xff; 30],
        &[0x01, 0x01, 0, 4, 0x21, 0x12],
    ] {
        assert_eq!(
            w.server
                .handle_client(w.now, w.unix, t, pkt, &mut out, &mut w.relays),
            Action::None
        );
    }
    assert_eq!(w.server.stats().malformed, 5);
    assert_eq!(from_peer(&mut w, RelayId(12345), PEER, b"x"), None);
}

#[test]
fn create_permission_over_the_limit_installs_nothing() {
    let cfg = Config {
        max_permissions: 2,
        ..Config::default()
    };
    let mut w = world_with(cfg, 100, 10, 100);
    let mut c = Client::new(tuple("192.0.2.10:40000"), "alice", "alice-pw");
    c.allocate(&mut w);
    c.permit(&mut w, PEER).ok();
    // Two new peers where one slot is left: refused as a whole, so the
    // first of them is not installed either.
    let r = c.request(&mut w, Method::CREATE_PERMISSION, |m| {
        m.add::<XorPeerAddress>(addr(PEER2)).unwrap();
        m.add::<XorPeerAddress>(addr("9.9.9.9:1")).unwrap();
    });
    assert_eq!(r.code, Some(508));
    assert_eq!(w.server.permissions(), 1);
    // A peer already permitted takes no new slot, and a peer named twice
    // takes one.
    let r = c.request(&mut w, Method::CREATE_PERMISSION, |m| {
        m.add::<XorPeerAddress>(addr(PEER)).unwrap();
        m.add::<XorPeerAddress>(addr(PEER2)).unwrap();
        m.add::<XorPeerAddress>(addr("1.1.1.1:9")).unwrap();
    });
    r.ok();
    assert_eq!(w.server.permissions(), 2);
}

#[test]
fn stats_add_up_field_by_field() {
    let one = |k: u64| Stats {
        packets_to_peer: k,
        bytes_to_peer: 2 * k,
        packets_to_client: 3 * k,
        bytes_to_client: 4 * k,
        auth_failures: 5 * k,
        denied_peers: 6 * k,
        dropped_bandwidth: 7 * k,
        dropped_total_bandwidth: 11 * k,
        dropped_no_permission: 8 * k,
        throttled: 9 * k,
        malformed: 10 * k,
    };
    let mut sum = one(1);
    sum += one(10);
    assert_eq!(sum, one(11));
}
