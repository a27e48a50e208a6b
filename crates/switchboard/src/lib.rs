//! switchboard as a library: everything the `switchboard` binary runs, so
//! tests and other programs can start it in process.
//!
//! [`serve::start`] runs the signaling server, STUN/TURN, demo pages and
//! metrics on a listener the caller has already bound, and hands back a
//! [`serve::Running`] with a clean shutdown. [`config`] turns flags, the
//! environment and a TOML file into the [`config::ServeConfig`] it takes.
//! [`token`] mints room access tokens (`switchboard token`); [`doctor`]
//! checks a deployment from the outside (`switchboard doctor URL`).
//! The peer commands ([`p2p`]) and load generators ([`bench`](mod@bench)) are here too;
//! `main.rs` only parses the command line and sets up the process.

pub mod bench;
pub mod config;
pub mod doctor;
pub mod listen;
mod metrics;
pub mod p2p;
mod relay;
pub mod serve;
mod stun_alt;
pub mod token;
mod web;
