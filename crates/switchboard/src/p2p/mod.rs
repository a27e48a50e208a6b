//! The native peer commands: `echo`, `send`, `recv`, `chat`, `play`,
//! `record`. Each joins a room through [`peer::room`]; the file and chat
//! commands talk over the `chat` data channel in the wire format of
//! [`transfer`] (the one `/chat` speaks), the media ones send or keep
//! tracks through [`media`]. The contract (options, `--json` events, exit
//! codes) is docs/cli.md.

mod chat;
mod echo;
mod files;
mod play;
mod record;

use clap::{Args, Subcommand};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use peer::room::{self, RoomConfig, RoomEvent};
use peer::{
    CandidatePair, Config, DataChannel, Event, HostCandidates, IceConnectionState, IceServer,
    IceUrl, PathBytes, PeerConnection, RedundancyConfig, RedundancyMode, RedundancyStats,
    TlsClient, TlsOptions,
};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The native peer subcommands, flattened into the top-level CLI.
#[derive(Subcommand)]
pub enum PeerCommand {
    /// Echo every data-channel message back, and send every received audio
    /// and video track back to its sender.
    Echo(EchoArgs),
    /// Send files to the first peer that connects (same wire format as /chat).
    Send(files::SendArgs),
    /// Receive files into a directory; each is checked against its SHA-256.
    Recv(files::RecvArgs),
    /// Text chat: stdin lines out, peer lines to stdout.
    Chat(ChatArgs),
    /// Stream IVF (VP8/VP9) and Ogg (Opus) files into the room, paced by
    /// their timestamps.
    Play(play::PlayArgs),
    /// Record every remote track to a file (IVF for VP8/VP9, Ogg for Opus).
    Record(record::RecordArgs),
}

/// `switchboard echo`: the common options only.
#[derive(Args)]
pub struct EchoArgs {
    /// The options every peer command takes.
    #[command(flatten)]
    pub common: PeerArgs,
}

/// `switchboard chat`: the common options only.
#[derive(Args)]
pub struct ChatArgs {
    /// The options every peer command takes.
    #[command(flatten)]
    pub common: PeerArgs,
}

/// Options every peer command takes.
#[derive(Args, Clone)]
pub struct PeerArgs {
    /// The switchboard server: http(s)://host:port (or
    /// ws(s)://host:port/v1/ws).
    #[arg(long, default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Also trust this CA (PEM) for https/wss and turns:, besides the
    /// system's roots. Repeatable.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_file: Vec<std::path::PathBuf>,
    /// Do not check TLS certificates at all (https/wss and turns:). Anyone
    /// on the path can then impersonate the server.
    #[arg(long)]
    pub insecure: bool,
    /// Room to join (`send` without it makes a code and a link instead;
    /// `recv` then takes the code or link in its place).
    #[arg(long)]
    pub room: Option<String>,
    /// Name shown to the other peers (meta.name).
    #[arg(long)]
    pub name: Option<String>,
    /// Room access token, for a server started with --auth-secret (see
    /// `switchboard token`).
    #[arg(long, env = "SWITCHBOARD_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Use relay (TURN) candidates only.
    #[arg(long)]
    pub relay_only: bool,
    /// Extra STUN server, stun:host:port. Repeatable.
    #[arg(long = "stun", value_name = "URL")]
    pub stun: Vec<String>,
    /// Extra TURN server, turn:host:port?transport=udp|tcp or
    /// turns:host:port (TURN over TLS). Repeatable.
    #[arg(long = "turn", value_name = "URL")]
    pub turn: Vec<String>,
    /// Username for --turn.
    #[arg(long)]
    pub user: Option<String>,
    /// Password for --turn.
    #[arg(long)]
    pub password: Option<String>,
    /// Ignore the iceServers the server hands out.
    #[arg(long)]
    pub no_server_ice: bool,
    /// Also offer loopback host candidates (tests on one machine).
    #[arg(long)]
    pub loopback: bool,
    /// Seconds a connection may take to come up before the command fails.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Print one JSON event per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// Send each data-channel datagram twice: `auto` (from the start, off
    /// while the peer's datagrams arrive with under --redundancy-off-at
    /// loss, on again from --redundancy-on-at), `on` or `off`. Keeps
    /// transfers going on lossy links at the cost of bytes on the wire
    /// (docs/cli.md).
    #[arg(long, value_enum, default_value_t = Redundancy::Auto)]
    pub redundancy: Redundancy,
    /// `--redundancy auto` sends copies again from this loss, in percent.
    #[arg(long, value_name = "PCT", default_value_t = 0.5)]
    pub redundancy_on_at: f64,
    /// `--redundancy auto` stops sending copies below this loss, in
    /// percent (at most --redundancy-on-at).
    #[arg(long, value_name = "PCT", default_value_t = 0.2)]
    pub redundancy_off_at: f64,
}

/// `--redundancy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Redundancy {
    /// On at the start and when loss is seen; off on a clean link.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// A failure with its exit code (docs/cli.md).
#[derive(Debug)]
pub struct Failure {
    /// The process exit code, one of the `EXIT_*` constants.
    pub code: i32,
    /// The `code` of the `--json` `error` event, e.g. `usage`,
    /// `signaling`, `room-full`, `connection-failed`, `peer-left`,
    /// `hash-mismatch`, `session-lost`, `restarts-exhausted`.
    pub kind: &'static str,
    /// The human explanation (the `message` of the `error` event).
    pub message: String,
}

impl Failure {
    /// A failure that exits with `code`.
    pub fn new(code: i32, kind: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            kind,
            message: message.into(),
        }
    }
}

/// Any other error, e.g. a file that cannot be read or written.
pub const EXIT_OTHER: i32 = 1;
/// `--server` when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// A bad command line, including a malformed `--server`, `--stun` or
/// `--turn` URL or room name.
pub const EXIT_USAGE: i32 = 2;
/// Signaling failed: server unreachable, join refused, or the connection
/// to it lost.
pub const EXIT_SIGNALING: i32 = 3;
/// The peer connection failed, or did not come up within `--timeout`.
pub const EXIT_CONNECTION: i32 = 4;
/// A transfer failed: hash mismatch, or the peer left mid-transfer.
pub const EXIT_TRANSFER: i32 = 5;
/// The call could not be kept up: the signaling connection dropped and
/// neither a resume within the server's window nor a rejoin worked, or the
/// connection to the peer failed and its ICE restarts were exhausted.
pub const EXIT_LOST: i32 = 6;
/// The pairing by code or link failed: a wrong code, or descriptions
/// changed on the way (`send`/`recv` with a code or link).
pub const EXIT_PAIRING: i32 = 7;

/// Runs a peer command and exits with its code.
pub fn run(cmd: PeerCommand) -> ! {
    let common = match &cmd {
        PeerCommand::Echo(a) => a.common.clone(),
        PeerCommand::Send(a) => a.common.clone(),
        PeerCommand::Recv(a) => a.common.clone(),
        PeerCommand::Chat(a) => a.common.clone(),
        PeerCommand::Play(a) => a.common.clone(),
        PeerCommand::Record(a) => a.common.clone(),
    };
    let out = Out::new(common.json);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => out.fail(Failure::new(EXIT_OTHER, "runtime", e.to_string())),
    };
    let result = rt.block_on(async {
        match cmd {
            PeerCommand::Echo(a) => echo::run(a, out.clone()).await,
            PeerCommand::Send(a) => files::send(a, out.clone()).await,
            PeerCommand::Recv(a) => files::recv(a, out.clone()).await,
            PeerCommand::Chat(a) => chat::run(a, out.clone()).await,
            PeerCommand::Play(a) => play::run(a, out.clone()).await,
            PeerCommand::Record(a) => record::run(a, out.clone()).await,
        }
    });
    // Connection tasks may still be closing; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(300));
    match result {
        Ok(()) => std::process::exit(0),
        Err(f) => out.fail(f),
    }
}

