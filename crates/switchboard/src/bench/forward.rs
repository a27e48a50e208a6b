//! `switchboard bench udp-forward`: the physical limit under the TURN
//! relay. A bare forwarder that moves datagrams the way a relay does
//! (client → its own outbound socket → peer, and back), with the relay's
//! I/O (batched receive, [`udp::SendBatch`] sends) and no TURN logic: no
//! parsing, permissions, channels or budgets. What it costs per packet is
//! the floor the relay's own cost is measured against.
//!
//! Two roles:
//! - `--listen ADDR --to PEER` runs the forwarder (measure it with
//!   `--server-pid` from the load);
//! - `--server ADDR --echo PEER` runs the load: `--flows` client sockets
//!   pumping sequence-numbered datagrams through the forwarder to an echo
//!   socket at PEER, closed loop with `--window` in flight each, and reports
//!   round trips per second, loss, latency and the forwarder's CPU.

use super::hist::Histogram;
use super::procstat;
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use quinn_udp::UdpSocketState;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Bytes per queued datagram on the forwarder.
const SLOT: usize = 2048;
/// A datagram unanswered this long counts as lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(500);
/// Payload prefix: the sequence number (and room for a timestamp, as
/// `bench turn` sends).
const HEADER: usize = 16;

#[derive(Args)]
#[command(group(ArgGroup::new("role").required(true).args(["listen", "server"])))]
pub struct ForwardArgs {
    /// Run the forwarder on this address.
    #[arg(long, value_name = "ADDR", requires = "to")]
    listen: Option<SocketAddr>,
    /// The forwarder's destination: where every client's datagrams go
    /// (each client gets its own outbound socket, as a TURN allocation
    /// gets its relay socket).
    #[arg(long, value_name = "ADDR")]
    to: Option<SocketAddr>,
    /// Run the load against the forwarder at this address.
    #[arg(long, value_name = "ADDR", requires = "echo")]
    server: Option<SocketAddr>,
    /// The load's echo socket: the forwarder's --to.
    #[arg(long, value_name = "ADDR")]
    echo: Option<SocketAddr>,
    /// Client sockets (flows), each with its own outbound socket on the
    /// forwarder.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    flows: u32,
    /// Payload bytes per datagram (at least 16).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u32).range(HEADER as i64..=1400))]
    size: u32,
    /// Datagrams in flight per flow.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    window: u32,
    /// Measured interval, seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Traffic before the measured interval, seconds (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The forwarder's process id: its CPU time over the measured interval.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

pub fn run(args: ForwardArgs) -> Result<()> {
    for (name, v) in [("duration", args.duration), ("warmup", args.warmup)] {
        if !(v.is_finite() && (0.0..=3600.0).contains(&v)) || (name == "duration" && v < 0.1) {
            bail!("--{name} must be between 0.1 (0 for --warmup) and 3600 seconds, got {v}");
        }
    }
    super::procstat::check_server_pid(args.server_pid)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match (args.listen, args.to, args.server, args.echo) {
        (Some(listen), Some(to), _, _) => rt.block_on(forward(listen, to)),
        (_, _, Some(server), Some(echo)) => rt.block_on(load(&args, server, echo)),
        _ => bail!("give --listen and --to (the forwarder) or --server and --echo (the load)"),
    }
}

/// The forwarder: one thread, like one TURN worker.
async fn forward(listen: SocketAddr, to: SocketAddr) -> Result<()> {
    let (main, main_state) = bind(listen).with_context(|| format!("binding {listen}"))?;
    let main = Arc::new(main);
    println!("forwarding {} -> {to}", main.local_addr()?);
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = udp::batch_buffer(udp::MAX_BATCH);
    let mut out = udp::SendBatch::new(SLOT);
    loop {
        main.readable().await?;
        loop {
            // A run of one flow's datagrams goes out in one sendmmsg.
            let mut via: Option<Arc<UdpSocket>> = None;
            let mut failed = None;
            let r = udp::recv_batch(&main, &main_state, &mut buf, |d, bytes| {
                let sock = match flows.get(&d.source) {
                    Some(s) => s.clone(),
                    None => match open_flow(listen, d.source, main.clone()) {
                        Ok(s) => flows.entry(d.source).or_insert(s).clone(),
                        Err(e) => {
                            failed = Some(e);
                            return;
                        }
                    },
                };
                if via.as_ref().is_some_and(|v| !Arc::ptr_eq(v, &sock)) || out.is_full() {
                    if let Some(v) = via.take() {
                        out.flush(&v);
                    }
                }
                out.push(to, bytes);
                via = Some(sock);
            });
            if let Some(v) = via {
                out.flush(&v);
            }
            if let Some(e) = failed {
                return Err(e.context("opening a flow's socket"));
            }
            match r {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A flow's outbound socket, and the task that forwards what comes back
/// on it to the client.
fn open_flow(
    listen: SocketAddr,
    client: SocketAddr,
    main: Arc<UdpSocket>,
) -> Result<Arc<UdpSocket>> {
    let (sock, state) = bind(SocketAddr::new(listen.ip(), 0))?;
    let sock = Arc::new(sock);
    let back = sock.clone();
    tokio::spawn(async move {
        let mut buf = udp::batch_buffer(udp::MAX_BATCH);
        let mut out = udp::SendBatch::new(SLOT);
        while back.readable().await.is_ok() {
            loop {
                let r = udp::recv_batch(&back, &state, &mut buf, |_, bytes| {
                    if out.is_full() {
                        out.flush(&main);
                    }
                    out.push(client, bytes);
                });
                out.flush(&main);
                if !matches!(r, Ok(true)) {
                    break;
                }
            }
        }
    });
    Ok(sock)
}

fn bind(addr: SocketAddr) -> Result<(UdpSocket, UdpSocketState)> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    let state = UdpSocketState::new((&s).into())?;
    Ok((UdpSocket::from_std(s)?, state))
}

struct FlowStats {
    sent: u64,
    received: u64,
    hist: Histogram,
}

impl Default for FlowStats {
    fn default() -> Self {
        FlowStats {
            sent: 0,
            received: 0,
            hist: Histogram::new(),
        }
    }
}

/// The load: flows and the echo socket, on this thread.
async fn load(args: &ForwardArgs, server: SocketAddr, echo: SocketAddr) -> Result<()> {
    let echo_sock = UdpSocket::bind(echo)
        .await
        .with_context(|| format!("binding the echo socket {echo}"))?;
    let echo_task = tokio::spawn(super::pump::echo(echo_sock, args.size as usize));
    let base = Instant::now();
    let warm_end = base + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.duration);
    let echoed = Arc::new(AtomicU64::new(0));
    let mut flows = Vec::new();
    for _ in 0..args.flows {
        let sock = UdpSocket::bind(SocketAddr::new(server.ip(), 0)).await?;
        sock.connect(server).await?;
        flows.push(tokio::spawn(flow(
            sock,
            args.size as usize,
            args.window as usize,
            base,
            warm_end,
            end,
            echoed.clone(),
        )));
    }
    let sampler = procstat::sample_between(warm_end, end, args.server_pid);
    let mut total = FlowStats::default();
    for f in flows {
        let s = f.await.context("a flow task failed")??;
        total.sent += s.sent;
        total.received += s.received;
        total.hist.merge(&s.hist);
    }
    echo_task.abort();
    let usage = sampler.await.ok();
    if echoed.load(Ordering::Relaxed) == 0 {
        bail!("nothing came back through the forwarder at {server}");
    }
    let loss = if total.sent > 0 {
        total.sent.saturating_sub(total.received) as f64 / total.sent as f64
    } else {
        0.0
    };
    let pps = total.received as f64 / args.duration;
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let (p50, p99) = (us(total.hist.quantile(0.5)), us(total.hist.quantile(0.99)));
    println!("UDP forwarder benchmark: {server}");
    println!(
        "  load      {} flows x {} B, closed loop, window {}",
        args.flows, args.size, args.window
    );
    println!(
        "  relayed   {pps:.0} round trips/s, loss {:.4} %",
        loss * 100.0
    );
    println!("  latency   p50 {p50} us, p99 {p99} us (round trip)");
    let mut server_us_rt = None;
    let mut server_pkts_per_cpu_s = None;
    if let Some(c) = usage.as_ref().and_then(|u| u.server_cpu) {
        if total.received > 0 && c > 0.0 {
            let per = 1e6 * c / total.received as f64;
            server_us_rt = Some((per * 10.0).round() / 10.0);
            // Two forwarded datagrams per round trip, as for the relay.
            server_pkts_per_cpu_s = Some((2.0 * total.received as f64 / c).round());
            println!(
                "  server    {:.1} us CPU per round trip, {:.0} forwarded datagrams per CPU-second",
                per,
                2.0 * total.received as f64 / c
            );
        }
    }
    let json = serde_json::json!({
        "server": server.to_string(),
        "flows": args.flows,
        "size": args.size,
        "window": args.window,
        "duration": args.duration,
        "sent": total.sent,
        "received": total.received,
        "loss": loss,
        "pps": (pps * 10.0).round() / 10.0,
        "p50_us": p50,
        "p99_us": p99,
        "server_cpu_us_per_rt": server_us_rt,
        "server_datagrams_per_cpu_second": server_pkts_per_cpu_s,
    });
    println!("{json}");
    Ok(())
}

/// Slots for the send times of datagrams in flight; one still unanswered
/// when its slot comes round again counts as lost.
const RING: usize = 4096;
/// How often a flow expires what waited too long.
const TICK: Duration = Duration::from_millis(50);

/// One flow: closed loop, `window` datagrams in flight, each carrying its
/// sequence number; unanswered ones expire after [`LOSS_TIMEOUT`]. Nothing
/// is allocated per datagram, so the load costs little beside the
/// forwarder.
async fn flow(
    sock: UdpSocket,
    size: usize,
    window: usize,
    base: Instant,
    warm_end: Instant,
    end: Instant,
    echoed: Arc<AtomicU64>,
) -> Result<FlowStats> {
    let mut st = FlowStats::default();
    let mut payload = vec![0u8; size];
    let mut rbuf = vec![0u8; 2048];
    // Sequence number + 1 (0: free) and send time, per slot.
    let mut slot_seq = vec![0u64; RING];
    let mut slot_sent = vec![base; RING];
    let (mut next, mut oldest, mut inflight) = (0u64, 0u64, 0usize);
    let mut next_tick = base + TICK;
    tokio::time::sleep_until(base).await;
    loop {
        let now = Instant::now();
        if now >= end + LOSS_TIMEOUT || (now >= end && inflight == 0) {
            break;
        }
        if now >= next_tick {
            next_tick = now + TICK;
            while oldest < next {
                let i = (oldest % RING as u64) as usize;
                if slot_seq[i] == oldest + 1 {
                    if now.saturating_duration_since(slot_sent[i]) < LOSS_TIMEOUT {
                        break;
                    }
                    slot_seq[i] = 0;
                    inflight -= 1;
                }
                oldest += 1;
            }
        }
        while now < end && inflight < window {
            let i = (next % RING as u64) as usize;
            if slot_seq[i] != 0 {
                // Unanswered a whole ring later: lost.
                slot_seq[i] = 0;
                inflight -= 1;
            }
            payload[..8].copy_from_slice(&next.to_be_bytes());
            if sock.send(&payload).await.is_ok() {
                slot_seq[i] = next + 1;
                slot_sent[i] = now;
                inflight += 1;
                if now >= warm_end {
                    st.sent += 1;
                }
            }
            next += 1;
        }
        let wake = next_tick.min(if now < end { end } else { end + LOSS_TIMEOUT });
        match tokio::time::timeout_at(wake, sock.recv(&mut rbuf)).await {
            Ok(Ok(n)) if n == size => {
                let got = u64::from_be_bytes(rbuf[..8].try_into().unwrap_or_default());
                let i = (got % RING as u64) as usize;
                if slot_seq[i] == got.wrapping_add(1) {
                    slot_seq[i] = 0;
                    inflight -= 1;
                    echoed.fetch_add(1, Ordering::Relaxed);
                    let sent = slot_sent[i];
                    if sent >= warm_end && sent < end {
                        st.received += 1;
                        st.hist.record(
                            Instant::now().saturating_duration_since(sent).as_nanos() as u64
                        );
                    }
                }
            }
            // The forwarder not up yet (ICMP), a stray datagram, or the
            // tick: carry on.
            _ => {}
        }
    }
    Ok(st)
}
