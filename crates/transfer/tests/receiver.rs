//! Receiver behaviour on bad input, collisions and names from the network.

mod common;

use common::{bytes, list, run};
use transfer::{
    parse, sanitize_name, Digest, Failure, Frame, Received, Receiver, TransferError, DEFAULT_CHUNK,
};

fn start(id: &str, name: &str, size: u64) -> Frame<'static> {
    Frame::FileStart {
        id: id.into(),
        name: name.into(),
        size,
        mime: None,
        path: None,
    }
}

fn end(id: &str, data: &[u8]) -> Frame<'static> {
    Frame::FileEnd {
        id: id.into(),
        sha256: Digest::of(data),
    }
}

fn finished(r: Received) -> transfer::Finished {
    match r {
        Received::Finished(f) => f,
        other => panic!("expected Finished, got {other:?}"),
    }
}

#[test]
fn temp_file_is_hidden_and_named_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let _ = rx.handle(&start("x1", "notes.txt", 4)).unwrap();
    let names = list(dir.path());
    assert_eq!(names.len(), 1);
    let part = &names[0];
    assert!(
        part.starts_with(".notes.txt.") && part.ends_with(".part"),
        "{part}"
    );
    assert!(
        !part.contains("x1"),
        "the peer's id must not reach the path: {part}"
    );
    // Two bytes in: still only the temp file.
    let _ = rx.handle(&Frame::Chunk(b"ab")).unwrap();
    assert_eq!(&list(dir.path()), std::slice::from_ref(part));
    assert_eq!(std::fs::read(dir.path().join(part)).unwrap(), b"ab");
}

#[test]
fn hash_mismatch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let data = bytes(1, 100_000);
    let _ = rx.handle(&start("m", "m.bin", data.len() as u64)).unwrap();
    for c in data.chunks(16 * 1024) {
        let _ = rx.handle(&Frame::Chunk(c)).unwrap();
    }
    let mut wrong = data.clone();
    wrong[500] ^= 1;
    let f = finished(rx.handle(&end("m", &wrong)).unwrap());
    assert!(
        matches!(f.result, Err(Failure::HashMismatch)),
        "{:?}",
        f.result
    );
    assert_eq!(f.actual, Digest::of(&data));
    assert_eq!(f.expected, Digest::of(&wrong));
    assert_eq!(list(dir.path()), Vec::<String>::new());
    // The ack says no, with the hash of what we actually got (browser style).
    let ack = f.ack().encode();
    assert_eq!(
        std::str::from_utf8(ack.as_bytes()).unwrap(),
        format!(
            r#"{{"type":"file-ack","id":"m","ok":false,"sha256":"{}"}}"#,
            Digest::of(&data)
        )
    );
}

#[test]
fn corrupted_chunk_in_transit_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let data = bytes(2, 5000);
    let mut tx = transfer::Sender::new(&data[..], common::info("c", "c", 5000))
        .with_chunk_size(1000)
        .unwrap();
    let mut n = 0;
    let mut fin = None;
    while let Some(m) = tx.next_message().unwrap() {
        let mut bytes = m.as_bytes().to_vec();
        if m.is_binary() {
            n += 1;
            if n == 3 {
                bytes[10] ^= 0x80;
            }
        }
        if let Received::Finished(f) = rx.handle(&parse(m.is_binary(), &bytes).unwrap()).unwrap() {
            fin = Some(f);
        }
    }
    let f = fin.unwrap();
    assert!(!f.ok());
    let Frame::FileAck { ok, sha256, .. } = f.ack() else {
        panic!()
    };
    assert!(!tx
        .handle_ack("c", ok, &sha256)
        .unwrap()
        .unwrap()
        .is_verified());
    assert!(list(dir.path()).is_empty());
}

#[test]
fn short_file_is_size_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let _ = rx.handle(&start("s", "s", 10)).unwrap();
    let _ = rx.handle(&Frame::Chunk(b"12345")).unwrap();
    // Even with a hash that matches the 5 bytes, 5 != 10 is a failure.
    let f = finished(rx.handle(&end("s", b"12345")).unwrap());
    assert!(matches!(f.result, Err(Failure::SizeMismatch)));
    assert!(list(dir.path()).is_empty());
}

