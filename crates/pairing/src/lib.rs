//! Pairing: two peers that share a secret (a short code a person types,
//! or the 128-bit key in a link's fragment) prove it to each other, and
//! bind that proof to the DTLS fingerprints in the descriptions each one
//! set. A signaling server that rewrites the descriptions to sit in the
//! middle is then caught before any file moves, and one that only watches
//! learns nothing it can guess the code from.
//!
//! - **Codes** (`7-violet-harbor`: a room number and two words, 16 bits of
//!   secret) run SPAKE2 (RustCrypto's `spake2`, Ed25519 group, symmetric
//!   mode): an active attacker gets one guess per attempt, a passive one
//!   none, whatever the code's entropy.
//! - **Links** carry 128 random bits in the fragment, which browsers never
//!   send to a server, so the key comes straight from them.
//!
//! From the shared key K, each side sends `check` (a MAC of its role:
//! proof of K) and `bind` (a MAC of its role and the two fingerprints as it
//! sees them: its own from the description it set, the other's from the
//! one it was given). Different codes fail `check`; rewritten fingerprints
//! fail `bind`.
//!
//! Sans-IO: [`Pairing`] takes the peer's messages ([`Pairing::handle`])
//! and the descriptions ([`Pairing::set_descriptions`]), and hands out the
//! messages to send ([`Pairing::poll_output`]); the driver carries them as
//! `signal` data, `{"pair":{"v":1,...}}`.

pub mod words;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use std::collections::VecDeque;
use std::fmt;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The pairing messages' `v`.
pub const VERSION: u64 = 1;

/// Codes name rooms `pair-1` … `pair-999`.
pub const NAMEPLATES: u16 = 999;

/// Longest code or link fragment read (a pasted page is no code).
const MAX_SECRET_TEXT: usize = 200;

const IDENTITY: &[u8] = b"switchboard/pairing/1";

/// Which end of the pairing: the one that made the secret (and waits in
/// its room) or the one that was given it. The labels keep one side's
/// MACs from being reflected back as the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Made the code or link.
    Host,
    /// Typed the code or opened the link.
    Guest,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Host => b"host",
            Role::Guest => b"guest",
        }
    }

    fn other(self) -> Role {
        match self {
            Role::Host => Role::Guest,
            Role::Guest => Role::Host,
        }
    }
}

/// A code or link that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(String);

/// A short code: `NAMEPLATE-WORD-WORD`. The nameplate picks the room; the
/// two words (one byte each, [`words::WORDS`]) are the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    /// 1..=[`NAMEPLATES`].
    pub nameplate: u16,
    /// Indexes into [`words::WORDS`].
    pub words: [u8; 2],
}

impl Code {
    /// A fresh code from the system's random source.
    pub fn random() -> Code {
        Code {
            nameplate: rand::random_range(1..=NAMEPLATES),
            words: rand::random(),
        }
    }

    /// Reads `7-violet-harbor`: case and surrounding blanks do not matter,
    /// spaces may stand for the dashes.
    pub fn parse(text: &str) -> Result<Code, SecretError> {
        if text.len() > MAX_SECRET_TEXT {
            return Err(SecretError("a code is a number and two words".into()));
        }
        let lower = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        let [n, a, b] = parts[..] else {
            return Err(SecretError(format!(
                "{text:?} is not a code: it is a number and two words, like 7-violet-harbor"
            )));
        };
        let nameplate = n
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=NAMEPLATES).contains(n))
            .ok_or_else(|| {
                SecretError(format!("{n:?} is not a code's number (1 to {NAMEPLATES})"))
            })?;
        let word = |w: &str| {
            words::WORDS
                .iter()
                .position(|x| *x == w)
                .map(|i| i as u8)
                .ok_or_else(|| SecretError(format!("{w:?} is not one of the code words")))
        };
        Ok(Code {
            nameplate,
            words: [word(a)?, word(b)?],
        })
    }

    /// The room the two sides meet in.
    pub fn room(&self) -> String {
        format!("pair-{}", self.nameplate)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.nameplate,
            words::WORDS[self.words[0] as usize],
            words::WORDS[self.words[1] as usize]
        )
    }
}

