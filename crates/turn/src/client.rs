//! A sans-IO TURN client (RFC 8656, client side) for one allocation on one
//! TURN server.
//!
//! [`Client`] owns the protocol state of that allocation: the long-term
//! credential dance (401 → REALM/NONCE → signed retry, 438 → fresh nonce),
//! outstanding transactions and their retransmissions (RFC 8489 §6.2.1:
//! RTO 500 ms doubling, Rc = 7, Rm = 16; over TCP one send and Ti = 39.5 s),
//! the relayed address and its refresh, permissions and channel bindings and
//! their refreshes, and the framing of application data (Send indications
//! or ChannelData) in both directions.
//!
//! It owns no socket, clock, task or runtime. The driver:
//! - calls [`Client::handle_input`] with every datagram (UDP) or every whole
//!   frame (TCP; split the stream with [`stun::Framer`]) from the server;
//!   relayed application data comes back as the return value, borrowed from
//!   the input, so the receive path does not allocate;
//! - sends whatever [`Client::poll_transmit`] hands out to the server;
//! - takes control events from [`Client::poll_event`];
//! - calls [`Client::handle_timeout`] once [`Client::poll_timeout`] is due.
//!
//! Every method that may start a transaction takes `now`, so the client is
//! deterministic: give it a fake clock and a fixed [`Config::seed`] and it
//! does the same thing every time.
//!
//! **Transmit buffer.** Outgoing packets are appended to one internal
//! `Vec<u8>` queue whose capacity is kept once it has been drained;
//! [`Client::poll_transmit`] lends out slices of it. So [`Client::send_to`]
//! frames the payload straight into reused memory: no per-packet heap
//! allocation in steady state, one copy of the payload. Requests (control
//! traffic, a few per minute) also keep an owned copy for retransmission.
//!
//! **Not handled** (yet): REQUESTED-ADDRESS-FAMILY / dual-stack allocations,
//! EVEN-PORT and reservation tokens, DONT-FRAGMENT, the RFC 8489 nonce
//! cookie with PASSWORD-ALGORITHMS (SHA-256 keys), 300 Try Alternate, ICMP
//! attributes, and TCP relaying (RFC 6062).

use crate::auth::rest_credential;
pub use crate::server::Transport;
use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use stun::attr::{
    ChannelNumber, Data, ErrorCode, Lifetime, Nonce, Realm, RequestedTransport, Software, Username,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress, PROTOCOL_UDP,
};
use stun::channel_data::{MAX_CHANNEL, MIN_CHANNEL};
use stun::{
    code, long_term_key, ChannelData, Class, Key, Message, MessageType, MessageWriter, Method,
    TransactionId,
};

/// Initial retransmission timeout (RFC 8489 §6.2.1).
pub const INITIAL_RTO: Duration = Duration::from_millis(500);
/// Requests sent at most this many times over UDP (Rc).
pub const RC: u32 = 7;
/// After the last send, wait this many initial RTOs for an answer (Rm).
pub const RM: u32 = 16;
/// Transaction timeout over reliable transports (Ti, RFC 8489 §6.2.2).
pub const TI: Duration = Duration::from_millis(39_500);
/// Permissions last 300 s on the server (RFC 8656 §9); refresh well before.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channels last 600 s on the server (RFC 8656 §12); refresh well before.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// Assumed when a success response carries no LIFETIME (RFC 8656 default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// 401/438 rounds per operation before giving up, so a confused server
/// cannot keep us looping.
const MAX_AUTH_RETRIES: u8 = 3;
/// Bytes that may wait in the transmit queue before [`Client::send_to`]
/// refuses more: a driver that stops draining should see errors, not
/// unbounded memory growth.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;

/// How to reach the TURN server and who we are.
#[derive(Clone)]
pub struct Config {
    /// The server's address; copied into every [`Transmit`].
    pub server: SocketAddr,
    /// UDP (retransmissions, unpadded ChannelData) or TCP (no
    /// retransmissions, padded ChannelData).
    pub transport: Transport,
    /// Long-term credential.
    pub username: String,
    /// Long-term credential.
    pub password: String,
    /// LIFETIME to ask for in Allocate and Refresh; `None` takes the
    /// server's default.
    pub lifetime: Option<Duration>,
    /// SOFTWARE attribute on requests; `None` sends none.
    pub software: Option<String>,
    /// Seeds transaction ids. Production callers should pass random bits
    /// (RFC 8489 wants unguessable ids); tests pass a constant.
    pub seed: u64,
    /// First retransmission timeout over UDP; doubles on each resend.
    pub initial_rto: Duration,
}

