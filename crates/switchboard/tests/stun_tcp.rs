//! STUN Binding over TCP against `switchboard serve` (coturn's stunclient
//! only speaks UDP), with the RFC 8656 framing a TCP client sees.

mod common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use stun::attr::XorMappedAddress;
use stun::{Class, Message, MessageType, MessageWriter, TransactionId};

#[test]
fn binding_over_tcp_reports_the_mapped_address() {
    let server = Server::start(&[]);
    let turn = server.turn.unwrap();
    let mut s = TcpStream::connect(turn).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mine = s.local_addr().unwrap();
    // Two requests back to back in one write: the server must frame them.
    let mut req = Vec::new();
    for tid in [1u8, 2] {
        let mut w = MessageWriter::new(
            &mut req,
            MessageType::BINDING_REQUEST,
            TransactionId([tid; 12]),
        );
        w.add_fingerprint().unwrap();
        w.finish();
    }
    s.write_all(&req).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok((m, used)) = Message::parse_prefix(&buf) {
            assert_eq!(m.class(), Class::SuccessResponse);
            assert_eq!(m.require::<XorMappedAddress>().unwrap(), mine);
            answers.push(m.transaction_id());
            buf.drain(..used);
        }
    }
    assert_eq!(answers, [TransactionId([1; 12]), TransactionId([2; 12])]);

    // Garbage on the stream closes it rather than confusing the framing.
    s.write_all(&[0xff; 8]).unwrap();
    let mut rest = [0u8; 16];
    assert!(
        matches!(s.read(&mut rest), Ok(0) | Err(_)),
        "server should drop a non-TURN stream"
    );
}
