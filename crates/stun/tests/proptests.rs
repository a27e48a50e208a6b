//! Property tests: encode → decode round trips over random messages with
//! random attribute sets, integrity failing after any single-bit flip,
//! ChannelData round trips, and "never panics" on arbitrary and mutated
//! input. Case counts are bounded so the suite runs in seconds in debug.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::exercise::exercise;
use proptest::prelude::*;
use proptest::sample::Index;
use stun::attr::*;
use stun::{
    frame_len, is_stun, AttrType, ChannelData, Class, Frame, Framer, Message, MessageType,
    MessageWriter, Method, RawAttribute, StreamFrame, TransactionId,
};

// ---- a random attribute, owning its value ------------------------------------

#[derive(Debug, Clone)]
enum AnyAttr {
    Mapped(SocketAddr),
    XorMapped(SocketAddr),
    XorPeer(SocketAddr),
    XorRelayed(SocketAddr),
    AltServer(SocketAddr),
    Username(String),
    Realm(String),
    Nonce(String),
    Software(String),
    AltDomain(String),
    Userhash([u8; 32]),
    ErrorCode(u16, String),
    Unknown(Vec<u16>),
    PwAlg(u16, Vec<u8>),
    PwAlgs(Vec<(u16, Vec<u8>)>),
    Priority(u32),
    UseCandidate,
    IceControlled(u64),
    IceControlling(u64),
    Channel(u16),
    Lifetime(u32),
    Data(Vec<u8>),
    ReqFamily(AddressFamily),
    AddFamily(AddressFamily),
    EvenPort(bool),
    ReqTransport(u8),
    DontFragment,
    Token([u8; 8]),
    AddrErr(AddressFamily, u16, String),
    Icmp(u8, u8, u32),
    Raw(u16, Vec<u8>),
}

impl AnyAttr {
    fn write(&self, w: &mut MessageWriter<'_>) {
        let r = match self {
            AnyAttr::Mapped(a) => w.add::<MappedAddress>(*a),
            AnyAttr::XorMapped(a) => w.add::<XorMappedAddress>(*a),
            AnyAttr::XorPeer(a) => w.add::<XorPeerAddress>(*a),
            AnyAttr::XorRelayed(a) => w.add::<XorRelayedAddress>(*a),
            AnyAttr::AltServer(a) => w.add::<AlternateServer>(*a),
            AnyAttr::Username(s) => w.add::<Username>(s),
            AnyAttr::Realm(s) => w.add::<Realm>(s),
            AnyAttr::Nonce(s) => w.add::<Nonce>(s),
            AnyAttr::Software(s) => w.add::<Software>(s),
            AnyAttr::AltDomain(s) => w.add::<AlternateDomain>(s),
            AnyAttr::Userhash(h) => w.add::<Userhash>(h),
            AnyAttr::ErrorCode(c, r) => w.add::<ErrorCode>(ErrorCodeValue::new(*c, r)),
            AnyAttr::Unknown(ts) => {
                let ts: Vec<AttrType> = ts.iter().map(|&t| AttrType(t)).collect();
                w.add::<UnknownAttributes>(AttrTypeList::new(&ts))
            }
            AnyAttr::PwAlg(a, p) => w.add::<PasswordAlgorithm>(PasswordAlgorithmParams {
                algorithm: *a,
                params: p,
            }),
            AnyAttr::PwAlgs(list) => {
                let items = params(list);
                w.add::<PasswordAlgorithms>(PasswordAlgorithmList::new(&items))
            }
            AnyAttr::Priority(p) => w.add::<Priority>(*p),
            AnyAttr::UseCandidate => w.add::<UseCandidate>(()),
            AnyAttr::IceControlled(t) => w.add::<IceControlled>(*t),
            AnyAttr::IceControlling(t) => w.add::<IceControlling>(*t),
            AnyAttr::Channel(c) => w.add::<ChannelNumber>(*c),
            AnyAttr::Lifetime(l) => w.add::<Lifetime>(*l),
            AnyAttr::Data(d) => w.add::<Data>(d),
            AnyAttr::ReqFamily(f) => w.add::<RequestedAddressFamily>(*f),
            AnyAttr::AddFamily(f) => w.add::<AdditionalAddressFamily>(*f),
            AnyAttr::EvenPort(r) => w.add::<EvenPort>(*r),
            AnyAttr::ReqTransport(p) => w.add::<RequestedTransport>(*p),
            AnyAttr::DontFragment => w.add::<DontFragment>(()),
            AnyAttr::Token(t) => w.add::<ReservationToken>(*t),
            AnyAttr::AddrErr(f, c, r) => w.add::<AddressErrorCode>(AddressErrorCodeValue {
                family: *f,
                code: *c,
                reason: r,
            }),
            AnyAttr::Icmp(t, c, d) => w.add::<Icmp>(IcmpValue {
                icmp_type: *t,
                code: *c,
                error_data: *d,
            }),
            AnyAttr::Raw(t, v) => w.add_raw(AttrType(*t), v),
        };
        r.expect("generated attributes are valid");
    }

