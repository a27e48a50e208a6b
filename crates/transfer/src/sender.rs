//! Sending one file: `file-start`, binary chunks, `file-end`, then the ack.
//!
//! [`Sender`] owns the read position, the running SHA-256 and one reusable
//! chunk buffer. It does not own the data channel or flow control: the caller
//! asks for the next message only when the channel's buffered amount allows
//! (the browser pauses above 4 MiB buffered; do the same).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::frame::{Digest, Outbound, Wire, DEFAULT_CHUNK, MAX_CHUNK};
use crate::TransferError;

/// What `file-start` announces about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Unique per sender; the browser uses [`new_file_id`]'s format.
    pub id: String,
    /// The name as the peer should see it (the receiver sanitizes it).
    pub name: String,
    /// Exact number of bytes that will follow.
    pub size: u64,
    /// MIME type, if known; omitted from the JSON when `None` or empty.
    pub mime: Option<String>,
    /// The file's place in a folder being sent (`dir/sub/name`, `/`
    /// separators, relative); `None` for a lone file.
    pub path: Option<String>,
}

/// The receiver's verdict on a file we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// The peer said ok and hashed exactly what we hashed.
    Verified,
    /// The peer said not ok, or its hash differs from ours.
    Mismatch {
        /// What we sent in `file-end`.
        ours: Digest,
        /// What the peer computed over the bytes it received.
        theirs: Digest,
        /// The peer's `ok` flag (true here means it claimed success with a
        /// different hash, which only a broken peer does).
        peer_ok: bool,
    },
}

impl AckOutcome {
    /// True for [`AckOutcome::Verified`]: the peer holds exactly our bytes.
    pub fn is_verified(&self) -> bool {
        matches!(self, AckOutcome::Verified)
    }
}

#[derive(Debug)]
enum State {
    /// `file-start` not yet produced.
    Start,
    /// Producing chunks; `sent < size`.
    Chunks,
    /// All bytes produced; `file-end` next.
    End,
    /// `file-end` produced; waiting for `file-ack`.
    AwaitAck(Digest),
    /// Ack received.
    Done(Digest, AckOutcome),
}

/// Drives one outgoing file. See the crate docs for a full loop.
pub struct Sender<R> {
    source: R,
    info: FileInfo,
    // Fixed-size and reused: the chunk handed out by `next_message` borrows
    // it, so sending a file allocates nothing per chunk.
    buf: Box<[u8]>,
    hasher: Sha256,
    sent: u64,
    state: State,
    /// A `file-seek` to send before the next chunk.
    seek: Option<u64>,
}

impl<R: Read> Sender<R> {
    /// A sender for `info.size` bytes read from `source`, in
    /// [`DEFAULT_CHUNK`]-byte chunks.
    pub fn new(source: R, info: FileInfo) -> Self {
        Sender {
            source,
            info,
            buf: vec![0u8; DEFAULT_CHUNK].into_boxed_slice(),
            hasher: Sha256::new(),
            sent: 0,
            state: State::Start,
            seek: None,
        }
    }

    /// Uses `bytes`-sized chunks (1..=[`MAX_CHUNK`]). The browser uses 16 KiB;
    /// receivers accept up to 64 KiB.
    pub fn with_chunk_size(mut self, bytes: usize) -> Result<Self, TransferError> {
        if bytes == 0 || bytes > MAX_CHUNK {
            return Err(TransferError::BadChunkSize(bytes));
        }
        self.buf = vec![0u8; bytes].into_boxed_slice();
        Ok(self)
    }

    /// The next message to send, or `None` once `file-end` has been produced
    /// (then feed the peer's `file-ack` to [`Sender::handle_ack`]).
    ///
    /// The returned chunk borrows the sender's buffer: send it before calling
    /// again. After an error, give up on this sender.
    pub fn next_message(&mut self) -> Result<Option<Outbound<'_>>, TransferError> {
        if let Some(offset) = self.seek.take() {
            let id = &self.info.id;
            return Ok(Some(Outbound::Text(
                Wire::FileSeek { id, offset }.to_json(),
            )));
        }
        match self.state {
            State::Start => {
                let json = Wire::FileStart {
                    id: &self.info.id,
                    name: &self.info.name,
                    size: self.info.size,
                    mime: self.info.mime.as_deref(),
                    path: self.info.path.as_deref(),
                }
                .to_json();
                self.state = if self.info.size == 0 {
                    State::End
                } else {
                    State::Chunks
                };
                Ok(Some(Outbound::Text(json)))
            }
            State::Chunks => {
                let want = (self.info.size - self.sent).min(self.buf.len() as u64) as usize;
                let got = read_full(&mut self.source, &mut self.buf[..want])?;
                if got < want {
                    return Err(TransferError::SourceEnded {
                        expected: self.info.size,
                        got: self.sent + got as u64,
                    });
                }
                self.hasher.update(&self.buf[..got]);
                self.sent += got as u64;
                if self.sent == self.info.size {
                    self.state = State::End;
                }
                Ok(Some(Outbound::Binary(&self.buf[..got])))
            }
            State::End => {
                let digest = Digest(std::mem::take(&mut self.hasher).finalize().into());
                self.state = State::AwaitAck(digest);
                Ok(Some(Outbound::Text(
                    Wire::FileEnd {
                        id: &self.info.id,
                        sha256: &digest,
                    }
                    .to_json(),
                )))
            }
            State::AwaitAck(_) | State::Done(..) => Ok(None),
        }
    }
}

