//! The peer's UDP sockets: one wildcard socket per address family carries
//! every host candidate (the kernel tells us, per datagram, which local
//! address it arrived on, via IP_PKTINFO through quinn-udp), STUN to the
//! STUN/TURN servers, TURN traffic, DTLS and RTP.
//!
//! Receives are batched (recvmmsg, and GRO where the kernel has it, by the
//! `udp` crate the TURN server shares) into one buffer owned by the driver,
//! so the receive path allocates nothing.

use quinn_udp::{Transmit, UdpSocketState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub(crate) const BATCH: usize = 16;
/// Room for one GRO super-datagram per slot.
pub(crate) const SLOT: usize = udp::SLOT;

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
    /// was waiting. ICMP errors from earlier sends are not errors here (see
    /// the `udp` crate for why).
    pub fn recv_batch(&self, buf: &mut [u8], out: &mut Vec<Datagram>) -> io::Result<bool> {
        let port = self.port;
        let slots = buf.len().min(BATCH * SLOT);
        udp::recv_batch(&self.sock, &self.state, &mut buf[..slots], |d, _| {
            let dst_ip = d.dst_ip.unwrap_or(match d.source {
                SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            });
            out.push(Datagram {
                source: unmap_sa(d.source),
                destination: SocketAddr::new(unmap(dst_ip), port),
                start: d.start,
                len: d.len,
            });
        })
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
