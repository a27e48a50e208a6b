//! The codec against what /chat (web/sdk/transfer.js) actually puts on the wire.
//!
//! The expected strings below were produced by running the same object
//! literals through `JSON.stringify` in Node (what web/sdk/transfer.js does): key order
//! type first, then fields in the order web/sdk/transfer.js writes them; `mime` left out
//! when `file.type` is empty; no escaping of `/`, non-ASCII, DEL or U+2028;
//! control characters as `\n`, `\t`, `\u0001`.

use transfer::{parse, Digest, Frame, Outbound, ProtocolError};

const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn json(f: &Frame<'_>) -> String {
    f.to_json().unwrap()
}

#[test]
fn serializes_exactly_like_json_stringify() {
    let text = Frame::Text {
        text: "hé \"q\" \\ / \n\t\u{1}\u{7f}\u{2028} 😀 </script>".into(),
    };
    assert_eq!(
        json(&text),
        "{\"type\":\"text\",\"text\":\"hé \\\"q\\\" \\\\ / \\n\\t\\u0001\u{7f}\u{2028} 😀 </script>\"}"
    );
    let start = Frame::FileStart {
        id: "lx2k3-a1b2c3d4e5f6".into(),
        name: "résumé 2.pdf".into(),
        size: 5242880,
        mime: Some("application/pdf".into()),
        path: None,
    };
    assert_eq!(
        json(&start),
        r#"{"type":"file-start","id":"lx2k3-a1b2c3d4e5f6","name":"résumé 2.pdf","size":5242880,"mime":"application/pdf"}"#
    );
    // `if (file.type) start.mime = file.type;`: no mime key at all.
    for mime in [None, Some(String::new())] {
        let f = Frame::FileStart {
            id: "x".into(),
            name: "a".into(),
            size: 0,
            mime,
            path: None,
        };
        assert_eq!(
            json(&f),
            r#"{"type":"file-start","id":"x","name":"a","size":0}"#
        );
    }
    let empty = Digest::from_hex(EMPTY).unwrap();
    assert_eq!(
        json(&Frame::FileEnd {
            id: "x".into(),
            sha256: empty
        }),
        format!(r#"{{"type":"file-end","id":"x","sha256":"{EMPTY}"}}"#)
    );
    assert_eq!(
        json(&Frame::FileAck {
            id: "x".into(),
            ok: true,
            sha256: empty
        }),
        format!(r#"{{"type":"file-ack","id":"x","ok":true,"sha256":"{EMPTY}"}}"#)
    );
    assert_eq!(
        json(&Frame::FileAck {
            id: "x".into(),
            ok: false,
            sha256: empty
        }),
        format!(r#"{{"type":"file-ack","id":"x","ok":false,"sha256":"{EMPTY}"}}"#)
    );
    assert_eq!(Frame::Chunk(b"ab").to_json(), None);
    assert_eq!(Frame::Chunk(b"ab").encode(), Outbound::Binary(b"ab"));
}

#[test]
fn parses_what_the_browser_sends() {
    assert_eq!(
        parse(false, br#"{"type":"text","text":"hello"}"#).unwrap(),
        Frame::Text {
            text: "hello".into()
        }
    );
    assert_eq!(
        parse(false, br#"{"type":"file-start","id":"m1-00ff","name":"a.png","size":16385,"mime":"image/png"}"#)
            .unwrap(),
        Frame::FileStart { id: "m1-00ff".into(), name: "a.png".into(), size: 16385, mime: Some("image/png".into()), path: None }
    );
    assert_eq!(
        parse(
            false,
            br#"{"type":"file-start","id":"i","name":"n","size":0}"#
        )
        .unwrap(),
        Frame::FileStart {
            id: "i".into(),
            name: "n".into(),
            size: 0,
            mime: None,
            path: None
        }
    );
    let end = format!(r#"{{"type":"file-end","id":"i","sha256":"{EMPTY}"}}"#);
    assert_eq!(
        parse(false, end.as_bytes()).unwrap(),
        Frame::FileEnd {
            id: "i".into(),
            sha256: Digest::empty()
        }
    );
    let ack = format!(r#"{{"type":"file-ack","id":"i","ok":false,"sha256":"{EMPTY}"}}"#);
    assert_eq!(
        parse(false, ack.as_bytes()).unwrap(),
        Frame::FileAck {
            id: "i".into(),
            ok: false,
            sha256: Digest::empty()
        }
    );
    assert_eq!(
        parse(true, b"\x00{\xff").unwrap(),
        Frame::Chunk(b"\x00{\xff")
    );
    assert_eq!(parse(true, b"").unwrap(), Frame::Chunk(b""));
    // Binary wins even if the bytes look like JSON.
    assert_eq!(
        parse(true, br#"{"type":"text"}"#).unwrap(),
        Frame::Chunk(br#"{"type":"text"}"#)
    );
}

#[test]
fn every_text_frame_survives_a_round_trip() {
    let frames = [
        Frame::Text {
            text: String::new(),
        },
        Frame::Text {
            text: "\u{0}\u{1f}\"\\x\u{10FFFF}".into(),
        },
        Frame::FileStart {
            id: "a".into(),
            name: "../b".into(),
            size: u64::MAX,
            mime: Some("text/plain".into()),
            path: Some("../b/c".into()),
        },
        Frame::FileEnd {
            id: "\n".into(),
            sha256: Digest::of(b"x"),
        },
        Frame::FileAck {
            id: "".into(),
            ok: true,
            sha256: Digest::of(b"y"),
        },
        Frame::FileResume {
            id: "r".into(),
            offset: 123,
            sha256: Digest::of(b"z"),
        },
        Frame::FileSeek {
            id: "r".into(),
            offset: 0,
        },
    ];
    for f in frames {
        let out = f.encode();
        assert!(!out.is_binary());
        assert_eq!(parse(false, out.as_bytes()).unwrap(), f);
    }
}

#[test]
fn unknown_fields_and_key_order_do_not_matter() {
    let f = parse(
        false,
        br#"{"size":3,"extra":{"deep":[1,2]},"name":"n","id":"i","type":"file-start","v":2}"#,
    )
    .unwrap();
    assert_eq!(
        f,
        Frame::FileStart {
            id: "i".into(),
            name: "n".into(),
            size: 3,
            mime: None,
            path: None
        }
    );
    // Lenient on what the browser itself tolerates: uppercase hex, null mime.
    let up = format!(
        r#"{{"type":"file-end","id":"i","sha256":"{}"}}"#,
        EMPTY.to_uppercase()
    );
    assert_eq!(
        parse(false, up.as_bytes()).unwrap(),
        Frame::FileEnd {
            id: "i".into(),
            sha256: Digest::empty()
        }
    );
    let f = parse(
        false,
        br#"{"type":"file-start","id":"i","name":"n","size":1,"mime":null}"#,
    )
    .unwrap();
    assert!(matches!(f, Frame::FileStart { mime: None, .. }));
    // Whitespace around JSON is fine.
    assert!(parse(false, b" \n{\"type\":\"text\",\"text\":\"\"}\n").is_ok());
}

#[test]
fn malformed_frames_are_specific_errors() {
    use ProtocolError::*;
    let sha = EMPTY;
    type Check = fn(&ProtocolError) -> bool;
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (b"\xff\xfe".to_vec(), |e| matches!(e, NotUtf8)),
        (b"".to_vec(), |e| matches!(e, BadJson(_))),
        (b"{".to_vec(), |e| matches!(e, BadJson(_))),
        (b"{\"type\":\"text\",\"text\":\"a\"} x".to_vec(), |e| {
            matches!(e, BadJson(_))
        }),
        (b"[1,2]".to_vec(), |e| matches!(e, NotAnObject)),
        (b"\"text\"".to_vec(), |e| matches!(e, NotAnObject)),
        (b"null".to_vec(), |e| matches!(e, NotAnObject)),
        (b"{}".to_vec(), |e| {
            matches!(e, MissingField { field: "type", .. })
        }),
        (b"{\"type\":7}".to_vec(), |e| {
            matches!(e, WrongType { field: "type", .. })
        }),
        (
            b"{\"type\":\"bogus\"}".to_vec(),
            |e| matches!(e, UnknownType(t) if t == "bogus"),
        ),
        (b"{\"type\":\"Text\",\"text\":\"a\"}".to_vec(), |e| {
            matches!(e, UnknownType(_))
        }),
        (b"{\"type\":\"text\"}".to_vec(), |e| {
            matches!(
                e,
                MissingField {
                    frame: "text",
                    field: "text"
                }
            )
        }),
        (b"{\"type\":\"text\",\"text\":5}".to_vec(), |e| {
            matches!(
                e,
                WrongType {
                    frame: "text",
                    field: "text",
                    ..
                }
            )
        }),
        (
            br#"{"type":"file-start","name":"n","size":1}"#.to_vec(),
            |e| matches!(e, MissingField { field: "id", .. }),
        ),
        (
            br#"{"type":"file-start","id":1,"name":"n","size":1}"#.to_vec(),
            |e| matches!(e, WrongType { field: "id", .. }),
        ),
        (
            br#"{"type":"file-start","id":"i","size":1}"#.to_vec(),
            |e| matches!(e, MissingField { field: "name", .. }),
        ),
        (
            br#"{"type":"file-start","id":"i","name":"n"}"#.to_vec(),
            |e| matches!(e, MissingField { field: "size", .. }),
        ),
        (
            br#"{"type":"file-start","id":"i","name":"n","size":-1}"#.to_vec(),
            |e| matches!(e, WrongType { field: "size", .. }),
        ),
        (
            br#"{"type":"file-start","id":"i","name":"n","size":1.5}"#.to_vec(),
            |e| matches!(e, WrongType { field: "size", .. }),
        ),
        (
            br#"{"type":"file-start","id":"i","name":"n","size":"1"}"#.to_vec(),
            |e| matches!(e, WrongType { field: "size", .. }),
        ),
        (
            br#"{"type":"file-start","id":"i","name":"n","size":1e400}"#.to_vec(),
            |e| matches!(e, BadJson(_)),
        ),
        (
            br#"{"type":"file-start","id":"i","name":"n","size":1,"mime":3}"#.to_vec(),
            |e| matches!(e, WrongType { field: "mime", .. }),
        ),
        (br#"{"type":"file-end","id":"i"}"#.to_vec(), |e| {
            matches!(
                e,
                MissingField {
                    frame: "file-end",
                    field: "sha256"
                }
            )
        }),
        (
            br#"{"type":"file-end","id":"i","sha256":""}"#.to_vec(),
            |e| {
                matches!(
                    e,
                    BadHex {
                        frame: "file-end",
                        ..
                    }
                )
            },
        ),
        (
            br#"{"type":"file-end","id":"i","sha256":"zz"}"#.to_vec(),
            |e| matches!(e, BadHex { .. }),
        ),
        (
            format!(r#"{{"type":"file-end","id":"i","sha256":"{sha}0"}}"#).into_bytes(),
            |e| matches!(e, BadHex { .. }),
        ),
        (
            format!(
                r#"{{"type":"file-end","id":"i","sha256":"x{}"}}"#,
                &sha[1..]
            )
            .into_bytes(),
            |e| matches!(e, BadHex { .. }),
        ),
        (
            format!(r#"{{"type":"file-ack","id":"i","sha256":"{sha}"}}"#).into_bytes(),
            |e| matches!(e, MissingField { field: "ok", .. }),
        ),
        (
            format!(r#"{{"type":"file-ack","id":"i","ok":1,"sha256":"{sha}"}}"#).into_bytes(),
            |e| matches!(e, WrongType { field: "ok", .. }),
        ),
        (
            br#"{"type":"file-ack","id":"i","ok":true,"sha256":null}"#.to_vec(),
            |e| {
                matches!(
                    e,
                    WrongType {
                        field: "sha256",
                        ..
                    }
                )
            },
        ),
        (br#"{"type":"file-resume","id":"i"}"#.to_vec(), |e| {
            matches!(
                e,
                MissingField {
                    field: "offset",
                    ..
                }
            )
        }),
        // A lone surrogate is legal in a JS string but not in Rust's.
        (br#"{"type":"text","text":"\udc00"}"#.to_vec(), |e| {
            matches!(e, BadJson(_))
        }),
    ];
    for (data, check) in cases {
        match parse(false, &data) {
            Err(e) => {
                assert!(
                    check(&e),
                    "{:?}: wrong error {e:?}",
                    String::from_utf8_lossy(&data)
                );
                // Every error has a readable message.
                assert!(!e.to_string().is_empty());
            }
            Ok(f) => panic!("{:?} parsed as {f:?}", String::from_utf8_lossy(&data)),
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut s = String::from("{\"type\":\"text\",\"text\":\"a\",\"x\":");
    s.push_str(&"[".repeat(100_000));
    assert!(matches!(
        parse(false, s.as_bytes()),
        Err(ProtocolError::BadJson(_))
    ));
}

#[test]
fn error_messages_name_frame_and_field() {
    let e = parse(false, br#"{"type":"file-start","id":"i","name":"n"}"#).unwrap_err();
    assert_eq!(e.to_string(), "file-start frame has no \"size\" field");
    let e = parse(false, br#"{"type":"file-end","id":"i","sha256":"ab"}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "file-end frame field \"sha256\" is not 64 hex digits"
    );
    let e = parse(false, br#"{"type":"nope"}"#).unwrap_err();
    assert_eq!(e.to_string(), "unknown frame type \"nope\"");
}

#[test]
fn file_start_with_a_path_matches_the_browser_and_round_trips() {
    // web/sdk/transfer.js writes `path` last, after `mime` when there is one.
    let f = Frame::FileStart {
        id: "p".into(),
        name: "c.txt".into(),
        size: 1,
        mime: None,
        path: Some("dir/sub/c.txt".into()),
    };
    let json = f.to_json().unwrap();
    assert_eq!(
        json,
        r#"{"type":"file-start","id":"p","name":"c.txt","size":1,"path":"dir/sub/c.txt"}"#
    );
    assert_eq!(parse(false, json.as_bytes()).unwrap(), f);
    // Absent, null and "" are all "no path".
    for raw in [
        r#"{"type":"file-start","id":"p","name":"c","size":1}"#,
        r#"{"type":"file-start","id":"p","name":"c","size":1,"path":null}"#,
        r#"{"type":"file-start","id":"p","name":"c","size":1,"path":""}"#,
    ] {
        assert!(
            matches!(
                parse(false, raw.as_bytes()).unwrap(),
                Frame::FileStart { path: None, .. }
            ),
            "{raw}"
        );
    }
}
