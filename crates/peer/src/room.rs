//! A switchboard room from the native side: a WebSocket client for
//! signaling protocol v1 (`docs/protocol.md`) that keeps one
//! [`PeerConnection`] per remote peer, with the same role rules as the
//! browser SDK: the newcomer offers to everyone already there and is the
//! polite side of perfect negotiation; the older side waits for the offer.
//!
//! Connections that fail are ICE-restarted (a NAT rebinding or a network
//! change heals without the application noticing), up to a limit.
//!
//! The signaling socket heals too. When it drops without our asking, the
//! room reconnects with jittered exponential backoff and `resume`s its
//! session: the server replays what we missed, we send again what it did
//! not ack, and the connections notice nothing. If the session cannot be
//! resumed (window passed, server restarted) the room joins afresh under
//! the same id and ICE-restarts toward every peer still there; if that
//! fails too it gives up with [`RoomEvent::SessionLost`]. The seq/ack and
//! retry bookkeeping is [`crate::session`]; this module is its driver.

use crate::negotiate::{self, Signal};
use crate::session::{Attempt, ReconnectConfig, Recovery, Session, SessionConfig};
use crate::{
    Config, DataChannel, DataChannelInit, Event, IceConnectionState, IceServer, PeerConnection,
};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use signal::protocol::{ClientMessage, PeerInfo, ServerFrame};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;
use tracing::{debug, info, warn};

/// How to join.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// `http(s)://host:port` (then `/v1/ws` is added) or `ws(s)://…`.
    pub server: String,
    /// Room to join: 1–64 of `[A-Za-z0-9_-]`, else the join is refused
    /// with `invalid-room`.
    pub room: String,
    /// Peer id to ask for (same rule); `None` lets the server pick one.
    /// Refused with `peer-id-taken` if someone in the room has it.
    pub peer: Option<String>,
    /// `meta` of `join`: a JSON object the server hands to the other peers
    /// unchanged (`{}` by default).
    pub meta: Value,
    /// The room access token sent in every `join` (a server started with
    /// `--auth-secret` refuses joins without one, with `unauthorized`);
    /// resumes need none.
    pub token: Option<String>,
    /// What a `wss://` server's certificate is checked against; `None`:
    /// the system's roots. (`turns:` relays use `peer_config.tls`.)
    pub tls: Option<crate::tls::TlsClient>,
    /// Template for every connection; the server's `iceServers` are appended
    /// unless `use_server_ice` is false.
    pub peer_config: Config,
    /// Append `welcome.iceServers` to each connection's ICE servers.
    pub use_server_ice: bool,
    /// The data channel a newcomer opens to each peer (`chat` in the CLI and
    /// the demo pages). `None`: open nothing.
    pub channel: Option<String>,
    /// ICE restarts tried in a row per connection (after `failed`, or 2 s
    /// of `disconnected`) before it is left failed and
    /// [`RoomEvent::RestartsExhausted`] is reported; the count starts over
    /// once ICE has stayed connected for `restart_timeout`. Restarts wait,
    /// uncounted, while the signaling connection is being restored (their
    /// offers need it).
    pub max_restarts: u32,
    /// An ICE restart that has not brought the connection back to
    /// connected within this long counts as failed (the next restart, or
    /// [`RoomEvent::RestartsExhausted`], follows): a peer that never
    /// answers the restart's offer changes no ICE state by itself.
    pub restart_timeout: Duration,
    /// Reconnecting after the signaling socket dropped; `None`: do not, and
    /// report [`RoomEvent::Closed`] instead (v1 behaviour). Servers without
    /// sessions (no `welcome.session`) get `Closed` either way.
    pub reconnect: Option<ReconnectConfig>,
    /// When acks go out and how many of our signals are kept for a resume.
    pub session: SessionConfig,
    /// A `ping` goes to the server this often, so a socket that went
    /// silent (the network vanished without a reset) is noticed.
    pub ping_interval: Duration,
    /// Nothing at all from the server for this long: the socket counts as
    /// dropped (and is resumed).
    pub silence_timeout: Duration,
}

impl RoomConfig {
    /// Joins `room` on `server` under a server-picked id, with empty
    /// `meta`, the default peer [`Config`] plus the server's ICE servers, a
    /// `chat` channel, 3 restarts (10 s each), reconnecting with the defaults of
    /// [`ReconnectConfig`] and [`SessionConfig`], a ping every 5 s and
    /// 15 s of silence taken as a drop.
    pub fn new(server: impl Into<String>, room: impl Into<String>) -> Self {
        RoomConfig {
            server: server.into(),
            room: room.into(),
            peer: None,
            meta: json!({}),
            token: None,
            tls: None,
            peer_config: Config::default(),
            use_server_ice: true,
            channel: Some("chat".into()),
            max_restarts: 3,
            restart_timeout: Duration::from_secs(10),
            reconnect: Some(ReconnectConfig::default()),
            session: SessionConfig::default(),
            ping_interval: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(15),
        }
    }
}

