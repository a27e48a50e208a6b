//! RFC 5769 test vectors: parse, check every attribute, verify
//! MESSAGE-INTEGRITY / FINGERPRINT against the RFC's own values, re-encode,
//! and check that every single-bit corruption of a vector is caught.

mod common;

use std::net::SocketAddr;

use common::{
    hex, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, SAMPLE_LONG_TERM_REQUEST, SAMPLE_REQUEST,
};
use stun::attr::{
    IceControlled, MessageIntegrity, Nonce, Priority, Realm, Software, Username, XorMappedAddress,
};
use stun::{
    long_term_key, short_term_key, Class, Error, Message, MessageType, MessageWriter, Method,
    TransactionId,
};

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const RFC_TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// "マトリックス" (U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9).
const LT_USERNAME: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
/// The RFC's password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep, as given in the RFC.
const LT_PASSWORD: &[u8] = b"TheMatrIX";
const LT_REALM: &str = "example.org";
const LT_NONCE: &str = "f//499k954d6OL34oL9FSTvy64sA";

#[test]
fn sample_request() {
    let bytes = hex(SAMPLE_REQUEST);
    assert_eq!(bytes.len(), 108);
    assert!(stun::is_stun(&bytes));
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.message_type(), MessageType::BINDING_REQUEST);
    assert_eq!(m.transaction_id(), TransactionId(RFC_TID));
    assert_eq!(m.get::<Software>(), Ok(Some("STUN test client")));
    assert_eq!(m.get::<Priority>(), Ok(Some(0x6e00_01ff)));
    assert_eq!(m.get::<IceControlled>(), Ok(Some(0x932f_f9b1_5126_3b36)));
    assert_eq!(
        m.get::<Username>(),
        Ok(Some("evtj:h6vY")),
        "0x20 padding is not part of the value"
    );
    assert_eq!(
        m.unknown_comprehension_required(stun::AttrType::is_known)
            .count(),
        0
    );

    assert_eq!(
        m.verify_message_integrity(short_term_key(SHORT_TERM_PASSWORD)),
        Ok(())
    );
    assert_eq!(
        m.verify_integrity(SHORT_TERM_PASSWORD),
        Ok(stun::IntegrityAlg::Sha1)
    );
    assert_eq!(
        m.verify_message_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"),
        Err(Error::IntegrityMismatch)
    );
    assert_eq!(m.verify_fingerprint(), Ok(()));
}

#[test]
fn sample_ipv4_response() {
    let bytes = hex(SAMPLE_IPV4_RESPONSE);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.message_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(m.transaction_id(), TransactionId(RFC_TID));
    assert_eq!(m.get::<Software>(), Ok(Some("test vector")));
    let expected: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(m.get::<XorMappedAddress>(), Ok(Some(expected)));
    assert_eq!(m.verify_message_integrity(SHORT_TERM_PASSWORD), Ok(()));
    assert_eq!(m.verify_fingerprint(), Ok(()));
    assert_eq!(
        m.verify_message_integrity(b"wrong"),
        Err(Error::IntegrityMismatch)
    );
}

#[test]
fn sample_ipv6_response() {
    let bytes = hex(SAMPLE_IPV6_RESPONSE);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.method(), Method::BINDING);
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.get::<Software>(), Ok(Some("test vector")));
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(m.get::<XorMappedAddress>(), Ok(Some(expected)));
    assert_eq!(m.verify_message_integrity(SHORT_TERM_PASSWORD), Ok(()));
    assert_eq!(m.verify_fingerprint(), Ok(()));
}

#[test]
fn sample_long_term_request() {
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.message_type(), MessageType::BINDING_REQUEST);
    assert_eq!(m.get::<Username>(), Ok(Some(LT_USERNAME)));
    assert_eq!(m.get::<Nonce>(), Ok(Some(LT_NONCE)));
    assert_eq!(m.get::<Realm>(), Ok(Some(LT_REALM)));
    assert!(!m.has_fingerprint());
    assert_eq!(m.verify_fingerprint(), Err(Error::NoFingerprint));

    let key = long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD);
    assert_eq!(m.verify_message_integrity(&key), Ok(()));
    // The unprepared password must not work: SASLprep matters.
    let raw_pw = "The\u{00AD}M\u{00AA}tr\u{2168}";
    assert_eq!(
        m.verify_message_integrity(&long_term_key(LT_USERNAME, LT_REALM, raw_pw)),
        Err(Error::IntegrityMismatch)
    );
    assert_eq!(
        m.verify_message_integrity(&long_term_key(LT_USERNAME, "example.com", LT_PASSWORD)),
        Err(Error::IntegrityMismatch)
    );
}