/// A link's secret: the room and a 128-bit key, carried in the URL's
/// fragment as `room=pair-…&key=…`.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkSecret {
    /// The room (`pair-` and a name of up to 59 characters).
    pub room: String,
    /// The key.
    pub key: [u8; 16],
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSecret")
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

impl LinkSecret {
    /// A fresh key for the room of `code`, so that the link and the code
    /// lead to the same sender.
    pub fn for_code(code: &Code) -> LinkSecret {
        LinkSecret {
            room: code.room(),
            key: rand::random(),
        }
    }

    /// What goes after the `#`.
    pub fn fragment(&self) -> String {
        format!("room={}&key={}", self.room, B64.encode(self.key))
    }

    /// Reads a link (`https://host/drop#room=…&key=…`) or just its
    /// fragment.
    pub fn parse(text: &str) -> Result<LinkSecret, SecretError> {
        if text.len() > MAX_SECRET_TEXT {
            return Err(SecretError("that is too long for a link".into()));
        }
        let frag = match text.trim().split_once('#') {
            Some((_, f)) => f,
            None => text.trim(),
        };
        let (mut room, mut key) = (None, None);
        for kv in frag.split('&') {
            match kv.split_once('=') {
                Some(("room", v)) => room = Some(v),
                Some(("key", v)) => key = Some(v),
                _ => {}
            }
        }
        let bad = |what: &str| SecretError(format!("the link has no valid {what} after its #"));
        let room = room
            .filter(|r| {
                r.starts_with("pair-")
                    && r.len() <= 64
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .ok_or_else(|| bad("room"))?;
        let key = key
            .and_then(|k| B64.decode(k).ok())
            .and_then(|k| <[u8; 16]>::try_from(k).ok())
            .ok_or_else(|| bad("key (22 characters of base64url)"))?;
        Ok(LinkSecret {
            room: room.to_string(),
            key,
        })
    }
}

/// What the two sides share.
#[derive(Debug, Clone)]
pub enum Secret {
    /// A short code, proven by SPAKE2.
    Code(Code),
    /// A link's key, used as it is.
    Link(LinkSecret),
}

impl Secret {
    /// The room the two sides meet in.
    pub fn room(&self) -> String {
        match self {
            Secret::Code(c) => c.room(),
            Secret::Link(l) => l.room.clone(),
        }
    }
}

/// Why a pairing failed. After any of these, nothing may be sent to or
/// accepted from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// The peer holds another code or link key (a typo, or someone
    /// guessing).
    #[error("the other side has a different code or link key (a typo, or someone guessing)")]
    WrongSecret,
    /// Same secret, but the fingerprints the two sides saw differ: the
    /// descriptions were changed between them.
    #[error(
        "the DTLS fingerprints the two sides saw differ: the signaling path changed the descriptions (someone may be in the middle)"
    )]
    Tampered,
    /// A pairing message that does not read.
    #[error("bad pairing message: {0}")]
    Malformed(String),
    /// A description without an `a=fingerprint` line.
    #[error("a description has no DTLS fingerprint")]
    NoFingerprint,
}

/// The keys made from the shared secret.
struct Keys {
    check: [u8; 32],
    bind: [u8; 32],
}

impl Keys {
    fn from_shared(k: &[u8]) -> Keys {
        Keys {
            check: mac(k, &[b"check"]),
            bind: mac(k, &[b"bind"]),
        }
    }
}

