//! RFC 8489 attributes other than addresses: text attributes (USERNAME,
//! REALM, NONCE, SOFTWARE, ALTERNATE-DOMAIN), USERHASH, the integrity and
//! fingerprint attributes (decode only; the writer computes them),
//! ERROR-CODE, UNKNOWN-ATTRIBUTES and PASSWORD-ALGORITHM(S).

use core::fmt;

use super::{exact, pad4, text, text_attribute, AttrType, Attribute, EncodeAttribute};
use crate::integrity::PasswordAlg;
use crate::{Error, TransactionId};

/// USERNAME limit. RFC 8489 says fewer than 509 bytes after OpaqueString
/// processing and RFC 5389 said fewer than 513; we accept the older bound so
/// that no legitimate peer is rejected.
pub const MAX_USERNAME_LEN: usize = 512;
/// REALM, NONCE, SOFTWARE, ALTERNATE-DOMAIN and reason-phrase limit:
/// "fewer than 128 characters, as long as 763 bytes when decoding".
pub const MAX_TEXT_LEN: usize = 763;

text_attribute!(
    /// USERNAME (0x0006): the user and (for ICE) the `ufrag:ufrag` pair.
    Username, AttrType::USERNAME, MAX_USERNAME_LEN
);
text_attribute!(
    /// REALM (0x0014): the long-term credential realm.
    Realm, AttrType::REALM, MAX_TEXT_LEN
);
text_attribute!(
    /// NONCE (0x0015): the server nonce; with RFC 8489 it may begin with the
    /// "obMatJos2" security-feature cookie, which is returned as-is.
    Nonce, AttrType::NONCE, MAX_TEXT_LEN
);
text_attribute!(
    /// SOFTWARE (0x8022): agent description.
    Software, AttrType::SOFTWARE, MAX_TEXT_LEN
);
text_attribute!(
    /// ALTERNATE-DOMAIN (0x8003): TLS name for ALTERNATE-SERVER.
    AlternateDomain, AttrType::ALTERNATE_DOMAIN, MAX_TEXT_LEN
);

/// USERHASH (0x001E): SHA-256 of `username ":" realm`, 32 bytes. See
/// [`crate::integrity::userhash`].
#[derive(Debug, Clone, Copy)]
pub struct Userhash;
impl Attribute for Userhash {
    const TYPE: AttrType = AttrType::USERHASH;
    type Value<'a> = &'a [u8; 32];
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<&'a [u8; 32], Error> {
        exact(Self::TYPE, v)
    }
}
impl EncodeAttribute for Userhash {
    fn encoded_len(_: &&[u8; 32]) -> Result<usize, Error> {
        Ok(32)
    }
    fn encode(v: &&[u8; 32], _: &TransactionId, out: &mut [u8]) {
        out.copy_from_slice(&v[..]);
    }
}

/// MESSAGE-INTEGRITY (0x0008): HMAC-SHA1, 20 bytes. Decode-only; use
/// [`Message::verify_message_integrity`](crate::Message::verify_message_integrity)
/// and [`MessageWriter::add_message_integrity`](crate::MessageWriter::add_message_integrity).
#[derive(Debug, Clone, Copy)]
pub struct MessageIntegrity;
impl Attribute for MessageIntegrity {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY;
    type Value<'a> = &'a [u8; 20];
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<&'a [u8; 20], Error> {
        exact(Self::TYPE, v)
    }
}

/// MESSAGE-INTEGRITY-SHA256 (0x001C): HMAC-SHA256, possibly truncated to
/// 16..=32 bytes in steps of 4. Decode-only.
#[derive(Debug, Clone, Copy)]
pub struct MessageIntegritySha256;
impl Attribute for MessageIntegritySha256 {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;
    type Value<'a> = &'a [u8];
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<&'a [u8], Error> {
        if valid_sha256_len(v.len()) {
            Ok(v)
        } else {
            Err(Error::BadAttributeLength {
                attr_type: Self::TYPE,
                len: v.len(),
            })
        }
    }
}

