//! Attribute types and their typed codecs.
//!
//! This module owns the attribute type registry ([`AttrType`]), the traits
//! that connect a *marker type* (e.g. [`Username`]) to its decoded value
//! (e.g. `&'a str`), and the value codecs for every attribute the crate
//! knows. Message framing lives in [`crate::message`] and
//! [`crate::writer`]; they only hand raw value slices to the code here.
//!
//! Markers are zero-sized types used as type arguments:
//! `msg.get::<XorMappedAddress>()` → `Option<SocketAddr>`,
//! `writer.add::<Username>("alice")`. Decoded values borrow from the
//! message buffer wherever the wire form allows (text, DATA, hashes, lists).

use core::fmt;

use crate::{Error, TransactionId};

mod address;
mod ice;
pub(crate) mod stun;
mod turn;

pub use address::{
    AddressFamily, AlternateServer, MappedAddress, OtherAddress, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};
pub use ice::{IceControlled, IceControlling, Priority, UseCandidate};
pub use stun::{
    standard_reason, AlternateDomain, AttrTypeIter, AttrTypeList, ErrorCode, ErrorCodeValue,
    Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, PasswordAlgorithm,
    PasswordAlgorithmIter, PasswordAlgorithmList, PasswordAlgorithmParams, PasswordAlgorithms,
    Realm, Software, UnknownAttributes, Userhash, Username, MAX_TEXT_LEN, MAX_USERNAME_LEN,
};
pub use turn::{
    AdditionalAddressFamily, AddressErrorCode, AddressErrorCodeValue, ChannelNumber, Data,
    DontFragment, EvenPort, Icmp, IcmpValue, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, PROTOCOL_TCP, PROTOCOL_UDP,
};

/// A 16-bit attribute type. Open (not an enum) so unknown attributes can be
/// carried, listed in UNKNOWN-ATTRIBUTES and written with
/// [`MessageWriter::add_raw`](crate::MessageWriter::add_raw).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

