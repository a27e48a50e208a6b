//! The recorder of one received track: frames with their RTP times in,
//! container bytes out (IVF for VP8/VP9, Ogg Opus for Opus). Times come
//! from RTP, not from arrival, so a pause or lost frames leave a gap of
//! the right length instead of squeezing the timeline. Video waits for a
//! keyframe (what comes before cannot be decoded) and says so through
//! [`Recorder::wants_keyframe`], for the driver to ask the sender.
//!
//! Both containers are written front to back and stay readable up to the
//! last whole frame or page if the process dies; [`Recorder::finish`]
//! gives the IVF header again with the duration, for a file that can seek.

use crate::codec::{opus_packet_samples, Codec};
use crate::ivf::{IvfWriter, HEADER_LEN};
use crate::opus::OpusWriter;
use std::time::Duration;

/// What a track's file holds so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Media time from the first frame kept to the end of the last.
    pub duration: Duration,
    /// Container bytes produced.
    pub bytes: u64,
    /// Frames (or Opus packets) kept.
    pub frames: u64,
    /// Frames dropped: video before the first keyframe, Opus packets that
    /// do not parse.
    pub dropped: u64,
}

enum Writer {
    /// Video before its first keyframe.
    Waiting,
    Ivf(IvfWriter),
    Opus(OpusWriter),
}

/// Records one track.
pub struct Recorder {
    codec: Codec,
    writer: Writer,
    /// RTP time unwrapping: the last 32-bit timestamp and the extended one.
    last_rtp: Option<(u32, u64)>,
    first: u64,
    last_ts: u64,
    last_len: u64,
    progress: Progress,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("codec", &self.codec)
            .field("progress", &self.progress)
            .finish()
    }
}

/// Opus packets per Ogg page: 10 x 20 ms, so a crash loses at most 200 ms.
const OPUS_PACKETS_PER_PAGE: u32 = 10;

impl Recorder {
    /// A recorder for `codec`; `serial` is the Ogg stream serial (ignored
    /// for video).
    pub fn new(codec: Codec, serial: u32) -> Self {
        let writer = match codec {
            Codec::Opus => Writer::Opus(OpusWriter::new(serial, 2, OPUS_PACKETS_PER_PAGE)),
            _ => Writer::Waiting,
        };
        Recorder {
            codec,
            writer,
            last_rtp: None,
            first: 0,
            last_ts: 0,
            last_len: 0,
            progress: Progress::default(),
        }
    }

    /// The codec recorded.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Video that has seen no keyframe yet.
    pub fn wants_keyframe(&self) -> bool {
        matches!(self.writer, Writer::Waiting)
    }

    /// Extends a 32-bit RTP time (str0m may hand it out extended already;
    /// only the low 32 bits are trusted) to 64 bits, forward or a little
    /// back from the previous one.
    fn extend(&mut self, rtp: u64) -> u64 {
        let low = rtp as u32;
        let ext = match self.last_rtp {
            None => u64::from(low) + (1 << 32), // room to go back a little
            Some((prev, prev_ext)) => {
                let delta = low.wrapping_sub(prev) as i32;
                prev_ext.saturating_add_signed(i64::from(delta))
            }
        };
        self.last_rtp = Some((low, ext));
        ext
    }

    /// Records a frame with RTP time `rtp`, appending container bytes to
    /// `out`.
    pub fn push(&mut self, rtp: u64, data: &[u8], out: &mut Vec<u8>) {
        let ext = self.extend(rtp);
        let before = out.len();
        match &mut self.writer {
            Writer::Waiting => {
                let size = self.codec.frame_size(data);
                let Some(size) = size else {
                    self.progress.dropped += 1;
                    return;
                };
                self.first = ext;
                let mut w = IvfWriter::new(self.codec, size);
                out.extend_from_slice(&w.header());
                w.frame(0, data, out);
                self.writer = Writer::Ivf(w);
                self.last_ts = 0;
                self.last_len = 0;
            }
            Writer::Ivf(w) => {
                // Never back in time: IVF readers want rising timestamps.
                let ts = ext.saturating_sub(self.first).max(self.last_ts);
                self.last_len = ts - self.last_ts;
                self.last_ts = ts;
                w.frame(ts, data, out);
            }
            Writer::Opus(w) => {
                let Some(n) = opus_packet_samples(data) else {
                    self.progress.dropped += 1;
                    return;
                };
                if self.progress.frames == 0 {
                    self.first = ext;
                }
                let ts = ext.saturating_sub(self.first).max(self.last_ts);
                self.last_ts = ts;
                self.last_len = u64::from(n);
                w.packet(data, ts + u64::from(n));
                w.drain(out);
            }
        }
        self.progress.frames += 1;
        self.progress.bytes += (out.len() - before) as u64;
        let end = self.last_ts + self.last_len;
        self.progress.duration =
            Duration::from_micros(end * 1_000_000 / u64::from(self.codec.clock_rate()));
    }

