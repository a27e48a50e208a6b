//! `switchboard play` and `switchboard record` against a real `serve` on
//! loopback, with fixtures made by ffmpeg at test time (testsrc and sine
//! into IVF and Ogg) and the recordings checked with ffprobe. Both come
//! from Debian's `ffmpeg`, which tests/run.sh installs.

mod common;

use common::Server;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sb-media-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd}: {e} (Debian's ffmpeg is needed; tests/run.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `secs` of 320x240 testsrc at 30 fps, a keyframe every `gop` frames.
fn video(dir: &Path, name: &str, codec: &str, secs: u32, gop: u32) -> PathBuf {
    let p = dir.join(name);
    let src = format!("testsrc=size=320x240:rate=30:duration={secs}");
    let g = gop.to_string();
    let mut args = vec![
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &src,
        "-c:v",
        codec,
        "-g",
        &g,
        "-b:v",
        "400k",
    ];
    if codec == "libvpx-vp9" {
        args.extend(["-deadline", "realtime", "-cpu-used", "8"]);
    }
    args.push(p.to_str().unwrap());
    run("ffmpeg", &args);
    p
}

fn audio(dir: &Path, secs: u32) -> PathBuf {
    let p = dir.join("tone.ogg");
    let src = format!("sine=frequency=440:duration={secs}");
    run(
        "ffmpeg",
        &[
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &src,
            "-c:a",
            "libopus",
            "-b:a",
            "48k",
            p.to_str().unwrap(),
        ],
    );
    p
}

/// ffprobe's view of a file's first stream: (codec, width, height, frames
/// decoded, duration in s).
fn probe(p: &Path) -> (String, u64, u64, u64, f64) {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames:format=duration",
            "-of",
            "json",
            p.to_str().unwrap(),
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v["streams"][0];
    let num = |x: &Value| {
        x.as_u64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    (
        s["codec_name"].as_str().unwrap_or("").to_string(),
        num(&s["width"]),
        num(&s["height"]),
        num(&s["nb_read_frames"]),
        v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
    )
}

/// A CLI process whose `--json` events arrive on a channel.
struct Cli {
    child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Cli {
    fn start(args: &[&str]) -> Cli {
        // $SWITCHBOARD_BIN, as in tests/e2e, else the one cargo built.
        let bin = std::env::var("SWITCHBOARD_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchboard").to_string());
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                let v: Value = serde_json::from_str(&l).expect("every stdout line is JSON");
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Cli {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// The first event (seen or to come) matching `f`; panics after `secs`.
    fn wait(&mut self, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| f(v)) {
            return v.clone();
        }
        let end = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if f(&v) {
                        return v;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("exited before {what}; events: {:#?}", self.seen)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {what} within {secs} s; events: {:#?}", self.seen)
                }
            }
        }
    }

    fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn exit(&mut self, secs: u64) -> std::process::ExitStatus {
        for _ in 0..secs * 10 {
            if let Some(s) = self.child.try_wait().unwrap() {
                while let Ok(v) = self.events.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(v);
                }
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("did not exit within {secs} s; events: {:#?}", self.seen);
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn common<'a>(url: &'a str, room: &'a str) -> Vec<&'a str> {
    vec!["--server", url, "--room", room, "--json", "--loopback"]
}

fn done(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == "recording" && e["kind"] == kind && e["done"] == true
}

/// VP8 and Opus files go native to native: the recording has the file's
/// frames (within a few), its picture size and its length, and both sides
/// print `stats` with traffic in them.
#[test]
fn play_to_record_keeps_frames_size_and_length() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let dir = tmpdir("p2r");
    let v = video(&dir, "clip.ivf", "libvpx", 4, 30);
    let a = audio(&dir, 4);
    let (_, w, h, want_frames, _) = probe(&v);
    assert_eq!((w, h, want_frames), (320, 240, 120));
    let out = dir.join("rec");
    let mut rec = Cli::start(
        &[
            &["record", "--out", out.to_str().unwrap()],
            &common(&url, "p2r")[..],
        ]
        .concat(),
    );
    rec.wait("joined", 20, |e| e["event"] == "joined");
    let log = dir.join("frames.jsonl");
    let mut play = Cli::start(
        &[
            &["play", "--frame-log", log.to_str().unwrap()],
            &common(&url, "p2r")[..],
            &[v.to_str().unwrap(), a.to_str().unwrap()],
        ]
        .concat(),
    );
    let s = play.wait("a stats event with traffic", 30, |e| {
        e["event"] == "stats" && e["send_kbps"].as_f64() > Some(50.0)
    });
    assert!(s["rtt_ms"].is_number(), "{s}");
    assert!(play.exit(30).success(), "play ends with its files");
    // The peer left: both files are finished.
    let vd = rec.wait("video finished", 20, done("video"));
    let ad = rec.wait("audio finished", 20, done("audio"));
    rec.wait("stats with traffic at record", 5, |e| {
        e["event"] == "stats" && e["recv_kbps"].as_f64() > Some(50.0)
    });
    rec.interrupt();
    assert!(rec.exit(10).success());
    assert_eq!(vd["codec"], "VP8");
    assert_eq!(ad["codec"], "Opus");
    let (codec, w, h, frames, secs) = probe(Path::new(vd["path"].as_str().unwrap()));
    assert_eq!((codec.as_str(), w, h), ("vp8", 320, 240));
    assert!(
        frames.abs_diff(want_frames) <= 3,
        "{frames} frames of {want_frames}"
    );
    assert!((secs - 4.0).abs() < 0.3, "video lasts {secs} s");
    assert_eq!(vd["frames"].as_u64(), Some(frames));
    let (codec, _, _, packets, secs) = probe(Path::new(ad["path"].as_str().unwrap()));
    assert_eq!(codec, "opus");
    assert!(packets >= 190, "{packets} Opus packets");
    assert!((secs - 4.0).abs() < 0.3, "audio lasts {secs} s");
    // The frame log has every frame sent, in order, with rising times.
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in ["video", "audio"] {
        let of: Vec<&Value> = lines.iter().filter(|l| l["kind"] == kind).collect();
        let field = |k: &str| -> Vec<u64> { of.iter().map(|l| l[k].as_u64().unwrap()).collect() };
        let (media, unix) = (field("media_time"), field("unix_us"));
        assert!(media.windows(2).all(|w| w[0] < w[1]), "{kind} media times");
        assert!(unix.windows(2).all(|w| w[0] <= w[1]), "{kind} send times");
        let mut indexes = field("index");
        indexes.sort_unstable();
        indexes.dedup();
        let want = if kind == "video" {
            120
        } else {
            packets as usize
        };
        assert!(indexes.len() >= want, "{kind}: {} indexes", indexes.len());
    }
    let v0 = lines.iter().find(|l| l["kind"] == "video").unwrap();
    assert_eq!(
        (v0["index"].as_u64(), v0["keyframe"].as_bool()),
        (Some(0), Some(true))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// VP9 with `--loop`: the recording goes on past the file's end with rising
/// timestamps, and record's Ctrl-C leaves a finished, readable file while
/// the peer is still sending.
#[test]
fn looped_vp9_recorded_until_sigint_is_playable() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let dir = tmpdir("loop");
    let v = video(&dir, "clip9.ivf", "libvpx-vp9", 1, 15);
    let out = dir.join("rec");
    let mut rec = Cli::start(
        &[
            &["record", "--out", out.to_str().unwrap()],
            &common(&url, "loop9")[..],
        ]
        .concat(),
    );
    rec.wait("joined", 20, |e| e["event"] == "joined");
    let mut play = Cli::start(
        &[
            &["play", "--loop"],
            &common(&url, "loop9")[..],
            &[v.to_str().unwrap()],
        ]
        .concat(),
    );
    rec.wait("2.5 s of video", 30, |e| {
        e["event"] == "recording" && e["duration_ms"].as_u64() > Some(2500)
    });
    rec.interrupt();
    let d = rec.wait("video finished", 10, done("video"));
    assert!(rec.exit(10).success());
    assert_eq!(d["codec"], "VP9");
    let (codec, w, h, frames, secs) = probe(Path::new(d["path"].as_str().unwrap()));
    assert_eq!((codec.as_str(), w, h), ("vp9", 320, 240));
    // More than two passes of the 30-frame file, and as long as recorded.
    assert!(frames > 60, "{frames} frames");
    let want = d["duration_ms"].as_u64().unwrap() as f64 / 1000.0;
    assert!(
        (secs - want).abs() < 0.2,
        "file says {secs} s, record said {want} s"
    );
    play.interrupt();
    assert!(play.exit(10).success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver that joins mid-stream gets a picture long before the file's
/// only keyframe comes round again: play moves to a keyframe for it.
#[test]
fn late_receiver_gets_a_keyframe_at_once() {
    let server = Server::start(&[]);
    let url = format!("http://{}", server.addr);
    let dir = tmpdir("late");
    // One keyframe in 8 s.
    let v = video(&dir, "onekey.ivf", "libvpx", 8, 1000);
    let mut first = Cli::start(
        &[
            &["record", "--out", dir.join("a").to_str().unwrap()],
            &common(&url, "late")[..],
        ]
        .concat(),
    );
    first.wait("joined", 20, |e| e["event"] == "joined");
    let mut play =
        Cli::start(&[&["play"], &common(&url, "late")[..], &[v.to_str().unwrap()]].concat());
    first.wait("1 s of video", 30, |e| {
        e["event"] == "recording" && e["duration_ms"].as_u64() > Some(1000)
    });
    let mut late = Cli::start(
        &[
            &["record", "--out", dir.join("b").to_str().unwrap()],
            &common(&url, "late")[..],
        ]
        .concat(),
    );
    late.wait("connected", 20, |e| e["event"] == "connected");
    // Without the jump the next keyframe would be the file's end, 8 s in.
    let r = late.wait("video at the late receiver", 4, |e| {
        e["event"] == "recording" && e["kind"] == "video" && e["frames"].as_u64() > Some(0)
    });
    assert_eq!(r["codec"], "VP8");
    late.interrupt();
    first.interrupt();
    play.interrupt();
    for c in [&mut late, &mut first, &mut play] {
        assert!(c.exit(10).success());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Files that are not media fail before joining, naming the file; a cut
/// file plays up to its last whole frame (it gets as far as joining).
#[test]
fn bad_files_fail_clearly_and_cut_files_still_play() {
    let dir = tmpdir("bad");
    let junk = dir.join("junk.ivf");
    std::fs::write(&junk, b"DKIF this is not really a file").unwrap();
    let text = dir.join("notes.ogg");
    std::fs::write(&text, b"hello").unwrap();
    for (f, want) in [(&junk, "IVF"), (&text, "not an IVF")] {
        let mut c = Cli::start(&[
            "play",
            "--json",
            "--room",
            "x",
            "--server",
            "http://127.0.0.1:9",
            f.to_str().unwrap(),
        ]);
        let e = c.wait("error", 10, |e| e["event"] == "error");
        assert_eq!(c.exit(5).code(), Some(1));
        assert_eq!(e["code"], "bad-file");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains(f.to_str().unwrap()) && m.contains(want), "{m}");
    }
    let v = video(&dir, "cut.ivf", "libvpx", 1, 10);
    let bytes = std::fs::read(&v).unwrap();
    std::fs::write(&v, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let mut c = Cli::start(&[
        "play",
        "--json",
        "--room",
        "x",
        "--server",
        "http://127.0.0.1:9",
        v.to_str().unwrap(),
    ]);
    let e = c.wait("error", 10, |e| e["event"] == "error");
    // Past the file: it is the unreachable server that stops it.
    assert_eq!(e["code"], "signaling", "{e}");
    assert_eq!(c.exit(5).code(), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}