/// The `--json` events, one object per line on stdout. This enum is the
/// contract of docs/cli.md: names and fields must stay as documented there
/// (tests/e2e and tests/nat parse them). Optional values that are `null`
/// when unknown (`pair`, `path`) are documented that way.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum CliEvent<'a> {
    /// We are in the room; `peers` were there before us.
    Joined {
        /// The room name.
        room: &'a str,
        /// Our own peer id.
        peer: &'a str,
        /// Ids of the peers already there, oldest first.
        peers: &'a [String],
    },
    /// `send` without `--room`: the code and the link that bring a
    /// receiver to this transfer.
    Code {
        /// The short code, for `switchboard recv CODE`.
        code: &'a str,
        /// The link (its fragment holds a key of its own), for
        /// `switchboard recv LINK`.
        link: &'a str,
    },
    /// The peer proved the code or link, and both sides saw the same
    /// DTLS fingerprints.
    Paired {
        /// The remote peer.
        peer: &'a str,
    },
    /// A peer joined after us.
    PeerJoined {
        /// Its id.
        peer: &'a str,
    },
    /// A peer left.
    PeerLeft {
        /// Its id.
        peer: &'a str,
    },
    /// ICE connection state.
    State {
        /// The remote peer.
        peer: &'a str,
        /// The new state, lowercase (`checking`, `connected`, …).
        state: IceConnectionState,
    },
    /// A connection is up, or moved to another candidate pair; `pair` is
    /// `null` when the stats have none.
    Connected {
        /// The remote peer.
        peer: &'a str,
        /// Milliseconds from the connection's creation to ICE connected
        /// with the `chat` channel open.
        setup_ms: u64,
        /// The path data takes: local end `host` or `relay` (a candidate
        /// base), remote end as signaled or `prflx`.
        pair: Option<&'a CandidatePair>,
    },
    /// `echo`: a track it now sends back.
    Track {
        /// The remote peer.
        peer: &'a str,
        /// `audio` or `video`.
        kind: &'a str,
        /// The media line's mid.
        mid: &'a str,
    },
    /// Bytes of a file sent or received so far; at most a few per second.
    Progress {
        /// The remote peer.
        peer: &'a str,
        /// The file name as sent in `file-start`.
        name: &'a str,
        /// Bytes done.
        bytes: u64,
        /// Bytes in all, from `file-start`.
        size: u64,
    },
    /// A file was sent and acknowledged.
    FileSent {
        /// The receiving peer.
        peer: &'a str,
        /// The file name as sent.
        name: &'a str,
        /// Its length in bytes.
        size: u64,
        /// Lowercase hex SHA-256 of what we sent.
        sha256: &'a str,
        /// The receiver's `file-ack` said size and hash matched.
        ok: bool,
        /// Milliseconds from the start of sending to the ack.
        ms: u64,
        /// What the connection to this peer has moved on each kind of path
        /// so far: `direct` and `relay`, each with `sent` and `received`.
        paths: PathBytes,
        /// `--redundancy` on this connection: `loss_in` (estimated loss of
        /// the peer's datagrams, `null` before enough arrived), `active`,
        /// `copies` (datagrams sent twice).
        redundancy: RedundancyStats,
    },
    /// A file arrived; `path` is `null` when it failed its check.
    FileReceived {
        /// The sending peer.
        peer: &'a str,
        /// The sender's name for it, sanitized.
        name: &'a str,
        /// Where it was saved (sanitized, never overwriting).
        path: Option<&'a str>,
        /// Bytes received.
        size: u64,
        /// Lowercase hex SHA-256 of what we received.
        sha256: &'a str,
        /// Size and hash matched the sender's.
        ok: bool,
        /// Milliseconds from `file-start` to `file-end`.
        ms: u64,
        /// As in `file-sent`.
        paths: PathBytes,
        /// As in `file-sent`.
        redundancy: RedundancyStats,
        /// Where the file continued from a part kept by an earlier
        /// transfer; `null` when it came whole.
        resumed_at: Option<u64>,
        /// Bytes of it that came over this connection (with a resume, the
        /// rest was on disk already).
        transferred: u64,
    },
    /// A file continues from a part the receiver kept from an earlier
    /// transfer (another connection, or an earlier run of `recv` or
    /// `send`): `offset` bytes of `size` need not be sent again.
    FileResumed {
        /// The other peer.
        peer: &'a str,
        /// The file's name.
        name: &'a str,
        /// Bytes already on the receiver's disk, checked by SHA-256.
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// The peer a file was going to or coming from is gone in the middle
    /// of it; waiting up to `--timeout` for it (or another) to come back.
    TransferInterrupted {
        /// The peer that went away.
        peer: &'a str,
        /// The file in progress.
        name: &'a str,
        /// Why we think it is gone.
        reason: &'a str,
    },
    /// The signaling connection dropped; attempt `attempt` (from 1) to
    /// get the session back follows after a backoff. Connections keep
    /// running meanwhile.
    Reconnecting {
        /// Which attempt comes next, from 1.
        attempt: u32,
        /// Why the connection dropped, or why the last attempt failed.
        reason: &'a str,
    },
    /// The session was resumed on a new signaling connection; nothing was
    /// lost and the peer connections were not touched.
    Resumed,
    /// The session could not be resumed, so we joined again under the same
    /// id and ICE-restart the connections to the peers still here.
    Rejoined {
        /// Our id (a new one only if ours had been taken meanwhile).
        peer: &'a str,
        /// Ids of the peers in the room now.
        peers: &'a [String],
    },
    /// A chat line from a peer.
    Text {
        /// The sending peer.
        peer: &'a str,
        /// The line.
        text: &'a str,
    },
    /// Every 2 s per connected peer (`play`, `record`): the connection's
    /// health over the last interval.
    Stats {
        /// The remote peer.
        peer: &'a str,
        /// Kilobits per second we sent to it (every datagram: media,
        /// data channels, ICE), over the last interval.
        send_kbps: f64,
        /// Kilobits per second received from it, likewise.
        recv_kbps: f64,
        /// Latest ICE round-trip time in ms; `null` before one was measured.
        rtt_ms: Option<f64>,
        /// Fraction of our RTP packets the peer reports lost (0.01 = 1%);
        /// `null` until a receiver report came.
        loss_out: Option<f64>,
        /// Fraction of the peer's RTP packets we lost; `null` without media
        /// from it.
        loss_in: Option<f64>,
    },
    /// `record`: one track's file, every 2 s and once more (`done: true`)
    /// when it is finished.
    Recording {
        /// The remote peer.
        peer: &'a str,
        /// `audio` or `video`.
        kind: &'a str,
        /// The media line's mid.
        mid: &'a str,
        /// `VP8`, `VP9` or `Opus`.
        codec: &'a str,
        /// The file.
        path: &'a str,
        /// Media time recorded, from RTP timestamps, in ms.
        duration_ms: u64,
        /// Bytes written.
        bytes: u64,
        /// Frames (audio: packets) written.
        frames: u64,
        /// The file is finished and closed.
        done: bool,
    },
    /// Before a non-zero exit.
    Error {
        /// A short machine-readable kind ([`Failure::kind`]).
        code: &'a str,
        /// What went wrong, for humans.
        message: &'a str,
    },
}

