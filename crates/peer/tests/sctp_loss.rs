//! Issue 15's reproduction, and the check of its fix: two str0m `Rtc`s in
//! one process, joined by a simulated link (0.1 ms each way, 100 MB/s,
//! seeded random loss on each packet each way) and driven by a fake clock.
//! A lossy bulk transfer runs in seconds of real time, and the same seed
//! gives the same run, so throughput here is simulated time, not a timing.
//!
//! The sender moves a file over one reliable data channel the way the
//! native peer does (str0m's SCTP, the peer's send buffer, 64 KiB
//! messages). sctp-proto's own trace says what it does about each loss;
//! each side's datagrams go through the peer's real [`LossMeter`] and
//! [`Redundancy`], as in the driver.
//!
//! `--nocapture` prints one line per run.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use peer::redundancy::{LossMeter, Redundancy};
use peer::{RedundancyConfig, RedundancyMode};
use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

// ---------------------------------------------------------------- sctp-proto's own account

/// What the sender's association did, from sctp-proto's trace (it logs
/// through the `log` crate; str0m exposes no SCTP statistics).
#[derive(Debug, Default, Clone)]
struct Trace {
    /// T3-rtx expiries.
    t3: u32,
    /// Of those: the first missing TSN had been fast-retransmitted and the
    /// retransmission was lost too (sctp-proto fast-retransmits a chunk
    /// once; after that only the timer recovers it).
    t3_after_lost_fast_rtx: u32,
    /// Of those: the first missing TSN was never fast-retransmitted,
    /// because it went missing during fast recovery. sctp-proto then
    /// counts miss indications only on SACKs that advance the cumulative
    /// ack, which this hole blocks.
    t3_hole_in_fast_recovery: u32,
    /// Entries into fast recovery.
    fast_recoveries: u32,
    // Parser state.
    cum: Option<u32>,
    in_fr: bool,
    fast_rtx: HashSet<u32>,
}

impl Trace {
    fn line(&mut self, s: &str) {
        // Only the sender's association (str0m's offerer is the client).
        let Some(s) = s.strip_prefix("[Client] ") else {
            return;
        };
        if let Some(rest) = s.strip_prefix("SACK: cumTSN advanced: ") {
            self.cum = rest.rsplit(' ').next().and_then(|v| v.parse().ok());
        } else if let Some(rest) = s.strip_prefix("fast-retransmit: tsn=") {
            if let Some(t) = rest.split(' ').next().and_then(|v| v.parse().ok()) {
                self.fast_rtx.insert(t);
            }
        } else if s.ends_with("(FR)") {
            self.in_fr = true;
            self.fast_recoveries += 1;
        } else if s == "exit fast-recovery" {
            self.in_fr = false;
        } else if s.ends_with("(RTO)") {
            self.t3 += 1;
            let hole = self.cum.map(|c| c.wrapping_add(1));
            if hole.is_some_and(|h| self.fast_rtx.contains(&h)) {
                self.t3_after_lost_fast_rtx += 1;
            } else if self.in_fr {
                self.t3_hole_in_fast_recovery += 1;
            }
        }
    }
}

static TRACE: Mutex<Option<Trace>> = Mutex::new(None);
/// One run at a time: the trace is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

struct SctpTrace;

impl log::Log for SctpTrace {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("sctp_proto")
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            if let Some(t) = TRACE.lock().unwrap().as_mut() {
                t.line(&r.args().to_string());
            }
        }
    }
    fn flush(&self) {}
}