#[test]
fn existing_files_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("report.pdf"), b"original").unwrap();
    std::fs::write(dir.path().join("report (1).pdf"), b"original 1").unwrap();
    let mut rx = Receiver::new(dir.path());
    let (f, outcome, _) = run(b"new one", "report.pdf", DEFAULT_CHUNK, &mut rx);
    assert!(outcome.is_verified());
    assert_eq!(f.result.unwrap(), dir.path().join("report (2).pdf"));
    let (f, _, _) = run(b"newer", "report.pdf", DEFAULT_CHUNK, &mut rx);
    assert_eq!(f.result.unwrap(), dir.path().join("report (3).pdf"));
    assert_eq!(
        std::fs::read(dir.path().join("report.pdf")).unwrap(),
        b"original"
    );
    assert_eq!(
        std::fs::read(dir.path().join("report (1).pdf")).unwrap(),
        b"original 1"
    );
    assert_eq!(
        std::fs::read(dir.path().join("report (2).pdf")).unwrap(),
        b"new one"
    );
    assert_eq!(
        list(dir.path()),
        [
            "report (1).pdf",
            "report (2).pdf",
            "report (3).pdf",
            "report.pdf"
        ]
    );
}

#[cfg(unix)]
#[test]
fn symlink_at_final_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::os::unix::fs::symlink(&target, dir.path().join("a.txt")).unwrap();
    let mut rx = Receiver::new(dir.path());
    let (f, _, _) = run(b"data", "a.txt", DEFAULT_CHUNK, &mut rx);
    assert_eq!(f.result.unwrap(), dir.path().join("a (1).txt"));
    assert!(!target.exists());
}

#[test]
fn names_from_the_network_are_sanitized() {
    let cases: &[(&str, &str)] = &[
        ("../../etc/passwd", "passwd"),
        ("a/b", "b"),
        ("C:\\x", "x"),
        ("C:x", "C_x"),
        ("", "file"),
        ("   ", "file"),
        ("..", "file"),
        (".", "file"),
        ("../..", "file"),
        ("dir/", "dir"),
        (".bashrc", "bashrc"),
        ("...hidden..", "hidden"),
        ("nul\0byte", "nul_byte"),
        ("line\nbreak\r\ttab\u{7f}", "line_break__tab_"),
        ("evil\u{202E}txt.exe", "evil_txt.exe"),
        ("a<b>c:d\"e|f?g*h", "a_b_c_d_e_f_g_h"),
        ("résumé 2.pdf", "résumé 2.pdf"),
        ("trailing. ", "trailing"),
        ("\\\\server\\share\\f.txt", "f.txt"),
    ];
    for (raw, want) in cases {
        assert_eq!(sanitize_name(raw), *want, "for {raw:?}");
    }
}

#[test]
fn long_names_are_capped_keeping_the_extension() {
    let long = format!("{}.txt", "a".repeat(1000));
    let s = sanitize_name(&long);
    assert_eq!(s.len(), transfer::MAX_NAME_BYTES);
    assert!(s.ends_with("aaa.txt"));
    // Multi-byte characters are cut on a boundary.
    let s = sanitize_name(&"é".repeat(300));
    assert!(s.len() <= transfer::MAX_NAME_BYTES);
    assert!(s.chars().all(|c| c == 'é'));
    // A very long "extension" is not kept as one.
    let s = sanitize_name(&format!("x.{}", "b".repeat(400)));
    assert!(s.len() <= transfer::MAX_NAME_BYTES && s.starts_with("x.bbb"));

    // And the receiver can actually create it (plus the temp name) on disk.
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let (f, outcome, _) = run(b"x", &long, DEFAULT_CHUNK, &mut rx);
    assert!(outcome.is_verified());
    let p = f.result.unwrap();
    assert_eq!(p.parent().unwrap(), dir.path());
    assert_eq!(p.file_name().unwrap().len(), transfer::MAX_NAME_BYTES);
}

#[test]
fn traversal_names_stay_in_the_output_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut rx = Receiver::new(&out);
    for name in [
        "../escape.txt",
        "..\\escape2.txt",
        "/abs/path.txt",
        "..",
        "",
    ] {
        let (f, outcome, _) = run(b"z", name, DEFAULT_CHUNK, &mut rx);
        assert!(outcome.is_verified());
        assert_eq!(f.result.unwrap().parent().unwrap(), out);
    }
    assert_eq!(list(dir.path()), ["out"]);
    assert_eq!(
        list(&out),
        ["escape.txt", "escape2.txt", "file", "file (1)", "path.txt"]
    );
}