/// Why joining or staying in a room failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomError {
    /// [`RoomConfig::server`] is not an `http(s)://` or `ws(s)://` URL
    /// with a host (and a numeric port, if any): (URL, why).
    #[error("bad server URL {0:?}: {1}")]
    BadUrl(String, &'static str),
    /// TLS to a `wss://` server failed: its certificate is not trusted
    /// (the sentence says why), the handshake failed, or no roots could
    /// be loaded: (WebSocket URL, why).
    #[error("TLS to the signaling server at {0} failed: {1}")]
    Tls(String, String),
    /// The WebSocket connection failed or took longer than 10 s:
    /// (WebSocket URL, why). A server at `--max-connections` lands here
    /// (HTTP 503).
    #[error("cannot reach the signaling server at {0}: {1}")]
    Connect(String, String),
    /// The server answered `join` with an `error` frame.
    #[error("the server refused to join: {code}: {message}")]
    Refused {
        /// The protocol's error code, e.g. `room-full`, `invalid-room`,
        /// `peer-id-taken` (docs/protocol.md).
        code: String,
        /// The server's explanation, for humans.
        message: String,
    },
    /// The WebSocket closed or failed before `welcome`, or no `welcome`
    /// came within 10 s; carries the close reason or error.
    #[error("signaling connection lost: {0}")]
    Lost(String),
    /// The server's answer to `join` was not a valid frame, or `meta` could
    /// not be encoded.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What happens in the room.
#[derive(Debug)]
pub enum RoomEvent {
    /// `peer-joined`: a newcomer; we prepare a connection and wait for its
    /// offer ([`RoomEvent::Connection`] follows). For a peer we already
    /// have a connection with (it rejoined after losing its session) the
    /// connection is kept and no new one follows: it ICE-restarts it.
    PeerJoined {
        /// Its id.
        peer: String,
        /// Its `meta` from `join` (`{}` when it sent none).
        meta: Value,
    },
    /// `peer-left`: the peer left, disconnected or timed out; its
    /// connection is being closed.
    PeerLeft {
        /// Its id.
        peer: String,
    },
    /// A connection to `peer` exists now; `offerer` is true when we are the
    /// newcomer that makes the first offer.
    Connection {
        /// The remote peer's id.
        peer: String,
        /// The connection; negotiation runs by itself through the room.
        pc: PeerConnection,
        /// We make the first offer (and are the polite side).
        offerer: bool,
    },
    /// A data channel to `peer`: ours (the room channel) or theirs.
    Channel {
        /// The remote peer's id.
        peer: String,
        /// The channel; it may still be `Connecting`.
        channel: DataChannel,
    },
    /// A `signal` from `peer` that is no negotiation message (neither a
    /// description nor a candidate): the application's own, e.g. a
    /// pairing exchange ([`Room::signal`] sends one).
    Signal {
        /// The sender's id, as the server saw it.
        peer: String,
        /// The `data` object, unchanged.
        data: Value,
    },
    /// Any other connection event (states, tracks, keyframe requests).
    Peer {
        /// The remote peer's id.
        peer: String,
        /// The event, as [`PeerConnection`] reported it (never
        /// [`Event::DataChannel`], which comes as [`RoomEvent::Channel`]).
        event: Event,
    },
    /// The connection to `peer` failed and [`RoomConfig::max_restarts`]
    /// ICE restarts in a row did not bring it back; it is left failed.
    RestartsExhausted {
        /// The remote peer's id.
        peer: String,
    },
    /// The server reported an error for something we sent, or a
    /// connection to a peer could not be created (code `peer-connection`).
    ServerError {
        /// The protocol's error code (e.g. `unknown-peer`, `rate-limited`),
        /// or `peer-connection`.
        code: String,
        /// What went wrong, for humans.
        message: String,
    },
    /// The signaling socket dropped (or the last try failed); attempt
    /// number `attempt` (from 1) to get the session back starts after a
    /// backoff. Connections keep running meanwhile; our signals wait.
    Reconnecting {
        /// Which attempt is next, from 1.
        attempt: u32,
        /// Why the socket dropped, or why the last attempt failed.
        reason: String,
    },
    /// The session was resumed on a new socket: nothing was lost, the
    /// connections were not touched.
    Resumed,
    /// Resuming was refused or too late, so we joined afresh under the
    /// same id. Every connection to a peer still present is ICE-restarted;
    /// a peer missing from the room gets the resume window to come back (it
    /// may be rejoining too) and is reported with `PeerLeft` if it does
    /// not. When the window had passed, the others were told we left and
    /// dropped their ends: then every connection starts over (`PeerLeft`,
    /// then a new `Connection` to each peer present).
    Rejoined {
        /// Our id: the same as before, unless someone else had taken it
        /// meanwhile (then every connection started over).
        peer: String,
        /// Who is in the room now.
        peers: Vec<String>,
    },
    /// Signaling is gone for good: the socket dropped and neither a resume
    /// within the window nor a rejoin worked. Existing connections keep
    /// running but can no longer renegotiate or restart ICE.
    SessionLost {
        /// What the last attempt ran into.
        reason: String,
    },
    /// The signaling connection ended without reconnecting: we left, the
    /// server has no sessions, or [`RoomConfig::reconnect`] is `None`.
    /// Existing connections keep running.
    Closed {
        /// The WebSocket close reason (e.g. `idle timeout`), the error,
        /// `left`, or `closed`.
        reason: String,
    },
}

/// How many [`RoomEvent`]s [`Room::events`] holds before the room waits.
pub const ROOM_EVENTS: usize = 256;

/// How many connection events the per-peer tasks queue for the room task;
/// small, because the room task drains them as fast as the app reads.
const INTERNAL_EVENTS: usize = 64;

/// How long connecting plus the answer to `join`/`resume` may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A joined room.
pub struct Room {
    /// Our peer id (from `welcome`). A rejoin keeps it unless another
    /// peer took it meanwhile; [`RoomEvent::Rejoined`] says which it is.
    pub me: String,
    /// Peers present when we joined (we offer to these).
    pub peers: Vec<String>,
    /// `welcome.iceServers`, with TURN credentials minted for us. Empty if
    /// any entry does not read as an `RTCIceServer` (the join still
    /// succeeds).
    pub ice_servers: Vec<IceServer>,
    /// Everything that happens in the room, in order. Read it continuously.
    ///
    /// It holds [`ROOM_EVENTS`]; nothing is ever dropped. When the app reads
    /// slowly and it is full, the room task waits for the app: it stops
    /// reading the signaling connection, so signals (offers, answers,
    /// candidates, ICE restarts) wait too and the connections' own events
    /// queue behind them. If that lasts, the server drops the signaling
    /// connection (it hears no pong within `--idle-timeout`, or its
    /// `--send-queue` for us fills) and the room resumes once the app reads
    /// again. Data channels and media do not pass through here and keep
    /// flowing.
    pub events: mpsc::Receiver<RoomEvent>,
    /// Tells the room task to leave; dropping it leaves too.
    leave: mpsc::UnboundedSender<()>,
    /// Our signals to the room task (resent after a resume like the rest).
    signals: mpsc::UnboundedSender<Outgoing>,
}

impl Room {
    /// Leaves the room: `leave` and a close frame go to the server, which
    /// ends the session at once (the others see `peer-left`), and the room
    /// stops reconnecting. The connections are closed by their owners.
    pub fn leave(&self) {
        let _ = self.leave.send(());
    }

    /// Sends `data`, a JSON object of the application's, to `peer` as a
    /// `signal` ([`Signaler::signal`]).
    pub fn signal(&self, peer: &str, data: &Value) -> Result<(), RoomError> {
        self.signaler().signal(peer, data)
    }

    /// A handle that sends the application's signals into this room, for
    /// code that does not hold the [`Room`].
    pub fn signaler(&self) -> Signaler {
        Signaler(self.signals.clone())
    }
}

/// Sends the application's own signals into a room ([`Room::signaler`]).
#[derive(Clone)]
pub struct Signaler(mpsc::UnboundedSender<Outgoing>);

impl std::fmt::Debug for Signaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signaler")
    }
}

