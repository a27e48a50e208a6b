//! The signaling hub: every connection, room and peer, as a plain state
//! machine.
//!
//! The hub owns who is connected, which room each connection joined, the
//! per-connection limits (rate, size, idle time) and the rules of protocol v1.
//! It does no I/O and reads no clock: the driver feeds it frames and the
//! current time, then drains [`Output`]s and carries them out.

use crate::protocol::{
    valid_id, ClientMessage, ErrorCode, FrameKind, PeerEntry, ProtocolError, RelayKind,
    ServerMessage,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rate::TokenBucket;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
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
    /// Open connections at once (`--max-connections`); [`Hub::connect`]
    /// refuses more.
    pub max_connections: usize,
    /// The `iceServers` handed out in `welcome`.
    pub ice_servers: Arc<dyn IceServers>,
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
            max_connections: 10_000,
            ice_servers: Arc::new(StaticIceServers(
                RawValue::from_string("[]".to_string()).expect("valid JSON"),
            )),
        }
    }
}

/// Identifies one WebSocket connection for the hub's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// WebSocket close codes the hub asks for (RFC 6455 §7.4.1).
pub mod close {
    /// 1001, sent to everyone by [`Hub::shutdown`](super::Hub::shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// 1008, for abuse: rate limit exceeded, idle timeout, send queue full.
    pub const POLICY_VIOLATION: u16 = 1008;
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send one text frame. Broadcasts share one serialized `frame`.
    Send {
        /// The connection to send on.
        conn: ConnId,
        /// The JSON text, ready to go out as is.
        frame: Arc<str>,
        /// What the frame is, for the `switchboard_messages_sent_total`,
        /// `_messages_relayed_total` and `_errors_total` metrics, so the
        /// driver need not re-parse it.
        kind: FrameKind,
    },
    /// Send a close frame and drop the connection. The hub has already
    /// forgotten the connection and told its room.
    Close {
        /// The connection to close; the hub no longer knows it.
        conn: ConnId,
        /// WebSocket close code, one of [`close`].
        code: u16,
        /// Close reason text, e.g. `"idle timeout"` (docs/protocol.md lists
        /// them).
        reason: &'static str,
    },
}

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// [`HubConfig::max_connections`] are already open; `serve` answers the
    /// upgrade with HTTP 503.
    TooManyConnections,
}

struct Conn {
    joined: Option<Membership>,
    bucket: TokenBucket,
    strikes: u32,
    last_seen: Instant,
    last_rate_error: Option<Instant>,
}

struct Membership {
    room: Box<str>,
    peer: Box<str>,
}

struct Member {
    peer: Box<str>,
    conn: ConnId,
    meta: Box<RawValue>,
}

/// Peers of one room, oldest first (the order `welcome` lists them in).
#[derive(Default)]
struct Room {
    members: Vec<Member>,
}

impl Room {
    fn find(&self, peer: &str) -> Option<&Member> {
        self.members.iter().find(|m| &*m.peer == peer)
    }
}

/// Sans-IO signaling server state.
pub struct Hub {
    cfg: HubConfig,
    conns: HashMap<ConnId, Conn>,
    rooms: HashMap<Box<str>, Room>,
    peers: usize,
    next_conn: u64,
    rng: SmallRng,
    out: VecDeque<Output>,
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const GENERATED_ID_LEN: usize = 12;

impl Hub {
    /// An empty hub; generated peer ids come from a randomly seeded RNG.
    pub fn new(cfg: HubConfig) -> Self {
        Self::with_seed(cfg, rand::rng().random())
    }

    /// A hub whose generated peer ids are reproducible (for tests).
    pub fn with_seed(cfg: HubConfig, seed: u64) -> Self {
        Hub {
            cfg,
            conns: HashMap::new(),
            rooms: HashMap::new(),
            peers: 0,
            next_conn: 1,
            rng: SmallRng::seed_from_u64(seed),
            out: VecDeque::new(),
        }
    }

    /// The settings the hub was built with.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Open connections, joined or not (the `switchboard_connections` gauge).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Rooms with at least one peer; a room disappears with its last peer.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Peers joined to some room, over all rooms.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Admits a new connection, or refuses it when the server is full.
    pub fn connect(&mut self, now: Instant) -> Result<ConnId, Refused> {
        if self.conns.len() >= self.cfg.max_connections {
            return Err(Refused::TooManyConnections);
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                joined: None,
                bucket: TokenBucket::new(self.cfg.message_burst, self.cfg.max_message_rate, now),
                strikes: 0,
                last_seen: now,
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

    /// A binary frame arrived; protocol v1 has none.
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
        let result = match ClientMessage::parse(text) {
            Ok(msg) => self.dispatch(conn, msg),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            self.error(conn, e);
        }
    }

    /// The connection is gone (closed, reset or failed). Idempotent.
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn) {
            if let Some(m) = c.joined.take() {
                self.remove_member(conn, m);
            }
        }
    }

