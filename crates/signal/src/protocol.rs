//! Wire format of signaling protocol v1 (see `docs/protocol.md`).
//!
//! This module owns both directions of the wire format:
//!
//! - server side: parsing of client frames ([`ClientMessage::parse`]) and
//!   serialization of server frames ([`ServerMessage`]). Parsing borrows from
//!   the frame: `data` and `meta` stay as raw JSON slices so the server relays
//!   them byte for byte without interpreting them.
//! - client side: the same [`ClientMessage`] serializes what a client sends,
//!   and [`ServerFrame`] reads what the server sends, tolerating frame types
//!   a newer server may add.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Longest room name or peer id.
pub const MAX_ID_LEN: usize = 64;

/// Error codes sent in `{"type":"error"}` frames (the `code` field; the
/// table in docs/protocol.md). Every one is recoverable: the offending frame
/// is dropped and the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// `bad-message`: not JSON, not an object, a missing or mistyped field,
    /// an unknown `type`, a binary frame, or `data`/`meta` not an object.
    BadMessage,
    /// `not-joined`: `signal` or `leave` before `join`.
    NotJoined,
    /// `already-joined`: a second `join` without `leave` first.
    AlreadyJoined,
    /// `invalid-room`: the room name breaks [`ID_RULE`].
    InvalidRoom,
    /// `invalid-peer`: the requested peer id breaks [`ID_RULE`].
    InvalidPeer,
    /// `room-full`: the room already holds `--max-room-peers` peers.
    RoomFull,
    /// `peer-id-taken`: another peer in the room has the requested id.
    PeerIdTaken,
    /// `unknown-peer`: `signal` to an id not in our room (it may just
    /// have left).
    UnknownPeer,
    /// `too-large`: the frame is longer than `--max-message-bytes`.
    TooLarge,
    /// `rate-limited`: faster than `--max-message-rate`; the frame was
    /// dropped. Sent at most once per second.
    RateLimited,
    /// `resume-failed`: a `resume` was refused (bad or forged token, unknown
    /// or ended session, window passed, another room, buffer overflowed).
    /// The connection stays open for a fresh `join`.
    ResumeFailed,
    /// `unavailable`: the cluster store (Redis) cannot be reached; the frame
    /// was not handled.
    Unavailable,
    /// `unauthorized`: the server needs an access token (`serve
    /// --auth-secret`) and the `join` had none, or one that is forged,
    /// malformed, not yet valid (`nbf`) or for another room.
    Unauthorized,
    /// `token-expired`: the access token's `exp` has passed; get a fresh
    /// one and join again.
    TokenExpired,
    /// `peer-not-allowed`: the access token names a `peer` and the `join`
    /// asked for another id.
    PeerNotAllowed,
}

impl ErrorCode {
    /// Every code, for metrics to register each label up front.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::BadMessage,
        ErrorCode::NotJoined,
        ErrorCode::AlreadyJoined,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidPeer,
        ErrorCode::RoomFull,
        ErrorCode::PeerIdTaken,
        ErrorCode::UnknownPeer,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::ResumeFailed,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::PeerNotAllowed,
    ];

    /// The code as it appears on the wire, e.g. `"bad-message"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::NotJoined => "not-joined",
            ErrorCode::AlreadyJoined => "already-joined",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::InvalidPeer => "invalid-peer",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::PeerIdTaken => "peer-id-taken",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::ResumeFailed => "resume-failed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token-expired",
            ErrorCode::PeerNotAllowed => "peer-not-allowed",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused client frame: the code and a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The `code` of the `error` frame.
    pub code: ErrorCode,
    /// The `message` of the `error` frame: for humans, not to be matched on.
    pub message: String,
}

