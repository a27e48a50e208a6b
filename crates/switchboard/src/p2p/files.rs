//! `switchboard send` and `switchboard recv`: files over the `chat` data
//! channel in the `/chat` wire format, with progress, SHA-256 checks and
//! no partial file ever left under its final name (the receiver writes to
//! a temporary name and renames only after the hash matches).

use super::Link;
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
use transfer::{AckOutcome, FileInfo, Frame, Outbound, Received, Receiver, ResumeOutcome, Sender};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_the_servers_drop_page_and_name_their_server() {
        assert_eq!(
            drop_page("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/drop"
        );
        assert_eq!(drop_page("wss://h.example/v1/ws"), "https://h.example/drop");
        assert_eq!(drop_page("https://h.example/"), "https://h.example/drop");
        assert_eq!(
            link_origin("https://h.example:8443/drop#room=pair-1&key=x").as_deref(),
            Some("https://h.example:8443")
        );
        assert_eq!(link_origin("room=pair-1&key=x"), None);
        assert_eq!(link_origin("ftp://h/drop#x"), None);
        assert!(matches!(
            read_secret("7-violet-harbor"),
            Ok(pairing::Secret::Code(_))
        ));
        assert!(read_secret("7-violet").is_err());
        assert!(read_secret("https://h/drop#room=pair-1").is_err());
    }
}

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
    /// The code (`7-violet-harbor`) or link (`https://HOST/drop#room=…`)
    /// that `send` printed, in place of --room: the sender is then proven
    /// to hold it, and the connection bound to it, before anything is
    /// written.
    #[arg(value_name = "CODE|LINK", conflicts_with = "room")]
    pub secret: Option<String>,
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

/// How many taken rooms `send` skips before it gives up on a code.
const CODE_TRIES: usize = 8;

/// `send` without `--room`: a fresh code and a link to the same room,
/// which must be empty (another sender's code would otherwise collide).
/// Prints both, and sets `tracker` to pair every peer by either.
async fn host_room(
    common: &PeerArgs,
    out: &Out,
    tracker: &mut Tracker,
) -> Result<peer::room::Room, Failure> {
    let page = drop_page(&common.server);
    for _ in 0..CODE_TRIES {
        let code = pairing::Code::random();
        let link = pairing::LinkSecret::for_code(&code);
        let mut args = common.clone();
        args.room = Some(code.room());
        let mut room = join(room_config(&args, "send")?, out).await?;
        if !room.peers.is_empty() {
            super::leave_and_wait(&mut room).await;
            continue;
        }
        let (code_text, url) = (code.to_string(), format!("{page}#{}", link.fragment()));
        out.event(
            CliEvent::Code {
                code: &code_text,
                link: &url,
            },
            || {
                format!(
                    "code: {code_text}\n  on the other machine: switchboard recv {code_text} --server {} --out DIR\n  or, with the link: switchboard recv '{url}' --out DIR",
                    common.server
                )
            },
        );
        tracker.pair(
            move || pairing::Pairing::host(&code, &link),
            room.signaler(),
        );
        return Ok(room);
    }
    Err(Failure::new(
        super::EXIT_SIGNALING,
        "signaling",
        format!("{CODE_TRIES} code rooms in a row were taken; try again, or give --room"),
    ))
}

/// Where a link points: the server's `/drop` page.
fn drop_page(server: &str) -> String {
    let s = server.trim_end_matches('/');
    let s = match s.split_once("://") {
        Some(("ws", rest)) => format!("http://{rest}"),
        Some(("wss", rest)) => format!("https://{rest}"),
        _ => s.to_string(),
    };
    // Keep the scheme and host; the page is at the root.
    let base = match s.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)),
        None => s,
    };
    format!("{base}/drop")
}

/// The `scheme://host[:port]` of an http(s) link.
fn link_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.trim().split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest
        .split(['/', '#', '?'])
        .next()
        .filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

