//! `switchboard send` and `switchboard recv`: files over the `chat` data
//! channel in the `/chat` wire format, with progress, SHA-256 checks and
//! no partial file ever left under its final name (the receiver writes to
//! a temporary name and renames only after the hash matches).

use super::{
    describe_link, first_link, join, restarts_exhausted, room_config, CliEvent, Failure, Happened,
    Out, PeerArgs, Tracker, EXIT_OTHER, EXIT_TRANSFER,
};
use clap::Args;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use peer::{DataChannel, Message};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use transfer::{AckOutcome, FileInfo, Frame, Outbound, Received, Receiver, Sender};

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub common: PeerArgs,
    /// Files and folders to send, one file after another. A folder is sent
    /// whole, as a tree under its own name; symlinks in it are skipped.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Bytes per binary message (at most 65536; the browser sends 16384).
    #[arg(long, default_value_t = 65536)]
    pub chunk: usize,
}

#[derive(Args)]
pub struct RecvArgs {
    #[command(flatten)]
    pub common: PeerArgs,
    /// Directory to save files in (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Exit after this many files; without it, exit when the sender leaves.
    #[arg(long)]
    pub count: Option<u64>,
}

fn bar(out: &Out, name: &str, size: u64) -> ProgressBar {
    if out.is_json() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(size);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(name.to_string());
    pb
}

/// Emits progress at most every 250 ms.
struct Ticker {
    last: Instant,
}

