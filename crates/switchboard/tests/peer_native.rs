//! The native peer against a real `switchboard serve`: in-process
//! connections through its rooms and its TURN server, and the CLI
//! (`send`/`recv`) moving 50 MB direct and relay-only.

mod common;

use common::Server;
use peer::room::{self, RoomConfig, RoomEvent};
use peer::{CandidateType, Config, HostCandidates, IceServer, Message, PeerConnection};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::timeout;

fn loopback() -> HostCandidates {
    HostCandidates::Only(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])
}

fn http(s: &Server) -> String {
    format!("http://{}", s.addr)
}

/// Joins and returns the room plus the first open `chat` channel and its
/// connection.
async fn join_and_link(cfg: RoomConfig) -> (room::Room, peer::DataChannel, PeerConnection) {
    let mut r = room::join(cfg).await.expect("join");
    let mut pc = None;
    let mut ch = None;
    loop {
        let ev = timeout(Duration::from_secs(20), r.events.recv())
            .await
            .expect("room event in time")
            .expect("room open");
        match ev {
            RoomEvent::Connection { pc: p, .. } => pc = Some(p),
            RoomEvent::Channel { channel, .. } if channel.label() == "chat" => ch = Some(channel),
            _ => {}
        }
        if let (Some(p), Some(c)) = (&pc, &ch) {
            timeout(Duration::from_secs(20), c.opened())
                .await
                .expect("channel opens in time")
                .unwrap();
            return (r, c.clone(), p.clone());
        }
    }
}

async fn room_pair(server: &Server, room_name: &str, relay_only: bool, ice: Vec<IceServer>) {
    let mk = || {
        let mut c = RoomConfig::new(http(server), room_name);
        c.peer_config = Config {
            host_candidates: loopback(),
            relay_only,
            ice_servers: ice.clone(),
            ..Config::default()
        };
        c.use_server_ice = ice.is_empty();
        c
    };
    let first = tokio::spawn(join_and_link(mk()));
    tokio::time::sleep(Duration::from_millis(200)).await; // `first` is the older peer
    let (_r2, ch2, pc2) = join_and_link(mk()).await;
    let (_r1, ch1, pc1) = first.await.unwrap();
    ch2.send_text("from the newcomer").await.unwrap();
    assert_eq!(
        timeout(Duration::from_secs(5), ch1.recv()).await.unwrap(),
        Some(Message::Text("from the newcomer".into()))
    );
    ch1.send_binary(&[7; 1000]).await.unwrap();
    assert_eq!(
        timeout(Duration::from_secs(5), ch2.recv()).await.unwrap(),
        Some(Message::Binary(vec![7; 1000]))
    );
    for pc in [&pc1, &pc2] {
        let stats = pc.stats().await.unwrap();
        let pair = stats.selected_pair.expect("selected pair");
        // The per-path counts say the same as the pair: DTLS and both
        // messages went one way only, in both directions.
        let (used, unused) = if relay_only {
            assert_eq!(pair.local.kind, CandidateType::Relay, "{pair:?}");
            (stats.paths.relay, stats.paths.direct)
        } else {
            assert_eq!(pair.local.kind, CandidateType::Host, "{pair:?}");
            (stats.paths.direct, stats.paths.relay)
        };
        assert!(
            used.sent > 1000 && used.received > 1000,
            "{:?}",
            stats.paths
        );
        assert_eq!(unused, peer::Traffic::default(), "{:?}", stats.paths);
    }
    pc1.close().await;
    pc2.close().await;
}

#[tokio::test]
async fn native_peers_meet_in_a_room_direct() {
    let server = Server::start(&[]);
    room_pair(&server, "native-direct", false, vec![]).await;
}

