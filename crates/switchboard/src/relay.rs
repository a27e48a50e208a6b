//! The STUN/TURN server's I/O: sockets, worker threads and timers around the
//! sans-IO [`turn::server::Server`].
//!
//! Each worker is one OS thread with a single-threaded tokio runtime. It owns
//! its own `SO_REUSEPORT` UDP socket on the TURN port (the kernel spreads
//! clients over workers by address hash, and keeps each client on one
//! worker), its own allocation table, the relay sockets of its allocations,
//! and the TCP clients handed to it. Nothing is shared between workers on
//! the data path; only the quota counters are.
//!
//! A worker is one event loop over one [`Worker`] struct that owns all of
//! that state: sockets report readiness through [`ready`], and the loop
//! services each ready socket with `&mut Worker`, so no two handlers ever
//! hold the state at once and no handler can await while holding it. TCP
//! writes go straight to the socket; what a slow client's socket will not
//! take waits in that client's queue for the socket's write readiness.

mod ready;

use anyhow::{Context, Result};
use quinn_udp::UdpSocketState;
use ready::{Handle, Ready, Source};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use stun::attr::AddressFamily;
use stun::Framer;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use turn::auth::{unix_now, Credentials};
use turn::policy::PeerPolicy;
use turn::server::{
    Action, BindError, Bound, Config, FiveTuple, Quota, RelayId, Relays, Server, Stats, Transport,
};
use turn::tcp::{ConnClock, IpSlot, PerIpCap, TcpLimits};

/// Everything the TURN server needs, resolved from flags.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub listen: SocketAddr,
    /// Address advertised in XOR-RELAYED-ADDRESS.
    pub external_ip: IpAddr,
    pub relay_ports: (u16, u16),
    pub workers: usize,
    pub core: Config,
    pub creds: Arc<Credentials>,
    pub policy: Arc<PeerPolicy>,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    /// Deadlines of TURN connections over TCP (and TLS).
    pub tcp_limits: TcpLimits,
    /// Concurrent TCP (and TLS) connections per source address; 0 = no cap.
    pub max_tcp_per_ip: usize,
    /// TURN over TLS, when a certificate is configured.
    pub tls: Option<TurnTls>,
}

/// The TURN-over-TLS listener.
#[derive(Clone)]
pub struct TurnTls {
    pub listen: SocketAddr,
    /// Takes its certificate from serve's reloading store, or from ACME.
    pub config: Arc<rustls::ServerConfig>,
    /// `--tls-handshake-timeout`; the allocate deadline, which counts
    /// from the accept, bounds it too.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for TurnTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnTls")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Counters and gauges of one worker, copied out once a second for
/// `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub stats: Stats,
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
    /// Packets dropped because a socket buffer or TCP queue was full.
    pub send_drops: u64,
    /// Open TURN connections over TCP and TLS.
    pub tcp_connections: usize,
    /// Stream connections closed by their deadlines (no allocation in
    /// time, or idle).
    pub tcp_expired: u64,
}

/// A running TURN server.
pub struct TurnHandle {
    /// The TURN address, for UDP and TCP alike.
    pub udp_addr: SocketAddr,
    /// The TURN-over-TLS address, if it listens.
    pub tls_addr: Option<SocketAddr>,
    snapshots: Vec<Arc<Mutex<Snapshot>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl TurnHandle {
    /// Sum over workers.
    pub fn snapshot(&self) -> Snapshot {
        let mut t = Snapshot::default();
        for s in &self.snapshots {
            let s = *s.lock().unwrap_or_else(|e| e.into_inner());
            t.stats += s.stats;
            t.allocations += s.allocations;
            t.permissions += s.permissions;
            t.channels += s.channels;
            t.send_drops += s.send_drops;
            t.tcp_connections += s.tcp_connections;
            t.tcp_expired += s.tcp_expired;
        }
        t
    }

    /// Waits for the worker threads after shutdown was signalled.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn reuseport_udp(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    // Bursts of relayed packets must not overflow the default buffers.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A TCP listener with a deep accept queue: a burst of connections (a
/// flood of idle ones among them) must not leave real clients' SYNs
/// dropped while the acceptor catches up. std's default backlog is 128.
fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Relay ports handed out round-robin across workers, and the ports
/// reserved by EVEN-PORT for a later Allocate (which may reach any worker).
struct PortPool {
    lo: u16,
    hi: u16,
    cursor: AtomicU32,
    reserved: Mutex<HashMap<[u8; 8], (std::net::UdpSocket, Instant)>>,
}

/// RFC 8656 §7.2: a reservation is kept about 30 seconds.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

impl PortPool {
    fn reserve(&self, sock: std::net::UdpSocket) -> [u8; 8] {
        let mut token = [0u8; 8];
        rand::fill(&mut token);
        let now = Instant::now();
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|_, (_, exp)| *exp > now);
        r.insert(token, (sock, now + RESERVATION_LIFETIME));
        token
    }

    fn claim(&self, token: [u8; 8]) -> Option<std::net::UdpSocket> {
        let now = Instant::now();
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|_, (_, exp)| *exp > now);
        r.remove(&token).map(|(s, _)| s)
    }

