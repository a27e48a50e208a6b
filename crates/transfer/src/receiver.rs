//! Receiving files into an output directory.
//!
//! [`Receiver`] owns at most one incoming file at a time (the protocol sends
//! one file at a time per peer; use one `Receiver` per peer). It owns the
//! temporary file for it: created on `file-start` as `.NAME.TAG.part`, which
//! no final name can equal (sanitized names never start with a dot), and
//! either renamed to the final name after a verified `file-end` or deleted on
//! mismatch, replacement, [`Receiver::abort`] or drop. A complete-looking file
//! therefore only ever appears once its size and SHA-256 matched.

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
        /// Id of the file this one displaced, whose partial data is deleted.
        replaced: Option<String>,
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
    /// Bytes actually received.
    pub received: u64,
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
    /// `None` once the file failed (overflow or write error): the temp file is
    /// gone, remaining chunks are only counted and hashed so `file-end` can
    /// still be answered with an honest ack.
    file: Option<File>,
    failure: Option<Failure>,
    hasher: Sha256,
    received: u64,
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
            file: None,
            failure: None,
            hasher: Sha256::new(),
            received: 0,
        };
        match placed {
            Ok((dir, name)) => {
                let (part, file) = create_part(&dir, &name, id)?;
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
        self.current = Some(inc);
        Ok(Received::Started {
            id: id.to_owned(),
            name,
            size,
            mime: mime.map(str::to_owned),
            replaced,
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

    /// After a reconnect: the `file-resume` frame asking the sender to
    /// continue the file in progress, or `None` if there is nothing to resume
    /// (no file, or it already failed).
    pub fn resume_frame(&self) -> Option<Frame<'static>> {
        let inc = self.current.as_ref()?;
        if inc.failure.is_some() {
            return None;
        }
        Some(Frame::FileResume {
            id: inc.id.clone(),
            offset: inc.received,
        })
    }

    /// Abandons the file in progress (peer left, channel closed for good)
    /// and deletes its temporary file. Returns its id.
    pub fn abort(&mut self) -> Option<String> {
        let mut inc = self.current.take()?;
        if inc.file.take().is_some() {
            remove_quietly(&inc.part);
        }
        Some(inc.id)
    }
}

impl Drop for Receiver {
    /// A partial file must not outlive the receiver that could finish it.
    fn drop(&mut self) {
        self.abort();
    }
}

/// Creates `.NAME.TAG.part` in `dir`, never reusing an existing path.
/// The tag is derived from the id (peer-controlled, so it is hashed rather
/// than put into a path) plus a counter for the rare collision.
fn create_part(dir: &Path, name: &str, id: &str) -> io::Result<(PathBuf, File)> {
    let tag = Digest::of(id.as_bytes()).to_hex();
    let tag = &tag[..12];
    for n in 0u32.. {
        let file_name = if n == 0 {
            format!(".{name}.{tag}.part")
        } else {
            format!(".{name}.{tag}-{n}.part")
        };
        let path = dir.join(file_name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < MAX_COLLISIONS => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
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
