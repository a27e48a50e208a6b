//! Room access tokens: who may `join` which room, checked without I/O.
//!
//! With `serve --auth-secret`, every `join` must carry a JWT signed with
//! HS256 under that secret (in the frame's `token` field or as `?token=` on
//! the WebSocket URL). An application backend mints them; switchboard never
//! stores them. This module owns the claims, their rules and the error each
//! broken rule maps to (docs/protocol.md, "Access tokens"):
//!
//! - `room`: a room name, or a prefix ending in `*` (`team-*` opens every
//!   room starting with `team-`; `*` alone opens every room);
//! - `exp`: expiry, seconds since the Unix epoch, required;
//! - `nbf`: not before, optional;
//! - `peer`: the only id the holder may join as, optional;
//! - `turn`: `false` hands out no TURN credentials, optional (default
//!   true).
//!
//! [`RoomAuth::check`] is a pure function of the token, the join and the
//! time it is given, so the hub and its tests decide the clock.

use crate::protocol::{valid_id, ErrorCode, ProtocolError};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Default for [`RoomAuth::max_token_bytes`] (`--max-token-bytes`).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 4096;
/// Default for [`RoomAuth::leeway`] (`--auth-leeway`), seconds.
pub const DEFAULT_LEEWAY: u64 = 30;

/// Checks (and, for `switchboard token` and tests, mints) room access
/// tokens with one shared secret.
#[derive(Clone)]
pub struct RoomAuth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    /// Seconds of clock difference forgiven on `exp` and `nbf`, for
    /// backends whose clock is a little off ours.
    pub leeway: u64,
    /// Longest token looked at; a longer one is refused before any
    /// decoding, so a client cannot make the server chew on megabytes.
    pub max_token_bytes: usize,
}

impl std::fmt::Debug for RoomAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomAuth")
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

/// The claims of a token to mint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    /// A room name, or a prefix ending in `*`.
    pub room: String,
    /// The one peer id the token may join as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// `Some(false)`: no TURN credentials for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<bool>,
}

/// What a token read off the wire says. Times are `f64` because JWT's
/// NumericDate may have a fraction; everything is optional here so a
/// missing claim gets its own message rather than a serde error.
#[derive(Deserialize)]
struct WireClaims {
    room: Option<String>,
    peer: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    turn: Option<bool>,
}

/// What a valid token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The `room` claim: a name or a `*`-terminated prefix.
    pub room: String,
    /// The `peer` claim: the only id allowed, if any.
    pub peer: Option<String>,
    /// False when the token says `"turn": false`.
    pub turn: bool,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Grant {
    /// True when the `room` claim covers `room`.
    pub fn covers(&self, room: &str) -> bool {
        match self.room.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => self.room == room,
        }
    }
}

fn unauthorized(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unauthorized, message)
}

/// A `room` claim is a valid room name, or a prefix of one followed by `*`.
fn valid_room_claim(claim: &str) -> bool {
    match claim.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => valid_id(prefix),
        None => valid_id(claim),
    }
}

impl RoomAuth {
    /// Tokens signed with `secret`, with the default leeway and size limit.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is checked by `verify` against the `now` it is handed, not
        // the library's own clock read.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        RoomAuth {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            leeway: DEFAULT_LEEWAY,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    /// The token for `claims`, signed HS256.
    pub fn mint(&self, claims: &RoomClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 over plain claims cannot fail")
    }