    /// Binds a relay socket on some free port of the range; with `pair`,
    /// an even port and the odd one after it.
    fn bind(
        &self,
        ip: IpAddr,
        even: bool,
        pair: bool,
    ) -> Option<(std::net::UdpSocket, Option<std::net::UdpSocket>)> {
        let span = u32::from(self.hi - self.lo) + 1;
        for _ in 0..span {
            let off = self.cursor.fetch_add(1, Ordering::Relaxed) % span;
            let port = self.lo + off as u16;
            if (even || pair) && port % 2 == 1 {
                continue;
            }
            let Some(first) = bind_port(ip, port) else {
                continue;
            };
            if !pair {
                return Some((first, None));
            }
            if port < self.hi {
                if let Some(second) = bind_port(ip, port + 1) {
                    return Some((first, Some(second)));
                }
            }
        }
        None
    }
}

fn bind_port(ip: IpAddr, port: u16) -> Option<std::net::UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).ok()?;
    s.bind(&addr.into()).ok()?;
    s.set_nonblocking(true).ok()?;
    let _ = s.set_recv_buffer_size(1 << 20);
    let _ = s.set_send_buffer_size(1 << 20);
    Some(s.into())
}

/// Starts the workers. Returns once every socket is bound.
pub fn start(settings: TurnSettings, shutdown: CancellationToken) -> Result<TurnHandle> {
    let settings = Arc::new(settings);
    let quota = Quota::new(settings.max_allocations, settings.max_allocations_per_user);
    let ports = Arc::new(PortPool {
        lo: settings.relay_ports.0,
        hi: settings.relay_ports.1,
        cursor: AtomicU32::new(0),
        reserved: Mutex::new(HashMap::new()),
    });
    let mut nonce_secret = [0u8; 32];
    rand::fill(&mut nonce_secret);

    // Bind the first UDP socket to learn the port when 0 was asked for, then
    // TCP and the rest of the reuseport group on that same port. With port 0
    // the kernel's pick may already be taken for TCP (by some outgoing
    // connection), so try a few picks.
    let attempts = if settings.listen.port() == 0 { 20 } else { 1 };
    let mut bound = None;
    let mut last_err = None;
    for _ in 0..attempts {
        let first = reuseport_udp(settings.listen)
            .with_context(|| format!("cannot bind TURN UDP socket on {}", settings.listen))?;
        let udp_addr = first.local_addr()?;
        match tcp_listener(udp_addr) {
            Ok(tcp) => {
                bound = Some((first, udp_addr, tcp));
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some((first, udp_addr, tcp)) = bound else {
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        anyhow::bail!("cannot bind TURN TCP listener on {}: {e}", settings.listen);
    };
    let mut udp_sockets = vec![first];
    for _ in 1..settings.workers {
        udp_sockets.push(reuseport_udp(udp_addr).context("binding another reuseport UDP socket")?);
    }
    tcp.set_nonblocking(true)?;
    let tcp_addr = tcp.local_addr()?;

    let mut snapshots = Vec::new();
    let mut threads = Vec::new();
    let mut tcp_handoff = Vec::new();
    for (i, sock) in udp_sockets.into_iter().enumerate() {
        let snap = Arc::new(Mutex::new(Snapshot::default()));
        snapshots.push(snap.clone());
        let (tx, rx) = mpsc::unbounded_channel::<Accepted>();
        tcp_handoff.push(tx);
        let server = Server::new(
            settings.core.clone(),
            settings.creds.clone(),
            settings.policy.clone(),
            quota.clone(),
            nonce_secret,
        );
        let ctx = WorkerInit {
            settings: settings.clone(),
            ports: ports.clone(),
            server,
            sock,
            tcp: rx,
            snap,
            shutdown: shutdown.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("turn-{i}"))
                .spawn(move || {
                    if let Err(e) = run_worker(ctx) {
                        warn!("TURN worker stopped: {e:#}");
                    }
                })?,
        );
    }

    // TCP accept runs on the caller's runtime and deals connections out to
    // the workers.
    let cap = PerIpCap::new(settings.max_tcp_per_ip);
    let tcp = TcpListener::from_std(tcp)?;
    let dealer = Dealer {
        workers: Arc::new(tcp_handoff),
        next: Arc::new(AtomicU32::new(0)),
    };
    tokio::spawn(accept_tcp(
        tcp,
        cap.clone(),
        dealer.clone(),
        shutdown.clone(),
    ));
    let tls_addr = match &settings.tls {
        Some(t) => {
            let l = tcp_listener(t.listen)
                .with_context(|| format!("cannot bind TURN TLS listener on {}", t.listen))?;
            l.set_nonblocking(true)?;
            let addr = l.local_addr()?;
            let acceptor = tokio_rustls::TlsAcceptor::from(t.config.clone());
            tokio::spawn(accept_tls(
                TcpListener::from_std(l)?,
                acceptor,
                t.handshake_timeout
                    .min(settings.tcp_limits.allocate_timeout),
                cap,
                dealer,
                shutdown.clone(),
            ));
            info!(%addr, "TURN over TLS listening");
            Some(addr)
        }
        None => None,
    };

    info!(%udp_addr, %tcp_addr, workers = settings.workers, external_ip = %settings.external_ip,
        relay_ports = ?settings.relay_ports, "STUN/TURN listening");
    Ok(TurnHandle {
        udp_addr,
        tls_addr,
        snapshots,
        threads,
    })
}

/// A stream connection on its way from an acceptor to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    /// Its place under the per-source cap, held as long as it is open.
    slot: IpSlot,
    /// When it was accepted: the allocate deadline counts from here.
    opened: Instant,
    /// TURN over TLS: the session, its handshake done.
    tls: Option<Box<rustls::ServerConnection>>,
}

/// Deals accepted connections out to the workers, round-robin.
#[derive(Clone)]
struct Dealer {
    workers: Arc<Vec<mpsc::UnboundedSender<Accepted>>>,
    next: Arc<AtomicU32>,
}

impl Dealer {
    fn deal(&self, a: Accepted) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.workers.len();
        let _ = self.workers[i].send(a);
    }
}

