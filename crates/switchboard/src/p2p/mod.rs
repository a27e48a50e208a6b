//! The native peer commands: `echo`, `send`, `recv`, `chat`. Each joins a
//! room through [`peer::room`] and talks over the `chat` data channel in the
//! wire format of [`transfer`] (the one `/chat` speaks). The contract
//! (options, `--json` events, exit codes) is docs/cli.md.

mod chat;
mod echo;
mod files;

use clap::{Args, Subcommand};
use peer::room::{self, RoomConfig, RoomEvent};
use peer::{
    CandidatePair, Config, DataChannel, Event, HostCandidates, IceConnectionState, IceServer,
    IceUrl, PeerConnection,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

#[derive(Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: PeerArgs,
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: PeerArgs,
}

/// Options every peer command takes.
#[derive(Args, Clone)]
pub struct PeerArgs {
    /// The switchboard server: http://host:port (or ws://host:port/v1/ws).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Room to join.
    #[arg(long)]
    pub room: String,
    /// Name shown to the other peers (meta.name).
    #[arg(long)]
    pub name: Option<String>,
    /// Use relay (TURN) candidates only.
    #[arg(long)]
    pub relay_only: bool,
    /// Extra STUN server, stun:host:port. Repeatable.
    #[arg(long = "stun", value_name = "URL")]
    pub stun: Vec<String>,
    /// Extra TURN server, turn:host:port?transport=udp|tcp. Repeatable.
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
}

/// A failure with its exit code (docs/cli.md).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, kind: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            kind,
            message: message.into(),
        }
    }
}

pub const EXIT_OTHER: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_SIGNALING: i32 = 3;
pub const EXIT_CONNECTION: i32 = 4;
pub const EXIT_TRANSFER: i32 = 5;

/// Runs a peer command and exits with its code.
pub fn run(cmd: PeerCommand) -> ! {
    let common = match &cmd {
        PeerCommand::Echo(a) => a.common.clone(),
        PeerCommand::Send(a) => a.common.clone(),
        PeerCommand::Recv(a) => a.common.clone(),
        PeerCommand::Chat(a) => a.common.clone(),
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
        }
    });
    // Connection tasks may still be closing; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(300));
    match result {
        Ok(()) => std::process::exit(0),
        Err(f) => out.fail(f),
    }
}

