//! `switchboard play`: streams pre-encoded files into a room. The files are
//! read whole and parsed by [`media`] (IVF VP8/VP9, Ogg Opus); one
//! [`Pacer`] per file sets the pace for every peer, so a peer that joins
//! midway gets the stream where it is, starting at a keyframe (its decoder's
//! keyframe request, and our own at its start, move the video pacer to one).
//! Without `--loop` the command leaves once every file has been sent.

use super::{
    join, room_config, Failure, Happened, Out, PeerArgs, StatsMeter, Tracker, EXIT_CONNECTION,
    EXIT_OTHER, EXIT_SIGNALING, EXIT_USAGE,
};
use clap::Args;
use media::pacer::Pacer;
use media::Track;
use peer::{
    Event, IceConnectionState, MediaFrame, MediaKind, PayloadParams, PeerConnection, TrackSender,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// `switchboard play`.
#[derive(Args)]
pub struct PlayArgs {
    /// Files to stream: IVF (VP8 or VP9) and Ogg (Opus); at most one video
    /// and one audio file, played side by side.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Start again at the end, forever; without it `play` leaves when the
    /// files end.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Largest file read, in bytes (files are read whole into memory).
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub max_file_bytes: u64,
    /// Largest frame taken from a file, in bytes; a bigger one is a corrupt
    /// file.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    pub max_frame_bytes: usize,
    /// Shortest time from a keyframe to a jump that a receiver's request
    /// (PLI/FIR) causes, in milliseconds: a request sooner than that is
    /// dropped (a new receiver's jump is held until then). 0: no limit.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub min_keyframe_interval: u64,
    /// Append one JSON line per frame handed to the peers to FILE: kind,
    /// index in the file, file and media time, and the wall-clock time
    /// (for measuring delay end to end).
    #[arg(long, value_name = "FILE")]
    pub frame_log: Option<PathBuf>,
    /// The options every peer command takes.
    #[command(flatten)]
    pub common: PeerArgs,
}

/// One file being played.
struct Source {
    track: Arc<Track>,
    codec: peer::Codec,
    kind: MediaKind,
    pacer: Option<Pacer>,
}

/// A peer we stream to: one sender per source, usable once `params` is.
struct Receiver {
    pc: PeerConnection,
    senders: Vec<TrackSender>,
    params: Option<Vec<PayloadParams>>,
    meter: StatsMeter,
}

fn load(a: &PlayArgs) -> Result<Vec<Source>, Failure> {
    let mut sources: Vec<Source> = Vec::new();
    for path in &a.files {
        let p = path.display();
        let fail = |m: String| Failure::new(EXIT_OTHER, "bad-file", format!("{p}: {m}"));
        let len = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .len();
        if len > a.max_file_bytes {
            return Err(fail(format!(
                "{len} bytes is more than --max-file-bytes {}",
                a.max_file_bytes
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let track = media::read_file(&bytes, a.max_frame_bytes).map_err(|e| fail(e.to_string()))?;
        if let Some(t) = &track.truncated {
            tracing::warn!(
                "{p}: {t}; playing the {} whole frames before it",
                track.frames.len()
            );
        }
        let (codec, kind) = match track.codec {
            media::Codec::Vp8 => (peer::Codec::Vp8, MediaKind::Video),
            media::Codec::Vp9 => (peer::Codec::Vp9, MediaKind::Video),
            media::Codec::Opus => (peer::Codec::Opus, MediaKind::Audio),
        };
        if sources.iter().any(|s| s.kind == kind) {
            return Err(Failure::new(
                EXIT_USAGE,
                "usage",
                format!("{p}: a second {kind:?} file; play takes one video and one audio file")
                    .to_lowercase(),
            ));
        }
        sources.push(Source {
            track: Arc::new(track),
            codec,
            kind,
            pacer: None,
        });
    }
    Ok(sources)
}

/// How long a peer's media lines may take to be negotiated after ICE is up.
const NEGOTIATION_WAIT: Duration = Duration::from_secs(10);

/// Waits until every sender's line has codecs, then picks ours on each.
async fn resolve(
    senders: Vec<TrackSender>,
    codecs: Vec<peer::Codec>,
) -> Result<Vec<PayloadParams>, peer::Error> {
    let start = Instant::now();
    loop {
        let mut all = Vec::new();
        let mut waiting = false;
        for (s, c) in senders.iter().zip(&codecs) {
            let n = s.negotiated().await?;
            if n.is_empty() {
                waiting = true;
                break;
            }
            all.push(peer::pick_codec(s.kind, *c, &n)?);
        }
        if !waiting {
            return Ok(all);
        }
        if start.elapsed() > NEGOTIATION_WAIT {
            // Names the codec and "nothing yet".
            let (s, c) = senders
                .iter()
                .zip(&codecs)
                .next()
                .ok_or(peer::Error::Closed)?;
            return peer::pick_codec(s.kind, *c, &[]).map(|_| Vec::new());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(a: PlayArgs, out: Out) -> Result<(), Failure> {
    let mut sources = load(&a)?;
    let mut frame_log = match &a.frame_log {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    Failure::new(EXIT_OTHER, "frame-log", format!("{}: {e}", path.display()))
                })?,
        )),
        None => None,
    };
    let min_keyframe_interval = Duration::from_millis(a.min_keyframe_interval);
    for (s, path) in sources.iter().zip(&a.files) {
        let t = &s.track;
        let secs = t.duration as f64 / f64::from(t.codec.clock_rate());
        out.note(|| match t.size {
            Some((w, h)) => format!(
                "{}: {} {w}x{h}, {} frames, {secs:.1} s",
                path.display(),
                t.codec,
                t.frames.len()
            ),
            None => format!(
                "{}: {}, {} packets, {secs:.1} s",
                path.display(),
                t.codec,
                t.frames.len()
            ),
        });
    }
    let mut cfg = room_config(&a.common, "play")?;
    // As echo: a browser waiting for the newcomer's offer gets one.
    cfg.channel = Some("chat".into());
    let mut room = join(cfg, &out).await?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    tracker.report_without_channel = true;
    let mut receivers: HashMap<String, Receiver> = HashMap::new();
    let (ready_tx, mut ready_rx) =
        mpsc::unbounded_channel::<(String, Result<Vec<PayloadParams>, peer::Error>)>();
    let mut stats_tick = tokio::time::interval(super::STATS_EVERY);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let codecs: Vec<peer::Codec> = sources.iter().map(|s| s.codec).collect();
    loop {
        let next_due = sources
            .iter()
            .filter_map(|s| s.pacer.as_ref()?.next_at())
            .min();
        let started = sources.iter().any(|s| s.pacer.is_some());
        if started && next_due.is_none() {
            out.note(|| "end of the files; leaving".into());
            break;
        }
        let sleep = tokio::time::sleep_until(
            next_due
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .into(),
        );
        tokio::select! {
            ev = tracker.next(&mut room) => {
                let Some(ev) = ev else { break };
                match tracker.handle(ev).await? {
                    Happened::Connection { peer, pc } => {
                        let mut senders = Vec::new();
                        for s in &sources {
                            match pc.add_stream_track(s.kind, "switchboard-play").await {
                                Ok(t) => senders.push(t),
                                Err(e) => tracing::debug!("add_track for {peer}: {e}"),
                            }
                        }
                        receivers.insert(peer, Receiver { pc, senders, params: None, meter: StatsMeter::new(std::time::Instant::now()) });
                    }
                    Happened::Event { peer, event: Event::IceConnectionState(IceConnectionState::Connected | IceConnectionState::Completed) } => {
                        if let Some(r) = receivers.get(&peer).filter(|r| r.params.is_none()) {
                            let (tx, senders, codecs) = (ready_tx.clone(), r.senders.clone(), codecs.clone());
                            tokio::spawn(async move {
                                let res = resolve(senders, codecs).await;
                                let _ = tx.send((peer, res));
                            });
                        }
                    }
                    Happened::Event { event: Event::KeyframeRequest { mid }, peer } => {
                        let is_ours = receivers.get(&peer).is_some_and(|r| r.senders.iter().any(|s| s.mid.is_none() || s.mid == Some(mid)));
                        if is_ours {
                            keyframe(&mut sources, Instant::now(), false);
                        }
                    }
                    Happened::PeerLeft(peer) => { receivers.remove(&peer); }
                    Happened::SignalingClosed(r) => {
                        return Err(Failure::new(EXIT_SIGNALING, "signaling", format!("signaling connection lost: {r}")));
                    }
                    _ => {}
                }
            }
            Some((peer, res)) = ready_rx.recv() => {
                let Some(r) = receivers.get_mut(&peer) else { continue };
                match res {
                    Ok(params) => {
                        r.params = Some(params);
                        let now = Instant::now();
                        for s in &mut sources {
                            if s.pacer.is_none() {
                                let mut p = Pacer::new(s.track.clone(), a.looping, now);
                                p.set_min_keyframe_interval(min_keyframe_interval);
                                s.pacer = Some(p);
                            }
                        }
                        // A late joiner needs a keyframe now, not at the next one.
                        keyframe(&mut sources, now, true);
                        out.note(|| format!("streaming to {peer}"));
                    }
                    Err(e) => {
                        return Err(Failure::new(EXIT_CONNECTION, "codec-not-negotiated", format!("{peer}: {e}")));
                    }
                }
            }
            _ = sleep, if next_due.is_some() => {
                let now = Instant::now();
                for (i, s) in sources.iter_mut().enumerate() {
                    let Some(p) = &mut s.pacer else { continue };
                    while let Some(d) = p.poll(now) {
                        if let Some(log) = &mut frame_log {
                            log_frame(log, s.kind, s.track.frames[d.index].ts, &d);
                        }
                        for r in receivers.values() {
                            let Some(params) = &r.params else { continue };
                            let (Some(sender), Some(pp)) = (r.senders.get(i), params.get(i)) else { continue };
                            let _ = sender.write(MediaFrame {
                                params: *pp,
                                time: peer::MediaTime::new(d.media_time, pp.spec().clock_rate),
                                network_time: now,
                                data: d.data.clone(),
                            });
                        }
                    }
                }
            }
            _ = stats_tick.tick() => {
                if let Some(log) = &mut frame_log {
                    let _ = log.flush();
                }
                for (peer, r) in receivers.iter_mut().filter(|(_, r)| r.params.is_some()) {
                    super::emit_stats(&out, peer, &r.pc, &mut r.meter).await;
                }
            }
            _ = &mut ctrl_c => break,
        }
    }
    // Let the last frames leave before the connections close, and say how
    // each connection did since its last `stats`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (peer, r) in receivers.iter_mut().filter(|(_, r)| r.params.is_some()) {
        super::emit_stats(&out, peer, &r.pc, &mut r.meter).await;
    }
    super::leave_and_wait(&mut room).await;
    if let Some(log) = &mut frame_log {
        let _ = log.flush();
    }
    Ok(())
}

/// One `--frame-log` line; the time is taken as the frame is handed to the
/// connections (packetizing and encryption follow in their tasks). A write
/// error is not worth stopping the stream for.
fn log_frame(log: &mut impl Write, kind: MediaKind, file_time: u64, d: &media::pacer::Due) {
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_micros());
    let kind = match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    let _ = writeln!(
        log,
        r#"{{"kind":"{kind}","index":{},"file_time":{file_time},"media_time":{},"keyframe":{},"unix_us":{unix_us}}}"#,
        d.index, d.media_time, d.keyframe
    );
}

/// A receiver asked for a keyframe (or, `joined`, needs its first): the
/// video pacer moves, as its rate limit allows.
fn keyframe(sources: &mut [Source], now: Instant, joined: bool) {
    for s in sources.iter_mut().filter(|s| s.kind == MediaKind::Video) {
        if let Some(p) = &mut s.pacer {
            if joined {
                p.new_receiver(now);
            } else {
                p.keyframe_request(now);
            }
        }
    }
}
