//! Perfect negotiation (W3C WebRTC §10.7) over any message transport: the
//! same pattern the browser SDK runs, so native and browser peers mix.
//!
//! Messages are [`Signal`]s, in the JSON shapes browsers make with
//! `toJSON()`: `{"description":{"type":..,"sdp":..}}`, `{"candidate":{..}}`
//! and `{"candidate":null}` for end-of-candidates.
//!
//! [`pair`] wires two connections through it in memory (tests, benchmarks).

use crate::{
    Config, Event, Events, IceCandidateInit, PeerConnection, SdpType, SessionDescription,
    SignalingState,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// One negotiation message between two peers: what a switchboard `signal`
/// carries in `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "serde_json::Value")]
pub enum Signal {
    /// `{"description":{"type":"offer"|"answer"|"rollback","sdp":..}}`
    Description(SessionDescription),
    /// `{"candidate":{..}}`; `None` (`{"candidate":null}`) is
    /// end-of-candidates.
    Candidate(Option<IceCandidateInit>),
    /// Any other object: the application's own message, which
    /// negotiation leaves alone (a room hands it to the app as
    /// [`crate::room::RoomEvent::Signal`]).
    #[serde(untagged)]
    Other(serde_json::Value),
}

/// How a [`Signal`] is read: other keys are ignored (the object comes from
/// another implementation), a `null` description counts as absent, and a
/// description wins over a candidate.
#[derive(Deserialize)]
struct SignalWire {
    #[serde(default)]
    description: Option<SessionDescription>,
    // Outer None: no key; Some(None): `"candidate": null`.
    #[serde(default, deserialize_with = "present")]
    candidate: Option<Option<IceCandidateInit>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

impl TryFrom<serde_json::Value> for Signal {
    type Error = String;

    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        let Some(obj) = v.as_object() else {
            return Err("a signal is a JSON object".into());
        };
        let negotiation =
            obj.get("description").is_some_and(|d| !d.is_null()) || obj.contains_key("candidate");
        if !negotiation {
            return Ok(Signal::Other(v));
        }
        let w = SignalWire::deserialize(&v).map_err(|e| e.to_string())?;
        match (w.description, w.candidate) {
            (Some(d), _) => Ok(Signal::Description(d)),
            (None, Some(c)) => Ok(Signal::Candidate(c)),
            (None, None) => Err("signal is neither description nor candidate".into()),
        }
    }
}

/// What the negotiation loop hands on to the application: every event
/// that is not part of negotiation itself.
///
/// Bounded ([`APP_EVENTS`]): when that many events wait unread, the loop
/// waits for the application, and so does negotiation (no offer, answer or
/// candidate moves meanwhile; the connection's events queue in its task).
/// Nothing is dropped. Read it continuously; dropping it ends negotiation
/// at the next event.
pub type AppEvents = mpsc::Receiver<Event>;

/// How many events [`AppEvents`] holds. A connection makes a handful per
/// offer/answer round, so only an application that stopped reading fills it.
pub const APP_EVENTS: usize = 64;

/// Drives one connection until its events end.
///
/// - `polite`: on an offer collision, roll back our own offer (the
///   newcomer in a switchboard room is polite).
/// - `incoming`: signaling messages from the remote peer.
/// - `send`: delivers a message to the remote peer.
///
/// Returns the events the application should see. `incoming` is unbounded
/// on purpose: the task that feeds it (the room) also waits for the events
/// this returns, so bounding it could stall both in a cycle. What arrives
/// there is limited by the server's per-peer rate limit instead.
pub fn spawn(
    pc: PeerConnection,
    mut events: Events,
    polite: bool,
    mut incoming: mpsc::UnboundedReceiver<Signal>,
    send: impl Fn(Signal) + Send + Sync + 'static,
) -> AppEvents {
    let (app_tx, app_rx) = mpsc::channel(APP_EVENTS);
    tokio::spawn(async move {
        let mut ignore_offer = false;
        // Signaling may end before the connection does (the server went
        // away); the connection and its events carry on.
        let mut signaling_open = true;
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        Event::NegotiationNeeded => {
                            // Stale if an offer arrived meanwhile; the driver
                            // fires again once back in stable.
                            if !matches!(pc.signaling_state().await, Ok(SignalingState::Stable)) {
                                continue;
                            }
                            match pc.set_local_description_auto().await {
                                Ok(d) => send(Signal::Description(d)),
                                Err(crate::Error::NothingToNegotiate) => {}
                                Err(e) => debug!("negotiation-needed: {e}"),
                            }
                        }
                        Event::IceCandidate(c) => send(Signal::Candidate(c)),
                        other => {
                            // Waiting here is the backpressure.
                            if app_tx.send(other).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                msg = incoming.recv(), if signaling_open => {
                    let Some(msg) = msg else {
                        signaling_open = false;
                        continue;
                    };
                    if let Err(e) = handle(&pc, polite, &mut ignore_offer, msg, &send).await {
                        warn!("signal from peer refused: {e}");
                    }
                }
            }
        }
    });
    app_rx
}

/// One end of a [`pair`].
pub struct Side {
    /// The connection.
    pub pc: PeerConnection,
    /// The events negotiation leaves for the application.
    pub app: AppEvents,
}