pub(crate) const fn valid_sha256_len(n: usize) -> bool {
    n >= 16 && n <= 32 && n % 4 == 0
}

/// FINGERPRINT (0x8028): CRC-32 of the message XOR 0x5354554e. Decode-only;
/// use [`Message::verify_fingerprint`](crate::Message::verify_fingerprint).
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint;
impl Attribute for Fingerprint {
    const TYPE: AttrType = AttrType::FINGERPRINT;
    type Value<'a> = u32;
    fn decode(v: &[u8], _: &TransactionId) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(*exact(Self::TYPE, v)?))
    }
}

/// Decoded ERROR-CODE / the input for writing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodeValue<'a> {
    /// 300..=699.
    pub code: u16,
    /// UTF-8 reason phrase.
    pub reason: &'a str,
}

impl<'a> ErrorCodeValue<'a> {
    /// Code with a custom reason.
    pub const fn new(code: u16, reason: &'a str) -> Self {
        ErrorCodeValue { code, reason }
    }
}

impl ErrorCodeValue<'static> {
    /// Code with the reason phrase the RFCs suggest (empty for codes this
    /// crate does not know).
    pub const fn standard(code: u16) -> Self {
        ErrorCodeValue {
            code,
            reason: standard_reason(code),
        }
    }
}

/// The reason phrases suggested by RFC 8489 §14.8 and RFC 8656 §18.
pub const fn standard_reason(code: u16) -> &'static str {
    use crate::code::*;
    match code {
        TRY_ALTERNATE => "Try Alternate",
        BAD_REQUEST => "Bad Request",
        UNAUTHORIZED => "Unauthorized",
        FORBIDDEN => "Forbidden",
        MOBILITY_FORBIDDEN => "Mobility Forbidden",
        UNKNOWN_ATTRIBUTE => "Unknown Attribute",
        ALLOCATION_MISMATCH => "Allocation Mismatch",
        STALE_NONCE => "Stale Nonce",
        ADDRESS_FAMILY_NOT_SUPPORTED => "Address Family not Supported",
        WRONG_CREDENTIALS => "Wrong Credentials",
        UNSUPPORTED_TRANSPORT_PROTOCOL => "Unsupported Transport Protocol",
        PEER_ADDRESS_FAMILY_MISMATCH => "Peer Address Family Mismatch",
        ALLOCATION_QUOTA_REACHED => "Allocation Quota Reached",
        ROLE_CONFLICT => "Role Conflict",
        SERVER_ERROR => "Server Error",
        INSUFFICIENT_CAPACITY => "Insufficient Capacity",
        _ => "",
    }
}

/// Shared by ERROR-CODE and ADDRESS-ERROR-CODE: bytes 2..4 carry class (low
/// 3 bits) and number, the reason follows.
pub(crate) fn decode_code(t: AttrType, v: &[u8]) -> Result<(u8, u16, &str), Error> {
    let (&[b0, _, class, number], reason) =
        v.split_first_chunk::<4>()
            .ok_or(Error::BadAttributeLength {
                attr_type: t,
                len: v.len(),
            })?;
    let class = u16::from(class & 0x07);
    let number = u16::from(number);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(Error::BadErrorCode { class, number });
    }
    Ok((b0, class * 100 + number, text(t, reason, MAX_TEXT_LEN)?))
}

pub(crate) fn check_code(t: AttrType, code: u16, reason: &str) -> Result<usize, Error> {
    if !(300..=699).contains(&code) {
        return Err(Error::BadErrorCode {
            class: code / 100,
            number: code % 100,
        });
    }
    if reason.len() > MAX_TEXT_LEN {
        return Err(Error::ValueTooLong {
            attr_type: t,
            len: reason.len(),
            max: MAX_TEXT_LEN,
        });
    }
    Ok(4 + reason.len())
}

pub(crate) fn encode_code(b0: u8, code: u16, reason: &str, out: &mut [u8]) {
    // `code` was checked to be 300..=699 so both fit in a byte.
    let head = [b0, 0, (code / 100) as u8, (code % 100) as u8];
    for (dst, src) in out.iter_mut().zip(head.iter().chain(reason.as_bytes())) {
        *dst = *src;
    }
}

