//! IVF, the container libvpx and ffmpeg write VP8/VP9 into: a 32-byte file
//! header (`DKIF`, version, header length, fourcc, width, height, time base
//! rate and scale, length) and a 12-byte header per frame (size, 64-bit
//! timestamp in time-base units). Small enough that no crate is worth
//! it; the reader takes untrusted bytes and never panics.

use crate::codec::Codec;
use crate::{Error, Frame, Track};
use std::sync::Arc;

/// Bytes in the file header.
pub const HEADER_LEN: usize = 32;
const FRAME_HEADER_LEN: usize = 12;
/// Longest gap between two frames the reader takes as real.
pub const MAX_GAP_SECS: u32 = 60;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads a whole IVF file. A bad header is an error; a frame cut short by
/// the end of the file ends the track at the last whole frame, with
/// [`Track::truncated`] saying so. Frames larger than `max_frame` bytes are
/// an error (a corrupt size field would otherwise look like a cut file).
pub fn read(bytes: &[u8], max_frame: usize) -> Result<Track, Error> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Format(format!(
            "IVF: {} bytes is shorter than the 32-byte header",
            bytes.len()
        )));
    }
    if &bytes[0..4] != b"DKIF" {
        return Err(Error::Format("not an IVF file (no DKIF signature)".into()));
    }
    let header_len = usize::from(u16_at(bytes, 6));
    if header_len < HEADER_LEN || header_len > bytes.len() {
        return Err(Error::Format(format!(
            "IVF: bad header length {header_len}"
        )));
    }
    let codec = match &bytes[8..12] {
        b"VP80" => Codec::Vp8,
        b"VP90" => Codec::Vp9,
        other => {
            return Err(Error::Format(format!(
                "IVF: codec {:?} is not supported (VP80 and VP90 are)",
                String::from_utf8_lossy(other)
            )))
        }
    };
    let size = (u16_at(bytes, 12), u16_at(bytes, 14));
    let (rate, scale) = (u32_at(bytes, 16), u32_at(bytes, 20));
    if rate == 0 || scale == 0 {
        return Err(Error::Format(format!("IVF: bad time base {scale}/{rate}")));
    }
    let clock = u128::from(codec.clock_rate());
    let mut frames = Vec::new();
    let mut at = header_len;
    let mut truncated = None;
    let mut first_pts = None;
    while at < bytes.len() {
        if bytes.len() - at < FRAME_HEADER_LEN {
            truncated = Some(format!("IVF: frame header cut short at byte {at}"));
            break;
        }
        let len = u32_at(bytes, at) as usize;
        let pts = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8 bytes"));
        if len > max_frame {
            return Err(Error::Format(format!(
                "IVF: frame {} at byte {at} claims {len} bytes, more than the {max_frame} allowed",
                frames.len()
            )));
        }
        let start = at + FRAME_HEADER_LEN;
        if bytes.len() - start < len {
            truncated = Some(format!(
                "IVF: frame {} at byte {at} cut short ({} of {len} bytes)",
                frames.len(),
                bytes.len() - start
            ));
            break;
        }
        let data = &bytes[start..start + len];
        at = start + len;
        if data.is_empty() {
            continue;
        }
        let first = *first_pts.get_or_insert(pts);
        // Timestamps must not go back; a corrupt one ends nothing, it is
        // held at the previous frame's time.
        let rel = pts.saturating_sub(first);
        let ts = u128::from(rel) * u128::from(scale) * clock / u128::from(rate);
        let prev = frames.last().map_or(0, |f: &Frame| f.ts);
        // A frame far after the previous one is a corrupt timestamp, not
        // a pause worth waiting for: the file ends there.
        if ts > u128::from(prev) + u128::from(MAX_GAP_SECS) * clock {
            truncated = Some(format!(
                "IVF: frame {} at byte {at} is more than {MAX_GAP_SECS} s after the one before",
                frames.len()
            ));
            break;
        }
        let ts = (ts as u64).max(prev);
        frames.push(Frame {
            ts,
            keyframe: codec.is_keyframe(data),
            data: Arc::from(data),
        });
    }
    Track::new(codec, frames, Some(size), truncated)
}

/// Writes IVF as frames arrive. The header goes out with the first frame;
/// [`IvfWriter::header`] gives it again with the final length for the
/// finish, when the output can seek.
#[derive(Debug)]
pub struct IvfWriter {
    codec: Codec,
    size: (u16, u16),
    frames: u32,
    last_ts: u64,
}

impl IvfWriter {
    /// A writer for `codec` (a video codec) at picture `size`. The time base
    /// is the RTP clock, 1/90000.
    pub fn new(codec: Codec, size: (u16, u16)) -> Self {
        IvfWriter {
            codec,
            size,
            frames: 0,
            last_ts: 0,
        }
    }

