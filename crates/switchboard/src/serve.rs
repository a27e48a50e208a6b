//! `switchboard serve`: the tokio/axum driver around the sans-IO signaling
//! [`Hub`].
//!
//! This module owns sockets, timers and tasks. Every decision about rooms,
//! peers and limits is the hub's; the driver feeds it frames with the current
//! time and carries out the [`Output`]s it returns.
//!
//! [`start`] serves on a listener the caller bound and returns a [`Running`]
//! server; the binary and the in-process tests both start it that way.

use crate::config::{ServeConfig, TurnConfig};
use crate::listen;
use crate::metrics::Metrics;
use crate::relay::{self, TurnHandle, TurnSettings, TurnTls};
use crate::web;
use anyhow::Context as _;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cluster::{Incoming, RedisStore};
use futures_util::SinkExt;
use serde_json::value::RawValue;
use signal::store::{MemoryStore, Store};
use signal::Tokens;
use signal::{ConnId, FrameKind, Gone, Hub, IceServers, Output};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use turn::auth::Credentials;
use turn::policy::PeerPolicy;

/// A connection's way out, kept under the app lock: frames the hub queued
/// for it and a close order, with a wake-up for the connection's task. The
/// queue owns no storage until the first frame, and the task swaps it out
/// whole, so an idle connection costs a few words here rather than a
/// preallocated channel.
struct Outbox {
    frames: VecDeque<Arc<str>>,
    /// Set once by the hub's `Close`; frames queued before it still go out
    /// first, and nothing is queued after it.
    close: Option<(u16, &'static str)>,
    wake: Arc<Notify>,
}

/// tungstenite's read buffer per connection, bytes: one read call's worth.
/// Candidates, joins and pings fit in one read; an SDP of a few KiB takes a
/// few, a 64 KiB frame about 128. Each byte here is paid by every idle
/// connection, the extra reads only by the few large frames.
const READ_BUFFER: usize = 512;
/// Capacity of a connection's send batch kept between bursts, frames.
const BATCH_KEEP: usize = 16;

/// Where the hub's store ops go.
enum Backend {
    /// Run at once, under the lock (single node).
    Memory(MemoryStore),
    /// Sent to Redis; the replies come back, in order, through `replies`.
    Redis {
        store: RedisStore,
        replies: tokio::sync::mpsc::UnboundedSender<<RedisStore as Store>::Reply>,
    },
}

struct Shared {
    hub: Hub,
    backend: Backend,
    outboxes: HashMap<ConnId, Outbox>,
    /// Frames queued for one connection before it counts as not reading.
    send_queue: usize,
}

struct App {
    shared: Mutex<Shared>,
    /// The cluster store, for `/healthz`.
    redis: Option<RedisStore>,
    metrics: Metrics,
    cfg: ServeConfig,
    tasks: TaskTracker,
    turn: Option<TurnHandle>,
    ice: Arc<dyn IceServers>,
}

impl App {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding the lock would be a bug in the hub; keep
        // serving the other connections rather than poisoning them all.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    /// Carries out everything the hub asked for. Never blocks.
    fn pump(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        while let Some(out) = self.hub.poll_output() {
            match out {
                Output::Store(op) => match &mut self.backend {
                    Backend::Memory(store) => {
                        let reply = store.run(op, now);
                        self.hub.handle_reply(reply, now);
                        while let Some(ev) = store.poll_event() {
                            self.hub.handle_event(ev);
                        }
                    }
                    Backend::Redis { store, replies } => {
                        // The receiver lives as long as the server.
                        let _ = replies.send(store.apply(op, now));
                    }
                },
                Output::Note(note) => metrics.note(note),
                Output::Send { conn, frame, kind } => {
                    let Some(ob) = self.outboxes.get_mut(&conn) else {
                        continue;
                    };
                    if ob.close.is_some() {
                        continue;
                    }
                    if ob.frames.len() >= self.send_queue {
                        warn!(conn = conn.0, "client is not reading; dropping it");
                        self.hub.drop_slow(conn);
                        continue;
                    }
                    if ob.frames.is_empty() {
                        ob.wake.notify_one();
                    }
                    ob.frames.push_back(frame);
                    metrics.count(kind);
                    if let FrameKind::Error(code) = kind {
                        info!(conn = conn.0, %code, "refused a client message");
                    }
                }
                Output::Close { conn, code, reason } => {
                    if let Some(ob) = self.outboxes.get_mut(&conn) {
                        if ob.close.is_none() {
                            ob.close = Some((code, reason));
                            ob.wake.notify_one();
                        }
                    }
                }
            }
        }
        self.gauges(metrics);
    }

