//! The CLI's signaling heals: `send` and `recv` reach an in-process
//! `serve` through a TCP proxy that the test cuts abruptly (TCP reset, no
//! close frame) in the middle of a transfer. Both resume their sessions and
//! the file arrives whole. With the server gone for good, or a peer whose
//! connection ICE restarts cannot bring back, they exit with code 6
//! instead of hanging.
//!
//! A transfer whose `recv` or `send` is killed and started again picks up
//! where it broke off: the receiver's kept part is offered with
//! `file-resume`, and only the rest crosses the wire.

mod common;

use common::cli::Cli;
use common::InProcess;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// A TCP proxy in front of the signaling server whose connections the
/// test can reset at will; it keeps accepting new ones.
struct Proxy {
    addr: SocketAddr,
    /// Where new connections go.
    target: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accepted: Arc<Mutex<usize>>,
    /// Runs the proxy; dropping it stops accepting.
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let target = Arc::new(Mutex::new(target));
        let (c, a, t) = (conns.clone(), accepted.clone(), target.clone());
        rt.spawn(async move {
            while let Ok((mut client, _)) = l.accept().await {
                *a.lock().unwrap() += 1;
                let to = *t.lock().unwrap();
                let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                    continue;
                };
                // Dropping a socket with linger 0 resets it: no FIN, no
                // close frame, like a dead network path.
                for s in [&client, &server] {
                    socket2::SockRef::from(s)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                }
                let task = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            target,
            conns,
            accepted,
            _rt: rt,
        }
    }

    /// Resets every connection open now; returns how many.
    fn cut(&self) -> usize {
        let conns: Vec<AbortHandle> = self.conns.lock().unwrap().drain(..).collect();
        for c in &conns {
            c.abort();
        }
        conns.len()
    }

