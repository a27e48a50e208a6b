//! What the hub keeps beyond one connection: rooms, members and sessions,
//! behind the [`Store`] trait.
//!
//! The hub owns the protocol: it parses, validates, rate-limits, builds every
//! frame, signs tokens and decides when a session detaches, resumes or ends.
//! A store owns only the data those decisions need to survive a socket (and,
//! with Redis, a node), and offers it as a few atomic operations ([`Op`]):
//! a bounded, unique room insert; a numbered, capped per-session buffer;
//! fenced updates. Two nodes racing for the last seat of a room, or for one
//! session, are settled by the store, in one step.
//!
//! Messages a store numbers for a session reach the node holding that
//! session's socket as [`Event::Deliver`], in seq order: the in-memory store
//! queues them for [`MemoryStore::poll_event`], the Redis store publishes
//! them to the owning node.
//!
//! Replies come back in the order the ops were submitted; the hub relies on
//! that.

pub mod memory;

pub use memory::MemoryStore;

use serde_json::value::RawValue;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A session, for the session's whole life (across sockets and nodes).
/// 128 random bits: knowing one is no help in guessing another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u128);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One `serve` process of a cluster; a restarted process is a new node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Which socket of a session an op comes from: it grows by one on every
/// attach (join, resume), so a socket that lost its session to a resume
/// elsewhere can no longer act for it.
pub type Epoch = u64;

/// A member of a room as the hub shows it: id and `meta`.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// The peer id.
    pub peer: Box<str>,
    /// Its `meta` from `join`.
    pub meta: Box<RawValue>,
}

/// Something for a store to do, atomically.
#[derive(Debug, Clone)]
pub enum Op {
    /// Add a session to a room, unless the room is full or the id is
    /// taken; number `joined` into the buffer of every other member.
    Join {
        /// The new session.
        sid: SessionId,
        /// The room.
        room: Box<str>,
        /// The id, already picked.
        peer: Box<str>,
        /// Its `meta`.
        meta: Box<RawValue>,
        /// The node holding the socket.
        node: NodeId,
        /// Room capacity.
        max_peers: usize,
        /// An earlier session of this client (its token verified by the
        /// hub for this room and id): when it holds `peer`, the join
        /// replaces it silently instead of failing with `Taken`.
        takeover: Option<SessionId>,
        /// The `peer-joined` frame for the others, unnumbered.
        joined: String,
        /// The session's lease: it ends unless refreshed or resumed in time.
        lease: Duration,
        /// Unacked messages kept per session.
        buffer: usize,
    },
    /// Relay `frame` to `to` in the sender's room, numbered into its buffer.
    Relay {
        /// The sender.
        sid: SessionId,
        /// The sender's socket.
        epoch: Epoch,
        /// The sender's client seq; `None` for v1 signals.
        client_seq: Option<u64>,
        /// The target peer id.
        to: Box<str>,
        /// The `signal` frame, unnumbered.
        frame: String,
    },
    /// The client has every message of `sid` up to `seq`.
    Ack {
        /// The session.
        sid: SessionId,
        /// Its socket.
        epoch: Epoch,
        /// Highest seq the client has.
        seq: u64,
    },
    /// Take a session over for a new socket on `node`.
    Resume {
        /// The session (the hub checked the token's signature).
        sid: SessionId,
        /// Its room, from the token.
        room: Box<str>,
        /// Its id, from the token.
        peer: Box<str>,
        /// The highest seq the client has.
        last_seen: u64,
        /// The new socket's node.
        node: NodeId,
        /// The lease from now on.
        lease: Duration,
    },
    /// The socket is gone without a goodbye: keep the session for
    /// `window`, remembering that `delivered` was the last seq sent to it.
    Detach {
        /// The session.
        sid: SessionId,
        /// Its socket.
        epoch: Epoch,
        /// Last seq written to the socket.
        delivered: u64,
        /// How long the session is kept.
        window: Duration,
    },
    /// End a session and number `left` into the buffer of every other
    /// member. With `epoch`, only if that socket still owns it (`leave`,
    /// close); without, only if it is due (expiry, see [`Op::Sweep`]).
    End {
        /// The session.
        sid: SessionId,
        /// The socket that ends it, or `None` for expiry.
        epoch: Option<Epoch>,
        /// The `peer-left` frame for the others, unnumbered.
        left: String,
    },
    /// List sessions that are due to end: lease passed, or detached with a
    /// message it can never get back (buffer overflow).
    Sweep,
    /// Extend the leases of sessions attached on this node.
    Refresh {
        /// (session, socket) pairs.
        sessions: Vec<(SessionId, Epoch)>,
        /// New lease from now.
        lease: Duration,
    },
    /// The buffered messages of `sid` after seq `after` (to fill a gap in
    /// what reached this node); [`Reply::Stale`] if the store does not know
    /// `sid`.
    Fetch {
        /// The session.
        sid: SessionId,
        /// Send those above.
        after: u64,
    },
}

