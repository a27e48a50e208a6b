//! Shared by the integration tests: `switchboard serve` on loopback, either
//! as a real process ([`Server`]) or in this test process ([`InProcess`]).
#![allow(dead_code)]

pub mod cli;
pub mod redis;
pub mod test_ca;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use switchboard::config::ServeArgs;
use switchboard::serve;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// STUN/TURN address (UDP and TCP), unless started with --no-turn.
    pub turn: Option<SocketAddr>,
    /// The --http-redirect listener, when started with one.
    pub redirect: Option<SocketAddr>,
    /// TURN-over-TLS address, when started with a certificate.
    pub turn_tls: Option<SocketAddr>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", args)
    }

    /// Like [`Server::start`], on a `--listen` address of the caller's.
    pub fn start_at(listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", listen])
            .args(["--turn-listen", "127.0.0.1:0", "--external-ip", "127.0.0.1"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchboard");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut turn = None;
        let mut redirect = None;
        let mut turn_tls = None;
        let addr = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "serve exited before listening"
            );
            if let Some(a) = line.trim().strip_prefix("switchboard TURN on udp+tcp ") {
                turn = Some(a.parse().unwrap());
            }
            if let Some(a) = line.trim().strip_prefix("switchboard TURN on tls ") {
                turn_tls = Some(a.parse().unwrap());
            }
            if let Some(a) = line.trim().strip_prefix("switchboard redirecting http://") {
                redirect = Some(a.trim_end_matches(" to https").parse().unwrap());
            }
            let line = line.trim().replace("https://", "http://");
            if let Some(a) = line.strip_prefix("switchboard listening on http://") {
                break a.parse().unwrap();
            }
        };
        Server {
            child,
            addr,
            turn,
            redirect,
            turn_tls,
        }
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
        http_get(self.addr, path)
    }

    pub fn metric(&self, needle: &str) -> f64 {
        metric(self.addr, needle)
    }
}

/// The next text frame from a WebSocket, parsed as JSON; pings and pongs
/// are skipped, anything else fails the test.
pub async fn next_json<S>(ws: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("connection ended")
            .expect("websocket error");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// GET over plain HTTP/1.1; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with(addr, path, "");
    (status, body)
}

/// GET with `extra` header lines (each ending in CRLF); returns (status,
/// the head lowercased, body).
pub fn http_get_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_lowercase(), body.to_string())
}

/// One value from `/metrics`, by the text before it on its line.
pub fn metric(addr: SocketAddr, needle: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(needle).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no metric {needle} in\n{body}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `switchboard serve` in this test process, through the library, on a
/// listener bound before it starts. It runs on a runtime of its own thread,
/// like the real process on its own, so the test's runtime and blocking
/// helpers such as [`InProcess::get`] cannot stall it.
pub struct InProcess {
    pub addr: SocketAddr,
    /// STUN/TURN address (UDP and TCP), unless started with --no-turn.
    pub turn: Option<SocketAddr>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Starts with the same arguments as [`Server::start`] (TURN on loopback
    /// port 0 unless `--no-turn`).
    pub fn start(args: &[&str]) -> InProcess {
        let base = ["--turn-listen", "127.0.0.1:0", "--external-ip", "127.0.0.1"];
        let cfg = ServeArgs::try_parse_from(base.iter().chain(args))
            .expect("serve arguments")
            .resolve()
            .expect("serve settings");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("serve".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let running = match serve::start(cfg, listener).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = started_tx.send(Err(format!("{e:#}")));
                            return Err(e);
                        }
                    };
                    let _ = started_tx.send(Ok((running.turn_addr(), running.shutdown_token())));
                    running.wait().await
                })
            })
            .unwrap();
        let (turn, stop) = started
            .recv_timeout(WAIT)
            .expect("serve did not start")
            .unwrap_or_else(|e| panic!("serve failed to start: {e}"));
        InProcess {
            addr,
            turn,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// GET over plain HTTP/1.1; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    pub fn metric(&self, needle: &str) -> f64 {
        metric(self.addr, needle)
    }

    /// Shuts down gracefully and waits until everything has stopped;
    /// returns what the server returned.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let thread = self.thread.take().expect("running");
        thread.join().expect("serve thread panicked")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
