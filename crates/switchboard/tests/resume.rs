//! Sessions over real sockets: a client written from docs/protocol.md alone
//! ("Sessions: reconnect and resume") loses its TCP connection in the middle
//! of 500 signals each way, resumes, and every signal arrives exactly once,
//! in order, in both directions. Plus the resumes that must fail.
//!
//! `SWITCHBOARD_TEST_WS` points these tests at another server instead (a
//! node of a cluster, say); without it they start one in process.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
mod common;

use common::redis::Redis;
use common::{InProcess, WAIT};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const COUNT: u64 = 500;

/// The client side of a session, as the protocol page describes it.
struct Session {
    ws: Ws,
    token: String,
    /// Highest server seq received.
    last_seen: u64,
    /// Our own signals, numbered, kept until the server acks them.
    outbox: VecDeque<(u64, Value)>,
    next_seq: u64,
    /// `data.n` of every signal received, in arrival order.
    got: Vec<u64>,
    /// Server frames with a seq we had already seen (must stay 0).
    repeats: usize,
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_frame(ws: &mut Ws) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")?;
        match m.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

impl Session {
    async fn join(url: &str, room: &str, peer: &str) -> Session {
        let mut ws = connect(url).await;
        let join = json!({"type":"join","room":room,"peer":peer});
        ws.send(Message::Text(join.to_string().into()))
            .await
            .unwrap();
        let w = next_frame(&mut ws).await.unwrap();
        assert_eq!(w["type"], "welcome", "{w}");
        assert!(w["resumeWindow"].as_u64().unwrap() >= 1);
        Session {
            ws,
            token: w["session"].as_str().unwrap().to_string(),
            last_seen: 0,
            outbox: VecDeque::new(),
            next_seq: 1,
            got: vec![],
            repeats: 0,
        }
    }

    async fn send_signal(&mut self, to: &str, n: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let msg = json!({"type":"signal","to":to,"seq":seq,"data":{"n":n}});
        self.outbox.push_back((seq, msg.clone()));
        // A send into a dead socket is fine: the outbox has it.
        let _ = self.ws.send(Message::Text(msg.to_string().into())).await;
    }

    /// Handles one server frame; false when the socket ended.
    async fn step(&mut self) -> bool {
        let Some(v) = next_frame(&mut self.ws).await else {
            return false;
        };
        match v["type"].as_str().unwrap() {
            "ack" => {
                let n = v["seq"].as_u64().unwrap();
                while self.outbox.front().is_some_and(|(s, _)| *s <= n) {
                    self.outbox.pop_front();
                }
            }
            t @ ("signal" | "peer-joined" | "peer-left") => {
                let seq = v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{t} without seq"));
                if seq <= self.last_seen {
                    self.repeats += 1;
                    return true;
                }
                assert_eq!(seq, self.last_seen + 1, "gap before {v}");
                self.last_seen = seq;
                if t == "signal" {
                    self.got.push(v["data"]["n"].as_u64().unwrap());
                }
                if seq % 50 == 0 {
                    let ack = json!({"type":"ack","seq":seq});
                    let _ = self.ws.send(Message::Text(ack.to_string().into())).await;
                }
            }
            "pong" => {}
            other => panic!("unexpected {other}: {v}"),
        }
        true
    }

