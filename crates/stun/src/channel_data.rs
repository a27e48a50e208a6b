//! TURN ChannelData framing (RFC 8656 §12.4): a 4-byte header (channel
//! number, data length) followed by the application data. Over UDP the
//! padding to 4 bytes is optional; over TCP/TLS it is mandatory, because the
//! receiver uses it to find the next frame.

use crate::Error;

/// Lowest valid channel number.
pub const MIN_CHANNEL: u16 = 0x4000;
/// Highest valid channel number (0x5000-0x7FFF are reserved).
pub const MAX_CHANNEL: u16 = 0x4FFF;
/// Size of the ChannelData header.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// True for 0x4000..=0x4FFF.
pub const fn is_valid_channel(n: u16) -> bool {
    n >= MIN_CHANNEL && n <= MAX_CHANNEL
}

/// A ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    channel: u16,
    data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Validates the channel number and the payload length (<= 65535).
    pub fn new(channel: u16, data: &'a [u8]) -> Result<Self, Error> {
        if !is_valid_channel(channel) {
            return Err(Error::BadChannelNumber(channel));
        }
        if u16::try_from(data.len()).is_err() {
            return Err(Error::MessageTooLong(data.len()));
        }
        Ok(ChannelData { channel, data })
    }

    /// The channel number.
    pub fn channel(&self) -> u16 {
        self.channel
    }
    /// The payload.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Header checks shared by both parse flavours; returns the channel and
    /// the declared payload length.
    fn header(buf: &[u8]) -> Result<(u16, usize), Error> {
        let (&[c0, c1, l0, l1], _) = buf.split_first_chunk::<4>().ok_or(Error::Truncated {
            declared: CHANNEL_DATA_HEADER_LEN,
            available: buf.len(),
        })?;
        let channel = u16::from_be_bytes([c0, c1]);
        if !is_valid_channel(channel) {
            return Err(Error::BadChannelNumber(channel));
        }
        Ok((channel, usize::from(u16::from_be_bytes([l0, l1]))))
    }

    /// Parses a ChannelData message that fills a UDP datagram. Up to 3
    /// bytes of padding after the payload are accepted; more is an error.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let (channel, len) = Self::header(buf)?;
        let body = buf.get(CHANNEL_DATA_HEADER_LEN..).unwrap_or(&[]);
        let data = body.get(..len).ok_or(Error::Truncated {
            declared: len,
            available: body.len(),
        })?;
        let extra = body.len() - len;
        if extra > crate::attr::pad4(len) - len {
            return Err(Error::TrailingBytes(extra));
        }
        Ok(ChannelData { channel, data })
    }

    /// Parses the frame at the front of a stream buffer, where padding is
    /// mandatory; returns the frame and the bytes it consumed (payload plus
    /// padding). [`Error::Truncated`] means "read more".
    pub fn parse_stream(buf: &'a [u8]) -> Result<(Self, usize), Error> {
        let (channel, len) = Self::header(buf)?;
        let total = CHANNEL_DATA_HEADER_LEN + crate::attr::pad4(len);
        let body = buf.get(CHANNEL_DATA_HEADER_LEN..).unwrap_or(&[]);
        if buf.len() < total {
            return Err(Error::Truncated {
                declared: total - CHANNEL_DATA_HEADER_LEN,
                available: body.len(),
            });
        }
        let data = body.get(..len).ok_or(Error::Truncated {
            declared: len,
            available: body.len(),
        })?;
        Ok((ChannelData { channel, data }, total))
    }

    /// Encoded size; `padded` rounds the payload up to 4 bytes (required
    /// over TCP/TLS).
    pub fn encoded_len(&self, padded: bool) -> usize {
        let n = if padded {
            crate::attr::pad4(self.data.len())
        } else {
            self.data.len()
        };
        CHANNEL_DATA_HEADER_LEN + n
    }

    fn header_bytes(&self) -> [u8; 4] {
        // Length was checked to fit in u16 by `new`/parse.
        let [c0, c1] = self.channel.to_be_bytes();
        let [l0, l1] = (self.data.len() as u16).to_be_bytes();
        [c0, c1, l0, l1]
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, padded: bool) {
        let start = out.len();
        out.extend_from_slice(&self.header_bytes());
        out.extend_from_slice(self.data);
        out.resize(start + self.encoded_len(padded), 0);
    }

    /// Writes the frame at the start of `out` and returns its length.
    pub fn encode_into(&self, out: &mut [u8], padded: bool) -> Result<usize, Error> {
        let n = self.encoded_len(padded);
        let available = out.len();
        let dst = out.get_mut(..n).ok_or(Error::BufferTooSmall {
            needed: n,
            available,
        })?;
        dst.fill(0);
        for (d, s) in dst
            .iter_mut()
            .zip(self.header_bytes().iter().chain(self.data))
        {
            *d = *s;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_padded_and_unpadded() {
        let cd = ChannelData::new(0x4001, b"hello").unwrap();
        let mut v = Vec::new();
        cd.encode(&mut v, false);
        assert_eq!(v, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(ChannelData::parse(&v), Ok(cd));
        let mut p = Vec::new();
        cd.encode(&mut p, true);
        assert_eq!(p.len(), 12);
        assert_eq!(
            ChannelData::parse(&p),
            Ok(cd),
            "UDP receivers accept padding"
        );
        assert_eq!(ChannelData::parse_stream(&p), Ok((cd, 12)));
        assert_eq!(
            ChannelData::parse_stream(&v),
            Err(Error::Truncated {
                declared: 8,
                available: 5
            }),
            "stream framing needs the padding"
        );
        let mut s = [0xffu8; 12];
        assert_eq!(cd.encode_into(&mut s, true), Ok(12));
        assert_eq!(&s[..], &p[..]);
        assert_eq!(
            cd.encode_into(&mut s[..8], false),
            Err(Error::BufferTooSmall {
                needed: 9,
                available: 8
            })
        );
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(
            ChannelData::new(0x5000, b""),
            Err(Error::BadChannelNumber(0x5000))
        );
        assert_eq!(
            ChannelData::new(0x4000, &vec![0; 65536]),
            Err(Error::MessageTooLong(65536))
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0]),
            Err(Error::Truncated {
                declared: 4,
                available: 2
            })
        );
        assert_eq!(
            ChannelData::parse(&[0x3f, 0xff, 0, 0]),
            Err(Error::BadChannelNumber(0x3fff))
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 2, 1]),
            Err(Error::Truncated {
                declared: 2,
                available: 1
            })
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 1, 1, 0, 0, 0, 0]),
            Err(Error::TrailingBytes(4))
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0, 0, 0]).map(|c| c.data().len()),
            Ok(0)
        );
    }
}