#[tokio::test]
async fn native_peers_relay_only_through_serve_turn_udp_and_tcp() {
    let server = Server::start(&["--allow-peer", "127.0.0.0/8", "--turn-user", "alice:secret"]);
    let turn = server.turn.unwrap();
    // With the server's own iceServers (REST credentials minted per peer).
    room_pair(&server, "native-relay", true, vec![]).await;
    // TURN over TCP with static credentials, as a foreign server would be used.
    let tcp = vec![IceServer {
        urls: vec![format!("turn:{turn}?transport=tcp")],
        username: Some("alice".into()),
        credential: Some("secret".into()),
    }];
    room_pair(&server, "native-relay-tcp", true, tcp).await;
    // TURN metrics are copied from the workers once a second.
    let mut relayed = 0.0;
    for _ in 0..30 {
        relayed = server.metric("switchboard_turn_relayed_packets_total{direction=\"to_peer\"}");
        if relayed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(relayed > 0.0, "the server relayed the traffic");
}

// ------------------------------------------------------------------ CLI

fn sha256_file(p: &Path) -> String {
    let data = std::fs::read(p).unwrap();
    Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-peer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

fn events(out: &[u8]) -> Vec<Value> {
    BufReader::new(out)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every stdout line is JSON"))
        .collect()
}

/// What a `recv` then `send` run left: send's output (stdout and stderr),
/// recv's exit status and its stdout.
struct Pair {
    send: std::process::Output,
    recv: std::process::ExitStatus,
    recv_stdout: Vec<u8>,
}

/// Starts `recv RECV..`, runs `send SEND..` 300 ms later (so recv joined
/// first), then waits for recv. recv's stdout goes to a file in `dir`: a
/// pipe nobody reads while send runs would fill with events, and recv
/// waits for its stdout.
fn send_to_recv(dir: &Path, recv: &[&str], send: &[&str]) -> Pair {
    let log = dir.join("recv.jsonl");
    let mut r = cli(&[&["recv"], recv].concat())
        .stdout(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let send = cli(&[&["send"], send].concat())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let recv = r.wait().unwrap();
    Pair {
        send,
        recv,
        recv_stdout: std::fs::read(&log).unwrap(),
    }
}

fn transfer_50mb(server: &Server, room_name: &str, extra: &[&str], want_local: &str) {
    let dir = tmpdir(room_name);
    let src = dir.join("big.bin");
    let mut data = vec![0u8; 50_000_000];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let url = http(server);
    let mut common = vec![
        "--server",
        url.as_str(),
        "--room",
        room_name,
        "--json",
        "--loopback",
        "--timeout",
        "20",
    ];
    common.extend_from_slice(extra);
    let r = send_to_recv(
        &dir,
        &[
            &common[..],
            &["--out", out.to_str().unwrap(), "--count", "1"],
        ]
        .concat(),
        &[&common[..], &[src.to_str().unwrap()]].concat(),
    );
    assert!(r.send.status.success(), "send exit {:?}", r.send.status);
    assert!(r.recv.success(), "recv exit {:?}", r.recv);
    let sent = events(&r.send.stdout);
    let got = events(&r.recv_stdout);
    let fs = sent
        .iter()
        .find(|e| e["event"] == "file-sent")
        .expect("file-sent event");
    let fr = got
        .iter()
        .find(|e| e["event"] == "file-received")
        .expect("file-received event");
    let want = sha256_file(&src);
    assert_eq!(fs["sha256"], want.as_str());
    assert_eq!(fr["sha256"], want.as_str());
    assert_eq!(fs["ok"], true);
    assert_eq!(sha256_file(&out.join("big.bin")), want);
    // Nothing but the finished file is left in the output directory.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    for evs in [&sent, &got] {
        let c = evs
            .iter()
            .find(|e| e["event"] == "connected")
            .expect("connected event");
        assert_eq!(c["pair"]["local"]["type"], want_local, "{c}");
        assert!(c["setup_ms"].as_u64().is_some());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_sends_50mb_direct() {
    let server = Server::start(&[]);
    transfer_50mb(&server, "cli-direct", &[], "host");
}

#[test]
fn cli_sends_50mb_relay_only() {
    let server = Server::start(&["--allow-peer", "127.0.0.0/8"]);
    transfer_50mb(&server, "cli-relay", &["--relay-only"], "relay");
}

#[test]
fn cli_errors_have_clear_codes() {
    let dir = tmpdir("errors");
    let f = dir.join("f.txt");
    std::fs::write(&f, b"x").unwrap();
    let f = f.to_str().unwrap();
    let code = |args: &[&str]| {
        let o = cli(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    // Bad URLs are usage errors.
    assert_eq!(
        code(&["send", "--server", "localhost:1", "--room", "r", f]).0,
        Some(2)
    );
    assert_eq!(
        code(&[
            "send",
            "--server",
            "http://127.0.0.1:1",
            "--room",
            "r",
            "--stun",
            "turn:x",
            f
        ])
        .0,
        Some(2)
    );
    assert_eq!(
        code(&[
            "recv",
            "--server",
            "http://127.0.0.1:1",
            "--room",
            "bad room!",
            "--out",
            "/tmp"
        ])
        .0,
        Some(2)
    );
    // Missing file: checked before anything else.
    assert_eq!(
        code(&[
            "send",
            "--server",
            "http://127.0.0.1:1",
            "--room",
            "r",
            "/nonexistent/file"
        ])
        .0,
        Some(1)
    );
    // Unreachable server.
    let (c, out) = code(&[
        "send",
        "--json",
        "--server",
        "http://127.0.0.1:1",
        "--room",
        "r",
        f,
    ]);
    assert_eq!(c, Some(3), "{out}");
    assert!(out.contains("\"event\":\"error\""), "{out}");
    // Room full.
    let server = Server::start(&["--max-room-peers", "1"]);
    let url = http(&server);
    let mut holder = cli(&[
        "recv",
        "--server",
        &url,
        "--room",
        "full",
        "--out",
        dir.to_str().unwrap(),
    ])
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (c, out) = code(&["send", "--json", "--server", &url, "--room", "full", f]);
    holder.kill().unwrap();
    let _ = holder.wait();
    assert_eq!(c, Some(3), "{out}");
    assert!(out.contains("room-full"), "{out}");
}

#[test]
fn cli_reports_failure_when_no_path_exists() {
    // Relay-only with a server that offers no TURN: nothing can connect.
    let server = Server::start(&["--no-turn"]);
    let url = http(&server);
    let dir = tmpdir("nopath");
    let f = dir.join("f.txt");
    std::fs::write(&f, b"x").unwrap();
    let common = [
        "--server",
        url.as_str(),
        "--room",
        "nopath",
        "--json",
        "--relay-only",
        "--timeout",
        "4",
    ];
    let mut recv = cli(&[&["recv"], &common[..], &["--out", dir.to_str().unwrap()]].concat())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = std::time::Instant::now();
    let send = cli(&[&["send"], &common[..], &[f.to_str().unwrap()]].concat())
        .output()
        .unwrap();
    assert_eq!(
        send.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&send.stdout)
    );
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "fails within its timeout"
    );
    assert!(String::from_utf8_lossy(&send.stdout).contains("connection-failed"));
    let _ = recv.kill();
    let _ = recv.wait();
}

// ------------------------------------------------------------------ TURN/TCP and ICE restart

/// A TCP proxy in front of the TURN server that counts the connections
/// peers open through it and how many of them the peer side still holds.
struct Proxy {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let (acc, liv) = (accepted.clone(), live.clone());
        tokio::spawn(async move {
            while let Ok((peer, _)) = l.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                liv.fetch_add(1, Ordering::SeqCst);
                let liv = liv.clone();
                tokio::spawn(async move {
                    let server = tokio::net::TcpStream::connect(target).await.unwrap();
                    let (mut prd, mut pwr) = peer.into_split();
                    let (mut srd, mut swr) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut srd, &mut pwr).await;
                    });
                    // The connection counts as live until the peer side
                    // closes it (EOF or reset).
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match prd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if swr.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    liv.fetch_sub(1, Ordering::SeqCst);
                    back.abort();
                });
            }
        });
        Proxy {
            addr,
            accepted,
            live,
        }
    }

    fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        (
            self.accepted.load(Ordering::SeqCst),
            self.live.load(Ordering::SeqCst),
        )
    }

    /// Waits until (accepted, live) is `want`; returns the last counts.
    async fn wait_for(&self, want: (usize, usize)) -> (usize, usize) {
        for _ in 0..100 {
            if self.counts() == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.counts()
    }
}

