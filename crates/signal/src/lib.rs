//! Sans-IO core of the switchboard signaling server.
//!
//! - [`protocol`]: the JSON wire format (`docs/protocol.md`).
//! - [`hub`]: connections, limits, sessions and the protocol's rules, as a
//!   state machine that takes frames plus the current time and returns what
//!   to send and what to ask the store.
//! - [`store`]: rooms, members and per-session buffers behind the
//!   [`store::Store`] trait, in memory ([`store::MemoryStore`]) or shared
//!   through Redis (the `switchboard-cluster` crate).
//! - [`session`]: signed session tokens.
//! - [`auth`]: room access tokens (JWT), checked at `join`.
//!
//! Nothing here touches a socket or a clock; `switchboard serve` is the
//! tokio/axum driver around it.

pub mod auth;
pub mod hub;
pub mod protocol;
pub mod session;
pub mod store;

pub use auth::{Grant, RoomAuth, RoomClaims};
pub use hub::{
    close, ConnId, Gone, Hub, HubConfig, IceServers, Local, Note, Output, Refused, StaticIceServers,
};
pub use protocol::{ErrorCode, FrameKind, RelayKind};
pub use session::Tokens;
pub use store::{MemoryStore, NodeId, SessionId, Store};
