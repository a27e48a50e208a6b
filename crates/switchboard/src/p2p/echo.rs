//! `switchboard echo`: a bot for trying a room. Every data-channel message
//! comes back on the channel it arrived on; every audio and video track a
//! peer sends comes back to that peer on the same media line (so a browser
//! sees its own camera), and keyframe requests are passed upstream so the
//! returned video recovers from loss.

use super::{join, room_config, CliEvent, EchoArgs, Failure, Happened, Out, Tracker};
use peer::{DataChannel, Event, PeerConnection};

pub async fn run(a: EchoArgs, out: Out) -> Result<(), Failure> {
    let mut cfg = room_config(&a.common, "echo")?;
    // The echo bot opens `chat` as a newcomer too, so a browser that was
    // waiting for the newcomer's offer gets one even before it adds media.
    cfg.channel = Some("chat".into());
    let mut room = join(cfg, &out).await?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    tracker.report_without_channel = true;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let ev = tokio::select! {
            ev = tracker.next(&mut room) => ev,
            _ = &mut ctrl_c => break,
        };
        let Some(ev) = ev else { break };
        match tracker.handle(ev).await? {
            Happened::Linked(l) => spawn_channel_echo(l.channel),
            Happened::OtherChannel { channel, .. } => spawn_channel_echo(channel),
            Happened::Event {
                peer,
                event: Event::Track(track),
            } => {
                let Some(pc) = tracker
                    .connections()
                    .find(|(p, _)| **p == peer)
                    .map(|(_, pc)| pc.clone())
                else {
                    continue;
                };
                let kind = format!("{:?}", track.kind).to_lowercase();
                let mid = track.mid.to_string();
                out.event(
                    CliEvent::Track {
                        peer: &peer,
                        kind: &kind,
                        mid: &mid,
                    },
                    || format!("echoing {:?} from {peer}", track.kind).to_lowercase(),
                );
                spawn_track_echo(pc, track);
            }
            Happened::Event {
                peer,
                event: Event::KeyframeRequest { mid },
            } => {
                // Our outgoing video on `mid` is their video: ask them.
                if let Some((_, pc)) = tracker.connections().find(|(p, _)| **p == peer) {
                    pc.request_keyframe(mid);
                }
            }
            Happened::SignalingClosed(r) => {
                return Err(Failure::new(
                    super::EXIT_SIGNALING,
                    "signaling",
                    format!("signaling connection lost: {r}"),
                ));
            }
            _ => {}
        }
        // Connections that never come up are dropped quietly: a bot serves
        // whoever manages to connect.
    }
    room.leave();
    Ok(())
}

fn spawn_channel_echo(ch: DataChannel) {
    tokio::spawn(async move {
        if ch.opened().await.is_err() {
            return;
        }
        while let Some(m) = ch.recv().await {
            if ch.send(m).await.is_err() {
                break;
            }
        }
    });
}

fn spawn_track_echo(pc: PeerConnection, mut track: peer::RemoteTrack) {
    let sender = match pc.sender_for(&track) {
        Ok(s) => s,
        Err(e) => {
            tracing::info!("cannot echo media line {}: {e}", track.mid);
            return;
        }
    };
    // The first frames may predate our decoder-side keyframe; ask for one.
    pc.request_keyframe(track.mid);
    tokio::spawn(async move {
        while let Some(frame) = track.frames.recv().await {
            if sender.write(frame).is_err() {
                break;
            }
        }
    });
}
