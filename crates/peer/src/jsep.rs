//! The JSEP signaling state machine (RFC 8829 §3.2, W3C `RTCSignalingState`),
//! as a plain value with no I/O, plus the wire types a browser produces with
//! `toJSON()`: [`SessionDescription`] and [`IceCandidateInit`].
//!
//! The driver asks [`Jsep`] whether a call is legal *before* it touches str0m,
//! so a wrong-state call fails with [`JsepError::InvalidState`] and leaves
//! everything as it was, as in a browser.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `RTCSignalingState`, minus the provisional-answer states we do not
/// support (str0m has no `pranswer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalingState {
    /// `stable`: no offer/answer exchange in progress; the start state, and
    /// where every completed exchange or rollback ends.
    Stable,
    /// `have-local-offer`: our offer is set locally, waiting for the answer.
    HaveLocalOffer,
    /// `have-remote-offer`: the peer's offer is set, our answer is due.
    HaveRemoteOffer,
    /// `closed`: the connection was closed; every further JSEP call fails.
    Closed,
}

impl fmt::Display for SignalingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignalingState::Stable => "stable",
            SignalingState::HaveLocalOffer => "have-local-offer",
            SignalingState::HaveRemoteOffer => "have-remote-offer",
            SignalingState::Closed => "closed",
        })
    }
}

/// `RTCSdpType`. `pranswer` parses so that we can refuse it with a clear
/// error instead of a serde message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    /// `offer`: starts an exchange (or renegotiates).
    Offer,
    /// `answer`: the final answer to an offer.
    Answer,
    /// `pranswer`: a provisional answer; always refused with
    /// [`JsepError::NotSupported`].
    Pranswer,
    /// `rollback`: abandons the pending offer, back to stable; carries no SDP.
    Rollback,
}

impl fmt::Display for SdpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SdpType::Offer => "offer",
            SdpType::Answer => "answer",
            SdpType::Pranswer => "pranswer",
            SdpType::Rollback => "rollback",
        })
    }
}

/// `RTCSessionDescriptionInit`: `{"type":"offer","sdp":"v=0..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// The JSON `type`.
    #[serde(rename = "type")]
    pub kind: SdpType,
    /// The SDP text, CRLF line endings as browsers write it. Empty for a
    /// rollback, and may be absent from the JSON then.
    #[serde(default)]
    pub sdp: String,
}

impl SessionDescription {
    /// An offer carrying `sdp`.
    pub fn offer(sdp: impl Into<String>) -> Self {
        SessionDescription {
            kind: SdpType::Offer,
            sdp: sdp.into(),
        }
    }
    /// An answer carrying `sdp`.
    pub fn answer(sdp: impl Into<String>) -> Self {
        SessionDescription {
            kind: SdpType::Answer,
            sdp: sdp.into(),
        }
    }
    /// `{"type":"rollback","sdp":""}`: abandon the pending offer.
    pub fn rollback() -> Self {
        SessionDescription {
            kind: SdpType::Rollback,
            sdp: String::new(),
        }
    }
}

/// `RTCIceCandidateInit`. An empty `candidate` string means end of
/// candidates, as in browsers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidateInit {
    /// The SDP candidate line, `candidate:...` (an `a=` prefix is tolerated
    /// on input).
    pub candidate: String,
    /// `sdpMid`: the media section the candidate belongs to. Everything is
    /// bundled on one transport, so we send the first section's mid and do
    /// not need it on input.
    #[serde(default)]
    pub sdp_mid: Option<String>,
    /// `sdpMLineIndex`: index of that media section; we send 0.
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_m_line_index: Option<u16>,
    /// `usernameFragment`: the ICE ufrag the candidate was gathered for. A
    /// candidate whose ufrag is not the peer's current one predates an ICE
    /// restart and is dropped.
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// Why a JSEP call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsepError {
    /// The call is not legal in the current signaling state (an answer in
    /// `stable`, anything after close, ...). Nothing changed.
    #[error("InvalidStateError: cannot {op} in signaling state {state}")]
    InvalidState {
        /// The refused call, as the error text names it.
        op: &'static str,
        /// The state it was refused in.
        state: SignalingState,
    },
    /// The call is legal in this state but what it needs is missing, e.g.
    /// creating an answer when the remote offer is gone.
    #[error("InvalidModificationError: {0}")]
    InvalidModification(&'static str),
    /// A feature this peer does not implement; so far only `pranswer`.
    #[error("NotSupportedError: {0}")]
    NotSupported(&'static str),
}

/// What `set_remote_description` must do to the str0m session besides
/// moving the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteAction {
    /// Remember the offer; it is applied when the answer is created.
    StoreOffer,
    /// Our pending local offer is dropped first (W3C "implicit rollback"),
    /// then the remote offer is stored.
    RollbackThenStoreOffer,
    /// Apply the answer to our pending offer.
    ApplyAnswer,
    /// Forget the stored remote offer.
    DropRemoteOffer,
}

