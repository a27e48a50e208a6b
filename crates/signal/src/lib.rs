//! Sans-IO core of the switchboard signaling server.
//!
//! - [`protocol`]: the JSON wire format of protocol v1 (`docs/protocol.md`).
//! - [`hub`]: rooms, peers and per-connection limits as a state machine that
//!   takes frames plus the current time and returns what to send.
//!
//! Nothing here touches a socket or a clock; `switchboard serve` is the
//! tokio/axum driver around it.

pub mod hub;
pub mod protocol;

pub use hub::{close, ConnId, Hub, HubConfig, IceServers, Output, Refused, StaticIceServers};
pub use protocol::{ErrorCode, FrameKind, RelayKind};
