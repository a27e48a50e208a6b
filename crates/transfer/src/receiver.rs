//! Receiving files into an output directory.
//!
//! [`Receiver`] owns at most one incoming file at a time (the protocol sends
//! one file at a time per peer; use one `Receiver` per peer). It owns the
//! temporary file for it, `.NAME.KEY.part`, which no final name can equal
//! (sanitized names never start with a dot). It is renamed to the final
//! name after a verified `file-end` and deleted on a mismatch. A
//! complete-looking file therefore only ever appears once its size and
//! SHA-256 matched.
//!
//! **Resume.** KEY is derived from the file's path (or name) and size, not
//! from its per-run id, so a part left by a transfer that broke off (the
//! peer left, the connection or this process died: [`Receiver::abort`] and
//! drop keep it) is found again when a `file-start` for the same path and
//! size arrives, over any connection and in any later run. The receiver
//! then hashes the part and answers with `file-resume` (offset and SHA-256
//! of what it holds). Until the sender's `file-seek` arrives, the chunks
//! it already sent from byte 0 go to a second part; if no seek comes (a
//! sender that does not resume, or whose file differs), that stream simply
//! completes. The final `file-end` hash covers the whole file either way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::frame::{Digest, Frame};
use crate::name::{check_relative_path, numbered, sanitize_name, UnsafePath};
use crate::TransferError;

/// Give up looking for a free `name (n).ext` after this many.
const MAX_COLLISIONS: u32 = 9999;

/// What a frame did.
#[derive(Debug)]
#[must_use]
pub enum Received {
    /// A file began. `name` is the sanitized name it will be saved under
    /// (before collision numbering). `replaced` is the id of a file that was
    /// still in progress and has been aborted because this one started.
    Started {
        /// The file's id from `file-start`.
        id: String,
        /// Sanitized name; the final file may get a ` (n)` suffix.
        name: String,
        /// Declared size in bytes.
        size: u64,
        /// Declared MIME type, if any.
        mime: Option<String>,
        /// Id of the file this one displaced; its part is kept for a
        /// resume.
        replaced: Option<String>,
        /// A `file-resume` to send back: a part of this file is on disk.
        resume: Option<Frame<'static>>,
    },
    /// The sender accepted our `file-resume`: the file continues from
    /// `offset`, the bytes before it being the ones already on disk.
    Resumed {
        /// The file's id.
        id: String,
        /// Bytes taken from the part on disk.
        offset: u64,
        /// Declared size in bytes.
        size: u64,
    },
    /// Bytes of the current file arrived.
    Progress {
        /// Bytes of the file received so far, this chunk included.
        received: u64,
        /// Declared size in bytes.
        size: u64,
    },
    /// `file-end` arrived and the file was checked; send
    /// [`Finished::ack`] back.
    Finished(Finished),
    /// Not a file-receiving frame (`text`, `file-ack`, `file-resume`): the
    /// caller handles those.
    Ignored,
}

/// A file whose `file-end` arrived.
#[derive(Debug)]
pub struct Finished {
    /// The file's id; the ack names it.
    pub id: String,
    /// Sanitized name requested by the peer.
    pub name: String,
    /// MIME type declared in `file-start`, if any.
    pub mime: Option<String>,
    /// Size declared in `file-start`.
    pub size: u64,
    /// Bytes of the file, counting those taken from a part on disk.
    pub received: u64,
    /// Where the file continued from a part on disk, if it did.
    pub resumed_at: Option<u64>,
    /// Bytes of this file that arrived over the channel, including any the
    /// sender sent from byte 0 before it accepted the resume.
    pub transferred: u64,
    /// SHA-256 the sender claimed in `file-end`.
    pub expected: Digest,
    /// SHA-256 of the bytes we received.
    pub actual: Digest,
    /// Where the verified file now is, or why there is no file.
    pub result: Result<PathBuf, Failure>,
}

impl Finished {
    /// Whether the file was verified and kept (`result` is `Ok`); this is
    /// the `ok` flag of the ack.
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }

    /// The `file-ack` to send back: `ok` plus the hash *we* computed, exactly
    /// as the browser acks.
    pub fn ack(&self) -> Frame<'static> {
        Frame::FileAck {
            id: self.id.clone(),
            ok: self.ok(),
            sha256: self.actual,
        }
    }
}

