//! The signaling hub: every connection on this node, as a plain state
//! machine.
//!
//! The hub owns the rules of the protocol (`docs/protocol.md`): parsing and
//! validation, the per-connection limits (rate, size, idle time), the frames
//! sent, session tokens, sequence numbers and acks, and when a session
//! detaches, resumes or ends. What must outlive a socket (rooms, members,
//! numbered per-session buffers) lives in a [`Store`](crate::store::Store),
//! reached through [`Output::Store`] ops whose replies come back, in order,
//! through [`Hub::handle_reply`]; messages the store numbers for a session
//! arrive through [`Hub::handle_event`].
//!
//! It does no I/O and reads no clock: the driver feeds it frames, replies,
//! events and the current time, then drains [`Output`]s and carries them out.
//! [`Local`] is that driver loop for the in-memory store.

use crate::auth::RoomAuth;
use crate::protocol::{
    valid_id, ClientMessage, ErrorCode, FrameKind, PeerEntry, ProtocolError, RelayKind,
    ServerMessage,
};
use crate::session::Tokens;
use crate::store::{
    Epoch, Event, MemberInfo, MemoryStore, NodeId, Op, Reply, ResumeRefused, SessionId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rate::TokenBucket;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
/// Where the `iceServers` of a `welcome` come from. Implementations may
/// mint per-peer credentials (TURN REST credentials, say).
pub trait IceServers: Send + Sync + std::fmt::Debug {
    /// A JSON array of RTCIceServer objects for `peer` joining `room`.
    fn for_peer(&self, room: &str, peer: &str) -> Box<RawValue>;
}

/// The same list for everyone.
#[derive(Debug, Clone)]
pub struct StaticIceServers(pub Box<RawValue>);

impl IceServers for StaticIceServers {
    fn for_peer(&self, _room: &str, _peer: &str) -> Box<RawValue> {
        self.0.clone()
    }
}

/// Limits and settings of the hub. Every field maps to a `serve` flag.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Peers one room holds (`--max-room-peers`); a `join` beyond it gets
    /// `room-full`.
    pub max_room_peers: usize,
    /// Largest accepted frame, in bytes (`--max-message-bytes`); a longer one
    /// is dropped with a `too-large` error. The 4× hard cap with close code
    /// 1009 is the WebSocket driver's, not the hub's.
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection.
    pub max_message_rate: f64,
    /// Messages a connection may send at once before the rate applies.
    pub message_burst: u32,
    /// Rate-dropped messages in a row before the connection is closed.
    pub rate_limit_strikes: u32,
    /// Silence after which [`Hub::handle_timeout`] closes a connection with
    /// 1008 `idle timeout` (`--idle-timeout`). Any frame counts as life,
    /// including WebSocket ping/pong reported via [`Hub::handle_activity`].
    pub idle_timeout: Duration,
    /// Time a connection may stay open without being in a room: from its
    /// start, or from its `leave`, to a `join` or `resume` that succeeds
    /// (`--join-timeout`). Pings and refused joins do not count, so a
    /// socket that never joins cannot hold one of `max_connections` (or a
    /// file descriptor) for longer; it is closed with 1008 `join timeout`.
    pub join_timeout: Duration,
    /// Open connections at once (`--max-connections`); [`Hub::connect`]
    /// refuses more.
    pub max_connections: usize,
    /// The `iceServers` handed out in `welcome`.
    pub ice_servers: Arc<dyn IceServers>,
    /// How long a dropped session is kept for a `resume`
    /// (`--resume-window`); also the lease of an attached one, which its
    /// node keeps extending (so a dead node's sessions end one window after
    /// it died).
    pub resume_window: Duration,
    /// Unacked messages kept per session (`--resume-buffer`).
    pub resume_buffer: usize,
    /// Signs session tokens; every node of a cluster needs the same one.
    pub tokens: Tokens,
    /// Checks room access tokens at `join` (`--auth-secret`); `None`:
    /// anyone may join any room. The time it checks against is the one
    /// given to [`Hub::set_wall_clock`].
    pub auth: Option<RoomAuth>,
    /// This node, for the store's routing.
    pub node: NodeId,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_room_peers: 8,
            max_message_bytes: 64 * 1024,
            max_message_rate: 50.0,
            message_burst: 200,
            rate_limit_strikes: 200,
            idle_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            ice_servers: Arc::new(StaticIceServers(
                RawValue::from_string("[]".to_string()).expect("valid JSON"),
            )),
            resume_window: Duration::from_secs(20),
            resume_buffer: 256,
            tokens: Tokens::new(rand::random::<[u8; 32]>().to_vec()),
            auth: None,
            node: NodeId(rand::random()),
        }
    }
}

/// Identifies one WebSocket connection for the hub's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// WebSocket close codes the hub asks for (RFC 6455 §7.4.1, and one of the
/// 4000-4999 private range).
pub mod close {
    /// 4001, to a socket whose session was resumed on another socket: the
    /// client has moved on and must not reconnect with this one.
    pub const SUPERSEDED: u16 = 4001;
    /// 4002, when the store no longer knows the socket's session (it lost
    /// its state, say an empty Redis restart): the client's resume will
    /// fail and it joins afresh.
    pub const SESSION_LOST: u16 = 4002;
    /// 1011, when the store failed under a numbered signal: the client
    /// resumes (or rejoins) and learns from the store what got through.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// 1001, sent to everyone by [`Hub::shutdown`](super::Hub::shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// 1008, for abuse: rate limit exceeded, idle timeout, send queue full.
    pub const POLICY_VIOLATION: u16 = 1008;
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Output {
    /// Send one text frame. Broadcasts share one serialized `frame`.
    Send {
        /// The connection to send on.
        conn: ConnId,
        /// The JSON text, ready to go out as is.
        frame: Arc<str>,
        /// What the frame is, for the `switchboard_messages_sent_total` and
        /// `_errors_total` metrics, so the driver need not re-parse it.
        kind: FrameKind,
    },
    /// Send a close frame and drop the connection. The hub has already
    /// forgotten the connection.
    Close {
        /// The connection to close; the hub no longer knows it.
        conn: ConnId,
        /// WebSocket close code, one of [`close`].
        code: u16,
        /// Close reason text, e.g. `"idle timeout"` (docs/protocol.md lists
        /// them).
        reason: &'static str,
    },
    /// Run `op` on the store and hand its reply to [`Hub::handle_reply`];
    /// replies must come back in the order the ops were given out.
    Store(Op),
    /// Something to count.
    Note(Note),
}

/// Counted events (metrics), not frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A `signal` reached the store for its target.
    Relayed(RelayKind),
    /// A `resume` succeeded.
    Resumed,
    /// A `resume` was refused.
    ResumeFailed,
    /// The store could not be reached for an op.
    StoreUnavailable,
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`HubConfig::max_connections`] are already open; `serve` answers the
    /// upgrade with HTTP 503.
    TooManyConnections,
}

/// How a connection ended, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// The client said goodbye (a close frame): its session ends.
    Closed,
    /// The socket died (reset, timeout, error): its session is kept for
    /// [`HubConfig::resume_window`].
    Lost,
}

/// What a connection's session does when the hub closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Detach,
    End,
    /// The session is not this socket's any more.
    Nothing,
}

struct Conn {
    state: State,
    /// The `?token=` of the WebSocket URL, for a `join` without `token`.
    url_token: UrlToken,
    /// Client frames that arrived while a join or resume was in flight,
    /// handled in order once it is answered.
    held: VecDeque<Box<str>>,
    bucket: TokenBucket,
    strikes: u32,
    last_seen: Instant,
    /// When the connection last had no room: its start or its `leave`.
    idle_since: Instant,
    last_rate_error: Option<Instant>,
}

/// A connection's `?token=`.
enum UrlToken {
    None,
    Given(Box<str>),
    /// Longer than [`RoomAuth::max_token_bytes`]: only its length is kept,
    /// for the error message.
    TooLong(usize),
}

enum State {
    Idle,
    /// A join or resume of this session is with the store.
    Pending(SessionId),
    Attached(Box<Attached>),
}

/// A session attached to a connection of this node.
struct Attached {
    sid: SessionId,
    epoch: Epoch,
    room: Box<str>,
    peer: Box<str>,
    /// Last server seq written to the socket.
    delivered: u64,
    /// Numbered frames that arrived ahead of `delivered + 1`.
    early: BTreeMap<u64, Arc<str>>,
    fetching: bool,
    /// Highest client seq given to the store.
    submitted: u64,
    /// Highest client seq the store has handled.
    handled: u64,
    /// Highest client seq acked to the client.
    acked: u64,
    /// Relays given to the store and not yet answered.
    in_flight: u32,
    /// Pongs owed once `in_flight` is back to 0.
    pongs: u32,
}

/// What a store reply continues.
enum Wait {
    Join {
        conn: ConnId,
        sid: SessionId,
        room: Box<str>,
        peer: Box<str>,
        token: Box<str>,
        turn: bool,
    },
    Resume {
        conn: ConnId,
        sid: SessionId,
        room: Box<str>,
        peer: Box<str>,
        token: Box<str>,
        last_seen: u64,
        turn: bool,
    },
    Relay {
        conn: ConnId,
        sid: SessionId,
        client_seq: Option<u64>,
        to: Box<str>,
        kind: RelayKind,
    },
    Fetch(SessionId),
    Sweep,
    /// Ack, Detach, End, Refresh: nothing to continue.
    Other,
}

/// Frames held per connection while its join or resume is with the store.
const MAX_HELD: usize = 256;
/// How often the store is asked for sessions due to end.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sans-IO signaling server state of one node.
pub struct Hub {
    cfg: HubConfig,
    conns: HashMap<ConnId, Conn>,
    /// Sessions attached to a connection here.
    sessions: HashMap<SessionId, ConnId>,
    /// Sessions whose join or resume is with the store, by connection.
    pending: HashMap<SessionId, ConnId>,
    /// Deliveries that beat their session's join or resume reply.
    early_pending: HashMap<SessionId, BTreeMap<u64, Arc<str>>>,
    /// Attached peers per room, on this node.
    local_rooms: HashMap<Box<str>, usize>,
    waits: VecDeque<Wait>,
    next_conn: u64,
    rng: StdRng,
    out: VecDeque<Output>,
    next_sweep: Option<Instant>,
    next_refresh: Option<Instant>,
    /// Unix time (seconds) at a monotonic instant, for access tokens.
    wall: Option<(Instant, u64)>,
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const GENERATED_ID_LEN: usize = 12;

impl Hub {
    /// An empty hub; generated ids come from a randomly seeded RNG.
    pub fn new(cfg: HubConfig) -> Self {
        Self::from_rng(cfg, StdRng::from_os_rng())
    }

