//! Encoding: [`MessageWriter`] appends a message to a caller-owned
//! `Vec<u8>` or writes it into a caller-owned `&mut [u8]`, attribute by
//! attribute, and finishes with MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
//!
//! The header length field is updated after every attribute, so the buffer
//! holds a well-formed message at every step; that is also what makes the
//! integrity computations simple (they see the exact prefix they cover).
//! Nothing is allocated besides growing the caller's `Vec`.

use crate::attr::stun::valid_sha256_len;
use crate::attr::{pad4, AttrType, EncodeAttribute, ErrorCode, ErrorCodeValue};
use crate::header::{HEADER_LEN, MAGIC_COOKIE, MAX_ATTRS_LEN};
use crate::integrity::{compute_fingerprint, compute_sha1, compute_sha256};
use crate::{Class, Error, Message, MessageType, TransactionId};

enum Out<'b> {
    /// Message occupies `vec[start..]`.
    Vec { vec: &'b mut Vec<u8>, start: usize },
    /// Message occupies `slice[..len]`.
    Slice { slice: &'b mut [u8], len: usize },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Plain,
    AfterIntegrity,
    AfterIntegritySha256,
    AfterFingerprint,
}

/// Incremental STUN message encoder over a caller-provided buffer.
///
/// ```
/// use stun::{attr::{Software, XorMappedAddress}, MessageType, MessageWriter, TransactionId};
/// let mut buf = Vec::new();
/// let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_SUCCESS, TransactionId([1; 12]));
/// w.add::<XorMappedAddress>("192.0.2.1:3478".parse().unwrap())?;
/// w.add::<Software>("switchboard")?;
/// w.add_message_integrity(b"password")?;
/// w.add_fingerprint()?;
/// let n = w.finish();
/// assert_eq!(n, buf.len());
/// # Ok::<(), stun::Error>(())
/// ```
pub struct MessageWriter<'b> {
    out: Out<'b>,
    tid: TransactionId,
    stage: Stage,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message at the end of `out` (existing content is kept, so a
    /// caller can e.g. reserve room for its own framing first).
    pub fn new(out: &'b mut Vec<u8>, typ: MessageType, tid: TransactionId) -> Self {
        let start = out.len();
        out.extend_from_slice(&header_bytes(typ, tid));
        MessageWriter {
            out: Out::Vec { vec: out, start },
            tid,
            stage: Stage::Plain,
        }
    }

    /// Starts a message at the beginning of `out`; [`Self::finish`] returns
    /// how many bytes were used.
    pub fn new_in_slice(
        out: &'b mut [u8],
        typ: MessageType,
        tid: TransactionId,
    ) -> Result<Self, Error> {
        let available = out.len();
        let head = out.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall {
            needed: HEADER_LEN,
            available,
        })?;
        head.copy_from_slice(&header_bytes(typ, tid));
        Ok(MessageWriter {
            out: Out::Slice {
                slice: out,
                len: HEADER_LEN,
            },
            tid,
            stage: Stage::Plain,
        })
    }

    /// A success response to `request`: same method and transaction id.
    pub fn success_response(out: &'b mut Vec<u8>, request: &Message<'_>) -> Self {
        Self::new(
            out,
            MessageType::new(request.method(), Class::SuccessResponse),
            request.transaction_id(),
        )
    }

    /// An error response to `request` with ERROR-CODE already added.
    pub fn error_response(
        out: &'b mut Vec<u8>,
        request: &Message<'_>,
        error: ErrorCodeValue<'_>,
    ) -> Result<Self, Error> {
        let mut w = Self::new(
            out,
            MessageType::new(request.method(), Class::ErrorResponse),
            request.transaction_id(),
        );
        w.add::<ErrorCode>(error)?;
        Ok(w)
    }

    /// The transaction id being written.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// The message as written so far (always well-formed).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.out {
            Out::Vec { vec, start } => vec.get(*start..).unwrap_or(&[]),
            Out::Slice { slice, len } => slice.get(..*len).unwrap_or(&[]),
        }
    }

    fn as_bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.out {
            Out::Vec { vec, start } => vec.get_mut(*start..).unwrap_or(&mut []),
            Out::Slice { slice, len } => slice.get_mut(..*len).unwrap_or(&mut []),
        }
    }

    /// Message length so far, header included.
    fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Appends one TLV with a `value_len`-byte value (plus zero padding),
    /// lets `fill` write the value, and fixes the header length. Checks
    /// everything before touching the buffer so a failed add leaves the
    /// message as it was.
    fn push_tlv(
        &mut self,
        t: AttrType,
        value_len: usize,
        fill: impl FnOnce(&mut [u8], &[u8]),
    ) -> Result<(), Error> {
        let offset = self.len();
        let new_len = offset + 4 + pad4(value_len);
        if new_len - HEADER_LEN > MAX_ATTRS_LEN {
            return Err(Error::MessageTooLong(new_len));
        }
        match &mut self.out {
            Out::Vec { vec, start } => vec.resize(*start + new_len, 0),
            Out::Slice { slice, len } => {
                let available = slice.len();
                let region = slice.get_mut(*len..new_len).ok_or(Error::BufferTooSmall {
                    needed: new_len,
                    available,
                })?;
                region.fill(0);
                *len = new_len;
            }
        }
        let msg = self.as_bytes_mut();
        // Both fit in u16: new_len - 20 <= MAX_ATTRS_LEN was checked above.
        let body_len = (new_len - HEADER_LEN) as u16;
        let [t0, t1] = t.0.to_be_bytes();
        let [l0, l1] = (value_len as u16).to_be_bytes();
        let tlv_head = [t0, t1, l0, l1];
        if let Some(h) = msg.get_mut(2..4) {
            h.copy_from_slice(&body_len.to_be_bytes());
        }
        if let Some(h) = msg.get_mut(offset..offset + 4) {
            h.copy_from_slice(&tlv_head);
        }
        let (prefix, rest) = msg.split_at_mut(offset.min(msg.len()));
        if let Some(value) = rest.get_mut(4..4 + value_len) {
            fill(value, prefix);
        }
        Ok(())
    }

    fn expect_stage(&self, ok: &[Stage], t: AttrType) -> Result<(), Error> {
        if ok.contains(&self.stage) {
            Ok(())
        } else {
            Err(Error::AttributeOrder(t))
        }
    }

    /// Adds a typed attribute. Must come before the integrity attributes.
    pub fn add<A: EncodeAttribute>(&mut self, value: A::Value<'_>) -> Result<&mut Self, Error> {
        self.expect_stage(&[Stage::Plain], A::TYPE)?;
        let n = A::encoded_len(&value)?;
        let tid = self.tid;
        self.push_tlv(A::TYPE, n, |out, _| A::encode(&value, &tid, out))?;
        Ok(self)
    }

    /// Adds an attribute from raw value bytes (for types this crate has no
    /// codec for). Integrity and fingerprint types are refused: use the
    /// dedicated methods, which compute them.
    pub fn add_raw(&mut self, t: AttrType, value: &[u8]) -> Result<&mut Self, Error> {
        if matches!(
            t,
            AttrType::MESSAGE_INTEGRITY
                | AttrType::MESSAGE_INTEGRITY_SHA256
                | AttrType::FINGERPRINT
        ) {
            return Err(Error::AttributeOrder(t));
        }
        self.expect_stage(&[Stage::Plain], t)?;
        self.push_tlv(t, value.len(), |out, _| out.copy_from_slice(value))?;
        Ok(self)
    }

    /// Adds MESSAGE-INTEGRITY (HMAC-SHA1) over everything written so far.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<&mut Self, Error> {
        self.expect_stage(&[Stage::Plain], AttrType::MESSAGE_INTEGRITY)?;
        self.push_tlv(AttrType::MESSAGE_INTEGRITY, 20, |out, prefix| {
            out.copy_from_slice(&compute_sha1(key, prefix))
        })?;
        self.stage = Stage::AfterIntegrity;
        Ok(self)
    }

    /// Adds a full 32-byte MESSAGE-INTEGRITY-SHA256. May follow
    /// MESSAGE-INTEGRITY (then it covers it too).
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) -> Result<&mut Self, Error> {
        self.add_message_integrity_sha256_truncated(key, 32)
    }

    /// Adds MESSAGE-INTEGRITY-SHA256 truncated to `len` bytes (16..=32,
    /// multiple of 4), as RFC 8489 §14.6 allows.
    pub fn add_message_integrity_sha256_truncated(
        &mut self,
        key: &[u8],
        len: usize,
    ) -> Result<&mut Self, Error> {
        if !valid_sha256_len(len) {
            return Err(Error::InvalidArgument(
                "MESSAGE-INTEGRITY-SHA256 length must be 16..=32 and a multiple of 4",
            ));
        }
        self.expect_stage(
            &[Stage::Plain, Stage::AfterIntegrity],
            AttrType::MESSAGE_INTEGRITY_SHA256,
        )?;
        self.push_tlv(AttrType::MESSAGE_INTEGRITY_SHA256, len, |out, prefix| {
            let mac = compute_sha256(key, prefix, len);
            out.copy_from_slice(mac.get(..len).unwrap_or(&mac));
        })?;
        self.stage = Stage::AfterIntegritySha256;
        Ok(self)
    }

    /// Adds FINGERPRINT; nothing can be added afterwards.
    pub fn add_fingerprint(&mut self) -> Result<&mut Self, Error> {
        self.expect_stage(
            &[
                Stage::Plain,
                Stage::AfterIntegrity,
                Stage::AfterIntegritySha256,
            ],
            AttrType::FINGERPRINT,
        )?;
        self.push_tlv(AttrType::FINGERPRINT, 4, |out, prefix| {
            out.copy_from_slice(&compute_fingerprint(prefix).to_be_bytes())
        })?;
        self.stage = Stage::AfterFingerprint;
        Ok(self)
    }

    /// Ends the message and returns its length in bytes.
    pub fn finish(self) -> usize {
        self.len()
    }
}

