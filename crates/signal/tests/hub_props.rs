//! Property tests: any sequence of frames, drops, resumes and clock ticks
//! leaves the hub consistent, numbers every session's messages without a
//! gap or a repeat, and no input makes it panic.

use proptest::prelude::*;
use signal::{ConnId, Gone, Hub, HubConfig, Local, Output};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Connect,
    Text(usize, String),
    Binary(usize, usize),
    Disconnect(usize, bool),
    /// A new connection resumes the i-th token seen.
    Resume(usize),
    Ack(usize),
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
        (1..6u64)
            .prop_map(|n| format!(r#"{{"type":"signal","to":"b","seq":{n},"data":{{"n":{n}}}}}"#)),
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
        1 => (0..8usize, any::<bool>()).prop_map(|(c, g)| Op::Disconnect(c, g)),
        1 => (0..8usize).prop_map(Op::Resume),
        1 => (0..8usize).prop_map(Op::Ack),
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
        let mut local = Local::new(Hub::with_seed(cfg, 1));
        let mut now = Instant::now();
        let mut conns: Vec<ConnId> = vec![];
        let mut open: HashSet<ConnId> = HashSet::new();
        // Per connection: the next seq it must get, once numbering started.
        let mut next_seq: HashMap<ConnId, u64> = HashMap::new();
        // Tokens seen, with the last seq their connection got.
        let mut tokens: Vec<(String, ConnId)> = vec![];
        let mut resumed_from: HashMap<ConnId, u64> = HashMap::new();
        for op in ops {
            let hub = &mut local.hub;
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
                Op::Disconnect(i, graceful) => if let Some(&c) = conns.get(i % conns.len().max(1)) {
                    hub.disconnect(c, if graceful { Gone::Closed } else { Gone::Lost });
                    open.remove(&c);
                },
                Op::Resume(i) => if let Some((token, old)) = tokens.get(i % tokens.len().max(1)).cloned() {
                    if let Ok(c) = hub.connect(now) {
                        let seen = next_seq.get(&old).map_or(0, |n| n - 1);
                        conns.push(c);
                        open.insert(c);
                        resumed_from.insert(c, seen);
                        hub.handle_text(c, &format!(r#"{{"type":"resume","session":"{token}","seq":{seen}}}"#), now);
                    }
                },
                Op::Ack(i) => if let Some(&c) = conns.get(i % conns.len().max(1)) {
                    let seen = next_seq.get(&c).map_or(0, |n| n - 1);
                    hub.handle_text(c, &format!(r#"{{"type":"ack","seq":{seen}}}"#), now);
                },
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    hub.handle_timeout(now);
                }
            }
            let mut per_conn: HashMap<ConnId, usize> = HashMap::new();
            while let Some(o) = local.poll_output(now) {
                match o {
                    Output::Send { conn, frame, .. } => {
                        // Every frame is one JSON object with a string type.
                        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
                        prop_assert!(v["type"].is_string());
                        match v["type"].as_str().unwrap() {
                            "welcome" => {
                                next_seq.insert(conn, 1);
                                tokens.push((v["session"].as_str().unwrap().to_string(), conn));
                            }
                            "resumed" => {
                                next_seq.insert(conn, resumed_from[&conn] + 1);
                                tokens.push((v["session"].as_str().unwrap().to_string(), conn));
                            }
                            _ => {}
                        }
                        let numbered = matches!(v["type"].as_str(), Some("signal" | "peer-joined" | "peer-left"));
                        if numbered {
                            prop_assert!(v["seq"].is_u64(), "{}", frame);
                        }
                        if let Some(seq) = v["seq"].as_u64().filter(|_| numbered) {
                            let want = next_seq.get_mut(&conn).expect("numbered frame before welcome");
                            prop_assert_eq!(seq, *want, "gap or repeat on {:?}: {}", conn, frame);
                            *want += 1;
                        }
                        *per_conn.entry(conn).or_default() += 1;
                    }
                    Output::Close { conn, .. } => {
                        prop_assert!(open.remove(&conn), "closed a connection twice");
                    }
                    Output::Note(_) => {}
                    Output::Store(_) => prop_assert!(false, "Local runs store ops"),
                }
            }
            let hub = &local.hub;
            prop_assert_eq!(hub.connections(), open.len());
            prop_assert!(hub.peers() <= hub.connections());
            prop_assert!(hub.rooms() <= hub.peers());
        }
        local.hub.shutdown();
        while local.poll_output(now).is_some() {}
        let hub = &local.hub;
        prop_assert_eq!((hub.connections(), hub.peers(), hub.rooms()), (0, 0, 0));
        prop_assert_eq!(hub.waiting(), 0);
        // Detached sessions end one window later, with nothing left behind.
        now += Duration::from_secs(25);
        local.hub.handle_timeout(now);
        while local.poll_output(now).is_some() {}
        now += Duration::from_secs(2);
        local.hub.handle_timeout(now);
        while local.poll_output(now).is_some() {}
        prop_assert_eq!((local.store.sessions(), local.store.rooms()), (0, 0));
        prop_assert_eq!(local.store.buffered(), 0);
    }
}