impl Config {
    /// A config with the defaults: server lifetime, no SOFTWARE, seed 0,
    /// RTO 500 ms.
    pub fn new(
        server: SocketAddr,
        transport: Transport,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Config {
            server,
            transport,
            username: username.into(),
            password: password.into(),
            lifetime: None,
            software: None,
            seed: 0,
            initial_rto: INITIAL_RTO,
        }
    }

    /// A config with a time-limited "TURN REST API" credential minted from
    /// the server's shared secret (what the signaling server hands browsers).
    pub fn with_secret(
        server: SocketAddr,
        transport: Transport,
        secret: &[u8],
        id: &str,
        ttl_secs: u64,
        now_unix: u64,
    ) -> Self {
        let (user, pass) = rest_credential(secret, id, ttl_secs, now_unix);
        Config::new(server, transport, user, pass)
    }
}

impl fmt::Debug for Config {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("lifetime", &self.lifetime)
            .field("software", &self.software)
            .field("seed", &self.seed)
            .field("initial_rto", &self.initial_rto)
            .finish_non_exhaustive()
    }
}

/// Where the allocation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing requested yet.
    Idle,
    /// Allocate sent, no answer yet.
    Allocating,
    /// The relayed address is ours.
    Allocated,
    /// Refresh with LIFETIME 0 sent.
    Closing,
    /// Released (or given up on after [`Client::close`]).
    Closed,
    /// The allocation could not be made or was lost; see the
    /// [`Event::Failed`] that said why. [`Client::allocate`] may try again.
    Failed,
}

/// The operation an [`Event::Failed`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The Allocate request that creates the allocation.
    Allocate,
    /// A refresh of the allocation (also: the allocation expired).
    Refresh,
    /// Creating or refreshing the permission for `peer`.
    CreatePermission {
        /// The peer's IP; permissions ignore ports (RFC 8656 §9).
        peer: IpAddr,
    },
    /// Binding or refreshing `channel` to `peer`.
    ChannelBind {
        /// The peer's transport address.
        peer: SocketAddr,
        /// The channel number, 0x4000..=0x4FFF.
        channel: u16,
    },
    /// Refresh with LIFETIME 0.
    Close,
}

impl Op {
    fn method(self) -> Method {
        match self {
            Op::Allocate => Method::ALLOCATE,
            Op::Refresh | Op::Close => Method::REFRESH,
            Op::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Op::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

/// Control events, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The allocation exists. `mapped` is our address as the server sees it
    /// (a server-reflexive candidate), when the server said.
    Allocated {
        /// XOR-RELAYED-ADDRESS: where peers reach us through the server;
        /// the relay candidate.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS, if the response had one.
        mapped: Option<SocketAddr>,
        /// The LIFETIME the server granted (or [`Config::lifetime`], else
        /// 600 s, if it sent none). The client counts it from the first
        /// send of the Allocate and refreshes at 80% of it.
        lifetime: Duration,
    },
    /// A new permission is installed. Refreshes are silent.
    PermissionCreated {
        /// The peer IP now allowed to send to the relayed address.
        peer: IpAddr,
    },
    /// A new channel is bound; [`Client::send_to`] now uses ChannelData for
    /// `peer`. Refreshes are silent.
    ChannelBound {
        /// The peer's transport address.
        peer: SocketAddr,
        /// The channel number, as [`Client::bind_channel`] returned it.
        channel: u16,
    },
    /// The allocation was refreshed for `lifetime`.
    Refreshed {
        /// The LIFETIME the server granted, counted like
        /// [`Event::Allocated`]'s.
        lifetime: Duration,
    },
    /// An operation failed. `code` is the STUN error code the server sent,
    /// `None` for a timeout or a malformed answer. A failed Allocate or
    /// Refresh leaves the client in [`State::Failed`]; a failed permission
    /// or channel is forgotten.
    Failed {
        /// What failed.
        op: Op,
        /// The server's ERROR-CODE (such as 486 or 508); `None` when no
        /// error response came: a timeout, a malformed answer, or a request
        /// that could not be encoded.
        code: Option<u16>,
        /// The server's reason phrase, or our own account of a timeout or
        /// bad response; for logs, not for matching.
        reason: String,
    },
    /// The allocation is released (after [`Client::close`]).
    Closed,
}

/// Application data relayed from a peer, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerData<'a> {
    /// The peer that sent it: the channel's peer, or the Data indication's
    /// XOR-PEER-ADDRESS.
    pub peer: SocketAddr,
    /// The channel it came on; `None` for a Data indication.
    pub channel: Option<u16>,
    /// The application data, without TURN framing or padding.
    pub payload: &'a [u8],
}

/// Bytes to send to the TURN server. Borrowed from the client's queue
/// until the next call on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Always [`Config::server`].
    pub destination: SocketAddr,
    /// Always [`Config::transport`].
    pub transport: Transport,
    /// One whole STUN or ChannelData message: one datagram over UDP; over
    /// TCP, bytes to write to the stream in order.
    pub data: &'a [u8],
}

