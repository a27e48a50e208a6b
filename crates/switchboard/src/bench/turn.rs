//! `switchboard bench turn`: relayed-traffic load against a TURN server.
//!
//! For each of N allocations the bench opens its own client transport (UDP
//! or TCP) and drives a [`turn::client::Client`] over it: long-term
//! authentication, Allocate, a UDP echo peer on the client's own IP, a
//! CreatePermission and a ChannelBind (channel 0x4000, valid for RFC 5766
//! and RFC 8656 servers alike) to that peer; then it pumps ChannelData
//! through the relay and back. Each payload carries a sequence number and
//! a send timestamp, so one process sees both ends and measures round trips
//! directly.
//!
//! Output: a human summary, then as the last stdout line one JSON object
//! (`pps`, `loss`, `p50_us`, `p99_us`, ...). With `--hold SECS` it only
//! creates the allocations, holds them idle (for memory measurements) and
//! releases them.

use super::client::{stun_code, Conn, Credentials, Session};
use super::hist::Histogram;
use super::procstat;
use super::pump::{self, Plan, Stats, MIN_PAYLOAD, RING};
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest run (the client refreshes what it holds while pumping).
const MAX_RUN_SECS: f64 = 3600.0;
/// Longest --hold: idle allocations are not refreshed, and permissions
/// last 300 s.
const MAX_HOLD_SECS: f64 = 280.0;
/// Allocations set up at once.
const SETUP_CONCURRENCY: usize = 32;
/// Longest wait for the last echoes after the measured interval.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Args)]
#[command(group(ArgGroup::new("credentials").required(true).args(["user", "secret"])))]
pub struct TurnArgs {
    /// TURN server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// Use TCP between the bench and the server (default UDP). Relayed
    /// transport to the peers is UDP either way.
    #[arg(long)]
    tcp: bool,
    /// Long-term credential user name.
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password for --user.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Shared secret for time-limited (REST API) credentials: the bench
    /// mints `EXPIRY:bench` / base64(HMAC-SHA1(secret, username)).
    #[arg(long, conflicts_with_all = ["user", "password"])]
    secret: Option<String>,
    /// Number of allocations, each with its own client transport and peer.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    allocations: u32,
    /// ChannelData payload bytes per packet (at least 16: sequence number
    /// and timestamp).
    #[arg(long, value_name = "BYTES", required_unless_present = "hold",
          value_parser = clap::value_parser!(u32).range(MIN_PAYLOAD as i64..=65000))]
    size: Option<u32>,
    /// Packets per second per allocation. Default: as fast as the echoes
    /// come back, with at most --window packets in flight per allocation.
    #[arg(long, value_name = "PPS")]
    rate: Option<f64>,
    /// Packets in flight per allocation, at most.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=(RING as i64 / 2)))]
    window: u32,
    /// Measured interval, seconds.
    #[arg(long, value_name = "SECS", required_unless_present = "hold")]
    duration: Option<f64>,
    /// Traffic before the measured interval, seconds (not counted).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    warmup: f64,
    /// Only create the allocations (with a permission and a channel each),
    /// hold them idle this many seconds, then release them. Prints
    /// "holding N allocations" when they are all up.
    #[arg(long, value_name = "SECS", conflicts_with_all = ["size", "rate", "duration"])]
    hold: Option<f64>,
    /// Worker threads of the bench's runtime (default: CPU count).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The TURN server's process id, when it runs on this machine: report
    /// its CPU time (utime+stime, all threads) over the measured interval,
    /// per round trip, and its RSS (Linux /proc). With --hold, its RSS
    /// while the allocations are held.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// A switchboard server's HTTP address (HOST:PORT, plain http): read
    /// its `/metrics` at both edges of the measured interval and report how
    /// many packets its bandwidth caps dropped, which are part of `loss`.
    /// The counters are copied from the relay workers once a second, so
    /// each edge is good to about a second.
    #[arg(long, value_name = "HOST:PORT")]
    server_metrics: Option<SocketAddr>,
}

