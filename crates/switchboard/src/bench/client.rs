//! The bench's TURN client: a small tokio driver around the sans-IO
//! [`turn::client::Client`], which owns the protocol (long-term credential
//! handshake with 401/438 handling, retransmissions, refreshes, ChannelData
//! framing). This module owns only the socket: [`Conn`] is one UDP or TCP
//! transport to the server (TCP frames split with [`stun::Framer`]), and
//! [`Session`] runs the client over it until a control operation completes.

use anyhow::{anyhow, bail, Context, Result};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use stun::Framer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use turn::client::{Client, Config, Event, Op, Transport};

/// Longest wait for one control operation (Allocate, CreatePermission,
/// ChannelBind, Refresh) including its 401/438 round trips.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame either transport can carry: a 65535-byte ChannelData
/// payload plus header and padding, or a STUN message.
pub const MAX_FRAME: usize = 4 + 65536;
/// Lifetime of the REST credential minted from `--secret`.
const SECRET_TTL: u64 = 24 * 3600;

/// Who the bench authenticates as.
#[derive(Clone)]
pub enum Credentials {
    User { user: String, password: String },
    Secret(String),
}

enum Io {
    Udp(UdpSocket),
    Tcp(OwnedReadHalf, OwnedWriteHalf),
}

/// One client transport to the TURN server. Over TCP it reassembles STUN
/// and ChannelData frames from the byte stream.
pub struct Conn {
    io: Io,
    server: SocketAddr,
    local: SocketAddr,
    /// TCP receive reassembly (unused over UDP).
    rx: Framer,
}

/// Turns socket errors into messages that say what is wrong.
pub fn io_context(e: io::Error, server: SocketAddr, tcp: bool) -> anyhow::Error {
    let proto = if tcp { "TCP" } else { "UDP" };
    match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            anyhow!(
                "{server} ({proto}): connection refused, no STUN/TURN server is listening there"
            )
        }
        _ => anyhow::Error::new(e).context(format!("talking to {server} over {proto}")),
    }
}

impl Conn {
    pub async fn connect(server: SocketAddr, tcp: bool) -> Result<Conn> {
        let io = if tcp {
            let s = tokio::time::timeout(OP_TIMEOUT, TcpStream::connect(server))
                .await
                .map_err(|_| anyhow!("{server} (TCP): connect timed out"))?
                .map_err(|e| io_context(e, server, true))?;
            s.set_nodelay(true)?;
            let (r, w) = s.into_split();
            Io::Tcp(r, w)
        } else {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()?;
            let s = UdpSocket::bind(bind)
                .await
                .context("creating a UDP socket (raise `ulimit -n`?)")?;
            s.connect(server)
                .await
                .map_err(|e| io_context(e, server, false))?;
            Io::Udp(s)
        };
        let local = match &io {
            Io::Udp(s) => s.local_addr()?,
            Io::Tcp(r, _) => r.local_addr()?,
        };
        Ok(Conn {
            io,
            server,
            local,
            rx: Framer::with_limit(MAX_FRAME),
        })
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self.io, Io::Tcp(..))
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The client's own address (its IP is where the echo peers bind).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one STUN message or ChannelData frame.
    #[inline]
    pub async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match &mut self.io {
            Io::Udp(s) => s.send(frame).await.map(|_| ()),
            Io::Tcp(_, w) => w.write_all(frame).await,
        }
    }

    /// Receives the next datagram or stream frame into `out`; returns its
    /// length. Cancel-safe: over TCP partial frames stay buffered.
    #[inline]
    pub async fn recv(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let r = match &mut self.io {
            Io::Udp(s) => return s.recv(out).await,
            Io::Tcp(r, _) => r,
        };
        loop {
            match self.rx.pop() {
                Ok(Some(frame)) => {
                    let frame = frame.as_bytes();
                    let dst = out
                        .get_mut(..frame.len())
                        .ok_or_else(|| io::Error::other("frame larger than the buffer"))?;
                    dst.copy_from_slice(frame);
                    return Ok(frame.len());
                }
                Ok(None) => {}
                Err(e) => {
                    let msg = format!("server sent a malformed TCP frame: {e}");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
            let n = r.read(self.rx.read_buf()).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the TCP connection",
                ));
            }
            self.rx.advance(n);
        }
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Allocate => "Allocate",
        Op::Refresh => "Refresh",
        Op::CreatePermission { .. } => "CreatePermission",
        Op::ChannelBind { .. } => "ChannelBind",
        Op::Close => "Refresh (release)",
    }
}

