//! The one error type of the crate.
//!
//! Every malformed input maps to its own variant so that a server can pick
//! the right reaction (drop silently, answer 400, answer 420, ...) without
//! string matching. Variants carry only `Copy` data so errors are cheap to
//! return from hot parse paths.

use crate::attr::AttrType;

/// Everything that can go wrong while parsing, verifying or encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- message framing -------------------------------------------------
    /// Fewer than the 20 bytes a STUN header needs.
    #[error("buffer of {0} bytes is too short for a 20-byte STUN header")]
    HeaderTooShort(usize),
    /// The two most significant bits of the first byte are not zero.
    #[error("the two most significant bits of the message type are not zero")]
    NotStun,
    /// The magic cookie is not 0x2112A442 (RFC 3489-era or not STUN at all).
    #[error("bad magic cookie {0:#010x}")]
    BadMagicCookie(u32),
    /// The header length field is not a multiple of 4.
    #[error("message length {0} is not a multiple of 4")]
    LengthNotAligned(u16),
    /// The header (or a ChannelData header) declares more bytes than the
    /// buffer holds.
    #[error("length field declares {declared} bytes but only {available} are present")]
    Truncated {
        /// Bytes the length field asks for (after the fixed header).
        declared: usize,
        /// Bytes actually present after the fixed header.
        available: usize,
    },
    /// A stream frame announces more bytes than the receiver accepts.
    #[error("stream frame of {len} bytes is over the {max}-byte limit")]
    FrameTooLong {
        /// Bytes the frame would occupy, header and padding included.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// Bytes follow the message in a buffer that must hold exactly one.
    #[error("{0} unexpected bytes after the end of the message")]
    TrailingBytes(usize),

    // ---- attribute framing -----------------------------------------------
    /// An attribute's TLV header or value runs past the message end.
    #[error("attribute {attr_type} at offset {offset} with length {len} overruns the message")]
    AttributeOverrun {
        /// Type of the offending attribute.
        attr_type: AttrType,
        /// Byte offset of its TLV header within the message.
        offset: usize,
        /// Its declared value length.
        len: u16,
    },
    /// Something follows FINGERPRINT, which must be the last attribute.
    #[error("attribute {0} follows FINGERPRINT")]
    AttributeAfterFingerprint(AttrType),

    // ---- attribute values ------------------------------------------------
    /// A value's length is impossible for its type (e.g. LIFETIME of 3 bytes).
    #[error("attribute {attr_type} has invalid length {len}")]
    BadAttributeLength {
        /// Attribute type.
        attr_type: AttrType,
        /// Declared value length.
        len: usize,
    },
    /// A value exceeds the limit RFC 8489/8656 puts on it.
    #[error("attribute {attr_type} is {len} bytes, more than the allowed {max}")]
    ValueTooLong {
        /// Attribute type.
        attr_type: AttrType,
        /// Actual value length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// An address attribute names a family other than 0x01 (IPv4) / 0x02 (IPv6).
    #[error("unknown address family {0:#04x}")]
    BadAddressFamily(u8),
    /// A text attribute is not UTF-8.
    #[error("attribute {0} is not valid UTF-8")]
    InvalidUtf8(AttrType),
    /// ERROR-CODE / ADDRESS-ERROR-CODE outside 300..=699 (class 3-6, number 0-99).
    #[error("invalid error code: class {class}, number {number}")]
    BadErrorCode {
        /// The class (hundreds digit) as carried or requested.
        class: u16,
        /// The number (last two digits) as carried or requested.
        number: u16,
    },
    /// CHANNEL-NUMBER / ChannelData channel outside 0x4000..=0x4FFF.
    #[error("channel number {0:#06x} is outside 0x4000..=0x4FFF")]
    BadChannelNumber(u16),
    /// `require` found no attribute of the type.
    #[error("missing attribute {0}")]
    MissingAttribute(AttrType),

    // ---- integrity -------------------------------------------------------
    /// Verification was asked for but the message carries no
    /// MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256.
    #[error("message has no MESSAGE-INTEGRITY attribute")]
    NoIntegrity,
    /// The HMAC does not match.
    #[error("MESSAGE-INTEGRITY does not match")]
    IntegrityMismatch,
    /// Verification was asked for but the message has no FINGERPRINT.
    #[error("message has no FINGERPRINT attribute")]
    NoFingerprint,
    /// The CRC does not match.
    #[error("FINGERPRINT does not match")]
    FingerprintMismatch,

    // ---- encoding --------------------------------------------------------
    /// The caller's slice cannot hold the message being written.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the write needs in total.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// Attributes would exceed the 16-bit length field (65532 bytes).
    #[error("message would be {0} bytes long, over the 16-bit length limit")]
    MessageTooLong(usize),
    /// An attribute was added after MESSAGE-INTEGRITY(-SHA256) or FINGERPRINT
    /// in an order RFC 8489 does not allow.
    #[error("attribute {0} cannot be added at this point (after integrity/fingerprint)")]
    AttributeOrder(AttrType),
    /// A method number above 0xFFF, or a MESSAGE-INTEGRITY-SHA256
    /// truncation length that is not 16..=32 in steps of 4.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}