/// Why an operation could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing to act on: [`Client::create_permission`],
    /// [`Client::bind_channel`] and [`Client::send_to`] need
    /// [`State::Allocated`], [`Client::close`] an allocation made or being
    /// made.
    #[error("there is no allocation")]
    NotAllocated,
    /// [`Client::allocate`] while allocating, allocated or closing: one
    /// client is one allocation.
    #[error("an allocation exists or is being made")]
    AlreadyAllocated,
    /// [`Client::send_to`] a peer whose IP has no permission or channel,
    /// confirmed or pending; the server would drop the data. Call
    /// [`Client::create_permission`] or [`Client::bind_channel`] first.
    #[error("no permission or channel for {0}")]
    NoPermission(IpAddr),
    /// The payload (this many bytes) exceeds what a ChannelData or STUN
    /// message can carry (a 16-bit length, so about 64 KiB); nothing was
    /// queued.
    #[error("payload of {0} bytes does not fit in one TURN message")]
    TooLarge(usize),
    /// All 4096 channel numbers are bound or being bound on this
    /// allocation.
    #[error("every channel number is in use")]
    NoChannel,
    /// [`MAX_QUEUED_BYTES`] would be waiting in the transmit queue; the
    /// payload was not queued.
    #[error("the transmit queue is full; drain poll_transmit")]
    QueueFull,
}

/// What the client ignored, and a few things it did, for diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Input that is neither STUN nor ChannelData, or does not parse.
    pub malformed: u64,
    /// Responses that match no outstanding transaction.
    pub unmatched: u64,
    /// Responses whose MESSAGE-INTEGRITY or FINGERPRINT did not verify (or
    /// success responses without integrity to an authenticated request).
    pub bad_integrity: u64,
    /// Data from a channel or peer we did not set up.
    pub unknown_peer: u64,
    /// Well-formed STUN we have no use for (requests, other indications).
    pub ignored: u64,
    /// Requests sent again after an RTO.
    pub retransmits: u64,
    /// 438 answers we recovered from with a fresh nonce.
    pub stale_nonces: u64,
    /// Application packets [`Client::send_to`] queued.
    pub data_sent: u64,
    /// Application packets [`Client::handle_input`] returned.
    pub data_received: u64,
}

struct Allocation {
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    expires: Instant,
    /// `None` while a refresh is in flight.
    refresh_at: Option<Instant>,
}

struct Permission {
    ip: IpAddr,
    installed: bool,
    /// `None` while a request is in flight.
    refresh_at: Option<Instant>,
}

struct Channel {
    number: u16,
    peer: SocketAddr,
    bound: bool,
    /// `None` while a request is in flight.
    refresh_at: Option<Instant>,
}

struct Transaction {
    tid: TransactionId,
    op: Op,
    /// The request as sent; resent byte for byte.
    request: Vec<u8>,
    /// The key the request was signed with; `None` if unsigned.
    key: Option<Key>,
    first_sent: Instant,
    /// Next resend, or the deadline after the last one.
    next_at: Instant,
    /// Wait after the current send; doubles per resend.
    rto: Duration,
    sends: u32,
    auth_retries: u8,
}

/// The transmit queue: frames back to back in one reused buffer.
#[derive(Default)]
struct TxQueue {
    buf: Vec<u8>,
    frames: VecDeque<(usize, usize)>,
}

impl TxQueue {
    /// Where the next frame starts. Reuses the buffer from the start once
    /// everything queued has been handed out.
    fn begin(&mut self) -> usize {
        match self.frames.front() {
            None => self.buf.clear(),
            // Slide unsent frames down when the sent prefix dominates, so a
            // driver that never fully drains does not grow the buffer forever.
            Some(&(head, _)) if head >= 64 * 1024 && head * 2 >= self.buf.len() => {
                self.buf.drain(..head);
                for f in &mut self.frames {
                    f.0 -= head;
                }
            }
            Some(_) => {}
        }
        self.buf.len()
    }