    fn gauges(&self, metrics: &Metrics) {
        metrics.peers.set(self.hub.peers() as i64);
        metrics.connections.set(self.hub.connections() as i64);
        match &self.backend {
            Backend::Memory(store) => {
                metrics.rooms.set(store.rooms() as i64);
                metrics.buffered.set(store.buffered() as i64);
            }
            // Cluster-wide figures live in Redis; these are this node's.
            Backend::Redis { .. } => {
                metrics.rooms.set(self.hub.rooms() as i64);
            }
        }
    }
}

/// Binds the HTTP and WebSocket listener, with an error that names the
/// address.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// A server started by [`start`]. Dropping it does not stop the server; call
/// [`Running::shutdown`] or cancel [`Running::shutdown_token`].
pub struct Running {
    addr: SocketAddr,
    tls: bool,
    redirect_addr: Option<SocketAddr>,
    turn_addr: Option<SocketAddr>,
    turn_tls_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// The HTTP and WebSocket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether `local_addr` speaks HTTPS (`--tls-cert`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The plain-HTTP redirect listener's address (`--http-redirect`).
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect_addr
    }

    /// The STUN/TURN address (UDP and TCP), unless TURN is off.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn_addr
    }

    /// The TURN-over-TLS address, if it listens.
    pub fn turn_tls_addr(&self) -> Option<SocketAddr> {
        self.turn_tls_addr
    }

    /// Cancelling it starts the graceful shutdown: every WebSocket is closed
    /// with 1001 going away, then TURN stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped, after a shutdown or an error.
    pub async fn wait(self) -> anyhow::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("server task failed: {e}")),
        }
    }

    /// Shuts down gracefully and waits until everything has stopped.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Starts serving on `listener`, which the caller has bound (port 0 is fine),
/// plus STUN/TURN unless the config turns it off. Returns once every socket
/// is bound; the server runs on the current tokio runtime.
pub async fn start(mut cfg: ServeConfig, listener: TcpListener) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let metrics = Metrics::new();
    // With Redis the hub's ops leave the lock; their replies come back on
    // this queue, in order, and deliveries on the node's subscription.
    let (backend, cluster) = match &cfg.redis {
        None => (Backend::Memory(MemoryStore::new()), None),
        Some(url) => {
            let observe = metrics.redis_observer();
            let store = RedisStore::connect(url, observe).await?;
            if cfg.session_secret.is_none() {
                cfg.hub.tokens = Tokens::new(store.shared_secret().await?);
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let events = store.subscribe(cfg.hub.node);
            (
                Backend::Redis {
                    store: store.clone(),
                    replies: tx,
                },
                Some((store, rx, events)),
            )
        }
    };
    let shutdown = CancellationToken::new();
    // One store for every TLS listener (HTTPS and TURN over TLS), so a
    // reload reaches them all.
    let certs = match &cfg.tls {
        Some(f) => {
            let store = tls::CertStore::open(&f.cert, &f.key).with_context(|| {
                format!(
                    "loading --tls-cert {} and --tls-key {}",
                    f.cert.display(),
                    f.key.display()
                )
            })?;
            store.watch(CERT_POLL, shutdown.clone());
            Some(store)
        }
        None => None,
    };
    // TURN over TLS shows the same certificate as HTTPS, from the file
    // store or from ACME, without an ALPN: TURN clients rarely offer one
    // (RFC 7443's "stun.turn"), and one we did not list would fail them.
    let (tls, turn_tls) = match (&certs, &cfg.acme) {
        (Some(store), _) => (
            Some(tokio_rustls::TlsAcceptor::from(
                store.server_config(&[b"http/1.1"])?,
            )),
            Some(store.server_config(&[])?),
        ),
        (None, Some(acme)) => {
            let resolver = start_acme(acme, shutdown.clone())?;
            let mut https = acme_server_config(resolver.clone())?;
            https.alpn_protocols = vec![b"http/1.1".to_vec(), listen::ACME_TLS_ALPN.to_vec()];
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(https))),
                Some(Arc::new(acme_server_config(resolver)?)),
            )
        }
        (None, None) => (None, None),
    };
    let redirect = match cfg.http_redirect {
        Some(at) => Some(bind(at).await?),
        None => None,
    };
    let redirect_addr = redirect.as_ref().map(|l| l.local_addr()).transpose()?;
    let (turn, ice) = match &cfg.turn {
        Some(t) => {
            let (handle, ice) = start_turn(
                t,
                &cfg.ice_servers,
                turn_tls,
                cfg.limits.handshake_timeout,
                shutdown.clone(),
            )?;
            (Some(handle), ice)
        }
        None => (None, cfg.hub.ice_servers.clone()),
    };
    let turn_addr = turn.as_ref().map(|t| t.udp_addr);
    let turn_tls_addr = turn.as_ref().and_then(|t| t.tls_addr);
    cfg.hub.ice_servers = ice.clone();
    let mut hub = Hub::new(cfg.hub.clone());
    hub.set_wall_clock(Instant::now(), turn::auth::unix_now());
    let app = Arc::new(App {
        shared: Mutex::new(Shared {
            hub,
            backend,
            outboxes: HashMap::new(),
            send_queue: cfg.send_queue,
        }),
        metrics,
        cfg,
        redis: cluster.as_ref().map(|(store, _, _)| store.clone()),
        tasks: TaskTracker::new(),
        turn,
        ice,
    });
    if let Some((_, replies, events)) = cluster {
        tokio::spawn(cluster_replies(app.clone(), replies));
        tokio::spawn(cluster_events(app.clone(), events));
    }
    let is_tls = tls.is_some();
    info!(%addr, tls = is_tls, ?redirect_addr, ?turn_addr, node = %app.cfg.hub.node, ice_servers = ?app.cfg.ice_servers, "listening");
    let task = tokio::spawn(serve(app, listener, tls, redirect, shutdown.clone()));
    Ok(Running {
        addr,
        tls: is_tls,
        redirect_addr,
        turn_addr,
        turn_tls_addr,
        shutdown,
        task,
    })
}

