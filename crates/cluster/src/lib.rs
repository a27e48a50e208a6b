//! The Redis [`Store`] behind switchboard's signaling hub, so that several
//! `serve` nodes share rooms, sessions and routing.
//!
//! The hub keeps the protocol's rules; this crate keeps only the data, in
//! one Redis (a primary, optionally with replicas; not Redis Cluster, as the
//! script touches keys it derives itself). Every op runs inside one Lua
//! script (`store.lua`), so two nodes racing for the last seat of a room or
//! for one session are settled atomically. Ops queued at the same moment go
//! in one script call: one round trip, applied in order.
//!
//! Numbered messages reach the node holding the session's socket through
//! Redis pub/sub (channel `sb:n:<node>`), read by [`RedisStore::subscribe`].
//! Pub/sub may drop messages while a connection is down; the hub notices the
//! gap in a session's seqs (or is told to [resync](Incoming::Subscribed)) and
//! fetches what it missed from the session's buffer.

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{RedisResult, Value};
use signal::store::{Epoch, Event, MemberInfo, NodeId, Op, Reply, ResumeRefused, SessionId, Store};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

const SCRIPT: &str = include_str!("store.lua");
/// Ops per script call at most; a batch holds Redis for its whole run.
const MAX_BATCH: usize = 256;
/// Sessions listed per sweep.
const SWEEP_LIMIT: usize = 500;
/// A call slower than this counts as failed: the hub tells clients
/// `unavailable` rather than hang them.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const SECRET_KEY: &str = "sb:secret";

/// Round trips and failures, for metrics.
pub type Observer = Arc<dyn Fn(Duration, bool) + Send + Sync>;

struct Job {
    op: Op,
    reply: oneshot::Sender<Reply>,
}

/// A handle on the store; clones share one Redis connection and one batch
/// queue, so ops keep the order they were applied in.
#[derive(Clone)]
pub struct RedisStore {
    jobs: mpsc::UnboundedSender<Job>,
    conn: ConnectionManager,
    client: redis::Client,
}

