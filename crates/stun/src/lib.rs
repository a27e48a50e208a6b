//! Sans-IO STUN (RFC 8489) and TURN (RFC 8656) message codec for
//! switchboard, with the ICE (RFC 8445) attributes and TURN ChannelData
//! framing. No sockets, no clocks, no async: bytes in, bytes out, so the
//! same code serves the TURN server, the TURN client and the ICE agent.
//!
//! Module map (each module's docs say what it owns):
//! - [`header`]: class/method packing, magic cookie, transaction id, [`is_stun`].
//! - [`message`]: [`Message`], the zero-copy validated view over a buffer.
//! - [`attr`]: attribute types, the [`Attribute`]/[`EncodeAttribute`] traits
//!   and every typed attribute codec.
//! - [`integrity`]: key derivation and MESSAGE-INTEGRITY(-SHA256)/FINGERPRINT.
//! - [`writer`]: [`MessageWriter`], the encoder over a caller's buffer.
//! - [`channel_data`]: [`ChannelData`] parse/encode.
//! - [`code`]: names for the ERROR-CODE values.
//! - [`demux`]: RFC 7983 first-byte classification and stream frame lengths.
//! - [`stream`]: [`Framer`], reassembly of frames from a TCP/TLS byte stream.
//!
//! Parsing never panics: all input-derived indexing is checked, and every
//! malformed input is reported as an [`Error`] variant.
//!
//! ```
//! use stun::attr::{Nonce, Realm, Username, XorMappedAddress};
//! use stun::{long_term_key, Message, MessageWriter, Method};
//!
//! # fn build_request() -> Vec<u8> {
//! #     let mut b = Vec::new();
//! #     let mut w = MessageWriter::new(&mut b, stun::MessageType::BINDING_REQUEST, stun::TransactionId([7; 12]));
//! #     w.add::<Username>("alice").unwrap().add::<Realm>("example.org").unwrap().add::<Nonce>("n0nce").unwrap();
//! #     w.add_message_integrity(&long_term_key("alice", "example.org", "secret")).unwrap();
//! #     w.finish();
//! #     b
//! # }
//! # let datagram = build_request();
//! let req = Message::parse(&datagram)?;
//! assert_eq!(req.method(), Method::BINDING);
//! let user = req.require::<Username>()?;
//! let key = long_term_key(user, req.require::<Realm>()?, "secret");
//! req.verify_message_integrity(&key)?;
//!
//! let mut out = Vec::with_capacity(128);
//! let mut resp = MessageWriter::success_response(&mut out, &req);
//! resp.add::<XorMappedAddress>("203.0.113.7:50000".parse().unwrap())?;
//! resp.add_message_integrity(&key)?.add_fingerprint()?;
//! let n = resp.finish();
//! assert!(Message::parse(&out[..n])?.verify_fingerprint().is_ok());
//! # Ok::<(), stun::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attr;
pub mod channel_data;
pub mod code;
pub mod demux;
mod error;
pub mod header;
pub mod integrity;
pub mod message;
pub mod stream;
pub mod writer;

pub use attr::{AttrType, Attribute, EncodeAttribute, RawAttribute};
pub use channel_data::ChannelData;
pub use demux::{classify, frame_len, PacketKind, StreamFrame};
pub use error::Error;
pub use header::{is_stun, Class, MessageType, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE};
pub use integrity::{
    long_term_key, long_term_key_with, short_term_key, userhash, IntegrityAlg, Key, PasswordAlg,
};
pub use message::Message;
pub use stream::{Frame, Framer, MAX_STREAM_FRAME};
pub use writer::MessageWriter;
