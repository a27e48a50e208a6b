//! Codes and links: `send` without `--room` prints a code and a link,
//! `recv CODE` or `recv LINK` gets the file once the two sides proved the
//! secret to each other (SPAKE2 for the code, the link's key otherwise)
//! and saw the same DTLS fingerprints.
//!
//! A wrong code fails both sides with exit code 7 and writes nothing. So
//! does a signaling path that rewrites the `a=fingerprint` lines of the
//! descriptions (a WebSocket proxy here, standing in for a server in the
//! middle), for the code and for the link.

mod common;

use common::cli::Cli;
use common::InProcess;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(30);

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-pairing-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("doc.bin");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    let hash = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (p, hash)
}

fn common(server: &str) -> Vec<String> {
    [
        "--server",
        server,
        "--loopback",
        "--json",
        "--timeout",
        "20",
    ]
    .map(String::from)
    .to_vec()
}

/// Starts `send` without a room; returns it with its code and link.
fn host(server: &str, src: &Path) -> (Cli, String, String) {
    let mut args = vec!["send".to_string()];
    args.extend(common(server));
    args.push(src.to_str().unwrap().to_string());
    let mut send = Cli::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let ev = send.wait_for("code", WAIT);
    let code = ev["code"].as_str().unwrap().to_string();
    let link = ev["link"].as_str().unwrap().to_string();
    (send, code, link)
}

fn guest(server: &str, secret: &str, out: &Path) -> Cli {
    let mut args = vec!["recv".to_string(), secret.to_string()];
    args.extend(common(server));
    if secret.contains('#') {
        // A link names its server itself.
        args.drain(2..4);
    }
    args.extend(["--out", out.to_str().unwrap(), "--count", "1"].map(String::from));
    Cli::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn error_of(events: &[Value]) -> String {
    events
        .iter()
        .find(|e| e["event"] == "error")
        .map(|e| e["code"].as_str().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no error event in {events:?}"))
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn the_code_and_the_link_each_bring_the_file() {
    let server = InProcess::start(&["--no-turn"]);
    let url = format!("http://{}", server.addr);
    let dir = tmpdir("right");
    let (src, want) = file(&dir);
    for use_link in [false, true] {
        let (send, code, link) = host(&url, &src);
        let room = format!("pair-{}", code.split('-').next().unwrap());
        assert!(
            link.starts_with(&format!("{url}/drop#room={room}&key=")),
            "{link}"
        );
        let out = dir.join(format!("out-{use_link}"));
        let recv = guest(&url, if use_link { &link } else { &code }, &out);
        let (rc, events) = recv.finish(WAIT);
        assert_eq!(rc, Some(0), "{events:?}");
        assert!(events.iter().any(|e| e["event"] == "paired"), "{events:?}");
        let got = events
            .iter()
            .find(|e| e["event"] == "file-received")
            .unwrap();
        assert_eq!(got["sha256"], want.as_str());
        assert_eq!(got["ok"], true);
        let (rc, events) = send.finish(WAIT);
        assert_eq!(rc, Some(0), "{events:?}");
        assert!(events.iter().any(|e| e["event"] == "paired"));
    }
}

#[test]
fn a_wrong_code_fails_both_sides_and_writes_nothing() {
    let server = InProcess::start(&["--no-turn"]);
    let url = format!("http://{}", server.addr);
    let dir = tmpdir("wrong");
    let (src, _) = file(&dir);
    let (send, code, _) = host(&url, &src);
    // Same room, other words: the guess a stranger gets.
    let nameplate = code.split('-').next().unwrap();
    let [a, b] = [
        &code.split('-').nth(1).unwrap(),
        &code.split('-').nth(2).unwrap(),
    ];
    let other = if *a == "acorn" { "apple" } else { "acorn" };
    let wrong = format!("{nameplate}-{other}-{b}");
    let out = dir.join("out");
    let recv = guest(&url, &wrong, &out);
    let (rc, events) = recv.finish(WAIT);
    assert_eq!(rc, Some(7), "{events:?}");
    assert_eq!(error_of(&events), "wrong-code");
    let (rc, events) = send.finish(WAIT);
    assert_eq!(rc, Some(7), "{events:?}");
    assert_eq!(error_of(&events), "wrong-code");
    assert!(
        !events.iter().any(|e| e["event"] == "file-sent"),
        "{events:?}"
    );
    assert!(empty(&out), "recv wrote something");
    // A code that does not read is a usage error, before any network.
    let (rc, _) = guest(&url, "7-notaword-apple", &out).finish(WAIT);
    assert_eq!(rc, Some(2));
}

/// A WebSocket proxy to `upstream` that replaces the hex of every
/// `a=fingerprint:sha-256` line it relays with its own: what a signaling
/// server in the middle would do to put its DTLS endpoints in between.
struct Rewriter {
    addr: SocketAddr,
    rewritten: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

const FAKE: &str = "DE:AD:BE:EF:DE:AD:BE:EF:DE:AD:BE:EF:DE:AD:BE:EF:DE:AD:BE:EF:DE:AD:BE:EF:DE:AD:BE:EF:DE:AD:BE:EF";

fn rewrite(text: &str) -> Option<String> {
    const TAG: &str = "a=fingerprint:sha-256 ";
    if !text.contains(TAG) {
        return None;
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(TAG) {
        out.push_str(&rest[..i + TAG.len()]);
        rest = &rest[i + TAG.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
            .unwrap_or(rest.len());
        out.push_str(FAKE);
        rest = &rest[end..];
    }
    out.push_str(rest);
    Some(out)
}

impl Rewriter {
    fn start(upstream: SocketAddr) -> Rewriter {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        let rewritten = Arc::new(AtomicUsize::new(0));
        let count = rewritten.clone();
        rt.spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut path = String::new();
                    // The handshake callback's error type is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let client = tokio_tungstenite::accept_hdr_async(
                        tcp,
                        |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                            path = req.uri().to_string();
                            Ok(resp)
                        },
                    )
                    .await;
                    let Ok(client) = client else { return };
                    let Ok((server, _)) =
                        tokio_tungstenite::connect_async(format!("ws://{upstream}{path}")).await
                    else {
                        return;
                    };
                    let (c_tx, c_rx) = client.split();
                    let (s_tx, s_rx) = server.split();
                    let up = relay(c_rx, s_tx, count.clone());
                    let down = relay(s_rx, c_tx, count);
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
            }
        });
        Rewriter {
            addr,
            rewritten,
            _rt: rt,
        }
    }
}

/// Copies WebSocket messages from `rx` to `tx`, rewriting fingerprints in
/// text ones (and counting those).
async fn relay<R, T>(mut rx: R, mut tx: T, count: Arc<AtomicUsize>)
where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    T: futures_util::Sink<Message> + Unpin,
{
    while let Some(Ok(m)) = rx.next().await {
        let m = match m {
            Message::Text(t) => match rewrite(&t) {
                Some(r) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    Message::text(r)
                }
                None => Message::Text(t),
            },
            other => other,
        };
        if tx.send(m).await.is_err() {
            break;
        }
    }
}