impl ProtocolError {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

/// A client frame: parsed by the server (borrowing from the text it was
/// parsed from), serialized by a client with [`ClientMessage::to_json`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMessage<'a> {
    /// `{"type":"join","room":R,"peer":P?,"meta":{...}?,"token":T?}`: enter
    /// a room; must come first. Answered by `welcome` or an `error`.
    Join {
        /// The room, checked against [`ID_RULE`] (`invalid-room`).
        room: Cow<'a, str>,
        /// The id asked for, same rule (`invalid-peer`); absent: the
        /// server picks one unique in the room.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<Cow<'a, str>>,
        /// Any JSON object, relayed unchanged to the other peers in
        /// `welcome.peers` and `peer-joined`; `null` counts as absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<&'a RawValue>,
        /// The token of an earlier session of ours: if that session still
        /// holds `peer` in `room` (detached, or its node died), the join
        /// takes the id over instead of failing with `peer-id-taken`.
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<Cow<'a, str>>,
        /// The room access token (a JWT), on a server started with
        /// `--auth-secret`; absent: the `?token=` of the WebSocket URL, if
        /// any.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<Cow<'a, str>>,
    },
    /// `{"type":"signal","to":P,"data":OBJ}`: relay `data` to peer `to` in
    /// our room.
    Signal {
        /// The target peer id (`unknown-peer` if it is not in the room).
        to: Cow<'a, str>,
        /// A JSON object, opaque to the server and relayed byte for byte;
        /// by convention a description or a candidate (docs/protocol.md).
        data: &'a RawValue,
        /// The client's own sequence number, from 1 per session; the server
        /// relays each at most once. Absent: always relayed (v1).
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// `{"type":"resume","session":T,"seq":N,"room":R?}`: instead of `join`,
    /// take back the session of token `T`, having seen every server message
    /// up to seq `N`. Answered by `resumed` or `resume-failed`.
    Resume {
        /// The `session` token of `welcome` or `resumed`.
        session: Cow<'a, str>,
        /// The highest server seq received (0 for none).
        seq: u64,
        /// When given, the session's room must be this one.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<Cow<'a, str>>,
    },
    /// `{"type":"ack","seq":N}`: every server message up to seq `N` has
    /// arrived; the server may forget them.
    Ack {
        /// The highest server seq received.
        seq: u64,
    },
    /// `{"type":"leave"}`: leave the room; the connection stays open and
    /// may `join` again.
    Leave,
    /// `{"type":"ping"}`: answered by `pong`; counts as activity for the
    /// idle timeout.
    Ping,
}

/// Flat shape every client frame is read into first; serde's internally
/// tagged enums cannot borrow raw values, so the tag is dispatched by hand.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    peer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow)]
    meta: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    // Raw so a bad value gets an error that names the field.
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
}

/// `seq`, when present, as a whole number 0..=2^64-1.
fn seq_field(raw: Option<&RawValue>) -> Result<Option<u64>, ProtocolError> {
    raw.map(|r| {
        r.get().parse::<u64>().map_err(|_| {
            bad(format!(
                "\"seq\" must be a whole number >= 0, not {}",
                r.get()
            ))
        })
    })
    .transpose()
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// The rule [`valid_id`] checks, worded for error messages.
pub const ID_RULE: &str = "1-64 characters of A-Z a-z 0-9 _ -";

/// True when `s` is a valid room name or peer id: 1–64 of `[A-Za-z0-9_-]`.
/// The one copy of the rule in Rust: clients check names with it too.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn bad(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadMessage, message)
}

impl<'a> ClientMessage<'a> {
    /// Parses and validates one text frame.
    pub fn parse(text: &'a str) -> Result<Self, ProtocolError> {
        let frame: Frame<'a> = serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                bad(format!("malformed message: {e}"))
            } else {
                bad(format!("not a JSON object: {e}"))
            }
        })?;
        let ty = frame.ty.ok_or_else(|| bad("missing \"type\""))?;
        match ty.as_ref() {
            "join" => {
                let room = frame.room.ok_or_else(|| bad("join needs \"room\""))?;
                if !valid_id(&room) {
                    return Err(ProtocolError::new(
                        ErrorCode::InvalidRoom,
                        format!("room must be {ID_RULE}"),
                    ));
                }
                if let Some(peer) = &frame.peer {
                    if !valid_id(peer) {
                        return Err(ProtocolError::new(
                            ErrorCode::InvalidPeer,
                            format!("peer id must be {ID_RULE}"),
                        ));
                    }
                }
                // `"meta": null` is treated like an absent meta.
                let meta = frame.meta.filter(|m| m.get() != "null");
                if let Some(m) = meta {
                    if !is_object(m) {
                        return Err(bad("\"meta\" must be a JSON object"));
                    }
                }
                Ok(ClientMessage::Join {
                    room,
                    peer: frame.peer,
                    meta,
                    session: frame.session,
                    token: frame.token,
                })
            }
            "signal" => {
                let to = frame.to.ok_or_else(|| bad("signal needs \"to\""))?;
                let data = frame.data.ok_or_else(|| bad("signal needs \"data\""))?;
                if !is_object(data) {
                    return Err(bad("\"data\" must be a JSON object"));
                }
                Ok(ClientMessage::Signal {
                    to,
                    data,
                    seq: seq_field(frame.seq)?,
                })
            }
            "resume" => {
                let session = frame
                    .session
                    .ok_or_else(|| bad("resume needs \"session\""))?;
                let seq = seq_field(frame.seq)?.ok_or_else(|| bad("resume needs \"seq\""))?;
                Ok(ClientMessage::Resume {
                    session,
                    seq,
                    room: frame.room,
                })
            }
            "ack" => {
                let seq = seq_field(frame.seq)?.ok_or_else(|| bad("ack needs \"seq\""))?;
                Ok(ClientMessage::Ack { seq })
            }
            "leave" => Ok(ClientMessage::Leave),
            "ping" => Ok(ClientMessage::Ping),
            other => Err(bad(format!("unknown message type {other:?}"))),
        }
    }

    /// The frame as a client sends it.
    pub fn to_json(&self) -> String {
        // Cannot fail: every field is a string or already-valid raw JSON.
        serde_json::to_string(self).expect("client message serializes")
    }
}

