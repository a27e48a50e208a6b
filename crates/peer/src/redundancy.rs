//! Sending every data-channel datagram twice on lossy links (issue 15).
//!
//! str0m's SCTP (sctp-proto) recovers a lost packet quickly only when fast
//! retransmit catches it. A fast retransmission that is lost again, or a new
//! hole that opens during fast recovery (sctp-proto counts no miss
//! indications then unless the cumulative ack moves), waits for the T3-rtx
//! timer: at least 1 s, doubled each time, with the congestion window
//! reset to one packet. On a 1%-loss link that is most of the transfer's
//! time (docs/benchmarks.md, `crates/peer/tests/sctp_loss.rs`). Neither
//! the RTO bounds nor the recovery rules are reachable through str0m.
//!
//! What is in our hands is the datagram: a second copy of each SCTP packet
//! turns an independent loss rate p into p², so 1% becomes 0.01% and the
//! timer almost never fires. It costs twice the bytes on the wire, so it is
//! switched on only where loss is seen:
//!
//! - [`LossMeter`] reads the plaintext DTLS 1.2 record sequence numbers of
//!   what arrives from the peer and estimates the loss of that direction,
//!   whether or not the peer itself sends copies;
//! - [`Redundancy`] decides, with hysteresis, whether to send copies. It
//!   assumes the loss is roughly symmetric: the only signal a sender has
//!   about its own packets without a feedback channel is the loss of the
//!   peer's packets on the same path.
//!
//! Only DTLS application data (SCTP) is copied; STUN, DTLS handshakes and
//! SRTP (media has its own NACK/FEC) are not. Toward a peer that sends no
//! copies of its own (a browser), only datagrams large enough to carry
//! data are: its SCTP recovers fine and has no use for our SACKs twice.
//! DTLS drops or SCTP ignores a duplicate. Both types are sans-IO,
//! allocation-free, and take no clock.

/// Whether to send data-channel datagrams twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedundancyMode {
    /// Never.
    Off,
    /// Always, from the first datagram.
    On,
    /// From the start, off once the measured loss of the peer's datagrams
    /// is below [`RedundancyConfig::off_at`], on again when it reaches
    /// [`RedundancyConfig::on_at`].
    #[default]
    Auto,
}

/// The policy and its thresholds (fractions, 0.01 = 1%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RedundancyConfig {
    /// What to do.
    pub mode: RedundancyMode,
    /// `Auto` starts sending copies at this loss.
    pub on_at: f64,
    /// `Auto` stops below this loss (lower than `on_at`, so that an
    /// estimate hovering at the threshold does not flap).
    pub off_at: f64,
}

impl Default for RedundancyConfig {
    fn default() -> Self {
        RedundancyConfig {
            mode: RedundancyMode::Auto,
            on_at: 0.005,
            off_at: 0.002,
        }
    }
}

/// Sequence numbers held open for late (reordered) records. A record that
/// arrives more than this many records late counts as lost.
const WINDOW: usize = 128;
/// A forward jump this large is an outage or a rekey, not random loss: the
/// meter starts over instead of counting it.
const MAX_JUMP: u64 = 4 * WINDOW as u64;
/// Each retired record multiplies the tallies by this, so the estimate
/// covers about the last 4,096 records and follows a link that changes.
const DECAY: f64 = 1.0 - 1.0 / 4096.0;
/// Records retired before [`LossMeter::estimate`] answers.
const MIN_SAMPLES: u64 = 200;
/// Decay of the short average that tells whether the peer sends copies
/// (about the last 16 records: a change must be seen before the records
/// it affects outweigh the count).
const MODE_DECAY: f64 = 1.0 - 1.0 / 16.0;
/// Between these shares of records seen twice, whether the peer sends
/// copies is unclear (it is switching), and there is no estimate. With
/// copies, (1 - p)² of records arrive twice: above 0.75 up to 13% loss.
const MODE_UNCLEAR: (f64, f64) = (0.25, 0.75);
/// Records seen twice before [`LossMeter::peer_sent_copies`] says so.
const PEER_COPIES_SEEN: u32 = 16;
/// Datagrams shorter than this carry no SCTP DATA, or very little: mostly
/// SACKs, which a browser's SCTP does not need twice.
pub const SMALL_DATAGRAM: usize = 256;

