//! Shared by the integration tests: a real `switchboard serve` process on
//! loopback.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// STUN/TURN address (UDP and TCP), unless started with --no-turn.
    pub turn: Option<SocketAddr>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--turn-listen", "127.0.0.1:0", "--external-ip", "127.0.0.1"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchboard");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut turn = None;
        let addr = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "serve exited before listening"
            );
            if let Some(a) = line.trim().strip_prefix("switchboard TURN on udp+tcp ") {
                turn = Some(a.parse().unwrap());
            }
            if let Some(a) = line.trim().strip_prefix("switchboard listening on http://") {
                break a.parse().unwrap();
            }
        };
        Server { child, addr, turn }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// GET over plain HTTP/1.1; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (status, body)
    }

    pub fn metric(&self, needle: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(needle).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no metric {needle} in\n{body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