/// What a relayed `signal` carries, read from its `data` for metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayKind {
    /// `{"description":{"type":"offer",…}}`.
    Offer,
    /// `{"description":{"type":"answer"|"pranswer",…}}`.
    Answer,
    /// `{"description":{"type":"rollback"}}`.
    Rollback,
    /// `{"candidate":{…}}`: one trickled ICE candidate.
    Candidate,
    /// `{"candidate":null}`: the sender finished gathering.
    EndOfCandidates,
    /// Anything else the application relays.
    Other,
}

impl RelayKind {
    /// Every kind, for metrics to register each label up front.
    pub const ALL: [RelayKind; 6] = [
        RelayKind::Offer,
        RelayKind::Answer,
        RelayKind::Rollback,
        RelayKind::Candidate,
        RelayKind::EndOfCandidates,
        RelayKind::Other,
    ];

    /// The `kind` label of `switchboard_messages_relayed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayKind::Offer => "offer",
            RelayKind::Answer => "answer",
            RelayKind::Rollback => "rollback",
            RelayKind::Candidate => "candidate",
            RelayKind::EndOfCandidates => "end-of-candidates",
            RelayKind::Other => "other",
        }
    }

    /// Classifies `data` without allocating: only the top-level keys and
    /// the description's `type` are looked at.
    pub fn of(data: &RawValue) -> RelayKind {
        #[derive(Deserialize)]
        struct Desc<'a> {
            #[serde(rename = "type", borrow)]
            ty: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Peek<'a> {
            #[serde(borrow)]
            description: Option<Desc<'a>>,
            // Outer None: no key; Some(None): `"candidate": null`.
            #[serde(default, borrow, deserialize_with = "present")]
            candidate: Option<Option<&'a RawValue>>,
        }
        fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
        where
            D: serde::Deserializer<'de>,
            T: Deserialize<'de>,
        {
            T::deserialize(d).map(Some)
        }
        let Ok(peek) = serde_json::from_str::<Peek>(data.get()) else {
            return RelayKind::Other;
        };
        if let Some(desc) = peek.description {
            return match desc.ty.as_deref() {
                Some("offer") => RelayKind::Offer,
                Some("answer") | Some("pranswer") => RelayKind::Answer,
                Some("rollback") => RelayKind::Rollback,
                _ => RelayKind::Other,
            };
        }
        match peek.candidate {
            Some(None) => RelayKind::EndOfCandidates,
            Some(Some(_)) => RelayKind::Candidate,
            None => RelayKind::Other,
        }
    }
}

/// The `type` of a server frame, with enough detail for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// `welcome`.
    Welcome,
    /// `peer-joined`.
    PeerJoined,
    /// `peer-left`.
    PeerLeft,
    /// `signal` (what its `data` carries is counted where it is relayed,
    /// see [`RelayKind`]).
    Signal,
    /// `pong`.
    Pong,
    /// `resumed`.
    Resumed,
    /// `ack`.
    Ack,
    /// `error`, with its code.
    Error(ErrorCode),
}

impl FrameKind {
    /// What a numbered frame (from a store) is, read from its `type`
    /// without parsing the rest.
    pub fn of_numbered(frame: &str) -> FrameKind {
        // `{"seq":N,"type":"…`: skip to the type.
        let ty = frame
            .split_once(",\"type\":\"")
            .map(|(_, rest)| rest)
            .unwrap_or("");
        if ty.starts_with("signal\"") {
            FrameKind::Signal
        } else if ty.starts_with("peer-joined\"") {
            FrameKind::PeerJoined
        } else {
            FrameKind::PeerLeft
        }
    }

