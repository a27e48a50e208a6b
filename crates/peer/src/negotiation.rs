//! Negotiation state, sans-IO: the JSEP signaling state, the description
//! in flight (one [`Exchange`] instead of three loose options), whether
//! the application must be told to negotiate, what the descriptions told
//! us (ufrags, the first mid, the kinds of remote candidates), and the
//! checks on remote candidates, including the ones that wait for our
//! answer.
//!
//! The str0m calls themselves (`SdpApi`, adding candidates) are the
//! driver's: they mutate the `Rtc` and so go through its one drain point.
//! This type decides and remembers.

use crate::jsep::{IceCandidateInit, Jsep, SignalingState};
use crate::{CandidateType, Error};
use std::collections::HashMap;
use std::net::SocketAddr;
use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::Candidate;
use tracing::debug;

/// The description being exchanged.
#[derive(Default)]
pub(crate) enum Exchange {
    /// Nothing in flight.
    #[default]
    Idle,
    /// `createOffer` made this; only it may be set as the local offer.
    LocalOffer {
        sdp: String,
        pending: SdpPendingOffer,
    },
    /// Their offer waits for `createAnswer`. An offer of ours created
    /// before it arrived stays the one setLocalDescription accepts until
    /// an answer voids it.
    RemoteOffer {
        offer: SdpOffer,
        ours: Option<(String, SdpPendingOffer)>,
    },
    /// `createAnswer` made this; only it may be set as the local answer.
    Answer(String),
}

/// What to do with a remote candidate that passed the checks.
#[derive(Debug)]
pub(crate) enum RemoteCandidate {
    /// Hand it to str0m now.
    Add(Candidate),
    /// A `.local` name: resolve `host` by mDNS, then put the address into
    /// `line`.
    Mdns { line: String, host: String },
}

#[derive(Default)]
pub(crate) struct Negotiation {
    pub jsep: Jsep,
    exchange: Exchange,
    /// An ICE restart goes into the next offer.
    pub restart_wanted: bool,
    /// `negotiationneeded` was told since the last return to stable.
    needed_told: bool,
    /// An SCTP association is negotiated: new channels open in-band.
    pub app_negotiated: bool,
    /// A local description was set once (candidates may trickle).
    pub local_set: bool,
    /// A remote description was set once (candidates may be added).
    remote_set: bool,
    local_ufrag: String,
    first_mid: Option<String>,
    remote_ufrag: Option<String>,
    remote_kinds: HashMap<SocketAddr, CandidateType>,
    /// Bumped whenever `remote_kinds` changes, so that a cache of it knows.
    kinds_version: u64,
    /// Candidates for a remote offer we have not answered yet.
    queued_remote: Vec<Candidate>,
    remote_count: usize,
}

impl Negotiation {
    pub fn state(&self) -> SignalingState {
        self.jsep.state()
    }

    /// Whether `sdp` is the offer we created last.
    pub fn is_our_offer(&self, sdp: &str) -> bool {
        match &self.exchange {
            Exchange::LocalOffer { sdp: s, .. } => s == sdp,
            Exchange::RemoteOffer {
                ours: Some((s, _)), ..
            } => s == sdp,
            _ => false,
        }
    }

    /// Whether `sdp` is the answer we created.
    pub fn is_our_answer(&self, sdp: &str) -> bool {
        matches!(&self.exchange, Exchange::Answer(s) if s == sdp)
    }

    /// The answer made already, for a repeated `createAnswer`.
    pub fn answer(&self) -> Option<&str> {
        match &self.exchange {
            Exchange::Answer(s) => Some(s),
            _ => None,
        }
    }

    /// A new offer replaces ours.
    pub fn set_offer(&mut self, sdp: String, pending: SdpPendingOffer) {
        self.exchange = Exchange::LocalOffer { sdp, pending };
    }

    /// Forgets the offer we made (rolled back, or voided by str0m).
    pub fn drop_offer(&mut self) {
        match &mut self.exchange {
            Exchange::LocalOffer { .. } => self.exchange = Exchange::Idle,
            Exchange::RemoteOffer { ours, .. } => *ours = None,
            _ => {}
        }
    }

    /// Our offer, for the answer to it.
    pub fn take_offer(&mut self) -> Option<SdpPendingOffer> {
        match std::mem::take(&mut self.exchange) {
            Exchange::LocalOffer { pending, .. } => Some(pending),
            Exchange::RemoteOffer { offer, ours } => {
                let pending = ours.map(|(_, p)| p);
                self.exchange = Exchange::RemoteOffer { offer, ours: None };
                pending
            }
            other => {
                self.exchange = other;
                None
            }
        }
    }