    fn commit(&mut self, start: usize) {
        let len = self.buf.len().saturating_sub(start);
        if len > 0 {
            self.frames.push_back((start, len));
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let start = self.begin();
        self.buf.extend_from_slice(bytes);
        self.commit(start);
    }

    fn queued(&self) -> usize {
        self.frames
            .front()
            .map_or(0, |&(head, _)| self.buf.len() - head)
    }

    fn pop(&mut self) -> Option<&[u8]> {
        let (start, len) = self.frames.pop_front()?;
        self.buf.get(start..start + len)
    }
}

/// SplitMix64: tiny, seedable, good enough to make transaction ids unique
/// and unpredictable to anyone who does not know the seed.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Refresh at 80% of the granted lifetime: for the usual 600 s that leaves
/// 120 s, enough for a full retransmission cycle (39.5 s) and a retry.
fn refresh_delay(lifetime: Duration) -> Duration {
    (lifetime * 4 / 5).max(Duration::from_secs(1))
}

/// One TURN allocation, driven from outside. See the module docs.
pub struct Client {
    cfg: Config,
    rng: u64,
    state: State,
    alloc: Option<Allocation>,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<Key>,
    txns: Vec<Transaction>,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    next_channel: u16,
    tx: TxQueue,
    events: VecDeque<Event>,
    stats: Stats,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("cfg", &self.cfg)
            .field("state", &self.state)
            .field("relayed", &self.relayed())
            .field("transactions", &self.txns.len())
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client in [`State::Idle`]; nothing is sent before
    /// [`Self::allocate`].
    pub fn new(cfg: Config) -> Self {
        Client {
            rng: cfg.seed,
            cfg,
            state: State::Idle,
            alloc: None,
            realm: None,
            nonce: None,
            key: None,
            txns: Vec::new(),
            permissions: Vec::new(),
            channels: Vec::new(),
            next_channel: MIN_CHANNEL,
            tx: TxQueue::default(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Where the allocation stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters since [`Self::new`].
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The relayed transport address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.alloc
            .as_ref()
            .filter(|_| self.state == State::Allocated)
            .map(|a| a.relayed)
    }

    /// Our address as the TURN server sees it, once allocated.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.alloc
            .as_ref()
            .filter(|_| self.state == State::Allocated)
            .and_then(|a| a.mapped)
    }

    /// The channel bound to `peer`, once the server confirmed it.
    pub fn channel(&self, peer: SocketAddr) -> Option<u16> {
        self.channels
            .iter()
            .find(|c| c.bound && c.peer == peer)
            .map(|c| c.number)
    }

    /// Whether the server confirmed a permission for `ip`.
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        self.permissions.iter().any(|p| p.installed && p.ip == ip)
    }

    /// Requests an allocation (UDP relaying). Answers come as
    /// [`Event::Allocated`] or [`Event::Failed`].
    pub fn allocate(&mut self, now: Instant) -> Result<(), Error> {
        match self.state {
            State::Allocating | State::Allocated | State::Closing => {
                return Err(Error::AlreadyAllocated)
            }
            State::Idle | State::Closed | State::Failed => {}
        }
        self.state = State::Allocating;
        self.start(now, Op::Allocate, 0);
        Ok(())
    }

    /// Asks the server to let `peer` send to our relayed address (and us to
    /// it). Kept fresh until [`Self::close`]. A no-op if the permission
    /// exists or is being created.
    pub fn create_permission(&mut self, now: Instant, peer: IpAddr) -> Result<(), Error> {
        if self.state != State::Allocated {
            return Err(Error::NotAllocated);
        }
        if self.permissions.iter().any(|p| p.ip == peer) {
            return Ok(());
        }
        self.permissions.push(Permission {
            ip: peer,
            installed: false,
            refresh_at: None,
        });
        self.start(now, Op::CreatePermission { peer }, 0);
        Ok(())
    }

    /// Binds a channel to `peer` (which also installs a permission for its
    /// IP) and returns the channel number. Until [`Event::ChannelBound`],
    /// [`Self::send_to`] keeps using Send indications. Idempotent.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, Error> {
        if self.state != State::Allocated {
            return Err(Error::NotAllocated);
        }
        if let Some(c) = self.channels.iter().find(|c| c.peer == peer) {
            return Ok(c.number);
        }
        let number = self.free_channel().ok_or(Error::NoChannel)?;
        self.channels.push(Channel {
            number,
            peer,
            bound: false,
            refresh_at: None,
        });
        self.start(
            now,
            Op::ChannelBind {
                peer,
                channel: number,
            },
            0,
        );
        Ok(number)
    }

