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
    let room = format!("cut{}", std::process::id());
    let mut a = Session::join(&url, &room, "alice").await;
    let mut b = Session::join(&url, &room, "bob").await;
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
                let r = b.cut_and_resume(&url).await;
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
    let room = format!("bad{}", std::process::id());
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
