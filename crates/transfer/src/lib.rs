//! Chat and file transfer over the `chat` data channel.
//!
//! This crate owns the wire format that the browser page `/chat` speaks
//! (docs/protocol.md, "Chat and file transfer over a data channel") and the
//! two state machines built on it:
//!
//! - [`frame`]: parsing a data-channel message into a [`Frame`] and
//!   serializing frames to exactly the JSON the browser produces.
//! - [`Sender`]: turns one file (any [`std::io::Read`]) into `file-start`,
//!   binary chunks and `file-end`, hashing on the fly, then waits for the
//!   peer's `file-ack`.
//! - [`Receiver`]: writes an incoming file under a temporary name, checks
//!   size and SHA-256 on `file-end`, moves it to a sanitized, non-clobbering
//!   final name and produces the `file-ack` to send back.
//!
//! It is sans-IO as far as the network goes: nothing here touches a socket or
//! a data channel, and there is no async runtime. The caller (the CLI) moves
//! bytes between these types and its str0m data channel. The receiver does
//! use `std::fs` for the output directory, since that is its whole job.
//!
//! ```
//! use transfer::{parse, FileInfo, Frame, Outbound, Received, Receiver, Sender};
//!
//! let dir = std::env::temp_dir().join(format!("transfer-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let data = b"hello".to_vec();
//! let info = FileInfo { id: "doc-1".into(), name: "hello.txt".into(), size: 5, mime: None, path: None };
//! let mut tx = Sender::new(&data[..], info);
//! let mut rx = Receiver::new(&dir);
//! let mut ack = None;
//! while let Some(msg) = tx.next_message().unwrap() {
//!     // Here the CLI would write `msg` to the data channel; the peer parses it.
//!     let frame = parse(msg.is_binary(), msg.as_bytes()).unwrap();
//!     if let Received::Finished(done) = rx.handle(&frame).unwrap() {
//!         ack = Some(done.ack().encode().as_bytes().to_vec());
//!     }
//! }
//! let Frame::FileAck { id, ok, sha256 } = parse(false, &ack.unwrap()).unwrap() else { panic!() };
//! assert!(tx.handle_ack(&id, ok, &sha256).unwrap().unwrap().is_verified());
//! assert_eq!(std::fs::read(dir.join("hello.txt")).unwrap(), b"hello");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

pub mod frame;
mod name;
pub mod receiver;
pub mod sender;

use std::io;

pub use frame::{parse, Digest, Frame, Outbound, ProtocolError, DEFAULT_CHUNK, MAX_CHUNK};
pub use name::{check_relative_path, sanitize_name, UnsafePath, MAX_NAME_BYTES, MAX_PATH_DEPTH};
pub use receiver::{Failure, Finished, Progress, Received, Receiver};
pub use sender::{new_file_id, AckOutcome, FileInfo, ResumeOutcome, Sender};

/// Errors from driving a [`Sender`] or [`Receiver`].
///
/// Protocol violations by the peer are errors, never panics: the caller logs
/// them and carries on (or hangs up); the state machines stay usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The message could not be parsed as a frame.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A binary frame arrived while no file was in progress.
    #[error("binary frame ({len} bytes) outside of a file transfer")]
    UnexpectedChunk {
        /// Size of the stray binary message, in bytes.
        len: usize,
    },
    /// More bytes arrived than `file-start` declared. The partial file has
    /// been deleted; the rest of the file's chunks are swallowed and its
    /// `file-end` yields a failed [`Finished`] (so the peer still gets an ack).
    #[error("file {id:?}: {received} bytes received but file-start declared {declared}")]
    ChunkOverflow {
        /// The file in progress.
        id: String,
        /// `size` from its `file-start`, in bytes.
        declared: u64,
        /// Bytes counted so far, including the chunk that overflowed.
        received: u64,
    },
    /// `file-end` named a file that is not the one in progress.
    #[error("file-end for {id:?}, which is not the file in progress")]
    UnknownFileEnd {
        /// The `id` the stray `file-end` named.
        id: String,
    },
    /// `file-ack` for our file arrived before we sent `file-end`, or twice.
    #[error("file-ack for {id:?} arrived when none was expected")]
    UnexpectedAck {
        /// Our file's id, which the ack named.
        id: String,
    },
    /// The sender's source ran dry before the size it announced.
    #[error("source ended after {got} of the {expected} bytes announced")]
    SourceEnded {
        /// The size announced in `file-start`, in bytes.
        expected: u64,
        /// Bytes the source actually yielded before end of file.
        got: u64,
    },
    /// A resume asked for an offset the sender cannot continue from.
    #[error("cannot resume at byte {offset}: {reason}")]
    BadResume {
        /// The byte offset asked for in `file-resume`.
        offset: u64,
        /// Why it was refused, for the message.
        reason: &'static str,
    },
    /// A `file-seek` that does not answer our `file-resume`.
    #[error("file-seek to byte {offset} of {id:?} refused: {why}")]
    UnexpectedSeek {
        /// The `id` it named.
        id: String,
        /// The offset it asked for.
        offset: u64,
        /// Why it was refused.
        why: &'static str,
    },
    /// Chunk size outside `1..=MAX_CHUNK`.
    #[error("chunk size {0} is not in 1..={max}", max = MAX_CHUNK)]
    BadChunkSize(usize),
    /// Reading the source, or writing/renaming in the output directory.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}