/// What [`RedisStore::subscribe`] hands on.
#[derive(Debug)]
pub enum Incoming {
    /// A message for a socket on this node.
    Event(Event),
    /// (Re)subscribed: messages published while unsubscribed are lost, so
    /// the hub should fetch what its sessions missed.
    Subscribed,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`). Fails when Redis cannot
    /// be reached now; later outages are survived (ops fail with
    /// [`Reply::Unavailable`] meanwhile, and the connection is re-made).
    pub async fn connect(url: &str, observe: Observer) -> anyhow::Result<RedisStore> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("bad --redis URL {url:?}: {e}"))?;
        let conn = tokio::time::timeout(CALL_TIMEOUT * 2, ConnectionManager::new(client.clone()))
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach Redis at {url}: timed out"))?
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {url}: {e}"))?;
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, conn.clone(), observe));
        info!(%url, "cluster store: Redis");
        Ok(RedisStore { jobs, conn, client })
    }

    /// The session-signing secret every node shares: set by the first node
    /// to ask, read by the others.
    pub async fn shared_secret(&self) -> anyhow::Result<Vec<u8>> {
        let mut conn = self.conn.clone();
        let mine: String = format!("{:032x}", rand::random::<u128>());
        let _: Value = redis::cmd("SET")
            .arg(SECRET_KEY)
            .arg(&mine)
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let shared: String = redis::cmd("GET")
            .arg(SECRET_KEY)
            .query_async(&mut conn)
            .await?;
        Ok(shared.into_bytes())
    }

    /// Messages buffered for sessions, over the whole cluster; `None` when
    /// Redis does not answer within a second.
    pub async fn buffered(&self) -> Option<i64> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg("sb:buffered").to_owned();
        let get = cmd.query_async::<Option<i64>>(&mut conn);
        match tokio::time::timeout(Duration::from_secs(1), get).await {
            Ok(Ok(n)) => Some(n.unwrap_or(0)),
            _ => None,
        }
    }

    /// True when Redis answers a PING within a second.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(_))
        )
    }

    /// Messages for sockets on `node`, for as long as the receiver lives;
    /// re-subscribes after a lost connection.
    pub fn subscribe(&self, node: NodeId) -> mpsc::UnboundedReceiver<Incoming> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.client.clone();
        let channel = format!("sb:n:{node}");
        tokio::spawn(async move {
            loop {
                match subscribe_once(&client, &channel, &tx).await {
                    Ok(()) => warn!("cluster store: subscription ended; re-subscribing"),
                    Err(e) => warn!("cluster store: cannot subscribe: {e}"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        rx
    }
}

async fn subscribe_once(
    client: &redis::Client,
    channel: &str,
    tx: &mpsc::UnboundedSender<Incoming>,
) -> RedisResult<()> {
    let mut ps = client.get_async_pubsub().await?;
    ps.subscribe(channel).await?;
    if tx.send(Incoming::Subscribed).is_err() {
        return Ok(());
    }
    let mut messages = ps.on_message();
    while let Some(msg) = messages.next().await {
        match parse_event(msg.get_payload_bytes()) {
            Some(ev) => {
                if tx.send(Incoming::Event(ev)).is_err() {
                    return Ok(());
                }
            }
            None => warn!("cluster store: unreadable message on {channel}"),
        }
    }
    Ok(())
}

/// `D SID SEQ FRAME` or `E SID EPOCH`.
fn parse_event(payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(' ')?;
    let (sid, rest) = rest.split_once(' ')?;
    let sid = SessionId(u128::from_str_radix(sid, 16).ok()?);
    match kind {
        "D" => {
            let (seq, frame) = rest.split_once(' ')?;
            Some(Event::Deliver {
                sid,
                seq: seq.parse().ok()?,
                frame: frame.into(),
            })
        }
        "E" => Some(Event::Evict {
            sid,
            epoch: rest.parse().ok()?,
        }),
        _ => None,
    }
}

impl Store for RedisStore {
    type Reply = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn apply(&mut self, op: Op, _now: Instant) -> Self::Reply {
        let (reply, rx) = oneshot::channel();
        let sent = self.jobs.send(Job { op, reply });
        Box::pin(async move {
            if sent.is_err() {
                return Reply::Unavailable("store task stopped".into());
            }
            rx.await
                .unwrap_or_else(|_| Reply::Unavailable("store task stopped".into()))
        })
    }
}

/// Runs queued ops in batches, one script call each, in order.
async fn run(mut rx: mpsc::UnboundedReceiver<Job>, mut conn: ConnectionManager, observe: Observer) {
    let script = redis::Script::new(SCRIPT);
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut call = script.prepare_invoke();
        for job in &batch {
            encode(&job.op, &mut call);
        }
        let started = Instant::now();
        let result =
            tokio::time::timeout(CALL_TIMEOUT, call.invoke_async::<Value>(&mut conn)).await;
        let result = match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        observe(started.elapsed(), result.is_ok());
        match result {
            Ok(Value::Array(replies)) if replies.len() == batch.len() => {
                for (job, v) in batch.drain(..).zip(replies) {
                    let reply = decode(&job.op, v);
                    let _ = job.reply.send(reply);
                }
            }
            other => {
                let why = match other {
                    Err(e) => e,
                    Ok(v) => format!("unexpected script reply {v:?}"),
                };
                warn!("cluster store: {} ops failed: {why}", batch.len());
                for job in batch.drain(..) {
                    let _ = job.reply.send(Reply::Unavailable(why.clone()));
                }
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Appends `op` to the script's ARGV as name, count, args.
fn encode(op: &Op, call: &mut redis::ScriptInvocation<'_>) {
    fn put(call: &mut redis::ScriptInvocation<'_>, name: &str, args: &[&str]) {
        call.arg(name).arg(args.len());
        for a in args {
            call.arg(*a);
        }
    }
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
            let takeover = takeover.map(|t| t.to_string()).unwrap_or_default();
            put(
                call,
                "join",
                &[
                    &sid.to_string(),
                    room,
                    peer,
                    meta.get(),
                    &node.to_string(),
                    &max_peers.to_string(),
                    &takeover,
                    joined,
                    &ms(*lease).to_string(),
                    &buffer.to_string(),
                ],
            );
        }
        Op::Relay {
            sid,
            epoch,
            client_seq,
            to,
            frame,
        } => {
            let cseq = client_seq.map(|n| n.to_string()).unwrap_or_default();
            put(
                call,
                "relay",
                &[&sid.to_string(), &epoch.to_string(), &cseq, to, frame],
            );
        }
        Op::Ack { sid, epoch, seq } => put(
            call,
            "ack",
            &[&sid.to_string(), &epoch.to_string(), &seq.to_string()],
        ),
        Op::Resume {
            sid,
            room,
            peer,
            last_seen,
            node,
            lease,
        } => put(
            call,
            "resume",
            &[
                &sid.to_string(),
                room,
                peer,
                &last_seen.to_string(),
                &node.to_string(),
                &ms(*lease).to_string(),
            ],
        ),
        Op::Detach {
            sid,
            epoch,
            delivered,
            window,
        } => put(
            call,
            "detach",
            &[
                &sid.to_string(),
                &epoch.to_string(),
                &delivered.to_string(),
                &ms(*window).to_string(),
            ],
        ),
        Op::End { sid, epoch, left } => {
            let epoch = epoch.map(|e| e.to_string()).unwrap_or_default();
            put(call, "end", &[&sid.to_string(), &epoch, left]);
        }
        Op::Sweep => put(call, "sweep", &[&SWEEP_LIMIT.to_string()]),
        Op::Refresh { sessions, lease } => {
            call.arg("refresh")
                .arg(1 + 2 * sessions.len())
                .arg(ms(*lease));
            for (sid, epoch) in sessions {
                call.arg(sid.to_string()).arg(*epoch);
            }
        }
        Op::Fetch { sid, after } => put(call, "fetch", &[&sid.to_string(), &after.to_string()]),
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn list(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) => items,
        _ => &[],
    }
}

fn members(v: &Value) -> Vec<MemberInfo> {
    list(v)
        .chunks(2)
        .filter_map(|pair| {
            let peer = text(pair.first()?)?;
            let meta =
                serde_json::value::RawValue::from_string(text(pair.get(1)?)?.to_string()).ok()?;
            Some(MemberInfo {
                peer: peer.into(),
                meta,
            })
        })
        .collect()
}

/// Numbered frames of a buffer whose first entry is seq `first`.
fn frames(first: u64, v: &Value) -> Vec<(u64, Arc<str>)> {
    list(v)
        .iter()
        .enumerate()
        .filter_map(|(i, f)| Some((first + i as u64, Arc::from(text(f)?))))
        .collect()
}

fn decode(op: &Op, v: Value) -> Reply {
    let items = list(&v);
    let Some(tag) = items.first().and_then(text) else {
        return Reply::Unavailable(format!("unreadable reply {v:?}"));
    };
    let epoch = |i: usize| -> Epoch { items.get(i).and_then(int).unwrap_or(0) };
    match (op, tag) {
        (Op::Join { .. }, "joined") => Reply::Joined {
            epoch: epoch(1),
            peers: items.get(2).map(members).unwrap_or_default(),
        },
        (Op::Join { .. }, "taken") => Reply::Taken,
        (Op::Join { .. }, "full") => Reply::RoomFull,
        (Op::Relay { .. }, "relayed") => Reply::Relayed,
        (Op::Relay { .. }, "dup") => Reply::Duplicate,
        (Op::Relay { .. }, "unknown") => Reply::UnknownPeer,
        (_, "stale") => Reply::Stale,
        (Op::Resume { .. }, "resumed") => {
            let floor = items.get(3).and_then(int).unwrap_or(0);
            Reply::Resumed {
                epoch: epoch(1),
                client_seq: items.get(2).and_then(int).unwrap_or(0),
                replay: items
                    .get(4)
                    .map(|f| frames(floor + 1, f))
                    .unwrap_or_default(),
                peers: items.get(5).map(members).unwrap_or_default(),
            }
        }
        (Op::Resume { .. }, "unknown") => Reply::ResumeRefused(ResumeRefused::Unknown),
        (Op::Resume { .. }, "ahead") => Reply::ResumeRefused(ResumeRefused::AheadOfServer),
        (Op::Resume { .. }, "overflowed") => Reply::ResumeRefused(ResumeRefused::Overflowed),
        (Op::Resume { .. }, "expired") => Reply::ResumeRefused(ResumeRefused::Expired),
        (Op::Sweep, "due") => Reply::Due(
            items
                .get(1)
                .map(list)
                .unwrap_or_default()
                .chunks(3)
                .filter_map(|c| {
                    let sid = SessionId(u128::from_str_radix(text(c.first()?)?, 16).ok()?);
                    Some((sid, text(c.get(1)?)?.into(), text(c.get(2)?)?.into()))
                })
                .collect(),
        ),
        (Op::Fetch { .. }, "fetched") => {
            let before = items.get(1).and_then(int).unwrap_or(0);
            Reply::Fetched(
                items
                    .get(2)
                    .map(|f| frames(before + 1, f))
                    .unwrap_or_default(),
            )
        }
        (_, "done") => Reply::Done,
        (_, other) => Reply::Unavailable(format!("unexpected reply {other:?} to {op:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_junk_does_not() {
        match parse_event(b"D 0000000000000000000000000000002a 7 {\"seq\":7}") {
            Some(Event::Deliver { sid, seq, frame }) => {
                assert_eq!((sid, seq, &*frame), (SessionId(42), 7, "{\"seq\":7}"));
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            parse_event(b"E ff 3"),
            Some(Event::Evict {
                sid: SessionId(255),
                epoch: 3
            })
        ));
        for junk in [
            &b""[..],
            b"D",
            b"D xyz 1 {}",
            b"E ff",
            b"X ff 1",
            b"D ff -1 {}",
            b"\xff\xfe",
        ] {
            assert!(parse_event(junk).is_none(), "{junk:?}");
        }
    }
}