fn check(args: &TurnArgs) -> Result<()> {
    let secs = |name: &str, v: f64, min: f64, max: f64| -> Result<()> {
        if !(v.is_finite() && v >= min && v <= max) {
            bail!("--{name} must be between {min} and {max} seconds, got {v}");
        }
        Ok(())
    };
    if let Some(d) = args.duration {
        secs("duration", d, 0.1, MAX_RUN_SECS)?;
        secs("warmup", args.warmup, 0.0, MAX_RUN_SECS)?;
    }
    if let Some(h) = args.hold {
        secs("hold", h, 0.0, MAX_HOLD_SECS)?;
    }
    if let Some(r) = args.rate {
        if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
            bail!("--rate must be a positive number of packets per second, got {r}");
        }
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    procstat::check_server_pid(args.server_pid)?;
    Ok(())
}

pub fn run(args: TurnArgs) -> Result<()> {
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

/// One allocation ready for traffic.
struct Ready {
    index: u32,
    session: Session,
    /// The echo peer's address, where the channel leads.
    peer: SocketAddr,
    /// The echo peer's socket; `None` in --hold mode (one shared peer).
    peer_sock: Option<UdpSocket>,
}

fn credentials(args: &TurnArgs) -> Result<Arc<Credentials>> {
    if let Some(secret) = &args.secret {
        return Ok(Arc::new(Credentials::Secret(secret.clone())));
    }
    match (&args.user, &args.password) {
        (Some(u), Some(p)) => Ok(Arc::new(Credentials::User {
            user: u.clone(),
            password: p.clone(),
        })),
        _ => bail!("give --user and --password, or --secret"),
    }
}

async fn setup_one(
    index: u32,
    server: SocketAddr,
    tcp: bool,
    creds: Arc<Credentials>,
    shared_peer: Option<SocketAddr>,
) -> Result<Ready> {
    // A 437 to an Allocate means the server still holds an allocation for
    // this 5-tuple (say, released by an earlier run moments ago, on a local
    // port the OS has now handed out again); RFC 8656 tells the client to
    // pick another client address and retry. The refused sockets stay open
    // until then so the port is not reused.
    let mut refused = Vec::new();
    let mut session = loop {
        let mut session = Session::connect(server, tcp, &creds).await?;
        match session.allocate().await {
            Ok(_) => break session,
            Err(e)
                if stun_code(&e) == Some(stun::code::ALLOCATION_MISMATCH) && refused.len() < 3 =>
            {
                refused.push(session)
            }
            Err(e) => return Err(e),
        }
    };
    drop(refused);
    let local_ip = session.conn.local_addr().ip();
    let setup = async {
        let (peer_sock, peer) = match shared_peer {
            Some(a) => (None, a),
            None => {
                let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0))
                    .await
                    .context("binding an echo peer socket (raise `ulimit -n`?)")?;
                let a = sock.local_addr()?;
                (Some(sock), a)
            }
        };
        session.create_permission(peer.ip()).await?;
        session.bind_channel(peer).await?;
        Ok::<_, anyhow::Error>((peer_sock, peer))
    };
    match setup.await {
        Ok((peer_sock, peer)) => Ok(Ready {
            index,
            session,
            peer,
            peer_sock,
        }),
        Err(e) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), session.release()).await;
            Err(e)
        }
    }
}

/// Creates every allocation: the first alone (so a wrong password or a
/// missing server fails fast, once), the rest a few dozen at a time. On any
/// failure releases what was created and returns the first error.
async fn setup_all(
    args: &TurnArgs,
    server: SocketAddr,
    creds: Arc<Credentials>,
    shared_peer: Option<SocketAddr>,
) -> Result<Vec<Ready>> {
    let n = args.allocations;
    let first = setup_one(0, server, args.tcp, creds.clone(), shared_peer)
        .await
        .context("allocation 1")?;
    let mut ready = Vec::with_capacity(n as usize);
    ready.push(first);
    let sem = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut set = JoinSet::new();
    for i in 1..n {
        let (sem, creds, tcp) = (sem.clone(), creds.clone(), args.tcp);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            setup_one(i, server, tcp, creds, shared_peer)
                .await
                .with_context(|| format!("allocation {}", i + 1))
        });
    }
    let mut first_err = None;
    let progress = std::io::stderr().is_terminal() && n > 100;
    while let Some(r) = set.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(r) => ready.push(r),
            // Let the others finish (each is bounded in time) so that
            // every allocation made gets released below.
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        if progress && first_err.is_none() {
            eprint!("\rallocations: {}/{n}", ready.len());
        }
    }
    if progress {
        eprintln!();
    }
    if let Some(e) = first_err {
        release_all(&mut ready).await;
        return Err(e);
    }
    ready.sort_by_key(|r| r.index);
    Ok(ready)
}

