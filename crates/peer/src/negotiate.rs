//! Perfect negotiation (W3C WebRTC §10.7) over any message transport: the
//! same pattern the browser SDK runs, so native and browser peers mix.
//!
//! Messages are the JSON shapes browsers make with `toJSON()`:
//! `{"description":{"type":..,"sdp":..}}`, `{"candidate":{..}}` and
//! `{"candidate":null}` for end-of-candidates.

use crate::{
    Event, Events, IceCandidateInit, PeerConnection, SdpType, SessionDescription, SignalingState,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// What the negotiation loop hands on to the application: every event
/// that is not part of negotiation itself.
pub type AppEvents = mpsc::UnboundedReceiver<Event>;

/// Drives one connection until its events end.
///
/// - `polite`: on an offer collision, roll back our own offer (the
///   newcomer in a switchboard room is polite).
/// - `incoming`: signaling messages from the remote peer.
/// - `send`: delivers a message to the remote peer.
///
/// Returns the events the application should see.
pub fn spawn(
    pc: PeerConnection,
    mut events: Events,
    polite: bool,
    mut incoming: mpsc::UnboundedReceiver<Value>,
    send: impl Fn(Value) + Send + Sync + 'static,
) -> AppEvents {
    let (app_tx, app_rx) = mpsc::unbounded_channel();
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
                                Ok(d) => send(json!({ "description": d })),
                                Err(crate::Error::NothingToNegotiate) => {}
                                Err(e) => debug!("negotiation-needed: {e}"),
                            }
                        }
                        Event::IceCandidate(c) => send(json!({ "candidate": c })),
                        other => {
                            if app_tx.send(other).is_err() {
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

async fn handle(
    pc: &PeerConnection,
    polite: bool,
    ignore_offer: &mut bool,
    msg: Value,
    send: &impl Fn(Value),
) -> Result<(), crate::Error> {
    if let Some(d) = msg.get("description").filter(|d| !d.is_null()) {
        let desc: SessionDescription = serde_json::from_value(d.clone())
            .map_err(|e| crate::Error::InvalidSdp(e.to_string()))?;
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
            send(json!({ "description": answer }));
        }
        return Ok(());
    }
    if let Some(c) = msg.get("candidate") {
        let cand: Option<IceCandidateInit> = if c.is_null() {
            None
        } else {
            Some(
                serde_json::from_value(c.clone())
                    .map_err(|e| crate::Error::InvalidCandidate(e.to_string()))?,
            )
        };
        match pc.add_ice_candidate(cand).await {
            Ok(()) => {}
            Err(e) if *ignore_offer => debug!("candidate for an ignored offer: {e}"),
            Err(e) => return Err(e),
        }
        return Ok(());
    }
    Err(crate::Error::InvalidSdp(format!(
        "signal is neither description nor candidate: {msg}"
    )))
}
