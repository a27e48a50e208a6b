//! The zero-copy parsed message view.
//!
//! [`Message::parse`] checks the header and walks every attribute TLV once,
//! rejecting anything that overruns the buffer or breaks the ordering rules
//! around MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 / FINGERPRINT. After
//! that, lookups ([`Message::get`]) and iteration borrow straight from the
//! input buffer and cannot go out of bounds. Integrity verification lives
//! in [`crate::integrity`] as further methods on [`Message`].

use core::fmt;

use crate::attr::{pad4, AttrType, Attribute, RawAttribute};
use crate::header::{parse_header, HEADER_LEN};
use crate::{Class, Error, MessageType, Method, TransactionId};

/// A validated STUN message borrowed from a buffer.
///
/// Attribute semantics follow RFC 8489 §14: attributes after
/// MESSAGE-INTEGRITY are ignored except MESSAGE-INTEGRITY-SHA256 and
/// FINGERPRINT, attributes after MESSAGE-INTEGRITY-SHA256 are ignored except
/// FINGERPRINT, and nothing may follow FINGERPRINT. For duplicates the first
/// occurrence wins.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    /// Exactly the message: header plus attributes.
    buf: &'a [u8],
    typ: MessageType,
    tid: TransactionId,
    /// Offsets of the TLV headers of the integrity attributes that count.
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
    /// Offset where ordinary attributes stop counting: the first
    /// MESSAGE-INTEGRITY(-SHA256)/FINGERPRINT, or the end of the message.
    protected_end: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Plain,
    AfterIntegrity,
    AfterIntegritySha256,
    AfterFingerprint,
}

