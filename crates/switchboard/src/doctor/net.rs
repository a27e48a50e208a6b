//! `doctor`'s connections: TCP with a deadline, TLS with a verifier that
//! keeps what it saw (so an untrusted certificate is still described), the
//! `/healthz` GET over hyper, and the WebSocket join.

use super::report::{Check, Status};
use anyhow::{anyhow, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A byte stream: TCP or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Certificates below this many days left are a warning.
pub const EXPIRY_WARN_DAYS: i64 = 14;

/// The trust anchors: the system's roots plus `--ca-file`.
pub fn roots(ca_file: Option<&Path>) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: a private CA may be all
    // the operator needs.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = store.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<_> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading --ca-file {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("--ca-file {}: no certificate in it", path.display());
        }
        for cert in certs {
            store
                .add(cert)
                .with_context(|| format!("--ca-file {}", path.display()))?;
        }
    }
    Ok(Arc::new(store))
}

/// What the verifier saw on the last handshake.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The server's own certificate, DER.
    pub leaf: Option<Vec<u8>>,
    /// The verification error, if verification failed.
    pub error: Option<rustls::Error>,
}

/// rustls' own WebPKI verifier, recording the certificate and the outcome.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Arc<Mutex<Seen>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.leaf = Some(end_entity.to_vec());
        seen.error = r.as_ref().err().cloned();
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS client setup: the trust anchors and a fresh verifier per
/// connection.
#[derive(Clone)]
pub struct Tls {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Tls {
    /// Verifies against `roots`, with aws-lc-rs (named, so no process-wide
    /// default provider is needed).
    pub fn new(roots: Arc<rustls::RootCertStore>) -> Tls {
        Tls {
            roots,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    /// Runs a TLS handshake over `tcp` for `host`, offering `alpn`.
    /// Returns the stream, or the error with what the verifier saw.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
        alpn: &[&[u8]],
    ) -> Result<(Box<dyn Io>, Seen), (String, Seen)> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let snapshot =
            |seen: &Arc<Mutex<Seen>>| seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let inner =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| (format!("no usable trust anchors: {e}"), Seen::default()))?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| (e.to_string(), Seen::default()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recording {
                inner,
                seen: seen.clone(),
            }))
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            (
                format!("{host:?} is not a valid TLS server name"),
                Seen::default(),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        match connector.connect(name, tcp).await {
            Ok(s) => Ok((Box::new(s), snapshot(&seen))),
            Err(e) => {
                let seen = snapshot(&seen);
                let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                let why = match (&seen.error, rustls_error) {
                    (Some(err), _) => describe_cert_error(err, host),
                    // The first bytes back were not a TLS record: most
                    // likely plain HTTP (or TURN over TCP) on that port.
                    (None, Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType))) => {
                        "the server did not answer in TLS (a plain, unencrypted port? for HTTP try http://)".to_string()
                    }
                    (None, _) => format!("TLS handshake failed: {e}"),
                };
                Err((why, seen))
            }
        }
    }
}

/// A certificate error in the words an operator needs.
pub fn describe_cert_error(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "certificate not trusted: issued by a CA that is neither in the system's roots nor in --ca-file".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate not valid for {host:?} (wrong name)")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired".into(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate not valid yet".into(),
            CertificateError::Revoked => "certificate revoked".into(),
            other => format!("certificate rejected: {other:?}"),
        },
        other => format!("certificate rejected: {other}"),
    }
}

/// Subject, issuer and days left of a DER certificate, for the `tls` line.
pub fn describe_leaf(der: &[u8], now_unix: i64) -> Option<(String, String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    Some((
        cert.subject().to_string(),
        cert.issuer().to_string(),
        (not_after - now_unix).div_euclid(86_400),
    ))
}

