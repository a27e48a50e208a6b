//! Sans-IO bookkeeping of one signaling session (docs/protocol.md,
//! "Sessions: reconnect and resume"), for the room client to drive.
//!
//! [`Session`] owns the sequence numbers in both directions: which server
//! messages were seen (dedup after a replay) and when to ack them, and the
//! numbered outbox of our own signals, kept until the server's ack covers
//! them so a resume can send them again. [`Recovery`] decides what to try
//! after the socket dropped: resume while the window lasts, then rejoin,
//! then give up, with jittered exponential backoff between attempts.
//!
//! Nothing here does IO or reads a clock: every time is passed in, so the
//! tests run on a fake clock.

use serde_json::value::RawValue;
use signal::protocol::ClientMessage;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When acks go out and how much of our own is kept for a resume.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Ack at the latest this long after the first server message not yet
    /// acked (the protocol asks for at least once a second).
    pub ack_delay: Duration,
    /// Ack at once when this many server messages are unacked (the
    /// protocol asks for 64 at most).
    pub ack_every: u64,
    /// Our own signals kept while the server has not acked them. When
    /// more pile up the oldest is dropped and the session can no longer be
    /// resumed losslessly (a reconnect rejoins instead).
    pub max_outbox: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ack_delay: Duration::from_secs(1),
            ack_every: 64,
            max_outbox: 1024,
        }
    }
}

/// One signal of ours with its seq, kept until acked.
#[derive(Debug)]
struct Kept {
    seq: u64,
    to: String,
    data: Box<RawValue>,
}

/// The seq/ack state of the current session, and our unacked signals.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    /// `welcome.session`; `None` for a server without sessions (then
    /// nothing is numbered or kept).
    token: Option<String>,
    /// `welcome.resumeWindow`.
    window: Option<Duration>,
    /// Highest server seq received.
    seen: u64,
    /// Highest server seq we acked.
    acked: u64,
    /// When the oldest server message not yet acked arrived.
    unacked_since: Option<Instant>,
    /// Last seq we gave one of our signals.
    sent_seq: u64,
    /// Our signals the server has not acked, oldest first.
    outbox: VecDeque<Kept>,
    /// The outbox dropped a signal: a resume would lose it.
    overflowed: bool,
}

impl Session {
    /// No session yet (before `welcome`).
    pub fn new(cfg: SessionConfig) -> Self {
        Session {
            cfg,
            token: None,
            window: None,
            seen: 0,
            acked: 0,
            unacked_since: None,
            sent_seq: 0,
            outbox: VecDeque::new(),
            overflowed: false,
        }
    }

    /// A `welcome` opened a new session: both counters start over. Signals
    /// of the previous session the server never acked may or may not have
    /// been relayed; they are numbered anew in this session and returned,
    /// to be sent again (after a rejoin the peers get them at most twice,
    /// and perfect negotiation shrugs off a repeated description or
    /// candidate, while a lost offer would stall it).
    pub fn start(&mut self, token: Option<String>, window_secs: Option<u64>) -> Vec<String> {
        let old: Vec<Kept> = self.outbox.drain(..).collect();
        self.token = token;
        self.window = window_secs.map(Duration::from_secs);
        self.seen = 0;
        self.acked = 0;
        self.unacked_since = None;
        self.sent_seq = 0;
        self.overflowed = false;
        old.into_iter()
            .map(|k| self.signal_raw(k.to, k.data))
            .collect()
    }

    /// A `resumed` took the session back: the server handled our signals
    /// up to `ack`; returns the frames of the later ones, to send again in
    /// order with their original seq.
    pub fn resumed(
        &mut self,
        token: Option<String>,
        window_secs: Option<u64>,
        ack: u64,
    ) -> Vec<String> {
        if token.is_some() {
            self.token = token;
        }
        if let Some(w) = window_secs {
            self.window = Some(Duration::from_secs(w));
        }
        self.server_ack(ack);
        self.outbox
            .iter()
            .map(|k| signal_frame(&k.to, &k.data, Some(k.seq)))
            .collect()
    }

    /// The server supports sessions and one is open.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How long the server keeps a dropped session, if it said.
    pub fn window(&self) -> Option<Duration> {
        self.window
    }

    /// A resume can pick up where the socket dropped without losing one
    /// of our signals.
    pub fn can_resume(&self) -> bool {
        self.token.is_some() && !self.overflowed
    }

    /// Highest server seq received.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// How many of our signals wait for the server's ack.
    pub fn unacked_signals(&self) -> usize {
        self.outbox.len()
    }

    /// A server message arrived with `seq` (absent for frames that carry
    /// none, or from a server without sessions). False: a duplicate of one
    /// already handled (seq not above the highest seen), to be ignored.
    pub fn receive(&mut self, seq: Option<u64>, now: Instant) -> bool {
        let Some(seq) = seq else { return true };
        if seq <= self.seen {
            return false;
        }
        self.seen = seq;
        self.unacked_since.get_or_insert(now);
        true
    }