/// A code or a link, told apart by the `#`/`=` only links have.
fn read_secret(text: &str) -> Result<pairing::Secret, Failure> {
    let usage = |e: pairing::SecretError| Failure::new(super::EXIT_USAGE, "usage", e.to_string());
    if text.contains('#') || text.contains('=') {
        Ok(pairing::Secret::Link(
            pairing::LinkSecret::parse(text).map_err(usage)?,
        ))
    } else {
        Ok(pairing::Secret::Code(
            pairing::Code::parse(text).map_err(usage)?,
        ))
    }
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
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    let mut room = match a.common.room {
        Some(_) => join(room_config(&a.common, "send")?, &out).await?,
        None => host_room(&a.common, &out, &mut tracker).await?,
    };
    let mut link = match first_link(&mut room, &mut tracker).await {
        Ok(l) => l,
        Err(f) => {
            // Leave before exiting: the peer hears it at once, after our
            // last signals (a failed pairing's proof, so it fails too).
            super::leave_and_wait(&mut room).await;
            return Err(f);
        }
    };
    let mut spare = None;
    let wait = Duration::from_secs(a.common.timeout.max(1));

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
    for (k, file) in files.iter().enumerate() {
        overall.set_message(format!("{}/{count} files", k + 1));
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let started = Instant::now();
        // A peer that goes away in the middle of the file may come back
        // (or another may take its place): the file starts again on the
        // new connection, and the receiver's kept part makes that a resume.
        let (outcome, sha) = loop {
            let mut job = Job {
                file,
                name: &name,
                chunk: a.chunk,
                out: &out,
                bars: &bars,
                overall: &overall,
                done,
                spare: &mut spare,
            };
            match job.run(&link, &mut room, &mut tracker).await? {
                Sent::Acked(outcome, sha) => break (outcome, sha),
                Sent::Lost(lost) => {
                    let peer = link.peer.clone();
                    out.event(
                        CliEvent::TransferInterrupted {
                            peer: &peer,
                            name: &name,
                            reason: lost.reason(),
                        },
                        || {
                            format!(
                                "{peer} is gone in the middle of {name} ({}); waiting up to {} s for a receiver",
                                lost.reason(),
                                wait.as_secs()
                            )
                        },
                    );
                    link =
                        next_link(&mut spare, &mut room, &mut tracker, wait, &peer, lost).await?;
                }
            }
        };
        done += file.size;
        let peer = link.peer.clone();
        let size = file.size;
        let ms = started.elapsed().as_millis() as u64;
        let ok = outcome.is_verified();
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

/// Why the peer of a transfer is taken to be gone.
#[derive(Clone, Copy)]
enum Lost {
    Left,
    RestartsExhausted,
    ChannelClosed,
}

impl Lost {
    fn reason(self) -> &'static str {
        match self {
            Lost::Left => "left the room",
            Lost::RestartsExhausted => {
                "the connection failed and ICE restarts did not bring it back"
            }
            Lost::ChannelClosed => "the data channel closed",
        }
    }

    /// The failure to end with when nobody comes back.
    fn failure(self, peer: &str, name: &str) -> Failure {
        match self {
            Lost::RestartsExhausted => restarts_exhausted(peer),
            Lost::Left => Failure::new(
                EXIT_TRANSFER,
                "peer-left",
                format!("{peer} left in the middle of {name}, and no other peer came"),
            ),
            Lost::ChannelClosed => Failure::new(
                EXIT_TRANSFER,
                "transfer",
                format!(
                    "the channel to {peer} closed in the middle of {name}, and no other peer came"
                ),
            ),
        }
    }
}

/// What a room event means while a file is being sent to or received from
/// `peer`: the peer is gone, or not. A newly linked other peer is kept in
/// `spare` (the latest one), to carry on with if this one goes.
fn watch_event(happened: Happened, peer: &str, spare: &mut Option<Link>) -> Option<Lost> {
    match happened {
        Happened::PeerLeft(p) if p == peer => Some(Lost::Left),
        Happened::RestartsExhausted(p) if p == peer => Some(Lost::RestartsExhausted),
        Happened::PeerLeft(p) | Happened::RestartsExhausted(p) => {
            if spare.as_ref().is_some_and(|l| l.peer == p) {
                *spare = None;
            }
            None
        }
        Happened::Linked(l) if l.peer != peer => {
            *spare = Some(l);
            None
        }
        _ => None,
    }
}

/// The link to carry on with after `lost` went away for `why`: the spare,
/// or the next peer to link within `wait`.
async fn next_link(
    spare: &mut Option<Link>,
    room: &mut peer::room::Room,
    tracker: &mut Tracker,
    wait: Duration,
    lost: &str,
    why: Lost,
) -> Result<Link, Failure> {
    if let Some(l) = spare.take() {
        return Ok(l);
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Ok(ev) = tokio::time::timeout_at(deadline, tracker.next(room)).await else {
            return Err(why.failure(lost, "the file"));
        };
        let Some(ev) = ev else {
            return Err(Failure::new(
                super::EXIT_SIGNALING,
                "signaling",
                "room task ended",
            ));
        };
        match tracker.handle(ev).await? {
            Happened::Linked(l) => return Ok(l),
            Happened::SignalingClosed(r) => {
                return Err(Failure::new(
                    super::EXIT_SIGNALING,
                    "signaling",
                    format!("signaling connection lost while waiting for a peer: {r}"),
                ))
            }
            _ => {}
        }
    }
}

/// How one attempt at sending a file ended.
enum Sent {
    /// The receiver's verdict, and our SHA-256 of the file.
    Acked(AckOutcome, String),
    /// The peer went away first.
    Lost(Lost),
}

/// One attempt at sending one file over one link.
struct Job<'a> {
    file: &'a Outgoing,
    name: &'a str,
    chunk: usize,
    out: &'a Out,
    bars: &'a MultiProgress,
    overall: &'a ProgressBar,
    /// Bytes of the files before this one.
    done: u64,
    spare: &'a mut Option<Link>,
}

