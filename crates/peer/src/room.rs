//! A switchboard room from the native side: a WebSocket client for
//! signaling protocol v1 (`docs/protocol.md`) that keeps one
//! [`PeerConnection`] per remote peer, with the same role rules as the
//! browser SDK: the newcomer offers to everyone already there and is the
//! polite side of perfect negotiation; the older side waits for the offer.
//!
//! Connections that fail are ICE-restarted (a NAT rebinding or a network
//! change heals without the application noticing), up to a limit.

use crate::negotiate::{self, Signal};
use crate::{
    Config, DataChannel, DataChannelInit, Event, IceConnectionState, IceServer, PeerConnection,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use signal::protocol::{ClientMessage, ServerFrame};
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
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
    /// Template for every connection; the server's `iceServers` are appended
    /// unless `use_server_ice` is false.
    pub peer_config: Config,
    /// Append `welcome.iceServers` to each connection's ICE servers.
    pub use_server_ice: bool,
    /// The data channel a newcomer opens to each peer (`chat` in the CLI and
    /// the demo pages). `None`: open nothing.
    pub channel: Option<String>,
    /// ICE restarts tried in a row per connection (after `failed`, or 2 s
    /// of `disconnected`) before it is left failed; the count starts over
    /// once ICE is connected again.
    pub max_restarts: u32,
}

impl RoomConfig {
    /// Joins `room` on `server` under a server-picked id, with empty
    /// `meta`, the default peer [`Config`] plus the server's ICE servers, a
    /// `chat` channel and 3 restarts.
    pub fn new(server: impl Into<String>, room: impl Into<String>) -> Self {
        RoomConfig {
            server: server.into(),
            room: room.into(),
            peer: None,
            meta: json!({}),
            peer_config: Config::default(),
            use_server_ice: true,
            channel: Some("chat".into()),
            max_restarts: 3,
        }
    }
}