    /// The file header; `length` is the duration so far in time-base units
    /// (what ffmpeg reads there), so it is 0 until the finish rewrites it.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(b"DKIF");
        h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[8..12].copy_from_slice(match self.codec {
            Codec::Vp9 => b"VP90",
            _ => b"VP80",
        });
        h[12..14].copy_from_slice(&self.size.0.to_le_bytes());
        h[14..16].copy_from_slice(&self.size.1.to_le_bytes());
        h[16..20].copy_from_slice(&self.codec.clock_rate().to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        let length = if self.frames > 1 {
            // The last frame lasts as long as the average one.
            let avg = self.last_ts / u64::from(self.frames - 1);
            self.last_ts + avg
        } else {
            0
        };
        h[24..28].copy_from_slice(&(length.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        h
    }

    /// Appends one frame at `ts` (time-base units from the start) to `out`.
    pub fn frame(&mut self, ts: u64, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(data);
        self.frames += 1;
        self.last_ts = ts;
    }

    /// Frames written.
    pub fn frames(&self) -> u32 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp8_key() -> Vec<u8> {
        let mut kf = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        kf.extend_from_slice(&64u16.to_le_bytes());
        kf.extend_from_slice(&48u16.to_le_bytes());
        kf.extend_from_slice(&[7; 20]);
        kf
    }

    /// An IVF file at 30 fps (time base 1/30) with `n` frames, a keyframe
    /// every `gop`.
    fn file(n: u64, gop: u64) -> Vec<u8> {
        let mut w = IvfWriter::new(Codec::Vp8, (64, 48));
        let mut body = Vec::new();
        for i in 0..n {
            let mut f = vp8_key();
            if i % gop != 0 {
                f[0] |= 1;
            }
            w.frame(i, &f, &mut body);
        }
        let mut h = w.header();
        // Our writer's time base is 1/90000; this file says 1/30.
        h[16..20].copy_from_slice(&30u32.to_le_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_frames_times_and_keyframes() {
        let t = read(&file(10, 4), 1 << 20).unwrap();
        assert_eq!(t.codec, Codec::Vp8);
        assert_eq!(t.size, Some((64, 48)));
        assert_eq!(t.frames.len(), 10);
        assert_eq!(t.frames[3].ts, 9000); // 3/30 s at 90 kHz
        let keys: Vec<bool> = t.frames.iter().map(|f| f.keyframe).collect();
        assert_eq!(keys.iter().filter(|k| **k).count(), 3);
        assert!(keys[0] && keys[4] && keys[8]);
        assert_eq!(t.duration, 30_000); // ten frames of 3000
        assert!(t.truncated.is_none());
    }

    #[test]
    fn a_cut_file_ends_at_the_last_whole_frame() {
        let f = file(10, 4);
        let t = read(&f[..f.len() - 5], 1 << 20).unwrap();
        assert_eq!(t.frames.len(), 9);
        assert!(t.truncated.as_deref().unwrap().contains("frame 9"));
        let t = read(&f[..HEADER_LEN + 5], 1 << 20);
        assert!(matches!(t, Err(Error::Format(m)) if m.contains("before the file ends")));
    }

    #[test]
    fn bad_headers_are_clear_errors() {
        let f = file(3, 1);
        let msg = |r: Result<Track, Error>| r.unwrap_err().to_string();
        assert!(msg(read(&f[..10], 1 << 20)).contains("shorter than"));
        let mut bad = f.clone();
        bad[0] = b'X';
        assert!(msg(read(&bad, 1 << 20)).contains("DKIF"));
        let mut bad = f.clone();
        bad[8..12].copy_from_slice(b"AV01");
        assert!(msg(read(&bad, 1 << 20)).contains("AV01"));
        let mut bad = f.clone();
        bad[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert!(msg(read(&bad, 1 << 20)).contains("time base"));
        assert!(msg(read(&f, 4)).contains("more than the 4 allowed"));
    }

    #[test]
    fn random_and_cut_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let good = file(12, 5);
        for n in 0..good.len() {
            let _ = read(&good[..n], 1 << 20);
        }
        for _ in 0..5_000 {
            let mut v = good.clone();
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            let _ = read(&v, 1 << 20);
            let n = rng.random_range(0..200);
            let mut junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && junk.len() >= 4 {
                junk[0..4].copy_from_slice(b"DKIF");
            }
            let _ = read(&junk, 1 << 20);
        }
    }

    #[test]
    fn writer_header_carries_the_duration() {
        let mut w = IvfWriter::new(Codec::Vp9, (320, 180));
        let mut out = Vec::new();
        for i in 0..4 {
            w.frame(i * 3000, &[1, 2, 3], &mut out);
        }
        let h = w.header();
        assert_eq!(&h[8..12], b"VP90");
        assert_eq!(u32_at(&h, 24), 12_000);
        assert_eq!(out.len(), 4 * 15);
    }
}
