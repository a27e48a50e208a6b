//! Configuration of a [`crate::PeerConnection`]: ICE servers (parsed from
//! the `stun:`/`turn:` URLs browsers take, RFC 7064/7065), which host
//! candidates to offer, and the timeouts that decide `disconnected` and
//! `failed`.

use crate::redundancy::RedundancyConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// One `RTCIceServer` as the signaling server sends it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`/`turn:` URLs ([`IceUrl::parse`]); the JSON may give one
    /// string or an array, as browsers accept.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// TURN username; required by every `turn:` URL here, unused by `stun:`.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password (the long-term credential), paired with `username`.
    #[serde(default)]
    pub credential: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(d)? {
        Urls::One(s) => vec![s],
        Urls::Many(v) => v,
    })
}

/// Transport to a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    /// `?transport=udp`, the default: TURN over UDP.
    Udp,
    /// `?transport=tcp`: we reach the server over TCP; the relayed address
    /// it allocates toward peers is still UDP.
    Tcp,
    /// `turns:`: TURN over TLS over TCP, the certificate checked against
    /// the URL's host; the relayed address is still UDP.
    Tls,
}

/// A parsed ICE server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceUrl {
    /// `stun:host[:port]`: a STUN server for server-reflexive candidates.
    Stun {
        /// Host name or IP address, without brackets.
        host: String,
        /// UDP port; 3478 when the URL has none.
        port: u16,
    },
    /// `turn:host[:port][?transport=udp|tcp]` or
    /// `turns:host[:port][?transport=tcp]`: a TURN server for relay
    /// candidates.
    Turn {
        /// Host name or IP address, without brackets.
        host: String,
        /// Port; 3478 when the URL has none (`turns:`: 5349).
        port: u16,
        /// How we reach the server; UDP unless `?transport=tcp`.
        transport: TurnTransport,
    },
}

/// Why an ICE server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `stun:`, `turn:` or `turns:` (case-insensitive): no scheme,
    /// another one, or `stuns:`, which is not implemented.
    #[error(
        "ICE server URL {0:?}: scheme must be stun:, turn: or turns: (stuns: is not supported)"
    )]
    Scheme(String),
    /// Nothing between the scheme and the port.
    #[error("ICE server URL {0:?}: missing host")]
    Host(String),
    /// The port is not a number in 0..=65535, or a bracketed IPv6 host is
    /// followed by something other than `:port`.
    #[error("ICE server URL {0:?}: bad port")]
    Port(String),
    /// A `transport=` other than `udp` or `tcp` (`turns:`: other than
    /// `tcp`, as TURN over DTLS is not implemented).
    #[error("ICE server URL {0:?}: transport must be udp or tcp (turns: only tcp)")]
    Transport(String),
}

impl IceUrl {
    /// Parses `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`
    /// or `turns:host[:port][?transport=tcp]`.
    /// IPv6 hosts are bracketed: `stun:[2001:db8::1]:3478`.
    pub fn parse(url: &str) -> Result<IceUrl, UrlError> {
        let err_scheme = || UrlError::Scheme(url.to_string());
        let (scheme, rest) = url.split_once(':').ok_or_else(err_scheme)?;
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let (host, port) =
            split_host_port(hostport).ok_or_else(|| UrlError::Port(url.to_string()))?;
        if host.is_empty() {
            return Err(UrlError::Host(url.to_string()));
        }
        let scheme = scheme.to_ascii_lowercase();
        let port = port.unwrap_or(if scheme == "turns" { 5349 } else { 3478 });
        match scheme.as_str() {
            "stun" => Ok(IceUrl::Stun { host, port }),
            "turn" | "turns" => {
                let tls = scheme == "turns";
                let mut transport = if tls {
                    TurnTransport::Tls
                } else {
                    TurnTransport::Udp
                };
                if let Some(q) = query {
                    for kv in q.split('&') {
                        if let Some(v) = kv.strip_prefix("transport=") {
                            transport = match (v, tls) {
                                ("udp", false) => TurnTransport::Udp,
                                ("tcp", false) => TurnTransport::Tcp,
                                ("tcp", true) => TurnTransport::Tls,
                                _ => return Err(UrlError::Transport(url.to_string())),
                            };
                        }
                    }
                }
                Ok(IceUrl::Turn {
                    host,
                    port,
                    transport,
                })
            }
            _ => Err(err_scheme()),
        }
    }
}

fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((s.to_string(), None)),
    }
}

/// Which host candidates to offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCandidates {
    /// Every up, non-loopback interface address (IPv6 link-local excluded).
    Interfaces,
    /// Every interface address including loopback (tests on one machine).
    InterfacesAndLoopback,
    /// Exactly these addresses.
    Only(Vec<std::net::IpAddr>),
}

/// Everything a [`crate::PeerConnection`] is created with.
#[derive(Debug, Clone)]
pub struct Config {
    /// STUN/TURN servers to gather server-reflexive and relay candidates
    /// from, e.g. the `iceServers` of `welcome`. Resolved by
    /// [`crate::PeerConnection::new`]: a bad URL, a name that does not
    /// resolve, or a `turn:` URL without username and credential fails it.
    pub ice_servers: Vec<IceServer>,
    /// Gather and pair relay candidates only (`iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// Which local addresses become host candidates (ignored with
    /// `relay_only`).
    pub host_candidates: HostCandidates,
    /// Silence from the peer (no datagram at all; ICE consent checks flow
    /// at least every 3 s) before the connection is `disconnected`.
    pub disconnected_after: Duration,
    /// Time in `disconnected` before the connection is `failed`.
    pub failed_after: Duration,
    /// Time to wait for STUN/TURN answers before gathering is declared
    /// complete (end-of-candidates).
    pub gather_timeout: Duration,
    /// Bound on bytes queued in str0m's SCTP send buffer before `send`
    /// waits; also the largest message. Kept small on purpose: sctp-proto
    /// walks every queued chunk on each transmit, so 1 MiB ran at 7 MB/s
    /// on loopback, 128 KiB at 37 MB/s (docs/benchmarks.md).
    pub channel_buffer: usize,
    /// Fixed UDP port for the IPv4 socket (0 = any). Mostly for labs.
    pub udp_port: u16,
    /// Resolve Chromium's `.local` mDNS host candidates.
    pub resolve_mdns: bool,
    /// Wait before the first retransmit of an unanswered ICE connectivity
    /// check; it doubles with each retransmit up to 3 s. Behind two NATs
    /// that filter by address and port, the first check each way is
    /// dropped (the other NAT has no mapping yet), so this is how long a
    /// direct pair trails a relayed one, which succeeds at once. str0m's
    /// 250 ms let short transfers run entirely over TURN
    /// (docs/nat-matrix.md); browsers re-check unanswered pairs about every
    /// 50 ms.
    pub ice_check_rto: Duration,
    /// When to send each data-channel datagram twice: the loss recovery of
    /// str0m's SCTP waits at least 1 s for any loss fast retransmit misses,
    /// so a second copy is what keeps throughput on lossy links
    /// ([`crate::redundancy`]). `Auto` (default) switches it on when the
    /// peer's datagrams arrive with 1% loss or more.
    pub redundancy: RedundancyConfig,
    /// What `turns:` relays trust; `None`: the system's roots.
    pub tls: Option<crate::tls::TlsClient>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ice_servers: Vec::new(),
            relay_only: false,
            host_candidates: HostCandidates::Interfaces,
            disconnected_after: Duration::from_secs(6),
            failed_after: Duration::from_secs(5),
            gather_timeout: Duration::from_secs(5),
            channel_buffer: 512 << 10,
            udp_port: 0,
            resolve_mdns: true,
            ice_check_rto: Duration::from_millis(50),
            redundancy: RedundancyConfig::default(),
            tls: None,
        }
    }
}

