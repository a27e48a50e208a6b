//! The second STUN address (`serve --stun-alt-listen`): one UDP socket and
//! one task around the sans-IO [`turn::binding::BindingResponder`].

use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use turn::binding::BindingResponder;

/// Serves Binding requests on `sock` until `shutdown`; every answer names
/// `primary` (the TURN port's STUN address) in OTHER-ADDRESS.
pub fn spawn(
    sock: std::net::UdpSocket,
    primary: SocketAddr,
    core: &turn::server::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    sock.set_nonblocking(true)?;
    let sock = UdpSocket::from_std(sock)?;
    let addr = sock.local_addr()?;
    let mut responder = BindingResponder::new(
        Some(primary),
        core.unauth_rate,
        core.unauth_burst,
        core.max_tracked_sources,
    );
    info!(%addr, other = %primary, "second STUN address listening");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut out = Vec::with_capacity(128);
        loop {
            let (n, from) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(r) => r,
                    // ICMP errors from earlier answers land here; not fatal.
                    Err(e) => { debug!("STUN alt recv: {e}"); continue; }
                },
                _ = shutdown.cancelled() => break,
            };
            let Some(packet) = buf.get(..n) else { continue };
            if responder.handle(Instant::now(), from, packet, &mut out) {
                if let Err(e) = sock.try_send_to(&out, from) {
                    debug!("STUN alt send to {from}: {e}");
                }
            }
        }
    });
    Ok(())
}
