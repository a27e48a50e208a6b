//! The in-process [`Store`]: everything in two maps, for a single node.
//! This is the default; it needs nothing but the process it lives in.

use super::{Epoch, Event, MemberInfo, NodeId, Op, Reply, ResumeRefused, SessionId, Store};
use crate::protocol::with_seq;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::future::Ready;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Session {
    room: Box<str>,
    peer: Box<str>,
    meta: Box<RawValue>,
    node: NodeId,
    epoch: Epoch,
    attached: bool,
    /// The session ends when this passes (lease while attached, window
    /// while detached).
    deadline: Instant,
    /// Last seq handed out.
    seq: u64,
    /// Messages after `floor`, oldest first, at most `cap`.
    buffer: VecDeque<(u64, Arc<str>)>,
    /// Highest seq no longer buffered (acked or dropped).
    floor: u64,
    cap: usize,
    /// Highest client seq handled.
    client_seq: u64,
    /// Last seq written to the socket before it was lost.
    delivered_at_detach: u64,
}

impl Session {
    /// Detached and missing a message the client cannot have seen: it can
    /// never be resumed.
    fn lost(&self) -> bool {
        !self.attached && self.floor > self.delivered_at_detach
    }
}

/// Rooms and sessions in process memory.
#[derive(Default)]
pub struct MemoryStore {
    /// Members per room, oldest first.
    rooms: HashMap<Box<str>, Vec<SessionId>>,
    sessions: HashMap<SessionId, Session>,
    events: VecDeque<Event>,
    /// Entries over all buffers, kept as they change: the gauge is read
    /// after every message.
    buffered: usize,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Next message for a socket on this node.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sessions kept (attached or detached).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Messages buffered over all sessions (the
    /// `switchboard_session_buffered_messages` gauge).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Runs one op at once.
    pub fn run(&mut self, op: Op, now: Instant) -> Reply {
        match op {
            Op::Join {
                sid,
                room,
                peer,
                meta,
                node,
                max_peers,
                takeover,
                joined,
                lease,
                buffer,
            } => {
                let members = self.rooms.get(&room).map(Vec::as_slice).unwrap_or(&[]);
                let holder = members
                    .iter()
                    .copied()
                    .find(|m| self.sessions.get(m).is_some_and(|s| s.peer == peer));
                let replaced = match holder {
                    Some(old) if takeover == Some(old) => Some(old),
                    Some(_) => return Reply::Taken,
                    None => None,
                };
                if members.len() - usize::from(replaced.is_some()) >= max_peers {
                    return Reply::RoomFull;
                }
                if let Some(old) = replaced {
                    self.remove(old);
                }
                let members = self.rooms.entry(room.clone()).or_default();
                let others: Vec<SessionId> = members.clone();
                members.push(sid);
                let peers = others
                    .iter()
                    .filter_map(|m| self.sessions.get(m))
                    .map(|s| MemberInfo {
                        peer: s.peer.clone(),
                        meta: s.meta.clone(),
                    })
                    .collect();
                self.sessions.insert(
                    sid,
                    Session {
                        room,
                        peer,
                        meta,
                        node,
                        epoch: 1,
                        attached: true,
                        deadline: now + lease,
                        seq: 0,
                        buffer: VecDeque::new(),
                        floor: 0,
                        cap: buffer.max(1),
                        client_seq: 0,
                        delivered_at_detach: 0,
                    },
                );
                for other in others {
                    self.append(other, &joined);
                }
                Reply::Joined { peers, epoch: 1 }
            }
            Op::Relay {
                sid,
                epoch,
                client_seq,
                to,
                frame,
            } => {
                let Some(s) = self.sessions.get_mut(&sid) else {
                    return Reply::Stale;
                };
                if s.epoch != epoch {
                    return Reply::Stale;
                }
                if let Some(n) = client_seq {
                    if n <= s.client_seq {
                        return Reply::Duplicate;
                    }
                    s.client_seq = n;
                }
                let room = s.room.clone();
                let target = self.rooms.get(&room).and_then(|members| {
                    members
                        .iter()
                        .copied()
                        .find(|m| self.sessions.get(m).is_some_and(|t| *t.peer == *to))
                });
                match target {
                    Some(t) => {
                        self.append(t, &frame);
                        Reply::Relayed
                    }
                    None => Reply::UnknownPeer,
                }
            }
            Op::Ack { sid, epoch, seq } => {
                if let Some(s) = self.sessions.get_mut(&sid).filter(|s| s.epoch == epoch) {
                    let seq = seq.min(s.seq);
                    while s.buffer.front().is_some_and(|(n, _)| *n <= seq) {
                        s.buffer.pop_front();
                        self.buffered -= 1;
                    }
                    s.floor = s.floor.max(seq);
                }
                Reply::Done
            }
            Op::Resume {
                sid,
                room,
                peer,
                last_seen,
                node,
                lease,
            } => {
                let Some(s) = self
                    .sessions
                    .get_mut(&sid)
                    .filter(|s| s.room == room && s.peer == peer)
                else {
                    return Reply::ResumeRefused(ResumeRefused::Unknown);
                };
                // The order of these checks is the Redis store's too.
                if last_seen > s.seq {
                    return Reply::ResumeRefused(ResumeRefused::AheadOfServer);
                }
                if last_seen < s.floor {
                    return Reply::ResumeRefused(ResumeRefused::Overflowed);
                }
                if s.deadline <= now || s.lost() {
                    return Reply::ResumeRefused(ResumeRefused::Expired);
                }
                if s.attached {
                    self.events.push_back(Event::Evict {
                        sid,
                        epoch: s.epoch,
                    });
                }
                s.epoch += 1;
                s.attached = true;
                s.node = node;
                s.deadline = now + lease;
                while s.buffer.front().is_some_and(|(n, _)| *n <= last_seen) {
                    s.buffer.pop_front();
                    self.buffered -= 1;
                }
                s.floor = last_seen.max(s.floor);
                let replay = s.buffer.iter().cloned().collect();
                let (epoch, client_seq) = (s.epoch, s.client_seq);
                let peers = self.members_except(&room, sid);
                Reply::Resumed {
                    peers,
                    epoch,
                    client_seq,
                    replay,
                }
            }
            Op::Detach {
                sid,
                epoch,
                delivered,
                window,
            } => {
                if let Some(s) = self.sessions.get_mut(&sid).filter(|s| s.epoch == epoch) {
                    s.attached = false;
                    s.deadline = now + window;
                    s.delivered_at_detach = delivered;
                }
                Reply::Done
            }
            Op::End { sid, epoch, left } => {
                let Some(s) = self.sessions.get(&sid) else {
                    return Reply::Stale;
                };
                let allowed = match epoch {
                    Some(e) => s.epoch == e,
                    None => s.deadline <= now || s.lost(),
                };
                if !allowed {
                    return Reply::Stale;
                }
                let room = s.room.clone();
                self.remove(sid);
                for other in self.rooms.get(&room).cloned().unwrap_or_default() {
                    self.append(other, &left);
                }
                Reply::Done
            }
            Op::Sweep => {
                let mut due: Vec<(SessionId, Box<str>, Box<str>)> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.deadline <= now || s.lost())
                    .map(|(id, s)| (*id, s.room.clone(), s.peer.clone()))
                    .collect();
                due.sort();
                Reply::Due(due)
            }
            Op::Refresh { sessions, lease } => {
                for (sid, epoch) in sessions {
                    if let Some(s) = self
                        .sessions
                        .get_mut(&sid)
                        .filter(|s| s.epoch == epoch && s.attached)
                    {
                        s.deadline = now + lease;
                    }
                }
                Reply::Done
            }
            Op::Fetch { sid, after } => match self.sessions.get(&sid) {
                Some(s) => Reply::Fetched(
                    s.buffer
                        .iter()
                        .filter(|(n, _)| *n > after)
                        .cloned()
                        .collect(),
                ),
                None => Reply::Stale,
            },
        }
    }