impl<'a> Message<'a> {
    /// Parses a buffer that must contain exactly one message (a UDP payload).
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let (msg, used) = Self::parse_prefix(buf)?;
        match buf.len() - used {
            0 => Ok(msg),
            extra => Err(Error::TrailingBytes(extra)),
        }
    }

    /// Parses the message at the front of `buf` (a stream) and returns it
    /// with the number of bytes it occupies. [`Error::Truncated`] means more
    /// bytes are needed; see also [`crate::demux::frame_len`].
    pub fn parse_prefix(buf: &'a [u8]) -> Result<(Self, usize), Error> {
        let header = parse_header(buf)?;
        let total = HEADER_LEN + usize::from(header.len);
        let buf = buf.get(..total).ok_or(Error::Truncated {
            declared: usize::from(header.len),
            available: buf.len().saturating_sub(HEADER_LEN),
        })?;

        let mut msg = Message {
            buf,
            typ: header.typ,
            tid: header.tid,
            integrity: None,
            integrity_sha256: None,
            fingerprint: None,
            protected_end: total,
        };
        let mut stage = Stage::Plain;
        for tlv in (TlvWalk {
            buf,
            offset: HEADER_LEN,
        }) {
            let raw = tlv?;
            let t = raw.attr_type;
            if stage == Stage::AfterFingerprint {
                return Err(Error::AttributeAfterFingerprint(t));
            }
            let counts = match t {
                AttrType::MESSAGE_INTEGRITY if stage == Stage::Plain => {
                    crate::attr::MessageIntegrity::decode(raw.value, &msg.tid)?;
                    msg.integrity = Some(raw.offset);
                    stage = Stage::AfterIntegrity;
                    true
                }
                AttrType::MESSAGE_INTEGRITY_SHA256
                    if matches!(stage, Stage::Plain | Stage::AfterIntegrity) =>
                {
                    crate::attr::MessageIntegritySha256::decode(raw.value, &msg.tid)?;
                    msg.integrity_sha256 = Some(raw.offset);
                    stage = Stage::AfterIntegritySha256;
                    true
                }
                AttrType::FINGERPRINT => {
                    crate::attr::Fingerprint::decode(raw.value, &msg.tid)?;
                    msg.fingerprint = Some(raw.offset);
                    stage = Stage::AfterFingerprint;
                    true
                }
                _ => false,
            };
            if counts {
                msg.protected_end = msg.protected_end.min(raw.offset);
            }
        }
        Ok((msg, total))
    }

    /// The whole message as it was received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Total length in bytes, header included.
    #[allow(clippy::len_without_is_empty)] // a message is never empty
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Method and class.
    pub fn message_type(&self) -> MessageType {
        self.typ
    }
    /// The method.
    pub fn method(&self) -> Method {
        self.typ.method
    }
    /// The class.
    pub fn class(&self) -> Class {
        self.typ.class
    }
    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Every TLV in wire order, including ones RFC 8489 says to ignore
    /// (after the integrity attributes). Usually you want [`Self::attributes`].
    pub fn raw_attributes(&self) -> RawAttributes<'a> {
        RawAttributes {
            walk: TlvWalk {
                buf: self.buf,
                offset: HEADER_LEN,
            },
        }
    }

    /// The attributes that count: everything before the first integrity or
    /// fingerprint attribute, plus those integrity/fingerprint attributes
    /// themselves.
    pub fn attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        let this = *self;
        self.raw_attributes().filter(move |a| this.counts(a.offset))
    }

    fn counts(&self, offset: usize) -> bool {
        offset < self.protected_end
            || Some(offset) == self.integrity
            || Some(offset) == self.integrity_sha256
            || Some(offset) == self.fingerprint
    }

    /// Raw value of the first counting attribute of type `t`.
    pub fn get_raw(&self, t: AttrType) -> Option<&'a [u8]> {
        let at = match t {
            AttrType::MESSAGE_INTEGRITY => return self.value_at(self.integrity?),
            AttrType::MESSAGE_INTEGRITY_SHA256 => return self.value_at(self.integrity_sha256?),
            AttrType::FINGERPRINT => return self.value_at(self.fingerprint?),
            _ => self
                .raw_attributes()
                .take_while(|a| a.offset < self.protected_end)
                .find(|a| a.attr_type == t),
        };
        at.map(|a| a.value)
    }

    fn value_at(&self, offset: usize) -> Option<&'a [u8]> {
        TlvWalk {
            buf: self.buf,
            offset,
        }
        .next()?
        .ok()
        .map(|a| a.value)
    }

    /// Typed lookup: `Ok(None)` if absent, `Err` if present but malformed.
    ///
    /// ```
    /// # use stun::{Message, attr::Username};
    /// # fn f(msg: &Message<'_>) -> Result<(), stun::Error> {
    /// let user: Option<&str> = msg.get::<Username>()?;
    /// # Ok(()) }
    /// ```
    pub fn get<A: Attribute>(&self) -> Result<Option<A::Value<'a>>, Error> {
        match self.get_raw(A::TYPE) {
            Some(v) => A::decode(v, &self.tid).map(Some),
            None => Ok(None),
        }
    }

    /// Every counting occurrence of `A`, in order. For attributes that may
    /// repeat: several XOR-PEER-ADDRESS in a CreatePermission, two
    /// XOR-RELAYED-ADDRESS in a dual-stack Allocate response.
    pub fn get_all<A: Attribute>(&self) -> impl Iterator<Item = Result<A::Value<'a>, Error>> + 'a {
        let tid = self.tid;
        self.attributes()
            .filter(|a| a.attr_type == A::TYPE)
            .map(move |a| A::decode(a.value, &tid))
    }

    /// Like [`Self::get`] but absence is [`Error::MissingAttribute`].
    pub fn require<A: Attribute>(&self) -> Result<A::Value<'a>, Error> {
        self.get::<A>()?.ok_or(Error::MissingAttribute(A::TYPE))
    }

    /// Whether an attribute of this type is present (and counts). Handy for
    /// flags such as USE-CANDIDATE.
    pub fn contains<A: Attribute>(&self) -> bool {
        self.get_raw(A::TYPE).is_some()
    }

    /// Comprehension-required attributes (type < 0x8000) that `is_known`
    /// rejects: the list for a 420 response's UNKNOWN-ATTRIBUTES. Pass
    /// [`AttrType::is_known`] to use everything this crate can decode, or a
    /// narrower predicate (a plain STUN server does not "understand" TURN
    /// attributes).
    pub fn unknown_comprehension_required<F>(
        &self,
        is_known: F,
    ) -> impl Iterator<Item = AttrType> + 'a
    where
        F: Fn(AttrType) -> bool + 'a,
    {
        self.attributes()
            .map(|a| a.attr_type)
            .filter(move |t| t.is_comprehension_required() && !is_known(*t))
    }

    /// Offset of the MESSAGE-INTEGRITY TLV that counts, if any.
    pub(crate) fn integrity_offset(&self) -> Option<usize> {
        self.integrity
    }
    /// Offset of the MESSAGE-INTEGRITY-SHA256 TLV that counts, if any.
    pub(crate) fn integrity_sha256_offset(&self) -> Option<usize> {
        self.integrity_sha256
    }
    /// Offset of the FINGERPRINT TLV, if any.
    pub(crate) fn fingerprint_offset(&self) -> Option<usize> {
        self.fingerprint
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Attrs<'m>(Message<'m>);
        impl fmt::Debug for Attrs<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.attributes().map(|a| (a.attr_type, a.value.len())))
                    .finish()
            }
        }
        f.debug_struct("Message")
            .field("method", &self.typ.method)
            .field("class", &self.typ.class)
            .field("transaction_id", &self.tid)
            .field("len", &self.buf.len())
            .field("attributes", &Attrs(*self))
            .finish()
    }
}