/// Where events go: JSON lines on stdout, or short human lines on stderr.
///
/// Lines are written and flushed as they happen; a consumer that stops
/// reading stdout makes the command wait (no event is dropped).
#[derive(Clone)]
pub struct Out {
    json: bool,
    lock: Arc<std::sync::Mutex<()>>,
}

impl Out {
    fn new(json: bool) -> Self {
        Out {
            json,
            lock: Arc::default(),
        }
    }

    /// `--json` was given: events go to stdout as JSON lines.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Emits `event` as JSON, or `human` on stderr (nothing if empty).
    pub fn event(&self, event: CliEvent<'_>, human: impl FnOnce() -> String) {
        let _g = self.lock.lock();
        if self.json {
            let Ok(line) = serde_json::to_string(&event) else {
                return;
            };
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        } else {
            self.human(human);
        }
    }

    /// A note for humans only; nothing in JSON mode.
    pub fn note(&self, human: impl FnOnce() -> String) {
        let _g = self.lock.lock();
        if !self.json {
            self.human(human);
        }
    }

    fn human(&self, human: impl FnOnce() -> String) {
        let line = human();
        if !line.is_empty() {
            eprintln!("{line}");
        }
    }

    fn fail(&self, f: Failure) -> ! {
        self.event(
            CliEvent::Error {
                code: f.kind,
                message: &f.message,
            },
            || format!("error: {}", f.message),
        );
        std::process::exit(f.code)
    }
}

/// Builds the room config from the common options, checking every URL
/// first (a typo is exit code 2, not a hang).
pub fn room_config(a: &PeerArgs, default_name: &str) -> Result<RoomConfig, Failure> {
    let usage = |m: String| Failure::new(EXIT_USAGE, "usage", m);
    room::ws_url(&a.server).map_err(|e| usage(e.to_string()))?;
    let room_name = a
        .room
        .as_deref()
        .ok_or_else(|| usage("--room is required".into()))?;
    // The server's own rule, checked here so a typo is a usage error.
    if !signal::protocol::valid_id(room_name) {
        return Err(usage(format!(
            "bad room name {room_name:?}: {}",
            signal::protocol::ID_RULE
        )));
    }
    let mut servers = Vec::new();
    for u in &a.stun {
        match IceUrl::parse(u).map_err(|e| usage(e.to_string()))? {
            IceUrl::Stun { .. } => servers.push(IceServer {
                urls: vec![u.clone()],
                ..Default::default()
            }),
            IceUrl::Turn { .. } => {
                return Err(usage(format!("--stun {u}: this is a TURN URL; use --turn")))
            }
        }
    }
    for u in &a.turn {
        match IceUrl::parse(u).map_err(|e| usage(e.to_string()))? {
            IceUrl::Turn { .. } => {}
            IceUrl::Stun { .. } => {
                return Err(usage(format!("--turn {u}: this is a STUN URL; use --stun")))
            }
        }
        let (Some(user), Some(pass)) = (&a.user, &a.password) else {
            return Err(usage(format!("--turn {u} needs --user and --password")));
        };
        servers.push(IceServer {
            urls: vec![u.clone()],
            username: Some(user.clone()),
            credential: Some(pass.clone()),
        });
    }
    let (on, off) = (a.redundancy_on_at, a.redundancy_off_at);
    if !(0.0..=100.0).contains(&on) || !(0.0..=100.0).contains(&off) || off > on {
        return Err(usage(format!(
            "--redundancy-on-at {on} and --redundancy-off-at {off}: each must be a percentage (0-100), and off at most on"
        )));
    }
    let mut cfg = RoomConfig::new(a.server.clone(), room_name);
    cfg.meta = json!({ "name": a.name.clone().unwrap_or_else(|| default_name.to_string()), "agent": "switchboard-cli" });
    cfg.use_server_ice = !a.no_server_ice;
    cfg.token = a.token.clone();
    // Without either flag the system's roots are loaded when TLS is
    // first needed, so plain http never reads them.
    let tls = if a.insecure || !a.ca_file.is_empty() {
        if a.insecure {
            eprintln!(
                "warning: --insecure: TLS certificates are not checked; anyone on the path can impersonate the server"
            );
        }
        let opts = TlsOptions {
            ca_files: a.ca_file.clone(),
            insecure: a.insecure,
        };
        Some(TlsClient::new(&opts).map_err(|e| usage(e.to_string()))?)
    } else {
        None
    };
    cfg.tls = tls.clone();
    cfg.peer_config = Config {
        tls,
        ice_servers: servers,
        relay_only: a.relay_only,
        host_candidates: if a.loopback {
            HostCandidates::InterfacesAndLoopback
        } else {
            HostCandidates::Interfaces
        },
        redundancy: RedundancyConfig {
            mode: match a.redundancy {
                Redundancy::Auto => RedundancyMode::Auto,
                Redundancy::On => RedundancyMode::On,
                Redundancy::Off => RedundancyMode::Off,
            },
            on_at: on / 100.0,
            off_at: off / 100.0,
        },
        ..Config::default()
    };
    Ok(cfg)
}

/// Joins, mapping refusals to exit code 3.
pub async fn join(cfg: RoomConfig, out: &Out) -> Result<room::Room, Failure> {
    let room_name = cfg.room.clone();
    let r = room::join(cfg).await.map_err(|e| {
        let kind = match &e {
            room::RoomError::Refused { code, .. } if code == "room-full" => "room-full",
            // The access-token codes pass through, so scripts can tell
            // "get a fresh token" from other refusals.
            room::RoomError::Refused { code, .. } if code == "unauthorized" => "unauthorized",
            room::RoomError::Refused { code, .. } if code == "token-expired" => "token-expired",
            room::RoomError::Refused { code, .. } if code == "peer-not-allowed" => {
                "peer-not-allowed"
            }
            room::RoomError::Refused { .. } => "refused",
            room::RoomError::BadUrl(..) => return Failure::new(EXIT_USAGE, "usage", e.to_string()),
            room::RoomError::Tls(..) => "tls",
            _ => "signaling",
        };
        Failure::new(EXIT_SIGNALING, kind, e.to_string())
    })?;
    let (me, peers) = (r.me.clone(), r.peers.clone());
    out.event(
        CliEvent::Joined {
            room: &room_name,
            peer: &me,
            peers: &peers,
        },
        || {
            if peers.is_empty() {
                format!("joined room {room_name} as {me}; waiting for a peer")
            } else {
                format!(
                    "joined room {room_name} as {me}; {} peer(s) here",
                    peers.len()
                )
            }
        },
    );
    Ok(r)
}

/// One connected peer with its open `chat` channel.
pub struct Link {
    /// The remote peer's id.
    pub peer: String,
    /// The connection to it.
    pub pc: PeerConnection,
    /// The open `chat` channel (the [`transfer`] wire format).
    pub channel: DataChannel,
}

/// Tracks every connection in the room: reports states and the selected
/// pair, enforces `--timeout`, and yields `chat` channels once they open.
///
/// Feed it with [`Tracker::next`] (or [`Tracker::try_next`]) and
/// [`Tracker::handle`]: besides room events it has its own inputs, the
/// `chat` channels it waits on to open, so that waiting never holds up the
/// other events of the room.
pub struct Tracker {
    /// Report `connected` at ICE connected even when no `chat` channel
    /// exists (echo serving a media-only /call peer).
    pub report_without_channel: bool,
    out: Out,
    timeout: Duration,
    conns: HashMap<String, ConnInfo>,
    /// When the first connection attempt began, until one succeeds: a peer
    /// that gives up and leaves must not leave us waiting forever.
    first_attempt: Option<Instant>,
    any_linked: bool,
    /// `chat` channels waiting to open.
    opening: FuturesUnordered<BoxFuture<'static, Opened>>,
    /// Tells a connection from an earlier one to a peer of the same id.
    next_attempt: u64,
    /// Set by [`Tracker::pair`]: a channel only counts as linked once the
    /// peer proved the code or link and the fingerprints matched.
    pairing: Option<PairingSetup>,
}