/// Why a resume was refused; the hub words the `resume-failed` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeRefused {
    /// No such session, or not in that room under that id.
    Unknown,
    /// Its window (or lease) passed.
    Expired,
    /// A message the client has not seen is no longer buffered.
    Overflowed,
    /// `last_seen` is above what was ever sent.
    AheadOfServer,
}

/// A store's answer to one [`Op`].
#[derive(Debug)]
pub enum Reply {
    /// Join done: the others, oldest first, and the new socket's epoch.
    Joined {
        /// Members before us.
        peers: Vec<MemberInfo>,
        /// Our epoch.
        epoch: Epoch,
    },
    /// `Join` refused: the room has `max_peers`.
    RoomFull,
    /// `Join` refused: the id is in use.
    Taken,
    /// `Relay` done.
    Relayed,
    /// `Relay` of a client seq already handled; nothing was done.
    Duplicate,
    /// `Relay` target is not in the room.
    UnknownPeer,
    /// The op's epoch is no longer the session's (it was resumed
    /// elsewhere, or it ended): nothing was done.
    Stale,
    /// Resume done.
    Resumed {
        /// Who is in the room now, without us.
        peers: Vec<MemberInfo>,
        /// The new socket's epoch.
        epoch: Epoch,
        /// Highest client seq handled.
        client_seq: u64,
        /// Messages after `last_seen`, in order.
        replay: Vec<(u64, Arc<str>)>,
    },
    /// Resume refused.
    ResumeRefused(ResumeRefused),
    /// `Sweep`: sessions to end, as (session, room, peer).
    Due(Vec<(SessionId, Box<str>, Box<str>)>),
    /// `Fetch`: buffered messages, in order.
    Fetched(Vec<(u64, Arc<str>)>),
    /// Done; nothing to report.
    Done,
    /// The store could not be reached; nothing was done (the text says
    /// why, for logs).
    Unavailable(String),
}

/// Something a store tells the node holding a session's socket.
#[derive(Debug, Clone)]
pub enum Event {
    /// Send `frame` (already numbered `seq`) to `sid`'s socket.
    Deliver {
        /// The session.
        sid: SessionId,
        /// Its seq.
        seq: u64,
        /// The numbered frame.
        frame: Arc<str>,
    },
    /// `sid` was resumed or taken over elsewhere: close the socket of
    /// `epoch` without ending the session.
    Evict {
        /// The session.
        sid: SessionId,
        /// The socket that lost it.
        epoch: Epoch,
    },
}

/// Storage behind the hub: memory for one node ([`MemoryStore`]) or Redis
/// for a cluster (`switchboard-cluster`). Implementations must run ops
/// atomically and reply in submission order.
pub trait Store {
    /// The reply future; [`std::future::Ready`] for a store that answers at
    /// once.
    type Reply: Future<Output = Reply> + Send + 'static;

    /// Starts `op`. `now` is the hub's clock, for stores without one of
    /// their own; a shared store uses its own so nodes agree.
    fn apply(&mut self, op: Op, now: Instant) -> Self::Reply;
}