/// Deletes every allocation (best effort, bounded in time); says on
/// stderr how many the server did not confirm.
async fn release_all(ready: &mut Vec<Ready>) {
    let total = ready.len();
    let mut set = JoinSet::new();
    for r in ready.drain(..) {
        let mut session = r.session;
        set.spawn(async move {
            matches!(
                tokio::time::timeout(Duration::from_secs(3), session.release()).await,
                Ok(Ok(()))
            )
        });
    }
    let mut released = 0;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(r) = set.join_next().await {
            released += usize::from(matches!(r, Ok(true)));
        }
    })
    .await;
    if released < total {
        eprintln!(
            "warning: {} of {total} allocations were not confirmed released",
            total - released
        );
    }
}

async fn run_async(args: TurnArgs) -> Result<()> {
    let server = super::resolve_server(&args.server).await?;
    let creds = credentials(&args)?;
    let transport = if args.tcp { "tcp" } else { "udp" };
    let t_setup = Instant::now();

    if let Some(hold) = args.hold {
        // One echo peer address for all: nothing is sent in this mode.
        let probe = Conn::connect(server, args.tcp).await?;
        let peer_sock = UdpSocket::bind(SocketAddr::new(probe.local_addr().ip(), 0)).await?;
        drop(probe);
        let mut ready = setup_all(&args, server, creds, Some(peer_sock.local_addr()?)).await?;
        let setup_ms = t_setup.elapsed().as_secs_f64() * 1000.0;
        println!(
            "holding {} allocations on {server} over {transport} for {hold} s (set up in {setup_ms:.0} ms)",
            ready.len()
        );
        // Let the server settle, then read its RSS while all are held.
        let settle = hold.min(1.0);
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
        let rss = args
            .server_pid
            .and_then(|p| procstat::rss_kib(&p.to_string()).ok());
        if let Some(kib) = rss {
            println!("  server RSS while holding: {kib} KiB");
        }
        tokio::time::sleep(Duration::from_secs_f64(hold - settle)).await;
        release_all(&mut ready).await;
        let json = serde_json::json!({
            "mode": "hold",
            "server": server.to_string(),
            "transport": transport,
            "allocations": args.allocations,
            "hold_s": hold,
            "setup_ms": (setup_ms * 10.0).round() / 10.0,
            "server_rss_kib": rss,
        });
        println!("{json}");
        return Ok(());
    }

    let size = args.size.unwrap_or(MIN_PAYLOAD as u32) as usize;
    let duration = args.duration.unwrap_or(1.0);
    let mut ready = setup_all(&args, server, creds, None).await?;
    let setup_ms = t_setup.elapsed().as_secs_f64() * 1000.0;
    eprintln!(
        "{} allocations on {server} over {transport} set up in {setup_ms:.0} ms; {} s warm-up, {} s measured",
        ready.len(),
        args.warmup,
        duration
    );

    let base = Instant::now();
    let start = base + Duration::from_millis(50);
    let warm_end = start + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(duration);
    let plan = Arc::new(Plan {
        base,
        start,
        warm_end,
        end,
        drain: DRAIN,
        size,
        window: args.window as usize,
        rate: args.rate,
    });
    let progress = Arc::new(AtomicU64::new(0));

    let mut peers = Vec::with_capacity(ready.len());
    let mut pumps = JoinSet::new();
    let n = ready.len();
    for (i, mut r) in ready.drain(..).enumerate() {
        if let Some(sock) = r.peer_sock.take() {
            peers.push(tokio::spawn(pump::echo(sock, size)));
        }
        let (plan, progress) = (plan.clone(), progress.clone());
        let phase = i as f64 / n as f64;
        pumps.spawn(async move {
            let res = pump::pump(&mut r.session, r.peer, &plan, phase, &progress).await;
            (r, res)
        });
    }

    let ticker = std::io::stderr().is_terminal().then(|| {
        let (progress, end) = (progress.clone(), end);
        tokio::spawn(async move {
            let mut last = 0;
            let mut iv =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            loop {
                let t = iv.tick().await;
                if t > end {
                    break;
                }
                let now = progress.load(Ordering::Relaxed);
                let phase = if t <= warm_end {
                    "warm-up"
                } else {
                    "measuring"
                };
                eprint!(
                    "\r{phase:>9} {:5.1} s  {:>9} pkts/s   ",
                    (t - start).as_secs_f64(),
                    now - last
                );
                let _ = std::io::stderr().flush();
                last = now;
            }
            eprintln!();
        })
    });

    // CPU and memory at the exact edges of the measured interval.
    let sampler = procstat::sample_between(warm_end, end, args.server_pid);

    // The caps' drop counters, a little after each edge: the server copies
    // them from its workers once a second.
    let metrics_at = args.server_metrics;
    let cap_sampler = tokio::spawn(async move {
        let at = metrics_at?;
        let lag = Duration::from_millis(1100);
        tokio::time::sleep_until(warm_end + lag).await;
        let a = cap_drops(at).await.ok()?;
        tokio::time::sleep_until(end + lag).await;
        let b = cap_drops(at).await.ok()?;
        Some((b.0.saturating_sub(a.0), b.1.saturating_sub(a.1)))
    });

    let mut total = Stats::default();
    let mut hist = Histogram::new();
    let mut first_err = None;
    while let Some(joined) = pumps.join_next().await {
        let (r, res) = joined.context("a pump task failed")?;
        ready.push(r);
        match res {
            Ok(s) => {
                total.sent += s.sent;
                total.received += s.received;
                total.sent_total += s.sent_total;
                total.received_total += s.received_total;
                total.expired += s.expired;
                total.unmatched += s.unmatched;
                if let Some(h) = &s.hist {
                    hist.merge(h);
                }
            }
            Err(e) if first_err.is_none() => first_err = Some(e.context("relaying traffic")),
            Err(_) => {}
        }
    }
    if let Some(t) = ticker {
        t.abort();
        let _ = t.await;
    }
    for p in &peers {
        p.abort();
    }
    let usage = sampler.await.ok();
    let caps = if args.server_metrics.is_some() {
        match cap_sampler.await.ok().flatten() {
            Some(c) => Some(c),
            None => bail!("could not read /metrics at --server-metrics"),
        }
    } else {
        None
    };
    release_all(&mut ready).await;
    if let Some(e) = first_err {
        return Err(e);
    }

    let loss = if total.sent > 0 {
        (total.sent.saturating_sub(total.received)) as f64 / total.sent as f64
    } else {
        0.0
    };
    let pps = total.received as f64 / duration;
    let us = |q: f64| (hist.quantile(q) as f64 / 100.0).round() / 10.0;
    let (p50, p99, p999, max) = (
        us(0.5),
        us(0.99),
        us(0.999),
        (hist.max() as f64 / 100.0).round() / 10.0,
    );
    let mbit = pps * size as f64 * 8.0 / 1e6;

    println!("TURN relay benchmark: {server} over {transport}");
    println!(
        "  load      {} allocations x {size} B payload, {}, window {}",
        args.allocations,
        args.rate
            .map_or("closed loop".to_string(), |r| format!("{r} pkts/s each")),
        args.window
    );
    println!(
        "  interval  {duration} s measured after {} s warm-up",
        args.warmup
    );
    println!("  relayed   {pps:.0} round trips/s ({mbit:.1} Mbit/s of payload each way)");
    println!(
        "  packets   {} sent, {} echoed back, loss {:.4} %",
        total.sent,
        total.received,
        loss * 100.0
    );
    if let Some((alloc, server)) = caps {
        println!(
            "  caps      {alloc} packets dropped by the per-allocation cap, {server} by the server's (part of the loss)"
        );
    }
    println!("  latency   p50 {p50} us, p99 {p99} us, p99.9 {p999} us, max {max} us (round trip)");
    let pct = |cpu: f64, secs: f64| {
        if secs > 0.0 {
            (1000.0 * cpu / secs).round() / 10.0
        } else {
            0.0
        }
    };
    let per_rt = |cpu: f64| {
        if total.received > 0 {
            (1e7 * cpu / total.received as f64).round() / 10.0
        } else {
            0.0
        }
    };
    let (mut server_cpu_pct, mut server_us_rt, mut server_rss, mut bench_cpu_pct, mut steal_pct) =
        (None, None, None, None, None);
    if let Some(u) = usage {
        bench_cpu_pct = Some(pct(u.bench_cpu, u.seconds));
        steal_pct = u.steal_pct.map(|s| (s * 10.0).round() / 10.0);
        if let Some(c) = u.server_cpu {
            server_cpu_pct = Some(pct(c, u.seconds));
            server_us_rt = Some(per_rt(c));
            server_rss = u.server_rss_kib;
            println!(
                "  server    {:.1} % of one core, {:.1} us CPU per round trip, RSS {} KiB",
                pct(c, u.seconds),
                per_rt(c),
                u.server_rss_kib.unwrap_or(0)
            );
        }
        println!(
            "  bench     {:.1} % of one core; {:.1} % of the machine's CPU time stolen by the hypervisor",
            pct(u.bench_cpu, u.seconds),
            u.steal_pct.unwrap_or(0.0)
        );
    }
    if total.unmatched > 0 {
        println!(
            "  note      {} echoes arrived after being counted lost or were not ours",
            total.unmatched
        );
    }
    let json = serde_json::json!({
        "server": server.to_string(),
        "transport": transport,
        "allocations": args.allocations,
        "size": size,
        "rate": args.rate,
        "window": args.window,
        "duration": duration,
        "warmup": args.warmup,
        "sent": total.sent,
        "received": total.received,
        "loss": loss,
        "pps": (pps * 10.0).round() / 10.0,
        "p50_us": p50,
        "p99_us": p99,
        "p999_us": p999,
        "max_us": max,
        "setup_ms": (setup_ms * 10.0).round() / 10.0,
        "server_cpu_pct": server_cpu_pct,
        "server_cpu_us_per_rt": server_us_rt,
        "server_rss_kib": server_rss,
        "bench_cpu_pct": bench_cpu_pct,
        "steal_pct": steal_pct,
        "cap_drops": caps.map(|(a, s)| serde_json::json!({"allocation": a, "server": s})),
    });
    println!("{json}");
    if total.received == 0 {
        bail!(
            "no packets came back through the relay (sent {})",
            total.sent
        );
    }
    Ok(())
}