    /// The frame's `type` on the wire, the `type` label of
    /// `switchboard_messages_sent_total`.
    pub fn type_str(self) -> &'static str {
        match self {
            FrameKind::Welcome => "welcome",
            FrameKind::PeerJoined => "peer-joined",
            FrameKind::PeerLeft => "peer-left",
            FrameKind::Signal => "signal",
            FrameKind::Pong => "pong",
            FrameKind::Resumed => "resumed",
            FrameKind::Ack => "ack",
            FrameKind::Error(_) => "error",
        }
    }
}

/// Server → client frames. Serialized once, then handed to the driver.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage<'a> {
    /// The answer to a successful `join`.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The room joined.
        room: &'a str,
        /// Our peer id: the one asked for, or the one the server picked.
        peer: &'a str,
        /// The peers already in the room, oldest first; the newcomer
        /// offers to each.
        peers: Vec<PeerEntry<'a>>,
        /// `iceServers`: a JSON array of `RTCIceServer` objects, first
        /// `--ice-server` URLs, then (unless `--no-turn`) this server's
        /// STUN and TURN URLs with credentials minted for this peer.
        ice_servers: &'a RawValue,
        /// The token that resumes this session after a dropped socket.
        session: &'a str,
        /// Seconds a dropped session is kept for a `resume`.
        resume_window: u64,
    },
    /// The answer to a successful `resume`; the missed messages follow.
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// The session's room.
        room: &'a str,
        /// The session's peer id.
        peer: &'a str,
        /// Who is in the room now, oldest first, without us.
        peers: Vec<PeerEntry<'a>>,
        /// Fresh `iceServers`, as in `welcome`.
        ice_servers: &'a RawValue,
        /// The session token (unchanged).
        session: &'a str,
        /// As in `welcome`.
        resume_window: u64,
        /// The highest client seq handled; the client re-sends its signals
        /// above it.
        ack: u64,
    },
    /// Another peer joined our room.
    PeerJoined {
        /// Its id.
        peer: &'a str,
        /// Its `meta`, `{}` when it sent none.
        meta: &'a RawValue,
    },
    /// A peer left, closed its connection or went idle too long.
    PeerLeft {
        /// Its id.
        peer: &'a str,
    },
    /// A relayed `signal`.
    Signal {
        /// The sender's id, set by the server from the sender's connection
        /// (a client cannot spoof it).
        from: &'a str,
        /// The sender's `data`, byte for byte.
        data: &'a RawValue,
    },
    /// The answer to `ping`.
    Pong,
    /// Every client `signal` with `seq` up to this has been handled.
    Ack {
        /// The highest client seq handled.
        seq: u64,
    },
    /// A refused client frame.
    Error {
        /// What to switch on.
        code: ErrorCode,
        /// For humans.
        message: &'a str,
    },
}

/// `frame` (a serialized server object) with `"seq":seq` put first: the
/// store numbers a session's messages as it keeps them, after the hub has
/// serialized them. One allocation, the size of the result.
pub fn with_seq(frame: &str, seq: u64) -> String {
    let body = frame.strip_prefix('{').unwrap_or(frame);
    let mut out = String::with_capacity(frame.len() + 28);
    out.push_str("{\"seq\":");
    out.push_str(itoa_u64(seq, &mut [0u8; 20]));
    if body != "}" {
        out.push(',');
    }
    out.push_str(body);
    out
}

fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// One entry of `welcome.peers`.
#[derive(Serialize)]
pub struct PeerEntry<'a> {
    /// The peer's id.
    pub peer: &'a str,
    /// Its `meta` from `join` (`{}` when it sent none).
    pub meta: &'a RawValue,
}

impl ServerMessage<'_> {
    /// The frame as the server sends it.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every field is a string,
        // a number or already-valid raw JSON.
        serde_json::to_string(self).expect("server message serializes")
    }
}

