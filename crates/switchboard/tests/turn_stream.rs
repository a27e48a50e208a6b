//! TURN over TCP against a real `switchboard serve` process: the deadlines
//! of `--turn-tcp-allocate-timeout` and `--turn-tcp-idle-timeout`, the cap
//! of `--max-turn-tcp-per-ip`, and 15,000 idle connections that must
//! neither lock a real client out nor keep their descriptors.

mod common;

use common::Server;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use stun::{Class, Framer, Message, MessageType, MessageWriter, TransactionId};
use turn::client::{Client, Config, Event, Transport};

/// A TCP connection to `to` from `from` (a 127.0.0.x address).
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

/// Allocates over `s` with the static user of [`server`]; the relayed
/// address, or why not.
fn allocate<S: Read + Write>(s: &mut S, server: SocketAddr) -> Result<SocketAddr, String> {
    let mut c = Client::new(Config::new(server, Transport::Tcp, "alice", "wonderland"));
    c.allocate(Instant::now()).map_err(|e| e.to_string())?;
    let mut framer = Framer::new();
    loop {
        while let Some(t) = c.poll_transmit() {
            s.write_all(t.data).map_err(|e| format!("write: {e}"))?;
        }
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::Allocated { relayed, .. } => return Ok(relayed),
                Event::Failed { code, reason, .. } => return Err(format!("{code:?} {reason}")),
                _ => {}
            }
        }
        let n = s
            .read(framer.read_buf())
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        framer.advance(n);
        while let Some(f) = framer.pop().map_err(|e| e.to_string())? {
            c.handle_input(Instant::now(), f.as_bytes());
        }
    }
}

/// Sends a Binding request on `s`; true if it was answered with success.
fn binding<S: Read + Write>(s: &mut S) -> bool {
    let mut req = Vec::new();
    let mut w = MessageWriter::new(
        &mut req,
        MessageType::BINDING_REQUEST,
        TransactionId([7; 12]),
    );
    w.add_fingerprint().unwrap();
    w.finish();
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Ok((m, _)) = Message::parse_prefix(&buf) {
            return m.class() == Class::SuccessResponse;
        }
    }
}

/// Waits up to `limit` for the server to close `s` (EOF or reset).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn server(extra: &[&str]) -> Server {
    let mut args = vec!["--turn-user", "alice:wonderland"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count()
}

#[test]
fn a_connection_that_never_allocates_is_closed_and_an_idle_one_too() {
    let server = server(&[
        "--turn-tcp-allocate-timeout",
        "2",
        "--turn-tcp-idle-timeout",
        "6",
    ]);
    let turn = server.turn.unwrap();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut silent = connect_from(lo, turn);
    // Binding requests are answered, but do not stand in for an Allocate.
    let mut binder = connect_from(lo, turn);
    binder.set_read_timeout(Some(common::WAIT)).unwrap();
    assert!(binding(&mut binder));
    let mut busy = connect_from(lo, turn);
    busy.set_read_timeout(Some(common::WAIT)).unwrap();
    allocate(&mut busy, turn).unwrap();
    let mut quiet = connect_from(lo, turn);
    quiet.set_read_timeout(Some(common::WAIT)).unwrap();
    allocate(&mut quiet, turn).unwrap();

    assert!(closed_within(&mut silent, Duration::from_secs(10)));
    assert!(closed_within(&mut binder, Duration::from_secs(10)));
    // Past the allocate deadline, the allocated connections are still
    // served; `busy` stays active from here on.
    busy.set_read_timeout(Some(common::WAIT)).unwrap();
    assert!(binding(&mut busy), "an allocated connection was closed");
    // `quiet` says nothing after its Allocate: the idle timeout ends it.
    assert!(closed_within(&mut quiet, Duration::from_secs(15)));
    busy.set_read_timeout(Some(common::WAIT)).unwrap();
    assert!(binding(&mut busy), "an active connection was closed");
    std::thread::sleep(Duration::from_millis(1200));
    assert!(server.metric("switchboard_turn_stream_expired_total") >= 3.0);
}