    /// Their offer is stored until we answer.
    pub fn store_remote_offer(&mut self, offer: SdpOffer) {
        let ours = match std::mem::take(&mut self.exchange) {
            Exchange::LocalOffer { sdp, pending } => Some((sdp, pending)),
            Exchange::RemoteOffer { ours, .. } => ours,
            Exchange::Idle | Exchange::Answer(_) => None,
        };
        self.exchange = Exchange::RemoteOffer { offer, ours };
    }

    /// Their offer, to answer. Our own offer, if any, survives a failure
    /// to accept it ([`Self::answer_failed`]).
    pub fn take_remote_offer(&mut self) -> Option<SdpOffer> {
        match std::mem::take(&mut self.exchange) {
            Exchange::RemoteOffer { offer, ours } => {
                self.exchange = match ours {
                    Some((sdp, pending)) => Exchange::LocalOffer { sdp, pending },
                    None => Exchange::Idle,
                };
                Some(offer)
            }
            other => {
                self.exchange = other;
                None
            }
        }
    }

    /// The answer str0m made; it voided any offer of ours.
    pub fn set_answer(&mut self, sdp: String) {
        self.exchange = Exchange::Answer(sdp);
    }

    /// Our answer is final (or their offer is withdrawn).
    pub fn answer_done(&mut self) {
        match std::mem::take(&mut self.exchange) {
            Exchange::Answer(_) => {}
            Exchange::RemoteOffer { ours, .. } => {
                if let Some((sdp, pending)) = ours {
                    self.exchange = Exchange::LocalOffer { sdp, pending };
                }
            }
            other => self.exchange = other,
        }
    }

    /// Their offer is withdrawn: what was queued for it goes too.
    pub fn drop_remote_offer(&mut self) {
        self.answer_done();
        self.queued_remote.clear();
    }

    /// Something new is wanted (a channel, a track, a restart): tell the
    /// application again once stable.
    pub fn renegotiate(&mut self) {
        self.needed_told = false;
    }

    /// True once per return to stable while changes are wanted:
    /// the application is to be told `negotiationneeded`.
    pub fn poll_needed(&mut self, unconfirmed: bool) -> bool {
        if self.state() == SignalingState::Stable
            && !self.needed_told
            && (self.restart_wanted || unconfirmed)
        {
            self.needed_told = true;
            return true;
        }
        false
    }

    /// The ufrag and first mid of our description, for trickled candidates.
    pub fn learn_local_sdp(&mut self, sdp: &str) {
        if let Some(u) = sdp_attr(sdp, "ice-ufrag") {
            self.local_ufrag = u.to_string();
        }
        if let Some(m) = sdp_attr(sdp, "mid") {
            self.first_mid = Some(m.to_string());
        }
    }

    /// A local candidate as the application trickles it.
    pub fn candidate_init(&self, c: &Candidate) -> IceCandidateInit {
        IceCandidateInit {
            candidate: c.to_sdp_string(),
            sdp_mid: Some(self.first_mid.clone().unwrap_or_else(|| "0".into())),
            sdp_m_line_index: Some(0),
            username_fragment: (!self.local_ufrag.is_empty()).then(|| self.local_ufrag.clone()),
        }
    }