    /// Drops the TCP connection without a close frame (whatever it still
    /// held is lost with it), then a new socket, `resume`, and the unacked
    /// signals again.
    async fn cut_and_resume(&mut self, url: &str) -> Value {
        let old = std::mem::replace(&mut self.ws, connect(url).await);
        drop(old.into_inner());
        let msg = json!({"type":"resume","session":self.token,"seq":self.last_seen});
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let r = next_frame(&mut self.ws).await.unwrap();
        assert_eq!(r["type"], "resumed", "{r}");
        let ack = r["ack"].as_u64().unwrap();
        while self.outbox.front().is_some_and(|(s, _)| *s <= ack) {
            self.outbox.pop_front();
        }
        for (_, m) in self.outbox.clone() {
            self.ws
                .send(Message::Text(m.to_string().into()))
                .await
                .unwrap();
        }
        r
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        ^ u64::from(std::process::id())
}

fn server(args: &[&str]) -> (Option<InProcess>, String) {
    match std::env::var("SWITCHBOARD_TEST_WS") {
        Ok(url) => (None, url),
        Err(_) => {
            let s = InProcess::start(args);
            let url = s.url();
            (Some(s), url)
        }
    }
}

/// No rate limit in the way, and room for the 300 signals that pile up for
/// bob while he is away (the default buffer, 256, would overflow: that is
/// `resume-failed`, tested in the hub's unit tests).
const FAST: &[&str] = &[
    "--no-turn",
    "--resume-buffer",
    "1024",
    "--max-message-rate",
    "100000",
    "--message-burst",
    "100000",
];

#[tokio::test]
async fn a_cut_mid_stream_loses_and_repeats_nothing_in_either_direction() {
    let (_server, url) = server(FAST);
    cut_mid_stream(&url, &url, &url).await;
}

/// Alice on `a_url`, bob on `b_url`; bob's TCP connection is cut after 200
/// of alice's signals and 300 of his own, and he resumes on `resume_url`.
async fn cut_mid_stream(a_url: &str, b_url: &str, resume_url: &str) {
    let room = format!("cut{}", rand_suffix());
    let mut a = Session::join(a_url, &room, "alice").await;
    let mut b = Session::join(b_url, &room, "bob").await;
    assert!(a.step().await); // peer-joined bob

    let alice = async {
        for n in 1..=COUNT {
            a.send_signal("bob", n).await;
        }
        while a.got.len() < COUNT as usize {
            assert!(a.step().await, "alice's socket ended");
        }
        // Everything of ours was handled: an ack covers it before the pong.
        a.ws.send(Message::Text(json!({"type":"ping"}).to_string().into()))
            .await
            .unwrap();
        loop {
            let v = next_frame(&mut a.ws).await.unwrap();
            if v["type"] == "ack" {
                assert_eq!(v["seq"], COUNT);
            }
            if v["type"] == "pong" {
                break;
            }
        }
        a
    };
    let bob = async {
        for n in 1..=COUNT {
            b.send_signal("alice", n).await;
            // Cut while both directions are in flight.
            if n == 300 {
                while b.got.len() < 200 {
                    assert!(b.step().await);
                }
                let r = b.cut_and_resume(resume_url).await;
                assert_eq!(r["peer"], "bob");
                assert_eq!(r["peers"], json!([{"peer":"alice","meta":{}}]));
            }
        }
        while b.got.len() < COUNT as usize {
            assert!(b.step().await, "bob's socket ended");
        }
        b
    };
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(alice, bob) })
        .await
        .expect("500 signals each way within 60 s");
    let want: Vec<u64> = (1..=COUNT).collect();
    assert_eq!(a.got, want, "alice got bob's signals once, in order");
    assert_eq!(b.got, want, "bob got alice's signals once, in order");
    assert_eq!((a.repeats, b.repeats), (0, 0));
}

#[tokio::test]
async fn resumes_that_must_fail_and_leave_the_socket_usable() {
    let (_server, url) = server(&["--no-turn", "--resume-window", "1"]);
    let room = format!("bad{}", rand_suffix());
    let _a = Session::join(&url, &room, "alice").await;
    let b = Session::join(&url, &room, "bob").await;
    let other = Session::join(&url, &format!("{room}x"), "carol").await;
    let token = b.token.clone();
    drop(b.ws.into_inner());

    async fn try_resume(url: &str, msg: Value) -> (Ws, Value) {
        let mut ws = connect(url).await;
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let v = next_frame(&mut ws).await.unwrap();
        (ws, v)
    }
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for (what, msg) in [
        ("forged", json!({"type":"resume","session":forged,"seq":0})),
        (
            "another room",
            json!({"type":"resume","session":token,"seq":0,"room":format!("{room}x")}),
        ),
        (
            "another room's token",
            json!({"type":"resume","session":other.token,"seq":0,"room":room}),
        ),
        (
            "seq never sent",
            json!({"type":"resume","session":token,"seq":99}),
        ),
    ] {
        let (mut ws, v) = try_resume(&url, msg).await;
        assert_eq!(v["type"], "error", "{what}: {v}");
        assert_eq!(v["code"], "resume-failed", "{what}: {v}");
        // The connection stays open for a fresh join.
        let join = json!({"type":"join","room":room});
        ws.send(Message::Text(join.to_string().into()))
            .await
            .unwrap();
        assert_eq!(
            next_frame(&mut ws).await.unwrap()["type"],
            "welcome",
            "{what}"
        );
        let _ = ws.close(None).await;
    }
    // Past the window (1 s, swept within a second).
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let (_, v) = try_resume(&url, json!({"type":"resume","session":token,"seq":0})).await;
    assert_eq!(v["code"], "resume-failed", "expired: {v}");
}

fn node(redis: &Redis, extra: &[&str]) -> InProcess {
    let url = redis.url();
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--redis", url.as_str()]);
    args.extend(extra);
    InProcess::start(&args)
}

#[tokio::test]
async fn across_two_nodes_on_redis_a_cut_and_a_resume_on_the_other_node_lose_nothing() {
    let redis = Redis::start();
    let (n1, n2) = (node(&redis, &[]), node(&redis, &[]));
    // Alice on node 1, bob on node 2; bob resumes on node 1.
    cut_mid_stream(&n1.url(), &n2.url(), &n1.url()).await;
    // And the other way round, in another room.
    cut_mid_stream(&n2.url(), &n1.url(), &n2.url()).await;
    assert!(n1.metric("switchboard_resumes_total{outcome=\"ok\"}") >= 1.0);
    assert!(n2.metric("switchboard_resumes_total{outcome=\"ok\"}") >= 1.0);
    assert!(n1.metric("switchboard_redis_roundtrip_seconds_count") > 0.0);
    // Cluster-wide, the same figure on both nodes: what the four sessions
    // have not acked (the clients ack every 50th message).
    let buffered = n1.metric("switchboard_session_buffered_messages");
    assert!((1.0..200.0).contains(&buffered), "{buffered}");
    assert_eq!(buffered, n2.metric("switchboard_session_buffered_messages"));
}