struct PairingSetup {
    /// Makes this side's pairing with one more peer.
    start: Box<dyn Fn() -> pairing::Pairing + Send + Sync>,
    signaler: room::Signaler,
    peers: HashMap<String, pairing::Pairing>,
    /// Peers that have been verified once: after the first link, only
    /// they are paired again (a reconnect), anyone else is ignored.
    trusted: std::collections::HashSet<String>,
}

impl PairingSetup {
    /// The pairing with `peer`, made on first use.
    fn with(&mut self, peer: &str) -> &mut pairing::Pairing {
        let start = &self.start;
        self.peers.entry(peer.to_string()).or_insert_with(start)
    }

    /// Sends what the pairing with `peer` has to say.
    fn flush(&mut self, peer: &str) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        while let Some(m) = p.poll_output() {
            // Only fails for an object with negotiation's keys, which
            // pairing messages never have.
            let _ = self.signaler.signal(peer, &m);
        }
    }

    fn verified(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| p.is_verified())
    }
}

/// A failed pairing, for the command to report.
fn pairing_failure(peer: &str, e: pairing::PairError) -> Failure {
    let kind = match e {
        pairing::PairError::WrongSecret => "wrong-code",
        pairing::PairError::Tampered => "tampered",
        pairing::PairError::Malformed(_) | pairing::PairError::NoFingerprint => "pairing",
    };
    Failure::new(
        EXIT_PAIRING,
        kind,
        format!("pairing with {peer}: {e}; nothing was sent or written"),
    )
}

struct ConnInfo {
    pc: PeerConnection,
    attempt: u64,
    started: Instant,
    ice_connected: bool,
    reported: bool,
    channel: Option<DataChannel>,
    /// A wait for `channel` to open is in `Tracker::opening`.
    opening: bool,
    /// `channel` is open (it may still wait for the pairing).
    open: bool,
    linked: bool,
}

/// A `chat` channel that opened, failed, or ran out of time.
struct Opened {
    peer: String,
    attempt: u64,
    /// `None`: not open within the connection's `--timeout`.
    result: Option<Result<(), peer::Error>>,
}

enum Input {
    Room(RoomEvent),
    Opened(Opened),
}

/// Something for [`Tracker::handle`], from [`Tracker::next`].
pub struct Update(Input);

/// What a room event meant for the command.
pub enum Happened {
    /// Nothing the command needs to act on (it may have been printed).
    Nothing,
    /// The `chat` channel to this peer is open and ICE is connected.
    Linked(Link),
    /// A channel other than the first `chat` one (echo serves them all).
    OtherChannel {
        /// The channel, possibly not open yet.
        channel: DataChannel,
    },
    /// This peer left the room; its connection is gone.
    PeerLeft(String),
    /// A connection to this peer exists now (a new one after it came back).
    Connection {
        /// The remote peer.
        peer: String,
        /// The connection.
        pc: PeerConnection,
    },
    /// A connection event, passed on after the tracker looked at it
    /// (tracks, keyframe requests, states).
    Event {
        /// The remote peer.
        peer: String,
        /// The event.
        event: Event,
    },
    /// The signaling connection ended, with its reason; connections
    /// already up keep running.
    SignalingClosed(String),
    /// The connection to this peer failed and ICE restarts did not bring
    /// it back.
    RestartsExhausted(String),
}

impl Tracker {
    /// A tracker printing to `out` that gives each connection
    /// `timeout_secs` (at least 1) to link.
    pub fn new(out: Out, timeout_secs: u64) -> Self {
        Tracker {
            report_without_channel: false,
            out,
            timeout: Duration::from_secs(timeout_secs.max(1)),
            conns: HashMap::new(),
            first_attempt: None,
            any_linked: false,
            opening: FuturesUnordered::new(),
            next_attempt: 0,
            pairing: None,
        }
    }

    /// Pairs every connection (with a pairing from `start`, one per peer)
    /// before it counts as linked; the pairing messages go through
    /// `signaler`.
    pub fn pair(
        &mut self,
        start: impl Fn() -> pairing::Pairing + Send + Sync + 'static,
        signaler: room::Signaler,
    ) {
        self.pairing = Some(PairingSetup {
            start: Box::new(start),
            signaler,
            peers: HashMap::new(),
            trusted: Default::default(),
        });
    }

    /// A link to `peer` once its channel is open and, when pairing, the
    /// pairing verified.
    async fn link_if_ready(&mut self, peer: &str) -> Happened {
        let paired = self.pairing.as_ref().is_none_or(|p| p.verified(peer));
        let Some(c) = self.conns.get_mut(peer) else {
            return Happened::Nothing;
        };
        if !c.open || c.linked || !paired {
            return Happened::Nothing;
        }
        if let Some(setup) = self.pairing.as_mut() {
            setup.trusted.insert(peer.to_string());
        }
        let Some(channel) = c.channel.clone() else {
            return Happened::Nothing;
        };
        c.linked = true;
        self.any_linked = true;
        let pc = c.pc.clone();
        if self.pairing.is_some() {
            self.out.event(CliEvent::Paired { peer }, || {
                format!("{peer} holds the same code or link; the connection is bound to it")
            });
        }
        self.report(peer).await;
        Happened::Linked(Link {
            peer: peer.to_string(),
            pc,
            channel,
        })
    }

    /// Feeds the pairing with `peer` the descriptions of its connection,
    /// once both are set.
    async fn bind_descriptions(&mut self, peer: &str) -> Result<Happened, Failure> {
        let Some(pc) = self.conns.get(peer).map(|c| c.pc.clone()) else {
            return Ok(Happened::Nothing);
        };
        let Some(setup) = self
            .pairing
            .as_mut()
            .filter(|s| !self.any_linked || s.trusted.contains(peer))
        else {
            return Ok(Happened::Nothing);
        };
        let Ok((Some(local), Some(remote))) = pc.descriptions().await else {
            return Ok(Happened::Nothing);
        };
        let r = setup.with(peer).set_descriptions(&local.sdp, &remote.sdp);
        setup.flush(peer);
        r.map_err(|e| pairing_failure(peer, e))?;
        Ok(self.link_if_ready(peer).await)
    }

    /// The next room event or channel opening; `None` once the room's
    /// events have ended and nothing is opening. Cancel-safe, so it can be
    /// a `select!` branch.
    pub async fn next(&mut self, room: &mut room::Room) -> Option<Update> {
        tokio::select! {
            Some(o) = self.opening.next(), if !self.opening.is_empty() => Some(Update(Input::Opened(o))),
            Some(ev) = room.events.recv() => Some(Update(Input::Room(ev))),
            else => None,
        }
    }

    /// Like [`Tracker::next`], without waiting.
    pub fn try_next(&mut self, room: &mut room::Room) -> Option<Update> {
        if let Some(Some(o)) = self.opening.next().now_or_never() {
            return Some(Update(Input::Opened(o)));
        }
        room.events
            .try_recv()
            .ok()
            .map(|ev| Update(Input::Room(ev)))
    }

