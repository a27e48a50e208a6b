//! Codec tests: hand-built packets, packets captured from Chromium 156, and
//! property tests over arbitrary bytes.

use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Builds response packets by hand, with control over compression.
struct Packet {
    buf: Vec<u8>,
    counts: [u16; 4],
}

impl Packet {
    fn response() -> Self {
        let mut buf = vec![0; 12];
        buf[2] = 0x84; // QR + AA
        Packet {
            buf,
            counts: [0; 4],
        }
    }

    /// Uncompressed name; returns its offset for later pointers.
    fn name(&mut self, name: &str) -> usize {
        let at = self.buf.len();
        for l in name.split('.') {
            self.buf.push(l.len() as u8);
            self.buf.extend_from_slice(l.as_bytes());
        }
        self.buf.push(0);
        at
    }

    fn pointer(&mut self, to: usize) {
        self.buf
            .extend_from_slice(&(0xc000 | to as u16).to_be_bytes());
    }

    fn question(&mut self, name: &str, qtype: u16) -> usize {
        let at = self.name(name);
        self.buf.extend_from_slice(&qtype.to_be_bytes());
        self.buf.extend_from_slice(&1u16.to_be_bytes());
        self.counts[0] += 1;
        at
    }

    /// Record fields after the owner name (already written by the caller).
    fn rr(&mut self, section: usize, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) {
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&class.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(rdata);
        self.counts[section] += 1;
    }

    fn a(&mut self, name: &str, ip: [u8; 4]) -> usize {
        let at = self.name(name);
        self.rr(1, TYPE_A, 0x8001, 120, &ip);
        at
    }

    fn finish(mut self) -> Vec<u8> {
        for (i, c) in self.counts.iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }
}

const NAME: &str = "3b6a1d2a-8c51-4e0c-9c3f-2c3b1f1e4a77.local";

// Captured from Chromium 156 (tcpdump on eth0): the answer to an A query,
// A 192.0.2.2 with cache-flush and TTL 120, plus an NSEC in the additional
// section whose next-name is a pointer and whose bitmap lists only A.
const CHROMIUM_A: &str = "0000840000000001000000012430323366623939632d663863392d346437372d616365312d666235356239666165653036056c6f63616c0000018001000000780004c00002022430323366623939632d663863392d346437372d616365312d666235356239666165653036056c6f63616c00002f8001000000780005c046000140";
const CHROMIUM_A_NAME: &str = "023fb99c-f8c9-4d77-ace1-fb55b9faee06.local";
// The answer to an AAAA query: AAAA fd00::2 plus an NSEC listing only AAAA.
const CHROMIUM_AAAA: &str = "0000840000000001000000012439653736646238622d346331362d343765612d386638302d343532653430613039333432056c6f63616c00001c8001000000780010fd0000000000000000000000000000022439653736646238622d346331362d343765612d386638302d343532653430613039333432056c6f63616c00002f8001000000780008c052000400000008";
const CHROMIUM_AAAA_NAME: &str = "9e76db8b-4c16-47ea-8f80-452e40a09342.local";

