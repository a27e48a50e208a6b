//! `switchboard bench`: load generators for the servers in this binary.
//! `bench turn` measures relayed round trips through any RFC 5766/8656 TURN
//! server; `bench peer` measures native peers on loopback; `bench signal`
//! loads a WebSocket signaling server (this one or a PeerJS server);
//! `bench udp-forward` is a bare forwarder and its load, the floor under
//! the relay's cost.

mod client;
mod forward;
mod hist;
mod peer;
mod procstat;
mod pump;
mod signal;
mod turn;

use anyhow::Result;
use clap::{Args, Subcommand};

/// `switchboard bench`: which bench to run.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Relay load through a TURN server (switchboard's, coturn, any
    /// RFC-compliant one): N allocations pumping ChannelData to echo peers
    /// in this process; reports packets/s, loss and round-trip latency.
    Turn(turn::TurnArgs),
    /// Native peer ↔ native peer on loopback: connection setup time (median,
    /// p95 over --runs) and data-channel throughput in 64 KiB messages.
    Peer(peer::PeerArgs),
    /// WebSocket signaling load against `switchboard serve` (protocol v1)
    /// or a PeerJS server (`--peerjs`): connect rate, server RSS per
    /// connection, server CPU per relayed message, relay latency, loss.
    Signal(signal::SignalArgs),
    /// A bare UDP forwarder (`--listen --to`) and its load (`--server
    /// --echo`): the relay's I/O with no TURN logic, the floor under the
    /// relay's cost per packet.
    UdpForward(forward::ForwardArgs),
}

/// Runs a bench; on failure prints the error chain on one line (no
/// backtrace) and exits with status 1.
pub fn run(args: BenchArgs) -> Result<()> {
    let result = match args.command {
        BenchCommand::Turn(a) => turn::run(a),
        BenchCommand::Peer(a) => peer::run(a),
        BenchCommand::Signal(a) => signal::run(a),
        BenchCommand::UdpForward(a) => forward::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// `--server HOST:PORT` as one address, IPv4 first (the benches bind their
/// sources on 127.0.0.x).
pub(crate) async fn resolve_server(server: &str) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("--server {server}: expected HOST:PORT that resolves"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("--server {server} resolves to no address"))
}