#[test]
fn chunk_without_file_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    assert!(matches!(
        rx.handle(&Frame::Chunk(b"abc")),
        Err(TransferError::UnexpectedChunk { len: 3 })
    ));
    assert!(list(dir.path()).is_empty());
}

#[test]
fn chunk_beyond_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let _ = rx.handle(&start("o", "o", 4)).unwrap();
    let _ = rx.handle(&Frame::Chunk(b"abc")).unwrap();
    match rx.handle(&Frame::Chunk(b"de")) {
        Err(TransferError::ChunkOverflow {
            id,
            declared: 4,
            received: 5,
        }) => assert_eq!(id, "o"),
        other => panic!("{other:?}"),
    }
    // The partial file is gone at once; later chunks are swallowed quietly.
    assert!(list(dir.path()).is_empty());
    assert!(matches!(
        rx.handle(&Frame::Chunk(b"f")).unwrap(),
        Received::Progress {
            received: 6,
            size: 4
        }
    ));
    // file-end still gets an honest negative ack.
    let f = finished(rx.handle(&end("o", b"abcdef")).unwrap());
    assert!(matches!(f.result, Err(Failure::SizeMismatch)));
    assert_eq!(f.actual, Digest::of(b"abcdef"));
    assert!(list(dir.path()).is_empty());
}

#[test]
fn second_file_start_aborts_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let _ = rx.handle(&start("one", "one.bin", 10)).unwrap();
    let _ = rx.handle(&Frame::Chunk(b"12345")).unwrap();
    match rx.handle(&start("two", "two.bin", 3)).unwrap() {
        Received::Started {
            id,
            name,
            size: 3,
            replaced: Some(old),
            ..
        } => {
            assert_eq!(
                (id.as_str(), name.as_str(), old.as_str()),
                ("two", "two.bin", "one")
            );
        }
        other => panic!("{other:?}"),
    }
    // The first file's part is kept for a resume.
    let names = list(dir.path());
    assert_eq!(names.len(), 2);
    assert!(names[0].starts_with(".one.bin."), "{names:?}");
    assert!(names[1].starts_with(".two.bin."), "{names:?}");
    // The old id is no longer known.
    assert!(matches!(
        rx.handle(&end("one", b"")),
        Err(TransferError::UnknownFileEnd { .. })
    ));
    let _ = rx.handle(&Frame::Chunk(b"xyz")).unwrap();
    let f = finished(rx.handle(&end("two", b"xyz")).unwrap());
    assert!(f.ok());
    assert_eq!(list(dir.path()), [names[0].as_str(), "two.bin"]);
}

#[test]
fn file_end_with_unknown_id_keeps_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    assert!(matches!(
        rx.handle(&end("ghost", b"")),
        Err(TransferError::UnknownFileEnd { .. })
    ));
    let _ = rx.handle(&start("real", "r", 2)).unwrap();
    let _ = rx.handle(&Frame::Chunk(b"ok")).unwrap();
    match rx.handle(&end("ghost", b"ok")) {
        Err(TransferError::UnknownFileEnd { id }) => assert_eq!(id, "ghost"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.bytes_received("real"), Some(2));
    assert!(finished(rx.handle(&end("real", b"ok")).unwrap()).ok());
}

#[test]
fn abort_and_drop_keep_the_part_for_a_resume_and_discard_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    assert_eq!(rx.abort(), None);
    let _ = rx.handle(&start("a", "a", 100)).unwrap();
    let _ = rx.handle(&Frame::Chunk(&[7; 50])).unwrap();
    assert_eq!(list(dir.path()).len(), 1);
    assert_eq!(rx.abort().as_deref(), Some("a"));
    let kept = list(dir.path());
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(dir.path().join(&kept[0])).unwrap(), [7; 50]);
    assert!(rx.in_progress().is_none());
    assert!(matches!(
        rx.handle(&Frame::Chunk(b"x")),
        Err(TransferError::UnexpectedChunk { .. })
    ));

    // The same path and size again: offered, whatever the id.
    match rx.handle(&start("a2", "a", 100)).unwrap() {
        Received::Started {
            resume: Some(Frame::FileResume { id, offset, sha256 }),
            ..
        } => {
            assert_eq!((id.as_str(), offset), ("a2", 50));
            assert_eq!(sha256, Digest::of(&[7; 50]));
        }
        other => panic!("{other:?}"),
    }
    // Another size is another file: not offered.
    drop(rx);
    let mut rx = Receiver::new(dir.path());
    assert!(matches!(
        rx.handle(&start("c", "a", 99)).unwrap(),
        Received::Started { resume: None, .. }
    ));
    assert_eq!(rx.discard().as_deref(), Some("c"));
    // discard removed only its own file's part.
    assert_eq!(list(dir.path()), kept);

    // An empty part is not worth keeping.
    let _ = rx.handle(&start("b", "b", 100)).unwrap();
    drop(rx);
    assert_eq!(list(dir.path()), kept);
}

