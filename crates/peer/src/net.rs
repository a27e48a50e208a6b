//! The peer's UDP sockets: one wildcard socket per address family carries
//! every host candidate (the kernel tells us, per datagram, which local
//! address it arrived on, via IP_PKTINFO through quinn-udp), STUN to the
//! STUN/TURN servers, TURN traffic, DTLS and RTP.
//!
//! Receives are batched (recvmmsg, and GRO where the kernel has it) into one
//! buffer owned by the driver, so the receive path allocates nothing.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub(crate) const BATCH: usize = 16;
/// Room for one GRO super-datagram per slot.
pub(crate) const SLOT: usize = 64 * 1024;

pub(crate) struct UdpSock {
    pub sock: UdpSocket,
    state: UdpSocketState,
    pub port: u16,
}

/// One received datagram: where from, which local address, and where in
/// the batch buffer.
#[derive(Clone, Copy)]
pub(crate) struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub start: usize,
    pub len: usize,
}

impl UdpSock {
    /// Binds the wildcard address of one family. IPv6 sockets are v6-only
    /// so the two never see each other's traffic.
    pub fn bind(v6: bool, port: u16) -> io::Result<UdpSock> {
        use socket2::{Domain, Protocol, Socket, Type};
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if v6 {
            s.set_only_v6(true)?;
        }
        // Large buffers keep a fast data channel from dropping bursts.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        let ip: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        s.bind(&SocketAddr::new(ip, port).into())?;
        let std: std::net::UdpSocket = s.into();
        let state = UdpSocketState::new((&std).into())?;
        let sock = UdpSocket::from_std(std)?;
        let port = sock.local_addr()?.port();
        Ok(UdpSock { sock, state, port })
    }

    /// Receives one batch into `buf` (BATCH × SLOT bytes) and appends one
    /// [`Datagram`] per datagram to `out`. Returns Ok(false) when nothing
    /// was waiting.
    pub fn recv_batch(&self, buf: &mut [u8], out: &mut Vec<Datagram>) -> io::Result<bool> {
        let mut chunks = buf.chunks_exact_mut(SLOT);
        let mut iovs: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
            IoSliceMut::new(chunks.next().expect("buffer holds BATCH slots"))
        });
        let mut metas = [RecvMeta::default(); BATCH];
        let n = match self.sock.try_io(Interest::READABLE, || {
            self.state.recv((&self.sock).into(), &mut iovs, &mut metas)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // ICMP errors from earlier sends surface here; they say nothing
            // about the socket itself.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::HostUnreachable
                        | io::ErrorKind::NetworkUnreachable
                ) =>
            {
                return Ok(true)
            }
            Err(e) => return Err(e),
        };
        for (i, meta) in metas.iter().enumerate().take(n) {
            let stride = if meta.stride == 0 {
                meta.len.max(1)
            } else {
                meta.stride
            };
            let dst_ip = meta.dst_ip.unwrap_or(match meta.addr {
                SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            });
            let destination = SocketAddr::new(unmap(dst_ip), self.port);
            let base = i * SLOT;
            let mut off = 0;
            while off < meta.len {
                let len = stride.min(meta.len - off);
                out.push(Datagram {
                    source: unmap_sa(meta.addr),
                    destination,
                    start: base + off,
                    len,
                });
                off += len;
            }
        }
        Ok(true)
    }

    /// Sends one datagram from `src_ip` (None: let the kernel choose).
    /// A full socket buffer is reported as WouldBlock for the caller to queue.
    pub fn try_send(&self, src_ip: Option<IpAddr>, dst: SocketAddr, data: &[u8]) -> io::Result<()> {
        let src_ip = src_ip.filter(|ip| !ip.is_unspecified());
        let t = Transmit {
            destination: dst,
            ecn: None,
            contents: data,
            segment_size: None,
            src_ip,
        };
        self.sock.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.sock).into(), &t)
        })
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn unmap_sa(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(unmap(a.ip()), a.port())
}
