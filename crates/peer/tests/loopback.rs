//! Native ↔ native on loopback, in one process: two PeerConnections wired
//! through the perfect-negotiation loop with in-memory signaling.

use peer::{negotiate, Config, DataChannelInit, Event, HostCandidates, Message, PeerConnection};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

fn cfg() -> Config {
    Config { host_candidates: HostCandidates::Only(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]), ..Config::default() }
}

struct Side {
    pc: PeerConnection,
    app: negotiate::AppEvents,
}

/// Two connections whose signaling messages go straight to each other.
async fn pair(a_cfg: Config, b_cfg: Config) -> (Side, Side) {
    let (a, a_ev) = PeerConnection::new(a_cfg).await.unwrap();
    let (b, b_ev) = PeerConnection::new(b_cfg).await.unwrap();
    let (to_a, a_in) = mpsc::unbounded_channel();
    let (to_b, b_in) = mpsc::unbounded_channel();
    let a_app = negotiate::spawn(a.clone(), a_ev, true, a_in, move |m| {
        let _ = to_b.send(m);
    });
    let b_app = negotiate::spawn(b.clone(), b_ev, false, b_in, move |m| {
        let _ = to_a.send(m);
    });
    (Side { pc: a, app: a_app }, Side { pc: b, app: b_app })
}

async fn next_channel(app: &mut negotiate::AppEvents) -> peer::DataChannel {
    loop {
        match timeout(Duration::from_secs(10), app.recv()).await.expect("timed out waiting for a channel") {
            Some(Event::DataChannel(dc)) => return dc,
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
}

#[tokio::test]
async fn data_channel_both_ways_on_loopback() {
    let (a, mut b) = pair(cfg(), cfg()).await;
    let dc = a.pc.create_data_channel("chat", DataChannelInit::default()).await.unwrap();
    timeout(Duration::from_secs(10), dc.opened()).await.expect("open in time").unwrap();
    let remote = next_channel(&mut b.app).await;
    assert_eq!(remote.label(), "chat");
    dc.send_text("hello").await.unwrap();
    assert_eq!(timeout(Duration::from_secs(5), remote.recv()).await.unwrap(), Some(Message::Text("hello".into())));
    remote.send_binary(&[1, 2, 3]).await.unwrap();
    assert_eq!(timeout(Duration::from_secs(5), dc.recv()).await.unwrap(), Some(Message::Binary(vec![1, 2, 3])));

    let stats = a.pc.stats().await.unwrap();
    let pair = stats.selected_pair.expect("a selected pair once connected");
    assert_eq!(pair.local.address.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(pair.local.kind, peer::CandidateType::Host);
    a.pc.close().await;
    b.pc.close().await;
}