#[test]
fn a_part_another_receiver_is_writing_is_neither_offered_nor_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut r1 = Receiver::new(dir.path());
    let mut r2 = Receiver::new(dir.path());
    let _ = r1.handle(&start("x", "same", 10)).unwrap();
    let _ = r1.handle(&Frame::Chunk(b"abcd")).unwrap();
    assert!(matches!(
        r2.handle(&start("x", "same", 10)).unwrap(),
        Received::Started { resume: None, .. }
    ));
    let _ = r2.handle(&Frame::Chunk(b"ABCDEFG")).unwrap();
    // r2 has more, but r1 still writes the kept part: r2's goes.
    r2.abort();
    let _ = r1.handle(&Frame::Chunk(b"efghij")).unwrap();
    assert!(finished(r1.handle(&end("x", b"abcdefghij")).unwrap()).ok());
    assert_eq!(list(dir.path()), ["same"]);
}

#[cfg(unix)]
#[test]
fn a_symlink_where_the_part_would_be_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"0123456789").unwrap();
    // Learn the part's name, then plant a symlink there.
    let mut rx = Receiver::new(dir.path());
    let _ = rx.handle(&start("s", "f", 10)).unwrap();
    let _ = rx.handle(&Frame::Chunk(b"zz")).unwrap();
    rx.abort();
    let part = dir.path().join(&list(dir.path())[0]);
    std::fs::remove_file(&part).unwrap();
    std::os::unix::fs::symlink(&secret, &part).unwrap();
    let mut rx = Receiver::new(dir.path());
    assert!(matches!(
        rx.handle(&start("s", "f", 10)).unwrap(),
        Received::Started { resume: None, .. }
    ));
    assert!(matches!(
        rx.handle(&Frame::FileSeek {
            id: "s".into(),
            offset: 4
        }),
        Err(TransferError::UnexpectedSeek { .. })
    ));
    let _ = rx.handle(&Frame::Chunk(b"abcdefghij")).unwrap();
    assert!(finished(rx.handle(&end("s", b"abcdefghij")).unwrap()).ok());
    assert_eq!(std::fs::read(&secret).unwrap(), b"0123456789");
}

#[test]
fn same_name_in_parallel_receivers_does_not_clash() {
    // Two peers in one room may send the same file (same id, even: the
    // browser reuses one id for all peers) into one directory.
    let dir = tempfile::tempdir().unwrap();
    let mut r1 = Receiver::new(dir.path());
    let mut r2 = Receiver::new(dir.path());
    let _ = r1.handle(&start("same", "f.txt", 2)).unwrap();
    let _ = r2.handle(&start("same", "f.txt", 2)).unwrap();
    let _ = r1.handle(&Frame::Chunk(b"11")).unwrap();
    let _ = r2.handle(&Frame::Chunk(b"22")).unwrap();
    let f1 = finished(r1.handle(&end("same", b"11")).unwrap());
    let f2 = finished(r2.handle(&end("same", b"22")).unwrap());
    assert_eq!(std::fs::read(f1.result.unwrap()).unwrap(), b"11");
    assert_eq!(std::fs::read(f2.result.unwrap()).unwrap(), b"22");
    assert_eq!(list(dir.path()), ["f (1).txt", "f.txt"]);
}

#[test]
fn missing_output_dir_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path().join("nope"));
    assert!(matches!(
        rx.handle(&start("a", "a", 1)),
        Err(TransferError::Io(_))
    ));
    assert!(rx.in_progress().is_none());
}

