//! Long-term credentials for TURN (RFC 8489 §9.2): who may allocate, and
//! the key their MESSAGE-INTEGRITY is checked with.
//!
//! Two sources, checked in this order:
//! - static users (`--turn-user NAME:PASSWORD`);
//! - time-limited credentials from a shared secret, the "TURN REST API"
//!   convention coturn calls `use-auth-secret`: the username is
//!   `EXPIRY_UNIX[:ID]` and the password `base64(HMAC-SHA1(secret, username))`.
//!   The signaling server mints these for browsers, so no password is ever
//!   shipped to a page.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::collections::HashMap;
pub use stun::integrity::long_term_key;
use stun::integrity::Key;

/// Why [`Credentials::key`] has no key for a username. The server answers
/// either with 401 Unauthorized and counts an auth failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a static user, and not a time-limited name either: no shared
    /// secret is set, or the name does not start with a decimal expiry.
    /// (A time-limited name with a wrong password is not caught here: its
    /// key is derived anyway and MESSAGE-INTEGRITY fails to verify.)
    #[error("unknown user")]
    UnknownUser,
    /// A time-limited credential whose expiry is not after `now`.
    #[error("credential expired at {expiry} (now {now})")]
    Expired {
        /// The expiry from the username, in Unix seconds.
        expiry: u64,
        /// The time it was checked against, in Unix seconds.
        now: u64,
    },
}

/// Wall-clock seconds since the Unix epoch: the `unix` time credentials
/// and nonces are checked against. The cores never read the clock; this is
/// for their drivers to pass in. A clock before 1970 reads as 0.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The REST-API password for `username`: standard (padded) base64 of
/// HMAC-SHA1 keyed with `secret`. This is the password, not the long-term
/// key; that is still MD5 of `username:realm:password`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints a credential valid for `ttl_secs` from `now_unix`: (username, password).
///
/// The username is `EXPIRY:id` with `EXPIRY = now_unix + ttl_secs` in Unix
/// seconds (saturating). `id` is a free-form label the server does not
/// check; it keeps names minted in the same second apart. Accepted until
/// `EXPIRY` by any server holding the same `secret` and realm.
pub fn rest_credential(secret: &[u8], id: &str, ttl_secs: u64, now_unix: u64) -> (String, String) {
    let username = format!("{}:{id}", now_unix.saturating_add(ttl_secs));
    let password = rest_password(secret, &username);
    (username, password)
}

/// Every credential the server accepts, under one realm. Built once at
/// start-up and shared by all workers.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    users: HashMap<String, Key>,
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    // Never print keys or the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secret", &self.secret.is_some())
            .finish()
    }
}

impl Credentials {
    /// No users and no secret yet, so every request is refused with 401.
    /// `realm` is the REALM sent in 401 and 438 answers and mixed into
    /// every long-term key, so it must be fixed before users are added.
    pub fn new(realm: impl Into<String>) -> Self {
        Credentials {
            realm: realm.into(),
            users: HashMap::new(),
            secret: None,
        }
    }

    /// The realm given to [`Self::new`].
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Adds a static user (`--turn-user`), replacing one of the same name.
    /// Only the derived key is kept, not the password. A static user wins
    /// over a time-limited credential with the same name.
    pub fn add_user(&mut self, name: &str, password: &str) {
        let key = long_term_key(name, &self.realm, password);
        self.users.insert(name.to_string(), key);
    }

    /// Accepts time-limited credentials minted with `secret` (see
    /// [`rest_credential`]), replacing any earlier secret.
    pub fn set_secret(&mut self, secret: impl Into<Vec<u8>>) {
        self.secret = Some(secret.into());
    }

    /// The shared secret, if set: what the signaling server mints
    /// browsers' credentials with.
    pub fn secret(&self) -> Option<&[u8]> {
        self.secret.as_deref()
    }

    /// The long-term key for `username`, or why there is none.
    ///
    /// Static users are looked up first; otherwise, with a secret set, the
    /// text before the first `:` (or the whole name, as coturn also
    /// accepts) must be an expiry in Unix seconds later than `now_unix`.
    /// This does not authenticate anyone: the caller verifies the request's
    /// MESSAGE-INTEGRITY with the key.
    pub fn key(&self, username: &str, now_unix: u64) -> Result<Key, AuthError> {
        if let Some(k) = self.users.get(username) {
            return Ok(*k);
        }
        let Some(secret) = &self.secret else {
            return Err(AuthError::UnknownUser);
        };
        let expiry_text = username.split_once(':').map_or(username, |(e, _)| e);
        let expiry: u64 = expiry_text.parse().map_err(|_| AuthError::UnknownUser)?;
        if expiry <= now_unix {
            return Err(AuthError::Expired {
                expiry,
                now: now_unix,
            });
        }
        let password = rest_password(secret, username);
        Ok(long_term_key(username, &self.realm, &password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_a_known_value() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
        assert_eq!(
            rest_password(b"s3cret", "1700000000:alice"),
            "TtElzSjT0GdnTQ9xdcRNxx96yQs="
        );
    }

    #[test]
    fn static_users() {
        let mut c = Credentials::new("example.org");
        c.add_user("alice", "pw");
        assert_eq!(
            c.key("alice", 0),
            Ok(long_term_key("alice", "example.org", "pw"))
        );
        assert_eq!(c.key("bob", 0), Err(AuthError::UnknownUser));
        // Without a secret, timestamp-shaped names are just unknown users.
        assert_eq!(c.key("9999999999:x", 0), Err(AuthError::UnknownUser));
    }

    #[test]
    fn time_limited_credentials() {
        let mut c = Credentials::new("r");
        c.set_secret("s3cret");
        let (user, pass) = rest_credential(b"s3cret", "peer1", 3600, 1_000_000);
        assert_eq!(user, "1003600:peer1");
        assert_eq!(
            c.key(&user, 1_000_000),
            Ok(long_term_key(&user, "r", &pass))
        );
        assert_eq!(
            c.key(&user, 1_003_600),
            Err(AuthError::Expired {
                expiry: 1_003_600,
                now: 1_003_600
            })
        );
        // coturn also accepts a bare expiry.
        assert!(c.key("1003600", 1_000_000).is_ok());
        assert_eq!(c.key("soon:x", 0), Err(AuthError::UnknownUser));
        // A key derived from the wrong secret does not match.
        let (_, other) = rest_credential(b"other", "peer1", 3600, 1_000_000);
        assert_ne!(
            c.key(&user, 1_000_000),
            Ok(long_term_key(&user, "r", &other))
        );
    }
}
