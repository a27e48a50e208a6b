//! Reassembly of a TURN stream connection (RFC 8656 §5, TCP or TLS): STUN
//! messages and ChannelData frames sit back to back, ChannelData padded to
//! a multiple of 4 (§12.5) so the receiver can find the next frame.
//!
//! [`Framer`] owns the one receive buffer of a connection. Bytes go in
//! (copied with [`Framer::push`], or read straight into
//! [`Framer::read_buf`] and committed with [`Framer::advance`]); complete
//! frames come out of [`Framer::pop`] as slices borrowed from that buffer.
//! The buffer grows only as far as the largest frame the peer sends (capped
//! by the limit), so popping a frame never allocates, and an idle
//! connection costs a few KiB.

use crate::demux::{frame_len, StreamFrame};
use crate::header::HEADER_LEN;
use crate::Error;

/// The largest frame a stream can carry: a STUN message with the largest
/// 4-aligned 16-bit length (a ChannelData frame is at most 4 + 65536).
pub const MAX_STREAM_FRAME: usize = HEADER_LEN + 65532;

/// Buffer size a new [`Framer`] starts with.
const INITIAL: usize = 4096;

/// Least free space [`Framer::read_buf`] offers, so a read of small frames
/// picks up several at once.
const MIN_READ: usize = 2048;

/// One complete frame, borrowed from the [`Framer`]'s buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A STUN message (parse it with [`crate::Message::parse`]).
    Stun(&'a [u8]),
    /// A ChannelData frame with its padding (parse it with
    /// [`crate::ChannelData::parse`] or [`crate::ChannelData::parse_stream`]).
    ChannelData(&'a [u8]),
}

impl<'a> Frame<'a> {
    /// The frame's bytes, header (and ChannelData padding) included.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Frame::Stun(b) | Frame::ChannelData(b) => b,
        }
    }
}

/// Push bytes in, pop complete frames out. An error from [`Framer::pop`]
/// means the stream is not TURN or has lost its framing; it repeats on
/// every later call, and the connection should be closed.
#[derive(Debug)]
pub struct Framer {
    /// Allocated area; `buf.len()` is the capacity in use.
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    max_frame: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer accepting any frame up to [`MAX_STREAM_FRAME`].
    pub fn new() -> Self {
        Self::with_limit(MAX_STREAM_FRAME)
    }

    /// A framer that rejects frames longer than `max_frame` bytes with
    /// [`Error::FrameTooLong`], which bounds its buffer to about
    /// `max_frame` bytes.
    pub fn with_limit(max_frame: usize) -> Self {
        Framer {
            buf: vec![0; INITIAL.min(max_frame.max(HEADER_LEN))],
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// Bytes buffered and not yet popped.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Copies `bytes` in after what is already buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len(), bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Free space to read into, never empty; after writing `n` bytes at
    /// its start, call [`Framer::advance`]`(n)`. Room is made for at least
    /// the rest of the next frame when its length is already known, and
    /// the buffer grows to no more than that frame.
    pub fn read_buf(&mut self) -> &mut [u8] {
        let need = match frame_len(&self.buf[self.start..self.end]) {
            Ok(Some(f)) if f.len() <= self.max_frame => f.len().saturating_sub(self.buffered()),
            _ => 0,
        };
        self.make_room(need.max(1), MIN_READ);
        &mut self.buf[self.end..]
    }

    /// Commits `n` bytes written at the start of [`Framer::read_buf`].
    ///
    /// # Panics
    ///
    /// If `n` is more than the slice `read_buf` returned (a caller bug).
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "advance past read_buf");
        self.end += n;
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or
    /// an error for a stream that is not STUN/ChannelData or announces a
    /// frame over the limit.
    pub fn pop(&mut self) -> Result<Option<Frame<'_>>, Error> {
        let avail = &self.buf[self.start..self.end];
        let f = match frame_len(avail)? {
            Some(f) => f,
            None => return Ok(None),
        };
        let n = f.len();
        if n > self.max_frame {
            return Err(Error::FrameTooLong {
                len: n,
                max: self.max_frame,
            });
        }
        if avail.len() < n {
            return Ok(None);
        }
        let at = self.start;
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let bytes = &self.buf[at..at + n];
        Ok(Some(match f {
            StreamFrame::Stun(_) => Frame::Stun(bytes),
            StreamFrame::ChannelData(_) => Frame::ChannelData(bytes),
        }))
    }

