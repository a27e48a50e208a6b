//! `doctor`'s STUN and TURN probes: Binding requests over UDP, and thin
//! drivers that run the sans-IO [`turn::client::Client`] over a UDP socket
//! or a TCP/TLS stream (framed with [`stun::Framer`]).

use super::net::Io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stun::attr::{OtherAddress, XorMappedAddress};
use stun::{Class, Message, MessageType, MessageWriter, Method, TransactionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use turn::client::{Client, Config, Event, Op, Transport};

/// A Binding answer.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// XOR-MAPPED-ADDRESS: us, as the server sees us.
    pub mapped: SocketAddr,
    /// OTHER-ADDRESS (RFC 5780), when the server has a second address.
    pub other: Option<SocketAddr>,
    /// From the first send to the answer.
    pub rtt: Duration,
}

fn random_tid() -> TransactionId {
    let mut t = [0u8; 12];
    rand::fill(&mut t);
    TransactionId(t)
}

/// Sends a Binding request from `sock` to `to`, resending at 0.5 s, 1.5 s,
/// 3.5 s… (RFC 8489's doubling RTO), until an answer or `timeout`.
pub async fn binding(
    sock: &UdpSocket,
    to: SocketAddr,
    timeout: Duration,
) -> Result<Binding, String> {
    let tid = random_tid();
    let mut req = Vec::with_capacity(32);
    let mut w = MessageWriter::new(&mut req, MessageType::request(Method::BINDING), tid);
    w.add_fingerprint().map_err(|e| e.to_string())?;
    w.finish();
    let started = Instant::now();
    let deadline = started + timeout;
    let mut rto = turn::client::INITIAL_RTO;
    let mut next_send = started;
    let mut buf = vec![0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no answer to Binding from {to} within {} s (UDP blocked on the way?)",
                timeout.as_secs_f64()
            ));
        }
        if now >= next_send {
            send(sock, &req, to).await?;
            next_send = now + rto;
            rto *= 2;
        }
        let wait = next_send.min(deadline);
        let got = tokio::time::timeout_at(wait.into(), recv(sock, &mut buf)).await;
        let Ok(got) = got else { continue };
        let (n, from) = got?;
        if from != to {
            continue;
        }
        let Some(msg) = buf.get(..n).and_then(|b| Message::parse(b).ok()) else {
            continue;
        };
        if msg.transaction_id() != tid || msg.method() != Method::BINDING {
            continue;
        }
        if msg.class() != Class::SuccessResponse {
            return Err(format!("{to} answered Binding with an error"));
        }
        let mapped = msg
            .get::<XorMappedAddress>()
            .ok()
            .flatten()
            .ok_or_else(|| format!("{to}'s Binding answer has no XOR-MAPPED-ADDRESS"))?;
        return Ok(Binding {
            mapped,
            other: msg.get::<OtherAddress>().ok().flatten(),
            rtt: started.elapsed(),
        });
    }
}

async fn send(sock: &UdpSocket, data: &[u8], to: SocketAddr) -> Result<(), String> {
    let r = if sock.peer_addr().is_ok() {
        sock.send(data).await
    } else {
        sock.send_to(data, to).await
    };
    r.map(|_| ()).map_err(|e| udp_error(&e, to))
}

async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> Result<(usize, SocketAddr), String> {
    sock.recv_from(buf)
        .await
        .map_err(|e| udp_error(&e, sock.peer_addr().unwrap_or(([0, 0, 0, 0], 0).into())))
}

fn udp_error(e: &std::io::Error, to: SocketAddr) -> String {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        format!("{to} is closed: ICMP port unreachable (nothing listens on that UDP port)")
    } else {
        format!("UDP to {to}: {e}")
    }
}

/// How a [`TurnConn`] reaches its server.
pub enum Link {
    /// A connected UDP socket (so ICMP errors come back as errors).
    Udp(UdpSocket),
    /// TCP or TLS, framed.
    Stream {
        /// The byte stream.
        io: Box<dyn Io>,
        /// Splits it into STUN and ChannelData frames.
        framer: stun::Framer,
    },
}

impl Link {
    async fn send(&mut self, data: &[u8], server: SocketAddr) -> Result<(), String> {
        match self {
            Link::Udp(s) => s
                .send(data)
                .await
                .map(|_| ())
                .map_err(|e| udp_error(&e, server)),
            Link::Stream { io, .. } => io
                .write_all(data)
                .await
                .map_err(|e| format!("writing to {server}: {e}")),
        }
    }

    /// One datagram or frame. Cancel-safe: a cancelled read has read nothing.
    async fn recv(&mut self, server: SocketAddr) -> Result<Vec<u8>, String> {
        match self {
            Link::Udp(s) => {
                let mut buf = vec![0u8; 2048];
                let n = s.recv(&mut buf).await.map_err(|e| udp_error(&e, server))?;
                buf.truncate(n);
                Ok(buf)
            }
            Link::Stream { io, framer } => loop {
                match framer.pop() {
                    Ok(Some(frame)) => return Ok(frame.as_bytes().to_vec()),
                    Ok(None) => {}
                    Err(e) => return Err(format!("{server} sent something that is not TURN: {e}")),
                }
                let n = io
                    .read(framer.read_buf())
                    .await
                    .map_err(|e| format!("reading from {server}: {e}"))?;
                if n == 0 {
                    return Err(format!("{server} closed the connection"));
                }
                framer.advance(n);
            },
        }
    }
}