    fn check(&self, a: &RawAttribute<'_>, tid: &TransactionId) {
        match self {
            AnyAttr::Mapped(x) => assert_eq!(a.decode::<MappedAddress>(tid), Ok(*x)),
            AnyAttr::XorMapped(x) => assert_eq!(a.decode::<XorMappedAddress>(tid), Ok(*x)),
            AnyAttr::XorPeer(x) => assert_eq!(a.decode::<XorPeerAddress>(tid), Ok(*x)),
            AnyAttr::XorRelayed(x) => assert_eq!(a.decode::<XorRelayedAddress>(tid), Ok(*x)),
            AnyAttr::AltServer(x) => assert_eq!(a.decode::<AlternateServer>(tid), Ok(*x)),
            AnyAttr::Username(s) => assert_eq!(a.decode::<Username>(tid), Ok(s.as_str())),
            AnyAttr::Realm(s) => assert_eq!(a.decode::<Realm>(tid), Ok(s.as_str())),
            AnyAttr::Nonce(s) => assert_eq!(a.decode::<Nonce>(tid), Ok(s.as_str())),
            AnyAttr::Software(s) => assert_eq!(a.decode::<Software>(tid), Ok(s.as_str())),
            AnyAttr::AltDomain(s) => assert_eq!(a.decode::<AlternateDomain>(tid), Ok(s.as_str())),
            AnyAttr::Userhash(h) => assert_eq!(a.decode::<Userhash>(tid), Ok(h)),
            AnyAttr::ErrorCode(c, r) => {
                assert_eq!(a.decode::<ErrorCode>(tid), Ok(ErrorCodeValue::new(*c, r)))
            }
            AnyAttr::Unknown(ts) => {
                let got: Vec<u16> = a
                    .decode::<UnknownAttributes>(tid)
                    .unwrap()
                    .iter()
                    .map(|t| t.0)
                    .collect();
                assert_eq!(&got, ts);
            }
            AnyAttr::PwAlg(alg, p) => assert_eq!(
                a.decode::<PasswordAlgorithm>(tid),
                Ok(PasswordAlgorithmParams {
                    algorithm: *alg,
                    params: p
                })
            ),
            AnyAttr::PwAlgs(list) => {
                let items = params(list);
                assert_eq!(
                    a.decode::<PasswordAlgorithms>(tid),
                    Ok(PasswordAlgorithmList::new(&items))
                );
            }
            AnyAttr::Priority(p) => assert_eq!(a.decode::<Priority>(tid), Ok(*p)),
            AnyAttr::UseCandidate => assert_eq!(a.decode::<UseCandidate>(tid), Ok(())),
            AnyAttr::IceControlled(t) => assert_eq!(a.decode::<IceControlled>(tid), Ok(*t)),
            AnyAttr::IceControlling(t) => assert_eq!(a.decode::<IceControlling>(tid), Ok(*t)),
            AnyAttr::Channel(c) => assert_eq!(a.decode::<ChannelNumber>(tid), Ok(*c)),
            AnyAttr::Lifetime(l) => assert_eq!(a.decode::<Lifetime>(tid), Ok(*l)),
            AnyAttr::Data(d) => assert_eq!(a.decode::<Data>(tid), Ok(d.as_slice())),
            AnyAttr::ReqFamily(f) => assert_eq!(a.decode::<RequestedAddressFamily>(tid), Ok(*f)),
            AnyAttr::AddFamily(f) => assert_eq!(a.decode::<AdditionalAddressFamily>(tid), Ok(*f)),
            AnyAttr::EvenPort(r) => assert_eq!(a.decode::<EvenPort>(tid), Ok(*r)),
            AnyAttr::ReqTransport(p) => assert_eq!(a.decode::<RequestedTransport>(tid), Ok(*p)),
            AnyAttr::DontFragment => assert_eq!(a.decode::<DontFragment>(tid), Ok(())),
            AnyAttr::Token(t) => assert_eq!(a.decode::<ReservationToken>(tid), Ok(*t)),
            AnyAttr::AddrErr(f, c, r) => assert_eq!(
                a.decode::<AddressErrorCode>(tid),
                Ok(AddressErrorCodeValue {
                    family: *f,
                    code: *c,
                    reason: r
                })
            ),
            AnyAttr::Icmp(t, c, d) => {
                assert_eq!(
                    a.decode::<Icmp>(tid),
                    Ok(IcmpValue {
                        icmp_type: *t,
                        code: *c,
                        error_data: *d
                    })
                )
            }
            AnyAttr::Raw(t, v) => {
                assert_eq!(a.attr_type, AttrType(*t));
                assert_eq!(a.value, v.as_slice());
            }
        }
    }
}