impl<R> Sender<R> {
    /// Feeds a received `file-ack`. Returns `Ok(None)` if the ack is for some
    /// other id (not ours: ignore it, as the browser does).
    pub fn handle_ack(
        &mut self,
        id: &str,
        ok: bool,
        sha256: &Digest,
    ) -> Result<Option<AckOutcome>, TransferError> {
        if id != self.info.id {
            return Ok(None);
        }
        let State::AwaitAck(ours) = self.state else {
            return Err(TransferError::UnexpectedAck { id: id.to_owned() });
        };
        // Trust our own hash, not the peer's flag alone: "ok" with another
        // hash means the peer is broken, and that is not a verified transfer.
        let outcome = if ok && *sha256 == ours {
            AckOutcome::Verified
        } else {
            AckOutcome::Mismatch {
                ours,
                theirs: *sha256,
                peer_ok: ok,
            }
        };
        self.state = State::Done(ours, outcome.clone());
        Ok(Some(outcome))
    }

    /// What this sender announces (or announced) in `file-start`.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// The file id, as in `file-start`, `file-end` and the expected ack.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Total bytes of the file, as announced in `file-start`.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// File bytes handed out so far (progress; not what the peer has
    /// received, which lags by the channel's buffered amount).
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Our SHA-256 of the file, once `file-end` has been produced.
    pub fn digest(&self) -> Option<Digest> {
        match self.state {
            State::AwaitAck(d) | State::Done(d, _) => Some(d),
            _ => None,
        }
    }

    /// True after `file-end` and before the ack.
    pub fn is_awaiting_ack(&self) -> bool {
        matches!(self.state, State::AwaitAck(_))
    }

    /// The ack verdict, once it arrived.
    pub fn outcome(&self) -> Option<&AckOutcome> {
        match &self.state {
            State::Done(_, o) => Some(o),
            _ => None,
        }
    }

    /// Gives back the source.
    pub fn into_inner(self) -> R {
        self.source
    }
}

/// What [`Sender::handle_resume`] did with a `file-resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Our first `offset` bytes hash the same: the next message is a
    /// `file-seek`, then the chunks from `offset` on.
    Seeking {
        /// Where the file continues.
        offset: u64,
    },
    /// Our first `offset` bytes hash differently (the file changed, or it
    /// is another file of the same name and size): we carry on from where
    /// we are, and the receiver keeps the bytes it is getting.
    Mismatch,
    /// Not for the file being sent, or it came too late (`file-end` already
    /// went out): nothing to do.
    Ignored,
}

impl<R: Read + Seek> Sender<R> {
    /// Feeds a received `file-resume`: the receiver holds the first
    /// `offset` bytes of the file, hashing to `sha256`.
    ///
    /// Re-reads and hashes our own first `offset` bytes (a file that
    /// changed on disk then shows up as a mismatch, never as a splice). On a
    /// match the stream continues from `offset`, and `file-end` still
    /// covers the whole file. On a mismatch the stream carries on where it
    /// was. An offset past the file's size is an error.
    pub fn handle_resume(
        &mut self,
        id: &str,
        offset: u64,
        sha256: &Digest,
    ) -> Result<ResumeOutcome, TransferError> {
        if id != self.info.id || !matches!(self.state, State::Chunks | State::End) {
            return Ok(ResumeOutcome::Ignored);
        }
        if offset > self.info.size {
            return Err(TransferError::BadResume {
                offset,
                reason: "that is past the end of the file",
            });
        }
        self.source.seek(SeekFrom::Start(0))?;
        let mut prefix = Sha256::new();
        let mut left = offset;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let got = read_full(&mut self.source, &mut self.buf[..want])?;
            if got < want {
                return Err(TransferError::SourceEnded {
                    expected: self.info.size,
                    got: offset - left + got as u64,
                });
            }
            prefix.update(&self.buf[..got]);
            left -= got as u64;
        }
        if Digest(prefix.clone().finalize().into()) != *sha256 {
            // Back to where the stream was.
            self.source.seek(SeekFrom::Start(self.sent))?;
            return Ok(ResumeOutcome::Mismatch);
        }
        self.hasher = prefix;
        self.sent = offset;
        self.seek = Some(offset);
        self.state = if offset == self.info.size {
            State::End
        } else {
            State::Chunks
        };
        Ok(ResumeOutcome::Seeking { offset })
    }
}

impl Sender<File> {
    /// Opens `path` for sending under its own file name. No MIME type is
    /// announced (the browser then treats it as application/octet-stream).
    pub fn from_path(path: impl AsRef<Path>, id: String) -> io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_owned());
        Ok(Sender::new(
            file,
            FileInfo {
                id,
                name,
                size: meta.len(),
                mime: None,
                path: None,
            },
        ))
    }
}

/// Fills `buf` unless the source ends first; returns how much was read.
fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A fresh file id in the browser's format: milliseconds since the epoch in
/// base 36, a dash, 12 hex digits. Uniqueness only matters per sender; the
/// hex part mixes time, process id and a counter through SHA-256 rather than
/// pulling in a random-number crate.
pub fn new_file_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = Sha256::new();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let tail = h.finalize();
    let mut ms = now.as_millis();
    let mut base36 = Vec::new();
    loop {
        base36.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(ms % 36) as usize]);
        ms /= 36;
        if ms == 0 {
            break;
        }
    }
    base36.reverse();
    let mut id = String::from_utf8(base36).expect("ascii");
    id.push('-');
    for b in &tail[..6] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}
