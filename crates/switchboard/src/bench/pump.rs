//! The packet loop of one allocation: send ChannelData carrying a sequence
//! number and a send timestamp, receive the echoes relayed back, and keep
//! at most `window` packets in flight. Everything it needs is allocated
//! before the loop starts; the TURN client frames each payload into its
//! reused transmit buffer. The client's timers (refreshes of the
//! allocation, permission and channel) are served every tick, so runs may
//! outlast the 300 s permission lifetime.

use super::client::{failure, Session, MAX_FRAME};
use super::hist::Histogram;
use anyhow::{anyhow, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use turn::client::Event;

/// Slots for outstanding sequence numbers. A packet still unanswered when
/// its slot is needed again (RING packets later) counts as lost.
pub const RING: usize = 4096;
/// A packet unanswered for this long counts as lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(500);
/// Housekeeping period (expiring lost packets, noticing phase changes).
const TICK: Duration = Duration::from_millis(50);
/// Payload prefix: sequence number and send time, both u64 big-endian.
pub const MIN_PAYLOAD: usize = 16;

/// When and how hard to pump; shared by every allocation.
pub struct Plan {
    /// Timestamps in payloads are nanoseconds since this instant.
    pub base: Instant,
    pub start: Instant,
    pub warm_end: Instant,
    pub end: Instant,
    /// Longest wait for the last echoes after `end`.
    pub drain: Duration,
    pub size: usize,
    pub window: usize,
    /// Packets per second for this allocation; `None` = closed loop.
    pub rate: Option<f64>,
}

#[derive(Default)]
pub struct Stats {
    /// Sent during the measured interval.
    pub sent: u64,
    /// Echoes received of packets sent during the measured interval.
    pub received: u64,
    pub sent_total: u64,
    pub received_total: u64,
    /// Declared lost (timeout or ring reuse) while in flight.
    pub expired: u64,
    /// Echoes that matched no outstanding packet (late after expiry,
    /// duplicated) or had the wrong size.
    pub unmatched: u64,
    pub hist: Option<Histogram>,
}

fn ns_since(base: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(base).as_nanos() as u64
}

/// Runs one allocation's traffic from `plan.start` until `plan.end` (plus
/// the drain). With a rate, the first packet leaves at `phase` (0..1) of
/// the interval, so that allocations do not all send in the same instant.
/// `progress` counts every echo received, for the progress line.
pub async fn pump(
    s: &mut Session,
    peer: SocketAddr,
    plan: &Plan,
    phase: f64,
    progress: &AtomicU64,
) -> Result<Stats> {
    let mut payload = vec![0u8; plan.size];
    for (i, b) in payload.iter_mut().enumerate().skip(MIN_PAYLOAD) {
        *b = i as u8;
    }
    let (server, tcp) = (s.conn.server(), s.conn.is_tcp());
    let mut rbuf = vec![0u8; MAX_FRAME];
    let mut slot_seq = vec![0u64; RING].into_boxed_slice();
    let mut slot_ts = vec![0u64; RING].into_boxed_slice();
    let mut hist = Histogram::new();
    let mut st = Stats::default();

    let warm_ns = ns_since(plan.base, plan.warm_end);
    let end_ns = ns_since(plan.base, plan.end);
    let measured = |ts: u64| ts >= warm_ns && ts < end_ns;
    let timeout_ns = LOSS_TIMEOUT.as_nanos() as u64;
    let drain_end = plan.end + plan.drain;
    let interval = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));

    let mut next_seq: u64 = 0;
    let mut oldest: u64 = 0;
    let mut inflight: usize = 0;
    let mut next_send =
        plan.start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(phase.clamp(0.0, 1.0)));
    let mut next_tick = plan.start + TICK;
    let mut deadline = plan.start;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    sleep.as_mut().await;

    loop {
        let now = Instant::now();
        let now_ns = ns_since(plan.base, now);
        if now >= next_tick {
            next_tick = now + TICK;
            // The TURN client's own timers: retransmissions and refreshes.
            if s.client
                .poll_timeout()
                .is_some_and(|t| Instant::from_std(t) <= now)
            {
                s.client.handle_timeout(now.into_std());
                s.flush().await?;
            }
            while let Some(ev) = s.client.poll_event() {
                if let Event::Failed { op, code, reason } = ev {
                    return Err(failure(op, code, &reason).context("during the run"));
                }
            }
            // Expire the oldest packets that are overdue.
            while oldest < next_seq {
                let i = (oldest % RING as u64) as usize;
                if slot_seq[i] == oldest + 1 {
                    if now_ns.saturating_sub(slot_ts[i]) < timeout_ns {
                        break;
                    }
                    slot_seq[i] = 0;
                    inflight -= 1;
                    st.expired += 1;
                }
                oldest += 1;
            }
        }
        if now < plan.end {
            while inflight < plan.window {
                if let Some(iv) = interval {
                    if next_send > now {
                        break;
                    }
                    next_send += iv;
                    // Far behind schedule (a stall): do not try to catch up
                    // with a burst.
                    if now.saturating_duration_since(next_send) > Duration::from_millis(100) {
                        next_send = now;
                    }
                }
                let seq = next_seq;
                let i = (seq % RING as u64) as usize;
                if slot_seq[i] != 0 {
                    // Still unanswered RING packets later: lost.
                    slot_seq[i] = 0;
                    inflight -= 1;
                    st.expired += 1;
                }
                let ts = ns_since(plan.base, Instant::now());
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                payload[8..16].copy_from_slice(&ts.to_be_bytes());
                s.client
                    .send_to(peer, &payload)
                    .map_err(|e| anyhow!("sending through the relay: {e}"))?;
                s.flush().await?;
                slot_seq[i] = seq + 1;
                slot_ts[i] = ts;
                inflight += 1;
                next_seq += 1;
                st.sent_total += 1;
                if measured(ts) {
                    st.sent += 1;
                }
            }
        } else if inflight == 0 || now >= drain_end {
            break;
        }

        let mut wake = next_tick.min(if now < plan.end { plan.end } else { drain_end });
        if interval.is_some() && now < plan.end && inflight < plan.window {
            wake = wake.min(next_send);
        }
        if wake != deadline {
            deadline = wake;
            sleep.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            r = s.conn.recv(&mut rbuf) => {
                let n = r.map_err(|e| super::client::io_context(e, server, tcp))?;
                let at = Instant::now();
                let Some(data) = s.client.handle_input(at.into_std(), &rbuf[..n]) else { continue };
                let data = data.payload;
                if data.len() != plan.size {
                    st.unmatched += 1;
                    continue;
                }
                let seq = u64::from_be_bytes(data[..8].try_into().unwrap_or_default());
                let i = (seq % RING as u64) as usize;
                if slot_seq[i] != seq.wrapping_add(1) {
                    st.unmatched += 1;
                    continue;
                }
                slot_seq[i] = 0;
                inflight -= 1;
                st.received_total += 1;
                progress.fetch_add(1, Ordering::Relaxed);
                let ts = slot_ts[i];
                if measured(ts) {
                    st.received += 1;
                    hist.record(ns_since(plan.base, at).saturating_sub(ts));
                }
            }
            _ = &mut sleep => {}
        }
    }
    st.hist = Some(hist);
    Ok(st)
}

/// The echo peer of one allocation: sends every datagram back to where it
/// came from (the relayed address). Runs until aborted.
pub async fn echo(sock: tokio::net::UdpSocket, size: usize) {
    let mut buf = vec![0u8; size.max(2048) + 64];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let _ = sock.send_to(&buf[..n], from).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}