/// Takes a slot under the per-source cap for a new connection; `None`
/// (and the connection is dropped, so closed) when its source is full.
fn admit(cap: &Arc<PerIpCap>, peer: SocketAddr, what: &str) -> Option<IpSlot> {
    let slot = cap.try_acquire(peer.ip());
    if slot.is_none() {
        debug!(%peer, "TURN {what} connection refused: per-source cap reached");
    }
    slot
}

async fn accept_tcp(
    tcp: TcpListener,
    cap: Arc<PerIpCap>,
    dealer: Dealer,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            r = tcp.accept() => match r {
                Ok((stream, peer)) => {
                    let Some(slot) = admit(&cap, peer, "TCP") else { continue };
                    let _ = stream.set_nodelay(true);
                    if let Ok(stream) = stream.into_std() {
                        dealer.deal(Accepted { stream, slot, opened: Instant::now(), tls: None });
                    }
                }
                Err(e) => {
                    warn!("TURN TCP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.cancelled() => break,
        }
    }
}

/// Accepts TURN over TLS. Each handshake runs as its own task on this
/// runtime, bounded by `deadline` (the handshake timeout, or the
/// allocate deadline when that is shorter); the worker then gets the socket and the
/// rustls session and does the record layer itself.
async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    deadline: Duration,
    cap: Arc<PerIpCap>,
    dealer: Dealer,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    warn!("TURN TLS accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(slot) = admit(&cap, peer, "TLS") else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let opened = Instant::now();
        let (acceptor, dealer) = (acceptor.clone(), dealer.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, "TURN TLS handshake failed: {e}"),
                Err(_) => return debug!(%peer, "TURN TLS handshake timed out"),
            };
            let (stream, mut conn) = tls.into_inner();
            // The worker bounds what is queued per connection itself, and
            // never has a frame cut by rustls' own limit.
            conn.set_buffer_limit(None);
            if let Ok(stream) = stream.into_std() {
                dealer.deal(Accepted {
                    stream,
                    slot,
                    opened,
                    tls: Some(Box::new(conn)),
                });
            }
        });
    }
}

struct WorkerInit {
    settings: Arc<TurnSettings>,
    ports: Arc<PortPool>,
    server: Server,
    sock: std::net::UdpSocket,
    tcp: mpsc::UnboundedReceiver<Accepted>,
    snap: Arc<Mutex<Snapshot>>,
    shutdown: CancellationToken,
}

/// How many batches (or TCP reads) one source may take before the others
/// get their turn, so one busy allocation cannot starve the rest.
const DRAIN_BUDGET: usize = 8;

/// Datagrams per recvmmsg call.
const BATCH: usize = 32;

/// Bytes queued for one TCP client (the kernel's send buffer being full)
/// before further frames are dropped, whole, so the stream keeps its
/// framing.
const TCP_QUEUE_BYTES: usize = 1 << 20;

