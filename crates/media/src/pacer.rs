//! The send pacer of one track: given the file's frames and the current
//! time it hands out the frames that are due, following the file's
//! timestamps (not as fast as possible), with media times that keep going
//! up across loops and jumps. A keyframe request (PLI/FIR) moves playback
//! to the next keyframe at once, or back to the last one when none follows
//! in this pass (a repeat of a few frames rather than a broken picture).
//! Requests are rate-limited: within the minimum interval after the last
//! keyframe handed out, a receiver's request is dropped (that keyframe
//! answers it), so a receiver that keeps asking cannot turn the stream into
//! keyframes only; a new receiver's need for one is held until the
//! interval ends (unless a keyframe went out meanwhile).
//!
//! Input: [`Pacer::poll`] with the time, [`Pacer::keyframe_request`].
//! Output: [`Due`] frames; [`Pacer::next_at`] says when to poll again.

use crate::Track;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A frame to send now.
#[derive(Debug, Clone)]
pub struct Due {
    /// Its index in the track.
    pub index: usize,
    /// Media (RTP) time in the codec's clock units, counted from the first
    /// frame ever sent: it never goes back.
    pub media_time: u64,
    /// A keyframe.
    pub keyframe: bool,
    /// The frame (shared with the track: no copy).
    pub data: Arc<[u8]>,
}

/// Paces one track.
#[derive(Debug)]
pub struct Pacer {
    track: Arc<Track>,
    looping: bool,
    /// Next frame to hand out.
    pos: usize,
    /// When the current pass's file time 0 is due.
    epoch: Instant,
    /// The media time of the current pass's file time 0 (may be negative
    /// after a jump forward: only frames after the jump are sent).
    base: i64,
    passes: u64,
    done: bool,
    /// Shortest time from a keyframe to a jump caused by a request.
    min_keyframe_interval: Duration,
    /// When the last keyframe was handed out.
    last_keyframe: Option<Instant>,
    /// A new receiver came too soon after the last keyframe; its jump is
    /// made at `last_keyframe + min_keyframe_interval`.
    held_request: bool,
}

impl Pacer {
    /// Starts at the first frame, due at `now`. Keyframe requests are not
    /// rate-limited until [`Pacer::set_min_keyframe_interval`].
    pub fn new(track: Arc<Track>, looping: bool, now: Instant) -> Self {
        Pacer {
            track,
            looping,
            pos: 0,
            epoch: now,
            base: 0,
            passes: 0,
            done: false,
            min_keyframe_interval: Duration::ZERO,
            last_keyframe: None,
            held_request: false,
        }
    }

    /// No jump for a request within `interval` after the last keyframe
    /// handed out (zero: no limit).
    pub fn set_min_keyframe_interval(&mut self, interval: Duration) {
        self.min_keyframe_interval = interval;
    }

    /// When a held request is to be honoured.
    fn held_until(&self) -> Option<Instant> {
        if !self.held_request {
            return None;
        }
        self.last_keyframe.map(|t| t + self.min_keyframe_interval)
    }

    fn clock(&self) -> u64 {
        u64::from(self.track.codec.clock_rate())
    }

    fn to_duration(&self, ts: u64) -> Duration {
        Duration::from_micros((u128::from(ts) * 1_000_000 / u128::from(self.clock())) as u64)
    }

    /// When the next frame is due; `None` once playback ended (no loop).
    pub fn next_at(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let frame = self.epoch + self.to_duration(self.track.frames[self.pos].ts);
        Some(self.held_until().map_or(frame, |h| h.min(frame)))
    }