#[test]
fn rewritten_fingerprints_are_caught_for_code_and_link() {
    let server = InProcess::start(&["--no-turn"]);
    let proxy = Rewriter::start(server.addr);
    let url = format!("http://{}", proxy.addr);
    let dir = tmpdir("mitm");
    let (src, _) = file(&dir);
    for use_link in [false, true] {
        let (send, code, link) = host(&url, &src);
        let out = dir.join(format!("out-{use_link}"));
        let recv = guest(&url, if use_link { &link } else { &code }, &out);
        let (rc, events) = recv.finish(WAIT);
        assert_eq!(rc, Some(7), "{events:?}");
        assert_eq!(error_of(&events), "tampered");
        let (rc, events) = send.finish(WAIT);
        assert_eq!(rc, Some(7), "{events:?}");
        assert_eq!(error_of(&events), "tampered");
        assert!(!events.iter().any(|e| e["event"] == "file-sent"));
        assert!(empty(&out), "recv wrote something");
    }
    // The offer and the answer of both runs went through the rewrite.
    assert!(proxy.rewritten.load(Ordering::Relaxed) >= 4);
}

#[test]
fn the_rewriter_rewrites_every_fingerprint_and_nothing_else() {
    let sdp = r#"{"sdp":"v=0\r\na=fingerprint:sha-256 AB:CD:01\r\na=setup:actpass\r\na=fingerprint:sha-256 12:34\r\n"}"#;
    let out = rewrite(sdp).unwrap();
    assert_eq!(out.matches(FAKE).count(), 2);
    assert!(!out.contains("AB:CD:01") && !out.contains("12:34"));
    assert!(out.contains(r"\r\na=setup:actpass\r\n"));
    assert_eq!(rewrite(r#"{"type":"ping"}"#), None);
}