    /// Queues `payload` for `peer`: as ChannelData if a channel is bound,
    /// else as a Send indication (which needs a permission or a pending
    /// channel for the peer's IP). Frames straight into the transmit
    /// queue's reused buffer; see the module docs.
    pub fn send_to(&mut self, peer: SocketAddr, payload: &[u8]) -> Result<(), Error> {
        if self.state != State::Allocated {
            return Err(Error::NotAllocated);
        }
        if self.tx.queued().saturating_add(payload.len()) > MAX_QUEUED_BYTES {
            return Err(Error::QueueFull);
        }
        if let Some(number) = self.channel(peer) {
            let cd =
                ChannelData::new(number, payload).map_err(|_| Error::TooLarge(payload.len()))?;
            let start = self.tx.begin();
            // TCP receivers find the next frame by the padding (RFC 8656 §12.5).
            cd.encode(&mut self.tx.buf, self.cfg.transport == Transport::Tcp);
            self.tx.commit(start);
            self.stats.data_sent += 1;
            return Ok(());
        }
        let ip = peer.ip();
        if !self.permissions.iter().any(|p| p.ip == ip)
            && !self.channels.iter().any(|c| c.peer.ip() == ip)
        {
            return Err(Error::NoPermission(ip));
        }
        let tid = self.next_tid();
        let start = self.tx.begin();
        let mut w =
            MessageWriter::new(&mut self.tx.buf, MessageType::indication(Method::SEND), tid);
        let ok = w.add::<XorPeerAddress>(peer).is_ok() && w.add::<Data>(payload).is_ok();
        if !ok {
            self.tx.buf.truncate(start);
            return Err(Error::TooLarge(payload.len()));
        }
        w.finish();
        self.tx.commit(start);
        self.stats.data_sent += 1;
        Ok(())
    }

    /// Releases the allocation (Refresh with LIFETIME 0). Ends with
    /// [`Event::Closed`], preceded by [`Event::Failed`] if the server never
    /// confirmed.
    pub fn close(&mut self, now: Instant) -> Result<(), Error> {
        match self.state {
            State::Allocated | State::Allocating => {}
            State::Closing => return Ok(()),
            State::Idle | State::Closed | State::Failed => return Err(Error::NotAllocated),
        }
        let was_allocating = self.state == State::Allocating;
        self.txns.clear();
        self.permissions.clear();
        self.channels.clear();
        if was_allocating && self.key.is_none() {
            // No Allocate could have succeeded without credentials.
            self.finish_close();
            return Ok(());
        }
        // An Allocate in flight may have succeeded on the server: release
        // it too (a 437 answer means there was nothing to release).
        self.state = State::Closing;
        self.start(now, Op::Close, 0);
        Ok(())
    }