fn header_bytes(typ: MessageType, tid: TransactionId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let parts = typ
        .to_u16()
        .to_be_bytes()
        .into_iter()
        .chain([0, 0])
        .chain(MAGIC_COOKIE.to_be_bytes())
        .chain(tid.0);
    for (dst, src) in h.iter_mut().zip(parts) {
        *dst = src;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{Data, Lifetime, Realm, Username, XorPeerAddress};
    use crate::Method;

    const TID: TransactionId = TransactionId([3; 12]);

    #[test]
    fn vec_and_slice_produce_the_same_bytes() {
        let mut v = vec![0xEE]; // pre-existing content is preserved
        let mut w = MessageWriter::new(&mut v, MessageType::request(Method::ALLOCATE), TID);
        w.add::<Username>("u")
            .unwrap()
            .add::<Lifetime>(600)
            .unwrap();
        w.add_message_integrity(b"k").unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        assert_eq!(v[0], 0xEE);
        assert_eq!(v.len(), n + 1);

        let mut s = [0u8; 128];
        let mut w =
            MessageWriter::new_in_slice(&mut s, MessageType::request(Method::ALLOCATE), TID)
                .unwrap();
        w.add::<Username>("u")
            .unwrap()
            .add::<Lifetime>(600)
            .unwrap();
        w.add_message_integrity(b"k").unwrap();
        w.add_fingerprint().unwrap();
        let m = w.finish();
        assert_eq!(m, n);
        assert_eq!(&s[..m], &v[1..]);

        let parsed = Message::parse(&s[..m]).unwrap();
        assert_eq!(parsed.get::<Username>(), Ok(Some("u")));
        assert_eq!(parsed.get::<Lifetime>(), Ok(Some(600)));
        parsed.verify_message_integrity(b"k").unwrap();
        parsed.verify_fingerprint().unwrap();
    }

    #[test]
    fn slice_too_small_leaves_message_intact() {
        let mut s = [0u8; 28];
        assert_eq!(
            MessageWriter::new_in_slice(&mut s[..19], MessageType::BINDING_REQUEST, TID).err(),
            Some(Error::BufferTooSmall {
                needed: 20,
                available: 19
            })
        );
        let mut w = MessageWriter::new_in_slice(&mut s, MessageType::BINDING_REQUEST, TID).unwrap();
        w.add::<Username>("abcd").unwrap();
        assert_eq!(
            w.add::<Realm>("r").err(),
            Some(Error::BufferTooSmall {
                needed: 36,
                available: 28
            })
        );
        assert_eq!(w.finish(), 28);
        Message::parse(&s).unwrap();
    }

    #[test]
    fn ordering_rules() {
        let mut v = Vec::new();
        let mut w = MessageWriter::new(&mut v, MessageType::BINDING_REQUEST, TID);
        w.add_message_integrity(b"k").unwrap();
        assert_eq!(
            w.add::<Username>("x").err(),
            Some(Error::AttributeOrder(AttrType::USERNAME))
        );
        assert_eq!(
            w.add_message_integrity(b"k").err(),
            Some(Error::AttributeOrder(AttrType::MESSAGE_INTEGRITY))
        );
        w.add_message_integrity_sha256(b"k").unwrap();
        w.add_fingerprint().unwrap();
        assert_eq!(
            w.add_fingerprint().err(),
            Some(Error::AttributeOrder(AttrType::FINGERPRINT))
        );
        assert!(w.add_raw(AttrType::FINGERPRINT, &[0; 4]).is_err());
        let n = w.finish();
        let m = Message::parse(&v[..n]).unwrap();
        m.verify_message_integrity(b"k").unwrap();
        m.verify_message_integrity_sha256(b"k").unwrap();
        assert_eq!(m.verify_integrity(b"k"), Ok(crate::IntegrityAlg::Sha256));
        m.verify_fingerprint().unwrap();
    }

    #[test]
    fn truncated_sha256() {
        let mut v = Vec::new();
        let mut w = MessageWriter::new(&mut v, MessageType::BINDING_REQUEST, TID);
        assert!(w.add_message_integrity_sha256_truncated(b"k", 18).is_err());
        w.add_message_integrity_sha256_truncated(b"k", 16).unwrap();
        w.finish();
        let m = Message::parse(&v).unwrap();
        assert_eq!(
            m.get::<crate::attr::MessageIntegritySha256>()
                .unwrap()
                .map(<[u8]>::len),
            Some(16)
        );
        m.verify_message_integrity_sha256(b"k").unwrap();
        assert_eq!(
            m.verify_message_integrity_sha256(b"j"),
            Err(Error::IntegrityMismatch)
        );
        assert_eq!(m.verify_message_integrity(b"k"), Err(Error::NoIntegrity));
    }

    #[test]
    fn size_limit() {
        let big = vec![0u8; MAX_ATTRS_LEN - 4];
        let mut v = Vec::new();
        let mut w = MessageWriter::new(&mut v, MessageType::indication(Method::SEND), TID);
        w.add::<Data>(&big).unwrap();
        assert_eq!(
            w.add::<Data>(&[]).err(),
            Some(Error::MessageTooLong(HEADER_LEN + MAX_ATTRS_LEN + 4))
        );
        let n = w.finish();
        assert_eq!(n, HEADER_LEN + MAX_ATTRS_LEN);
        let m = Message::parse(&v).unwrap();
        assert_eq!(
            m.get::<Data>().unwrap().map(<[u8]>::len),
            Some(MAX_ATTRS_LEN - 4)
        );
        let mut v = Vec::new();
        let mut w = MessageWriter::new(&mut v, MessageType::indication(Method::SEND), TID);
        assert!(matches!(
            w.add::<Data>(&vec![0; 70_000]),
            Err(Error::MessageTooLong(_))
        ));
    }

    #[test]
    fn responses_copy_method_and_tid() {
        let mut req = Vec::new();
        let mut w = MessageWriter::new(
            &mut req,
            MessageType::request(Method::CREATE_PERMISSION),
            TID,
        );
        w.add::<XorPeerAddress>("10.0.0.1:9".parse().unwrap())
            .unwrap();
        w.finish();
        let req = Message::parse(&req).unwrap();
        let mut out = Vec::new();
        MessageWriter::error_response(&mut out, &req, ErrorCodeValue::standard(403))
            .unwrap()
            .finish();
        let resp = Message::parse(&out).unwrap();
        assert_eq!(
            resp.message_type(),
            MessageType::error(Method::CREATE_PERMISSION)
        );
        assert_eq!(resp.transaction_id(), TID);
        assert_eq!(resp.require::<ErrorCode>().map(|e| e.code), Ok(403));
        let mut out = Vec::new();
        MessageWriter::success_response(&mut out, &req).finish();
        assert_eq!(
            Message::parse(&out).unwrap().class(),
            Class::SuccessResponse
        );
    }
}
