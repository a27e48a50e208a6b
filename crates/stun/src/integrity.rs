//! Credentials and message authentication: key derivation for short- and
//! long-term credentials (RFC 8489 §9), USERHASH, and computing/verifying
//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256)
//! and FINGERPRINT (CRC-32 XOR 0x5354554e).
//!
//! All three cover the message up to (not including) their own attribute,
//! but with the header length field rewritten as if the message ended right
//! after their attribute (§14.5-§14.7). We feed the hash the real bytes with
//! only those two length bytes substituted, so no copy of the message is
//! made.
//!
//! Passwords are taken as bytes that the caller has already prepared
//! (OpaqueString / SASLprep); this crate does no Unicode normalisation.

use core::fmt;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use sha2::Sha256;

use crate::header::HEADER_LEN;
use crate::{Error, Message};

/// XOR mask applied to the CRC-32 in FINGERPRINT ("STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Password algorithms for long-term credentials (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlg {
    /// 0x0001: key = MD5(username ":" realm ":" password), 16 bytes.
    Md5,
    /// 0x0002: key = SHA-256(username ":" realm ":" password), 32 bytes.
    Sha256,
}

impl PasswordAlg {
    /// From the IANA number.
    pub const fn from_u16(v: u16) -> Option<Self> {
        match v {
            0x0001 => Some(PasswordAlg::Md5),
            0x0002 => Some(PasswordAlg::Sha256),
            _ => None,
        }
    }
    /// The IANA number.
    pub const fn to_u16(self) -> u16 {
        match self {
            PasswordAlg::Md5 => 0x0001,
            PasswordAlg::Sha256 => 0x0002,
        }
    }
}

/// A derived long-term key (16 or 32 bytes), kept inline so deriving one
/// does not allocate. Dereferences to `&[u8]`; `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    len: usize,
}

impl Key {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

impl core::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes, redacted)", self.len)
    }
}

/// Long-term key with the default (MD5) algorithm, as used by every TURN
/// deployment and by RFC 5769's test vector.
pub fn long_term_key(
    username: impl AsRef<[u8]>,
    realm: impl AsRef<[u8]>,
    password: impl AsRef<[u8]>,
) -> Key {
    long_term_key_with(PasswordAlg::Md5, username, realm, password)
}

/// Long-term key for a given PASSWORD-ALGORITHM.
pub fn long_term_key_with(
    alg: PasswordAlg,
    username: impl AsRef<[u8]>,
    realm: impl AsRef<[u8]>,
    password: impl AsRef<[u8]>,
) -> Key {
    fn feed<D: Digest>(mut d: D, parts: [&[u8]; 5]) -> D {
        for p in parts {
            d.update(p);
        }
        d
    }
    let parts = [
        username.as_ref(),
        b":",
        realm.as_ref(),
        b":",
        password.as_ref(),
    ];
    let mut bytes = [0u8; 32];
    let len = match alg {
        PasswordAlg::Md5 => {
            let out = feed(Md5::new(), parts).finalize();
            bytes[..16].copy_from_slice(&out);
            16
        }
        PasswordAlg::Sha256 => {
            let out = feed(Sha256::new(), parts).finalize();
            bytes.copy_from_slice(&out);
            32
        }
    };
    Key { bytes, len }
}

/// Short-term key: the (OpaqueString-prepared) password itself. Exists so
/// call sites say which credential mechanism they use.
pub fn short_term_key(password: &[u8]) -> &[u8] {
    password
}

/// USERHASH value: SHA-256(username ":" realm) (RFC 8489 §14.4).
pub fn userhash(username: impl AsRef<[u8]>, realm: impl AsRef<[u8]>) -> [u8; 32] {
    let mut d = Sha256::new();
    d.update(username.as_ref());
    d.update(b":");
    d.update(realm.as_ref());
    d.finalize().into()
}

/// Which MAC a successful [`Message::verify_integrity`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlg {
    /// MESSAGE-INTEGRITY, HMAC-SHA1.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256.
    Sha256,
}

/// Splits `prefix` (header plus attributes up to the one being computed)
/// into the parts before and after the length field.
fn around_length(prefix: &[u8]) -> (&[u8], &[u8]) {
    match prefix.split_first_chunk::<4>() {
        Some((head, rest)) => (head.get(..2).unwrap_or(&[]), rest),
        None => (&[], &[]),
    }
}

/// Feeds a MAC the prefix with its length field replaced by `len`.
fn mac_over<M: Mac>(mut mac: M, prefix: &[u8], len: u16) -> M {
    let (ty, rest) = around_length(prefix);
    mac.update(ty);
    mac.update(&len.to_be_bytes());
    mac.update(rest);
    mac
}

/// Value for the length field while computing an attribute of
/// `value_len` bytes whose TLV starts at `attr_offset`.
fn adjusted_len(attr_offset: usize, value_len: usize) -> u16 {
    let end = attr_offset + 4 + value_len;
    // Callers only pass offsets inside a valid (<= 65535-byte body) message.
    u16::try_from(end.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX)
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // HMAC takes keys of any length; the error arm cannot happen.
    <Hmac<Sha1> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha1> as KeyInit>::new(&Default::default()))
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
}