fn serial() -> MutexGuard<'static, ()> {
    static LOGGER: std::sync::Once = std::sync::Once::new();
    LOGGER.call_once(|| {
        log::set_logger(&SctpTrace).expect("logger");
        log::set_max_level(log::LevelFilter::Trace);
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- the link

/// xorshift64*: a fixed seed gives the same losses every run.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Packet = (Instant, SocketAddr, SocketAddr, Vec<u8>);

/// One direction: packets leave at `rate` bytes/s and arrive `delay`
/// later; each is dropped with probability `loss`.
struct Way {
    loss: f64,
    /// Bytes per second the link carries.
    rate: f64,
    /// Drop-tail queue in bytes: a packet that finds more waiting is lost
    /// (congestion, not random loss).
    queue_limit: f64,
    rng: Rng,
    free_at: Instant,
    queue: VecDeque<Packet>,
    sent: u64,
}

const DELAY: Duration = Duration::from_micros(100);
const RATE: f64 = 100e6;

impl Way {
    fn send(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        self.sent += 1;
        let start = self.free_at.max(now);
        if (start - now).as_secs_f64() * self.rate > self.queue_limit {
            return;
        }
        self.free_at = start + Duration::from_secs_f64(data.len() as f64 / self.rate);
        if self.rng.unit() >= self.loss {
            self.queue
                .push_back((self.free_at + DELAY, src, dst, data.to_vec()));
        }
    }
}

/// One peer: its `Rtc` and, as in the driver, the meter of what arrives
/// and the policy for what leaves.
struct Side {
    rtc: Rtc,
    meter: LossMeter,
    red: Redundancy,
    copies: u64,
}

impl Side {
    /// Drains str0m's output onto `way` until its next timeout.
    fn pump(&mut self, now: Instant, way: &mut Way, mut event: impl FnMut(Event)) -> Instant {
        loop {
            match self.rtc.poll_output().expect("poll_output") {
                Output::Timeout(t) => return t,
                Output::Transmit(t) => {
                    if self.red.copy(&t.contents, self.meter.peer_sent_copies()) {
                        self.copies += 1;
                        way.send(now, t.source, t.destination, &t.contents);
                    }
                    way.send(now, t.source, t.destination, &t.contents);
                }
                Output::Event(e) => event(e),
            }
        }
    }

    fn arrivals(&mut self, now: Instant, from: &mut Way) {
        while from.queue.front().is_some_and(|p| p.0 <= now) {
            let (_, src, dst, data) = from.queue.pop_front().unwrap();
            self.meter.datagram(&data);
            self.red.update(self.meter.estimate());
            let r = Receive::new(Protocol::Udp, src, dst, &data).unwrap();
            self.rtc.handle_input(Input::Receive(now, r)).unwrap();
        }
    }
}

// ---------------------------------------------------------------- the run

#[derive(Debug)]
struct Run {
    /// Simulated seconds from the channel opening to the last byte.
    secs: f64,
    mbps: f64,
    trace: Trace,
    /// Time the sender spent silent for 200 ms or more with data still
    /// unacknowledged: waiting for a timer.
    stalled: Duration,
    /// Datagrams the sender sent twice.
    copies: u64,
    /// The sender's estimate of the loss of what it received.
    loss_seen: Option<f64>,
}

/// Moves `bytes` from a to b over the link with `loss` each way.
fn transfer(bytes: usize, loss: f64, seed: u64, redundancy: RedundancyConfig) -> Run {
    transfer_on(bytes, loss, RATE, f64::INFINITY, seed, redundancy)
}

/// [`transfer`] over a link of `rate` bytes/s with a drop-tail queue of
/// `queue_limit` bytes.
fn transfer_on(
    bytes: usize,
    loss: f64,
    rate: f64,
    queue_limit: f64,
    seed: u64,
    redundancy: RedundancyConfig,
) -> Run {
    *TRACE.lock().unwrap() = Some(Trace::default());
    let start = Instant::now();
    let buffer = peer::Config::default().channel_buffer;
    let side = || Side {
        rtc: Rtc::builder()
            .set_sctp_max_buffered_amount(buffer)
            .build(start),
        meter: LossMeter::for_mode(redundancy.mode),
        red: Redundancy::new(redundancy),
        copies: 0,
    };
    let (mut a, mut b) = (side(), side());
    let ca = Candidate::host("10.0.0.1:4000".parse().unwrap(), "udp").unwrap();
    let cb = Candidate::host("10.0.0.2:4000".parse().unwrap(), "udp").unwrap();
    a.rtc.add_local_candidate(ca.clone());
    b.rtc.add_local_candidate(cb.clone());
    a.rtc.add_remote_candidate(cb);
    b.rtc.add_remote_candidate(ca);
    let mut change = a.rtc.sdp_api();
    let cid = change.add_channel("bulk".into());
    let (offer, pending) = change.apply().unwrap();
    let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).unwrap();
    let answer = b.rtc.sdp_api().accept_offer(offer).unwrap();
    a.rtc.sdp_api().accept_answer(pending, answer).unwrap();

    let way = |seed| Way {
        loss,
        rate,
        queue_limit,
        rng: Rng(seed),
        free_at: start,
        queue: VecDeque::new(),
        sent: 0,
    };
    let (mut ab, mut ba) = (way(seed | 1), way(seed.rotate_left(17) | 1));

    let msg = vec![0x5au8; transfer::DEFAULT_CHUNK];
    let (mut open, mut written, mut received) = (false, 0usize, 0usize);
    let (mut t_open, mut t_done) = (start, None);
    let (mut last_tx, mut stalled) = (start, Duration::ZERO);
    let mut now = start;
    let deadline = start + Duration::from_secs(900);
    while t_done.is_none() {
        assert!(now < deadline, "no progress: {received} of {bytes} bytes");
        if open {
            // Keep str0m's buffer full, as the driver does.
            while written < bytes {
                let n = msg.len().min(bytes - written);
                if !a.rtc.channel(cid).unwrap().write(true, &msg[..n]).unwrap() {
                    break;
                }
                written += n;
            }
        }
        let before = ab.sent;
        let ta = a.pump(now, &mut ab, |e| {
            if matches!(e, Event::ChannelOpen(..)) {
                open = true;
                t_open = now;
            }
        });
        if ab.sent > before {
            let gap = now - last_tx;
            if open && received < bytes && gap >= Duration::from_millis(200) {
                stalled += gap;
            }
            last_tx = now;
        }
        let tb = b.pump(now, &mut ba, |e| {
            if let Event::ChannelData(d) = e {
                received += d.data.len();
                if received >= bytes {
                    t_done = Some(now);
                }
            }
        });
        let arrivals = [ab.queue.front(), ba.queue.front()];
        now = [Some(ta), Some(tb)]
            .into_iter()
            .chain(arrivals.into_iter().map(|p| p.map(|p| p.0)))
            .flatten()
            .min()
            .unwrap()
            .max(now);
        b.arrivals(now, &mut ab);
        a.arrivals(now, &mut ba);
        if ta <= now {
            a.rtc.handle_input(Input::Timeout(now)).unwrap();
        }
        if tb <= now {
            b.rtc.handle_input(Input::Timeout(now)).unwrap();
        }
    }
    let secs = (t_done.unwrap() - t_open).as_secs_f64();
    let run = Run {
        secs,
        mbps: bytes as f64 / 1e6 / secs,
        trace: TRACE.lock().unwrap().take().unwrap(),
        stalled,
        copies: a.copies,
        loss_seen: a.meter.estimate(),
    };
    let t = &run.trace;
    println!(
        "loss {:>3.1}% {:?}: {:>6.2} s {:>6.2} MB/s, stalled {:.2} s; T3-rtx {} ({} after a lost \
         fast retransmit, {} on a hole in fast recovery), fast recoveries {}; copies {}, loss seen {:?}",
        loss * 100.0,
        redundancy.mode,
        run.secs,
        run.mbps,
        run.stalled.as_secs_f64(),
        t.t3,
        t.t3_after_lost_fast_rtx,
        t.t3_hole_in_fast_recovery,
        t.fast_recoveries,
        run.copies,
        run.loss_seen
    );
    run
}

fn mode(mode: RedundancyMode) -> RedundancyConfig {
    RedundancyConfig {
        mode,
        ..Default::default()
    }
}

/// The cause, shown: without copies, a 2% link spends most of the transfer
/// with the sender silent, waiting for T3-rtx (≥ 1 s against a 0.2 ms
/// round trip), and both of sctp-proto's paths to it occur.
#[test]
fn without_copies_the_sender_waits_on_t3_rtx_for_most_of_a_lossy_transfer() {
    let _s = serial();
    let clean = transfer(8 << 20, 0.0, 11, mode(RedundancyMode::Off));
    assert_eq!(clean.trace.t3, 0);
    transfer(8 << 20, 0.005, 11, mode(RedundancyMode::Off));
    let r = transfer(8 << 20, 0.02, 11, mode(RedundancyMode::Off));
    assert!(r.trace.t3 >= 4, "{r:?}");
    assert!(r.stalled.as_secs_f64() > 0.6 * r.secs, "{r:?}");
    assert!(r.trace.t3_after_lost_fast_rtx >= 1, "{r:?}");
    assert!(r.trace.t3_hole_in_fast_recovery >= 1, "{r:?}");
    assert!(r.mbps < 0.25 * clean.mbps, "{r:?} vs {clean:?}");
}

/// The fix, measured in simulated time: `Auto` stops sending copies on a
/// clean link within the first few hundred datagrams, and on lossy ones keeps the goals (half the lossless
/// throughput at 1%, a fifth at 5%) with room to spare at 2%.
#[test]
fn auto_copies_keep_throughput_on_lossy_links_and_cost_nothing_on_clean_ones() {
    let _s = serial();
    let auto = mode(RedundancyMode::Auto);
    let clean = transfer(8 << 20, 0.0, 5, auto);
    // Copies until a few hundred of the peer's datagrams showed no loss:
    // a one-off cost of under 2,000 datagrams (~2 MB).
    assert!(clean.copies < 2000, "{clean:?}");
    assert_eq!(clean.loss_seen, Some(0.0));
    for (loss, keep) in [(0.005, 0.5), (0.01, 0.5), (0.02, 0.5), (0.05, 0.2)] {
        let r = transfer(8 << 20, loss, 5, auto);
        assert!(r.copies > 0, "{r:?}");
        let seen = r.loss_seen.unwrap();
        assert!(
            (seen - loss).abs() < loss * 0.5 + 0.002,
            "loss {loss}: estimated {seen}"
        );
        assert!(
            r.mbps >= keep * clean.mbps,
            "loss {loss}: {r:?} vs {clean:?}"
        );
    }
}

/// Congestion, not random loss: a 2 MB/s link with a drop-tail queue in
/// the sender's direction only. The sender's meter sees the peer's
/// datagrams, which never queue, so after the first few hundred it sends
/// no copies that would add to the queue, and the transfer keeps most of
/// what it gets without them.
#[test]
fn a_one_way_bottleneck_does_not_keep_copies_on() {
    let _s = serial();
    for queue in [32e3, 128e3] {
        let off = transfer_on(8 << 20, 0.0, 2e6, queue, 3, mode(RedundancyMode::Off));
        let auto = transfer_on(8 << 20, 0.0, 2e6, queue, 3, mode(RedundancyMode::Auto));
        assert!(auto.copies < 2000, "{auto:?}");
        assert_eq!(auto.loss_seen, Some(0.0));
        assert!(auto.mbps >= 0.6 * off.mbps, "{auto:?} vs {off:?}");
    }
}
