//! `switchboard chat`: stdin lines go out as `text` frames, the peer's
//! lines come out on stdout (or as `text` JSON events). Ends at end of
//! input or when the peer leaves.

use super::{first_link, join, room_config, ChatArgs, CliEvent, Failure, Happened, Out, Tracker};
use peer::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use transfer::Frame;

pub async fn run(a: ChatArgs, out: Out) -> Result<(), Failure> {
    let cfg = room_config(&a.common, "chat")?;
    let mut room = join(cfg, &out).await?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    let link = first_link(&mut room, &mut tracker).await?;
    let peer = link.peer.clone();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(text)) => {
                    let frame = Frame::Text { text };
                    let json = frame.to_json().unwrap_or_default();
                    link.channel.send(Message::Text(json)).await.map_err(|e| Failure::new(super::EXIT_CONNECTION, "connection-failed", e.to_string()))?;
                }
                _ => {
                    let _ = link.channel.flush().await;
                    break;
                }
            },
            m = link.channel.recv() => {
                let Some(m) = m else { break };
                if let Message::Text(t) = m {
                    match transfer::parse(false, t.as_bytes()) {
                        Ok(Frame::Text { text }) => {
                            if out.is_json() {
                                out.event(CliEvent::Text { peer: &peer, text: &text }, String::new);
                            } else {
                                println!("{text}");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!("ignoring a bad frame: {e}"),
                    }
                }
            }
            ev = tracker.next(&mut room) => {
                let Some(ev) = ev else { continue };
                match tracker.handle(ev).await? {
                    Happened::PeerLeft(p) if p == peer => break,
                    Happened::RestartsExhausted(p) if p == peer => return Err(super::restarts_exhausted(&peer)),
                    _ => {}
                }
            }
        }
    }
    room.leave();
    link.pc.close().await;
    Ok(())
}