/// One worker's whole state, owned by its event loop ([`run_worker`]) and
/// lent out by `&mut` to one handler at a time: the borrow checker, not a
/// convention, keeps two handlers from touching it at once.
struct Worker {
    server: Server,
    udp: Udp,
    relays: RelayTable,
    tcp: TcpClients,
    /// Receive buffer shared by every UDP socket of the worker (sources
    /// are serviced one at a time), so no socket needs its own.
    batch: Box<[u8]>,
    /// The server's output buffer, reused for every packet.
    out: Vec<u8>,
    /// UDP datagrams on their way out, sent a batch at a time.
    outbox: Outbox,
    /// Packets dropped because a socket buffer or TCP queue was full.
    send_drops: u64,
    /// Stream connections closed by their deadlines.
    tcp_expired: u64,
    tcp_limits: TcpLimits,
    ready: Ready,
}

/// The worker's socket on the TURN port.
struct Udp {
    sock: UdpSocket,
    state: UdpSocketState,
    addr: SocketAddr,
    ready: Handle,
}

struct RelaySocket {
    sock: UdpSocket,
    state: UdpSocketState,
    ready: Handle,
}

struct RelayTable {
    settings: Arc<TurnSettings>,
    ports: Arc<PortPool>,
    ready: Ready,
    sockets: HashMap<RelayId, RelaySocket>,
    next_id: u32,
}

struct TcpClient {
    framer: Framer,
    tuple: FiveTuple,
    ready: Handle,
    clock: ConnClock,
    _slot: IpSlot,
    /// Apart from the framer, whose frames are being answered while it
    /// writes.
    io: TcpIo,
}

struct TcpIo {
    stream: TcpStream,
    /// Bytes the kernel would not take yet; `unsent[sent..]` is left.
    /// Plain TCP only: over TLS, rustls keeps what is unsent.
    unsent: Vec<u8>,
    sent: usize,
    write_ready: Handle,
    /// TURN over TLS. Its record layer allocates a buffer per record sent
    /// (rustls' buffered API), unlike plain TCP's reused queue.
    tls: Option<Box<rustls::ServerConnection>>,
    /// Plaintext handed to rustls since its queue was last empty: the
    /// bound on what a slow TLS client may have waiting.
    tls_queued: usize,
}

/// The nonblocking socket as `io::Read`/`io::Write` for rustls.
struct TryIo<'a>(&'a TcpStream);

impl io::Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl io::Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct TcpClients {
    clients: HashMap<u64, TcpClient>,
    /// Client address to key, for answers and relayed data.
    by_addr: HashMap<SocketAddr, u64>,
    next_id: u64,
}

