//! The HTTP listener's accept loop: optional TLS, deadlines, a per-source-IP
//! cap, and hyper's HTTP/1.1 with upgrades under an axum [`Router`].
//!
//! It owns what `axum::serve` left open to the network: a TLS handshake that
//! never finishes, request headers that never finish (slowloris), and one
//! host opening connections until the process runs out of descriptors. The
//! bookkeeping that decides ([`PerIpCap`] (shared with TURN over TCP), [`AcceptBackoff`]) has no sockets and
//! no clock of its own; [`run`] is the thin tokio driver around it.
//!
//! HTTP/2 is not offered: every route is a small page or a WebSocket upgrade,
//! which is HTTP/1.1, and HTTP/1.1 has a header deadline in hyper where an
//! idle HTTP/2 connection has none.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};
use turn::tcp::{IpSlot, PerIpCap};

/// The ALPN id of ACME's TLS-ALPN-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A TLS handshake must finish within this (`--tls-handshake-timeout`).
    pub handshake_timeout: Duration,
    /// Each request's headers must arrive whole within this, counted from
    /// the connection's start or the previous response, so it also closes
    /// idle keep-alive connections (`--header-read-timeout`).
    pub header_timeout: Duration,
    /// Largest request head read; a larger one gets 431 and the
    /// connection is closed (`--max-header-bytes`, at least 8192).
    pub max_header_bytes: usize,
    /// Concurrent connections from one source (an IPv4 address, an IPv6
    /// /64), WebSockets included; 0 = no cap (`--max-connections-per-ip`).
    pub max_per_ip: usize,
}

/// What the listener counts, exported on `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Connections closed at accept because their source was at the cap.
    pub refused_per_ip: Counter,
    /// TLS handshakes that did not finish within the deadline.
    pub handshake_timeouts: Counter,
    /// TLS handshakes that failed (a client that does not trust the
    /// certificate, plain HTTP on the TLS port).
    pub handshake_failures: Counter,
    /// Connections closed because request headers did not arrive in time.
    pub header_timeouts: Counter,
}

/// How the accept loop waits after an error such as EMFILE (out of
/// descriptors), which would otherwise fail again at once, forever: a delay
/// that doubles from 10 ms to 1 s while errors go on, and a log line at most
/// once a second that says how many there were.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// An accept failed at `now`: how long to wait before the next, and
    /// `Some(n)` when it is time to log (n failures since the last line).
    pub fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.unlogged += 1;
        let log = match self.last_log {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => None,
            _ => {
                self.last_log = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        };
        (self.delay, log)
    }

    /// An accept succeeded: the next error starts from the shortest delay.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// Errors of one incoming connection (it went away before accept returned),
/// not of the listener: accept again at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A stream that holds its connection's [`IpSlot`]: the slot goes when the
/// stream does, which for a WebSocket is when the upgraded socket closes,
/// long after hyper let go of the connection.
struct Counted<S> {
    inner: S,
    _slot: IpSlot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts on `listener` until `shutdown`, serving `router` on each
/// connection (over TLS when `tls` is given), then asks the open HTTP
/// connections to finish and waits up to 5 s for them. Upgraded WebSockets
/// are not waited for here; their owner closes them.
pub async fn run(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    counters: Counters,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let per_ip = PerIpCap::new(limits.max_per_ip);
    let conns = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let (delay, log) = backoff.failed(Instant::now());
                if let Some(n) = log {
                    error!(errors = n, "accept failed, retrying in {delay:?}: {e}");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let Some(slot) = per_ip.try_acquire(remote.ip()) else {
            // Closed before any read or allocation: the cheapest refusal.
            counters.refused_per_ip.inc();
            debug!(%remote, "refused: --max-connections-per-ip reached");
            continue;
        };
        // Signaling frames are small and latency-bound: Nagle would hold a
        // relayed frame back until the previous one is acknowledged.
        if let Err(e) = tcp.set_nodelay(true) {
            warn!("cannot set TCP_NODELAY: {e}");
        }
        let io = Counted {
            inner: tcp,
            _slot: slot,
        };
        let (router, tls, counters, shutdown) = (
            router.clone(),
            tls.clone(),
            counters.clone(),
            shutdown.clone(),
        );
        conns.spawn(async move {
            match tls {
                None => serve_http(io, remote, router, limits, &counters, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(io)).await
                    {
                        Ok(Ok(stream)) => {
                            // An ACME TLS-ALPN-01 validation: the handshake
                            // was the answer; there is no HTTP to serve.
                            if stream.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) {
                                debug!(%remote, "answered an ACME tls-alpn-01 validation");
                                return;
                            }
                            serve_http(stream, remote, router, limits, &counters, shutdown).await
                        }
                        Ok(Err(e)) => {
                            counters.handshake_failures.inc();
                            debug!(%remote, "TLS handshake failed: {e}");
                        }
                        Err(_) => {
                            counters.handshake_timeouts.inc();
                            debug!(%remote, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    conns.close();
    if tokio::time::timeout(Duration::from_secs(5), conns.wait())
        .await
        .is_err()
    {
        warn!("some HTTP connections did not finish within 5 s of the shutdown");
    }
    Ok(())
}

/// Serves HTTP/1.1 with upgrades on one connection until it closes, its
/// headers time out, or `shutdown` asks it to finish.
async fn serve_http<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    limits: Limits,
    counters: &Counters,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Handlers read the peer address as axum::serve gave it to them.
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        tower_service::Service::call(&mut router.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's floor; the config refuses less.
        .max_buf_size(limits.max_header_bytes.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            counters.header_timeouts.inc();
            debug!(%remote, "closed: request headers did not arrive within the deadline");
        } else {
            debug!(%remote, "HTTP connection error: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_grows_and_logs_once_a_second() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        let (d, log) = b.failed(t0);
        assert_eq!((d, log), (Duration::from_millis(10), Some(1)));
        let mut logged = 0;
        let mut delay = d;
        // 100 failures within half a second: one doubling each, no line.
        for i in 1..100 {
            let (d, log) = b.failed(t0 + Duration::from_millis(5 * i));
            assert!(d >= delay);
            delay = d;
            logged += log.is_some() as u32;
        }
        assert_eq!(logged, 0);
        assert_eq!(delay, Duration::from_secs(1), "capped at 1 s");
        let (_, log) = b.failed(t0 + Duration::from_millis(1000));
        assert_eq!(log, Some(100), "the next line counts what it held back");
        b.succeeded();
        let (d, _) = b.failed(t0 + Duration::from_secs(5));
        assert_eq!(d, Duration::from_millis(10));
    }
}
