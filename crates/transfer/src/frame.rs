//! Frame codec: one data-channel message <-> one [`Frame`].
//!
//! Text messages are JSON objects tagged by `"type"`; binary messages are file
//! chunks. Parsing is strict about the fields a frame needs (so a broken peer
//! is reported, not guessed at) and ignores fields it does not know (so the
//! format can grow). Serializing produces byte-for-byte what `web/sdk/transfer.js`'s
//! `JSON.stringify` produces for the same frame: same key order, `mime`
//! omitted when there is none, lowercase hex.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Largest binary frame we send or promise to accept (docs/protocol.md).
pub const MAX_CHUNK: usize = 64 * 1024;
/// Chunk size a [`crate::Sender`] uses unless told otherwise.
pub const DEFAULT_CHUNK: usize = MAX_CHUNK;

/// A SHA-256 digest; on the wire, 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// SHA-256 of `data` in one go.
    pub fn of(data: &[u8]) -> Self {
        Digest(Sha256::digest(data).into())
    }

    /// Lowercase hex, as the browser writes it.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses 64 hex digits. Uppercase is accepted because the browser
    /// lowercases what it receives before comparing, so it tolerates it too.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Digest(out))
    }

    /// The digest of zero bytes.
    pub fn empty() -> Self {
        Self::of(&[])
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One message on the `chat` data channel.
///
/// `Chunk` borrows the message buffer, so parsing a binary frame copies
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `{"type":"text","text":...}`: a chat line.
    Text {
        /// The line as the user typed it.
        text: String,
    },
    /// `{"type":"file-start","id":...,"name":...,"size":...,"mime":...?,"path":...?}`:
    /// a file follows as binary frames, then a `file-end`.
    FileStart {
        /// Names this file in the later `file-end`, `file-ack` and
        /// `file-resume`; unique per sender, otherwise any string.
        id: String,
        /// The file name as the sender gave it, unsanitized: it is
        /// peer-controlled, so never use it as a path
        /// (see [`crate::sanitize_name`]).
        name: String,
        /// Exact number of bytes the binary frames will carry.
        size: u64,
        /// MIME type; `None` when the JSON had none, `null` or `""`.
        mime: Option<String>,
        /// Where the file sits in a folder being sent: a relative,
        /// `/`-separated path ending in the file's name
        /// (`photos/2024/a.jpg`); `None` for a lone file (absent, `null` or
        /// `""`). Peer-controlled: check it with
        /// [`crate::check_relative_path`] before it touches a disk.
        path: Option<String>,
    },
    /// `{"type":"file-end","id":...,"sha256":...}`: all chunks were sent.
    FileEnd {
        /// The `id` from this file's `file-start`.
        id: String,
        /// The sender's SHA-256 over all the file's bytes.
        sha256: Digest,
    },
    /// `{"type":"file-ack","id":...,"ok":...,"sha256":...}`: the receiver's
    /// verdict, sent back after `file-end`.
    FileAck {
        /// The `id` of the file being acknowledged.
        id: String,
        /// True only if both the byte count and the SHA-256 matched and the
        /// file was kept.
        ok: bool,
        /// What the *receiver* computed over the bytes it got, sent whether
        /// or not it matched.
        sha256: Digest,
    },
    /// `{"type":"file-resume","id":...,"offset":...,"sha256":...}`:
    /// switchboard extension, receiver to sender, in answer to a
    /// `file-start` for a file the receiver already holds a part of (from an
    /// earlier connection or an earlier run): "I hold the first `offset`
    /// bytes of `id`, and this is their SHA-256; if yours match, continue
    /// from there." The sender answers with [`Frame::FileSeek`] or, when it
    /// cannot or the prefix differs, not at all. See docs/protocol.md.
    FileResume {
        /// The `id` of the `file-start` being answered.
        id: String,
        /// Bytes of the file the receiver holds.
        offset: u64,
        /// SHA-256 of those `offset` bytes.
        sha256: Digest,
    },
    /// `{"type":"file-seek","id":...,"offset":...}`: switchboard extension,
    /// sender to receiver, accepting a `file-resume`: the binary frames
    /// after this one carry the file from byte `offset` on. Frames before it
    /// still carry the file from byte 0.
    FileSeek {
        /// The file in progress.
        id: String,
        /// Where the next binary frame starts in the file.
        offset: u64,
    },
    /// A binary frame: the next bytes of the file in progress.
    Chunk(&'a [u8]),
}

/// A message ready to hand to the data channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Send as a text (string) message.
    Text(String),
    /// Send as a binary message.
    Binary(&'a [u8]),
}

impl Outbound<'_> {
    /// Whether this goes out as a binary message (str0m's `binary` flag).
    pub fn is_binary(&self) -> bool {
        matches!(self, Outbound::Binary(_))
    }

    /// The message payload.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Outbound::Text(s) => s.as_bytes(),
            Outbound::Binary(b) => b,
        }
    }
}

