//! The pure parts of `doctor`: check results and the verdict, ICE server
//! URLs, and what two STUN mappings say about a NAT. No sockets, no clock.

use serde_json::{json, Map, Value};
use std::fmt;
use std::net::SocketAddr;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It works.
    Ok,
    /// It works, with something worth knowing (a certificate near expiry,
    /// a NAT that maps per destination).
    Warn,
    /// It does not work.
    Fail,
    /// Not tried: not offered by the server, or an earlier check it needs
    /// failed.
    Skip,
}

impl Status {
    /// The word in `--json` and the tag on a human line.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    /// `http`, `tls`, `websocket`, `stun`, `nat`, `turn-udp`, `turn-tcp`,
    /// `turn-tls` or `relay`.
    pub name: &'static str,
    /// What was checked: a URL or an address.
    pub target: String,
    /// The outcome.
    pub status: Status,
    /// One sentence for a person: what was seen, or what failed and why.
    pub message: String,
    /// How long it took, when that means something.
    pub ms: Option<u64>,
    /// Check-specific figures for `--json` (mapped address, RTT, days left).
    pub data: Map<String, Value>,
}

impl Check {
    /// A check with no figures.
    pub fn new(
        name: &'static str,
        target: impl Into<String>,
        status: Status,
        message: impl Into<String>,
    ) -> Check {
        Check {
            name,
            target: target.into(),
            status,
            message: message.into(),
            ms: None,
            data: Map::new(),
        }
    }

    /// Adds the time taken.
    pub fn ms(mut self, ms: u64) -> Check {
        self.ms = Some(ms);
        self
    }

    /// Adds one figure for `--json`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Check {
        self.data.insert(key.to_string(), value.into());
        self
    }

    /// The `--json` line.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("check".into(), self.name.into());
        o.insert("target".into(), self.target.clone().into());
        o.insert("status".into(), self.status.as_str().into());
        o.insert("message".into(), self.message.clone().into());
        if let Some(ms) = self.ms {
            o.insert("ms".into(), ms.into());
        }
        for (k, v) in &self.data {
            o.insert(k.clone(), v.clone());
        }
        Value::Object(o)
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "  ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        write!(
            f,
            "[{tag}] {:<9} {}: {}",
            self.name, self.target, self.message
        )?;
        if let Some(ms) = self.ms {
            write!(f, " ({ms} ms)")?;
        }
        Ok(())
    }
}

/// Checks that need the server's HTTP and signaling: when one fails,
/// the server is unreachable from here (exit code 3).
const REACH: [&str; 3] = ["http", "tls", "websocket"];

/// The final line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Checks that passed (warnings included).
    pub ok: usize,
    /// Checks that passed with a warning.
    pub warn: usize,
    /// Checks that failed.
    pub fail: usize,
    /// Checks not tried.
    pub skip: usize,
    /// Whether a failed check was one of HTTP, TLS or the WebSocket.
    pub unreachable: bool,
}

impl Verdict {
    /// Sums up `checks`.
    pub fn of(checks: &[Check]) -> Verdict {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        Verdict {
            ok: count(Status::Ok) + count(Status::Warn),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
            skip: count(Status::Skip),
            unreachable: checks
                .iter()
                .any(|c| c.status == Status::Fail && REACH.contains(&c.name)),
        }
    }

    /// The process exit code (docs/cli.md): 0 every check passed or was
    /// skipped, 3 the server's HTTP, TLS or WebSocket failed, 1 another
    /// check failed.
    pub fn exit_code(&self) -> i32 {
        match (self.fail, self.unreachable) {
            (0, _) => 0,
            (_, true) => 3,
            (_, false) => 1,
        }
    }

    /// `pass` or `fail`.
    pub fn word(&self) -> &'static str {
        if self.fail == 0 {
            "pass"
        } else {
            "fail"
        }
    }

    /// The `--json` line.
    pub fn to_json(&self) -> Value {
        json!({
            "verdict": self.word(),
            "ok": self.ok,
            "warn": self.warn,
            "fail": self.fail,
            "skip": self.skip,
            "exit_code": self.exit_code(),
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verdict: {} ({} ok, {} with warnings, {} failed, {} skipped)",
            self.word().to_uppercase(),
            self.ok,
            self.warn,
            self.fail,
            self.skip
        )
    }
}