impl TcpIo {
    /// Writes a frame straight to the socket, or queues it behind what is
    /// still unsent. False when it was dropped (queue full or connection
    /// broken); a frame is never cut, so the stream keeps its framing.
    fn send(&mut self, frame: &[u8]) -> bool {
        if let Some(tls) = &mut self.tls {
            if tls.wants_write() && self.tls_queued + frame.len() > TCP_QUEUE_BYTES {
                return false;
            }
            if io::Write::write_all(&mut tls.writer(), frame).is_err() {
                return false;
            }
            self.tls_queued += frame.len();
            return self.write_tls();
        }
        if self.sent < self.unsent.len() {
            if self.unsent.len() - self.sent + frame.len() > TCP_QUEUE_BYTES {
                return false;
            }
            // Keep the written prefix from growing the queue without end.
            if self.sent >= self.unsent.len() / 2 {
                self.unsent.drain(..self.sent);
                self.sent = 0;
            }
            self.unsent.extend_from_slice(frame);
            return true;
        }
        let n = match self.stream.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // The reader sees the broken connection and closes it.
            Err(_) => return false,
        };
        if n < frame.len() {
            self.unsent.clear();
            self.sent = 0;
            self.unsent.extend_from_slice(&frame[n..]);
            // Its service waits for the socket to take more.
            self.write_ready.requeue();
        }
        true
    }

    /// Writes what rustls holds while the socket takes it; the rest waits
    /// for write readiness. False when the connection is broken.
    fn write_tls(&mut self) -> bool {
        let Some(tls) = &mut self.tls else {
            return true;
        };
        while tls.wants_write() {
            match tls.write_tls(&mut TryIo(&self.stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_ready.requeue();
                    return true;
                }
                Err(_) => return false,
            }
        }
        self.tls_queued = 0;
        true
    }

    /// Plaintext from the connection into `framer`: the byte count, 0 at
    /// the end of the stream, `WouldBlock` when nothing more is there now.
    fn read(&mut self, framer: &mut Framer) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            let n = self.stream.try_read(framer.read_buf())?;
            framer.advance(n);
            return Ok(n);
        };
        loop {
            match io::Read::read(&mut tls.reader(), framer.read_buf()) {
                Ok(n) => {
                    framer.advance(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut TryIo(&self.stream))? == 0 {
                return Ok(0);
            }
            let processed = tls.process_new_packets();
            // Answers rustls owes (an alert for a bad record, a key update).
            let _ = tls.write_tls(&mut TryIo(&self.stream));
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }

    /// Writes queued bytes while the socket takes them. False when the
    /// connection is broken.
    fn flush(&mut self) -> bool {
        self.write_ready.rearm();
        let mut cx = std::task::Context::from_waker(self.write_ready.waker());
        if self.tls.is_some() {
            return match self.stream.poll_write_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => self.write_tls(),
            };
        }
        while self.sent < self.unsent.len() {
            match self.stream.poll_write_ready(&mut cx) {
                Poll::Pending => return true,
                Poll::Ready(Err(_)) => return false,
                Poll::Ready(Ok(())) => {}
            }
            match self.stream.try_write(&self.unsent[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        self.unsent.clear();
        self.sent = 0;
        // A burst's queue is not kept for an idle connection.
        if self.unsent.capacity() > 64 << 10 {
            self.unsent = Vec::new();
        }
        true
    }
}

impl RelayTable {
    fn adopt(&mut self, std_sock: std::net::UdpSocket) -> Result<Bound, BindError> {
        let port = std_sock
            .local_addr()
            .map_err(|_| BindError::Exhausted)?
            .port();
        let state = UdpSocketState::new((&std_sock).into()).map_err(|_| BindError::Exhausted)?;
        let sock = UdpSocket::from_std(std_sock).map_err(|_| BindError::Exhausted)?;
        self.next_id = self.next_id.wrapping_add(1);
        let id = RelayId(self.next_id);
        let ready = self.ready.register(Source::Relay(id));
        self.sockets.insert(id, RelaySocket { sock, state, ready });
        Ok((id, SocketAddr::new(self.settings.external_ip, port)))
    }
}

impl Relays for RelayTable {
    fn bind(
        &mut self,
        family: AddressFamily,
        even_port: bool,
        reserve_next: bool,
    ) -> Result<(Bound, Option<[u8; 8]>), BindError> {
        let ext = self.settings.external_ip;
        if AddressFamily::of(&ext) != family {
            return Err(BindError::Family);
        }
        let bind_ip: IpAddr = match ext {
            IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let (first, second) = self
            .ports
            .bind(bind_ip, even_port, reserve_next)
            .ok_or(BindError::Exhausted)?;
        let first = self.adopt(first)?;
        Ok((first, second.map(|s| self.ports.reserve(s))))
    }

    fn claim(&mut self, token: [u8; 8]) -> Option<Bound> {
        let sock = self.ports.claim(token)?;
        self.adopt(sock).ok()
    }

    fn release(&mut self, id: RelayId) {
        // Dropping the socket deregisters it; a key still queued for it is
        // skipped.
        self.sockets.remove(&id);
    }
}

fn run_worker(init: WorkerInit) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let ready = Ready::new();
        let state = UdpSocketState::new((&init.sock).into())?;
        let sock = UdpSocket::from_std(init.sock)?;
        let addr = sock.local_addr()?;
        let mut w = Worker {
            server: init.server,
            udp: Udp {
                sock,
                state,
                addr,
                ready: ready.register(Source::Udp),
            },
            relays: RelayTable {
                settings: init.settings.clone(),
                ports: init.ports.clone(),
                ready: ready.clone(),
                sockets: HashMap::new(),
                next_id: 0,
            },
            tcp: TcpClients::default(),
            batch: udp::batch_buffer(BATCH),
            out: Vec::with_capacity(udp::SLOT + 64),
            outbox: Outbox::new(),
            send_drops: 0,
            tcp_expired: 0,
            tcp_limits: init.settings.tcp_limits,
            ready,
        };
        // The loop's other inputs are sources too, polled with their own
        // wakers, so a wake costs one queue push and one poll, not a
        // `select!` over every input.
        let mut control = Control {
            tick: tokio::time::interval(Duration::from_secs(1)),
            tick_ready: w.ready.register(Source::Tick),
            handoff: init.tcp,
            handoff_ready: w.ready.register(Source::Handoff),
            shutdown: Box::pin(init.shutdown.cancelled_owned()),
            shutdown_ready: w.ready.register(Source::Shutdown),
        };
        let mut pending = Vec::with_capacity(64);
        'run: loop {
            w.ready.wait(&mut pending).await;
            for src in pending.drain(..) {
                match src {
                    Source::Tick => control.tick(&mut w, &init.snap),
                    Source::Handoff => control.handoff(&mut w),
                    Source::Shutdown if control.shut_down() => break 'run,
                    Source::Shutdown => {}
                    other => w.service(other),
                }
            }
            // Hand the thread back to the runtime once the task's
            // cooperative budget (which socket polls spend) runs out, not
            // after every round: a yield costs an extra trip through the
            // I/O driver.
            tokio::task::consume_budget().await;
        }
        Ok::<(), anyhow::Error>(())
    })
}