/// ERROR-CODE (0x0009).
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode;
impl Attribute for ErrorCode {
    const TYPE: AttrType = AttrType::ERROR_CODE;
    type Value<'a> = ErrorCodeValue<'a>;
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<ErrorCodeValue<'a>, Error> {
        let (_, code, reason) = decode_code(Self::TYPE, v)?;
        Ok(ErrorCodeValue { code, reason })
    }
}
impl EncodeAttribute for ErrorCode {
    fn encoded_len(v: &ErrorCodeValue<'_>) -> Result<usize, Error> {
        check_code(Self::TYPE, v.code, v.reason)
    }
    fn encode(v: &ErrorCodeValue<'_>, _: &TransactionId, out: &mut [u8]) {
        encode_code(0, v.code, v.reason, out)
    }
}

// ---- UNKNOWN-ATTRIBUTES ------------------------------------------------------

#[derive(Clone, Copy)]
enum TypeListRepr<'a> {
    /// Validated wire bytes (even length).
    Wire(&'a [u8]),
    Items(&'a [AttrType]),
}

/// A list of attribute types: borrowed from the wire when decoded, from a
/// caller slice when written. Equality compares the listed types.
#[derive(Clone, Copy)]
pub struct AttrTypeList<'a>(TypeListRepr<'a>);

impl<'a> AttrTypeList<'a> {
    /// A list to write.
    pub const fn new(items: &'a [AttrType]) -> Self {
        AttrTypeList(TypeListRepr::Items(items))
    }
    /// Number of entries.
    pub const fn len(&self) -> usize {
        match self.0 {
            TypeListRepr::Wire(w) => w.len() / 2,
            TypeListRepr::Items(i) => i.len(),
        }
    }
    /// True if empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The listed types in order.
    pub fn iter(&self) -> AttrTypeIter<'a> {
        match self.0 {
            TypeListRepr::Wire(w) => AttrTypeIter {
                wire: w.chunks_exact(2),
                items: [].iter(),
            },
            TypeListRepr::Items(i) => AttrTypeIter {
                wire: [].chunks_exact(2),
                items: i.iter(),
            },
        }
    }
}

impl<'a> IntoIterator for AttrTypeList<'a> {
    type Item = AttrType;
    type IntoIter = AttrTypeIter<'a>;
    fn into_iter(self) -> AttrTypeIter<'a> {
        self.iter()
    }
}

impl PartialEq for AttrTypeList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for AttrTypeList<'_> {}

impl fmt::Debug for AttrTypeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over an [`AttrTypeList`].
#[derive(Debug, Clone)]
pub struct AttrTypeIter<'a> {
    wire: core::slice::ChunksExact<'a, u8>,
    items: core::slice::Iter<'a, AttrType>,
}

impl Iterator for AttrTypeIter<'_> {
    type Item = AttrType;
    fn next(&mut self) -> Option<AttrType> {
        match self.wire.next() {
            Some(&[a, b]) => Some(AttrType(u16::from_be_bytes([a, b]))),
            Some(_) => None,
            None => self.items.next().copied(),
        }
    }
}

/// UNKNOWN-ATTRIBUTES (0x000A): sent in a 420 response.
#[derive(Debug, Clone, Copy)]
pub struct UnknownAttributes;
impl Attribute for UnknownAttributes {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;
    type Value<'a> = AttrTypeList<'a>;
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<AttrTypeList<'a>, Error> {
        if v.len() % 2 != 0 {
            return Err(Error::BadAttributeLength {
                attr_type: Self::TYPE,
                len: v.len(),
            });
        }
        Ok(AttrTypeList(TypeListRepr::Wire(v)))
    }
}
impl EncodeAttribute for UnknownAttributes {
    fn encoded_len(v: &AttrTypeList<'_>) -> Result<usize, Error> {
        Ok(v.len() * 2)
    }
    fn encode(v: &AttrTypeList<'_>, _: &TransactionId, out: &mut [u8]) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(v.iter()) {
            chunk.copy_from_slice(&t.0.to_be_bytes());
        }
    }
}