impl Job<'_> {
    async fn run(
        &mut self,
        link: &Link,
        room: &mut peer::room::Room,
        tracker: &mut Tracker,
    ) -> Result<Sent, Failure> {
        let (name, size, peer) = (self.name, self.file.size, link.peer.as_str());
        let path = &self.file.path;
        let source = std::fs::File::open(path)
            .map_err(|e| Failure::new(EXIT_OTHER, "file", format!("{}: {e}", path.display())))?;
        let info = FileInfo {
            id: transfer::new_file_id(),
            name: name.to_owned(),
            size,
            mime: None,
            path: self.file.rel.clone(),
        };
        let mut tx = Sender::new(std::io::BufReader::with_capacity(256 * 1024, source), info)
            .with_chunk_size(self.chunk)
            .map_err(|e| Failure::new(EXIT_OTHER, "file", e.to_string()))?;
        let pb = bar(self.out, self.file.rel.as_deref().unwrap_or(name), size);
        let pb = if self.overall.is_hidden() {
            self.bars.add(pb)
        } else {
            self.bars.insert_before(self.overall, pb)
        };
        let mut tick = Ticker {
            last: Instant::now(),
        };
        // Produce and send every message. Room events are handled while a
        // message waits for room in the send buffer (a connection that
        // died leaves it waiting forever), and between messages, so a
        // vanished peer ends the attempt promptly; so are the receiver's
        // messages (a `file-resume` answers our `file-start`).
        loop {
            // Not once file-end is out: the ack that may come next is for
            // the wait below.
            while !tx.is_awaiting_ack() {
                let Some(m) = link.channel.try_recv() else {
                    break;
                };
                self.on_receiver_message(&mut tx, &m, peer, &pb)?;
            }
            let msg = tx
                .next_message()
                .map_err(|e| Failure::new(EXIT_OTHER, "file", e.to_string()))?;
            let Some(msg) = msg else { break };
            let binary = msg.is_binary();
            let sending = match msg {
                Outbound::Text(t) => link.channel.send(Message::Text(t)).boxed(),
                Outbound::Binary(b) => link.channel.send_binary(b).boxed(),
            };
            let r = match send_watching(sending, room, tracker, peer, self.spare).await? {
                Ok(r) => r,
                Err(lost) => {
                    pb.abandon();
                    return Ok(Sent::Lost(lost));
                }
            };
            if let Err(e) = r {
                tracing::debug!("sending {name}: {e}");
                pb.abandon();
                return Ok(Sent::Lost(Lost::ChannelClosed));
            }
            if binary {
                let sent = tx.bytes_sent();
                pb.set_position(sent);
                self.overall.set_position(self.done + sent);
                if tick.due() {
                    self.out.event(
                        CliEvent::Progress {
                            peer,
                            name,
                            bytes: sent,
                            size,
                        },
                        String::new,
                    );
                }
            }
            while let Some(ev) = tracker.try_next(room) {
                if let Some(lost) = watch_event(tracker.handle(ev).await?, peer, self.spare) {
                    pb.abandon();
                    return Ok(Sent::Lost(lost));
                }
            }
        }
        pb.finish_and_clear();
        // Wait for the verdict; text frames from the peer are shown.
        loop {
            tokio::select! {
                m = link.channel.recv() => {
                    let Some(m) = m else { return Ok(Sent::Lost(Lost::ChannelClosed)) };
                    let (binary, bytes): (bool, &[u8]) = match &m { Message::Text(t) => (false, t.as_bytes()), Message::Binary(b) => (true, b) };
                    match transfer::parse(binary, bytes) {
                        Ok(Frame::FileAck { id, ok, sha256 }) => {
                            if let Ok(Some(o)) = tx.handle_ack(&id, ok, &sha256) {
                                let sha = match &o {
                                    AckOutcome::Verified => tx_digest_hex(&tx),
                                    AckOutcome::Mismatch { ours, .. } => ours.to_hex(),
                                };
                                return Ok(Sent::Acked(o, sha));
                            }
                        }
                        Ok(Frame::Text { text }) => self.out.event(CliEvent::Text { peer, text: &text }, || format!("{peer}: {text}")),
                        // A file-resume now comes too late: file-end is out.
                        Ok(_) => {}
                        Err(e) => tracing::debug!("ignoring a bad frame: {e}"),
                    }
                }
                ev = tracker.next(room) => {
                    let Some(ev) = ev else { continue };
                    if let Some(lost) = watch_event(tracker.handle(ev).await?, peer, self.spare) {
                        return Ok(Sent::Lost(lost));
                    }
                }
            }
        }
    }

    /// A message from the receiver while the file is going out.
    fn on_receiver_message<R: std::io::Read + std::io::Seek>(
        &self,
        tx: &mut Sender<R>,
        m: &Message,
        peer: &str,
        pb: &ProgressBar,
    ) -> Result<(), Failure> {
        let (binary, bytes): (bool, &[u8]) = match m {
            Message::Text(t) => (false, t.as_bytes()),
            Message::Binary(b) => (true, b),
        };
        match transfer::parse(binary, bytes) {
            Ok(Frame::FileResume { id, offset, sha256 }) => {
                match tx.handle_resume(&id, offset, &sha256) {
                    Ok(ResumeOutcome::Seeking { offset }) => {
                        pb.set_position(offset);
                        self.out.event(
                            CliEvent::FileResumed {
                                peer,
                                name: self.name,
                                offset,
                                size: self.file.size,
                            },
                            || {
                                format!(
                                    "{peer} holds {offset} bytes of {} already: resuming from there",
                                    self.name
                                )
                            },
                        );
                    }
                    Ok(ResumeOutcome::Mismatch) => tracing::info!(
                        "{peer}'s partial {} differs from ours: sending it whole",
                        self.name
                    ),
                    Ok(ResumeOutcome::Ignored) => {}
                    Err(transfer::TransferError::Io(e)) => {
                        return Err(Failure::new(
                            EXIT_OTHER,
                            "file",
                            format!("{}: {e}", self.file.path.display()),
                        ))
                    }
                    Err(e) => tracing::warn!("refused a resume from {peer}: {e}"),
                }
            }
            Ok(Frame::Text { text }) => {
                self.out.event(CliEvent::Text { peer, text: &text }, || {
                    format!("{peer}: {text}")
                })
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("ignoring a bad frame: {e}"),
        }
        Ok(())
    }
}

