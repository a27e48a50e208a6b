//! `switchboard bench signal`: WebSocket signaling load against
//! `switchboard serve` (protocol v1) or, with `--peerjs`, a PeerJS server
//! (npm `peer`).
//!
//! The bench opens N WebSockets, a few hundred at a time, spread over
//! source addresses 127.0.0.x when the server is on loopback (so no one
//! address runs out of ports), and groups them into rooms of K. Once all
//! are in, it reads the server's RSS (the per-connection figure is the
//! delta from before the first connect), then every peer sends ICE
//! candidate messages to the others in its room, round robin, so that all
//! together offer `--rate` messages per second. Each payload carries the
//! sender, a per-destination sequence number and the send time, so the
//! receiving end (in this process) measures relay latency, loss and
//! duplicates directly. Optional `--churn` keeps a separate pool of
//! connections coming and going during the traffic.
//!
//! Output: a human summary, then as the last stdout line one JSON object.

use super::hist::Histogram;
use super::procstat::{self, Sample, Usage};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Longest measured interval.
const MAX_RUN_SECS: f64 = 3600.0;
/// Longest wait for one connection's handshake and join.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the last messages after sending stops.
const DRAIN: Duration = Duration::from_secs(3);
/// Wait after the last connect before reading the server's RSS, so
/// allocations made just after the handshake are counted.
const SETTLE: Duration = Duration::from_millis(500);
/// PeerJS clients send a HEARTBEAT this often; the bench does the same.
const PEERJS_HEARTBEAT: Duration = Duration::from_secs(5);
/// File descriptors the bench keeps for itself beyond one per connection.
const SPARE_FDS: u64 = 64;
/// Connections per source address when spreading over 127.0.0.x (each
/// address has its own ephemeral port range): under serve's default
/// --max-connections-per-ip (256), so 250 addresses carry 50,000.
const PER_SOURCE_IP: u32 = 200;
/// A realistic trickled candidate, as browsers send them.
const CANDIDATE: &str = r#"{"candidate":"candidate:842163049 1 udp 1677729535 192.0.2.7 54321 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag Xq1v network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Xq1v"}"#;

#[derive(Args)]
pub struct SignalArgs {
    /// Signaling server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// Speak the PeerJS server protocol (npm `peer`) instead of switchboard
    /// protocol v1.
    #[arg(long)]
    peerjs: bool,
    /// The PeerJS server's --path; its WebSocket is at PATH/peerjs.
    #[arg(long, value_name = "PATH", default_value = "/", requires = "peerjs")]
    peerjs_path: String,
    /// The PeerJS server's --key.
    #[arg(
        long,
        value_name = "KEY",
        default_value = "peerjs",
        requires = "peerjs"
    )]
    peerjs_key: String,
    /// WebSocket connections held open (churned ones included).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    connections: u32,
    /// Peers per room; messages go between peers of the same room. With
    /// --peerjs (no rooms) the bench groups peers the same way.
    #[arg(long, value_name = "K", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(2..=1000))]
    room_size: u32,
    /// Relayed messages per second offered by all peers together; 0 holds
    /// the connections idle for --duration.
    #[arg(long, value_name = "MSGS/S", default_value_t = 0.0)]
    rate: f64,
    /// Measured interval, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Connects and disconnects per second during the measured interval,
    /// on a separate pool of connections (each lives about 2 s) that take
    /// no part in the relayed traffic.
    #[arg(long, value_name = "CONNS/S")]
    churn: Option<f64>,
    /// The server's process id, when it runs on this machine: report its
    /// RSS per connection and its CPU time per relayed message (Linux
    /// /proc).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Handshakes in flight at once while connecting.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_concurrency: u32,
    /// Worker threads of the bench's runtime (default: CPU count).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// What every connection needs to know.
struct Ctx {
    server: SocketAddr,
    /// Source addresses to spread connections over; empty: let the OS pick.
    sources: Vec<IpAddr>,
    peerjs: Option<PeerJs>,
    /// Distinguishes this run's rooms and ids from an earlier run's.
    run: u32,
    room_size: u32,
    /// Connections 0..traffic take part in the relayed traffic.
    traffic: u32,
    /// Messages per second each traffic connection sends.
    per_conn_rate: f64,
    /// Send times are nanoseconds since this instant.
    base: Instant,
    stats: Stats,
}

