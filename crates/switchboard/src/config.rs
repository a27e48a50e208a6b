//! Settings of `switchboard serve`, from flags, `SWITCHBOARD_*` environment
//! variables and an optional TOML file.
//!
//! [`Settings`] is the one list of them: clap reads it from flags and the
//! environment, serde from the file, and its `Default`, built from the cores'
//! own defaults, fills the rest and is what `--help` shows.
//!
//! Precedence, highest first: command-line flag, environment variable, TOML
//! file, built-in default. Every flag has a TOML key of the same name with `_`
//! for `-` (`--max-room-peers` → `max_room_peers`); an unknown key is an
//! error that names it. [`ServeArgs::resolve`] merges the layers and checks
//! the result into a [`ServeConfig`].

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use signal::{HubConfig, RoomAuth, StaticIceServers, Tokens};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use turn::policy::Cidr;
use turn::server::Quota;

/// How `serve` writes its log lines to stderr (`--log-format`); `RUST_LOG`
/// sets the level either way.
///
/// clap would turn a variant's doc comment into `serve --help` text; the
/// `help = None` keeps `--help` listing the bare value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `pretty`: human-readable lines, for a terminal.
    #[default]
    #[value(help = None::<&str>)]
    Pretty,
    /// `json`: one JSON object per line, for a log collector.
    #[value(help = None::<&str>)]
    Json,
}