/// Why a data-channel message is not a valid frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A text (non-binary) message whose bytes are not UTF-8.
    #[error("text frame is not valid UTF-8")]
    NotUtf8,
    /// A text message that does not parse as JSON at all.
    #[error("text frame is not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    /// Valid JSON, but an array, string, number, ... instead of an object.
    #[error("text frame is JSON but not an object")]
    NotAnObject,
    /// The `type` is a string this crate does not know. docs/protocol.md
    /// says receivers skip such frames, so callers should log this one and
    /// carry on rather than hang up.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// A field the frame type requires is absent.
    #[error("{frame} frame has no \"{field}\" field")]
    MissingField {
        /// The frame's `type` (`"chat"` when `type` itself is missing).
        frame: &'static str,
        /// The missing JSON key.
        field: &'static str,
    },
    /// A field is present but of the wrong JSON type (e.g. `size` as a
    /// string, or a negative or fractional number).
    #[error("{frame} frame field \"{field}\" must be {expected}")]
    WrongType {
        /// The frame's `type` (`"chat"` when it is `type` that is wrong).
        frame: &'static str,
        /// The offending JSON key.
        field: &'static str,
        /// What was required, for the message: `"a string"`, ...
        expected: &'static str,
    },
    /// A `sha256` field that is a string but not exactly 64 hex digits.
    #[error("{frame} frame field \"{field}\" is not 64 hex digits")]
    BadHex {
        /// The frame's `type`.
        frame: &'static str,
        /// The offending JSON key.
        field: &'static str,
    },
}

/// Parses one data-channel message. `binary` is the channel's binary flag
/// (str0m `ChannelData::binary`); binary messages are always chunks.
pub fn parse(binary: bool, data: &[u8]) -> Result<Frame<'_>, ProtocolError> {
    if binary {
        return Ok(Frame::Chunk(data));
    }
    let text = std::str::from_utf8(data).map_err(|_| ProtocolError::NotUtf8)?;
    let Value::Object(mut obj) = serde_json::from_str(text).map_err(ProtocolError::BadJson)? else {
        return Err(ProtocolError::NotAnObject);
    };
    let ty = match obj.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(ProtocolError::WrongType {
                frame: "chat",
                field: "type",
                expected: "a string",
            })
        }
        None => {
            return Err(ProtocolError::MissingField {
                frame: "chat",
                field: "type",
            })
        }
    };
    let mut f = Fields {
        obj: &mut obj,
        frame: "",
    };
    Ok(match ty.as_str() {
        "text" => {
            f.frame = "text";
            Frame::Text {
                text: f.string("text")?,
            }
        }
        "file-start" => {
            f.frame = "file-start";
            Frame::FileStart {
                id: f.string("id")?,
                name: f.string("name")?,
                size: f.u64("size")?,
                mime: f.opt_string("mime")?,
                path: f.opt_string("path")?,
            }
        }
        "file-end" => {
            f.frame = "file-end";
            Frame::FileEnd {
                id: f.string("id")?,
                sha256: f.digest("sha256")?,
            }
        }
        "file-ack" => {
            f.frame = "file-ack";
            Frame::FileAck {
                id: f.string("id")?,
                ok: f.bool("ok")?,
                sha256: f.digest("sha256")?,
            }
        }
        "file-resume" => {
            f.frame = "file-resume";
            Frame::FileResume {
                id: f.string("id")?,
                offset: f.u64("offset")?,
                sha256: f.digest("sha256")?,
            }
        }
        "file-seek" => {
            f.frame = "file-seek";
            Frame::FileSeek {
                id: f.string("id")?,
                offset: f.u64("offset")?,
            }
        }
        _ => return Err(ProtocolError::UnknownType(ty)),
    })
}

/// Field extraction with errors that name the frame and field.
struct Fields<'m> {
    obj: &'m mut Map<String, Value>,
    frame: &'static str,
}

