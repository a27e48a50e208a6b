//! TURN attributes (RFC 8656 §18): CHANNEL-NUMBER, LIFETIME, DATA,
//! REQUESTED-/ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT, REQUESTED-TRANSPORT,
//! DONT-FRAGMENT, RESERVATION-TOKEN, ADDRESS-ERROR-CODE and ICMP. The XOR
//! address attributes live in [`super::address`].

use super::address::AddressFamily;
use super::stun::{check_code, decode_code, encode_code};
use super::{exact, flag_attribute, int_attribute, AttrType, Attribute, EncodeAttribute};
use crate::channel_data::is_valid_channel;
use crate::{Error, TransactionId};

/// REQUESTED-TRANSPORT protocol number for UDP, the only one RFC 8656 defines.
pub const PROTOCOL_UDP: u8 = 17;
/// Protocol number for TCP (RFC 6062 allocations).
pub const PROTOCOL_TCP: u8 = 6;

/// CHANNEL-NUMBER (0x000C): a channel in 0x4000..=0x4FFF followed by two
/// RFFU bytes. Out-of-range numbers are a decode error (the server answers
/// 400).
#[derive(Debug, Clone, Copy)]
pub struct ChannelNumber;
impl Attribute for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;
    type Value<'a> = u16;
    fn decode(v: &[u8], _: &TransactionId) -> Result<u16, Error> {
        let &[a, b, _, _] = exact::<4>(Self::TYPE, v)?;
        let n = u16::from_be_bytes([a, b]);
        if is_valid_channel(n) {
            Ok(n)
        } else {
            Err(Error::BadChannelNumber(n))
        }
    }
}
impl EncodeAttribute for ChannelNumber {
    fn encoded_len(v: &u16) -> Result<usize, Error> {
        if is_valid_channel(*v) {
            Ok(4)
        } else {
            Err(Error::BadChannelNumber(*v))
        }
    }
    fn encode(v: &u16, _: &TransactionId, out: &mut [u8]) {
        for (dst, src) in out.iter_mut().zip(v.to_be_bytes()) {
            *dst = src;
        }
    }
}

int_attribute!(
    /// LIFETIME (0x000D): allocation lifetime in seconds.
    Lifetime, AttrType::LIFETIME, u32
);

/// DATA (0x0013): the application payload of Send/Data indications,
/// borrowed straight from the datagram.
#[derive(Debug, Clone, Copy)]
pub struct Data;
impl Attribute for Data {
    const TYPE: AttrType = AttrType::DATA;
    type Value<'a> = &'a [u8];
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<&'a [u8], Error> {
        Ok(v)
    }
}
impl EncodeAttribute for Data {
    fn encoded_len(v: &&[u8]) -> Result<usize, Error> {
        Ok(v.len())
    }
    fn encode(v: &&[u8], _: &TransactionId, out: &mut [u8]) {
        out.copy_from_slice(v);
    }
}

fn decode_family(t: AttrType, v: &[u8]) -> Result<AddressFamily, Error> {
    let &[f, _, _, _] = exact::<4>(t, v)?;
    AddressFamily::from_u8(f)
}

/// REQUESTED-ADDRESS-FAMILY (0x0017): family of the relayed address wanted.
#[derive(Debug, Clone, Copy)]
pub struct RequestedAddressFamily;
/// ADDITIONAL-ADDRESS-FAMILY (0x8000): asks for a second (IPv6) relayed
/// address in the same allocation.
#[derive(Debug, Clone, Copy)]
pub struct AdditionalAddressFamily;

macro_rules! family_attribute {
    ($name:ident, $ty:expr) => {
        impl Attribute for $name {
            const TYPE: AttrType = $ty;
            type Value<'a> = AddressFamily;
            fn decode(v: &[u8], _: &TransactionId) -> Result<AddressFamily, Error> {
                decode_family(Self::TYPE, v)
            }
        }
        impl EncodeAttribute for $name {
            fn encoded_len(_: &AddressFamily) -> Result<usize, Error> {
                Ok(4)
            }
            fn encode(v: &AddressFamily, _: &TransactionId, out: &mut [u8]) {
                if let Some(b) = out.first_mut() {
                    *b = v.to_u8();
                }
            }
        }
    };
}
family_attribute!(RequestedAddressFamily, AttrType::REQUESTED_ADDRESS_FAMILY);
family_attribute!(AdditionalAddressFamily, AttrType::ADDITIONAL_ADDRESS_FAMILY);

