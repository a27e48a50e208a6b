//! A `switchboard` CLI process (`send`, `recv`, …) run with `--json`,
//! its events read as they come.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A CLI process whose `--json` events are read as they come.
pub struct Cli {
    pub child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Cli {
    pub fn spawn(args: &[&str]) -> Cli {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Cli {
            child,
            events,
            seen: vec![],
        }
    }

    /// Waits for an event named `name`.
    pub fn wait_for(&mut self, name: &str, within: Duration) -> Value {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return v;
                    }
                }
                Err(_) => panic!("no {name} event within {within:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for the exit (killing the process after `within`); returns
    /// the code and every event.
    pub fn finish(mut self, within: Duration) -> (Option<i32>, Vec<Value>) {
        let end = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends at EOF.
        while let Ok(v) = self.events.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(v);
        }
        let status =
            status.unwrap_or_else(|| panic!("still running after {within:?}; saw {:?}", self.seen));
        (status.code(), self.seen)
    }
}
