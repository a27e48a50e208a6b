//! The room client against a scripted signaling server on loopback: the
//! test plays the server frame by frame, cuts the socket abruptly (TCP
//! reset, no close frame) and checks what the client does about it:
//! resume with the last seq seen, drop replayed duplicates, send again
//! what was not acked, keep its connections; rejoin under the same id and
//! ICE-restart after `resume-failed`; give up once nothing works.

use futures_util::{SinkExt, StreamExt};
use peer::negotiate::{self, Signal};
use peer::room::{self, Room, RoomConfig, RoomEvent};
use peer::session::ReconnectConfig;
use peer::{Config, DataChannel, Event, HostCandidates, Message, PeerConnection, SignalingState};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

const WAIT: Duration = Duration::from_secs(10);

/// One client socket, seen from the server side.
struct Sock {
    ws: WebSocketStream<TcpStream>,
    /// Every client frame read so far, in order.
    log: Vec<Value>,
}

impl Sock {
    async fn accept(l: &TcpListener) -> Sock {
        let (tcp, _) = timeout(WAIT, l.accept())
            .await
            .expect("the client connects")
            .unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        Sock { ws, log: vec![] }
    }

    async fn send(&mut self, v: Value) {
        self.ws.send(Ws::text(v.to_string())).await.unwrap();
    }

    /// The next client frame whose `type` is `ty`; others are logged.
    async fn next(&mut self, ty: &str) -> Value {
        loop {
            let m = timeout(WAIT, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {ty} from the client; got {:?}", self.log))
                .expect("socket open")
                .unwrap();
            if let Ws::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                self.log.push(v.clone());
                if v["type"] == ty {
                    return v;
                }
            }
        }
    }

    /// Reads whatever the client sends for `d`.
    async fn drain(&mut self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, self.ws.next()).await {
            if let Ws::Text(t) = m {
                self.log.push(serde_json::from_str(&t).unwrap());
            }
        }
    }

    /// Drops the socket with a TCP reset: no close frame, as when a
    /// network or a load balancer dies.
    fn cut(self) {
        let tcp = self.ws.get_ref();
        socket2::SockRef::from(tcp)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(self.ws);
    }

    fn signals(&self) -> Vec<&Value> {
        self.log.iter().filter(|v| v["type"] == "signal").collect()
    }
}

fn welcome(peers: &[&str], session: &str, window: u64) -> Value {
    let peers: Vec<Value> = peers
        .iter()
        .map(|p| json!({"peer": p, "meta": {}}))
        .collect();
    json!({"type": "welcome", "room": "r", "peer": "me", "peers": peers, "iceServers": [],
           "session": session, "resumeWindow": window})
}

fn config(addr: SocketAddr) -> RoomConfig {
    let mut c = RoomConfig::new(format!("http://{addr}"), "r");
    c.peer = Some("me".into());
    c.peer_config = loopback();
    c.use_server_ice = false;
    // The scripted server says nothing unless the test makes it.
    c.silence_timeout = Duration::from_secs(60);
    c
}

/// Starts the client and plays the server's `welcome` on the first socket.
async fn start(l: &TcpListener, cfg: RoomConfig, w: Value) -> (Room, Sock) {
    let server = async {
        let mut s = Sock::accept(l).await;
        let join = s.next("join").await;
        assert_eq!(join["peer"], "me");
        assert!(join.get("session").is_none(), "a first join has no session");
        s.send(w).await;
        s
    };
    let (room, s) = tokio::join!(room::join(cfg), server);
    (room.expect("joined"), s)
}

