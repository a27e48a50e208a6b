//! The two stores must not drift apart: one script of ops, run against the
//! in-memory store and against the Redis store (a real `redis-server`),
//! gives the same replies and the same deliveries, in the same order.

use cluster::{Incoming, RedisStore};
use serde_json::value::RawValue;
use signal::store::{Event, MemoryStore, NodeId, Op, Reply, SessionId, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODE: NodeId = NodeId(0xabc);
const LEASE: Duration = Duration::from_secs(30);

// Shared with the switchboard crate's tests, which restart Redis too.
#[path = "../../switchboard/tests/common/redis.rs"]
#[allow(dead_code)]
mod redis;

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_string()).unwrap()
}

fn join(sid: u128, room: &str, peer: &str, max: usize, takeover: Option<u128>) -> Op {
    Op::Join {
        sid: SessionId(sid),
        room: room.into(),
        peer: peer.into(),
        meta: raw(&format!(r#"{{"name":"{peer}"}}"#)),
        node: NODE,
        max_peers: max,
        takeover: takeover.map(SessionId),
        joined: format!(r#"{{"type":"peer-joined","peer":"{peer}","meta":{{}}}}"#),
        lease: LEASE,
        buffer: 3,
    }
}

fn relay(sid: u128, epoch: u64, cseq: Option<u64>, to: &str, n: u32) -> Op {
    Op::Relay {
        sid: SessionId(sid),
        epoch,
        client_seq: cseq,
        to: to.into(),
        frame: format!(r#"{{"type":"signal","from":"x","data":{{"n":{n}}}}}"#),
    }
}

/// The ops, in order; the two `Sweep`s come after a pause past a short
/// window.
fn script() -> Vec<Op> {
    vec![
        join(1, "r", "alice", 3, None),
        join(2, "r", "bob", 3, None),
        join(3, "r", "alice", 3, None),
        relay(2, 1, Some(1), "alice", 1),
        relay(2, 1, Some(1), "alice", 99),
        relay(2, 1, None, "alice", 2),
        relay(2, 1, Some(2), "nobody", 3),
        relay(2, 7, Some(3), "alice", 4),
        Op::Ack {
            sid: SessionId(1),
            epoch: 1,
            seq: 2,
        },
        Op::Detach {
            sid: SessionId(2),
            epoch: 1,
            delivered: 0,
            window: Duration::from_secs(60),
        },
        relay(1, 1, Some(1), "bob", 5),
        relay(1, 1, Some(2), "bob", 6),
        Op::Resume {
            sid: SessionId(2),
            room: "r".into(),
            peer: "bob".into(),
            last_seen: 9,
            node: NODE,
            lease: LEASE,
        },
        Op::Resume {
            sid: SessionId(2),
            room: "r".into(),
            peer: "bob".into(),
            last_seen: 0,
            node: NODE,
            lease: LEASE,
        },
        Op::Fetch {
            sid: SessionId(2),
            after: 1,
        },
        Op::Fetch {
            sid: SessionId(77),
            after: 0,
        },
        Op::Resume {
            sid: SessionId(2),
            room: "other".into(),
            peer: "bob".into(),
            last_seen: 0,
            node: NODE,
            lease: LEASE,
        },
        // Bob's third socket takes the session from the second.
        Op::Resume {
            sid: SessionId(2),
            room: "r".into(),
            peer: "bob".into(),
            last_seen: 2,
            node: NODE,
            lease: LEASE,
        },
        join(4, "r", "carol", 3, None),
        join(5, "r", "dave", 3, None),
        join(6, "r", "carol", 3, Some(4)),
        // Overflow: four messages into carol's buffer of three, detached.
        Op::Detach {
            sid: SessionId(6),
            epoch: 1,
            delivered: 0,
            window: Duration::from_secs(60),
        },
        relay(1, 1, None, "carol", 7),
        relay(1, 1, None, "carol", 8),
        relay(1, 1, None, "carol", 9),
        relay(1, 1, None, "carol", 10),
        Op::Resume {
            sid: SessionId(6),
            room: "r".into(),
            peer: "carol".into(),
            last_seen: 0,
            node: NODE,
            lease: LEASE,
        },
        Op::Sweep,
        Op::End {
            sid: SessionId(6),
            epoch: None,
            left: r#"{"type":"peer-left","peer":"carol"}"#.into(),
        },
        Op::End {
            sid: SessionId(2),
            epoch: Some(1),
            left: r#"{"type":"peer-left","peer":"bob"}"#.into(),
        },
        Op::End {
            sid: SessionId(2),
            epoch: Some(3),
            left: r#"{"type":"peer-left","peer":"bob"}"#.into(),
        },
        Op::Refresh {
            sessions: vec![(SessionId(1), 1)],
            lease: Duration::from_millis(300),
        },
        Op::Detach {
            sid: SessionId(1),
            epoch: 1,
            delivered: 3,
            window: Duration::from_millis(300),
        },
        Op::Sweep,
    ]
}

/// A reply as text both stores must agree on.
fn show(r: &Reply) -> String {
    match r {
        Reply::Joined { peers, epoch } => format!(
            "joined {epoch} {:?}",
            peers
                .iter()
                .map(|m| format!("{}={}", m.peer, m.meta.get()))
                .collect::<Vec<_>>()
        ),
        Reply::Resumed {
            peers,
            epoch,
            client_seq,
            replay,
        } => format!(
            "resumed {epoch} {client_seq} {:?} {:?}",
            peers.iter().map(|m| m.peer.to_string()).collect::<Vec<_>>(),
            replay
        ),
        other => format!("{other:?}"),
    }
}

fn show_event(e: &Event) -> String {
    match e {
        Event::Deliver { sid, seq, frame } => format!("deliver {} {seq} {frame}", sid.0),
        Event::Evict { sid, epoch } => format!("evict {} {epoch}", sid.0),
    }
}

#[tokio::test]
async fn memory_and_redis_stores_agree() {
    let server = redis::Redis::start();
    let url = server.url();
    let mut redis = RedisStore::connect(&url, Arc::new(|_, _| {}))
        .await
        .unwrap();
    let mut incoming = redis.subscribe(NODE);
    assert!(matches!(incoming.recv().await, Some(Incoming::Subscribed)));
    let mut memory = MemoryStore::new();

    let (mut mem_replies, mut redis_replies) = (vec![], vec![]);
    let mut mem_events = vec![];
    let mut now = Instant::now();
    let ops = script();
    let last_sweep = ops.len() - 1;
    for (i, op) in ops.into_iter().enumerate() {
        if i == last_sweep {
            // Past the 300 ms window and lease of alice.
            tokio::time::sleep(Duration::from_millis(700)).await;
            now += Duration::from_millis(700);
        }
        let m = show(&memory.run(op.clone(), now));
        let r = show(&redis.apply(op, now).await);
        mem_replies.push(m);
        redis_replies.push(r);
        while let Some(e) = memory.poll_event() {
            mem_events.push(show_event(&e));
        }
    }
    for (i, (m, r)) in mem_replies.iter().zip(&redis_replies).enumerate() {
        assert_eq!(m, r, "reply to op {i}");
    }
    // Deliveries arrive over pub/sub, in order; wait for as many.
    let mut redis_events = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis_events.len() < mem_events.len() {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(Incoming::Event(e))) => redis_events.push(show_event(&e)),
            Ok(Some(Incoming::Subscribed)) => panic!("re-subscribed: events may be lost"),
            Ok(None) | Err(_) => break,
        }
    }
    assert_eq!(mem_events, redis_events);
    // The cluster-wide buffer count follows every push, trim and delete.
    assert_eq!(redis.buffered().await, Some(memory.buffered() as i64));
    assert!(memory.buffered() > 0);
    // The script exercised what it meant to.
    let all = mem_replies.join("\n");
    for want in [
        "Taken",
        "Duplicate",
        "UnknownPeer",
        "Stale",
        "AheadOfServer",
        "Unknown)",
        "Overflowed",
        "Fetched",
        "resumed 2",
        "resumed 3",
        "joined 1 [\"alice=",
    ] {
        assert!(all.contains(want), "no {want} in\n{all}");
    }
    assert!(
        mem_events.iter().any(|e| e.starts_with("evict 2 2")),
        "{mem_events:?}"
    );
    assert!(
        mem_replies.last().unwrap().contains("Due([(SessionId(1)"),
        "{}",
        mem_replies.last().unwrap()
    );
}