/// A server frame as a client reads it (the owned counterpart of
/// [`ServerMessage`]).
///
/// `D` is what the client expects in `signal.data`, which the protocol
/// leaves opaque; `serde_json::Value` reads any object. A frame whose `type`
/// this version does not know is [`ServerFrame::Unknown`], not an error, so
/// a newer server does not break an older client. Fields a client can do
/// without default when absent.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerFrame<D = serde_json::Value> {
    /// The answer to `join`: our id, who is here, the ICE servers.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The room joined.
        #[serde(default)]
        room: String,
        /// Our peer id.
        peer: String,
        /// The peers already there, oldest first: we offer to each.
        #[serde(default)]
        peers: Vec<PeerInfo>,
        /// `RTCIceServer` objects, left as JSON for the client to read in
        /// its own (lenient) way.
        #[serde(default)]
        ice_servers: serde_json::Value,
        /// The token for `resume` (absent from servers without sessions).
        #[serde(default)]
        session: Option<String>,
        /// Seconds a dropped session is kept.
        #[serde(default)]
        resume_window: Option<u64>,
    },
    /// A `resume` succeeded; the missed messages follow.
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// The session's room.
        #[serde(default)]
        room: String,
        /// Our peer id.
        peer: String,
        /// Who is in the room now.
        #[serde(default)]
        peers: Vec<PeerInfo>,
        /// Fresh `RTCIceServer` objects.
        #[serde(default)]
        ice_servers: serde_json::Value,
        /// The session token.
        #[serde(default)]
        session: Option<String>,
        /// Seconds a dropped session is kept.
        #[serde(default)]
        resume_window: Option<u64>,
        /// The highest client seq the server handled.
        #[serde(default)]
        ack: u64,
    },
    /// Another peer joined the room.
    PeerJoined {
        /// Its id.
        peer: String,
        /// Its `meta` (`{}` when it sent none).
        #[serde(default)]
        meta: serde_json::Value,
        /// The session seq of this message.
        #[serde(default)]
        seq: Option<u64>,
    },
    /// A peer left the room (or its connection closed or went idle).
    PeerLeft {
        /// Its id.
        peer: String,
        /// The session seq of this message.
        #[serde(default)]
        seq: Option<u64>,
    },
    /// A peer relayed `data` to us.
    Signal {
        /// The sender's id, as the server saw it.
        from: String,
        /// What it sent, read as `D`; a frame whose `data` does not read as
        /// `D` fails [`ServerFrame::parse`].
        data: D,
        /// The session seq of this message.
        #[serde(default)]
        seq: Option<u64>,
    },
    /// The answer to `ping`.
    Pong,
    /// The server handled every client signal up to `seq`.
    Ack {
        /// The highest client seq handled.
        seq: u64,
    },
    /// Something we sent was refused.
    Error {
        /// A string, not [`ErrorCode`]: a newer server may send codes this
        /// version does not know.
        code: String,
        /// For humans.
        #[serde(default)]
        message: String,
    },
    /// A frame type this version does not know.
    #[serde(other)]
    Unknown,
}

/// One entry of `welcome.peers`, as a client reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct PeerInfo {
    /// Its id.
    pub peer: String,
    /// What it sent as `meta` when it joined.
    #[serde(default)]
    pub meta: serde_json::Value,
}

