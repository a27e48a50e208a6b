//! Sans-IO core of the switchboard TURN server (RFC 8656).
//!
//! - [`policy`]: which peer addresses a relay may send to.
//! - [`auth`]: long-term credentials, static users and time-limited
//!   "TURN REST API" credentials.
//! - [`server`]: the allocation table and the message handling of one worker.
//! - [`client`]: a sans-IO TURN client for one allocation (relay candidates for a native peer).
//! - [`tcp`]: deadlines and per-source caps of TURN connections over TCP and TLS.
//! - [`binding`]: a Binding-only STUN responder for a second STUN address
//!   (NAT behaviour discovery).

pub mod auth;
pub mod binding;
pub mod client;
pub mod policy;
pub mod server;
pub mod tcp;
