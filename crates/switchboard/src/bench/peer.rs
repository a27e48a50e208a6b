//! `switchboard bench peer`: the two figures we compare with
//! Chromium, measured native ↔ native in one process on loopback:
//!
//! - setup time, from the first `create_offer` (triggered by creating the
//!   data channel) to the channel being open on the offerer, over N runs;
//! - data-channel throughput, reliable and ordered, in 64 KiB messages.
//!
//! `bench/peer-vs-chromium.sh` runs this and the Chromium equivalent
//! (`bench/chromium-peer.mjs`) in the same session.

use anyhow::{bail, Context, Result};
use clap::Args;
use peer::{negotiate, Config, DataChannelInit, Event, HostCandidates, Message, PeerConnection};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct PeerArgs {
    /// Connection setups to time.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Bytes to push through one data channel.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 65536)]
    message: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn cfg() -> Config {
    Config {
        host_candidates: HostCandidates::Only(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        ..Config::default()
    }
}

/// Two connections wired through perfect negotiation in memory. Returns
/// the offerer, its app events, the answerer and its app events.
async fn pair() -> Result<(
    PeerConnection,
    negotiate::AppEvents,
    PeerConnection,
    negotiate::AppEvents,
)> {
    let (a, b) = negotiate::pair(cfg(), cfg()).await?;
    Ok((a.pc, a.app, b.pc, b.app))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn run(a: PeerArgs) -> Result<()> {
    if a.runs == 0 || a.message == 0 || a.message > 262_144 {
        bail!("--runs must be > 0 and --message 1..=262144");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut setups = Vec::with_capacity(a.runs);
        // One warm-up run first, not counted, as the Chromium side does.
        for i in 0..=a.runs {
            let (pa, _aev, pb, _bev) = pair().await?;
            let t0 = Instant::now();
            let dc = pa
                .create_data_channel("bench", DataChannelInit::default())
                .await?;
            tokio::time::timeout(Duration::from_secs(10), dc.opened())
                .await
                .context("setup timed out")??;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if i > 0 {
                setups.push(ms);
            }
            if !a.json {
                eprint!("\rsetup {i}/{}: {ms:.1} ms   ", a.runs);
            }
            pa.close().await;
            pb.close().await;
        }
        if !a.json {
            eprintln!();
        }
        let mut sorted = setups.clone();
        sorted.sort_by(|x, y| x.total_cmp(y));
        let median = percentile(&sorted, 0.5);
        let p95 = percentile(&sorted, 0.95);

        // Throughput over one reliable, ordered channel.
        let (pa, _aev, pb, mut bev) = pair().await?;
        let dc = pa
            .create_data_channel("bulk", DataChannelInit::default())
            .await?;
        tokio::time::timeout(Duration::from_secs(10), dc.opened())
            .await
            .context("setup timed out")??;
        let remote = loop {
            match tokio::time::timeout(Duration::from_secs(10), bev.recv())
                .await
                .context("no remote channel")?
            {
                Some(Event::DataChannel(d)) => break d,
                Some(_) => {}
                None => bail!("answerer events ended"),
            }
        };
        let total = a.bytes;
        let counter = tokio::spawn(async move {
            let mut got: u64 = 0;
            while got < total {
                match remote.recv().await {
                    Some(Message::Binary(b)) => got += b.len() as u64,
                    Some(_) => {}
                    None => break,
                }
            }
            (got, Instant::now())
        });
        let msg = vec![0xA5u8; a.message];
        let t0 = Instant::now();
        let mut sent: u64 = 0;
        let mut last_report = Instant::now();
        while sent < total {
            let n = ((total - sent) as usize).min(a.message);
            dc.send_binary(&msg[..n]).await?;
            sent += n as u64;
            if !a.json && last_report.elapsed() > Duration::from_millis(500) {
                last_report = Instant::now();
                eprint!("\rthroughput: {} / {} MiB", sent >> 20, total >> 20);
            }
        }
        let (got, t_end) = tokio::time::timeout(Duration::from_secs(600), counter)
            .await
            .context("receiver stalled")??;
        if got != total {
            bail!("receiver got {got} of {total} bytes");
        }
        let secs = (t_end - t0).as_secs_f64();
        let mb_s = total as f64 / 1e6 / secs;
        pa.close().await;
        pb.close().await;
        if a.json {
            println!(
                "{}",
                json!({
                    "implementation": "switchboard (str0m)",
                    "setup_ms": {"median": median, "p95": p95, "runs": setups},
                    "throughput_mb_s": mb_s,
                    "bytes": total,
                    "message_bytes": a.message,
                    "seconds": secs,
                })
            );
        } else {
            eprintln!();
            println!(
                "setup time over {} runs: median {median:.1} ms, p95 {p95:.1} ms",
                a.runs
            );
            println!(
                "throughput: {} bytes in {secs:.2} s = {mb_s:.1} MB/s ({} B messages)",
                total, a.message
            );
        }
        Ok(())
    })
}
