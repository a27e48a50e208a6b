//! `switchboard bench signal` against `switchboard serve` (a real process):
//! a few dozen connections in rooms of four, a short relay at a low rate
//! with churn alongside. Correctness only: the machine is shared and noisy,
//! so no timing thresholds.

mod common;

use common::Server;
use std::process::{Command, Stdio};

#[test]
fn bench_signal_relays_everything_once() {
    let mut server = Server::start(&["--no-turn"]);
    let pid = server.child.id().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", "signal", "--server", &server.addr.to_string()])
        .args(["--connections", "48", "--room-size", "4", "--rate", "300"])
        .args(["--duration", "1.5", "--churn", "10", "--server-pid", &pid])
        .stdin(Stdio::null())
        .output()
        .expect("run switchboard bench signal");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!(
        "status {:?}\n--- stdout\n{stdout}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "bench failed:\n{all}");
    let last = stdout.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{all}"));
    let num = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("no number {k} in {v}"))
    };
    assert_eq!(v["protocol"], "v1", "{all}");
    assert_eq!(v["connections"], 48, "{all}");
    assert!(num("sent") > 0.0, "{all}");
    assert_eq!(num("received"), num("sent"), "{all}");
    for k in [
        "loss",
        "duplicates",
        "gaps",
        "errors",
        "dropped",
        "churn_failed",
    ] {
        assert_eq!(num(k), 0.0, "{k}:\n{all}");
    }
    assert!(num("churned") > 0.0, "{all}");
    assert!(num("connect_rate") > 0.0, "{all}");
    assert!(
        num("p99_us") >= num("p50_us") && num("p50_us") > 0.0,
        "{all}"
    );
    // Present because --server-pid was given; their size is not checked.
    num("rss_per_conn_kib");
    num("cpu_us_per_msg");
    server.terminate();
}