// ---- PASSWORD-ALGORITHM(S) ---------------------------------------------------

/// One password algorithm entry: the IANA number and its parameters (none
/// for MD5 and SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithmParams<'a> {
    /// 0x0001 = MD5, 0x0002 = SHA-256.
    pub algorithm: u16,
    /// Parameters, unpadded.
    pub params: &'a [u8],
}

impl<'a> PasswordAlgorithmParams<'a> {
    /// An entry without parameters.
    pub const fn new(alg: PasswordAlg) -> Self {
        PasswordAlgorithmParams {
            algorithm: alg.to_u16(),
            params: &[],
        }
    }
    /// The algorithm, if it is one this crate can derive keys for.
    pub const fn known(&self) -> Option<PasswordAlg> {
        PasswordAlg::from_u16(self.algorithm)
    }
    fn wire_len(&self) -> usize {
        4 + pad4(self.params.len())
    }
    fn write(&self, out: &mut [u8]) {
        let plen = self.params.len() as u16; // checked by encoded_len
        let head = self
            .algorithm
            .to_be_bytes()
            .into_iter()
            .chain(plen.to_be_bytes());
        for (dst, src) in out.iter_mut().zip(head.chain(self.params.iter().copied())) {
            *dst = src;
        }
    }
}

/// Reads one entry at the front of `v`; returns it and the rest (the last
/// entry's padding may be absent).
fn split_entry(t: AttrType, v: &[u8]) -> Result<(PasswordAlgorithmParams<'_>, &[u8]), Error> {
    let bad = Error::BadAttributeLength {
        attr_type: t,
        len: v.len(),
    };
    let (&[a0, a1, l0, l1], rest) = v.split_first_chunk::<4>().ok_or(bad)?;
    let plen = usize::from(u16::from_be_bytes([l0, l1]));
    let params = rest.get(..plen).ok_or(bad)?;
    let rest = rest.get(pad4(plen)..).unwrap_or(&[]);
    Ok((
        PasswordAlgorithmParams {
            algorithm: u16::from_be_bytes([a0, a1]),
            params,
        },
        rest,
    ))
}

/// PASSWORD-ALGORITHM (0x001D): the algorithm the client chose.
#[derive(Debug, Clone, Copy)]
pub struct PasswordAlgorithm;
impl Attribute for PasswordAlgorithm {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;
    type Value<'a> = PasswordAlgorithmParams<'a>;
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<PasswordAlgorithmParams<'a>, Error> {
        match split_entry(Self::TYPE, v)? {
            (entry, []) => Ok(entry),
            _ => Err(Error::BadAttributeLength {
                attr_type: Self::TYPE,
                len: v.len(),
            }),
        }
    }
}
impl EncodeAttribute for PasswordAlgorithm {
    fn encoded_len(v: &PasswordAlgorithmParams<'_>) -> Result<usize, Error> {
        if v.params.len() > usize::from(u16::MAX) {
            return Err(Error::ValueTooLong {
                attr_type: Self::TYPE,
                len: v.params.len(),
                max: usize::from(u16::MAX),
            });
        }
        Ok(4 + v.params.len())
    }
    fn encode(v: &PasswordAlgorithmParams<'_>, _: &TransactionId, out: &mut [u8]) {
        v.write(out)
    }
}

#[derive(Clone, Copy)]
enum AlgListRepr<'a> {
    Wire(&'a [u8]),
    Items(&'a [PasswordAlgorithmParams<'a>]),
}

/// The server's offered algorithms, in preference order.
#[derive(Clone, Copy)]
pub struct PasswordAlgorithmList<'a>(AlgListRepr<'a>);

