//! Address attributes: MAPPED-ADDRESS, ALTERNATE-SERVER (plain) and
//! XOR-MAPPED-ADDRESS, XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS (XOR'd with
//! the magic cookie and transaction id, RFC 8489 §14.2), plus the
//! [`AddressFamily`] byte shared with the TURN family attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{AttrType, Attribute, EncodeAttribute};
use crate::{Error, TransactionId, MAGIC_COOKIE};

/// The address family byte used by address attributes and by
/// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY / ADDRESS-ERROR-CODE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// 0x01
    V4,
    /// 0x02
    V6,
}

impl AddressFamily {
    /// Parses the wire byte.
    pub const fn from_u8(b: u8) -> Result<Self, Error> {
        match b {
            0x01 => Ok(AddressFamily::V4),
            0x02 => Ok(AddressFamily::V6),
            other => Err(Error::BadAddressFamily(other)),
        }
    }
    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            AddressFamily::V4 => 0x01,
            AddressFamily::V6 => 0x02,
        }
    }
    /// Family of an IP address.
    pub const fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddressFamily::V4,
            IpAddr::V6(_) => AddressFamily::V6,
        }
    }
}

/// The XOR pad: magic cookie followed by the transaction id. The first four
/// bytes cover IPv4 addresses, all 16 cover IPv6; the top two cover ports.
fn xor_pad(tid: &TransactionId) -> [u8; 16] {
    let mut pad = [0u8; 16];
    pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    pad[4..].copy_from_slice(&tid.0);
    pad
}

fn decode_address(t: AttrType, v: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, Error> {
    let bad_len = Error::BadAttributeLength {
        attr_type: t,
        len: v.len(),
    };
    let (&[_reserved, family, p0, p1], rest) = v.split_first_chunk::<4>().ok_or(bad_len)?;
    let pad = xor.map(xor_pad).unwrap_or([0; 16]);
    let port = u16::from_be_bytes([p0 ^ pad[0], p1 ^ pad[1]]);
    let ip = match AddressFamily::from_u8(family)? {
        AddressFamily::V4 => {
            let a: &[u8; 4] = rest.try_into().map_err(|_| bad_len)?;
            IpAddr::V4(Ipv4Addr::from(core::array::from_fn::<u8, 4, _>(|i| {
                a[i] ^ pad[i]
            })))
        }
        AddressFamily::V6 => {
            let a: &[u8; 16] = rest.try_into().map_err(|_| bad_len)?;
            IpAddr::V6(Ipv6Addr::from(core::array::from_fn::<u8, 16, _>(|i| {
                a[i] ^ pad[i]
            })))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

const fn address_len(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

fn encode_address(a: &SocketAddr, xor: Option<&TransactionId>, out: &mut [u8]) {
    let pad = xor.map(xor_pad).unwrap_or([0; 16]);
    let ip = a.ip();
    let port = a.port().to_be_bytes();
    let head = [
        0,
        AddressFamily::of(&ip).to_u8(),
        port[0] ^ pad[0],
        port[1] ^ pad[1],
    ];
    let mut addr = [0u8; 16];
    let n = match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            addr = v6.octets();
            16
        }
    };
    for (b, p) in addr.iter_mut().zip(pad) {
        *b ^= p;
    }
    // `out` is exactly address_len() bytes, so these ranges are in bounds.
    for (dst, src) in out
        .iter_mut()
        .zip(head.into_iter().chain(addr.into_iter().take(n)))
    {
        *dst = src;
    }
}

macro_rules! address_attribute {
    ($(#[$doc:meta])* $name:ident, $ty:expr, xor = $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl Attribute for $name {
            const TYPE: AttrType = $ty;
            type Value<'a> = SocketAddr;
            fn decode(v: &[u8], tid: &TransactionId) -> Result<SocketAddr, Error> {
                decode_address(Self::TYPE, v, if $xor { Some(tid) } else { None })
            }
        }
        impl EncodeAttribute for $name {
            fn encoded_len(v: &SocketAddr) -> Result<usize, Error> {
                Ok(address_len(v))
            }
            fn encode(v: &SocketAddr, tid: &TransactionId, out: &mut [u8]) {
                encode_address(v, if $xor { Some(tid) } else { None }, out)
            }
        }
    };
}

address_attribute!(
    /// MAPPED-ADDRESS (0x0001): the reflexive address in the clear. Only
    /// for RFC 3489 compatibility; prefer [`XorMappedAddress`].
    MappedAddress, AttrType::MAPPED_ADDRESS, xor = false
);
address_attribute!(
    /// ALTERNATE-SERVER (0x8023): where a 300 Try Alternate points to.
    AlternateServer, AttrType::ALTERNATE_SERVER, xor = false
);
address_attribute!(
    /// OTHER-ADDRESS (0x802C, RFC 5780 §7.4): another address of the same
    /// STUN server, so a client can compare the mappings its NAT gives
    /// toward two destinations. Encoded like MAPPED-ADDRESS.
    OtherAddress, AttrType::OTHER_ADDRESS, xor = false
);
address_attribute!(
    /// XOR-MAPPED-ADDRESS (0x0020): the reflexive address, obfuscated.
    XorMappedAddress, AttrType::XOR_MAPPED_ADDRESS, xor = true
);
address_attribute!(
    /// XOR-PEER-ADDRESS (0x0012): a TURN peer's address.
    XorPeerAddress, AttrType::XOR_PEER_ADDRESS, xor = true
);
address_attribute!(
    /// XOR-RELAYED-ADDRESS (0x0016): the relayed address of an allocation.
    XorRelayedAddress, AttrType::XOR_RELAYED_ADDRESS, xor = true
);

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ]);

    #[test]
    fn xor_v4_matches_rfc5769() {
        let wire = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        let addr: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        assert_eq!(XorMappedAddress::decode(&wire, &TID), Ok(addr));
        let mut out = [0u8; 8];
        XorMappedAddress::encode(&addr, &TID, &mut out);
        assert_eq!(out, wire);
    }

    #[test]
    fn plain_v6_round_trip() {
        let addr: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let mut out = [0u8; 20];
        assert_eq!(MappedAddress::encoded_len(&addr), Ok(20));
        MappedAddress::encode(&addr, &TID, &mut out);
        assert_eq!(&out[..4], &[0, 2, 0x0d, 0x96]);
        assert_eq!(MappedAddress::decode(&out, &TID), Ok(addr));
    }

    #[test]
    fn malformed_addresses() {
        let t = AttrType::XOR_PEER_ADDRESS;
        assert_eq!(
            XorPeerAddress::decode(&[0, 1, 0], &TID),
            Err(Error::BadAttributeLength {
                attr_type: t,
                len: 3
            })
        );
        assert_eq!(
            XorPeerAddress::decode(&[0, 3, 0, 0, 1, 2, 3, 4], &TID),
            Err(Error::BadAddressFamily(3))
        );
        assert_eq!(
            XorPeerAddress::decode(&[0, 2, 0, 0, 1, 2, 3, 4], &TID),
            Err(Error::BadAttributeLength {
                attr_type: t,
                len: 8
            }),
            "IPv6 family with an IPv4-sized address"
        );
        assert_eq!(
            XorPeerAddress::decode(&[0, 1, 0, 0, 1, 2, 3, 4, 5], &TID),
            Err(Error::BadAttributeLength {
                attr_type: t,
                len: 9
            })
        );
    }
}