/// Serves until `shutdown` is cancelled or the listener fails, then closes
/// every connection and stops TURN.
async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    redirect: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let https_port = listener.local_addr()?.port();
    // The hub reads no clock; this task tells it the time so idle
    // connections get dropped.
    let sweeper = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let hub = &app.cfg.hub;
            let period = (hub.idle_timeout.min(hub.join_timeout) / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(1));
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let mut s = app.lock();
                        let now = Instant::now();
                        // Access tokens' exp and nbf follow the system clock.
                        s.hub.set_wall_clock(now, turn::auth::unix_now());
                        s.hub.handle_timeout(now);
                        s.pump(&app.metrics);
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
        })
    };

    let router = Router::new()
        .route("/v1/ws", get(ws_handler))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .route("/v1/ice-servers", get(ice_servers_handler))
        .route("/", get(web::page("index")))
        .route("/local", get(web::page("local")))
        .route("/call", get(web::page("call")))
        .route("/chat", get(web::page("chat")))
        .route("/drop", get(web::page("drop")))
        .route("/doctor", get(web::page("doctor")))
        .route("/sdk/{*file}", get(web::sdk))
        .route("/assets/{*file}", get(web::assets))
        .with_state(app.clone());

    let graceful = {
        let app = app.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: closing every WebSocket with 1001 going away");
            let mut s = app.lock();
            s.hub.shutdown();
            s.pump(&app.metrics);
        }
    };
    let limits = app.cfg.limits;
    let counters = app.metrics.http.clone();
    let redirects = {
        let (counters, shutdown) = (counters.clone(), shutdown.clone());
        async move {
            match redirect {
                Some(l) => {
                    let router = redirect_router(https_port);
                    listen::run(l, router, None, limits, counters, shutdown).await
                }
                None => Ok(()),
            }
        }
    };
    let main = async {
        let served = listen::run(listener, router, tls, limits, counters, shutdown.clone()).await;
        // After a listener error too, so TURN and the sweeper stop with it.
        shutdown.cancel();
        served
    };
    let (served, redirected, ()) = tokio::join!(main, redirects, graceful);
    let served = served.and(redirected);

    // Detaches queued at shutdown must reach a shared store, so resumes
    // elsewhere find the sessions.
    if app.redis.is_some() {
        let deadline = Instant::now() + Duration::from_secs(2);
        while app.lock().hub.waiting() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    app.tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), app.tasks.wait())
        .await
        .is_err()
    {
        warn!("some WebSocket connections did not finish closing within 5 s");
    }
    sweeper.abort();
    let _ = sweeper.await;
    if let Some(app) = Arc::into_inner(app) {
        if let Some(turn) = app.turn {
            // Joining threads blocks; keep it off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || turn.join()).await;
        }
    }
    info!("stopped");
    served.map_err(Into::into)
}

