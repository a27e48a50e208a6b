//! What a run cost, read from Linux `/proc`: CPU time (utime + stime) and
//! RSS of the server process (`--server-pid`) and of the bench itself, and
//! the CPU time the hypervisor stole from the machine. Sampled inside the
//! bench at the exact edges of the measured interval, so the numbers line
//! up with the packet counts.

use anyhow::{bail, Context, Result};
use std::time::Instant;

/// Clock ticks per second of the times in `/proc/PID/stat` (USER_HZ). The
/// kernel reports 100 on every architecture we build for, whatever its
/// internal HZ.
const USER_HZ: f64 = 100.0;

/// utime + stime of a process, all threads, in seconds. `pid` may be
/// "self".
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields from the last ')'. Field 3 (state) comes first there.
    let rest = text.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (Some(u), Some(s)) = (f.get(14 - 3), f.get(15 - 3)) else {
        bail!("unexpected format of {path}")
    };
    let ticks: u64 = u.parse::<u64>()? + s.parse::<u64>()?;
    Ok(ticks as f64 / USER_HZ)
}

/// Checks a `--server-pid` flag up front, so a typo fails before the run
/// rather than as a missing figure after it.
pub fn check_server_pid(pid: Option<u32>) -> Result<()> {
    if let Some(pid) = pid {
        cpu_seconds(&pid.to_string())
            .with_context(|| format!("--server-pid {pid}: no such process?"))?;
    }
    Ok(())
}

/// Resident set size in KiB.
pub fn rss_kib(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// (steal, total) jiffies over all CPUs from `/proc/stat`; zeros where
/// unavailable.
fn steal_total() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is
    // already inside user).
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.get(7).copied().unwrap_or(0), v.iter().sum())
}

/// One reading at an interval edge.
pub struct Sample {
    at: Instant,
    server_cpu: Option<f64>,
    bench_cpu: f64,
    steal: (u64, u64),
}

impl Sample {
    pub fn take(server_pid: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            server_cpu: server_pid.and_then(|p| cpu_seconds(&p.to_string()).ok()),
            bench_cpu: cpu_seconds("self").unwrap_or(0.0),
            steal: steal_total(),
        }
    }
}

/// The cost of the measured interval.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub seconds: f64,
    /// Server CPU, seconds.
    pub server_cpu: Option<f64>,
    pub server_rss_kib: Option<u64>,
    /// Bench CPU, seconds.
    pub bench_cpu: f64,
    /// Share of all CPU time stolen by the hypervisor, percent.
    pub steal_pct: Option<f64>,
}

impl Usage {
    pub fn between(a: &Sample, b: &Sample, server_pid: Option<u32>) -> Usage {
        let server_cpu = match (a.server_cpu, b.server_cpu) {
            (Some(x), Some(y)) => Some(y - x),
            _ => None,
        };
        let total = b.steal.1.saturating_sub(a.steal.1);
        Usage {
            seconds: b.at.duration_since(a.at).as_secs_f64(),
            server_cpu,
            server_rss_kib: server_pid.and_then(|p| rss_kib(&p.to_string()).ok()),
            bench_cpu: b.bench_cpu - a.bench_cpu,
            steal_pct: (total > 0)
                .then(|| 100.0 * b.steal.0.saturating_sub(a.steal.0) as f64 / total as f64),
        }
    }
}

/// The usage between `from` and `to`, sampled by a task of its own at
/// exactly those instants (so the figures line up with packets counted
/// over the same interval).
pub fn sample_between(
    from: tokio::time::Instant,
    to: tokio::time::Instant,
    server_pid: Option<u32>,
) -> tokio::task::JoinHandle<Usage> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let a = Sample::take(server_pid);
        tokio::time::sleep_until(to).await;
        let b = Sample::take(server_pid);
        Usage::between(&a, &b, server_pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds("self").unwrap() >= 0.0);
        assert!(rss_kib("self").unwrap() > 0);
        let a = Sample::take(Some(std::process::id()));
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = Sample::take(Some(std::process::id()));
        let u = Usage::between(&a, &b, Some(std::process::id()));
        assert!(u.server_cpu.unwrap() >= 0.0 && u.server_rss_kib.unwrap() > 0);
        assert!(u.seconds >= 0.0);
    }
}
