//! The real multicast path, with a fake responder that behaves like
//! Chromium's: it answers only single-question QM queries, and only by
//! multicast to 224.0.0.251:5353. The resolver must hear that through its
//! port-5353 listener. Skipped (with a note on stderr) on hosts where a
//! multicast packet sent to the group does not come back to the sender.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::Answers;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

fn socket_5353() -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5353)).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)?;
    s.set_multicast_loop_v4(true)?;
    s.set_multicast_ttl_v4(255)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Whether a packet to the group comes back to us: the precondition for a
/// browser and the resolver on one host to hear each other.
async fn multicast_loops_back(sock: &UdpSocket) -> bool {
    let probe = b"switchboard-mdns-multicast-probe";
    if sock.send_to(probe, (GROUP, 5353)).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let wait = async {
        loop {
            match sock.recv_from(&mut buf).await {
                Ok((n, _)) if &buf[..n] == probe => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), wait)
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn resolves_from_a_multicast_only_responder() {
    // No silent skip: a host where this cannot work cannot resolve
    // Chromium's names either, and that must show up as a failure.
    let sock =
        socket_5353().unwrap_or_else(|e| panic!("cannot bind 0.0.0.0:5353 in the mDNS group: {e}"));
    assert!(
        multicast_loops_back(&sock).await,
        "multicast to 224.0.0.251 does not loop back on this host (no multicast-capable interface up?)"
    );
    // Unique per run, so responders of concurrent test runs cannot collide.
    let name = format!("mc-{}-{}.local", std::process::id(), rand_suffix());
    let answers = Answers::new().v4(&name, "192.0.2.77").nsec(true);
    let n = name.clone();
    let responder = tokio::spawn(async move {
        let mut buf = vec![0u8; 9000];
        loop {
            let Ok((len, _)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let p = &buf[..len];
            // Like Chromium: QU questions are ignored.
            let Some((qname, qtype)) = common::parse_query(p) else {
                continue;
            };
            if (p.len() >= 2 && p[p.len() - 2] & 0x80 != 0) || !qname.eq_ignore_ascii_case(&n) {
                continue;
            }
            if let Some(resp) = common::answer(&answers, &qname, qtype) {
                let _ = sock.send_to(&resp, (GROUP, 5353)).await;
            }
        }
    });

    let got = mdns::resolve(&name, Duration::from_secs(3)).await;
    responder.abort();
    assert_eq!(got.unwrap(), vec![IpAddr::from([192, 0, 2, 77])]);
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}
