//! A client that stops reading is dropped once `--send-queue` frames are
//! waiting for it, with 1008 `send queue full`, and its room mates see it
//! leave; a reading client in the same flood keeps every frame, in order.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
mod common;

use common::{next_json, InProcess, WAIT};
use std::time::Duration;
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

async fn join(url: &str, peer: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(
        json!({"type":"join","room":"q","peer":peer}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_others_keep_everything() {
    let server = InProcess::start(&[
        "--no-turn",
        "--send-queue",
        "8",
        "--max-message-rate",
        "100000",
        "--message-burst",
        "100000",
    ]);
    let url = server.url();
    let mut sender = join(&url, "sender").await;
    let mut slow = join(&url, "slow").await;
    let mut reader = join(&url, "reader").await;
    // `sender` sees both arrive; `slow` sees `reader`.
    assert_eq!(next_json(&mut sender).await["type"], "peer-joined");
    assert_eq!(next_json(&mut sender).await["type"], "peer-joined");
    assert_eq!(next_json(&mut slow).await["type"], "peer-joined");

    // 60 KB frames, to `slow` (which never reads from here on) and to
    // `reader`, until `slow` is gone: far more than the socket buffers hold.
    let pad = "x".repeat(60_000);
    let reading = tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            let v = next_json(&mut reader).await;
            match v["type"].as_str() {
                Some("signal") => {
                    assert_eq!(v["data"]["n"], next, "reader lost or reordered a frame");
                    next += 1;
                }
                Some("peer-left") if v["peer"] == "slow" => return next,
                _ => {}
            }
        }
    });
    let mut n = 0u64;
    let mut left = false;
    while n < 2000 && !left {
        for to in ["slow", "reader"] {
            let m = json!({"type":"signal","to":to,"data":{"n":n,"pad":&pad}});
            sender.send(Message::text(m.to_string())).await.unwrap();
        }
        n += 1;
        // Anything for `sender` (peer-left, or unknown-peer once `slow`
        // is gone) without blocking the flood.
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::from_millis(0), sender.next()).await
        {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "peer-left" && v["peer"] == "slow" {
                left = true;
            }
        }
    }
    assert!(left, "slow was not dropped after {n} frames");
    let got = tokio::time::timeout(WAIT, reading).await.unwrap().unwrap();
    assert!(got > 8, "reader got only {got} frames");

    // What `slow` finds once it reads again: frames, then the close.
    let close = tokio::time::timeout(WAIT, async {
        while let Some(m) = slow.next().await {
            if let Ok(Message::Close(f)) = m {
                return f;
            }
        }
        None
    })
    .await
    .expect("no close frame for slow");
    let f = close.expect("close frame with a code");
    assert_eq!(f.code, CloseCode::Policy);
    assert_eq!(f.reason.as_str(), "send queue full");
}