/// The worker loop's inputs besides its sockets.
struct Control {
    tick: tokio::time::Interval,
    tick_ready: Handle,
    handoff: mpsc::UnboundedReceiver<Accepted>,
    handoff_ready: Handle,
    shutdown: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    shutdown_ready: Handle,
}

impl Control {
    fn tick(&mut self, w: &mut Worker, snap: &Mutex<Snapshot>) {
        self.tick_ready.rearm();
        let mut cx = std::task::Context::from_waker(self.tick_ready.waker());
        while self.tick.poll_tick(&mut cx).is_ready() {
            w.tick(snap);
        }
    }

    /// Adopts the TCP connections the acceptor dealt to this worker.
    fn handoff(&mut self, w: &mut Worker) {
        self.handoff_ready.rearm();
        let mut cx = std::task::Context::from_waker(self.handoff_ready.waker());
        while let Poll::Ready(Some(a)) = self.handoff.poll_recv(&mut cx) {
            w.adopt_tcp(a);
        }
    }

    fn shut_down(&mut self) -> bool {
        self.shutdown_ready.rearm();
        let mut cx = std::task::Context::from_waker(self.shutdown_ready.waker());
        self.shutdown.as_mut().poll(&mut cx).is_ready()
    }
}

impl Worker {
    fn tick(&mut self, snap: &Mutex<Snapshot>) {
        let now = Instant::now();
        self.server.handle_timeout(now, &mut self.relays);
        self.expire_tcp(now);
        *snap.lock().unwrap_or_else(|e| e.into_inner()) = Snapshot {
            stats: self.server.stats(),
            allocations: self.server.allocations(),
            permissions: self.server.permissions(),
            channels: self.server.channels(),
            send_drops: self.send_drops,
            tcp_connections: self.tcp.clients.len(),
            tcp_expired: self.tcp_expired,
        };
    }

    /// Closes the stream connections whose deadline passed. A scan a
    /// second over every connection: a comparison each, even at tens of
    /// thousands.
    fn expire_tcp(&mut self, now: Instant) {
        let Worker {
            server,
            tcp,
            tcp_limits,
            ..
        } = self;
        let expired: Vec<(u64, turn::tcp::Expiry)> = tcp
            .clients
            .iter_mut()
            .filter_map(|(id, c)| {
                let allocated = server.has_allocation(&c.tuple, now);
                c.clock.check(now, allocated, tcp_limits).map(|e| (*id, e))
            })
            .collect();
        for (id, why) in expired {
            if let Some(c) = self.tcp.clients.get(&id) {
                debug!(client = %c.tuple.client, ?why, "TURN stream connection closed by its deadline");
            }
            self.tcp_expired += 1;
            self.close_tcp(id);
        }
    }

    fn service(&mut self, src: Source) {
        match src {
            Source::Udp => self.service_udp(),
            Source::Relay(id) => self.service_relay(id),
            Source::Tcp(id) => self.service_tcp(id),
            Source::TcpWrite(id) => self.service_tcp_write(id),
            // Served by the loop's `Control`.
            Source::Tick | Source::Handoff | Source::Shutdown => {}
        }
        // What this source's datagrams made goes out now, before the next
        // source is read.
        self.send_drops += self.outbox.flush(&self.udp.sock, &self.relays) as u64;
    }

    /// Client datagrams on the TURN port.
    fn service_udp(&mut self) {
        let Worker {
            server,
            udp,
            relays,
            tcp,
            batch,
            out,
            outbox,
            send_drops,
            ..
        } = self;
        let server_addr = udp.addr;
        drain_udp(
            &udp.sock,
            &udp.state,
            &udp.ready,
            batch,
            |from, datagram| {
                let tuple = FiveTuple {
                    client: from,
                    server: server_addr,
                    transport: Transport::Udp,
                };
                let action =
                    server.handle_client(Instant::now(), unix_now(), tuple, datagram, out, relays);
                match action {
                    Action::None => {}
                    Action::ToClient { tuple, data } => {
                        to_client(&udp.sock, tcp, outbox, send_drops, tuple, data);
                    }
                    Action::ToPeer { relay, peer, data } => {
                        *send_drops += outbox.queue_to_peer(relays, relay, peer, data) as u64;
                    }
                }
            },
        );
    }