#[tokio::test]
async fn room_limits_hold_across_nodes_and_a_dead_node_s_peers_leave_after_the_window() {
    let redis = Redis::start();
    let n1 = node(&redis, &["--max-room-peers", "2", "--resume-window", "2"]);
    let n2 = node(&redis, &["--max-room-peers", "2", "--resume-window", "2"]);
    let room = format!("lim{}", rand_suffix());
    let mut a = Session::join(&n1.url(), &room, "alice").await;
    // The id is taken on the other node too.
    let mut ws = connect(&n2.url()).await;
    let join = json!({"type":"join","room":room,"peer":"alice"});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await.unwrap()["code"], "peer-id-taken");
    let b = Session::join(&n2.url(), &room, "bob").await;
    assert!(a.step().await); // peer-joined, across nodes
    let join = json!({"type":"join","room":room});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await.unwrap()["code"], "room-full");
    assert_eq!(n1.metric("switchboard_peers"), 1.0);
    assert_eq!(n2.metric("switchboard_peers"), 1.0);
    // Node 2 dies without a word (its leases stop); bob never resumes.
    drop(b);
    drop(ws);
    let stopped = std::time::Instant::now();
    let _ = n2.shutdown();
    // Shutdown detached bob; his window passes, and alice hears it.
    let v = loop {
        let v = next_frame(&mut a.ws).await.unwrap();
        if v["type"] != "ack" {
            break v;
        }
    };
    assert_eq!(v["type"], "peer-left", "{v}");
    assert_eq!(v["peer"], "bob");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn a_redis_restart_fails_resumes_cleanly_and_a_fresh_join_works() {
    let redis = Redis::start();
    let n1 = node(&redis, &[]);
    let room = format!("rr{}", rand_suffix());
    let a = Session::join(&n1.url(), &room, "alice").await;
    let mut b = Session::join(&n1.url(), &room, "bob").await;
    let redis = redis.restart_empty();
    // Bob's socket is still open, but his session is gone: once the node
    // reaches Redis again it closes the socket (after re-subscribing, or at
    // his next signal) so he rejoins. (While Redis is down, a numbered
    // signal gets 1011 "store unavailable" instead, tested below.)
    let deadline = std::time::Instant::now() + WAIT;
    while n1.get("/healthz").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "node never reached Redis again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.send_signal("alice", 1).await;
    let closed = loop {
        match tokio::time::timeout(WAIT, b.ws.next())
            .await
            .expect("bob's socket kept open")
        {
            Some(Ok(Message::Close(f))) => {
                break f.map(|f| (u16::from(f.code), f.reason.to_string()))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(closed, Some((4002, "session lost".to_string())));
    drop(a.ws.into_inner());
    // Redis is back but knows nothing: the resume fails, the rejoin works.
    let mut ws = connect(&n1.url()).await;
    let msg = json!({"type":"resume","session":a.token,"seq":0});
    let v = loop {
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let v = next_frame(&mut ws).await.unwrap();
        // While the connection to Redis is re-made, the node says so.
        if v["code"] == "resume-failed" && v["message"].as_str().unwrap().contains("unavailable") {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break v;
    };
    assert_eq!(v["code"], "resume-failed", "{v}");
    let join = json!({"type":"join","room":room,"peer":"alice"});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut ws).await.unwrap()["type"], "welcome");
    drop(redis);
}

#[tokio::test]
async fn redis_down_is_reported_by_healthz_and_joins_get_unavailable() {
    let redis = Redis::start();
    let n1 = node(&redis, &[]);
    assert_eq!(n1.get("/healthz").0, 200);
    drop(redis);
    let deadline = std::time::Instant::now() + WAIT;
    while n1.get("/healthz").0 != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never reported Redis down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = connect(&n1.url()).await;
    let join = json!({"type":"join","room":"down"});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .unwrap();
    let v = next_frame(&mut ws).await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    drop(ws);
    // An attached client's numbered signal is not relayed and not acked:
    // it hears `unavailable` and its socket is closed, so it resumes later
    // and learns from the store what got through.
    let mut s = {
        let redis = Redis::start();
        let n = node(&redis, &[]);
        let s = Session::join(&n.url(), "down2", "carol").await;
        drop(redis);
        (s, n)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while s.1.get("/healthz").0 != 503 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.0.send_signal("nobody", 1).await;
    let v = next_frame(&mut s.0.ws).await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    let closed = loop {
        match tokio::time::timeout(WAIT, s.0.ws.next())
            .await
            .expect("socket kept open")
        {
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(closed, Some(1011));
}
