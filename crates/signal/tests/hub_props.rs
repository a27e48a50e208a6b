//! Property tests: any sequence of frames, disconnects and clock ticks leaves
//! the hub consistent, and no input makes it panic.

use proptest::prelude::*;
use signal::{ConnId, Hub, HubConfig, Output};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Text(usize, String),
    Binary(usize, usize),
    Disconnect(usize),
    Tick(u64),
}

fn frame() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        "[a-c]{1,2}",
        ".{0,70}"
    ];
    prop_oneof![
        (id.clone(), proptest::option::of(id.clone())).prop_map(|(r, p)| match p {
            Some(p) => format!(
                r#"{{"type":"join","room":{},"peer":{}}}"#,
                json(&r),
                json(&p)
            ),
            None => format!(r#"{{"type":"join","room":{}}}"#, json(&r)),
        }),
        id.clone().prop_map(|to| format!(
            r#"{{"type":"signal","to":{},"data":{{"candidate":null}}}}"#,
            json(&to)
        )),
        Just(r#"{"type":"leave"}"#.to_string()),
        Just(r#"{"type":"ping"}"#.to_string()),
        ".{0,200}",
        "\\{\"type\":\"(join|signal|leave|ping)\".{0,60}\\}",
    ]
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Connect),
        8 => (0..8usize, frame()).prop_map(|(c, f)| Op::Text(c, f)),
        1 => (0..8usize, 0..100_000usize).prop_map(|(c, n)| Op::Binary(c, n)),
        1 => (0..8usize).prop_map(Op::Disconnect),
        1 => (0..3000u64).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn hub_stays_consistent(ops in proptest::collection::vec(op(), 1..120)) {
        let cfg = HubConfig {
            max_room_peers: 3,
            max_message_bytes: 300,
            message_burst: 20,
            rate_limit_strikes: 5,
            idle_timeout: Duration::from_secs(2),
            max_connections: 6,
            ..HubConfig::default()
        };
        let mut hub = Hub::with_seed(cfg, 1);
        let mut now = Instant::now();
        let mut conns: Vec<ConnId> = vec![];
        let mut open: HashSet<ConnId> = HashSet::new();
        for op in ops {
            match op {
                Op::Connect => {
                    if let Ok(c) = hub.connect(now) {
                        conns.push(c);
                        open.insert(c);
                    }
                }
                Op::Text(i, f) => if let Some(&c) = conns.get(i % conns.len().max(1)) {
                    hub.handle_text(c, &f, now)
                },
                Op::Binary(i, n) => if let Some(&c) = conns.get(i % conns.len().max(1)) {
                    hub.handle_binary(c, n, now)
                },
                Op::Disconnect(i) => if let Some(&c) = conns.get(i % conns.len().max(1)) {
                    hub.disconnect(c);
                    open.remove(&c);
                },
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    hub.handle_timeout(now);
                }
            }
            let mut per_conn: HashMap<ConnId, usize> = HashMap::new();
            while let Some(o) = hub.poll_output() {
                match o {
                    Output::Send { conn, frame, .. } => {
                        // Every frame is one JSON object with a string type.
                        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
                        prop_assert!(v["type"].is_string());
                        *per_conn.entry(conn).or_default() += 1;
                    }
                    Output::Close { conn, .. } => {
                        prop_assert!(open.remove(&conn), "closed a connection twice");
                    }
                }
            }
            prop_assert_eq!(hub.connections(), open.len());
            prop_assert!(hub.peers() <= hub.connections());
            prop_assert!(hub.rooms() <= hub.peers());
        }
        hub.shutdown();
        while hub.poll_output().is_some() {}
        prop_assert_eq!((hub.connections(), hub.peers(), hub.rooms()), (0, 0, 0));
    }
}
