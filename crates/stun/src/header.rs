//! The fixed 20-byte STUN header (RFC 8489 §5): message class and method
//! packing, the magic cookie, the transaction id, and cheap "is this STUN?"
//! checks that look at the header alone.

use core::fmt;

use crate::Error;

/// The fixed value in bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Largest attribute section the 16-bit length field can describe while
/// staying a multiple of 4.
pub const MAX_ATTRS_LEN: usize = 0xFFFC;

/// The four STUN message classes, carried in bits C1/C0 of the type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// 0b00
    Request,
    /// 0b01
    Indication,
    /// 0b10
    SuccessResponse,
    /// 0b11
    ErrorResponse,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    const fn from_bits(b: u16) -> Class {
        match b & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }

    /// True for success and error responses.
    pub const fn is_response(self) -> bool {
        matches!(self, Class::SuccessResponse | Class::ErrorResponse)
    }
}

/// A 12-bit STUN method. Kept open (not an enum) because methods are an
/// IANA registry and a TURN server must be able to answer unknown ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// RFC 8489 Binding.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 Allocate.
    pub const ALLOCATE: Method = Method(0x003);
    /// RFC 8656 Refresh.
    pub const REFRESH: Method = Method(0x004);
    /// RFC 8656 Send (indication only).
    pub const SEND: Method = Method(0x006);
    /// RFC 8656 Data (indication only).
    pub const DATA: Method = Method(0x007);
    /// RFC 8656 CreatePermission.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// RFC 8656 ChannelBind.
    pub const CHANNEL_BIND: Method = Method(0x009);

    /// A method from its number; `None` above 0xFFF.
    pub const fn new(value: u16) -> Option<Method> {
        if value <= 0x0FFF {
            Some(Method(value))
        } else {
            None
        }
    }

    /// The 12-bit method number.
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The RFC name for methods this crate knows.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x001 => "Binding",
            0x003 => "Allocate",
            0x004 => "Refresh",
            0x006 => "Send",
            0x007 => "Data",
            0x008 => "CreatePermission",
            0x009 => "ChannelBind",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Method({:#05x})", self.0),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Method plus class: the 14-bit type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// Binding request, the most common message there is.
    pub const BINDING_REQUEST: MessageType = MessageType::request(Method::BINDING);
    /// Binding success response.
    pub const BINDING_SUCCESS: MessageType = MessageType::success(Method::BINDING);

    /// Any combination.
    pub const fn new(method: Method, class: Class) -> Self {
        MessageType { method, class }
    }
    /// `method` request.
    pub const fn request(method: Method) -> Self {
        Self::new(method, Class::Request)
    }
    /// `method` indication.
    pub const fn indication(method: Method) -> Self {
        Self::new(method, Class::Indication)
    }
    /// `method` success response.
    pub const fn success(method: Method) -> Self {
        Self::new(method, Class::SuccessResponse)
    }
    /// `method` error response.
    pub const fn error(method: Method) -> Self {
        Self::new(method, Class::ErrorResponse)
    }

    /// Decodes the first two header bytes. The only invalid input is one with
    /// either of the two top bits set.
    pub const fn from_u16(raw: u16) -> Result<Self, Error> {
        if raw & 0xC000 != 0 {
            return Err(Error::NotStun);
        }
        // Layout (RFC 8489 §5): M11..M7 C1 M6..M4 C0 M3..M0
        let method = (raw & 0x000F) | ((raw >> 1) & 0x0070) | ((raw >> 2) & 0x0F80);
        let class = ((raw >> 4) & 0b01) | ((raw >> 7) & 0b10);
        Ok(MessageType {
            method: Method(method),
            class: Class::from_bits(class),
        })
    }

    /// Encodes into the first two header bytes.
    pub const fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c = self.class.bits();
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }
}

/// The 96-bit transaction id. The caller generates it (this crate does no
/// I/O and owns no RNG); RFC 8489 wants it cryptographically random for
/// requests.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TransactionId(pub [u8; 12]);

impl TransactionId {
    /// Wraps 12 bytes.
    pub const fn new(bytes: [u8; 12]) -> Self {
        TransactionId(bytes)
    }
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }
}

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TransactionId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

impl From<[u8; 12]> for TransactionId {
    fn from(b: [u8; 12]) -> Self {
        TransactionId(b)
    }
}

/// Fields of a header that passed the structural checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub typ: MessageType,
    /// Length of the attribute section.
    pub len: u16,
    pub tid: TransactionId,
}