    /// Earliest time a connection that is still coming up runs out.
    pub fn deadline(&self) -> Option<Instant> {
        let first = self
            .first_attempt
            .filter(|_| !self.any_linked)
            .map(|t| t + self.timeout);
        self.conns
            .values()
            .filter(|c| !c.linked)
            .map(|c| c.started + self.timeout)
            .chain(first)
            .min()
    }

    /// Err if a connection did not come up in time.
    pub fn check_timeouts(&self) -> Result<(), Failure> {
        let now = Instant::now();
        if let Some(t) = self.first_attempt.filter(|_| !self.any_linked) {
            if now >= t + self.timeout && self.conns.values().all(|c| !c.linked) {
                return Err(Failure::new(
                    EXIT_CONNECTION,
                    "connection-failed",
                    format!(
                        "no peer connection came up within {} s",
                        self.timeout.as_secs()
                    ),
                ));
            }
        }
        for (peer, c) in &self.conns {
            if !c.linked && now >= c.started + self.timeout {
                return Err(Failure::new(
                    EXIT_CONNECTION,
                    "connection-failed",
                    format!(
                        "no connection to {peer} after {} s (ICE found no working path)",
                        self.timeout.as_secs()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Acts on one update: prints what it means and says what happened.
    /// Err when a connection failed for good.
    pub async fn handle(&mut self, update: Update) -> Result<Happened, Failure> {
        match update.0 {
            Input::Room(ev) => self.room_event(ev).await,
            Input::Opened(o) => self.opened(o).await,
        }
    }

    async fn room_event(&mut self, ev: RoomEvent) -> Result<Happened, Failure> {
        match ev {
            RoomEvent::PeerJoined { peer, .. } => {
                self.out.event(CliEvent::PeerJoined { peer: &peer }, || {
                    format!("{peer} joined")
                });
            }
            RoomEvent::PeerLeft { peer } => {
                self.conns.remove(&peer);
                let unpaired = self
                    .pairing
                    .as_mut()
                    .and_then(|p| p.peers.remove(&peer))
                    .is_some_and(|p| !p.is_verified());
                if unpaired && !self.any_linked {
                    return Err(Failure::new(
                        EXIT_PAIRING,
                        "pairing",
                        format!("{peer} left before the pairing finished (a wrong code on its side?); nothing was sent or written"),
                    ));
                }
                self.out.event(CliEvent::PeerLeft { peer: &peer }, || {
                    format!("{peer} left")
                });
                return Ok(Happened::PeerLeft(peer));
            }
            RoomEvent::Connection { peer, pc, .. } => {
                self.first_attempt.get_or_insert_with(Instant::now);
                self.next_attempt += 1;
                self.conns.insert(
                    peer.clone(),
                    ConnInfo {
                        pc: pc.clone(),
                        attempt: self.next_attempt,
                        started: Instant::now(),
                        ice_connected: false,
                        reported: false,
                        channel: None,
                        opening: false,
                        open: false,
                        linked: false,
                    },
                );
                if let Some(setup) = self.pairing.as_mut() {
                    if !self.any_linked || setup.trusted.contains(&peer) {
                        // A connection after an earlier one binds afresh.
                        setup.with(&peer).new_connection();
                        setup.flush(&peer);
                    }
                }
                return Ok(Happened::Connection { peer, pc });
            }
            RoomEvent::Channel { peer, channel } => {
                let Some(c) = self.conns.get_mut(&peer) else {
                    return Ok(Happened::Nothing);
                };
                if channel.label() == "chat" && c.channel.is_none() && !c.linked {
                    c.channel = Some(channel);
                    self.try_link(&peer);
                    return Ok(Happened::Nothing);
                }
                return Ok(Happened::OtherChannel { channel });
            }
            RoomEvent::Signal { peer, data } => {
                let Some(setup) = self.pairing.as_mut() else {
                    return Ok(Happened::Nothing);
                };
                if !pairing::Pairing::is_pairing_message(&data)
                    || (self.any_linked && !setup.trusted.contains(&peer))
                {
                    return Ok(Happened::Nothing);
                }
                let r = setup.with(&peer).handle(&data);
                setup.flush(&peer);
                r.map_err(|e| pairing_failure(&peer, e))?;
                return Ok(self.link_if_ready(&peer).await);
            }
            RoomEvent::Peer { peer, event } => {
                if let Event::SignalingState(peer::SignalingState::Stable) = &event {
                    if let h @ Happened::Linked(_) = self.bind_descriptions(&peer).await? {
                        return Ok(h);
                    }
                }
                if let Event::SelectedPairChanged = &event {
                    if let Some(c) = self.conns.get_mut(&peer) {
                        if c.linked && c.ice_connected {
                            c.reported = false;
                            self.report(&peer).await;
                        }
                    }
                }
                if let Event::IceConnectionState(s) = &event {
                    let s = *s;
                    self.out.event(
                        CliEvent::State {
                            peer: &peer,
                            state: s,
                        },
                        String::new,
                    );
                    if let Some(c) = self.conns.get_mut(&peer) {
                        match s {
                            IceConnectionState::Connected | IceConnectionState::Completed => {
                                c.ice_connected = true;
                                if c.linked {
                                    // Back after a restart: say which path now.
                                    c.reported = false;
                                    self.report(&peer).await;
                                } else if c.channel.is_none() && self.report_without_channel {
                                    c.linked = true;
                                    self.any_linked = true;
                                    self.report(&peer).await;
                                } else {
                                    self.try_link(&peer);
                                }
                            }
                            IceConnectionState::Disconnected | IceConnectionState::Failed => {
                                c.ice_connected = false;
                                self.out.note(|| {
                                    format!("connection to {peer} is {s:?}; trying an ICE restart")
                                });
                            }
                            _ => {}
                        }
                    }
                }
                return Ok(Happened::Event { peer, event });
            }
            RoomEvent::ServerError { code, message } => {
                self.out.note(|| format!("server: {code}: {message}"));
            }
            RoomEvent::Closed { reason } => return Ok(Happened::SignalingClosed(reason)),
            RoomEvent::Reconnecting { attempt, reason } => {
                self.out
                    .event(CliEvent::Reconnecting { attempt, reason: &reason }, || {
                        format!("signaling connection lost ({reason}); reconnecting (attempt {attempt})")
                    });
            }
            RoomEvent::Resumed => {
                self.out.event(CliEvent::Resumed, || {
                    "signaling session resumed".to_string()
                });
            }
            RoomEvent::Rejoined { peer, peers } => {
                self.out.event(CliEvent::Rejoined { peer: &peer, peers: &peers }, || {
                    format!(
                        "could not resume the signaling session; rejoined the room ({} peer(s) here), restarting ICE",
                        peers.len()
                    )
                });
            }
            RoomEvent::SessionLost { reason } => {
                return Err(Failure::new(
                    EXIT_LOST,
                    "session-lost",
                    format!("signaling connection lost for good: {reason}"),
                ))
            }
            RoomEvent::RestartsExhausted { peer } => {
                self.out
                    .note(|| format!("connection to {peer} failed; no ICE restart left"));
                // A pairing still under way says why (DTLS refuses a
                // rewritten fingerprint too, often first); its verdict
                // comes over signaling, and --timeout bounds the wait.
                let pairing = self
                    .pairing
                    .as_ref()
                    .is_some_and(|p| p.peers.contains_key(&peer) && !p.verified(&peer));
                if pairing && self.conns.get(&peer).is_some_and(|c| !c.linked) {
                    return Ok(Happened::Nothing);
                }
                return Ok(Happened::RestartsExhausted(peer));
            }
        }
        Ok(Happened::Nothing)
    }

    /// Once ICE is connected and the `chat` channel exists, starts waiting
    /// for it to open, beside the room's other events.
    fn try_link(&mut self, peer: &str) {
        let Some(c) = self.conns.get_mut(peer) else {
            return;
        };
        let Some(channel) = c.channel.clone() else {
            return;
        };
        if c.linked || c.opening || !c.ice_connected {
            return;
        }
        c.opening = true;
        // The channel opens right after DTLS; give it the rest of the budget.
        let left = (c.started + self.timeout).saturating_duration_since(Instant::now());
        let (peer, attempt) = (peer.to_string(), c.attempt);
        self.opening.push(
            async move {
                let result = tokio::time::timeout(left, channel.opened()).await.ok();
                Opened {
                    peer,
                    attempt,
                    result,
                }
            }
            .boxed(),
        );
    }

    async fn opened(&mut self, o: Opened) -> Result<Happened, Failure> {
        let peer = o.peer;
        // The peer may have left, or come back with a new connection.
        let Some(c) = self
            .conns
            .get_mut(&peer)
            .filter(|c| c.attempt == o.attempt && !c.linked)
        else {
            return Ok(Happened::Nothing);
        };
        c.opening = false;
        let pairing = self.pairing.as_ref().is_some_and(|p| !p.verified(&peer));
        match o.result {
            Some(Ok(())) => {}
            // DTLS refuses a rewritten fingerprint too, often before the
            // pairing's verdict comes over signaling: wait for that, which
            // names the cause (--timeout bounds the wait).
            Some(Err(_)) if pairing => return Ok(Happened::Nothing),
            Some(Err(e)) => {
                return Err(Failure::new(
                    EXIT_CONNECTION,
                    "connection-failed",
                    format!("channel to {peer}: {e}"),
                ))
            }
            // `check_timeouts` reports it.
            None => return Ok(Happened::Nothing),
        }
        c.open = true;
        if self.pairing.is_some() {
            // The descriptions are both set by now, whatever order their
            // events came in.
            return self.bind_descriptions(&peer).await;
        }
        Ok(self.link_if_ready(&peer).await)
    }

    /// Prints the `connected` event with the selected pair.
    async fn report(&mut self, peer: &str) {
        let Some(c) = self.conns.get_mut(peer) else {
            return;
        };
        if c.reported {
            return;
        }
        c.reported = true;
        let setup_ms = c.started.elapsed().as_millis() as u64;
        let stats = c.pc.stats().await.unwrap_or_default();
        let pair = stats.selected_pair;
        self.out.event(
            CliEvent::Connected {
                peer,
                setup_ms,
                pair: pair.as_ref(),
            },
            || {
                format!(
                    "connected to {peer} via {} (setup {setup_ms} ms)",
                    describe(pair.as_ref())
                )
            },
        );
    }

    /// Every connection in the room, by peer.
    pub fn connections(&self) -> impl Iterator<Item = (&String, &PeerConnection)> {
        self.conns.iter().map(|(p, c)| (p, &c.pc))
    }
}

/// Leaves and waits (up to 3 s) until the room task has said goodbye, so
/// the others see `peer-left` at once rather than after the server's
/// resume window, even when the process exits right after.
pub async fn leave_and_wait(room: &mut room::Room) {
    room.leave();
    // The room says `Closed` once its leave frame is out (or the end it
    // came to otherwise); connections may keep its stream open after that.
    let drain = async {
        while let Some(ev) = room.events.recv().await {
            if matches!(ev, RoomEvent::Closed { .. } | RoomEvent::SessionLost { .. }) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
}

/// How often `play` and `record` print `stats` and progress.
pub const STATS_EVERY: Duration = Duration::from_secs(2);

/// Turns snapshots of a connection's byte counters into rates, sans-IO:
/// each sample gives the rates since the one before (the first, since the
/// meter was made with the connection).
#[derive(Debug)]
pub struct StatsMeter {
    last: Option<(Instant, u64, u64)>,
}

impl StatsMeter {
    /// A meter for a connection made at `now`, with nothing counted yet.
    pub fn new(now: Instant) -> Self {
        StatsMeter {
            last: Some((now, 0, 0)),
        }
    }

    /// Kilobits per second (sent, received) since the previous sample;
    /// `None` for the first.
    pub fn sample(&mut self, now: Instant, sent: u64, received: u64) -> Option<(f64, f64)> {
        let prev = self.last.replace((now, sent, received));
        let (t, s, r) = prev?;
        let secs = now.saturating_duration_since(t).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let kbps = |a: u64, b: u64| a.saturating_sub(b) as f64 * 8.0 / 1000.0 / secs;
        Some((kbps(sent, s), kbps(received, r)))
    }
}

/// Prints a `stats` event for `peer`.
pub async fn emit_stats(out: &Out, peer: &str, pc: &PeerConnection, meter: &mut StatsMeter) {
    let Ok(st) = pc.stats().await else { return };
    // The driver's path counters are current; str0m's lag by up to 500 ms.
    let sent = st.paths.direct.sent + st.paths.relay.sent;
    let received = st.paths.direct.received + st.paths.relay.received;
    let Some((send_kbps, recv_kbps)) = meter.sample(Instant::now(), sent, received) else {
        return;
    };
    let round = |v: f64| (v * 10.0).round() / 10.0;
    out.event(
        CliEvent::Stats {
            peer,
            send_kbps: round(send_kbps),
            recv_kbps: round(recv_kbps),
            rtt_ms: st.rtt_ms.map(round),
            loss_out: st.loss_out,
            loss_in: st.loss_in,
        },
        || {
            let ms = st.rtt_ms.map(|r| format!("{r:.0} ms")).unwrap_or_else(|| "-".into());
            let pct = |l: Option<f64>| l.map(|l| format!("{:.1}%", l * 100.0)).unwrap_or_else(|| "-".into());
            format!(
                "{peer}: send {send_kbps:.0} kbit/s, receive {recv_kbps:.0} kbit/s, rtt {ms}, loss out {} in {}",
                pct(st.loss_out),
                pct(st.loss_in)
            )
        },
    );
}

/// "1.2 MB" / "12.3 kB".
pub(crate) fn human_bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else {
        format!("{:.1} kB", n as f64 / 1e3)
    }
}

/// "direct 4.2 MB, relay 12.3 kB" of what went each way on each path.
pub(crate) fn describe_paths(p: &PathBytes) -> String {
    let total = |t: &peer::Traffic| t.sent + t.received;
    let mb = |n: u64| {
        if n >= 1_000_000 {
            format!("{:.1} MB", n as f64 / 1e6)
        } else {
            format!("{:.1} kB", n as f64 / 1e3)
        }
    };
    format!(
        "direct {}, relay {}",
        mb(total(&p.direct)),
        mb(total(&p.relay))
    )
}

/// [`describe_paths`], then the copies `--redundancy` sent, if any.
pub(crate) fn describe_link(p: &PathBytes, r: &RedundancyStats) -> String {
    let mut s = describe_paths(p);
    if r.copies > 0 {
        s += &format!("; {} datagrams sent twice", r.copies);
        if let Some(l) = r.loss_in {
            s += &format!(" (peer's loss {:.1}%)", l * 100.0);
        }
    }
    s
}

fn describe(p: Option<&CandidatePair>) -> String {
    match p {
        None => "an unknown pair".into(),
        Some(p) => {
            let relay = p
                .local
                .relay_protocol
                .map(|t| format!(" over TURN/{t}"))
                .unwrap_or_default();
            format!(
                "{:?} {} <-> {:?} {}{relay}",
                p.local.kind, p.local.address, p.remote.kind, p.remote.address
            )
            .to_lowercase()
        }
    }
}

/// The failure when the connection to `peer` is gone for good.
pub fn restarts_exhausted(peer: &str) -> Failure {
    Failure::new(
        EXIT_LOST,
        "restarts-exhausted",
        format!("the connection to {peer} failed and ICE restarts did not bring it back"),
    )
}

/// Waits for the first linked peer, failing on timeout or lost signaling.
pub async fn first_link(room: &mut room::Room, tracker: &mut Tracker) -> Result<Link, Failure> {
    loop {
        let wait = tracker.deadline();
        let ev = match wait {
            Some(d) => match tokio::time::timeout_at(d.into(), tracker.next(room)).await {
                Ok(ev) => ev,
                Err(_) => {
                    tracker.check_timeouts()?;
                    continue;
                }
            },
            None => tracker.next(room).await,
        };
        let Some(ev) = ev else {
            return Err(Failure::new(EXIT_SIGNALING, "signaling", "room task ended"));
        };
        match tracker.handle(ev).await? {
            Happened::Linked(l) => return Ok(l),
            Happened::SignalingClosed(r) => {
                return Err(Failure::new(
                    EXIT_SIGNALING,
                    "signaling",
                    format!("signaling connection lost before a peer connected: {r}"),
                ))
            }
            Happened::RestartsExhausted(p) => return Err(restarts_exhausted(&p)),
            _ => tracker.check_timeouts()?,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn redundancy_thresholds_are_percentages_and_checked() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: PeerArgs,
        }
        let parse = |extra: &[&str]| {
            let mut args = vec!["x", "--room", "r"];
            args.extend_from_slice(extra);
            <Cli as clap::Parser>::try_parse_from(args).unwrap().a
        };
        let cfg = room_config(&parse(&[]), "t")
            .unwrap()
            .peer_config
            .redundancy;
        assert_eq!(
            (cfg.mode, cfg.on_at, cfg.off_at),
            (RedundancyMode::Auto, 0.005, 0.002)
        );
        let a = parse(&[
            "--redundancy",
            "on",
            "--redundancy-on-at",
            "2",
            "--redundancy-off-at",
            "1",
        ]);
        let cfg = room_config(&a, "t").unwrap().peer_config.redundancy;
        assert_eq!(
            (cfg.mode, cfg.on_at, cfg.off_at),
            (RedundancyMode::On, 0.02, 0.01)
        );
        for bad in [["1", "2"], ["101", "1"], ["1", "-1"]] {
            let (on, off) = (
                format!("--redundancy-on-at={}", bad[0]),
                format!("--redundancy-off-at={}", bad[1]),
            );
            let a = parse(&[&on, &off]);
            let e = room_config(&a, "t").unwrap_err();
            assert_eq!((e.code, e.kind), (EXIT_USAGE, "usage"), "{bad:?}");
            assert!(e.message.contains("--redundancy-off-at"), "{}", e.message);
        }
    }

    #[test]
    fn stats_meter_gives_rates_since_the_last_sample() {
        let t0 = Instant::now();
        let mut m = StatsMeter::new(t0);
        // 250 kB out, 25 kB in over 2 s: 1000 and 100 kbit/s.
        let r = m.sample(t0 + Duration::from_secs(2), 250_000, 25_000);
        assert_eq!(r, Some((1000.0, 100.0)));
        let r = m.sample(t0 + Duration::from_secs(4), 250_000, 50_000);
        assert_eq!(r, Some((0.0, 100.0)));
        // No time passed: no rate rather than infinity.
        assert_eq!(m.sample(t0 + Duration::from_secs(4), 1, 1), None);
    }

    #[test]
    fn path_summary_counts_both_directions_in_readable_units() {
        let p = PathBytes {
            direct: peer::Traffic {
                sent: 4_000_000,
                received: 200_000,
            },
            relay: peer::Traffic {
                sent: 12_000,
                received: 300,
            },
        };
        assert_eq!(describe_paths(&p), "direct 4.2 MB, relay 12.3 kB");
        assert_eq!(
            describe_paths(&PathBytes::default()),
            "direct 0.0 kB, relay 0.0 kB"
        );
        let none = RedundancyStats::default();
        assert_eq!(describe_link(&p, &none), "direct 4.2 MB, relay 12.3 kB");
        let copies = RedundancyStats {
            loss_in: Some(0.0123),
            active: true,
            copies: 812,
        };
        assert_eq!(
            describe_link(&p, &copies),
            "direct 4.2 MB, relay 12.3 kB; 812 datagrams sent twice (peer's loss 1.2%)"
        );
    }

    use super::*;
    use peer::{CandidateInfo, CandidateType};

    fn loopback() -> Config {
        Config {
            host_candidates: HostCandidates::Only(vec![std::net::Ipv4Addr::LOCALHOST.into()]),
            ..Config::default()
        }
    }

    async fn feed(t: &mut Tracker, ev: RoomEvent) -> Happened {
        t.handle(Update(Input::Room(ev))).await.unwrap()
    }

    fn ice_connected(peer: &str) -> RoomEvent {
        RoomEvent::Peer {
            peer: peer.into(),
            event: Event::IceConnectionState(IceConnectionState::Connected),
        }
    }

    /// A `chat` channel that is slow to open must not hold up the room's
    /// other events, nor another peer's link.
    #[tokio::test]
    async fn waiting_for_a_channel_does_not_hold_other_events() {
        let mut t = Tracker::new(Out::new(false), 30);
        // A connection with no remote side: its channel never opens.
        let (lonely, _lonely_events) = PeerConnection::new(loopback()).await.unwrap();
        let stuck = lonely
            .create_data_channel("chat", peer::DataChannelInit::default())
            .await
            .unwrap();
        let started = Instant::now();
        feed(
            &mut t,
            RoomEvent::Connection {
                peer: "stuck".into(),
                pc: lonely.clone(),
                offerer: true,
            },
        )
        .await;
        feed(
            &mut t,
            RoomEvent::Channel {
                peer: "stuck".into(),
                channel: stuck,
            },
        )
        .await;
        let h = feed(&mut t, ice_connected("stuck")).await;
        assert!(matches!(h, Happened::Event { .. }));
        let h = feed(
            &mut t,
            RoomEvent::PeerJoined {
                peer: "next".into(),
                meta: json!({}),
            },
        )
        .await;
        assert!(matches!(h, Happened::Nothing));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "events were held for {:?}",
            started.elapsed()
        );

        // Meanwhile a real connection comes up and links.
        let (a, _b) = peer::negotiate::pair(loopback(), loopback()).await.unwrap();
        let chat =
            a.pc.create_data_channel("chat", peer::DataChannelInit::default())
                .await
                .unwrap();
        feed(
            &mut t,
            RoomEvent::Connection {
                peer: "real".into(),
                pc: a.pc.clone(),
                offerer: true,
            },
        )
        .await;
        feed(
            &mut t,
            RoomEvent::Channel {
                peer: "real".into(),
                channel: chat,
            },
        )
        .await;
        feed(&mut t, ice_connected("real")).await;
        let opened = tokio::time::timeout(Duration::from_secs(10), t.opening.next())
            .await
            .expect("the real channel opens")
            .unwrap();
        let h = t.handle(Update(Input::Opened(opened))).await.unwrap();
        assert!(matches!(h, Happened::Linked(l) if l.peer == "real"));
        assert!(t.conns["stuck"].opening && !t.conns["stuck"].linked);
        // The stuck one is still waiting, not reported.
        assert!(t.opening.next().now_or_never().is_none());
        a.pc.close().await;
        lonely.close().await;
    }

    fn json_of(e: CliEvent<'_>) -> serde_json::Value {
        serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap()
    }

    /// Every event has exactly the fields docs/cli.md lists, no more.
    #[test]
    fn json_events_match_docs_cli() {
        let peers = vec!["a".to_string(), "b".to_string()];
        let pair = CandidatePair {
            local: CandidateInfo {
                kind: CandidateType::Relay,
                protocol: "udp",
                address: "127.0.0.1:5".parse().unwrap(),
                relay_protocol: Some("tcp"),
            },
            remote: CandidateInfo {
                kind: CandidateType::Srflx,
                protocol: "udp",
                address: "127.0.0.2:6".parse().unwrap(),
                relay_protocol: None,
            },
        };
        let cases = [
            (
                CliEvent::Joined {
                    room: "r",
                    peer: "me",
                    peers: &peers,
                },
                json!({"event": "joined", "room": "r", "peer": "me", "peers": ["a", "b"]}),
            ),
            (
                CliEvent::PeerJoined { peer: "p" },
                json!({"event": "peer-joined", "peer": "p"}),
            ),
            (
                CliEvent::PeerLeft { peer: "p" },
                json!({"event": "peer-left", "peer": "p"}),
            ),
            (
                CliEvent::State {
                    peer: "p",
                    state: IceConnectionState::Disconnected,
                },
                json!({"event": "state", "peer": "p", "state": "disconnected"}),
            ),
            (
                CliEvent::Connected {
                    peer: "p",
                    setup_ms: 12,
                    pair: Some(&pair),
                },
                json!({"event": "connected", "peer": "p", "setup_ms": 12, "pair": {
                    "local": {"type": "relay", "protocol": "udp", "address": "127.0.0.1:5", "relay_protocol": "tcp"},
                    "remote": {"type": "srflx", "protocol": "udp", "address": "127.0.0.2:6"},
                }}),
            ),
            (
                CliEvent::Connected {
                    peer: "p",
                    setup_ms: 0,
                    pair: None,
                },
                json!({"event": "connected", "peer": "p", "setup_ms": 0, "pair": null}),
            ),
            (
                CliEvent::Track {
                    peer: "p",
                    kind: "video",
                    mid: "1",
                },
                json!({"event": "track", "peer": "p", "kind": "video", "mid": "1"}),
            ),
            (
                CliEvent::Progress {
                    peer: "p",
                    name: "f",
                    bytes: 3,
                    size: 9,
                },
                json!({"event": "progress", "peer": "p", "name": "f", "bytes": 3, "size": 9}),
            ),
            (
                CliEvent::FileSent {
                    peer: "p",
                    name: "f",
                    size: 9,
                    sha256: "ab",
                    ok: true,
                    ms: 4,
                    paths: PathBytes {
                        direct: peer::Traffic {
                            sent: 5,
                            received: 6,
                        },
                        relay: peer::Traffic {
                            sent: 7,
                            received: 0,
                        },
                    },
                    redundancy: RedundancyStats {
                        loss_in: Some(0.02),
                        active: true,
                        copies: 3,
                    },
                },
                json!({"event": "file-sent", "peer": "p", "name": "f", "size": 9, "sha256": "ab", "ok": true, "ms": 4,
                    "paths": {"direct": {"sent": 5, "received": 6}, "relay": {"sent": 7, "received": 0}},
                    "redundancy": {"loss_in": 0.02, "active": true, "copies": 3}}),
            ),
            (
                CliEvent::FileReceived {
                    peer: "p",
                    name: "f",
                    path: Some("/d/f"),
                    size: 9,
                    sha256: "ab",
                    ok: true,
                    ms: 4,
                    paths: PathBytes::default(),
                    redundancy: RedundancyStats::default(),
                    resumed_at: Some(4),
                    transferred: 5,
                },
                json!({"event": "file-received", "peer": "p", "name": "f", "path": "/d/f", "size": 9, "sha256": "ab", "ok": true, "ms": 4,
                    "paths": {"direct": {"sent": 0, "received": 0}, "relay": {"sent": 0, "received": 0}},
                    "redundancy": {"loss_in": null, "active": false, "copies": 0}, "resumed_at": 4, "transferred": 5}),
            ),
            (
                CliEvent::FileResumed {
                    peer: "p",
                    name: "f",
                    offset: 4,
                    size: 9,
                },
                json!({"event": "file-resumed", "peer": "p", "name": "f", "offset": 4, "size": 9}),
            ),
            (
                CliEvent::TransferInterrupted {
                    peer: "p",
                    name: "f",
                    reason: "left",
                },
                json!({"event": "transfer-interrupted", "peer": "p", "name": "f", "reason": "left"}),
            ),
            (
                CliEvent::FileReceived {
                    peer: "p",
                    name: "f",
                    path: None,
                    size: 9,
                    sha256: "ab",
                    ok: false,
                    ms: 4,
                    paths: PathBytes::default(),
                    redundancy: RedundancyStats::default(),
                    resumed_at: None,
                    transferred: 9,
                },
                json!({"event": "file-received", "peer": "p", "name": "f", "path": null, "size": 9, "sha256": "ab", "ok": false, "ms": 4,
                    "paths": {"direct": {"sent": 0, "received": 0}, "relay": {"sent": 0, "received": 0}},
                    "redundancy": {"loss_in": null, "active": false, "copies": 0}, "resumed_at": null, "transferred": 9}),
            ),
            (
                CliEvent::Reconnecting {
                    attempt: 2,
                    reason: "reset",
                },
                json!({"event": "reconnecting", "attempt": 2, "reason": "reset"}),
            ),
            (CliEvent::Resumed, json!({"event": "resumed"})),
            (
                CliEvent::Rejoined {
                    peer: "me",
                    peers: &peers,
                },
                json!({"event": "rejoined", "peer": "me", "peers": ["a", "b"]}),
            ),
            (
                CliEvent::Text {
                    peer: "p",
                    text: "hi \"x\"",
                },
                json!({"event": "text", "peer": "p", "text": "hi \"x\""}),
            ),
            (
                CliEvent::Stats {
                    peer: "p",
                    send_kbps: 812.5,
                    recv_kbps: 3.0,
                    rtt_ms: Some(1.5),
                    loss_out: Some(0.01),
                    loss_in: None,
                },
                json!({"event": "stats", "peer": "p", "send_kbps": 812.5, "recv_kbps": 3.0, "rtt_ms": 1.5, "loss_out": 0.01, "loss_in": null}),
            ),
            (
                CliEvent::Recording {
                    peer: "p",
                    kind: "video",
                    mid: "0",
                    codec: "VP8",
                    path: "/r/p-0.ivf",
                    duration_ms: 2000,
                    bytes: 5,
                    frames: 60,
                    done: false,
                },
                json!({"event": "recording", "peer": "p", "kind": "video", "mid": "0", "codec": "VP8", "path": "/r/p-0.ivf",
                    "duration_ms": 2000, "bytes": 5, "frames": 60, "done": false}),
            ),
            (
                CliEvent::Error {
                    code: "usage",
                    message: "m",
                },
                json!({"event": "error", "code": "usage", "message": "m"}),
            ),
        ];
        for (event, want) in cases {
            assert_eq!(json_of(event), want);
        }
    }
}