fn params(list: &[(u16, Vec<u8>)]) -> Vec<PasswordAlgorithmParams<'_>> {
    list.iter()
        .map(|(a, p)| PasswordAlgorithmParams {
            algorithm: *a,
            params: p,
        })
        .collect()
}

// ---- strategies --------------------------------------------------------------

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,32}"
}

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::V4), Just(AddressFamily::V6)]
}

fn small_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn any_attr() -> impl Strategy<Value = AnyAttr> {
    prop_oneof![
        socket_addr().prop_map(AnyAttr::Mapped),
        socket_addr().prop_map(AnyAttr::XorMapped),
        socket_addr().prop_map(AnyAttr::XorPeer),
        socket_addr().prop_map(AnyAttr::XorRelayed),
        socket_addr().prop_map(AnyAttr::AltServer),
        text().prop_map(AnyAttr::Username),
        text().prop_map(AnyAttr::Realm),
        text().prop_map(AnyAttr::Nonce),
        text().prop_map(AnyAttr::Software),
        text().prop_map(AnyAttr::AltDomain),
        any::<[u8; 32]>().prop_map(AnyAttr::Userhash),
        (300u16..700, text()).prop_map(|(c, r)| AnyAttr::ErrorCode(c, r)),
        prop::collection::vec(any::<u16>(), 0..6).prop_map(AnyAttr::Unknown),
        (any::<u16>(), small_bytes(9)).prop_map(|(a, p)| AnyAttr::PwAlg(a, p)),
        prop::collection::vec((any::<u16>(), small_bytes(9)), 0..4).prop_map(AnyAttr::PwAlgs),
        any::<u32>().prop_map(AnyAttr::Priority),
        Just(AnyAttr::UseCandidate),
        any::<u64>().prop_map(AnyAttr::IceControlled),
        any::<u64>().prop_map(AnyAttr::IceControlling),
        (0x4000u16..=0x4FFF).prop_map(AnyAttr::Channel),
        any::<u32>().prop_map(AnyAttr::Lifetime),
        small_bytes(200).prop_map(AnyAttr::Data),
        family().prop_map(AnyAttr::ReqFamily),
        family().prop_map(AnyAttr::AddFamily),
        any::<bool>().prop_map(AnyAttr::EvenPort),
        any::<u8>().prop_map(AnyAttr::ReqTransport),
        Just(AnyAttr::DontFragment),
        any::<[u8; 8]>().prop_map(AnyAttr::Token),
        (family(), 300u16..700, text()).prop_map(|(f, c, r)| AnyAttr::AddrErr(f, c, r)),
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(t, c, d)| AnyAttr::Icmp(t, c, d)),
        (
            any::<u16>().prop_filter("unknown type", |t| !AttrType(*t).is_known()),
            small_bytes(40)
        )
            .prop_map(|(t, v)| AnyAttr::Raw(t, v)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Integrity {
    None,
    Sha1,
    Sha256(usize),
    Both,
}

fn integrity() -> impl Strategy<Value = Integrity> {
    prop_oneof![
        Just(Integrity::None),
        Just(Integrity::Sha1),
        prop::sample::select(vec![16usize, 20, 24, 28, 32]).prop_map(Integrity::Sha256),
        Just(Integrity::Both),
    ]
}

#[derive(Debug, Clone)]
struct Spec {
    typ: MessageType,
    tid: TransactionId,
    attrs: Vec<AnyAttr>,
    integrity: Integrity,
    fingerprint: bool,
    key: Vec<u8>,
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        Just(Class::Request),
        Just(Class::Indication),
        Just(Class::SuccessResponse),
        Just(Class::ErrorResponse)
    ]
}

fn spec(integ: BoxedStrategy<Integrity>) -> impl Strategy<Value = Spec> {
    (
        0u16..=0xFFF,
        class(),
        any::<[u8; 12]>(),
        prop::collection::vec(any_attr(), 0..10),
        integ,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 1..40),
    )
        .prop_map(|(m, class, tid, attrs, integrity, fingerprint, key)| Spec {
            typ: MessageType::new(Method::new(m).unwrap(), class),
            tid: TransactionId(tid),
            attrs,
            integrity,
            fingerprint,
            key,
        })
}

