//! `switchboard doctor` against real `serve` processes on loopback: a
//! healthy one (with `--stun-alt-listen`, so the NAT mapping is reported),
//! one whose advertised TURN port is closed, one whose TURN port drops
//! everything, and one behind a TLS endpoint with a throw-away CA (trusted
//! with `--ca-file`, untrusted without), which also fronts the TURN TCP
//! port as `turns:`.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// `serve` with TURN on loopback; returns the process, HTTP and TURN
/// addresses.
fn serve(args: &[&str]) -> (ChildGuard, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--turn-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start switchboard");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut turn = None;
    let addr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "serve exited early");
        if let Some(a) = line.trim().strip_prefix("switchboard TURN on udp+tcp ") {
            turn = Some(a.parse().unwrap());
        }
        if let Some(a) = line.trim().strip_prefix("switchboard listening on http://") {
            break a.parse().unwrap();
        }
    };
    (ChildGuard(child), addr, turn.expect("TURN address"))
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the doctor with `--json`; returns the exit code, the checks and
/// the verdict.
async fn doctor(args: &[&str]) -> (i32, Vec<Value>, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("doctor")
        .args(args)
        .arg("--json")
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run doctor");
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("doctor {args:?}:\n{text}");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let verdict = lines.pop().expect("a verdict line");
    assert!(
        verdict.get("verdict").is_some(),
        "last line is the verdict: {verdict}"
    );
    (out.status.code().expect("exit code"), lines, verdict)
}

fn check<'a>(checks: &'a [Value], name: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"))
}

fn status(checks: &[Value], name: &str) -> String {
    check(checks, name)["status"].as_str().unwrap().to_string()
}