/// Two connections in one process whose negotiation messages go straight
/// to each other in memory, no signaling server between them: for tests
/// and benchmarks. The first side is polite (a switchboard newcomer's role).
pub async fn pair(first: Config, second: Config) -> Result<(Side, Side), crate::Error> {
    let (a, a_ev) = PeerConnection::new(first).await?;
    let (b, b_ev) = PeerConnection::new(second).await?;
    let (to_a, a_in) = mpsc::unbounded_channel();
    let (to_b, b_in) = mpsc::unbounded_channel();
    let a_app = spawn(a.clone(), a_ev, true, a_in, move |m| {
        let _ = to_b.send(m);
    });
    let b_app = spawn(b.clone(), b_ev, false, b_in, move |m| {
        let _ = to_a.send(m);
    });
    Ok((Side { pc: a, app: a_app }, Side { pc: b, app: b_app }))
}

async fn handle(
    pc: &PeerConnection,
    polite: bool,
    ignore_offer: &mut bool,
    msg: Signal,
    send: &impl Fn(Signal),
) -> Result<(), crate::Error> {
    match msg {
        Signal::Description(desc) => {
            let state = pc.signaling_state().await?;
            let collision = desc.kind == SdpType::Offer && state != SignalingState::Stable;
            *ignore_offer = !polite && collision;
            if *ignore_offer {
                debug!("offer collision: we are impolite, ignoring theirs");
                return Ok(());
            }
            if desc.kind == SdpType::Rollback {
                // A browser peer never sends this through switchboard, but the
                // protocol allows it.
                if state == SignalingState::HaveRemoteOffer {
                    pc.set_remote_description(desc).await?;
                }
                return Ok(());
            }
            let is_offer = desc.kind == SdpType::Offer;
            pc.set_remote_description(desc).await?;
            if is_offer {
                let answer = pc.set_local_description_auto().await?;
                send(Signal::Description(answer));
            }
            Ok(())
        }
        Signal::Candidate(cand) => match pc.add_ice_candidate(cand).await {
            Ok(()) => Ok(()),
            Err(e) if *ignore_offer => {
                debug!("candidate for an ignored offer: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        },
        // The room hands these to the app before they get here.
        Signal::Other(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &str) -> Result<Signal, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[tokio::test]
    async fn a_slow_app_holds_events_back_without_losing_any() {
        let cfg = Config {
            host_candidates: crate::HostCandidates::Only(
                vec![std::net::Ipv4Addr::LOCALHOST.into()],
            ),
            ..Config::default()
        };
        let (pc, _real_events) = PeerConnection::new(cfg).await.unwrap();
        let (feed, events) = mpsc::unbounded_channel();
        let (_signals, incoming) = mpsc::unbounded_channel();
        let mut app = spawn(pc.clone(), events, true, incoming, |_| {});
        let n = APP_EVENTS * 3;
        for _ in 0..n {
            feed.send(Event::SelectedPairChanged).unwrap();
        }
        // Nobody reads: the app channel fills to its bound and stays there.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(app.len(), APP_EVENTS);
        // Reading lets the rest through, all of them.
        let mut got = 0;
        while got < n {
            let ev = tokio::time::timeout(std::time::Duration::from_secs(5), app.recv())
                .await
                .expect("events keep coming");
            assert!(matches!(ev, Some(Event::SelectedPairChanged)), "{ev:?}");
            got += 1;
        }
        assert!(app.try_recv().is_err());
        pc.close().await;
    }

    #[test]
    fn signals_have_the_browser_shapes() {
        let offer = Signal::Description(SessionDescription::offer("v=0"));
        assert_eq!(
            serde_json::to_string(&offer).unwrap(),
            r#"{"description":{"type":"offer","sdp":"v=0"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Signal::Candidate(None)).unwrap(),
            r#"{"candidate":null}"#
        );
        let c = IceCandidateInit {
            candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        let text = serde_json::to_string(&Signal::Candidate(Some(c.clone()))).unwrap();
        assert_eq!(
            text,
            r#"{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}}"#
        );
        assert_eq!(read(&text).unwrap(), Signal::Candidate(Some(c)));
        assert_eq!(
            read(&serde_json::to_string(&offer).unwrap()).unwrap(),
            offer
        );
    }

    #[test]
    fn signals_are_read_leniently_but_not_blindly() {
        // A browser's rollback has no sdp; extra keys are ignored.
        assert_eq!(
            read(r#"{"description":{"type":"rollback"},"x":1}"#).unwrap(),
            Signal::Description(SessionDescription::rollback())
        );
        assert_eq!(
            read(r#"{"candidate":null}"#).unwrap(),
            Signal::Candidate(None)
        );
        assert_eq!(
            read(r#"{"description":null,"candidate":null}"#).unwrap(),
            Signal::Candidate(None)
        );
        // Objects that are no negotiation message are the app's.
        for other in [r#"{}"#, r#"{"pair":{"v":1}}"#, r#"{"description":null}"#] {
            let v: serde_json::Value = serde_json::from_str(other).unwrap();
            assert_eq!(read(other).unwrap(), Signal::Other(v.clone()));
            assert_eq!(serde_json::to_value(Signal::Other(v.clone())).unwrap(), v);
        }
        for bad in [
            r#"{"description":"weird"}"#,
            r#"{"description":{"type":"bogus","sdp":""}}"#,
            r#"{"candidate":{"sdpMid":"0"}}"#,
            r#"[1]"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
