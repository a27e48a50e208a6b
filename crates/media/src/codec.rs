//! What the containers carry: the three codecs, and the few facts about a
//! frame that pacing and recording need without decoding it (keyframe or
//! not, picture size, Opus packet length). Every function takes untrusted
//! bytes and answers `None`/`false` rather than panic.

use std::fmt;

/// A codec `play` can send and `record` can keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// VP8 video (RFC 6386), 90 kHz RTP clock.
    Vp8,
    /// VP9 video, 90 kHz RTP clock.
    Vp9,
    /// Opus audio (RFC 6716), 48 kHz RTP clock.
    Opus,
}

impl Codec {
    /// The RTP clock rate: every media time of this crate is in these units.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Vp8 | Codec::Vp9 => 90_000,
            Codec::Opus => 48_000,
        }
    }

    /// True for the video codecs.
    pub fn is_video(self) -> bool {
        !matches!(self, Codec::Opus)
    }

    /// Whether `frame` can be decoded on its own. Every Opus packet can.
    pub fn is_keyframe(self, frame: &[u8]) -> bool {
        match self {
            Codec::Vp8 => vp8_is_keyframe(frame),
            Codec::Vp9 => vp9_keyframe_size(frame).is_some(),
            Codec::Opus => true,
        }
    }

    /// The picture size a keyframe announces, `None` for anything else.
    pub fn frame_size(self, frame: &[u8]) -> Option<(u16, u16)> {
        match self {
            Codec::Vp8 => vp8_keyframe_size(frame),
            Codec::Vp9 => vp9_keyframe_size(frame),
            Codec::Opus => None,
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::Opus => "Opus",
        })
    }
}

/// VP8 frame tag (RFC 6386 §9.1): bit 0 of the first byte is 0 on a key
/// frame, which also carries the start code 9d 01 2a.
fn vp8_is_keyframe(f: &[u8]) -> bool {
    f.len() >= 10 && f[0] & 1 == 0 && f[3..6] == [0x9d, 0x01, 0x2a]
}

fn vp8_keyframe_size(f: &[u8]) -> Option<(u16, u16)> {
    if !vp8_is_keyframe(f) {
        return None;
    }
    // 14 bits of size, 2 bits of scaling.
    let w = u16::from_le_bytes([f[6], f[7]]) & 0x3fff;
    let h = u16::from_le_bytes([f[8], f[9]]) & 0x3fff;
    Some((w, h))
}

/// MSB-first bit reader over untrusted bytes: reading past the end is `None`.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }
}

/// The size of a VP9 key frame from its uncompressed header (VP9 bitstream
/// spec §6.2); `None` for inter frames and for anything that does not parse.
/// In a superframe the first frame comes first, so its header is read.
fn vp9_keyframe_size(f: &[u8]) -> Option<(u16, u16)> {
    let mut b = Bits { data: f, pos: 0 };
    if b.bits(2)? != 2 {
        return None; // frame_marker
    }
    let profile = b.bit()? | (b.bit()? << 1);
    if profile == 3 && b.bit()? != 0 {
        return None; // reserved_zero
    }
    if b.bit()? == 1 {
        return None; // show_existing_frame
    }
    if b.bit()? != 0 {
        return None; // frame_type: 1 is a non-key frame
    }
    b.bits(2)?; // show_frame, error_resilient_mode
    if b.bits(24)? != 0x49_83_42 {
        return None; // frame_sync_code
    }
    // color_config
    if profile >= 2 {
        b.bit()?; // ten_or_twelve_bit
    }
    let color_space = b.bits(3)?;
    if color_space != 7 {
        b.bit()?; // color_range
        if profile == 1 || profile == 3 {
            b.bits(3)?; // subsampling_x, subsampling_y, reserved_zero
        }
    } else if profile == 1 || profile == 3 {
        b.bit()?; // reserved_zero
    }
    let w = b.bits(16)? + 1;
    let h = b.bits(16)? + 1;
    Some((
        w.min(u32::from(u16::MAX)) as u16,
        h.min(u32::from(u16::MAX)) as u16,
    ))
}

