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
    use std::ffi::CStr;

    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out: Vec<Iface> = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let flags = ifa.ifa_flags as libc::c_int;
        if flags & libc::IFF_UP == 0 || flags & libc::IFF_MULTICAST == 0 || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let v4 = if family == libc::AF_INET {
            // SAFETY: family AF_INET means the sockaddr is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        } else if family == libc::AF_INET6 {
            None
        } else {
            continue;
        };
        let entry = match out.iter_mut().find(|i| i.name == name) {
            Some(e) => e,
            None => {
                let Ok(cname) = std::ffi::CString::new(name.clone()) else {
                    continue;
                };
                // SAFETY: cname is a valid C string.
                let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
                if index == 0 {
                    continue;
                }
                out.push(Iface {
                    name,
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
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
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
