//! Ogg Opus (RFC 7845): pages through the `ogg` crate, the two header
//! packets (`OpusHead`, `OpusTags`) and packet times here. Reading takes
//! untrusted bytes; writing keeps its output in memory for the caller to
//! drain, so neither touches a file.

use crate::codec::{opus_packet_samples, Codec};
use crate::{Error, Frame, Track};
use ogg::writing::PacketWriteEndInfo;
use std::io::Cursor;
use std::sync::Arc;

/// Reads a whole Ogg Opus file (the first logical stream). Frame times
/// come from each packet's length (its TOC byte). A corrupt page, or a
/// packet that is not Opus, after some good audio ends the track there
/// with [`Track::truncated`] set; before any, it is an error.
pub fn read(bytes: &[u8], max_frame: usize) -> Result<Track, Error> {
    let mut r = ogg::PacketReader::new(Cursor::new(bytes));
    let bad = |m: String| Error::Format(format!("Ogg: {m}"));
    let head = r
        .read_packet()
        .map_err(|e| bad(format!("no Ogg page at the start: {e}")))?
        .ok_or_else(|| bad("the file is empty".into()))?;
    if head.data.len() < 19 || &head.data[0..8] != b"OpusHead" {
        return Err(bad("the first stream is not Opus (no OpusHead)".into()));
    }
    let serial = head.stream_serial();
    let pre_skip = u64::from(u16::from_le_bytes([head.data[10], head.data[11]]));
    let mut frames = Vec::new();
    let mut truncated = None;
    let mut samples: u64 = 0;
    let mut seen_tags = false;
    loop {
        let p = match r.read_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                truncated = Some(format!("Ogg: {e} after {} packets", frames.len()));
                break;
            }
        };
        if p.stream_serial() != serial {
            continue;
        }
        if !seen_tags {
            if !p.data.starts_with(b"OpusTags") {
                return Err(bad("no OpusTags packet after OpusHead".into()));
            }
            seen_tags = true;
            continue;
        }
        if p.data.len() > max_frame {
            return Err(bad(format!(
                "packet {} has {} bytes, more than the {max_frame} allowed",
                frames.len(),
                p.data.len()
            )));
        }
        let Some(n) = opus_packet_samples(&p.data) else {
            truncated = Some(format!("Ogg: packet {} is not Opus", frames.len()));
            break;
        };
        let last = p.last_in_stream();
        frames.push(Frame {
            ts: samples,
            keyframe: true,
            data: Arc::from(p.data),
        });
        samples += u64::from(n);
        if last {
            break;
        }
    }
    if frames.is_empty() {
        if let Some(t) = truncated {
            return Err(Error::Format(t));
        }
    }
    let _ = pre_skip; // played as is: a few ms of priming at the start
    let mut t = Track::new(Codec::Opus, frames, None, truncated)?;
    t.duration = t.duration.max(samples);
    Ok(t)
}

/// Writes Ogg Opus as packets arrive, one logical stream. A page is closed
/// every `packets_per_page` packets so that a crash loses little; the last
/// packet is held back until the next one or the finish, which marks it
/// end-of-stream.
pub struct OpusWriter {
    w: ogg::PacketWriter<'static, Vec<u8>>,
    serial: u32,
    held: Option<(Vec<u8>, u64)>,
    in_page: u32,
    packets_per_page: u32,
}

impl std::fmt::Debug for OpusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusWriter")
            .field("serial", &self.serial)
            .finish()
    }
}

impl OpusWriter {
    /// Starts a stream with `channels` (1 or 2) and its headers.
    pub fn new(serial: u32, channels: u8, packets_per_page: u32) -> Self {
        let mut w = ogg::PacketWriter::new(Vec::new());
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(channels.clamp(1, 2));
        head.extend_from_slice(&0u16.to_le_bytes()); // pre-skip: unknown, none
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        let vendor = b"switchboard";
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        // Writing to a Vec cannot fail.
        let _ = w.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0);
        let _ = w.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0);
        OpusWriter {
            w,
            serial,
            held: None,
            in_page: 0,
            packets_per_page: packets_per_page.max(1),
        }
    }

    /// Adds a packet whose last sample is at `end` (48 kHz samples from the
    /// start: its granule position).
    pub fn packet(&mut self, data: &[u8], end: u64) {
        if let Some((d, g)) = self.held.take() {
            self.in_page += 1;
            let info = if self.in_page >= self.packets_per_page {
                self.in_page = 0;
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            let _ = self.w.write_packet(d, self.serial, info, g);
        }
        self.held = Some((data.to_vec(), end));
    }

    /// Moves the bytes written so far into `out`.
    pub fn drain(&mut self, out: &mut Vec<u8>) {
        out.append(self.w.inner_mut());
    }

    /// Ends the stream (the held packet is marked last) and drains.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some((d, g)) = self.held.take() {
            let _ = self
                .w
                .write_packet(d, self.serial, PacketWriteEndInfo::EndStream, g);
        }
        self.drain(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn celt20(i: u8) -> Vec<u8> {
        vec![0xfc, i, i, i]
    }

    fn file(n: u8) -> Vec<u8> {
        let mut w = OpusWriter::new(5, 2, 3);
        for i in 0..n {
            w.packet(&celt20(i), (u64::from(i) + 1) * 960);
        }
        let mut out = Vec::new();
        w.finish(&mut out);
        out
    }

    #[test]
    fn writes_and_reads_back() {
        let t = read(&file(10), 4096).unwrap();
        assert_eq!(t.codec, Codec::Opus);
        assert_eq!(t.frames.len(), 10);
        assert_eq!(t.frames[4].ts, 4 * 960);
        assert_eq!(&*t.frames[4].data, &celt20(4)[..]);
        assert_eq!(t.duration, 9600);
        assert!(t.truncated.is_none());
    }

    #[test]
    fn a_corrupt_page_ends_at_the_last_good_packet() {
        let mut f = file(30);
        let n = f.len();
        f[n - 3] ^= 0xff; // inside the last page: its CRC fails
        let t = read(&f, 4096).unwrap();
        assert!(
            t.frames.len() >= 25 && t.frames.len() < 30,
            "{}",
            t.frames.len()
        );
        assert!(t.truncated.is_some());
    }

    #[test]
    fn not_opus_is_a_clear_error() {
        let e = read(b"hello", 4096).unwrap_err().to_string();
        assert!(e.starts_with("Ogg:"), "{e}");
        let mut w = ogg::PacketWriter::new(Vec::new());
        w.write_packet(
            &b"\x01vorbis..................."[..],
            1,
            PacketWriteEndInfo::EndStream,
            0,
        )
        .unwrap();
        let e = read(&w.into_inner(), 4096).unwrap_err().to_string();
        assert!(e.contains("not Opus"), "{e}");
    }

    #[test]
    fn random_and_cut_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let good = file(20);
        for n in 0..good.len() {
            let _ = read(&good[..n], 4096);
        }
        for _ in 0..3_000 {
            let mut v = good.clone();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            let _ = read(&v, 4096);
        }
    }
}