/// Samples (at 48 kHz) in one Opus packet, from its TOC byte (RFC 6716
/// §3.1); `None` for an empty or malformed packet.
pub fn opus_packet_samples(p: &[u8]) -> Option<u32> {
    let toc = *p.first()?;
    let config = toc >> 3;
    // Frame length in 48 kHz samples per configuration group.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)], // SILK 10/20/40/60 ms
        12..=15 => [480, 960][usize::from(config % 2)],            // hybrid 10/20 ms
        _ => [120, 240, 480, 960][usize::from(config % 4)],        // CELT 2.5/5/10/20 ms
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*p.get(1)? & 0x3f),
    };
    if frames == 0 {
        return None;
    }
    let total = frame * frames;
    // At most 120 ms per packet.
    (total <= 5760).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_header_gives_the_size() {
        let mut kf = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        kf.extend_from_slice(&320u16.to_le_bytes());
        kf.extend_from_slice(&(240u16 | 0x4000).to_le_bytes()); // scaling bits are not size
        kf.extend_from_slice(&[0; 8]);
        assert!(Codec::Vp8.is_keyframe(&kf));
        assert_eq!(Codec::Vp8.frame_size(&kf), Some((320, 240)));
        let mut inter = kf.clone();
        inter[0] |= 1;
        assert!(!Codec::Vp8.is_keyframe(&inter));
        assert_eq!(Codec::Vp8.frame_size(&inter), None);
        assert!(!Codec::Vp8.is_keyframe(&kf[..5]));
    }

    /// Profile 0 key frame: marker 10, profile 00, show_existing 0,
    /// frame_type 0, show 1, error_res 0, sync code, color space 010 (BT.601)
    /// range 0, then width-1 and height-1 on 16 bits each.
    fn vp9_key(w: u32, h: u32) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        let mut push = |v: u32, n: u32| {
            for i in (0..n).rev() {
                bits.push(((v >> i) & 1) as u8);
            }
        };
        push(0b10, 2);
        push(0, 2);
        push(0, 1);
        push(0, 1);
        push(1, 1);
        push(0, 1);
        push(0x49_83_42, 24);
        push(2, 3);
        push(0, 1);
        push(w - 1, 16);
        push(h - 1, 16);
        while bits.len() % 8 != 0 {
            bits.push(0);
        }
        bits.chunks(8)
            .map(|c| c.iter().fold(0u8, |a, b| (a << 1) | b))
            .collect()
    }

    #[test]
    fn vp9_uncompressed_header_gives_the_size() {
        let kf = vp9_key(640, 360);
        assert_eq!(Codec::Vp9.frame_size(&kf), Some((640, 360)));
        assert!(Codec::Vp9.is_keyframe(&kf));
        // frame_type 1: an inter frame.
        let mut inter = kf.clone();
        inter[0] |= 0b0000_0100;
        assert!(!Codec::Vp9.is_keyframe(&inter));
        for n in 0..kf.len() {
            assert_eq!(Codec::Vp9.frame_size(&kf[..n]), None, "cut at {n}");
        }
    }

    #[test]
    fn opus_toc_gives_the_packet_length() {
        assert_eq!(opus_packet_samples(&[0xfc, 0, 0]), Some(960)); // CELT 20 ms, one frame
        assert_eq!(opus_packet_samples(&[0x78]), Some(960)); // config 15: hybrid 20 ms
        assert_eq!(opus_packet_samples(&[(1 << 3) | 1]), Some(1920)); // SILK 20 ms, two frames
        assert_eq!(opus_packet_samples(&[(3 << 3) | 3, 2]), Some(5760)); // 2 x 60 ms
        assert_eq!(opus_packet_samples(&[(3 << 3) | 3, 3]), None); // 180 ms: too long
        assert_eq!(opus_packet_samples(&[3]), None); // code 3 without a count
        assert_eq!(opus_packet_samples(&[]), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for _ in 0..20_000 {
            let n = rng.random_range(0..24);
            let v: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            for c in [Codec::Vp8, Codec::Vp9, Codec::Opus] {
                let _ = c.is_keyframe(&v);
                let _ = c.frame_size(&v);
            }
            let _ = opus_packet_samples(&v);
        }
    }
}
