//! The TURN server as a state machine (RFC 8656, with STUN Binding from
//! RFC 8489).
//!
//! [`Server`] owns the allocation table of one worker: allocations keyed by
//! their client 5-tuple, their permissions and channels, nonces, quotas and
//! rate limits. It reads no clock and touches no socket. The driver hands it
//! each datagram or stream frame with the current time and carries out the
//! returned [`Action`]; relay sockets are bound through the [`Relays`] trait,
//! which tests fake.
//!
//! The data path (ChannelData both ways, Send and Data indications) does not
//! allocate: payloads are borrowed from the input or written into the
//! caller's reusable output buffer.

use crate::auth::{AuthError, Credentials};
use crate::policy::PeerPolicy;
use hmac::{Hmac, KeyInit, Mac};
use rate::TokenBucket;
use sha1::Sha1;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stun::attr::{
    AddressFamily, AttrTypeList, ChannelNumber, Data, ErrorCodeValue, EvenPort, Lifetime, Nonce,
    OtherAddress, Realm, RequestedAddressFamily, RequestedTransport, ReservationToken, Software,
    UnknownAttributes, Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress, PROTOCOL_UDP,
};
use stun::integrity::{IntegrityAlg, Key};
use stun::{
    code, AttrType, ChannelData, Class, Message, MessageType, MessageWriter, Method, TransactionId,
};

/// Settings of the TURN core. `serve` sets `bandwidth`, `unauth_rate` and
/// `unauth_burst` from its flags and keeps the defaults for the rest.
#[derive(Debug, Clone)]
pub struct Config {
    /// SOFTWARE attribute on responses; `None` (the default) sends none.
    pub software: Option<String>,
    /// Allocation lifetime when an Allocate or Refresh has no LIFETIME, and
    /// the floor for one that asks for less (RFC 8656 §7.2; default 600 s).
    /// A `max_lifetime` below it is raised to it by [`Server::new`], so
    /// requested lifetimes always clamp between the two.
    pub default_lifetime: Duration,
    /// Ceiling on a requested LIFETIME (default 3600 s).
    pub max_lifetime: Duration,
    /// How long a CreatePermission or ChannelBind keeps a peer IP's
    /// permission. RFC 8656 §9 fixes it at 300 s, the default, and clients
    /// time their refreshes by that.
    pub permission_lifetime: Duration,
    /// How long a ChannelBind keeps a channel bound (RFC 8656 §12: 600 s,
    /// the default).
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid before the client must take a new one
    /// (a 438 Stale Nonce carries it; default 600 s).
    pub nonce_lifetime: Duration,
    /// Permissions per allocation. A CreatePermission or ChannelBind that
    /// would exceed it gets 508 and installs nothing; expired permissions
    /// count until [`Server::handle_timeout`] drops them.
    pub max_permissions: usize,
    /// Relayed bytes per second per allocation, each direction; 0 = no limit.
    /// The default, 64 MiB/s (about 540 Mbit/s), is an abuse limit that a
    /// person sending a file through the relay does not meet: it stops one
    /// allocation from taking a fast server's whole link, while the NIC and
    /// `max_allocations` bound the server as a whole.
    pub bandwidth: u32,
    /// Relayed bytes per second through this server (one worker) as a
    /// whole, each direction; 0 = no limit (the default). A packet within
    /// its allocation's budget is still dropped when this is spent, so a
    /// few busy allocations cannot take the whole link. `serve` splits
    /// `--relay-bandwidth-total` evenly among its workers.
    pub total_bandwidth: u32,
    /// Unauthenticated requests (Binding, and requests answered with 401)
    /// per second per source IP.
    pub unauth_rate: f64,
    /// How many unauthenticated requests a source may send at once before
    /// `unauth_rate` applies (the token bucket's size; `serve` uses two
    /// seconds' worth).
    pub unauth_burst: u32,
    /// Source IPs tracked for the unauthenticated rate at once.
    pub max_tracked_sources: usize,
    /// A second STUN address of this server, put into every Binding
    /// response as OTHER-ADDRESS (RFC 5780 §7.4) so clients can tell how
    /// their NAT maps (`serve --stun-alt-listen`); `None` sends none.
    pub other_address: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            software: None,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_permissions: 64,
            bandwidth: 64 * 1024 * 1024,
            total_bandwidth: 0,
            unauth_rate: 20.0,
            unauth_burst: 40,
            max_tracked_sources: 65_536,
            other_address: None,
        }
    }
}

/// Allocation counts shared by every worker, so quotas hold server-wide.
#[derive(Debug)]
pub struct Quota {
    max_total: usize,
    max_per_user: usize,
    total: AtomicUsize,
    per_user: Mutex<HashMap<Box<str>, usize>>,
}

impl Quota {
    /// Allocations on the whole server unless configured otherwise.
    pub const DEFAULT_MAX_TOTAL: usize = 10_000;
    /// Allocations per username unless configured otherwise.
    pub const DEFAULT_MAX_PER_USER: usize = 64;