/// `seen` for a record that is not data-channel data (a DTLS handshake
/// or alert record in a data epoch): never copied, so not counted.
const EXEMPT: u8 = 3;

/// Estimates the loss of the peer's datagrams from DTLS record sequence
/// numbers (per epoch, 48 bits, in the clear in DTLS 1.2).
#[derive(Debug, Clone)]
pub struct LossMeter {
    epoch: Option<u16>,
    /// The first sequence number of this epoch's window.
    start: u64,
    /// One past the highest sequence number seen.
    top: u64,
    /// Copies seen of sequence number s, at `seen[s % WINDOW]`, for s in
    /// `[top - WINDOW, top)`; saturates at 2.
    seen: [u8; WINDOW],
    /// Decayed count of retired records seen 0, 1 and 2+ times, since the
    /// peer last started or stopped sending copies.
    tally: [f64; 3],
    samples: u64,
    /// Short average of "seen twice": above one half, the peer sends copies.
    doubles: f64,
    peer_copies: bool,
    /// Records retired with two copies, ever (saturating): a peer that sent
    /// some is a native peer with copies on.
    doubles_seen: u32,
}

impl Default for LossMeter {
    fn default() -> Self {
        LossMeter {
            epoch: None,
            start: 0,
            top: 0,
            seen: [0; WINDOW],
            tally: [0.0; 3],
            samples: 0,
            doubles: 0.0,
            peer_copies: false,
            doubles_seen: 0,
        }
    }
}

impl LossMeter {
    /// The meter for a connection whose own mode is `mode`: a native peer
    /// runs the same policy, so unless we send no copies ourselves, expect
    /// the peer's from the start (a browser's single copies correct that
    /// within a few dozen records).
    pub fn for_mode(mode: RedundancyMode) -> Self {
        if mode == RedundancyMode::Off {
            LossMeter::default()
        } else {
            LossMeter::expecting_copies()
        }
    }

    /// A meter for a peer expected to send copies from the start, as a
    /// native peer in `On` or `Auto` does: no restart of the count when
    /// its first records arrive twice.
    pub fn expecting_copies() -> Self {
        LossMeter {
            doubles: 1.0,
            peer_copies: true,
            ..Default::default()
        }
    }

    /// Accounts every DTLS 1.2 record in one received datagram; anything
    /// else (STUN, SRTP, DTLS 1.3, garbage) is ignored.
    pub fn datagram(&mut self, data: &[u8]) {
        let mut rest = data;
        while let Some((ty, epoch, seq, len)) = record_header(rest) {
            // Handshake records (epoch 0) are retransmitted by DTLS itself.
            if epoch > 0 {
                if ty == 23 {
                    self.record(epoch, seq);
                } else {
                    self.exempt(epoch, seq);
                }
            }
            let Some(next) = rest.get(13 + len..) else {
                break;
            };
            rest = next;
        }
    }

    /// Accounts one application-data record.
    pub fn record(&mut self, epoch: u16, seq: u64) {
        if let Some(slot) = self.slot(epoch, seq) {
            if self.seen[slot] != EXEMPT {
                self.seen[slot] = (self.seen[slot] + 1).min(2);
            }
        }
    }

    /// Takes note of a record of another type: it holds its sequence
    /// number but says nothing about loss, as it is never copied.
    pub fn exempt(&mut self, epoch: u16, seq: u64) {
        if let Some(slot) = self.slot(epoch, seq) {
            self.seen[slot] = EXEMPT;
        }
    }