/// Every setting of `serve` except `--config`. The field names are the TOML
/// keys. Defaults are not written here but in the `Default` impl below, which
/// serde uses for keys the file leaves out and `--help` shows.
///
/// Values that need more than a type check (`--relay-ports`, `--turn-user`,
/// `--allow-peer`, ranges) stay plain here and are checked in
/// [`ServeArgs::resolve`], so a bad value names its flag wherever it came from.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address for HTTP and WebSocket
    #[arg(long, env = "SWITCHBOARD_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// PEM certificate chain (leaf first): serve HTTPS and WSS on --listen.
    /// Reloaded on SIGHUP and when the file changes
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Obtain and renew a certificate for this domain by ACME (TLS-ALPN-01
    /// on --listen, which must be reachable on port 443 of DOMAIN);
    /// repeatable for more names on one certificate
    #[arg(
        long = "acme",
        env = "SWITCHBOARD_ACME",
        value_name = "DOMAIN",
        value_delimiter = ','
    )]
    pub acme: Vec<String>,

    /// Contact address given to the ACME CA (for expiry notices)
    #[arg(long, env = "SWITCHBOARD_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,

    /// ACME directory URL
    #[arg(long, env = "SWITCHBOARD_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: String,

    /// Directory that keeps the ACME account and certificate across
    /// restarts (strongly advised: without it every start orders a new
    /// certificate)
    #[arg(long, env = "SWITCHBOARD_ACME_CACHE", value_name = "DIR")]
    pub acme_cache: Option<PathBuf>,

    /// PEM CA certificates to trust for the ACME directory instead of the
    /// built-in web roots (a private or test CA such as pebble's)
    #[arg(long, env = "SWITCHBOARD_ACME_CA_FILE", value_name = "FILE")]
    pub acme_ca_file: Option<PathBuf>,

    /// Also serve plain HTTP here, redirecting every request to https on
    /// --listen (needs --tls-cert)
    #[arg(long, env = "SWITCHBOARD_HTTP_REDIRECT", value_name = "ADDR")]
    pub http_redirect: Option<SocketAddr>,

    /// Seconds a TLS handshake (HTTPS, TURN over TLS) may take before the
    /// connection is closed
    #[arg(long, env = "SWITCHBOARD_TLS_HANDSHAKE_TIMEOUT", value_name = "SECS")]
    pub tls_handshake_timeout: f64,

    /// Seconds a client has to send a request's headers, from its
    /// connection (or its previous response) on; closes idle keep-alive
    /// connections too
    #[arg(long, env = "SWITCHBOARD_HEADER_READ_TIMEOUT", value_name = "SECS")]
    pub header_read_timeout: f64,

    /// Largest request head (request line and headers) read, in bytes;
    /// larger gets 431. At least 8192
    #[arg(long, env = "SWITCHBOARD_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: usize,

    /// Concurrent connections to --listen from one source address (an IPv6
    /// /64 counts as one), WebSockets included; 0 = no cap
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: usize,

    /// Log line format
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: LogFormat,

    /// ICE server URL handed to clients in `welcome` (stun:, stuns:, turn:,
    /// turns:). Repeatable; comma-separated in the environment.
    #[arg(
        long = "ice-server",
        env = "SWITCHBOARD_ICE_SERVER",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub ice_server: Vec<String>,

    /// Peers per room
    #[arg(long, env = "SWITCHBOARD_MAX_ROOM_PEERS", value_name = "N")]
    pub max_room_peers: usize,

    /// Largest accepted WebSocket message in bytes
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: usize,

    /// Sustained messages per second per connection
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_RATE", value_name = "PER_SEC")]
    pub max_message_rate: f64,

    /// Messages a connection may send at once before the rate applies
    #[arg(long, env = "SWITCHBOARD_MESSAGE_BURST", value_name = "N")]
    pub message_burst: u32,

    /// Rate-dropped messages in a row before the connection is closed
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT_STRIKES", value_name = "N")]
    pub rate_limit_strikes: u32,

    /// Seconds of silence before a connection is dropped
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: f64,

    /// Seconds a WebSocket may stay open without being in a room (from its
    /// start or its leave; pings do not count)
    #[arg(long, env = "SWITCHBOARD_JOIN_TIMEOUT", value_name = "SECS")]
    pub join_timeout: f64,

    /// Open WebSocket connections at most
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: usize,

    /// Messages queued for one slow client before it is dropped
    #[arg(long, env = "SWITCHBOARD_SEND_QUEUE", value_name = "N")]
    pub send_queue: usize,

    /// Seconds a dropped session is kept for a resume
    #[arg(long, env = "SWITCHBOARD_RESUME_WINDOW", value_name = "SECS")]
    pub resume_window: f64,

    /// Unacked messages kept per session for a resume
    #[arg(long, env = "SWITCHBOARD_RESUME_BUFFER", value_name = "N")]
    pub resume_buffer: usize,

    /// Secret that signs session tokens; nodes of a cluster need the same
    /// one (with --redis and no secret, they share one kept in Redis)
    /// [default: random per start]
    #[arg(long, env = "SWITCHBOARD_SESSION_SECRET", value_name = "SECRET")]
    pub session_secret: Option<String>,

    /// Require a room access token (HS256 JWT signed with this secret) on
    /// every join, and a Bearer token on /v1/ice-servers
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET", value_name = "SECRET")]
    pub auth_secret: Option<String>,

    /// Like --auth-secret, read from a file (trailing newline ignored)
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET_FILE", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,

    /// Seconds of clock difference forgiven on a token's exp and nbf
    #[arg(long, env = "SWITCHBOARD_AUTH_LEEWAY", value_name = "SECS")]
    pub auth_leeway: u64,

    /// Longest access token accepted, in bytes
    #[arg(long, env = "SWITCHBOARD_MAX_TOKEN_BYTES", value_name = "BYTES")]
    pub max_token_bytes: usize,

    /// Share rooms and sessions with other nodes through this Redis
    /// (redis://HOST:PORT/DB); without it everything stays in this process
    #[arg(long, env = "SWITCHBOARD_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// Run without the built-in STUN/TURN server.
    #[arg(long, env = "SWITCHBOARD_NO_TURN")]
    pub no_turn: bool,

    /// STUN/TURN address, UDP and TCP
    #[arg(long, env = "SWITCHBOARD_TURN_LISTEN", value_name = "ADDR")]
    pub turn_listen: SocketAddr,

    /// Relay address to advertise [default: the --turn-listen IP if it is
    /// specific, else the primary interface's address]
    #[arg(long, env = "SWITCHBOARD_EXTERNAL_IP", value_name = "IP")]
    pub external_ip: Option<IpAddr>,

    /// A second STUN address (UDP, Binding only), named in OTHER-ADDRESS of
    /// every Binding response so clients (`switchboard doctor`) can tell
    /// how their NAT maps; best on a second IP
    #[arg(long, env = "SWITCHBOARD_STUN_ALT_LISTEN", value_name = "ADDR")]
    pub stun_alt_listen: Option<SocketAddr>,

    /// Relay ports, LO-HI
    #[arg(long, env = "SWITCHBOARD_RELAY_PORTS", value_name = "LO-HI")]
    pub relay_ports: String,

    /// TURN realm
    #[arg(long, env = "SWITCHBOARD_REALM", value_name = "REALM")]
    pub realm: String,

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
    /// [default: random per start]
    #[arg(long, env = "SWITCHBOARD_TURN_SECRET", value_name = "SECRET")]
    pub turn_secret: Option<String>,

    /// Lifetime of the TURN credentials handed to clients, seconds
    #[arg(long, env = "SWITCHBOARD_TURN_TTL", value_name = "SECS")]
    pub turn_ttl: u64,

    /// Peer range the relay may send to although it is private or reserved
    /// (CIDR). Repeatable; comma-separated in the environment.
    #[arg(
        long = "allow-peer",
        env = "SWITCHBOARD_ALLOW_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub allow_peer: Vec<String>,

    /// Allocations on the whole server
    #[arg(long, env = "SWITCHBOARD_MAX_ALLOCATIONS", value_name = "N")]
    pub max_allocations: usize,

    /// Allocations per TURN username
    #[arg(long, env = "SWITCHBOARD_MAX_ALLOCATIONS_PER_USER", value_name = "N")]
    pub max_allocations_per_user: usize,

    /// Relayed bytes per second per allocation and direction, 0 for no limit
    #[arg(
        long,
        env = "SWITCHBOARD_RELAY_BANDWIDTH",
        value_name = "BYTES_PER_SEC"
    )]
    pub relay_bandwidth: u32,

    /// Relayed bytes per second through the whole server, each direction,
    /// 0 for no limit; split evenly among the TURN workers
    #[arg(
        long,
        env = "SWITCHBOARD_RELAY_BANDWIDTH_TOTAL",
        value_name = "BYTES_PER_SEC"
    )]
    pub relay_bandwidth_total: u32,

    /// Unauthenticated STUN/TURN requests per second per source IP
    #[arg(long, env = "SWITCHBOARD_TURN_UNAUTH_RATE", value_name = "PER_SEC")]
    pub turn_unauth_rate: f64,

    /// TURN worker threads [default: CPU count]
    #[arg(long, env = "SWITCHBOARD_TURN_WORKERS", value_name = "N")]
    pub turn_workers: Option<usize>,

    /// Seconds a TURN connection over TCP or TLS may stay open without an
    /// allocation (from its accept, or from the end of its allocation)
    #[arg(
        long,
        env = "SWITCHBOARD_TURN_TCP_ALLOCATE_TIMEOUT",
        value_name = "SECS"
    )]
    pub turn_tcp_allocate_timeout: f64,

    /// Seconds without a byte from the client before a TURN connection over
    /// TCP or TLS that has an allocation is closed
    #[arg(long, env = "SWITCHBOARD_TURN_TCP_IDLE_TIMEOUT", value_name = "SECS")]
    pub turn_tcp_idle_timeout: f64,

    /// Concurrent TURN connections over TCP and TLS per source IP (IPv6:
    /// per /64), 0 for no cap
    #[arg(long, env = "SWITCHBOARD_MAX_TURN_TCP_PER_IP", value_name = "N")]
    pub max_turn_tcp_per_ip: usize,

    /// TURN over TLS address, with the HTTPS certificate [default:
    /// 0.0.0.0:5349 when --tls-cert or --acme is given]
    #[arg(long, env = "SWITCHBOARD_TURN_TLS_LISTEN", value_name = "ADDR")]
    pub turn_tls_listen: Option<SocketAddr>,

    /// Host name clients reach this server by, the name on the certificate:
    /// the HOST of the turns: URLs handed out [default: the first --acme
    /// domain, else the --external-ip]
    #[arg(long, env = "SWITCHBOARD_PUBLIC_HOST", value_name = "HOST")]
    pub public_host: Option<String>,
}