#[test]
fn encode_query_bytes() {
    let mut buf = vec![0xff; 3]; // cleared first
    encode_query("a.local", 0x1234, QueryType::A, false, &mut buf).unwrap();
    let mut want = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    want.extend_from_slice(b"\x01a\x05local\x00");
    want.extend_from_slice(&[0, 1, 0, 1]); // A, IN (QM)
    assert_eq!(buf, want);

    encode_query("A.Local.", 0, QueryType::Aaaa, true, &mut buf).unwrap();
    assert_eq!(&buf[..12], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    // Case is kept on the wire; the trailing dot is not a label.
    assert_eq!(&buf[12..21], b"\x01A\x05Local\x00");
    assert_eq!(&buf[21..], &[0x00, 0x1c, 0x80, 0x01], "AAAA, QU|IN");
}

#[test]
fn encode_query_rejects_bad_names() {
    let mut buf = Vec::new();
    for bad in ["example.com", "local", ".local", "a..local", ""] {
        assert!(
            matches!(
                encode_query(bad, 0, QueryType::A, false, &mut buf),
                Err(Error::InvalidName { .. })
            ),
            "{bad}"
        );
    }
}

#[test]
fn name_validation() {
    assert_eq!(validate_name("x.local").unwrap(), "x.local");
    assert_eq!(validate_name("X.LOCAL.").unwrap(), "X.LOCAL");
    assert_eq!(validate_name(NAME).unwrap(), NAME);
    assert_eq!(validate_name("a.b.local").unwrap(), "a.b.local");
    for bad in [
        "local",
        ".local",
        "a..local",
        "a.local..",
        "foo.localhost",
        "foo.com",
        "x.local.x",
        "",
        ".",
    ] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
    let l63 = "a".repeat(63);
    assert!(validate_name(&format!("{l63}.local")).is_ok());
    assert!(validate_name(&format!("{}.local", "a".repeat(64))).is_err());
    // 253 characters is the most that fits in 255 wire bytes.
    let long = format!("{l63}.{l63}.{l63}.{}.local", "a".repeat(253 - 3 * 64 - 6));
    assert_eq!(long.len(), 253);
    assert!(validate_name(&long).is_ok());
    assert!(validate_name(&format!("a{long}")).is_err());
    // Multi-byte characters where the `.local` cut would fall: no panic.
    assert!(validate_name("ééééé").is_err());
    assert!(validate_name("é.local").is_ok());
}

#[test]
fn chromium_a_answer() {
    let pkt = hex(CHROMIUM_A);
    assert_eq!(pkt.len(), 129);
    assert_eq!(
        parse_response(&pkt, CHROMIUM_A_NAME).unwrap(),
        vec![IpAddr::from([192, 0, 2, 2])]
    );
    let recs = parse_records(&pkt).unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].ttl, 120);
    assert_eq!(
        recs[1].data,
        RecordData::Nsec {
            a: true,
            aaaa: false
        }
    );
    assert!(recs.iter().all(|r| r.name == CHROMIUM_A_NAME));
    // Any case matches.
    assert_eq!(
        parse_response(&pkt, &CHROMIUM_A_NAME.to_uppercase())
            .unwrap()
            .len(),
        1
    );
    // Another name gets nothing, without error.
    assert!(parse_response(&pkt, NAME).unwrap().is_empty());
}

#[test]
fn chromium_aaaa_answer() {
    let pkt = hex(CHROMIUM_AAAA);
    assert_eq!(
        parse_response(&pkt, CHROMIUM_AAAA_NAME).unwrap(),
        vec!["fd00::2".parse::<IpAddr>().unwrap()]
    );
    let recs = parse_records(&pkt).unwrap();
    assert_eq!(
        recs[1].data,
        RecordData::Nsec {
            a: false,
            aaaa: true
        }
    );
}

#[test]
fn compressed_owner_names() {
    let mut p = Packet::response();
    let q = p.question(NAME, TYPE_A);
    // Answer owner: pointer to the question's name.
    p.pointer(q);
    p.rr(1, TYPE_A, 1, 120, &[10, 0, 0, 1]);
    // Owner: one label, then a pointer to the `local` suffix of the question.
    let suffix = q + 1 + NAME.find('.').unwrap();
    p.buf.extend_from_slice(b"\x05other");
    p.pointer(suffix);
    p.rr(2, TYPE_A, 1, 120, &[10, 0, 0, 2]);
    // Additional: the name again, compressed.
    p.pointer(q);
    p.rr(
        3,
        TYPE_AAAA,
        1,
        120,
        &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
    );
    let pkt = p.finish();
    assert_eq!(
        parse_response(&pkt, NAME).unwrap(),
        vec![IpAddr::from([10, 0, 0, 1]), "fe80::9".parse().unwrap()]
    );
    // The authority-section record parses but is not used.
    assert!(parse_response(&pkt, "other.local").unwrap().is_empty());
    let recs = parse_records(&pkt).unwrap();
    assert_eq!(recs.len(), 2);
}

#[test]
fn pointer_to_pointer_chain() {
    let mut p = Packet::response();
    let a = p.a("x.local", [1, 2, 3, 4]);
    let b = p.buf.len();
    p.pointer(a);
    p.rr(1, TYPE_A, 1, 120, &[1, 2, 3, 5]);
    p.pointer(b); // pointer to a pointer
    p.rr(1, TYPE_A, 1, 120, &[1, 2, 3, 6]);
    let pkt = p.finish();
    assert_eq!(parse_response(&pkt, "X.local").unwrap().len(), 3);
}

