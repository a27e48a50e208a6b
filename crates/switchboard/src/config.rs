//! Settings of `switchboard serve`, from flags, `SWITCHBOARD_*` environment
//! variables and an optional TOML file.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML
//! file, built-in default. Every flag has a TOML key of the same name with `_`
//! for `-` (`--max-room-peers` → `max_room_peers`).

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::value::RawValue;
use signal::{HubConfig, StaticIceServers};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use turn::policy::Cidr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Flags of `serve`. All optional here so the TOML file can fill the gaps.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (keys use `_` for `-`).
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for HTTP and WebSocket [default: 0.0.0.0:8080]
    #[arg(long, env = "SWITCHBOARD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Log line format [default: pretty]
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// ICE server URL handed to clients in `welcome` (stun:, stuns:, turn:,
    /// turns:). Repeatable; comma-separated in the environment.
    #[arg(
        long = "ice-server",
        env = "SWITCHBOARD_ICE_SERVER",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub ice_server: Vec<String>,

    /// Peers per room [default: 8]
    #[arg(long, env = "SWITCHBOARD_MAX_ROOM_PEERS", value_name = "N")]
    pub max_room_peers: Option<usize>,

    /// Largest accepted WebSocket message in bytes [default: 65536]
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Sustained messages per second per connection [default: 50]
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_RATE", value_name = "PER_SEC")]
    pub max_message_rate: Option<f64>,

    /// Messages a connection may send at once before the rate applies [default: 200]
    #[arg(long, env = "SWITCHBOARD_MESSAGE_BURST", value_name = "N")]
    pub message_burst: Option<u32>,

    /// Rate-dropped messages in a row before the connection is closed [default: 200]
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_STRIKES", value_name = "N")]
    pub rate_limit_strikes: Option<u32>,

    /// Seconds of silence before a connection is dropped [default: 30]
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<f64>,

    /// Open WebSocket connections at most [default: 10000]
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Messages queued for one slow client before it is dropped [default: 1024]
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE", value_name = "N")]
    pub send_queue: Option<usize>,

    /// Run without the built-in STUN/TURN server.
    #[arg(long, env = "SWITCHBOARD_NO_TURN")]
    pub no_turn: bool,

    /// STUN/TURN address, UDP and TCP [default: 0.0.0.0:3478]
    #[arg(long, env = "SWITCHBOARD_TURN_LISTEN", value_name = "ADDR")]
    pub turn_listen: Option<SocketAddr>,

    /// Relay address to advertise [default: the TURN listen address if it is
    /// specific, else the primary interface's address]
    #[arg(long, env = "SWITCHBOARD_EXTERNAL_IP", value_name = "IP")]
    pub external_ip: Option<IpAddr>,

    /// Relay ports, LO-HI [default: 49152-65535]
    #[arg(long, env = "SWITCHBOARD_RELAY_PORTS", value_name = "LO-HI")]
    pub relay_ports: Option<String>,

    /// TURN realm [default: switchboard]
    #[arg(long, env = "SWITCHBOARD_REALM", value_name = "REALM")]
    pub realm: Option<String>,

    /// Static TURN user, NAME:PASSWORD. Repeatable; comma-separated in the
    /// environment.
    #[arg(
        long = "turn-user",
        env = "SWITCHBOARD_TURN_USER",
        value_name = "NAME:PASSWORD",
        value_delimiter = ','
    )]
    pub turn_user: Vec<String>,

    /// File of static TURN users, one NAME:PASSWORD per line (# comments).
    #[arg(long, env = "SWITCHBOARD_TURN_USERS_FILE", value_name = "FILE")]
    pub turn_users_file: Option<PathBuf>,

    /// Shared secret for time-limited TURN credentials (TURN REST API)
    /// [default: a random one made at start-up]
    #[arg(long, env = "SWITCHBOARD_TURN_SECRET", value_name = "SECRET")]
    pub turn_secret: Option<String>,

    /// Lifetime of the TURN credentials handed to clients, seconds [default: 86400]
    #[arg(long, env = "SWITCHBOARD_TURN_TTL", value_name = "SECS")]
    pub turn_ttl: Option<u64>,

    /// Peer range the relay may send to although it is private or reserved
    /// (CIDR). Repeatable; comma-separated in the environment.
    #[arg(
        long = "allow-peer",
        env = "SWITCHBOARD_ALLOW_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub allow_peer: Vec<String>,

    /// Allocations on the whole server [default: 10000]
    #[arg(long, env = "SWITCHBOARD_MAX_ALLOCATIONS", value_name = "N")]
    pub max_allocations: Option<usize>,

    /// Allocations per TURN username [default: 64]
    #[arg(long, env = "SWITCHBOARD_MAX_ALLOCATIONS_PER_USER", value_name = "N")]
    pub max_allocations_per_user: Option<usize>,

    /// Relayed bytes per second per allocation and direction, 0 for no
    /// limit [default: 4194304]
    #[arg(
        long,
        env = "SWITCHBOARD_RELAY_BANDWIDTH",
        value_name = "BYTES_PER_SEC"
    )]
    pub relay_bandwidth: Option<u32>,

    /// Unauthenticated STUN/TURN requests per second per source IP [default: 20]
    #[arg(long, env = "SWITCHBOARD_TURN_UNAUTH_RATE", value_name = "PER_SEC")]
    pub turn_unauth_rate: Option<f64>,

    /// TURN worker threads [default: number of CPUs]
    #[arg(long, env = "SWITCHBOARD_TURN_WORKERS", value_name = "N")]
    pub turn_workers: Option<usize>,
}