/// Why a finished file was not kept. In every case nothing is left on disk.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// Received bytes do not hash to the `file-end` digest.
    HashMismatch,
    /// Received byte count differs from the `file-start` size (checked
    /// first: a short or long file is reported as this even if the hash
    /// also differs).
    SizeMismatch,
    /// Writing, syncing or renaming failed locally (disk full, permissions).
    Io(io::Error),
    /// The `file-start` `path` was refused ([`crate::check_relative_path`]),
    /// or a folder on the way already exists as a symlink or a file.
    /// Nothing was written; the file's chunks were only counted and hashed.
    UnsafePath(UnsafePath),
}

/// The file in progress, for progress display and resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The file's id from `file-start`.
    pub id: &'a str,
    /// Sanitized name.
    pub name: &'a str,
    /// Bytes received so far (counted even after the file failed).
    pub received: u64,
    /// Declared size in bytes.
    pub size: u64,
}

struct Incoming {
    id: String,
    /// The folder the file goes in: the output directory, or a folder
    /// under it for a `file-start` with a `path`.
    dir: PathBuf,
    name: String,
    mime: Option<String>,
    size: u64,
    part: PathBuf,
    /// `.NAME.KEY.part`: where a part of this file is kept for a resume.
    canonical: PathBuf,
    /// A part found on disk and offered with `file-resume`, until the
    /// sender's `file-seek` or the end of the file.
    offer: Option<Offer>,
    resumed_at: Option<u64>,
    transferred: u64,
    /// `None` once the file failed (overflow or write error): the temp file is
    /// gone, remaining chunks are only counted and hashed so `file-end` can
    /// still be answered with an honest ack.
    file: Option<File>,
    failure: Option<Failure>,
    hasher: Sha256,
    received: u64,
}

/// A part from an earlier transfer of the same path and size.
struct Offer {
    len: u64,
    /// SHA-256 state over its `len` bytes.
    hasher: Sha256,
    /// Open and locked, so that another receiver writing into the same
    /// directory cannot take it too.
    file: File,
}

impl Incoming {
    /// Drops the temp file and marks the transfer failed.
    fn fail(&mut self, why: Failure) {
        if self.file.take().is_some() {
            remove_quietly(&self.part);
        }
        self.failure.get_or_insert(why);
    }
}

/// Writes incoming files into one directory. See the module docs.
pub struct Receiver {
    dir: PathBuf,
    current: Option<Incoming>,
}