impl Signaler {
    /// Sends `data`, a JSON object of the application's, to `peer` as a
    /// `signal`, in order with the negotiation's own signals and before a
    /// later [`Room::leave`]. The object must not have a `description` or
    /// `candidate` key (those are negotiation's). It arrives as
    /// [`RoomEvent::Signal`]. Once the room has ended it goes nowhere.
    pub fn signal(&self, peer: &str, data: &Value) -> Result<(), RoomError> {
        let obj = data
            .as_object()
            .ok_or_else(|| RoomError::Protocol("an app signal is a JSON object".into()))?;
        if obj.contains_key("description") || obj.contains_key("candidate") {
            return Err(RoomError::Protocol(
                "an app signal may not use the description or candidate keys".into(),
            ));
        }
        let raw = serde_json::value::to_raw_value(data)
            .map_err(|e| RoomError::Protocol(e.to_string()))?;
        let _ = self.0.send((peer.to_string(), raw));
        Ok(())
    }
}

/// Normalizes `--server` to the WebSocket URL.
pub fn ws_url(server: &str) -> Result<String, RoomError> {
    let bad = |why| RoomError::BadUrl(server.to_string(), why);
    let (scheme, rest) = server
        .split_once("://")
        .ok_or_else(|| bad("expected http://, https://, ws:// or wss://"))?;
    let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("expected http://, https://, ws:// or wss://")),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return Err(bad("missing host"));
    }
    if let Some((_, port)) = hostport
        .rsplit_once(':')
        .filter(|_| !hostport.ends_with(']'))
    {
        if port.parse::<u16>().is_err() {
            return Err(bad("bad port"));
        }
    }
    let path = if path.is_empty() || path == "/" {
        "/v1/ws"
    } else {
        path
    };
    Ok(format!("{ws_scheme}://{hostport}{path}"))
}

type WsStream = tokio_tungstenite::WebSocketStream<Box<dyn crate::tls::Stream>>;

/// `welcome` or `resumed`, as the room needs them.
struct Greeting {
    peer: String,
    peers: Vec<PeerInfo>,
    ice_servers: Value,
    session: Option<String>,
    resume_window: Option<u64>,
    /// `resumed.ack`; `None` for `welcome`.
    ack: Option<u64>,
}

/// The first answer on a socket: a greeting, or an `error` frame.
enum Answer {
    Greeting(Greeting),
    Refused { code: String, message: String },
}

/// `ws(s)://host[:port]/…` (as [`ws_url`] made it) to (TLS, host without
/// brackets, port).
fn ws_target(url: &str) -> Option<(bool, &str, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = scheme == "wss";
    let hostport = rest.split('/').next()?;
    let default = if tls { 443 } else { 80 };
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default,
        };
        return Some((tls, host, port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((tls, h, p.parse().ok()?)),
        None => Some((tls, hostport, default)),
    }
}

async fn connect(url: &str, tls: Option<&crate::tls::TlsClient>) -> Result<WsStream, RoomError> {
    let fail = |why: String| RoomError::Connect(url.to_string(), why);
    let (secure, host, port) = ws_target(url).ok_or_else(|| fail("bad URL".into()))?;
    let connecting = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Nagle off: an offer and the candidates right behind it are small
        // writes in a row, and with Nagle each one after the first waited
        // for the server's delayed ACK, about 40 ms per trickled candidate.
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn crate::tls::Stream> = if secure {
            let tls_err = |why: String| RoomError::Tls(url.to_string(), why);
            let client = match tls {
                Some(c) => c.clone(),
                None => crate::tls::TlsClient::system().map_err(|e| tls_err(e.to_string()))?,
            };
            Box::new(client.connect(host, tcp).await.map_err(tls_err)?)
        } else {
            Box::new(tcp)
        };
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, None)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(ws)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| fail("timed out".into()))?
}