/// Orders and renews the certificate by ACME (rustls-acme, TLS-ALPN-01 on
/// the HTTPS listener) in a task of its own; handshakes get whatever it
/// holds (none until the first order or the cache delivers one).
fn start_acme(
    acme: &crate::config::AcmeSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<rustls_acme::ResolvesServerCertAcme>> {
    use futures_util::StreamExt;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut config = rustls_acme::AcmeConfig::new(&acme.domains)
        .directory(&acme.directory)
        .cache_option(acme.cache.clone().map(rustls_acme::caches::DirCache::new));
    if let Some(email) = &acme.email {
        config = config.contact_push(format!("mailto:{email}"));
    }
    if let Some(path) = &acme.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("--acme-ca-file {}: {e}", path.display()))?;
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        for cert in tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| anyhow::anyhow!("--acme-ca-file {}: {e}", path.display()))?;
            roots.add(cert)?;
        }
        if roots.is_empty() {
            anyhow::bail!("--acme-ca-file {}: no certificate in it", path.display());
        }
        let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config = config.client_tls_config(Arc::new(client));
    }
    let mut state = config.state();
    let resolver = state.resolver();
    let domains = acme.domains.join(",");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = state.next() => match event {
                    Some(Ok(ok)) => info!(domains = %domains, "ACME: {ok:?}"),
                    Some(Err(e)) => warn!(domains = %domains, "ACME failed, retrying with backoff: {e}"),
                    None => break,
                },
            }
        }
    });
    Ok(resolver)
}

/// A TLS server config that shows whatever certificate ACME holds.
fn acme_server_config(
    resolver: Arc<rustls_acme::ResolvesServerCertAcme>,
) -> anyhow::Result<tokio_rustls::rustls::ServerConfig> {
    Ok(
        tokio_rustls::rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver),
    )
}

/// How often the certificate files are checked for a change.
const CERT_POLL: Duration = Duration::from_secs(5);

/// The `--http-redirect` listener's one route: every request goes to the
/// same host and path over https on the TLS port.
fn redirect_router(https_port: u16) -> Router {
    Router::new().fallback(move |headers: HeaderMap, uri: Uri| async move {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match host.and_then(|h| redirect_target(h, path, https_port)) {
            Some(to) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response(),
            None => (StatusCode::BAD_REQUEST, "missing or bad Host header\n").into_response(),
        }
    })
}

/// `https://HOST[:PORT]PATH` for a plain request to `host` (a Host header,
/// with or without its port). `None` for a host that is not a name or an
/// address.
fn redirect_target(host: &str, path: &str, https_port: u16) -> Option<String> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port or [v6]
        let end = rest.find(']')?;
        &host[..end + 2]
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
    if !ok {
        return None;
    }
    Some(if https_port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{https_port}{path}")
    })
}