/// EVEN-PORT (0x0018): `true` if the R bit asks to reserve the next port.
/// The value is one byte; we also accept a 4-byte value from peers that
/// count the padding, since nothing is lost by doing so.
#[derive(Debug, Clone, Copy)]
pub struct EvenPort;
impl Attribute for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;
    type Value<'a> = bool;
    fn decode(v: &[u8], _: &TransactionId) -> Result<bool, Error> {
        match v {
            [b] | [b, _, _, _] => Ok(b & 0x80 != 0),
            _ => Err(Error::BadAttributeLength {
                attr_type: Self::TYPE,
                len: v.len(),
            }),
        }
    }
}
impl EncodeAttribute for EvenPort {
    fn encoded_len(_: &bool) -> Result<usize, Error> {
        Ok(1)
    }
    fn encode(v: &bool, _: &TransactionId, out: &mut [u8]) {
        if let Some(b) = out.first_mut() {
            *b = if *v { 0x80 } else { 0 };
        }
    }
}

/// REQUESTED-TRANSPORT (0x0019): IANA protocol number ([`PROTOCOL_UDP`]).
#[derive(Debug, Clone, Copy)]
pub struct RequestedTransport;
impl Attribute for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;
    type Value<'a> = u8;
    fn decode(v: &[u8], _: &TransactionId) -> Result<u8, Error> {
        let &[p, _, _, _] = exact::<4>(Self::TYPE, v)?;
        Ok(p)
    }
}
impl EncodeAttribute for RequestedTransport {
    fn encoded_len(_: &u8) -> Result<usize, Error> {
        Ok(4)
    }
    fn encode(v: &u8, _: &TransactionId, out: &mut [u8]) {
        if let Some(b) = out.first_mut() {
            *b = *v;
        }
    }
}

flag_attribute!(
    /// DONT-FRAGMENT (0x001A): set DF on relayed datagrams.
    DontFragment, AttrType::DONT_FRAGMENT
);

/// RESERVATION-TOKEN (0x0022): 8 opaque bytes naming a reserved port.
#[derive(Debug, Clone, Copy)]
pub struct ReservationToken;
impl Attribute for ReservationToken {
    const TYPE: AttrType = AttrType::RESERVATION_TOKEN;
    type Value<'a> = [u8; 8];
    fn decode(v: &[u8], _: &TransactionId) -> Result<[u8; 8], Error> {
        exact(Self::TYPE, v).copied()
    }
}
impl EncodeAttribute for ReservationToken {
    fn encoded_len(_: &[u8; 8]) -> Result<usize, Error> {
        Ok(8)
    }
    fn encode(v: &[u8; 8], _: &TransactionId, out: &mut [u8]) {
        out.copy_from_slice(v);
    }
}

/// Decoded ADDRESS-ERROR-CODE: which family of a dual allocation failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressErrorCodeValue<'a> {
    /// The family the error refers to.
    pub family: AddressFamily,
    /// 300..=699, typically 440 or 508.
    pub code: u16,
    /// UTF-8 reason phrase.
    pub reason: &'a str,
}

/// ADDRESS-ERROR-CODE (0x8001).
#[derive(Debug, Clone, Copy)]
pub struct AddressErrorCode;
impl Attribute for AddressErrorCode {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;
    type Value<'a> = AddressErrorCodeValue<'a>;
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<AddressErrorCodeValue<'a>, Error> {
        let (family, code, reason) = decode_code(Self::TYPE, v)?;
        Ok(AddressErrorCodeValue {
            family: AddressFamily::from_u8(family)?,
            code,
            reason,
        })
    }
}
impl EncodeAttribute for AddressErrorCode {
    fn encoded_len(v: &AddressErrorCodeValue<'_>) -> Result<usize, Error> {
        check_code(Self::TYPE, v.code, v.reason)
    }
    fn encode(v: &AddressErrorCodeValue<'_>, _: &TransactionId, out: &mut [u8]) {
        encode_code(v.family.to_u8(), v.code, v.reason, out)
    }
}

/// Decoded ICMP attribute (RFC 8656 §18.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpValue {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Error data (the next-hop MTU for "packet too big", else 0).
    pub error_data: u32,
}