    /// A hub whose generated ids are reproducible (for tests).
    pub fn with_seed(cfg: HubConfig, seed: u64) -> Self {
        Self::from_rng(cfg, StdRng::seed_from_u64(seed))
    }

    fn from_rng(cfg: HubConfig, rng: StdRng) -> Self {
        Hub {
            cfg,
            conns: HashMap::new(),
            sessions: HashMap::new(),
            pending: HashMap::new(),
            early_pending: HashMap::new(),
            local_rooms: HashMap::new(),
            waits: VecDeque::new(),
            next_conn: 1,
            rng,
            out: VecDeque::new(),
            next_sweep: None,
            next_refresh: None,
            wall: None,
        }
    }

    /// Tells the hub the wall-clock time: `unix` seconds since the Unix
    /// epoch at `now`. Access tokens' `exp` and `nbf` are checked against
    /// it, moved on by the monotonic `now` of each call; the driver calls
    /// this at start and then every tick, so a stepped system clock is
    /// followed within a tick. Until it is called, a server with
    /// [`HubConfig::auth`] refuses every `join`.
    pub fn set_wall_clock(&mut self, now: Instant, unix: u64) {
        self.wall = Some((now, unix));
    }

    fn unix_at(&self, now: Instant) -> Option<u64> {
        self.wall
            .map(|(at, unix)| unix.saturating_add(now.saturating_duration_since(at).as_secs()))
    }

    /// The settings the hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Open connections, joined or not (the `switchboard_connections` gauge).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Rooms with a peer attached on this node.
    pub fn rooms(&self) -> usize {
        self.local_rooms.len()
    }

    /// Peers attached on this node, over all rooms.
    pub fn peers(&self) -> usize {
        self.sessions.len()
    }

    /// Store ops given out and not yet answered.
    pub fn waiting(&self) -> usize {
        self.waits.len()
    }

    /// Admits a new connection, or refuses it when the server is full.
    pub fn connect(&mut self, now: Instant) -> Result<ConnId, Refused> {
        self.connect_with_token(now, None)
    }

