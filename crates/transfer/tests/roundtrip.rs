//! Sender -> codec -> Receiver -> ack -> Sender, for the sizes that matter,
//! plus interleaved chat text and resume after a dropped connection.

mod common;

use std::collections::VecDeque;
use std::io::Cursor;

use common::{bytes, info, list, run, Msg};
use transfer::{
    parse, AckOutcome, Digest, Frame, Outbound, Received, Receiver, ResumeOutcome, Sender,
    TransferError, DEFAULT_CHUNK, MAX_CHUNK,
};

fn check_round_trip(len: usize, chunk: usize, expect_chunks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(len as u64 + 7, len);
    let mut rx = Receiver::new(dir.path());
    let (fin, outcome, chunks) = run(&data, "payload.bin", chunk, &mut rx);
    assert_eq!(outcome, AckOutcome::Verified, "len {len}");
    assert!(fin.ok(), "len {len}: {:?}", fin.result);
    assert_eq!(chunks, expect_chunks, "len {len} chunk {chunk}");
    assert_eq!(fin.actual, Digest::of(&data));
    assert_eq!(fin.received, len as u64);
    let path = fin.result.as_ref().unwrap();
    assert_eq!(path, &dir.path().join("payload.bin"));
    assert_eq!(std::fs::read(path).unwrap(), data);
    // Only the final file: the temporary one is gone.
    assert_eq!(list(dir.path()), ["payload.bin"]);
    assert!(rx.in_progress().is_none());
}