#[test]
fn pointer_loops_are_errors() {
    // Pointer to itself.
    let mut p = Packet::response();
    let at = p.buf.len();
    p.pointer(at);
    p.rr(1, TYPE_A, 1, 120, &[1, 1, 1, 1]);
    assert!(matches!(
        parse_records(&p.finish()),
        Err(Error::Malformed(_))
    ));

    // Two pointers pointing at each other: the second one points forward.
    let mut p = Packet::response();
    let first = p.buf.len();
    p.pointer(first + 2);
    p.pointer(first);
    p.rr(1, TYPE_A, 1, 120, &[1, 1, 1, 1]);
    assert!(matches!(
        parse_records(&p.finish()),
        Err(Error::Malformed(_))
    ));

    // A label followed by a pointer back to that label.
    let mut p = Packet::response();
    let start = p.buf.len();
    p.buf.extend_from_slice(b"\x01a");
    p.pointer(start);
    p.rr(1, TYPE_A, 1, 120, &[1, 1, 1, 1]);
    assert!(matches!(
        parse_records(&p.finish()),
        Err(Error::Malformed(_))
    ));

    // A pointer into the header: reads garbage labels but terminates.
    let mut p = Packet::response();
    p.pointer(0);
    p.rr(1, TYPE_A, 1, 120, &[1, 1, 1, 1]);
    let _ = parse_records(&p.finish());
}

#[test]
fn long_names_via_pointers_are_errors() {
    // Each name adds a 63-byte label in front of the previous one.
    let mut p = Packet::response();
    let mut prev = p.a(&format!("{}.local", "a".repeat(63)), [1, 1, 1, 1]);
    for _ in 0..4 {
        let at = p.buf.len();
        p.buf.push(63);
        p.buf.extend_from_slice(&[b'b'; 63]);
        p.pointer(prev);
        p.rr(1, TYPE_A, 1, 120, &[1, 1, 1, 1]);
        prev = at;
    }
    assert!(matches!(parse_records(&p.finish()), Err(Error::Malformed(m)) if m.contains("255")));
}

#[test]
fn truncated_packets_are_errors() {
    let full = hex(CHROMIUM_A);
    for n in 0..full.len() {
        assert!(
            parse_records(&full[..n]).is_err(),
            "prefix of {n} bytes parsed"
        );
        assert!(parse_response(&full[..n], CHROMIUM_A_NAME).is_err());
    }
    // Counts that promise more records than there are.
    let mut more = full.clone();
    more[7] = 2;
    assert!(matches!(parse_records(&more), Err(Error::Malformed(_))));
}

#[test]
fn queries_and_errors_are_not_responses() {
    let mut q = Vec::new();
    encode_query(NAME, 0, QueryType::A, false, &mut q).unwrap();
    assert!(matches!(parse_response(&q, NAME), Err(Error::NotResponse)));
    let mut pkt = hex(CHROMIUM_A);
    pkt[3] |= 3; // rcode NXDOMAIN
    assert!(matches!(parse_records(&pkt), Err(Error::NotResponse)));
    let mut pkt = hex(CHROMIUM_A);
    pkt[2] |= 0x28; // opcode 5
    assert!(matches!(parse_records(&pkt), Err(Error::NotResponse)));
}

