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
use signal::HubConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    #[arg(long = "ice-server", env = "SWITCHBOARD_ICE_SERVER", value_name = "URL", value_delimiter = ',')]
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
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub ice_servers: Vec<String>,
    pub hub: HubConfig,
    pub send_queue: usize,
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
            max_room_peers: self.max_room_peers.or(file.max_room_peers).unwrap_or(d.max_room_peers),
            max_message_bytes: self
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(d.max_message_bytes),
            max_message_rate: self
                .max_message_rate
                .or(file.max_message_rate)
                .unwrap_or(d.max_message_rate),
            message_burst: self.message_burst.or(file.message_burst).unwrap_or(d.message_burst),
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
            ice_servers: ice_json,
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
        Ok(ServeConfig {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "0.0.0.0:8080".parse().expect("valid address")),
            log_format: self.log_format.or(file.log_format).unwrap_or(LogFormat::Pretty),
            ice_servers,
            hub,
            send_queue,
        })
    }
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
        assert_eq!(c.hub.ice_servers.get(), "[]");
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
        assert_eq!(c.hub.ice_servers.get(), r#"[{"urls":["stun:a.example:3478"]}]"#);

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
    }
}
