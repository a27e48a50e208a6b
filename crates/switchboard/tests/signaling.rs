//! Protocol v1 over real WebSocket connections to `switchboard serve` on
//! loopback: in this process through the library, and as the real binary
//! for the SIGTERM shutdown.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
mod common;

use common::{next_json, InProcess, Server, WAIT};
use std::time::{Duration, Instant};
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TokioTcp>>,
}

impl Client {
    async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { ws }
    }

    async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::Text(s.into())).await.unwrap();
    }

    /// Next JSON message, skipping WebSocket control frames.
    async fn recv(&mut self) -> Value {
        next_json(&mut self.ws).await
    }

    async fn expect_error(&mut self, code: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        v
    }

    /// Waits for the server's close frame; returns (code, reason).
    async fn expect_close(&mut self) -> (CloseCode, String) {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match m {
                Some(Ok(Message::Close(Some(f)))) => return (f.code, f.reason.to_string()),
                Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    async fn join(&mut self, room: &str, peer: &str) -> Value {
        self.send(json!({"type":"join","room":room,"peer":peer}))
            .await;
        let w = self.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        w
    }

    async fn ping_pong(&mut self) {
        self.send(json!({"type":"ping"})).await;
        assert_eq!(self.recv().await, json!({"type":"pong"}));
    }
}

#[tokio::test]
async fn join_relay_and_spoofed_from() {
    let server = InProcess::start(&["--ice-server", "stun:stun.example.net:3478", "--no-turn"]);
    let mut a = Client::connect(&server.url()).await;
    let mut b = Client::connect(&server.url()).await;
    a.send(json!({"type":"join","room":"demo","meta":{"name":"A"}}))
        .await;
    let wa = a.recv().await;
    assert_eq!(wa["type"], "welcome");
    assert_eq!(wa["room"], "demo");
    assert_eq!(wa["peers"], json!([]));
    assert_eq!(
        wa["iceServers"],
        json!([{"urls":["stun:stun.example.net:3478"]}])
    );
    let a_id = wa["peer"].as_str().unwrap().to_string();
    assert!(!a_id.is_empty());

    let wb = b.join("demo", "bob").await;
    assert_eq!(wb["peers"], json!([{"peer": a_id, "meta": {"name":"A"}}]));
    assert_eq!(
        a.recv().await,
        json!({"seq":1,"type":"peer-joined","peer":"bob","meta":{}})
    );

    let offer = json!({"description":{"type":"offer","sdp":"v=0\r\n"}});
    b.send(json!({"type":"signal","to":a_id,"from":"mallory","data":offer}))
        .await;
    assert_eq!(
        a.recv().await,
        json!({"seq":2,"type":"signal","from":"bob","data":offer})
    );
    a.send(json!({"type":"signal","to":"bob","data":{"candidate":null}}))
        .await;
    assert_eq!(
        b.recv().await,
        json!({"seq":1,"type":"signal","from":a_id,"data":{"candidate":null}})
    );

    assert_eq!(
        server.metric("switchboard_messages_relayed_total{kind=\"offer\"}"),
        1.0
    );
    assert_eq!(
        server.metric("switchboard_messages_relayed_total{kind=\"end-of-candidates\"}"),
        1.0
    );
    assert_eq!(server.metric("switchboard_rooms"), 1.0);
    assert_eq!(server.metric("switchboard_peers"), 2.0);
    assert_eq!(server.metric("switchboard_connections"), 2.0);
}

#[tokio::test]
async fn bad_json_and_bad_fields_keep_the_connection() {
    let server = InProcess::start(&[]);
    let mut a = Client::connect(&server.url()).await;
    a.send_text("{not json").await;
    a.expect_error("bad-message").await;
    a.send(json!({"type":"teleport"})).await;
    a.expect_error("bad-message").await;
    a.send(json!({"type":"join","room":"no spaces"})).await;
    a.expect_error("invalid-room").await;
    a.send(json!({"type":"join","room":"r","peer":"ü"})).await;
    a.expect_error("invalid-peer").await;
    a.ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    a.expect_error("bad-message").await;
    a.send(json!({"type":"signal","to":"x","data":{}})).await;
    a.expect_error("not-joined").await;
    a.join("r", "alice").await;
    a.send(json!({"type":"join","room":"r"})).await;
    a.expect_error("already-joined").await;
    a.send(json!({"type":"signal","to":"alice2","data":"string"}))
        .await;
    a.expect_error("bad-message").await;
    a.ping_pong().await;
    assert_eq!(
        server.metric("switchboard_errors_total{code=\"bad-message\"}"),
        4.0
    );
}

#[tokio::test]
async fn oversize_messages() {
    let server = InProcess::start(&["--max-message-bytes", "1024"]);
    let mut a = Client::connect(&server.url()).await;
    a.join("r", "alice").await;
    let pad = "x".repeat(2000);
    a.send(json!({"type":"ping","pad":pad})).await;
    a.expect_error("too-large").await;
    a.ping_pong().await;
    // Far beyond the limit the WebSocket layer refuses the frame outright.
    let huge = "x".repeat(10_000);
    a.send(json!({"type":"ping","pad":huge})).await;
    let (code, reason) = a.expect_close().await;
    assert_eq!(code, CloseCode::Size, "{reason}");
}

#[tokio::test]
async fn unknown_peer_room_full_duplicate_id_and_leave() {
    let server = InProcess::start(&["--max-room-peers", "2"]);
    let mut a = Client::connect(&server.url()).await;
    let mut b = Client::connect(&server.url()).await;
    let mut c = Client::connect(&server.url()).await;
    a.join("r", "alice").await;
    b.send(json!({"type":"join","room":"r","peer":"alice"}))
        .await;
    b.expect_error("peer-id-taken").await;
    b.join("r", "bob").await;
    assert_eq!(a.recv().await["type"], "peer-joined");
    c.send(json!({"type":"join","room":"r"})).await;
    c.expect_error("room-full").await;
    a.send(json!({"type":"signal","to":"nobody","data":{}}))
        .await;
    a.expect_error("unknown-peer").await;

    b.send(json!({"type":"leave"})).await;
    assert_eq!(
        a.recv().await,
        json!({"seq":2,"type":"peer-left","peer":"bob"})
    );
    // The room has space again and c can join.
    let w = c.join("r", "carol").await;
    assert_eq!(w["peers"], json!([{"peer":"alice","meta":{}}]));
    assert_eq!(a.recv().await["peer"], "carol");
    // Signals to the peer that left are refused.
    a.send(json!({"type":"signal","to":"bob","data":{}})).await;
    a.expect_error("unknown-peer").await;
}

#[tokio::test]
async fn abrupt_disconnect_gives_peer_left_after_the_window() {
    let server = InProcess::start(&["--resume-window", "2"]);
    let mut a = Client::connect(&server.url()).await;
    let mut b = Client::connect(&server.url()).await;
    a.join("r", "alice").await;
    b.join("r", "bob").await;
    a.recv().await;
    // Drop the TCP connection without a close frame.
    let raw = b.ws.into_inner();
    let dropped = Instant::now();
    drop(raw);
    // Bob is kept for a resume: alice hears nothing during the window...
    a.ping_pong().await;
    assert_eq!(
        a.recv().await,
        json!({"seq":2,"type":"peer-left","peer":"bob"})
    );
    // ...and gets peer-left once it has passed (swept within a second).
    let took = dropped.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(4500),
        "peer-left after {took:?}"
    );
}