struct PeerJs {
    path: String,
    key: String,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    /// Messages received out of sequence: a gap means an earlier one was
    /// lost (one TCP stream and one server keep each sender's order).
    gaps: AtomicU64,
    /// Server error messages (v1 `error`, PeerJS `ERROR`/`EXPIRE`/`LEAVE`).
    errors: AtomicU64,
    /// Connections that failed or were closed during the traffic.
    dropped: AtomicU64,
    /// Connections in their sending state right now: the drain waits for
    /// none before it counts what is still in flight.
    sending: AtomicU64,
    latency: Mutex<Option<Histogram>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Connecting,
    Sending,
    Draining,
    Stop,
}

fn check(args: &SignalArgs) -> Result<()> {
    if !(args.duration.is_finite() && args.duration >= 0.1 && args.duration <= MAX_RUN_SECS) {
        bail!(
            "--duration must be between 0.1 and {MAX_RUN_SECS} seconds, got {}",
            args.duration
        );
    }
    if !(args.rate.is_finite() && args.rate >= 0.0 && args.rate <= 10_000_000.0) {
        bail!("--rate must be 0 or a positive number of messages per second");
    }
    if let Some(c) = args.churn {
        if !(c.is_finite() && c > 0.0 && c <= 100_000.0) {
            bail!("--churn must be a positive number of connections per second, got {c}");
        }
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    procstat::check_server_pid(args.server_pid)?;
    if let Some(limit) = fd_limit() {
        let need = u64::from(args.connections) + SPARE_FDS;
        if need > limit {
            bail!(
                "--connections {} needs about {need} file descriptors but this process may open \
                 {limit} (`ulimit -n`); run several benches side by side, each with a share",
                args.connections
            );
        }
    }
    Ok(())
}

/// The soft RLIMIT_NOFILE of this process, from /proc.
fn fd_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub fn run(args: SignalArgs) -> Result<()> {
    check(&args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

/// 127.0.0.1, .2, ... enough that each holds at most [`PER_SOURCE_IP`]
/// connections; none when the server is not on IPv4 loopback.
fn source_ips(server: SocketAddr, connections: u32) -> Vec<IpAddr> {
    if !server.ip().is_loopback() || !server.is_ipv4() {
        return Vec::new();
    }
    let n = connections.div_ceil(PER_SOURCE_IP).clamp(1, 250);
    (1..=n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect()
}

type Ws = WebSocketStream<TcpStream>;

/// Small buffers: the bench holds as many connections as the server and
/// should not need gigabytes for them. Reads still grow to any frame size.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// The incoming messages the bench looks at; everything else is ignored.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    /// v1 `signal`.
    data: Option<Probe>,
    /// PeerJS `CANDIDATE`.
    payload: Option<Probe>,
}

#[derive(Deserialize)]
struct Probe {
    /// [sender index, sequence number, send time in ns since `Ctx::base`].
    bench: Option<[u64; 3]>,
}

/// Opens connection `idx` (TCP, WebSocket handshake, join) and returns once
/// the server has admitted it.
async fn open(ctx: &Ctx, idx: u32, id: &str, room: &str) -> Result<Ws> {
    let tcp = match ctx.sources.get(idx as usize % ctx.sources.len().max(1)) {
        Some(&ip) => {
            let s = TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding {ip}"))?;
            s.connect(ctx.server).await
        }
        None => TcpStream::connect(ctx.server).await,
    }
    .with_context(|| format!("connecting to {}", ctx.server))?;
    tcp.set_nodelay(true)?;
    let url = match &ctx.peerjs {
        None => format!("ws://{}/v1/ws", ctx.server),
        Some(p) => {
            let slash = if p.path.ends_with('/') { "" } else { "/" };
            format!(
                "ws://{}{}{slash}peerjs?key={}&id={id}&token=t{idx}",
                ctx.server, p.path, p.key
            )
        }
    };
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .context("WebSocket handshake")?;
    if ctx.peerjs.is_none() {
        let join = format!(r#"{{"type":"join","room":"{room}","peer":"{id}"}}"#);
        ws.send(Message::text(join)).await?;
    }
    let want = if ctx.peerjs.is_some() {
        "OPEN"
    } else {
        "welcome"
    };
    loop {
        let Some(msg) = ws.next().await else {
            bail!("server closed the connection before admitting it")
        };
        if let Message::Text(t) = msg? {
            let m: Incoming = serde_json::from_str(t.as_str())
                .with_context(|| format!("unexpected message: {}", t.as_str()))?;
            if m.kind == want {
                return Ok(ws);
            }
            if matches!(m.kind, "error" | "ERROR" | "ID-TAKEN") {
                bail!("refused: {}", t.as_str());
            }
        }
    }
}

fn peer_id(ctx: &Ctx, idx: u32) -> String {
    match ctx.peerjs {
        // PeerJS ids are global: make them unique per run.
        Some(_) => format!("b{}-{idx}", ctx.run),
        None => format!("p{idx}"),
    }
}

/// One traffic connection: sends to its room mates at its share of the rate
/// and checks what arrives from them, until the phase is `Stop`.
async fn traffic_conn(ctx: Arc<Ctx>, idx: u32, mut ws: Ws, mut phase: watch::Receiver<Phase>) {
    let k = ctx.room_size;
    let room_base = idx / k * k;
    let members = k.min(ctx.traffic - room_base);
    let me = idx - room_base;
    // Per room mate (indexed by position in the room): next sequence number
    // to send, and next expected from it.
    let mut next_out = vec![0u64; members as usize];
    let mut next_in = vec![0u64; members as usize];
    let mut turn = 0u32;
    let sends = members > 1 && ctx.per_conn_rate > 0.0;
    let period = Duration::from_secs_f64(if sends {
        1.0 / ctx.per_conn_rate
    } else {
        3600.0
    });
    // Spread the first sends over one period so the load is smooth.
    let phase_off = period.mul_f64(f64::from(idx % 997) / 997.0);
    let mut tick = tokio::time::interval_at(Instant::now() + phase_off, period);
    let sending_gauge = &ctx.stats.sending;
    let mut heartbeat = tokio::time::interval(PEERJS_HEARTBEAT);
    let peerjs = ctx.peerjs.is_some();
    let mut sending = false;
    let mut line = String::with_capacity(512);
    loop {
        tokio::select! {
            msg = ws.next() => {
                match msg {
                    Some(Ok(Message::Text(t))) => on_text(&ctx, room_base, members, &mut next_in, t.as_str()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        if *phase.borrow() != Phase::Stop {
                            ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
            _ = tick.tick(), if sending => {
                // Round robin over the room mates.
                turn = (turn + 1) % members;
                if turn == me {
                    turn = (turn + 1) % members;
                }
                let to = room_base + turn;
                let seq = next_out[turn as usize];
                next_out[turn as usize] += 1;
                let t = ctx.base.elapsed().as_nanos() as u64;
                line.clear();
                let body = &CANDIDATE[..CANDIDATE.len() - 1];
                let _ = match &ctx.peerjs {
                    None => write_fmt(&mut line, format_args!(
                        r#"{{"type":"signal","to":"p{to}","data":{body},"bench":[{idx},{seq},{t}]}}}}"#)),
                    Some(_) => write_fmt(&mut line, format_args!(
                        r#"{{"type":"CANDIDATE","dst":"b{}-{to}","payload":{body},"bench":[{idx},{seq},{t}]}}}}"#,
                        ctx.run)),
                };
                if ws.send(Message::text(line.as_str())).await.is_err() {
                    ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                ctx.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = heartbeat.tick(), if peerjs => {
                if ws.send(Message::text(r#"{"type":"HEARTBEAT"}"#)).await.is_err() {
                    ctx.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            changed = phase.changed() => {
                let p = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                let now_sending = p == Phase::Sending && sends;
                if now_sending && !sending {
                    // Ticks missed while connecting must not come as a burst.
                    tick.reset_at(Instant::now() + phase_off);
                    sending_gauge.fetch_add(1, Ordering::Relaxed);
                } else if sending && !now_sending {
                    sending_gauge.fetch_sub(1, Ordering::Relaxed);
                }
                sending = now_sending;
                if p == Phase::Stop {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                    break;
                }
            }
        }
    }
    if sending {
        sending_gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

fn write_fmt(s: &mut String, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
    std::fmt::Write::write_fmt(s, args)
}

fn on_text(ctx: &Ctx, room_base: u32, members: u32, next_in: &mut [u64], text: &str) {
    let Ok(m) = serde_json::from_str::<Incoming>(text) else {
        ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let probe = match m.kind {
        "signal" => m.data,
        "CANDIDATE" => m.payload,
        "error" | "ERROR" | "EXPIRE" | "LEAVE" => {
            ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => return,
    };
    let Some([from, seq, t]) = probe.and_then(|p| p.bench) else {
        ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = ctx.base.elapsed().as_nanos() as u64;
    let pos = from.wrapping_sub(u64::from(room_base));
    if pos >= u64::from(members) {
        ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let expected = &mut next_in[pos as usize];
    if seq < *expected {
        ctx.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if seq > *expected {
        ctx.stats.gaps.fetch_add(1, Ordering::Relaxed);
    }
    *expected = seq + 1;
    ctx.stats.received.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut h) = ctx.stats.latency.lock() {
        if let Some(h) = h.as_mut() {
            h.record(now.saturating_sub(t));
        }
    }
}

/// One churn connection: admitted, then held until told to go.
async fn churn_conn(ctx: Arc<Ctx>, idx: u32, id: String, go: oneshot::Receiver<()>) -> bool {
    let room = format!("b{}-{id}", ctx.run);
    let Ok(Ok(mut ws)) = tokio::time::timeout(CONNECT_TIMEOUT, open(&ctx, idx, &id, &room)).await
    else {
        return false;
    };
    tokio::select! {
        _ = go => {}
        _ = async { while let Some(Ok(_)) = ws.next().await {} } => return false,
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    true
}

async fn run_async(args: SignalArgs) -> Result<()> {
    let server = super::resolve_server(&args.server).await?;
    let n = args.connections;
    let k = args.room_size;
    // The churn pool: each churned connection lives about 2 s.
    let pool = args
        .churn
        .map_or(0, |c| ((c * 2.0).ceil() as u32).clamp(1, n / 2));
    let traffic = n - pool;
    let senders = if traffic % k == 1 {
        traffic - 1
    } else {
        traffic
    };
    let per_conn_rate = if senders > 0 {
        args.rate / f64::from(senders)
    } else {
        0.0
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_millis() % 1_000_000_000) as u32);
    let ctx = Arc::new(Ctx {
        server,
        sources: source_ips(server, n),
        peerjs: args.peerjs.then(|| PeerJs {
            path: args.peerjs_path.clone(),
            key: args.peerjs_key.clone(),
        }),
        run,
        room_size: k,
        traffic,
        per_conn_rate,
        base: Instant::now(),
        stats: Stats {
            latency: Mutex::new(Some(Histogram::new())),
            ..Stats::default()
        },
    });
    let protocol = if args.peerjs { "peerjs" } else { "v1" };
    if !args.peerjs && per_conn_rate > 50.0 {
        eprintln!(
            "warning: {per_conn_rate:.0} msgs/s per connection is above serve's default \
             --max-message-rate 50; expect rate-limited errors"
        );
    }
    let pid = args.server_pid;
    let rss = |p: Option<u32>| p.and_then(|p| procstat::rss_kib(&p.to_string()).ok());
    let rss_before = rss(pid);

    // Connect everything: traffic connections, then the churn pool.
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let t0 = Instant::now();
    let sem = Arc::new(Semaphore::new(args.connect_concurrency as usize));
    let connect_hist = Arc::new(Mutex::new(Histogram::new()));
    let mut connecting = JoinSet::new();
    for idx in 0..traffic {
        let (ctx, sem, hist) = (ctx.clone(), sem.clone(), connect_hist.clone());
        connecting.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let t = Instant::now();
            let id = peer_id(&ctx, idx);
            let room = format!("b{}-{}", ctx.run, idx / ctx.room_size);
            let ws = tokio::time::timeout(CONNECT_TIMEOUT, open(&ctx, idx, &id, &room))
                .await
                .map_err(|_| anyhow!("no admission within {CONNECT_TIMEOUT:?}"))
                .and_then(|r| r)
                .with_context(|| format!("connection {}", idx + 1))?;
            if let Ok(mut h) = hist.lock() {
                h.record(t.elapsed().as_nanos() as u64);
            }
            Ok::<_, anyhow::Error>((idx, ws))
        });
    }
    let progress = std::io::stderr().is_terminal() && n > 500;
    let mut conns = JoinSet::new();
    let mut first_err = None;
    let mut done = 0u32;
    while let Some(r) = connecting.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok((idx, ws)) => {
                conns.spawn(traffic_conn(ctx.clone(), idx, ws, phase_rx.clone()));
                done += 1;
            }
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    connecting.abort_all();
                }
            }
        }
        if progress && done.is_multiple_of(500) {
            eprint!("\rconnected {done}/{traffic}");
            let _ = std::io::stderr().flush();
        }
    }
    if progress {
        eprintln!();
    }
    if let Some(e) = first_err {
        let _ = phase_tx.send(Phase::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        return Err(e.context(format!("after {done} connections")));
    }
    let mut pool_conns: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let mut churners = JoinSet::new();
    let mut next_idx = traffic;
    for _ in 0..pool {
        let (tx, rx) = oneshot::channel();
        let idx = next_idx;
        next_idx += 1;
        let id = churn_id(&ctx, idx);
        churners.spawn(churn_conn(ctx.clone(), idx, id, rx));
        pool_conns.push_back(tx);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let connect_rate = f64::from(traffic) / connect_secs;
    tokio::time::sleep(SETTLE).await;
    let rss_connected = rss(pid);

    // The measured interval.
    let a = Sample::take(pid);
    let _ = phase_tx.send(Phase::Sending);
    let t_start = Instant::now();
    let end = t_start + Duration::from_secs_f64(args.duration);
    let mut churned = 0u64;
    if let Some(c) = args.churn {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / c));
        while Instant::now() < end {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(old) = pool_conns.pop_front() {
                        let _ = old.send(());
                    }
                    let (tx, rx) = oneshot::channel();
                    let idx = next_idx;
                    next_idx = next_idx.wrapping_add(1);
                    churners.spawn(churn_conn(ctx.clone(), idx, churn_id(&ctx, idx), rx));
                    pool_conns.push_back(tx);
                    churned += 1;
                }
                _ = tokio::time::sleep_until(end) => {}
                Some(_) = churners.join_next() => {}
            }
        }
    } else {
        tokio::time::sleep_until(end).await;
    }
    let _ = phase_tx.send(Phase::Draining);
    let send_secs = t_start.elapsed().as_secs_f64();
    let drain_until = Instant::now() + DRAIN;
    while Instant::now() < drain_until {
        let s = &ctx.stats;
        if s.sending.load(Ordering::Relaxed) == 0
            && s.received.load(Ordering::Relaxed) + s.duplicates.load(Ordering::Relaxed)
                >= s.sent.load(Ordering::Relaxed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Sample::take(pid);
    let usage = Usage::between(&a, &b, pid);
    let rss_end = usage.server_rss_kib;

    let _ = phase_tx.send(Phase::Stop);
    for tx in pool_conns.drain(..) {
        let _ = tx.send(());
    }
    let mut churn_failed = 0u64;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
        while let Some(r) = churners.join_next().await {
            churn_failed += u64::from(!matches!(r, Ok(true)));
        }
    })
    .await;

    let s = &ctx.stats;
    let sent = s.sent.load(Ordering::Relaxed);
    let received = s.received.load(Ordering::Relaxed);
    let duplicates = s.duplicates.load(Ordering::Relaxed);
    let loss = sent.saturating_sub(received);
    let hist = s
        .latency
        .lock()
        .ok()
        .and_then(|mut h| h.take())
        .unwrap_or_else(Histogram::new);
    let us = |ns: u64| ns as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        us(hist.quantile(0.5)),
        us(hist.quantile(0.99)),
        us(hist.quantile(0.999)),
        us(hist.max()),
    );
    let (c50, c99) = connect_hist
        .lock()
        .map(|h| (us(h.quantile(0.5)) / 1000.0, us(h.quantile(0.99)) / 1000.0))
        .unwrap_or((0.0, 0.0));
    let per_conn_kib = match (rss_before, rss_connected) {
        (Some(x), Some(y)) => Some((y as f64 - x as f64) / f64::from(n)),
        _ => None,
    };
    let cpu_us_per_msg = usage
        .server_cpu
        .filter(|_| received > 0)
        .map(|c| c * 1e6 / received as f64);

    println!("signaling benchmark: {server}, protocol {protocol}");
    println!(
        "  connected {traffic} in {connect_secs:.2} s ({connect_rate:.0}/s; admission p50 {c50:.1} ms, p99 {c99:.1} ms), rooms of {k}{}",
        if pool > 0 { format!(", plus a churn pool of {pool}") } else { String::new() }
    );
    if let (Some(x), Some(y)) = (rss_before, rss_connected) {
        println!(
            "  server RSS {x} KiB before, {y} KiB with all connected: {:.2} KiB per connection",
            per_conn_kib.unwrap_or(0.0)
        );
    }
    println!(
        "  relayed {received} of {sent} messages in {send_secs:.1} s ({:.0}/s offered {:.0}/s): loss {loss}, duplicates {duplicates}, gaps {}, errors {}, dropped connections {}",
        received as f64 / send_secs,
        args.rate,
        s.gaps.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
        s.dropped.load(Ordering::Relaxed),
    );
    if received > 0 {
        println!("  latency p50 {p50:.0} us, p99 {p99:.0} us, p99.9 {p999:.0} us, max {max:.0} us (sender to receiver)");
    }
    if let Some(c) = usage.server_cpu {
        println!(
            "  server CPU {c:.2} s{}",
            cpu_us_per_msg.map_or(String::new(), |u| format!(
                " = {u:.1} us per relayed message"
            ))
        );
    }
    if args.churn.is_some() {
        println!(
            "  churn: {churned} connects and disconnects, {churn_failed} failed; server RSS at end {} KiB",
            rss_end.map_or("?".into(), |r| r.to_string())
        );
    }
    println!(
        "  bench CPU {:.2} s{}",
        usage.bench_cpu,
        usage
            .steal_pct
            .map_or(String::new(), |p| format!(", steal {p:.1} %"))
    );
    let json = serde_json::json!({
        "bench": "signal",
        "protocol": protocol,
        "server": server.to_string(),
        "connections": n,
        "room_size": k,
        "connect_secs": connect_secs,
        "connect_rate": connect_rate,
        "connect_p50_ms": c50,
        "connect_p99_ms": c99,
        "server_rss_before_kib": rss_before,
        "server_rss_connected_kib": rss_connected,
        "server_rss_end_kib": rss_end,
        "rss_per_conn_kib": per_conn_kib,
        "rate": args.rate,
        "seconds": send_secs,
        "sent": sent,
        "received": received,
        "loss": loss,
        "duplicates": duplicates,
        "gaps": s.gaps.load(Ordering::Relaxed),
        "errors": s.errors.load(Ordering::Relaxed),
        "dropped": s.dropped.load(Ordering::Relaxed),
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p999,
        "max_us": max,
        "server_cpu_s": usage.server_cpu,
        "cpu_us_per_msg": cpu_us_per_msg,
        "bench_cpu_s": usage.bench_cpu,
        "steal_pct": usage.steal_pct,
        "churned": churned,
        "churn_failed": churn_failed,
    });
    println!("{json}");
    Ok(())
}

/// Churn connections are alone in their rooms (v1) or have ids of their
/// own (PeerJS).
fn churn_id(ctx: &Ctx, idx: u32) -> String {
    match ctx.peerjs {
        Some(_) => format!("b{}-c{idx}", ctx.run),
        None => format!("c{idx}"),
    }
}
