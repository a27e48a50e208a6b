//! Which peer addresses an allocation may relay to.
//!
//! A TURN server that relays anywhere becomes a door into the network it sits
//! in (coturn CVE-2020-26262 and later reports): a client asks for a
//! permission to 127.0.0.1 or 169.254.169.254 and reaches services never
//! meant to face the internet. So every non-global range is refused unless an
//! operator opens it with `--allow-peer`, and IPv6 forms that carry an IPv4
//! address inside are unwrapped before matching, so `::ffff:127.0.0.1` is
//! treated as `127.0.0.1`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range such as `10.0.0.0/8` or `fc00::/7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Text that is neither an IP address nor `ADDRESS/PREFIX` with a prefix
/// no longer than the address; holds the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address range like 10.0.0.0/8, fc00::/7 or 192.0.2.1")]
pub struct BadCidr(pub String);

impl Cidr {
    /// `a.b.c.d/prefix`, for constant tables. `prefix` must be at most 32;
    /// that is not checked here, so parse untrusted text with
    /// [`str::parse`] instead.
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// Whether `ip` is in the range. Always false across families: no
    /// IPv4 address embedded in an IPv6 one is unwrapped here ([`canonical`]
    /// does that). A `/0` holds every address of its family.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Cidr, BadCidr> {
        let bad = || BadCidr(s.to_string());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4 ranges that are not globally reachable unicast.
const DENIED_V4: &[(Cidr, &str)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), "\"this network\" / unspecified"),
    (Cidr::v4(10, 0, 0, 0, 8), "private (RFC 1918)"),
    (Cidr::v4(100, 64, 0, 0, 10), "carrier-grade NAT (RFC 6598)"),
    (Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    (Cidr::v4(169, 254, 0, 0, 16), "link-local"),
    (Cidr::v4(172, 16, 0, 0, 12), "private (RFC 1918)"),
    (Cidr::v4(192, 0, 0, 0, 24), "IETF protocol assignments"),
    (Cidr::v4(192, 0, 2, 0, 24), "documentation"),
    (Cidr::v4(192, 88, 99, 0, 24), "6to4 relay anycast"),
    (Cidr::v4(192, 168, 0, 0, 16), "private (RFC 1918)"),
    (Cidr::v4(198, 18, 0, 0, 15), "benchmarking"),
    (Cidr::v4(198, 51, 100, 0, 24), "documentation"),
    (Cidr::v4(203, 0, 113, 0, 24), "documentation"),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    (Cidr::v4(240, 0, 0, 0, 4), "reserved / broadcast"),
];

/// IPv6 ranges that are not globally reachable unicast. Ranges that embed an
/// IPv4 address are unwrapped by [`embedded_v4`] before this list is read.
const DENIED_V6: &[(Cidr, &str)] = &[
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "IPv4-compatible"),
    (
        Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64",
    ),
    (Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    (
        Cidr::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        "IETF protocol assignments (incl. Teredo)",
    ),
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation",
    ),
    (Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (
        Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local (ULA)",
    ),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The IPv4 address an IPv6 address stands for, if it is one of the forms
/// that carry one: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::/48`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // `::` and `::1` are their own IPv6 things, not 0.0.0.0/0.0.0.1.
        [0, 0, 0, 0, 0, 0, 0, 0] | [0, 0, 0, 0, 0, 0, 0, 1] => None,
        [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// Why a peer address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The address (or the IPv4 address inside it) is in a range that is not
    /// globally reachable unicast, and no `--allow-peer` range opens it.
    #[error("{addr} is in a {what} range ({range})")]
    Reserved {
        /// The address as asked for, before unwrapping.
        addr: IpAddr,
        /// What the range is for, such as `loopback`.
        what: &'static str,
        /// The refused range that matched; an IPv4 range when `addr` carries
        /// an IPv4 address.
        range: Cidr,
    },
    /// One of the server's own addresses (compared after unwrapping): a
    /// relay to itself would reach services bound on the host, or loop
    /// traffic through the relay.
    #[error("{0} is one of this server's own addresses")]
    OwnAddress(IpAddr),
}

/// The relay's rule for peer addresses.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
    own: Vec<IpAddr>,
}

impl PeerPolicy {
    /// `allow` opens ranges on purpose; `own` lists this server's addresses.
    pub fn new(allow: Vec<Cidr>, own: Vec<IpAddr>) -> Self {
        PeerPolicy { allow, own }
    }

    /// Refuses `ip` as a peer from now on (stored unwrapped, once). `serve`
    /// adds the external address, the listen address unless it is
    /// unspecified, and the detected interface address.
    pub fn add_own(&mut self, ip: IpAddr) {
        let ip = canonical(ip);
        if !self.own.contains(&ip) {
            self.own.push(ip);
        }
    }

    /// Whether the relay may send to `ip`; checked on every peer address in
    /// CreatePermission and ChannelBind.
    ///
    /// In order: an allow range matching the address as given or unwrapped
    /// admits it, even if it is one of our own; then our own addresses are
    /// refused; then the non-global ranges; anything else is admitted.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let canon = canonical(ip);
        if self
            .allow
            .iter()
            .any(|c| c.contains(ip) || c.contains(canon))
        {
            return Ok(());
        }
        if self.own.iter().any(|o| canonical(*o) == canon) {
            return Err(Denied::OwnAddress(ip));
        }
        let list = if canon.is_ipv4() {
            DENIED_V4
        } else {
            DENIED_V6
        };
        match list.iter().find(|(c, _)| c.contains(canon)) {
            Some((range, what)) => Err(Denied::Reserved {
                addr: ip,
                what,
                range: *range,
            }),
            None => Ok(()),
        }
    }
}

/// The address as matched: IPv6 forms carrying IPv4 become that IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_non_global_ranges() {
        let p = PeerPolicy::default();
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.8",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "fec0::1",
            "100::1",
            "64:ff9b:1::1",
            "2001::1",
        ] {
            assert!(p.check(ip(s)).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn unwraps_embedded_ipv4() {
        let p = PeerPolicy::default();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
            "::ffff:169.254.169.254",
        ] {
            let err = p.check(ip(s)).unwrap_err();
            assert!(matches!(err, Denied::Reserved { .. }), "{s}: {err}");
        }
        assert!(p.check(ip("::ffff:8.8.8.8")).is_ok());
        assert!(p.check(ip("2002:0808:0808::1")).is_ok());
    }

    #[test]
    fn allows_global_unicast() {
        let p = PeerPolicy::default();
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(p.check(ip(s)).is_ok(), "{s} should be allowed");
        }
    }

    #[test]
    fn own_addresses_are_refused_and_allow_list_wins() {
        let mut p = PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()], vec![]);
        p.add_own(ip("203.0.114.5"));
        assert_eq!(
            p.check(ip("203.0.114.5")),
            Err(Denied::OwnAddress(ip("203.0.114.5")))
        );
        assert!(p.check(ip("::ffff:203.0.114.5")).is_err());
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check(ip("127.0.0.2")).is_err());
        let open = PeerPolicy::new(
            vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            vec![],
        );
        assert!(open.check(ip("10.1.2.3")).is_ok());
        assert!(open.check(ip("fe80::1")).is_ok());
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "192.0.2.1".parse::<Cidr>().unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "nope/8",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("1.2.3.4")));
        assert!(!c.contains(ip("::1")));
    }
}