/// Connects TCP to the first address that answers within `timeout`.
pub async fn tcp(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut last = String::from("no address to connect to");
    for &addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!("TCP connection to {addr} refused (nothing listens there)");
            }
            Ok(Err(e)) => last = format!("TCP connection to {addr} failed: {e}"),
            Err(_) => {
                last = format!(
                    "TCP connection to {addr} timed out after {} s (a firewall dropping it?)",
                    timeout.as_secs_f64()
                )
            }
        }
    }
    Err(last)
}

/// Resolves `host:port` within `timeout`.
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, port))).await {
        Ok(Ok(a)) => {
            // IPv4 first: `localhost` is often [::1] first, where a server
            // on 127.0.0.1 is not.
            let mut v: Vec<_> = a.collect();
            v.sort_by_key(|a| a.is_ipv6());
            if v.is_empty() {
                Err(format!("{host} has no address"))
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Err(_) => Err(format!("resolving {host} timed out")),
    }
}

/// The server's base URL, split.
#[derive(Debug, Clone)]
pub struct Base {
    /// `https`?
    pub tls: bool,
    /// Host as written, without brackets.
    pub host: String,
    /// Port, defaulted by scheme.
    pub port: u16,
    /// Path prefix without a trailing slash (`""` at the root).
    pub prefix: String,
}

impl Base {
    /// Parses `http://host[:port][/prefix]` or `https://…`.
    pub fn parse(url: &str) -> Result<Base> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| anyhow!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("{url:?}: the URL must start with http:// or https://"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Base {
            tls,
            host,
            port,
            prefix,
        })
    }

    /// `host:port` for a Host header (brackets around IPv6).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL of `path` under the prefix, with `scheme`.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{}{path}", self.authority(), self.prefix)
    }
}

/// Opens a stream to the server, TLS when the base is https. For https it
/// also returns the `tls` check (the certificate: trusted, name, expiry).
pub async fn open(
    base: &Base,
    tls: &Tls,
    alpn: &[&[u8]],
    timeout: Duration,
) -> (Result<Box<dyn Io>, String>, Option<Check>) {
    let addrs = match resolve(&base.host, base.port, timeout).await {
        Ok(a) => a,
        Err(e) => return (Err(e), None),
    };
    let tcp = match tcp(&addrs, timeout).await {
        Ok(s) => s,
        Err(e) => return (Err(e), None),
    };
    if !base.tls {
        return (Ok(Box::new(tcp)), None);
    }
    let target = base.authority();
    let started = Instant::now();
    let handshake = tokio::time::timeout(timeout, tls.connect(tcp, &base.host, alpn)).await;
    let ms = started.elapsed().as_millis() as u64;
    let now = turn::auth::unix_now() as i64;
    match handshake {
        Err(_) => {
            let why = format!("TLS handshake timed out after {} s", timeout.as_secs_f64());
            let check = Check::new("tls", target, Status::Fail, why.clone());
            (Err(why), Some(check))
        }
        Ok(Err((why, seen))) => {
            let mut check = Check::new("tls", target, Status::Fail, why.clone()).ms(ms);
            if let Some((subject, issuer, days)) =
                seen.leaf.as_deref().and_then(|d| describe_leaf(d, now))
            {
                check.message =
                    format!("{why} (subject {subject}, issuer {issuer}, expires in {days} days)");
                check = check
                    .with("subject", subject)
                    .with("issuer", issuer)
                    .with("days_left", days);
            }
            (Err(why), Some(check))
        }
        Ok(Ok((stream, seen))) => {
            let check = match seen.leaf.as_deref().and_then(|d| describe_leaf(d, now)) {
                Some((subject, issuer, days)) => {
                    let status = if days < EXPIRY_WARN_DAYS {
                        Status::Warn
                    } else {
                        Status::Ok
                    };
                    Check::new(
                        "tls",
                        target,
                        status,
                        format!(
                            "certificate valid for {}, issued by {issuer}, expires in {days} days",
                            base.host
                        ),
                    )
                    .with("subject", subject)
                    .with("issuer", issuer)
                    .with("days_left", days)
                }
                None => Check::new(
                    "tls",
                    target,
                    Status::Ok,
                    "certificate valid (its dates could not be read)",
                ),
            }
            .ms(ms);
            (Ok(stream), Some(check))
        }
    }
}