fn link_keys(link: &LinkSecret) -> Keys {
    Keys::from_shared(&mac(&link.key, &[IDENTITY, b"link", link.room.as_bytes()]))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        // Lengths first, so no two lists of parts read the same.
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// The `a=fingerprint` values of a description, normalized (hash name in
/// lower case, hex in upper case), sorted and joined by `,`.
pub fn fingerprints(sdp: &str) -> Result<String, PairError> {
    let mut fps: Vec<String> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .filter_map(|v| {
            let (alg, hex) = v.trim().split_once(' ')?;
            Some(format!(
                "{} {}",
                alg.to_ascii_lowercase(),
                hex.trim().to_ascii_uppercase()
            ))
        })
        .collect();
    fps.sort();
    fps.dedup();
    if fps.is_empty() {
        return Err(PairError::NoFingerprint);
    }
    Ok(fps.join(","))
}

/// One side of a pairing with one peer.
pub struct Pairing {
    role: Role,
    /// Waiting for the peer's SPAKE2 message (codes only).
    spake: Option<Spake2<Ed25519Group>>,
    /// A host's link keys, until the guest shows which secret it has.
    link_keys: Option<Keys>,
    keys: Option<Keys>,
    out: VecDeque<Value>,
    /// The peer's `check`, when it came before the keys.
    peer_check: Option<Vec<u8>>,
    checked: bool,
    /// The fingerprints as this side sees them: (host's, guest's).
    view: Option<(String, String)>,
    bind_sent: bool,
    peer_bind: Option<Vec<u8>>,
    verified: bool,
}

impl Pairing {
    /// Starts pairing as `role` with `secret`; the first message is ready
    /// in [`Pairing::poll_output`].
    pub fn new(secret: &Secret, role: Role) -> Pairing {
        let mut p = Pairing::empty(role);
        match secret {
            Secret::Code(code) => p.start_spake(code),
            Secret::Link(link) => p.keyed(link_keys(link)),
        }
        p
    }

    /// The host of a code and a link to the same room: it pairs with a
    /// guest by whichever of the two the guest turns out to hold (SPAKE2
    /// when its first message is one, the link's key when it is a
    /// `check`).
    pub fn host(code: &Code, link: &LinkSecret) -> Pairing {
        let mut p = Pairing::empty(Role::Host);
        p.start_spake(code);
        p.link_keys = Some(link_keys(link));
        p
    }

    fn empty(role: Role) -> Pairing {
        Pairing {
            role,
            spake: None,
            link_keys: None,
            keys: None,
            out: VecDeque::new(),
            peer_check: None,
            checked: false,
            view: None,
            bind_sent: false,
            peer_bind: None,
            verified: false,
        }
    }

    fn start_spake(&mut self, code: &Code) {
        let (state, msg) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(code.to_string().as_bytes()),
            &Identity::new(IDENTITY),
        );
        self.spake = Some(state);
        self.send(json!({ "spake": B64.encode(msg) }));
    }

    /// Both sides proved the secret, and saw the same fingerprints.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// The next message to send to the peer, as `signal` data.
    pub fn poll_output(&mut self) -> Option<Value> {
        self.out.pop_front()
    }

    /// A new connection to the same peer (it came back): its descriptions
    /// must be bound again. The key stays.
    pub fn new_connection(&mut self) {
        self.view = None;
        self.bind_sent = false;
        self.peer_bind = None;
        self.verified = false;
    }

    /// Whether `data` (a `signal`'s data) is a pairing message.
    pub fn is_pairing_message(data: &Value) -> bool {
        data.get("pair").is_some()
    }

    /// A pairing message from the peer.
    pub fn handle(&mut self, data: &Value) -> Result<(), PairError> {
        let bad = |m: &str| PairError::Malformed(m.to_string());
        let msg = data
            .get("pair")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no pair object"))?;
        if msg.get("v").and_then(Value::as_u64) != Some(VERSION) {
            return Err(bad("unknown version (want v 1)"));
        }
        let field = |name: &str| -> Result<Option<Vec<u8>>, PairError> {
            match msg.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .and_then(|s| B64.decode(s).ok())
                    .map(Some)
                    .ok_or_else(|| PairError::Malformed(format!("{name} is not base64url"))),
            }
        };
        if let Some(m) = field("spake")? {
            // Once keyed, a spake changes nothing: a repeat, or the host's
            // own to a guest that holds the link.
            if let Some(state) = self.spake.take().filter(|_| self.keys.is_none()) {
                let k = state
                    .finish(&m)
                    .map_err(|e| PairError::Malformed(format!("spake: {e}")))?;
                self.link_keys = None;
                self.keyed(Keys::from_shared(&k));
            }
        }
        if let Some(tag) = field("check")? {
            // A guest's check before any spake: it holds the link.
            if self.keys.is_none() {
                if let Some(keys) = self.link_keys.take() {
                    self.spake = None;
                    self.keyed(keys);
                }
            }
            self.peer_check = Some(tag);
        }
        if let Some(tag) = field("bind")? {
            self.peer_bind = Some(tag);
        }
        self.progress()
    }

    /// The descriptions this side set: its own (local) and the one it was
    /// given (remote).
    pub fn set_descriptions(&mut self, local_sdp: &str, remote_sdp: &str) -> Result<(), PairError> {
        let (mine, theirs) = (fingerprints(local_sdp)?, fingerprints(remote_sdp)?);
        let view = match self.role {
            Role::Host => (mine, theirs),
            Role::Guest => (theirs, mine),
        };
        if self.view.as_ref() != Some(&view) {
            if self.view.is_some() {
                // Fingerprints that change under a live pairing: a fresh
                // bind both ways.
                self.new_connection();
            }
            self.view = Some(view);
        }
        self.progress()
    }

    fn keyed(&mut self, keys: Keys) {
        self.send(json!({ "check": B64.encode(mac(&keys.check, &[self.role.label()])) }));
        self.keys = Some(keys);
    }

    fn progress(&mut self) -> Result<(), PairError> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        let peer = self.role.other().label();
        if !self.checked {
            let Some(tag) = self.peer_check.take() else {
                return Ok(());
            };
            if !verify(&keys.check, &[peer], &tag) {
                return Err(PairError::WrongSecret);
            }
            self.checked = true;
        }
        let Some((host, guest)) = &self.view else {
            return Ok(());
        };
        let mine = mac(
            &keys.bind,
            &[self.role.label(), host.as_bytes(), guest.as_bytes()],
        );
        let theirs_ok = self
            .peer_bind
            .as_ref()
            .map(|tag| verify(&keys.bind, &[peer, host.as_bytes(), guest.as_bytes()], tag));
        if !self.bind_sent {
            self.bind_sent = true;
            self.send(json!({ "bind": B64.encode(mine) }));
        }
        match theirs_ok {
            Some(false) => Err(PairError::Tampered),
            Some(true) => {
                self.verified = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn send(&mut self, mut body: Value) {
        body["v"] = json!(VERSION);
        self.out.push_back(json!({ "pair": body }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(fp: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 {fp}\r\na=setup:actpass\r\n"
        )
    }

    const FP_H: &str = "AA:BB:CC";
    const FP_G: &str = "11:22:33";
    const FP_M: &str = "DE:AD:BE:EF";

    /// Runs both sides to the end, delivering each message as it comes,
    /// with what each side set as (local, remote) descriptions.
    fn run(
        host: &mut Pairing,
        guest: &mut Pairing,
        host_descs: (&str, &str),
        guest_descs: (&str, &str),
    ) -> (Result<(), PairError>, Result<(), PairError>) {
        let (mut rh, mut rg) = (Ok(()), Ok(()));
        rh = rh.and(host.set_descriptions(&sdp(host_descs.0), &sdp(host_descs.1)));
        rg = rg.and(guest.set_descriptions(&sdp(guest_descs.0), &sdp(guest_descs.1)));
        for _ in 0..10 {
            while let Some(m) = host.poll_output() {
                if rg.is_ok() {
                    rg = guest.handle(&m);
                }
            }
            while let Some(m) = guest.poll_output() {
                if rh.is_ok() {
                    rh = host.handle(&m);
                }
            }
        }
        (rh, rg)
    }

    #[test]
    fn the_same_code_pairs_and_binds_both_sides() {
        let code = Secret::Code(Code::random());
        let mut h = Pairing::new(&code, Role::Host);
        let mut g = Pairing::new(&code, Role::Guest);
        let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
        assert_eq!((rh, rg), (Ok(()), Ok(())));
        assert!(h.is_verified() && g.is_verified());
    }

    #[test]
    fn a_wrong_code_fails_on_both_sides_and_verifies_nothing() {
        let right = Code::parse("7-violet-harbor").unwrap();
        let mut wrong = right.clone();
        wrong.words[1] = wrong.words[1].wrapping_add(1);
        let mut h = Pairing::new(&Secret::Code(right), Role::Host);
        let mut g = Pairing::new(&Secret::Code(wrong), Role::Guest);
        let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
        assert_eq!(rh, Err(PairError::WrongSecret));
        assert_eq!(rg, Err(PairError::WrongSecret));
        assert!(!h.is_verified() && !g.is_verified());
    }

    #[test]
    fn rewritten_fingerprints_are_caught_by_both_sides() {
        for secret in [
            Secret::Code(Code::random()),
            Secret::Link(LinkSecret::for_code(&Code::random())),
        ] {
            let mut h = Pairing::new(&secret, Role::Host);
            let mut g = Pairing::new(&secret, Role::Guest);
            // The server swapped the host's fingerprint for its own in
            // what the guest got, and the guest's in what the host got.
            let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_M), (FP_G, FP_M));
            assert_eq!(rh, Err(PairError::Tampered));
            assert_eq!(rg, Err(PairError::Tampered));
            // Only one direction rewritten is caught too.
            let mut h = Pairing::new(&secret, Role::Host);
            let mut g = Pairing::new(&secret, Role::Guest);
            let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_M));
            assert_eq!(rh, Err(PairError::Tampered));
            assert_eq!(rg, Err(PairError::Tampered));
        }
    }

    #[test]
    fn a_link_pairs_without_spake_and_a_wrong_key_is_refused() {
        let link = LinkSecret::for_code(&Code::random());
        let mut h = Pairing::new(&Secret::Link(link.clone()), Role::Host);
        let mut g = Pairing::new(&Secret::Link(link.clone()), Role::Guest);
        let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
        assert_eq!((rh, rg), (Ok(()), Ok(())));
        let mut other = link.clone();
        other.key[0] ^= 1;
        let mut h = Pairing::new(&Secret::Link(link), Role::Host);
        let mut g = Pairing::new(&Secret::Link(other), Role::Guest);
        let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
        assert_eq!(
            (rh, rg),
            (Err(PairError::WrongSecret), Err(PairError::WrongSecret))
        );
    }

    #[test]
    fn a_host_pairs_with_a_guest_holding_either_the_code_or_the_link() {
        let code = Code::random();
        let link = LinkSecret::for_code(&code);
        for guest in [Secret::Code(code.clone()), Secret::Link(link.clone())] {
            let mut h = Pairing::host(&code, &link);
            let mut g = Pairing::new(&guest, Role::Guest);
            let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
            assert_eq!((rh, rg), (Ok(()), Ok(())), "{guest:?}");
            assert!(h.is_verified() && g.is_verified());
        }
        // A wrong code, or a link with another key, still fails both.
        let mut wrong = code.clone();
        wrong.nameplate = wrong.nameplate % NAMEPLATES + 1;
        let mut other = link.clone();
        other.key[3] ^= 0x40;
        for guest in [Secret::Code(wrong), Secret::Link(other)] {
            let mut h = Pairing::host(&code, &link);
            let mut g = Pairing::new(&guest, Role::Guest);
            let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
            assert_eq!(
                (rh, rg),
                (Err(PairError::WrongSecret), Err(PairError::WrongSecret))
            );
        }
    }

    #[test]
    fn a_reflected_message_does_not_pass_for_the_peer() {
        // A server that sends a side its own messages back learns nothing
        // and verifies nothing: the role labels differ.
        let link = Secret::Link(LinkSecret::for_code(&Code::random()));
        let mut h = Pairing::new(&link, Role::Host);
        h.set_descriptions(&sdp(FP_H), &sdp(FP_G)).unwrap();
        let mut mine = vec![];
        while let Some(m) = h.poll_output() {
            mine.push(m);
        }
        assert_eq!(
            mine.len(),
            1,
            "check only: the bind waits for the peer's check"
        );
        assert_eq!(h.handle(&mine[0]), Err(PairError::WrongSecret));
    }

    #[test]
    fn a_new_connection_needs_a_new_bind() {
        let code = Secret::Code(Code::random());
        let mut h = Pairing::new(&code, Role::Host);
        let mut g = Pairing::new(&code, Role::Guest);
        let (rh, rg) = run(&mut h, &mut g, (FP_H, FP_G), (FP_G, FP_H));
        assert_eq!((rh, rg), (Ok(()), Ok(())));
        assert!(h.is_verified());
        h.new_connection();
        g.new_connection();
        assert!(!h.is_verified());
        let (rh, rg) = run(&mut h, &mut g, ("01:02", "03:04"), ("03:04", "01:02"));
        assert_eq!((rh, rg), (Ok(()), Ok(())));
        assert!(h.is_verified() && g.is_verified());
    }

    #[test]
    fn messages_that_do_not_read_are_errors_not_panics() {
        let mut p = Pairing::new(&Secret::Code(Code::random()), Role::Host);
        for bad in [
            json!({}),
            json!({"pair": 1}),
            json!({"pair": {"v": 2}}),
            json!({"pair": {"v": 1, "spake": 5}}),
            json!({"pair": {"v": 1, "spake": "!!"}}),
            json!({"pair": {"v": 1, "spake": "AAAA"}}),
            json!({"pair": {"v": 1, "check": "%%"}}),
        ] {
            assert!(
                matches!(p.handle(&bad), Err(PairError::Malformed(_))),
                "{bad}"
            );
            p = Pairing::new(&Secret::Code(Code::random()), Role::Host);
        }
        assert_eq!(fingerprints("v=0\r\n"), Err(PairError::NoFingerprint));
    }

    #[test]
    fn codes_and_links_read_back_and_bad_ones_say_why() {
        for _ in 0..100 {
            let c = Code::random();
            assert_eq!(Code::parse(&c.to_string()).unwrap(), c);
            assert_eq!(
                Code::parse(&c.to_string().to_uppercase().replace('-', " ")).unwrap(),
                c
            );
            let l = LinkSecret::for_code(&c);
            let url = format!("https://h.example/drop#{}", l.fragment());
            assert_eq!(LinkSecret::parse(&url).unwrap(), l);
            assert_eq!(LinkSecret::parse(&l.fragment()).unwrap(), l);
            assert!(signal_room_ok(&l.room) && signal_room_ok(&c.room()));
        }
        for bad in [
            "",
            "7",
            "7-violet",
            "0-violet-harbor",
            "1000-violet-harbor",
            "7-violet-nope",
            "x-violet-harbor",
        ] {
            assert!(Code::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "https://h/drop",
            "#room=pair-a",
            "#room=x&key=AAAAAAAAAAAAAAAAAAAAAA",
            "#room=pair-a&key=AAAA",
        ] {
            assert!(LinkSecret::parse(bad).is_err(), "{bad}");
        }
    }

    /// The signaling server's room-name rule.
    fn signal_room_ok(r: &str) -> bool {
        (1..=64).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn fingerprints_are_normalized_and_sorted() {
        let a = "a=fingerprint:SHA-256 ab:cd\r\na=fingerprint:sha-1 01:02\r\n";
        let b = "a=fingerprint:sha-1 01:02\na=fingerprint:sha-256 AB:CD\n";
        assert_eq!(fingerprints(a).unwrap(), fingerprints(b).unwrap());
        assert_eq!(fingerprints(a).unwrap(), "sha-1 01:02,sha-256 AB:CD");
    }

    #[test]
    fn words_are_unique_in_their_first_three_letters() {
        let mut seen = std::collections::HashSet::new();
        for w in words::WORDS {
            assert!(seen.insert(&w[..3]), "{w}");
            assert!(w.bytes().all(|b| b.is_ascii_lowercase()));
        }
    }
}