/// The server's drop counters for its two bandwidth caps: (per
/// allocation, whole server), from `/metrics` over plain HTTP.
async fn cap_drops(at: SocketAddr) -> Result<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(at))
        .await
        .context("connecting to --server-metrics")??;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_string(&mut body))
        .await
        .context("reading /metrics")??;
    Ok((
        metric(
            &body,
            "switchboard_turn_dropped_packets_total{reason=\"bandwidth\"}",
        ),
        metric(
            &body,
            "switchboard_turn_dropped_packets_total{reason=\"total_bandwidth\"}",
        ),
    ))
}

/// The value of the sample `name` (with its labels) in a Prometheus text
/// exposition; 0 when absent.
fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cap_drop_counters_are_read_from_the_exposition() {
        let body = "# HELP x\nswitchboard_turn_dropped_packets_total{reason=\"bandwidth\"} 12\nswitchboard_turn_dropped_packets_total{reason=\"total_bandwidth\"} 3\n";
        let b = "switchboard_turn_dropped_packets_total{reason=\"bandwidth\"}";
        let t = "switchboard_turn_dropped_packets_total{reason=\"total_bandwidth\"}";
        assert_eq!(super::metric(body, b), 12);
        assert_eq!(super::metric(body, t), 3);
        assert_eq!(super::metric("", b), 0);
    }
}
