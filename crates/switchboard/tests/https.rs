//! `serve --tls-cert/--tls-key`: HTTPS and WSS with a throw-away CA made
//! here, a client without the CA, certificate reload on SIGHUP, the plain
//! HTTP redirect, and the HTTP listener's deadlines and per-IP cap.

mod common;

use common::{metric, next_json, Server, WAIT};
use futures_util::SinkExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A CA, and leaf certificates for localhost / 127.0.0.1 that it signs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes a leaf's chain and key as `cert.pem` and `key.pem` in `dir`
    /// (renamed into place, as a deploy tool would); returns the leaf.
    fn issue(&self, dir: &Path) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(dir.join("key.tmp"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("cert.tmp"), cert.pem()).unwrap();
        std::fs::rename(dir.join("key.tmp"), dir.join("key.pem")).unwrap();
        std::fs::rename(dir.join("cert.tmp"), dir.join("cert.pem")).unwrap();
        cert.der().clone()
    }

    fn client(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        connector(roots)
    }
}

fn connector(roots: RootCertStore) -> TlsConnector {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("sb-https-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_tls(dir: &Dir, extra: &[&str]) -> Server {
    let (cert, key) = (dir.file("cert.pem"), dir.file("key.pem"));
    let mut args = vec!["--no-turn", "--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    Server::start(&args)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(tls: &TlsConnector, addr: SocketAddr, name: &str) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(WAIT, tls.connect(name, tcp))
        .await
        .expect("TLS handshake hung")
}

/// GET over HTTPS; returns (status, body).
async fn https_get(tls: &TlsConnector, addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tls_connect(tls, addr, "localhost").await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("response hung")
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn https_metric(body: &str, needle: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(needle).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no metric {needle} in\n{body}"))
}

/// Reads until the server closes the connection (EOF or reset); `false` if
/// it was still open after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    ended.await.is_ok()
}

#[tokio::test]
async fn https_and_wss_work_with_the_ca_and_fail_clearly_without() {
    let dir = Dir::new("basic");
    let ca = Ca::new("switchboard test CA");
    ca.issue(&dir.0);
    let server = start_tls(&dir, &[]);
    let client = ca.client();

    let (status, body) = https_get(&client, server.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // By IP too: the certificate names 127.0.0.1.
    let s = tls_connect(&client, server.addr, "127.0.0.1").await;
    assert!(s.is_ok(), "{:?}", s.err());

    // WSS: a join over TLS gets its welcome.
    let tcp = tls_connect(&client, server.addr, "localhost")
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/v1/ws", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    ws.send(Message::text(
        json!({"type":"join","room":"tls"}).to_string(),
    ))
    .await
    .unwrap();
    let w = next_json(&mut ws).await;
    assert_eq!(w["type"], "welcome", "{w}");

    // Without the CA: a certificate error, at once.
    let stranger = connector(RootCertStore::empty());
    let err = tls_connect(&stranger, server.addr, "localhost")
        .await
        .expect_err("an unknown CA was trusted");
    let text = err.to_string();
    assert!(
        text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
    // Another CA is no better.
    let other = Ca::new("another CA").client();
    assert!(tls_connect(&other, server.addr, "localhost").await.is_err());
    // Nor is a name the certificate does not hold.
    let err = tls_connect(&client, server.addr, "example.com")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not valid for name \"example.com\""),
        "{err}"
    );

    // Plain HTTP on the TLS port: closed, not served, not hung.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut plain, WAIT).await);

    let (_, m) = https_get(&client, server.addr, "/metrics").await;
    assert!(
        https_metric(&m, "switchboard_tls_handshake_failures_total") >= 3.0,
        "{m}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_for_new_connections() {
    let dir = Dir::new("reload");
    let ca = Ca::new("switchboard test CA");
    let first = ca.issue(&dir.0);
    let server = start_tls(&dir, &[]);
    let client = ca.client();
    let leaf = |s: &Tls| s.get_ref().1.peer_certificates().unwrap()[0].clone();

    let held = tls_connect(&client, server.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(leaf(&held), first);

    // A bad pair (certificate without its key) is refused; the old one stays.
    std::fs::write(dir.0.join("key.pem"), "not a key").unwrap();
    hup(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = tls_connect(&client, server.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(leaf(&s), first, "a bad reload replaced the certificate");

    let second = ca.issue(&dir.0);
    assert_ne!(first, second);
    hup(&server);
    let mut seen = None;
    for _ in 0..50 {
        let s = tls_connect(&client, server.addr, "localhost")
            .await
            .unwrap();
        if leaf(&s) == second {
            seen = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.is_some(), "no new connection got the new certificate");
    // The server still runs (SIGHUP did not kill it) and serves.
    let (status, _) = https_get(&client, server.addr, "/healthz").await;
    assert_eq!(status, 200);
}

fn hup(server: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test]
async fn http_redirect_points_at_https() {
    let dir = Dir::new("redirect");
    let ca = Ca::new("switchboard test CA");
    ca.issue(&dir.0);
    let server = start_tls(&dir, &["--http-redirect", "127.0.0.1:0"]);
    let plain = server.redirect.expect("redirect listener");
    let (status, head, _) = common::http_get_with(plain, "/call?room=a", "");
    assert_eq!(status, 308, "{head}");
    let want = format!("location: https://x:{}/call?room=a", server.addr.port());
    assert!(head.contains(&want), "{head}");
}

#[tokio::test]
async fn deadlines_close_silent_and_slow_connections() {
    let dir = Dir::new("deadlines");
    let ca = Ca::new("switchboard test CA");
    ca.issue(&dir.0);
    let deadlines = ["--tls-handshake-timeout", "1", "--header-read-timeout", "1"];
    let tls = start_tls(&dir, &deadlines);
    let mut args = vec!["--no-turn"];
    args.extend_from_slice(&deadlines);
    let plain = Server::start(&args);

    // TCP that never says a word, to the TLS port and to the plain one.
    let mut silent_tls = TcpStream::connect(tls.addr).await.unwrap();
    let mut silent = TcpStream::connect(plain.addr).await.unwrap();
    // Slowloris: a request line, then a header byte every 200 ms, forever.
    let mut slow = TcpStream::connect(plain.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let slow_closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            let mut b = [0u8; 64];
            // A reply (408 or a close) ends it as well.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut b)).await
            {
                let _ = n;
                break;
            }
        }
    })
    .await;
    assert!(
        slow_closed.is_ok(),
        "a slowloris connection stayed open 10 s"
    );
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    assert!(closed_within(&mut silent_tls, Duration::from_secs(10)).await);

    // After a TLS handshake, silence is a header timeout too.
    let mut quiet = tls_connect(&ca.client(), tls.addr, "localhost")
        .await
        .unwrap();
    assert!(closed_within(&mut quiet, Duration::from_secs(10)).await);

    assert!(metric(plain.addr, "switchboard_http_header_timeouts_total") >= 2.0);
    let (_, m) = https_get(&ca.client(), tls.addr, "/metrics").await;
    assert_eq!(
        https_metric(&m, "switchboard_tls_handshake_timeouts_total"),
        1.0,
        "{m}"
    );
    assert!(
        https_metric(&m, "switchboard_http_header_timeouts_total") >= 1.0,
        "{m}"
    );
    // A real request is still answered.
    assert_eq!(plain.get("/healthz").0, 200);
}

#[tokio::test]
async fn per_ip_cap_refuses_the_extra_connection() {
    let server = Server::start(&["--no-turn", "--max-connections-per-ip", "2"]);
    // A WebSocket holds its slot after the upgrade, and so does a socket
    // that has said nothing yet.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type":"join","room":"cap"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let idle = TcpStream::connect(server.addr).await.unwrap();

    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, extra.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the extra connection hung");
    assert!(
        out.is_empty(),
        "the extra connection was served: {:?}",
        String::from_utf8_lossy(&out)
    );

    // Another source address has its own count.
    let other: SocketAddr = format!("127.0.0.2:{}", server.addr.port()).parse().unwrap();
    let _ = other;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s2 = sock.connect(server.addr).await.unwrap();
    s2.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s2.read_to_string(&mut body).await.unwrap();
    assert_eq!(
        https_metric(&body, "switchboard_http_refused_per_ip_total"),
        1.0,
        "{body}"
    );

    // A slot given back is taken again.
    drop(idle);
    let mut ok = false;
    for _ in 0..50 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        if out.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "no slot came back after a connection closed");
}

/// Out of descriptors (EMFILE), the accept loop backs off instead of
/// spinning, logs at most about once a second, and serves again once
/// descriptors are free.
#[tokio::test]
async fn out_of_descriptors_backs_off_and_recovers() {
    use std::io::BufRead;
    // Room for the runtime and a few connections, then EMFILE.
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=48:48", env!("CARGO_BIN_EXE_switchboard")])
        .args(["serve", "--listen", "127.0.0.1:0", "--no-turn"])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start switchboard under prlimit");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "serve exited");
        if let Some(a) = line.trim().strip_prefix("switchboard listening on http://") {
            break a.parse().unwrap();
        }
    };
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let err = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });

    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logged: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .cloned()
        .collect();
    assert!(!logged.is_empty(), "no accept error was logged");
    assert!(
        logged.len() <= 5,
        "more than about one line a second: {logged:#?}"
    );
    // The failures each line counts: a spinning loop would have millions.
    let failures: u64 = logged
        .iter()
        .filter_map(|l| {
            l.split("errors=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        failures >= logged.len() as u64,
        "no errors=N in {logged:#?}"
    );
    assert!(
        failures < 100,
        "{failures} failed accepts in 3 s: {logged:#?}"
    );
    assert!(logged[0].contains("Too many open files"), "{}", logged[0]);

    drop(held);
    let mut served = false;
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut body = String::new();
            if tokio::time::timeout(WAIT, s.read_to_string(&mut body))
                .await
                .is_ok()
                && body.starts_with("HTTP/1.1 200")
            {
                served = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        served,
        "the server did not serve again once descriptors were free"
    );
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let server = Server::start(&["--no-turn", "--max-header-bytes", "8192"]);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let big = "a".repeat(9000);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading and answer before all of it is written.
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    // Just under the limit is served.
    let (status, _, _) = common::http_get_with(
        server.addr,
        "/healthz",
        &format!("X-Big: {}\r\n", "a".repeat(7000)),
    );
    assert_eq!(status, 200);
    let err = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--max-header-bytes", "100"])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    let text = String::from_utf8_lossy(&err.stderr);
    assert!(
        text.contains("--max-header-bytes must be at least 8192"),
        "{text}"
    );
}