impl Spec {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, self.typ, self.tid);
        for a in &self.attrs {
            a.write(&mut w);
        }
        match self.integrity {
            Integrity::None => {}
            Integrity::Sha1 => {
                w.add_message_integrity(&self.key).unwrap();
            }
            Integrity::Sha256(n) => {
                w.add_message_integrity_sha256_truncated(&self.key, n)
                    .unwrap();
            }
            Integrity::Both => {
                w.add_message_integrity(&self.key)
                    .unwrap()
                    .add_message_integrity_sha256(&self.key)
                    .unwrap();
            }
        }
        if self.fingerprint {
            w.add_fingerprint().unwrap();
        }
        let n = w.finish();
        assert_eq!(n, out.len());
        out
    }

    /// What a receiver that expects this message's protections checks.
    fn accepts(&self, bytes: &[u8]) -> bool {
        let Ok(m) = Message::parse(bytes) else {
            return false;
        };
        let sha1 = matches!(self.integrity, Integrity::Sha1 | Integrity::Both);
        let sha256 = matches!(self.integrity, Integrity::Sha256(_) | Integrity::Both);
        (!sha1 || m.verify_message_integrity(&self.key).is_ok())
            && (!sha256 || m.verify_message_integrity_sha256(&self.key).is_ok())
            && (!self.fingerprint || m.verify_fingerprint().is_ok())
    }
}

fn is_integrity_or_fingerprint(t: AttrType) -> bool {
    matches!(
        t,
        AttrType::MESSAGE_INTEGRITY | AttrType::MESSAGE_INTEGRITY_SHA256 | AttrType::FINGERPRINT
    )
}

// ---- properties --------------------------------------------------------------