/// Every room event until `stop` matches (inclusive).
async fn events_until(room: &mut Room, stop: impl Fn(&RoomEvent) -> bool) -> Vec<RoomEvent> {
    let mut got = vec![];
    loop {
        let ev = timeout(WAIT, room.events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; events so far: {got:?}"))
            .expect("room events open");
        let done = stop(&ev);
        got.push(ev);
        if done {
            return got;
        }
    }
}

fn ufrag(offer: &Value) -> String {
    let sdp = offer["data"]["description"]["sdp"].as_str().unwrap();
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("ice-ufrag in the offer")
        .to_string()
}

#[tokio::test]
async fn a_cut_socket_is_resumed_without_loss_or_duplicates() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut room, mut s1) = start(
        &l,
        config(l.local_addr().unwrap()),
        welcome(&["bob"], "tok1", 5),
    )
    .await;
    // We are the newcomer: an offer to bob (seq 1) and candidates follow.
    let offer = s1.next("signal").await;
    assert_eq!(offer["seq"], 1);
    assert_eq!(offer["to"], "bob");
    assert_eq!(offer["data"]["description"]["type"], "offer");
    s1.send(json!({"type": "peer-joined", "peer": "carol", "meta": {}, "seq": 1}))
        .await;
    // Acked within a second, unprompted.
    let t = Instant::now();
    let ack = s1.next("ack").await;
    assert_eq!(ack["seq"], 1);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // Every signal so far was handled; let the client know about the first.
    s1.send(json!({"type": "ack", "seq": 1})).await;
    s1.drain(Duration::from_millis(300)).await;
    let sent: Vec<u64> = s1
        .signals()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sent,
        (1..=sent.len() as u64).collect::<Vec<_>>(),
        "numbered from 1, no gaps"
    );
    assert!(sent.len() >= 2, "candidates followed the offer: {sent:?}");
    let cut_at = Instant::now();
    s1.cut();

    // The client comes back within a second and resumes from seq 1.
    let mut s2 = Sock::accept(&l).await;
    assert!(
        cut_at.elapsed() < Duration::from_millis(1500),
        "first retry took {:?}",
        cut_at.elapsed()
    );
    let resume = s2.next("resume").await;
    assert_eq!(
        resume,
        json!({"type": "resume", "session": "tok1", "seq": 1, "room": "r"})
    );
    // The server had handled the client's seq 2 (say) but the ack was lost.
    s2.send(json!({"type": "resumed", "room": "r", "peer": "me",
                   "peers": [{"peer": "bob", "meta": {}}, {"peer": "carol", "meta": {}}],
                   "iceServers": [], "session": "tok1", "resumeWindow": 5, "ack": 2}))
        .await;
    // The replay starts at 1 (a server may resend what was acked): ignored.
    s2.send(json!({"type": "peer-joined", "peer": "carol", "meta": {}, "seq": 1}))
        .await;
    s2.send(json!({"type": "peer-left", "peer": "carol", "seq": 2}))
        .await;
    let evs = events_until(
        &mut room,
        |e| matches!(e, RoomEvent::PeerLeft { peer } if peer == "carol"),
    )
    .await;
    let joined = evs
        .iter()
        .filter(|e| matches!(e, RoomEvent::PeerJoined { peer, .. } if peer == "carol"))
        .count();
    assert_eq!(
        joined, 1,
        "the replayed peer-joined is not seen twice: {evs:?}"
    );
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, RoomEvent::Resumed))
            .count(),
        1,
        "{evs:?}"
    );
    let reconnecting: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            RoomEvent::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(reconnecting, [1], "{evs:?}");
    let bob_connections = evs
        .iter()
        .filter(|e| matches!(e, RoomEvent::Connection { peer, .. } if peer == "bob"))
        .count();
    assert_eq!(
        bob_connections, 1,
        "one connection to bob, kept across the resume"
    );
    // Our signals above the server's ack come again with their seq.
    s2.drain(Duration::from_millis(300)).await;
    let again: Vec<u64> = s2
        .signals()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (3..=*sent.last().unwrap()).collect();
    assert!(
        again.starts_with(&want),
        "re-sent {again:?}, want {want:?} first"
    );
    // And the replay is acked within a second.
    s2.drain(Duration::from_millis(1200)).await;
    let acks: Vec<&Value> = s2.log.iter().filter(|v| v["type"] == "ack").collect();
    assert_eq!(
        acks.first().map(|v| &v["seq"]),
        Some(&json!(2)),
        "{:?}",
        s2.log
    );
    assert!(
        s2.log.iter().all(|v| v["type"] != "join"),
        "a resume, not a join: {:?}",
        s2.log
    );
    room.leave();
    s2.next("leave").await;
}

/// A real peer behind the scripted server: its signals go to the client
/// through the test's socket, as a server would relay them.
struct Bob {
    pc: PeerConnection,
    app: negotiate::AppEvents,
    to_bob: mpsc::UnboundedSender<Signal>,
    from_bob: mpsc::UnboundedReceiver<Signal>,
    /// Server seq of the last message relayed from bob in this session.
    seq: u64,
    channel: Option<DataChannel>,
}