impl<'a> PasswordAlgorithmList<'a> {
    /// A list to write.
    pub const fn new(items: &'a [PasswordAlgorithmParams<'a>]) -> Self {
        PasswordAlgorithmList(AlgListRepr::Items(items))
    }
    /// The entries in order.
    pub fn iter(&self) -> PasswordAlgorithmIter<'a> {
        match self.0 {
            AlgListRepr::Wire(w) => PasswordAlgorithmIter {
                wire: w,
                items: [].iter(),
            },
            AlgListRepr::Items(i) => PasswordAlgorithmIter {
                wire: &[],
                items: i.iter(),
            },
        }
    }
}

impl<'a> IntoIterator for PasswordAlgorithmList<'a> {
    type Item = PasswordAlgorithmParams<'a>;
    type IntoIter = PasswordAlgorithmIter<'a>;
    fn into_iter(self) -> PasswordAlgorithmIter<'a> {
        self.iter()
    }
}

impl PartialEq for PasswordAlgorithmList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for PasswordAlgorithmList<'_> {}

impl fmt::Debug for PasswordAlgorithmList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`PasswordAlgorithmList`].
#[derive(Debug, Clone)]
pub struct PasswordAlgorithmIter<'a> {
    wire: &'a [u8],
    items: core::slice::Iter<'a, PasswordAlgorithmParams<'a>>,
}

impl<'a> Iterator for PasswordAlgorithmIter<'a> {
    type Item = PasswordAlgorithmParams<'a>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.wire.is_empty() {
            return self.items.next().copied();
        }
        // The wire form was validated at decode time; stop on anything odd
        // anyway rather than trusting that.
        match split_entry(AttrType::PASSWORD_ALGORITHMS, self.wire) {
            Ok((entry, rest)) => {
                self.wire = rest;
                Some(entry)
            }
            Err(_) => {
                self.wire = &[];
                None
            }
        }
    }
}

