//! Property tests: hostile input never panics; any file round-trips.

mod common;

use proptest::prelude::*;
use transfer::{parse, Frame, Receiver};

/// JSON-ish text built from frame-shaped pieces, so the fuzzer reaches the
/// field checks instead of dying in the JSON parser every time.
fn frame_like() -> impl Strategy<Value = String> {
    let ty = prop_oneof![
        Just("\"text\"".to_string()),
        Just("\"file-start\"".to_string()),
        Just("\"file-end\"".to_string()),
        Just("\"file-ack\"".to_string()),
        Just("\"file-resume\"".to_string()),
        "\"[a-z-]{0,12}\"",
        Just("null".to_string()),
        Just("7".to_string()),
    ];
    let value = prop_oneof![
        "\"[ -~]{0,70}\"",
        "\"[0-9a-fA-F]{64}\"",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ];
    let key = prop_oneof![
        Just("id"),
        Just("name"),
        Just("size"),
        Just("mime"),
        Just("sha256"),
        Just("ok"),
        Just("text"),
        Just("offset"),
        Just("zzz"),
    ];
    (ty, proptest::collection::vec((key, value), 0..8)).prop_map(|(ty, fields)| {
        let mut s = format!("{{\"type\":{ty}");
        for (k, v) in fields {
            s.push_str(&format!(",\"{k}\":{v}"));
        }
        s.push('}');
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(binary: bool, data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(binary, &data);
    }

    #[test]
    fn random_frame_like_json_never_panics_and_reserializes(s in frame_like()) {
        if let Ok(f) = parse(false, s.as_bytes()) {
            // Whatever parses re-encodes to something that parses the same.
            let again = f.encode();
            prop_assert_eq!(parse(false, again.as_bytes()).unwrap(), f);
        }
    }

    #[test]
    fn random_frame_sequences_never_panic_or_leak(
        steps in proptest::collection::vec(
            prop_oneof![
                frame_like().prop_map(|s| (false, s.into_bytes())),
                proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| (true, b)),
                (0u64..50, "[a-c]{1,2}").prop_map(|(size, id)| (false, format!(
                    r#"{{"type":"file-start","id":"{id}","name":"n","size":{size}}}"#).into_bytes())),
                "[a-c]{1,2}".prop_map(|id| (false, format!(
                    r#"{{"type":"file-end","id":"{id}","sha256":"{}"}}"#, transfer::Digest::empty()).into_bytes())),
            ],
            0..30,
        ),
        abort_at_end: bool,
    ) {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut rx = Receiver::new(dir.path());
            for (binary, data) in &steps {
                if let Ok(frame) = parse(*binary, data) {
                    let _ = rx.handle(&frame);
                }
                // Never more parts than files announced.
                let parts = common::list(dir.path()).into_iter().filter(|n| n.ends_with(".part")).count();
                prop_assert!(parts <= steps.len());
            }
            if abort_at_end {
                rx.abort();
            }
        }
        // Whatever happened, what survives the receiver is kept parts for
        // a resume: under their canonical name (never a numbered second
        // part), at most one per size announced (all files here are "n").
        let left: Vec<String> = common::list(dir.path()).into_iter().filter(|n| n.ends_with(".part")).collect();
        let sizes: std::collections::HashSet<&[u8]> = steps.iter().filter(|(b, d)| !b && d.windows(10).any(|w| w == b"file-start")).map(|(_, d)| &d[..]).collect();
        prop_assert!(left.len() <= sizes.len(), "{:?}", left);
        prop_assert!(left.iter().all(|n| !n.trim_end_matches(".part").rsplit('.').next().unwrap().contains('-')), "{:?}", left);
    }

    #[test]
    fn any_file_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..20_000),
        chunk in 1usize..=transfer::MAX_CHUNK,
        name in "\\PC{0,40}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut rx = Receiver::new(dir.path());
        let (fin, outcome, _) = common::run(&data, &name, chunk, &mut rx);
        prop_assert!(outcome.is_verified());
        let path = fin.result.unwrap();
        prop_assert_eq!(path.parent().unwrap(), dir.path());
        prop_assert_eq!(std::fs::read(&path).unwrap(), data);
        prop_assert_eq!(common::list(dir.path()).len(), 1);
    }

    #[test]
    fn sanitized_names_are_single_safe_components(raw in "\\PC{0,300}|[./\\\\a\\x00-\\x1f]{0,20}") {
        let s = transfer::sanitize_name(&raw);
        prop_assert!(!s.is_empty());
        prop_assert!(s.len() <= transfer::MAX_NAME_BYTES);
        prop_assert!(!s.starts_with('.'));
        prop_assert!(!s.contains(['/', '\\', '\0']));
        prop_assert!(!s.chars().any(char::is_control));
        prop_assert!(s != "..");
        // Idempotent: a sanitized name is its own sanitized form.
        prop_assert_eq!(transfer::sanitize_name(&s), s.clone());
    }
}

#[test]
fn chunk_frames_borrow_the_message() {
    let data = vec![1u8, 2, 3];
    let Frame::Chunk(b) = parse(true, &data).unwrap() else {
        panic!()
    };
    assert_eq!(b.as_ptr(), data.as_ptr());
}
