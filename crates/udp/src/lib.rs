//! Batched UDP receive, shared by the TURN server's sockets and the native
//! peer's: one call reads up to a batch of datagrams (recvmmsg, and GRO
//! where the kernel has it, through quinn-udp) into one caller-owned
//! buffer, splits GRO super-datagrams, and applies one policy to the ICMP
//! errors a receive can report. Nothing is allocated per call.
//!
//! # ICMP errors
//!
//! A receive can report an ICMP error caused by an earlier *send* (port
//! unreachable from a closed peer port, host or network unreachable):
//! Linux does so on connected sockets and on sockets with `IP_RECVERR`
//! (quinn-udp leaves it off unless asked), Windows on every UDP socket
//! (`WSAECONNRESET`). Such an error names some destination, not this
//! socket, and the datagrams queued behind it are still waiting. So
//! [`recv_batch`] swallows it and reports progress (`Ok(true)`): the caller
//! keeps draining, exactly as if that receive had returned data. Returning
//! it as an error would let any one peer that closed its port stall or
//! break the receive loop of a socket serving many others (a TURN worker's,
//! or the peer's shared host socket). Every other error is about the socket
//! itself and is returned.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use quinn_udp::{RecvMeta, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes per batch slot: room for the largest datagram, and for one GRO
/// super-datagram.
pub const SLOT: usize = 64 * 1024;

/// Most datagrams (or GRO super-datagrams) one call reads.
pub const MAX_BATCH: usize = 32;

/// A zeroed receive buffer of `slots` slots (at most [`MAX_BATCH`] are used).
pub fn batch_buffer(slots: usize) -> Box<[u8]> {
    vec![0u8; slots * SLOT].into_boxed_slice()
}

/// One received datagram: who sent it, which local address it arrived on
/// (when the kernel says), and where it sits in the batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    /// The sender.
    pub source: SocketAddr,
    /// The local IP it was addressed to (IP_PKTINFO), if known.
    pub dst_ip: Option<IpAddr>,
    /// Offset in the batch buffer.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
}

impl Datagram {
    /// The datagram's bytes within the batch buffer it was received into.
    pub fn bytes<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start..self.start + self.len]
    }
}

/// True for the errors a receive reports on behalf of an earlier send's
/// ICMP error (see the module docs).
pub fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// Receives one batch on `sock` into `buf` (one datagram per [`SLOT`]
/// bytes, up to [`MAX_BATCH`]) and calls `each` for every datagram, with
/// its bytes. Returns `Ok(false)` when nothing was waiting (the socket's
/// readiness is then cleared, so wait for it again), `Ok(true)` after a
/// batch or a swallowed ICMP error, and any other error as is.
///
/// # Panics
///
/// If `buf` is shorter than one [`SLOT`] (a caller bug).
pub fn recv_batch(
    sock: &UdpSocket,
    state: &UdpSocketState,
    buf: &mut [u8],
    mut each: impl FnMut(Datagram, &[u8]),
) -> io::Result<bool> {
    let slots = (buf.len() / SLOT).min(MAX_BATCH);
    assert!(slots > 0, "receive buffer smaller than one slot");
    let mut chunks = buf.chunks_exact_mut(SLOT);
    let mut iovs: [IoSliceMut<'_>; MAX_BATCH] =
        std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or(&mut [])));
    let mut metas = [RecvMeta::default(); MAX_BATCH];
    let n = match sock.try_io(Interest::READABLE, || {
        state.recv(sock.into(), &mut iovs[..slots], &mut metas[..slots])
    }) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(e) if is_icmp_error(&e) => return Ok(true),
        Err(e) => return Err(e),
    };
    for (i, meta) in metas.iter().enumerate().take(n) {
        // With GRO one slot holds several datagrams of `stride` bytes.
        let stride = if meta.stride == 0 {
            meta.len.max(1)
        } else {
            meta.stride
        };
        let base = i * SLOT;
        let mut off = 0;
        while off < meta.len {
            let len = stride.min(meta.len - off);
            let d = Datagram {
                source: meta.addr,
                dst_ip: meta.dst_ip,
                start: base + off,
                len,
            };
            each(d, d.bytes(buf));
            off += len;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, UdpSocketState, UdpSocket) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let state = UdpSocketState::new((&rx).into()).unwrap();
        let rx = UdpSocket::from_std(rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (rx, state, tx)
    }

    #[tokio::test]
    async fn reads_a_batch_into_one_buffer() {
        let (rx, state, tx) = pair().await;
        let to = rx.local_addr().unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 100], to).await.unwrap();
        }
        let mut buf = batch_buffer(4);
        let mut got = Vec::new();
        while got.len() < 5 {
            rx.readable().await.unwrap();
            recv_batch(&rx, &state, &mut buf, |d, bytes| {
                assert_eq!(d.source, tx.local_addr().unwrap());
                assert_eq!(d.dst_ip.map(|ip| ip.is_loopback()), Some(true));
                got.push(bytes.to_vec());
            })
            .unwrap();
        }
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100]).collect();
        assert_eq!(got, want);
        assert!(!recv_batch(&rx, &state, &mut buf, |_, _| panic!("nothing sent")).unwrap());
    }

    #[tokio::test]
    async fn icmp_port_unreachable_does_not_stop_the_receive_loop() {
        let (rx, state, tx) = pair().await;
        // Have Linux report ICMP errors on this unconnected socket, as
        // other platforms do.
        state.enable_transport_errors((&rx).into()).unwrap();
        // A port nobody listens on: the kernel answers with ICMP port
        // unreachable, which the next receive on `rx` reports.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        rx.send_to(b"probe", closed).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        tx.send_to(b"after", rx.local_addr().unwrap())
            .await
            .unwrap();
        let mut buf = batch_buffer(1);
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "datagram never arrived"
            );
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(100), rx.readable()).await;
            let r = recv_batch(&rx, &state, &mut buf, |_, b| got.push(b.to_vec()));
            assert!(r.is_ok(), "ICMP error surfaced: {r:?}");
        }
        assert_eq!(got, [b"after".to_vec()]);
    }
}
