//! `switchboard token`: mints one room access token and prints it, for
//! scripts and for application backends to copy (the claims are in
//! docs/protocol.md, "Access tokens").

use crate::config::{check_auth_secret, read_secret_file};
use anyhow::{bail, Context, Result};
use clap::Args;
use signal::{RoomAuth, RoomClaims};
use std::path::PathBuf;

/// `switchboard token`'s options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The server's --auth-secret.
    #[arg(
        long,
        env = "SWITCHBOARD_AUTH_SECRET",
        value_name = "SECRET",
        conflicts_with = "secret_file"
    )]
    pub secret: Option<String>,
    /// The secret, read from a file (trailing newline ignored).
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Room the token opens, or a prefix ending in * (`team-*`).
    #[arg(long)]
    pub room: String,
    /// The only peer id the token may join as (and the id of a join that
    /// asks for none).
    #[arg(long)]
    pub peer: Option<String>,
    /// How long the token is valid: seconds, or a number with s, m, h or d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Hand the holder no TURN credentials (`"turn": false`).
    #[arg(long)]
    pub no_turn: bool,
}

/// `90`, `90s`, `15m`, `1h`, `7d` as seconds; at least 1.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("the ttl must be at least 1 second".into()),
        Some(secs) => Ok(secs),
        None => Err(format!("{s:?} is too long")),
    }
}

/// The token these options describe, valid from `now` (seconds since the
/// Unix epoch).
pub fn mint(a: &TokenArgs, now: u64) -> Result<String> {
    let secret = match (&a.secret, &a.secret_file) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => read_secret_file(path, "--secret-file")?,
        (None, None) => bail!("give --secret or --secret-file (the server's --auth-secret)"),
    };
    check_auth_secret(&secret).context("--secret")?;
    let room_ok = match a.room.strip_suffix('*') {
        Some(prefix) => prefix.is_empty() || signal::protocol::valid_id(prefix),
        None => signal::protocol::valid_id(&a.room),
    };
    if !room_ok {
        bail!(
            "--room {:?} must be a room name ({}) or a prefix of one ending in *",
            a.room,
            signal::protocol::ID_RULE
        );
    }
    if let Some(p) = &a.peer {
        if !signal::protocol::valid_id(p) {
            bail!("--peer {p:?}: {}", signal::protocol::ID_RULE);
        }
    }
    let claims = RoomClaims {
        room: a.room.clone(),
        peer: a.peer.clone(),
        exp: now.saturating_add(a.ttl),
        nbf: None,
        iat: Some(now),
        turn: a.no_turn.then_some(false),
    };
    Ok(RoomAuth::new(secret.as_bytes()).mint(&claims))
}

/// Prints the token on stdout.
pub fn run(a: TokenArgs) -> Result<()> {
    println!("{}", mint(&a, turn::auth::unix_now())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(room: &str) -> TokenArgs {
        TokenArgs {
            secret: Some("0123456789abcdef".into()),
            secret_file: None,
            room: room.into(),
            peer: None,
            ttl: 3600,
            no_turn: false,
        }
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        for bad in ["", "h", "1x", "1.5h", "0", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn minted_tokens_pass_the_servers_check() {
        let now = 1_767_225_600;
        let auth = RoomAuth::new(b"0123456789abcdef");
        let t = mint(&args("team-*"), now).unwrap();
        let g = auth.check(Some(&t), "team-a", None, now).unwrap();
        assert!(g.turn);
        assert_eq!(g.exp, now + 3600);
        let t = mint(
            &TokenArgs {
                peer: Some("bob".into()),
                no_turn: true,
                ..args("r")
            },
            now,
        )
        .unwrap();
        let g = auth.check(Some(&t), "r", None, now).unwrap();
        assert_eq!((g.peer.as_deref(), g.turn), (Some("bob"), false));
        for bad in ["a b", "x*y", ""] {
            assert!(mint(&args(bad), now).is_err(), "{bad}");
        }
        assert!(mint(
            &TokenArgs {
                secret: Some("short".into()),
                ..args("r")
            },
            now
        )
        .is_err());
    }
}