/// Checks the parts of a header that need no attribute walk: top bits,
/// magic cookie, length alignment. Does not look at the buffer past 20 bytes.
pub(crate) fn parse_header(buf: &[u8]) -> Result<RawHeader, Error> {
    let h: &[u8; HEADER_LEN] = match buf.get(..HEADER_LEN) {
        Some(h) => h.try_into().map_err(|_| Error::HeaderTooShort(buf.len()))?,
        None => return Err(Error::HeaderTooShort(buf.len())),
    };
    let typ = MessageType::from_u16(u16::from_be_bytes([h[0], h[1]]))?;
    let cookie = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(Error::BadMagicCookie(cookie));
    }
    let len = u16::from_be_bytes([h[2], h[3]]);
    if len % 4 != 0 {
        return Err(Error::LengthNotAligned(len));
    }
    let mut tid = [0u8; 12];
    tid.copy_from_slice(&h[8..20]);
    Ok(RawHeader {
        typ,
        len,
        tid: TransactionId(tid),
    })
}

/// Quick check that `buf` is exactly one STUN message as far as its header
/// can tell: top bits zero, magic cookie, aligned length, and
/// `20 + length == buf.len()`. It does not walk attributes; use
/// [`Message::parse`](crate::Message::parse) for that. Meant for
/// demultiplexing a UDP socket shared with other protocols.
pub fn is_stun(buf: &[u8]) -> bool {
    match parse_header(buf) {
        Ok(h) => HEADER_LEN + h.len as usize == buf.len(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_packing_matches_rfc_examples() {
        // Binding request/success/error/indication per RFC 8489 §5.
        assert_eq!(MessageType::request(Method::BINDING).to_u16(), 0x0001);
        assert_eq!(MessageType::success(Method::BINDING).to_u16(), 0x0101);
        assert_eq!(MessageType::error(Method::BINDING).to_u16(), 0x0111);
        assert_eq!(MessageType::indication(Method::BINDING).to_u16(), 0x0011);
        // TURN values seen on the wire.
        assert_eq!(MessageType::request(Method::ALLOCATE).to_u16(), 0x0003);
        assert_eq!(MessageType::success(Method::ALLOCATE).to_u16(), 0x0103);
        assert_eq!(MessageType::error(Method::ALLOCATE).to_u16(), 0x0113);
        assert_eq!(MessageType::indication(Method::SEND).to_u16(), 0x0016);
        assert_eq!(MessageType::indication(Method::DATA).to_u16(), 0x0017);
        assert_eq!(MessageType::request(Method::CHANNEL_BIND).to_u16(), 0x0009);
    }

    #[test]
    fn every_14_bit_type_round_trips() {
        for raw in 0u16..0x4000 {
            let t = MessageType::from_u16(raw).unwrap();
            assert_eq!(t.to_u16(), raw, "{raw:#06x}");
        }
        assert_eq!(MessageType::from_u16(0x4001), Err(Error::NotStun));
        assert_eq!(MessageType::from_u16(0x8001), Err(Error::NotStun));
    }

    #[test]
    fn method_range() {
        assert_eq!(Method::new(0xFFF).map(Method::value), Some(0xFFF));
        assert_eq!(Method::new(0x1000), None);
        assert_eq!(format!("{:?}", Method::CHANNEL_BIND), "ChannelBind");
        assert_eq!(
            format!("{:?}", Method::new(0xabc).unwrap()),
            "Method(0xabc)"
        );
    }

    #[test]
    fn header_checks() {
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(is_stun(&h));
        assert!(!is_stun(&h[..19]));
        let mut longer = h.to_vec();
        longer.extend_from_slice(&[0; 4]);
        assert!(!is_stun(&longer), "length field says 0 but 24 bytes given");
        longer[3] = 4;
        assert!(is_stun(&longer));
        longer[3] = 2;
        assert_eq!(parse_header(&longer), Err(Error::LengthNotAligned(2)));
        longer[3] = 4;
        longer[4] = 0;
        assert_eq!(
            parse_header(&longer),
            Err(Error::BadMagicCookie(0x0012_A442))
        );
        longer[4] = 0x21;
        longer[0] = 0x40;
        assert_eq!(parse_header(&longer), Err(Error::NotStun));
        assert_eq!(parse_header(&[]), Err(Error::HeaderTooShort(0)));
    }
}