    /// Their ufrag and the candidates inside their description.
    pub fn learn_remote_sdp(&mut self, sdp: &str) {
        let ufrag = sdp_attr(sdp, "ice-ufrag").map(str::to_string);
        if ufrag != self.remote_ufrag {
            self.remote_kinds.clear();
            self.kinds_version += 1;
        }
        self.remote_ufrag = ufrag;
        for line in sdp.lines() {
            if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    if let Ok(cand) = Candidate::from_sdp_string(c) {
                        self.remote_kinds.insert(cand.addr(), kind_of(&cand));
                        self.kinds_version += 1;
                        self.remote_count += 1;
                    }
                }
            }
        }
    }

    /// A remote description was applied (even one that changed nothing).
    pub fn remote_applied(&mut self) {
        self.remote_set = true;
    }

    /// Checks a remote candidate. `Ok(None)`: nothing to do now (end of
    /// candidates, an old ufrag, not UDP, or queued for our answer).
    pub fn remote_candidate(
        &mut self,
        init: Option<IceCandidateInit>,
    ) -> Result<Option<RemoteCandidate>, Error> {
        if self.state() == SignalingState::Closed {
            return Err(Error::Closed);
        }
        if !self.remote_set {
            return Err(Error::Jsep(crate::JsepError::InvalidState {
                op: "addIceCandidate before setRemoteDescription",
                state: self.state(),
            }));
        }
        let Some(init) = init else { return Ok(None) };
        let line = init.candidate.trim();
        if line.is_empty() {
            return Ok(None); // end-of-candidates
        }
        let line = line.strip_prefix("a=").unwrap_or(line);
        if let (Some(u), Some(cur)) = (&init.username_fragment, &self.remote_ufrag) {
            if u != cur {
                debug!("dropping candidate for old ufrag {u}");
                return Ok(None);
            }
        }
        // Chromium hides host addresses behind random `.local` names.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || !fields[0].starts_with("candidate:") || fields[6] != "typ" {
            return Err(Error::InvalidCandidate(format!(
                "not an ICE candidate line: {line:?}"
            )));
        }
        if !fields[2].eq_ignore_ascii_case("udp") {
            debug!("ignoring non-UDP candidate {line}");
            return Ok(None);
        }
        let host = fields[4];
        if host.ends_with(".local") {
            return Ok(Some(RemoteCandidate::Mdns {
                line: line.to_string(),
                host: host.to_string(),
            }));
        }
        let c =
            Candidate::from_sdp_string(line).map_err(|e| Error::InvalidCandidate(e.to_string()))?;
        if self.state() == SignalingState::HaveRemoteOffer
            && matches!(self.exchange, Exchange::RemoteOffer { .. })
        {
            self.queued_remote.push(c);
            return Ok(None);
        }
        Ok(Some(RemoteCandidate::Add(c)))
    }

    /// Candidates that waited for our answer.
    pub fn take_queued(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.queued_remote)
    }

    /// `c` goes to str0m: remember its kind for the stats.
    pub fn note_remote(&mut self, c: &Candidate) {
        self.remote_kinds.entry(c.addr()).or_insert(kind_of(c));
        self.kinds_version += 1;
        self.remote_count += 1;
    }

    /// Changes whenever what `remote_kind` answers may have changed.
    pub fn kinds_version(&self) -> u64 {
        self.kinds_version
    }

    pub fn remote_kind(&self, addr: SocketAddr) -> Option<CandidateType> {
        self.remote_kinds.get(&addr).copied()
    }

    pub fn remote_count(&self) -> usize {
        self.remote_count
    }
}

fn kind_of(c: &Candidate) -> CandidateType {
    use str0m::CandidateKind as K;
    match c.kind() {
        K::Host => CandidateType::Host,
        K::ServerReflexive => CandidateType::Srflx,
        K::PeerReflexive => CandidateType::Prflx,
        K::Relayed => CandidateType::Relay,
    }
}