impl Receiver {
    /// Receives into `dir`, which must exist (checked at the first
    /// `file-start`, not here).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Receiver {
            dir: dir.into(),
            current: None,
        }
    }

    /// The output directory given to [`Receiver::new`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies one parsed frame.
    pub fn handle(&mut self, frame: &Frame<'_>) -> Result<Received, TransferError> {
        match frame {
            Frame::FileStart {
                id,
                name,
                size,
                mime,
                path,
            } => self.start(id, name, *size, mime.as_deref(), path.as_deref()),
            Frame::Chunk(data) => self.chunk(data),
            Frame::FileEnd { id, sha256 } => self.end(id, sha256),
            Frame::FileSeek { id, offset } => self.seek(id, *offset),
            Frame::Text { .. } | Frame::FileAck { .. } | Frame::FileResume { .. } => {
                Ok(Received::Ignored)
            }
        }
    }

    fn start(
        &mut self,
        id: &str,
        raw_name: &str,
        size: u64,
        mime: Option<&str>,
        path: Option<&str>,
    ) -> Result<Received, TransferError> {
        // One file at a time: a new file-start means the sender gave up on
        // the old one (the browser does the same).
        let replaced = self.abort();
        let placed = match path {
            None => Ok((self.dir.clone(), sanitize_name(raw_name))),
            Some(p) => self.folder_for(p),
        };
        let mut inc = Incoming {
            id: id.to_owned(),
            dir: self.dir.clone(),
            name: sanitize_name(raw_name),
            mime: mime.map(str::to_owned),
            size,
            part: PathBuf::new(),
            canonical: PathBuf::new(),
            offer: None,
            resumed_at: None,
            transferred: 0,
            file: None,
            failure: None,
            hasher: Sha256::new(),
            received: 0,
        };
        match placed {
            Ok((dir, name)) => {
                let key = part_key(path.unwrap_or(&name), size);
                inc.canonical = dir.join(format!(".{name}.{key}.part"));
                inc.offer = existing_part(&inc.canonical, size)?;
                // With an offer the canonical name is taken, so the stream
                // from byte 0 goes to a numbered part beside it.
                let (part, file) = create_part(&dir, &name, &key)?;
                inc.dir = dir;
                inc.name = name;
                inc.part = part;
                inc.file = Some(file);
            }
            // Refused: the chunks are still counted and hashed, so that the
            // file-end gets its (failed) ack.
            Err(why) => inc.failure = Some(why),
        }
        let name = inc.name.clone();
        let resume = inc.offer.as_ref().map(|o| Frame::FileResume {
            id: id.to_owned(),
            offset: o.len,
            sha256: Digest(o.hasher.clone().finalize().into()),
        });
        self.current = Some(inc);
        Ok(Received::Started {
            id: id.to_owned(),
            name,
            size,
            mime: mime.map(str::to_owned),
            replaced,
            resume,
        })
    }

    /// The sender's `file-seek`: continue the file in the part we offered.
    fn seek(&mut self, id: &str, offset: u64) -> Result<Received, TransferError> {
        let unexpected = |why| TransferError::UnexpectedSeek {
            id: id.to_owned(),
            offset,
            why,
        };
        let Some(inc) = self.current.as_mut().filter(|inc| inc.id == id) else {
            return Err(unexpected("it is not the file in progress"));
        };
        let Some(offer) = inc.offer.take() else {
            return Err(unexpected("no resume was offered for it"));
        };
        if offset > offer.len {
            return Err(unexpected("that is past the part offered"));
        }
        if inc.failure.is_some() {
            // The file already failed; its chunks are only counted now.
            return Ok(Received::Ignored);
        }
        let Offer {
            len,
            hasher,
            mut file,
        } = offer;
        let hasher = if offset == len {
            hasher
        } else {
            hash_prefix(&mut file, offset)?
        };
        file.set_len(offset)?;
        io::Seek::seek(&mut file, io::SeekFrom::End(0))?;
        if inc.file.take().is_some() {
            remove_quietly(&inc.part);
        }
        inc.part = inc.canonical.clone();
        inc.file = Some(file);
        inc.hasher = hasher;
        inc.received = offset;
        inc.resumed_at = Some(offset);
        Ok(Received::Resumed {
            id: id.to_owned(),
            offset,
            size: inc.size,
        })
    }

    /// The folder under the output directory that `raw` (a checked
    /// relative path) puts its file in, created one level at a time, and
    /// the file's name. A level that exists must be a real directory: a
    /// symlink there could lead out of the output directory.
    fn folder_for(&self, raw: &str) -> Result<(PathBuf, String), Failure> {
        let parts = check_relative_path(raw).map_err(Failure::UnsafePath)?;
        let (name, folders) = parts.split_last().expect("a checked path has a component");
        let mut dir = self.dir.clone();
        for folder in folders {
            dir.push(folder);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Failure::UnsafePath(UnsafePath {
                        path: raw.to_owned(),
                        why: "a folder on the way is a symlink or a file",
                    }))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                    Ok(()) => {}
                    // Made meanwhile by someone else: check it once more.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                            return Err(Failure::Io(e));
                        }
                    }
                    Err(e) => return Err(Failure::Io(e)),
                },
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        Ok((dir, (*name).to_owned()))
    }

    fn chunk(&mut self, data: &[u8]) -> Result<Received, TransferError> {
        let Some(inc) = self.current.as_mut() else {
            return Err(TransferError::UnexpectedChunk { len: data.len() });
        };
        // Hash before any check: the ack reports what really arrived.
        inc.hasher.update(data);
        inc.transferred = inc.transferred.saturating_add(data.len() as u64);
        inc.received = inc.received.saturating_add(data.len() as u64);
        let progress = Received::Progress {
            received: inc.received,
            size: inc.size,
        };
        let Some(file) = inc.file.as_mut() else {
            return Ok(progress);
        };
        if inc.received > inc.size {
            // Don't let a peer fill the disk past what it announced.
            inc.fail(Failure::SizeMismatch);
            return Err(TransferError::ChunkOverflow {
                id: inc.id.clone(),
                declared: inc.size,
                received: inc.received,
            });
        }
        if let Err(e) = file.write_all(data) {
            let copy = io::Error::new(e.kind(), e.to_string());
            inc.fail(Failure::Io(e));
            return Err(TransferError::Io(copy));
        }
        Ok(progress)
    }

    fn end(&mut self, id: &str, expected: &Digest) -> Result<Received, TransferError> {
        if self.current.as_ref().is_none_or(|inc| inc.id != id) {
            // Leave any other file in progress alone.
            return Err(TransferError::UnknownFileEnd { id: id.to_owned() });
        }
        let mut inc = self.current.take().expect("checked above");
        let actual = Digest(std::mem::take(&mut inc.hasher).finalize().into());
        // An offer never taken up: the stream from byte 0 is the file now.
        if inc.failure.is_none() {
            if inc.received != inc.size {
                inc.fail(Failure::SizeMismatch);
            } else if actual != *expected {
                inc.fail(Failure::HashMismatch);
            }
        }
        let result = match (inc.failure.take(), inc.file.take()) {
            (Some(why), file) => {
                if file.is_some() {
                    remove_quietly(&inc.part);
                }
                Err(why)
            }
            (None, Some(file)) => {
                if inc.offer.take().is_some() {
                    remove_quietly(&inc.canonical);
                }
                // Make the data durable before the name says "complete".
                let placed = file.sync_all().and_then(|()| {
                    drop(file);
                    place_final(&inc.dir, &inc.name, &inc.part)
                });
                placed.map_err(|e| {
                    remove_quietly(&inc.part);
                    Failure::Io(e)
                })
            }
            (None, None) => unreachable!("a file without a handle has a failure recorded"),
        };
        Ok(Received::Finished(Finished {
            id: inc.id,
            name: inc.name,
            mime: inc.mime,
            size: inc.size,
            received: inc.received,
            resumed_at: inc.resumed_at,
            transferred: inc.transferred,
            expected: *expected,
            actual,
            result,
        }))
    }

    /// The file in progress, if any.
    pub fn in_progress(&self) -> Option<Progress<'_>> {
        self.current.as_ref().map(|inc| Progress {
            id: &inc.id,
            name: &inc.name,
            received: inc.received,
            size: inc.size,
        })
    }

    /// Bytes received so far of file `id`, if it is the one in progress.
    /// This is the offset a resuming sender continues from.
    pub fn bytes_received(&self, id: &str) -> Option<u64> {
        self.current
            .as_ref()
            .filter(|inc| inc.id == id)
            .map(|inc| inc.received)
    }

    /// Abandons the file in progress (peer left, channel closed) and
    /// keeps what arrived of it as `.NAME.KEY.part`, for a later
    /// `file-start` of the same path and size to resume. Returns its id.
    pub fn abort(&mut self) -> Option<String> {
        let mut inc = self.current.take()?;
        if inc.file.take().is_some() {
            // Keep whichever holds more: ours, or the part we offered.
            let offered = inc.offer.as_ref().map(|o| o.len);
            let keep_ours = inc.received > 0 && offered.is_none_or(|len| inc.received > len);
            if !keep_ours {
                if inc.part != inc.canonical || offered.is_none() {
                    remove_quietly(&inc.part);
                }
            } else if inc.part != inc.canonical
                && (in_use(&inc.canonical) || fs::rename(&inc.part, &inc.canonical).is_err())
            {
                remove_quietly(&inc.part);
            }
        }
        Some(inc.id)
    }

    /// Like [`Receiver::abort`], but deletes the partial data too.
    pub fn discard(&mut self) -> Option<String> {
        let mut inc = self.current.take()?;
        if inc.file.take().is_some() {
            remove_quietly(&inc.part);
        }
        remove_quietly(&inc.canonical);
        Some(inc.id)
    }
}