/// Waits for one message to be taken by the channel while handling room
/// events; `Err(lost)` when the peer is gone meanwhile.
async fn send_watching(
    sending: BoxFuture<'_, Result<(), peer::Error>>,
    room: &mut peer::room::Room,
    tracker: &mut Tracker,
    peer: &str,
    spare: &mut Option<Link>,
) -> Result<Result<Result<(), peer::Error>, Lost>, Failure> {
    tokio::pin!(sending);
    loop {
        tokio::select! {
            r = &mut sending => return Ok(Ok(r)),
            ev = tracker.next(room) => {
                // The room's events ended: only the send is left to wait for.
                let Some(ev) = ev else { return Ok(Ok(sending.await)) };
                if let Some(lost) = watch_event(tracker.handle(ev).await?, peer, spare) {
                    return Ok(Err(lost));
                }
            }
        }
    }
}

fn tx_digest_hex<R>(tx: &Sender<R>) -> String {
    tx.digest().map(|d| d.to_hex()).unwrap_or_default()
}

pub async fn recv(a: RecvArgs, out: Out) -> Result<(), Failure> {
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Failure::new(EXIT_OTHER, "file", format!("{}: {e}", a.out.display())))?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    let mut room = match &a.secret {
        None => join(room_config(&a.common, "recv")?, &out).await?,
        Some(text) => {
            let secret = read_secret(text)?;
            let mut common = a.common.clone();
            common.room = Some(secret.room());
            // A link names its server; --server, when given, wins.
            if let (pairing::Secret::Link(_), Some(origin)) = (&secret, link_origin(text)) {
                if common.server == super::DEFAULT_SERVER {
                    common.server = origin;
                }
            }
            let room = join(room_config(&common, "recv")?, &out).await?;
            tracker.pair(
                move || pairing::Pairing::new(&secret, pairing::Role::Guest),
                room.signaler(),
            );
            room
        }
    };
    let mut link = match first_link(&mut room, &mut tracker).await {
        Ok(l) => l,
        Err(f) => {
            // Leave before exiting: the peer hears it at once, after our
            // last signals (a failed pairing's proof, so it fails too).
            super::leave_and_wait(&mut room).await;
            return Err(f);
        }
    };
    let mut spare = None;
    let wait = Duration::from_secs(a.common.timeout.max(1));
    // Kept parts are resumed from; `abort` (and drop) keep what arrived.
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
        let peer = link.peer.clone();
        let lost = tokio::select! {
            m = link.channel.recv() => match m {
                None => Some(Lost::ChannelClosed),
                Some(m) => {
                    let (binary, bytes): (bool, &[u8]) = match &m { Message::Text(t) => (false, t.as_bytes()), Message::Binary(b) => (true, b) };
                    match transfer::parse(binary, bytes) {
                        Ok(Frame::Text { text }) => out.event(CliEvent::Text { peer: &peer, text: &text }, || format!("{peer}: {text}")),
                        Ok(frame) => {
                            let r = rx.handle(&frame);
                            if on_received(r, &link, &out, &mut current, &mut tick).await? {
                                done += 1;
                            }
                        }
                        Err(e) => tracing::debug!("ignoring a bad frame: {e}"),
                    }
                    None
                }
            },
            ev = tracker.next(&mut room) => {
                let Some(ev) = ev else { continue };
                watch_event(tracker.handle(ev).await?, &peer, &mut spare)
            }
        };
        let Some(lost) = lost else { continue };
        let Some(p) = rx.in_progress() else {
            // Between files: the sender is done.
            match lost {
                Lost::Left if done == 0 => {
                    return Err(Failure::new(
                        EXIT_TRANSFER,
                        "peer-left",
                        format!("{peer} left before sending a file"),
                    ))
                }
                Lost::RestartsExhausted => return Err(restarts_exhausted(&peer)),
                _ => break,
            }
        };
        let (name, received) = (p.name.to_owned(), p.received);
        rx.abort();
        if let Some((_, _, _, pb)) = current.take() {
            pb.abandon();
        }
        out.event(
            CliEvent::TransferInterrupted {
                peer: &peer,
                name: &name,
                reason: lost.reason(),
            },
            || {
                format!(
                    "{peer} is gone in the middle of {name} ({}); {received} bytes are kept; waiting up to {} s for a sender",
                    lost.reason(),
                    wait.as_secs()
                )
            },
        );
        link = next_link(&mut spare, &mut room, &mut tracker, wait, &peer, lost)
            .await
            .map_err(|mut f| {
                f.message = format!(
                    "{}; the {received} bytes of {name} that arrived are kept in {}: run recv again with the same --out to resume",
                    f.message,
                    a.out.display()
                );
                f
            })?;
    }
    // Give the last ack time to leave before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), link.channel.flush()).await;
    room.leave();
    link.pc.close().await;
    Ok(())
}