    /// [`Hub::connect`] for a WebSocket URL with `?token=`: the connection's
    /// `join`s use it when they carry no `token` of their own.
    pub fn connect_with_token(
        &mut self,
        now: Instant,
        token: Option<&str>,
    ) -> Result<ConnId, Refused> {
        if self.conns.len() >= self.cfg.max_connections {
            return Err(Refused::TooManyConnections);
        }
        let limit = self
            .cfg
            .auth
            .as_ref()
            .map_or(crate::auth::DEFAULT_MAX_TOKEN_BYTES, |a| a.max_token_bytes);
        let url_token = match token {
            None | Some("") => UrlToken::None,
            Some(t) if t.len() > limit => UrlToken::TooLong(t.len()),
            Some(t) => UrlToken::Given(t.into()),
        };
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                state: State::Idle,
                url_token,
                held: VecDeque::new(),
                bucket: TokenBucket::new(self.cfg.message_burst, self.cfg.max_message_rate, now),
                strikes: 0,
                last_seen: now,
                idle_since: now,
                last_rate_error: None,
            },
        );
        Ok(id)
    }

    /// The connection showed life without sending a message (a WebSocket
    /// ping or pong frame).
    pub fn handle_activity(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_seen = now;
        }
    }

    /// A binary frame arrived; the protocol has none.
    pub fn handle_binary(&mut self, conn: ConnId, len: usize, now: Instant) {
        if !self.admit(conn, len, now) {
            return;
        }
        self.error(
            conn,
            ProtocolError::new(
                ErrorCode::BadMessage,
                "binary frames are not part of protocol v1",
            ),
        );
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        if !self.admit(conn, text.len(), now) {
            return;
        }
        let c = self
            .conns
            .get_mut(&conn)
            .expect("admitted connection exists");
        if let State::Pending(_) = c.state {
            if c.held.len() >= MAX_HELD {
                self.error(
                    conn,
                    ProtocolError::new(
                        ErrorCode::RateLimited,
                        format!("more than {MAX_HELD} messages before the join was answered; message dropped"),
                    ),
                );
            } else {
                c.held.push_back(text.into());
            }
            return;
        }
        self.process(conn, text, now);
    }

    /// The connection is gone. Idempotent.
    pub fn disconnect(&mut self, conn: ConnId, how: Gone) {
        let then = match how {
            Gone::Closed => Then::End,
            Gone::Lost => Then::Detach,
        };
        self.forget(conn, then);
    }

    /// Time passed: closes idle connections, sends acks that are due,
    /// and keeps sessions' leases and expiry going. Call it at least once a
    /// second (acks are due within one).
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let join = self.cfg.join_timeout;
        let mut dead: Vec<ConnId> = Vec::new();
        let mut unjoined: Vec<ConnId> = Vec::new();
        let mut acks: Vec<(ConnId, u64)> = Vec::new();
        for (id, c) in &mut self.conns {
            if now.saturating_duration_since(c.last_seen) > idle {
                dead.push(*id);
            } else if matches!(c.state, State::Idle)
                && now.saturating_duration_since(c.idle_since) > join
            {
                unjoined.push(*id);
            } else if let State::Attached(a) = &mut c.state {
                if a.handled > a.acked {
                    a.acked = a.handled;
                    acks.push((*id, a.handled));
                }
            }
        }
        dead.sort();
        acks.sort();
        for conn in dead {
            // A client that went quiet (a sleeping laptop) may come back.
            self.close(conn, close::POLICY_VIOLATION, "idle timeout", Then::Detach);
        }
        unjoined.sort();
        for conn in unjoined {
            // In no room, so there is no session to keep.
            self.close(conn, close::POLICY_VIOLATION, "join timeout", Then::Nothing);
        }
        for (conn, seq) in acks {
            self.send_ack(conn, seq);
        }
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.next_sweep = Some(now + SWEEP_EVERY);
            if !self.waits.iter().any(|w| matches!(w, Wait::Sweep)) {
                self.store(Op::Sweep, Wait::Sweep);
            }
        }
        if self.next_refresh.is_none_or(|t| now >= t) {
            self.next_refresh = Some(now + self.refresh_every());
            let mut sessions: Vec<(SessionId, Epoch)> = self
                .conns
                .values()
                .filter_map(|c| match &c.state {
                    State::Attached(a) => Some((a.sid, a.epoch)),
                    _ => None,
                })
                .collect();
            if !sessions.is_empty() {
                sessions.sort();
                self.store(
                    Op::Refresh {
                        sessions,
                        lease: self.lease(),
                    },
                    Wait::Other,
                );
            }
        }
    }

    /// Closes every connection with "going away"; used at shutdown. The
    /// sessions are detached, so clients can resume elsewhere (or here,
    /// after a restart, if the store outlives the process).
    pub fn shutdown(&mut self) {
        let mut all: Vec<ConnId> = self.conns.keys().copied().collect();
        all.sort();
        for conn in all {
            self.close(
                conn,
                close::GOING_AWAY,
                "server shutting down",
                Then::Detach,
            );
        }
    }

    /// Next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Tells the hub that a connection could not keep up with its output and
    /// is being dropped by the driver. Its session is kept: what it missed
    /// is in the store.
    pub fn drop_slow(&mut self, conn: ConnId) {
        self.close(
            conn,
            close::POLICY_VIOLATION,
            "send queue full",
            Then::Detach,
        );
    }

    /// Messages for this node may have been lost on the way (a shared
    /// store's subscription was re-made): asks the store for whatever each
    /// attached session has not had.
    pub fn resync(&mut self) {
        let mut ask: Vec<(SessionId, u64)> = Vec::new();
        for c in self.conns.values_mut() {
            if let State::Attached(a) = &mut c.state {
                if !a.fetching {
                    a.fetching = true;
                    ask.push((a.sid, a.delivered));
                }
            }
        }
        ask.sort();
        for (sid, after) in ask {
            self.store(Op::Fetch { sid, after }, Wait::Fetch(sid));
        }
    }

    /// The store's reply to the oldest op not yet answered.
    pub fn handle_reply(&mut self, reply: Reply, now: Instant) {
        let Some(wait) = self.waits.pop_front() else {
            debug_assert!(false, "a store reply with no op waiting");
            return;
        };
        if let Reply::Unavailable(_) = &reply {
            self.out.push_back(Output::Note(Note::StoreUnavailable));
        }
        match wait {
            Wait::Join {
                conn,
                sid,
                room,
                peer,
                token,
                turn,
            } => self.joined(conn, sid, room, peer, token, turn, reply, now),
            Wait::Resume {
                conn,
                sid,
                room,
                peer,
                token,
                last_seen,
                turn,
            } => self.resumed(conn, sid, room, peer, token, last_seen, turn, reply, now),
            Wait::Relay {
                conn,
                sid,
                client_seq,
                to,
                kind,
            } => self.relayed(conn, sid, client_seq, &to, kind, reply),
            Wait::Fetch(sid) => match reply {
                Reply::Fetched(frames) => self.fetched(sid, frames),
                Reply::Stale => self.lost(sid),
                _ => self.fetched(sid, Vec::new()),
            },
            Wait::Sweep => {
                if let Reply::Due(due) = reply {
                    for (sid, _room, peer) in due {
                        let left = ServerMessage::PeerLeft { peer: &peer }.to_json();
                        self.store(
                            Op::End {
                                sid,
                                epoch: None,
                                left,
                            },
                            Wait::Other,
                        );
                    }
                }
            }
            Wait::Other => {}
        }
    }

    /// Something the store tells this node.
    pub fn handle_event(&mut self, event: Event) {
        match event {
            Event::Deliver { sid, seq, frame } => {
                if let Some(conn) = self.pending.get(&sid).copied() {
                    // Held until the join or resume is answered.
                    if let Some(c) = self.conns.get_mut(&conn) {
                        if let State::Pending(_) = c.state {
                            self.early_for_pending(sid).insert(seq, frame);
                        }
                    }
                    return;
                }
                if let Some(conn) = self.sessions.get(&sid).copied() {
                    self.deliver(conn, seq, frame);
                }
            }
            Event::Evict { sid, epoch } => {
                let owner = self.conns.iter().find_map(|(id, c)| match &c.state {
                    State::Attached(a) if a.sid == sid && a.epoch == epoch => Some(*id),
                    _ => None,
                });
                if let Some(conn) = owner {
                    self.close(
                        conn,
                        close::SUPERSEDED,
                        "session resumed elsewhere",
                        Then::Nothing,
                    );
                }
            }
        }
    }

    // ---- internals ----

    /// How often the leases of attached sessions are extended.
    fn refresh_every(&self) -> Duration {
        (self.cfg.resume_window / 4).clamp(Duration::from_secs(1), Duration::from_secs(5))
    }

    /// An attached session's lease: the window, counted from the last
    /// refresh that can have happened, so a dead node's sessions last at
    /// least a full window after it died. The slack covers the refresh
    /// period and the tick that runs it (at most a second late).
    fn lease(&self) -> Duration {
        self.cfg.resume_window + self.refresh_every() + Duration::from_secs(1)
    }

    /// The `iceServers` of a welcome or resumed: without the TURN ones for
    /// a session whose access token said `"turn": false`.
    fn ice_servers(&self, room: &str, peer: &str, turn: bool) -> Box<RawValue> {
        let list = self.cfg.ice_servers.for_peer(room, peer);
        if turn {
            list
        } else {
            without_turn(&list)
        }
    }

    /// Early deliveries for a pending session wait here, keyed by seq.
    fn early_for_pending(&mut self, sid: SessionId) -> &mut BTreeMap<u64, Arc<str>> {
        self.early_pending.entry(sid).or_default()
    }

    /// Applies the size and rate limits to an incoming frame. Returns false
    /// when the frame must be dropped (an error or a close is queued).
    fn admit(&mut self, conn: ConnId, len: usize, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.last_seen = now;
        if !c.bucket.take(now) {
            c.strikes += 1;
            if c.strikes > self.cfg.rate_limit_strikes {
                self.close(
                    conn,
                    close::POLICY_VIOLATION,
                    "rate limit exceeded",
                    Then::End,
                );
                return false;
            }
            // One error per second at most, so the error replies are not
            // themselves a flood.
            let due = c
                .last_rate_error
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                c.last_rate_error = Some(now);
                self.error(
                    conn,
                    ProtocolError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {} messages per second; message dropped",
                            self.cfg.max_message_rate
                        ),
                    ),
                );
            }
            return false;
        }
        c.strikes = 0;
        if len > self.cfg.max_message_bytes {
            self.error(
                conn,
                ProtocolError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "message of {len} bytes exceeds the limit of {} bytes",
                        self.cfg.max_message_bytes
                    ),
                ),
            );
            return false;
        }
        true
    }

    /// Handles one admitted frame.
    fn process(&mut self, conn: ConnId, text: &str, now: Instant) {
        let result = match ClientMessage::parse(text) {
            Ok(msg) => self.dispatch(conn, msg, now),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.error(conn, e);
        }
    }

    /// Handles frames held during a join or resume, until one starts
    /// another.
    fn release_held(&mut self, conn: ConnId, now: Instant) {
        while let Some(c) = self.conns.get_mut(&conn) {
            if let State::Pending(_) = c.state {
                return;
            }
            let Some(text) = c.held.pop_front() else {
                if c.held.capacity() > 0 {
                    c.held = VecDeque::new();
                }
                return;
            };
            self.process(conn, &text, now);
        }
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        msg: ClientMessage<'_>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        match msg {
            ClientMessage::Ping => {
                // A ping is a barrier: its pong follows every signal sent
                // before it, with the ack that covers them first.
                if let Some(State::Attached(a)) = self.conns.get_mut(&conn).map(|c| &mut c.state) {
                    if a.in_flight > 0 {
                        a.pongs += 1;
                        return Ok(());
                    }
                }
                self.pong(conn);
                Ok(())
            }
            ClientMessage::Join {
                room,
                peer,
                meta,
                session,
                token,
            } => self.join(
                conn,
                &room,
                peer.as_deref(),
                meta,
                session.as_deref(),
                token.as_deref(),
                now,
            ),
            ClientMessage::Resume { session, seq, room } => {
                self.resume(conn, &session, seq, room.as_deref(), now)
            }
            ClientMessage::Leave => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .expect("admitted connection exists");
                let State::Attached(a) = std::mem::replace(&mut c.state, State::Idle) else {
                    return Err(ProtocolError::new(ErrorCode::NotJoined, "not in a room"));
                };
                c.idle_since = now;
                self.detach_local(conn, &a);
                self.end(&a);
                Ok(())
            }
            ClientMessage::Signal { to, data, seq } => self.relay(conn, &to, data, seq),
            ClientMessage::Ack { seq } => {
                let Some(State::Attached(a)) = self.conns.get(&conn).map(|c| &c.state) else {
                    return Err(ProtocolError::new(
                        ErrorCode::NotJoined,
                        "join a room before sending acks",
                    ));
                };
                // Acking more than was sent would let the store drop what
                // the client never got.
                let seq = seq.min(a.delivered);
                let op = Op::Ack {
                    sid: a.sid,
                    epoch: a.epoch,
                    seq,
                };
                self.store(op, Wait::Other);
                Ok(())
            }
        }
    }

    /// Whether the connection's access token lets it join `room` as
    /// `peer`: the grant's peer id (if the token pins one) and whether it
    /// may have TURN. Without `--auth-secret`, anyone may, with TURN.
    fn authorize(
        &self,
        c: &Conn,
        room: &str,
        peer: Option<&str>,
        token: Option<&str>,
        now: Instant,
    ) -> Result<(Option<String>, bool), ProtocolError> {
        let Some(auth) = &self.cfg.auth else {
            return Ok((None, true));
        };
        let token = match (token, &c.url_token) {
            (Some(t), _) => Some(t),
            (None, UrlToken::Given(t)) => Some(&**t),
            (None, UrlToken::TooLong(n)) => {
                return Err(ProtocolError::new(
                    ErrorCode::Unauthorized,
                    format!(
                        "?token= of {n} bytes is longer than the limit of {} bytes",
                        auth.max_token_bytes
                    ),
                ))
            }
            (None, UrlToken::None) => None,
        };
        let Some(unix) = self.unix_at(now) else {
            return Err(ProtocolError::new(
                ErrorCode::Unauthorized,
                "the server cannot check tokens yet (no wall clock)",
            ));
        };
        let grant = auth.check(token, room, peer, unix)?;
        Ok((grant.peer, grant.turn))
    }

    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        conn: ConnId,
        room: &str,
        peer: Option<&str>,
        meta: Option<&RawValue>,
        session: Option<&str>,
        access: Option<&str>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        let c = self.conns.get(&conn).expect("admitted connection exists");
        if let State::Attached(a) = &c.state {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyJoined,
                format!(
                    "already in room {:?} as {:?}; send leave first",
                    a.room, a.peer
                ),
            ));
        }
        let (pinned, turn) = self.authorize(c, room, peer, access, now)?;
        // A token that pins an id makes it the id of a join that asked for
        // none (authorize refused any other).
        let peer: Box<str> = match peer.or(pinned.as_deref()) {
            Some(p) => {
                debug_assert!(valid_id(p));
                p.into()
            }
            None => random_id(&mut self.rng),
        };
        // Only a token for this very room and id may take the id over.
        let takeover = session
            .and_then(|t| self.cfg.tokens.verify(t))
            .filter(|claim| claim.room == room && *claim.peer == *peer)
            .map(|claim| claim.sid);
        let meta: Box<RawValue> = match meta {
            Some(m) => m.to_owned(),
            None => RawValue::from_string("{}".to_string()).expect("valid JSON"),
        };
        let sid = SessionId(self.rng.random());
        let token = self
            .cfg
            .tokens
            .mint(sid, room, &peer, turn)
            .into_boxed_str();
        let joined = ServerMessage::PeerJoined {
            peer: &peer,
            meta: &meta,
        }
        .to_json();
        self.conns.get_mut(&conn).expect("exists").state = State::Pending(sid);
        self.pending.insert(sid, conn);
        let op = Op::Join {
            sid,
            room: room.into(),
            peer: peer.clone(),
            meta,
            node: self.cfg.node,
            max_peers: self.cfg.max_room_peers,
            takeover,
            joined,
            lease: self.lease(),
            buffer: self.cfg.resume_buffer,
        };
        self.store(
            op,
            Wait::Join {
                conn,
                sid,
                room: room.into(),
                peer,
                token,
                turn,
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn joined(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        room: Box<str>,
        peer: Box<str>,
        token: Box<str>,
        turn: bool,
        reply: Reply,
        now: Instant,
    ) {
        self.pending.remove(&sid);
        let early = self.early_pending.remove(&sid).unwrap_or_default();
        let here = self
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(c.state, State::Pending(s) if s == sid));
        match reply {
            Reply::Joined { peers, epoch } => {
                let a = Attached {
                    sid,
                    epoch,
                    room,
                    peer,
                    delivered: 0,
                    early,
                    fetching: false,
                    submitted: 0,
                    handled: 0,
                    acked: 0,
                    in_flight: 0,
                    pongs: 0,
                };
                if !here {
                    // The socket went before the welcome: nobody can
                    // resume this session.
                    self.end(&a);
                    return;
                }
                let ice_servers = self.ice_servers(&a.room, &a.peer, turn);
                let welcome = ServerMessage::Welcome {
                    room: &a.room,
                    peer: &a.peer,
                    peers: entries(&peers),
                    ice_servers: &ice_servers,
                    session: &token,
                    resume_window: self.cfg.resume_window.as_secs(),
                }
                .to_json();
                self.send(conn, welcome.into(), FrameKind::Welcome);
                self.attach(conn, a);
            }
            other => {
                if here {
                    self.conns.get_mut(&conn).expect("exists").state = State::Idle;
                    let e = match other {
                        Reply::RoomFull => ProtocolError::new(
                            ErrorCode::RoomFull,
                            format!("room {room:?} is full ({} peers)", self.cfg.max_room_peers),
                        ),
                        Reply::Taken => ProtocolError::new(
                            ErrorCode::PeerIdTaken,
                            format!("peer id {peer:?} is already used in room {room:?}"),
                        ),
                        Reply::Unavailable(why) => unavailable(&why),
                        r => ProtocolError::new(
                            ErrorCode::Unavailable,
                            format!("unexpected store reply to join: {r:?}"),
                        ),
                    };
                    self.error(conn, e);
                }
            }
        }
        self.release_held(conn, now);
    }

    fn resume(
        &mut self,
        conn: ConnId,
        token: &str,
        last_seen: u64,
        room: Option<&str>,
        _now: Instant,
    ) -> Result<(), ProtocolError> {
        let c = self.conns.get(&conn).expect("admitted connection exists");
        if let State::Attached(a) = &c.state {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyJoined,
                format!(
                    "already in room {:?} as {:?}; resume must be the first message",
                    a.room, a.peer
                ),
            ));
        }
        let fail = |m: &str| ProtocolError::new(ErrorCode::ResumeFailed, m);
        let Some(claim) = self.cfg.tokens.verify(token) else {
            self.out.push_back(Output::Note(Note::ResumeFailed));
            return Err(fail("session token is not valid"));
        };
        if room.is_some_and(|r| r != claim.room) {
            self.out.push_back(Output::Note(Note::ResumeFailed));
            return Err(fail("the session belongs to another room"));
        }
        if self.pending.contains_key(&claim.sid) {
            self.out.push_back(Output::Note(Note::ResumeFailed));
            return Err(fail("the session is being resumed on another connection"));
        }
        let sid = claim.sid;
        self.conns.get_mut(&conn).expect("exists").state = State::Pending(sid);
        self.pending.insert(sid, conn);
        let op = Op::Resume {
            sid,
            room: claim.room.as_str().into(),
            peer: claim.peer.as_str().into(),
            last_seen,
            node: self.cfg.node,
            lease: self.lease(),
        };
        self.store(
            op,
            Wait::Resume {
                conn,
                sid,
                room: claim.room.into(),
                peer: claim.peer.into(),
                token: token.into(),
                last_seen,
                turn: claim.turn,
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn resumed(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        room: Box<str>,
        peer: Box<str>,
        token: Box<str>,
        last_seen: u64,
        turn: bool,
        reply: Reply,
        now: Instant,
    ) {
        self.pending.remove(&sid);
        let mut early = self.early_pending.remove(&sid).unwrap_or_default();
        let here = self
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(c.state, State::Pending(s) if s == sid));
        match reply {
            Reply::Resumed {
                peers,
                epoch,
                client_seq,
                replay,
            } => {
                self.out.push_back(Output::Note(Note::Resumed));
                if !here {
                    // Gone again already: keep the session for the next try.
                    self.store(
                        Op::Detach {
                            sid,
                            epoch,
                            delivered: last_seen,
                            window: self.cfg.resume_window,
                        },
                        Wait::Other,
                    );
                    return;
                }
                // An older socket of this session on this node has lost it.
                if let Some(old) = self.sessions.get(&sid).copied() {
                    if old != conn {
                        self.close(
                            old,
                            close::SUPERSEDED,
                            "session resumed elsewhere",
                            Then::Nothing,
                        );
                    }
                }
                let ice_servers = self.ice_servers(&room, &peer, turn);
                let frame = ServerMessage::Resumed {
                    room: &room,
                    peer: &peer,
                    peers: entries(&peers),
                    ice_servers: &ice_servers,
                    session: &token,
                    resume_window: self.cfg.resume_window.as_secs(),
                    ack: client_seq,
                }
                .to_json();
                self.send(conn, frame.into(), FrameKind::Resumed);
                for (seq, f) in replay {
                    early.insert(seq, f);
                }
                let a = Attached {
                    sid,
                    epoch,
                    room,
                    peer,
                    delivered: last_seen,
                    early,
                    fetching: false,
                    submitted: client_seq,
                    handled: client_seq,
                    acked: client_seq,
                    in_flight: 0,
                    pongs: 0,
                };
                self.attach(conn, a);
            }
            other => {
                self.out.push_back(Output::Note(Note::ResumeFailed));
                if here {
                    self.conns.get_mut(&conn).expect("exists").state = State::Idle;
                    let message = match other {
                        Reply::ResumeRefused(ResumeRefused::Unknown) => {
                            "no such session (it ended, or the server lost its state)".to_string()
                        }
                        Reply::ResumeRefused(ResumeRefused::Expired) => {
                            "the resume window has passed".to_string()
                        }
                        Reply::ResumeRefused(ResumeRefused::Overflowed) => format!(
                            "more than {} messages piled up; some you have not seen are gone",
                            self.cfg.resume_buffer
                        ),
                        Reply::ResumeRefused(ResumeRefused::AheadOfServer) => {
                            format!("seq {last_seen} was never sent")
                        }
                        Reply::Unavailable(why) => format!("cluster store unavailable: {why}"),
                        r => format!("unexpected store reply to resume: {r:?}"),
                    };
                    self.error(conn, ProtocolError::new(ErrorCode::ResumeFailed, message));
                }
            }
        }
        self.release_held(conn, now);
    }

    /// Makes `a` the session of `conn` and sends what is waiting for it.
    fn attach(&mut self, conn: ConnId, a: Attached) {
        self.sessions.insert(a.sid, conn);
        *self.local_rooms.entry(a.room.clone()).or_default() += 1;
        let c = self
            .conns
            .get_mut(&conn)
            .expect("attached connection exists");
        c.state = State::Attached(Box::new(a));
        self.flush_early(conn);
    }

    fn relay(
        &mut self,
        conn: ConnId,
        to: &str,
        data: &RawValue,
        seq: Option<u64>,
    ) -> Result<(), ProtocolError> {
        let c = self
            .conns
            .get_mut(&conn)
            .expect("admitted connection exists");
        let State::Attached(a) = &mut c.state else {
            return Err(ProtocolError::new(
                ErrorCode::NotJoined,
                "join a room before sending signals",
            ));
        };
        if let Some(n) = seq {
            if n <= a.submitted {
                // Sent before a resume and already handled: at most once.
                return Ok(());
            }
            a.submitted = n;
        }
        let kind = RelayKind::of(data);
        let frame = ServerMessage::Signal {
            from: &a.peer,
            data,
        }
        .to_json();
        a.in_flight += 1;
        let op = Op::Relay {
            sid: a.sid,
            epoch: a.epoch,
            client_seq: seq,
            to: to.into(),
            frame,
        };
        let wait = Wait::Relay {
            conn,
            sid: a.sid,
            client_seq: seq,
            to: to.into(),
            kind,
        };
        self.store(op, wait);
        Ok(())
    }

    fn relayed(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        client_seq: Option<u64>,
        to: &str,
        kind: RelayKind,
        reply: Reply,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let State::Attached(a) = &mut c.state else {
            return;
        };
        if a.sid != sid {
            return;
        }
        a.in_flight = a.in_flight.saturating_sub(1);
        let pongs = if a.in_flight == 0 {
            std::mem::take(&mut a.pongs)
        } else {
            0
        };
        self.relay_outcome(conn, client_seq, to, kind, reply);
        for _ in 0..pongs {
            self.pong(conn);
        }
    }

    fn relay_outcome(
        &mut self,
        conn: ConnId,
        client_seq: Option<u64>,
        to: &str,
        kind: RelayKind,
        reply: Reply,
    ) {
        let Some(State::Attached(a)) = self.conns.get_mut(&conn).map(|c| &mut c.state) else {
            return;
        };
        let handled = match reply {
            Reply::Relayed => {
                self.out.push_back(Output::Note(Note::Relayed(kind)));
                true
            }
            Reply::Duplicate => true,
            Reply::UnknownPeer => {
                let e = ProtocolError::new(
                    ErrorCode::UnknownPeer,
                    format!("no peer {to:?} in room {:?}", a.room),
                );
                if let Some(n) = client_seq {
                    a.handled = a.handled.max(n);
                }
                self.error(conn, e);
                return;
            }
            Reply::Stale => {
                // Not relayed, and never will be through this socket: the
                // session was taken over or the store lost it.
                if let Some(State::Attached(a)) = self.conns.get(&conn).map(|c| &c.state) {
                    let sid = a.sid;
                    self.lost(sid);
                }
                return;
            }
            Reply::Unavailable(why) => {
                if client_seq.is_some() {
                    // Acks are cumulative: acking a later seq would claim
                    // this one too. Drop the socket instead; a resume asks
                    // the store what really got through.
                    self.error(conn, unavailable(&why));
                    self.close(
                        conn,
                        close::INTERNAL_ERROR,
                        "store unavailable",
                        Then::Nothing,
                    );
                } else {
                    self.error(conn, unavailable(&why));
                }
                return;
            }
            _ => false,
        };
        if handled {
            if let Some(n) = client_seq {
                a.handled = a.handled.max(n);
            }
        }
    }

    /// A numbered frame for `conn`'s session: sent in seq order, once.
    fn deliver(&mut self, conn: ConnId, seq: u64, frame: Arc<str>) {
        let Some(State::Attached(a)) = self.conns.get_mut(&conn).map(|c| &mut c.state) else {
            return;
        };
        if seq <= a.delivered {
            return;
        }
        if seq == a.delivered + 1 && a.early.is_empty() {
            a.delivered = seq;
            let kind = FrameKind::of_numbered(&frame);
            self.send(conn, frame, kind);
            return;
        }
        a.early.insert(seq, frame);
        self.flush_early(conn);
    }

    /// Sends the early frames that are next in line; asks the store for a
    /// gap it cannot close.
    fn flush_early(&mut self, conn: ConnId) {
        let Some(State::Attached(a)) = self.conns.get_mut(&conn).map(|c| &mut c.state) else {
            return;
        };
        let mut ready = Vec::new();
        while let Some(entry) = a.early.first_entry() {
            let seq = *entry.key();
            if seq <= a.delivered {
                entry.remove();
            } else if seq == a.delivered + 1 {
                a.delivered = seq;
                ready.push(entry.remove());
            } else {
                break;
            }
        }
        let gap = (!a.early.is_empty() && !a.fetching).then(|| {
            a.fetching = true;
            (a.sid, a.delivered)
        });
        for frame in ready {
            let kind = FrameKind::of_numbered(&frame);
            self.send(conn, frame, kind);
        }
        if let Some((sid, after)) = gap {
            self.store(Op::Fetch { sid, after }, Wait::Fetch(sid));
        }
    }

    /// The store no longer has `sid` for the socket holding it here.
    fn lost(&mut self, sid: SessionId) {
        if let Some(conn) = self.sessions.get(&sid).copied() {
            self.close(conn, close::SESSION_LOST, "session lost", Then::Nothing);
        }
    }

    fn fetched(&mut self, sid: SessionId, frames: Vec<(u64, Arc<str>)>) {
        let Some(conn) = self.sessions.get(&sid).copied() else {
            return;
        };
        let Some(State::Attached(a)) = self.conns.get_mut(&conn).map(|c| &mut c.state) else {
            return;
        };
        a.fetching = false;
        for (seq, f) in frames {
            if seq > a.delivered {
                a.early.insert(seq, f);
            }
        }
        // What the store no longer has is gone for good; carry on after it
        // rather than stall the session.
        if let Some((&first, _)) = a.early.first_key_value() {
            if first > a.delivered + 1 {
                a.delivered = first - 1;
            }
        }
        self.flush_early(conn);
    }

    /// Forgets the connection and tells the store what becomes of its
    /// session.
    fn forget(&mut self, conn: ConnId, then: Then) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        // A pending join or resume finds the connection gone when answered.
        if let State::Attached(a) = c.state {
            self.detach_local(conn, &a);
            match then {
                Then::End => self.end(&a),
                Then::Detach => self.store(
                    Op::Detach {
                        sid: a.sid,
                        epoch: a.epoch,
                        delivered: a.delivered,
                        window: self.cfg.resume_window,
                    },
                    Wait::Other,
                ),
                Then::Nothing => {}
            }
        }
    }

    /// Drops the local bookkeeping of an attached session.
    fn detach_local(&mut self, conn: ConnId, a: &Attached) {
        // Only this socket's entry: a newer socket of the session may hold
        // it already.
        if self.sessions.get(&a.sid) == Some(&conn) {
            self.sessions.remove(&a.sid);
        }
        if let Some(n) = self.local_rooms.get_mut(&a.room) {
            *n -= 1;
            if *n == 0 {
                self.local_rooms.remove(&a.room);
            }
        }
    }

    /// Ends `a`'s session in the store; the others get `peer-left`.
    fn end(&mut self, a: &Attached) {
        let left = ServerMessage::PeerLeft { peer: &a.peer }.to_json();
        self.store(
            Op::End {
                sid: a.sid,
                epoch: Some(a.epoch),
                left,
            },
            Wait::Other,
        );
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str, then: Then) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.out.push_back(Output::Close { conn, code, reason });
        self.forget(conn, then);
    }

    fn error(&mut self, conn: ConnId, e: ProtocolError) {
        let frame = ServerMessage::Error {
            code: e.code,
            message: &e.message,
        }
        .to_json();
        self.send(conn, frame.into(), FrameKind::Error(e.code));
    }

    /// A pong, after the ack that is due.
    fn pong(&mut self, conn: ConnId) {
        if let Some(State::Attached(a)) = self.conns.get_mut(&conn).map(|c| &mut c.state) {
            if a.handled > a.acked {
                a.acked = a.handled;
                let seq = a.handled;
                self.send_ack(conn, seq);
            }
        }
        self.send(conn, ServerMessage::Pong.to_json().into(), FrameKind::Pong);
    }

    fn send_ack(&mut self, conn: ConnId, seq: u64) {
        let frame = ServerMessage::Ack { seq }.to_json();
        self.send(conn, frame.into(), FrameKind::Ack);
    }

    fn send(&mut self, conn: ConnId, frame: Arc<str>, kind: FrameKind) {
        self.out.push_back(Output::Send { conn, frame, kind });
    }

    fn store(&mut self, op: Op, wait: Wait) {
        self.waits.push_back(wait);
        self.out.push_back(Output::Store(op));
    }
}