/// Bounded case count; no regression files (integration tests have no
/// lib.rs for proptest to place them next to; failures print the seed).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn encode_decode_round_trip(spec in spec(integrity().boxed())) {
        let bytes = spec.encode();
        prop_assert!(is_stun(&bytes));
        prop_assert_eq!(frame_len(&bytes), Ok(Some(StreamFrame::Stun(bytes.len()))));
        let m = Message::parse(&bytes).unwrap();
        prop_assert_eq!(m.message_type(), spec.typ);
        prop_assert_eq!(m.transaction_id(), spec.tid);
        prop_assert_eq!(m.as_bytes(), &bytes[..]);

        let plain: Vec<_> = m.attributes().filter(|a| !is_integrity_or_fingerprint(a.attr_type)).collect();
        prop_assert_eq!(plain.len(), spec.attrs.len());
        for (want, got) in spec.attrs.iter().zip(&plain) {
            want.check(got, &spec.tid);
        }
        prop_assert_eq!(m.raw_attributes().count(), m.attributes().count());

        prop_assert_eq!(m.has_integrity(), spec.integrity != Integrity::None);
        prop_assert_eq!(m.has_fingerprint(), spec.fingerprint);
        prop_assert!(spec.accepts(&bytes));
        if spec.integrity != Integrity::None {
            let mut wrong = spec.key.clone();
            wrong[0] ^= 1;
            prop_assert_eq!(m.verify_integrity(&wrong), Err(stun::Error::IntegrityMismatch));
            let alg = if matches!(spec.integrity, Integrity::Sha1) { stun::IntegrityAlg::Sha1 } else { stun::IntegrityAlg::Sha256 };
            prop_assert_eq!(m.verify_integrity(&spec.key), Ok(alg));
        }

        // The slice writer produces identical bytes.
        let mut slice = vec![0u8; bytes.len()];
        let mut w = MessageWriter::new_in_slice(&mut slice, spec.typ, spec.tid).unwrap();
        for a in &spec.attrs {
            a.write(&mut w);
        }
        match spec.integrity {
            Integrity::None => {}
            Integrity::Sha1 => { w.add_message_integrity(&spec.key).unwrap(); }
            Integrity::Sha256(n) => { w.add_message_integrity_sha256_truncated(&spec.key, n).unwrap(); }
            Integrity::Both => { w.add_message_integrity(&spec.key).unwrap().add_message_integrity_sha256(&spec.key).unwrap(); }
        }
        if spec.fingerprint { w.add_fingerprint().unwrap(); }
        prop_assert_eq!(w.finish(), bytes.len());
        prop_assert_eq!(slice, bytes);
    }

    #[test]
    fn integrity_fails_after_any_single_bit_flip(
        spec in spec(prop_oneof![
            Just(Integrity::Sha1),
            Just(Integrity::Both),
            prop::sample::select(vec![16usize, 20, 32]).prop_map(Integrity::Sha256),
        ].boxed()),
        bit in any::<Index>(),
    ) {
        let mut bytes = spec.encode();
        prop_assert!(spec.accepts(&bytes));
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(!spec.accepts(&bytes), "flip of bit {} accepted", bit);
    }

    #[test]
    fn without_fingerprint_verify_integrity_alone_catches_flips(
        spec in spec(prop_oneof![
            Just(Integrity::Sha1),
            prop::sample::select(vec![16usize, 32]).prop_map(Integrity::Sha256),
        ].boxed()),
        bit in any::<Index>(),
    ) {
        // With a single integrity attribute at the end, nothing is outside
        // its coverage except its own value, so the one call suffices.
        let spec = Spec { fingerprint: false, ..spec };
        let mut bytes = spec.encode();
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert!(m.verify_integrity(&spec.key).is_err(), "flip of bit {} accepted", bit);
        }
    }

    #[test]
    fn channel_data_round_trip(channel in 0x4000u16..=0x4FFF, data in small_bytes(600), padded in any::<bool>()) {
        let cd = ChannelData::new(channel, &data).unwrap();
        let mut out = Vec::new();
        cd.encode(&mut out, padded);
        prop_assert_eq!(out.len(), cd.encoded_len(padded));
        prop_assert_eq!(out.len() % 4 == 0, padded || data.len() % 4 == 0);
        let back = ChannelData::parse(&out).unwrap();
        prop_assert_eq!(back.channel(), channel);
        prop_assert_eq!(back.data(), &data[..]);
        if padded {
            prop_assert_eq!(frame_len(&out), Ok(Some(StreamFrame::ChannelData(out.len()))));
            // A second frame right behind it is left alone.
            let mut stream = out.clone();
            stream.extend_from_slice(&out);
            let (first, used) = ChannelData::parse_stream(&stream).unwrap();
            prop_assert_eq!(first, cd);
            prop_assert_eq!(used, out.len());
        }
        let mut slice = vec![0u8; out.len()];
        prop_assert_eq!(cd.encode_into(&mut slice, padded), Ok(out.len()));
        prop_assert_eq!(slice, out);
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// Valid STUN and padded ChannelData frames back to back, cut into
    /// random pieces, come out of the stream framer whole and in order.
    #[test]
    fn stream_framer_reassembles_any_chunking(
        frames in prop::collection::vec(prop_oneof![
            spec(integrity().boxed()).prop_map(|s| (false, s.encode())),
            (0x4000u16..=0x4FFF, small_bytes(300)).prop_map(|(c, d)| {
                let mut out = Vec::new();
                ChannelData::new(c, &d).unwrap().encode(&mut out, true);
                (true, out)
            }),
        ], 0..12),
        cuts in prop::collection::vec(1usize..200, 1..40),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let mut framer = Framer::new();
        let mut got = Vec::new();
        let (mut at, mut i) = (0, 0);
        while at < stream.len() {
            let mut n = cuts[i % cuts.len()].min(stream.len() - at);
            // Alternate the two ways in: a copy, and a read into the buffer.
            if i % 2 == 0 {
                framer.push(&stream[at..at + n]);
            } else {
                let dst = framer.read_buf();
                n = n.min(dst.len());
                dst[..n].copy_from_slice(&stream[at..at + n]);
                framer.advance(n);
            }
            at += n;
            i += 1;
            while let Some(f) = framer.pop().unwrap() {
                got.push((matches!(f, Frame::ChannelData(_)), f.as_bytes().to_vec()));
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert_eq!(framer.buffered(), 0);
    }
}

// ---- never panics ------------------------------------------------------------

/// A byte-level edit applied to a valid message.
#[derive(Debug, Clone)]
enum Mutation {
    Xor(Index, u8),
    Set16(Index, u16),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, x)| Mutation::Xor(i, x)),
        (any::<Index>(), any::<u16>()).prop_map(|(i, v)| Mutation::Set16(i, v)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), small_bytes(8)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        Mutation::Xor(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Set16(i, v) => {
            // Aligned so that it often lands on a length or type field.
            let i = i.index(bytes.len()) & !1;
            for (d, s) in bytes[i..].iter_mut().zip(v.to_be_bytes()) {
                *d = s;
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        Mutation::Insert(i, v) => {
            let i = i.index(bytes.len());
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let i = i.index(bytes.len());
            let n = n.index(bytes.len() - i + 1);
            bytes.drain(i..i + n);
        }
    }
}

/// A header that passes the header checks, over an arbitrary body, so the
/// attribute walker sees lots of garbage.
fn stunish() -> impl Strategy<Value = Vec<u8>> {
    (
        0u16..0x4000,
        any::<[u8; 12]>(),
        small_bytes(120),
        any::<bool>(),
    )
        .prop_map(|(t, tid, body, honest)| {
            let len = if honest {
                body.len() as u16 & !3
            } else {
                (body.len() as u16).wrapping_mul(3)
            };
            let mut v = Vec::with_capacity(20 + body.len());
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
            v.extend_from_slice(&tid);
            v.extend_from_slice(&body[..if honest { usize::from(len) } else { body.len() }]);
            v
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn never_panics_on_arbitrary_bytes(data in small_bytes(300)) {
        exercise(&data);
    }

    #[test]
    fn never_panics_on_stun_shaped_garbage(data in stunish()) {
        exercise(&data);
    }

    #[test]
    fn never_panics_on_channel_data_shaped_garbage(first in 0x40u8..0x50, rest in small_bytes(80)) {
        let mut data = vec![first];
        data.extend_from_slice(&rest);
        exercise(&data);
    }

    #[test]
    fn never_panics_on_mutated_valid_messages(
        spec in spec(integrity().boxed()),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = spec.encode();
        exercise(&bytes);
        for m in &mutations {
            apply(&mut bytes, m);
            exercise(&bytes);
        }
    }
}