/// Iterator over every TLV of a parsed message.
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    walk: TlvWalk<'a>,
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = RawAttribute<'a>;
    fn next(&mut self) -> Option<RawAttribute<'a>> {
        // The message was validated, so errors cannot occur; end quietly if
        // one somehow did instead of panicking.
        self.walk.next()?.ok()
    }
}

/// Bounds-checked TLV cursor used both for validation and iteration.
#[derive(Debug, Clone)]
struct TlvWalk<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for TlvWalk<'a> {
    type Item = Result<RawAttribute<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        let offset = self.offset;
        let rest = self.buf.get(offset..).filter(|r| !r.is_empty())?;
        let Some((&[t0, t1, l0, l1], after)) = rest.split_first_chunk::<4>() else {
            self.offset = self.buf.len();
            return Some(Err(Error::AttributeOverrun {
                attr_type: AttrType(0),
                offset,
                len: 0,
            }));
        };
        let attr_type = AttrType(u16::from_be_bytes([t0, t1]));
        let len = u16::from_be_bytes([l0, l1]);
        let Some(value) = after.get(..usize::from(len)) else {
            self.offset = self.buf.len();
            return Some(Err(Error::AttributeOverrun {
                attr_type,
                offset,
                len,
            }));
        };
        // Padding may run to the end of the buffer but not past it; the
        // header length is a multiple of 4 so this only trips on a bug.
        self.offset = (offset + 4 + pad4(usize::from(len))).min(self.buf.len());
        Some(Ok(RawAttribute {
            attr_type,
            value,
            offset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Software, Username};
    use crate::MAGIC_COOKIE;

    /// Builds a message by hand (no writer) so parser tests do not depend on it.
    fn msg(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = vec![0, 1, 0, 0];
        v.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        v.extend_from_slice(&[9; 12]);
        for (t, val) in attrs {
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&(val.len() as u16).to_be_bytes());
            v.extend_from_slice(val);
            while v.len() % 4 != 0 {
                v.push(0);
            }
        }
        let len = (v.len() - 20) as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn parses_and_looks_up() {
        let b = msg(&[(0x0006, b"alice"), (0x8022, b"sw"), (0x0006, b"bob")]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.method(), Method::BINDING);
        assert_eq!(m.class(), Class::Request);
        assert_eq!(m.transaction_id(), TransactionId([9; 12]));
        assert_eq!(
            m.get::<Username>(),
            Ok(Some("alice")),
            "first occurrence wins"
        );
        assert_eq!(m.require::<Software>(), Ok("sw"));
        assert_eq!(m.get::<crate::attr::Realm>(), Ok(None));
        assert_eq!(
            m.require::<crate::attr::Realm>(),
            Err(Error::MissingAttribute(AttrType::REALM))
        );
        assert_eq!(m.attributes().count(), 3);
        assert_eq!(m.len(), b.len());
    }

    #[test]
    fn framing_errors() {
        let b = msg(&[(0x0006, b"alice")]);
        assert_eq!(
            Message::parse(&b[..10]).unwrap_err(),
            Error::HeaderTooShort(10)
        );
        assert_eq!(
            Message::parse(&b[..b.len() - 4]).unwrap_err(),
            Error::Truncated {
                declared: 12,
                available: 8
            }
        );
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(Message::parse(&extra).unwrap_err(), Error::TrailingBytes(1));
        assert_eq!(Message::parse_prefix(&extra).map(|(_, n)| n), Ok(b.len()));

        // Attribute length runs past the end.
        let mut over = b.clone();
        over[23] = 13;
        assert_eq!(
            Message::parse(&over).unwrap_err(),
            Error::AttributeOverrun {
                attr_type: AttrType::USERNAME,
                offset: 20,
                len: 13
            }
        );
    }

    #[test]
    fn fingerprint_must_be_last() {
        let b = msg(&[(0x8028, &[0; 4]), (0x8022, b"x")]);
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            Error::AttributeAfterFingerprint(AttrType::SOFTWARE)
        );
        let b = msg(&[(0x8028, &[0; 3])]);
        assert_eq!(
            Message::parse(&b).unwrap_err(),
            Error::BadAttributeLength {
                attr_type: AttrType::FINGERPRINT,
                len: 3
            }
        );
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let b = msg(&[
            (0x8022, b"before"),
            (0x0008, &[0; 20]),
            (0x0006, b"after-mi"),
            (0x001C, &[0; 32]),
            (0x0014, b"after-sha256"),
            (0x8028, &[0; 4]),
        ]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(m.get::<Software>(), Ok(Some("before")));
        assert_eq!(m.get::<Username>(), Ok(None));
        assert_eq!(m.get::<crate::attr::Realm>(), Ok(None));
        assert!(m.contains::<crate::attr::MessageIntegrity>());
        assert!(m.contains::<crate::attr::MessageIntegritySha256>());
        assert!(m.contains::<crate::attr::Fingerprint>());
        let counted: Vec<_> = m.attributes().map(|a| a.attr_type).collect();
        assert_eq!(
            counted,
            [
                AttrType::SOFTWARE,
                AttrType::MESSAGE_INTEGRITY,
                AttrType::MESSAGE_INTEGRITY_SHA256,
                AttrType::FINGERPRINT
            ]
        );
        assert_eq!(m.raw_attributes().count(), 6);
    }

    #[test]
    fn repeated_attributes() {
        let b = msg(&[
            (0x0012, &[0, 1, 0x21, 0x13, 0x21, 0x12, 0xa4, 0x43]),
            (0x8022, b"x"),
            (0x0012, &[0, 1, 0x21, 0x12, 0x21, 0x12, 0xa4, 0x44]),
            (0x0008, &[0; 20]),
            (0x0012, &[0, 1, 0, 0, 0, 0, 0, 0]),
        ]);
        let m = Message::parse(&b).unwrap();
        let peers: Vec<_> = m
            .get_all::<crate::attr::XorPeerAddress>()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            peers,
            ["0.0.0.1:1".parse().unwrap(), "0.0.0.6:0".parse().unwrap()],
            "the one after MESSAGE-INTEGRITY is ignored"
        );
    }

    #[test]
    fn unknown_required_list() {
        let b = msg(&[(0x7777, b""), (0x8777, b""), (0x0019, &[17, 0, 0, 0])]);
        let m = Message::parse(&b).unwrap();
        let all: Vec<_> = m
            .unknown_comprehension_required(AttrType::is_known)
            .collect();
        assert_eq!(all, [AttrType(0x7777)]);
        let stun_only: Vec<_> = m
            .unknown_comprehension_required(|t| t == AttrType::USERNAME)
            .collect();
        assert_eq!(stun_only, [AttrType(0x7777), AttrType::REQUESTED_TRANSPORT]);
    }

    #[test]
    fn malformed_value_reported_on_get() {
        let b = msg(&[(0x0020, &[0, 7, 0, 0, 1, 2, 3, 4])]);
        let m = Message::parse(&b).unwrap();
        assert_eq!(
            m.get::<crate::attr::XorMappedAddress>(),
            Err(Error::BadAddressFamily(7))
        );
    }
}