    /// Moves the window up to `seq` and returns its slot, or `None` for a
    /// record too old to count.
    fn slot(&mut self, epoch: u16, seq: u64) -> Option<usize> {
        if self.epoch != Some(epoch) {
            self.restart(epoch, seq);
        }
        if seq >= self.top {
            let jump = seq + 1 - self.top;
            if jump > MAX_JUMP {
                self.restart(epoch, seq);
            } else {
                for s in self.top..=seq {
                    let slot = (s % WINDOW as u64) as usize;
                    if s >= self.start + WINDOW as u64 {
                        self.retire(self.seen[slot]);
                    }
                    self.seen[slot] = 0;
                }
                self.top = seq + 1;
            }
        } else if self.top - seq > WINDOW as u64 || seq < self.start {
            // Older than the window: already counted as lost.
            return None;
        }
        Some((seq % WINDOW as u64) as usize)
    }

    fn restart(&mut self, epoch: u16, seq: u64) {
        self.epoch = Some(epoch);
        self.start = seq;
        self.top = seq;
        self.seen = [0; WINDOW];
    }

    fn retire(&mut self, copies: u8) {
        if copies == EXEMPT {
            return;
        }
        if copies == 2 {
            self.doubles_seen = self.doubles_seen.saturating_add(1);
        }
        self.doubles = self.doubles * MODE_DECAY + if copies == 2 { 1.0 - MODE_DECAY } else { 0.0 };
        if (self.doubles > 0.5) != self.peer_copies {
            // A mix of both would read as heavy loss: count afresh.
            self.peer_copies = !self.peer_copies;
            self.tally = [0.0; 3];
            self.samples = 0;
        }
        for t in &mut self.tally {
            *t *= DECAY;
        }
        self.tally[copies as usize] += 1.0;
        self.samples += 1;
    }

    /// Whether the peer has been seen sending copies (a native peer; a
    /// browser never does).
    pub fn peer_sent_copies(&self) -> bool {
        self.doubles_seen >= PEER_COPIES_SEEN
    }

    /// The estimated loss of one datagram from the peer (0.0..=1.0), or
    /// `None` before enough records were seen.
    ///
    /// When the peer sends two copies (most recent records seen twice), a record
    /// with one copy lost one and a missing record lost both, so each copy
    /// was lost with probability (one + 2·missing) / (2·total).
    pub fn estimate(&self) -> Option<f64> {
        if self.samples < MIN_SAMPLES || (MODE_UNCLEAR.0..MODE_UNCLEAR.1).contains(&self.doubles) {
            return None;
        }
        let [lost, one, two] = self.tally;
        let total = lost + one + two;
        if total <= 0.0 {
            return None;
        }
        Some(if self.peer_copies {
            (one + 2.0 * lost) / (2.0 * total)
        } else {
            lost / total
        })
    }
}

/// Content type, epoch, sequence number and fragment length of the DTLS
/// 1.2 record at the start of `data` (RFC 6347 section 4.1), if it is one.
fn record_header(data: &[u8]) -> Option<(u8, u16, u64, usize)> {
    let h = data.get(..13)?;
    // Content types 20..=25 and DTLS 1.2's wire version (RFC 6347: 254.253).
    if !(20..=25).contains(&h[0]) || h[1] != 0xfe || h[2] != 0xfd {
        return None;
    }
    let epoch = u16::from_be_bytes([h[3], h[4]]);
    let seq = u64::from_be_bytes([0, 0, h[5], h[6], h[7], h[8], h[9], h[10]]);
    let len = u16::from_be_bytes([h[11], h[12]]) as usize;
    Some((h[0], epoch, seq, len))
}

/// True for a datagram that starts with a DTLS 1.2 application-data
/// record: SCTP, the only thing WebRTC sends as DTLS application data.
pub fn is_dtls_app_data(data: &[u8]) -> bool {
    data.len() >= 13 && data[0] == 23 && data[1] == 0xfe && data[2] == 0xfd
}

/// Whether to send copies now.
#[derive(Debug, Clone)]
pub struct Redundancy {
    cfg: RedundancyConfig,
    active: bool,
}

impl Redundancy {
    /// Starts active in `On` and in `Auto`: until the meter has seen a
    /// couple of hundred of the peer's datagrams, a lossy link would cost
    /// a T3-rtx wait in the first few hundred kilobytes, while copies on a
    /// clean one cost those few hundred datagrams once.
    pub fn new(cfg: RedundancyConfig) -> Self {
        Redundancy {
            active: cfg.mode != RedundancyMode::Off,
            cfg,
        }
    }

