//! A native WebRTC peer with the browser's `RTCPeerConnection` shape.
//!
//! str0m does DTLS, SRTP, SCTP and the ICE agent; this crate adds what str0m
//! leaves to the application:
//!
//! - a JSEP API (`create_offer` … `set_remote_description`, rollback,
//!   InvalidState errors) over str0m's `SdpApi` ([`jsep`]);
//! - candidate gathering: host candidates on the machine's interfaces,
//!   server-reflexive ones from STUN Binding, relayed ones from our own
//!   TURN client (`turn::client`) over UDP or TCP;
//! - one UDP socket per address family that carries STUN, TURN, DTLS and
//!   RTP, demultiplexed by source and first byte;
//! - trickle ICE events, consent-based `disconnected`/`failed`, ICE restart;
//! - data channels and media tracks as async handles.
//!
//! Each [`PeerConnection`] is one tokio task that owns the `Rtc`, its
//! sockets and its TURN clients; the handle talks to it over a channel, so
//! every method is `&self` and the handle is cheap to clone.

mod channels;
pub mod config;
mod driver;
mod gather;
pub mod jsep;
mod liveness;
pub mod negotiate;
mod negotiation;
mod net;
pub mod redundancy;
pub mod room;
pub mod session;
mod tcp_turn;
pub mod tls;

pub use config::{Config, HostCandidates, IceServer, IceUrl, TurnTransport, UrlError};
pub use jsep::{IceCandidateInit, JsepError, SdpType, SessionDescription, SignalingState};
pub use redundancy::{RedundancyConfig, RedundancyMode};
pub use str0m::format::{Codec, PayloadParams};
pub use str0m::media::{MediaKind, MediaTime, Mid};
pub use tls::{TlsClient, TlsError, TlsOptions};

use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

/// Everything that can go wrong, with browser-like names where one exists.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSEP call in the wrong signaling state (`InvalidStateError`), or
    /// an SDP type this peer does not support; nothing changed.
    #[error(transparent)]
    Jsep(#[from] JsepError),
    /// str0m could not parse or accept a remote description, or could not
    /// answer an offer. A bad remote SDP changes nothing; a failed answer
    /// or a refused remote answer leaves the connection `stable`.
    #[error("bad SDP: {0}")]
    InvalidSdp(String),
    /// `set_local_description` got SDP other than the last
    /// `create_offer`/`create_answer` result (`InvalidModificationError`:
    /// SDP munging is not supported).
    #[error("the description is not the one createOffer/createAnswer returned")]
    ModifiedSdp,
    /// A trickled candidate that is not a `candidate:… typ …` line or
    /// that str0m cannot parse. Non-UDP candidates are ignored, not errors.
    #[error("bad ICE candidate: {0}")]
    InvalidCandidate(String),
    /// An ICE server URL of [`Config::ice_servers`] does not parse.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// An ICE server's host name did not resolve: (URL, resolver error).
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    /// A `turn:` URL without `username` and `credential`.
    #[error("TURN URL {0} needs a username and credential")]
    MissingCredential(String),
    /// An offer was asked for with no change to offer (no new channel or
    /// track, no ICE restart), e.g. by `set_local_description_auto`.
    #[error("nothing to negotiate: add a data channel or a track first")]
    NothingToNegotiate,
    /// A data-channel call in the wrong channel state
    /// (`InvalidStateError`): sending before it opened, or anything after
    /// it closed. The text is the state: `"not open yet"` or `"closed"`.
    #[error("InvalidStateError: the data channel is {0}")]
    ChannelState(&'static str),
    /// A message larger than [`Config::channel_buffer`]: (message length,
    /// limit), both in bytes.
    #[error("message of {0} bytes is larger than the peer accepts ({1})")]
    MessageTooLarge(usize, usize),
    /// [`PeerConnection::sender_for`] on a track the remote side does not
    /// receive on; carries its mid.
    #[error("the media line {0} cannot send")]
    NoSender(String),
    /// Media of a codec the remote side did not negotiate on that media
    /// line: (the codec wanted, the line's kind, the codecs it negotiated,
    /// comma-separated, or `nothing yet`).
    #[error("{0} cannot be sent: the peer negotiated {2} for {1}")]
    CodecNotNegotiated(String, String, String),
    /// Neither an IPv4 nor an IPv6 UDP socket could be bound.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// str0m refused a data-channel write.
    #[error("str0m: {0}")]
    Rtc(String),
    /// The connection was closed (by [`PeerConnection::close`] or because
    /// its task ended) before or while the call ran.
    #[error("the peer connection is closed")]
    Closed,
}

/// `RTCIceConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IceConnectionState {
    /// No checks yet: no remote description or candidates.
    New,
    /// Connectivity checks are running; no pair works yet.
    Checking,
    /// A candidate pair works and data can flow.
    Connected,
    /// str0m's agent finished checking with a working pair; treated
    /// like `Connected` everywhere in this crate.
    Completed,
    /// Nothing heard from the peer for [`Config::disconnected_after`], or
    /// the ICE agent lost its pair. May recover by itself or by an ICE
    /// restart.
    Disconnected,
    /// `Disconnected` for [`Config::failed_after`], or str0m failed. Unlike
    /// `Disconnected`, returning traffic does not end it; an ICE restart
    /// does.
    Failed,
    /// [`PeerConnection::close`] was called or the connection ended.
    Closed,
}