impl Default for Settings {
    /// The cores' defaults where a core owns the setting; the rest belong to
    /// this binary alone.
    fn default() -> Self {
        let hub = HubConfig::default();
        let turn = turn::server::Config::default();
        let tcp = turn::tcp::TcpLimits::default();
        Settings {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls_cert: None,
            tls_key: None,
            http_redirect: None,
            acme: Vec::new(),
            acme_email: None,
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".to_string(),
            acme_cache: None,
            acme_ca_file: None,
            tls_handshake_timeout: 10.0,
            header_read_timeout: 10.0,
            // Room for an office behind one NAT address (a WebSocket and a
            // few page loads per person), far below the ~20,000 descriptors
            // one process may hold.
            max_connections_per_ip: 256,
            // Pages, the SDK and an upgrade need a few hundred bytes;
            // cookies of the site around it may add some KiB.
            max_header_bytes: 32 * 1024,
            log_format: LogFormat::default(),
            ice_server: Vec::new(),
            max_room_peers: hub.max_room_peers,
            max_message_bytes: hub.max_message_bytes,
            max_message_rate: hub.max_message_rate,
            message_burst: hub.message_burst,
            rate_limit_strikes: hub.rate_limit_strikes,
            idle_timeout: hub.idle_timeout.as_secs_f64(),
            join_timeout: hub.join_timeout.as_secs_f64(),
            max_connections: hub.max_connections,
            // The serve driver's own queue; no core has a say in it.
            send_queue: 1024,
            resume_window: hub.resume_window.as_secs_f64(),
            resume_buffer: hub.resume_buffer,
            session_secret: None,
            auth_secret: None,
            auth_secret_file: None,
            auth_leeway: signal::auth::DEFAULT_LEEWAY,
            max_token_bytes: signal::auth::DEFAULT_MAX_TOKEN_BYTES,
            redis: None,
            no_turn: false,
            turn_listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            external_ip: None,
            stun_alt_listen: None,
            // The dynamic range RFC 8656 recommends for relayed addresses.
            relay_ports: "49152-65535".to_string(),
            realm: "switchboard".to_string(),
            turn_user: Vec::new(),
            turn_users_file: None,
            turn_secret: None,
            turn_ttl: 86_400,
            allow_peer: Vec::new(),
            max_allocations: Quota::DEFAULT_MAX_TOTAL,
            max_allocations_per_user: Quota::DEFAULT_MAX_PER_USER,
            relay_bandwidth: turn.bandwidth,
            relay_bandwidth_total: turn.total_bandwidth,
            turn_unauth_rate: turn.unauth_rate,
            turn_workers: None,
            turn_tcp_allocate_timeout: tcp.allocate_timeout.as_secs_f64(),
            turn_tcp_idle_timeout: tcp.idle_timeout.as_secs_f64(),
            max_turn_tcp_per_ip: DEFAULT_MAX_TURN_TCP_PER_IP,
            turn_tls_listen: None,
            public_host: None,
        }
    }
}