/// PASSWORD-ALGORITHMS (0x8002).
#[derive(Debug, Clone, Copy)]
pub struct PasswordAlgorithms;
impl Attribute for PasswordAlgorithms {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;
    type Value<'a> = PasswordAlgorithmList<'a>;
    fn decode<'a>(v: &'a [u8], _: &TransactionId) -> Result<PasswordAlgorithmList<'a>, Error> {
        let mut rest = v;
        while !rest.is_empty() {
            rest = split_entry(Self::TYPE, rest)?.1;
        }
        Ok(PasswordAlgorithmList(AlgListRepr::Wire(v)))
    }
}
impl EncodeAttribute for PasswordAlgorithms {
    fn encoded_len(v: &PasswordAlgorithmList<'_>) -> Result<usize, Error> {
        let mut n = 0usize;
        for e in v.iter() {
            if e.params.len() > usize::from(u16::MAX) {
                return Err(Error::ValueTooLong {
                    attr_type: Self::TYPE,
                    len: e.params.len(),
                    max: usize::from(u16::MAX),
                });
            }
            n = n.saturating_add(e.wire_len());
        }
        Ok(n)
    }
    fn encode(v: &PasswordAlgorithmList<'_>, _: &TransactionId, out: &mut [u8]) {
        let mut rest = out;
        for e in v.iter() {
            let n = e.wire_len().min(rest.len());
            let (this, tail) = core::mem::take(&mut rest).split_at_mut(n);
            e.write(this);
            rest = tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([0; 12]);

    #[test]
    fn error_code_wire_form() {
        let v = ErrorCodeValue::standard(438);
        assert_eq!(v.reason, "Stale Nonce");
        let mut out = vec![0u8; ErrorCode::encoded_len(&v).unwrap()];
        ErrorCode::encode(&v, &TID, &mut out);
        assert_eq!(&out[..4], &[0, 0, 4, 38]);
        assert_eq!(ErrorCode::decode(&out, &TID), Ok(v));
        assert_eq!(
            ErrorCode::decode(&[0, 0, 2, 0], &TID),
            Err(Error::BadErrorCode {
                class: 2,
                number: 0
            })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 4, 100], &TID),
            Err(Error::BadErrorCode {
                class: 4,
                number: 100
            })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 4], &TID),
            Err(Error::BadAttributeLength {
                attr_type: AttrType::ERROR_CODE,
                len: 3
            })
        );
        assert_eq!(
            ErrorCode::decode(&[0, 0, 4, 1, 0xff], &TID),
            Err(Error::InvalidUtf8(AttrType::ERROR_CODE))
        );
        assert_eq!(
            ErrorCode::encoded_len(&ErrorCodeValue::new(700, "")),
            Err(Error::BadErrorCode {
                class: 7,
                number: 0
            })
        );
        // Reserved bits above the class are ignored on receipt.
        assert_eq!(
            ErrorCode::decode(&[0xff, 0xff, 0xfc, 1], &TID).map(|v| v.code),
            Ok(401)
        );
    }

    #[test]
    fn unknown_attributes_list() {
        let items = [AttrType(0x0003), AttrType::CHANNEL_NUMBER, AttrType(0x7fff)];
        let list = AttrTypeList::new(&items);
        let mut out = vec![0u8; UnknownAttributes::encoded_len(&list).unwrap()];
        UnknownAttributes::encode(&list, &TID, &mut out);
        assert_eq!(out, [0, 3, 0, 0x0c, 0x7f, 0xff]);
        let back = UnknownAttributes::decode(&out, &TID).unwrap();
        assert_eq!(back, list);
        assert_eq!(back.len(), 3);
        assert!(UnknownAttributes::decode(&out[..5], &TID).is_err());
    }

    #[test]
    fn password_algorithms() {
        let wire = [0, 2, 0, 0, 0, 1, 0, 0, 0x12, 0x34, 0, 3, 1, 2, 3, 0];
        let list = PasswordAlgorithms::decode(&wire, &TID).unwrap();
        let entries: Vec<_> = list.iter().collect();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].known(), Some(PasswordAlg::Sha256));
        assert_eq!(entries[1].known(), Some(PasswordAlg::Md5));
        assert_eq!(
            entries[2],
            PasswordAlgorithmParams {
                algorithm: 0x1234,
                params: &[1, 2, 3]
            }
        );
        assert_eq!(PasswordAlgorithms::encoded_len(&list), Ok(16));
        let mut out = [0u8; 16];
        PasswordAlgorithms::encode(&list, &TID, &mut out);
        assert_eq!(out, wire);
        // Parameter length overruns the value.
        assert!(PasswordAlgorithms::decode(&[0, 1, 0, 9, 0, 0], &TID).is_err());
        assert!(PasswordAlgorithms::decode(&[0, 1, 0], &TID).is_err());
        // Single entry form.
        assert_eq!(
            PasswordAlgorithm::decode(&[0, 1, 0, 0], &TID).map(|e| e.known()),
            Ok(Some(PasswordAlg::Md5))
        );
        assert!(PasswordAlgorithm::decode(&[0, 1, 0, 0, 0, 2, 0, 0], &TID).is_err());
    }

    #[test]
    fn text_limits() {
        let long = "x".repeat(MAX_USERNAME_LEN + 1);
        assert!(matches!(
            Username::encoded_len(&long.as_str()),
            Err(Error::ValueTooLong { .. })
        ));
        assert!(matches!(
            Username::decode(long.as_bytes(), &TID),
            Err(Error::ValueTooLong { .. })
        ));
        assert_eq!(
            Realm::decode(&[0xc3, 0x28], &TID),
            Err(Error::InvalidUtf8(AttrType::REALM))
        );
    }

    #[test]
    fn integrity_value_lengths() {
        assert!(MessageIntegritySha256::decode(&[0; 16], &TID).is_ok());
        assert!(MessageIntegritySha256::decode(&[0; 12], &TID).is_err());
        assert!(MessageIntegritySha256::decode(&[0; 18], &TID).is_err());
        assert!(MessageIntegritySha256::decode(&[0; 36], &TID).is_err());
        assert!(MessageIntegrity::decode(&[0; 19], &TID).is_err());
        assert_eq!(Fingerprint::decode(&[1, 2, 3, 4], &TID), Ok(0x0102_0304));
    }
}