    fn members_except(&self, room: &str, me: SessionId) -> Vec<MemberInfo> {
        self.rooms
            .get(room)
            .map(|members| {
                members
                    .iter()
                    .filter(|m| **m != me)
                    .filter_map(|m| self.sessions.get(m))
                    .map(|s| MemberInfo {
                        peer: s.peer.clone(),
                        meta: s.meta.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Numbers `frame` into `sid`'s buffer and delivers it if attached.
    fn append(&mut self, sid: SessionId, frame: &str) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        s.seq += 1;
        let numbered: Arc<str> = with_seq(frame, s.seq).into();
        if s.buffer.len() >= s.cap {
            if let Some((n, _)) = s.buffer.pop_front() {
                s.floor = n;
                self.buffered -= 1;
            }
        }
        s.buffer.push_back((s.seq, numbered.clone()));
        self.buffered += 1;
        if s.attached {
            self.events.push_back(Event::Deliver {
                sid,
                seq: s.seq,
                frame: numbered,
            });
        }
    }

    /// Forgets a session; an attached one's socket is told.
    fn remove(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.remove(&sid) else {
            return;
        };
        self.buffered -= s.buffer.len();
        if s.attached {
            self.events.push_back(Event::Evict {
                sid,
                epoch: s.epoch,
            });
        }
        if let Some(members) = self.rooms.get_mut(&s.room) {
            members.retain(|m| *m != sid);
            if members.is_empty() {
                self.rooms.remove(&s.room);
            }
        }
    }

    /// Rooms with at least one session.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// How long the session of `sid` has left, for tests.
    pub fn remaining(&self, sid: SessionId, now: Instant) -> Option<Duration> {
        self.sessions
            .get(&sid)
            .map(|s| s.deadline.saturating_duration_since(now))
    }
}

impl Store for MemoryStore {
    type Reply = Ready<Reply>;

    fn apply(&mut self, op: Op, now: Instant) -> Ready<Reply> {
        std::future::ready(self.run(op, now))
    }
}
