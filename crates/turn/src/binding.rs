//! A STUN server that only answers Binding requests: the second STUN
//! address of `serve --stun-alt-listen`, for NAT behaviour discovery
//! (RFC 5780 §4.3).
//!
//! A client sends Binding to the TURN port, reads OTHER-ADDRESS from the
//! answer, sends Binding to that address from the same socket, and compares
//! the two XOR-MAPPED-ADDRESSes: equal means its NAT maps endpoint-
//! independently. [`BindingResponder`] answers on the second address, with
//! OTHER-ADDRESS pointing back at the first. Like the TURN port it is rate
//! limited per source IP, so it cannot be used as a reflector; everything
//! that is not a well-formed Binding request is ignored.

use rate::TokenBucket;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use stun::attr::{OtherAddress, XorMappedAddress};
use stun::{Class, Message, MessageWriter, Method};

/// Answers Binding requests; see the module docs.
#[derive(Debug)]
pub struct BindingResponder {
    other: Option<SocketAddr>,
    rate: f64,
    burst: u32,
    max_sources: usize,
    sources: HashMap<IpAddr, TokenBucket>,
    /// Requests refused by the per-source rate.
    pub throttled: u64,
    /// Input that was not a Binding request.
    pub ignored: u64,
}

impl BindingResponder {
    /// `other` goes into OTHER-ADDRESS of every answer; each source IP may
    /// send `rate` requests per second after a burst of `burst`, and at
    /// most `max_sources` sources are tracked at once (more are refused
    /// until idle ones are forgotten).
    pub fn new(other: Option<SocketAddr>, rate: f64, burst: u32, max_sources: usize) -> Self {
        BindingResponder {
            other,
            rate,
            burst,
            max_sources,
            sources: HashMap::new(),
            throttled: 0,
            ignored: 0,
        }
    }

    /// Writes the answer to `packet` from `from` into `out` (cleared
    /// first). False: send nothing.
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        let Ok(msg) = Message::parse(packet) else {
            self.ignored += 1;
            return false;
        };
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            self.ignored += 1;
            return false;
        }
        if !self.admit(from.ip(), now) {
            self.throttled += 1;
            return false;
        }
        let mut w = MessageWriter::success_response(out, &msg);
        let mut ok = w.add::<XorMappedAddress>(from).is_ok();
        if let Some(other) = self.other {
            ok = ok && w.add::<OtherAddress>(other).is_ok();
        }
        if msg.has_fingerprint() {
            ok = ok && w.add_fingerprint().is_ok();
        }
        if ok {
            w.finish();
        }
        ok
    }

    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.max_sources {
            // Sources whose bucket has refilled owe nothing: forget them.
            self.sources.retain(|_, b| !b.is_full(now));
            if self.sources.len() >= self.max_sources {
                return false;
            }
        }
        self.sources
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.burst, self.rate, now))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::{MessageType, TransactionId};

    fn binding(tid: u8) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::request(Method::BINDING),
            TransactionId([tid; 12]),
        );
        w.add_fingerprint().unwrap();
        w.finish();
        buf
    }

    #[test]
    fn answers_with_mapped_and_other_address() {
        let other: SocketAddr = "203.0.113.1:3478".parse().unwrap();
        let from: SocketAddr = "198.51.100.9:50000".parse().unwrap();
        let mut r = BindingResponder::new(Some(other), 10.0, 2, 16);
        let mut out = Vec::new();
        assert!(r.handle(Instant::now(), from, &binding(1), &mut out));
        let m = Message::parse(&out).unwrap();
        assert_eq!(m.class(), Class::SuccessResponse);
        assert_eq!(m.transaction_id(), TransactionId([1; 12]));
        assert_eq!(m.get::<XorMappedAddress>().unwrap(), Some(from));
        assert_eq!(m.get::<OtherAddress>().unwrap(), Some(other));
        assert!(m.verify_fingerprint().is_ok());
    }

    #[test]
    fn ignores_other_messages_and_throttles_per_source() {
        let now = Instant::now();
        let from: SocketAddr = "198.51.100.9:50000".parse().unwrap();
        let mut r = BindingResponder::new(None, 1.0, 2, 1);
        let mut out = Vec::new();
        assert!(!r.handle(now, from, b"not stun at all", &mut out));
        assert!(out.is_empty());
        // A Binding response is not a request.
        let mut resp = Vec::new();
        let req = binding(2);
        MessageWriter::success_response(&mut resp, &Message::parse(&req).unwrap()).finish();
        assert!(!r.handle(now, from, &resp, &mut out));
        assert_eq!(r.ignored, 2);
        // A burst of two, then refused.
        assert!(r.handle(now, from, &binding(3), &mut out));
        assert!(r.handle(now, from, &binding(4), &mut out));
        assert!(!r.handle(now, from, &binding(5), &mut out));
        assert_eq!(r.throttled, 1);
        // One source tracked at most: a second one waits until the first
        // has refilled.
        let second: SocketAddr = "198.51.100.10:50000".parse().unwrap();
        assert!(!r.handle(now, second, &binding(6), &mut out));
        let later = now + std::time::Duration::from_secs(5);
        assert!(r.handle(later, second, &binding(7), &mut out));
    }
}