impl Bob {
    async fn new() -> Bob {
        let (pc, events) = PeerConnection::new(loopback()).await.unwrap();
        let (to_bob, incoming) = mpsc::unbounded_channel();
        let (out, from_bob) = mpsc::unbounded_channel();
        // Bob was there first: the impolite side.
        let app = negotiate::spawn(pc.clone(), events, false, incoming, move |sig| {
            let _ = out.send(sig);
        });
        Bob {
            pc,
            app,
            to_bob,
            from_bob,
            seq: 0,
            channel: None,
        }
    }
}

enum Step<'a> {
    Client(&'a Value),
    Bob(&'a Event),
}

/// Relays between the client's socket and bob until `done` says so.
async fn pump(s: &mut Sock, bob: &mut Bob, mut done: impl FnMut(Step<'_>) -> bool) {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        tokio::select! {
            m = s.ws.next() => {
                let Some(Ok(Ws::Text(t))) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                s.log.push(v.clone());
                if v["type"] == "signal" && v["to"] == "bob" {
                    let sig: Signal = serde_json::from_value(v["data"].clone()).unwrap();
                    bob.to_bob.send(sig).unwrap();
                }
                if done(Step::Client(&v)) {
                    return;
                }
            }
            Some(sig) = bob.from_bob.recv() => {
                bob.seq += 1;
                s.send(json!({"type": "signal", "from": "bob", "seq": bob.seq, "data": sig})).await;
            }
            Some(ev) = bob.app.recv() => {
                if let Event::DataChannel(dc) = &ev {
                    bob.channel = Some(dc.clone());
                }
                if done(Step::Bob(&ev)) {
                    return;
                }
            }
            _ = tokio::time::sleep_until(end) => panic!("relay timed out; client sent {:?}", s.log),
        }
    }
}