/// Sends `first` and waits for `welcome`, `resumed` or an `error`. What
/// comes after the greeting (a resume's replay) stays in `ws`.
async fn handshake(ws: &mut WsStream, first: String) -> Result<Answer, RoomError> {
    ws.send(Ws::text(first))
        .await
        .map_err(|e| RoomError::Lost(e.to_string()))?;
    loop {
        let msg = tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.next())
            .await
            .map_err(|_| RoomError::Lost("no answer within 10 s".into()))?;
        match msg {
            Some(Ok(Ws::Text(t))) => match ServerFrame::<Value>::parse(&t) {
                Ok(ServerFrame::Welcome {
                    peer,
                    peers,
                    ice_servers,
                    session,
                    resume_window,
                    ..
                }) => {
                    return Ok(Answer::Greeting(Greeting {
                        peer,
                        peers,
                        ice_servers,
                        session,
                        resume_window,
                        ack: None,
                    }))
                }
                Ok(ServerFrame::Resumed {
                    peer,
                    peers,
                    ice_servers,
                    session,
                    resume_window,
                    ack,
                    ..
                }) => {
                    return Ok(Answer::Greeting(Greeting {
                        peer,
                        peers,
                        ice_servers,
                        session,
                        resume_window,
                        ack: Some(ack),
                    }))
                }
                Ok(ServerFrame::Error { code, message }) => {
                    return Ok(Answer::Refused { code, message })
                }
                // Anything else (a newer server's frame types too) is not
                // the answer yet.
                Ok(_) => continue,
                Err(e) => {
                    return Err(RoomError::Protocol(format!(
                        "bad frame from the server: {e}"
                    )))
                }
            },
            Some(Ok(Ws::Close(f))) => {
                return Err(RoomError::Lost(
                    f.map(|f| f.reason.to_string())
                        .unwrap_or_else(|| "closed".into()),
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(RoomError::Lost(e.to_string())),
            None => return Err(RoomError::Lost("closed before an answer".into())),
        }
    }
}

fn join_frame(cfg: &RoomConfig, peer: Option<&str>, session: Option<&str>) -> String {
    // `meta` was checked to encode when the room was joined.
    let meta = serde_json::value::to_raw_value(&cfg.meta).ok();
    ClientMessage::Join {
        room: Cow::Borrowed(&cfg.room),
        peer: peer.map(Cow::Borrowed),
        meta: meta.as_deref(),
        session: session.map(Cow::Borrowed),
        token: cfg.token.as_deref().map(Cow::Borrowed),
    }
    .to_json()
}

/// Servers we cannot read are left out rather than failing the join.
fn read_ice_servers(v: Value) -> Vec<IceServer> {
    serde_json::from_value(v).unwrap_or_default()
}

/// Connects, joins and starts the room task.
pub async fn join(cfg: RoomConfig) -> Result<Room, RoomError> {
    let url = ws_url(&cfg.server)?;
    serde_json::value::to_raw_value(&cfg.meta)
        .map_err(|e| RoomError::Protocol(format!("meta: {e}")))?;
    let mut ws = connect(&url, cfg.tls.as_ref()).await?;
    let g = match handshake(&mut ws, join_frame(&cfg, cfg.peer.as_deref(), None)).await? {
        Answer::Greeting(g) if g.ack.is_none() => g,
        Answer::Greeting(_) => {
            return Err(RoomError::Protocol("`resumed` in answer to `join`".into()))
        }
        Answer::Refused { code, message } => return Err(RoomError::Refused { code, message }),
    };
    let me = g.peer.clone();
    let peers: Vec<String> = g.peers.iter().map(|p| p.peer.clone()).collect();
    let ice_servers = read_ice_servers(g.ice_servers.clone());
    info!(
        "joined room {} as {me} with {} peer(s){}",
        cfg.room,
        peers.len(),
        if g.session.is_some() {
            ""
        } else {
            " (the server keeps no sessions)"
        }
    );
    let mut session = Session::new(cfg.session.clone());
    session.start(g.session.clone(), g.resume_window);

    let (ev_tx, ev_rx) = mpsc::channel(ROOM_EVENTS);
    let (leave_tx, leave_rx) = mpsc::unbounded_channel();
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    let mut task = RoomTask {
        url,
        me: me.clone(),
        peer_cfg: cfg.peer_config.clone(),
        cfg,
        conns: HashMap::new(),
        early: HashMap::new(),
        events: ev_tx,
        signals: sig_tx.clone(),
        internal: mpsc::channel(INTERNAL_EVENTS),
        session,
        ws: None,
        signaling: watch::Sender::new(Signaling::Down),
        last_rx: Instant::now(),
        next_ping: Instant::now(),
        recovery: None,
        retry_at: None,
        attempt: None,
        attempt_fresh: false,
        stale: HashMap::new(),
        last_error: String::new(),
    };
    task.set_ice_servers(ice_servers.clone());
    task.attach(ws);
    tokio::spawn(task.run(leave_rx, sig_rx, peers.clone()));
    Ok(Room {
        me,
        peers,
        ice_servers,
        events: ev_rx,
        leave: leave_tx,
        signals: sig_tx,
    })
}

struct Conn {
    pc: PeerConnection,
    signals: mpsc::UnboundedSender<Signal>,
}

enum Internal {
    App {
        peer: String,
        event: Event,
    },
    Ready {
        peer: String,
        pc: PeerConnection,
        signals: mpsc::UnboundedSender<Signal>,
        offerer: bool,
    },
    Failed {
        peer: String,
        error: String,
    },
    Exhausted {
        peer: String,
    },
}

/// One of our signals, from a connection's negotiation to the room task.
type Outgoing = (String, Box<RawValue>);

/// What one reconnection attempt came to.
enum Outcome {
    /// `resumed`, or (after `resume-failed`, or for a rejoin) `welcome`.
    Back {
        ws: Box<WsStream>,
        greeting: Greeting,
        /// The server refused our `resume` first.
        resume_refused: bool,
    },
    Failed {
        /// The server refused our `resume` (the join after it failed).
        resume_refused: bool,
        /// A `join` was tried (and failed).
        joined: bool,
        error: String,
    },
}

/// One connection attempt: connect, `resume` if asked (falling back to
/// `join` on the same socket when it is refused), or `join` straight away;
/// `join_any` (no id asked for) when our id was taken.
async fn reconnect(
    url: String,
    tls: Option<crate::tls::TlsClient>,
    resume: Option<String>,
    join: String,
    join_any: String,
) -> Outcome {
    let mut ws = match connect(&url, tls.as_ref()).await {
        Ok(ws) => ws,
        Err(e) => {
            return Outcome::Failed {
                resume_refused: false,
                joined: resume.is_none(),
                error: e.to_string(),
            }
        }
    };
    let mut resume_refused = false;
    if let Some(frame) = resume {
        match handshake(&mut ws, frame).await {
            Ok(Answer::Greeting(g)) => {
                return Outcome::Back {
                    ws: Box::new(ws),
                    greeting: g,
                    resume_refused,
                }
            }
            Ok(Answer::Refused { code, message }) if code == "resume-failed" => {
                info!("resume refused ({message}); joining afresh with the same id");
                resume_refused = true;
            }
            // `unavailable` and the like: the session may still be there;
            // try again later.
            Ok(Answer::Refused { code, message }) => {
                return Outcome::Failed {
                    resume_refused,
                    joined: false,
                    error: format!("resume: {code}: {message}"),
                }
            }
            Err(e) => {
                return Outcome::Failed {
                    resume_refused,
                    joined: false,
                    error: e.to_string(),
                }
            }
        }
    }
    let mut frame = join;
    let mut any_id = Some(join_any);
    loop {
        let failed = |error: String| Outcome::Failed {
            resume_refused,
            joined: true,
            error,
        };
        return match handshake(&mut ws, frame).await {
            Ok(Answer::Greeting(g)) if g.ack.is_none() => Outcome::Back {
                ws: Box::new(ws),
                greeting: g,
                resume_refused,
            },
            Ok(Answer::Greeting(_)) => failed("`resumed` in answer to `join`".into()),
            // Someone else has our id now: any id will do, and every
            // connection starts over.
            Ok(Answer::Refused { code, .. }) if code == "peer-id-taken" && any_id.is_some() => {
                info!("our id was taken; joining under a new one");
                frame = any_id.take().unwrap_or_default();
                continue;
            }
            Ok(Answer::Refused { code, message }) => {
                failed(format!("join refused: {code}: {message}"))
            }
            Err(e) => failed(e.to_string()),
        };
    }
}

struct RoomTask {
    cfg: RoomConfig,
    url: String,
    /// Our id, asked for again when rejoining.
    me: String,
    /// `cfg.peer_config` plus the server's latest ICE servers.
    peer_cfg: Config,
    conns: HashMap<String, Option<Conn>>,
    /// Signals that arrive while a connection is still being created.
    early: HashMap<String, Vec<Signal>>,
    events: mpsc::Sender<RoomEvent>,
    /// Our signals to number and send. Unbounded: negotiation writes to it
    /// from a synchronous callback, and what it carries is what the
    /// server's rate limit lets through anyway.
    signals: mpsc::UnboundedSender<Outgoing>,
    internal: (mpsc::Sender<Internal>, mpsc::Receiver<Internal>),
    session: Session,
    /// The socket while it is up.
    ws: Option<WsStream>,
    /// Where signaling stands, for the connections' ICE restarts.
    signaling: watch::Sender<Signaling>,
    /// When the server was last heard from.
    last_rx: Instant,
    next_ping: Instant,
    /// Set from a drop until the session is back or lost.
    recovery: Option<Recovery>,
    /// The next attempt starts then.
    retry_at: Option<Instant>,
    /// The attempt under way.
    attempt: Option<BoxFuture<'static, Outcome>>,
    /// The attempt under way rejoins after the window passed: the others
    /// have been told we left and dropped their connections to us.
    attempt_fresh: bool,
    /// Peers missing from a rejoin's `welcome`, with the time they are
    /// given to come back (they may be rejoining too) before they count as
    /// gone.
    stale: HashMap<String, Instant>,
    /// Why the socket dropped or the last attempt failed.
    last_error: String,
}

/// Where signaling stands, as the connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signaling {
    Up,
    /// Reconnecting.
    Down,
    /// Over for good: nothing can carry an offer any more.
    Gone,
}

/// Why the room stopped talking to the server.
enum End {
    /// We left (or the [`Room`] was dropped).
    Left,
    /// Dropped and not to be reconnected.
    Closed(String),
    /// Reconnecting gave up.
    Lost(String),
}

async fn next_frame(ws: &mut Option<WsStream>) -> Option<Result<Ws, String>> {
    match ws {
        Some(ws) => ws.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

async fn attempt_done(a: &mut Option<BoxFuture<'static, Outcome>>) -> Outcome {
    match a {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl RoomTask {
    async fn run(
        mut self,
        mut leave: mpsc::UnboundedReceiver<()>,
        mut signals: mpsc::UnboundedReceiver<Outgoing>,
        initial: Vec<String>,
    ) {
        for p in initial {
            self.open(p, true);
        }
        let end = loop {
            let wake = self.next_wake();
            tokio::select! {
                msg = next_frame(&mut self.ws) => {
                    self.last_rx = Instant::now();
                    let dropped = match msg {
                        Some(Ok(Ws::Text(t))) => {
                            match ServerFrame::parse(&t) {
                                Ok(frame) => self.server_message(frame).await,
                                // One bad frame (a peer's garbled signal,
                                // say) is dropped; the room carries on.
                                Err(e) => warn!("ignoring a bad frame from the server: {e}"),
                            }
                            self.send_ack_if_due().await
                        }
                        Some(Ok(Ws::Close(f))) => Some(format!(
                            "closed by the server: {}",
                            f.map(|f| format!("{} {}", u16::from(f.code), f.reason))
                                .unwrap_or_else(|| "no reason".into())
                        )),
                        Some(Ok(_)) => None,
                        Some(Err(e)) => Some(e),
                        None => Some("connection closed without a close frame".into()),
                    };
                    if let Some(reason) = dropped {
                        if let Some(end) = self.dropped(reason).await {
                            break end;
                        }
                    }
                }
                sig = signals.recv() => {
                    // The task holds a sender itself, so this never ends.
                    let Some((to, data)) = sig else { continue };
                    let frame = self.session.signal(&to, data);
                    if let Some(reason) = self.send(frame).await {
                        if let Some(end) = self.dropped(reason).await {
                            break end;
                        }
                    }
                }
                _ = leave.recv() => {
                    // Signals queued before the leave go first: a last
                    // word to a peer (a failed pairing's proof) arrives.
                    while let Ok((to, data)) = signals.try_recv() {
                        let frame = self.session.signal(&to, data);
                        if self.send(frame).await.is_some() {
                            break;
                        }
                    }
                    if let Some(ws) = self.ws.as_mut() {
                        let bye = async {
                            ws.send(Ws::text(ClientMessage::Leave.to_json())).await?;
                            ws.close(None).await
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
                    }
                    break End::Left;
                }
                int = self.internal.1.recv() => {
                    let Some(int) = int else { continue };
                    self.internal_event(int).await;
                }
                out = attempt_done(&mut self.attempt) => {
                    self.attempt = None;
                    if let Some(end) = self.attempt_over(out).await {
                        break end;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if let Some(end) = self.tick().await {
                        break end;
                    }
                }
            }
        };
        self.ws = None;
        self.signaling.send_replace(Signaling::Gone);
        let ev = match end {
            End::Left => RoomEvent::Closed {
                reason: "left".into(),
            },
            End::Closed(reason) => {
                debug!("signaling ended: {reason}");
                RoomEvent::Closed { reason }
            }
            End::Lost(reason) => {
                warn!("signaling lost for good: {reason}");
                RoomEvent::SessionLost { reason }
            }
        };
        let _ = self.events.send(ev).await;
        // Keep serving the connections' events so the app still sees them.
        while let Some(int) = self.internal.1.recv().await {
            match int {
                Internal::App { peer, event } => self.app_event(peer, event).await,
                Internal::Exhausted { peer } => {
                    let _ = self
                        .events
                        .send(RoomEvent::RestartsExhausted { peer })
                        .await;
                }
                // Nobody can negotiate it any more.
                Internal::Ready { pc, .. } => pc.close().await,
                Internal::Failed { .. } => {}
            }
        }
    }

    fn set_ice_servers(&mut self, servers: Vec<IceServer>) {
        self.peer_cfg = self.cfg.peer_config.clone();
        if self.cfg.use_server_ice {
            self.peer_cfg.ice_servers.extend(servers);
        }
    }

    /// A socket is up (after `welcome` or `resumed`).
    fn attach(&mut self, ws: WsStream) {
        let now = Instant::now();
        self.ws = Some(ws);
        self.signaling.send_replace(Signaling::Up);
        self.last_rx = now;
        self.next_ping = now + self.cfg.ping_interval;
    }

    /// When the timer branch should next fire.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let far = self.stale.values().copied().min().unwrap_or(far).min(far);
        if self.ws.is_none() {
            return self.retry_at.unwrap_or(far).min(far);
        }
        let ack = self
            .session
            .ack_deadline()
            .map(Instant::from_std)
            .unwrap_or(far);
        ack.min(self.next_ping)
            .min(self.last_rx + self.cfg.silence_timeout)
    }

    /// Timers: acks, pings and silence while up; the next attempt while
    /// down.
    async fn tick(&mut self) -> Option<End> {
        let now = Instant::now();
        let expired: Vec<String> = self
            .stale
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in expired {
            info!("{peer} did not come back after our rejoin");
            self.peer_left(peer).await;
        }
        if self.ws.is_none() {
            if self.retry_at.is_some_and(|t| now >= t) && self.attempt.is_none() {
                self.retry_at = None;
                return self.start_attempt().await;
            }
            return None;
        }
        if now >= self.last_rx + self.cfg.silence_timeout {
            let reason = format!(
                "nothing from the server for {} s",
                self.cfg.silence_timeout.as_secs()
            );
            return self.dropped(reason).await;
        }
        if let Some(reason) = self.send_ack_if_due().await {
            return self.dropped(reason).await;
        }
        if now >= self.next_ping {
            self.next_ping = now + self.cfg.ping_interval;
            if let Some(reason) = self.send(ClientMessage::Ping.to_json()).await {
                return self.dropped(reason).await;
            }
        }
        None
    }

    /// Sends a frame if the socket is up; `Some(why)` if that failed.
    /// While down, frames other than the outbox's are not needed later.
    async fn send(&mut self, frame: String) -> Option<String> {
        let limit = self.cfg.silence_timeout;
        let ws = self.ws.as_mut()?;
        // A socket whose peer vanished takes writes until its buffer is
        // full, then blocks: that is a drop too.
        match tokio::time::timeout(limit, ws.send(Ws::text(frame))).await {
            Ok(r) => r.err().map(|e| e.to_string()),
            Err(_) => Some(format!(
                "a write to the server stalled for {} s",
                limit.as_secs()
            )),
        }
    }

    async fn send_ack_if_due(&mut self) -> Option<String> {
        self.ws.as_ref()?;
        let frame = self.session.ack_due(std::time::Instant::now())?;
        self.send(frame).await
    }

    /// The socket dropped: start getting the session back, or end.
    async fn dropped(&mut self, reason: String) -> Option<End> {
        self.ws = None;
        self.signaling.send_replace(Signaling::Down);
        let Some(rc) = self.cfg.reconnect.clone() else {
            return Some(End::Closed(reason));
        };
        if self.session.token().is_none() {
            return Some(End::Closed(reason));
        }
        info!("signaling dropped ({reason}); reconnecting");
        let recovery = Recovery::new(rc, &self.session, std::time::Instant::now());
        self.retry_at = Some(Instant::now() + recovery.delay(rand::random()));
        self.recovery = Some(recovery);
        self.last_error = reason.clone();
        let _ = self
            .events
            .send(RoomEvent::Reconnecting { attempt: 1, reason })
            .await;
        None
    }

    async fn start_attempt(&mut self) -> Option<End> {
        let recovery = self.recovery.as_mut()?;
        let token = self.session.token().map(str::to_string);
        let join = join_frame(&self.cfg, Some(&self.me), token.as_deref());
        let now = std::time::Instant::now();
        self.attempt_fresh = false;
        let resume = match recovery.next(now) {
            Attempt::Resume => self.session.resume_frame(&self.cfg.room),
            Attempt::Rejoin => {
                self.attempt_fresh = recovery.window_passed(now);
                None
            }
            Attempt::GiveUp => {
                let window = self
                    .session
                    .window()
                    .or(self.cfg.reconnect.as_ref().map(|r| r.default_window))
                    .unwrap_or_default();
                return Some(End::Lost(format!(
                    "could not resume within the {} s window nor rejoin: {}",
                    window.as_secs(),
                    self.last_error
                )));
            }
        };
        recovery.attempt_started();
        debug!(
            "reconnect attempt {}: {}",
            recovery.attempts(),
            if resume.is_some() { "resume" } else { "rejoin" }
        );
        let join_any = join_frame(&self.cfg, None, None);
        let tls = self.cfg.tls.clone();
        self.attempt = Some(reconnect(self.url.clone(), tls, resume, join, join_any).boxed());
        None
    }

    async fn attempt_over(&mut self, out: Outcome) -> Option<End> {
        match out {
            Outcome::Back {
                ws,
                greeting,
                resume_refused,
            } => {
                if resume_refused {
                    if let Some(r) = self.recovery.as_mut() {
                        r.resume_refused();
                    }
                }
                self.recovery = None;
                self.retry_at = None;
                self.attach(*ws);
                let fresh = self.attempt_fresh || greeting.peer != self.me;
                self.back(greeting, fresh).await
            }
            Outcome::Failed {
                resume_refused,
                joined,
                error,
            } => {
                let recovery = self.recovery.as_mut()?;
                if resume_refused {
                    recovery.resume_refused();
                }
                if joined {
                    recovery.rejoin_failed();
                }
                info!("reconnect attempt {} failed: {error}", recovery.attempts());
                let attempt = recovery.attempts() + 1;
                if recovery.next(std::time::Instant::now()) == Attempt::GiveUp {
                    self.last_error = error;
                    return self.start_attempt().await;
                }
                self.retry_at = Some(Instant::now() + recovery.delay(rand::random()));
                self.last_error = error.clone();
                let _ = self
                    .events
                    .send(RoomEvent::Reconnecting {
                        attempt,
                        reason: error,
                    })
                    .await;
                None
            }
        }
    }

    /// A new socket greeted us: a resume (replay follows) or a rejoin.
    /// `fresh`: a rejoin the others saw as a new peer (our window had
    /// passed, or we got another id), so every connection starts over.
    async fn back(&mut self, g: Greeting, fresh: bool) -> Option<End> {
        self.set_ice_servers(read_ice_servers(g.ice_servers));
        if g.peer != self.me {
            warn!("the server gave us id {} instead of {}", g.peer, self.me);
            self.me = g.peer.clone();
        }
        if fresh && g.ack.is_none() {
            // Signals for connections that are about to go.
            self.session.discard_outbox();
        }
        let again = match g.ack {
            Some(ack) => {
                info!("session resumed; the server had our signals up to {ack}");
                self.session.resumed(g.session, g.resume_window, ack)
            }
            None => self.session.start(g.session, g.resume_window),
        };
        for frame in again {
            if let Some(reason) = self.send(frame).await {
                return self.dropped(reason).await;
            }
        }
        if g.ack.is_some() {
            let _ = self.events.send(RoomEvent::Resumed).await;
            return None;
        }
        // Rejoined: the room may have changed while we were away.
        if fresh {
            info!("rejoined after the resume window: every connection starts over");
            let all: Vec<String> = self.conns.keys().cloned().collect();
            for peer in all {
                self.peer_left(peer).await;
            }
        }
        let present: HashSet<String> = g.peers.iter().map(|p| p.peer.clone()).collect();
        let missing: Vec<String> = self
            .conns
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        let window = self.session.window().unwrap_or(Duration::from_secs(20));
        for peer in missing {
            // Perhaps rejoining too (the server lost its state): its
            // `peer-joined` keeps the connection; otherwise it goes.
            self.stale.insert(peer, Instant::now() + window);
        }
        let mut restarted = 0;
        for p in &g.peers {
            match self.conns.get(&p.peer) {
                Some(Some(c)) => {
                    let pc = c.pc.clone();
                    restarted += 1;
                    tokio::spawn(async move {
                        if let Err(e) = pc.restart_ice().await {
                            warn!("ICE restart after rejoining: {e}");
                        }
                    });
                }
                // Still being created; its negotiation has not begun.
                Some(None) => {}
                // New while we were away: we are the newcomer to it.
                None => self.open(p.peer.clone(), true),
            }
        }
        info!(
            "rejoined room {} as {}; ICE restart toward {restarted} peer(s)",
            self.cfg.room, self.me
        );
        let peers = g.peers.into_iter().map(|p| p.peer).collect();
        let _ = self
            .events
            .send(RoomEvent::Rejoined {
                peer: self.me.clone(),
                peers,
            })
            .await;
        None
    }

    async fn internal_event(&mut self, int: Internal) {
        match int {
            Internal::Ready {
                peer,
                pc,
                signals,
                offerer,
            } => {
                for v in self.early.remove(&peer).unwrap_or_default() {
                    let _ = signals.send(v);
                }
                if self.conns.contains_key(&peer) {
                    self.conns.insert(
                        peer.clone(),
                        Some(Conn {
                            pc: pc.clone(),
                            signals,
                        }),
                    );
                    let _ = self
                        .events
                        .send(RoomEvent::Connection { peer, pc, offerer })
                        .await;
                } else {
                    pc.close().await; // left while we were setting up
                }
            }
            Internal::Failed { peer, error } => {
                warn!("cannot create a connection to {peer}: {error}");
                self.conns.remove(&peer);
                let _ = self
                    .events
                    .send(RoomEvent::ServerError {
                        code: "peer-connection".into(),
                        message: error,
                    })
                    .await;
            }
            Internal::App { peer, event } => self.app_event(peer, event).await,
            Internal::Exhausted { peer } => {
                let _ = self
                    .events
                    .send(RoomEvent::RestartsExhausted { peer })
                    .await;
            }
        }
    }

    async fn peer_left(&mut self, peer: String) {
        self.early.remove(&peer);
        self.stale.remove(&peer);
        if let Some(Some(c)) = self.conns.remove(&peer) {
            tokio::spawn(async move { c.pc.close().await });
        }
        let _ = self.events.send(RoomEvent::PeerLeft { peer }).await;
    }

    async fn server_message(&mut self, frame: ServerFrame<Signal>) {
        let seq = match &frame {
            ServerFrame::PeerJoined { seq, .. }
            | ServerFrame::PeerLeft { seq, .. }
            | ServerFrame::Signal { seq, .. } => *seq,
            _ => None,
        };
        if !self.session.receive(seq, std::time::Instant::now()) {
            debug!("ignoring server message {seq:?}: seen already");
            return;
        }
        match frame {
            ServerFrame::PeerJoined { peer, meta, .. } => {
                self.stale.remove(&peer);
                let _ = self
                    .events
                    .send(RoomEvent::PeerJoined {
                        peer: peer.clone(),
                        meta,
                    })
                    .await;
                // We are the older side: prepare, wait for the offer. A
                // peer we have a connection with rejoined: keep it, an ICE
                // restart offer is on its way.
                self.open(peer, false);
            }
            ServerFrame::PeerLeft { peer, .. } => self.peer_left(peer).await,
            ServerFrame::Signal {
                from,
                data: Signal::Other(data),
                ..
            } => {
                let _ = self
                    .events
                    .send(RoomEvent::Signal { peer: from, data })
                    .await;
            }
            ServerFrame::Signal { from, data, .. } => match self.conns.get(&from) {
                Some(Some(c)) => {
                    let _ = c.signals.send(data);
                }
                Some(None) => self.early.entry(from).or_default().push(data),
                None => {
                    // A peer we have not heard join (it joined before us
                    // and was in `welcome`, or the join raced): take it.
                    self.early.entry(from.clone()).or_default().push(data);
                    self.open(from, false);
                }
            },
            ServerFrame::Ack { seq } => self.session.server_ack(seq),
            ServerFrame::Error { code, message } => {
                let _ = self
                    .events
                    .send(RoomEvent::ServerError { code, message })
                    .await;
            }
            // Greetings only come first on a socket; frame types of a
            // newer server are not for us.
            ServerFrame::Welcome { .. }
            | ServerFrame::Resumed { .. }
            | ServerFrame::Pong
            | ServerFrame::Unknown => {}
        }
    }

    /// Creates the connection to `peer` in the background.
    fn open(&mut self, peer: String, offerer: bool) {
        if self.conns.contains_key(&peer) {
            return;
        }
        self.conns.insert(peer.clone(), None);
        let cfg = self.peer_cfg.clone();
        let out = self.signals.clone();
        let internal = self.internal.0.clone();
        let channel = if offerer {
            self.cfg.channel.clone()
        } else {
            None
        };
        let max_restarts = self.cfg.max_restarts;
        let restart_timeout = self.cfg.restart_timeout;
        let mut signaling = self.signaling.subscribe();
        tokio::spawn(async move {
            let (pc, events) = match PeerConnection::new(cfg).await {
                Ok(x) => x,
                Err(e) => {
                    let _ = internal
                        .send(Internal::Failed {
                            peer,
                            error: e.to_string(),
                        })
                        .await;
                    return;
                }
            };
            let (sig_tx, sig_rx) = mpsc::unbounded_channel();
            let to = peer.clone();
            let mut app = negotiate::spawn(pc.clone(), events, offerer, sig_rx, move |sig| {
                match serde_json::value::to_raw_value(&sig) {
                    Ok(data) => {
                        let _ = out.send((to.clone(), data));
                    }
                    Err(e) => warn!("cannot encode a signal for {to}: {e}"),
                }
            });
            let _ = internal
                .send(Internal::Ready {
                    peer: peer.clone(),
                    pc: pc.clone(),
                    signals: sig_tx,
                    offerer,
                })
                .await;
            if let Some(label) = channel {
                match pc
                    .create_data_channel(&label, DataChannelInit::default())
                    .await
                {
                    Ok(dc) => {
                        let _ = internal
                            .send(Internal::App {
                                peer: peer.clone(),
                                event: Event::DataChannel(dc),
                            })
                            .await;
                    }
                    Err(e) => warn!("cannot create channel {label}: {e}"),
                }
            }
            // Forward events; heal failures with ICE restarts. A restart
            // needs signaling (its offer goes through the server): while the
            // room is reconnecting it waits, uncounted, so an outage of the
            // server does not use up the restarts.
            let mut restarts = 0;
            let mut exhausted = false;
            let mut deferred = false;
            let mut disconnected_at: Option<Instant> = None;
            // A restart whose offer gets no answer (the peer is frozen or
            // gone) changes no state: it counts as failed after this.
            let mut restart_due: Option<Instant> = None;
            // The count starts over once ICE has stayed connected for
            // `restart_timeout`, so a flapping path cannot restart forever.
            let mut connected_since: Option<Instant> = None;
            loop {
                let far = Instant::now() + Duration::from_secs(3600);
                let wait = disconnected_at
                    .map(|t| t + Duration::from_secs(2))
                    .unwrap_or(far)
                    .min(restart_due.unwrap_or(far))
                    .min(
                        connected_since
                            .filter(|_| restarts > 0)
                            .map(|t| t + restart_timeout)
                            .unwrap_or(far),
                    );
                let mut restart = None;
                let mut give_up = false;
                tokio::select! {
                    ev = app.recv() => {
                        let Some(ev) = ev else { break };
                        if let Event::IceConnectionState(s) = &ev {
                            match s {
                                IceConnectionState::Disconnected => {
                                    disconnected_at = Some(Instant::now());
                                    connected_since = None;
                                }
                                IceConnectionState::Failed => {
                                    disconnected_at = None;
                                    connected_since = None;
                                    restart = Some("failed");
                                }
                                IceConnectionState::Connected | IceConnectionState::Completed => {
                                    disconnected_at = None;
                                    restart_due = None;
                                    deferred = false;
                                    connected_since.get_or_insert_with(Instant::now);
                                }
                                _ => disconnected_at = None,
                            }
                        }
                        if internal.send(Internal::App { peer: peer.clone(), event: ev }).await.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(wait) => {
                        let now = Instant::now();
                        if connected_since.is_some_and(|t| now >= t + restart_timeout) {
                            restarts = 0;
                            exhausted = false;
                        }
                        if restart_due.is_some_and(|t| now >= t) {
                            restart_due = None;
                            restart = Some("still not connected after an ICE restart");
                        }
                        if disconnected_at.is_some_and(|t| now >= t + Duration::from_secs(2)) {
                            disconnected_at = None;
                            restart = Some("disconnected for 2 s");
                        }
                    }
                    changed = signaling.changed(), if deferred => {
                        let now = if changed.is_ok() { *signaling.borrow_and_update() } else { Signaling::Gone };
                        if now != Signaling::Down {
                            deferred = false;
                            restart = Some("failed while signaling was down");
                        }
                    }
                }
                if let Some(why) = restart {
                    let state = *signaling.borrow();
                    match state {
                        _ if restarts >= max_restarts => give_up = true,
                        Signaling::Up => {
                            restarts += 1;
                            info!(
                                "connection to {peer} {why}: ICE restart {restarts}/{max_restarts}"
                            );
                            let _ = pc.restart_ice().await;
                            restart_due = Some(Instant::now() + restart_timeout);
                        }
                        Signaling::Down => {
                            debug!("connection to {peer} {why}: ICE restart waits for signaling");
                            deferred = true;
                        }
                        // No offer can reach the peer: restarting is hopeless.
                        Signaling::Gone => give_up = true,
                    }
                }
                if give_up && !exhausted {
                    exhausted = true;
                    restart_due = None;
                    warn!("connection to {peer} failed; {restarts} ICE restart(s) did not bring it back");
                    if internal
                        .send(Internal::Exhausted { peer: peer.clone() })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
    }

    async fn app_event(&mut self, peer: String, event: Event) {
        let ev = match event {
            Event::DataChannel(channel) => RoomEvent::Channel { peer, channel },
            event => RoomEvent::Peer { peer, event },
        };
        let _ = self.events.send(ev).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/v1/ws"
        );
        assert_eq!(
            ws_url("http://example.org/").unwrap(),
            "ws://example.org/v1/ws"
        );
        assert_eq!(ws_url("ws://h:1/v1/ws").unwrap(), "ws://h:1/v1/ws");
        assert_eq!(
            ws_url("http://[::1]:8080").unwrap(),
            "ws://[::1]:8080/v1/ws"
        );
        assert!(ws_url("127.0.0.1:8080").is_err());
        assert!(ws_url("ftp://x").is_err());
        assert!(ws_url("http://x:notaport").is_err());
        assert!(ws_url("http://").is_err());
        assert_eq!(ws_url("https://x").unwrap(), "wss://x/v1/ws");
        assert_eq!(ws_url("wss://h:8443/v1/ws").unwrap(), "wss://h:8443/v1/ws");
        assert_eq!(ws_target("wss://x/v1/ws"), Some((true, "x", 443)));
        assert_eq!(
            ws_target("ws://[::1]:8080/v1/ws"),
            Some((false, "::1", 8080))
        );
        assert_eq!(ws_target("ws://h/v1/ws"), Some((false, "h", 80)));
    }
}