/// Where events go: JSON lines on stdout, or short human lines on stderr.
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

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Emits `event` as JSON, or `human` on stderr.
    pub fn event(&self, event: Value, human: impl FnOnce() -> String) {
        let _g = self.lock.lock();
        if self.json {
            // Human-only notes pass Null: nothing to print in JSON mode.
            if event.is_null() {
                return;
            }
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{event}");
            let _ = stdout.flush();
        } else {
            let line = human();
            if !line.is_empty() {
                eprintln!("{line}");
            }
        }
    }

    fn fail(&self, f: Failure) -> ! {
        self.event(
            json!({"event": "error", "code": f.kind, "message": f.message}),
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
    // The server's own rule, checked here so a typo is a usage error.
    if !signal::protocol::valid_id(&a.room) {
        return Err(usage(format!(
            "bad room name {:?}: {}",
            a.room,
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
    let mut cfg = RoomConfig::new(a.server.clone(), a.room.clone());
    cfg.meta = json!({ "name": a.name.clone().unwrap_or_else(|| default_name.to_string()), "agent": "switchboard-cli" });
    cfg.use_server_ice = !a.no_server_ice;
    cfg.peer_config = Config {
        ice_servers: servers,
        relay_only: a.relay_only,
        host_candidates: if a.loopback {
            HostCandidates::InterfacesAndLoopback
        } else {
            HostCandidates::Interfaces
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
            room::RoomError::Refused { .. } => "refused",
            room::RoomError::BadUrl(..) => return Failure::new(EXIT_USAGE, "usage", e.to_string()),
            _ => "signaling",
        };
        Failure::new(EXIT_SIGNALING, kind, e.to_string())
    })?;
    let (me, peers) = (r.me.clone(), r.peers.clone());
    out.event(
        json!({"event": "joined", "room": room_name, "peer": me, "peers": peers}),
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
    pub peer: String,
    pub pc: PeerConnection,
    pub channel: DataChannel,
}

/// Tracks every connection in the room: reports states and the selected
/// pair, enforces `--timeout`, and yields `chat` channels once they open.
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
}

struct ConnInfo {
    pc: PeerConnection,
    started: Instant,
    ice_connected: bool,
    reported: bool,
    channel: Option<DataChannel>,
    linked: bool,
}

/// What a room event meant for the command.
pub enum Happened {
    Nothing,
    /// The `chat` channel to this peer is open and ICE is connected.
    Linked(Link),
    /// A channel other than the first `chat` one (echo serves them all).
    OtherChannel {
        channel: DataChannel,
    },
    PeerLeft(String),
    Event {
        peer: String,
        event: Event,
    },
    SignalingClosed(String),
}

impl Tracker {
    pub fn new(out: Out, timeout_secs: u64) -> Self {
        Tracker {
            report_without_channel: false,
            out,
            timeout: Duration::from_secs(timeout_secs.max(1)),
            conns: HashMap::new(),
            first_attempt: None,
            any_linked: false,
        }
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

    pub async fn handle(&mut self, ev: RoomEvent) -> Result<Happened, Failure> {
        match ev {
            RoomEvent::PeerJoined { peer, .. } => {
                self.out
                    .event(json!({"event": "peer-joined", "peer": peer}), || {
                        format!("{peer} joined")
                    });
            }
            RoomEvent::PeerLeft { peer } => {
                self.conns.remove(&peer);
                self.out
                    .event(json!({"event": "peer-left", "peer": peer}), || {
                        format!("{peer} left")
                    });
                return Ok(Happened::PeerLeft(peer));
            }
            RoomEvent::Connection { peer, pc, .. } => {
                self.first_attempt.get_or_insert_with(Instant::now);
                self.conns.insert(
                    peer,
                    ConnInfo {
                        pc,
                        started: Instant::now(),
                        ice_connected: false,
                        reported: false,
                        channel: None,
                        linked: false,
                    },
                );
            }
            RoomEvent::Channel { peer, channel } => {
                let Some(c) = self.conns.get_mut(&peer) else {
                    return Ok(Happened::Nothing);
                };
                if channel.label() == "chat" && c.channel.is_none() && !c.linked {
                    c.channel = Some(channel);
                    return self.try_link(&peer).await;
                }
                return Ok(Happened::OtherChannel { channel });
            }
            RoomEvent::Peer { peer, event } => {
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
                        json!({"event": "state", "peer": peer, "state": s}),
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
                                    return self.try_link(&peer).await;
                                }
                            }
                            IceConnectionState::Disconnected | IceConnectionState::Failed => {
                                c.ice_connected = false;
                                self.out.event(Value::Null, || {
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
                self.out
                    .event(Value::Null, || format!("server: {code}: {message}"));
            }
            RoomEvent::Closed { reason } => return Ok(Happened::SignalingClosed(reason)),
        }
        Ok(Happened::Nothing)
    }

    async fn try_link(&mut self, peer: &str) -> Result<Happened, Failure> {
        let Some(c) = self.conns.get_mut(peer) else {
            return Ok(Happened::Nothing);
        };
        let Some(channel) = c.channel.clone() else {
            return Ok(Happened::Nothing);
        };
        if c.linked || !c.ice_connected {
            return Ok(Happened::Nothing);
        }
        // The channel opens right after DTLS; give it the rest of the budget.
        let left = (c.started + self.timeout).saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, channel.opened()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Failure::new(
                    EXIT_CONNECTION,
                    "connection-failed",
                    format!("channel to {peer}: {e}"),
                ))
            }
            Err(_) => return Ok(Happened::Nothing),
        }
        c.linked = true;
        self.any_linked = true;
        let pc = c.pc.clone();
        self.report(peer).await;
        Ok(Happened::Linked(Link {
            peer: peer.to_string(),
            pc,
            channel,
        }))
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
            json!({"event": "connected", "peer": peer, "setup_ms": setup_ms, "pair": pair}),
            || {
                format!(
                    "connected to {peer} via {} (setup {setup_ms} ms)",
                    describe(pair.as_ref())
                )
            },
        );
    }

    /// An open `chat` channel to any peer whose connection is up, if one
    /// linked earlier.
    pub fn connections(&self) -> impl Iterator<Item = (&String, &PeerConnection)> {
        self.conns.iter().map(|(p, c)| (p, &c.pc))
    }
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

/// Waits for the first linked peer, failing on timeout or lost signaling.
pub async fn first_link(room: &mut room::Room, tracker: &mut Tracker) -> Result<Link, Failure> {
    loop {
        let wait = tracker.deadline();
        let ev = match wait {
            Some(d) => match tokio::time::timeout_at(d.into(), room.events.recv()).await {
                Ok(ev) => ev,
                Err(_) => {
                    tracker.check_timeouts()?;
                    continue;
                }
            },
            None => room.events.recv().await,
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
            _ => tracker.check_timeouts()?,
        }
    }
}