/// The TOML file's shape: the same settings, by the same names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    ice_server: Option<Vec<String>>,
    max_room_peers: Option<usize>,
    max_message_bytes: Option<usize>,
    max_message_rate: Option<f64>,
    message_burst: Option<u32>,
    rate_limit_strikes: Option<u32>,
    idle_timeout: Option<f64>,
    max_connections: Option<usize>,
    send_queue: Option<usize>,
    no_turn: Option<bool>,
    turn_listen: Option<SocketAddr>,
    external_ip: Option<IpAddr>,
    relay_ports: Option<String>,
    realm: Option<String>,
    turn_user: Option<Vec<String>>,
    turn_users_file: Option<PathBuf>,
    turn_secret: Option<String>,
    turn_ttl: Option<u64>,
    allow_peer: Option<Vec<String>>,
    max_allocations: Option<usize>,
    max_allocations_per_user: Option<usize>,
    relay_bandwidth: Option<u32>,
    turn_unauth_rate: Option<f64>,
    turn_workers: Option<usize>,
}

/// Resolved settings of the STUN/TURN server.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub listen: SocketAddr,
    pub external_ip: Option<IpAddr>,
    pub relay_ports: (u16, u16),
    pub realm: String,
    pub users: Vec<(String, String)>,
    /// Secret for time-limited credentials; `None` means "make one".
    pub secret: Option<String>,
    pub ttl: u64,
    pub allow_peer: Vec<Cidr>,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    pub relay_bandwidth: u32,
    pub unauth_rate: f64,
    pub workers: usize,
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub ice_servers: Vec<String>,
    pub hub: HubConfig,
    pub send_queue: usize,
    /// `None` when started with `--no-turn`.
    pub turn: Option<TurnConfig>,
}