    /// Feeds one datagram (UDP) or one whole frame (TCP) from the server.
    /// Returns relayed application data, borrowed from `packet`; control
    /// results go to [`Self::poll_event`]. Anything unexpected is counted
    /// in [`Self::stats`] and otherwise ignored.
    pub fn handle_input<'a>(&mut self, now: Instant, packet: &'a [u8]) -> Option<PeerData<'a>> {
        match packet.first() {
            Some(0x40..=0x4F) => return self.channel_data(packet),
            Some(0x00..=0x03) => {}
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        }
        let Ok(msg) = Message::parse(packet) else {
            self.stats.malformed += 1;
            return None;
        };
        match msg.class() {
            Class::Indication if msg.method() == Method::DATA => self.data_indication(&msg),
            Class::SuccessResponse | Class::ErrorResponse => {
                self.response(now, &msg);
                None
            }
            _ => {
                self.stats.ignored += 1;
                None
            }
        }
    }

    /// The next packet to send to the server.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        let destination = self.cfg.server;
        let transport = self.cfg.transport;
        self.tx.pop().map(|data| Transmit {
            destination,
            transport,
            data,
        })
    }

    /// The oldest control event not yet taken. Drain after each call that
    /// takes `now` or input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let txns = self.txns.iter().map(|t| Some(t.next_at));
        let alloc = self
            .alloc
            .iter()
            .filter(|_| self.state == State::Allocated)
            .flat_map(|a| [Some(a.expires), a.refresh_at]);
        let perms = self.permissions.iter().map(|p| p.refresh_at);
        let chans = self.channels.iter().map(|c| c.refresh_at);
        txns.chain(alloc).chain(perms).chain(chans).flatten().min()
    }

    /// Resends requests, gives up on silent ones, and starts refreshes that
    /// are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let max_sends = match self.cfg.transport {
            Transport::Udp => RC,
            Transport::Tcp => 1,
        };
        let mut i = 0;
        while i < self.txns.len() {
            let Some(t) = self.txns.get_mut(i) else { break };
            if t.next_at > now {
                i += 1;
                continue;
            }
            if t.sends < max_sends {
                t.sends += 1;
                t.rto = t.rto.saturating_mul(2);
                t.next_at = now
                    + if t.sends < max_sends {
                        t.rto
                    } else {
                        self.cfg.initial_rto * RM
                    };
                self.tx.push(&t.request);
                self.stats.retransmits += 1;
                i += 1;
            } else {
                // swap_remove moves an unvisited entry into `i`; any
                // transaction started by the failure handler is not yet due.
                let t = self.txns.swap_remove(i);
                let reason = format!("no response after {} send(s)", t.sends);
                self.fail(now, t, None, reason);
            }
        }

        if self.state == State::Allocated {
            if let Some(a) = &mut self.alloc {
                if a.expires <= now {
                    self.lose_allocation(
                        Op::Refresh,
                        None,
                        "allocation expired before a refresh succeeded".into(),
                    );
                    return;
                }
                if a.refresh_at.is_some_and(|r| r <= now) {
                    a.refresh_at = None;
                    self.start(now, Op::Refresh, 0);
                }
            }
        }

        let due: Vec<IpAddr> = self
            .permissions
            .iter_mut()
            .filter(|p| p.refresh_at.is_some_and(|r| r <= now))
            .map(|p| {
                p.refresh_at = None;
                p.ip
            })
            .collect();
        for peer in due {
            self.start(now, Op::CreatePermission { peer }, 0);
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter_mut()
            .filter(|c| c.refresh_at.is_some_and(|r| r <= now))
            .map(|c| {
                c.refresh_at = None;
                (c.peer, c.number)
            })
            .collect();
        for (peer, channel) in due {
            self.start(now, Op::ChannelBind { peer, channel }, 0);
        }
    }

    // ---- internals ---------------------------------------------------------

    fn next_tid(&mut self) -> TransactionId {
        let a = splitmix(&mut self.rng).to_be_bytes();
        let b = splitmix(&mut self.rng).to_be_bytes();
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&a);
        tid[8..].copy_from_slice(&b[..4]);
        TransactionId(tid)
    }

    fn free_channel(&mut self) -> Option<u16> {
        for _ in MIN_CHANNEL..=MAX_CHANNEL {
            let n = self.next_channel;
            self.next_channel = if n >= MAX_CHANNEL { MIN_CHANNEL } else { n + 1 };
            if !self.channels.iter().any(|c| c.number == n) {
                return Some(n);
            }
        }
        None
    }

    /// Encodes and sends a new request for `op` and tracks it.
    fn start(&mut self, now: Instant, op: Op, auth_retries: u8) {
        let tid = self.next_tid();
        let mut request = Vec::with_capacity(160);
        let key = match (&self.realm, &self.nonce) {
            (Some(_), Some(_)) => self.key,
            _ => None,
        };
        if let Err(e) = self.encode_request(&mut request, tid, op, key) {
            let reason = format!("cannot encode the request: {e}");
            if op == Op::Refresh {
                // Not a timeout: retrying would fail the same way.
                self.lose_allocation(op, None, reason);
                return;
            }
            let t = Transaction {
                tid,
                op,
                request,
                key,
                first_sent: now,
                next_at: now,
                rto: self.cfg.initial_rto,
                sends: 0,
                auth_retries,
            };
            self.fail(now, t, None, reason);
            return;
        }
        self.tx.push(&request);
        let rto = self.cfg.initial_rto;
        let first_wait = match self.cfg.transport {
            Transport::Udp => rto,
            Transport::Tcp => TI,
        };
        self.txns.push(Transaction {
            tid,
            op,
            request,
            key,
            first_sent: now,
            next_at: now + first_wait,
            rto,
            sends: 1,
            auth_retries,
        });
    }

    fn encode_request(
        &self,
        out: &mut Vec<u8>,
        tid: TransactionId,
        op: Op,
        key: Option<Key>,
    ) -> Result<(), stun::Error> {
        let mut w = MessageWriter::new(out, MessageType::request(op.method()), tid);
        let lifetime = self
            .cfg
            .lifetime
            .map(|l| u32::try_from(l.as_secs()).unwrap_or(u32::MAX));
        match op {
            Op::Allocate => {
                w.add::<RequestedTransport>(PROTOCOL_UDP)?;
                if let Some(l) = lifetime {
                    w.add::<Lifetime>(l)?;
                }
            }
            Op::Refresh => {
                if let Some(l) = lifetime {
                    w.add::<Lifetime>(l)?;
                }
            }
            Op::Close => {
                w.add::<Lifetime>(0)?;
            }
            Op::CreatePermission { peer } => {
                w.add::<XorPeerAddress>(SocketAddr::new(peer, 0))?;
            }
            Op::ChannelBind { peer, channel } => {
                w.add::<ChannelNumber>(channel)?;
                w.add::<XorPeerAddress>(peer)?;
            }
        }
        if let Some(s) = &self.cfg.software {
            w.add::<Software>(s)?;
        }
        if let (Some(key), Some(realm), Some(nonce)) = (key, &self.realm, &self.nonce) {
            w.add::<Username>(&self.cfg.username)?;
            w.add::<Realm>(realm)?;
            w.add::<Nonce>(nonce)?;
            w.add_message_integrity(&key)?;
        }
        // Lets the server (and any demultiplexer on the path) tell our
        // STUN from other traffic; cheap for small control messages.
        w.add_fingerprint()?;
        w.finish();
        Ok(())
    }

    fn channel_data<'a>(&mut self, packet: &'a [u8]) -> Option<PeerData<'a>> {
        let Ok(cd) = ChannelData::parse(packet) else {
            self.stats.malformed += 1;
            return None;
        };
        let Some(c) = self.channels.iter().find(|c| c.number == cd.channel()) else {
            self.stats.unknown_peer += 1;
            return None;
        };
        self.stats.data_received += 1;
        Some(PeerData {
            peer: c.peer,
            channel: Some(c.number),
            payload: cd.data(),
        })
    }

    fn data_indication<'a>(&mut self, msg: &Message<'a>) -> Option<PeerData<'a>> {
        let (Ok(Some(peer)), Ok(Some(payload))) = (msg.get::<XorPeerAddress>(), msg.get::<Data>())
        else {
            self.stats.malformed += 1;
            return None;
        };
        // Indications are unauthenticated: only take data from peers we
        // opened the relay to, as the server should have enforced.
        let ip = peer.ip();
        if !self.permissions.iter().any(|p| p.ip == ip)
            && !self.channels.iter().any(|c| c.peer.ip() == ip)
        {
            self.stats.unknown_peer += 1;
            return None;
        }
        self.stats.data_received += 1;
        Some(PeerData {
            peer,
            channel: None,
            payload,
        })
    }

    fn response(&mut self, now: Instant, msg: &Message<'_>) {
        let tid = msg.transaction_id();
        let Some(i) = self
            .txns
            .iter()
            .position(|t| t.tid == tid && t.op.method() == msg.method())
        else {
            self.stats.unmatched += 1;
            return;
        };
        if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            self.stats.bad_integrity += 1;
            return;
        }
        let key = self.txns.get(i).and_then(|t| t.key);
        if msg.class() == Class::SuccessResponse {
            // A success to a signed request must be signed with our key;
            // anything else could come from anyone who saw the request.
            if let Some(key) = key {
                if msg.verify_integrity(&key).is_err() {
                    self.stats.bad_integrity += 1;
                    return;
                }
            }
            let t = self.txns.swap_remove(i);
            self.succeed(now, t, msg);
            return;
        }
        let Ok(Some(err)) = msg.get::<ErrorCode>() else {
            self.stats.malformed += 1;
            return;
        };
        // 401/438 cannot be signed with a key we do not share yet; other
        // errors to signed requests are, by servers that care. A signature
        // that is present must verify.
        if let Some(key) = key {
            if msg.has_integrity() && msg.verify_integrity(&key).is_err() {
                self.stats.bad_integrity += 1;
                return;
            }
        }
        let t = self.txns.swap_remove(i);
        let code = err.code;
        let reason = err.reason.to_string();
        let realm = msg.get::<Realm>().ok().flatten();
        let nonce = msg.get::<Nonce>().ok().flatten();
        match (code, realm, nonce) {
            // First contact, or the realm changed: now we know how to sign.
            (code::UNAUTHORIZED, Some(realm), Some(nonce))
                if t.auth_retries < MAX_AUTH_RETRIES
                    && (t.key.is_none() || self.realm.as_deref() != Some(realm)) =>
            {
                self.take_realm(realm);
                self.nonce = Some(nonce.to_string());
                self.start(now, t.op, t.auth_retries + 1);
            }
            (code::STALE_NONCE, realm, Some(nonce)) if t.auth_retries < MAX_AUTH_RETRIES => {
                if let Some(realm) = realm {
                    self.take_realm(realm);
                }
                self.nonce = Some(nonce.to_string());
                self.stats.stale_nonces += 1;
                self.start(now, t.op, t.auth_retries + 1);
            }
            // Nothing left to release.
            (code::ALLOCATION_MISMATCH, _, _) if t.op == Op::Close => self.finish_close(),
            _ => self.fail(now, t, Some(code), reason),
        }
    }

    fn take_realm(&mut self, realm: &str) {
        if self.realm.as_deref() != Some(realm) || self.key.is_none() {
            self.key = Some(long_term_key(&self.cfg.username, realm, &self.cfg.password));
            self.realm = Some(realm.to_string());
        }
    }

    fn succeed(&mut self, now: Instant, t: Transaction, msg: &Message<'_>) {
        // Timers count from the first send: the server acted on the request
        // no earlier than that, so we never think anything lives longer than
        // it does.
        let sent = t.first_sent;
        let lifetime = match msg.get::<Lifetime>() {
            Ok(Some(s)) => Duration::from_secs(u64::from(s)),
            _ => self.cfg.lifetime.unwrap_or(DEFAULT_LIFETIME),
        };
        match t.op {
            Op::Allocate => {
                let Ok(Some(relayed)) = msg.get::<XorRelayedAddress>() else {
                    self.fail(
                        now,
                        t,
                        None,
                        "Allocate success without XOR-RELAYED-ADDRESS".into(),
                    );
                    return;
                };
                let mapped = msg.get::<XorMappedAddress>().ok().flatten();
                self.alloc = Some(Allocation {
                    relayed,
                    mapped,
                    expires: sent + lifetime,
                    refresh_at: Some(sent + refresh_delay(lifetime)),
                });
                self.state = State::Allocated;
                self.events.push_back(Event::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            Op::Refresh => {
                if lifetime.is_zero() {
                    self.lose_allocation(
                        Op::Refresh,
                        None,
                        "server refreshed the allocation to 0 s".into(),
                    );
                    return;
                }
                if let Some(a) = &mut self.alloc {
                    a.expires = sent + lifetime;
                    a.refresh_at = Some(sent + refresh_delay(lifetime));
                }
                self.events.push_back(Event::Refreshed { lifetime });
            }
            Op::CreatePermission { peer } => {
                if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == peer) {
                    p.refresh_at = Some(sent + PERMISSION_REFRESH);
                    if !p.installed {
                        p.installed = true;
                        self.events.push_back(Event::PermissionCreated { peer });
                    }
                }
            }
            Op::ChannelBind { peer, channel } => {
                let Some(c) = self.channels.iter_mut().find(|c| c.number == channel) else {
                    return;
                };
                c.refresh_at = Some(sent + CHANNEL_REFRESH);
                let new = !c.bound;
                c.bound = true;
                // The binding installed a permission for the peer's IP, but
                // that one lasts only 300 s: track it like any permission so
                // it is refreshed on its own schedule.
                let ip = peer.ip();
                match self.permissions.iter_mut().find(|p| p.ip == ip) {
                    Some(p) if p.installed => {}
                    Some(p) => {
                        // A CreatePermission is in flight and will set the timer.
                        p.installed = true;
                        self.events.push_back(Event::PermissionCreated { peer: ip });
                    }
                    None => self.permissions.push(Permission {
                        ip,
                        installed: true,
                        refresh_at: Some(sent + PERMISSION_REFRESH),
                    }),
                }
                if new {
                    self.events.push_back(Event::ChannelBound { peer, channel });
                }
            }
            Op::Close => self.finish_close(),
        }
    }

    fn fail(&mut self, now: Instant, t: Transaction, code: Option<u16>, reason: String) {
        match t.op {
            Op::Allocate => {
                self.state = State::Failed;
                self.alloc = None;
                self.events.push_back(Event::Failed {
                    op: t.op,
                    code,
                    reason,
                });
            }
            Op::Refresh => {
                let time_left = self.alloc.as_ref().is_some_and(|a| now < a.expires);
                if code.is_none() && time_left && self.state == State::Allocated {
                    // A lost refresh is not a lost allocation: try again
                    // until it expires (handle_timeout notices that).
                    self.start(now, Op::Refresh, 0);
                    return;
                }
                self.lose_allocation(t.op, code, reason);
            }
            Op::CreatePermission { peer } => {
                self.permissions.retain(|p| p.ip != peer);
                self.events.push_back(Event::Failed {
                    op: t.op,
                    code,
                    reason,
                });
            }
            Op::ChannelBind { channel, .. } => {
                self.channels.retain(|c| c.number != channel);
                self.events.push_back(Event::Failed {
                    op: t.op,
                    code,
                    reason,
                });
            }
            Op::Close => {
                self.events.push_back(Event::Failed {
                    op: t.op,
                    code,
                    reason,
                });
                self.finish_close();
            }
        }
    }

    fn lose_allocation(&mut self, op: Op, code: Option<u16>, reason: String) {
        self.state = State::Failed;
        self.alloc = None;
        self.txns.clear();
        self.permissions.clear();
        self.channels.clear();
        self.events.push_back(Event::Failed { op, code, reason });
    }

    fn finish_close(&mut self) {
        self.state = State::Closed;
        self.alloc = None;
        self.txns.clear();
        self.permissions.clear();
        self.channels.clear();
        self.events.push_back(Event::Closed);
    }
}