impl Ticker {
    fn due(&mut self) -> bool {
        if self.last.elapsed() >= Duration::from_millis(250) {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

/// One file to send: where it is, its size, and its place in a folder.
struct Outgoing {
    path: PathBuf,
    size: u64,
    /// `folder/sub/name` for a file of a folder argument.
    rel: Option<String>,
}

/// The files that `args` name, folders expanded depth-first in name order.
/// Checked before joining: a typo should not cost a connection.
fn collect_files(args: &[PathBuf]) -> Result<Vec<Outgoing>, Failure> {
    let bad =
        |p: &Path, why: String| Failure::new(EXIT_OTHER, "file", format!("{}: {why}", p.display()));
    let mut files = Vec::new();
    for path in args {
        let meta = std::fs::metadata(path).map_err(|e| bad(path, e.to_string()))?;
        if meta.is_dir() {
            // "." and "dir/" name the folder by its real name.
            let full = std::fs::canonicalize(path).map_err(|e| bad(path, e.to_string()))?;
            let Some(root) = full.file_name().and_then(|n| n.to_str()) else {
                return Err(bad(
                    path,
                    "a folder to send needs a name (not / or a non-UTF-8 one)".into(),
                ));
            };
            walk(path, root.to_owned(), &mut files)?;
        } else if meta.is_file() {
            files.push(Outgoing {
                path: path.clone(),
                size: meta.len(),
                rel: None,
            });
        } else {
            return Err(bad(path, "not a regular file or a folder".into()));
        }
    }
    Ok(files)
}

/// Adds the files under `dir` (whose place in the tree is `rel`) to
/// `files`. Symlinks are skipped: following one could send files from
/// outside the folder. So is anything the receiver would refuse as a path
/// (a hidden file, a device name: [`transfer::check_relative_path`]), with
/// a warning, since it could not arrive anyway.
fn walk(dir: &Path, rel: String, files: &mut Vec<Outgoing>) -> Result<(), Failure> {
    let bad =
        |p: &Path, why: String| Failure::new(EXIT_OTHER, "file", format!("{}: {why}", p.display()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| bad(dir, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(dir, e.to_string()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            tracing::warn!("skipping {}: its name is not UTF-8", path.display());
            continue;
        };
        let child = format!("{rel}/{name}");
        if let Err(why) = transfer::check_relative_path(&child) {
            tracing::warn!(
                "skipping {}: {why}; the receiver would refuse it",
                path.display()
            );
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| bad(&path, e.to_string()))?;
        if meta.file_type().is_symlink() {
            tracing::warn!("skipping {}: a symlink", path.display());
        } else if meta.is_dir() {
            walk(&path, child, files)?;
        } else if meta.is_file() {
            files.push(Outgoing {
                path,
                size: meta.len(),
                rel: Some(child),
            });
        } else {
            tracing::warn!("skipping {}: not a regular file", path.display());
        }
    }
    Ok(())
}

pub async fn send(a: SendArgs, out: Out) -> Result<(), Failure> {
    let files = collect_files(&a.files)?;
    if files.is_empty() {
        return Err(Failure::new(
            EXIT_OTHER,
            "file",
            "nothing to send: the folders hold no files",
        ));
    }
    if a.chunk == 0 || a.chunk > transfer::MAX_CHUNK {
        return Err(Failure::new(
            super::EXIT_USAGE,
            "usage",
            format!("--chunk must be 1..={}", transfer::MAX_CHUNK),
        ));
    }
    let cfg = room_config(&a.common, "send")?;
    let mut room = join(cfg, &out).await?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    let link = first_link(&mut room, &mut tracker).await?;
    let peer = link.peer.clone();

    // Several files: one overall bar (files done, bytes, rate, ETA) under
    // the current file's.
    let count = files.len();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bars = MultiProgress::new();
    let overall = if count > 1 {
        bars.add(bar(&out, "all", total))
    } else {
        ProgressBar::hidden()
    };
    let mut done: u64 = 0;
    for (k, Outgoing { path, size, rel }) in files.into_iter().enumerate() {
        overall.set_message(format!("{}/{count} files", k + 1));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let file = std::fs::File::open(&path)
            .map_err(|e| Failure::new(EXIT_OTHER, "file", format!("{}: {e}", path.display())))?;
        let info = FileInfo {
            id: transfer::new_file_id(),
            name: name.clone(),
            size,
            mime: None,
            path: rel.clone(),
        };
        let mut tx = Sender::new(std::io::BufReader::with_capacity(256 * 1024, file), info)
            .with_chunk_size(a.chunk)
            .map_err(|e| Failure::new(EXIT_OTHER, "file", e.to_string()))?;
        let started = Instant::now();
        let pb = bar(&out, rel.as_deref().unwrap_or(&name), size);
        let pb = if count > 1 {
            bars.insert_before(&overall, pb)
        } else {
            bars.add(pb)
        };
        let mut tick = Ticker {
            last: Instant::now(),
        };
        let mut sent: u64 = 0;
        // Produce and send every message. Room events are handled while a
        // message waits for room in the send buffer (a connection that
        // died leaves it waiting forever), and between messages, so a
        // vanished peer ends the transfer promptly.
        loop {
            let msg = tx
                .next_message()
                .map_err(|e| Failure::new(EXIT_OTHER, "file", e.to_string()))?;
            let Some(msg) = msg else { break };
            let (binary, len) = (msg.is_binary(), msg.as_bytes().len());
            let sending = match msg {
                Outbound::Text(t) => link.channel.send(Message::Text(t)).boxed(),
                Outbound::Binary(b) => link.channel.send_binary(b).boxed(),
            };
            let r = send_watching(sending, &mut room, &mut tracker, &peer, &name).await?;
            r.map_err(|e| Failure::new(EXIT_TRANSFER, "transfer", format!("sending {name}: {e}")))?;
            if binary {
                sent += len as u64;
                pb.set_position(sent);
                overall.set_position(done + sent);
                if tick.due() {
                    out.event(
                        CliEvent::Progress {
                            peer: &peer,
                            name: &name,
                            bytes: sent,
                            size,
                        },
                        String::new,
                    );
                }
            }
            while let Some(ev) = tracker.try_next(&mut room) {
                if let Err(f) = sending_event(tracker.handle(ev).await, &peer, &name) {
                    pb.abandon();
                    overall.abandon();
                    return Err(f);
                }
            }
        }
        pb.finish_and_clear();
        done += size;
        // Wait for the verdict; text frames from the peer are shown.
        let outcome = loop {
            tokio::select! {
                m = link.channel.recv() => {
                    let Some(m) = m else {
                        return Err(Failure::new(EXIT_TRANSFER, "transfer", format!("channel closed before {name} was acknowledged")));
                    };
                    let (binary, bytes): (bool, &[u8]) = match &m { Message::Text(t) => (false, t.as_bytes()), Message::Binary(b) => (true, b) };
                    match transfer::parse(binary, bytes) {
                        Ok(Frame::FileAck { id, ok, sha256 }) => {
                            if let Ok(Some(o)) = tx.handle_ack(&id, ok, &sha256) {
                                break o;
                            }
                        }
                        Ok(Frame::Text { text }) => out.event(CliEvent::Text { peer: &peer, text: &text }, || format!("{peer}: {text}")),
                        Ok(_) => {}
                        Err(e) => tracing::debug!("ignoring a bad frame: {e}"),
                    }
                }
                ev = tracker.next(&mut room) => {
                    let Some(ev) = ev else { continue };
                    match tracker.handle(ev).await? {
                        Happened::PeerLeft(p) if p == peer => {
                            return Err(Failure::new(EXIT_TRANSFER, "peer-left", format!("{peer} left before acknowledging {name}")));
                        }
                        Happened::RestartsExhausted(p) if p == peer => return Err(restarts_exhausted(&peer)),
                        _ => {}
                    }
                }
            }
        };
        let ms = started.elapsed().as_millis() as u64;
        let ok = outcome.is_verified();
        let sha = match &outcome {
            AckOutcome::Verified => tx_digest_hex(&tx),
            AckOutcome::Mismatch { ours, .. } => ours.to_hex(),
        };
        let mbps = size as f64 / 1e6 / (ms.max(1) as f64 / 1000.0);
        let st = link.pc.stats().await.unwrap_or_default();
        let (paths, redundancy) = (st.paths, st.redundancy);
        // Above the bars, not through them.
        bars.suspend(|| {
            out.event(
                CliEvent::FileSent {
                    peer: &peer,
                    name: &name,
                    size,
                    sha256: &sha,
                    ok,
                    ms,
                    paths,
                    redundancy,
                },
                || {
                    format!(
                        "{} {name}: {size} bytes in {:.1} s ({mbps:.1} MB/s), sha256 {sha}; on the wire: {}",
                        if ok { "sent" } else { "FAILED" },
                        ms as f64 / 1000.0,
                        describe_link(&paths, &redundancy)
                    )
                },
            );
        });
        if !ok {
            return Err(Failure::new(
                EXIT_TRANSFER,
                "hash-mismatch",
                format!("{peer} received {name} with a different SHA-256"),
            ));
        }
    }
    overall.finish_and_clear();
    room.leave();
    link.pc.close().await;
    Ok(())
}

/// Waits for one message to be taken by the channel while handling room
/// events; Err when one of them ends the transfer.
async fn send_watching(
    sending: BoxFuture<'_, Result<(), peer::Error>>,
    room: &mut peer::room::Room,
    tracker: &mut Tracker,
    peer: &str,
    name: &str,
) -> Result<Result<(), peer::Error>, Failure> {
    tokio::pin!(sending);
    loop {
        tokio::select! {
            r = &mut sending => return Ok(r),
            ev = tracker.next(room) => {
                // The room's events ended: only the send is left to wait for.
                let Some(ev) = ev else { return Ok(sending.await) };
                sending_event(tracker.handle(ev).await, peer, name)?;
            }
        }
    }
}

/// What a room event means while `name` is being sent to `peer`.
fn sending_event(h: Result<Happened, Failure>, peer: &str, name: &str) -> Result<(), Failure> {
    match h? {
        Happened::PeerLeft(p) if p == peer => Err(Failure::new(
            EXIT_TRANSFER,
            "peer-left",
            format!("{peer} left while {name} was being sent"),
        )),
        Happened::RestartsExhausted(p) if p == peer => Err(restarts_exhausted(peer)),
        _ => Ok(()),
    }
}

fn tx_digest_hex<R>(tx: &Sender<R>) -> String {
    tx.digest().map(|d| d.to_hex()).unwrap_or_default()
}

pub async fn recv(a: RecvArgs, out: Out) -> Result<(), Failure> {
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Failure::new(EXIT_OTHER, "file", format!("{}: {e}", a.out.display())))?;
    let cfg = room_config(&a.common, "recv")?;
    let mut room = join(cfg, &out).await?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    let link = first_link(&mut room, &mut tracker).await?;
    let peer = link.peer.clone();
    let mut rx = Receiver::new(&a.out);
    let mut done: u64 = 0;
    let mut current: Option<(String, u64, Instant, ProgressBar)> = None;
    let mut tick = Ticker {
        last: Instant::now(),
    };
    loop {
        if a.count.is_some_and(|n| done >= n) {
            break;
        }
        tokio::select! {
            m = link.channel.recv() => {
                let Some(m) = m else {
                    if rx.abort().is_some() {
                        return Err(Failure::new(EXIT_TRANSFER, "transfer", "channel closed in the middle of a file"));
                    }
                    break;
                };
                let (binary, bytes): (bool, &[u8]) = match &m { Message::Text(t) => (false, t.as_bytes()), Message::Binary(b) => (true, b) };
                let frame = match transfer::parse(binary, bytes) {
                    Ok(f) => f,
                    Err(e) => { tracing::debug!("ignoring a bad frame: {e}"); continue; }
                };
                if let Frame::Text { text } = &frame {
                    out.event(CliEvent::Text { peer: &peer, text }, || format!("{peer}: {text}"));
                    continue;
                }
                match rx.handle(&frame) {
                    Ok(Received::Started { name, size, .. }) => {
                        let pb = bar(&out, &name, size);
                        current = Some((name, size, Instant::now(), pb));
                    }
                    Ok(Received::Progress { received, size }) => {
                        if let Some((name, _, _, pb)) = &current {
                            pb.set_position(received);
                            if tick.due() {
                                out.event(CliEvent::Progress { peer: &peer, name, bytes: received, size }, String::new);
                            }
                        }
                    }
                    Ok(Received::Finished(f)) => {
                        let ack = f.ack();
                        send_frame(&link.channel, &ack).await?;
                        let (ms, pb) = match current.take() { Some((_, _, t, pb)) => (t.elapsed().as_millis() as u64, pb), None => (0, ProgressBar::hidden()) };
                        pb.finish_and_clear();
                        let ok = f.ok();
                        let path = f.result.as_ref().ok().map(|p| p.display().to_string());
                        let why = f.result.as_ref().err().map(|e| match e {
                            transfer::Failure::UnsafePath(u) => u.to_string(),
                            other => format!("{other:?}"),
                        });
                        let refused = matches!(f.result, Err(transfer::Failure::UnsafePath(_)));
                        let sha = f.actual.to_hex();
                        let st = link.pc.stats().await.unwrap_or_default();
                        let (paths, redundancy) = (st.paths, st.redundancy);
                        out.event(
                            CliEvent::FileReceived { peer: &peer, name: &f.name, path: path.as_deref(), size: f.received, sha256: &sha, ok, ms, paths, redundancy },
                            || match &path {
                                Some(p) => format!("received {} ({} bytes, sha256 {sha}) -> {p}; on the wire: {}", f.name, f.received, describe_link(&paths, &redundancy)),
                                None => format!("FAILED {}: {}", f.name, why.clone().unwrap_or_default()),
                            },
                        );
                        if refused {
                            return Err(Failure::new(EXIT_TRANSFER, "unsafe-path", format!("refused {}: {}; nothing was written", f.name, why.unwrap_or_default())));
                        }
                        if !ok {
                            return Err(Failure::new(EXIT_TRANSFER, "hash-mismatch", format!("{} failed its check: {}", f.name, why.unwrap_or_default())));
                        }
                        done += 1;
                    }
                    Ok(Received::Ignored) => {}
                    Err(transfer::TransferError::UnknownFileEnd { id }) => {
                        // Answered, not ok, so its sender does not wait
                        // forever (docs/protocol.md); the file in progress
                        // carries on.
                        tracing::warn!("file-end from {peer} for {id:?}, which is not the file in progress: answered not ok");
                        let ack = Frame::FileAck { id, ok: false, sha256: transfer::Digest::of(b"") };
                        send_frame(&link.channel, &ack).await?;
                    }
                    Err(e) => tracing::warn!("bad transfer frame from {peer}: {e}"),
                }
            }
            ev = tracker.next(&mut room) => {
                let Some(ev) = ev else { continue };
                match tracker.handle(ev).await? {
                    Happened::RestartsExhausted(p) if p == peer => return Err(restarts_exhausted(&peer)),
                    Happened::PeerLeft(p) if p == peer => {
                        if rx.abort().is_some() {
                            return Err(Failure::new(EXIT_TRANSFER, "peer-left", format!("{peer} left in the middle of a file; the partial file was removed")));
                        }
                        if done > 0 {
                            break;
                        }
                        return Err(Failure::new(EXIT_TRANSFER, "peer-left", format!("{peer} left before sending a file")));
                    }
                    _ => {}
                }
            }
        }
    }
    // Give the last ack time to leave before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), link.channel.flush()).await;
    room.leave();
    link.pc.close().await;
    Ok(())
}

async fn send_frame(ch: &DataChannel, f: &Frame<'_>) -> Result<(), Failure> {
    let r = match f.encode() {
        Outbound::Text(t) => ch.send(Message::Text(t)).await,
        Outbound::Binary(b) => ch.send_binary(b).await,
    };
    r.map_err(|e| Failure::new(EXIT_TRANSFER, "transfer", e.to_string()))
}