    /// Limits for the whole server, to hand to every worker's
    /// [`Server::new`]. An Allocate past `max_per_user` gets 486 Allocation
    /// Quota Reached, one past `max_total` 508 Insufficient Capacity.
    pub fn new(max_total: usize, max_per_user: usize) -> Arc<Self> {
        Arc::new(Quota {
            max_total,
            max_per_user,
            total: AtomicUsize::new(0),
            per_user: Mutex::new(HashMap::new()),
        })
    }

    /// Allocations live on the server right now, across all workers.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn acquire(&self, user: &str) -> Result<(), u16> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_user.get(user).copied().unwrap_or(0);
        if n >= self.max_per_user {
            return Err(code::ALLOCATION_QUOTA_REACHED);
        }
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.max_total).then_some(t + 1)
            })
            .is_err()
        {
            return Err(code::INSUFFICIENT_CAPACITY);
        }
        per_user.insert(user.into(), n + 1);
        Ok(())
    }

    fn release(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(user);
            }
            self.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Each datagram is one STUN message or one ChannelData message.
    Udp,
    /// A stream of STUN and ChannelData messages, the latter padded to a
    /// multiple of 4 bytes (RFC 8656 §12.5) so the receiver can frame it.
    Tcp,
}

/// Client address, server address and transport: what identifies an
/// allocation (RFC 8656 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as the server sees it (after any NAT).
    pub client: SocketAddr,
    /// The server address the client sent to.
    pub server: SocketAddr,
    /// UDP datagrams or a TCP connection.
    pub transport: Transport,
}

/// Names one relay socket for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayId(pub u32);

/// Why [`Relays::bind`] could not bind a relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// No relay address of that family is configured; the Allocate gets
    /// 440 Address Family not Supported.
    Family,
    /// Every relay port is in use; the Allocate gets 508 Insufficient
    /// Capacity.
    Exhausted,
}

/// A bound relay socket: its id and the address to advertise.
pub type Bound = (RelayId, SocketAddr);

/// The driver's relay sockets.
///
/// Reservations (EVEN-PORT with the R bit, RFC 8656 §7.2) live on this side:
/// the Allocate that claims a token may reach another worker than the one
/// that reserved it, so the driver keeps them where every worker sees them.
pub trait Relays {
    /// Binds a relay socket. With `reserve_next` the port is even and the
    /// next port is reserved too; the token that claims it is returned.
    fn bind(
        &mut self,
        family: AddressFamily,
        even_port: bool,
        reserve_next: bool,
    ) -> Result<(Bound, Option<[u8; 8]>), BindError>;
    /// Turns a reserved port into a relay socket. `None` if the token is
    /// unknown or expired (reservations last 30 s).
    fn claim(&mut self, token: [u8; 8]) -> Option<Bound>;
    /// Closes a relay socket.
    fn release(&mut self, id: RelayId);
}

/// What the driver must do with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Nothing to send (consumed, dropped or refused silently).
    None,
    /// Send `data` to the client over its 5-tuple.
    ToClient {
        /// Whom to send to, and over which socket or connection.
        tuple: FiveTuple,
        /// One whole STUN or ChannelData message, in the caller's `out`.
        data: &'a [u8],
    },
    /// Send `data` from relay socket `relay` to `peer`.
    ToPeer {
        /// The allocation's relay socket.
        relay: RelayId,
        /// The peer's transport address, which has a permission.
        peer: SocketAddr,
        /// The application payload without TURN framing, borrowed from the
        /// client's packet.
        data: &'a [u8],
    },
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Packets relayed from clients to peers (ChannelData and Send
    /// indications that passed the checks).
    pub packets_to_peer: u64,
    /// Payload bytes of those, without TURN, UDP or IP headers.
    pub bytes_to_peer: u64,
    /// Packets relayed from peers to clients.
    pub packets_to_client: u64,
    /// Payload bytes of those, without TURN, UDP or IP headers.
    pub bytes_to_client: u64,
    /// Requests refused for an unknown or expired user, a
    /// MESSAGE-INTEGRITY that did not verify, or a username that does not
    /// own the allocation (441). Stale nonces are not counted.
    pub auth_failures: u64,
    /// CreatePermission and ChannelBind requests refused with 403 because
    /// [`PeerPolicy`] refused a peer address.
    pub denied_peers: u64,
    /// Packets dropped for exceeding the allocation's bandwidth.
    pub dropped_bandwidth: u64,
    /// Packets dropped for exceeding the server's total bandwidth
    /// ([`Config::total_bandwidth`]).
    pub dropped_total_bandwidth: u64,
    /// Packets dropped for lack of a permission or channel.
    pub dropped_no_permission: u64,
    /// Unauthenticated requests dropped by the per-source rate limit.
    pub throttled: u64,
    /// Packets that did not parse.
    pub malformed: u64,
}