/// `GET /healthz` over `stream`: the status code and body.
pub async fn get_healthz(stream: Box<dyn Io>, base: &Base) -> Result<(u16, String)> {
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("{}/healthz", base.prefix))
        .header(hyper::header::HOST, base.authority())
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).trim().to_string();
    Ok((status, body))
}

/// What `welcome` said.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Our peer id.
    pub peer: String,
    /// The `iceServers` list.
    pub ice_servers: Vec<peer::IceServer>,
}

/// Joins `room` over the WebSocket on `stream`, waits for `welcome` and
/// leaves again.
pub async fn join(
    stream: Box<dyn Io>,
    base: &Base,
    room: &str,
    token: Option<&str>,
) -> Result<Welcome, String> {
    let scheme = if base.tls { "wss" } else { "ws" };
    let url = base.url(scheme, "/v1/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
        .await
        .map_err(|e| format!("WebSocket upgrade on {url} failed: {e}"))?;
    let mut join = serde_json::json!({"type": "join", "room": room, "meta": {"name": "doctor"}});
    if let Some(t) = token {
        join["token"] = t.into();
    }
    ws.send(Message::Text(join.to_string().into()))
        .await
        .map_err(|e| format!("sending join failed: {e}"))?;
    loop {
        let msg = match ws.next().await {
            None => return Err("the server closed the WebSocket before welcome".into()),
            Some(Err(e)) => return Err(format!("WebSocket failed before welcome: {e}")),
            Some(Ok(m)) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(f) => {
                return Err(match f {
                    Some(f) => format!("the server closed the WebSocket ({} {})", f.code, f.reason),
                    None => "the server closed the WebSocket".into(),
                })
            }
            _ => continue,
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("the server sent something that is not JSON: {e}"))?;
        match v["type"].as_str() {
            Some("welcome") => {
                let ice_servers = serde_json::from_value(v["iceServers"].clone())
                    .map_err(|e| format!("welcome's iceServers do not parse: {e}"))?;
                let _ = ws.send(Message::Text(r#"{"type":"leave"}"#.into())).await;
                let _ = ws.close(None).await;
                return Ok(Welcome {
                    peer: v["peer"].as_str().unwrap_or_default().to_string(),
                    ice_servers,
                });
            }
            Some("error") => {
                let code = v["code"].as_str().unwrap_or("?");
                let message = v["message"].as_str().unwrap_or("");
                let hint = match code {
                    "unauthorized" | "token-expired" | "peer-not-allowed" => {
                        " (the server wants an access token: pass --token, minted for --room)"
                    }
                    _ => "",
                };
                return Err(format!("join refused: {code}: {message}{hint}"));
            }
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = Base::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (b.tls, b.host.as_str(), b.port, b.prefix.as_str()),
            (false, "127.0.0.1", 8080, "")
        );
        assert_eq!(b.url("ws", "/v1/ws"), "ws://127.0.0.1:8080/v1/ws");
        let b = Base::parse("https://rtc.example.com/switchboard/").unwrap();
        assert_eq!(
            (b.tls, b.port, b.prefix.as_str()),
            (true, 443, "/switchboard")
        );
        assert_eq!(
            b.url("https", "/healthz"),
            "https://rtc.example.com:443/switchboard/healthz"
        );
        let b = Base::parse("http://[::1]:9000").unwrap();
        assert_eq!(
            (b.host.as_str(), b.authority()),
            ("::1", "[::1]:9000".to_string())
        );
        assert_eq!(Base::parse("http://h").unwrap().port, 80);
        for bad in ["ws://h:1/v1/ws", "h:8080", "ftp://h", "http://"] {
            assert!(Base::parse(bad).is_err(), "{bad}");
        }
    }
}
