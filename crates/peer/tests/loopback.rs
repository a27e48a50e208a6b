//! Native ↔ native on loopback, in one process: two PeerConnections wired
//! through the perfect-negotiation loop with in-memory signaling.

use peer::{negotiate, Config, DataChannelInit, Event, HostCandidates, Message, PeerConnection};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::time::timeout;

fn cfg() -> Config {
    Config {
        host_candidates: HostCandidates::Only(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ..Config::default()
    }
}

/// Two connections whose signaling messages go straight to each other.
async fn pair(a_cfg: Config, b_cfg: Config) -> (negotiate::Side, negotiate::Side) {
    negotiate::pair(a_cfg, b_cfg).await.unwrap()
}

async fn next_channel(app: &mut negotiate::AppEvents) -> peer::DataChannel {
    loop {
        match timeout(Duration::from_secs(10), app.recv())
            .await
            .expect("timed out waiting for a channel")
        {
            Some(Event::DataChannel(dc)) => return dc,
            Some(_) => {}
            None => panic!("events ended"),
        }
    }
}

#[tokio::test]
async fn data_channel_both_ways_on_loopback() {
    let (a, mut b) = pair(cfg(), cfg()).await;
    let dc =
        a.pc.create_data_channel("chat", DataChannelInit::default())
            .await
            .unwrap();
    timeout(Duration::from_secs(10), dc.opened())
        .await
        .expect("open in time")
        .unwrap();
    let remote = next_channel(&mut b.app).await;
    assert_eq!(remote.label(), "chat");
    dc.send_text("hello").await.unwrap();
    assert_eq!(
        timeout(Duration::from_secs(5), remote.recv())
            .await
            .unwrap(),
        Some(Message::Text("hello".into()))
    );
    remote.send_binary(&[1, 2, 3]).await.unwrap();
    assert_eq!(
        timeout(Duration::from_secs(5), dc.recv()).await.unwrap(),
        Some(Message::Binary(vec![1, 2, 3]))
    );

    let stats = a.pc.stats().await.unwrap();
    let pair = stats.selected_pair.expect("a selected pair once connected");
    assert_eq!(pair.local.address.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(pair.local.kind, peer::CandidateType::Host);
    // Host to host on loopback: every byte direct, none relayed.
    assert!(
        stats.paths.direct.sent > 0 && stats.paths.direct.received > 0,
        "{:?}",
        stats.paths
    );
    assert_eq!(stats.paths.relay, peer::Traffic::default());
    a.pc.close().await;
    b.pc.close().await;
}

async fn wait_event(
    app: &mut negotiate::AppEvents,
    what: &str,
    mut f: impl FnMut(&Event) -> bool,
) -> Event {
    loop {
        match timeout(Duration::from_secs(10), app.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        {
            Some(e) if f(&e) => return e,
            Some(e) => eprintln!("while waiting for {what}: {e:?}"),
            None => panic!("events ended waiting for {what}"),
        }
    }
}

#[tokio::test]
async fn renegotiation_adds_a_channel_and_a_track_after_connect() {
    let (a, mut b) = pair(cfg(), cfg()).await;
    let dc =
        a.pc.create_data_channel("chat", DataChannelInit::default())
            .await
            .unwrap();
    timeout(Duration::from_secs(10), dc.opened())
        .await
        .unwrap()
        .unwrap();
    let _ = next_channel(&mut b.app).await;

    // A second channel rides the existing SCTP association.
    let dc2 =
        a.pc.create_data_channel("second", DataChannelInit::default())
            .await
            .unwrap();
    timeout(Duration::from_secs(10), dc2.opened())
        .await
        .unwrap()
        .unwrap();
    let remote2 = next_channel(&mut b.app).await;
    assert_eq!(remote2.label(), "second");
    remote2.send_text("on the second").await.unwrap();
    assert_eq!(
        timeout(Duration::from_secs(5), dc2.recv()).await.unwrap(),
        Some(Message::Text("on the second".into()))
    );

    // A track needs a new offer/answer round.
    let _sender = a.pc.add_track(peer::MediaKind::Video).await.unwrap();
    let ev = wait_event(
        &mut b.app,
        "a remote video track",
        |e| matches!(e, Event::Track(t) if t.kind == peer::MediaKind::Video),
    )
    .await;
    let Event::Track(t) = ev else { unreachable!() };
    assert!(t.can_send, "answerer may send back on a sendrecv line");
    assert_eq!(
        a.pc.signaling_state().await.unwrap(),
        peer::SignalingState::Stable
    );
    assert_eq!(
        b.pc.signaling_state().await.unwrap(),
        peer::SignalingState::Stable
    );
    // The first channel still works after renegotiation.
    dc.send_text("still here").await.unwrap();
    a.pc.close().await;
    b.pc.close().await;
}

#[tokio::test]
async fn glare_is_resolved_by_perfect_negotiation() {
    let (mut a, mut b) = pair(cfg(), cfg()).await;
    let dc =
        a.pc.create_data_channel("chat", DataChannelInit::default())
            .await
            .unwrap();
    timeout(Duration::from_secs(10), dc.opened())
        .await
        .unwrap()
        .unwrap();
    let _ = next_channel(&mut b.app).await;
    // Both sides want a new media line at the same moment: both offer.
    let (ra, rb) = tokio::join!(
        a.pc.add_track(peer::MediaKind::Audio),
        b.pc.add_track(peer::MediaKind::Video)
    );
    ra.unwrap();
    rb.unwrap();
    wait_event(
        &mut a.app,
        "B's video at A",
        |e| matches!(e, Event::Track(t) if t.kind == peer::MediaKind::Video),
    )
    .await;
    wait_event(
        &mut b.app,
        "A's audio at B",
        |e| matches!(e, Event::Track(t) if t.kind == peer::MediaKind::Audio),
    )
    .await;
    for pc in [&a.pc, &b.pc] {
        let mut stable = false;
        for _ in 0..50 {
            if pc.signaling_state().await.unwrap() == peer::SignalingState::Stable {
                stable = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(stable, "both sides settle in stable");
    }
    dc.send_text("after glare").await.unwrap();
}

#[tokio::test]
async fn bad_input_gives_errors_not_panics() {
    use peer::{Error, IceCandidateInit, SessionDescription};
    let (pc, _ev) = PeerConnection::new(cfg()).await.unwrap();
    // Wrong state: no remote offer to answer, no answer to an offer we never made.
    assert!(matches!(
        pc.create_answer().await,
        Err(Error::Jsep(peer::JsepError::InvalidState { .. }))
    ));
    let err = pc
        .set_remote_description(SessionDescription::answer("v=0\r\n"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("InvalidStateError"), "{err}");
    // Candidates before any remote description.
    let c = IceCandidateInit {
        candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
        ..Default::default()
    };
    assert!(matches!(
        pc.add_ice_candidate(Some(c)).await,
        Err(Error::Jsep(_))
    ));
    // Garbage SDP leaves the state alone.
    for sdp in [
        "",
        "hello",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "\u{0}\u{ff}\r\n\r\n",
    ] {
        let r = pc
            .set_remote_description(SessionDescription::offer(sdp))
            .await;
        assert!(matches!(r, Err(Error::InvalidSdp(_))), "{sdp:?}: {r:?}");
        assert_eq!(
            pc.signaling_state().await.unwrap(),
            peer::SignalingState::Stable
        );
    }
    // A description that is not the one we created.
    pc.create_data_channel("x", DataChannelInit::default())
        .await
        .unwrap();
    let offer = pc.create_offer().await.unwrap();
    let mut tampered = offer.clone();
    tampered.sdp.push_str("a=tampered\r\n");
    assert!(matches!(
        pc.set_local_description(tampered).await,
        Err(Error::ModifiedSdp)
    ));
    pc.set_local_description(offer.clone()).await.unwrap();
    assert_eq!(
        pc.signaling_state().await.unwrap(),
        peer::SignalingState::HaveLocalOffer
    );
    // Bad candidates once a remote description exists: B answers A.
    let (b, _bev) = PeerConnection::new(cfg()).await.unwrap();
    b.set_remote_description(offer).await.unwrap();
    for bad in [
        "candidate:garbage",
        "candidate:1 1 udp x 1.2.3.4 5 typ host",
        "not a candidate at all",
        "candidate:1 1 udp 1 999.1.1.1 5 typ host",
    ] {
        let c = IceCandidateInit {
            candidate: bad.into(),
            ..Default::default()
        };
        assert!(
            matches!(
                b.add_ice_candidate(Some(c)).await,
                Err(Error::InvalidCandidate(_))
            ),
            "{bad}"
        );
    }
    // Rollback of a remote offer, then wrong-state rollback.
    b.set_remote_description(SessionDescription::rollback())
        .await
        .unwrap();
    assert_eq!(
        b.signaling_state().await.unwrap(),
        peer::SignalingState::Stable
    );
    assert!(b
        .set_remote_description(SessionDescription::rollback())
        .await
        .is_err());
    // Local rollback of our offer.
    pc.set_local_description(SessionDescription::rollback())
        .await
        .unwrap();
    assert_eq!(
        pc.signaling_state().await.unwrap(),
        peer::SignalingState::Stable
    );
    // After close everything is InvalidState/Closed, nothing panics.
    pc.close().await;
    assert!(pc.create_offer().await.is_err());
    assert!(pc.restart_ice().await.is_err());
}

#[tokio::test]
async fn ice_restart_keeps_the_channel() {
    let (a, mut b) = pair(cfg(), cfg()).await;
    let dc =
        a.pc.create_data_channel("chat", DataChannelInit::default())
            .await
            .unwrap();
    timeout(Duration::from_secs(10), dc.opened())
        .await
        .unwrap()
        .unwrap();
    let remote = next_channel(&mut b.app).await;
    let before = a.pc.create_offer().await;
    assert!(
        matches!(before, Err(peer::Error::NothingToNegotiate)),
        "{before:?}"
    );
    a.pc.restart_ice().await.unwrap();
    // The restart completes when both sides are stable with new credentials.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.pc.signaling_state().await.unwrap(),
        peer::SignalingState::Stable
    );
    dc.send_text("after restart").await.unwrap();
    assert_eq!(
        timeout(Duration::from_secs(5), remote.recv())
            .await
            .unwrap(),
        Some(Message::Text("after restart".into()))
    );
}

#[tokio::test]
async fn a_vanished_peer_becomes_disconnected_then_failed() {
    let (a, mut b) = pair(cfg(), cfg()).await;
    let dc =
        a.pc.create_data_channel("chat", DataChannelInit::default())
            .await
            .unwrap();
    timeout(Duration::from_secs(10), dc.opened())
        .await
        .unwrap()
        .unwrap();
    let _ = next_channel(&mut b.app).await;
    // Kill A without a goodbye: B must notice through consent freshness.
    drop(dc);
    a.pc.close().await;
    let start = std::time::Instant::now();
    wait_event(&mut b.app, "disconnected", |e| {
        matches!(
            e,
            Event::IceConnectionState(peer::IceConnectionState::Disconnected)
        )
    })
    .await;
    let mut failed = false;
    while start.elapsed() < Duration::from_secs(20) {
        match timeout(Duration::from_secs(20), b.app.recv()).await {
            Ok(Some(Event::IceConnectionState(peer::IceConnectionState::Failed))) => {
                failed = true;
                break;
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    assert!(failed, "failed within 20 s");
}

/// A local track: negotiated codecs are known, frames written reach the
/// other side with their media times, and a codec the line did not
/// negotiate is refused by name.
#[tokio::test]
async fn local_track_sends_frames_and_names_codecs() {
    let (a, mut b) = pair(cfg(), cfg()).await;
    let sender = a.pc.add_track(peer::MediaKind::Video).await.unwrap();
    let ev = wait_event(
        &mut b.app,
        "a remote video track",
        |e| matches!(e, Event::Track(t) if t.kind == peer::MediaKind::Video),
    )
    .await;
    let Event::Track(mut track) = ev else {
        unreachable!()
    };
    let params = sender.params_for(peer::Codec::Vp8).await.unwrap();
    assert_eq!(params.spec().codec, peer::Codec::Vp8);
    let e = sender.params_for(peer::Codec::Opus).await.unwrap_err();
    assert!(
        matches!(&e, peer::Error::CodecNotNegotiated(..))
            && e.to_string().starts_with("opus cannot be sent")
            && e.to_string().contains("VP8"),
        "{e}"
    );
    // A VP8 keyframe header and some payload, 10 frames at 30 fps.
    let mut kf = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 64, 0, 48, 0];
    kf.resize(3000, 7);
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    for i in 0..10u64 {
        sender
            .write(peer::MediaFrame {
                params,
                time: peer::MediaTime::from_90khz(i * 3000),
                network_time: start + Duration::from_millis(i * 33),
                data: kf.clone().into(),
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(33)).await;
        while let Ok(f) = track.frames.try_recv() {
            got.push(f);
        }
    }
    while got.len() < 10 {
        match timeout(Duration::from_secs(5), track.frames.recv()).await {
            Ok(Some(f)) => got.push(f),
            _ => break,
        }
    }
    assert!(got.len() >= 8, "{} of 10 frames arrived", got.len());
    assert!(got
        .iter()
        .all(|f| f.data.len() == 3000 && f.data[3..6] == [0x9d, 0x01, 0x2a]));
    let t: Vec<u64> = got.iter().map(|f| f.time.numer()).collect();
    assert!(
        t.windows(2)
            .all(|w| w[1] - w[0] == 3000 || w[1] - w[0] == 6000),
        "{t:?}"
    );
    a.pc.close().await;
    b.pc.close().await;
}
