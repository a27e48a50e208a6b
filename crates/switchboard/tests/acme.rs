//! `serve --acme`: a certificate ordered from Debian's `pebble` (a local
//! ACME test CA, started here on loopback) is served on --listen and on
//! TURN over TLS, kept in --acme-cache, served again from the cache after
//! a restart, and renewed when the cached one is due.
//!
//! The validation is real: pebble resolves the test domain through
//! `pebble-challtestsrv` (its mock DNS, answering 127.0.0.1 for every name)
//! and dials `serve`'s --listen port for the TLS-ALPN-01 challenge.

mod common;

use common::Server;
use rcgen::{CertificateParams, KeyPair, SanType};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

const DOMAIN: &str = "switchboard.test";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Pebble {
    child: Child,
    dns: Child,
    dir_url: String,
    mgmt: SocketAddr,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts pebble with an HTTPS certificate for 127.0.0.1 that `ca.pem` in
/// `dir` signs itself (self-signed, used as its own CA), validating
/// TLS-ALPN-01 on `tls_port` of 127.0.0.1 whatever the name.
fn start_pebble(dir: &Path, tls_port: u16) -> Pebble {
    let dns_port = free_port();
    let dns = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv is not installed (Debian's pebble has it)");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("pebble-cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    let (port, mgmt) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": dir.join("pebble-cert.pem"),
        "privateKey": dir.join("pebble-key.pem"),
        "httpPort": free_port(),
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble is not installed (tests/run.sh installs Debian's pebble)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Pebble {
        child,
        dns,
        dir_url: format!("https://127.0.0.1:{port}/dir"),
        mgmt: SocketAddr::from(([127, 0, 0, 1], mgmt)),
    }
}

fn connector(roots: &[CertificateDer<'static>]) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// GET over TLS; the whole response, and the leaf the server showed.
async fn get(
    tls: &TlsConnector,
    addr: SocketAddr,
    name: &str,
    path: &str,
) -> std::io::Result<(String, CertificateDer<'static>)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut s = tls.connect(name, tcp).await?;
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok((String::from_utf8_lossy(&out).into_owned(), leaf))
}

/// Waits until `serve` shows a certificate that `roots` trust for DOMAIN.
async fn wait_for_cert(server: &Server, tls: &TlsConnector) -> CertificateDer<'static> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match get(tls, server.addr, DOMAIN, "/healthz").await {
            Ok((resp, leaf)) => {
                assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
                return leaf;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no ACME certificate within 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_certificate_from_pebble_is_served_cached_and_renewed() {
    let dir = Dir(std::env::temp_dir().join(format!("sb-acme-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pebble = start_pebble(&dir.0, port);
    let pebble_ca = CertificateDer::from_pem_file(dir.0.join("ca.pem")).unwrap();

    let cache = dir.0.join("cache");
    let ca_file = dir.0.join("ca.pem");
    let args = [
        "--turn-tls-listen",
        "127.0.0.1:0",
        "--acme",
        DOMAIN,
        "--acme-email",
        "ops@switchboard.test",
        "--acme-directory",
        &pebble.dir_url,
        "--acme-ca-file",
        ca_file.to_str().unwrap(),
        "--acme-cache",
        cache.to_str().unwrap(),
    ];
    let server = Server::start_at(&listen, &args);

    // pebble's issuing root, from its management interface.
    let mgmt = connector(std::slice::from_ref(&pebble_ca));
    let (resp, _) = get(&mgmt, pebble.mgmt, "127.0.0.1", "/roots/0")
        .await
        .unwrap();
    let pem = resp.split_once("\r\n\r\n").unwrap().1;
    let root = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let client = connector(&[root]);

    let first = wait_for_cert(&server, &client).await;
    assert!(
        std::fs::read_dir(&cache).unwrap().count() >= 2,
        "account and certificate are cached"
    );
    // Not for another name, and not for a client that does not trust pebble.
    assert!(get(&client, server.addr, "other.test", "/").await.is_err());
    assert!(get(&mgmt, server.addr, DOMAIN, "/").await.is_err());

    // TURN over TLS shows the same certificate, and `turns:` URLs name the
    // domain (what the certificate is for), not the relay's IP.
    let turn_tls = server.turn_tls.expect("TURN over TLS listens with --acme");
    assert_eq!(turn_leaf(&client, turn_tls).await.unwrap(), first);
    let (resp, _) = get(&client, server.addr, DOMAIN, "/v1/ice-servers")
        .await
        .unwrap();
    let want = format!("turns:{DOMAIN}:{}?transport=tcp", turn_tls.port());
    assert!(resp.contains(&want), "{want} not in {resp}");
    drop(server);

    // A restart serves the cached certificate without ordering again.
    let server = Server::start_at(&listen, &args);
    let again = wait_for_cert(&server, &client).await;
    assert_eq!(again, first, "the restart ordered a new certificate");
    drop(server);

    // Renewal. pebble's certificates last years, so the test makes the
    // cached one due instead: a stand-in from a CA of its own, first with
    // most of its life left (served as it is, which shows the stand-in is
    // read), then expired (replaced by a new order).
    let cert_file = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cached_cert_")
        })
        .expect("a cached certificate");
    let (stand_in_ca, fresh) = stand_in(&cert_file, (2000, 2100));
    let stand_in_client = connector(&[stand_in_ca]);
    let server = Server::start_at(&listen, &args);
    let served = wait_for_cert(&server, &stand_in_client).await;
    assert_eq!(served, fresh);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, still) = get(&stand_in_client, server.addr, DOMAIN, "/")
        .await
        .unwrap();
    assert_eq!(still, fresh, "a certificate with years left was renewed");
    drop(server);

    let (_, expired) = stand_in(&cert_file, (2000, 2001));
    let server = Server::start_at(&listen, &args);
    let renewed = wait_for_cert(&server, &client).await;
    assert_ne!(renewed, first);
    assert_ne!(renewed, expired);
    let turn_tls = server.turn_tls.unwrap();
    assert_eq!(turn_leaf(&client, turn_tls).await.unwrap(), renewed);
    // And the renewed one is what the cache holds now.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cached = std::fs::read(&cert_file).unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(&cached)
            .collect::<Result<_, _>>()
            .unwrap();
        if chain.first() == Some(&renewed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not cached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes, in rustls-acme's cache format (the PKCS#8 key, then the chain),
/// a certificate for DOMAIN valid from January 1st of `years.0` to that of
/// `years.1`, from a CA made here. Returns that CA and the leaf.
fn stand_in(path: &Path, years: (i32, i32)) -> (CertificateDer<'static>, CertificateDer<'static>) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![DOMAIN.to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let leaf = params.signed_by(&key, &ca).unwrap();
    let pem = format!("{}\n{}{}", key.serialize_pem(), leaf.pem(), ca.pem());
    std::fs::write(path, pem).unwrap();
    (ca.der().clone(), leaf.der().clone())
}

/// The leaf a TLS handshake with TURN over TLS shows for DOMAIN.
async fn turn_leaf(
    tls: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(DOMAIN.to_string()).unwrap();
    let s = tls.connect(name, tcp).await?;
    Ok(s.get_ref().1.peer_certificates().unwrap()[0].clone())
}