/// `--max-turn-tcp-per-ip`: enough for an office of callers behind one
/// NAT address, far below the 20,000-odd descriptors of one process.
pub const DEFAULT_MAX_TURN_TCP_PER_IP: usize = 256;

/// `--config`, kept out of [`Settings`] because a file cannot name a file.
#[derive(Debug, Args)]
struct ConfigFile {
    /// TOML file with any of the settings below (keys use `_` for `-`).
    #[arg(long, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The command line of `serve`: the config file, and the settings given as
/// flags or environment variables.
#[derive(Debug, Clone)]
pub struct ServeArgs {
    config: Option<PathBuf>,
    /// Only values from a flag or the environment: the defaults clap filled
    /// in are dropped, so the file still gets its say on those settings.
    given: ArgMatches,
}

impl Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        show_defaults(Settings::augment_args(ConfigFile::augment_args(cmd)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let config = ConfigFile::from_arg_matches(matches)?.config;
        let mut given = matches.clone();
        let defaulted: Vec<String> = given
            .ids()
            .filter(|id| given.value_source(id.as_str()) == Some(ValueSource::DefaultValue))
            .map(|id| id.to_string())
            .collect();
        for id in defaulted {
            let _ = given.try_clear_id(&id);
        }
        Ok(ServeArgs { config, given })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Gives every setting with a default in [`Settings::default`] that default
/// in clap, so `--help` shows it and the flag is optional. Flags (off), empty
/// lists and unset options show none.
fn show_defaults(cmd: Command) -> Command {
    let defaults = serde_json::to_value(Settings::default()).expect("settings serialize");
    cmd.mut_args(|arg| {
        let shown = match defaults.get(arg.get_id().as_str()) {
            Some(serde_json::Value::String(s)) => s.clone(),
            // f64's Display prints 50.0 as "50", as the flag would be typed.
            Some(serde_json::Value::Number(n)) => match n.as_f64() {
                Some(f) if n.is_f64() => f.to_string(),
                _ => n.to_string(),
            },
            _ => return arg,
        };
        arg.default_value(shown).required(false)
    })
}

impl ServeArgs {
    /// Parses `serve`'s arguments (without the program and subcommand names)
    /// as the binary does, environment included.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let cmd = Self::augment_args(Command::new("serve"));
        let argv = std::iter::once(OsString::from("serve")).chain(args.into_iter().map(Into::into));
        Self::from_arg_matches(&cmd.try_get_matches_from(argv)?)
    }

    /// Reads the TOML file, if any, lays the flags and environment over it,
    /// and checks the result.
    pub fn resolve(self) -> Result<ServeConfig> {
        let mut settings = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<Settings>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        settings.update_from_arg_matches(&self.given)?;
        settings.check()
    }
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the binary binds; [`crate::serve::start`] takes a bound listener.
    pub listen: SocketAddr,
    /// `--tls-cert` and `--tls-key`: serve HTTPS and WSS.
    pub tls: Option<TlsFiles>,
    /// `--acme`: certificates by ACME instead of files.
    pub acme: Option<AcmeSettings>,
    /// `--http-redirect`: a plain-HTTP listener that redirects to https.
    pub http_redirect: Option<SocketAddr>,
    /// Deadlines and the per-source cap of the HTTP listener.
    pub limits: crate::listen::Limits,
    /// How log lines look (`--log-format`).
    pub log_format: LogFormat,
    /// The `--ice-server` URLs, checked to start with `stun:`, `stuns:`,
    /// `turn:` or `turns:`. Every `iceServers` list starts with them.
    pub ice_servers: Vec<String>,
    /// Signaling limits. Its `ice_servers` hands out [`Self::ice_servers`]
    /// alone; [`crate::serve::start`] replaces it with a source that adds
    /// this server's STUN/TURN URLs and fresh credentials when TURN is on.
    pub hub: HubConfig,
    /// Server-to-client messages queued for one connection before `serve`
    /// closes it with 1008 `send queue full` (`--send-queue`, at least 1).
    pub send_queue: usize,
    /// `--session-secret`, when given.
    pub session_secret: Option<String>,
    /// `--redis`: the cluster store's URL; `None` keeps everything in this
    /// process.
    pub redis: Option<String>,
    /// `None` when started with `--no-turn`.
    pub turn: Option<TurnConfig>,
}

/// The certificate files of `--tls-cert` / `--tls-key`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `--acme` and its companions.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// Names on the certificate, at least one.
    pub domains: Vec<String>,
    /// `--acme-email`.
    pub email: Option<String>,
    /// `--acme-directory`.
    pub directory: String,
    /// `--acme-cache`.
    pub cache: Option<PathBuf>,
    /// `--acme-ca-file`.
    pub ca_file: Option<PathBuf>,
}

/// Resolved settings of the STUN/TURN server.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Where STUN/TURN listens, on UDP and TCP alike (`--turn-listen`).
    pub listen: SocketAddr,
    /// The address put into relayed addresses and into the `stun:`/`turn:`
    /// URLs clients get (`--external-ip`). `None`: the `listen` IP if it is
    /// specific, else the primary interface's address (else 127.0.0.1, with
    /// a warning).
    pub external_ip: Option<IpAddr>,
    /// Relay port range, inclusive, with `1 <= lo <= hi` (`--relay-ports`).
    pub relay_ports: (u16, u16),
    /// The second STUN address (`--stun-alt-listen`), UDP only, answering
    /// Binding requests; named in OTHER-ADDRESS (RFC 5780) of the TURN
    /// port's Binding responses, with `external_ip` when its IP is
    /// unspecified.
    pub stun_alt_listen: Option<SocketAddr>,
    /// The TURN realm of the long-term credential mechanism (`--realm`).
    pub realm: String,
    /// Static users as (name, password): every `--turn-user`, then the lines
    /// of `--turn-users-file`.
    pub users: Vec<(String, String)>,
    /// Secret for time-limited credentials; `None` means "make one".
    pub secret: Option<String>,
    /// Lifetime of the credentials handed out in `iceServers`, in seconds
    /// (`--turn-ttl`; 0 is raised to 1).
    pub ttl: u64,
    /// Private or reserved peer ranges the relay may send to anyway
    /// (`--allow-peer`).
    pub allow_peer: Vec<Cidr>,
    /// Allocations on the whole server (`--max-allocations`).
    pub max_allocations: usize,
    /// Allocations per TURN username (`--max-allocations-per-user`).
    pub max_allocations_per_user: usize,
    /// The sans-IO server's settings (bandwidth, unauthenticated rate).
    pub core: turn::server::Config,
    /// TURN worker threads, at least 1 (`--turn-workers`, else the CPU
    /// count).
    pub workers: usize,
    /// Deadlines of TURN over TCP and TLS (`--turn-tcp-allocate-timeout`,
    /// `--turn-tcp-idle-timeout`).
    pub tcp_limits: turn::tcp::TcpLimits,
    /// Concurrent TCP and TLS connections per source, 0 = no cap
    /// (`--max-turn-tcp-per-ip`).
    pub max_tcp_per_ip: usize,
    /// TURN over TLS (`--turn-tls-listen`; 0.0.0.0:5349 when a certificate
    /// is configured, else off).
    pub tls_listen: Option<SocketAddr>,
    /// The HOST of the `turns:` URLs (`--public-host`; `None`: the
    /// external IP).
    pub public_host: Option<String>,
}