/// Starts STUN/TURN and builds the `iceServers` source that points at it.
fn start_turn(
    t: &TurnConfig,
    static_urls: &[String],
    tls_config: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<(TurnHandle, Arc<dyn IceServers>)> {
    let detected = detect_primary_ip();
    let external_ip = t
        .external_ip
        .or_else(|| (!t.listen.ip().is_unspecified()).then_some(t.listen.ip()))
        .or(detected)
        .unwrap_or_else(|| {
            warn!("no --external-ip and no primary interface found; advertising 127.0.0.1");
            IpAddr::from([127, 0, 0, 1])
        });
    let mut creds = Credentials::new(t.realm.clone());
    for (name, password) in &t.users {
        creds.add_user(name, password);
    }
    let secret = match &t.secret {
        Some(s) => s.clone().into_bytes(),
        None => {
            // A fresh secret per start: credentials handed out before a
            // restart stop working, which is the point of short-lived ones.
            let mut b = [0u8; 24];
            rand::fill(&mut b);
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD_NO_PAD, b)
                .into_bytes()
        }
    };
    creds.set_secret(secret.clone());
    let mut policy = PeerPolicy::new(t.allow_peer.clone(), vec![]);
    policy.add_own(external_ip);
    if !t.listen.ip().is_unspecified() {
        policy.add_own(t.listen.ip());
    }
    if let Some(ip) = detected {
        policy.add_own(ip);
    }
    // The second STUN address is bound first: its advertised address goes
    // into the TURN port's Binding answers (OTHER-ADDRESS).
    let mut core = t.core.clone();
    let alt = match t.stun_alt_listen {
        None => None,
        Some(addr) => {
            let sock = std::net::UdpSocket::bind(addr)
                .map_err(|e| anyhow::anyhow!("cannot bind --stun-alt-listen {addr}: {e}"))?;
            let port = sock.local_addr()?.port();
            let ip = if addr.ip().is_unspecified() {
                external_ip
            } else {
                addr.ip()
            };
            core.other_address = Some(SocketAddr::new(ip, port));
            Some(sock)
        }
    };
    let settings = TurnSettings {
        listen: t.listen,
        external_ip,
        relay_ports: t.relay_ports,
        workers: t.workers,
        core: core.clone(),
        creds: Arc::new(creds),
        policy: Arc::new(policy),
        max_allocations: t.max_allocations,
        max_allocations_per_user: t.max_allocations_per_user,
        tcp_limits: t.tcp_limits,
        max_tcp_per_ip: t.max_tcp_per_ip,
        tls: match (t.tls_listen, tls_config) {
            (Some(listen), Some(config)) => Some(TurnTls {
                listen,
                config,
                handshake_timeout,
            }),
            _ => None,
        },
    };
    let handle = relay::start(settings, shutdown.clone())?;
    let host = SocketAddr::new(external_ip, handle.udp_addr.port());
    // Browsers check the certificate against the URL's host, so it is the
    // name clients know the server by, not the relay address.
    let turns_url = handle.tls_addr.map(|a| {
        let name = match &t.public_host {
            Some(h) if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
            Some(h) => h.clone(),
            None => match external_ip {
                IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            },
        };
        format!("turns:{name}:{}?transport=tcp", a.port())
    });
    if let Some(sock) = alt {
        crate::stun_alt::spawn(sock, host, &core, shutdown)?;
    }
    let ice = IceProvider {
        static_urls: static_urls.to_vec(),
        turn_host: host.to_string(),
        turns_url,
        secret,
        ttl: t.ttl,
    };
    Ok((handle, Arc::new(ice)))
}

/// The address the default route leaves from. A UDP `connect` only picks a
/// route; no packet is sent.
fn detect_primary_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// `iceServers` for clients: the configured URLs, then this server's STUN
/// and TURN with fresh time-limited credentials.
#[derive(Debug)]
struct IceProvider {
    static_urls: Vec<String>,
    turn_host: String,
    /// `turns:HOST:PORT?transport=tcp` when TURN over TLS listens.
    turns_url: Option<String>,
    secret: Vec<u8>,
    ttl: u64,
}

impl IceServers for IceProvider {
    fn for_peer(&self, _room: &str, peer: &str) -> Box<RawValue> {
        let unix = turn::auth::unix_now();
        let (username, credential) =
            turn::auth::rest_credential(&self.secret, peer, self.ttl, unix);
        let h = &self.turn_host;
        let mut list: Vec<serde_json::Value> = self
            .static_urls
            .iter()
            .map(|u| serde_json::json!({ "urls": [u] }))
            .collect();
        list.push(serde_json::json!({ "urls": [format!("stun:{h}")] }));
        let mut urls = vec![
            format!("turn:{h}?transport=udp"),
            format!("turn:{h}?transport=tcp"),
        ];
        urls.extend(self.turns_url.clone());
        list.push(serde_json::json!({
            "urls": urls,
            "username": username,
            "credential": credential,
        }));
        RawValue::from_string(serde_json::Value::Array(list).to_string()).expect("valid JSON")
    }
}

/// Hands Redis replies to the hub in the order the ops were given out.
async fn cluster_replies(
    app: Arc<App>,
    mut replies: tokio::sync::mpsc::UnboundedReceiver<<RedisStore as Store>::Reply>,
) {
    while let Some(reply) = replies.recv().await {
        let reply = reply.await;
        let mut s = app.lock();
        s.hub.handle_reply(reply, Instant::now());
        s.pump(&app.metrics);
    }
}

