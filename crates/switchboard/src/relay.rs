//! The STUN/TURN server's I/O: sockets, worker threads and timers around the
//! sans-IO [`turn::server::Server`].
//!
//! Each worker is one OS thread with a single-threaded tokio runtime. It owns
//! its own `SO_REUSEPORT` UDP socket on the TURN port (the kernel spreads
//! clients over workers by address hash, and keeps each client on one
//! worker), its own allocation table, the relay sockets of its allocations,
//! and the TCP clients handed to it. Nothing is shared between workers on
//! the data path; only the quota counters are.

use anyhow::{Context, Result};
use quinn_udp::{RecvMeta, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stun::attr::AddressFamily;
use stun::Framer;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use turn::auth::{unix_now, Credentials};
use turn::policy::PeerPolicy;
use turn::server::{
    Action, BindError, Bound, Config, FiveTuple, Quota, RelayId, Relays, Server, Stats, Transport,
};

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
}

/// A running TURN server.
pub struct TurnHandle {
    /// The TURN address, for UDP and TCP alike.
    pub udp_addr: SocketAddr,
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
        match std::net::TcpListener::bind(udp_addr) {
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
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
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
    let tcp = TcpListener::from_std(tcp)?;
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            tokio::select! {
                r = tcp.accept() => match r {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        if let Ok(std) = stream.into_std() {
                            let _ = tcp_handoff[next % tcp_handoff.len()].send(std);
                            next += 1;
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
    });

    info!(%udp_addr, %tcp_addr, workers = settings.workers, external_ip = %settings.external_ip,
        relay_ports = ?settings.relay_ports, "STUN/TURN listening");
    Ok(TurnHandle {
        udp_addr,
        snapshots,
        threads,
    })
}

struct WorkerInit {
    settings: Arc<TurnSettings>,
    ports: Arc<PortPool>,
    server: Server,
    sock: std::net::UdpSocket,
    tcp: mpsc::UnboundedReceiver<std::net::TcpStream>,
    snap: Arc<Mutex<Snapshot>>,
    shutdown: CancellationToken,
}

struct RelaySocket {
    socket: Rc<UdpSocket>,
    task: tokio::task::JoinHandle<()>,
}

/// A worker's state, shared by its local tasks (one thread, so `Rc`).
struct Worker {
    server: RefCell<Server>,
    udp: Rc<UdpSocket>,
    local_addr: SocketAddr,
    relays: RefCell<RelayTable>,
    tcp_clients: RefCell<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    bufs: RefCell<WorkerBufs>,
    /// Packets dropped because a socket buffer or TCP queue was full.
    send_drops: std::cell::Cell<u64>,
}

struct RelayTable {
    me: Weak<Worker>,
    settings: Arc<TurnSettings>,
    ports: Arc<PortPool>,
    sockets: HashMap<RelayId, RelaySocket>,
    next_id: u32,
}

impl RelayTable {
    fn adopt(&mut self, std_sock: std::net::UdpSocket) -> Result<Bound, BindError> {
        let port = std_sock
            .local_addr()
            .map_err(|_| BindError::Exhausted)?
            .port();
        let socket = Rc::new(UdpSocket::from_std(std_sock).map_err(|_| BindError::Exhausted)?);
        self.next_id = self.next_id.wrapping_add(1);
        let id = RelayId(self.next_id);
        let task = tokio::task::spawn_local(relay_loop(self.me.clone(), id, socket.clone()));
        self.sockets.insert(id, RelaySocket { socket, task });
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
        if let Some(r) = self.sockets.remove(&id) {
            r.task.abort();
        }
    }
}

fn run_worker(init: WorkerInit) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let udp = Rc::new(UdpSocket::from_std(init.sock)?);
        let local_addr = udp.local_addr()?;
        let worker = Rc::new_cyclic(|me| Worker {
            server: RefCell::new(init.server),
            udp,
            local_addr,
            relays: RefCell::new(RelayTable {
                me: me.clone(),
                settings: init.settings.clone(),
                ports: init.ports.clone(),
                sockets: HashMap::new(),
                next_id: 0,
            }),
            tcp_clients: RefCell::new(HashMap::new()),
            bufs: RefCell::new(WorkerBufs {
                batch: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
                out: Vec::with_capacity(MAX_DATAGRAM + 64),
            }),
            send_drops: std::cell::Cell::new(0),
        });
        let udp_task = tokio::task::spawn_local(udp_loop(worker.clone()));
        let mut tcp_rx = init.tcp;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut server = worker.server.borrow_mut();
                    server.handle_timeout(now, &mut *worker.relays.borrow_mut());
                    *init.snap.lock().unwrap_or_else(|e| e.into_inner()) = Snapshot {
                        stats: server.stats(),
                        allocations: server.allocations(),
                        permissions: server.permissions(),
                        channels: server.channels(),
                        send_drops: worker.send_drops.get(),
                    };
                }
                Some(stream) = tcp_rx.recv() => {
                    match TcpStream::from_std(stream) {
                        Ok(s) => { tokio::task::spawn_local(tcp_client(worker.clone(), s)); }
                        Err(e) => warn!("adopting TURN TCP connection: {e}"),
                    }
                }
                _ = init.shutdown.cancelled() => break,
            }
        }
        udp_task.abort();
        for (_, r) in worker.relays.borrow_mut().sockets.drain() {
            r.task.abort();
        }
        Ok::<(), anyhow::Error>(())
    })
}