fn tcp_turn(addr: std::net::SocketAddr, user: &str, pass: &str) -> IceServer {
    IceServer {
        urls: vec![format!("turn:{addr}?transport=tcp")],
        username: Some(user.into()),
        credential: Some(pass.into()),
    }
}

#[tokio::test]
async fn ice_restart_over_turn_tcp_keeps_data_flowing_and_leaves_no_connection_behind() {
    use peer::{negotiate, DataChannelInit, Event};
    let server = Server::start(&["--allow-peer", "127.0.0.0/8", "--turn-user", "alice:secret"]);
    let turn = server.turn.unwrap();
    // A's first TURN server refuses its credentials, so an ICE restart
    // replaces that relay while the second one carries the data.
    let bad = Proxy::start(turn).await;
    let good = Proxy::start(turn).await;
    let mk = |ice: Vec<IceServer>| Config {
        host_candidates: loopback(),
        relay_only: true,
        ice_servers: ice,
        ..Config::default()
    };
    let (a, a_ev) = PeerConnection::new(mk(vec![
        tcp_turn(bad.addr, "alice", "wrong"),
        tcp_turn(good.addr, "alice", "secret"),
    ]))
    .await
    .unwrap();
    let (b, b_ev) = PeerConnection::new(mk(vec![tcp_turn(turn, "alice", "secret")]))
        .await
        .unwrap();
    let (to_a, a_in) = tokio::sync::mpsc::unbounded_channel();
    let (to_b, b_in) = tokio::sync::mpsc::unbounded_channel();
    let _a_app = negotiate::spawn(a.clone(), a_ev, true, a_in, move |m| {
        let _ = to_b.send(m);
    });
    let mut b_app = negotiate::spawn(b.clone(), b_ev, false, b_in, move |m| {
        let _ = to_a.send(m);
    });
    let dc = a
        .create_data_channel("chat", DataChannelInit::default())
        .await
        .unwrap();
    timeout(Duration::from_secs(20), dc.opened())
        .await
        .expect("channel opens over TURN/TCP")
        .unwrap();
    let remote = loop {
        match timeout(Duration::from_secs(10), b_app.recv())
            .await
            .unwrap()
        {
            Some(Event::DataChannel(c)) => break c,
            Some(_) => {}
            None => panic!("events ended"),
        }
    };
    let roundtrip = |n: usize| {
        let (dc, remote) = (dc.clone(), remote.clone());
        async move {
            for i in 0..n {
                dc.send_text(&format!("a{i}")).await.unwrap();
                assert_eq!(
                    timeout(Duration::from_secs(5), remote.recv())
                        .await
                        .unwrap(),
                    Some(Message::Text(format!("a{i}")))
                );
                remote.send_binary(&[i as u8; 3000]).await.unwrap();
                assert_eq!(
                    timeout(Duration::from_secs(5), dc.recv()).await.unwrap(),
                    Some(Message::Binary(vec![i as u8; 3000]))
                );
            }
        }
    };
    roundtrip(5).await;
    let pair = a
        .stats()
        .await
        .unwrap()
        .selected_pair
        .expect("selected pair");
    assert_eq!(pair.local.kind, CandidateType::Relay, "{pair:?}");
    assert_eq!(pair.local.relay_protocol, Some("tcp"), "{pair:?}");
    assert_eq!(bad.wait_for((1, 1)).await, (1, 1), "one refused relay");
    assert_eq!(good.counts(), (1, 1), "one working relay");

    for round in 1..=2 {
        a.restart_ice().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            a.signaling_state().await.unwrap(),
            peer::SignalingState::Stable
        );
        roundtrip(20).await;
        // The refused relay was replaced: a new connection, the old one
        // closed. The working allocation was kept on its connection.
        assert_eq!(
            bad.wait_for((1 + round, 1)).await,
            (1 + round, 1),
            "restart {round}: the replaced relay's connection is closed"
        );
        assert_eq!(good.counts(), (1, 1), "restart {round}");
    }
    let pair = a
        .stats()
        .await
        .unwrap()
        .selected_pair
        .expect("selected pair");
    assert_eq!(pair.local.kind, CandidateType::Relay, "{pair:?}");

    // Closing leaves no TURN/TCP connection (and so no task) behind.
    a.close().await;
    b.close().await;
    assert_eq!(bad.wait_for((3, 0)).await, (3, 0));
    assert_eq!(good.wait_for((1, 0)).await, (1, 0));
}