fn loopback() -> Config {
    Config {
        host_candidates: HostCandidates::Only(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_refused_resume_rejoins_with_the_same_id_and_restarts_ice() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut bob = Bob::new().await;
    let (mut room, mut s1) = start(
        &l,
        config(l.local_addr().unwrap()),
        welcome(&["bob"], "tok1", 5),
    )
    .await;
    pump(&mut s1, &mut bob, |st| {
        matches!(st, Step::Bob(Event::DataChannel(_)))
    })
    .await;
    let first_offer = s1.signals()[0].clone();
    assert_eq!(first_offer["data"]["description"]["type"], "offer");
    // The client's end of the chat channel, and a message each way.
    let mut pc = None;
    let mut chat = None;
    while pc.is_none() || chat.is_none() {
        match timeout(WAIT, room.events.recv()).await.unwrap().unwrap() {
            RoomEvent::Connection { pc: p, .. } => pc = Some(p),
            RoomEvent::Channel { channel, .. } => chat = Some(channel),
            _ => {}
        }
    }
    let (pc, chat) = (pc.unwrap(), chat.unwrap());
    timeout(WAIT, chat.opened()).await.unwrap().unwrap();
    let bob_chat = bob.channel.clone().unwrap();
    chat.send_text("before").await.unwrap();
    assert_eq!(
        timeout(WAIT, bob_chat.recv()).await.unwrap(),
        Some(Message::Text("before".into()))
    );
    s1.cut();

    let mut s2 = Sock::accept(&l).await;
    s2.next("resume").await;
    s2.send(json!({"type": "error", "code": "resume-failed", "message": "session unknown"}))
        .await;
    // Same socket: a join for the same id, carrying the old token.
    let join = s2.next("join").await;
    assert_eq!(join["room"], "r");
    assert_eq!(join["peer"], "me");
    assert_eq!(join["session"], "tok1");
    assert_eq!(join["meta"], json!({}));
    s2.send(welcome(&["bob"], "tok2", 5)).await;
    bob.seq = 0; // a new session: the server numbers from 1 again
    let evs = events_until(&mut room, |e| matches!(e, RoomEvent::Rejoined { .. })).await;
    assert!(
        matches!(evs.last(), Some(RoomEvent::Rejoined { peer, peers }) if peer == "me" && peers == &["bob".to_string()]),
        "{evs:?}"
    );
    // Bob gets an ICE-restart offer on the same connection (new
    // credentials) and answers it.
    let old = ufrag(&first_offer);
    pump(&mut s2, &mut bob, |st| {
        matches!(st, Step::Client(v) if v["data"]["description"]["type"] == "offer" && ufrag(v) != old)
    })
    .await;
    let deadline = Instant::now() + WAIT;
    while pc.signaling_state().await.unwrap() != SignalingState::Stable {
        assert!(
            Instant::now() < deadline,
            "the restart offer was never answered"
        );
        pump_for(&mut s2, &mut bob, Duration::from_millis(100)).await;
    }
    let seqs: Vec<u64> = s2
        .signals()
        .iter()
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "numbered from 1: {seqs:?}"
    );
    assert!(s2.signals().iter().all(|v| v["to"] == "bob"));
    // The call carries on over the same connection and channel.
    pump_for(&mut s2, &mut bob, Duration::from_millis(500)).await;
    chat.send_text("after").await.unwrap();
    assert_eq!(
        timeout(WAIT, bob_chat.recv()).await.unwrap(),
        Some(Message::Text("after".into()))
    );
    bob_chat.send_text("back").await.unwrap();
    assert_eq!(
        timeout(WAIT, chat.recv()).await.unwrap(),
        Some(Message::Text("back".into()))
    );
    while let Ok(ev) = room.events.try_recv() {
        assert!(
            !matches!(ev, RoomEvent::Connection { .. }),
            "no second connection: {ev:?}"
        );
    }
    room.leave();
    pc.close().await;
    bob.pc.close().await;
}

async fn pump_for(s: &mut Sock, bob: &mut Bob, d: Duration) {
    let _ = timeout(d, pump(s, bob, |_| false)).await;
}

#[tokio::test]
async fn with_the_server_gone_the_room_gives_up_after_the_window_and_a_rejoin() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(l.local_addr().unwrap());
    cfg.reconnect = Some(ReconnectConfig {
        rejoin_attempts: 1,
        ..ReconnectConfig::default()
    });
    let (mut room, s1) = start(&l, cfg, welcome(&[], "tok1", 2)).await;
    drop(l); // nothing listens any more: every attempt is refused
    let cut_at = Instant::now();
    s1.cut();
    let evs = timeout(
        Duration::from_secs(15),
        events_until(&mut room, |e| matches!(e, RoomEvent::SessionLost { .. })),
    )
    .await
    .expect("the room gives up instead of retrying forever");
    let took = cut_at.elapsed();
    // The 2 s window runs out, then one rejoin fails.
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    assert!(took < Duration::from_secs(12), "gave up after {took:?}");
    let attempts: Vec<u32> = evs
        .iter()
        .filter_map(|e| match e {
            RoomEvent::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert!(attempts.len() >= 2, "{evs:?}");
    assert_eq!(attempts, (1..=attempts.len() as u32).collect::<Vec<_>>());
    match evs.last() {
        Some(RoomEvent::SessionLost { reason }) => {
            assert!(reason.contains("2 s window"), "{reason}")
        }
        e => panic!("{e:?}"),
    }
    // Nothing more happens: the room task is done with signaling.
    assert!(timeout(Duration::from_millis(500), room.events.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn a_rejoin_after_the_window_starts_every_connection_over() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (mut room, mut s1) = start(&l, config(addr), welcome(&["bob"], "tok1", 1)).await;
    let first_offer = s1.next("signal").await;
    assert_eq!(first_offer["data"]["description"]["type"], "offer");
    events_until(&mut room, |e| matches!(e, RoomEvent::Connection { .. })).await;
    s1.drain(Duration::from_millis(200)).await;
    assert!(
        s1.signals().len() > 1,
        "unacked signals pile up: {:?}",
        s1.log
    );
    // The server is away for longer than the 1 s window.
    drop(l);
    s1.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let l = TcpListener::bind(addr).await.unwrap();
    let mut s2 = Sock::accept(&l).await;
    // Too late to resume: a join under the same id, with the old token.
    let first = s2.next("join").await;
    assert_eq!(s2.log.len(), 1, "nothing before the join: {:?}", s2.log);
    assert_eq!(first["peer"], "me");
    assert_eq!(first["session"], "tok1");
    s2.send(welcome(&["bob"], "tok2", 1)).await;
    // Bob was told we left and dropped his end: our connection goes and a
    // new one is made, with us as the newcomer.
    let evs = events_until(&mut room, |e| matches!(e, RoomEvent::Connection { .. })).await;
    let kinds: Vec<&str> = evs
        .iter()
        .filter_map(|e| match e {
            RoomEvent::PeerLeft { .. } => Some("left"),
            RoomEvent::Rejoined { .. } => Some("rejoined"),
            RoomEvent::Connection { offerer: true, .. } => Some("connection"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["left", "rejoined", "connection"], "{evs:?}");
    // The old connection's unacked signals are not sent: the new session
    // starts with the new connection's offer, seq 1.
    let offer = s2.next("signal").await;
    assert_eq!(offer["seq"], 1);
    assert_eq!(offer["data"]["description"]["type"], "offer");
    let fingerprint = |v: &Value| {
        let sdp = v["data"]["description"]["sdp"]
            .as_str()
            .unwrap()
            .to_string();
        sdp.lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .unwrap()
            .to_string()
    };
    assert_ne!(
        fingerprint(&offer),
        fingerprint(&first_offer),
        "a new connection"
    );
    room.leave();
}

#[tokio::test]
async fn a_silent_socket_counts_as_dropped_and_is_resumed() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(l.local_addr().unwrap());
    cfg.ping_interval = Duration::from_millis(200);
    cfg.silence_timeout = Duration::from_secs(1);
    let (mut room, mut s1) = start(&l, cfg, welcome(&[], "tok1", 5)).await;
    // The server keeps the socket open but says nothing (a network that
    // went away without a reset): pings go unanswered.
    let t = Instant::now();
    s1.next("ping").await;
    s1.next("ping").await;
    let mut s2 = Sock::accept(&l).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "dropped after {took:?}");
    assert!(took < Duration::from_secs(3), "dropped after {took:?}");
    let resume = s2.next("resume").await;
    assert_eq!(resume["session"], "tok1");
    let evs = events_until(&mut room, |e| matches!(e, RoomEvent::Reconnecting { .. })).await;
    match evs.last() {
        Some(RoomEvent::Reconnecting { attempt: 1, reason }) => {
            assert!(
                reason.contains("nothing from the server for 1 s"),
                "{reason}"
            )
        }
        e => panic!("{e:?}"),
    }
    room.leave();
    drop(s1);
}

#[tokio::test]
async fn a_rejoin_whose_id_was_taken_takes_a_new_id_and_starts_over() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut room, mut s1) = start(
        &l,
        config(l.local_addr().unwrap()),
        welcome(&["bob"], "tok1", 5),
    )
    .await;
    let first_offer = s1.next("signal").await;
    events_until(&mut room, |e| matches!(e, RoomEvent::Connection { .. })).await;
    s1.cut();
    let mut s2 = Sock::accept(&l).await;
    s2.next("resume").await;
    s2.send(json!({"type": "error", "code": "resume-failed", "message": "gone"}))
        .await;
    let join = s2.next("join").await;
    assert_eq!(
        (&join["peer"], &join["session"]),
        (&json!("me"), &json!("tok1"))
    );
    s2.send(json!({"type": "error", "code": "peer-id-taken", "message": "taken"}))
        .await;
    // Any id then, and no claim to the old session.
    let any = s2.next("join").await;
    assert!(
        any.get("peer").is_none() && any.get("session").is_none(),
        "{any}"
    );
    let mut w = welcome(&["bob"], "tok2", 5);
    w["peer"] = json!("me2");
    s2.send(w).await;
    let evs = events_until(&mut room, |e| matches!(e, RoomEvent::Connection { .. })).await;
    let kinds: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            RoomEvent::PeerLeft { peer } => Some(format!("left {peer}")),
            RoomEvent::Rejoined { peer, .. } => Some(format!("rejoined as {peer}")),
            RoomEvent::Connection {
                peer,
                offerer: true,
                ..
            } => Some(format!("connection {peer}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        ["left bob", "rejoined as me2", "connection bob"],
        "{evs:?}"
    );
    let offer = s2.next("signal").await;
    assert_eq!(offer["seq"], 1);
    assert_ne!(ufrag(&offer), ufrag(&first_offer));
    room.leave();
}
