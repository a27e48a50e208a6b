//! Session tokens: what a client shows to take its session back.
//!
//! A token names the session, its room and its peer id, and carries an
//! HMAC-SHA256 over them with a secret every node of a cluster shares. Any
//! node can therefore refuse a forged or altered token without asking the
//! store, and a token only ever opens the one session it names. The session
//! id is 128 random bits, so tokens cannot be guessed either.
//!
//! Wire form (opaque to clients): base64url, no padding, of
//! `sid (16 bytes) | mac (16 bytes) | room | '/' | peer`, plus `/n` when the
//! session may not have TURN credentials (it joined with an access token
//! saying `"turn": false`), so a resume hands out what the join did. `/`
//! cannot occur in a room name or a peer id, so the split is unambiguous,
//! and tokens minted before the flag existed still read the same.

use crate::protocol::valid_id;
use crate::store::SessionId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const MAC_LEN: usize = 16;
/// Longest token text: 16 + 16 + 64 + 1 + 64 + 2 bytes, base64url.
pub const MAX_TOKEN_LEN: usize = 218;
/// Marks a session without TURN.
const NO_TURN: &str = "n";

/// Mints and checks tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The session.
    pub sid: SessionId,
    /// Its room.
    pub room: String,
    /// Its peer id.
    pub peer: String,
    /// False: hand the session no TURN credentials.
    pub turn: bool,
}

impl Tokens {
    /// Tokens signed with `secret` (any length; 32 random bytes is plenty).
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Tokens {
            secret: secret.into(),
        }
    }

    fn mac(&self, sid: SessionId, room: &str, peer: &str, turn: bool) -> [u8; MAC_LEN] {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes any key length");
        m.update(&sid.0.to_be_bytes());
        m.update(room.as_bytes());
        m.update(b"/");
        m.update(peer.as_bytes());
        if !turn {
            m.update(b"/");
            m.update(NO_TURN.as_bytes());
        }
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The token for `sid` as `peer` in `room`; `turn` false marks a
    /// session that gets no TURN credentials.
    pub fn mint(&self, sid: SessionId, room: &str, peer: &str, turn: bool) -> String {
        let mut raw = Vec::with_capacity(32 + room.len() + 1 + peer.len() + 2);
        raw.extend_from_slice(&sid.0.to_be_bytes());
        raw.extend_from_slice(&self.mac(sid, room, peer, turn));
        raw.extend_from_slice(room.as_bytes());
        raw.push(b'/');
        raw.extend_from_slice(peer.as_bytes());
        if !turn {
            raw.push(b'/');
            raw.extend_from_slice(NO_TURN.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// What `token` names, if this secret signed it.
    pub fn verify(&self, token: &str) -> Option<Claim> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < 32 + 3 {
            return None;
        }
        let sid = SessionId(u128::from_be_bytes(raw[..16].try_into().ok()?));
        let mac: [u8; MAC_LEN] = raw[16..32].try_into().ok()?;
        let rest = std::str::from_utf8(&raw[32..]).ok()?;
        let (room, peer) = rest.split_once('/')?;
        let (peer, turn) = match peer.split_once('/') {
            None => (peer, true),
            Some((peer, NO_TURN)) => (peer, false),
            Some(_) => return None,
        };
        if !valid_id(room) || !valid_id(peer) {
            return None;
        }
        // Constant time: the MAC comparison must not leak how much matched.
        let want = self.mac(sid, room, peer, turn);
        let diff = want
            .iter()
            .zip(mac.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then(|| Claim {
            sid,
            room: room.to_string(),
            peer: peer.to_string(),
            turn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_only_their_own_session() {
        let t = Tokens::new(b"secret".to_vec());
        let sid = SessionId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let tok = t.mint(sid, "room-1", "alice", true);
        assert!(tok.len() <= MAX_TOKEN_LEN);
        assert_eq!(
            t.verify(&tok),
            Some(Claim {
                sid,
                room: "room-1".into(),
                peer: "alice".into(),
                turn: true,
            })
        );
        // Another secret (another cluster) does not accept it.
        assert_eq!(Tokens::new(b"other".to_vec()).verify(&tok), None);
        // Any altered byte is refused: sid, mac, room or peer.
        let raw = URL_SAFE_NO_PAD.decode(&tok).unwrap();
        for i in 0..raw.len() {
            let mut r = raw.clone();
            r[i] ^= 1;
            assert_eq!(t.verify(&URL_SAFE_NO_PAD.encode(&r)), None, "byte {i}");
        }
        // A valid MAC cannot be moved to another room or peer.
        let mut moved = raw[..32].to_vec();
        moved.extend_from_slice(b"room-2/alice");
        assert_eq!(t.verify(&URL_SAFE_NO_PAD.encode(&moved)), None);
        for junk in ["", "x", "!!!!", &"A".repeat(400), "AAAA.BBBB"] {
            assert_eq!(t.verify(junk), None, "{junk}");
        }
        let longest = t.mint(sid, &"r".repeat(64), &"p".repeat(64), false);
        assert!(longest.len() <= MAX_TOKEN_LEN, "{}", longest.len());
        assert!(t.verify(&longest).is_some());
    }

    #[test]
    fn the_no_turn_mark_is_signed() {
        let t = Tokens::new(b"secret".to_vec());
        let sid = SessionId(42);
        let tok = t.mint(sid, "r", "p", false);
        assert_eq!(t.verify(&tok).map(|c| c.turn), Some(false));
        // Cutting the mark off (to get TURN back) breaks the MAC.
        let raw = URL_SAFE_NO_PAD.decode(&tok).unwrap();
        let cut = URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 2]);
        assert_eq!(t.verify(&cut), None);
        // And it cannot be added to a token with TURN either.
        let mut added = URL_SAFE_NO_PAD.decode(t.mint(sid, "r", "p", true)).unwrap();
        added.extend_from_slice(b"/n");
        assert_eq!(t.verify(&URL_SAFE_NO_PAD.encode(&added)), None);
        // Another third part is not a token.
        let mut other = raw[..raw.len() - 2].to_vec();
        other.extend_from_slice(b"/x");
        assert_eq!(t.verify(&URL_SAFE_NO_PAD.encode(&other)), None);
    }
}