/// What `set_local_description` must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAction {
    /// The offer we created is now the pending local offer.
    UseOffer,
    /// The answer we created is final; back to stable.
    UseAnswer,
    /// Drop our pending offer.
    DropLocalOffer,
}

/// The signaling state plus the rules that move it.
#[derive(Debug, Clone)]
pub struct Jsep {
    state: SignalingState,
}

impl Default for Jsep {
    fn default() -> Self {
        Jsep {
            state: SignalingState::Stable,
        }
    }
}

impl Jsep {
    /// The current signaling state; starts at [`SignalingState::Stable`].
    pub fn state(&self) -> SignalingState {
        self.state
    }

    fn invalid(&self, op: &'static str) -> JsepError {
        JsepError::InvalidState {
            op,
            state: self.state,
        }
    }

    /// `createOffer` is legal in stable and have-local-offer (re-offer).
    /// Browsers also allow it in have-remote-offer, but the result could
    /// never be set there, so we refuse early.
    pub fn check_create_offer(&self) -> Result<(), JsepError> {
        match self.state {
            SignalingState::Stable | SignalingState::HaveLocalOffer => Ok(()),
            _ => Err(self.invalid("createOffer")),
        }
    }

    /// `createAnswer` is legal only in have-remote-offer.
    pub fn check_create_answer(&self) -> Result<(), JsepError> {
        match self.state {
            SignalingState::HaveRemoteOffer => Ok(()),
            _ => Err(self.invalid("createAnswer")),
        }
    }

    /// Validates a `setLocalDescription` of `kind` and moves the state.
    pub fn set_local(&mut self, kind: SdpType) -> Result<LocalAction, JsepError> {
        use SignalingState::*;
        let (next, action) = match (self.state, kind) {
            (Closed, _) => return Err(self.invalid("setLocalDescription")),
            (_, SdpType::Pranswer) => return Err(JsepError::NotSupported("pranswer")),
            (Stable | HaveLocalOffer, SdpType::Offer) => (HaveLocalOffer, LocalAction::UseOffer),
            (HaveRemoteOffer, SdpType::Answer) => (Stable, LocalAction::UseAnswer),
            (HaveLocalOffer, SdpType::Rollback) => (Stable, LocalAction::DropLocalOffer),
            (_, SdpType::Rollback) => return Err(self.invalid("roll back a local offer")),
            (_, SdpType::Offer) => return Err(self.invalid("setLocalDescription(offer)")),
            (_, SdpType::Answer) => return Err(self.invalid("setLocalDescription(answer)")),
        };
        self.state = next;
        Ok(action)
    }

    /// Validates a `setRemoteDescription` of `kind` and moves the state.
    pub fn set_remote(&mut self, kind: SdpType) -> Result<RemoteAction, JsepError> {
        use SignalingState::*;
        let (next, action) = match (self.state, kind) {
            (Closed, _) => return Err(self.invalid("setRemoteDescription")),
            (_, SdpType::Pranswer) => return Err(JsepError::NotSupported("pranswer")),
            (Stable | HaveRemoteOffer, SdpType::Offer) => {
                (HaveRemoteOffer, RemoteAction::StoreOffer)
            }
            (HaveLocalOffer, SdpType::Offer) => {
                (HaveRemoteOffer, RemoteAction::RollbackThenStoreOffer)
            }
            (HaveLocalOffer, SdpType::Answer) => (Stable, RemoteAction::ApplyAnswer),
            (HaveRemoteOffer, SdpType::Rollback) => (Stable, RemoteAction::DropRemoteOffer),
            (_, SdpType::Rollback) => return Err(self.invalid("roll back a remote offer")),
            (_, SdpType::Answer) => return Err(self.invalid("setRemoteDescription(answer)")),
        };
        self.state = next;
        Ok(action)
    }

    /// A failed apply after a successful check: str0m consumed our pending
    /// offer, so the only consistent place left is stable.
    pub fn reset_to_stable(&mut self) {
        if self.state != SignalingState::Closed {
            self.state = SignalingState::Stable;
        }
    }