impl Fields<'_> {
    fn take(&mut self, field: &'static str) -> Result<Value, ProtocolError> {
        self.obj.remove(field).ok_or(ProtocolError::MissingField {
            frame: self.frame,
            field,
        })
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> ProtocolError {
        ProtocolError::WrongType {
            frame: self.frame,
            field,
            expected,
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        match self.take(field)? {
            Value::String(s) => Ok(s),
            _ => Err(self.wrong(field, "a string")),
        }
    }

    /// Absent, `null` and `""` all mean "no value": the browser omits `mime`
    /// when `File.type` is empty.
    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        match self.obj.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong(field, "a string")),
        }
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.take(field)?
            .as_u64()
            .ok_or_else(|| self.wrong(field, "a non-negative integer"))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        self.take(field)?
            .as_bool()
            .ok_or_else(|| self.wrong(field, "true or false"))
    }

    fn digest(&mut self, field: &'static str) -> Result<Digest, ProtocolError> {
        let s = self.string(field)?;
        Digest::from_hex(&s).ok_or(ProtocolError::BadHex {
            frame: self.frame,
            field,
        })
    }
}

/// Serialization mirror of the text frames. A separate type because `Frame`
/// also has the binary `Chunk`, and because serde's internally tagged enums
/// write the tag first, which is where `JSON.stringify` puts `type` too.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Wire<'a> {
    Text {
        text: &'a str,
    },
    FileStart {
        id: &'a str,
        name: &'a str,
        size: u64,
        #[serde(skip_serializing_if = "no_mime")]
        mime: Option<&'a str>,
        #[serde(skip_serializing_if = "no_mime")]
        path: Option<&'a str>,
    },
    FileEnd {
        id: &'a str,
        sha256: &'a Digest,
    },
    FileAck {
        id: &'a str,
        ok: bool,
        sha256: &'a Digest,
    },
    FileResume {
        id: &'a str,
        offset: u64,
        sha256: &'a Digest,
    },
    FileSeek {
        id: &'a str,
        offset: u64,
    },
}

// web/sdk/transfer.js: `if (mime) frame.mime = mime;`
fn no_mime(m: &Option<&str>) -> bool {
    m.is_none_or(str::is_empty)
}

impl Wire<'_> {
    pub(crate) fn to_json(&self) -> String {
        // Only strings, integers and booleans: serializing cannot fail.
        serde_json::to_string(self).expect("frame serialization is infallible")
    }
}

impl<'a> Frame<'a> {
    /// The JSON text for a text frame, `None` for a `Chunk`.
    pub fn to_json(&self) -> Option<String> {
        let wire = match self {
            Frame::Text { text } => Wire::Text { text },
            Frame::FileStart {
                id,
                name,
                size,
                mime,
                path,
            } => Wire::FileStart {
                id,
                name,
                size: *size,
                mime: mime.as_deref(),
                path: path.as_deref(),
            },
            Frame::FileEnd { id, sha256 } => Wire::FileEnd { id, sha256 },
            Frame::FileAck { id, ok, sha256 } => Wire::FileAck {
                id,
                ok: *ok,
                sha256,
            },
            Frame::FileResume { id, offset, sha256 } => Wire::FileResume {
                id,
                offset: *offset,
                sha256,
            },
            Frame::FileSeek { id, offset } => Wire::FileSeek {
                id,
                offset: *offset,
            },
            Frame::Chunk(_) => return None,
        };
        Some(wire.to_json())
    }

    /// The message to put on the data channel for this frame. A chunk's
    /// bytes are borrowed from wherever the frame borrows them, not from the
    /// frame, so `receiver_result.ack().encode()` works on a temporary.
    pub fn encode(&self) -> Outbound<'a> {
        match *self {
            Frame::Chunk(b) => Outbound::Binary(b),
            _ => Outbound::Text(self.to_json().expect("non-chunk frames are text")),
        }
    }

    /// Whether this frame travels as a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Frame::Chunk(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_round_trip_and_case() {
        let d = Digest::of(b"abc");
        let hex = d.to_hex();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(&hex), Some(d));
        assert_eq!(Digest::from_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(Digest::from_hex(&hex[..63]), None);
        assert_eq!(Digest::from_hex(&format!("{}g", &hex[..63])), None);
        // Multi-byte UTF-8 of the right byte length must not slip through.
        assert_eq!(Digest::from_hex(&format!("é{}", &hex[..62])), None);
    }
}
