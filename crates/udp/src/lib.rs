//! Batched UDP receive and send, shared by the TURN server's sockets, the
//! native peer's and the bench: one call reads up to a batch of datagrams
//! (recvmmsg, and GRO where the kernel has it, through quinn-udp) into one
//! caller-owned buffer, splits GRO super-datagrams, and applies one policy
//! to the ICMP errors a receive can report; [`SendBatch`] sends a batch to
//! any mix of addresses with one sendmmsg (Linux; one send each
//! elsewhere). Nothing is allocated per call.
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

/// Datagrams queued for one socket, sent together by [`SendBatch::flush`]:
/// one `sendmmsg` on Linux, whatever their destinations. Pushing copies
/// the bytes into the batch's own buffer, allocated once.
pub struct SendBatch {
    buf: Box<[u8]>,
    slot: usize,
    lens: [usize; MAX_BATCH],
    dests: [SocketAddr; MAX_BATCH],
    n: usize,
}

impl SendBatch {
    /// A batch whose datagrams may each be up to `slot` bytes (larger ones
    /// are sent alone by [`SendBatch::push`]'s caller: it refuses them).
    pub fn new(slot: usize) -> SendBatch {
        SendBatch {
            buf: vec![0u8; slot * MAX_BATCH].into_boxed_slice(),
            slot,
            lens: [0; MAX_BATCH],
            dests: [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_BATCH],
            n: 0,
        }
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// [`MAX_BATCH`] datagrams queued: flush before pushing more.
    pub fn is_full(&self) -> bool {
        self.n == MAX_BATCH
    }

    /// Queues `data` for `dest`. False (nothing queued) when the batch is
    /// full or `data` is larger than a slot.
    pub fn push(&mut self, dest: SocketAddr, data: &[u8]) -> bool {
        if self.is_full() || data.len() > self.slot {
            return false;
        }
        let at = self.n * self.slot;
        self.buf[at..at + data.len()].copy_from_slice(data);
        self.lens[self.n] = data.len();
        self.dests[self.n] = dest;
        self.n += 1;
        true
    }

    /// Empties the batch without sending; returns how many it held.
    pub fn clear(&mut self) -> usize {
        std::mem::take(&mut self.n)
    }

    /// Sends everything queued on `sock` without waiting and empties the
    /// batch. Returns how many datagrams the kernel would not take (a full
    /// send buffer, or an error for that one destination): dropped, as the
    /// network would.
    pub fn flush(&mut self, sock: &UdpSocket) -> usize {
        let n = std::mem::take(&mut self.n);
        let mut dropped = 0;
        let mut from = 0;
        while from < n {
            match self.send_from(sock, from, n) {
                Ok(sent) if sent > 0 => from += sent,
                // Nothing taken: the buffer is full or this destination
                // failed; skip it and try the rest.
                Ok(_) | Err(_) => {
                    dropped += 1;
                    from += 1;
                }
            }
        }
        dropped
    }

    #[cfg(target_os = "linux")]
    fn send_from(&self, sock: &UdpSocket, from: usize, to: usize) -> io::Result<usize> {
        use rustix::net::{
            sendmmsg, sendto, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny,
        };
        use std::io::IoSlice;
        let count = to - from;
        if count == 1 {
            // One datagram (a run of one flow, or the rest after a failed
            // one): a plain sendto, without building a batch's headers.
            let k = from;
            let data = &self.buf[k * self.slot..k * self.slot + self.lens[k]];
            return sendto(sock, data, SendFlags::DONTWAIT, &self.dests[k])
                .map(|_| 1)
                .map_err(io::Error::from);
        }
        let addrs: [SocketAddrAny; MAX_BATCH] =
            std::array::from_fn(|i| SocketAddrAny::from(self.dests[(from + i).min(to - 1)]));
        let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|i| {
            let k = (from + i).min(to - 1);
            [IoSlice::new(
                &self.buf[k * self.slot..k * self.slot + self.lens[k]],
            )]
        });
        let mut controls: [SendAncillaryBuffer<'_, '_, '_>; MAX_BATCH] =
            std::array::from_fn(|_| SendAncillaryBuffer::default());
        let mut controls = controls.iter_mut();
        let mut msgs: [MMsgHdr<'_>; MAX_BATCH] = std::array::from_fn(|i| {
            MMsgHdr::new_with_addr(
                &addrs[i],
                &iovs[i],
                controls.next().expect("MAX_BATCH of them"),
            )
        });
        // Straight to the kernel, not through tokio's readiness: a send
        // that finds the buffer full is dropped, never waited for, so
        // there is no readiness to track (and a fresh socket has none).
        sendmmsg(sock, &mut msgs[..count], SendFlags::DONTWAIT).map_err(io::Error::from)
    }

    #[cfg(not(target_os = "linux"))]
    fn send_from(&self, sock: &UdpSocket, from: usize, _to: usize) -> io::Result<usize> {
        let k = from;
        sock.try_send_to(
            &self.buf[k * self.slot..k * self.slot + self.lens[k]],
            self.dests[k],
        )
        .map(|_| 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_send_batch_reaches_every_destination_in_one_flush() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut batch = SendBatch::new(1500);
        assert!(batch.is_empty());
        for i in 0..MAX_BATCH {
            let to = if i % 2 == 0 { &a } else { &b };
            assert!(batch.push(to.local_addr().unwrap(), &[i as u8; 100]));
        }
        assert!(batch.is_full());
        assert!(!batch.push(a.local_addr().unwrap(), b"x"), "full");
        assert_eq!(batch.flush(&tx), 0);
        assert!(batch.is_empty());
        let mut got = [Vec::new(), Vec::new()];
        let mut buf = [0u8; 2000];
        for (k, sock) in [&a, &b].into_iter().enumerate() {
            for _ in 0..MAX_BATCH / 2 {
                let n =
                    tokio::time::timeout(std::time::Duration::from_secs(2), sock.recv(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                assert_eq!(n, 100);
                got[k].push(buf[0]);
            }
        }
        let evens: Vec<u8> = (0..MAX_BATCH as u8).step_by(2).collect();
        let odds: Vec<u8> = (1..MAX_BATCH as u8).step_by(2).collect();
        assert_eq!(got, [evens, odds], "each in order, to its own address");
        // Too big for a slot: refused, nothing queued.
        assert!(!batch.push(a.local_addr().unwrap(), &[0; 1501]));
        assert!(batch.is_empty());
    }

    #[tokio::test]
    async fn a_destination_that_fails_costs_only_its_own_datagram() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ok = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut batch = SendBatch::new(64);
        batch.push(ok.local_addr().unwrap(), b"one");
        // An IPv6 destination from an IPv4 socket fails at once.
        batch.push("[::1]:9".parse().unwrap(), b"bad");
        batch.push(ok.local_addr().unwrap(), b"two");
        assert_eq!(batch.flush(&tx), 1);
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two"] {
            let n = tokio::time::timeout(std::time::Duration::from_secs(2), ok.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], want);
        }
    }

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
