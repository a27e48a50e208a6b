//! Feeds one input to every parse entry point of the crate (the stream
//! [`stun::Framer`] too, at several chunkings) and checks the invariants
//! that must hold for whatever parses. Shared by the proptest
//! "never panics" suite, the fuzz-corpus replay test and the cargo-fuzz
//! target (which includes this file by path), so all three exercise the
//! same surface. Panics only on a real bug: a crash inside the crate, or a
//! parse → encode → parse round trip that does not agree.

use stun::attr::*;
use stun::{
    classify, frame_len, is_stun, AttrType, Attribute, ChannelData, EncodeAttribute, Error, Frame,
    Framer, Message, MessageWriter, RawAttribute, StreamFrame, TransactionId,
};

/// Runs everything on `data`.
pub fn exercise(data: &[u8]) {
    let _ = classify(data);
    let quick = is_stun(data);
    if let Ok(m) = Message::parse(data) {
        assert!(quick, "parse accepted what is_stun rejected");
        check_message(&m);
    }
    if let Ok((m, used)) = Message::parse_prefix(data) {
        assert_eq!(m.as_bytes(), &data[..used]);
        check_message(&m);
    }
    match frame_len(data) {
        Ok(Some(StreamFrame::Stun(n))) if data.len() >= n => {
            // A whole STUN frame is there: parse_prefix must agree on its size.
            if let Ok((_, used)) = Message::parse_prefix(data) {
                assert_eq!(used, n);
            }
        }
        Ok(Some(StreamFrame::ChannelData(n))) => {
            if let Ok((cd, used)) = ChannelData::parse_stream(data) {
                assert_eq!(used, n);
                check_channel_data(&cd);
            }
        }
        _ => {}
    }
    if let Ok(cd) = ChannelData::parse(data) {
        check_channel_data(&cd);
    }
    check_framer(data);
    // Every value codec on the raw bytes, with a transaction id taken from
    // the input so XOR decoding sees varied pads.
    let mut tid = [0u8; 12];
    for (d, s) in tid.iter_mut().zip(data.iter().rev()) {
        *d = *s;
    }
    decode_everything(data, &TransactionId(tid));
}

/// What a [`Framer`] made of a stream: the frames it popped and how it
/// stopped (`None`: waiting for more bytes).
type Framed = (Vec<(bool, Vec<u8>)>, Option<Error>);