    /// The ack to send now, if one is due: `ack_delay` after the first
    /// unacked message, or once `ack_every` are unacked.
    pub fn ack_due(&mut self, now: Instant) -> Option<String> {
        let since = self.unacked_since?;
        if self.seen - self.acked < self.cfg.ack_every && now < since + self.cfg.ack_delay {
            return None;
        }
        Some(self.ack_now())
    }

    /// The ack of everything seen, unconditionally (e.g. right after a
    /// replay); marks it sent.
    pub fn ack_now(&mut self) -> String {
        self.acked = self.seen;
        self.unacked_since = None;
        ClientMessage::Ack { seq: self.seen }.to_json()
    }

    /// When [`Session::ack_due`] will next have an ack, if anything is
    /// unacked.
    pub fn ack_deadline(&self) -> Option<Instant> {
        self.unacked_since.map(|t| t + self.cfg.ack_delay)
    }

    /// Numbers a signal of ours and keeps it until acked; returns the frame
    /// to send. Without a session it is neither numbered nor kept (v1).
    pub fn signal(&mut self, to: &str, data: Box<RawValue>) -> String {
        self.signal_raw(to.to_string(), data)
    }

    fn signal_raw(&mut self, to: String, data: Box<RawValue>) -> String {
        if self.token.is_none() {
            return signal_frame(&to, &data, None);
        }
        self.sent_seq += 1;
        let seq = self.sent_seq;
        let frame = signal_frame(&to, &data, Some(seq));
        if self.outbox.len() >= self.cfg.max_outbox {
            self.outbox.pop_front();
            self.overflowed = true;
        }
        self.outbox.push_back(Kept { seq, to, data });
        frame
    }

    /// Forgets our unacked signals (they were for connections that are
    /// being replaced).
    pub fn discard_outbox(&mut self) {
        self.outbox.clear();
    }

    /// The server's `ack`: it handled our signals up to `seq`.
    pub fn server_ack(&mut self, seq: u64) {
        while self.outbox.front().is_some_and(|k| k.seq <= seq) {
            self.outbox.pop_front();
        }
    }

    /// The `resume` frame for a new socket, if there is a session.
    pub fn resume_frame(&self, room: &str) -> Option<String> {
        let token = self.token.as_deref()?;
        Some(
            ClientMessage::Resume {
                session: Cow::Borrowed(token),
                seq: self.seen,
                room: Some(Cow::Borrowed(room)),
            }
            .to_json(),
        )
    }
}

fn signal_frame(to: &str, data: &RawValue, seq: Option<u64>) -> String {
    ClientMessage::Signal {
        to: Cow::Borrowed(to),
        data,
        seq,
    }
    .to_json()
}

/// How reconnecting paces itself and when it gives up.
#[derive(Debug, Clone)]
pub struct ReconnectConfig {
    /// The first retry comes after at most this (jittered down to half of
    /// it); each later one waits twice as long as the one before.
    pub first_delay: Duration,
    /// No wait between attempts is longer than this.
    pub max_delay: Duration,
    /// Fresh joins (same peer id) tried once resuming is out of the
    /// question (the window passed, or the server refused the resume)
    /// before the room gives up.
    pub rejoin_attempts: u32,
    /// Resume window assumed when the server did not say.
    pub default_window: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            rejoin_attempts: 2,
            default_window: Duration::from_secs(20),
        }
    }
}

/// What to try on the next connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// `resume` (and, if the server refuses it, `join` on the same socket).
    Resume,
    /// `join` with the same peer id and the old token.
    Rejoin,
    /// Nothing more to try.
    GiveUp,
}

/// The way back after a drop: from the moment the socket dropped to a
/// resumed or rejoined session, or to giving up.
#[derive(Debug)]
pub struct Recovery {
    cfg: ReconnectConfig,
    /// The resume window ends here.
    resume_until: Instant,
    /// Resuming is still worth trying.
    resumable: bool,
    /// Attempts so far (each waits longer).
    attempts: u32,
    /// Rejoins that failed.
    rejoin_failures: u32,
}

impl Recovery {
    /// The socket dropped at `now`; `session` says whether and for how long
    /// the session can be resumed.
    pub fn new(cfg: ReconnectConfig, session: &Session, now: Instant) -> Self {
        let window = session.window().unwrap_or(cfg.default_window);
        Recovery {
            resumable: session.can_resume(),
            resume_until: now + window,
            cfg,
            attempts: 0,
            rejoin_failures: 0,
        }
    }