#[test]
fn classes_ttls_and_bad_rdata() {
    let mut p = Packet::response();
    p.name("c.local");
    p.rr(1, TYPE_A, 3, 120, &[9, 9, 9, 9]); // class CH: ignored
    p.name("c.local");
    p.rr(1, TYPE_A, 0x8001, 0, &[8, 8, 8, 8]); // goodbye
    p.name("c.local");
    p.rr(1, 16, 1, 120, b"\x03txt"); // TXT: skipped
    p.name("c.local");
    p.rr(1, TYPE_A, 1, 120, &[7, 7, 7, 7]);
    p.name("c.local");
    p.rr(1, TYPE_A, 1, 120, &[7, 7, 7, 7]); // duplicate
    let pkt = p.finish();
    assert_eq!(
        parse_response(&pkt, "c.local").unwrap(),
        vec![IpAddr::from([7, 7, 7, 7])]
    );
    let recs = parse_records(&pkt).unwrap();
    assert_eq!(
        recs.len(),
        3,
        "goodbye is reported by parse_records: {recs:?}"
    );
    assert_eq!(recs[0].ttl, 0);

    let mut p = Packet::response();
    p.name("c.local");
    p.rr(1, TYPE_A, 1, 120, &[7, 7, 7, 7, 7]);
    assert!(matches!(
        parse_records(&p.finish()),
        Err(Error::Malformed(_))
    ));
    let mut p = Packet::response();
    p.name("c.local");
    p.rr(1, TYPE_AAAA, 1, 120, &[7; 4]);
    assert!(matches!(
        parse_records(&p.finish()),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn odd_labels() {
    // A label containing a dot, or a NUL, can never match a query name.
    for label in [&b"a.b"[..], b"a\0b"] {
        let mut p = Packet::response();
        p.buf.push(label.len() as u8);
        p.buf.extend_from_slice(label);
        p.buf.extend_from_slice(b"\x05local\x00");
        p.rr(1, TYPE_A, 1, 120, &[1, 2, 3, 4]);
        let pkt = p.finish();
        assert!(parse_records(&pkt).unwrap().is_empty());
        assert!(parse_response(&pkt, "a.b.local").unwrap().is_empty());
    }
    // Label types 01 and 10 (extended / reserved) are errors.
    for first in [0x40u8, 0x80] {
        let mut p = Packet::response();
        p.buf.extend_from_slice(&[first, 0]);
        p.rr(1, TYPE_A, 1, 120, &[1, 2, 3, 4]);
        assert!(matches!(
            parse_records(&p.finish()),
            Err(Error::Malformed(_))
        ));
    }
}

#[test]
fn nsec_bitmaps() {
    let nsec = |bitmaps: &[u8]| {
        let mut p = Packet::response();
        let at = p.name("n.local");
        let mut rdata = (0xc000u16 | at as u16).to_be_bytes().to_vec();
        rdata.extend_from_slice(bitmaps);
        p.rr(1, TYPE_NSEC, 0x8001, 120, &rdata);
        parse_records(&p.finish())
    };
    let data = |r: Result<Vec<Record>, Error>| r.unwrap()[0].data;
    assert_eq!(
        data(nsec(&[0, 1, 0x40])),
        RecordData::Nsec {
            a: true,
            aaaa: false
        }
    );
    assert_eq!(
        data(nsec(&[0, 4, 0, 0, 0, 0x08])),
        RecordData::Nsec {
            a: false,
            aaaa: true
        }
    );
    assert_eq!(
        data(nsec(&[0, 4, 0x40, 0, 0, 0x08])),
        RecordData::Nsec {
            a: true,
            aaaa: true
        }
    );
    // Window 1 (types 256..) says nothing about A/AAAA; no bitmap at all is fine.
    assert_eq!(
        data(nsec(&[1, 1, 0xff])),
        RecordData::Nsec {
            a: false,
            aaaa: false
        }
    );
    assert_eq!(
        data(nsec(&[])),
        RecordData::Nsec {
            a: false,
            aaaa: false
        }
    );
    assert!(nsec(&[0, 0]).is_err(), "zero-length bitmap");
    assert!(nsec(&[0, 33]).is_err(), "bitmap longer than 32");
    assert!(nsec(&[0, 2, 0x40]).is_err(), "bitmap past rdata");
    assert!(nsec(&[0]).is_err(), "half a window header");
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9-]{1,63}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_records(&bytes);
        let _ = parse_response(&bytes, NAME);
    }

    /// Random bytes behind a valid response header, so parsing gets past it.
    #[test]
    fn arbitrary_bodies_never_panic(
        counts in proptest::array::uniform4(0u16..8),
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut pkt = vec![0, 0, 0x84, 0];
        for c in counts {
            pkt.extend_from_slice(&c.to_be_bytes());
        }
        pkt.extend_from_slice(&body);
        let _ = parse_records(&pkt);
    }

    /// Flipping bytes of a real packet (pointers, lengths, counts) never panics.
    #[test]
    fn mutated_chromium_packets_never_panic(
        edits in proptest::collection::vec((0usize..144, any::<u8>()), 1..6),
        which in any::<bool>(),
    ) {
        let mut pkt = hex(if which { CHROMIUM_A } else { CHROMIUM_AAAA });
        for (i, b) in edits {
            let n = pkt.len();
            pkt[i % n] = b;
        }
        let _ = parse_records(&pkt);
    }

    #[test]
    fn round_trip(labels in proptest::collection::vec(label(), 1..3), ip in any::<[u8; 4]>(), compress in any::<bool>()) {
        let name = format!("{}.local", labels.join("."));
        prop_assume!(validate_name(&name).is_ok());
        // The query names the same thing the parser reads back.
        let mut q = Vec::new();
        encode_query(&name, 7, QueryType::A, false, &mut q).unwrap();
        let mut out = Vec::new();
        let end = read_name(&q, 12, &mut out).unwrap();
        prop_assert_eq!(end, q.len() - 4);
        prop_assert_eq!(owner_name(&out).unwrap(), name.to_ascii_lowercase());

        let mut p = Packet::response();
        let at = p.question(&name, TYPE_A);
        if compress { p.pointer(at) } else { p.name(&name); }
        p.rr(1, TYPE_A, 0x8001, 120, &ip);
        prop_assert_eq!(parse_response(&p.finish(), &name.to_ascii_uppercase()).unwrap(), vec![IpAddr::from(ip)]);
    }
}