impl Settings {
    /// Checks every value and builds what the drivers take.
    fn check(self) -> Result<ServeConfig> {
        let ice_json = ice_servers_json(&self.ice_server)?;
        let hub = HubConfig {
            max_room_peers: self.max_room_peers,
            max_message_bytes: self.max_message_bytes,
            max_message_rate: self.max_message_rate,
            message_burst: self.message_burst,
            rate_limit_strikes: self.rate_limit_strikes,
            idle_timeout: secs(self.idle_timeout, "idle-timeout")?,
            join_timeout: secs(self.join_timeout, "join-timeout")?,
            max_connections: self.max_connections,
            ice_servers: Arc::new(StaticIceServers(ice_json)),
            resume_window: secs(self.resume_window, "resume-window")?,
            resume_buffer: self.resume_buffer,
            tokens: match &self.session_secret {
                Some(s) => Tokens::new(s.as_bytes().to_vec()),
                None => HubConfig::default().tokens,
            },
            auth: self.room_auth()?,
            node: HubConfig::default().node,
        };
        if hub.resume_window < Duration::from_secs(1) {
            bail!("--resume-window must be at least 1 second");
        }
        if hub.resume_buffer == 0 {
            bail!("--resume-buffer must be at least 1");
        }
        if self.session_secret.as_deref().is_some_and(|s| s.len() < 16) {
            bail!("--session-secret must be at least 16 characters");
        }
        if let Some(url) = &self.redis {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://"))
            {
                bail!("--redis {url:?} must be a redis://HOST:PORT URL");
            }
        }
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
        if self.send_queue == 0 {
            bail!("--send-queue must be at least 1");
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let acme = if self.acme.is_empty() {
            None
        } else {
            if tls.is_some() {
                bail!("give --acme or --tls-cert/--tls-key, not both");
            }
            for d in &self.acme {
                let ok = !d.is_empty()
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                if !ok {
                    bail!("--acme {d:?} must be a DNS name");
                }
            }
            if !self.acme_directory.starts_with("https://") {
                bail!(
                    "--acme-directory {:?} must be an https:// URL",
                    self.acme_directory
                );
            }
            Some(AcmeSettings {
                domains: self.acme.clone(),
                email: self.acme_email.clone(),
                directory: self.acme_directory.clone(),
                cache: self.acme_cache.clone(),
                ca_file: self.acme_ca_file.clone(),
            })
        };
        if self.http_redirect.is_some() && tls.is_none() && acme.is_none() {
            bail!(
                "--http-redirect needs --tls-cert and --tls-key or --acme (it redirects to https)"
            );
        }
        let limits = crate::listen::Limits {
            handshake_timeout: secs(self.tls_handshake_timeout, "tls-handshake-timeout")?,
            header_timeout: secs(self.header_read_timeout, "header-read-timeout")?,
            max_per_ip: self.max_connections_per_ip,
            max_header_bytes: self.max_header_bytes,
        };
        if limits.max_header_bytes < 8192 {
            bail!("--max-header-bytes must be at least 8192");
        }
        let turn = if self.no_turn {
            None
        } else {
            // ACME's certificate is for its first domain, so that is the
            // name `turns:` URLs carry unless --public-host says otherwise.
            let acme_name = acme.as_ref().map(|a| a.domains[0].as_str());
            Some(self.check_turn(tls.is_some() || acme.is_some(), acme_name)?)
        };
        Ok(ServeConfig {
            listen: self.listen,
            tls,
            acme,
            http_redirect: self.http_redirect,
            limits,
            log_format: self.log_format,
            ice_servers: self.ice_server,
            hub,
            send_queue: self.send_queue,
            session_secret: self.session_secret,
            redis: self.redis,
            turn,
        })
    }

    /// `--auth-secret` or `--auth-secret-file` as the hub's token check.
    fn room_auth(&self) -> Result<Option<RoomAuth>> {
        let secret = match (&self.auth_secret, &self.auth_secret_file) {
            (Some(_), Some(_)) => {
                bail!("give --auth-secret or --auth-secret-file, not both")
            }
            (Some(s), None) => s.clone(),
            (None, Some(path)) => read_secret_file(path, "--auth-secret-file")?,
            (None, None) => return Ok(None),
        };
        check_auth_secret(&secret)?;
        if self.max_token_bytes < 64 {
            bail!("--max-token-bytes must be at least 64");
        }
        let mut auth = RoomAuth::new(secret.as_bytes());
        auth.leeway = self.auth_leeway;
        auth.max_token_bytes = self.max_token_bytes;
        Ok(Some(auth))
    }

    fn check_turn(&self, has_cert: bool, cert_name: Option<&str>) -> Result<TurnConfig> {
        let s = &self.relay_ports;
        let parsed = s.split_once('-').and_then(|(lo, hi)| {
            Some((
                lo.trim().parse::<u16>().ok()?,
                hi.trim().parse::<u16>().ok()?,
            ))
        });
        let relay_ports = match parsed {
            Some((lo, hi)) if lo > 0 && lo <= hi => (lo, hi),
            _ => bail!("--relay-ports {s:?} must be LO-HI with 1 <= LO <= HI <= 65535"),
        };
        let mut users = Vec::new();
        for u in &self.turn_user {
            users.push(user_pair(u, "--turn-user")?);
        }
        if let Some(path) = &self.turn_users_file {
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
        for c in &self.allow_peer {
            allow_peer.push(
                c.parse::<Cidr>()
                    .map_err(|e| anyhow::anyhow!("--allow-peer: {e}"))?,
            );
        }
        let unauth_rate = self.turn_unauth_rate;
        if !(unauth_rate.is_finite() && unauth_rate > 0.0) {
            bail!("--turn-unauth-rate must be a positive number");
        }
        let workers = self.turn_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        if workers == 0 {
            bail!("--turn-workers must be at least 1");
        }
        if self.turn_secret.as_deref() == Some("") {
            bail!("--turn-secret must not be empty");
        }
        Ok(TurnConfig {
            listen: self.turn_listen,
            external_ip: self.external_ip,
            relay_ports,
            stun_alt_listen: self.stun_alt_listen,
            realm: self.realm.clone(),
            users,
            secret: self.turn_secret.clone(),
            ttl: self.turn_ttl.max(1),
            allow_peer,
            max_allocations: self.max_allocations,
            max_allocations_per_user: self.max_allocations_per_user,
            core: turn::server::Config {
                bandwidth: self.relay_bandwidth,
                // Each worker holds its allocations' traffic alone, so
                // each gets its share; rounded up, never to 0 (no limit).
                total_bandwidth: self
                    .relay_bandwidth_total
                    .div_ceil(u32::try_from(workers).unwrap_or(u32::MAX)),
                unauth_rate,
                // Two seconds of requests, as in the core's own defaults.
                unauth_burst: (unauth_rate * 2.0).ceil() as u32,
                ..turn::server::Config::default()
            },
            workers,
            tcp_limits: turn::tcp::TcpLimits {
                allocate_timeout: secs(
                    self.turn_tcp_allocate_timeout,
                    "turn-tcp-allocate-timeout",
                )?,
                idle_timeout: secs(self.turn_tcp_idle_timeout, "turn-tcp-idle-timeout")?,
            },
            max_tcp_per_ip: self.max_turn_tcp_per_ip,
            tls_listen: match (self.turn_tls_listen, has_cert) {
                (Some(a), true) => Some(a),
                (None, true) => Some(SocketAddr::from(([0, 0, 0, 0], 5349))),
                (Some(_), false) => {
                    bail!("--turn-tls-listen needs a certificate: --tls-cert and --tls-key, or --acme")
                }
                (None, false) => None,
            },
            public_host: match &self.public_host {
                Some(h) if h.is_empty() || h.contains(['/', '?', ' ']) => {
                    bail!("--public-host {h:?} must be a bare host name or IP address")
                }
                Some(h) => Some(h.clone()),
                None => cert_name.map(str::to_string),
            },
        })
    }
}

/// Reads a secret kept in a file: the whole file less trailing whitespace
/// (the newline an editor or `echo` leaves).
pub fn read_secret_file(path: &std::path::Path, flag: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {flag} {}", path.display()))?;
    Ok(text.trim_end().to_string())
}

/// The rule for access-token secrets, shared by `serve` and `token`.
pub fn check_auth_secret(secret: &str) -> Result<()> {
    // HS256 is only as strong as its key; 16 bytes is the floor, 32 random
    // ones (`openssl rand -hex 32`) the advice.
    if secret.len() < 16 {
        bail!("the access-token secret must be at least 16 characters");
    }
    Ok(())
}

fn user_pair(s: &str, origin: &str) -> Result<(String, String)> {
    match s.split_once(':') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.to_string())),
        _ => bail!("{origin}: {s:?} is not NAME:PASSWORD"),
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