#[tokio::test]
async fn silent_peer_times_out() {
    let server = InProcess::start(&["--idle-timeout", "1", "--resume-window", "1"]);
    let mut a = Client::connect(&server.url()).await;
    let mut b = Client::connect(&server.url()).await;
    a.join("r", "alice").await;
    b.join("r", "bob").await;
    a.recv().await;
    // b stops reading, so it never answers pings: it looks like a peer whose
    // network vanished. a keeps reading (and so answers pings).
    // Its session outlives the socket by the resume window.
    let started = Instant::now();
    assert_eq!(
        a.recv().await,
        json!({"seq":2,"type":"peer-left","peer":"bob"})
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "dropped too early: {took:?}"
    );
    // a itself stayed alive while answering pings.
    a.ping_pong().await;
    // b's connection is gone. When b reads again, tungstenite first tries to
    // answer the pings it buffered and may hit the closed socket before it
    // surfaces the close frame, so accept either ending, but check the
    // reason when the close frame is what arrives.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match b.ws.next().await {
                Some(Ok(Message::Close(f))) => break f.map(|f| (f.code, f.reason.to_string())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        }
    })
    .await
    .expect("b's connection should have ended");
    if let Some((code, reason)) = end {
        assert_eq!((code, reason.as_str()), (CloseCode::Policy, "idle timeout"));
    }
}

#[tokio::test]
async fn a_socket_that_never_joins_is_closed_after_the_join_timeout() {
    let server = InProcess::start(&["--join-timeout", "1", "--idle-timeout", "3"]);
    let mut lurker = Client::connect(&server.url()).await;
    let mut member = Client::connect(&server.url()).await;
    member.join("r", "alice").await;
    // The lurker reads, so it answers the server's pings (every second);
    // that does not keep it. The member, in a room, stays.
    let started = Instant::now();
    let (code, reason) = lurker.expect_close().await;
    let took = started.elapsed();
    assert_eq!((code, reason.as_str()), (CloseCode::Policy, "join timeout"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "closed after {took:?}"
    );
    member.ping_pong().await;
}

#[tokio::test]
async fn rate_limiting_drops_then_closes() {
    let server = InProcess::start(&[
        "--max-message-rate",
        "1",
        "--message-burst",
        "5",
        "--rate-limit-strikes",
        "10",
    ]);
    let mut a = Client::connect(&server.url()).await;
    for _ in 0..7 {
        a.send(json!({"type":"ping"})).await;
    }
    for _ in 0..5 {
        assert_eq!(a.recv().await, json!({"type":"pong"}));
    }
    a.expect_error("rate-limited").await;
    for _ in 0..20 {
        // The server may already have closed; later sends can fail.
        if a.ws
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = a.expect_close().await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "rate limit exceeded")
    );
}