/// `RTCPeerConnectionState`: ICE and DTLS together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerConnectionState {
    /// ICE is `new`.
    New,
    /// ICE is checking, or connected while the DTLS handshake still runs.
    Connecting,
    /// ICE is connected and DTLS is up: channels and media can flow.
    Connected,
    /// ICE is `disconnected`.
    Disconnected,
    /// ICE is `failed`.
    Failed,
    /// The connection is closed.
    Closed,
}

/// The events of an `RTCPeerConnection`.
#[derive(Debug)]
pub enum Event {
    /// A local candidate to trickle; `None` is end-of-candidates.
    IceCandidate(Option<IceCandidateInit>),
    /// The signaling state moved (after a local or remote description, or
    /// a rollback).
    SignalingState(SignalingState),
    /// The ICE connection state changed; fired once per change.
    IceConnectionState(IceConnectionState),
    /// The connection state (ICE and DTLS together) changed.
    ConnectionState(PeerConnectionState),
    /// Something changed that needs an offer/answer round.
    NegotiationNeeded,
    /// The remote side sends media on a new media line.
    Track(RemoteTrack),
    /// The remote side opened a data channel.
    DataChannel(DataChannel),
    /// The remote side asks for a keyframe on media we send.
    KeyframeRequest {
        /// The media line we send on.
        mid: Mid,
    },
    /// Data now flows on a different candidate pair (after an ICE restart
    /// or a nomination change); `stats()` has the new one.
    SelectedPairChanged,
}

/// ICE candidate types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateType {
    /// An address of a local interface.
    Host,
    /// Server reflexive: our address as a STUN server saw it (outside the
    /// NAT).
    Srflx,
    /// Peer reflexive: an address learned from an incoming check, not from
    /// any signaled candidate.
    Prflx,
    /// An address allocated on a TURN server.
    Relay,
}

/// One end of the selected candidate pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateInfo {
    /// `type` in JSON. The local end is a candidate base, so it is `host`
    /// or `relay` (a server-reflexive candidate sends from its host
    /// socket); the remote end is `prflx` unless the peer signaled it.
    #[serde(rename = "type")]
    pub kind: CandidateType,
    /// Always `"udp"`: ICE pairs only UDP candidates here.
    pub protocol: &'static str,
    /// The address data is sent from (local) or to (remote).
    pub address: SocketAddr,
    /// For a local relay candidate: how we reach the TURN server, `"udp"`
    /// or `"tcp"`; absent (`None`) otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_protocol: Option<&'static str>,
}

/// The candidate pair data actually flows on: source and destination of
/// the last datagram sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidatePair {
    /// Our end.
    pub local: CandidateInfo,
    /// The peer's end.
    pub remote: CandidateInfo,
}

/// Bytes one way and the other on one kind of path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Bytes we sent.
    pub sent: u64,
    /// Bytes we received.
    pub received: u64,
}

/// What a connection moved on each kind of path: UDP payload bytes of
/// every datagram but ICE checks (DTLS records, which carry the data
/// channels and the media keys; SRTP), counted as each was sent or handed
/// to str0m. Unlike `selected_pair`, which is a snapshot, this says where
/// the bytes of a whole transfer went when the pair changed midway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PathBytes {
    /// Straight between the peers: no TURN server on the way.
    pub direct: Traffic,
    /// Through a TURN server: a local relay candidate, or the peer's.
    pub relay: Traffic,
}