impl AttrType {
    // RFC 8489
    /// MAPPED-ADDRESS
    pub const MAPPED_ADDRESS: AttrType = AttrType(0x0001);
    /// USERNAME
    pub const USERNAME: AttrType = AttrType(0x0006);
    /// MESSAGE-INTEGRITY
    pub const MESSAGE_INTEGRITY: AttrType = AttrType(0x0008);
    /// ERROR-CODE
    pub const ERROR_CODE: AttrType = AttrType(0x0009);
    /// UNKNOWN-ATTRIBUTES
    pub const UNKNOWN_ATTRIBUTES: AttrType = AttrType(0x000A);
    /// REALM
    pub const REALM: AttrType = AttrType(0x0014);
    /// NONCE
    pub const NONCE: AttrType = AttrType(0x0015);
    /// MESSAGE-INTEGRITY-SHA256
    pub const MESSAGE_INTEGRITY_SHA256: AttrType = AttrType(0x001C);
    /// PASSWORD-ALGORITHM
    pub const PASSWORD_ALGORITHM: AttrType = AttrType(0x001D);
    /// USERHASH
    pub const USERHASH: AttrType = AttrType(0x001E);
    /// XOR-MAPPED-ADDRESS
    pub const XOR_MAPPED_ADDRESS: AttrType = AttrType(0x0020);
    /// PASSWORD-ALGORITHMS
    pub const PASSWORD_ALGORITHMS: AttrType = AttrType(0x8002);
    /// ALTERNATE-DOMAIN
    pub const ALTERNATE_DOMAIN: AttrType = AttrType(0x8003);
    /// SOFTWARE
    pub const SOFTWARE: AttrType = AttrType(0x8022);
    /// ALTERNATE-SERVER
    pub const ALTERNATE_SERVER: AttrType = AttrType(0x8023);
    /// OTHER-ADDRESS (RFC 5780 §7.4): the server's second address, for
    /// NAT behaviour discovery.
    pub const OTHER_ADDRESS: AttrType = AttrType(0x802C);
    /// FINGERPRINT
    pub const FINGERPRINT: AttrType = AttrType(0x8028);
    // RFC 8656
    /// CHANNEL-NUMBER
    pub const CHANNEL_NUMBER: AttrType = AttrType(0x000C);
    /// LIFETIME
    pub const LIFETIME: AttrType = AttrType(0x000D);
    /// XOR-PEER-ADDRESS
    pub const XOR_PEER_ADDRESS: AttrType = AttrType(0x0012);
    /// DATA
    pub const DATA: AttrType = AttrType(0x0013);
    /// XOR-RELAYED-ADDRESS
    pub const XOR_RELAYED_ADDRESS: AttrType = AttrType(0x0016);
    /// REQUESTED-ADDRESS-FAMILY
    pub const REQUESTED_ADDRESS_FAMILY: AttrType = AttrType(0x0017);
    /// EVEN-PORT
    pub const EVEN_PORT: AttrType = AttrType(0x0018);
    /// REQUESTED-TRANSPORT
    pub const REQUESTED_TRANSPORT: AttrType = AttrType(0x0019);
    /// DONT-FRAGMENT
    pub const DONT_FRAGMENT: AttrType = AttrType(0x001A);
    /// RESERVATION-TOKEN
    pub const RESERVATION_TOKEN: AttrType = AttrType(0x0022);
    /// ADDITIONAL-ADDRESS-FAMILY
    pub const ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8000);
    /// ADDRESS-ERROR-CODE
    pub const ADDRESS_ERROR_CODE: AttrType = AttrType(0x8001);
    /// ICMP
    pub const ICMP: AttrType = AttrType(0x8004);
    // RFC 8445
    /// PRIORITY
    pub const PRIORITY: AttrType = AttrType(0x0024);
    /// USE-CANDIDATE
    pub const USE_CANDIDATE: AttrType = AttrType(0x0025);
    /// ICE-CONTROLLED
    pub const ICE_CONTROLLED: AttrType = AttrType(0x8029);
    /// ICE-CONTROLLING
    pub const ICE_CONTROLLING: AttrType = AttrType(0x802A);

    /// Types 0x0000-0x7FFF must be understood by the receiver or the request
    /// rejected with 420 (RFC 8489 §14).
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// Whether this crate has a typed codec for the attribute.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// RFC name of the attribute, if known.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0001 => "MAPPED-ADDRESS",
            0x0006 => "USERNAME",
            0x0008 => "MESSAGE-INTEGRITY",
            0x0009 => "ERROR-CODE",
            0x000A => "UNKNOWN-ATTRIBUTES",
            0x000C => "CHANNEL-NUMBER",
            0x000D => "LIFETIME",
            0x0012 => "XOR-PEER-ADDRESS",
            0x0013 => "DATA",
            0x0014 => "REALM",
            0x0015 => "NONCE",
            0x0016 => "XOR-RELAYED-ADDRESS",
            0x0017 => "REQUESTED-ADDRESS-FAMILY",
            0x0018 => "EVEN-PORT",
            0x0019 => "REQUESTED-TRANSPORT",
            0x001A => "DONT-FRAGMENT",
            0x001C => "MESSAGE-INTEGRITY-SHA256",
            0x001D => "PASSWORD-ALGORITHM",
            0x001E => "USERHASH",
            0x0020 => "XOR-MAPPED-ADDRESS",
            0x0022 => "RESERVATION-TOKEN",
            0x0024 => "PRIORITY",
            0x0025 => "USE-CANDIDATE",
            0x8000 => "ADDITIONAL-ADDRESS-FAMILY",
            0x8001 => "ADDRESS-ERROR-CODE",
            0x8002 => "PASSWORD-ALGORITHMS",
            0x8003 => "ALTERNATE-DOMAIN",
            0x8004 => "ICMP",
            0x8022 => "SOFTWARE",
            0x8023 => "ALTERNATE-SERVER",
            0x802C => "OTHER-ADDRESS",
            0x8028 => "FINGERPRINT",
            0x8029 => "ICE-CONTROLLED",
            0x802A => "ICE-CONTROLLING",
            _ => return None,
        })
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "AttrType({:#06x})", self.0),
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One TLV as found in a parsed message: bounds already checked, value not
/// yet interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// Attribute type.
    pub attr_type: AttrType,
    /// Value bytes, without padding.
    pub value: &'a [u8],
    /// Offset of the TLV header from the start of the message.
    pub offset: usize,
}

impl<'a> RawAttribute<'a> {
    /// Decodes the value as attribute `A`. Returns
    /// [`Error::MissingAttribute`] if the type does not match `A`. The
    /// transaction id is needed by the XOR-address attributes.
    pub fn decode<A: Attribute>(&self, tid: &TransactionId) -> Result<A::Value<'a>, Error> {
        if self.attr_type != A::TYPE {
            return Err(Error::MissingAttribute(A::TYPE));
        }
        A::decode(self.value, tid)
    }
}

/// A known attribute: ties a marker type to its wire type and decoded value.
pub trait Attribute {
    /// Wire type.
    const TYPE: AttrType;
    /// What the value decodes to; may borrow from the message buffer.
    type Value<'a>;
    /// Decodes an unpadded value. `tid` is the message's transaction id.
    fn decode<'a>(value: &'a [u8], tid: &TransactionId) -> Result<Self::Value<'a>, Error>;
}