fn message(checks: &[Value], name: &str) -> String {
    check(checks, name)["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn passes_against_a_healthy_serve_and_reports_the_nat_mapping() {
    // Loopback relay addresses are private: allowed on purpose for the
    // relayed round trip.
    let (_serve, http, _) = serve(&[
        "--allow-peer",
        "127.0.0.0/8",
        "--external-ip",
        "127.0.0.1",
        "--stun-alt-listen",
        "127.0.0.1:0",
    ]);
    let (code, checks, verdict) = doctor(&[&format!("http://{http}")]).await;
    assert_eq!(code, 0, "{checks:?}");
    assert_eq!(verdict["verdict"], "pass");
    assert_eq!(verdict["fail"], 0);
    for name in [
        "http",
        "websocket",
        "stun",
        "nat",
        "turn-udp",
        "turn-tcp",
        "relay",
    ] {
        assert_eq!(
            status(&checks, name),
            "ok",
            "{name}: {:?}",
            check(&checks, name)
        );
    }
    // No TLS on this server: not offered, so skipped, not failed.
    assert_eq!(status(&checks, "turn-tls"), "skip");
    assert!(checks.iter().all(|c| c["check"] != "tls"));
    assert!(check(&checks, "stun")["mapped"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // Loopback has no NAT: the same mapping toward both STUN addresses.
    assert_eq!(check(&checks, "nat")["mapping"], "endpoint-independent");
    assert!(check(&checks, "turn-udp")["relayed"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let relay = check(&checks, "relay");
    assert_eq!(relay["lost"], 0);
    assert!(relay["rtt_ms"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn a_closed_turn_port_is_a_specific_failure() {
    // Clients are told TURN is on 127.0.0.3, where nothing listens (the
    // sockets are bound to 127.0.0.1): UDP gets ICMP port unreachable,
    // TCP a reset.
    let (_serve, http, turn) = serve(&[
        "--external-ip",
        "127.0.0.3",
        "--stun-alt-listen",
        "127.0.0.1:0",
    ]);
    let (code, checks, verdict) = doctor(&[&format!("http://{http}"), "--timeout", "3"]).await;
    assert_eq!(code, 1, "reachable, but TURN failed: {checks:?}");
    assert_eq!(verdict["verdict"], "fail");
    assert_eq!(status(&checks, "http"), "ok");
    assert_eq!(status(&checks, "websocket"), "ok");
    let advertised = format!("127.0.0.3:{}", turn.port());
    let udp = message(&checks, "turn-udp");
    assert!(
        udp.contains(&advertised) && udp.contains("ICMP port unreachable"),
        "{udp}"
    );
    let tcp = message(&checks, "turn-tcp");
    assert!(
        tcp.contains(&advertised) && tcp.contains("refused"),
        "{tcp}"
    );
    assert_eq!(status(&checks, "stun"), "fail");
    assert_eq!(status(&checks, "relay"), "skip");
}

#[tokio::test]
async fn a_firewalled_turn_port_times_out_with_a_message() {
    // The advertised TURN address is a socket pair that takes everything and
    // answers nothing, as behind a firewall that drops the traffic.
    let (_serve, http, turn) = serve(&["--external-ip", "127.0.0.4"]);
    let hole: SocketAddr = format!("127.0.0.4:{}", turn.port()).parse().unwrap();
    let _udp = tokio::net::UdpSocket::bind(hole).await.unwrap();
    let _tcp = TcpListener::bind(hole).await.unwrap();
    let (code, checks, _) = doctor(&[&format!("http://{http}"), "--timeout", "2"]).await;
    assert_eq!(code, 1, "{checks:?}");
    let udp = message(&checks, "turn-udp");
    assert!(
        udp.contains("no answer to Allocate") && udp.contains(&hole.to_string()),
        "{udp}"
    );
    let tcp = message(&checks, "turn-tcp");
    assert!(tcp.contains("no answer to Allocate"), "{tcp}");
    assert!(message(&checks, "stun").contains("no answer to Binding"));
}

/// A throw-away CA and a certificate for localhost / 127.0.0.1 signed by it.
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, rustls::ServerConfig) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchboard doctor test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
    .unwrap();
    (ca_file, cfg)
}

/// Terminates TLS on a loopback port and forwards each connection to
/// `backend`, as a TLS proxy in front of serve (or of its TURN TCP port)
/// would.
async fn tls_front(cfg: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects our certificate ends the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut back) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut back).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_with_an_untrusted_then_a_trusted_certificate() {
    let dir = std::env::temp_dir().join(format!("doctor-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_file, cfg) = test_ca(&dir);
    let cfg = Arc::new(cfg);
    let (_serve, http, turn) =
        serve(&["--allow-peer", "127.0.0.0/8", "--external-ip", "127.0.0.1"]);
    let https = tls_front(cfg.clone(), http).await;
    let turns = tls_front(cfg, turn).await;
    let base = format!("https://localhost:{}", https.port());
    let turns_url = format!("turns:localhost:{}?transport=tcp", turns.port());

    // Without the CA: the certificate is the failure, and nothing past it
    // is tried.
    let (code, checks, _) = doctor(&[&base, "--turn", &turns_url]).await;
    assert_eq!(code, 3, "unreachable: {checks:?}");
    let tls = message(&checks, "tls");
    assert!(tls.contains("not trusted"), "{tls}");
    assert!(
        tls.contains("switchboard doctor test CA"),
        "names the issuer: {tls}"
    );
    assert_eq!(status(&checks, "websocket"), "fail");
    assert_eq!(status(&checks, "turn-udp"), "skip");

    // https:// on a plain HTTP port: said so, not a bare handshake error.
    let (code, checks, _) = doctor(&[
        &format!("https://127.0.0.1:{}", http.port()),
        "--timeout",
        "2",
    ])
    .await;
    assert_eq!(code, 3);
    let plain = message(&checks, "tls");
    assert!(plain.contains("did not answer in TLS"), "{plain}");

    // With it: everything passes, TURN over TLS included.
    let ca = ca_file.to_str().unwrap();
    let (code, checks, verdict) = doctor(&[&base, "--ca-file", ca, "--turn", &turns_url]).await;
    assert_eq!(code, 0, "{checks:?}");
    assert_eq!(verdict["verdict"], "pass");
    assert_eq!(status(&checks, "tls"), "ok");
    let days = check(&checks, "tls")["days_left"].as_i64().unwrap();
    assert!(days > 300, "rcgen's default validity is years: {days}");
    for name in [
        "http",
        "websocket",
        "turn-udp",
        "turn-tcp",
        "turn-tls",
        "relay",
    ] {
        assert_eq!(
            status(&checks, name),
            "ok",
            "{name}: {:?}",
            check(&checks, name)
        );
    }
    assert_eq!(check(&checks, "turn-tls")["target"], turns_url.as_str());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_relay_refused_by_the_peer_policy_is_explained() {
    // Allocations work, but the relayed addresses (loopback here, the
    // server's own address on a real host) are refused as peers.
    let (_serve, http, _) = serve(&["--external-ip", "127.0.0.1"]);
    let (code, checks, _) = doctor(&[&format!("http://{http}")]).await;
    assert_eq!(code, 1, "{checks:?}");
    assert_eq!(status(&checks, "turn-udp"), "ok");
    let relay = message(&checks, "relay");
    assert!(relay.contains("refused: 403"), "{relay}");
    assert!(relay.contains("--allow-peer 127.0.0.1/32"), "{relay}");
}

#[tokio::test]
async fn a_server_with_access_tokens_needs_one() {
    let secret = "doctor-test-secret-0123456789";
    let (_serve, http, _) = serve(&[
        "--auth-secret",
        secret,
        "--allow-peer",
        "127.0.0.0/8",
        "--external-ip",
        "127.0.0.1",
    ]);
    let base = format!("http://{http}");
    let (code, checks, _) = doctor(&[&base]).await;
    assert_eq!(code, 3, "{checks:?}");
    let ws = message(&checks, "websocket");
    assert!(
        ws.contains("unauthorized") && ws.contains("--token"),
        "{ws}"
    );

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "token", "--secret", secret, "--room", "doctor-*", "--ttl", "5m",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let (code, checks, _) = doctor(&[&base, "--token", token.trim()]).await;
    assert_eq!(code, 0, "{checks:?}");
    assert_eq!(status(&checks, "turn-udp"), "ok");
}