/// How a client reaches a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnProto {
    /// `turn:…?transport=udp` (the default).
    Udp,
    /// `turn:…?transport=tcp`.
    Tcp,
    /// `turns:…` (TCP inside TLS).
    Tls,
}

impl TurnProto {
    /// The check's name.
    pub fn check_name(self) -> &'static str {
        match self {
            TurnProto::Udp => "turn-udp",
            TurnProto::Tcp => "turn-tcp",
            TurnProto::Tls => "turn-tls",
        }
    }
}

/// One ICE server URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceUrl {
    /// `stun:host[:port]`.
    Stun {
        /// Name or IP, without brackets.
        host: String,
        /// 3478 unless given.
        port: u16,
    },
    /// `turn:` or `turns:`.
    Turn {
        /// Name or IP, without brackets; for `turns:` also the name the
        /// certificate must carry.
        host: String,
        /// 3478 (`turn:`) or 5349 (`turns:`) unless given.
        port: u16,
        /// How to reach it.
        proto: TurnProto,
    },
}

/// Parses `stun:`, `turn:` and `turns:` URLs (RFC 7064/7065). `None` for
/// anything else (`stuns:`, garbage): the caller reports it as skipped.
pub fn parse_ice_url(url: &str) -> Option<IceUrl> {
    let (scheme, rest) = url.split_once(':')?;
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let (host, port) = split_host_port(hostport)?;
    if host.is_empty() {
        return None;
    }
    let transport = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("transport="));
    match scheme.to_ascii_lowercase().as_str() {
        "stun" => Some(IceUrl::Stun {
            host,
            port: port.unwrap_or(3478),
        }),
        "turn" => Some(IceUrl::Turn {
            host,
            port: port.unwrap_or(3478),
            proto: match transport {
                None | Some("udp") => TurnProto::Udp,
                Some("tcp") => TurnProto::Tcp,
                Some(_) => return None,
            },
        }),
        "turns" => match transport {
            None | Some("tcp") => Some(IceUrl::Turn {
                host,
                port: port.unwrap_or(5349),
                proto: TurnProto::Tls,
            }),
            Some(_) => None,
        },
        _ => None,
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

/// What the mappings toward two STUN addresses of one server say about
/// the NAT in front of us (RFC 5780 §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatMapping {
    /// `endpoint-independent`, `address-and-port-dependent` or
    /// `address-dependent-or-stricter` (for `--json`).
    pub kind: &'static str,
    /// Whether it is the kind that makes server-reflexive candidates work
    /// toward any peer.
    pub good: bool,
    /// One sentence for a person.
    pub message: String,
}

