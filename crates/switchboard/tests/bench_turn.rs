//! `switchboard bench turn` against switchboard's own TURN server and
//! against coturn's `turnserver` (Debian package `coturn`, installed by
//! tests/run.sh). Correctness only: the machine is shared and noisy, so no
//! timing thresholds.

mod common;

use common::Server;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bench(server: SocketAddr, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "turn", "--server", &server.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard bench turn")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A short relay run; checks and returns the JSON summary line.
fn relay_run(server: SocketAddr, creds: &[&str], extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--allocations",
        "2",
        "--size",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ];
    args.extend_from_slice(creds);
    args.extend_from_slice(extra);
    let out = bench(server, &args);
    let all = text(&out);
    assert!(out.status.success(), "bench failed:\n{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{all}"));
    let num = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("no number {k} in {v}"))
    };
    assert!(num("pps") > 0.0, "{all}");
    assert!(
        num("received") > 0.0 && num("sent") >= num("received"),
        "{all}"
    );
    assert!(num("loss") <= 0.01, "loss too high:\n{all}");
    assert!(
        num("p50_us") > 0.0 && num("p99_us") >= num("p50_us"),
        "{all}"
    );
    assert_eq!(v["allocations"], 2, "{all}");
    assert_eq!(v["size"], 200, "{all}");
    v
}

fn switchboard() -> (Server, SocketAddr) {
    let s = Server::start(&[
        "--turn-user",
        "bench:pw",
        "--turn-secret",
        "s3cret",
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-bandwidth",
        "0",
    ]);
    let turn = s.turn.expect("TURN address");
    (s, turn)
}

#[test]
fn bench_against_switchboard_udp_and_tcp() {
    let (server, turn) = switchboard();
    let pid = server.child.id().to_string();
    let v = relay_run(
        turn,
        &["--user", "bench", "--password", "pw"],
        &["--server-pid", &pid],
    );
    assert_eq!(v["transport"], "udp");
    // The server's cost, read from /proc by the bench.
    assert!(
        v["server_cpu_pct"].as_f64().is_some_and(|c| c >= 0.0),
        "{v}"
    );
    assert!(v["server_cpu_us_per_rt"].as_f64().is_some(), "{v}");
    assert!(v["server_rss_kib"].as_u64().is_some_and(|r| r > 0), "{v}");
    assert!(v["bench_cpu_pct"].as_f64().is_some(), "{v}");
    // TCP client transport, with REST credentials minted from the secret,
    // and a paced (fixed-rate) run.
    let v = relay_run(turn, &["--secret", "s3cret"], &["--tcp", "--rate", "300"]);
    assert_eq!(v["transport"], "tcp");
    assert_eq!(v["rate"], 300.0);
}

#[test]
fn cap_drops_are_counted_in_the_loss() {
    // 20 kB/s per allocation, 1 kB packets as fast as they come back: most
    // are dropped by the per-allocation cap, and the bench says so.
    let s = Server::start(&[
        "--turn-secret",
        "s3cret",
        "--allow-peer",
        "127.0.0.0/8",
        "--relay-bandwidth",
        "20000",
    ]);
    let turn = s.turn.unwrap();
    let out = bench(
        turn,
        &[
            "--secret",
            "s3cret",
            "--allocations",
            "2",
            "--size",
            "1000",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--server-metrics",
            &s.addr.to_string(),
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let by_alloc = v["cap_drops"]["allocation"].as_u64().unwrap();
    assert!(by_alloc > 0, "{all}");
    assert_eq!(v["cap_drops"]["server"], 0, "{all}");
    assert!(v["loss"].as_f64().unwrap() > 0.0, "{all}");
    assert!(all.contains("dropped by the per-allocation cap"), "{all}");
}

#[test]
fn bench_hold_mode_creates_and_releases_allocations() {
    let (server, turn) = switchboard();
    let pid = server.child.id().to_string();
    let out = bench(
        turn,
        &[
            "--user",
            "bench",
            "--password",
            "pw",
            "--allocations",
            "5",
            "--hold",
            "0.3",
            "--server-pid",
            &pid,
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("holding 5 allocations"), "{all}");
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["mode"], "hold");
    assert!(v["server_rss_kib"].as_u64().is_some_and(|r| r > 0), "{all}");
    // The bench deleted them (Refresh LIFETIME 0); metrics copy once a second.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(server.metric("switchboard_turn_allocations"), 0.0);
}

#[test]
fn bench_reports_errors() {
    let (_server, turn) = switchboard();
    let run = |args: &[&str]| {
        let out = bench(turn, args);
        assert!(!out.status.success(), "expected failure:\n{}", text(&out));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let base = ["--allocations", "1", "--size", "100", "--duration", "1"];
    let err = run(&[&base[..], &["--user", "bench", "--password", "wrong"]].concat());
    assert!(
        err.contains("401") && err.contains("authentication failed"),
        "{err}"
    );
    let err = run(&[&base[..], &["--secret", "not-the-secret"]].concat());
    assert!(err.contains("401"), "{err}");
    // Bad flags: size below the 16-byte header, missing credentials.
    let err = run(&[
        "--allocations",
        "1",
        "--size",
        "8",
        "--duration",
        "1",
        "--user",
        "u",
        "--password",
        "p",
    ]);
    assert!(err.contains("--size"), "{err}");
    let err = run(&base);
    assert!(err.contains("--user") || err.contains("--secret"), "{err}");
    // Nothing listening: a free UDP port and a free TCP port.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bench(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &[&base[..], &["--user", "u", "--password", "p"]].concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (err.contains("refused") || err.contains("no answer")),
        "{err}"
    );
}

struct Coturn {
    child: Child,
    addr: SocketAddr,
    db: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.db);
    }
}