/// An ICE server resolved to one socket address.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    Stun(SocketAddr),
    Turn {
        addr: SocketAddr,
        transport: TurnTransport,
        /// The URL's host, which a `turns:` server's certificate must carry.
        host: String,
        username: String,
        password: String,
    },
}

/// Parses and resolves every URL (DNS via the system resolver). A bad URL is
/// an error; a name that does not resolve is an error too, so typos surface
/// at once instead of as a silent missing candidate.
pub(crate) async fn resolve(servers: &[IceServer]) -> Result<Vec<Resolved>, crate::Error> {
    let mut out = Vec::new();
    for s in servers {
        for url in &s.urls {
            let parsed = IceUrl::parse(url)?;
            let (host, port) = match &parsed {
                IceUrl::Stun { host, port } | IceUrl::Turn { host, port, .. } => {
                    (host.clone(), *port)
                }
            };
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| crate::Error::Resolve(url.clone(), e.to_string()))?
                .collect();
            // One address per family is plenty: both would give the same candidates.
            let mut seen4 = false;
            let mut seen6 = false;
            for addr in addrs {
                let seen = if addr.is_ipv4() {
                    &mut seen4
                } else {
                    &mut seen6
                };
                if std::mem::replace(seen, true) {
                    continue;
                }
                match &parsed {
                    IceUrl::Stun { .. } => out.push(Resolved::Stun(addr)),
                    IceUrl::Turn {
                        transport, host, ..
                    } => {
                        let (Some(u), Some(p)) = (&s.username, &s.credential) else {
                            return Err(crate::Error::MissingCredential(url.clone()));
                        };
                        out.push(Resolved::Turn {
                            addr,
                            transport: *transport,
                            host: host.clone(),
                            username: u.clone(),
                            password: p.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            IceUrl::parse("stun:example.org").unwrap(),
            IceUrl::Stun {
                host: "example.org".into(),
                port: 3478
            }
        );
        assert_eq!(
            IceUrl::parse("turn:127.0.0.1:3479?transport=tcp").unwrap(),
            IceUrl::Turn {
                host: "127.0.0.1".into(),
                port: 3479,
                transport: TurnTransport::Tcp
            }
        );
        assert_eq!(
            IceUrl::parse("stun:[::1]:19302").unwrap(),
            IceUrl::Stun {
                host: "::1".into(),
                port: 19302
            }
        );
        assert_eq!(
            IceUrl::parse("turns:turn.example?transport=tcp").unwrap(),
            IceUrl::Turn {
                host: "turn.example".into(),
                port: 5349,
                transport: TurnTransport::Tls
            }
        );
        assert_eq!(
            IceUrl::parse("TURNS:[::1]:443").unwrap(),
            IceUrl::Turn {
                host: "::1".into(),
                port: 443,
                transport: TurnTransport::Tls
            }
        );
        assert!(matches!(
            IceUrl::parse("turns:x?transport=udp"),
            Err(UrlError::Transport(_))
        ));
        assert!(matches!(
            IceUrl::parse("stuns:x:5349"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            IceUrl::parse("http://x"),
            Err(UrlError::Scheme(_)) | Err(UrlError::Port(_))
        ));
        assert!(matches!(
            IceUrl::parse("stun:x:99999"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            IceUrl::parse("stun::3478"),
            Err(UrlError::Host(_))
        ));
        assert!(matches!(
            IceUrl::parse("turn:x?transport=sctp"),
            Err(UrlError::Transport(_))
        ));
        assert!(matches!(
            IceUrl::parse("nonsense"),
            Err(UrlError::Scheme(_))
        ));
    }

    #[test]
    fn ice_server_json_like_browsers() {
        let s: IceServer = serde_json::from_str(r#"{"urls":"stun:a:1"}"#).unwrap();
        assert_eq!(s.urls, vec!["stun:a:1"]);
        let s: IceServer = serde_json::from_str(
            r#"{"urls":["turn:a:1?transport=udp"],"username":"u","credential":"p"}"#,
        )
        .unwrap();
        assert_eq!(s.username.as_deref(), Some("u"));
    }
}