impl ServeArgs {
    /// Reads the TOML file, if any, and resolves every setting.
    pub fn resolve(self) -> Result<ServeConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let d = HubConfig::default();
        let ice_servers = if self.ice_server.is_empty() {
            file.ice_server.unwrap_or_default()
        } else {
            self.ice_server
        };
        let ice_json = ice_servers_json(&ice_servers)?;
        let hub = HubConfig {
            max_room_peers: self
                .max_room_peers
                .or(file.max_room_peers)
                .unwrap_or(d.max_room_peers),
            max_message_bytes: self
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(d.max_message_bytes),
            max_message_rate: self
                .max_message_rate
                .or(file.max_message_rate)
                .unwrap_or(d.max_message_rate),
            message_burst: self
                .message_burst
                .or(file.message_burst)
                .unwrap_or(d.message_burst),
            rate_limit_strikes: self
                .rate_limit_strikes
                .or(file.rate_limit_strikes)
                .unwrap_or(d.rate_limit_strikes),
            idle_timeout: match self.idle_timeout.or(file.idle_timeout) {
                Some(s) => secs(s, "idle-timeout")?,
                None => d.idle_timeout,
            },
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            ice_servers: Arc::new(StaticIceServers(ice_json)),
        };
        if hub.max_room_peers == 0 {
            bail!("--max-room-peers must be at least 1");
        }
        if hub.max_message_bytes < 256 {
            bail!("--max-message-bytes must be at least 256 (a join message needs room)");
        }
        if !(hub.max_message_rate.is_finite() && hub.max_message_rate > 0.0) {
            bail!("--max-message-rate must be a positive number");
        }
        if hub.message_burst == 0 {
            bail!("--message-burst must be at least 1");
        }
        if hub.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        let send_queue = self.send_queue.or(file.send_queue).unwrap_or(1024);
        if send_queue == 0 {
            bail!("--send-queue must be at least 1");
        }
        let turn = if self.no_turn || file.no_turn.unwrap_or(false) {
            None
        } else {
            Some(resolve_turn(TurnArgs {
                listen: self.turn_listen.or(file.turn_listen),
                external_ip: self.external_ip.or(file.external_ip),
                relay_ports: self.relay_ports.or(file.relay_ports),
                realm: self.realm.or(file.realm),
                users: if self.turn_user.is_empty() {
                    file.turn_user.unwrap_or_default()
                } else {
                    self.turn_user
                },
                users_file: self.turn_users_file.or(file.turn_users_file),
                secret: self.turn_secret.or(file.turn_secret),
                ttl: self.turn_ttl.or(file.turn_ttl),
                allow_peer: if self.allow_peer.is_empty() {
                    file.allow_peer.unwrap_or_default()
                } else {
                    self.allow_peer
                },
                max_allocations: self.max_allocations.or(file.max_allocations),
                max_allocations_per_user: self
                    .max_allocations_per_user
                    .or(file.max_allocations_per_user),
                relay_bandwidth: self.relay_bandwidth.or(file.relay_bandwidth),
                unauth_rate: self.turn_unauth_rate.or(file.turn_unauth_rate),
                workers: self.turn_workers.or(file.turn_workers),
            })?)
        };
        Ok(ServeConfig {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "0.0.0.0:8080".parse().expect("valid address")),
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Pretty),
            ice_servers,
            hub,
            send_queue,
            turn,
        })
    }
}

/// TURN settings after flag/env/file precedence, before validation.
struct TurnArgs {
    listen: Option<SocketAddr>,
    external_ip: Option<IpAddr>,
    relay_ports: Option<String>,
    realm: Option<String>,
    users: Vec<String>,
    users_file: Option<PathBuf>,
    secret: Option<String>,
    ttl: Option<u64>,
    allow_peer: Vec<String>,
    max_allocations: Option<usize>,
    max_allocations_per_user: Option<usize>,
    relay_bandwidth: Option<u32>,
    unauth_rate: Option<f64>,
    workers: Option<usize>,
}

fn user_pair(s: &str, origin: &str) -> Result<(String, String)> {
    match s.split_once(':') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.to_string())),
        _ => bail!("{origin}: {s:?} is not NAME:PASSWORD"),
    }
}

fn resolve_turn(a: TurnArgs) -> Result<TurnConfig> {
    let relay_ports = match a.relay_ports.as_deref() {
        None => (49152, 65535),
        Some(s) => {
            let parsed = s.split_once('-').and_then(|(lo, hi)| {
                Some((
                    lo.trim().parse::<u16>().ok()?,
                    hi.trim().parse::<u16>().ok()?,
                ))
            });
            match parsed {
                Some((lo, hi)) if lo > 0 && lo <= hi => (lo, hi),
                _ => bail!("--relay-ports {s:?} must be LO-HI with 1 <= LO <= HI <= 65535"),
            }
        }
    };
    let mut users = Vec::new();
    for u in &a.users {
        users.push(user_pair(u, "--turn-user")?);
    }
    if let Some(path) = &a.users_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --turn-users-file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            users.push(user_pair(line, &format!("{}:{}", path.display(), i + 1))?);
        }
    }
    let mut allow_peer = Vec::new();
    for c in &a.allow_peer {
        allow_peer.push(
            c.parse::<Cidr>()
                .map_err(|e| anyhow::anyhow!("--allow-peer: {e}"))?,
        );
    }
    let unauth_rate = a.unauth_rate.unwrap_or(20.0);
    if !(unauth_rate.is_finite() && unauth_rate > 0.0) {
        bail!("--turn-unauth-rate must be a positive number");
    }
    let workers = a.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if workers == 0 {
        bail!("--turn-workers must be at least 1");
    }
    if a.secret.as_deref() == Some("") {
        bail!("--turn-secret must not be empty");
    }
    Ok(TurnConfig {
        listen: a
            .listen
            .unwrap_or_else(|| "0.0.0.0:3478".parse().expect("valid address")),
        external_ip: a.external_ip,
        relay_ports,
        realm: a.realm.unwrap_or_else(|| "switchboard".to_string()),
        users,
        secret: a.secret,
        ttl: a.ttl.unwrap_or(86_400).max(1),
        allow_peer,
        max_allocations: a.max_allocations.unwrap_or(10_000),
        max_allocations_per_user: a.max_allocations_per_user.unwrap_or(64),
        relay_bandwidth: a.relay_bandwidth.unwrap_or(4 * 1024 * 1024),
        unauth_rate,
        workers,
    })
}