    /// Checks the signature, the claims' shape and the time window of
    /// `token` at `now` (seconds since the Unix epoch); the room is not
    /// looked at (see [`RoomAuth::check`]).
    pub fn verify(&self, token: Option<&str>, now: u64) -> Result<Grant, ProtocolError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(unauthorized(
                "this server needs an access token: a \"token\" in join or ?token= on the URL",
            ));
        };
        if token.len() > self.max_token_bytes {
            return Err(unauthorized(format!(
                "token of {} bytes is longer than the limit of {} bytes",
                token.len(),
                self.max_token_bytes
            )));
        }
        let data = jsonwebtoken::decode::<WireClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                unauthorized(match e.kind() {
                    ErrorKind::InvalidSignature => "token signature does not match".to_string(),
                    ErrorKind::InvalidAlgorithm => "token must be signed with HS256".to_string(),
                    ErrorKind::Json(_) => format!("token claims are malformed: {e}"),
                    _ => format!("token is not a valid JWT: {e}"),
                })
            })?;
        let c = data.claims;
        let Some(exp) = c.exp.filter(|e| e.is_finite()) else {
            return Err(unauthorized("token has no \"exp\" claim"));
        };
        // Saturating float-to-int casts: a negative or huge exp cannot
        // overflow anything.
        let exp = exp as u64;
        if now >= exp.saturating_add(self.leeway) {
            return Err(ProtocolError::new(
                ErrorCode::TokenExpired,
                format!("token expired {} s ago", now - exp),
            ));
        }
        if let Some(nbf) = c.nbf.filter(|n| n.is_finite()) {
            let nbf = nbf as u64;
            if now.saturating_add(self.leeway) < nbf {
                return Err(unauthorized(format!(
                    "token is not valid for another {} s (nbf)",
                    nbf - now
                )));
            }
        }
        let Some(room) = c.room.filter(|r| valid_room_claim(r)) else {
            return Err(unauthorized(
                "token's \"room\" claim must be a room name or a prefix ending in *",
            ));
        };
        if c.peer.as_deref().is_some_and(|p| !valid_id(p)) {
            return Err(unauthorized(
                "token's \"peer\" claim is not a valid peer id",
            ));
        }
        Ok(Grant {
            room,
            peer: c.peer,
            turn: c.turn.unwrap_or(true),
            exp,
        })
    }

    /// Whether `token` lets a `join` of `room` as `peer` (the id asked for,
    /// if any) happen at `now`. On success the grant's `peer` is the id to
    /// use when the join asked for none.
    pub fn check(
        &self,
        token: Option<&str>,
        room: &str,
        peer: Option<&str>,
        now: u64,
    ) -> Result<Grant, ProtocolError> {
        let grant = self.verify(token, now)?;
        if !grant.covers(room) {
            return Err(unauthorized(format!(
                "token is for room {:?}, not {room:?}",
                grant.room
            )));
        }
        if let (Some(allowed), Some(asked)) = (&grant.peer, peer) {
            if allowed != asked {
                return Err(ProtocolError::new(
                    ErrorCode::PeerNotAllowed,
                    format!("token allows peer id {allowed:?} only, not {asked:?}"),
                ));
            }
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed clock of every test: 2026-01-01T00:00:00Z.
    const NOW: u64 = 1_767_225_600;

    fn auth() -> RoomAuth {
        let mut a = RoomAuth::new(b"test secret, 32 bytes long......");
        a.leeway = 0;
        a
    }

    fn claims(room: &str) -> RoomClaims {
        RoomClaims {
            room: room.into(),
            peer: None,
            exp: NOW + 60,
            nbf: None,
            iat: Some(NOW),
            turn: None,
        }
    }

    fn code(r: Result<Grant, ProtocolError>) -> ErrorCode {
        r.expect_err("refused").code
    }

    #[test]
    fn a_valid_token_opens_its_room() {
        let a = auth();
        let t = a.mint(&claims("lobby"));
        let g = a.check(Some(&t), "lobby", Some("anyone"), NOW).unwrap();
        assert_eq!(
            g,
            Grant {
                room: "lobby".into(),
                peer: None,
                turn: true,
                exp: NOW + 60
            }
        );
        assert_eq!(
            code(a.check(Some(&t), "lobby2", None, NOW)),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn no_token_or_a_foreign_one_is_unauthorized() {
        let a = auth();
        assert_eq!(
            code(a.check(None, "lobby", None, NOW)),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            code(a.check(Some(""), "lobby", None, NOW)),
            ErrorCode::Unauthorized
        );
        let other = RoomAuth::new(b"another secret, also 32 bytes...").mint(&claims("lobby"));
        let e = a.check(Some(&other), "lobby", None, NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("signature"), "{}", e.message);
        // Any flipped character of a good token is refused.
        let t = a.mint(&claims("lobby"));
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let Ok(s) = String::from_utf8(b) else {
                continue;
            };
            if s == t {
                continue;
            }
            assert!(a.check(Some(&s), "lobby", None, NOW).is_err(), "char {i}");
        }
        for junk in ["x", "a.b.c", "....", &"A".repeat(5000), "é.é.é"] {
            assert_eq!(
                code(a.check(Some(junk), "lobby", None, NOW)),
                ErrorCode::Unauthorized,
                "{junk}"
            );
        }
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let a = auth();
        // {"alg":"none","typ":"JWT"} . {"room":"lobby","exp":NOW+60} . ""
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let body = b64(&format!(r#"{{"room":"lobby","exp":{}}}"#, NOW + 60));
        let none = format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(
            code(a.check(Some(&none), "lobby", None, NOW)),
            ErrorCode::Unauthorized
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims("lobby"),
            &EncodingKey::from_secret(b"test secret, 32 bytes long......"),
        )
        .unwrap();
        let e = a.check(Some(&hs512), "lobby", None, NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("HS256"), "{}", e.message);
    }

    #[test]
    fn expiry_and_not_before_follow_the_given_clock() {
        let mut a = auth();
        let t = a.mint(&claims("lobby"));
        assert!(a.check(Some(&t), "lobby", None, NOW + 59).is_ok());
        let e = a.check(Some(&t), "lobby", None, NOW + 60).unwrap_err();
        assert_eq!(e.code, ErrorCode::TokenExpired);
        assert_eq!(
            code(a.check(Some(&t), "lobby", None, NOW + 10_000)),
            ErrorCode::TokenExpired
        );
        let later = a.mint(&RoomClaims {
            nbf: Some(NOW + 30),
            ..claims("lobby")
        });
        let e = a.check(Some(&later), "lobby", None, NOW).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("nbf"), "{}", e.message);
        assert!(a.check(Some(&later), "lobby", None, NOW + 30).is_ok());
        // Leeway forgives a skewed clock on both ends.
        a.leeway = 30;
        assert!(a.check(Some(&later), "lobby", None, NOW).is_ok());
        assert!(a.check(Some(&t), "lobby", None, NOW + 89).is_ok());
        assert_eq!(
            code(a.check(Some(&t), "lobby", None, NOW + 90)),
            ErrorCode::TokenExpired
        );
        // No exp at all: refused, not forever valid.
        let b = RoomAuth::new(b"k");
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"room":"lobby"}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let e = b.check(Some(&no_exp), "lobby", None, NOW).unwrap_err();
        assert!(e.message.contains("exp"), "{}", e.message);
    }

    #[test]
    fn prefix_rooms() {
        let a = auth();
        let t = a.mint(&claims("team-*"));
        assert!(a.check(Some(&t), "team-a", None, NOW).is_ok());
        assert!(a.check(Some(&t), "team-", None, NOW).is_ok());
        assert_eq!(
            code(a.check(Some(&t), "team", None, NOW)),
            ErrorCode::Unauthorized
        );
        assert_eq!(
            code(a.check(Some(&t), "other-team-a", None, NOW)),
            ErrorCode::Unauthorized
        );
        let any = a.mint(&claims("*"));
        assert!(a.check(Some(&any), "whatever", None, NOW).is_ok());
        // A `*` anywhere else, or a bad prefix, is not a claim we honour.
        for bad in ["te*m", "a b*", "**", ""] {
            let t = a.mint(&claims(bad));
            assert_eq!(
                code(a.check(Some(&t), "team", None, NOW)),
                ErrorCode::Unauthorized,
                "{bad}"
            );
        }
    }

    #[test]
    fn peer_claim_pins_the_id() {
        let a = auth();
        let t = a.mint(&RoomClaims {
            peer: Some("alice".into()),
            ..claims("lobby")
        });
        let g = a.check(Some(&t), "lobby", None, NOW).unwrap();
        assert_eq!(g.peer.as_deref(), Some("alice"));
        assert!(a.check(Some(&t), "lobby", Some("alice"), NOW).is_ok());
        assert_eq!(
            code(a.check(Some(&t), "lobby", Some("mallory"), NOW)),
            ErrorCode::PeerNotAllowed
        );
        let bad = a.mint(&RoomClaims {
            peer: Some("no/slashes".into()),
            ..claims("lobby")
        });
        assert_eq!(
            code(a.check(Some(&bad), "lobby", None, NOW)),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn turn_claim_and_malformed_claims() {
        let a = auth();
        let t = a.mint(&RoomClaims {
            turn: Some(false),
            ..claims("lobby")
        });
        assert!(!a.check(Some(&t), "lobby", None, NOW).unwrap().turn);
        let key = EncodingKey::from_secret(b"test secret, 32 bytes long......");
        let raw = |v: serde_json::Value| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &v, &key).unwrap()
        };
        // Fractional NumericDates are fine.
        let frac = raw(serde_json::json!({"room":"lobby","exp":(NOW + 60) as f64 + 0.5}));
        assert!(a.check(Some(&frac), "lobby", None, NOW).is_ok());
        for v in [
            serde_json::json!({"room":7,"exp":NOW + 60}),
            serde_json::json!({"room":"lobby","exp":"tomorrow"}),
            serde_json::json!({"room":"lobby","exp":NOW + 60,"turn":"no"}),
            serde_json::json!({"exp":NOW + 60}),
            serde_json::json!([1, 2]),
        ] {
            assert_eq!(
                code(a.check(Some(&raw(v.clone())), "lobby", None, NOW)),
                ErrorCode::Unauthorized,
                "{v}"
            );
        }
        let neg = raw(serde_json::json!({"room":"lobby","exp":-5}));
        assert_eq!(
            code(a.check(Some(&neg), "lobby", None, NOW)),
            ErrorCode::TokenExpired
        );
    }

    #[test]
    fn oversized_tokens_are_refused_unread() {
        let mut a = auth();
        let t = a.mint(&claims("lobby"));
        a.max_token_bytes = t.len() - 1;
        let e = a.check(Some(&t), "lobby", None, NOW).unwrap_err();
        assert!(e.message.contains("limit"), "{}", e.message);
        a.max_token_bytes = t.len();
        assert!(a.check(Some(&t), "lobby", None, NOW).is_ok());
    }
}