    /// Takes a new loss estimate (`Auto` only; the others are fixed).
    pub fn update(&mut self, loss: Option<f64>) {
        if self.cfg.mode != RedundancyMode::Auto {
            return;
        }
        match loss {
            Some(p) if !self.active && p >= self.cfg.on_at => self.active = true,
            Some(p) if self.active && p < self.cfg.off_at => self.active = false,
            _ => {}
        }
    }

    /// Send each data-channel datagram twice.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether `data`, about to be sent, gets a copy: while active, every
    /// data-channel datagram to a peer that sends copies itself (a native
    /// peer, which gains from copied SACKs too); to one that does not (a
    /// browser, whose own loss recovery works), only those large enough
    /// to carry data, which is what our SCTP is slow to repair.
    pub fn copy(&self, data: &[u8], peer_sent_copies: bool) -> bool {
        self.active && is_dtls_app_data(data) && (peer_sent_copies || data.len() >= SMALL_DATAGRAM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn record(epoch: u16, seq: u64, ty: u8, len: usize) -> Vec<u8> {
        let mut r = vec![ty, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&seq.to_be_bytes()[2..]);
        r.extend_from_slice(&(len as u16).to_be_bytes());
        r.resize(13 + len, 0xab);
        r
    }

    /// `n` records with independent loss `p` per copy, `copies` copies each.
    fn meter_after(n: u64, p: f64, copies: u32, seed: u64) -> LossMeter {
        let mut m = LossMeter::default();
        let mut rng = StdRng::seed_from_u64(seed);
        for seq in 0..n {
            for _ in 0..copies {
                if rng.random::<f64>() >= p {
                    m.datagram(&record(1, seq, 23, 40));
                }
            }
        }
        m
    }

    #[test]
    fn no_estimate_before_enough_records() {
        assert_eq!(meter_after(MIN_SAMPLES, 0.0, 1, 1).estimate(), None);
        assert_eq!(
            meter_after(MIN_SAMPLES + WINDOW as u64 + 1, 0.0, 1, 1).estimate(),
            Some(0.0)
        );
    }

    #[test]
    fn estimates_loss_with_and_without_copies_from_the_peer() {
        for p in [0.01, 0.02, 0.05, 0.1] {
            for copies in [1, 2] {
                let est = meter_after(40_000, p, copies, 7).estimate().unwrap();
                assert!(
                    (est - p).abs() < p * 0.25 + 0.002,
                    "p={p} copies={copies}: estimated {est}"
                );
            }
        }
        // Without copies any loss reads; with them, above ~13% too few
        // records arrive twice to tell copies from none: no estimate.
        assert!((meter_after(40_000, 0.3, 1, 7).estimate().unwrap() - 0.3).abs() < 0.05);
        assert_eq!(meter_after(40_000, 0.3, 2, 7).estimate(), None);
    }

    #[test]
    fn a_peer_that_sends_no_copies_after_all_is_measured_right() {
        let mut m = LossMeter::expecting_copies();
        let mut rng = StdRng::seed_from_u64(9);
        for seq in 0..40_000 {
            if rng.random::<f64>() >= 0.03 {
                m.record(1, seq);
            }
        }
        let est = m.estimate().unwrap();
        assert!((est - 0.03).abs() < 0.01, "estimated {est}");
    }

    #[test]
    fn reordering_within_the_window_is_not_loss() {
        let mut m = LossMeter::default();
        // Pairs swapped, and every 200th record 100 late.
        let mut order: Vec<u64> = (0..20_000).collect();
        for c in order.chunks_mut(2) {
            c.swap(0, 1);
        }
        for i in (0..order.len() - 100).step_by(200) {
            order[i..=i + 100].rotate_left(1);
        }
        for seq in order {
            m.record(1, seq);
        }
        assert_eq!(m.estimate(), Some(0.0));
    }

    #[test]
    fn reads_every_record_of_a_datagram_and_skips_other_traffic() {
        let mut m = LossMeter::default();
        for seq in (0..6000).step_by(2) {
            let mut d = record(1, seq, 23, 30);
            d.extend(record(1, seq + 1, 23, 10));
            m.datagram(&d);
            // STUN, SRTP, a truncated header, epoch-0 handshake: ignored.
            m.datagram(&[0x00, 0x01, 0x00, 0x00]);
            m.datagram(&[0x80; 40]);
            m.datagram(&record(1, 9_999_999, 23, 0)[..12]);
            m.datagram(&record(0, seq, 22, 20));
        }
        assert_eq!(m.estimate(), Some(0.0));
        // A handshake record in a data epoch (DTLS Finished, never copied)
        // is neither a loss nor a single copy from a peer that copies.
        let mut m = LossMeter::expecting_copies();
        for seq in 0..6000 {
            if seq % 50 == 0 {
                m.datagram(&record(1, seq, 22, 20));
            } else {
                m.datagram(&record(1, seq, 23, 20));
                m.datagram(&record(1, seq, 23, 20));
            }
        }
        assert_eq!(m.estimate(), Some(0.0));
        // A record whose length runs past the datagram ends the walk.
        let mut bad = record(1, 6000, 23, 5);
        bad[12] = 200;
        m.datagram(&bad);
    }

    #[test]
    fn a_new_epoch_or_an_outage_starts_over_instead_of_counting_loss() {
        let mut m = meter_after(10_000, 0.0, 1, 3);
        m.record(1, 10_000 + MAX_JUMP + 5);
        m.record(2, 0);
        for seq in 1..3000 {
            m.record(2, seq);
        }
        assert_eq!(m.estimate(), Some(0.0));
    }

    #[test]
    fn auto_switches_with_hysteresis_and_the_fixed_modes_do_not() {
        let mut r = Redundancy::new(RedundancyConfig::default());
        assert!(r.active(), "auto starts on");
        r.update(None);
        assert!(r.active(), "and stays on without an estimate");
        r.update(Some(0.001));
        assert!(!r.active());
        r.update(Some(0.0049));
        assert!(!r.active());
        r.update(Some(0.0051));
        assert!(r.active());
        r.update(Some(0.003));
        assert!(r.active(), "between off_at and on_at it stays on");
        r.update(Some(0.0019));
        assert!(!r.active());

        let on = RedundancyConfig {
            mode: RedundancyMode::On,
            ..Default::default()
        };
        let mut r = Redundancy::new(on);
        r.update(Some(0.0));
        assert!(r.active());
        let off = RedundancyConfig {
            mode: RedundancyMode::Off,
            ..Default::default()
        };
        let mut r = Redundancy::new(off);
        r.update(Some(0.5));
        assert!(!r.active());
    }

    #[test]
    fn small_datagrams_are_copied_only_to_a_peer_that_copies() {
        let r = Redundancy::new(RedundancyConfig::default());
        let sack = record(1, 5, 23, 60);
        let data = record(1, 6, 23, 1100);
        assert!(r.copy(&sack, true) && r.copy(&data, true));
        assert!(!r.copy(&sack, false) && r.copy(&data, false));
        assert!(!r.copy(&record(0, 1, 22, 1100), true), "handshake");
        let off = Redundancy::new(RedundancyConfig {
            mode: RedundancyMode::Off,
            ..Default::default()
        });
        assert!(!off.copy(&data, true));

        let mut m = LossMeter::expecting_copies();
        for seq in 0..2000 {
            m.record(1, seq);
        }
        assert!(!m.peer_sent_copies(), "a browser");
        for seq in 2000..2200 {
            m.record(1, seq);
            m.record(1, seq);
        }
        assert!(m.peer_sent_copies());
    }

    #[test]
    fn only_dtls_application_data_is_copied() {
        assert!(is_dtls_app_data(&record(1, 5, 23, 10)));
        assert!(!is_dtls_app_data(&record(0, 5, 22, 10)));
        assert!(!is_dtls_app_data(&[0x80; 40]));
        assert!(!is_dtls_app_data(&[23, 0xfe]));
    }
}
