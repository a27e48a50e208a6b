//! Feeds arbitrary bytes to every parser of switchboard-stun (STUN message
//! view, every typed attribute codec, integrity/fingerprint checks,
//! ChannelData datagram and stream framing, the stream Framer, demux
//! helpers) and asserts the parse → encode → parse invariants. The body is shared with the stable
//! test suite so both exercise exactly the same surface.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/exercise.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    exercise::exercise(data);
});