/// How many batches one socket may drain before yielding, so one busy
/// allocation cannot starve the others on the worker.
const DRAIN_BUDGET: usize = 8;

/// Datagrams per recvmmsg call.
const BATCH: usize = 32;

/// Largest datagram a batch slot holds (the UDP maximum, since ChannelData
/// may carry up to 64 KiB).
const MAX_DATAGRAM: usize = 65_536;

/// Buffers shared by all the sockets of one worker: nothing awaits while
/// they are borrowed, so no socket or allocation needs its own.
struct WorkerBufs {
    batch: Box<[u8]>,
    out: Vec<u8>,
}

/// Frames queued for one TCP client before further ones are dropped (whole
/// frames, so the stream keeps its framing).
const TCP_QUEUE: usize = 512;

/// Sends `data` to a client over UDP or its TCP connection. Never waits:
/// a full socket buffer or queue drops the packet, as the network would.
fn to_client(w: &Worker, tuple: FiveTuple, data: &[u8]) {
    match tuple.transport {
        Transport::Udp => {
            if let Err(e) = w.udp.try_send_to(data, tuple.client) {
                w.send_drops.set(w.send_drops.get() + 1);
                debug!("send to client {}: {e}", tuple.client);
            }
        }
        Transport::Tcp => {
            if let Some(q) = w.tcp_clients.borrow().get(&tuple.client) {
                // The TCP path copies each frame into its queue; UDP, the
                // common case, does not.
                if q.try_send(data.to_vec()).is_err() {
                    w.send_drops.set(w.send_drops.get() + 1);
                }
            }
        }
    }
}

fn to_peer(w: &Worker, relay: RelayId, peer: SocketAddr, data: &[u8]) {
    let relays = w.relays.borrow();
    if let Some(r) = relays.sockets.get(&relay) {
        if let Err(e) = r.socket.try_send_to(data, peer) {
            w.send_drops.set(w.send_drops.get() + 1);
            debug!("relay send to {peer}: {e}");
        }
    }
}

/// Handles one client packet and carries out the answer.
fn client_packet(w: &Worker, tuple: FiveTuple, packet: &[u8], out: &mut Vec<u8>) {
    let action = {
        let mut server = w.server.borrow_mut();
        let mut relays = w.relays.borrow_mut();
        server.handle_client(Instant::now(), unix_now(), tuple, packet, out, &mut *relays)
    };
    match action {
        Action::None => {}
        Action::ToClient { tuple, data } => to_client(w, tuple, data),
        Action::ToPeer { relay, peer, data } => to_peer(w, relay, peer, data),
    }
}