fn secs(s: f64, flag: &str) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0) {
        bail!("--{flag} must be a positive number of seconds, got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Builds the `iceServers` array of `welcome`, one RTCIceServer per URL.
fn ice_servers_json(urls: &[String]) -> Result<Box<RawValue>> {
    for url in urls {
        let ok = ["stun:", "stuns:", "turn:", "turns:"]
            .iter()
            .any(|p| url.starts_with(p) && url.len() > p.len());
        if !ok {
            bail!("--ice-server {url:?} must start with stun:, stuns:, turn: or turns:");
        }
    }
    let servers: Vec<serde_json::Value> = urls
        .iter()
        .map(|u| serde_json::json!({ "urls": [u] }))
        .collect();
    Ok(RawValue::from_string(serde_json::to_string(&servers)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ServeArgs::default().resolve().unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.hub.max_room_peers, 8);
        assert_eq!(c.hub.max_message_bytes, 65536);
        assert_eq!(c.hub.ice_servers.for_peer("r", "p").get(), "[]");
        let t = c.turn.unwrap();
        assert_eq!(t.listen.to_string(), "0.0.0.0:3478");
        assert_eq!(t.relay_ports, (49152, 65535));
        assert_eq!(t.ttl, 86_400);
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn file_fills_gaps_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("sb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nmax_room_peers = 3\nidle_timeout = 2.5\nice_server = [\"stun:a.example:3478\"]\nlog_format = \"json\"\n",
        )
        .unwrap();
        let c = ServeArgs {
            config: Some(path.clone()),
            max_room_peers: Some(5),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.hub.max_room_peers, 5);
        assert_eq!(c.hub.idle_timeout, Duration::from_millis(2500));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.hub.ice_servers.for_peer("r", "p").get(),
            r#"[{"urls":["stun:a.example:3478"]}]"#
        );

        std::fs::write(&path, "max_room_peer = 3\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    }

    #[test]
    fn turn_users_from_flags_and_file() {
        let dir = std::env::temp_dir().join(format!("sb-users-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users");
        std::fs::write(&path, "# comment\n\nbob:b0b\n  carol:c:with:colons  \n").unwrap();
        let t = ServeArgs {
            turn_user: vec!["alice:pw".into()],
            turn_users_file: Some(path.clone()),
            relay_ports: Some("40000-40100".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .turn
        .unwrap();
        let users: Vec<(&str, &str)> = t
            .users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            users,
            [("alice", "pw"), ("bob", "b0b"), ("carol", "c:with:colons")]
        );
        assert_eq!(t.relay_ports, (40000, 40100));
        std::fs::write(&path, "nocolon\n").unwrap();
        let e = ServeArgs {
            turn_users_file: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains(":1"), "names the line: {e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let e = ServeArgs {
            ice_server: vec!["http://x".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("--ice-server"));
        let e = ServeArgs {
            max_room_peers: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("--max-room-peers"));
        let e = ServeArgs {
            idle_timeout: Some(-1.0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.to_string().contains("--idle-timeout"));
        for (args, flag) in [
            (
                ServeArgs {
                    relay_ports: Some("9-3".into()),
                    ..Default::default()
                },
                "--relay-ports",
            ),
            (
                ServeArgs {
                    turn_user: vec!["nopass".into()],
                    ..Default::default()
                },
                "--turn-user",
            ),
            (
                ServeArgs {
                    allow_peer: vec!["10.0.0.0/99".into()],
                    ..Default::default()
                },
                "--allow-peer",
            ),
        ] {
            let e = args.resolve().unwrap_err();
            assert!(e.to_string().contains(flag), "{e}");
        }
        assert!(ServeArgs {
            no_turn: true,
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .turn
        .is_none());
    }
}