fn start_coturn() -> Coturn {
    let bin = "/usr/bin/turnserver";
    assert!(
        std::path::Path::new(bin).exists(),
        "{bin} is missing: install Debian's coturn package (tests/run.sh does)"
    );
    for attempt in 0..5 {
        let port = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            t.local_addr().unwrap().port()
        };
        let relay_lo = 42000 + (port % 20) * 1000 + attempt * 100;
        let db = std::env::temp_dir().join(format!(
            "switchboard-bench-turndb-{}-{port}",
            std::process::id()
        ));
        let child = Command::new(bin)
            .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .arg(format!("--min-port={relay_lo}"))
            .arg(format!("--max-port={}", relay_lo + 99))
            .args([
                "--lt-cred-mech",
                "--user=bench:pw",
                "--realm=bench",
                "--allow-loopback-peers",
            ])
            .args([
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--log-file=stdout",
                "--simple-log",
            ])
            .arg(format!("--pidfile={}.pid", db.display()))
            .arg(format!("--userdb={}", db.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut c = Coturn { child, addr, db };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(c.child.try_wait(), Ok(Some(_))) {
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                // TCP is up; UDP listeners start alongside.
                std::thread::sleep(Duration::from_millis(300));
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.child.kill();
    }
    panic!("turnserver did not start listening");
}

#[test]
fn bench_against_coturn_udp_and_tcp() {
    let coturn = start_coturn();
    let creds = ["--user", "bench", "--password", "pw"];
    let v = relay_run(coturn.addr, &creds, &[]);
    assert_eq!(v["transport"], "udp");
    let v = relay_run(coturn.addr, &creds, &["--tcp"]);
    assert_eq!(v["transport"], "tcp");
    // coturn refuses a wrong password with 401 too.
    let out = bench(
        coturn.addr,
        &[
            "--allocations",
            "1",
            "--size",
            "100",
            "--duration",
            "1",
            "--user",
            "bench",
            "--password",
            "nope",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
}

#[test]
fn udp_forward_bench_moves_datagrams_through_a_bare_forwarder() {
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    drop(echo);
    let mut fwd = Command::new(bin)
        .args(["bench", "udp-forward", "--listen", "127.0.0.1:0", "--to"])
        .arg(echo_addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fwd.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let at = line
        .trim()
        .strip_prefix("forwarding ")
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let out = Command::new(bin)
        .args(["bench", "udp-forward", "--server", &at, "--echo"])
        .arg(echo_addr.to_string())
        .args(["--flows", "2", "--duration", "1", "--warmup", "0.2"])
        .args(["--server-pid", &fwd.id().to_string()])
        .output()
        .unwrap();
    let _ = fwd.kill();
    let _ = fwd.wait();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(v["received"].as_u64().unwrap() > 0, "{all}");
    assert!(v["loss"].as_f64().unwrap() <= 0.01, "{all}");
    assert!(v["server_cpu_us_per_rt"].as_f64().is_some(), "{all}");
    // One role or the other, whole.
    let out = Command::new(bin)
        .args(["bench", "udp-forward", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