impl Drop for Receiver {
    /// What arrived is kept for a resume, as on [`Receiver::abort`].
    fn drop(&mut self) {
        self.abort();
    }
}

/// Creates `.NAME.KEY.part` in `dir`, or `.NAME.KEY-N.part` when that
/// exists, never reusing an existing path.
fn create_part(dir: &Path, name: &str, tag: &str) -> io::Result<(PathBuf, File)> {
    for n in 0u32.. {
        let file_name = if n == 0 {
            format!(".{name}.{tag}.part")
        } else {
            format!(".{name}.{tag}-{n}.part")
        };
        let path = dir.join(file_name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => {
                // Held while we write it: another receiver then neither
                // offers nor replaces it. Advisory, best effort.
                let _ = try_lock(&f);
                return Ok((path, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < MAX_COLLISIONS => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

/// The part file's KEY: 12 hex digits of SHA-256 over the path (or name)
/// and size. Peer-controlled, so hashed rather than put into a path; the
/// same for the same file in every run, which is what lets a part be found
/// again.
fn part_key(path: &str, size: u64) -> String {
    let mut h = Sha256::new();
    h.update(path.as_bytes());
    h.update([0]);
    h.update(size.to_be_bytes());
    Digest(h.finalize().into()).to_hex()[..12].to_owned()
}

/// Opens `path` for reading and writing without following a symlink
/// there (a planted one could lead out of the output directory).
fn open_part(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut o,
        rustix::fs::OFlags::NOFOLLOW.bits() as i32,
    );
    o.open(path)
}

/// Takes an exclusive advisory lock on `f` without waiting: `Ok(false)`
/// when another open file holds one. Released when `f` is closed, by
/// exit or crash too. Where there is no flock, always `Ok(true)`.
fn try_lock(f: &File) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        match flock(f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = f;
        Ok(true)
    }
}

/// Whether another receiver holds the part at `path` open for writing.
fn in_use(path: &Path) -> bool {
    match open_part(path) {
        Ok(f) => matches!(try_lock(&f), Ok(false)),
        Err(_) => false,
    }
}

/// A resumable part at `path`: a regular file (not a symlink) holding
/// between 1 and `size` bytes that no other receiver is writing, locked
/// and hashed. Anything else there is left alone and not offered.
fn existing_part(path: &Path, size: u64) -> io::Result<Option<Offer>> {
    let mut file = match open_part(path) {
        Ok(f) => f,
        // Absent, a symlink (ELOOP), a folder...: nothing to offer.
        Err(_) => return Ok(None),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 || meta.len() > size {
        return Ok(None);
    }
    if !try_lock(&file)? {
        return Ok(None);
    }
    let len = meta.len();
    let hasher = hash_prefix(&mut file, len)?;
    Ok(Some(Offer { len, hasher, file }))
}

/// SHA-256 state over the first `len` bytes of `file`, which is left
/// positioned after them.
fn hash_prefix(file: &mut File, len: u64) -> io::Result<Sha256> {
    let mut h = Sha256::new();
    io::Seek::seek(file, io::SeekFrom::Start(0))?;
    let mut f = io::Read::take(&mut *file, len);
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n as u64;
    }
    if got < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "a partial file shrank while being read",
        ));
    }
    Ok(h)
}

/// Moves `part` to the first free `name`, `name (1)`, ... in `dir`.
///
/// The final path is claimed with `create_new` (atomic, does not follow a
/// symlink planted there) and only then replaced by the rename, so an
/// existing file is never overwritten, even if one appears concurrently.
fn place_final(dir: &Path, name: &str, part: &Path) -> io::Result<PathBuf> {
    for n in 0..=MAX_COLLISIONS {
        let path = dir.join(numbered(name, n));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(claim) => {
                drop(claim);
                return match fs::rename(part, &path) {
                    Ok(()) => Ok(path),
                    Err(e) => {
                        remove_quietly(&path);
                        Err(e)
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free name for {name:?} in {}", dir.display()),
    ))
}

fn remove_quietly(path: &Path) {
    // Cleanup is best effort: the error that led here is the one to report.
    let _ = fs::remove_file(path);
}