    /// Drops every connection that has been silent longer than the idle
    /// timeout. Call it periodically; a second is fine-grained enough.
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let mut dead: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_seen) > idle)
            .map(|(id, _)| *id)
            .collect();
        dead.sort();
        for conn in dead {
            self.close(conn, close::POLICY_VIOLATION, "idle timeout");
        }
    }

    /// Closes every connection with "going away"; used at shutdown.
    pub fn shutdown(&mut self) {
        let mut all: Vec<ConnId> = self.conns.keys().copied().collect();
        all.sort();
        for conn in all {
            self.close(conn, close::GOING_AWAY, "server shutting down");
        }
    }

    /// Next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Tells the hub that a connection could not keep up with its output and
    /// is being dropped by the driver.
    pub fn drop_slow(&mut self, conn: ConnId) {
        self.close(conn, close::POLICY_VIOLATION, "send queue full");
    }

    // ---- internals ----

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
                self.close(conn, close::POLICY_VIOLATION, "rate limit exceeded");
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

    fn dispatch(&mut self, conn: ConnId, msg: ClientMessage<'_>) -> Result<(), ProtocolError> {
        match msg {
            ClientMessage::Ping => {
                self.send(conn, ServerMessage::Pong.to_json().into(), FrameKind::Pong);
                Ok(())
            }
            ClientMessage::Join {
                room, peer, meta, ..
            } => self.join(conn, &room, peer.as_deref(), meta),
            ClientMessage::Leave => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .expect("admitted connection exists");
                let m = c
                    .joined
                    .take()
                    .ok_or_else(|| ProtocolError::new(ErrorCode::NotJoined, "not in a room"))?;
                self.remove_member(conn, m);
                Ok(())
            }
            ClientMessage::Signal { to, data, .. } => self.relay(conn, &to, data),
            ClientMessage::Resume { .. } | ClientMessage::Ack { .. } => Err(ProtocolError::new(
                ErrorCode::ResumeFailed,
                "sessions are not implemented yet",
            )),
        }
    }

    fn join(
        &mut self,
        conn: ConnId,
        room_name: &str,
        peer: Option<&str>,
        meta: Option<&RawValue>,
    ) -> Result<(), ProtocolError> {
        let c = self.conns.get(&conn).expect("admitted connection exists");
        if let Some(m) = &c.joined {
            return Err(ProtocolError::new(
                ErrorCode::AlreadyJoined,
                format!(
                    "already in room {:?} as {:?}; send leave first",
                    m.room, m.peer
                ),
            ));
        }
        let max = self.cfg.max_room_peers;
        let room = self.rooms.get(room_name);
        if room.is_some_and(|r| r.members.len() >= max) {
            return Err(ProtocolError::new(
                ErrorCode::RoomFull,
                format!("room {room_name:?} is full ({max} peers)"),
            ));
        }
        let peer_id: Box<str> = match peer {
            Some(p) => {
                debug_assert!(valid_id(p));
                if room.is_some_and(|r| r.find(p).is_some()) {
                    return Err(ProtocolError::new(
                        ErrorCode::PeerIdTaken,
                        format!("peer id {p:?} is already used in room {room_name:?}"),
                    ));
                }
                p.into()
            }
            None => loop {
                let id = random_id(&mut self.rng);
                if room.is_none_or(|r| r.find(&id).is_none()) {
                    break id;
                }
            },
        };
        let meta: Box<RawValue> = match meta {
            Some(m) => m.to_owned(),
            None => RawValue::from_string("{}".to_string()).expect("valid JSON"),
        };

        let ice_servers = self.cfg.ice_servers.for_peer(room_name, &peer_id);
        let room = self.rooms.entry(room_name.into()).or_default();
        let welcome = ServerMessage::Welcome {
            room: room_name,
            peer: &peer_id,
            peers: room
                .members
                .iter()
                .map(|m| PeerEntry {
                    peer: &m.peer,
                    meta: &m.meta,
                })
                .collect(),
            ice_servers: &ice_servers,
            session: "",
            resume_window: 0,
        }
        .to_json();
        let joined: Arc<str> = ServerMessage::PeerJoined {
            peer: &peer_id,
            meta: &meta,
        }
        .to_json()
        .into();
        let others: Vec<ConnId> = room.members.iter().map(|m| m.conn).collect();
        room.members.push(Member {
            peer: peer_id.clone(),
            conn,
            meta,
        });
        self.peers += 1;
        self.conns.get_mut(&conn).expect("exists").joined = Some(Membership {
            room: room_name.into(),
            peer: peer_id,
        });
        self.send(conn, welcome.into(), FrameKind::Welcome);
        for other in others {
            self.send(other, joined.clone(), FrameKind::PeerJoined);
        }
        Ok(())
    }

    fn relay(&mut self, conn: ConnId, to: &str, data: &RawValue) -> Result<(), ProtocolError> {
        let c = self.conns.get(&conn).expect("admitted connection exists");
        let m = c.joined.as_ref().ok_or_else(|| {
            ProtocolError::new(ErrorCode::NotJoined, "join a room before sending signals")
        })?;
        let room = self.rooms.get(&m.room).expect("joined room exists");
        let target = room.find(to).ok_or_else(|| {
            ProtocolError::new(
                ErrorCode::UnknownPeer,
                format!("no peer {to:?} in room {:?}", m.room),
            )
        })?;
        let kind = RelayKind::of(data);
        let frame = ServerMessage::Signal {
            from: &m.peer,
            data,
        }
        .to_json();
        let target = target.conn;
        self.send(target, frame.into(), FrameKind::Signal(kind));
        Ok(())
    }

    fn remove_member(&mut self, conn: ConnId, m: Membership) {
        let Some(room) = self.rooms.get_mut(&m.room) else {
            return;
        };
        room.members.retain(|x| x.conn != conn);
        self.peers -= 1;
        let others: Vec<ConnId> = room.members.iter().map(|x| x.conn).collect();
        if others.is_empty() {
            self.rooms.remove(&m.room);
            return;
        }
        let left: Arc<str> = ServerMessage::PeerLeft { peer: &m.peer }.to_json().into();
        for other in others {
            self.send(other, left.clone(), FrameKind::PeerLeft);
        }
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &'static str) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.out.push_back(Output::Close { conn, code, reason });
        self.disconnect(conn);
    }

    fn error(&mut self, conn: ConnId, e: ProtocolError) {
        let frame = ServerMessage::Error {
            code: e.code,
            message: &e.message,
        }
        .to_json();
        self.send(conn, frame.into(), FrameKind::Error(e.code));
    }

    fn send(&mut self, conn: ConnId, frame: Arc<str>, kind: FrameKind) {
        self.out.push_back(Output::Send { conn, frame, kind });
    }
}