/// Why joining or staying in a room failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomError {
    /// [`RoomConfig::server`] is not an `http://` or `ws://` URL with a
    /// host (and a numeric port, if any); `https`/`wss` are refused too,
    /// as TLS is not built in: (URL, why).
    #[error("bad server URL {0:?}: {1}")]
    BadUrl(String, &'static str),
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
    /// offer ([`RoomEvent::Connection`] follows).
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
    /// Any other connection event (states, tracks, keyframe requests).
    Peer {
        /// The remote peer's id.
        peer: String,
        /// The event, as [`PeerConnection`] reported it (never
        /// [`Event::DataChannel`], which comes as [`RoomEvent::Channel`]).
        event: Event,
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
    /// The signaling connection ended; existing connections keep running.
    Closed {
        /// The WebSocket close reason (e.g. `idle timeout`), the error, or
        /// `closed`.
        reason: String,
    },
}

/// How many [`RoomEvent`]s [`Room::events`] holds before the room waits.
pub const ROOM_EVENTS: usize = 256;

/// How many connection events the per-peer tasks queue for the room task;
/// small, because the room task drains them as fast as the app reads.
const INTERNAL_EVENTS: usize = 64;

/// A joined room.
pub struct Room {
    /// Our peer id (from `welcome`).
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
    /// `--send-queue` for us fills) and `Closed` follows once the app reads
    /// again. Data channels and media do not pass through here and keep
    /// flowing.
    pub events: mpsc::Receiver<RoomEvent>,
    /// Client frames, serialized, for the room task to send.
    out: mpsc::UnboundedSender<String>,
}

impl Room {
    /// Leaves the room (the connections are closed by their owners).
    pub fn leave(&self) {
        let _ = self.out.send(ClientMessage::Leave.to_json());
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
        "https" | "wss" => return Err(bad("TLS (https/wss) is not built into this client; put the server on http or use a local proxy")),
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

/// Connects, joins and starts the room task.
pub async fn join(cfg: RoomConfig) -> Result<Room, RoomError> {
    let url = ws_url(&cfg.server)?;
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .map_err(|_| RoomError::Connect(url.clone(), "timed out".into()))?
    .map_err(|e| RoomError::Connect(url.clone(), e.to_string()))?;
    let meta = serde_json::value::to_raw_value(&cfg.meta)
        .map_err(|e| RoomError::Protocol(format!("meta: {e}")))?;
    let join = ClientMessage::Join {
        room: Cow::Borrowed(&cfg.room),
        peer: cfg.peer.as_deref().map(Cow::Borrowed),
        meta: Some(&meta),
        session: None,
    };
    ws.send(Ws::text(join.to_json()))
        .await
        .map_err(|e| RoomError::Lost(e.to_string()))?;
    // The first answer is either welcome or an error.
    let welcome = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| RoomError::Lost("no welcome within 10 s".into()))?;
        match msg {
            Some(Ok(Ws::Text(t))) => match ServerFrame::<Signal>::parse(&t) {
                Ok(ServerFrame::Welcome {
                    peer,
                    peers,
                    ice_servers,
                    ..
                }) => break (peer, peers, ice_servers),
                Ok(ServerFrame::Error { code, message }) => {
                    return Err(RoomError::Refused { code, message })
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
            None => return Err(RoomError::Lost("closed before welcome".into())),
        }
    };
    let (me, peers, ice_servers) = welcome;
    let peers: Vec<String> = peers.into_iter().map(|p| p.peer).collect();
    // Servers we cannot read are left out rather than failing the join.
    let ice_servers: Vec<IceServer> = serde_json::from_value(ice_servers).unwrap_or_default();
    info!(
        "joined room {} as {me} with {} peer(s)",
        cfg.room,
        peers.len()
    );

    let (ev_tx, ev_rx) = mpsc::channel(ROOM_EVENTS);
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let mut peer_cfg = cfg.peer_config.clone();
    if cfg.use_server_ice {
        peer_cfg.ice_servers.extend(ice_servers.iter().cloned());
    }
    let task = RoomTask {
        cfg,
        peer_cfg,
        conns: HashMap::new(),
        events: ev_tx,
        out: out_tx.clone(),
        internal: mpsc::channel(INTERNAL_EVENTS),
    };
    tokio::spawn(task.run(ws, out_rx, peers.clone()));
    Ok(Room {
        me,
        peers,
        ice_servers,
        events: ev_rx,
        out: out_tx,
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
}

struct RoomTask {
    cfg: RoomConfig,
    peer_cfg: Config,
    conns: HashMap<String, Option<Conn>>,
    events: mpsc::Sender<RoomEvent>,
    /// Client frames to send. Unbounded: negotiation writes to it from a
    /// synchronous callback, and what it carries is what the server's rate
    /// limit lets through anyway.
    out: mpsc::UnboundedSender<String>,
    internal: (mpsc::Sender<Internal>, mpsc::Receiver<Internal>),
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl RoomTask {
    async fn run(
        mut self,
        ws: WsStream,
        mut out_rx: mpsc::UnboundedReceiver<String>,
        initial: Vec<String>,
    ) {
        let (mut sink, mut stream) = ws.split();
        // Signals that arrive while a connection is still being created.
        let mut early: HashMap<String, Vec<Signal>> = HashMap::new();
        for p in initial {
            self.open(p, true);
        }
        let reason = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Ws::Text(t))) => match ServerFrame::parse(&t) {
                        Ok(frame) => self.server_message(frame, &mut early).await,
                        // One bad frame (a peer's garbled signal, say) is
                        // dropped; the room carries on.
                        Err(e) => warn!("ignoring a bad frame from the server: {e}"),
                    },
                    Some(Ok(Ws::Close(f))) => break f.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "closed".to_string(),
                },
                out = out_rx.recv() => {
                    let Some(frame) = out else { break "room dropped".to_string() };
                    if let Err(e) = sink.send(Ws::text(frame)).await {
                        break e.to_string();
                    }
                }
                int = self.internal.1.recv() => {
                    let Some(int) = int else { continue };
                    match int {
                        Internal::Ready { peer, pc, signals, offerer } => {
                            for v in early.remove(&peer).unwrap_or_default() {
                                let _ = signals.send(v);
                            }
                            if self.conns.contains_key(&peer) {
                                self.conns.insert(peer.clone(), Some(Conn { pc: pc.clone(), signals }));
                                let _ = self.events.send(RoomEvent::Connection { peer, pc, offerer }).await;
                            } else {
                                pc.close().await; // left while we were setting up
                            }
                        }
                        Internal::Failed { peer, error } => {
                            warn!("cannot create a connection to {peer}: {error}");
                            self.conns.remove(&peer);
                            let _ = self.events.send(RoomEvent::ServerError { code: "peer-connection".into(), message: error }).await;
                        }
                        Internal::App { peer, event } => self.app_event(peer, event).await,
                    }
                }
            }
        };
        debug!("signaling ended: {reason}");
        let _ = self.events.send(RoomEvent::Closed { reason }).await;
        // Keep serving the connections' events so the app still sees them.
        while let Some(int) = self.internal.1.recv().await {
            if let Internal::App { peer, event } = int {
                self.app_event(peer, event).await;
            }
        }
    }

    async fn server_message(
        &mut self,
        frame: ServerFrame<Signal>,
        early: &mut HashMap<String, Vec<Signal>>,
    ) {
        match frame {
            ServerFrame::PeerJoined { peer, meta, .. } => {
                let _ = self
                    .events
                    .send(RoomEvent::PeerJoined {
                        peer: peer.clone(),
                        meta,
                    })
                    .await;
                // We are the older side: prepare, wait for the offer.
                self.open(peer, false);
            }
            ServerFrame::PeerLeft { peer, .. } => {
                early.remove(&peer);
                if let Some(Some(c)) = self.conns.remove(&peer) {
                    tokio::spawn(async move { c.pc.close().await });
                }
                let _ = self.events.send(RoomEvent::PeerLeft { peer }).await;
            }
            ServerFrame::Signal { from, data, .. } => match self.conns.get(&from) {
                Some(Some(c)) => {
                    let _ = c.signals.send(data);
                }
                Some(None) => early.entry(from).or_default().push(data),
                None => {
                    // A peer we have not heard join (it joined before us
                    // and was in `welcome`, or the join raced): take it.
                    early.entry(from.clone()).or_default().push(data);
                    self.open(from, false);
                }
            },
            ServerFrame::Error { code, message } => {
                let _ = self
                    .events
                    .send(RoomEvent::ServerError { code, message })
                    .await;
            }
            // Frame types of a newer server are not for us.
            ServerFrame::Welcome { .. }
            | ServerFrame::Resumed { .. }
            | ServerFrame::Ack { .. }
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
        let out = self.out.clone();
        let internal = self.internal.0.clone();
        let channel = if offerer {
            self.cfg.channel.clone()
        } else {
            None
        };
        let max_restarts = self.cfg.max_restarts;
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
                        let frame = ClientMessage::Signal {
                            to: Cow::Borrowed(&to),
                            data: &data,
                            seq: None,
                        };
                        let _ = out.send(frame.to_json());
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
            // Forward events; heal failures with ICE restarts.
            let mut restarts = 0;
            let mut disconnected_at: Option<tokio::time::Instant> = None;
            loop {
                let wait = match disconnected_at {
                    Some(t) => t + Duration::from_secs(2),
                    None => tokio::time::Instant::now() + Duration::from_secs(3600),
                };
                tokio::select! {
                    ev = app.recv() => {
                        let Some(ev) = ev else { break };
                        if let Event::IceConnectionState(s) = &ev {
                            match s {
                                IceConnectionState::Disconnected => disconnected_at = Some(tokio::time::Instant::now()),
                                IceConnectionState::Failed if restarts < max_restarts => {
                                    restarts += 1;
                                    info!("connection to {peer} failed: ICE restart {restarts}/{max_restarts}");
                                    let _ = pc.restart_ice().await;
                                }
                                IceConnectionState::Connected => { disconnected_at = None; restarts = 0; }
                                _ => disconnected_at = None,
                            }
                        }
                        if internal.send(Internal::App { peer: peer.clone(), event: ev }).await.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(wait) => {
                        disconnected_at = None;
                        if restarts < max_restarts {
                            restarts += 1;
                            info!("connection to {peer} disconnected for 2 s: ICE restart {restarts}/{max_restarts}");
                            let _ = pc.restart_ice().await;
                        }
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
        assert!(ws_url("https://x").is_err());
    }
}