/// `getStats()`, the parts worth having.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// The pair in use; `None` unless ICE is connected or completed.
    pub selected_pair: Option<CandidatePair>,
    /// Latest STUN round trip on the selected pair, in milliseconds; `None`
    /// before the first one was measured.
    pub rtt_ms: Option<f64>,
    /// Bytes sent to the peer, as str0m last reported them (every 500 ms,
    /// so slightly behind).
    pub bytes_sent: u64,
    /// Bytes received from the peer, reported like `bytes_sent`.
    pub bytes_received: u64,
    /// Fraction of our RTP packets the peer reports lost (0.01 = 1%), from
    /// its receiver reports; `None` before one arrived or with no media.
    pub loss_out: Option<f64>,
    /// Fraction of the peer's RTP packets we lost; `None` with no media.
    pub loss_in: Option<f64>,
    /// Bytes by kind of path, counted by the driver as they go (current).
    pub paths: PathBytes,
    /// Local candidates gathered so far (host, srflx and relay).
    pub local_candidates: usize,
    /// Remote candidates learned, from the remote SDP and trickled.
    pub remote_candidates: usize,
    /// Loss measured on what the peer sends, and whether we send copies.
    pub redundancy: RedundancyStats,
}

/// What [`Config::redundancy`] is doing (current).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RedundancyStats {
    /// Estimated loss of the peer's datagrams (0.01 = 1%); `None` until
    /// about a thousand data-channel datagrams arrived.
    pub loss_in: Option<f64>,
    /// Sending each data-channel datagram twice now.
    pub active: bool,
    /// Datagrams sent a second time so far.
    pub copies: u64,
}

/// `RTCDataChannelInit`, the parts str0m supports.
#[derive(Debug, Clone)]
pub struct DataChannelInit {
    /// Deliver messages in the order they were sent (default true).
    pub ordered: bool,
    /// `None`: reliable. `Some(n)`: at most n retransmissions.
    pub max_retransmits: Option<u16>,
    /// Subprotocol name announced to the peer in DCEP; empty by default.
    pub protocol: String,
}

impl Default for DataChannelInit {
    fn default() -> Self {
        DataChannelInit {
            ordered: true,
            max_retransmits: None,
            protocol: String::new(),
        }
    }
}

/// A data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A string message. Invalid UTF-8 from the peer is replaced with
    /// U+FFFD rather than refused.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// `RTCDataChannelState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// Created, not open yet: waiting for negotiation, DTLS or the peer's
    /// DCEP ack. Sending fails.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// Closed by either side or with the connection; final.
    Closed,
}

pub(crate) struct ChannelShared {
    pub id: u64,
    pub label: String,
    pub state: watch::Receiver<ChannelState>,
    pub rx: Mutex<mpsc::UnboundedReceiver<Message>>,
    pub cmd: mpsc::UnboundedSender<driver::Cmd>,
}

/// A data channel. Clones share the channel; `recv` may be called from one
/// task while others `send`.
#[derive(Clone)]
pub struct DataChannel(pub(crate) Arc<ChannelShared>);

impl std::fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataChannel({:?})", self.0.label)
    }
}

impl DataChannel {
    /// The label it was created with (ours or the peer's).
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The state right now; [`DataChannel::opened`] waits for `Open`.
    pub fn state(&self) -> ChannelState {
        *self.0.state.borrow()
    }