/// Feeds `data` to a framer `chunk` bytes at a time (through `read_buf`
/// when `via_read_buf`), popping after each piece.
fn run_framer(mut framer: Framer, data: &[u8], chunk: usize, via_read_buf: bool) -> Framed {
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        if via_read_buf {
            let mut rest = piece;
            while !rest.is_empty() {
                let dst = framer.read_buf();
                assert!(!dst.is_empty(), "read_buf offers no room");
                let n = dst.len().min(rest.len());
                dst[..n].copy_from_slice(&rest[..n]);
                framer.advance(n);
                rest = &rest[n..];
            }
        } else {
            framer.push(piece);
        }
        loop {
            match framer.pop() {
                Ok(Some(f)) => {
                    frames.push((matches!(f, Frame::ChannelData(_)), f.as_bytes().to_vec()))
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// The stream framer agrees with `frame_len` frame by frame, whatever the
/// chunking, and a length limit only cuts the stream at the first frame
/// over it.
fn check_framer(data: &[u8]) {
    let whole = run_framer(Framer::new(), data, data.len(), false);
    for (chunk, via) in [(1, false), (3, true), (7, false), (64, true)] {
        assert_eq!(
            run_framer(Framer::new(), data, chunk, via),
            whole,
            "chunk {chunk}"
        );
    }
    let (frames, stop) = &whole;
    let mut off = 0;
    for (is_cd, bytes) in frames {
        let want = if *is_cd {
            StreamFrame::ChannelData(bytes.len())
        } else {
            StreamFrame::Stun(bytes.len())
        };
        assert_eq!(frame_len(&data[off..]), Ok(Some(want)));
        assert_eq!(&data[off..off + bytes.len()], &bytes[..]);
        off += bytes.len();
    }
    let rest = &data[off..];
    match stop {
        Some(e) => assert_eq!(frame_len(rest), Err(*e)),
        None => match frame_len(rest) {
            Ok(None) => {}
            Ok(Some(f)) => assert!(f.len() > rest.len(), "a whole frame was left behind"),
            Err(e) => panic!("framer missed {e}"),
        },
    }
    const LIMIT: usize = 64;
    let (small, small_stop) = run_framer(Framer::with_limit(LIMIT), data, 5, true);
    let keep = frames.iter().take_while(|(_, b)| b.len() <= LIMIT).count();
    assert_eq!(&small[..], &frames[..keep]);
    if keep < frames.len() {
        let len = frames[keep].1.len();
        assert_eq!(small_stop, Some(Error::FrameTooLong { len, max: LIMIT }));
    }
}

fn check_channel_data(cd: &ChannelData<'_>) {
    for padded in [false, true] {
        let mut out = Vec::new();
        cd.encode(&mut out, padded);
        assert_eq!(out.len(), cd.encoded_len(padded));
        assert_eq!(ChannelData::parse(&out).as_ref(), Ok(cd));
        if padded {
            assert_eq!(ChannelData::parse_stream(&out), Ok((*cd, out.len())));
        }
    }
}

fn check_message(m: &Message<'_>) {
    let tid = m.transaction_id();
    let _ = format!("{m:?}");
    for a in m.raw_attributes() {
        decode_typed(&a, &tid);
    }
    let _ = m.unknown_comprehension_required(AttrType::is_known).count();
    let _ = m.verify_message_integrity(b"key");
    let _ = m.verify_message_integrity_sha256(b"key");
    let _ = m.verify_integrity(b"key");
    let _ = m.verify_fingerprint();
    get_everything(m);

    // Re-encode the counted, non-integrity attributes raw: the copy must
    // parse and list the same attributes.
    let mut out = Vec::new();
    let mut w = MessageWriter::new(&mut out, m.message_type(), tid);
    let mut expected = Vec::new();
    for a in m.attributes() {
        if matches!(
            a.attr_type,
            AttrType::MESSAGE_INTEGRITY
                | AttrType::MESSAGE_INTEGRITY_SHA256
                | AttrType::FINGERPRINT
        ) {
            continue;
        }
        w.add_raw(a.attr_type, a.value)
            .expect("a parsed attribute always fits again");
        expected.push((a.attr_type, a.value));
    }
    w.finish();
    let copy = Message::parse(&out).expect("re-encoded message parses");
    let got: Vec<_> = copy.attributes().map(|a| (a.attr_type, a.value)).collect();
    assert_eq!(got, expected);
    assert_eq!(copy.message_type(), m.message_type());
}

/// Decodes with the typed codec matching the attribute's type, and checks
/// decode → encode → decode for encodable types.
fn decode_typed(a: &RawAttribute<'_>, tid: &TransactionId) {
    macro_rules! roundtrip {
        ($($ty:ty),* $(,)?) => {
            $(
                if a.attr_type == <$ty as Attribute>::TYPE {
                    if let Ok(v) = a.decode::<$ty>(tid) {
                        let n = <$ty as EncodeAttribute>::encoded_len(&v).expect("decoded value must be encodable");
                        let mut buf = vec![0u8; n];
                        <$ty as EncodeAttribute>::encode(&v, tid, &mut buf);
                        let again = <$ty as Attribute>::decode(&buf, tid).expect("re-encoded value decodes");
                        assert_eq!(again, v, "{} round trip", a.attr_type);
                    }
                }
            )*
        };
    }
    roundtrip!(
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        Username,
        Realm,
        Nonce,
        Software,
        AlternateDomain,
        Userhash,
        ErrorCode,
        UnknownAttributes,
        PasswordAlgorithm,
        PasswordAlgorithms,
        Priority,
        UseCandidate,
        IceControlled,
        IceControlling,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        AddressErrorCode,
        Icmp,
    );
    let _ = a.decode::<MessageIntegrity>(tid);
    let _ = a.decode::<MessageIntegritySha256>(tid);
    let _ = a.decode::<Fingerprint>(tid);
}

fn get_everything(m: &Message<'_>) {
    macro_rules! get {
        ($($ty:ty),* $(,)?) => { $( let _ = m.get::<$ty>().map(|v| format!("{v:?}")); let _ = m.contains::<$ty>(); let _ = m.get_all::<$ty>().count(); )* };
    }
    get!(
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        Username,
        Realm,
        Nonce,
        Software,
        AlternateDomain,
        Userhash,
        ErrorCode,
        UnknownAttributes,
        PasswordAlgorithm,
        PasswordAlgorithms,
        Priority,
        UseCandidate,
        IceControlled,
        IceControlling,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        AddressErrorCode,
        Icmp,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
    );
}

fn decode_everything(value: &[u8], tid: &TransactionId) {
    macro_rules! dec {
        ($($ty:ty),* $(,)?) => { $( let _ = <$ty as Attribute>::decode(value, tid).map(|v| format!("{v:?}")); )* };
    }
    dec!(
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        Username,
        Realm,
        Nonce,
        Software,
        AlternateDomain,
        Userhash,
        ErrorCode,
        UnknownAttributes,
        PasswordAlgorithm,
        PasswordAlgorithms,
        Priority,
        UseCandidate,
        IceControlled,
        IceControlling,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        AddressErrorCode,
        Icmp,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
    );
}