fn entries(peers: &[MemberInfo]) -> Vec<PeerEntry<'_>> {
    peers
        .iter()
        .map(|m| PeerEntry {
            peer: &m.peer,
            meta: &m.meta,
        })
        .collect()
}

/// `list` (a JSON array of RTCIceServer) with every `turn:` and `turns:`
/// URL removed, and each server left with no URL dropped; STUN stays.
pub fn without_turn(list: &RawValue) -> Box<RawValue> {
    let is_turn = |u: &serde_json::Value| {
        u.as_str()
            .is_some_and(|u| u.starts_with("turn:") || u.starts_with("turns:"))
    };
    let servers: Vec<serde_json::Value> = serde_json::from_str(list.get()).unwrap_or_default();
    let kept: Vec<serde_json::Value> = servers
        .into_iter()
        .filter_map(|mut s| {
            let urls = s.get_mut("urls")?;
            match urls {
                serde_json::Value::String(_) if is_turn(urls) => return None,
                serde_json::Value::Array(list) => {
                    list.retain(|u| !is_turn(u));
                    if list.is_empty() {
                        return None;
                    }
                }
                _ => {}
            }
            // Credentials only ever serve TURN.
            if let Some(obj) = s.as_object_mut() {
                obj.remove("username");
                obj.remove("credential");
            }
            Some(s)
        })
        .collect();
    serde_json::value::to_raw_value(&kept).expect("JSON values serialize")
}