// ------------------------------------------------------------------ folders

/// Random-looking bytes, `len` of them, from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn cli_sends_a_folder_tree_and_recv_recreates_it() {
    let server = Server::start(&[]);
    let url = http(&server);
    let dir = tmpdir("folder");
    // 200 files: nested up to four levels, some empty, unicode names.
    let src = dir.join("tree été");
    let folders = ["", "a", "a/b", "a/b/c", "日本語", "日本語/données", "x y/z"];
    for (i, f) in (0..200).zip(folders.iter().cycle()) {
        let d = src.join(f);
        std::fs::create_dir_all(&d).unwrap();
        let size = if i % 10 == 0 { 0 } else { (i * 997) % 20_000 };
        let name = match i % 4 {
            0 => format!("f{i}.bin"),
            1 => format!("ü {i}.txt"),
            2 => format!("😀-{i}"),
            _ => format!("n{i}.tar.gz"),
        };
        std::fs::write(d.join(name), noise(i as u64, size)).unwrap();
    }
    // Not sent: a hidden file (the receiver refuses leading dots) and a
    // symlink (it could lead out of the folder).
    std::fs::write(src.join("a/.hidden"), b"secret").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
    let out = dir.join("out");
    let common = [
        "--server",
        url.as_str(),
        "--room",
        "folder",
        "--json",
        "--loopback",
        "--timeout",
        "20",
    ];
    let r = send_to_recv(
        &dir,
        &[
            &common[..],
            &["--out", out.to_str().unwrap(), "--count", "200"],
        ]
        .concat(),
        &[&common[..], &[src.to_str().unwrap()]].concat(),
    );
    assert!(r.send.status.success(), "send exit {:?}", r.send.status);
    assert!(r.recv.success(), "recv exit {:?}", r.recv);
    let received = events(&r.recv_stdout)
        .iter()
        .filter(|e| e["event"] == "file-received" && e["ok"] == true)
        .count();
    assert_eq!(received, 200);
    // The tree arrived under its own name, identical but for the two
    // files that were skipped.
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(out.join("tree été"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&diff.stdout);
    let mut lines: Vec<&str> = report.lines().collect();
    lines.sort();
    let mut want = [
        format!("Only in {}: link", src.display()),
        format!("Only in {}: .hidden", src.join("a").display()),
    ];
    want.sort();
    assert_eq!(lines, want, "diff -r: {report}");
}

