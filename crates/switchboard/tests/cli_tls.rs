//! The CLI over TLS, against a throw-away CA: signaling over `wss://` and
//! relay-only transfers through `turns:` (TURN over TLS) with the hash
//! checked, `--ca-file`, `--insecure`, and the error an untrusted
//! certificate gives.
//!
//! `serve` terminates TLS itself (`--tls-cert`), for HTTPS/WSS as for TURN
//! over TLS; a plain TCP pipe in this test gives it a second address, for
//! the wrong-name case.

mod common;

use common::test_ca::TestCa;
use common::Server;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    c.args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn events(out: &[u8]) -> Vec<Value> {
    BufReader::new(out)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every stdout line is JSON"))
        .collect()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-cli-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pipes each TCP connection to `bind` on to `backend`, bytes untouched
/// (TLS stays end to end with serve). Runs until the test process ends.
fn forwarder(bind: &str, backend: SocketAddr) -> SocketAddr {
    let listener = std::net::TcpListener::bind(bind).unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
                });
            }
        });
    });
    addr
}

fn tls_server(ca: &TestCa) -> Server {
    let (cert, key) = (ca.cert_arg(), ca.key_arg());
    Server::start(&[
        "--allow-peer",
        "127.0.0.0/8",
        "--turn-user",
        "alice:wonderland",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--turn-tls-listen",
        "127.0.0.1:0",
    ])
}

/// recv trusts the test CA through --ca-file, send skips checks with
/// --insecure; both signal over wss:// and relay only through turns:.
#[test]
fn send_recv_over_wss_and_turns_relay_only() {
    let ca = TestCa::new();
    let server = tls_server(&ca);
    let proxy = server.addr;
    let turns = format!(
        "turns:localhost:{}?transport=tcp",
        server.turn_tls.unwrap().port()
    );
    let dir = tmpdir("pair");
    let src = dir.join("data.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 991) as u8).collect();
    std::fs::write(&src, &data).unwrap();
    let out = dir.join("out");
    let ca_file = ca.ca_arg();
    let common = |server: String, trust: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--server",
            &server,
            "--room",
            "tls-pair",
            "--json",
            "--relay-only",
            "--no-server-ice",
            "--turn",
            &turns,
            "--user",
            "alice",
            "--password",
            "wonderland",
            "--timeout",
            "20",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(trust.iter().map(|s| s.to_string()));
        v
    };
    let recv_args = common(
        format!("https://localhost:{}", proxy.port()),
        &["--ca-file", &ca_file],
    );
    let send_args = common(
        format!("wss://127.0.0.1:{}/v1/ws", proxy.port()),
        &["--insecure"],
    );
    let log = dir.join("recv.jsonl");
    let out_arg = out.display().to_string();
    let mut recv: Vec<&str> = vec!["recv"];
    recv.extend(recv_args.iter().map(String::as_str));
    recv.extend(["--out", &out_arg, "--count", "1"]);
    let mut r = cli(&recv)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let src_arg = src.display().to_string();
    let mut send: Vec<&str> = vec!["send"];
    send.extend(send_args.iter().map(String::as_str));
    send.push(&src_arg);
    let s = cli(&send).output().unwrap();
    let recv_status = r.wait().unwrap();
    let send_err = String::from_utf8_lossy(&s.stderr);
    assert!(
        s.status.success(),
        "send exit {:?}: {send_err}\n{}",
        s.status,
        String::from_utf8_lossy(&s.stdout)
    );
    assert!(recv_status.success(), "recv exit {recv_status:?}");
    assert!(
        send_err.contains("--insecure"),
        "no warning for --insecure: {send_err}"
    );
    let want = sha256_hex(&data);
    let sent = events(&s.stdout);
    let got = events(&std::fs::read(&log).unwrap());
    let fs = sent.iter().find(|e| e["event"] == "file-sent").unwrap();
    let fr = got.iter().find(|e| e["event"] == "file-received").unwrap();
    assert_eq!(
        (fs["sha256"].as_str(), fs["ok"].as_bool()),
        (Some(want.as_str()), Some(true))
    );
    assert_eq!(fr["sha256"], want.as_str());
    assert_eq!(
        sha256_hex(&std::fs::read(out.join("data.bin")).unwrap()),
        want
    );
    for evs in [&sent, &got] {
        let c = evs.iter().find(|e| e["event"] == "connected").unwrap();
        assert_eq!(c["pair"]["local"]["type"], "relay", "{c}");
        assert_eq!(c["pair"]["local"]["relay_protocol"], "tls", "{c}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a command that must fail; (exit code, JSON events, stderr).
fn failing(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let o = cli(args).output().unwrap();
    (
        o.status.code(),
        events(&o.stdout),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn untrusted_certificates_fail_clearly() {
    let ca = TestCa::new();
    let server = tls_server(&ca);
    let proxy = server.addr;
    let url = format!("https://localhost:{}", proxy.port());
    // No --ca-file: the system's roots do not know the test CA.
    let (code, evs, _) = failing(&["chat", "--server", &url, "--room", "r", "--json"]);
    assert_eq!(code, Some(3));
    let err = evs.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["code"], "tls", "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("not trusted") && msg.contains("--ca-file"),
        "{msg}"
    );
    // The CA trusted, but an address the certificate does not carry.
    let ca_file = ca.ca_arg();
    let other = forwarder("127.0.0.2:0", server.addr);
    let (code, evs, _) = failing(&[
        "chat",
        "--server",
        &format!("https://{other}"),
        "--room",
        "r",
        "--json",
        "--ca-file",
        &ca_file,
    ]);
    assert_eq!(code, Some(3), "{evs:?}");
    let err = evs.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(err["code"], "tls", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("not issued for"),
        "{err}"
    );
    // A CA file that holds no certificate is a usage error naming it.
    let bogus = Path::new(&ca.dir).join("bogus.pem");
    std::fs::write(&bogus, "nothing here\n").unwrap();
    let (code, _, err) = failing(&[
        "chat",
        "--server",
        &url,
        "--room",
        "r",
        "--ca-file",
        bogus.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bogus.pem"), "{err}");
}