impl<D: serde::de::DeserializeOwned> ServerFrame<D> {
    /// Reads one text frame from the server.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_join_with_and_without_optional_fields() {
        match ClientMessage::parse(r#"{"type":"join","room":"a-b_C9"}"#).unwrap() {
            ClientMessage::Join {
                room, peer, meta, ..
            } => {
                assert_eq!(room, "a-b_C9");
                assert!(peer.is_none());
                assert!(meta.is_none());
            }
            m => panic!("unexpected {m:?}"),
        }
        match ClientMessage::parse(r#"{"type":"join","room":"r","peer":"p","meta":{"n":1}}"#)
            .unwrap()
        {
            ClientMessage::Join { peer, meta, .. } => {
                assert_eq!(peer.as_deref(), Some("p"));
                assert_eq!(meta.unwrap().get(), r#"{"n":1}"#);
            }
            m => panic!("unexpected {m:?}"),
        }
    }

    #[test]
    fn rejects_bad_frames_with_the_right_code() {
        let cases = [
            ("not json", ErrorCode::BadMessage),
            ("[1,2]", ErrorCode::BadMessage),
            ("{}", ErrorCode::BadMessage),
            (r#"{"type":7}"#, ErrorCode::BadMessage),
            (r#"{"type":"dance"}"#, ErrorCode::BadMessage),
            (r#"{"type":"join"}"#, ErrorCode::BadMessage),
            (r#"{"type":"join","room":""}"#, ErrorCode::InvalidRoom),
            (r#"{"type":"join","room":"a b"}"#, ErrorCode::InvalidRoom),
            (r#"{"type":"join","room":"é"}"#, ErrorCode::InvalidRoom),
            (
                r#"{"type":"join","room":"r","peer":"x/y"}"#,
                ErrorCode::InvalidPeer,
            ),
            (
                r#"{"type":"join","room":"r","meta":[1]}"#,
                ErrorCode::BadMessage,
            ),
            (r#"{"type":"signal","to":"p"}"#, ErrorCode::BadMessage),
            (
                r#"{"type":"signal","to":"p","data":"x"}"#,
                ErrorCode::BadMessage,
            ),
            (r#"{"type":"signal","data":{}}"#, ErrorCode::BadMessage),
        ];
        for (text, code) in cases {
            let err = ClientMessage::parse(text).unwrap_err();
            assert_eq!(err.code, code, "{text}");
            assert!(!err.message.is_empty());
        }
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(65));
        assert_eq!(
            ClientMessage::parse(&long).unwrap_err().code,
            ErrorCode::InvalidRoom
        );
        let max = format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(64));
        assert!(ClientMessage::parse(&max).is_ok());
    }

    #[test]
    fn escaped_type_and_ids_are_understood() {
        // JSON escapes must not defeat validation or dispatch.
        let m = ClientMessage::parse(r#"{"type":"jo\u0069n","room":"r\u0031"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Join { room, .. } if room == "r1"));
    }

    #[test]
    fn signal_data_is_kept_verbatim() {
        let text = r#"{"type":"signal","to":"p","data":{"candidate":{"candidate":"c","sdpMid":"0"}},"from":"spoof"}"#;
        match ClientMessage::parse(text).unwrap() {
            ClientMessage::Signal { to, data, .. } => {
                assert_eq!(to, "p");
                assert_eq!(
                    data.get(),
                    r#"{"candidate":{"candidate":"c","sdpMid":"0"}}"#
                );
            }
            m => panic!("unexpected {m:?}"),
        }
    }

    #[test]
    fn client_messages_serialize_to_what_the_server_parses() {
        let meta = RawValue::from_string(r#"{"name":"n"}"#.into()).unwrap();
        let join = ClientMessage::Join {
            room: "r".into(),
            peer: None,
            meta: Some(&meta),
            session: None,
            token: None,
        };
        assert_eq!(
            join.to_json(),
            r#"{"type":"join","room":"r","meta":{"name":"n"}}"#
        );
        let text = join.to_json();
        match ClientMessage::parse(&text).unwrap() {
            ClientMessage::Join {
                room, peer, meta, ..
            } => {
                assert_eq!(room, "r");
                assert!(peer.is_none());
                assert_eq!(meta.unwrap().get(), r#"{"name":"n"}"#);
            }
            m => panic!("unexpected {m:?}"),
        }
        let join = ClientMessage::Join {
            room: "r".into(),
            peer: Some("p\"q".into()),
            meta: None,
            session: None,
            token: None,
        };
        assert_eq!(
            join.to_json(),
            r#"{"type":"join","room":"r","peer":"p\"q"}"#
        );
        let data = RawValue::from_string(r#"{"candidate":null}"#.into()).unwrap();
        let sig = ClientMessage::Signal {
            to: "o".into(),
            data: &data,
            seq: None,
        };
        let text = sig.to_json();
        assert_eq!(
            text,
            r#"{"type":"signal","to":"o","data":{"candidate":null}}"#
        );
        assert!(matches!(
            ClientMessage::parse(&text).unwrap(),
            ClientMessage::Signal { to, data, .. } if to == "o" && data.get() == r#"{"candidate":null}"#
        ));
        assert_eq!(ClientMessage::Leave.to_json(), r#"{"type":"leave"}"#);
        assert_eq!(ClientMessage::Ping.to_json(), r#"{"type":"ping"}"#);
    }

    #[test]
    fn server_frames_read_back_what_the_server_serializes() {
        let ice = RawValue::from_string(r#"[{"urls":["stun:h:1"]}]"#.into()).unwrap();
        let meta = RawValue::from_string(r#"{"name":"A"}"#.into()).unwrap();
        let data = RawValue::from_string(r#"{"description":{"type":"offer","sdp":"v=0"}}"#.into())
            .unwrap();
        let frames = [
            ServerMessage::Welcome {
                room: "r",
                peer: "me",
                peers: vec![PeerEntry {
                    peer: "o",
                    meta: &meta,
                }],
                ice_servers: &ice,
                session: "tok",
                resume_window: 20,
            },
            ServerMessage::PeerJoined {
                peer: "o\"x",
                meta: &meta,
            },
            ServerMessage::PeerLeft { peer: "o" },
            ServerMessage::Signal {
                from: "o",
                data: &data,
            },
            ServerMessage::Pong,
            ServerMessage::Error {
                code: ErrorCode::RoomFull,
                message: "full",
            },
        ];
        let read: Vec<ServerFrame> = frames
            .iter()
            .map(|f| ServerFrame::parse(&f.to_json()).unwrap())
            .collect();
        match &read[0] {
            ServerFrame::Welcome {
                room,
                peer,
                peers,
                ice_servers,
                session,
                resume_window,
            } => {
                assert_eq!((room.as_str(), peer.as_str()), ("r", "me"));
                assert_eq!(session.as_deref(), Some("tok"));
                assert_eq!(*resume_window, Some(20));
                assert_eq!(peers.len(), 1);
                assert_eq!(peers[0].peer, "o");
                assert_eq!(peers[0].meta["name"], "A");
                assert_eq!(ice_servers[0]["urls"][0], "stun:h:1");
            }
            f => panic!("unexpected {f:?}"),
        }
        assert!(
            matches!(&read[1], ServerFrame::PeerJoined { peer, meta, .. } if peer == "o\"x" && meta["name"] == "A")
        );
        assert!(matches!(&read[2], ServerFrame::PeerLeft { peer, .. } if peer == "o"));
        assert!(
            matches!(&read[3], ServerFrame::Signal { from, data, .. } if from == "o" && data["description"]["sdp"] == "v=0")
        );
        assert!(matches!(&read[4], ServerFrame::Pong));
        assert!(
            matches!(&read[5], ServerFrame::Error { code, message } if code == "room-full" && message == "full")
        );
    }

    #[test]
    fn session_messages_round_trip() {
        // Client side: what a client sends, as the server reads it.
        let resume = ClientMessage::Resume {
            session: "t.k".into(),
            seq: 4,
            room: Some("r".into()),
        };
        let text = resume.to_json();
        assert_eq!(
            text,
            r#"{"type":"resume","session":"t.k","seq":4,"room":"r"}"#
        );
        assert!(matches!(
            ClientMessage::parse(&text).unwrap(),
            ClientMessage::Resume { session, seq: 4, room: Some(r) } if session == "t.k" && r == "r"
        ));
        let ack = ClientMessage::Ack { seq: 9 }.to_json();
        assert_eq!(ack, r#"{"type":"ack","seq":9}"#);
        assert!(matches!(
            ClientMessage::parse(&ack).unwrap(),
            ClientMessage::Ack { seq: 9 }
        ));
        let m = ClientMessage::parse(r#"{"type":"signal","to":"o","seq":3,"data":{}}"#).unwrap();
        assert!(matches!(m, ClientMessage::Signal { seq: Some(3), .. }));
        let m =
            ClientMessage::parse(r#"{"type":"join","room":"r","peer":"p","session":"s"}"#).unwrap();
        assert!(matches!(m, ClientMessage::Join { session: Some(s), .. } if s == "s"));
        let join = ClientMessage::Join {
            room: "r".into(),
            peer: None,
            meta: None,
            session: None,
            token: Some("a.b.c".into()),
        }
        .to_json();
        assert_eq!(join, r#"{"type":"join","room":"r","token":"a.b.c"}"#);
        assert!(matches!(
            ClientMessage::parse(&join).unwrap(),
            ClientMessage::Join { token: Some(t), .. } if t == "a.b.c"
        ));
        for (text, why) in [
            (r#"{"type":"resume","seq":1}"#, "session"),
            (r#"{"type":"resume","session":"t"}"#, "seq"),
            (r#"{"type":"ack"}"#, "seq"),
            (r#"{"type":"ack","seq":-1}"#, "seq"),
            (r#"{"type":"ack","seq":"1"}"#, "seq"),
            (r#"{"type":"signal","to":"o","seq":1.5,"data":{}}"#, "seq"),
        ] {
            let e = ClientMessage::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadMessage, "{text}");
            assert!(e.message.contains(why), "{text}: {}", e.message);
        }

        // Server side: numbered frames, resumed and ack, as a client reads
        // them.
        let meta = RawValue::from_string("{}".into()).unwrap();
        let joined = ServerMessage::PeerJoined {
            peer: "o",
            meta: &meta,
        }
        .to_json();
        let numbered = with_seq(&joined, 17);
        assert_eq!(
            numbered,
            r#"{"seq":17,"type":"peer-joined","peer":"o","meta":{}}"#
        );
        assert!(matches!(
            ServerFrame::<serde_json::Value>::parse(&numbered).unwrap(),
            ServerFrame::PeerJoined { seq: Some(17), .. }
        ));
        assert_eq!(with_seq("{}", 0), r#"{"seq":0}"#);
        assert_eq!(
            with_seq(r#"{"type":"pong"}"#, u64::MAX),
            format!(r#"{{"seq":{},"type":"pong"}}"#, u64::MAX)
        );
        let ice = RawValue::from_string("[]".into()).unwrap();
        let resumed = ServerMessage::Resumed {
            room: "r",
            peer: "me",
            peers: vec![PeerEntry {
                peer: "o",
                meta: &meta,
            }],
            ice_servers: &ice,
            session: "tok",
            resume_window: 20,
            ack: 5,
        }
        .to_json();
        assert_eq!(
            resumed,
            r#"{"type":"resumed","room":"r","peer":"me","peers":[{"peer":"o","meta":{}}],"iceServers":[],"session":"tok","resumeWindow":20,"ack":5}"#
        );
        match ServerFrame::<serde_json::Value>::parse(&resumed).unwrap() {
            ServerFrame::Resumed {
                peer,
                peers,
                ack,
                session,
                ..
            } => {
                assert_eq!((peer.as_str(), peers.len(), ack), ("me", 1, 5));
                assert_eq!(session.as_deref(), Some("tok"));
            }
            f => panic!("unexpected {f:?}"),
        }
        let ack = ServerMessage::Ack { seq: 3 }.to_json();
        assert_eq!(ack, r#"{"type":"ack","seq":3}"#);
        assert!(matches!(
            ServerFrame::<serde_json::Value>::parse(&ack).unwrap(),
            ServerFrame::Ack { seq: 3 }
        ));
        // A v1 server's frames (no seq, no session) still read.
        assert!(matches!(
            ServerFrame::<serde_json::Value>::parse(r#"{"type":"peer-left","peer":"o"}"#).unwrap(),
            ServerFrame::PeerLeft { seq: None, .. }
        ));
    }

    #[test]
    fn server_frames_from_a_newer_server_are_tolerated() {
        // A type this version does not know, with fields of its own.
        let f: ServerFrame =
            ServerFrame::parse(r#"{"type":"room-renamed","to":"x","n":[1]}"#).unwrap();
        assert!(matches!(f, ServerFrame::Unknown));
        // Unknown fields and error codes on known frames.
        let f: ServerFrame =
            ServerFrame::parse(r#"{"type":"error","code":"new-code","message":"m","extra":1}"#)
                .unwrap();
        assert!(matches!(f, ServerFrame::Error { code, .. } if code == "new-code"));
        let f: ServerFrame =
            ServerFrame::parse(r#"{"type":"welcome","peer":"me","version":2}"#).unwrap();
        assert!(
            matches!(f, ServerFrame::Welcome { peer, peers, .. } if peer == "me" && peers.is_empty())
        );
        // Broken frames are errors, not panics.
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"type":7}"#,
            r#"{"type":"peer-left"}"#,
            r#"{"type":"signal","from":"o"}"#,
        ] {
            assert!(
                ServerFrame::<serde_json::Value>::parse(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn relay_kinds() {
        let kind = |s: &str| RelayKind::of(&RawValue::from_string(s.to_string()).unwrap());
        assert_eq!(
            kind(r#"{"description":{"type":"offer","sdp":"v=0"}}"#),
            RelayKind::Offer
        );
        assert_eq!(
            kind(r#"{"description":{"type":"answer","sdp":""}}"#),
            RelayKind::Answer
        );
        assert_eq!(
            kind(r#"{"description":{"type":"rollback"}}"#),
            RelayKind::Rollback
        );
        assert_eq!(
            kind(r#"{"candidate":{"candidate":"x"}}"#),
            RelayKind::Candidate
        );
        assert_eq!(kind(r#"{"candidate":null}"#), RelayKind::EndOfCandidates);
        assert_eq!(kind(r#"{"hello":1}"#), RelayKind::Other);
        assert_eq!(kind(r#"{"description":"weird"}"#), RelayKind::Other);
    }

    #[test]
    fn server_messages_serialize_to_documented_shapes() {
        let raw = RawValue::from_string("[]".into()).unwrap();
        let meta = RawValue::from_string("{}".into()).unwrap();
        let w = ServerMessage::Welcome {
            room: "r",
            peer: "me",
            peers: vec![PeerEntry {
                peer: "o",
                meta: &meta,
            }],
            ice_servers: &raw,
            session: "s",
            resume_window: 20,
        };
        assert_eq!(
            w.to_json(),
            r#"{"type":"welcome","room":"r","peer":"me","peers":[{"peer":"o","meta":{}}],"iceServers":[],"session":"s","resumeWindow":20}"#
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
        let e = ServerMessage::Error {
            code: ErrorCode::PeerIdTaken,
            message: "m",
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"error","code":"peer-id-taken","message":"m"}"#
        );
        for c in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
        }
    }
}