#[tokio::test]
async fn connection_cap_refuses_upgrade() {
    let server = InProcess::start(&["--max-connections", "1"]);
    let mut a = Client::connect(&server.url()).await;
    let err = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    a.ping_pong().await;
    drop(a);
    // The slot frees once the first connection is gone.
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio_tungstenite::connect_async(server.url()).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                assert!(e.to_string().contains("503"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("slot never freed: {e}"),
        }
    }
}

#[tokio::test]
async fn graceful_shutdown_sends_going_away() {
    let mut server = Server::start(&[]);
    let mut a = Client::connect(&server.url()).await;
    let mut b = Client::connect(&server.url()).await;
    a.join("r", "alice").await;
    server.terminate();
    for c in [&mut a, &mut b] {
        let (code, reason) = c.expect_close().await;
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Away, "server shutting down")
        );
    }
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn in_process_shutdown_closes_clients_and_frees_the_ports() {
    let server = InProcess::start(&[]);
    let (http, turn) = (server.addr, server.turn.expect("TURN runs by default"));
    let mut a = Client::connect(&server.url()).await;
    let mut b = Client::connect(&server.url()).await;
    a.join("r", "alice").await;
    b.ping_pong().await;
    let stopped = tokio::task::spawn_blocking(move || server.shutdown());
    for c in [&mut a, &mut b] {
        let (code, reason) = c.expect_close().await;
        assert_eq!(
            (code, reason.as_str()),
            (CloseCode::Away, "server shutting down")
        );
    }
    stopped
        .await
        .unwrap()
        .expect("serve ends cleanly after a shutdown");
    // Nothing is left bound: not the HTTP listener, not any TURN worker's
    // UDP socket.
    std::net::TcpListener::bind(http).expect("HTTP port released");
    std::net::UdpSocket::bind(turn).expect("TURN UDP port released");
}

#[tokio::test]
async fn welcome_carries_working_turn_credentials() {
    let server = InProcess::start(&[
        "--ice-server",
        "stun:stun.example.net:3478",
        "--turn-ttl",
        "600",
    ]);
    let turn = server.turn.expect("TURN runs by default");
    let mut a = Client::connect(&server.url()).await;
    let w = a.join("r", "alice").await;
    let ice = w["iceServers"].as_array().unwrap();
    assert_eq!(ice[0], json!({"urls":["stun:stun.example.net:3478"]}));
    assert_eq!(ice[1], json!({"urls":[format!("stun:{turn}")]}));
    assert_eq!(
        ice[2]["urls"],
        json!([
            format!("turn:{turn}?transport=udp"),
            format!("turn:{turn}?transport=tcp")
        ])
    );
    // REST-style username: expiry then the peer id.
    let user = ice[2]["username"].as_str().unwrap();
    let (expiry, id) = user.split_once(':').unwrap();
    assert_eq!(id, "alice");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert!(!ice[2]["credential"].as_str().unwrap().is_empty());

    let (status, body) = server.get("/v1/ice-servers");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["iceServers"].as_array().unwrap().len(), 3);
    // That the credentials authenticate is checked against coturn's own
    // client in turn_interop.rs.
}

#[tokio::test]
async fn http_endpoints() {
    let server = InProcess::start(&[]);
    assert_eq!(server.get("/healthz"), (200, "ok\n".to_string()));
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("switchboard_connections"));
    assert!(body.ends_with("# EOF\n"));
    // The embedded web/ folder: the SDK and its chat/file module.
    for path in [
        "/sdk/switchboard.js",
        "/sdk/session.js",
        "/sdk/session.d.ts",
        "/sdk/transfer.js",
        "/sdk/transfer.d.ts",
    ] {
        assert_eq!(server.get(path).0, 200, "{path}");
    }
    assert_eq!(server.get("/sdk/nope.js").0, 404);
    assert_eq!(server.get("/sdk/../../Cargo.toml").0, 404);
    // A plain GET on the WebSocket path is refused without upsetting anything.
    assert!(server.get("/v1/ws").0 >= 400);
    assert_eq!(server.get("/healthz").0, 200);
}
