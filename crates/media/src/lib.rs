//! Media files for the native peer, sans-IO: nothing here opens a file, a
//! socket or reads a clock.
//!
//! - [`ivf`] reads and writes IVF (VP8, VP9); [`opus`] reads and writes Ogg
//!   Opus (pages through the `ogg` crate);
//! - [`pacer::Pacer`] turns a file's frames and the current time into the
//!   frames due now, looping and answering keyframe requests;
//! - [`recorder::Recorder`] turns received frames with their RTP times into
//!   container bytes, and finishes the file.
//!
//! `switchboard play` and `switchboard record` are their tokio drivers.

pub mod codec;
pub mod ivf;
pub mod opus;
pub mod pacer;
pub mod recorder;

pub use codec::Codec;
use std::sync::Arc;

/// What can go wrong reading a file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a file this crate reads, or not a usable one; the
    /// text says what and where.
    #[error("{0}")]
    Format(String),
}

/// One frame of a file.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When it plays, in [`Codec::clock_rate`] units from the first frame.
    pub ts: u64,
    /// Decodable on its own (every Opus packet is).
    pub keyframe: bool,
    /// The encoded frame, shared so sending it allocates nothing.
    pub data: Arc<[u8]>,
}

/// A whole track read from a file.
#[derive(Debug, Clone)]
pub struct Track {
    /// Its codec.
    pub codec: Codec,
    /// The frames in play order; never empty, and a video track starts
    /// with a keyframe.
    pub frames: Vec<Frame>,
    /// Picture size for video (from the file header, or the first keyframe
    /// when the header says 0).
    pub size: Option<(u16, u16)>,
    /// How long one pass lasts, in clock units: the last frame's time plus
    /// the average frame length.
    pub duration: u64,
    /// The file ended inside a frame or page: what was cut. The frames
    /// before it are here.
    pub truncated: Option<String>,
}

impl Track {
    fn new(
        codec: Codec,
        mut frames: Vec<Frame>,
        size: Option<(u16, u16)>,
        truncated: Option<String>,
    ) -> Result<Track, Error> {
        if codec.is_video() {
            // Frames before the first keyframe cannot be decoded.
            let Some(k) = frames.iter().position(|f| f.keyframe) else {
                return Err(Error::Format(match truncated {
                    Some(t) => format!("no keyframe before the file ends ({t})"),
                    None if frames.is_empty() => "the file has no frame".into(),
                    None => format!("{codec}: none of the {} frames is a keyframe", frames.len()),
                }));
            };
            if k > 0 {
                let base = frames[k].ts;
                frames.drain(..k);
                for f in &mut frames {
                    f.ts -= base;
                }
            }
        }
        let Some(last) = frames.last() else {
            return Err(Error::Format(match truncated {
                Some(t) => format!("no frame before the file ends ({t})"),
                None => "the file has no frame".into(),
            }));
        };
        let step = if frames.len() > 1 {
            (last.ts / (frames.len() as u64 - 1)).max(1)
        } else {
            // One frame: show it for 1/30 s, or 20 ms of audio.
            u64::from(codec.clock_rate()) / if codec.is_video() { 30 } else { 50 }
        };
        let duration = last.ts.saturating_add(step);
        let size = match size {
            Some((w, h)) if w > 0 && h > 0 => Some((w, h)),
            _ => frames.iter().find_map(|f| codec.frame_size(&f.data)),
        };
        Ok(Track {
            codec,
            frames,
            size: if codec.is_video() { size } else { None },
            duration,
            truncated,
        })
    }
}

/// Reads a file of any supported kind, told apart by its first bytes
/// (`DKIF` for IVF, `OggS` for Ogg). `max_frame` bounds one frame's bytes.
pub fn read_file(bytes: &[u8], max_frame: usize) -> Result<Track, Error> {
    match bytes.get(0..4) {
        Some(b"DKIF") => ivf::read(bytes, max_frame),
        Some(b"OggS") => opus::read(bytes, max_frame),
        _ => Err(Error::Format(
            "not an IVF (VP8/VP9) or Ogg (Opus) file".into(),
        )),
    }
}