/// Sums another worker's counters into these (for `/metrics`).
impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        // Destructured so a new counter cannot be forgotten here.
        let Stats {
            packets_to_peer,
            bytes_to_peer,
            packets_to_client,
            bytes_to_client,
            auth_failures,
            denied_peers,
            dropped_bandwidth,
            dropped_total_bandwidth,
            dropped_no_permission,
            throttled,
            malformed,
        } = o;
        self.packets_to_peer += packets_to_peer;
        self.bytes_to_peer += bytes_to_peer;
        self.packets_to_client += packets_to_client;
        self.bytes_to_client += bytes_to_client;
        self.auth_failures += auth_failures;
        self.denied_peers += denied_peers;
        self.dropped_bandwidth += dropped_bandwidth;
        self.dropped_total_bandwidth += dropped_total_bandwidth;
        self.dropped_no_permission += dropped_no_permission;
        self.throttled += throttled;
        self.malformed += malformed;
    }
}

#[derive(Clone, Copy)]
enum Direction {
    ToPeer,
    ToClient,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

struct Allocation {
    relay: RelayId,
    relay_addr: SocketAddr,
    username: Box<str>,
    /// Transaction id of the Allocate that created it, to answer a
    /// retransmission with success instead of 437.
    created_by: TransactionId,
    expires: Instant,
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
    to_peer_budget: Option<TokenBucket>,
    to_client_budget: Option<TokenBucket>,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|(p, exp)| *p == ip && *exp > now)
    }

    fn channel_by_number(&self, n: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == n && c.expires > now)
    }

    fn channel_by_peer(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }

    /// The checks every relayed packet passes, either way: the allocation
    /// is alive, the peer has a permission, and the direction's bandwidth
    /// budget covers it. Counts the reason when it does not.
    fn admit(
        &mut self,
        peer: IpAddr,
        len: usize,
        dir: Direction,
        now: Instant,
        stats: &mut Stats,
    ) -> bool {
        if self.expires <= now || !self.permitted(peer, now) {
            stats.dropped_no_permission += 1;
            return false;
        }
        let budget = match dir {
            Direction::ToPeer => &mut self.to_peer_budget,
            Direction::ToClient => &mut self.to_client_budget,
        };
        if !spend(budget, len, now) {
            stats.dropped_bandwidth += 1;
            return false;
        }
        true
    }

    /// Installs or refreshes a permission for each of `ips` (a peer may be
    /// named twice), all or nothing: false, with nothing changed, when the
    /// new ones would take the allocation past `max`.
    fn grant_all<I: Iterator<Item = IpAddr>>(
        &mut self,
        ips: impl Fn() -> I,
        until: Instant,
        max: usize,
    ) -> bool {
        let before = self.permissions.len();
        for ip in ips() {
            if self.permissions.iter().any(|(p, _)| *p == ip) {
                continue;
            }
            if self.permissions.len() >= max {
                self.permissions.truncate(before);
                return false;
            }
            self.permissions.push((ip, until));
        }
        for ip in ips() {
            if let Some(p) = self.permissions[..before]
                .iter_mut()
                .find(|(p, _)| *p == ip)
            {
                p.1 = until;
            }
        }
        true
    }
}

fn budget(bytes_per_sec: u32, now: Instant) -> Option<TokenBucket> {
    (bytes_per_sec > 0).then(|| TokenBucket::new(bytes_per_sec, f64::from(bytes_per_sec), now))
}

fn spend_total(b: &mut Option<TokenBucket>, rate: u32, len: usize, now: Instant) -> bool {
    if rate == 0 {
        return true;
    }
    let b = b.get_or_insert_with(|| TokenBucket::new(rate, f64::from(rate), now));
    b.take_n(u32::try_from(len).unwrap_or(u32::MAX), now)
}

fn spend(b: &mut Option<TokenBucket>, len: usize, now: Instant) -> bool {
    match b {
        Some(b) => b.take_n(u32::try_from(len).unwrap_or(u32::MAX), now),
        None => true,
    }
}

/// What an answer to an authenticated request is signed with: the key
/// the request verified with, and the algorithm that verified.
#[derive(Clone, Copy)]
struct Signer {
    key: Key,
    alg: IntegrityAlg,
}

/// A refusal: the error code and, when the request was authenticated, how
/// to sign the error response.
struct Refusal {
    code: u16,
    signer: Option<Signer>,
}

impl Refusal {
    fn plain(code: u16) -> Self {
        Refusal { code, signer: None }
    }
}

/// One request being answered, with what every handler needs.
#[derive(Clone, Copy)]
struct Request<'m> {
    now: Instant,
    /// Wall-clock seconds, for credentials and nonces.
    unix: u64,
    tuple: FiveTuple,
    msg: Message<'m>,
}

/// A request whose MESSAGE-INTEGRITY verified.
struct Authed<'m> {
    req: Request<'m>,
    user: &'m str,
    signer: Signer,
}

impl Authed<'_> {
    /// A refusal signed like the request.
    fn refuse(&self, code: u16) -> Refusal {
        Refusal {
            code,
            signer: Some(self.signer),
        }
    }
}

/// One worker's TURN state.
pub struct Server {
    cfg: Config,
    creds: Arc<Credentials>,
    policy: Arc<PeerPolicy>,
    quota: Arc<Quota>,
    nonce_secret: [u8; 32],
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<RelayId, FiveTuple>,
    sources: HashMap<IpAddr, TokenBucket>,
    /// [`Config::total_bandwidth`], per direction; made full at the first
    /// packet (the core has no clock of its own).
    total_to_peer: Option<TokenBucket>,
    total_to_client: Option<TokenBucket>,
    indication_counter: u64,
    stats: Stats,
}