#[test]
fn per_ip_cap_refuses_extra_connections_from_one_source() {
    let server = server(&["--max-turn-tcp-per-ip", "2"]);
    let turn = server.turn.unwrap();
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from(a, turn)).collect();
    for s in &mut held {
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        assert!(binding(s), "a connection under the cap was not served");
    }
    let mut extra = connect_from(a, turn);
    assert!(
        closed_within(&mut extra, common::WAIT),
        "a third connection from one source was kept"
    );
    let mut other = connect_from(b, turn);
    other.set_read_timeout(Some(common::WAIT)).unwrap();
    assert!(binding(&mut other), "another source was refused");
    assert_eq!(allocate(&mut other, turn).map(|_| ()), Ok(()));
    // A closed connection gives its slot back.
    drop(held.pop());
    let t0 = Instant::now();
    loop {
        let mut again = connect_from(a, turn);
        again.set_read_timeout(Some(common::WAIT)).unwrap();
        if binding(&mut again) {
            break;
        }
        assert!(t0.elapsed() < common::WAIT, "the slot never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The exhaustion test: 15,000 connections that never send a byte,
/// from 100 loopback addresses (150 each, under the default per-IP cap).
/// A real client still allocates within 2 s while they are held, and once
/// the allocate deadline has passed the server's descriptors are back near
/// where they started.
#[test]
fn fifteen_thousand_idle_connections() {
    const N: usize = 15_000;
    const SOURCES: usize = 100;
    let server = server(&["--turn-tcp-allocate-timeout", "10"]);
    let turn = server.turn.unwrap();
    let base = open_fds(&server);
    let mut idle = Vec::with_capacity(N);
    for i in 0..N {
        let from = IpAddr::from([127, 0, 1, 1 + (i % SOURCES) as u8]);
        idle.push(connect_from(from, turn));
    }
    let t0 = Instant::now();
    let mut client = connect_from("127.0.0.1".parse().unwrap(), turn);
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let relayed = allocate(&mut client, turn);
    let took = t0.elapsed();
    assert!(relayed.is_ok(), "allocation failed: {relayed:?}");
    assert!(took < Duration::from_secs(2), "allocating took {took:?}");
    let held = open_fds(&server);
    eprintln!(
        "server fds: {base} at start, {held} with {N} idle connections; allocated in {took:?}"
    );
    assert!(
        held >= base + N * 9 / 10,
        "the server did not hold the connections ({held} fds)"
    );

    let t1 = Instant::now();
    let after = loop {
        let n = open_fds(&server);
        if n <= base + 20 || t1.elapsed() > Duration::from_secs(40) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "server fds {after} after {:?} (deadline 10 s)",
        t1.elapsed()
    );
    assert!(
        after <= base + 20,
        "server still holds {after} fds, {base} at start"
    );
    // The idle ones see their connection closed; the allocated one is kept.
    for s in idle.iter_mut().step_by(997) {
        assert!(closed_within(s, common::WAIT));
    }
    client.set_read_timeout(Some(common::WAIT)).unwrap();
    assert!(binding(&mut client), "the allocated client was closed");
}

/// A rustls client session to `addr`, trusting the test CA, handshake done.
fn tls_client(
    ca: &common::test_ca::TestCa,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&ca.ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(common::WAIT)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn tls_connections_get_the_same_deadlines() {
    let ca = common::test_ca::TestCa::new();
    let (cert, key) = (ca.cert_arg(), ca.key_arg());
    let server = server(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--turn-tls-listen",
        "127.0.0.1:0",
        "--turn-tcp-allocate-timeout",
        "2",
    ]);
    let tls = server.turn_tls.unwrap();
    // No handshake at all: the handshake deadline ends it.
    let mut silent = TcpStream::connect(tls).unwrap();
    // A handshake, then nothing: the allocate deadline ends it.
    let mut handshaken = tls_client(&ca, tls);
    let mut allocated = tls_client(&ca, tls);
    assert_eq!(allocate(&mut allocated, tls).map(|_| ()), Ok(()));
    assert!(closed_within(&mut silent, Duration::from_secs(10)));
    handshaken
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 16];
    let closed = match handshaken.read(&mut b) {
        Ok(0) => true,
        // A timeout means it is still open.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        Ok(_) => false,
    };
    assert!(closed, "a TLS connection that never allocated was kept");
    assert!(
        binding(&mut allocated),
        "the allocated TLS connection was closed"
    );
}