/// Acts on what a frame did to the receiver: progress, the resume offer,
/// the ack. `Ok(true)` when a file was received and verified.
async fn on_received(
    r: Result<Received, transfer::TransferError>,
    link: &Link,
    out: &Out,
    current: &mut Option<(String, u64, Instant, ProgressBar)>,
    tick: &mut Ticker,
) -> Result<bool, Failure> {
    let peer = link.peer.as_str();
    match r {
        Ok(Received::Started {
            name, size, resume, ..
        }) => {
            if let Some(frame) = resume {
                send_frame(&link.channel, &frame).await?;
            }
            let pb = bar(out, &name, size);
            *current = Some((name, size, Instant::now(), pb));
        }
        Ok(Received::Resumed { offset, size, .. }) => {
            if let Some((name, _, _, pb)) = current {
                pb.set_position(offset);
                out.event(
                    CliEvent::FileResumed {
                        peer,
                        name,
                        offset,
                        size,
                    },
                    || format!("resuming {name} from byte {offset}, kept from an earlier transfer"),
                );
            }
        }
        Ok(Received::Progress { received, size }) => {
            if let Some((name, _, _, pb)) = current {
                pb.set_position(received);
                if tick.due() {
                    out.event(
                        CliEvent::Progress {
                            peer,
                            name,
                            bytes: received,
                            size,
                        },
                        String::new,
                    );
                }
            }
        }
        Ok(Received::Finished(f)) => {
            let ack = f.ack();
            send_frame(&link.channel, &ack).await?;
            let (ms, pb) = match current.take() {
                Some((_, _, t, pb)) => (t.elapsed().as_millis() as u64, pb),
                None => (0, ProgressBar::hidden()),
            };
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
                CliEvent::FileReceived {
                    peer,
                    name: &f.name,
                    path: path.as_deref(),
                    size: f.received,
                    sha256: &sha,
                    ok,
                    ms,
                    paths,
                    redundancy,
                    resumed_at: f.resumed_at,
                    transferred: f.transferred,
                },
                || match &path {
                    Some(p) => format!(
                        "received {} ({} bytes{}, sha256 {sha}) -> {p}; on the wire: {}",
                        f.name,
                        f.received,
                        f.resumed_at
                            .map(|o| format!(", resumed at byte {o}"))
                            .unwrap_or_default(),
                        describe_link(&paths, &redundancy)
                    ),
                    None => format!("FAILED {}: {}", f.name, why.clone().unwrap_or_default()),
                },
            );
            if refused {
                return Err(Failure::new(
                    EXIT_TRANSFER,
                    "unsafe-path",
                    format!(
                        "refused {}: {}; nothing was written",
                        f.name,
                        why.unwrap_or_default()
                    ),
                ));
            }
            if !ok {
                return Err(Failure::new(
                    EXIT_TRANSFER,
                    "hash-mismatch",
                    format!("{} failed its check: {}", f.name, why.unwrap_or_default()),
                ));
            }
            return Ok(true);
        }
        Ok(Received::Ignored) => {}
        Err(transfer::TransferError::UnknownFileEnd { id }) => {
            // Answered, not ok, so its sender does not wait forever
            // (docs/protocol.md); the file in progress carries on.
            tracing::warn!(
                "file-end from {peer} for {id:?}, which is not the file in progress: answered not ok"
            );
            let ack = Frame::FileAck {
                id,
                ok: false,
                sha256: transfer::Digest::of(b""),
            };
            send_frame(&link.channel, &ack).await?;
        }
        Err(e) => tracing::warn!("bad transfer frame from {peer}: {e}"),
    }
    Ok(false)
}

async fn send_frame(ch: &DataChannel, f: &Frame<'_>) -> Result<(), Failure> {
    let r = match f.encode() {
        Outbound::Text(t) => ch.send(Message::Text(t)).await,
        Outbound::Binary(b) => ch.send_binary(b).await,
    };
    r.map_err(|e| Failure::new(EXIT_TRANSFER, "transfer", e.to_string()))
}