/// The next message on `ch`, which must be a JSON text frame, within 10 s.
async fn next_text_frame(ch: &peer::DataChannel) -> Value {
    let m = timeout(Duration::from_secs(10), ch.recv())
        .await
        .expect("a frame in time");
    let Some(Message::Text(t)) = m else {
        panic!("want a text frame, got {m:?}")
    };
    serde_json::from_str(&t).unwrap()
}

#[tokio::test]
async fn recv_refuses_hostile_paths_and_writes_nothing() {
    let server = Server::start(&[]);
    let url = http(&server);
    for i in 0..4 {
        let dir = tmpdir(&format!("hostile{i}"));
        let abs = dir.join("abs.txt").display().to_string();
        let path = [
            "../escape.txt",
            abs.as_str(),
            "C:\\x.txt",
            "ok/../../up.txt",
        ][i];
        let out = dir.join("out");
        let room_name = format!("hostile-{i}");
        let mut recv = cli(&[
            "recv",
            "--server",
            &url,
            "--room",
            &room_name,
            "--json",
            "--loopback",
            "--timeout",
            "20",
            "--out",
            out.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
        // A crafted sender: the real wire format, a path no honest sender makes.
        let mut cfg = RoomConfig::new(url.clone(), room_name.as_str());
        cfg.peer_config = Config {
            host_candidates: loopback(),
            ..Config::default()
        };
        let (_room, ch, pc) = join_and_link(cfg).await;
        if i == 0 {
            // A file-end for a file that never started is answered, not ok.
            let stray = transfer::Frame::FileEnd {
                id: "never-started".into(),
                sha256: transfer::Digest::of(b"x"),
            };
            ch.send_text(&stray.to_json().unwrap()).await.unwrap();
            let ack = next_text_frame(&ch).await;
            assert_eq!(
                ack,
                serde_json::json!({"type": "file-ack", "id": "never-started", "ok": false,
                    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
            );
        }
        let data = noise(i as u64, 3000);
        let start = transfer::Frame::FileStart {
            id: format!("h{i}"),
            name: "x.txt".into(),
            size: data.len() as u64,
            mime: None,
            path: Some(path.into()),
        };
        ch.send_text(&start.to_json().unwrap()).await.unwrap();
        ch.send_binary(&data).await.unwrap();
        let end = transfer::Frame::FileEnd {
            id: format!("h{i}"),
            sha256: transfer::Digest::of(&data),
        };
        ch.send_text(&end.to_json().unwrap()).await.unwrap();
        // The ack comes back: not ok.
        let ack = next_text_frame(&ch).await;
        assert_eq!(
            (ack["type"].as_str(), ack["ok"].as_bool()),
            (Some("file-ack"), Some(false)),
            "{path}: {ack}"
        );
        let status = tokio::task::spawn_blocking(move || recv.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(5), "{path}");
        pc.close().await;
        // Nothing anywhere: not in --out, not beside it, not at the absolute path.
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["out"], "{path}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "{path}: wrote into --out"
        );
    }
}

#[test]
fn cli_human_output_for_one_file_and_for_several() {
    let server = Server::start(&[]);
    let url = http(&server);
    let dir = tmpdir("human");
    let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
    std::fs::write(&a, noise(1, 100_000)).unwrap();
    std::fs::write(&b, noise(2, 1000)).unwrap();
    // One file, then two: a single bar, then the overall bar with the file's.
    for (k, files) in [vec![&a], vec![&a, &b]].into_iter().enumerate() {
        let room_name = format!("human-{k}");
        let common = [
            "--server",
            url.as_str(),
            "--room",
            room_name.as_str(),
            "--loopback",
            "--timeout",
            "20",
        ];
        let out = dir.join(format!("out{k}"));
        let count = files.len().to_string();
        let paths: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
        let r = send_to_recv(
            &dir,
            &[
                &["--json"],
                &common[..],
                &["--out", out.to_str().unwrap(), "--count", &count],
            ]
            .concat(),
            &[&common[..], &paths[..]].concat(),
        );
        // Human output goes to stderr.
        let text = String::from_utf8_lossy(&r.send.stderr);
        assert!(
            r.send.status.success(),
            "send exit {:?}: {text}",
            r.send.status
        );
        assert!(r.recv.success(), "recv exit {:?}", r.recv);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("sent ")).count(),
            files.len(),
            "{text}"
        );
        assert!(text.contains("on the wire: direct"), "{text}");
    }
}