/// What [`TurnConn::next`] brought.
pub enum Input {
    /// A control event of the client.
    Event(Event),
    /// Relayed data from a peer.
    Data(SocketAddr, Vec<u8>),
}

/// One allocation: the sans-IO client and its link.
pub struct TurnConn {
    /// The protocol state.
    pub client: Client,
    link: Link,
    server: SocketAddr,
}

impl TurnConn {
    /// A client for `server` over `link` with a long-term credential.
    pub fn new(link: Link, server: SocketAddr, user: &str, password: &str) -> TurnConn {
        let transport = match link {
            Link::Udp(_) => Transport::Udp,
            Link::Stream { .. } => Transport::Tcp,
        };
        let mut cfg = Config::new(server, transport, user, password);
        cfg.seed = rand::random();
        TurnConn {
            client: Client::new(cfg),
            link,
            server,
        }
    }

    async fn flush(&mut self) -> Result<(), String> {
        while let Some(t) = self.client.poll_transmit() {
            let data = t.data.to_vec();
            self.link.send(&data, self.server).await?;
        }
        Ok(())
    }

    /// Sends what the client queued, then waits for its next event or
    /// relayed data, or `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Result<Input, String> {
        loop {
            self.flush().await?;
            if let Some(ev) = self.client.poll_event() {
                return Ok(Input::Event(ev));
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                r = self.link.recv(self.server) => {
                    let packet = r?;
                    if let Some(d) = self.client.handle_input(Instant::now(), &packet) {
                        return Ok(Input::Data(d.peer, d.payload.to_vec()));
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err("timed out".into());
                    }
                    self.client.handle_timeout(now);
                }
            }
        }
    }

    /// Allocates; the relayed address and (if the server said) our mapped
    /// address.
    pub async fn allocate(
        &mut self,
        timeout: Duration,
    ) -> Result<(SocketAddr, Option<SocketAddr>), String> {
        let deadline = Instant::now() + timeout;
        self.client
            .allocate(Instant::now())
            .map_err(|e| e.to_string())?;
        loop {
            match self.next(deadline).await {
                Ok(Input::Event(Event::Allocated {
                    relayed, mapped, ..
                })) => return Ok((relayed, mapped)),
                Ok(Input::Event(Event::Failed {
                    op: Op::Allocate,
                    code,
                    reason,
                })) => return Err(describe_failure("Allocate", code, &reason)),
                Ok(_) => {}
                Err(e) if e == "timed out" => {
                    let how = match self.link {
                        Link::Udp(_) => "UDP blocked on the way?",
                        Link::Stream { .. } => "connected, but nothing answers TURN on it",
                    };
                    return Err(format!(
                        "no answer to Allocate from {} within {:.1} s ({how})",
                        self.server,
                        timeout.as_secs_f64()
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Binds a channel to `peer` and waits for the server to confirm.
    pub async fn bind(&mut self, peer: SocketAddr, deadline: Instant) -> Result<(), String> {
        self.client
            .bind_channel(Instant::now(), peer)
            .map_err(|e| e.to_string())?;
        loop {
            match self.next(deadline).await {
                Ok(Input::Event(Event::ChannelBound { .. })) => return Ok(()),
                Ok(Input::Event(Event::Failed {
                    op: Op::ChannelBind { .. },
                    code,
                    reason,
                })) => {
                    return Err(describe_failure(
                        &format!("ChannelBind to {peer}"),
                        code,
                        &reason,
                    ))
                }
                Ok(_) => {}
                Err(e) if e == "timed out" => {
                    return Err(format!("no answer to ChannelBind to {peer} in time"))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the allocation, waiting at most half a second for the
    /// answer (the server would expire it anyway).
    pub async fn close(mut self) {
        if self.client.close(Instant::now()).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while !matches!(
            self.client.state(),
            turn::client::State::Closed | turn::client::State::Failed
        ) {
            if self.next(deadline).await.is_err() {
                break;
            }
        }
    }

    /// Queues `payload` for `peer` and sends it.
    pub async fn send_to(&mut self, peer: SocketAddr, payload: &[u8]) -> Result<(), String> {
        self.client
            .send_to(peer, payload)
            .map_err(|e| e.to_string())?;
        self.flush().await
    }
}

/// A failed TURN request, with what the code usually means.
pub fn describe_failure(what: &str, code: Option<u16>, reason: &str) -> String {
    let Some(code) = code else {
        return format!("{what} failed: {reason}");
    };
    let hint = match code {
        401 => ": the credentials welcome handed out were refused (a second serve with another --turn-secret behind the same address?)",
        403 => ": the server's peer policy refuses that address",
        437 => ": allocation mismatch",
        441 => ": wrong credentials",
        486 => ": allocation quota reached (--max-allocations-per-user)",
        508 => ": out of capacity (--max-allocations or relay ports)",
        _ => "",
    };
    format!("{what} refused: {code} {reason}{hint}")
}
