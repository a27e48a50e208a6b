//! Interop with an independent implementation: coturn's own client tools
//! (`turnutils_uclient`, `turnutils_stunclient`, `turnutils_peer`, Debian
//! package `coturn`, installed by tests/run.sh) against `switchboard serve`.
//!
//! coturn's uclient picks channel numbers from RFC 5766's 0x4000-0x7FFF,
//! which RFC 8656 narrowed to 0x4000-0x4FFF (and switchboard enforces), so
//! these runs use `-s`: Send and Data indications. Channels are exercised
//! against Chromium in the browser tests.

mod common;

use common::Server;
use std::process::{Child, Command, Output, Stdio};

fn tool(name: &str) -> Command {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's coturn package (tests/run.sh does)"
    );
    Command::new(path)
}

fn turn_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--turn-user",
        "alice:wonderland",
        "--turn-secret",
        "s3cret",
        "--relay-ports",
        "42000-42999",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Runs uclient; returns (success, sent, received, lost, full output).
fn uclient(server: &Server, args: &[&str]) -> (bool, u64, u64, Option<u64>, String) {
    uclient_at(server.turn.unwrap(), args)
}

/// Runs uclient against `turn` (the TLS port, say).
fn uclient_at(turn: std::net::SocketAddr, args: &[&str]) -> (bool, u64, u64, Option<u64>, String) {
    let out: Output = tool("turnutils_uclient")
        .args([
            "-p",
            &turn.port().to_string(),
            "-n",
            "60",
            "-m",
            "4",
            "-l",
            "700",
            "-z",
            "5",
        ])
        .args(args)
        .arg(turn.ip().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sent = 0;
    let mut recv = 0;
    let mut lost = None;
    for line in text.lines() {
        if let Some(rest) = line.split("tot_send_msgs=").nth(1) {
            // "...: tot_send_msgs=240, tot_recv_msgs=240" is the summary line.
            if let Some((s, r)) = rest.split_once(", tot_recv_msgs=") {
                if let (Ok(s), Ok(r)) = (s.trim().parse(), r.trim().parse()) {
                    sent = s;
                    recv = r;
                }
            }
        }
        if let Some(rest) = line.split("Total lost packets ").nth(1) {
            lost = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    (out.status.success(), sent, recv, lost, text)
}

fn assert_clean_relay(server: &Server, args: &[&str]) {
    assert_clean_relay_at(server.turn.unwrap(), args)
}

fn assert_clean_relay_at(turn: std::net::SocketAddr, args: &[&str]) {
    let (ok, sent, recv, lost, text) = uclient_at(turn, args);
    assert!(ok, "uclient {args:?} failed:\n{text}");
    assert!(sent >= 240, "uclient {args:?} sent only {sent}:\n{text}");
    assert_eq!((recv, lost), (sent, Some(0)), "uclient {args:?}:\n{text}");
}

struct Peer(Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stun_binding_returns_the_mapped_address() {
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    let turn = server.turn.unwrap();
    let out = tool("turnutils_stunclient")
        .args(["-p", &turn.port().to_string(), "127.0.0.1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

#[test]
fn relay_udp_and_tcp_with_static_user() {
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    assert_clean_relay(&server, &["-s", "-y", "-u", "alice", "-w", "wonderland"]);
    assert_clean_relay(
        &server,
        &["-s", "-y", "-t", "-u", "alice", "-w", "wonderland"],
    );
    // Metrics are copied from the workers once a second.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(
        server.metric("switchboard_turn_relayed_packets_total{direction=\"to_peer\"}") >= 480.0
    );
    assert!(
        server.metric("switchboard_turn_relayed_packets_total{direction=\"to_client\"}") >= 480.0
    );
}

#[test]
fn relay_udp_and_tcp_with_rest_secret() {
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    assert_clean_relay(&server, &["-s", "-y", "-W", "s3cret"]);
    assert_clean_relay(&server, &["-s", "-y", "-t", "-W", "s3cret"]);
}

#[test]
fn relay_to_coturn_peer_and_with_handed_out_credentials() {
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _peer = Peer(
        tool("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let p = port.to_string();
    assert_clean_relay(
        &server,
        &[
            "-s",
            "-e",
            "127.0.0.1",
            "-r",
            &p,
            "-u",
            "alice",
            "-w",
            "wonderland",
        ],
    );
    // The time-limited credential that signaling hands to browsers works
    // for an independent client too.
    let (_, body) = server.get("/v1/ice-servers");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let turn = v["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"].is_string())
        .unwrap()
        .clone();
    let (user, cred) = (
        turn["username"].as_str().unwrap(),
        turn["credential"].as_str().unwrap(),
    );
    assert_clean_relay(
        &server,
        &[
            "-s",
            "-t",
            "-e",
            "127.0.0.1",
            "-r",
            &p,
            "-u",
            user,
            "-w",
            cred,
        ],
    );
}

#[test]
fn refusals_seen_by_coturn_client() {
    // No --allow-peer: relaying to loopback is refused with 403.
    let server = turn_server(&[]);
    let (ok, _, recv, _, text) = uclient(&server, &["-s", "-y", "-u", "alice", "-w", "wonderland"]);
    assert!(!ok && recv == 0, "relay to loopback must fail:\n{text}");
    assert!(text.contains("403"), "expected a 403 in:\n{text}");

    // Wrong password: 401, and the server counts it.
    let server = turn_server(&["--allow-peer", "127.0.0.0/8"]);
    let (ok, _, recv, _, text) = uclient(
        &server,
        &["-s", "-y", "-u", "alice", "-w", "queen-of-hearts"],
    );
    assert!(!ok && recv == 0, "wrong password must fail:\n{text}");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(server.metric("switchboard_turn_auth_failures_total") >= 1.0);

    // Wrong REST secret.
    let (ok, _, _, _, text) = uclient(&server, &["-s", "-y", "-W", "not-the-secret"]);
    assert!(!ok, "wrong secret must fail:\n{text}");
}

#[test]
fn relay_over_tls_with_the_served_certificate() {
    let ca = common::test_ca::TestCa::new();
    let (cert, key, ca_file) = (ca.cert_arg(), ca.key_arg(), ca.ca_arg());
    let server = turn_server(&[
        "--allow-peer",
        "127.0.0.0/8",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--turn-tls-listen",
        "127.0.0.1:0",
    ]);
    let tls = server.turn_tls.expect("no TURN over TLS listener");
    // -E: uclient verifies our certificate against the test CA.
    let args = ["-s", "-y", "-t", "-S", "-E", &ca_file];
    let with_user: Vec<&str> = args
        .iter()
        .copied()
        .chain(["-u", "alice", "-w", "wonderland"])
        .collect();
    assert_clean_relay_at(tls, &with_user);
    let with_secret: Vec<&str> = args.iter().copied().chain(["-W", "s3cret"]).collect();
    assert_clean_relay_at(tls, &with_secret);

    // The handed-out list names it, with the same REST credentials as the
    // turn: URLs.
    // serve speaks HTTPS on --listen with the same certificate.
    let (_, body) = ca.https_get(server.addr, "/v1/ice-servers");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let turn = v["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"].is_string())
        .unwrap()
        .clone();
    let want = format!("turns:127.0.0.1:{}?transport=tcp", tls.port());
    assert!(
        turn["urls"].as_array().unwrap().iter().any(|u| u == &want),
        "no {want} in {turn}"
    );
    let (user, cred) = (
        turn["username"].as_str().unwrap(),
        turn["credential"].as_str().unwrap(),
    );
    let handed: Vec<&str> = args
        .iter()
        .copied()
        .chain(["-u", user, "-w", cred])
        .collect();
    assert_clean_relay_at(tls, &handed);
}

#[test]
fn turns_url_names_the_public_host() {
    let ca = common::test_ca::TestCa::new();
    let (cert, key) = (ca.cert_arg(), ca.key_arg());
    let server = turn_server(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--turn-tls-listen",
        "127.0.0.1:0",
        "--public-host",
        "localhost",
    ]);
    let tls = server.turn_tls.unwrap();
    let (_, body) = ca.https_get(server.addr, "/v1/ice-servers");
    assert!(
        body.contains(&format!("turns:localhost:{}?transport=tcp", tls.port())),
        "{body}"
    );
    // Without a certificate there is no TLS listener and no turns: URL.
    let plain = turn_server(&[]);
    assert!(plain.turn_tls.is_none());
    let (_, body) = plain.get("/v1/ice-servers");
    assert!(!body.contains("turns:"), "{body}");
}