const NONCE_LEN: usize = 32;

impl Server {
    /// A worker with no allocations. `creds`, `policy` and `quota` are
    /// shared by all workers. `nonce_secret` keys the nonces' MAC: give
    /// every worker the same one so a nonce one issued verifies at another.
    /// A new secret (a restart) only costs clients a 438 and a retry.
    pub fn new(
        cfg: Config,
        creds: Arc<Credentials>,
        policy: Arc<PeerPolicy>,
        quota: Arc<Quota>,
        nonce_secret: [u8; 32],
    ) -> Self {
        let mut cfg = cfg;
        // `Duration::clamp` panics on an inverted range; a request must never
        // be able to reach that.
        cfg.max_lifetime = cfg.max_lifetime.max(cfg.default_lifetime);
        Server {
            total_to_peer: None,
            total_to_client: None,
            cfg,
            creds,
            policy,
            quota,
            nonce_secret,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            sources: HashMap::new(),
            indication_counter: 0,
            stats: Stats::default(),
        }
    }

    /// This worker's counters since [`Self::new`]; sum workers with `+=`.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Allocations in this worker, including expired ones
    /// [`Self::handle_timeout`] has not removed yet.
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// Permissions over all of this worker's allocations (one per peer IP
    /// per allocation), counted like [`Self::allocations`].
    pub fn permissions(&self) -> usize {
        self.allocations.values().map(|a| a.permissions.len()).sum()
    }

    /// Channel bindings over all of this worker's allocations, counted
    /// like [`Self::allocations`].
    pub fn channels(&self) -> usize {
        self.allocations.values().map(|a| a.channels.len()).sum()
    }