    /// The next frame if it is due at `now`; call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if now < self.next_at()? {
            return None;
        }
        if self.held_until().is_some_and(|h| now >= h) {
            self.held_request = false;
            if !self.track.frames[self.pos].keyframe {
                self.jump(now);
            }
            if now < self.next_at()? {
                return None;
            }
        }
        let f = &self.track.frames[self.pos];
        if f.keyframe {
            self.last_keyframe = Some(now);
            self.held_request = false;
        }
        let due = Due {
            index: self.pos,
            media_time: (self.base + f.ts as i64).max(0) as u64,
            keyframe: f.keyframe,
            data: f.data.clone(),
        };
        self.pos += 1;
        if self.pos == self.track.frames.len() {
            if self.looping {
                // The next pass starts one frame length after the last.
                self.pos = 0;
                self.passes += 1;
                self.epoch += self.to_duration(self.track.duration);
                self.base += self.track.duration as i64;
            } else {
                self.done = true;
            }
        }
        Some(due)
    }

    /// A receiver asked for a keyframe (PLI/FIR) at `now`. Moves playback
    /// so the next frame handed out is a keyframe, due at once: the next
    /// one in this pass (later frames are skipped), else, when looping, the
    /// start of the next pass, else the last one that was sent (its frames
    /// are repeated). Media time goes on from where it was. Returns whether
    /// anything moved: not when the next frame is a keyframe already, nor
    /// within the minimum interval after the last keyframe handed out. That
    /// keyframe answers the request: it is on its way, or the request
    /// crossed it (a receiver asks as it starts waiting for one); a
    /// receiver that lost it asks again.
    pub fn keyframe_request(&mut self, now: Instant) -> bool {
        if self.done || self.track.frames[self.pos].keyframe || self.too_soon(now) {
            return false;
        }
        self.jump(now);
        true
    }

    /// A receiver joined at `now` and needs a keyframe: as
    /// [`Pacer::keyframe_request`], but within the minimum interval the
    /// jump is held, not dropped (the last keyframe went out before this
    /// receiver could get it): [`Pacer::next_at`] and [`Pacer::poll`] carry
    /// it out when the interval ends, unless the file's own next keyframe
    /// comes first. Returns whether playback moved now.
    pub fn new_receiver(&mut self, now: Instant) -> bool {
        if self.done || self.track.frames[self.pos].keyframe {
            return false;
        }
        if self.too_soon(now) {
            self.held_request = true;
            return false;
        }
        self.jump(now);
        true
    }

    fn too_soon(&self, now: Instant) -> bool {
        self.last_keyframe
            .is_some_and(|last| now < last + self.min_keyframe_interval)
    }

    /// Whether a new receiver's keyframe is being held by the rate limit.
    pub fn keyframe_held(&self) -> bool {
        self.held_request
    }

    /// Moves playback so the next frame is a keyframe due at `now` (the
    /// next frame is not one).
    fn jump(&mut self, now: Instant) {
        let frames = &self.track.frames;
        // What the frame about to go out would have had: the jump keeps it.
        let here_ts = frames[self.pos].ts as i64;
        let target = match frames[self.pos..].iter().position(|f| f.keyframe) {
            Some(k) => self.pos + k,
            None if self.looping => {
                // The next pass begins with a keyframe (the reader makes sure).
                let media_here = self.base + here_ts;
                self.base = media_here;
                self.pos = 0;
                self.passes += 1;
                self.epoch = now;
                return;
            }
            None => frames[..self.pos]
                .iter()
                .rposition(|f| f.keyframe)
                .unwrap_or(0),
        };
        let t_ts = frames[target].ts as i64;
        self.base += here_ts - t_ts;
        self.pos = target;
        // Due now; the frames after it keep their spacing.
        self.epoch = now
            .checked_sub(self.to_duration(t_ts as u64))
            .unwrap_or(now);
    }

    /// Playback has ended (never when looping).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Passes completed through the file (loops).
    pub fn passes(&self) -> u64 {
        self.passes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, Frame};

    /// 30 fps video, `n` frames, a keyframe every `gop`.
    fn track(n: usize, gop: usize) -> Arc<Track> {
        let frames = (0..n)
            .map(|i| Frame {
                ts: i as u64 * 3000,
                keyframe: i % gop == 0,
                data: Arc::from(vec![i as u8]),
            })
            .collect();
        Arc::new(Track::new(Codec::Vp8, frames, Some((2, 2)), None).unwrap())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Everything due by `now`, as (index, media time).
    fn drain(p: &mut Pacer, now: Instant) -> Vec<(usize, u64)> {
        std::iter::from_fn(|| p.poll(now))
            .map(|d| (d.index, d.media_time))
            .collect()
    }

    #[test]
    fn follows_the_file_timestamps() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(10, 5), false, t0);
        assert_eq!(drain(&mut p, t0), vec![(0, 0)]);
        assert_eq!(p.next_at(), Some(t0 + Duration::from_micros(33_333)));
        assert_eq!(drain(&mut p, t0 + ms(30)), vec![]);
        assert_eq!(drain(&mut p, t0 + ms(34)), vec![(1, 3000)]);
        // Late: everything due comes at once, in order.
        assert_eq!(drain(&mut p, t0 + ms(101)), vec![(2, 6000), (3, 9000)]);
        drain(&mut p, t0 + ms(1000));
        assert!(p.is_done());
        assert_eq!(p.next_at(), None);
        assert!(p.poll(t0 + ms(5000)).is_none());
    }

    #[test]
    fn loops_with_media_time_going_on() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(3, 3), true, t0);
        let got = drain(&mut p, t0 + ms(190));
        // 100 ms per pass; frames at 0, 33, 66, 100, 133, 166 ms.
        assert_eq!(
            got,
            vec![
                (0, 0),
                (1, 3000),
                (2, 6000),
                (0, 9000),
                (1, 12000),
                (2, 15000)
            ]
        );
        assert_eq!(p.passes(), 2);
        assert!(!p.is_done());
    }

    #[test]
    fn keyframe_request_jumps_to_the_next_keyframe() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(20, 10), false, t0);
        assert_eq!(drain(&mut p, t0 + ms(40)), vec![(0, 0), (1, 3000)]);
        let now = t0 + ms(50);
        assert!(p.keyframe_request(now));
        // Frame 10 now, with the media time frame 2 would have had.
        assert_eq!(drain(&mut p, now), vec![(10, 6000)]);
        let d = p.poll(now + ms(34)).unwrap();
        assert_eq!((d.index, d.media_time), (11, 9000));
        // At a keyframe already: nothing moves.
        let mut q = Pacer::new(track(20, 10), false, t0);
        assert!(!q.keyframe_request(t0));
    }

    #[test]
    fn keyframe_request_after_the_last_keyframe_repeats_from_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(15, 10), false, t0);
        let got = drain(&mut p, t0 + ms(400)); // frames 0..=12
        assert_eq!(got.last(), Some(&(12, 36000)));
        let now = t0 + ms(405);
        assert!(p.keyframe_request(now));
        assert_eq!(drain(&mut p, now), vec![(10, 39000)]);
        assert_eq!(drain(&mut p, now + ms(34)), vec![(11, 42000)]);
    }

    #[test]
    fn keyframe_request_when_looping_starts_the_next_pass() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(15, 10), true, t0);
        drain(&mut p, t0 + ms(400));
        let now = t0 + ms(405);
        assert!(p.keyframe_request(now));
        assert_eq!(drain(&mut p, now), vec![(0, 39000)]);
        assert_eq!(p.passes(), 1);
    }

    #[test]
    fn keyframe_requests_within_the_minimum_interval_are_dropped() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(100, 50), false, t0);
        p.set_min_keyframe_interval(ms(500));
        // Frame 0, a keyframe, goes out at t0.
        assert_eq!(drain(&mut p, t0), vec![(0, 0)]);
        assert_eq!(drain(&mut p, t0 + ms(40)), vec![(1, 3000)]);
        // A receiver that keeps asking moves nothing within 500 ms of it.
        for t in [50, 80, 300, 499] {
            assert!(!p.keyframe_request(t0 + ms(t)), "{t} ms");
        }
        assert!(!p.keyframe_held());
        assert_eq!(drain(&mut p, t0 + ms(600)).last(), Some(&(18, 54000)));
        // After it, the next request jumps to frame 50 at once...
        assert!(p.keyframe_request(t0 + ms(610)));
        assert_eq!(drain(&mut p, t0 + ms(610)), vec![(50, 57000)]);
        // ...and the interval starts again from that keyframe.
        assert!(!p.keyframe_request(t0 + ms(1100)));
        assert!(p.keyframe_request(t0 + ms(1110)));
        assert_eq!(drain(&mut p, t0 + ms(1110)).first().map(|d| d.0), Some(50));
    }

    #[test]
    fn a_new_receiver_within_the_minimum_interval_is_held() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(100, 50), false, t0);
        p.set_min_keyframe_interval(ms(500));
        drain(&mut p, t0);
        assert!(!p.new_receiver(t0 + ms(50)));
        assert!(p.keyframe_held());
        // Frames go on; the pacer wants a poll when the interval ends
        // (frame 15 is due then too).
        assert_eq!(drain(&mut p, t0 + ms(499)).last(), Some(&(14, 42000)));
        assert_eq!(p.next_at(), Some(t0 + ms(500)));
        // Then the jump to frame 50, with the media time of frame 15.
        assert_eq!(drain(&mut p, t0 + ms(500)), vec![(50, 45000)]);
        assert!(!p.keyframe_held());
        // Held until 510 ms after 400 ms of frames: the poll comes early.
        let mut q = Pacer::new(track(100, 50), false, t0);
        q.set_min_keyframe_interval(ms(510));
        drain(&mut q, t0);
        assert!(!q.new_receiver(t0 + ms(400)));
        assert_eq!(drain(&mut q, t0 + ms(509)).last().map(|d| d.0), Some(15));
        assert_eq!(q.next_at(), Some(t0 + ms(510)));
        assert_eq!(drain(&mut q, t0 + ms(510)), vec![(50, 48000)]);
        // Past the interval a new receiver moves playback at once.
        let mut r = Pacer::new(track(100, 50), false, t0);
        r.set_min_keyframe_interval(ms(500));
        drain(&mut r, t0);
        drain(&mut r, t0 + ms(600));
        assert!(r.new_receiver(t0 + ms(600)));
        assert_eq!(drain(&mut r, t0 + ms(600)).first().map(|d| d.0), Some(50));
    }

    #[test]
    fn a_keyframe_from_the_file_answers_a_held_new_receiver() {
        let t0 = Instant::now();
        let mut p = Pacer::new(track(40, 10), false, t0);
        p.set_min_keyframe_interval(ms(500));
        drain(&mut p, t0);
        drain(&mut p, t0 + ms(250)); // frames 1..=7
        assert!(!p.new_receiver(t0 + ms(260)));
        // Frame 10, a keyframe, is due at 333 ms, before the interval ends:
        // it answers the request, and no jump follows at 500 ms.
        assert_eq!(drain(&mut p, t0 + ms(334)).last(), Some(&(10, 30000)));
        assert!(!p.keyframe_held());
        let got = drain(&mut p, t0 + ms(600));
        assert_eq!(
            got.iter().map(|d| d.0).collect::<Vec<_>>(),
            (11..=18).collect::<Vec<_>>()
        );
    }
}