/// An attribute that [`MessageWriter::add`](crate::MessageWriter::add) can
/// write. MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT deliberately do not
/// implement it: the writer computes them with dedicated methods.
pub trait EncodeAttribute: Attribute {
    /// Validates `value` and returns its unpadded encoded length.
    fn encoded_len(value: &Self::Value<'_>) -> Result<usize, Error>;
    /// Writes the value into `out`, which is exactly `encoded_len` bytes and
    /// zero-filled.
    fn encode(value: &Self::Value<'_>, tid: &TransactionId, out: &mut [u8]);
}

// ---- small helpers shared by the codecs ------------------------------------

/// Rounds up to the next multiple of 4 (attribute padding).
pub(crate) const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

pub(crate) fn exact<const N: usize>(t: AttrType, v: &[u8]) -> Result<&[u8; N], Error> {
    v.try_into().map_err(|_| Error::BadAttributeLength {
        attr_type: t,
        len: v.len(),
    })
}

pub(crate) fn text(t: AttrType, v: &[u8], max: usize) -> Result<&str, Error> {
    if v.len() > max {
        return Err(Error::ValueTooLong {
            attr_type: t,
            len: v.len(),
            max,
        });
    }
    core::str::from_utf8(v).map_err(|_| Error::InvalidUtf8(t))
}

pub(crate) fn check_text_len(t: AttrType, s: &str, max: usize) -> Result<usize, Error> {
    if s.len() > max {
        Err(Error::ValueTooLong {
            attr_type: t,
            len: s.len(),
            max,
        })
    } else {
        Ok(s.len())
    }
}

/// Implements a text attribute (UTF-8 with a byte limit).
macro_rules! text_attribute {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::attr::Attribute for $name {
            const TYPE: $crate::attr::AttrType = $ty;
            type Value<'a> = &'a str;
            fn decode<'a>(v: &'a [u8], _: &$crate::TransactionId) -> Result<&'a str, $crate::Error> {
                $crate::attr::text(Self::TYPE, v, $max)
            }
        }
        impl $crate::attr::EncodeAttribute for $name {
            fn encoded_len(v: &&str) -> Result<usize, $crate::Error> {
                $crate::attr::check_text_len(Self::TYPE, v, $max)
            }
            fn encode(v: &&str, _: &$crate::TransactionId, out: &mut [u8]) {
                out.copy_from_slice(v.as_bytes());
            }
        }
    };
}
pub(crate) use text_attribute;

/// Implements an attribute whose value is a fixed-width big-endian integer.
macro_rules! int_attribute {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $int:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::attr::Attribute for $name {
            const TYPE: $crate::attr::AttrType = $ty;
            type Value<'a> = $int;
            fn decode(v: &[u8], _: &$crate::TransactionId) -> Result<$int, $crate::Error> {
                Ok(<$int>::from_be_bytes(*$crate::attr::exact(Self::TYPE, v)?))
            }
        }
        impl $crate::attr::EncodeAttribute for $name {
            fn encoded_len(_: &$int) -> Result<usize, $crate::Error> {
                Ok(core::mem::size_of::<$int>())
            }
            fn encode(v: &$int, _: &$crate::TransactionId, out: &mut [u8]) {
                out.copy_from_slice(&v.to_be_bytes());
            }
        }
    };
}
pub(crate) use int_attribute;

/// Implements a flag attribute with an empty value.
macro_rules! flag_attribute {
    ($(#[$doc:meta])* $name:ident, $ty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl $crate::attr::Attribute for $name {
            const TYPE: $crate::attr::AttrType = $ty;
            type Value<'a> = ();
            fn decode(v: &[u8], _: &$crate::TransactionId) -> Result<(), $crate::Error> {
                if v.is_empty() {
                    Ok(())
                } else {
                    Err($crate::Error::BadAttributeLength { attr_type: Self::TYPE, len: v.len() })
                }
            }
        }
        impl $crate::attr::EncodeAttribute for $name {
            fn encoded_len(_: &()) -> Result<usize, $crate::Error> {
                Ok(0)
            }
            fn encode(_: &(), _: &$crate::TransactionId, _: &mut [u8]) {}
        }
    };
}
pub(crate) use flag_attribute;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_comprehension() {
        assert_eq!(
            format!("{}", AttrType::XOR_MAPPED_ADDRESS),
            "XOR-MAPPED-ADDRESS"
        );
        assert_eq!(format!("{:?}", AttrType(0x7777)), "AttrType(0x7777)");
        assert!(AttrType::USERNAME.is_comprehension_required());
        assert!(!AttrType::SOFTWARE.is_comprehension_required());
        assert!(AttrType::ICMP.is_known());
        assert!(
            !AttrType(0x0002).is_known(),
            "RESPONSE-ADDRESS is obsolete and not handled"
        );
    }

    #[test]
    fn raw_decode_checks_type() {
        let raw = RawAttribute {
            attr_type: AttrType::SOFTWARE,
            value: b"x",
            offset: 20,
        };
        let tid = TransactionId::default();
        assert_eq!(raw.decode::<Software>(&tid), Ok("x"));
        assert_eq!(
            raw.decode::<Realm>(&tid),
            Err(Error::MissingAttribute(AttrType::REALM))
        );
    }

    #[test]
    fn pad() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad4), [0, 4, 4, 4, 4, 8]);
    }
}