    /// Sends new connections to `to` (another server).
    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-resume-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha256_file(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 40 MB of noise. Sent in 1 KiB chunks the transfer lasts a few seconds
/// on loopback, well past a reconnect (first retry within 1 s).
fn big_file(dir: &Path) -> PathBuf {
    let src = dir.join("big.bin");
    let mut data = vec![0u8; 40_000_000];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&src, &data).unwrap();
    src
}

/// `recv` and `send` of one big file through `proxy`, in `room`.
struct Transfer {
    dir: PathBuf,
    want: String,
    out: PathBuf,
    recv: Cli,
    send: Cli,
}

impl Transfer {
    fn start(proxy: &Proxy, room: &str) -> Transfer {
        let dir = tmpdir(room);
        let src = big_file(&dir);
        let want = sha256_file(&src);
        let out = dir.join("out");
        let url = format!("http://{}", proxy.addr);
        let common = [
            "--server",
            url.as_str(),
            "--room",
            room,
            "--json",
            "--loopback",
        ];
        let recv = Cli::spawn(
            &[
                &["recv"],
                &common[..],
                &["--out", out.to_str().unwrap(), "--count", "1"],
            ]
            .concat(),
        );
        std::thread::sleep(Duration::from_millis(300));
        let send = Cli::spawn(
            &[
                &["send"],
                &common[..],
                &["--chunk", "1024", src.to_str().unwrap()],
            ]
            .concat(),
        );
        Transfer {
            dir,
            want,
            out,
            recv,
            send,
        }
    }
}

/// Both exit 0 and the file arrived whole; returns their events.
fn finish_ok(send: Cli, recv: Cli, want: &str, out: &Path) -> (Vec<Value>, Vec<Value>) {
    let (send_code, sent) = send.finish(Duration::from_secs(90));
    let (recv_code, got) = recv.finish(Duration::from_secs(30));
    assert_eq!(send_code, Some(0), "send: {:?}", names(&sent));
    assert_eq!(recv_code, Some(0), "recv: {:?}", names(&got));
    let fs = sent
        .iter()
        .find(|e| e["event"] == "file-sent")
        .expect("file-sent");
    let fr = got
        .iter()
        .find(|e| e["event"] == "file-received")
        .expect("file-received");
    assert_eq!(fs["sha256"], want);
    assert_eq!(fs["ok"], true);
    assert_eq!(fr["sha256"], want);
    assert_eq!(sha256_file(&out.join("big.bin")), want);
    (sent, got)
}

fn names(evs: &[Value]) -> Vec<&str> {
    evs.iter().filter_map(|e| e["event"].as_str()).collect()
}

#[test]
fn send_and_recv_finish_a_transfer_across_a_signaling_reset() {
    let server = InProcess::start(&["--no-turn", "--resume-window", "20"]);
    let proxy = Proxy::start(server.addr);
    let Transfer {
        dir,
        want,
        out,
        recv,
        mut send,
    } = Transfer::start(&proxy, "cut");

    // Mid-transfer: reset both signaling connections.
    send.wait_for("progress", Duration::from_secs(30));
    assert_eq!(proxy.cut(), 2, "both CLIs were connected through the proxy");
    send.wait_for("resumed", Duration::from_secs(10));

    let (sent, got) = finish_ok(send, recv, &want, &out);
    for (who, evs) in [("send", &sent), ("recv", &got)] {
        let n = names(evs);
        // The drop was seen and the session resumed: no rejoin, no restart.
        let r = n
            .iter()
            .position(|e| *e == "reconnecting")
            .unwrap_or_else(|| panic!("{who}: {n:?}"));
        let s = n
            .iter()
            .position(|e| *e == "resumed")
            .unwrap_or_else(|| panic!("{who}: {n:?}"));
        assert!(r < s, "{who}: {n:?}");
        assert!(!n.contains(&"rejoined"), "{who}: {n:?}");
        assert!(!n.contains(&"peer-left"), "{who}: {n:?}");
        assert!(!n.contains(&"error"), "{who}: {n:?}");
        let first = evs.iter().find(|e| e["event"] == "reconnecting").unwrap();
        assert_eq!(first["attempt"], 1, "{who}: {first}");
        // The connection came up before the cut and stayed up: no
        // `connected` after it. (Before it there may be two: `connected`
        // is also printed when data moves to another candidate pair, and
        // on a loaded machine str0m can nominate a second loopback pair
        // just after the first; that is not what this test is about.)
        let c = n
            .iter()
            .position(|e| *e == "connected")
            .unwrap_or_else(|| panic!("{who}: {n:?}"));
        assert!(c < r, "{who}: {n:?}");
        assert!(!n[r..].contains(&"connected"), "{who}: {n:?}");
    }
    // Two first connections, two resumed ones.
    assert!(proxy.accepted() >= 4, "accepted {}", proxy.accepted());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_transfer_survives_a_server_that_lost_every_session() {
    let first = InProcess::start(&["--no-turn"]);
    let proxy = Proxy::start(first.addr);
    let Transfer {
        dir,
        want,
        out,
        recv,
        mut send,
    } = Transfer::start(&proxy, "lost");

    // Mid-transfer the signaling lands on a server that knows nothing of
    // the sessions (a restarted node): resumes fail, both rejoin.
    send.wait_for("progress", Duration::from_secs(30));
    let second = InProcess::start(&["--no-turn"]);
    proxy.retarget(second.addr);
    assert_eq!(proxy.cut(), 2);
    send.wait_for("rejoined", Duration::from_secs(10));

    let (sent, got) = finish_ok(send, recv, &want, &out);
    for (who, evs) in [("send", &sent), ("recv", &got)] {
        let n = names(evs);
        assert!(n.contains(&"rejoined"), "{who}: {n:?}");
        assert!(!n.contains(&"resumed"), "{who}: {n:?}");
        // The connection was kept: nobody left, no second connection.
        assert!(!n.contains(&"peer-left"), "{who}: {n:?}");
        assert!(!n.contains(&"error"), "{who}: {n:?}");
    }
    // Whoever rejoined second found the other there and restarted ICE
    // toward it; the first one saw it join again.
    let peers_seen: Vec<usize> = [&sent, &got]
        .iter()
        .map(|evs| {
            evs.iter()
                .find(|e| e["event"] == "rejoined")
                .map(|e| e["peers"].as_array().unwrap().len())
                .unwrap()
        })
        .collect();
    assert!(peers_seen.contains(&1), "{peers_seen:?}");
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_the_server_gone_for_good_the_cli_exits_with_code_6() {
    let server = InProcess::start(&["--no-turn", "--resume-window", "2"]);
    let dir = tmpdir("gone");
    let url = format!("http://{}", server.addr);
    let mut recv = Cli::spawn(&[
        "recv",
        "--server",
        &url,
        "--room",
        "gone",
        "--json",
        "--out",
        dir.to_str().unwrap(),
    ]);
    recv.wait_for("joined", Duration::from_secs(10));
    let stopped = Instant::now();
    server.shutdown().unwrap();
    let (code, evs) = recv.finish(Duration::from_secs(40));
    let took = stopped.elapsed();
    assert_eq!(code, Some(6), "{evs:?}");
    let n = names(&evs);
    assert!(n.contains(&"reconnecting"), "{n:?}");
    assert!(!n.contains(&"resumed") && !n.contains(&"rejoined"), "{n:?}");
    let err = evs.last().unwrap();
    assert_eq!(err["event"], "error", "{evs:?}");
    assert_eq!(err["code"], "session-lost", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("window") && msg.contains("rejoin"), "{msg}");
    // The 2 s window, then two rejoins with backoff: well under 40 s.
    assert!(took >= Duration::from_secs(2), "gave up after {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_frozen_peer_ends_in_code_6_once_ice_restarts_are_exhausted() {
    // A long idle timeout, so the frozen peer is not reported gone by
    // signaling first (that would be exit 5, peer-left).
    let server = InProcess::start(&["--no-turn", "--idle-timeout", "300"]);
    let dir = tmpdir("frozen");
    let src = big_file(&dir);
    let out = dir.join("out");
    let url = format!("http://{}", server.addr);
    let common = [
        "--server",
        url.as_str(),
        "--room",
        "frozen",
        "--json",
        "--loopback",
    ];
    let mut recv = Cli::spawn(
        &[
            &["recv"],
            &common[..],
            &["--out", out.to_str().unwrap(), "--count", "1"],
        ]
        .concat(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut send = Cli::spawn(
        &[
            &["send"],
            &common[..],
            // Not the default 30 s wait for another receiver after
            // the restarts: the test is about the exit code.
            &["--chunk", "1024", "--timeout", "5", src.to_str().unwrap()],
        ]
        .concat(),
    );
    send.wait_for("progress", Duration::from_secs(30));
    let pid = recv.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let frozen = Instant::now();
    let (code, evs) = send.finish(Duration::from_secs(120));
    let took = frozen.elapsed();
    let _ = recv.child.kill();
    let _ = recv.child.wait();
    assert_eq!(code, Some(6), "{:?}", names(&evs));
    let err = evs.last().unwrap();
    assert_eq!(err["code"], "restarts-exhausted", "{err}");
    assert!(!names(&evs).contains(&"file-sent"), "{:?}", names(&evs));
    // Silence is noticed within ~11 s; three restarts of at most 10 s.
    assert!(took < Duration::from_secs(90), "took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `cli` reports at least `bytes` of its file.
fn wait_for_bytes(cli: &mut Cli, bytes: u64) {
    loop {
        let p = cli.wait_for("progress", Duration::from_secs(60));
        if p["bytes"].as_u64().unwrap() >= bytes {
            return;
        }
    }
}

/// The one `.part` file in `out` and its length.
fn kept_part(out: &Path) -> u64 {
    let parts: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert_eq!(parts.len(), 1, "{parts:?}");
    parts[0].metadata().unwrap().len()
}

/// Starts `send` or `recv` (`what`) of the 40 MB file in `room`.
fn transfer_cli(server: &InProcess, room: &str, what: &str, path: &Path) -> Cli {
    let url = format!("http://{}", server.addr);
    let mut args = vec![
        what,
        "--server",
        url.as_str(),
        "--room",
        room,
        "--json",
        "--loopback",
    ];
    if what == "send" {
        args.extend(["--chunk", "1024", path.to_str().unwrap()]);
    } else {
        args.extend(["--out", path.to_str().unwrap(), "--count", "1"]);
    }
    Cli::spawn(&args)
}

/// The survivor's and the restarted process's events agree on a resume
/// from about where the first one was killed, and only the rest came over
/// the wire again.
fn check_resumed(sent: &[Value], got: &[Value], killed_at: u64) {
    let size = 40_000_000u64;
    let offered = sent
        .iter()
        .find(|e| e["event"] == "file-resumed")
        .unwrap_or_else(|| panic!("send never resumed: {:?}", names(sent)));
    let fr = got.iter().find(|e| e["event"] == "file-received").unwrap();
    let at = fr["resumed_at"].as_u64().expect("resumed_at");
    assert_eq!(offered["offset"].as_u64(), Some(at));
    assert!(
        at >= killed_at,
        "resumed at {at}, but {killed_at} were on disk"
    );
    assert!(at >= size * 35 / 100, "resumed at {at} of {size}");
    // The rest, plus what was sent from byte 0 before the seek came back.
    let transferred = fr["transferred"].as_u64().unwrap();
    assert!(
        transferred <= size - at + size / 10,
        "{transferred} bytes came over the wire after a resume at {at}"
    );
    assert!(
        names(sent).contains(&"transfer-interrupted")
            || names(got).contains(&"transfer-interrupted")
    );
}

#[test]
fn a_killed_recv_started_again_resumes_from_its_part_file() {
    // A short window, so the sender learns soon that recv is gone.
    let server = InProcess::start(&["--no-turn", "--resume-window", "2"]);
    let dir = tmpdir("recv-killed");
    let src = big_file(&dir);
    let want = sha256_file(&src);
    let out = dir.join("out");
    let mut recv = transfer_cli(&server, "rk", "recv", &out);
    std::thread::sleep(Duration::from_millis(300));
    let send = transfer_cli(&server, "rk", "send", &src);
    wait_for_bytes(&mut recv, 16_000_000);
    recv.child.kill().unwrap();
    recv.child.wait().unwrap();
    let killed_at = kept_part(&out);
    assert!(killed_at >= 16_000_000, "{killed_at}");

    let recv = transfer_cli(&server, "rk", "recv", &out);
    let (sent, got) = finish_ok(send, recv, &want, &out);
    check_resumed(&sent, &got, killed_at);
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["big.bin"], "the part is gone once the file is whole");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_send_started_again_resumes_into_the_kept_part() {
    let server = InProcess::start(&["--no-turn", "--resume-window", "2"]);
    let dir = tmpdir("send-killed");
    let src = big_file(&dir);
    let want = sha256_file(&src);
    let out = dir.join("out");
    let mut recv = transfer_cli(&server, "sk", "recv", &out);
    std::thread::sleep(Duration::from_millis(300));
    let mut send = transfer_cli(&server, "sk", "send", &src);
    wait_for_bytes(&mut send, 16_000_000);
    send.child.kill().unwrap();
    send.child.wait().unwrap();
    recv.wait_for("transfer-interrupted", Duration::from_secs(30));
    let killed_at = kept_part(&out);

    let send = transfer_cli(&server, "sk", "send", &src);
    let (sent, got) = finish_ok(send, recv, &want, &out);
    check_resumed(&sent, &got, killed_at);
    let _ = std::fs::remove_dir_all(&dir);
}