/// MESSAGE-INTEGRITY over `prefix` (whose TLV would start at `prefix.len()`).
pub(crate) fn compute_sha1(key: &[u8], prefix: &[u8]) -> [u8; 20] {
    mac_over(hmac_sha1(key), prefix, adjusted_len(prefix.len(), 20))
        .finalize()
        .into_bytes()
        .into()
}

/// MESSAGE-INTEGRITY-SHA256 over `prefix`, for a value of `value_len` bytes.
pub(crate) fn compute_sha256(key: &[u8], prefix: &[u8], value_len: usize) -> [u8; 32] {
    mac_over(
        hmac_sha256(key),
        prefix,
        adjusted_len(prefix.len(), value_len),
    )
    .finalize()
    .into_bytes()
    .into()
}

/// FINGERPRINT value over `prefix`.
pub(crate) fn compute_fingerprint(prefix: &[u8]) -> u32 {
    let (ty, rest) = around_length(prefix);
    let mut h = crc32fast::Hasher::new();
    h.update(ty);
    h.update(&adjusted_len(prefix.len(), 4).to_be_bytes());
    h.update(rest);
    h.finalize() ^ FINGERPRINT_XOR
}

impl<'a> Message<'a> {
    /// Splits the message at the TLV at `offset`: the bytes before it and its value.
    fn split_at_attr(&self, offset: usize) -> Option<(&'a [u8], &'a [u8])> {
        let bytes = self.as_bytes();
        let prefix = bytes.get(..offset)?;
        let len_bytes = bytes.get(offset + 2..offset + 4)?;
        let len = usize::from(u16::from_be_bytes([
            *len_bytes.first()?,
            *len_bytes.get(1)?,
        ]));
        let value = bytes.get(offset + 4..offset + 4 + len)?;
        Some((prefix, value))
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key` (a short-term
    /// password or a [`long_term_key`]). Constant-time comparison.
    pub fn verify_message_integrity(&self, key: &[u8]) -> Result<(), Error> {
        let offset = self.integrity_offset().ok_or(Error::NoIntegrity)?;
        let (prefix, value) = self.split_at_attr(offset).ok_or(Error::NoIntegrity)?;
        mac_over(hmac_sha1(key), prefix, adjusted_len(offset, value.len()))
            .verify_slice(value)
            .map_err(|_| Error::IntegrityMismatch)
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (possibly truncated) with `key`.
    pub fn verify_message_integrity_sha256(&self, key: &[u8]) -> Result<(), Error> {
        let offset = self.integrity_sha256_offset().ok_or(Error::NoIntegrity)?;
        let (prefix, value) = self.split_at_attr(offset).ok_or(Error::NoIntegrity)?;
        mac_over(hmac_sha256(key), prefix, adjusted_len(offset, value.len()))
            .verify_truncated_left(value)
            .map_err(|_| Error::IntegrityMismatch)
    }

    /// Checks the strongest integrity attribute present: SHA-256 if the
    /// message has one, else SHA-1 (RFC 8489 §9.1.3/§9.2.4 let an agent
    /// that understands both use just the SHA-256 one).
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityAlg, Error> {
        if self.integrity_sha256_offset().is_some() {
            self.verify_message_integrity_sha256(key)
                .map(|()| IntegrityAlg::Sha256)
        } else {
            self.verify_message_integrity(key)
                .map(|()| IntegrityAlg::Sha1)
        }
    }

    /// Whether the message carries MESSAGE-INTEGRITY or -SHA256.
    pub fn has_integrity(&self) -> bool {
        self.integrity_offset().is_some() || self.integrity_sha256_offset().is_some()
    }

    /// Whether the message ends with FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_offset().is_some()
    }

    /// Checks FINGERPRINT.
    pub fn verify_fingerprint(&self) -> Result<(), Error> {
        let offset = self.fingerprint_offset().ok_or(Error::NoFingerprint)?;
        let (prefix, value) = self.split_at_attr(offset).ok_or(Error::NoFingerprint)?;
        let got: [u8; 4] = value.try_into().map_err(|_| Error::FingerprintMismatch)?;
        if compute_fingerprint(prefix) == u32::from_be_bytes(got) {
            Ok(())
        } else {
            Err(Error::FingerprintMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_term_key_md5_known_answer() {
        // MD5("user:realm:pass"), computed independently with coreutils md5sum.
        let k = long_term_key("user", "realm", "pass");
        assert_eq!(k.len(), 16);
        assert_eq!(hex(&k), "8493fbc53ba582fb4c044c456bdc40eb");
        let k = long_term_key_with(PasswordAlg::Sha256, "user", "realm", "pass");
        assert_eq!(k.len(), 32);
        assert_eq!(format!("{k:?}"), "Key(32 bytes, redacted)");
    }

    #[test]
    fn crc_check_value() {
        // The standard CRC-32 check value, to pin the polynomial.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn alg_numbers() {
        assert_eq!(PasswordAlg::from_u16(1), Some(PasswordAlg::Md5));
        assert_eq!(PasswordAlg::from_u16(2), Some(PasswordAlg::Sha256));
        assert_eq!(PasswordAlg::from_u16(3), None);
        assert_eq!(PasswordAlg::Sha256.to_u16(), 2);
    }

    #[test]
    fn short_term_is_identity() {
        assert_eq!(short_term_key(b"pw"), b"pw");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