    /// How long to wait before the next attempt; `jitter` in [0, 1] picks
    /// where in the upper half of the current step it lands.
    pub fn delay(&self, jitter: f64) -> Duration {
        let step = self
            .cfg
            .first_delay
            .saturating_mul(1u32 << self.attempts.min(20))
            .min(self.cfg.max_delay);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// What the attempt starting at `now` should do.
    pub fn next(&self, now: Instant) -> Attempt {
        if self.resumable && now < self.resume_until {
            Attempt::Resume
        } else if self.rejoin_failures < self.cfg.rejoin_attempts {
            Attempt::Rejoin
        } else {
            Attempt::GiveUp
        }
    }

    /// The resume window has passed by `now`: the server has ended the
    /// session and told the others we left.
    pub fn window_passed(&self, now: Instant) -> bool {
        now >= self.resume_until
    }

    /// Attempts made so far (1 during the first).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// An attempt begins.
    pub fn attempt_started(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
    }

    /// The server refused the resume: only a rejoin can help now.
    pub fn resume_refused(&mut self) {
        self.resumable = false;
    }

    /// A rejoin failed (no connection, or the join was refused).
    pub fn rejoin_failed(&mut self) {
        self.rejoin_failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn session() -> Session {
        let mut s = Session::new(SessionConfig::default());
        assert!(s.start(Some("tok".into()), Some(20)).is_empty());
        s
    }

    #[test]
    fn server_messages_are_deduplicated_by_seq() {
        let t0 = Instant::now();
        let mut s = session();
        assert!(s.receive(Some(1), t0));
        assert!(s.receive(Some(2), t0));
        // A replay repeats what we have: ignored.
        assert!(!s.receive(Some(1), t0));
        assert!(!s.receive(Some(2), t0));
        assert!(s.receive(Some(3), t0));
        // Frames without seq (welcome, pong, ack, error) always pass.
        assert!(s.receive(None, t0));
        assert_eq!(s.seen(), 3);
        assert_eq!(
            json(&s.resume_frame("r").unwrap()),
            json(r#"{"type":"resume","session":"tok","seq":3,"room":"r"}"#)
        );
    }

    #[test]
    fn acks_go_out_within_the_delay_or_at_64_unacked() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = session();
        assert_eq!(s.ack_deadline(), None);
        assert_eq!(s.ack_due(ms(5000)), None, "nothing to ack");
        s.receive(Some(1), ms(100));
        s.receive(Some(2), ms(600));
        // The deadline runs from the first unacked message, not the last.
        assert_eq!(s.ack_deadline(), Some(ms(1100)));
        assert_eq!(s.ack_due(ms(1099)), None);
        assert_eq!(
            json(&s.ack_due(ms(1100)).unwrap()),
            json(r#"{"type":"ack","seq":2}"#)
        );
        assert_eq!(s.ack_deadline(), None);
        assert_eq!(s.ack_due(ms(9000)), None, "acked already");
        // 64 unacked: at once, whatever the clock says.
        for seq in 3..=65 {
            s.receive(Some(seq), ms(2000));
            assert_eq!(s.ack_due(ms(2000)), None, "seq {seq}");
        }
        s.receive(Some(66), ms(2000));
        assert_eq!(
            json(&s.ack_due(ms(2000)).unwrap()),
            json(r#"{"type":"ack","seq":66}"#)
        );
        // Duplicates do not restart the clock.
        s.receive(Some(66), ms(3000));
        assert_eq!(s.ack_deadline(), None);
    }

    #[test]
    fn own_signals_are_numbered_kept_until_acked_and_resent_after_resume() {
        let mut s = session();
        for i in 1..=5 {
            let f = s.signal("bob", raw(&format!(r#"{{"n":{i}}}"#)));
            assert_eq!(
                json(&f),
                json(&format!(
                    r#"{{"type":"signal","to":"bob","data":{{"n":{i}}},"seq":{i}}}"#
                ))
            );
        }
        assert_eq!(s.unacked_signals(), 5);
        s.server_ack(2);
        assert_eq!(s.unacked_signals(), 3);
        // An old ack changes nothing.
        s.server_ack(1);
        assert_eq!(s.unacked_signals(), 3);
        // The resume says 3 got through: 4 and 5 go again, same seq.
        let again = s.resumed(Some("tok2".into()), Some(30), 3);
        let seqs: Vec<u64> = again
            .iter()
            .map(|f| json(f)["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(json(&again[1])["data"], json(r#"{"n":5}"#));
        assert_eq!(s.token(), Some("tok2"));
        assert_eq!(s.window(), Some(Duration::from_secs(30)));
        // Numbering carries on after the resumed ones.
        assert_eq!(json(&s.signal("bob", raw("{}")))["seq"], 6);
        s.server_ack(6);
        assert_eq!(s.unacked_signals(), 0);
        assert!(s.resumed(None, None, 6).is_empty());
        assert_eq!(s.token(), Some("tok2"), "kept when resumed has none");
    }

    #[test]
    fn a_new_session_renumbers_the_unacked_signals_of_the_old_one() {
        let t0 = Instant::now();
        let mut s = session();
        s.receive(Some(7), t0);
        s.signal("a", raw(r#"{"x":1}"#));
        s.signal("b", raw(r#"{"x":2}"#));
        s.signal("a", raw(r#"{"x":3}"#));
        s.server_ack(1);
        let carried = s.start(Some("new".into()), None);
        let got: Vec<(String, u64)> = carried
            .iter()
            .map(|f| {
                let v = json(f);
                (
                    v["to"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [("b".to_string(), 1), ("a".to_string(), 2)]);
        assert_eq!(s.seen(), 0, "server seq starts over");
        assert!(s.receive(Some(1), t0));
        assert_eq!(json(&s.signal("b", raw("{}")))["seq"], 3);
    }

    #[test]
    fn without_a_session_nothing_is_numbered_or_kept() {
        let mut s = Session::new(SessionConfig::default());
        s.start(None, None);
        let f = s.signal("bob", raw("{}"));
        assert_eq!(json(&f), json(r#"{"type":"signal","to":"bob","data":{}}"#));
        assert_eq!(s.unacked_signals(), 0);
        assert!(!s.can_resume());
        assert!(s.resume_frame("r").is_none());
    }

    #[test]
    fn an_overflowing_outbox_rules_out_a_resume() {
        let mut s = Session::new(SessionConfig {
            max_outbox: 3,
            ..SessionConfig::default()
        });
        s.start(Some("t".into()), None);
        for _ in 0..3 {
            s.signal("p", raw("{}"));
        }
        assert!(s.can_resume());
        s.signal("p", raw("{}"));
        assert_eq!(s.unacked_signals(), 3);
        assert!(!s.can_resume());
        let r = Recovery::new(ReconnectConfig::default(), &s, Instant::now());
        assert_eq!(r.next(Instant::now()), Attempt::Rejoin);
        // A new session is clean again.
        s.start(Some("t2".into()), None);
        assert!(s.can_resume());
    }

    #[test]
    fn backoff_is_jittered_exponential_first_within_a_second_capped_at_ten() {
        let mut r = Recovery::new(ReconnectConfig::default(), &session(), Instant::now());
        let mut lows = vec![];
        let mut highs = vec![];
        for _ in 0..10 {
            lows.push(r.delay(0.0));
            highs.push(r.delay(1.0));
            r.attempt_started();
        }
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(lows[0], ms(500));
        assert_eq!(highs[0], s(1), "the first retry comes within 1 s");
        assert_eq!((lows[1], highs[1]), (s(1), s(2)));
        assert_eq!((lows[2], highs[2]), (s(2), s(4)));
        assert_eq!((lows[3], highs[3]), (s(4), s(8)));
        for i in 4..10 {
            assert_eq!((lows[i], highs[i]), (s(5), s(10)), "attempt {i}");
        }
        assert!(r.delay(0.3) > ms(5000) && r.delay(0.3) < s(10));
        // Out-of-range jitter stays in range.
        assert_eq!(r.delay(7.0), s(10));
        assert_eq!(r.attempts(), 10);
    }

    #[test]
    fn recovery_resumes_within_the_window_then_rejoins_then_gives_up() {
        let t0 = Instant::now();
        let s = session(); // window 20 s
        let cfg = ReconnectConfig {
            rejoin_attempts: 2,
            ..ReconnectConfig::default()
        };
        let mut r = Recovery::new(cfg.clone(), &s, t0);
        assert_eq!(r.next(t0), Attempt::Resume);
        assert_eq!(r.next(t0 + Duration::from_millis(19_999)), Attempt::Resume);
        let late = t0 + Duration::from_secs(20);
        assert!(!r.window_passed(t0 + Duration::from_millis(19_999)));
        assert!(r.window_passed(late));
        assert_eq!(r.next(late), Attempt::Rejoin);
        r.rejoin_failed();
        assert_eq!(r.next(late), Attempt::Rejoin);
        r.rejoin_failed();
        assert_eq!(r.next(late), Attempt::GiveUp);

        // A refused resume goes straight to rejoining, window or not.
        let mut r = Recovery::new(cfg.clone(), &s, t0);
        r.resume_refused();
        assert_eq!(r.next(t0), Attempt::Rejoin);
        assert!(!r.window_passed(t0));

        // Without a window from the server, the default applies.
        let mut s = Session::new(SessionConfig::default());
        s.start(Some("t".into()), None);
        let r = Recovery::new(cfg, &s, t0);
        assert_eq!(r.next(t0 + Duration::from_secs(19)), Attempt::Resume);
        assert_eq!(r.next(t0 + Duration::from_secs(21)), Attempt::Rejoin);
    }
}