#[test]
fn empty_file() {
    check_round_trip(0, DEFAULT_CHUNK, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let (fin, _, _) = run(&[], "e", DEFAULT_CHUNK, &mut rx);
    assert_eq!(
        fin.actual.to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn one_byte() {
    check_round_trip(1, DEFAULT_CHUNK, 1);
}

#[test]
fn exactly_64_kib_is_one_chunk() {
    check_round_trip(64 * 1024, DEFAULT_CHUNK, 1);
    check_round_trip(64 * 1024 + 1, DEFAULT_CHUNK, 2);
    // The browser's 16 KiB chunks.
    check_round_trip(64 * 1024, 16 * 1024, 4);
}

#[test]
fn five_megabytes_random() {
    let len = 5 * 1000 * 1000;
    check_round_trip(len, DEFAULT_CHUNK, len.div_ceil(DEFAULT_CHUNK));
    check_round_trip(len, 16 * 1024, len.div_ceil(16 * 1024));
}

#[test]
fn odd_chunk_sizes_and_limits() {
    check_round_trip(1000, 7, 143);
    check_round_trip(3, 1, 3);
    assert!(matches!(
        Sender::new(&[][..], info("i", "n", 0)).with_chunk_size(0),
        Err(TransferError::BadChunkSize(0))
    ));
    assert!(Sender::new(&[][..], info("i", "n", 0))
        .with_chunk_size(MAX_CHUNK + 1)
        .is_err());
    assert!(Sender::new(&[][..], info("i", "n", 0))
        .with_chunk_size(MAX_CHUNK)
        .is_ok());
}

/// A reader that hands out a few bytes at a time, like a pipe.
struct Trickle<'a>(&'a [u8]);
impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(3);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn short_reads_still_fill_whole_chunks() {
    let data = bytes(9, 100);
    let mut tx = Sender::new(Trickle(&data), info("t", "t", 100))
        .with_chunk_size(40)
        .unwrap();
    let mut lens = vec![];
    while let Some(m) = tx.next_message().unwrap() {
        if let Outbound::Binary(b) = m {
            lens.push(b.len());
        }
    }
    assert_eq!(lens, [40, 40, 20]);
    assert_eq!(tx.digest(), Some(Digest::of(&data)));
}

#[test]
fn source_shorter_than_announced_is_an_error() {
    let data = [1u8; 10];
    let mut tx = Sender::new(&data[..], info("s", "s", 20));
    assert!(tx.next_message().unwrap().is_some()); // file-start
    match tx.next_message() {
        Err(TransferError::SourceEnded {
            expected: 20,
            got: 10,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn sender_messages_in_order_and_ack_handling() {
    let data = bytes(1, 10);
    let mut tx = Sender::new(&data[..], info("abc", "x.txt", 10));
    let Some(Outbound::Text(start)) = tx.next_message().unwrap() else {
        panic!()
    };
    assert_eq!(
        start,
        r#"{"type":"file-start","id":"abc","name":"x.txt","size":10}"#
    );
    // An ack before file-end is a protocol error, not a verdict.
    assert!(matches!(
        tx.handle_ack("abc", true, &Digest::of(&data)),
        Err(TransferError::UnexpectedAck { .. })
    ));
    let Some(Outbound::Binary(b)) = tx.next_message().unwrap() else {
        panic!()
    };
    assert_eq!(b, &data[..]);
    let Some(Outbound::Text(end)) = tx.next_message().unwrap() else {
        panic!()
    };
    assert_eq!(
        end,
        format!(
            r#"{{"type":"file-end","id":"abc","sha256":"{}"}}"#,
            Digest::of(&data)
        )
    );
    assert!(tx.next_message().unwrap().is_none());
    assert!(tx.is_awaiting_ack());
    // Acks for other files are not ours.
    assert_eq!(
        tx.handle_ack("other", true, &Digest::of(&data)).unwrap(),
        None
    );
    assert!(tx.is_awaiting_ack());
    // A peer that says ok with a different hash does not get to verify.
    let wrong = Digest::of(b"nope");
    let out = tx.handle_ack("abc", true, &wrong).unwrap().unwrap();
    assert_eq!(
        out,
        AckOutcome::Mismatch {
            ours: Digest::of(&data),
            theirs: wrong,
            peer_ok: true
        }
    );
    assert_eq!(tx.outcome(), Some(&out));
    assert!(matches!(
        tx.handle_ack("abc", true, &wrong),
        Err(TransferError::UnexpectedAck { .. })
    ));
}

#[test]
fn negative_ack_is_mismatch() {
    let data = bytes(2, 10);
    let mut tx = Sender::new(&data[..], info("n", "n", 10));
    while tx.next_message().unwrap().is_some() {}
    let out = tx
        .handle_ack("n", false, &Digest::of(&data))
        .unwrap()
        .unwrap();
    assert!(!out.is_verified());
}

/// One side of a chat: sends a file and chat lines, receives the other
/// side's file and lines, all over one ordered channel per direction.
struct Side {
    tx: Sender<Cursor<Vec<u8>>>,
    rx: Receiver,
    texts: Vec<String>,
    /// Texts that arrived while a file from the other side was half-received.
    texts_mid_file: usize,
    outcome: Option<AckOutcome>,
    saved: Option<std::path::PathBuf>,
}

impl Side {
    fn deliver(&mut self, (binary, data): Msg, reply: &mut VecDeque<Msg>) {
        match parse(binary, &data).unwrap() {
            Frame::Text { text } => {
                self.texts_mid_file +=
                    usize::from(self.rx.in_progress().is_some_and(|p| p.received > 0));
                self.texts.push(text);
            }
            Frame::FileAck { id, ok, sha256 } => {
                self.outcome = self.tx.handle_ack(&id, ok, &sha256).unwrap();
            }
            frame => {
                if let Received::Finished(f) = self.rx.handle(&frame).unwrap() {
                    let ack = f.ack();
                    reply.push_back((false, ack.encode().as_bytes().to_vec()));
                    self.saved = Some(f.result.unwrap());
                }
            }
        }
    }
}

#[test]
fn interleaved_text_both_directions() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let file_a = bytes(10, 300_000);
    let file_b = bytes(11, 123_457);
    let mk = |data: &Vec<u8>, id: &str, dir: &std::path::Path| Side {
        tx: Sender::new(
            Cursor::new(data.clone()),
            info(id, &format!("{id}.bin"), data.len() as u64),
        )
        .with_chunk_size(16 * 1024)
        .unwrap(),
        rx: Receiver::new(dir),
        texts: vec![],
        texts_mid_file: 0,
        outcome: None,
        saved: None,
    };
    let mut a = mk(&file_a, "from-a", dir_a.path());
    let mut b = mk(&file_b, "from-b", dir_b.path());
    let (mut a_to_b, mut b_to_a) = (VecDeque::<Msg>::new(), VecDeque::<Msg>::new());
    let text = |s: String| (false, Frame::Text { text: s }.encode().as_bytes().to_vec());

    for round in 0.. {
        // Keep chatting for 60 rounds even if both files finish sooner.
        let mut busy = round < 60;
        if let Some(m) = a.tx.next_message().unwrap() {
            a_to_b.push_back((m.is_binary(), m.as_bytes().to_vec()));
            busy = true;
        }
        if round % 3 == 0 && round < 60 {
            a_to_b.push_back(text(format!("a{round}")));
        }
        if let Some(m) = b.tx.next_message().unwrap() {
            b_to_a.push_back((m.is_binary(), m.as_bytes().to_vec()));
            busy = true;
        }
        if round % 2 == 0 && round < 60 {
            b_to_a.push_back(text(format!("b{round}")));
        }
        // Deliver part of what is queued so the streams really interleave.
        for _ in 0..2 {
            if let Some(m) = a_to_b.pop_front() {
                b.deliver(m, &mut b_to_a);
                busy = true;
            }
            if let Some(m) = b_to_a.pop_front() {
                a.deliver(m, &mut a_to_b);
                busy = true;
            }
        }
        if !busy {
            break;
        }
    }
    assert_eq!(a.outcome, Some(AckOutcome::Verified));
    assert_eq!(b.outcome, Some(AckOutcome::Verified));
    assert_eq!(std::fs::read(b.saved.unwrap()).unwrap(), file_a);
    assert_eq!(std::fs::read(a.saved.unwrap()).unwrap(), file_b);
    let want_a: Vec<String> = (0..60).step_by(3).map(|r| format!("a{r}")).collect();
    let want_b: Vec<String> = (0..60).step_by(2).map(|r| format!("b{r}")).collect();
    assert!(
        a.texts_mid_file > 3 && b.texts_mid_file > 3,
        "{} {}",
        a.texts_mid_file,
        b.texts_mid_file
    );
    assert_eq!(b.texts, want_a);
    assert_eq!(a.texts, want_b);
}

/// Delivers every message `tx` produces until `stop` says so, returning the
/// last `Received`.
fn pump(
    tx: &mut Sender<Cursor<Vec<u8>>>,
    rx: &mut Receiver,
    mut stop: impl FnMut(&Received) -> bool,
) -> Option<Received> {
    while let Some(m) = tx.next_message().unwrap() {
        let r = rx
            .handle(&parse(m.is_binary(), m.as_bytes()).unwrap())
            .unwrap();
        if stop(&r) {
            return Some(r);
        }
    }
    None
}

fn resume_frame(r: &Received) -> (u64, Digest) {
    let Received::Started {
        resume: Some(Frame::FileResume { offset, sha256, .. }),
        ..
    } = r
    else {
        panic!("no resume offered: {r:?}")
    };
    (*offset, *sha256)
}

#[test]
fn a_part_left_by_a_broken_transfer_is_resumed_by_a_later_sender() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(11, 300 * 1024);
    let chunk = 16 * 1024;
    let size = data.len() as u64;

    // First run: file-start and 5 chunks arrive, then the peer is gone.
    let mut tx = Sender::new(Cursor::new(data.clone()), info("run1", "big.bin", size))
        .with_chunk_size(chunk)
        .unwrap();
    let mut rx = Receiver::new(dir.path());
    let mut n = 0;
    pump(&mut tx, &mut rx, |_| {
        n += 1;
        n == 6
    });
    assert_eq!(rx.abort().as_deref(), Some("run1"));
    drop(rx);
    let parts = list(dir.path());
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert!(parts[0].starts_with(".big.bin.") && parts[0].ends_with(".part"));

    // A new receiver (a restarted process) and a new sender with another id.
    let mut rx = Receiver::new(dir.path());
    let mut tx = Sender::new(Cursor::new(data.clone()), info("run2", "big.bin", size))
        .with_chunk_size(chunk)
        .unwrap();
    let m = tx.next_message().unwrap().unwrap();
    let started = rx.handle(&parse(false, m.as_bytes()).unwrap()).unwrap();
    let (offset, prefix) = resume_frame(&started);
    assert_eq!(offset, 5 * chunk as u64);
    assert_eq!(prefix, Digest::of(&data[..offset as usize]));
    // The frame survives the codec.
    let Received::Started {
        resume: Some(frame),
        ..
    } = &started
    else {
        unreachable!()
    };
    let wire = frame.encode().as_bytes().to_vec();
    assert_eq!(parse(false, &wire).unwrap(), *frame);
    assert!(String::from_utf8(wire)
        .unwrap()
        .starts_with(r#"{"type":"file-resume","id":"run2","offset":81920,"sha256":""#));

    // Two chunks from byte 0 are already on their way when the resume
    // reaches the sender.
    for _ in 0..2 {
        let m = tx.next_message().unwrap().unwrap();
        let _ = rx.handle(&parse(true, m.as_bytes()).unwrap()).unwrap();
    }
    assert_eq!(
        tx.handle_resume("run2", offset, &prefix).unwrap(),
        ResumeOutcome::Seeking { offset }
    );
    assert_eq!(tx.bytes_sent(), offset);
    let m = tx.next_message().unwrap().unwrap();
    assert_eq!(
        parse(false, m.as_bytes()).unwrap(),
        Frame::FileSeek {
            id: "run2".into(),
            offset
        }
    );
    let r = rx.handle(&parse(false, m.as_bytes()).unwrap()).unwrap();
    assert!(matches!(r, Received::Resumed { offset: o, .. } if o == offset));
    let Some(Received::Finished(fin)) =
        pump(&mut tx, &mut rx, |r| matches!(r, Received::Finished(_)))
    else {
        panic!("no file-end")
    };
    assert!(fin.ok(), "{:?}", fin.result);
    assert_eq!(fin.resumed_at, Some(offset));
    assert_eq!(fin.transferred, 2 * chunk as u64 + size - offset);
    let Frame::FileAck { ok, sha256, .. } = fin.ack() else {
        panic!()
    };
    assert_eq!(
        tx.handle_ack("run2", ok, &sha256).unwrap(),
        Some(AckOutcome::Verified)
    );
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), data);
    assert_eq!(list(dir.path()), ["big.bin"], "no part left behind");
}

#[test]
fn a_file_that_changed_is_sent_whole_not_spliced() {
    let dir = tempfile::tempdir().unwrap();
    let old = bytes(1, 100_000);
    let new = bytes(2, 100_000);
    let mut rx = Receiver::new(dir.path());
    let mut tx = Sender::new(Cursor::new(old), info("a", "f.bin", 100_000))
        .with_chunk_size(10_000)
        .unwrap();
    let mut n = 0;
    pump(&mut tx, &mut rx, |_| {
        n += 1;
        n == 4
    });
    rx.abort();

    let mut tx = Sender::new(Cursor::new(new.clone()), info("b", "f.bin", 100_000))
        .with_chunk_size(10_000)
        .unwrap();
    let m = tx.next_message().unwrap().unwrap();
    let (offset, prefix) = resume_frame(&rx.handle(&parse(false, m.as_bytes()).unwrap()).unwrap());
    assert_eq!(offset, 30_000);
    let m = tx.next_message().unwrap().unwrap();
    let _ = rx.handle(&parse(true, m.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        tx.handle_resume("b", offset, &prefix).unwrap(),
        ResumeOutcome::Mismatch
    );
    // The stream carries on where it was: chunk 2, not a seek.
    assert_eq!(tx.bytes_sent(), 10_000);
    let Some(Received::Finished(fin)) =
        pump(&mut tx, &mut rx, |r| matches!(r, Received::Finished(_)))
    else {
        panic!("no file-end")
    };
    assert!(fin.ok(), "{:?}", fin.result);
    assert_eq!(fin.resumed_at, None);
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), new);
    assert_eq!(list(dir.path()), ["f.bin"], "the stale part is gone too");
}

#[test]
fn a_whole_part_resumes_straight_to_file_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(13, 1000);
    let mut rx = Receiver::new(dir.path());
    let mut tx = Sender::new(Cursor::new(data.clone()), info("r1", "f", 1000));
    // Everything but file-end arrived.
    pump(&mut tx, &mut rx, |r| {
        matches!(r, Received::Progress { received: 1000, .. })
    });
    drop(rx);

    let mut rx = Receiver::new(dir.path());
    let mut tx = Sender::new(Cursor::new(data.clone()), info("r2", "f", 1000));
    let m = tx.next_message().unwrap().unwrap();
    let (offset, prefix) = resume_frame(&rx.handle(&parse(false, m.as_bytes()).unwrap()).unwrap());
    assert_eq!(offset, 1000);
    assert_eq!(
        tx.handle_resume("r2", offset, &prefix).unwrap(),
        ResumeOutcome::Seeking { offset: 1000 }
    );
    let seek = tx.next_message().unwrap().unwrap();
    assert!(matches!(
        rx.handle(&parse(false, seek.as_bytes()).unwrap()).unwrap(),
        Received::Resumed { .. }
    ));
    let end = tx.next_message().unwrap().unwrap();
    assert!(matches!(
        parse(false, end.as_bytes()).unwrap(),
        Frame::FileEnd { .. }
    ));
    let Received::Finished(f) = rx.handle(&parse(false, end.as_bytes()).unwrap()).unwrap() else {
        panic!()
    };
    assert!(f.ok());
    assert_eq!((f.resumed_at, f.transferred), (Some(1000), 0));
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), data);
}