    /// Ends the file: appends what is left to `out` and, for IVF, returns
    /// the header with the final duration, to write over the first
    /// [`HEADER_LEN`] bytes (optional: players read the file without it).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Option<[u8; HEADER_LEN]> {
        let before = out.len();
        let header = match &mut self.writer {
            Writer::Waiting => None,
            Writer::Ivf(w) => Some(w.header()),
            Writer::Opus(w) => {
                w.finish(out);
                None
            }
        };
        self.progress.bytes += (out.len() - before) as u64;
        header
    }

    /// What was recorded so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8(key: bool) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&320u16.to_le_bytes());
        f.extend_from_slice(&240u16.to_le_bytes());
        f.extend_from_slice(&[9; 10]);
        if !key {
            f[0] |= 1;
        }
        f
    }

    #[test]
    fn video_waits_for_a_keyframe_and_keeps_rtp_spacing() {
        let mut r = Recorder::new(Codec::Vp8, 0);
        let mut out = Vec::new();
        r.push(1000, &vp8(false), &mut out);
        assert!(out.is_empty() && r.wants_keyframe());
        assert_eq!(r.progress().dropped, 1);
        r.push(4000, &vp8(true), &mut out);
        assert!(!r.wants_keyframe());
        r.push(7000, &vp8(false), &mut out);
        // A 2 s pause (or loss): the timeline keeps it.
        r.push(7000 + 180_000, &vp8(false), &mut out);
        let header = r.finish(&mut out).unwrap();
        out[..HEADER_LEN].copy_from_slice(&header);
        let t = crate::ivf::read(&out, 1 << 20).unwrap();
        let ts: Vec<u64> = t.frames.iter().map(|f| f.ts).collect();
        assert_eq!(ts, vec![0, 3000, 183_000]);
        assert_eq!(t.size, Some((320, 240)));
        let p = r.progress();
        assert_eq!((p.frames, p.bytes), (3, out.len() as u64));
        // 183000 + the last frame's 180000 of spacing... at 90 kHz.
        assert_eq!(
            p.duration,
            Duration::from_micros((183_000 + 180_000) * 1_000_000 / 90_000)
        );
        // The header's length: last time plus the average frame.
        assert_eq!(
            u32::from_le_bytes(header[24..28].try_into().unwrap()),
            183_000 + 91_500
        );
    }

    #[test]
    fn rtp_time_wraps_without_a_jump() {
        let mut r = Recorder::new(Codec::Vp8, 0);
        let mut out = Vec::new();
        let start = u64::from(u32::MAX) - 3000;
        r.push(start, &vp8(true), &mut out);
        r.push(start + 3000, &vp8(false), &mut out);
        r.push((start + 6000) & 0xffff_ffff, &vp8(false), &mut out); // wrapped
        r.push(start + 9000, &vp8(false), &mut out); // or extended
        r.finish(&mut out);
        let t = crate::ivf::read(&out, 1 << 20).unwrap();
        let ts: Vec<u64> = t.frames.iter().map(|f| f.ts).collect();
        assert_eq!(ts, vec![0, 3000, 6000, 9000]);
    }

    #[test]
    fn opus_granules_follow_rtp_and_the_file_is_finished() {
        let mut r = Recorder::new(Codec::Opus, 77);
        let mut out = Vec::new();
        let pkt = [0xfc, 1, 2, 3];
        for i in 0..20u64 {
            // A gap of 1 s after packet 9.
            let rtp = 500 + i * 960 + if i >= 10 { 48_000 } else { 0 };
            r.push(rtp, &pkt, &mut out);
        }
        r.push(0, &[], &mut out); // not Opus: dropped
        r.finish(&mut out);
        assert_eq!(r.progress().dropped, 1);
        assert_eq!(r.progress().frames, 20);
        assert_eq!(r.progress().bytes, out.len() as u64);
        assert_eq!(r.progress().duration, Duration::from_millis(1400));
        let t = crate::opus::read(&out, 4096).unwrap();
        assert_eq!(t.frames.len(), 20);
        // The last page carries end-of-stream and the gap's granule.
        let mut rd = ogg::PacketReader::new(std::io::Cursor::new(&out));
        let mut last = None;
        while let Ok(Some(p)) = rd.read_packet() {
            last = Some((p.last_in_stream(), p.absgp_page()));
        }
        assert_eq!(last, Some((true, 19 * 960 + 48_000 + 960)));
    }
}