fn unavailable(why: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unavailable,
        format!("cluster store unavailable ({why}); not handled, try again"),
    )
}

fn random_id(rng: &mut StdRng) -> Box<str> {
    (0..GENERATED_ID_LEN)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect::<String>()
        .into_boxed_str()
}

/// A hub and an in-memory store driven together: the whole signaling state
/// of a single node. Ops run at once, so replies and deliveries are back
/// before [`Local::poll_output`] returns the next output.
pub struct Local {
    /// The hub.
    pub hub: Hub,
    /// Its store.
    pub store: MemoryStore,
}

impl Local {
    /// A hub over an empty store.
    pub fn new(hub: Hub) -> Self {
        Local {
            hub,
            store: MemoryStore::new(),
        }
    }

    /// Next send, close or note for the driver; store ops are carried out
    /// on the way.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        loop {
            match self.hub.poll_output()? {
                Output::Store(op) => {
                    let reply = self.store.run(op, now);
                    self.hub.handle_reply(reply, now);
                    while let Some(ev) = self.store.poll_event() {
                        self.hub.handle_event(ev);
                    }
                }
                other => return Some(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    struct Harness {
        local: Local,
        now: Instant,
        notes: Vec<Note>,
    }

    /// A drained `Output::Send`: (conn, parsed JSON).
    type Sent = (ConnId, Value);
    /// A drained `Output::Close`: (conn, code, reason).
    type Closed = (ConnId, u16, &'static str);

    impl Harness {
        fn new(cfg: HubConfig) -> Self {
            Harness {
                local: Local::new(Hub::with_seed(cfg, 7)),
                now: Instant::now(),
                notes: vec![],
            }
        }
        fn hub(&mut self) -> &mut Hub {
            &mut self.local.hub
        }
        fn connect(&mut self) -> ConnId {
            let now = self.now;
            self.hub().connect(now).unwrap()
        }
        fn text(&mut self, c: ConnId, s: &str) {
            let now = self.now;
            self.hub().handle_text(c, s, now);
        }
        fn tick(&mut self) {
            let now = self.now;
            self.hub().handle_timeout(now);
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
        }
        /// Drains outputs as (conn, parsed JSON) and closes as (conn, code).
        fn drain(&mut self) -> (Vec<Sent>, Vec<Closed>) {
            let (mut sends, mut closes) = (vec![], vec![]);
            while let Some(o) = self.local.poll_output(self.now) {
                match o {
                    Output::Send { conn, frame, .. } => {
                        sends.push((conn, serde_json::from_str(&frame).unwrap()))
                    }
                    Output::Close { conn, code, reason } => closes.push((conn, code, reason)),
                    Output::Note(n) => self.notes.push(n),
                    Output::Store(_) => unreachable!("Local runs store ops"),
                }
            }
            (sends, closes)
        }
        fn sends(&mut self) -> Vec<Sent> {
            let (s, c) = self.drain();
            assert!(c.is_empty(), "unexpected close {c:?}");
            s
        }
        /// Sends with `seq` removed, for tests about something else.
        fn plain(&mut self) -> Vec<Sent> {
            self.sends()
                .into_iter()
                .map(|(c, mut v)| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("seq");
                    }
                    (c, v)
                })
                .collect()
        }
        fn join(&mut self, c: ConnId, room: &str, peer: &str) -> Value {
            self.text(
                c,
                &format!(r#"{{"type":"join","room":"{room}","peer":"{peer}"}}"#),
            );
            let s = self.sends();
            s.into_iter().find(|(to, _)| *to == c).unwrap().1
        }
    }

    fn error_code(v: &Value) -> &str {
        assert_eq!(v["type"], "error", "{v}");
        v["code"].as_str().unwrap()
    }

    fn signal(to: &str, seq: u64, n: u64) -> String {
        format!(r#"{{"type":"signal","to":"{to}","seq":{seq},"data":{{"n":{n}}}}}"#)
    }

    #[test]
    fn join_welcome_lists_older_peers_and_notifies_them() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.connect(), h.connect());
        h.text(a, r#"{"type":"join","room":"r","meta":{"name":"A"}}"#);
        let s = h.sends();
        assert_eq!(s.len(), 1);
        let welcome = &s[0].1;
        assert_eq!(welcome["type"], "welcome");
        let a_id = welcome["peer"].as_str().unwrap().to_string();
        assert_eq!(a_id.len(), GENERATED_ID_LEN);
        assert_eq!(welcome["peers"], json!([]));
        assert_eq!(welcome["iceServers"], json!([]));
        assert_eq!(welcome["resumeWindow"], 20);
        assert!(welcome["session"].as_str().unwrap().len() > 40);

        h.text(b, r#"{"type":"join","room":"r","peer":"bob"}"#);
        let s = h.sends();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, b);
        assert_eq!(
            s[0].1["peers"],
            json!([{"peer": a_id, "meta": {"name":"A"}}])
        );
        assert_eq!(
            s[1],
            (
                a,
                json!({"seq":1,"type":"peer-joined","peer":"bob","meta":{}})
            )
        );
        assert_eq!((h.local.store.rooms(), h.hub().peers()), (1, 2));
    }

    #[test]
    fn signal_is_relayed_with_server_set_from() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.text(b, r#"{"type":"signal","to":"alice","from":"mallory","data":{"description":{"type":"offer","sdp":"v=0"}}}"#);
        assert_eq!(
            h.sends(),
            vec![(
                a,
                json!({"seq":2,"type":"signal","from":"bob","data":{"description":{"type":"offer","sdp":"v=0"}}})
            )]
        );
        assert_eq!(h.notes, vec![Note::Relayed(RelayKind::Offer)]);
    }

    #[test]
    fn rooms_are_isolated() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "one", "alice");
        let w = h.join(b, "two", "bob");
        assert_eq!(w["peers"], json!([]));
        h.text(b, r#"{"type":"signal","to":"alice","data":{}}"#);
        let s = h.sends();
        assert_eq!(s.len(), 1);
        assert_eq!(error_code(&s[0].1), "unknown-peer");
    }

    #[test]
    fn state_errors_keep_the_connection() {
        let mut h = Harness::new(HubConfig::default());
        let a = h.connect();
        h.text(a, r#"{"type":"signal","to":"x","data":{}}"#);
        h.text(a, r#"{"type":"leave"}"#);
        h.text(a, r#"{"type":"ack","seq":1}"#);
        let s = h.sends();
        assert_eq!(error_code(&s[0].1), "not-joined");
        assert_eq!(error_code(&s[1].1), "not-joined");
        assert_eq!(error_code(&s[2].1), "not-joined");
        h.join(a, "r", "alice");
        h.text(a, r#"{"type":"join","room":"r2"}"#);
        assert_eq!(error_code(&h.sends()[0].1), "already-joined");
        // Leave, then join again elsewhere on the same connection.
        h.text(a, r#"{"type":"leave"}"#);
        assert!(h.sends().is_empty());
        assert_eq!(h.local.store.rooms(), 0);
        let w = h.join(a, "r2", "alice");
        assert_eq!(w["type"], "welcome");
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(h.sends()[0].1, json!({"type":"pong"}));
    }

    #[test]
    fn room_full_and_duplicate_ids() {
        let mut h = Harness::new(HubConfig {
            max_room_peers: 2,
            ..HubConfig::default()
        });
        let (a, b, c, d) = (h.connect(), h.connect(), h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.text(b, r#"{"type":"join","room":"r","peer":"alice"}"#);
        assert_eq!(error_code(&h.sends()[0].1), "peer-id-taken");
        h.join(b, "r", "bob");
        h.text(c, r#"{"type":"join","room":"r"}"#);
        assert_eq!(error_code(&h.sends()[0].1), "room-full");
        // A refused join leaves the connection free to join elsewhere.
        assert_eq!(h.join(c, "other", "carol")["type"], "welcome");
        // The same id is fine in another room.
        assert_eq!(h.join(d, "other2", "alice")["type"], "welcome");
    }

    #[test]
    fn close_and_leave_notify_the_room_at_once() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, c) = (h.connect(), h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.join(c, "r", "carol");
        h.hub().disconnect(b, Gone::Closed);
        let s = h.plain();
        assert_eq!(s.len(), 2);
        for (_, v) in &s {
            assert_eq!(*v, json!({"type":"peer-left","peer":"bob"}));
        }
        h.text(c, r#"{"type":"leave"}"#);
        assert_eq!(
            h.plain(),
            vec![(a, json!({"type":"peer-left","peer":"carol"}))]
        );
        // Disconnecting twice, or an unknown connection, is harmless.
        h.hub().disconnect(b, Gone::Closed);
        h.hub().disconnect(ConnId(999), Gone::Lost);
        assert!(h.sends().is_empty());
        assert_eq!(
            (
                h.hub().connections(),
                h.hub().peers(),
                h.local.store.rooms()
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn oversize_frames_are_refused_but_not_fatal() {
        let mut h = Harness::new(HubConfig {
            max_message_bytes: 100,
            ..HubConfig::default()
        });
        let a = h.connect();
        let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(200));
        h.text(a, &big);
        assert_eq!(error_code(&h.sends()[0].1), "too-large");
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(h.sends()[0].1["type"], "pong");
        let now = h.now;
        h.hub().handle_binary(a, 10, now);
        assert_eq!(error_code(&h.sends()[0].1), "bad-message");
    }

    #[test]
    fn rate_limit_drops_then_closes_abusers() {
        let mut h = Harness::new(HubConfig {
            max_message_rate: 10.0,
            message_burst: 5,
            rate_limit_strikes: 20,
            ..HubConfig::default()
        });
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.sends();
        // 4 tokens left after the join: 4 relayed, then dropped.
        for _ in 0..10 {
            h.text(
                a,
                r#"{"type":"signal","to":"bob","data":{"candidate":null}}"#,
            );
        }
        let s = h.sends();
        let to_bob = s.iter().filter(|(c, _)| *c == b).count();
        let errors: Vec<_> = s.iter().filter(|(c, _)| *c == a).collect();
        assert_eq!(to_bob, 4);
        assert_eq!(errors.len(), 1, "one rate-limited error per second");
        assert_eq!(error_code(&errors[0].1), "rate-limited");
        // After a pause the bucket refills and messages flow again.
        h.advance(Duration::from_millis(300));
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(h.sends()[0].1["type"], "pong");
        // Keep flooding with no time passing: closed after the strikes, and
        // an abuser's session ends at once.
        for _ in 0..40 {
            h.text(a, r#"{"type":"ping"}"#);
        }
        let (s, closes) = h.drain();
        assert_eq!(
            closes,
            vec![(a, close::POLICY_VIOLATION, "rate limit exceeded")]
        );
        assert!(s.iter().any(|(c, v)| *c == b && v["type"] == "peer-left"));
        assert_eq!(h.hub().connections(), 1);
    }

    #[test]
    fn a_connection_in_no_room_is_closed_after_the_join_timeout_pings_or_not() {
        let mut h = Harness::new(HubConfig {
            idle_timeout: Duration::from_secs(30),
            join_timeout: Duration::from_secs(10),
            ..HubConfig::default()
        });
        let (lurker, joined, left) = (h.connect(), h.connect(), h.connect());
        h.join(joined, "r", "alice");
        h.join(left, "r", "bob");
        h.sends();
        // The lurker answers every ping; bob leaves at 6 s.
        for t in 1..=15 {
            h.advance(Duration::from_secs(1));
            let now = h.now;
            for c in [lurker, joined, left] {
                h.hub().handle_activity(c, now);
            }
            if t == 6 {
                h.text(left, r#"{"type":"leave"}"#);
            }
            h.tick();
            let (_, closes) = h.drain();
            if t == 11 {
                assert_eq!(
                    closes,
                    vec![(lurker, close::POLICY_VIOLATION, "join timeout")]
                );
            } else {
                // Bob's clock started at his leave, at 6 s.
                assert!(closes.is_empty(), "t={t}: {closes:?}");
            }
        }
        for _ in 0..2 {
            h.advance(Duration::from_secs(1));
            h.tick();
        }
        let (_, closes) = h.drain();
        assert_eq!(
            closes,
            vec![(left, close::POLICY_VIOLATION, "join timeout")]
        );
    }

    #[test]
    fn idle_connections_time_out_into_the_resume_window() {
        let mut h = Harness::new(HubConfig {
            idle_timeout: Duration::from_secs(10),
            resume_window: Duration::from_secs(20),
            ..HubConfig::default()
        });
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.sends();
        h.advance(Duration::from_secs(6));
        let now = h.now;
        h.hub().handle_activity(a, now); // a pong frame
        h.advance(Duration::from_secs(6));
        h.tick();
        let (s, closes) = h.drain();
        assert_eq!(closes, vec![(b, close::POLICY_VIOLATION, "idle timeout")]);
        // Bob is detached, not gone: a sleeping laptop may come back.
        assert!(s.is_empty(), "{s:?}");
        // Alice keeps pinging; bob's window passes: now he is gone.
        for _ in 0..21 {
            h.advance(Duration::from_secs(1));
            let now = h.now;
            h.hub().handle_activity(a, now);
            h.tick();
        }
        assert_eq!(
            h.sends(),
            vec![(a, json!({"seq":2,"type":"peer-left","peer":"bob"}))]
        );
        assert_eq!(h.local.store.sessions(), 1);
    }

    #[test]
    fn connection_cap_and_shutdown() {
        let mut h = Harness::new(HubConfig {
            max_connections: 2,
            ..HubConfig::default()
        });
        let a = h.connect();
        let _b = h.connect();
        let now = h.now;
        assert_eq!(h.hub().connect(now), Err(Refused::TooManyConnections));
        h.hub().disconnect(a, Gone::Lost);
        let _c = h.connect();
        h.hub().shutdown();
        let (_, closes) = h.drain();
        assert_eq!(closes.len(), 2);
        assert!(closes.iter().all(|(_, code, _)| *code == close::GOING_AWAY));
        assert_eq!(h.hub().connections(), 0);
    }

    #[test]
    fn frame_kinds_label_relays_and_errors() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.sends();
        h.text(
            a,
            r#"{"type":"signal","to":"bob","data":{"candidate":{"candidate":"x"}}}"#,
        );
        h.text(a, r#"{"type":"signal","to":"zed","data":{}}"#);
        let now = h.now;
        let kinds: Vec<FrameKind> = std::iter::from_fn(|| h.local.poll_output(now))
            .filter_map(|o| match o {
                Output::Send { kind, .. } => Some(kind),
                Output::Note(_) => None,
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![FrameKind::Signal, FrameKind::Error(ErrorCode::UnknownPeer)]
        );
    }

    // ---- sessions ----

    /// Alice and bob in room r; returns (alice, bob, bob's token).
    fn pair(h: &mut Harness) -> (ConnId, ConnId, String) {
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        let w = h.join(b, "r", "bob");
        (a, b, w["session"].as_str().unwrap().to_string())
    }

    fn resume(h: &mut Harness, token: &str, seq: u64) -> (ConnId, Vec<Sent>) {
        let c = h.connect();
        h.text(
            c,
            &format!(r#"{{"type":"resume","session":"{token}","seq":{seq}}}"#),
        );
        (c, h.sends())
    }

    #[test]
    fn seqs_count_per_session_and_acks_follow_client_seqs() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, _) = pair(&mut h);
        // alice's seq 1 was peer-joined; bob's session starts at 1.
        for n in 1..=3 {
            h.text(a, &signal("bob", n, n));
        }
        let s = h.sends();
        let seqs: Vec<u64> = s.iter().map(|(_, v)| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(s.iter().all(|(c, _)| *c == b));
        // A repeated client seq is dropped without a word.
        h.text(a, &signal("bob", 2, 99));
        h.text(a, &signal("bob", 3, 99));
        assert!(h.sends().is_empty());
        // v1 signals (no seq) are always relayed, and not acked.
        h.text(a, r#"{"type":"signal","to":"bob","data":{"v1":true}}"#);
        assert_eq!(h.sends()[0].1["seq"], 4);
        // The ack comes with the next tick, once...
        h.tick();
        assert_eq!(h.sends(), vec![(a, json!({"type":"ack","seq":3}))]);
        h.advance(Duration::from_secs(1));
        h.tick();
        assert!(h.sends().is_empty());
        // ...and before a pong.
        h.text(a, &signal("bob", 4, 4));
        h.text(a, r#"{"type":"ping"}"#);
        let s = h.sends();
        assert!(s.contains(&(
            b,
            json!({"seq":5,"type":"signal","from":"alice","data":{"n":4}})
        )));
        let to_a: Vec<&Value> = s.iter().filter(|(c, _)| *c == a).map(|(_, v)| v).collect();
        assert_eq!(
            to_a,
            vec![&json!({"type":"ack","seq":4}), &json!({"type":"pong"})]
        );
        // A signal to nobody is handled too (refused), so it is acked.
        h.text(a, &signal("zed", 5, 5));
        assert_eq!(error_code(&h.sends()[0].1), "unknown-peer");
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(h.sends()[0].1, json!({"type":"ack","seq":5}));
    }

    #[test]
    fn a_dropped_session_resumes_with_every_missed_message_once() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, token) = pair(&mut h);
        for n in 1..=3 {
            h.text(a, &signal("bob", n, n));
        }
        h.sends();
        // Bob has seen 1..=2 (3 was in flight when the socket died).
        h.text(b, r#"{"type":"ack","seq":1}"#);
        h.hub().disconnect(b, Gone::Lost);
        for n in 4..=5 {
            h.text(a, &signal("bob", n, n));
        }
        // Alice sees no peer-left, her signals are buffered.
        assert!(h.sends().is_empty());
        h.advance(Duration::from_secs(5));
        h.tick();
        assert!(h.sends().iter().all(|(c, v)| *c == a && v["type"] == "ack"));

        let (b2, s) = resume(&mut h, &token, 2);
        assert!(s.iter().all(|(c, _)| *c == b2));
        assert_eq!(s[0].1["type"], "resumed");
        assert_eq!(s[0].1["room"], "r");
        assert_eq!(s[0].1["peer"], "bob");
        assert_eq!(s[0].1["peers"], json!([{"peer":"alice","meta":{}}]));
        assert_eq!(s[0].1["session"], token.as_str());
        assert_eq!(s[0].1["ack"], 0);
        let replay: Vec<(u64, u64)> = s[1..]
            .iter()
            .map(|(_, v)| (v["seq"].as_u64().unwrap(), v["data"]["n"].as_u64().unwrap()))
            .collect();
        assert_eq!(replay, vec![(3, 3), (4, 4), (5, 5)]);
        assert_eq!(h.notes.iter().filter(|n| **n == Note::Resumed).count(), 1);
        // Live again, numbering goes on.
        h.text(a, &signal("bob", 6, 6));
        assert_eq!(
            h.sends(),
            vec![(
                b2,
                json!({"seq":6,"type":"signal","from":"alice","data":{"n":6}})
            )]
        );
        // Bob's own seqs: the resumed ack tells him where to restart, and
        // what he re-sends is relayed once.
        h.text(b2, &signal("alice", 1, 1));
        h.text(b2, &signal("alice", 1, 1));
        h.text(b2, r#"{"type":"ping"}"#);
        let s = h.sends();
        assert_eq!(s.iter().filter(|(c, _)| *c == a).count(), 1);
        assert!(s.contains(&(b2, json!({"type":"ack","seq":1}))));
        h.hub().disconnect(b2, Gone::Lost);
        let (_b3, s) = resume(&mut h, &token, 6);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1["ack"], 1);
        h.text(_b3, &signal("alice", 1, 1));
        assert!(h.sends().is_empty(), "seq 1 was relayed before the drop");
    }

    #[test]
    fn resume_failures_grant_nothing() {
        let mut h = Harness::new(HubConfig::default());
        let (_a, b, token) = pair(&mut h);
        let other = Tokens::new(b"another cluster".to_vec()).mint(SessionId(1), "r", "bob", true);
        let mut chars: Vec<char> = token.chars().collect();
        chars[3] = if chars[3] == 'A' { 'B' } else { 'A' };
        let tampered: String = chars.into_iter().collect();
        for (i, bad) in [other.as_str(), tampered.as_str(), "garbage", ""]
            .into_iter()
            .enumerate()
        {
            let (c, s) = resume(&mut h, bad, 0);
            assert_eq!(error_code(&s[0].1), "resume-failed", "{bad}");
            // The connection stays and can join afresh.
            assert_eq!(h.join(c, "r2", &format!("x{i}"))["type"], "welcome");
        }
        // Another room named in the resume.
        let c = h.connect();
        h.text(
            c,
            &format!(r#"{{"type":"resume","session":"{token}","seq":0,"room":"elsewhere"}}"#),
        );
        assert_eq!(error_code(&h.sends()[0].1), "resume-failed");
        // A seq never sent.
        h.hub().disconnect(b, Gone::Lost);
        let (_, s) = resume(&mut h, &token, 50);
        assert_eq!(error_code(&s[0].1), "resume-failed");
        assert!(s[0].1["message"].as_str().unwrap().contains("never sent"));
        // Past the window.
        h.advance(Duration::from_secs(21));
        let (_, s) = resume(&mut h, &token, 0);
        assert_eq!(error_code(&s[0].1), "resume-failed");
        // A token of a session that ended (leave) opens nothing either.
        let (a2, b2) = (h.connect(), h.connect());
        h.join(a2, "q", "alice");
        let w = h.join(b2, "q", "bob");
        h.text(b2, r#"{"type":"leave"}"#);
        h.sends();
        let (_, s) = resume(&mut h, w["session"].as_str().unwrap(), 0);
        assert_eq!(error_code(&s[0].1), "resume-failed");
        assert!(h.notes.iter().filter(|n| **n == Note::ResumeFailed).count() >= 7);
    }

    #[test]
    fn overflow_makes_a_session_unresumable_and_ends_a_detached_one() {
        let mut h = Harness::new(HubConfig {
            resume_buffer: 4,
            ..HubConfig::default()
        });
        let (a, b, token) = pair(&mut h);
        // Attached and never acking (a v1 client): keeps working live.
        for n in 1..=6 {
            h.text(a, &signal("bob", n, n));
        }
        assert_eq!(h.sends().iter().filter(|(c, _)| *c == b).count(), 6);
        h.hub().disconnect(b, Gone::Lost);
        // Bob saw all 6 before the drop, so nothing he needs is gone yet.
        for n in 7..=10 {
            h.text(a, &signal("bob", n, n));
        }
        h.sends();
        h.tick();
        assert!(h.plain().iter().all(|(_, v)| v["type"] != "peer-left"));
        // One more than the buffer holds: seq 7 falls out, which bob never
        // got. He can never resume, so he is gone at once.
        h.text(a, &signal("bob", 11, 11));
        h.advance(Duration::from_secs(1));
        h.tick();
        let s = h.plain();
        assert!(
            s.contains(&(a, json!({"type":"peer-left","peer":"bob"}))),
            "{s:?}"
        );
        let (_, s) = resume(&mut h, &token, 6);
        assert_eq!(error_code(&s[0].1), "resume-failed");
    }

    #[test]
    fn the_overflow_rule_is_about_unseen_messages() {
        let mut h = Harness::new(HubConfig {
            resume_buffer: 2,
            ..HubConfig::default()
        });
        let (a, b, token) = pair(&mut h);
        for n in 1..=5 {
            h.text(a, &signal("bob", n, n));
        }
        h.sends();
        h.hub().disconnect(b, Gone::Lost);
        // 1..=3 fell out, but bob has seen up to 5: nothing lost.
        let (_, s) = resume(&mut h, &token, 5);
        assert_eq!(s[0].1["type"], "resumed");
        // Had he seen only 3, 4 is still there and 5: fine too; seen 2,
        // seq 3 is gone: refused.
    }

    #[test]
    fn a_resume_takes_the_session_from_a_half_open_socket() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, token) = pair(&mut h);
        // The server still believes in bob's old socket; bob does not.
        let b2 = h.connect();
        h.text(
            b2,
            &format!(r#"{{"type":"resume","session":"{token}","seq":0}}"#),
        );
        let (s, closes) = h.drain();
        assert_eq!(s[0].1["type"], "resumed");
        assert_eq!(
            closes,
            vec![(b, close::SUPERSEDED, "session resumed elsewhere")]
        );
        // The old socket's goodbye arrives late and ends nothing.
        h.hub().disconnect(b, Gone::Closed);
        h.text(a, &signal("bob", 1, 1));
        let (s, _) = h.drain();
        assert_eq!(
            s,
            vec![(
                b2,
                json!({"seq":1,"type":"signal","from":"alice","data":{"n":1}})
            )]
        );
        assert_eq!(h.hub().connections(), 3 - 1, "the old socket was closed");
        assert!(!h.local.hub.conns.contains_key(&b));
    }

    #[test]
    fn a_join_with_the_old_token_takes_the_id_over_quietly() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, token) = pair(&mut h);
        h.hub().disconnect(b, Gone::Lost);
        // Without the token the id is taken during the window.
        let c = h.connect();
        h.text(c, r#"{"type":"join","room":"r","peer":"bob"}"#);
        assert_eq!(error_code(&h.sends()[0].1), "peer-id-taken");
        // A token of another id does not help.
        let (_, _, carol_token) = {
            let (x, y) = (h.connect(), h.connect());
            h.join(x, "q", "dave");
            let w = h.join(y, "q", "carol");
            (x, y, w["session"].as_str().unwrap().to_string())
        };
        h.text(
            c,
            &format!(r#"{{"type":"join","room":"r","peer":"bob","session":"{carol_token}"}}"#),
        );
        assert_eq!(error_code(&h.sends()[0].1), "peer-id-taken");
        // With bob's own token: the id is his again; alice sees a
        // peer-joined and no peer-left.
        h.text(
            c,
            &format!(r#"{{"type":"join","room":"r","peer":"bob","session":"{token}"}}"#),
        );
        let s = h.plain();
        assert_eq!(s[0].1["type"], "welcome");
        assert_ne!(s[0].1["session"], token.as_str());
        assert_eq!(
            s[1],
            (a, json!({"type":"peer-joined","peer":"bob","meta":{}}))
        );
        assert_eq!(s.len(), 2);
        // The old session is over.
        let (_, s) = resume(&mut h, &token, 0);
        assert_eq!(error_code(&s[0].1), "resume-failed");
    }

    #[test]
    fn an_attached_session_outlives_its_lease_while_refreshed() {
        // (window s, tick ms): a common case, and the shortest window ticked
        // once a second (the slowest the driver may), where the lease must
        // cover the refresh period and a late tick.
        for (window, tick) in [(4, 500), (1, 1000)] {
            let mut h = Harness::new(HubConfig {
                resume_window: Duration::from_secs(window),
                idle_timeout: Duration::from_secs(600),
                ..HubConfig::default()
            });
            let (a, _b, _) = pair(&mut h);
            for _ in 0..20 {
                h.advance(Duration::from_millis(tick));
                h.tick();
            }
            let s = h.sends();
            assert!(
                s.iter().all(|(c, v)| *c != a || v["type"] != "peer-left"),
                "window {window}: {s:?}"
            );
            assert_eq!(h.local.store.sessions(), 2);
        }
    }

    #[test]
    fn a_session_the_store_lost_closes_its_socket() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, _) = pair(&mut h);
        // The store forgets everything (an empty Redis after a restart).
        h.local.store = MemoryStore::new();
        h.text(a, &signal("bob", 1, 1));
        let (s, closes) = h.drain();
        assert!(s.is_empty(), "{s:?}");
        assert_eq!(closes, vec![(a, close::SESSION_LOST, "session lost")]);
        // A resync finds the other one lost too.
        h.hub().resync();
        let (_, closes) = h.drain();
        assert_eq!(closes, vec![(b, close::SESSION_LOST, "session lost")]);
    }

    // ---- access tokens ----

    /// The wall clock of the auth tests: 2026-01-01T00:00:00Z.
    const UNIX: u64 = 1_767_225_600;
    const SECRET: &[u8] = b"hub test secret, at least 32 b..";

    /// A hub with `--auth-secret`, TURN and STUN in its iceServers.
    fn auth_harness() -> Harness {
        let mut auth = RoomAuth::new(SECRET);
        auth.leeway = 0;
        let ice = RawValue::from_string(
            r#"[{"urls":["stun:s.example:3478"]},{"urls":["turn:t.example:3478?transport=udp","turns:t.example:5349"],"username":"u","credential":"c"}]"#
                .to_string(),
        )
        .unwrap();
        let mut h = Harness::new(HubConfig {
            auth: Some(auth),
            ice_servers: Arc::new(StaticIceServers(ice)),
            ..HubConfig::default()
        });
        let now = h.now;
        h.hub().set_wall_clock(now, UNIX);
        h
    }

    fn mint(room: &str, peer: Option<&str>, turn: Option<bool>) -> String {
        RoomAuth::new(SECRET).mint(&crate::auth::RoomClaims {
            room: room.into(),
            peer: peer.map(Into::into),
            exp: UNIX + 60,
            nbf: None,
            iat: None,
            turn,
        })
    }

    fn join_with(h: &mut Harness, c: ConnId, frame: Value) -> Value {
        h.text(c, &frame.to_string());
        h.sends().into_iter().find(|(to, _)| *to == c).unwrap().1
    }

    #[test]
    fn with_auth_a_join_needs_a_token_for_its_room() {
        let mut h = auth_harness();
        let c = h.connect();
        let v = join_with(&mut h, c, json!({"type":"join","room":"r"}));
        assert_eq!(error_code(&v), "unauthorized");
        let forged = RoomAuth::new(b"not the secret").mint(&crate::auth::RoomClaims {
            room: "r".into(),
            peer: None,
            exp: UNIX + 60,
            nbf: None,
            iat: None,
            turn: None,
        });
        let v = join_with(&mut h, c, json!({"type":"join","room":"r","token":forged}));
        assert_eq!(error_code(&v), "unauthorized");
        let other = mint("elsewhere", None, None);
        let v = join_with(&mut h, c, json!({"type":"join","room":"r","token":other}));
        assert_eq!(error_code(&v), "unauthorized");
        // The connection stays open, and the right token lets it in.
        let v = join_with(
            &mut h,
            c,
            json!({"type":"join","room":"r","peer":"p","token":mint("r", None, None)}),
        );
        assert_eq!(v["type"], "welcome");
        assert_eq!(v["peer"], "p");
        // Full TURN list by default.
        assert_eq!(v["iceServers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn with_auth_expiry_and_nbf_follow_the_wall_clock() {
        let mut h = auth_harness();
        let t = mint("r", None, None);
        // 61 s later by the monotonic clock; no new wall-clock reading.
        h.advance(Duration::from_secs(61));
        let c = h.connect();
        let v = join_with(&mut h, c, json!({"type":"join","room":"r","token":t}));
        assert_eq!(error_code(&v), "token-expired");
        // A token not valid yet.
        let later = RoomAuth::new(SECRET).mint(&crate::auth::RoomClaims {
            room: "r".into(),
            peer: None,
            exp: UNIX + 600,
            nbf: Some(UNIX + 300),
            iat: None,
            turn: None,
        });
        let v = join_with(&mut h, c, json!({"type":"join","room":"r","token":later}));
        assert_eq!(error_code(&v), "unauthorized");
        // The wall clock jumps forward (the driver's next tick).
        let now = h.now;
        h.hub().set_wall_clock(now, UNIX + 300);
        let v = join_with(&mut h, c, json!({"type":"join","room":"r","token":later}));
        assert_eq!(v["type"], "welcome");
    }

    #[test]
    fn with_auth_the_peer_claim_is_the_id() {
        let mut h = auth_harness();
        let t = mint("r", Some("alice"), None);
        let c = h.connect();
        let v = join_with(
            &mut h,
            c,
            json!({"type":"join","room":"r","peer":"mallory","token":t}),
        );
        assert_eq!(error_code(&v), "peer-not-allowed");
        // No id asked for: the token's.
        let v = join_with(&mut h, c, json!({"type":"join","room":"r","token":t}));
        assert_eq!(v["type"], "welcome");
        assert_eq!(v["peer"], "alice");
        // A second holder of the same token cannot be alice too.
        let d = h.connect();
        let v = join_with(&mut h, d, json!({"type":"join","room":"r","token":t}));
        assert_eq!(error_code(&v), "peer-id-taken");
    }

    #[test]
    fn with_auth_the_url_token_serves_joins_without_one() {
        let mut h = auth_harness();
        let now = h.now;
        let c = h
            .hub()
            .connect_with_token(now, Some(&mint("team-*", None, None)))
            .unwrap();
        let v = join_with(&mut h, c, json!({"type":"join","room":"team-a"}));
        assert_eq!(v["type"], "welcome");
        // The frame's own token wins over the URL's.
        h.text(c, r#"{"type":"leave"}"#);
        h.sends();
        let v = join_with(
            &mut h,
            c,
            json!({"type":"join","room":"team-b","token":mint("other", None, None)}),
        );
        assert_eq!(error_code(&v), "unauthorized");
        // A prefix token does not open rooms outside its prefix.
        let v = join_with(&mut h, c, json!({"type":"join","room":"teams"}));
        assert_eq!(error_code(&v), "unauthorized");
        // Over the size limit: refused with the length, nothing decoded.
        let long = "x".repeat(crate::auth::DEFAULT_MAX_TOKEN_BYTES + 1);
        let d = h.hub().connect_with_token(now, Some(&long)).unwrap();
        let v = join_with(&mut h, d, json!({"type":"join","room":"team-a"}));
        assert_eq!(error_code(&v), "unauthorized");
        assert!(v["message"].as_str().unwrap().contains("limit"), "{v}");
        // Without auth the URL token is ignored.
        let mut open = Harness::new(HubConfig::default());
        let now = open.now;
        let e = open.hub().connect_with_token(now, Some("junk")).unwrap();
        assert_eq!(
            join_with(&mut open, e, json!({"type":"join","room":"r"}))["type"],
            "welcome"
        );
    }

    #[test]
    fn with_auth_and_no_wall_clock_nobody_joins() {
        let mut h = Harness::new(HubConfig {
            auth: Some(RoomAuth::new(SECRET)),
            ..HubConfig::default()
        });
        let c = h.connect();
        let v = join_with(
            &mut h,
            c,
            json!({"type":"join","room":"r","token":mint("r", None, None)}),
        );
        assert_eq!(error_code(&v), "unauthorized");
    }

    #[test]
    fn turn_false_hands_out_stun_only_and_a_resume_keeps_it() {
        let mut h = auth_harness();
        let (a, b) = (h.connect(), h.connect());
        let wa = join_with(
            &mut h,
            a,
            json!({"type":"join","room":"r","peer":"alice","token":mint("r", None, None)}),
        );
        let w = join_with(
            &mut h,
            b,
            json!({"type":"join","room":"r","peer":"bob","token":mint("r", None, Some(false))}),
        );
        assert_eq!(w["type"], "welcome");
        assert_eq!(w["iceServers"], json!([{"urls":["stun:s.example:3478"]}]));
        // A resume needs no access token, even after it expired, and keeps
        // the restriction.
        h.hub().disconnect(b, Gone::Lost);
        h.advance(Duration::from_secs(61));
        let (_, s) = resume(&mut h, w["session"].as_str().unwrap(), 0);
        assert_eq!(s[0].1["type"], "resumed", "{s:?}");
        assert_eq!(
            s[0].1["iceServers"],
            json!([{"urls":["stun:s.example:3478"]}])
        );
        // Alice's session, resumed too, keeps its TURN.
        h.hub().disconnect(a, Gone::Lost);
        let (_, s) = resume(&mut h, wa["session"].as_str().unwrap(), 0);
        assert_eq!(s[0].1["type"], "resumed", "{s:?}");
        assert_eq!(s[0].1["iceServers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn without_turn_keeps_stun_and_drops_turn_urls() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        let v = |r: Box<RawValue>| serde_json::from_str::<Value>(r.get()).unwrap();
        assert_eq!(v(without_turn(&raw("[]"))), json!([]));
        assert_eq!(
            v(without_turn(&raw(
                r#"[{"urls":"turn:h"},{"urls":"stun:h"},{"urls":["stun:a","turns:b"],"username":"u","credential":"c"},{"urls":[]},{"x":1}]"#
            ))),
            json!([{"urls":"stun:h"},{"urls":["stun:a"]}])
        );
    }
}
