//! Sans-IO DNS wire format for mDNS one-shot queries (RFC 6762 §5.1):
//! name validation, query encoding and response parsing. No sockets, no
//! clocks; every function is total over its input (malformed packets give
//! `Err`, never a panic).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::Error;

/// The mDNS UDP port; responders send every response from it (RFC 6762 §6).
pub const MDNS_PORT: u16 = 5353;
/// The IPv4 mDNS group.
pub const MDNS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The link-local IPv6 mDNS group.
pub const MDNS_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb);

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_NSEC: u16 = 47;
const CLASS_IN: u16 = 1;
/// Top bit of a question's class: "QU", unicast response wanted (RFC 6762 §5.4).
const CLASS_UNICAST_RESPONSE: u16 = 0x8000;
/// Top bit of a record's class: cache-flush (RFC 6762 §10.2), not part of the class.
const CLASS_CACHE_FLUSH: u16 = 0x8000;
const HEADER_LEN: usize = 12;
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

/// Which address record a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryType {
    /// IPv4 address (type 1).
    A,
    /// IPv6 address (type 28).
    Aaaa,
}

impl QueryType {
    fn code(self) -> u16 {
        match self {
            QueryType::A => TYPE_A,
            QueryType::Aaaa => TYPE_AAAA,
        }
    }
}

/// One resource record from a response that matters for address lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, ASCII-lowercased, labels joined by `.`, no trailing dot.
    pub name: String,
    /// TTL in seconds; 0 is a "goodbye" (RFC 6762 §10.1): the record is gone.
    pub ttl: u32,
    /// What the record says about the name.
    pub data: RecordData,
}

/// The rdata of the record types address lookup uses; other types are
/// skipped by [`parse_records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordData {
    /// An A record: one IPv4 address of the name.
    A(Ipv4Addr),
    /// An AAAA record: one IPv6 address of the name.
    Aaaa(Ipv6Addr),
    /// An mDNS NSEC record (RFC 6762 §6.1): the complete list of types that
    /// exist for the name, restricted here to the two we care about. Chromium
    /// sends one with every answer, so a resolver learns at once that a name
    /// has, say, an A record and no AAAA record instead of waiting for one.
    Nsec {
        /// The name has A records.
        a: bool,
        /// The name has AAAA records.
        aaaa: bool,
    },
}

/// Check that `name` is a `.local` name that fits in a DNS message, and
/// return it without a trailing dot.
pub fn validate_name(name: &str) -> Result<&str, Error> {
    let bad = |reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    // `get` rather than indexing: the cut may fall inside a UTF-8 character.
    let ends_local = trimmed
        .get(trimmed.len().saturating_sub(6)..)
        .is_some_and(|s| s.eq_ignore_ascii_case(".local"));
    if !ends_local {
        return Err(bad("must end with .local"));
    }
    // Wire form: a length byte per label plus the root byte.
    if trimmed.len() + 2 > MAX_NAME_LEN {
        return Err(bad("longer than 255 bytes"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(bad("label longer than 63 bytes"));
        }
    }
    Ok(trimmed)
}

/// Encode a one-question mDNS query for `name` into `buf` (cleared first).
///
/// One question per packet, on purpose: Chromium's responder (checked with
/// Chromium 156) ignores queries with more than one question, so A and AAAA
/// go in separate packets. `unicast_response` sets the QU bit; Chromium also
/// ignores QU questions, so the resolver sends plain QM questions.
pub fn encode_query(
    name: &str,
    id: u16,
    qtype: QueryType,
    unicast_response: bool,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let name = validate_name(name)?;
    buf.clear();
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes()); // flags: standard query
    buf.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    buf.extend_from_slice(&[0; 6]); // AN/NS/AR counts
    for label in name.split('.') {
        buf.push(label.len() as u8); // <= 63, checked by validate_name
        buf.extend_from_slice(label.as_bytes());
    }
    buf.push(0);
    buf.extend_from_slice(&qtype.code().to_be_bytes());
    let class = if unicast_response {
        CLASS_IN | CLASS_UNICAST_RESPONSE
    } else {
        CLASS_IN
    };
    buf.extend_from_slice(&class.to_be_bytes());
    Ok(())
}

