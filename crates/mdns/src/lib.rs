//! Resolve the random `.local` names that Chromium puts in its host ICE
//! candidates (`<uuid>.local`, used when the page has no camera/microphone
//! permission) to the addresses behind them, so the native peer can pair
//! with Chromium's host candidates.
//!
//! This crate owns mDNS one-shot resolution (RFC 6762 §5.1) and nothing
//! else: no responder, no service discovery, no continuous querying.
//!
//! - [`wire`]: sans-IO encoding of queries and parsing of responses.
//! - [`Resolver`] / [`resolve`]: the tokio side, sockets on every
//!   multicast-capable interface, retransmission, a cache and concurrent
//!   lookups of many names.
//!
//! What Chromium's responder (checked with Chromium 156 on Linux) actually
//! does, which shapes the resolver:
//! - it answers only queries with exactly one question, and ignores
//!   questions with the QU (unicast-response) bit;
//! - it always answers by multicast to 224.0.0.251:5353, even a query sent
//!   from an ephemeral port (no RFC 6762 §6.7 legacy unicast reply), so the
//!   resolver must listen on port 5353 in the group;
//! - with each answer it sends an NSEC record listing the types the name
//!   has, so a lookup can finish on the first answer;
//! - it multicasts a record at most once a second (RFC 6762 §6), deferring
//!   the answer to a query that comes sooner, so a name that another
//!   querier just asked about takes up to a second: use timeouts well above
//!   one second (the [`Resolver`] cache avoids asking twice).

mod iface;
mod resolver;
pub mod wire;

use std::time::Duration;

pub use resolver::{resolve, Config, Resolver};
pub use wire::{encode_query, parse_response, validate_name, QueryType};

/// Why a lookup, or parsing one packet, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name given to look up is not a `.local` name that fits in a DNS
    /// message ([`validate_name`]); nothing was sent.
    #[error("invalid mDNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as the caller passed it.
        name: String,
        /// Which rule it breaks, for the message.
        reason: &'static str,
    },
    /// A packet that is not valid DNS (truncated, bad label or compression
    /// pointer, wrong rdata length); the text says what. Only the [`wire`]
    /// parsers return this; the resolver drops such packets and keeps
    /// listening.
    #[error("malformed mDNS packet: {0}")]
    Malformed(&'static str),
    /// A query, or a response with a nonzero opcode or rcode (RFC 6762 §18
    /// says to ignore those).
    #[error("not a usable mDNS response")]
    NotResponse,
    /// No address for the name arrived before the lookup's timeout. The
    /// name may not exist, its host may be on another link, or multicast may
    /// be filtered.
    #[error("no mDNS answer for {name} within {timeout:?}")]
    Timeout {
        /// The name looked up, without a trailing dot.
        name: String,
        /// The timeout the caller gave.
        timeout: Duration,
    },
    /// A responder said the name exists but has neither A nor AAAA records.
    #[error("{name} has no address records")]
    NoAddress {
        /// The name looked up, without a trailing dot.
        name: String,
    },
    /// Building a [`Resolver`] could not open a single socket to send
    /// queries from. (Failing to listen on port 5353 is not an error: it is
    /// logged, and only multicast answers such as Chromium's are missed.)
    #[error("mDNS socket setup failed: {0}")]
    Io(#[from] std::io::Error),
}