    /// Waits until the channel is open. Errors if it closes first.
    pub async fn opened(&self) -> Result<(), Error> {
        let mut w = self.0.state.clone();
        loop {
            match *w.borrow_and_update() {
                ChannelState::Open => return Ok(()),
                ChannelState::Closed => return Err(Error::ChannelState("closed")),
                ChannelState::Connecting => {}
            }
            if w.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Queues a message. Resolves once str0m's SCTP send buffer took it, so
    /// a fast sender is paced by the network instead of filling memory.
    pub async fn send(&self, msg: Message) -> Result<(), Error> {
        let (binary, data) = match msg {
            Message::Text(s) => (false, s.into_bytes()),
            Message::Binary(b) => (true, b),
        };
        self.send_raw(binary, data).await
    }

    /// [`DataChannel::send`] of a [`Message::Text`].
    pub async fn send_text(&self, text: &str) -> Result<(), Error> {
        self.send_raw(false, text.as_bytes().to_vec()).await
    }

    /// [`DataChannel::send`] of a [`Message::Binary`].
    pub async fn send_binary(&self, data: &[u8]) -> Result<(), Error> {
        self.send_raw(true, data.to_vec()).await
    }

    async fn send_raw(&self, binary: bool, data: Vec<u8>) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.0
            .cmd
            .send(driver::Cmd::ChannelSend {
                id: self.0.id,
                binary,
                data,
                reply: tx,
            })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The next message, or `None` once the channel is closed and drained.
    ///
    /// A slow reader does not slow the sender down: the connection's task
    /// takes every message str0m delivers and queues it here until read,
    /// so memory grows with what is unread (str0m's SCTP receive window
    /// does not close). Read continuously.
    pub async fn recv(&self) -> Option<Message> {
        self.0.rx.lock().await.recv().await
    }

    /// A message that has already arrived, without waiting: `None` when
    /// there is none, or while another task is in [`DataChannel::recv`].
    pub fn try_recv(&self) -> Option<Message> {
        self.0.rx.try_lock().ok()?.try_recv().ok()
    }

    /// Waits until everything sent so far has left the SCTP send buffer.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.0
            .cmd
            .send(driver::Cmd::ChannelFlush {
                id: self.0.id,
                reply: tx,
            })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Closes the channel on both sides; sends still waiting fail with
    /// [`Error::ChannelState`]. Does nothing once the connection is closed.
    pub fn close(&self) {
        let _ = self.0.cmd.send(driver::Cmd::ChannelClose { id: self.0.id });
    }
}

/// One media frame (depacketized by str0m).
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// The codec and its parameters, as negotiated.
    pub params: PayloadParams,
    /// Media (RTP) time, in the codec's clock rate.
    pub time: MediaTime,
    /// When it arrived (received frames) or was captured (frames to send).
    pub network_time: Instant,
    /// The depacketized frame, e.g. one Opus packet or one VP8 frame.
    pub data: Arc<[u8]>,
}

/// Media the remote side sends us on one media line.
#[derive(Debug)]
pub struct RemoteTrack {
    /// The media line (`a=mid`).
    pub mid: Mid,
    /// Audio or video.
    pub kind: MediaKind,
    /// Whether we may send back on the same media line (sendrecv).
    pub can_send: bool,
    /// The frames, in order. Like [`DataChannel::recv`], unread frames
    /// queue without limit; media has no backpressure to offer (the remote
    /// side sends in real time), so read continuously or drop this.
    pub frames: mpsc::UnboundedReceiver<MediaFrame>,
}

/// Sends media on one media line.
#[derive(Debug, Clone)]
pub struct TrackSender {
    /// The media line it writes to. `None` for an
    /// [`PeerConnection::add_track`] sender: its line is assigned by the
    /// next offer and looked up on each write (frames written before that
    /// are dropped).
    pub mid: Option<Mid>,
    /// Audio or video.
    pub kind: MediaKind,
    id: u64,
    cmd: mpsc::UnboundedSender<driver::Cmd>,
}

impl TrackSender {
    /// The codecs negotiated for this media line, in the remote side's
    /// order of preference; empty until the line is negotiated.
    pub async fn negotiated(&self) -> Result<Vec<PayloadParams>, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(driver::Cmd::TrackParams {
                track: self.id,
                mid: self.mid,
                reply: tx,
            })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The negotiated parameters to send `codec` with (for
    /// [`MediaFrame::params`]), or [`Error::CodecNotNegotiated`] naming
    /// `codec` and what the remote side did negotiate.
    pub async fn params_for(&self, codec: Codec) -> Result<PayloadParams, Error> {
        pick_codec(self.kind, codec, &self.negotiated().await?)
    }

    /// Writes one frame; the payload type is matched to what was negotiated
    /// for `frame.params`' codec (a codec that was not is dropped: check
    /// with [`TrackSender::params_for`] first).
    pub fn write(&self, frame: MediaFrame) -> Result<(), Error> {
        self.cmd
            .send(driver::Cmd::WriteMedia {
                track: self.id,
                mid: self.mid,
                frame,
            })
            .map_err(|_| Error::Closed)
    }
}

/// The handle. Cheap to clone; the connection lives until `close` or until
/// every handle is dropped.
#[derive(Clone)]
pub struct PeerConnection {
    cmd: mpsc::UnboundedSender<driver::Cmd>,
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerConnection")
    }
}

/// The events of one connection, in order. Unbounded: the connection's task
/// must never wait for the application. [`negotiate::spawn`] drains it at
/// once and hands the application a bounded [`negotiate::AppEvents`].
pub type Events = mpsc::UnboundedReceiver<Event>;

macro_rules! call {
    ($self:ident, $variant:ident { $($field:ident : $val:expr),* }) => {{
        let (tx, rx) = oneshot::channel();
        $self.cmd.send(driver::Cmd::$variant { $($field: $val,)* reply: tx }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }};
}

impl PeerConnection {
    /// Creates the connection: binds its sockets, resolves the ICE servers
    /// and starts gathering at once (like a browser's candidate pool), so
    /// candidates are ready by the time the offer is made.
    pub async fn new(config: Config) -> Result<(PeerConnection, Events), Error> {
        let servers = config::resolve(&config.ice_servers).await?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let d = driver::Driver::new(config, servers, cmd_tx.clone(), cmd_rx, ev_tx)?;
        tokio::spawn(d.run());
        Ok((PeerConnection { cmd: cmd_tx }, ev_rx))
    }

    /// `createOffer`: an offer with every pending change (new channels and
    /// tracks, an ICE restart). Fails with [`Error::NothingToNegotiate`]
    /// when there is none, or in `have-remote-offer`.
    pub async fn create_offer(&self) -> Result<SessionDescription, Error> {
        call!(self, CreateOffer {})
    }

    /// `createAnswer` to the remote offer set last; only in
    /// `have-remote-offer`. Asking again returns the same answer.
    pub async fn create_answer(&self) -> Result<SessionDescription, Error> {
        call!(self, CreateAnswer {})
    }

    /// Sets a description returned by `create_offer`/`create_answer`, or a
    /// rollback.
    pub async fn set_local_description(&self, desc: SessionDescription) -> Result<(), Error> {
        call!(self, SetLocal { desc: Some(desc) }).map(|_| ())
    }

    /// `setLocalDescription()` without an argument: creates and sets the
    /// offer or answer the state calls for and returns it.
    pub async fn set_local_description_auto(&self) -> Result<SessionDescription, Error> {
        let d = call!(self, SetLocal { desc: None })?;
        d.ok_or(Error::NothingToNegotiate)
    }

    /// The last offer or answer set locally and the last one set
    /// remotely, as they were given (the remote one as the signaling
    /// server delivered it).
    pub async fn descriptions(
        &self,
    ) -> Result<(Option<SessionDescription>, Option<SessionDescription>), Error> {
        call!(self, GetDescriptions {})
    }

    /// `setRemoteDescription`: an offer (rolling back a local one first on
    /// a collision, the polite side's move), an answer to our offer, or a
    /// rollback. SDP that does not parse fails with [`Error::InvalidSdp`]
    /// and changes nothing.
    pub async fn set_remote_description(&self, desc: SessionDescription) -> Result<(), Error> {
        call!(self, SetRemote { desc: desc })
    }

    /// Adds a trickled remote candidate; `None` (or an empty candidate
    /// string) is end-of-candidates.
    pub async fn add_ice_candidate(
        &self,
        candidate: Option<IceCandidateInit>,
    ) -> Result<(), Error> {
        call!(
            self,
            AddCandidate {
                candidate: candidate
            }
        )
    }

    /// Marks the connection for an ICE restart; the next offer carries new
    /// credentials and gathering starts over. Fires `NegotiationNeeded`.
    pub async fn restart_ice(&self) -> Result<(), Error> {
        call!(self, RestartIce {})
    }

    /// `createDataChannel`. The first channel needs a negotiation (fires
    /// `NegotiationNeeded`); later ones open in-band at once while the
    /// signaling state is stable. The handle is `Connecting` until it opens.
    pub async fn create_data_channel(
        &self,
        label: &str,
        init: DataChannelInit,
    ) -> Result<DataChannel, Error> {
        call!(
            self,
            CreateChannel {
                label: label.to_string(),
                init: init
            }
        )
    }

    /// Adds a send-receive media line of `kind`. Fires `NegotiationNeeded`;
    /// the returned sender can write once the line is negotiated.
    pub async fn add_track(&self, kind: MediaKind) -> Result<TrackSender, Error> {
        call!(
            self,
            AddTrack {
                kind: kind,
                stream: None
            }
        )
    }

    /// [`PeerConnection::add_track`] in the media stream `stream` (its
    /// `a=msid`): lines of one stream, say a file's video and audio, reach
    /// a browser as one `MediaStream`, so one element plays both. str0m
    /// keeps at most 64 characters of RFC 8830's token set.
    pub async fn add_stream_track(
        &self,
        kind: MediaKind,
        stream: &str,
    ) -> Result<TrackSender, Error> {
        call!(
            self,
            AddTrack {
                kind: kind,
                stream: Some(stream.to_string())
            }
        )
    }

    /// A sender for a media line the remote side offered as sendrecv.
    pub fn sender_for(&self, track: &RemoteTrack) -> Result<TrackSender, Error> {
        if !track.can_send {
            return Err(Error::NoSender(track.mid.to_string()));
        }
        Ok(TrackSender {
            mid: Some(track.mid),
            kind: track.kind,
            id: 0,
            cmd: self.cmd.clone(),
        })
    }

    /// Asks the remote sender on `mid` for a keyframe (PLI).
    pub fn request_keyframe(&self, mid: Mid) {
        let _ = self.cmd.send(driver::Cmd::RequestKeyframe { mid });
    }

    /// The JSEP signaling state right now.
    pub async fn signaling_state(&self) -> Result<SignalingState, Error> {
        call!(self, GetSignalingState {})
    }

    /// A snapshot of the selected pair, counters and candidate counts.
    pub async fn stats(&self) -> Result<Stats, Error> {
        call!(self, GetStats {})
    }

    /// Closes the connection: DTLS close, TURN allocations released.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(driver::Cmd::Close { reply: tx }).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// The parameters to send `codec` with, out of those negotiated on a media
/// line of `kind`: the first of that codec (for VP9, profile 0 first, the
/// one every decoder has). Errs naming both sides when there is none.
pub fn pick_codec(
    kind: MediaKind,
    codec: Codec,
    negotiated: &[PayloadParams],
) -> Result<PayloadParams, Error> {
    let mut of_codec = negotiated.iter().filter(|p| p.spec().codec == codec);
    let first = of_codec.clone().next();
    if let Some(p) = of_codec
        .find(|p| p.spec().format.profile_id.unwrap_or(0) == 0)
        .or(first)
    {
        return Ok(*p);
    }
    let mut names: Vec<String> = Vec::new();
    for p in negotiated {
        let n = p.spec().codec.to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let have = if names.is_empty() {
        "nothing yet".to_string()
    } else {
        format!("only {}", names.join(", "))
    };
    Err(Error::CodecNotNegotiated(
        codec.to_string(),
        format!("{kind:?}").to_lowercase(),
        have,
    ))
}

pub(crate) fn new_track_sender(
    kind: MediaKind,
    id: u64,
    cmd: mpsc::UnboundedSender<driver::Cmd>,
) -> TrackSender {
    TrackSender {
        mid: None,
        kind,
        id,
        cmd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::format::{CodecSpec, FormatParams};
    use str0m::media::{Frequency, Pt};

    fn params(pt: u8, codec: Codec, profile_id: Option<u32>) -> PayloadParams {
        PayloadParams::new(
            Pt::from(pt),
            None,
            CodecSpec {
                codec,
                clock_rate: Frequency::NINETY_KHZ,
                channels: None,
                format: FormatParams {
                    profile_id,
                    ..FormatParams::default()
                },
            },
        )
    }

    #[test]
    fn pick_codec_takes_vp9_profile_0_and_names_both_sides_when_missing() {
        let line = [
            params(96, Codec::Vp8, None),
            params(98, Codec::Vp9, Some(2)),
            params(100, Codec::Vp9, Some(0)),
        ];
        let p = pick_codec(MediaKind::Video, Codec::Vp9, &line).unwrap();
        assert_eq!(*p.pt(), 100);
        let p = pick_codec(MediaKind::Video, Codec::Vp8, &line).unwrap();
        assert_eq!(*p.pt(), 96);
        let e = pick_codec(MediaKind::Video, Codec::Vp9, &line[..1]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "VP9 cannot be sent: the peer negotiated only VP8 for video"
        );
        let e = pick_codec(MediaKind::Audio, Codec::Opus, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "opus cannot be sent: the peer negotiated nothing yet for audio"
        );
    }
}