/// The addresses `packet` (an mDNS response) gives for `name`, from the
/// answer and additional sections, without duplicates. Goodbye records
/// (TTL 0) are left out. A well-formed response about other names gives an
/// empty list.
pub fn parse_response(packet: &[u8], name: &str) -> Result<Vec<IpAddr>, Error> {
    let want = validate_name(name)?.to_ascii_lowercase();
    let mut out = Vec::new();
    for r in parse_records(packet)? {
        if r.name != want || r.ttl == 0 {
            continue;
        }
        let ip = match r.data {
            RecordData::A(a) => IpAddr::V4(a),
            RecordData::Aaaa(a) => IpAddr::V6(a),
            RecordData::Nsec { .. } => continue,
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// All class-IN A, AAAA and NSEC records in the answer and additional
/// sections of an mDNS response. Records of other types are skipped; records
/// whose owner name has a label containing `.` or non-UTF-8 bytes are skipped
/// too (no valid query name can match them).
pub fn parse_records(packet: &[u8]) -> Result<Vec<Record>, Error> {
    let mut r = Reader { packet, pos: 0 };
    let _id = r.u16()?;
    let flags = r.u16()?;
    // RFC 6762 §18: only QR=1 with opcode 0 and rcode 0 is a usable response.
    if flags & 0x8000 == 0 || (flags >> 11) & 0xf != 0 || flags & 0xf != 0 {
        return Err(Error::NotResponse);
    }
    let qd = r.u16()?;
    let an = r.u16()?;
    let ns = r.u16()?;
    let ar = r.u16()?;
    debug_assert_eq!(r.pos, HEADER_LEN);
    let mut name = Vec::new();
    for _ in 0..qd {
        r.pos = read_name(packet, r.pos, &mut name)?;
        r.take(4)?;
    }
    let mut out = Vec::new();
    // Counts come from the packet, but each record consumes at least 11
    // bytes, so a lying count ends in a truncation error, not a long loop.
    let total = u32::from(an) + u32::from(ns) + u32::from(ar);
    for i in 0..total {
        // Authority records in a response are unusual (they belong to
        // probing queries); parse past them but do not trust them.
        let use_it = i < u32::from(an) || i >= u32::from(an) + u32::from(ns);
        r.pos = read_name(packet, r.pos, &mut name)?;
        let rtype = r.u16()?;
        let class = r.u16()? & !CLASS_CACHE_FLUSH;
        let ttl = r.u32()?;
        let rdlen = r.u16()? as usize;
        let rdata_start = r.pos;
        let rdata = r.take(rdlen)?;
        if !use_it || class != CLASS_IN {
            continue;
        }
        let data = match rtype {
            TYPE_A => RecordData::A(Ipv4Addr::from(
                <[u8; 4]>::try_from(rdata)
                    .map_err(|_| Error::Malformed("A record with rdata length other than 4"))?,
            )),
            TYPE_AAAA => RecordData::Aaaa(Ipv6Addr::from(
                <[u8; 16]>::try_from(rdata)
                    .map_err(|_| Error::Malformed("AAAA record with rdata length other than 16"))?,
            )),
            TYPE_NSEC => parse_nsec(packet, rdata_start, rdata_start + rdlen)?,
            _ => continue,
        };
        let Some(owner) = owner_name(&name) else {
            continue;
        };
        out.push(Record {
            name: owner,
            ttl,
            data,
        });
    }
    Ok(out)
}

/// NSEC rdata: next domain name (possibly compressed), then type bitmaps
/// (RFC 4034 §4.1.2). Only window 0 holds A (type 1) and AAAA (type 28).
fn parse_nsec(packet: &[u8], start: usize, end: usize) -> Result<RecordData, Error> {
    let mut scratch = Vec::new();
    let mut pos = read_name(packet, start, &mut scratch)?;
    if pos > end {
        return Err(Error::Malformed("NSEC next name runs past rdata"));
    }
    let (mut a, mut aaaa) = (false, false);
    while pos < end {
        let (window, len) = match (packet.get(pos), packet.get(pos + 1)) {
            (Some(&w), Some(&l)) if pos + 2 <= end => (w, l as usize),
            _ => return Err(Error::Malformed("truncated NSEC bitmap")),
        };
        if !(1..=32).contains(&len) || pos + 2 + len > end {
            return Err(Error::Malformed("bad NSEC bitmap length"));
        }
        let bitmap = &packet[pos + 2..pos + 2 + len];
        if window == 0 {
            // Bit n of the window is type n, most significant bit first.
            let bit = |t: u16| {
                bitmap
                    .get(usize::from(t / 8))
                    .is_some_and(|b| b & (0x80 >> (t % 8)) != 0)
            };
            a |= bit(TYPE_A);
            aaaa |= bit(TYPE_AAAA);
        }
        pos += 2 + len;
    }
    Ok(RecordData::Nsec { a, aaaa })
}

/// Turn the raw lowercased name from `read_name` (labels separated by 0x00
/// bytes, see there) into a dotted string, or `None` if a label holds a `.`
/// or the name is not UTF-8, which would make it ambiguous in dotted form.
fn owner_name(raw: &[u8]) -> Option<String> {
    if raw.contains(&b'.') {
        return None;
    }
    let dotted: Vec<u8> = raw.iter().map(|&b| if b == 0 { b'.' } else { b }).collect();
    String::from_utf8(dotted).ok()
}

/// Read the possibly compressed name at `pos` into `out` (cleared first):
/// ASCII-lowercased labels separated by 0x00 bytes. Returns the position
/// just after the name where it started, i.e. after the first compression
/// pointer if there is one.
///
/// Termination: every pointer must point strictly before the start of the
/// label run it ends, so positions strictly decrease from jump to jump; the
/// 255-byte name limit bounds the labels read in between.
fn read_name(packet: &[u8], mut pos: usize, out: &mut Vec<u8>) -> Result<usize, Error> {
    out.clear();
    let mut after: Option<usize> = None;
    let mut run_start = pos;
    let mut wire_len = 1; // the root label
    loop {
        let len = *packet
            .get(pos)
            .ok_or(Error::Malformed("name runs past end of packet"))?;
        match len & 0xc0 {
            0x00 if len == 0 => return Ok(after.unwrap_or(pos + 1)),
            0x00 => {
                let len = usize::from(len);
                let label = packet
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(Error::Malformed("label runs past end of packet"))?;
                wire_len += 1 + len;
                if wire_len > MAX_NAME_LEN {
                    return Err(Error::Malformed("name longer than 255 bytes"));
                }
                if !out.is_empty() {
                    out.push(0);
                }
                // A 0x00 byte inside a label would be indistinguishable from
                // the separator; turn it into `.` so `owner_name` drops the
                // record as unmatchable.
                out.extend(
                    label
                        .iter()
                        .map(|&b| if b == 0 { b'.' } else { b.to_ascii_lowercase() }),
                );
                pos += 1 + len;
            }
            0xc0 => {
                let low = *packet
                    .get(pos + 1)
                    .ok_or(Error::Malformed("truncated compression pointer"))?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if target >= run_start {
                    return Err(Error::Malformed(
                        "compression pointer does not point backwards",
                    ));
                }
                after.get_or_insert(pos + 2);
                pos = target;
                run_start = target;
            }
            _ => return Err(Error::Malformed("unknown label type")),
        }
    }
}

/// Bounds-checked big-endian reads.
struct Reader<'a> {
    packet: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.packet.get(self.pos..end))
            .ok_or(Error::Malformed("truncated packet"))?;
        self.pos += n;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests;
