//! The `switchboard` binary: command-line parsing and process setup (logging,
//! runtime, signals). The work happens in the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use switchboard::config::{LogFormat, ServeArgs};
use switchboard::{bench, doctor, p2p, serve, token};

/// Self-hosted WebRTC connection service: signaling server, demo pages and
/// browser SDK in one binary.
#[derive(Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the signaling server (WebSocket /v1/ws), STUN/TURN, demo pages
    /// and metrics.
    Serve(ServeArgs),
    /// Load generators: `bench turn` relays traffic through a TURN server,
    /// `bench peer` measures native peers on loopback.
    Bench(bench::BenchArgs),
    /// Print a room access token for a server started with --auth-secret.
    Token(token::TokenArgs),
    /// Check a deployment from here: HTTP(S) and its certificate, the
    /// WebSocket join, STUN and the NAT mapping, TURN over UDP, TCP and
    /// TLS, and a relayed round trip.
    Doctor(doctor::DoctorArgs),
    #[command(flatten)]
    Peer(p2p::PeerCommand),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Peer commands log warnings only (stdout may carry --json events).
fn init_peer_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Token(args) => token::run(args),
        Command::Doctor(args) => {
            init_peer_logging();
            let code = doctor::run(args)?;
            std::process::exit(code)
        }
        Command::Peer(cmd) => {
            init_peer_logging();
            p2p::run(cmd)
        }
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            init_logging(cfg.log_format);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let listener = serve::bind(cfg.listen).await?;
                let server = serve::start(cfg, listener).await?;
                // Plain stdout lines so scripts and tests can learn the ports.
                if let Some(turn) = server.turn_addr() {
                    println!("switchboard TURN on udp+tcp {turn}");
                }
                if let Some(turn) = server.turn_tls_addr() {
                    println!("switchboard TURN on tls {turn}");
                }
                let scheme = if server.is_tls() { "https" } else { "http" };
                if let Some(at) = server.redirect_addr() {
                    println!("switchboard redirecting http://{at} to https");
                }
                println!(
                    "switchboard listening on {scheme}://{}",
                    server.local_addr()
                );
                let stop = server.shutdown_token();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    stop.cancel();
                });
                server.wait().await
            })
        }
    }
}