/// ICMP (0x8004): two reserved bytes, type, code, 4 bytes of error data.
/// (The RFC's figure draws type as 7 and code as 9 bits; ICMP itself and
/// deployed servers use one byte each, so we do too.)
#[derive(Debug, Clone, Copy)]
pub struct Icmp;
impl Attribute for Icmp {
    const TYPE: AttrType = AttrType::ICMP;
    type Value<'a> = IcmpValue;
    fn decode(v: &[u8], _: &TransactionId) -> Result<IcmpValue, Error> {
        let &[_, _, icmp_type, code, d0, d1, d2, d3] = exact::<8>(Self::TYPE, v)?;
        Ok(IcmpValue {
            icmp_type,
            code,
            error_data: u32::from_be_bytes([d0, d1, d2, d3]),
        })
    }
}
impl EncodeAttribute for Icmp {
    fn encoded_len(_: &IcmpValue) -> Result<usize, Error> {
        Ok(8)
    }
    fn encode(v: &IcmpValue, _: &TransactionId, out: &mut [u8]) {
        let d = v.error_data.to_be_bytes();
        let bytes = [0, 0, v.icmp_type, v.code, d[0], d[1], d[2], d[3]];
        out.copy_from_slice(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([7; 12]);

    #[test]
    fn channel_number_range() {
        assert_eq!(ChannelNumber::decode(&[0x40, 0x00, 0, 0], &TID), Ok(0x4000));
        assert_eq!(
            ChannelNumber::decode(&[0x4f, 0xff, 0xaa, 0xbb], &TID),
            Ok(0x4fff)
        );
        assert_eq!(
            ChannelNumber::decode(&[0x50, 0x00, 0, 0], &TID),
            Err(Error::BadChannelNumber(0x5000))
        );
        assert_eq!(
            ChannelNumber::decode(&[0x3f, 0xff, 0, 0], &TID),
            Err(Error::BadChannelNumber(0x3fff))
        );
        assert!(ChannelNumber::decode(&[0x40, 0x00], &TID).is_err());
        assert_eq!(
            ChannelNumber::encoded_len(&0x1234),
            Err(Error::BadChannelNumber(0x1234))
        );
    }

    #[test]
    fn small_turn_values() {
        assert_eq!(
            RequestedTransport::decode(&[17, 0, 0, 0], &TID),
            Ok(PROTOCOL_UDP)
        );
        assert_eq!(
            RequestedAddressFamily::decode(&[2, 0, 0, 0], &TID),
            Ok(AddressFamily::V6)
        );
        assert_eq!(
            AdditionalAddressFamily::decode(&[9, 0, 0, 0], &TID),
            Err(Error::BadAddressFamily(9))
        );
        assert_eq!(EvenPort::decode(&[0x80], &TID), Ok(true));
        assert_eq!(EvenPort::decode(&[0x7f, 0, 0, 0], &TID), Ok(false));
        assert!(EvenPort::decode(&[], &TID).is_err());
        assert_eq!(DontFragment::decode(&[], &TID), Ok(()));
        assert_eq!(
            ReservationToken::decode(&[1, 2, 3, 4, 5, 6, 7, 8], &TID),
            Ok([1, 2, 3, 4, 5, 6, 7, 8])
        );
        assert_eq!(Lifetime::decode(&[0, 0, 0x02, 0x58], &TID), Ok(600));
    }

    #[test]
    fn icmp_and_address_error_code() {
        let v = IcmpValue {
            icmp_type: 3,
            code: 4,
            error_data: 1400,
        };
        let mut out = [0u8; 8];
        Icmp::encode(&v, &TID, &mut out);
        assert_eq!(out, [0, 0, 3, 4, 0, 0, 0x05, 0x78]);
        assert_eq!(Icmp::decode(&out, &TID), Ok(v));

        let e = AddressErrorCodeValue {
            family: AddressFamily::V6,
            code: 440,
            reason: "nope",
        };
        let mut out = vec![0u8; AddressErrorCode::encoded_len(&e).unwrap()];
        AddressErrorCode::encode(&e, &TID, &mut out);
        assert_eq!(&out[..4], &[2, 0, 4, 40]);
        assert_eq!(AddressErrorCode::decode(&out, &TID), Ok(e));
        out[0] = 0;
        assert_eq!(
            AddressErrorCode::decode(&out, &TID),
            Err(Error::BadAddressFamily(0))
        );
    }
}