fn random_id(rng: &mut SmallRng) -> Box<str> {
    (0..GENERATED_ID_LEN)
        .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
        .collect::<String>()
        .into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    struct Harness {
        hub: Hub,
        now: Instant,
    }

    impl Harness {
        fn new(cfg: HubConfig) -> Self {
            Harness {
                hub: Hub::with_seed(cfg, 7),
                now: Instant::now(),
            }
        }
        fn connect(&mut self) -> ConnId {
            self.hub.connect(self.now).unwrap()
        }
        fn text(&mut self, c: ConnId, s: &str) {
            self.hub.handle_text(c, s, self.now);
        }
        /// Drains outputs as (conn, parsed JSON) and closes as (conn, code).
        fn drain(&mut self) -> (Vec<Sent>, Vec<Closed>) {
            let (mut sends, mut closes) = (vec![], vec![]);
            while let Some(o) = self.hub.poll_output() {
                match o {
                    Output::Send { conn, frame, .. } => {
                        sends.push((conn, serde_json::from_str(&frame).unwrap()))
                    }
                    Output::Close { conn, code, reason } => closes.push((conn, code, reason)),
                }
            }
            (sends, closes)
        }
        fn sends(&mut self) -> Vec<Sent> {
            let (s, c) = self.drain();
            assert!(c.is_empty(), "unexpected close {c:?}");
            s
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

    /// A drained `Output::Send`: (conn, parsed JSON).
    type Sent = (ConnId, Value);
    /// A drained `Output::Close`: (conn, code, reason).
    type Closed = (ConnId, u16, &'static str);

    fn error_code(v: &Value) -> &str {
        assert_eq!(v["type"], "error", "{v}");
        v["code"].as_str().unwrap()
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
        assert_eq!(welcome["peers"], serde_json::json!([]));
        assert_eq!(welcome["iceServers"], serde_json::json!([]));

        h.text(b, r#"{"type":"join","room":"r","peer":"bob"}"#);
        let s = h.sends();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, b);
        assert_eq!(
            s[0].1["peers"],
            serde_json::json!([{"peer": a_id, "meta": {"name":"A"}}])
        );
        assert_eq!(
            s[1],
            (
                a,
                serde_json::json!({"type":"peer-joined","peer":"bob","meta":{}})
            )
        );
        assert_eq!((h.hub.rooms(), h.hub.peers()), (1, 2));
    }

    #[test]
    fn signal_is_relayed_with_server_set_from() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.text(b, r#"{"type":"signal","to":"alice","from":"mallory","data":{"description":{"type":"offer","sdp":"v=0"}}}"#);
        let s = h.sends();
        assert_eq!(
            s,
            vec![(
                a,
                serde_json::json!({"type":"signal","from":"bob","data":{"description":{"type":"offer","sdp":"v=0"}}})
            )]
        );
    }

    #[test]
    fn rooms_are_isolated() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "one", "alice");
        let w = h.join(b, "two", "bob");
        assert_eq!(w["peers"], serde_json::json!([]));
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
        let s = h.sends();
        assert_eq!(error_code(&s[0].1), "not-joined");
        assert_eq!(error_code(&s[1].1), "not-joined");
        h.join(a, "r", "alice");
        h.text(a, r#"{"type":"join","room":"r2"}"#);
        assert_eq!(error_code(&h.sends()[0].1), "already-joined");
        // Leave, then join again elsewhere on the same connection.
        h.text(a, r#"{"type":"leave"}"#);
        assert!(h.sends().is_empty());
        assert_eq!(h.hub.rooms(), 0);
        let w = h.join(a, "r2", "alice");
        assert_eq!(w["type"], "welcome");
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(h.sends()[0].1, serde_json::json!({"type":"pong"}));
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
    fn disconnect_and_leave_notify_the_room() {
        let mut h = Harness::new(HubConfig::default());
        let (a, b, c) = (h.connect(), h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.join(c, "r", "carol");
        h.hub.disconnect(b);
        let s = h.sends();
        assert_eq!(s.len(), 2);
        for (_, v) in &s {
            assert_eq!(*v, serde_json::json!({"type":"peer-left","peer":"bob"}));
        }
        h.text(c, r#"{"type":"leave"}"#);
        assert_eq!(
            h.sends(),
            vec![(a, serde_json::json!({"type":"peer-left","peer":"carol"}))]
        );
        // Disconnecting twice, or an unknown connection, is harmless.
        h.hub.disconnect(b);
        h.hub.disconnect(ConnId(999));
        assert!(h.sends().is_empty());
        assert_eq!(
            (h.hub.connections(), h.hub.peers(), h.hub.rooms()),
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
        h.hub.handle_binary(a, 10, h.now);
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
        h.now += Duration::from_millis(300);
        h.text(a, r#"{"type":"ping"}"#);
        assert_eq!(h.sends()[0].1["type"], "pong");
        // Keep flooding with no time passing: closed after the strikes.
        for _ in 0..40 {
            h.text(a, r#"{"type":"ping"}"#);
        }
        let (s, closes) = h.drain();
        assert_eq!(
            closes,
            vec![(a, close::POLICY_VIOLATION, "rate limit exceeded")]
        );
        assert!(s.contains(&(b, serde_json::json!({"type":"peer-left","peer":"alice"}))));
        assert_eq!(h.hub.connections(), 1);
    }

    #[test]
    fn idle_connections_time_out_and_activity_keeps_them() {
        let mut h = Harness::new(HubConfig {
            idle_timeout: Duration::from_secs(10),
            ..HubConfig::default()
        });
        let (a, b) = (h.connect(), h.connect());
        h.join(a, "r", "alice");
        h.join(b, "r", "bob");
        h.sends();
        h.now += Duration::from_secs(6);
        h.hub.handle_activity(a, h.now); // a pong frame
        h.now += Duration::from_secs(6);
        h.hub.handle_timeout(h.now);
        let (s, closes) = h.drain();
        assert_eq!(closes, vec![(b, close::POLICY_VIOLATION, "idle timeout")]);
        assert_eq!(
            s,
            vec![(a, serde_json::json!({"type":"peer-left","peer":"bob"}))]
        );
        h.now += Duration::from_secs(11);
        h.hub.handle_timeout(h.now);
        let (_, closes) = h.drain();
        assert_eq!(closes.len(), 1);
        assert_eq!(h.hub.connections(), 0);
        assert_eq!(h.hub.rooms(), 0);
    }

    #[test]
    fn connection_cap_and_shutdown() {
        let mut h = Harness::new(HubConfig {
            max_connections: 2,
            ..HubConfig::default()
        });
        let a = h.connect();
        let _b = h.connect();
        assert_eq!(h.hub.connect(h.now), Err(Refused::TooManyConnections));
        h.hub.disconnect(a);
        let _c = h.connect();
        h.hub.shutdown();
        let (_, closes) = h.drain();
        assert_eq!(closes.len(), 2);
        assert!(closes.iter().all(|(_, code, _)| *code == close::GOING_AWAY));
        assert_eq!(h.hub.connections(), 0);
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
        let kinds: Vec<FrameKind> = std::iter::from_fn(|| h.hub.poll_output())
            .map(|o| match o {
                Output::Send { kind, .. } => kind,
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                FrameKind::Signal(RelayKind::Candidate),
                FrameKind::Error(ErrorCode::UnknownPeer)
            ]
        );
    }
}
