//! Which local interfaces can carry mDNS: up and multicast-capable, with
//! their IPv4 address (for IP_ADD_MEMBERSHIP / IP_MULTICAST_IF) and index
//! (for the IPv6 equivalents).

use std::net::Ipv4Addr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Iface {
    pub name: String,
    pub index: u32,
    pub v4: Option<Ipv4Addr>,
    pub v6: bool,
}

/// Interfaces that are up and have IFF_MULTICAST. Loopback usually lacks
/// the flag on Linux and is then skipped, which is right: multicast sent on
/// a real interface is looped back to local listeners anyway.
#[cfg(unix)]
pub(crate) fn multicast_interfaces() -> std::io::Result<Vec<Iface>> {
    use nix::net::if_::InterfaceFlags;

    let mut out: Vec<Iface> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        if !ifa
            .flags
            .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_MULTICAST)
        {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        let v4 = if let Some(sin) = addr.as_sockaddr_in() {
            Some(sin.ip())
        } else if addr.as_sockaddr_in6().is_some() {
            None
        } else {
            // AF_PACKET and friends: not an address mDNS can use.
            continue;
        };
        let entry = match out.iter().position(|i| i.name == ifa.interface_name) {
            Some(at) => &mut out[at],
            None => {
                let Ok(index) = nix::net::if_::if_nametoindex(ifa.interface_name.as_str()) else {
                    continue;
                };
                out.push(Iface {
                    name: ifa.interface_name,
                    index,
                    v4: None,
                    v6: false,
                });
                out.last_mut().expect("just pushed")
            }
        };
        match v4 {
            // The first IPv4 address is enough to name the interface.
            Some(a) => {
                entry.v4.get_or_insert(a);
            }
            None => entry.v6 = true,
        }
    }
    Ok(out)
}

#[cfg(not(unix))]
pub(crate) fn multicast_interfaces() -> std::io::Result<Vec<Iface>> {
    // No enumeration here: the resolver falls back to the default interface.
    Ok(Vec::new())
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn enumeration_works() {
        let ifaces = super::multicast_interfaces().unwrap();
        for i in &ifaces {
            assert!(i.index > 0, "{i:?}");
            assert!(i.v4.is_some() || i.v6, "{i:?}");
        }
    }
}