/// Receives a batch of datagrams on `sock` (recvmmsg, and GRO where the
/// kernel has it) into the worker's shared batch buffers and hands each
/// datagram to `each`. Returns false when nothing was waiting.
fn recv_batch(
    w: &Worker,
    sock: &UdpSocket,
    state: &UdpSocketState,
    mut each: impl FnMut(&Worker, SocketAddr, &[u8], &mut Vec<u8>),
) -> bool {
    let mut bufs = w.bufs.borrow_mut();
    let WorkerBufs { batch, out } = &mut *bufs;
    let mut chunks = batch.chunks_exact_mut(MAX_DATAGRAM);
    let mut iovs: [IoSliceMut<'_>; BATCH] =
        std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("BATCH chunks")));
    let mut metas = [RecvMeta::default(); BATCH];
    let n = match sock.try_io(Interest::READABLE, || {
        state.recv(sock.into(), &mut iovs, &mut metas)
    }) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
        Err(e) => {
            // ICMP errors from earlier sends surface here on Linux.
            debug!("UDP recv: {e}");
            return true;
        }
    };
    for (iov, meta) in iovs.iter().zip(&metas).take(n) {
        let data = &iov[..meta.len];
        // With GRO one buffer may hold several datagrams of `stride` bytes.
        let stride = if meta.stride == 0 {
            meta.len.max(1)
        } else {
            meta.stride
        };
        for datagram in data.chunks(stride) {
            each(w, meta.addr, datagram, out);
        }
    }
    true
}

async fn udp_loop(w: Rc<Worker>) {
    let state = match UdpSocketState::new((&*w.udp).into()) {
        Ok(s) => s,
        Err(e) => {
            warn!("TURN UDP socket setup: {e}");
            return;
        }
    };
    let server_addr = w.local_addr;
    loop {
        if let Err(e) = w.udp.readable().await {
            warn!("TURN UDP socket: {e}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        for _ in 0..DRAIN_BUDGET {
            let got = recv_batch(&w, &w.udp, &state, |w, from, datagram, out| {
                let tuple = FiveTuple {
                    client: from,
                    server: server_addr,
                    transport: Transport::Udp,
                };
                client_packet(w, tuple, datagram, out);
            });
            if !got {
                break;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Waits on one relay socket. The task holds no buffer of its own (the
/// worker's batch buffers serve every socket), which keeps an allocation's
/// memory small.
async fn relay_loop(me: Weak<Worker>, id: RelayId, socket: Rc<UdpSocket>) {
    let Ok(state) = UdpSocketState::new((&*socket).into()) else {
        return;
    };
    loop {
        if socket.readable().await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let Some(w) = me.upgrade() else { return };
        for _ in 0..DRAIN_BUDGET {
            let got = recv_batch(&w, &socket, &state, |w, from, datagram, out| {
                let action =
                    w.server
                        .borrow_mut()
                        .handle_peer(Instant::now(), id, from, datagram, out);
                if let Action::ToClient { tuple, data } = action {
                    to_client(w, tuple, data);
                }
            });
            if !got {
                break;
            }
        }
        drop(w);
        tokio::task::yield_now().await;
    }
}

/// Reads STUN and ChannelData frames from one TCP client (RFC 8656 §5: the
/// frames sit back to back, ChannelData padded to 4 bytes).
async fn tcp_client(w: Rc<Worker>, stream: TcpStream) {
    let Ok(client) = stream.peer_addr() else {
        return;
    };
    let Ok(server_addr) = stream.local_addr() else {
        return;
    };
    let tuple = FiveTuple {
        client,
        server: server_addr,
        transport: Transport::Tcp,
    };
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
    w.tcp_clients.borrow_mut().insert(client, tx);
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    // Grows only as far as the largest frame this client sends, so an idle
    // TCP client costs a few KiB, not two 64 KiB buffers.
    let mut framer = Framer::new();
    'conn: loop {
        match rd.read(framer.read_buf()).await {
            Ok(0) | Err(_) => break,
            Ok(n) => framer.advance(n),
        }
        loop {
            match framer.pop() {
                Ok(Some(frame)) => {
                    // The worker's shared output buffer; nothing awaits while
                    // it is borrowed.
                    let mut bufs = w.bufs.borrow_mut();
                    client_packet(&w, tuple, frame.as_bytes(), &mut bufs.out);
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(%client, "TURN TCP framing lost: {e}");
                    break 'conn;
                }
            }
        }
    }
    w.tcp_clients.borrow_mut().remove(&client);
    writer.abort();
    let mut relays = w.relays.borrow_mut();
    w.server.borrow_mut().close_client(tuple, &mut *relays);
}
