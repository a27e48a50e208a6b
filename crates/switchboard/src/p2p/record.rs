//! `switchboard record`: joins a room and writes every remote track to a
//! file of its own, IVF for VP8/VP9 and Ogg for Opus, named by peer, start
//! time (UTC) and media line. One task per track drives a
//! [`Recorder`]; it finishes the file when the track ends (the peer left,
//! the connection closed) or when the command is interrupted, so a file is
//! playable after Ctrl-C. Progress per track every 2 s.

use super::{
    join, room_config, CliEvent, Failure, Happened, Out, PeerArgs, StatsMeter, Tracker, EXIT_OTHER,
    EXIT_SIGNALING,
};
use clap::Args;
use media::recorder::{Progress, Recorder};
use peer::{Event, IceConnectionState, PeerConnection, RemoteTrack};
use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// `switchboard record`.
#[derive(Args)]
pub struct RecordArgs {
    /// Directory for the recordings (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The options every peer command takes.
    #[command(flatten)]
    pub common: PeerArgs,
}

pub async fn run(a: RecordArgs, out: Out) -> Result<(), Failure> {
    std::fs::create_dir_all(&a.out)
        .map_err(|e| Failure::new(EXIT_OTHER, "io", format!("--out {}: {e}", a.out.display())))?;
    let mut cfg = room_config(&a.common, "record")?;
    // As echo: a browser waiting for the newcomer's offer gets one, and
    // then offers its camera and microphone.
    cfg.channel = Some("chat".into());
    let mut room = join(cfg, &out).await?;
    let mut tracker = Tracker::new(out.clone(), a.common.timeout);
    tracker.report_without_channel = true;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut peers: HashMap<String, (PeerConnection, StatsMeter, bool)> = HashMap::new();
    let mut stats_tick = tokio::time::interval(super::STATS_EVERY);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut result = Ok(());
    loop {
        tokio::select! {
            ev = tracker.next(&mut room) => {
                let Some(ev) = ev else { break };
                match tracker.handle(ev).await {
                    Err(f) => { result = Err(f); break; }
                    Ok(Happened::Connection { peer, pc }) => { peers.insert(peer, (pc, StatsMeter::new(std::time::Instant::now()), false)); }
                    Ok(Happened::Event { peer, event: Event::IceConnectionState(IceConnectionState::Connected | IceConnectionState::Completed) }) => {
                        if let Some(p) = peers.get_mut(&peer) { p.2 = true; }
                    }
                    Ok(Happened::Event { peer, event: Event::Track(track) }) => {
                        let Some((pc, ..)) = peers.get(&peer) else { continue };
                        let job = TrackJob { pc: pc.clone(), peer, dir: a.out.clone(), out: out.clone(), stop: stop.clone() };
                        tasks.spawn(job.run(track));
                    }
                    Ok(Happened::PeerLeft(peer)) => { peers.remove(&peer); }
                    Ok(Happened::SignalingClosed(r)) => {
                        result = Err(Failure::new(EXIT_SIGNALING, "signaling", format!("signaling connection lost: {r}")));
                        break;
                    }
                    Ok(_) => {}
                }
            }
            _ = stats_tick.tick() => {
                for (peer, (pc, meter, _)) in peers.iter_mut().filter(|(_, p)| p.2) {
                    super::emit_stats(&out, peer, pc, meter).await;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut ctrl_c => break,
        }
    }
    // Every file is finished before we go, whatever ended the loop.
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    super::leave_and_wait(&mut room).await;
    result
}

struct TrackJob {
    pc: PeerConnection,
    peer: String,
    dir: PathBuf,
    out: Out,
    stop: CancellationToken,
}

/// The file of one track, opened at its first frame.
struct Recording {
    file: tokio::fs::File,
    path: String,
    rec: Recorder,
    codec: &'static str,
}

/// How often a video track with no keyframe yet asks for one.
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);

impl TrackJob {
    async fn run(self, mut track: RemoteTrack) {
        let kind = if track.kind == peer::MediaKind::Video {
            "video"
        } else {
            "audio"
        };
        let mid = track.mid.to_string();
        let mut rec: Option<Recording> = None;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut tick = tokio::time::interval(super::STATS_EVERY);
        let mut kf_tick = tokio::time::interval(KEYFRAME_RETRY);
        let mut refused = false;
        loop {
            tokio::select! {
                f = track.frames.recv() => {
                    let Some(f) = f else { break };
                    if refused { continue; }
                    if rec.is_none() {
                        match self.open(&f, kind, &mid).await {
                            Ok(r) => rec = Some(r),
                            Err(m) => {
                                refused = true;
                                self.out.note(|| m.clone());
                                tracing::warn!("{m}");
                                continue;
                            }
                        }
                    }
                    let Some(r) = &mut rec else { continue };
                    r.rec.push(f.time.numer(), &f.data, &mut buf);
                    if !buf.is_empty() {
                        if let Err(e) = r.file.write_all(&buf).await {
                            self.out.note(|| format!("{}: {e}; recording of this track stopped", r.path));
                            refused = true;
                        }
                        buf.clear();
                    }
                }
                _ = kf_tick.tick() => {
                    if rec.as_ref().is_some_and(|r| r.rec.wants_keyframe()) || (rec.is_none() && kind == "video") {
                        self.pc.request_keyframe(track.mid);
                    }
                }
                _ = tick.tick() => {
                    if let Some(r) = &rec {
                        self.progress(r, kind, &mid, false);
                    }
                }
                _ = self.stop.cancelled() => break,
            }
        }
        if let Some(mut r) = rec {
            let header = r.rec.finish(&mut buf);
            let done = async {
                r.file.write_all(&buf).await?;
                if let Some(h) = header {
                    r.file.seek(SeekFrom::Start(0)).await?;
                    r.file.write_all(&h).await?;
                }
                r.file.flush().await?;
                r.file.sync_all().await
            };
            if let Err(e) = done.await {
                self.out
                    .note(|| format!("{}: finishing the file: {e}", r.path));
            }
            self.progress(&r, kind, &mid, true);
        }
    }

    async fn open(&self, f: &peer::MediaFrame, kind: &str, mid: &str) -> Result<Recording, String> {
        let (codec, ext, name) = match f.params.spec().codec {
            peer::Codec::Vp8 => (media::Codec::Vp8, "ivf", "VP8"),
            peer::Codec::Vp9 => (media::Codec::Vp9, "ivf", "VP9"),
            peer::Codec::Opus => (media::Codec::Opus, "ogg", "Opus"),
            other => {
                return Err(format!(
                    "{} sends {kind} as {other}, which record cannot keep (VP8, VP9 and Opus)",
                    self.peer
                ))
            }
        };
        let path = file_name(&self.dir, &self.peer, SystemTime::now(), kind, mid, ext);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let serial = rand::random::<u32>();
        let path = path.display().to_string();
        self.out
            .note(|| format!("recording {kind} of {} to {path}", self.peer));
        Ok(Recording {
            file,
            path,
            rec: Recorder::new(codec, serial),
            codec: name,
        })
    }

    fn progress(&self, r: &Recording, kind: &str, mid: &str, done: bool) {
        let p: Progress = r.rec.progress();
        let ev = CliEvent::Recording {
            peer: &self.peer,
            kind,
            mid,
            codec: r.codec,
            path: &r.path,
            duration_ms: p.duration.as_millis() as u64,
            bytes: p.bytes,
            frames: p.frames,
            done,
        };
        self.out.event(ev, || {
            format!(
                "{} {kind}: {:.1} s, {}, {} frames{}",
                self.peer,
                p.duration.as_secs_f64(),
                super::human_bytes(p.bytes),
                p.frames,
                if done {
                    format!(" -> {} (finished)", r.path)
                } else {
                    String::new()
                }
            )
        });
    }
}

/// `DIR/PEER-YYYYMMDDTHHMMSSZ-KIND-MID.EXT`, the peer id reduced to
/// `[A-Za-z0-9_-]` (the server's rule for ids, kept here for paths).
fn file_name(dir: &Path, peer: &str, at: SystemTime, kind: &str, mid: &str, ext: &str) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect()
    };
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    dir.join(format!(
        "{}-{}-{kind}-{}.{ext}",
        clean(peer),
        utc_stamp(secs),
        clean(mid)
    ))
}

/// `YYYYMMDDTHHMMSSZ` of Unix seconds (the civil calendar from a day
/// count, proleptic Gregorian).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 0000-03-01, in 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_and_file_names() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_798_761_599), "20261231T235959Z");
        let at = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        let p = file_name(Path::new("/r"), "p/../x", at, "video", "0", "ivf");
        assert_eq!(p, Path::new("/r/p____x-21000101T000000Z-video-0.ivf"));
    }
}
