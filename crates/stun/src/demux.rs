//! Demultiplexing helpers: what kind of packet arrived on a shared socket
//! (RFC 7983 first-byte ranges) and, for TURN over TCP/TLS, how long the
//! next STUN or ChannelData frame in a byte stream is.

use crate::attr::pad4;
use crate::channel_data::CHANNEL_DATA_HEADER_LEN;
use crate::header::HEADER_LEN;
use crate::Error;

/// Protocol guessed from the first byte (RFC 7983 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// 0-3: STUN (confirm with [`crate::is_stun`] / [`crate::Message::parse`]).
    Stun,
    /// 16-19: ZRTP.
    Zrtp,
    /// 20-63: DTLS.
    Dtls,
    /// 64-79: TURN ChannelData.
    ChannelData,
    /// 128-191: RTP or RTCP.
    Rtp,
    /// Anything else, including an empty packet: drop it.
    Unknown,
}

/// Classifies a first byte per RFC 7983. Note that this is the UDP
/// multiplexing rule: a STUN message whose method is 0x100 or above starts
/// with a byte > 3 and is classified as something else, as in every
/// RFC 7983 implementation; all methods defined today are below that.
pub const fn classify_byte(b: u8) -> PacketKind {
    match b {
        0..=3 => PacketKind::Stun,
        16..=19 => PacketKind::Zrtp,
        20..=63 => PacketKind::Dtls,
        64..=79 => PacketKind::ChannelData,
        128..=191 => PacketKind::Rtp,
        _ => PacketKind::Unknown,
    }
}

/// Classifies a packet by its first byte.
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(&b) => classify_byte(b),
        None => PacketKind::Unknown,
    }
}

/// Size of the next frame on a TURN stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// A STUN message of this many bytes.
    Stun(usize),
    /// A ChannelData frame of this many bytes, padding included.
    ChannelData(usize),
}

impl StreamFrame {
    /// Bytes the frame occupies in the stream.
    pub const fn len(self) -> usize {
        match self {
            StreamFrame::Stun(n) | StreamFrame::ChannelData(n) => n,
        }
    }
    /// Never true (frames have a header); present for API symmetry.
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Stream-side classification. Unlike [`classify_byte`], a TURN stream
/// carries no DTLS/RTP, so any first byte with the top two bits clear is
/// STUN (RFC 7983's 0-3 would misread STUN methods >= 0x100).
fn stream_kind(b0: u8) -> Option<PacketKind> {
    match b0 {
        0x00..=0x3F => Some(PacketKind::Stun),
        0x40..=0x4F => Some(PacketKind::ChannelData),
        _ => None,
    }
}

/// Looks at the start of a stream buffer and says how long the next frame
/// is. `Ok(None)` means fewer than 4 bytes are buffered; an error means the
/// stream is not TURN (or has lost framing) and should be closed.
pub fn frame_len(buf: &[u8]) -> Result<Option<StreamFrame>, Error> {
    let Some((&[b0, _, l0, l1], _)) = buf.split_first_chunk::<4>() else {
        // Still reject garbage early if the first byte is already wrong.
        return match buf.first() {
            Some(&b) if stream_kind(b).is_none() => Err(Error::NotStun),
            _ => Ok(None),
        };
    };
    let len = u16::from_be_bytes([l0, l1]);
    match stream_kind(b0) {
        Some(PacketKind::Stun) if len % 4 != 0 => Err(Error::LengthNotAligned(len)),
        Some(PacketKind::Stun) => Ok(Some(StreamFrame::Stun(HEADER_LEN + usize::from(len)))),
        Some(PacketKind::ChannelData) => Ok(Some(StreamFrame::ChannelData(
            CHANNEL_DATA_HEADER_LEN + pad4(usize::from(len)),
        ))),
        _ => Err(Error::NotStun),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7983_ranges() {
        let expect = |range: core::ops::RangeInclusive<u8>, kind| {
            for b in range {
                assert_eq!(classify_byte(b), kind, "byte {b}");
            }
        };
        expect(0..=3, PacketKind::Stun);
        expect(4..=15, PacketKind::Unknown);
        expect(16..=19, PacketKind::Zrtp);
        expect(20..=63, PacketKind::Dtls);
        expect(64..=79, PacketKind::ChannelData);
        expect(80..=127, PacketKind::Unknown);
        expect(128..=191, PacketKind::Rtp);
        expect(192..=255, PacketKind::Unknown);
        assert_eq!(classify(&[]), PacketKind::Unknown);
        assert_eq!(classify(&[0x80, 0]), PacketKind::Rtp);
    }

    #[test]
    fn stream_framing() {
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&[0x00, 0x01]), Ok(None));
        assert_eq!(frame_len(&[0xc0]), Err(Error::NotStun));
        assert_eq!(
            frame_len(&[0x00, 0x01, 0x00, 0x08]),
            Ok(Some(StreamFrame::Stun(28)))
        );
        assert_eq!(
            frame_len(&[0x00, 0x01, 0x00, 0x06]),
            Err(Error::LengthNotAligned(6))
        );
        assert_eq!(
            frame_len(&[0x40, 0x00, 0x00, 0x05, 1]),
            Ok(Some(StreamFrame::ChannelData(12)))
        );
        assert_eq!(frame_len(&[0x80, 0x00, 0x00, 0x00]), Err(Error::NotStun));
        assert_eq!(
            frame_len(&[0x50]),
            Err(Error::NotStun),
            "0x5000+ are not valid channels"
        );
        // Method 0xFFF puts 0x3F in the first byte; still STUN on a stream.
        assert_eq!(
            frame_len(&[0x3f, 0xef, 0x00, 0x00]),
            Ok(Some(StreamFrame::Stun(20)))
        );
        assert_eq!(StreamFrame::ChannelData(12).len(), 12);
    }
}