/// Hands messages published for this node's sockets to the hub.
async fn cluster_events(app: Arc<App>, mut events: tokio::sync::mpsc::UnboundedReceiver<Incoming>) {
    while let Some(incoming) = events.recv().await {
        let mut s = app.lock();
        match incoming {
            Incoming::Event(ev) => s.hub.handle_event(ev),
            Incoming::Subscribed => s.hub.resync(),
        }
        s.pump(&app.metrics);
    }
}

/// 200 while the node can do its job; 503 when its cluster store is
/// unreachable.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    match &app.redis {
        Some(store) if !store.ping().await => {
            (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable\n").into_response()
        }
        _ => "ok\n".into_response(),
    }
}

/// The same `iceServers` a `welcome` carries. With `--auth-secret` it takes
/// `Authorization: Bearer TOKEN`, a valid access token for any room; its
/// `peer` claim names the TURN credentials and `"turn": false` leaves TURN
/// out.
async fn ice_servers_handler(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (peer, turn) = match &app.cfg.hub.auth {
        None => ("http".to_string(), true),
        Some(auth) => {
            let bearer = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                });
            match auth.verify(bearer, turn::auth::unix_now()) {
                Ok(grant) => (grant.peer.unwrap_or_else(|| "http".into()), grant.turn),
                Err(e) => {
                    let body = serde_json::json!({
                        "error": e.code.as_str(),
                        "message": e.message,
                    });
                    return (
                        StatusCode::UNAUTHORIZED,
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::WWW_AUTHENTICATE, "Bearer"),
                        ],
                        body.to_string(),
                    )
                        .into_response();
                }
            }
        }
    };
    let mut list = app.ice.for_peer("", &peer);
    if !turn {
        list = signal::hub::without_turn(&list);
    }
    let body = format!(r#"{{"iceServers":{}}}"#, list.get());
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The query of `/v1/ws`: only `token` means anything; other keys are
/// ignored.
#[derive(serde::Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn metrics_handler(State(app): State<Arc<App>>) -> Response {
    app.lock().gauges(&app.metrics);
    if let Some(store) = &app.redis {
        if let Some(n) = store.buffered().await {
            app.metrics.buffered.set(n);
        }
    }
    if let Some(turn) = &app.turn {
        app.metrics.update_turn(&turn.snapshot());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn ws_handler(
    ws: WebSocketUpgrade,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    State(app): State<Arc<App>>,
    query: Result<Query<WsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // A query that does not parse counts as none: the join then says
    // `unauthorized` where a token is needed, rather than the upgrade
    // failing with a bare 400.
    let token = query.ok().and_then(|Query(q)| q.token);
    let wake = Arc::new(Notify::new());
    let conn = {
        let mut s = app.lock();
        match s.hub.connect_with_token(Instant::now(), token.as_deref()) {
            Ok(conn) => {
                s.outboxes.insert(
                    conn,
                    Outbox {
                        frames: VecDeque::new(),
                        close: None,
                        wake: wake.clone(),
                    },
                );
                conn
            }
            Err(_) => {
                warn!(%remote, "refusing WebSocket: --max-connections reached");
                return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
            }
        }
    };
    // The WebSocket layer refuses frames far above the limit before reading
    // them whole; frames just above it reach the hub, which answers
    // `too-large` and keeps the connection.
    let hard_limit = app.cfg.hub.max_message_bytes.saturating_mul(4);
    let on_fail = app.clone();
    let tracker = app.tasks.clone();
    // tungstenite allocates and zero-fills its whole read buffer per
    // connection up front (128 KiB by default), which was nearly all of an
    // idle connection's memory. A small one still takes frames of any size
    // up to the limits (it grows to fit a frame), reading large ones in
    // more, smaller reads.
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_failed_upgrade(move |e| {
            warn!(%remote, "WebSocket upgrade failed: {e}");
            let mut s = on_fail.lock();
            s.hub.disconnect(conn, Gone::Lost);
            s.outboxes.remove(&conn);
            s.pump(&on_fail.metrics);
        })
        .on_upgrade(move |socket| tracker.track_future(connection(app, conn, remote, socket, wake)))
}

/// Runs one WebSocket until either side closes it.
///
/// A plain fn around an `async move` block rather than an `async fn`: an
/// async fn keeps its by-value arguments and the locals they move into as
/// separate slots of the future, and the WebSocket is most of it. Every
/// connection's task holds this future for its whole life.
#[allow(clippy::manual_async_fn)]
fn connection(
    app: Arc<App>,
    conn: ConnId,
    remote: SocketAddr,
    mut socket: WebSocket,
    wake: Arc<Notify>,
) -> impl std::future::Future<Output = ()> {
    async move {
        info!(conn = conn.0, %remote, "connection open");
        // One owner for both directions rather than split() halves, which would
        // put the socket behind a shared lock allocation of its own.
        let ping_every = (app.cfg.hub.idle_timeout / 3).max(Duration::from_millis(50));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);

        // Frames taken from the outbox in one go; reused, so a busy connection
        // does not allocate per batch.
        let mut batch: VecDeque<Arc<str>> = VecDeque::new();
        // Only a close frame from the client ends its session; anything
        // else leaves it for a resume.
        let mut gone = Gone::Lost;
        let why: String = 'conn: loop {
            tokio::select! {
                incoming = socket.recv() => {
                    let now = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            let mut s = app.lock();
                            s.hub.handle_text(conn, text.as_str(), now);
                            s.pump(&app.metrics);
                        }
                        Some(Ok(Message::Binary(b))) => {
                            let mut s = app.lock();
                            s.hub.handle_binary(conn, b.len(), now);
                            s.pump(&app.metrics);
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            app.lock().hub.handle_activity(conn, now);
                        }
                        Some(Ok(Message::Close(frame))) => {
                            gone = Gone::Closed;
                            break match frame {
                                Some(f) => format!("closed by client ({} {})", f.code, f.reason),
                                None => "closed by client".into(),
                            };
                        }
                        None => break "connection lost".into(),
                        Some(Err(e)) => {
                            // Oversized frames land here: say why before leaving.
                            let text = e.to_string();
                            if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                                let _ = socket.send(close_frame(1009, "frame too large")).await;
                            }
                            break format!("connection error: {text}");
                        }
                    }
                }
                _ = wake.notified() => {
                    let close = {
                        let mut s = app.lock();
                        let Some(ob) = s.outboxes.get_mut(&conn) else { continue };
                        std::mem::swap(&mut ob.frames, &mut batch);
                        ob.close
                    };
                    // Frames queued before a close order still go out first.
                    while let Some(frame) = batch.pop_front() {
                        if let Err(e) = socket.send(Message::Text(frame.as_ref().into())).await {
                            if close.is_none() {
                                break 'conn format!("send failed: {e}");
                            }
                            break;
                        }
                    }
                    if batch.capacity() > BATCH_KEEP {
                        // After a burst, give the memory back.
                        batch = VecDeque::new();
                    }
                    batch.clear();
                    if let Some((code, reason)) = close {
                        let _ = socket.send(close_frame(code, reason)).await;
                        let _ = socket.flush().await;
                        break format!("closed by server ({code} {reason})");
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = socket.send(Message::Ping(Default::default())).await {
                        break format!("ping failed: {e}");
                    }
                }
            }
        };

        {
            let mut s = app.lock();
            s.hub.disconnect(conn, gone);
            s.outboxes.remove(&conn);
            s.pump(&app.metrics);
        }
        info!(conn = conn.0, %remote, reason = %why, "connection closed");
    }
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::redirect_target;

    #[test]
    fn redirects_keep_host_and_path_and_use_the_tls_port() {
        let t = |h, p, port| redirect_target(h, p, port);
        assert_eq!(
            t("example.com", "/call?room=a", 443).as_deref(),
            Some("https://example.com/call?room=a")
        );
        assert_eq!(
            t("example.com:80", "/", 8443).as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            t("[2001:db8::1]:80", "/x", 443).as_deref(),
            Some("https://[2001:db8::1]/x")
        );
        assert_eq!(
            t("127.0.0.1", "/", 9).as_deref(),
            Some("https://127.0.0.1:9/")
        );
        assert_eq!(t("", "/", 443), None);
        assert_eq!(t("evil.com/x", "/", 443), None);
        assert_eq!(t("a b", "/", 443), None);
        assert_eq!(t("host:notaport", "/", 443), None);
        assert_eq!(t("[::1", "/", 443), None);
    }
}