    /// A datagram (UDP) or one whole frame (TCP) from a client. `unix` is
    /// wall-clock seconds, for credentials and nonces.
    pub fn handle_client<'a>(
        &mut self,
        now: Instant,
        unix: u64,
        tuple: FiveTuple,
        packet: &'a [u8],
        out: &'a mut Vec<u8>,
        relays: &mut impl Relays,
    ) -> Action<'a> {
        out.clear();
        match packet.first() {
            Some(0x40..=0x4F) => return self.client_channel_data(now, tuple, packet),
            Some(0x00..=0x03) => {}
            _ => {
                self.stats.malformed += 1;
                return Action::None;
            }
        }
        let msg = match Message::parse(packet) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return Action::None;
            }
        };
        match msg.class() {
            Class::Request => {
                let req = Request {
                    now,
                    unix,
                    tuple,
                    msg,
                };
                if self.request(req, out, relays) {
                    Action::ToClient { tuple, data: out }
                } else {
                    Action::None
                }
            }
            Class::Indication if msg.method() == Method::SEND => {
                self.send_indication(now, tuple, &msg)
            }
            // Responses and other indications are not for a server.
            _ => Action::None,
        }
    }

    /// A datagram from `from` on relay socket `relay`.
    pub fn handle_peer<'a>(
        &mut self,
        now: Instant,
        relay: RelayId,
        from: SocketAddr,
        payload: &[u8],
        out: &'a mut Vec<u8>,
    ) -> Action<'a> {
        out.clear();
        let Some(tuple) = self.by_relay.get(&relay).copied() else {
            return Action::None;
        };
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            return Action::None;
        };
        if !alloc.admit(
            from.ip(),
            payload.len(),
            Direction::ToClient,
            now,
            &mut self.stats,
        ) {
            return Action::None;
        }
        if !spend_total(
            &mut self.total_to_client,
            self.cfg.total_bandwidth,
            payload.len(),
            now,
        ) {
            self.stats.dropped_total_bandwidth += 1;
            return Action::None;
        }
        if let Some(ch) = alloc.channel_by_peer(from, now) {
            let padded = tuple.transport == Transport::Tcp;
            // Payloads are bounded by the relay socket's receive buffer
            // (< 64 KiB), which always fits ChannelData.
            match ChannelData::new(ch.number, payload) {
                Ok(cd) => cd.encode(out, padded),
                Err(_) => return Action::None,
            }
        } else {
            self.indication_counter = self.indication_counter.wrapping_add(1);
            let mut tid = [0u8; 12];
            tid[..8].copy_from_slice(&self.indication_counter.to_be_bytes());
            tid[8..].copy_from_slice(&relay.0.to_be_bytes());
            let mut w = MessageWriter::new(
                out,
                MessageType::indication(Method::DATA),
                TransactionId(tid),
            );
            if w.add::<XorPeerAddress>(from).is_err() || w.add::<Data>(payload).is_err() {
                return Action::None;
            }
            w.finish();
        }
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += payload.len() as u64;
        Action::ToClient { tuple, data: out }
    }

    /// Expires allocations, permissions and channels, and forgets idle
    /// rate-limit entries. Call about once a second.
    pub fn handle_timeout(&mut self, now: Instant, relays: &mut impl Relays) {
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            self.remove(t, relays);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|(_, exp)| *exp > now);
            a.channels.retain(|c| c.expires > now);
        }
        self.sources.retain(|_, b| !b.is_full(now));
    }

    /// Releases every relay socket this worker holds (shutdown).
    pub fn close_all(&mut self, relays: &mut impl Relays) {
        let all: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for t in all {
            self.remove(t, relays);
        }
    }

    /// Whether `tuple` has an allocation that has not expired (the TCP
    /// driver's deadlines ask).
    pub fn has_allocation(&self, tuple: &FiveTuple, now: Instant) -> bool {
        self.allocations.get(tuple).is_some_and(|a| a.expires > now)
    }

    /// Closes the allocation of `tuple`, if any, releasing its relay socket
    /// and quota (a TCP client gone).
    pub fn close_client(&mut self, tuple: FiveTuple, relays: &mut impl Relays) {
        self.remove(tuple, relays);
    }

    fn remove(&mut self, tuple: FiveTuple, relays: &mut impl Relays) {
        if let Some(a) = self.allocations.remove(&tuple) {
            self.by_relay.remove(&a.relay);
            relays.release(a.relay);
            self.quota.release(&a.username);
        }
    }

    fn client_channel_data<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        packet: &'a [u8],
    ) -> Action<'a> {
        let cd = match ChannelData::parse(packet) {
            Ok(cd) => cd,
            Err(_) => {
                self.stats.malformed += 1;
                return Action::None;
            }
        };
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            self.stats.dropped_no_permission += 1;
            return Action::None;
        };
        let Some(peer) = alloc.channel_by_number(cd.channel(), now).map(|c| c.peer) else {
            self.stats.dropped_no_permission += 1;
            return Action::None;
        };
        self.forward_to_peer(now, tuple, peer, cd.data())
    }

    fn send_indication<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &Message<'a>,
    ) -> Action<'a> {
        let (Ok(Some(peer)), Ok(Some(data))) = (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            self.stats.malformed += 1;
            return Action::None;
        };
        self.forward_to_peer(now, tuple, peer, data)
    }

    /// Client→peer, for ChannelData and Send indications alike.
    fn forward_to_peer<'a>(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        peer: SocketAddr,
        data: &'a [u8],
    ) -> Action<'a> {
        let Some(alloc) = self.allocations.get_mut(&tuple) else {
            self.stats.dropped_no_permission += 1;
            return Action::None;
        };
        if !alloc.admit(
            peer.ip(),
            data.len(),
            Direction::ToPeer,
            now,
            &mut self.stats,
        ) {
            return Action::None;
        }
        if !spend_total(
            &mut self.total_to_peer,
            self.cfg.total_bandwidth,
            data.len(),
            now,
        ) {
            self.stats.dropped_total_bandwidth += 1;
            return Action::None;
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += data.len() as u64;
        Action::ToPeer {
            relay: alloc.relay,
            peer,
            data,
        }
    }

    /// Admits one unauthenticated request from `ip` under the per-source rate.
    fn admit_unauthenticated(&mut self, ip: IpAddr, now: Instant) -> bool {
        let tracked = self.sources.len();
        let ok = match self.sources.get_mut(&ip) {
            Some(b) => b.take(now),
            None if tracked >= self.cfg.max_tracked_sources => false,
            None => {
                let mut b = TokenBucket::new(self.cfg.unauth_burst, self.cfg.unauth_rate, now);
                let ok = b.take(now);
                self.sources.insert(ip, b);
                ok
            }
        };
        if !ok {
            self.stats.throttled += 1;
        }
        ok
    }

    /// Answers one request into `out`. Returns false to send nothing.
    fn request(&mut self, req: Request<'_>, out: &mut Vec<u8>, relays: &mut impl Relays) -> bool {
        let (now, tuple, msg) = (req.now, req.tuple, req.msg);
        let method = msg.method();
        if method == Method::BINDING {
            if !self.admit_unauthenticated(tuple.client.ip(), now) {
                return false;
            }
            let mut w = MessageWriter::success_response(out, &msg);
            let mut ok = w.add::<XorMappedAddress>(tuple.client).is_ok();
            if let Some(other) = self.cfg.other_address {
                ok = ok && w.add::<OtherAddress>(other).is_ok();
            }
            return ok && self.finish(w, &msg, None);
        }
        let known = [
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ];
        if !known.contains(&method) {
            return self.refuse(out, &req, Refusal::plain(code::BAD_REQUEST));
        }
        // Comprehension-required attributes we do not understand: 420.
        let mut unknown = [AttrType(0); 16];
        let mut n_unknown = 0;
        for t in msg.unknown_comprehension_required(|t| t.is_known()) {
            if n_unknown < unknown.len() {
                unknown[n_unknown] = t;
                n_unknown += 1;
            }
        }
        if n_unknown > 0 {
            let err = ErrorCodeValue::standard(code::UNKNOWN_ATTRIBUTE);
            let mut w = match MessageWriter::error_response(out, &msg, err) {
                Ok(w) => w,
                Err(_) => return false,
            };
            if w.add::<UnknownAttributes>(AttrTypeList::new(&unknown[..n_unknown]))
                .is_err()
            {
                return false;
            }
            return self.finish(w, &msg, None);
        }
        if !msg.has_integrity() {
            if !self.admit_unauthenticated(tuple.client.ip(), now) {
                return false;
            }
            return self.refuse(out, &req, Refusal::plain(code::UNAUTHORIZED));
        }
        let (Ok(Some(user)), Ok(Some(_realm)), Ok(Some(nonce))) = (
            msg.get::<Username>(),
            msg.get::<Realm>(),
            msg.get::<Nonce>(),
        ) else {
            return self.refuse(out, &req, Refusal::plain(code::BAD_REQUEST));
        };
        if !self.nonce_valid(nonce, req.unix, tuple.client.ip()) {
            return self.refuse(out, &req, Refusal::plain(code::STALE_NONCE));
        }
        let key = match self.creds.key(user, req.unix) {
            Ok(k) => k,
            Err(AuthError::UnknownUser | AuthError::Expired { .. }) => {
                self.stats.auth_failures += 1;
                return self.refuse(out, &req, Refusal::plain(code::UNAUTHORIZED));
            }
        };
        // The algorithm that verified is the one the answer is signed with.
        let Ok(alg) = msg.verify_integrity(&key) else {
            self.stats.auth_failures += 1;
            return self.refuse(out, &req, Refusal::plain(code::UNAUTHORIZED));
        };
        let a = Authed {
            req,
            user,
            signer: Signer { key, alg },
        };
        let result = match method {
            Method::ALLOCATE => self.allocate(&a, out, relays),
            _ => match self.allocations.get(&tuple) {
                None => Err(a.refuse(code::ALLOCATION_MISMATCH)),
                Some(alloc) if &*alloc.username != user => {
                    self.stats.auth_failures += 1;
                    Err(a.refuse(code::WRONG_CREDENTIALS))
                }
                Some(_) => match method {
                    Method::REFRESH => self.refresh(&a, out, relays),
                    Method::CREATE_PERMISSION => self.create_permission(&a, out),
                    _ => self.channel_bind(&a, out),
                },
            },
        };
        match result {
            Ok(sent) => sent,
            Err(r) => self.refuse(out, &a.req, r),
        }
    }

    fn allocate(
        &mut self,
        a: &Authed<'_>,
        out: &mut Vec<u8>,
        relays: &mut impl Relays,
    ) -> Result<bool, Refusal> {
        let Request {
            now, tuple, msg, ..
        } = a.req;
        if let Some(existing) = self.allocations.get(&tuple) {
            if existing.created_by == msg.transaction_id() && &*existing.username == a.user {
                // A retransmitted Allocate: answer it again.
                let remaining = existing.expires.saturating_duration_since(now).as_secs() as u32;
                let relay_addr = existing.relay_addr;
                return Ok(self.allocate_success(a, relay_addr, remaining, None, out));
            }
            return Err(a.refuse(code::ALLOCATION_MISMATCH));
        }
        match msg.get::<RequestedTransport>() {
            Ok(Some(PROTOCOL_UDP)) => {}
            Ok(Some(_)) => return Err(a.refuse(code::UNSUPPORTED_TRANSPORT_PROTOCOL)),
            _ => return Err(a.refuse(code::BAD_REQUEST)),
        }
        let (even, reserve) = match msg.get::<EvenPort>() {
            Ok(Some(r)) => (true, r),
            Ok(None) => (false, false),
            Err(_) => return Err(a.refuse(code::BAD_REQUEST)),
        };
        let token = match msg.get::<ReservationToken>() {
            Ok(t) => t,
            Err(_) => return Err(a.refuse(code::BAD_REQUEST)),
        };
        if token.is_some() && (even || msg.contains::<RequestedAddressFamily>()) {
            return Err(a.refuse(code::BAD_REQUEST));
        }
        let family = match msg.get::<RequestedAddressFamily>() {
            Ok(Some(f)) => f,
            Ok(None) => AddressFamily::V4,
            Err(_) => return Err(a.refuse(code::ADDRESS_FAMILY_NOT_SUPPORTED)),
        };
        let lifetime = match msg.get::<Lifetime>() {
            Ok(Some(secs)) => Duration::from_secs(u64::from(secs))
                .clamp(self.cfg.default_lifetime, self.cfg.max_lifetime),
            Ok(None) => self.cfg.default_lifetime,
            Err(_) => return Err(a.refuse(code::BAD_REQUEST)),
        };
        let reserved = match token {
            Some(t) => Some(
                relays
                    .claim(t)
                    .ok_or(a.refuse(code::INSUFFICIENT_CAPACITY))?,
            ),
            None => None,
        };
        if let Err(c) = self.quota.acquire(a.user) {
            if let Some((id, _)) = reserved {
                relays.release(id);
            }
            return Err(a.refuse(c));
        }
        let ((relay, relay_addr), new_token) = match reserved {
            Some(r) => (r, None),
            None => match relays.bind(family, even, reserve) {
                Ok(r) => r,
                Err(e) => {
                    self.quota.release(a.user);
                    let c = match e {
                        BindError::Family => code::ADDRESS_FAMILY_NOT_SUPPORTED,
                        BindError::Exhausted => code::INSUFFICIENT_CAPACITY,
                    };
                    return Err(a.refuse(c));
                }
            },
        };
        self.allocations.insert(
            tuple,
            Allocation {
                relay,
                relay_addr,
                username: a.user.into(),
                created_by: msg.transaction_id(),
                expires: now + lifetime,
                permissions: Vec::new(),
                channels: Vec::new(),
                to_peer_budget: budget(self.cfg.bandwidth, now),
                to_client_budget: budget(self.cfg.bandwidth, now),
            },
        );
        self.by_relay.insert(relay, tuple);
        let secs = lifetime.as_secs() as u32;
        Ok(self.allocate_success(a, relay_addr, secs, new_token, out))
    }

    fn allocate_success(
        &self,
        a: &Authed<'_>,
        relay_addr: SocketAddr,
        lifetime: u32,
        token: Option<[u8; 8]>,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut w = MessageWriter::success_response(out, &a.req.msg);
        let mut ok = w.add::<XorRelayedAddress>(relay_addr).is_ok()
            && w.add::<Lifetime>(lifetime).is_ok()
            && w.add::<XorMappedAddress>(a.req.tuple.client).is_ok();
        if let Some(t) = token {
            ok = ok && w.add::<ReservationToken>(t).is_ok();
        }
        ok && self.finish(w, &a.req.msg, Some(a.signer))
    }

    fn refresh(
        &mut self,
        a: &Authed<'_>,
        out: &mut Vec<u8>,
        relays: &mut impl Relays,
    ) -> Result<bool, Refusal> {
        let Request {
            now, tuple, msg, ..
        } = a.req;
        let requested = match msg.get::<Lifetime>() {
            Ok(v) => v,
            Err(_) => return Err(a.refuse(code::BAD_REQUEST)),
        };
        if let Ok(Some(f)) = msg.get::<RequestedAddressFamily>() {
            if self.relay_family(a)? != f {
                return Err(a.refuse(code::PEER_ADDRESS_FAMILY_MISMATCH));
            }
        }
        let lifetime = match requested {
            Some(0) => {
                self.remove(tuple, relays);
                Duration::ZERO
            }
            // RFC 8656 §7.3: min(requested, max), but never below the default.
            Some(secs) => Duration::from_secs(u64::from(secs))
                .clamp(self.cfg.default_lifetime, self.cfg.max_lifetime),
            None => self.cfg.default_lifetime,
        };
        if let Some(alloc) = self.allocations.get_mut(&tuple) {
            alloc.expires = now + lifetime;
        }
        let mut w = MessageWriter::success_response(out, &msg);
        let ok = w.add::<Lifetime>(lifetime.as_secs() as u32).is_ok();
        Ok(ok && self.finish(w, &msg, Some(a.signer)))
    }

    /// The address family of the requester's relayed address, which every
    /// peer it names must share; 437 without an allocation.
    fn relay_family(&self, a: &Authed<'_>) -> Result<AddressFamily, Refusal> {
        self.allocations
            .get(&a.req.tuple)
            .map(|alloc| AddressFamily::of(&alloc.relay_addr.ip()))
            .ok_or(a.refuse(code::ALLOCATION_MISMATCH))
    }

    /// Checks a peer address against the relay's family and the policy.
    ///
    /// The policy goes first, so a forbidden address is a 403 however it is
    /// spelled (`::ffff:127.0.0.1` on an IPv4 relay is refused, not merely
    /// a family mismatch).
    fn vet_peer(
        &mut self,
        relay_family: AddressFamily,
        peer: SocketAddr,
        a: &Authed<'_>,
    ) -> Result<(), Refusal> {
        if self.policy.check(peer.ip()).is_err() {
            self.stats.denied_peers += 1;
            return Err(a.refuse(code::FORBIDDEN));
        }
        if AddressFamily::of(&peer.ip()) != relay_family {
            return Err(a.refuse(code::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        Ok(())
    }

    fn create_permission(&mut self, a: &Authed<'_>, out: &mut Vec<u8>) -> Result<bool, Refusal> {
        let msg = a.req.msg;
        let family = self.relay_family(a)?;
        // Every peer is vetted, and the permission limit checked, before
        // any permission is installed, so a refused request changes nothing.
        let mut peers = 0usize;
        for peer in msg.get_all::<XorPeerAddress>() {
            let peer = peer.map_err(|_| a.refuse(code::BAD_REQUEST))?;
            self.vet_peer(family, peer, a)?;
            peers += 1;
        }
        if peers == 0 {
            return Err(a.refuse(code::BAD_REQUEST));
        }
        let until = a.req.now + self.cfg.permission_lifetime;
        let max = self.cfg.max_permissions;
        let alloc = self
            .allocations
            .get_mut(&a.req.tuple)
            .ok_or(a.refuse(code::ALLOCATION_MISMATCH))?;
        // Every peer decoded above.
        let ips = || msg.get_all::<XorPeerAddress>().flatten().map(|p| p.ip());
        if !alloc.grant_all(ips, until, max) {
            return Err(a.refuse(code::INSUFFICIENT_CAPACITY));
        }
        let w = MessageWriter::success_response(out, &msg);
        Ok(self.finish(w, &msg, Some(a.signer)))
    }

    fn channel_bind(&mut self, a: &Authed<'_>, out: &mut Vec<u8>) -> Result<bool, Refusal> {
        let msg = a.req.msg;
        // Out-of-range channel numbers fail to decode: 400.
        let (Ok(Some(number)), Ok(Some(peer))) =
            (msg.get::<ChannelNumber>(), msg.get::<XorPeerAddress>())
        else {
            return Err(a.refuse(code::BAD_REQUEST));
        };
        let family = self.relay_family(a)?;
        self.vet_peer(family, peer, a)?;
        let until_channel = a.req.now + self.cfg.channel_lifetime;
        let until_perm = a.req.now + self.cfg.permission_lifetime;
        let max = self.cfg.max_permissions;
        let alloc = self
            .allocations
            .get_mut(&a.req.tuple)
            .ok_or(a.refuse(code::ALLOCATION_MISMATCH))?;
        let clash = alloc
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if clash {
            return Err(a.refuse(code::BAD_REQUEST));
        }
        if !alloc.grant_all(|| std::iter::once(peer.ip()), until_perm, max) {
            return Err(a.refuse(code::INSUFFICIENT_CAPACITY));
        }
        match alloc.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => c.expires = until_channel,
            None => alloc.channels.push(Channel {
                number,
                peer,
                expires: until_channel,
            }),
        }
        let w = MessageWriter::success_response(out, &msg);
        Ok(self.finish(w, &msg, Some(a.signer)))
    }

    /// Writes an error response. 401 and 438 carry REALM and a fresh NONCE.
    fn refuse(&mut self, out: &mut Vec<u8>, req: &Request<'_>, r: Refusal) -> bool {
        out.clear();
        let err = ErrorCodeValue::standard(r.code);
        let mut w = match MessageWriter::error_response(out, &req.msg, err) {
            Ok(w) => w,
            Err(_) => return false,
        };
        if r.code == code::UNAUTHORIZED || r.code == code::STALE_NONCE {
            let nonce = self.make_nonce(req.unix, req.tuple.client.ip());
            let Ok(nonce) = std::str::from_utf8(&nonce) else {
                return false;
            };
            if w.add::<Realm>(self.creds.realm()).is_err() || w.add::<Nonce>(nonce).is_err() {
                return false;
            }
        }
        self.finish(w, &req.msg, r.signer)
    }

    /// Adds SOFTWARE (if configured), integrity (when authenticated, with
    /// the algorithm the request used) and FINGERPRINT (when the request had
    /// one).
    fn finish(&self, mut w: MessageWriter<'_>, msg: &Message<'_>, signer: Option<Signer>) -> bool {
        if let Some(s) = &self.cfg.software {
            if w.add::<Software>(s).is_err() {
                return false;
            }
        }
        if let Some(Signer { key, alg }) = signer {
            let signed = match alg {
                IntegrityAlg::Sha256 => w.add_message_integrity_sha256(&key).is_ok(),
                IntegrityAlg::Sha1 => w.add_message_integrity(&key).is_ok(),
            };
            if !signed {
                return false;
            }
        }
        if msg.has_fingerprint() && w.add_fingerprint().is_err() {
            return false;
        }
        w.finish();
        true
    }

    /// A nonce is `EXPIRY(16 hex) MAC(16 hex)`: stateless, bound to the
    /// client's IP, and checkable for staleness without a table.
    fn make_nonce(&self, unix: u64, ip: IpAddr) -> [u8; NONCE_LEN] {
        let expiry = unix.saturating_add(self.cfg.nonce_lifetime.as_secs());
        let mac = self.nonce_mac(expiry, ip);
        let mut out = [0u8; NONCE_LEN];
        hex_into(&expiry.to_be_bytes(), &mut out[..16]);
        hex_into(&mac, &mut out[16..]);
        out
    }

    fn nonce_valid(&self, nonce: &str, unix: u64, ip: IpAddr) -> bool {
        let b = nonce.as_bytes();
        if b.len() != NONCE_LEN {
            return false;
        }
        let Some(expiry) = std::str::from_utf8(&b[..16])
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        else {
            return false;
        };
        if expiry <= unix {
            return false;
        }
        let mut expect = [0u8; 16];
        hex_into(&self.nonce_mac(expiry, ip), &mut expect);
        // Constant-time comparison.
        expect
            .iter()
            .zip(&b[16..])
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    fn nonce_mac(&self, expiry: u64, ip: IpAddr) -> [u8; 8] {
        let mut mac =
            <Hmac<Sha1> as KeyInit>::new_from_slice(&self.nonce_secret).expect("any key length");
        mac.update(&expiry.to_be_bytes());
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
}