    /// `switchboard serve ARGS`, resolved as the binary does it.
    fn resolve(args: &[&str]) -> Result<ServeConfig> {
        ServeArgs::try_parse_from(args)?.resolve()
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults() {
        let c = resolve(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.hub.max_room_peers, 8);
        assert_eq!(c.hub.max_message_bytes, 65536);
        assert_eq!(c.hub.ice_servers.for_peer("r", "p").get(), "[]");
        assert_eq!(c.send_queue, 1024);
        let t = c.turn.unwrap();
        assert_eq!(t.listen.to_string(), "0.0.0.0:3478");
        assert_eq!(t.relay_ports, (49152, 65535));
        assert_eq!(t.ttl, 86_400);
        assert_eq!(t.core.bandwidth, 64 * 1024 * 1024);
        assert_eq!(t.core.total_bandwidth, 0, "no server-wide cap by default");
        assert_eq!((t.core.unauth_rate, t.core.unauth_burst), (20.0, 40));
        assert_eq!(
            (t.max_allocations, t.max_allocations_per_user),
            (10_000, 64)
        );
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn file_fills_gaps_and_flags_win() {
        let path = temp_file(
            "c.toml",
            "listen = \"127.0.0.1:9000\"\nmax_room_peers = 3\nidle_timeout = 2.5\nice_server = [\"stun:a.example:3478\"]\nlog_format = \"json\"\nno_turn = true\n",
        );
        let p = path.to_str().unwrap();
        let c = resolve(&["--config", p, "--max-room-peers", "5"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.hub.max_room_peers, 5);
        assert_eq!(c.hub.idle_timeout, Duration::from_millis(2500));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(
            c.hub.ice_servers.for_peer("r", "p").get(),
            r#"[{"urls":["stun:a.example:3478"]}]"#
        );
        assert!(c.turn.is_none());
        // A repeatable flag replaces the file's list rather than adding to it.
        let c = resolve(&["--config", p, "--ice-server", "turn:b.example"]).unwrap();
        assert_eq!(c.ice_servers, ["turn:b.example"]);

        std::fs::write(&path, "max_room_peer = 3\n").unwrap();
        let err = resolve(&["--config", p]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        assert!(format!("{err:#}").contains("`max_room_peer`"), "{err:#}");
        std::fs::write(&path, "config = \"other.toml\"\n").unwrap();
        let err = resolve(&["--config", p]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `config`"),
            "{err:#}"
        );
    }

    #[test]
    fn environment_sits_between_flags_and_file() {
        // Only this test reads the realm, so setting the variable cannot
        // disturb the others running beside it.
        let path = temp_file("realm.toml", "realm = \"from-file\"\n");
        let p = path.to_str().unwrap();
        let realm = |args: &[&str]| resolve(args).unwrap().turn.unwrap().realm;
        assert_eq!(realm(&["--config", p]), "from-file");
        std::env::set_var("SWITCHBOARD_REALM", "from-env");
        let (env, flag) = (
            realm(&["--config", p]),
            realm(&["--config", p, "--realm", "from-flag"]),
        );
        std::env::remove_var("SWITCHBOARD_REALM");
        assert_eq!(env, "from-env");
        assert_eq!(flag, "from-flag");
    }

    #[test]
    fn every_flag_is_a_toml_key() {
        let cmd = ServeArgs::augment_args(Command::new("serve"));
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let keys: Vec<&String> = defaults.as_object().unwrap().keys().collect();
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "config")
            .map(|l| l.replace('-', "_"))
            .collect();
        flags.sort();
        let mut keys: Vec<String> = keys.into_iter().cloned().collect();
        keys.sort();
        assert_eq!(flags, keys);
        // And the file takes all of them at once.
        let all = Settings {
            turn_secret: Some("s".into()),
            turn_workers: Some(2),
            relay_bandwidth_total: 1001,
            external_ip: Some(IpAddr::from([192, 0, 2, 1])),
            turn_users_file: Some(temp_file("none", "")),
            ..Settings::default()
        };
        let path = temp_file("all.toml", &toml::to_string(&all).unwrap());
        let c = resolve(&["--config", path.to_str().unwrap()]).unwrap();
        let t = c.turn.unwrap();
        assert_eq!(t.workers, 2);
        // The server-wide cap, shared out among the workers (rounded up).
        assert_eq!(t.core.total_bandwidth, 501);
    }

    #[test]
    fn turn_users_from_flags_and_file() {
        let path = temp_file("users", "# comment\n\nbob:b0b\n  carol:c:with:colons  \n");
        let p = path.to_str().unwrap();
        let t = resolve(&[
            "--turn-user",
            "alice:pw",
            "--turn-users-file",
            p,
            "--relay-ports",
            "40000-40100",
        ])
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
        let e = resolve(&["--turn-users-file", p]).unwrap_err();
        assert!(e.to_string().contains(":1"), "names the line: {e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_name() {
        let e = resolve(&["--ice-server", "http://x"]).unwrap_err();
        assert!(e.to_string().contains("--ice-server"));
        let e = resolve(&["--max-room-peers", "0"]).unwrap_err();
        assert!(e.to_string().contains("--max-room-peers"));
        let e = resolve(&["--idle-timeout=-1"]).unwrap_err();
        assert!(e.to_string().contains("--idle-timeout"));
        for (args, flag) in [
            (["--relay-ports", "9-3"], "--relay-ports"),
            (["--turn-user", "nopass"], "--turn-user"),
            (["--allow-peer", "10.0.0.0/99"], "--allow-peer"),
        ] {
            let e = resolve(&args).unwrap_err();
            assert!(e.to_string().contains(flag), "{e}");
        }
        // From the file too, the error names the flag.
        let path = temp_file("bad.toml", "relay_ports = \"9-3\"\n");
        let e = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("--relay-ports"), "{e}");
        assert!(resolve(&["--no-turn"]).unwrap().turn.is_none());
    }

    #[test]
    fn tls_and_acme_settings_are_checked() {
        let c = resolve(&[]).unwrap();
        assert!(c.tls.is_none() && c.acme.is_none());
        assert_eq!(c.limits.max_per_ip, 256);
        assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
        let c = resolve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(c.tls.unwrap().cert, PathBuf::from("c.pem"));
        for (args, want) in [
            (
                &["--tls-cert", "c.pem"][..],
                "--tls-cert and --tls-key go together",
            ),
            (
                &["--tls-key", "k.pem"][..],
                "--tls-cert and --tls-key go together",
            ),
            (
                &["--http-redirect", "127.0.0.1:80"][..],
                "--http-redirect needs",
            ),
            (
                &["--acme", "a.example", "--tls-cert", "c", "--tls-key", "k"][..],
                "not both",
            ),
            (&["--acme", "a b"][..], "must be a DNS name"),
            (
                &["--acme", "a.example", "--acme-directory", "http://x/dir"][..],
                "must be an https:// URL",
            ),
            (&["--header-read-timeout", "0"][..], "--header-read-timeout"),
            (&["--max-header-bytes", "100"][..], "at least 8192"),
        ] {
            let e = resolve(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let c = resolve(&[
            "--acme",
            "a.example,b.example",
            "--http-redirect",
            "127.0.0.1:80",
        ])
        .unwrap();
        assert_eq!(c.acme.unwrap().domains, ["a.example", "b.example"]);
    }

    #[test]
    fn auth_secret_from_flag_or_file() {
        assert!(resolve(&[]).unwrap().hub.auth.is_none());
        let a = resolve(&["--auth-secret", "0123456789abcdef0123"])
            .unwrap()
            .hub
            .auth
            .unwrap();
        assert_eq!(a.leeway, signal::auth::DEFAULT_LEEWAY);
        assert_eq!(a.max_token_bytes, signal::auth::DEFAULT_MAX_TOKEN_BYTES);
        // The file's trailing newline is not part of the secret: a token
        // minted with the bare secret passes.
        let path = temp_file("auth-secret", "0123456789abcdef0123\n");
        let a = resolve(&[
            "--auth-secret-file",
            path.to_str().unwrap(),
            "--auth-leeway",
            "0",
            "--max-token-bytes",
            "2000",
        ])
        .unwrap()
        .hub
        .auth
        .unwrap();
        assert_eq!((a.leeway, a.max_token_bytes), (0, 2000));
        let t = RoomAuth::new(b"0123456789abcdef0123").mint(&signal::RoomClaims {
            room: "r".into(),
            peer: None,
            exp: u64::MAX / 2,
            nbf: None,
            iat: None,
            turn: None,
        });
        assert!(a.check(Some(&t), "r", None, 1).is_ok());
        let e = resolve(&[
            "--auth-secret",
            "0123456789abcdef0123",
            "--auth-secret-file",
            path.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = resolve(&["--auth-secret", "short"]).unwrap_err();
        assert!(e.to_string().contains("16"), "{e}");
        let e = resolve(&["--auth-secret-file", "/nonexistent/secret"]).unwrap_err();
        assert!(e.to_string().contains("--auth-secret-file"), "{e}");
    }
}