    /// Moves to [`SignalingState::Closed`] for good; every later check or
    /// set fails with [`JsepError::InvalidState`].
    pub fn close(&mut self) {
        self.state = SignalingState::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SignalingState::*;

    #[test]
    fn caller_path() {
        let mut j = Jsep::default();
        j.check_create_offer().unwrap();
        assert_eq!(j.set_local(SdpType::Offer).unwrap(), LocalAction::UseOffer);
        assert_eq!(j.state(), HaveLocalOffer);
        assert!(j.check_create_answer().is_err());
        assert_eq!(
            j.set_remote(SdpType::Answer).unwrap(),
            RemoteAction::ApplyAnswer
        );
        assert_eq!(j.state(), Stable);
    }

    #[test]
    fn callee_path() {
        let mut j = Jsep::default();
        assert_eq!(
            j.set_remote(SdpType::Offer).unwrap(),
            RemoteAction::StoreOffer
        );
        assert_eq!(j.state(), HaveRemoteOffer);
        j.check_create_answer().unwrap();
        assert!(j.check_create_offer().is_err());
        assert_eq!(
            j.set_local(SdpType::Answer).unwrap(),
            LocalAction::UseAnswer
        );
        assert_eq!(j.state(), Stable);
    }

    #[test]
    fn rollbacks() {
        let mut j = Jsep::default();
        j.set_local(SdpType::Offer).unwrap();
        assert_eq!(
            j.set_local(SdpType::Rollback).unwrap(),
            LocalAction::DropLocalOffer
        );
        assert_eq!(j.state(), Stable);
        j.set_remote(SdpType::Offer).unwrap();
        assert_eq!(
            j.set_remote(SdpType::Rollback).unwrap(),
            RemoteAction::DropRemoteOffer
        );
        assert_eq!(j.state(), Stable);
        // Glare: a remote offer while ours is pending rolls ours back.
        j.set_local(SdpType::Offer).unwrap();
        assert_eq!(
            j.set_remote(SdpType::Offer).unwrap(),
            RemoteAction::RollbackThenStoreOffer
        );
        assert_eq!(j.state(), HaveRemoteOffer);
    }

    #[test]
    fn wrong_state_calls_fail_and_change_nothing() {
        let mut j = Jsep::default();
        // A remote answer in stable.
        let err = j.set_remote(SdpType::Answer).unwrap_err();
        assert!(matches!(err, JsepError::InvalidState { .. }), "{err}");
        assert_eq!(j.state(), Stable);
        assert!(j.set_local(SdpType::Answer).is_err());
        assert!(j.set_local(SdpType::Rollback).is_err());
        assert!(j.set_remote(SdpType::Rollback).is_err());
        assert!(matches!(
            j.set_local(SdpType::Pranswer),
            Err(JsepError::NotSupported(_))
        ));
        assert_eq!(j.state(), Stable);
        assert!(j.check_create_answer().is_err());

        j.set_remote(SdpType::Offer).unwrap();
        assert!(j.set_local(SdpType::Offer).is_err());
        assert!(j.set_remote(SdpType::Answer).is_err());
        assert!(j.set_local(SdpType::Rollback).is_err());
        assert_eq!(j.state(), HaveRemoteOffer);

        j.close();
        assert!(j.check_create_offer().is_err());
        assert!(j.set_remote(SdpType::Offer).is_err());
        assert!(j.set_local(SdpType::Offer).is_err());
        j.reset_to_stable();
        assert_eq!(j.state(), Closed);
        let msg = j.set_local(SdpType::Offer).unwrap_err().to_string();
        assert!(msg.starts_with("InvalidStateError"), "{msg}");
    }

    #[test]
    fn wire_shapes_match_browsers() {
        let d: SessionDescription =
            serde_json::from_str(r#"{"type":"offer","sdp":"v=0\r\n"}"#).unwrap();
        assert_eq!(d.kind, SdpType::Offer);
        let r: SessionDescription = serde_json::from_str(r#"{"type":"rollback"}"#).unwrap();
        assert_eq!(r, SessionDescription::rollback());
        assert!(
            serde_json::from_str::<SessionDescription>(r#"{"type":"bogus","sdp":""}"#).is_err()
        );
        let c: IceCandidateInit = serde_json::from_str(
            r#"{"candidate":"candidate:1 1 udp 1 192.0.2.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab"}"#,
        )
        .unwrap();
        assert_eq!(c.sdp_m_line_index, Some(0));
        assert_eq!(c.username_fragment.as_deref(), Some("ab"));
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["sdpMLineIndex"], 0);
        assert_eq!(back["sdpMid"], "0");
    }
}