/// The first `a=NAME:VALUE` in an SDP.
fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=")?.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsep::{RemoteAction, SdpType};
    use std::time::Instant;

    /// A real offer from a fresh str0m session.
    fn offer() -> (String, SdpOffer, SdpPendingOffer) {
        let mut rtc = str0m::Rtc::new(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_channel("x".into());
        let (offer, pending) = api.apply().expect("a channel needs an offer");
        let sdp = offer.to_sdp_string();
        (sdp, offer, pending)
    }

    fn cand(line: &str, ufrag: Option<&str>) -> Option<IceCandidateInit> {
        Some(IceCandidateInit {
            candidate: line.into(),
            username_fragment: ufrag.map(str::to_string),
            ..Default::default()
        })
    }

    const HOST: &str = "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";

    #[test]
    fn our_offer_is_the_only_one_accepted_and_survives_their_offer() {
        let mut n = Negotiation::default();
        let (sdp, _, pending) = offer();
        assert!(!n.is_our_offer(&sdp));
        n.set_offer(sdp.clone(), pending);
        assert!(n.is_our_offer(&sdp));
        assert!(!n.is_our_offer(&format!("{sdp}a=x\r\n")));
        // Their offer arrives before ours was set: ours stays settable
        // until an answer is made.
        let (_, theirs, _) = offer();
        n.store_remote_offer(theirs);
        assert!(n.is_our_offer(&sdp));
        n.drop_remote_offer();
        assert!(n.is_our_offer(&sdp), "their rollback keeps our offer");
        let (_, theirs, _) = offer();
        n.store_remote_offer(theirs);
        assert!(n.take_remote_offer().is_some());
        assert!(n.take_remote_offer().is_none(), "taken once");
        // A failed answer leaves our offer; a made one voids it.
        assert!(n.is_our_offer(&sdp));
        n.drop_offer();
        n.set_answer("answer".into());
        assert!(!n.is_our_offer(&sdp));
        assert!(n.is_our_answer("answer"));
        assert_eq!(n.answer(), Some("answer"));
        n.answer_done();
        assert!(!n.is_our_answer("answer"));
        assert!(n.take_offer().is_none());
    }

    #[test]
    fn the_answer_takes_our_pending_offer() {
        let mut n = Negotiation::default();
        let (sdp, _, pending) = offer();
        n.set_offer(sdp.clone(), pending);
        assert!(n.take_offer().is_some());
        assert!(!n.is_our_offer(&sdp));
        assert!(n.take_offer().is_none());
    }

    #[test]
    fn negotiation_needed_is_told_once_per_stable() {
        let mut n = Negotiation::default();
        assert!(!n.poll_needed(false), "nothing wanted");
        assert!(n.poll_needed(true));
        assert!(!n.poll_needed(true), "told already");
        n.renegotiate();
        assert!(n.poll_needed(true));
        n.renegotiate();
        n.restart_wanted = true;
        assert!(n.poll_needed(false), "a restart alone is a change");
        // Not while an exchange is in flight.
        n.renegotiate();
        n.jsep.set_local(SdpType::Offer).unwrap();
        assert!(!n.poll_needed(true));
    }

    #[test]
    fn remote_candidates_are_checked() {
        let mut n = Negotiation::default();
        assert!(matches!(
            n.remote_candidate(cand(HOST, None)),
            Err(Error::Jsep(_))
        ));
        n.learn_remote_sdp(
            "v=0\r\na=ice-ufrag:abcd\r\na=candidate:2 1 udp 1 10.0.0.1 9 typ host\r\n",
        );
        n.remote_applied();
        assert_eq!(n.remote_count(), 1);
        assert_eq!(
            n.remote_kind("10.0.0.1:9".parse().unwrap()),
            Some(CandidateType::Host)
        );
        assert!(matches!(
            n.remote_candidate(cand(HOST, Some("abcd"))),
            Ok(Some(RemoteCandidate::Add(_)))
        ));
        assert!(matches!(
            n.remote_candidate(cand(&format!("a={HOST}"), None)),
            Ok(Some(RemoteCandidate::Add(_)))
        ));
        // End of candidates, an old ufrag, TCP: nothing to do.
        assert!(matches!(n.remote_candidate(None), Ok(None)));
        assert!(matches!(n.remote_candidate(cand("", None)), Ok(None)));
        assert!(matches!(
            n.remote_candidate(cand(HOST, Some("old"))),
            Ok(None)
        ));
        let tcp = "candidate:1 1 tcp 2130706431 127.0.0.1 5000 typ host tcptype passive";
        assert!(matches!(n.remote_candidate(cand(tcp, None)), Ok(None)));
        let mdns = "candidate:1 1 udp 2130706431 abc-123.local 5000 typ host";
        match n.remote_candidate(cand(mdns, None)) {
            Ok(Some(RemoteCandidate::Mdns { line, host })) => {
                assert_eq!(host, "abc-123.local");
                assert_eq!(line, mdns);
            }
            r => panic!("{r:?}"),
        }
        for bad in [
            "candidate:garbage",
            "not a candidate at all",
            "candidate:1 1 udp 1 999.1.1.1 5 typ host",
        ] {
            assert!(
                matches!(
                    n.remote_candidate(cand(bad, None)),
                    Err(Error::InvalidCandidate(_))
                ),
                "{bad}"
            );
        }
        // While their offer waits for our answer, candidates wait too.
        assert_eq!(
            n.jsep.set_remote(SdpType::Offer).unwrap(),
            RemoteAction::StoreOffer
        );
        let (_, theirs, _) = offer();
        n.store_remote_offer(theirs);
        assert!(matches!(n.remote_candidate(cand(HOST, None)), Ok(None)));
        assert_eq!(n.take_queued().len(), 1);
        n.jsep.close();
        assert!(matches!(
            n.remote_candidate(cand(HOST, None)),
            Err(Error::Closed)
        ));
    }

    #[test]
    fn local_sdp_gives_trickle_fields() {
        let mut n = Negotiation::default();
        let (sdp, _, _) = offer();
        n.learn_local_sdp(&sdp);
        let c = Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap();
        let init = n.candidate_init(&c);
        assert_eq!(init.sdp_mid.as_deref(), sdp_attr(&sdp, "mid"));
        assert_eq!(
            init.username_fragment.as_deref(),
            sdp_attr(&sdp, "ice-ufrag")
        );
        assert_eq!(init.sdp_m_line_index, Some(0));
        assert!(init.candidate.contains("127.0.0.1 5000 typ host"));
    }
}