#[test]
fn bad_resumes_and_seeks_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5, 4000);
    let mut tx = Sender::new(Cursor::new(data.clone()), info("r3", "f", 4000))
        .with_chunk_size(1000)
        .unwrap();
    let mut rx = Receiver::new(dir.path());
    // Before file-start, for another id: nothing happens.
    assert_eq!(
        tx.handle_resume("r3", 0, &Digest::empty()).unwrap(),
        ResumeOutcome::Ignored
    );
    pump(&mut tx, &mut rx, |r| {
        matches!(r, Received::Progress { received: 2000, .. })
    });
    assert_eq!(
        tx.handle_resume("other", 0, &Digest::empty()).unwrap(),
        ResumeOutcome::Ignored
    );
    assert!(matches!(
        tx.handle_resume("r3", 4001, &Digest::empty()),
        Err(TransferError::BadResume { .. })
    ));
    // A seek nobody asked for.
    let seek = Frame::FileSeek {
        id: "r3".into(),
        offset: 0,
    };
    assert!(matches!(
        rx.handle(&seek),
        Err(TransferError::UnexpectedSeek { .. })
    ));
    // The transfer is unharmed.
    let Some(Received::Finished(f)) =
        pump(&mut tx, &mut rx, |r| matches!(r, Received::Finished(_)))
    else {
        panic!()
    };
    assert!(f.ok());
    // After file-end a resume comes too late and is ignored.
    assert_eq!(
        tx.handle_resume("r3", 1000, &Digest::of(&data[..1000]))
            .unwrap(),
        ResumeOutcome::Ignored
    );
}

#[test]
fn from_path_uses_file_name_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hello world.txt");
    std::fs::write(&p, b"hi there").unwrap();
    let tx = Sender::from_path(&p, "q".into()).unwrap();
    assert_eq!(tx.info().name, "hello world.txt");
    assert_eq!(tx.size(), 8);
    assert!(Sender::from_path(dir.path(), "d".into()).is_err());
}

#[test]
fn file_ids_look_like_the_browsers() {
    let a = transfer::new_file_id();
    let b = transfer::new_file_id();
    assert_ne!(a, b);
    let (ms, hex) = a.split_once('-').unwrap();
    assert!(
        !ms.is_empty()
            && ms
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
    assert_eq!(hex.len(), 12);
    assert!(hex
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
}
