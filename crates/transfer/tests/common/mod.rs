//! Helpers shared by the integration tests: a deterministic byte generator,
//! the "data channel" loop between a Sender and a Receiver, directory listing.
#![allow(dead_code)]

use std::path::Path;

use transfer::{parse, AckOutcome, FileInfo, Finished, Frame, Received, Receiver, Sender};

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        let n = (len - out.len()).min(8);
        out.extend_from_slice(&v[..n]);
    }
    out
}

pub fn info(id: &str, name: &str, size: u64) -> FileInfo {
    FileInfo {
        id: id.into(),
        name: name.into(),
        size,
        mime: None,
        path: None,
    }
}

/// Sorted names in `dir`, hidden ones included.
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One wire message as the data channel would carry it.
pub type Msg = (bool, Vec<u8>);

/// Runs a whole transfer through the codec: every message the sender makes
/// is serialized, "sent", parsed and fed to the receiver; the receiver's ack
/// goes back the same way. Returns the receiver's verdict, the sender's
/// verdict and the number of binary messages.
pub fn run(
    data: &[u8],
    name: &str,
    chunk: usize,
    rx: &mut Receiver,
) -> (Finished, AckOutcome, usize) {
    let mut tx = Sender::new(data, info("id-1", name, data.len() as u64))
        .with_chunk_size(chunk)
        .unwrap();
    let mut finished = None;
    let mut chunks = 0;
    while let Some(out) = tx.next_message().unwrap() {
        let (binary, bytes) = (out.is_binary(), out.as_bytes().to_vec());
        if binary {
            chunks += 1;
            assert!(bytes.len() <= chunk, "chunk of {} > {chunk}", bytes.len());
        }
        match rx.handle(&parse(binary, &bytes).unwrap()).unwrap() {
            Received::Finished(f) => finished = Some(f),
            Received::Started { .. } | Received::Progress { .. } => {}
            r @ (Received::Ignored | Received::Resumed { .. }) => {
                panic!("a plain transfer got {r:?}")
            }
        }
    }
    assert_eq!(tx.bytes_sent(), data.len() as u64);
    let finished = finished.expect("file-end produced a Finished");
    let ack = finished.ack().encode();
    assert!(!ack.is_binary());
    let Frame::FileAck { id, ok, sha256 } = parse(false, ack.as_bytes()).unwrap() else {
        panic!("not an ack")
    };
    let outcome = tx
        .handle_ack(&id, ok, &sha256)
        .unwrap()
        .expect("ack is for our id");
    (finished, outcome, chunks)
}