    /// Ensures at least `min` free bytes after `end`, and `preferred` if
    /// moving the unconsumed bytes to the front gets them; grows only for
    /// `min`.
    fn make_room(&mut self, min: usize, preferred: usize) {
        if self.buf.len() - self.end >= min.max(preferred) {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            // `Vec` amortizes repeated growth.
            self.buf.resize(self.end + min, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelData, MessageType, MessageWriter, TransactionId};

    fn stun(tid: u8, pad: usize) -> Vec<u8> {
        let mut b = Vec::new();
        let mut w = MessageWriter::new(
            &mut b,
            MessageType::BINDING_REQUEST,
            TransactionId([tid; 12]),
        );
        if pad > 0 {
            w.add_raw(crate::AttrType(0x8022), &vec![b'x'; pad])
                .unwrap();
        }
        w.finish();
        b
    }

    fn channel(payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        ChannelData::new(0x4001, payload)
            .unwrap()
            .encode(&mut b, true);
        b
    }

    fn drain(f: &mut Framer) -> Result<Vec<Vec<u8>>, Error> {
        let mut out = Vec::new();
        while let Some(frame) = f.pop()? {
            out.push(frame.as_bytes().to_vec());
        }
        Ok(out)
    }

    #[test]
    fn splits_back_to_back_frames_at_any_chunking() {
        let frames = [
            stun(1, 0),
            channel(b"hello"),
            stun(2, 301),
            channel(b""),
            channel(&[7; 4000]),
        ];
        let stream: Vec<u8> = frames.concat();
        for chunk in [1, 3, 4, 5, 20, 999, stream.len()] {
            let mut f = Framer::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                f.push(piece);
                got.extend(drain(&mut f).unwrap());
            }
            assert_eq!(got, frames, "chunk {chunk}");
            assert_eq!(f.buffered(), 0);
        }
    }

    #[test]
    fn read_buf_makes_room_for_a_large_frame() {
        let big = channel(&[9; 65535]);
        assert_eq!(big.len(), 4 + 65536, "padded to 4");
        let mut f = Framer::new();
        let mut fed = 0;
        let mut got = Vec::new();
        while fed < big.len() {
            let dst = f.read_buf();
            assert!(!dst.is_empty());
            let n = dst.len().min(big.len() - fed).min(1500);
            dst[..n].copy_from_slice(&big[fed..fed + n]);
            f.advance(n);
            fed += n;
            got.extend(drain(&mut f).unwrap());
        }
        assert_eq!(got, [big]);
        // The buffer grew to the frame, no further.
        assert_eq!(f.buf.len(), 4 + 65536);
    }

    #[test]
    fn tells_kinds_apart() {
        let mut f = Framer::new();
        f.push(&stun(1, 0));
        f.push(&channel(b"abc"));
        assert!(matches!(f.pop(), Ok(Some(Frame::Stun(b))) if b.len() == 20));
        assert!(matches!(f.pop(), Ok(Some(Frame::ChannelData(b))) if b.len() == 8));
        assert_eq!(f.pop(), Ok(None));
    }

    #[test]
    fn garbage_is_an_error_that_sticks() {
        let mut f = Framer::new();
        f.push(&stun(1, 0));
        f.push(&[0xff; 8]);
        assert!(matches!(f.pop(), Ok(Some(Frame::Stun(_)))));
        assert_eq!(f.pop(), Err(Error::NotStun));
        assert_eq!(f.pop(), Err(Error::NotStun), "no resync on a lost stream");
        let mut f = Framer::new();
        f.push(&[0x00, 0x01, 0x00, 0x06]);
        assert_eq!(f.pop(), Err(Error::LengthNotAligned(6)));
        let mut f = Framer::new();
        f.push(&[0x50]);
        assert_eq!(f.pop(), Err(Error::NotStun), "0x5000+ is no channel");
    }

    #[test]
    fn frames_over_the_limit_are_refused_before_they_are_buffered() {
        let mut f = Framer::with_limit(1024);
        f.push(&channel(&[1; 1000]));
        assert_eq!(
            f.pop().map(|o| o.map(|f| f.as_bytes().len())),
            Ok(Some(1004))
        );
        f.push(&[0x40, 0x00, 0x04, 0x00]);
        assert_eq!(
            f.pop(),
            Err(Error::FrameTooLong {
                len: 1028,
                max: 1024
            })
        );
        // read_buf does not grow toward the refused frame.
        assert!(f.read_buf().len() < 8192);
    }
}