/// Classifies the mapping from two Binding answers sent from one local
/// socket: `mapped1` came from `primary`, `mapped2` from `alt`; `local` is
/// the socket's own address (equal to the mapping: no NAT at all).
pub fn classify_mapping(
    local: Option<SocketAddr>,
    primary: SocketAddr,
    mapped1: SocketAddr,
    alt: SocketAddr,
    mapped2: SocketAddr,
) -> NatMapping {
    if mapped1 == mapped2 {
        let no_nat = local == Some(mapped1);
        return NatMapping {
            kind: "endpoint-independent",
            good: true,
            message: if no_nat {
                format!("no NAT: the server sees our own address {mapped1} from both {primary} and {alt}")
            } else {
                format!(
                    "endpoint-independent mapping: {mapped1} toward both {primary} and {alt}; \
                     server-reflexive candidates work toward any peer"
                )
            },
        };
    }
    let (kind, what) = if primary.ip() == alt.ip() {
        (
            "address-and-port-dependent",
            "address-and-port-dependent mapping (a symmetric NAT)",
        )
    } else {
        (
            "address-dependent-or-stricter",
            "address-dependent (or address-and-port-dependent) mapping",
        )
    };
    NatMapping {
        kind,
        good: false,
        message: format!(
            "{what}: {mapped1} toward {primary} but {mapped2} toward {alt}; \
             server-reflexive candidates will not work toward other peers, expect calls from here to need TURN"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ice_urls() {
        assert_eq!(
            parse_ice_url("stun:198.51.100.1"),
            Some(IceUrl::Stun {
                host: "198.51.100.1".into(),
                port: 3478
            })
        );
        assert_eq!(
            parse_ice_url("turn:[2001:db8::1]:3479?transport=tcp"),
            Some(IceUrl::Turn {
                host: "2001:db8::1".into(),
                port: 3479,
                proto: TurnProto::Tcp
            })
        );
        assert_eq!(
            parse_ice_url("turns:turn.example.com?transport=tcp"),
            Some(IceUrl::Turn {
                host: "turn.example.com".into(),
                port: 5349,
                proto: TurnProto::Tls
            })
        );
        assert_eq!(
            parse_ice_url("TURN:h:1"),
            Some(IceUrl::Turn {
                host: "h".into(),
                port: 1,
                proto: TurnProto::Udp
            })
        );
        for bad in [
            "stuns:h",
            "turn:h?transport=sctp",
            "turns:h?transport=udp",
            "turn::3478",
            "turn:h:port",
            "nonsense",
        ] {
            assert_eq!(parse_ice_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn nat_mapping() {
        let (p, alt_port, alt_ip) = (
            a("203.0.113.1:3478"),
            a("203.0.113.1:3479"),
            a("203.0.113.2:3478"),
        );
        let m = classify_mapping(
            Some(a("10.0.0.2:5000")),
            p,
            a("198.51.100.7:6000"),
            alt_port,
            a("198.51.100.7:6000"),
        );
        assert_eq!((m.kind, m.good), ("endpoint-independent", true));
        let m = classify_mapping(
            Some(a("198.51.100.7:6000")),
            p,
            a("198.51.100.7:6000"),
            alt_port,
            a("198.51.100.7:6000"),
        );
        assert!(m.message.starts_with("no NAT"), "{}", m.message);
        let m = classify_mapping(
            None,
            p,
            a("198.51.100.7:6000"),
            alt_port,
            a("198.51.100.7:6001"),
        );
        assert_eq!((m.kind, m.good), ("address-and-port-dependent", false));
        let m = classify_mapping(
            None,
            p,
            a("198.51.100.7:6000"),
            alt_ip,
            a("198.51.100.7:6001"),
        );
        assert_eq!((m.kind, m.good), ("address-dependent-or-stricter", false));
        assert!(m.message.contains("expect calls from here to need TURN"));
    }

    #[test]
    fn verdict_and_exit_codes() {
        let c = |name, status| Check::new(name, "t", status, "m");
        let all_ok = [
            c("http", Status::Ok),
            c("nat", Status::Warn),
            c("turn-tls", Status::Skip),
        ];
        let v = Verdict::of(&all_ok);
        assert_eq!(
            (v.ok, v.warn, v.fail, v.skip, v.exit_code()),
            (2, 1, 0, 1, 0)
        );
        assert_eq!(v.word(), "pass");
        let turn_down = [c("http", Status::Ok), c("turn-udp", Status::Fail)];
        assert_eq!(Verdict::of(&turn_down).exit_code(), 1);
        let tls_bad = [
            c("tls", Status::Fail),
            c("websocket", Status::Fail),
            c("turn-udp", Status::Skip),
        ];
        let v = Verdict::of(&tls_bad);
        assert_eq!((v.exit_code(), v.word()), (3, "fail"));
        assert_eq!(v.to_json()["verdict"], "fail");
        let line = c("relay", Status::Ok).ms(12).with("rtt_ms", 1.5).to_json();
        assert_eq!(line["check"], "relay");
        assert_eq!(line["ms"], 12);
        assert_eq!(line["rtt_ms"], 1.5);
    }
}