#[test]
fn text_and_acks_are_not_the_receivers_business() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let _ = rx.handle(&start("t", "t", 2)).unwrap();
    for f in [
        Frame::Text { text: "hi".into() },
        Frame::FileAck {
            id: "t".into(),
            ok: true,
            sha256: Digest::empty(),
        },
        Frame::FileResume {
            id: "t".into(),
            offset: 0,
            sha256: Digest::empty(),
        },
    ] {
        assert!(matches!(rx.handle(&f).unwrap(), Received::Ignored));
    }
    assert_eq!(rx.bytes_received("t"), Some(0));
}

/// Feeds `frames` to `rx`: what each did (none may be an error).
fn feed(rx: &mut Receiver, frames: &[Frame<'_>]) -> Vec<Received> {
    frames.iter().map(|f| rx.handle(f).unwrap()).collect()
}

fn start_in(id: &str, path: &str, size: u64) -> Frame<'static> {
    Frame::FileStart {
        id: id.into(),
        name: path.rsplit('/').next().unwrap().into(),
        size,
        mime: None,
        path: Some(path.into()),
    }
}

/// Every file and folder under `dir`, relative, sorted.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_path_puts_the_file_in_folders_it_creates() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path());
    let data = bytes(3, 5000);
    let f = finished(
        feed(
            &mut rx,
            &[
                start_in("p1", "photos/été/a.jpg", 5000),
                Frame::Chunk(&data),
                end("p1", &data),
            ],
        )
        .pop()
        .unwrap(),
    );
    let placed = f.result.unwrap();
    assert_eq!(placed, dir.path().join("photos/été/a.jpg"));
    assert_eq!(std::fs::read(&placed).unwrap(), data);
    // A second file in the same folder, and one with the same name: numbered.
    for (id, want) in [
        ("p2", "photos/été/a (1).jpg"),
        ("p3", "photos/été/a (2).jpg"),
    ] {
        let f = finished(
            feed(
                &mut rx,
                &[start_in(id, "photos/été/a.jpg", 0), end(id, b"")],
            )
            .pop()
            .unwrap(),
        );
        assert_eq!(f.result.unwrap(), dir.path().join(want));
    }
    assert_eq!(
        tree(dir.path()),
        [
            "photos",
            "photos/été",
            "photos/été/a (1).jpg",
            "photos/été/a (2).jpg",
            "photos/été/a.jpg"
        ]
    );
}

#[test]
fn hostile_paths_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut rx = Receiver::new(&out);
    let data = bytes(4, 3000);
    for (i, path) in [
        "../x",
        "/etc/x",
        "C:\\x",
        "a/../../b",
        "a//b",
        "./a",
        "a/.ssh/k",
        "con/x",
        "x\\..\\y",
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("h{i}");
        let frames = [
            start_in(&id, path, 3000),
            Frame::Chunk(&data),
            end(&id, &data),
        ];
        let f = finished(feed(&mut rx, &frames).pop().unwrap());
        assert!(
            matches!(f.result, Err(Failure::UnsafePath(_))),
            "{path:?}: {:?}",
            f.result
        );
        // The ack is honest: not ok, with the hash of what arrived.
        assert_eq!(
            f.ack(),
            Frame::FileAck {
                id: id.clone(),
                ok: false,
                sha256: Digest::of(&data)
            }
        );
    }
    assert!(
        tree(dir.path()) == ["out"],
        "something was written: {:?}",
        tree(dir.path())
    );
}

#[cfg(unix)]
#[test]
fn a_symlinked_folder_in_the_output_directory_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("docs")).unwrap();
    std::fs::write(out.join("plain"), b"a file").unwrap();
    let mut rx = Receiver::new(&out);
    for (id, path) in [("s1", "docs/x.txt"), ("s2", "plain/x.txt")] {
        let f = finished(
            feed(
                &mut rx,
                &[start_in(id, path, 1), Frame::Chunk(b"z"), end(id, b"z")],
            )
            .pop()
            .unwrap(),
        );
        assert!(
            matches!(f.result, Err(Failure::UnsafePath(_))),
            "{path}: {:?}",
            f.result
        );
    }
    assert!(list(&elsewhere).is_empty(), "wrote through the symlink");
    assert_eq!(std::fs::read(out.join("plain")).unwrap(), b"a file");
}