#[test]
fn long_term_request_re_encodes_byte_for_byte() {
    // Its padding is zeros, so our writer must reproduce it exactly,
    // MESSAGE-INTEGRITY included.
    let bytes = hex(SAMPLE_LONG_TERM_REQUEST);
    let mut out = Vec::new();
    let mut w = MessageWriter::new(
        &mut out,
        MessageType::BINDING_REQUEST,
        TransactionId(*array(&bytes[8..20])),
    );
    w.add::<Username>(LT_USERNAME).unwrap();
    w.add::<Nonce>(LT_NONCE).unwrap();
    w.add::<Realm>(LT_REALM).unwrap();
    w.add_message_integrity(&long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD))
        .unwrap();
    let n = w.finish();
    assert_eq!(n, bytes.len());
    assert_eq!(out, bytes);
}

#[test]
fn short_term_vectors_re_encode_to_equivalent_messages() {
    // These vectors pad with 0x20, which we do not, so compare structure and
    // check that our own MESSAGE-INTEGRITY / FINGERPRINT verify.
    let req = hex(SAMPLE_REQUEST);
    let parsed = Message::parse(&req).unwrap();
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, parsed.message_type(), parsed.transaction_id());
    w.add::<Software>("STUN test client").unwrap();
    w.add::<Priority>(0x6e00_01ff).unwrap();
    w.add::<IceControlled>(0x932f_f9b1_5126_3b36).unwrap();
    w.add::<Username>("evtj:h6vY").unwrap();
    w.add_message_integrity(SHORT_TERM_PASSWORD).unwrap();
    w.add_fingerprint().unwrap();
    w.finish();
    assert_eq!(out.len(), req.len());
    for (i, (a, b)) in out.iter().zip(&req).enumerate() {
        // USERNAME value is bytes 64..73, its padding 73..76; the MAC value
        // is 80..100 and the CRC 104..108.
        let in_username_padding = (73..76).contains(&i);
        let in_mac_or_crc = (80..100).contains(&i) || (104..108).contains(&i);
        if !in_username_padding && !in_mac_or_crc {
            assert_eq!(a, b, "byte {i} differs");
        }
    }
    let again = Message::parse(&out).unwrap();
    again.verify_message_integrity(SHORT_TERM_PASSWORD).unwrap();
    again.verify_fingerprint().unwrap();
    assert_eq!(again.get::<Username>(), Ok(Some("evtj:h6vY")));

    for vector in [SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE] {
        let bytes = hex(vector);
        let parsed = Message::parse(&bytes).unwrap();
        let mut out = Vec::new();
        let mut w = MessageWriter::success_response(&mut out, &parsed);
        w.add::<Software>("test vector").unwrap();
        w.add::<XorMappedAddress>(parsed.require::<XorMappedAddress>().unwrap())
            .unwrap();
        w.add_message_integrity(SHORT_TERM_PASSWORD).unwrap();
        w.add_fingerprint().unwrap();
        w.finish();
        assert_eq!(out.len(), bytes.len());
        // Identical up to SOFTWARE's padding byte; XOR-MAPPED-ADDRESS bytes
        // match the RFC exactly.
        assert_eq!(out[..35], bytes[..35]);
        assert_eq!(out[36..out.len() - 32], bytes[36..bytes.len() - 32]);
        let again = Message::parse(&out).unwrap();
        again.verify_message_integrity(SHORT_TERM_PASSWORD).unwrap();
        again.verify_fingerprint().unwrap();
    }
}

#[test]
fn every_single_bit_flip_of_every_vector_is_detected() {
    let lt_key = long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD);
    let cases: [(&str, &[u8]); 4] = [
        (SAMPLE_REQUEST, SHORT_TERM_PASSWORD),
        (SAMPLE_IPV4_RESPONSE, SHORT_TERM_PASSWORD),
        (SAMPLE_IPV6_RESPONSE, SHORT_TERM_PASSWORD),
        (SAMPLE_LONG_TERM_REQUEST, &lt_key),
    ];
    for (vector, key) in cases {
        let good = hex(vector);
        let had_fingerprint = Message::parse(&good).unwrap().has_fingerprint();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let accepted = match Message::parse(&bad) {
                Err(_) => false,
                Ok(m) => {
                    m.verify_message_integrity(key).is_ok()
                        && (!had_fingerprint || m.verify_fingerprint().is_ok())
                }
            };
            assert!(!accepted, "flip of bit {bit} went unnoticed");
        }
    }
}

#[test]
fn the_stored_mac_is_exposed_raw() {
    let bytes = hex(SAMPLE_IPV4_RESPONSE);
    let m = Message::parse(&bytes).unwrap();
    let mac = m.require::<MessageIntegrity>().unwrap();
    assert_eq!(mac[..4], [0x2b, 0x91, 0xf5, 0x99]);
}

fn array(b: &[u8]) -> &[u8; 12] {
    b.try_into().unwrap()
}