    /// Peer datagrams on one relay socket.
    fn service_relay(&mut self, id: RelayId) {
        let Worker {
            server,
            udp,
            relays,
            tcp,
            batch,
            out,
            outbox,
            send_drops,
            ..
        } = self;
        let Some(r) = relays.sockets.get(&id) else {
            return;
        };
        drain_udp(&r.sock, &r.state, &r.ready, batch, |from, datagram| {
            let action = server.handle_peer(Instant::now(), id, from, datagram, out);
            if let Action::ToClient { tuple, data } = action {
                to_client(&udp.sock, tcp, outbox, send_drops, tuple, data);
            }
        });
    }

    /// Frames from one TCP client (RFC 8656 §5: back to back, ChannelData
    /// padded to 4 bytes).
    fn service_tcp(&mut self, id: u64) {
        let Worker {
            server,
            relays,
            tcp,
            out,
            outbox,
            send_drops,
            ..
        } = self;
        let Some(c) = tcp.clients.get_mut(&id) else {
            return;
        };
        c.ready.rearm();
        let mut cx = std::task::Context::from_waker(c.ready.waker());
        let mut reads = 0;
        let now = Instant::now();
        let open = 'conn: loop {
            // Read before polling: over TLS, rustls may hold plaintext
            // (sent along with the handshake, or left by the budget) that
            // no readiness event will announce.
            loop {
                if reads == DRAIN_BUDGET {
                    c.ready.requeue();
                    break 'conn true;
                }
                reads += 1;
                match c.io.read(&mut c.framer) {
                    Ok(0) => break 'conn false,
                    Ok(_) => c.clock.received(now),
                    // Readiness is cleared: poll again to register.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break 'conn false,
                }
                loop {
                    match c.framer.pop() {
                        Ok(Some(frame)) => {
                            let action = server.handle_client(
                                Instant::now(),
                                unix_now(),
                                c.tuple,
                                frame.as_bytes(),
                                out,
                                relays,
                            );
                            match action {
                                Action::None => {}
                                // Answers go back on this connection.
                                Action::ToClient { data, .. } => {
                                    if !c.io.send(data) {
                                        *send_drops += 1;
                                    }
                                }
                                Action::ToPeer { relay, peer, data } => {
                                    *send_drops +=
                                        outbox.queue_to_peer(relays, relay, peer, data) as u64;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            debug!(client = %c.tuple.client, "TURN TCP framing lost: {e}");
                            break 'conn false;
                        }
                    }
                }
            }
            match c.io.stream.poll_read_ready(&mut cx) {
                Poll::Pending => break true,
                Poll::Ready(Err(_)) => break false,
                Poll::Ready(Ok(())) => {}
            }
        };
        if !open {
            self.close_tcp(id);
        }
    }

    /// Writes what one TCP client's socket would not take earlier.
    fn service_tcp_write(&mut self, id: u64) {
        let Some(c) = self.tcp.clients.get_mut(&id) else {
            return;
        };
        if !c.io.flush() {
            self.close_tcp(id);
        }
    }

    fn close_tcp(&mut self, id: u64) {
        if let Some(c) = self.tcp.clients.remove(&id) {
            self.tcp.by_addr.remove(&c.tuple.client);
            self.server.close_client(c.tuple, &mut self.relays);
        }
    }

    fn adopt_tcp(&mut self, a: Accepted) {
        let stream = match TcpStream::from_std(a.stream) {
            Ok(s) => s,
            Err(e) => return warn!("adopting TURN TCP connection: {e}"),
        };
        let (Ok(client), Ok(server)) = (stream.peer_addr(), stream.local_addr()) else {
            return;
        };
        let t = &mut self.tcp;
        t.next_id += 1;
        let id = t.next_id;
        t.by_addr.insert(client, id);
        t.clients.insert(
            id,
            TcpClient {
                // Grows only as far as the largest frame this client sends,
                // so an idle TCP client costs a few KiB.
                framer: Framer::new(),
                tuple: FiveTuple {
                    client,
                    server,
                    transport: Transport::Tcp,
                },
                ready: self.ready.register(Source::Tcp(id)),
                clock: ConnClock::new(a.opened),
                _slot: a.slot,
                io: TcpIo {
                    stream,
                    unsent: Vec::new(),
                    sent: 0,
                    write_ready: self.ready.register(Source::TcpWrite(id)),
                    tls: a.tls,
                    tls_queued: 0,
                },
            },
        );
    }
}

/// Services one UDP socket: receives batches into `batch` and hands each
/// datagram to `each`, until the socket has nothing more (its waker is
/// then registered) or the budget is spent (it is then queued again).
fn drain_udp(
    sock: &UdpSocket,
    state: &UdpSocketState,
    ready: &Handle,
    batch: &mut [u8],
    mut each: impl FnMut(SocketAddr, &[u8]),
) {
    ready.rearm();
    let mut cx = std::task::Context::from_waker(ready.waker());
    let mut rounds = 0;
    loop {
        match sock.poll_recv_ready(&mut cx) {
            Poll::Pending => return,
            Poll::Ready(Err(e)) => return warn!("TURN UDP socket: {e}"),
            Poll::Ready(Ok(())) => {}
        }
        loop {
            if rounds == DRAIN_BUDGET {
                ready.requeue();
                return;
            }
            rounds += 1;
            match udp::recv_batch(sock, state, batch, |d, bytes| each(d.source, bytes)) {
                Ok(true) => {}
                // Readiness is cleared: poll again to register the waker.
                Ok(false) => break,
                Err(e) => debug!("UDP recv: {e}"),
            }
        }
    }
}

/// Bytes per queued datagram: a path MTU's worth. Larger ones (rare:
/// fragmented UDP) are sent on their own at once.
const OUTBOX_SLOT: usize = 2048;

/// Datagrams the worker sends over UDP, queued while it services one
/// source and sent with one `sendmmsg` per socket and batch: to clients
/// from the TURN port (any mix of destinations), and to peers from one
/// relay socket at a time (a run of packets of one allocation, as a
/// closed-loop flow makes).
struct Outbox {
    clients: udp::SendBatch,
    peers: udp::SendBatch,
    /// The relay socket `peers` is for.
    peers_via: Option<RelayId>,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            clients: udp::SendBatch::new(OUTBOX_SLOT),
            peers: udp::SendBatch::new(OUTBOX_SLOT),
            peers_via: None,
        }
    }

    /// Queues relayed data from relay socket `relay` to `peer`; returns
    /// the datagrams dropped meanwhile.
    fn queue_to_peer(
        &mut self,
        relays: &RelayTable,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
    ) -> usize {
        let mut dropped = 0;
        if self.peers_via != Some(relay) || self.peers.is_full() {
            dropped += self.flush_peers(relays);
            self.peers_via = Some(relay);
        }
        if !self.peers.push(peer, data) {
            // Larger than a slot: on its own, after what is queued (which
            // it must not overtake).
            dropped += self.flush_peers(relays);
            if let Some(r) = relays.sockets.get(&relay) {
                if let Err(e) = r.sock.try_send_to(data, peer) {
                    dropped += 1;
                    debug!("relay send to {peer}: {e}");
                }
            }
        }
        dropped
    }

    /// Queues `data` to a UDP client; returns the datagrams dropped.
    fn queue_to_client(&mut self, udp: &UdpSocket, client: SocketAddr, data: &[u8]) -> usize {
        let mut dropped = 0;
        if self.clients.is_full() {
            dropped += self.clients.flush(udp);
        }
        if !self.clients.push(client, data) {
            // Larger than a slot: on its own, after what is queued.
            dropped += self.clients.flush(udp);
            if let Err(e) = udp.try_send_to(data, client) {
                dropped += 1;
                debug!("send to client {client}: {e}");
            }
        }
        dropped
    }

    fn flush_peers(&mut self, relays: &RelayTable) -> usize {
        if self.peers.is_empty() {
            return 0;
        }
        match self.peers_via.and_then(|id| relays.sockets.get(&id)) {
            Some(r) => self.peers.flush(&r.sock),
            // The relay went away meanwhile: what it had queued goes too.
            None => self.peers.clear(),
        }
    }

    /// Sends everything queued; returns the datagrams dropped.
    fn flush(&mut self, udp: &UdpSocket, relays: &RelayTable) -> usize {
        let mut dropped = self.flush_peers(relays);
        if !self.clients.is_empty() {
            dropped += self.clients.flush(udp);
        }
        dropped
    }
}

/// Sends `data` to a client over UDP (queued in `outbox`) or its TCP
/// connection. Never waits: a full socket buffer or queue drops the
/// packet, as the network would.
fn to_client(
    udp: &UdpSocket,
    tcp: &mut TcpClients,
    outbox: &mut Outbox,
    send_drops: &mut u64,
    tuple: FiveTuple,
    data: &[u8],
) {
    let sent = match tuple.transport {
        Transport::Udp => {
            *send_drops += outbox.queue_to_client(udp, tuple.client, data) as u64;
            true
        }
        Transport::Tcp => match tcp.by_addr.get(&tuple.client) {
            Some(id) => tcp.clients.get_mut(id).is_some_and(|c| c.io.send(data)),
            None => true,
        },
    };
    if !sent {
        *send_drops += 1;
    }
}