/// A control operation the server refused (or never answered).
#[derive(Debug)]
pub struct Refused {
    pub op: &'static str,
    /// The STUN error code; `None` for a timeout or a malformed answer.
    pub code: Option<u16>,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (op, reason) = (self.op, &self.reason);
        match self.code {
            Some(stun::code::UNAUTHORIZED) => write!(
                f,
                "{op} refused by the server: STUN error 401 {reason} (authentication failed: check --user/--password or --secret)"
            ),
            Some(c) => write!(f, "{op} refused by the server: STUN error {c} {reason}"),
            None => write!(f, "{op} failed: {reason}"),
        }
    }
}

impl std::error::Error for Refused {}

/// Why a control operation failed, as the user should read it.
pub fn failure(op: Op, code: Option<u16>, reason: &str) -> anyhow::Error {
    Refused {
        op: op_name(op),
        code,
        reason: reason.to_string(),
    }
    .into()
}

/// The STUN error code inside an error chain, if the server sent one.
pub fn stun_code(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<Refused>().and_then(|r| r.code)
}

/// One allocation: a transport and the sans-IO client that speaks TURN
/// over it.
pub struct Session {
    pub conn: Conn,
    pub client: Client,
    rx: Vec<u8>,
}

impl Session {
    pub async fn connect(server: SocketAddr, tcp: bool, creds: &Credentials) -> Result<Session> {
        let conn = Conn::connect(server, tcp).await?;
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let mut cfg = match creds {
            Credentials::User { user, password } => {
                Config::new(server, transport, user.as_str(), password.as_str())
            }
            Credentials::Secret(s) => {
                let now = turn::auth::unix_now();
                Config::with_secret(server, transport, s.as_bytes(), "bench", SECRET_TTL, now)
            }
        };
        cfg.seed = rand::random();
        Ok(Session {
            conn,
            client: Client::new(cfg),
            rx: vec![0; MAX_FRAME],
        })
    }

    /// Sends everything the client has queued.
    pub async fn flush(&mut self) -> Result<()> {
        let (server, tcp) = (self.conn.server(), self.conn.is_tcp());
        while let Some(t) = self.client.poll_transmit() {
            self.conn
                .send(t.data)
                .await
                .map_err(|e| io_context(e, server, tcp))?;
        }
        Ok(())
    }

    /// Runs the client until `done` accepts an event; a failure event, a
    /// socket error or [`OP_TIMEOUT`] end it with an error. Relayed data
    /// arriving meanwhile is dropped.
    async fn drive(&mut self, mut done: impl FnMut(&Event) -> bool) -> Result<()> {
        let (server, tcp) = (self.conn.server(), self.conn.is_tcp());
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            self.flush().await?;
            while let Some(ev) = self.client.poll_event() {
                if done(&ev) {
                    return Ok(());
                }
                if let Event::Failed { op, code, reason } = ev {
                    return Err(failure(op, code, &reason));
                }
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| deadline.min(Instant::from_std(t)));
            tokio::select! {
                r = self.conn.recv(&mut self.rx) => {
                    let n = r.map_err(|e| io_context(e, server, tcp))?;
                    let _ = self.client.handle_input(std::time::Instant::now(), &self.rx[..n]);
                }
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        bail!(
                            "no answer from {server} over {} within {} s (is a TURN server running there?)",
                            if tcp { "TCP" } else { "UDP" },
                            OP_TIMEOUT.as_secs()
                        );
                    }
                    self.client.handle_timeout(std::time::Instant::now());
                }
            }
        }
    }

    /// Allocates a UDP relayed address; returns it.
    pub async fn allocate(&mut self) -> Result<SocketAddr> {
        self.client.allocate(std::time::Instant::now())?;
        let mut relayed = None;
        self.drive(|e| match e {
            Event::Allocated { relayed: r, .. } => {
                relayed = Some(*r);
                true
            }
            _ => false,
        })
        .await?;
        relayed.context("no relayed address")
    }

    pub async fn create_permission(&mut self, peer: IpAddr) -> Result<()> {
        self.client
            .create_permission(std::time::Instant::now(), peer)?;
        self.drive(|e| matches!(e, Event::PermissionCreated { peer: p } if *p == peer))
            .await
    }

    /// Binds a channel to `peer`; returns its number.
    pub async fn bind_channel(&mut self, peer: SocketAddr) -> Result<u16> {
        let channel = self.client.bind_channel(std::time::Instant::now(), peer)?;
        self.drive(|e| matches!(e, Event::ChannelBound { channel: c, .. } if *c == channel))
            .await?;
        Ok(channel)
    }

    /// Deletes the allocation (Refresh with LIFETIME 0).
    pub async fn release(&mut self) -> Result<()> {
        self.client.close(std::time::Instant::now())?;
        self.drive(|e| matches!(e, Event::Closed)).await
    }
}
