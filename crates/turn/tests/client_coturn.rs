//! Interop with an independent TURN server: the sans-IO client, driven over
//! real UDP and TCP sockets, against coturn's `turnserver` (Debian package
//! `coturn`; tests/run.sh installs it). Everything stays on 127.0.0.1 and
//! every wait is bounded.
//!
//! Each test starts its own turnserver on a free port with its own relay
//! port range, and kills it on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stun::{frame_len, MessageType, MessageWriter, TransactionId};
use turn::client::{Client, Config, Event, Op, PeerData, State, Transport};

const TURNSERVER: &str = "/usr/bin/turnserver";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Upper bound for any single wait on the network.
const WAIT: Duration = Duration::from_secs(10);

/// A running turnserver; killed on drop.
struct Coturn {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Coturn {
    /// Starts turnserver with user `u`/`p`, realm `test`, relaying from
    /// `ports` on 127.0.0.1. Retries on a new port if the one picked was
    /// taken in the meantime.
    fn start(ports: (u16, u16), extra: &[&str]) -> Coturn {
        assert!(
            std::path::Path::new(TURNSERVER).exists(),
            "{TURNSERVER} is missing: install Debian's coturn package (tests/run.sh does)"
        );
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("switchboard-coturn-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let log = std::fs::File::create(dir.join("turnserver.log")).unwrap();
            let child = Command::new(TURNSERVER)
                .args([
                    "-n",
                    "--lt-cred-mech",
                    "--user=u:p",
                    "--realm=test",
                    "--allow-loopback-peers",
                ])
                .args([
                    "--no-cli",
                    "--no-tls",
                    "--no-dtls",
                    "--listening-ip=127.0.0.1",
                    "--relay-ip=127.0.0.1",
                ])
                .arg(format!("--listening-port={port}"))
                .arg(format!("--min-port={}", ports.0))
                .arg(format!("--max-port={}", ports.1))
                .arg(format!(
                    "--pidfile={}",
                    dir.join("turnserver.pid").display()
                ))
                // Keep coturn's SQLite user database out of /var/lib/turn.
                .arg(format!("--userdb={}", dir.join("turndb").display()))
                .arg("--log-file=stdout")
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn turnserver");
            let mut server = Coturn {
                child,
                addr: SocketAddr::new(LOCALHOST, port),
                dir,
            };
            if server.wait_ready() {
                return server;
            }
            last_log = server.log();
        }
        panic!("turnserver did not come up; last log:\n{last_log}");
    }

    /// Polls with STUN Binding requests until the server answers (UDP) and
    /// accepts a TCP connection.
    fn wait_ready(&mut self) -> bool {
        let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut req = Vec::new();
        MessageWriter::new(
            &mut req,
            MessageType::BINDING_REQUEST,
            TransactionId([9; 12]),
        )
        .finish();
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let _ = sock.send_to(&req, self.addr);
            if sock.recv_from(&mut buf).is_ok() {
                return TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok();
            }
        }
        false
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turnserver.log")).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on 127.0.0.1 for both UDP and TCP right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// A UDP socket that sends back whatever it gets, and remembers from where.
struct Echo {
    addr: SocketAddr,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let sock = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let sources = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (sources.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Bounded even if the test forgets to stop it.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    s.lock().unwrap().push(from);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            sources,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The client's connection to the server: datagrams, or frames cut from a
/// TCP stream with `stun::frame_len`.
enum Wire {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, buf: Vec<u8> },
}

impl Wire {
    fn connect(transport: Transport, server: SocketAddr) -> Wire {
        match transport {
            Transport::Udp => {
                let s = UdpSocket::bind((LOCALHOST, 0)).unwrap();
                s.connect(server).unwrap();
                Wire::Udp(s)
            }
            Transport::Tcp => {
                let stream = TcpStream::connect_timeout(&server, WAIT).unwrap();
                stream.set_nodelay(true).unwrap();
                Wire::Tcp {
                    stream,
                    buf: Vec::new(),
                }
            }
        }
    }

    fn local_addr(&self) -> SocketAddr {
        match self {
            Wire::Udp(s) => s.local_addr().unwrap(),
            Wire::Tcp { stream, .. } => stream.local_addr().unwrap(),
        }
    }

    fn send(&mut self, data: &[u8]) {
        match self {
            Wire::Udp(s) => {
                s.send(data).unwrap();
            }
            Wire::Tcp { stream, .. } => stream.write_all(data).unwrap(),
        }
    }

    /// The next datagram or frame, or `None` once `until` passes.
    fn recv(&mut self, until: Instant) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Wire::Tcp { buf, .. } = self {
                let frame = frame_len(buf).expect("coturn keeps TCP framing");
                if let Some(n) = frame.map(|f| f.len()).filter(|&n| buf.len() >= n) {
                    return Some(buf.drain(..n).collect());
                }
            }
            let wait = until
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())?;
            let got = match self {
                Wire::Udp(s) => {
                    s.set_read_timeout(Some(wait)).unwrap();
                    s.recv(&mut chunk)
                }
                Wire::Tcp { stream, .. } => {
                    stream.set_read_timeout(Some(wait)).unwrap();
                    stream.read(&mut chunk)
                }
            };
            match (got, &mut *self) {
                (Ok(0), Wire::Tcp { .. }) => panic!("coturn closed the TCP connection"),
                (Ok(n), Wire::Udp(_)) => return Some(chunk[..n].to_vec()),
                (Ok(n), Wire::Tcp { buf, .. }) => buf.extend_from_slice(&chunk[..n]),
                (Err(e), _) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                (Err(e), _) => panic!("recv: {e}"),
            }
        }
    }
}

/// The client plus its socket: the whole driver a real program would need.
struct Session {
    client: Client,
    wire: Wire,
    events: Vec<Event>,
    data: Vec<(SocketAddr, Option<u16>, Vec<u8>)>,
}

impl Session {
    fn new(server: &Coturn, transport: Transport, password: &str) -> Session {
        Session::with(server, Config::new(server.addr, transport, "u", password))
    }

    fn with(server: &Coturn, mut cfg: Config) -> Session {
        let wire = Wire::connect(cfg.transport, server.addr);
        cfg.seed = u64::from(wire.local_addr().port());
        Session {
            client: Client::new(cfg),
            wire,
            events: vec![],
            data: vec![],
        }
    }

    /// Runs the client for at most `limit` or until `done` holds.
    fn run(&mut self, limit: Duration, mut done: impl FnMut(&Session) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(t) = self.client.poll_transmit() {
                let data = t.data.to_vec();
                self.wire.send(&data);
            }
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wake = self
                .client
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline))
                .max(now);
            if let Some(pkt) = self.wire.recv(wake) {
                if let Some(PeerData {
                    peer,
                    channel,
                    payload,
                }) = self.client.handle_input(Instant::now(), &pkt)
                {
                    self.data.push((peer, channel, payload.to_vec()));
                }
            }
            self.client.handle_timeout(Instant::now());
        }
    }

    /// Waits for the first event `pick` accepts; panics on a failure or
    /// after [`WAIT`].
    fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let start = self.events.len();
        let found = self.run(WAIT, |s| {
            s.events[start..]
                .iter()
                .any(|e| pick(e).is_some() || matches!(e, Event::Failed { .. }))
        });
        assert!(
            found,
            "timed out waiting for {what}; events {:?}",
            self.events
        );
        let e = self.events[start..]
            .iter()
            .find(|e| pick(e).is_some() || matches!(e, Event::Failed { .. }))
            .unwrap();
        pick(e).unwrap_or_else(|| panic!("waiting for {what}, got {e:?}"))
    }

    /// Sends `payload` to the echo peer and waits for it to come back.
    fn echo(&mut self, peer: SocketAddr, payload: &[u8]) -> Option<u16> {
        self.data.clear();
        self.client.send_to(peer, payload).unwrap();
        // UDP may lose a datagram even on loopback; resend a few times.
        for _ in 0..5 {
            if self.run(Duration::from_secs(2), |s| !s.data.is_empty()) {
                let (from, channel, got) = self.data.remove(0);
                assert_eq!((from, got.as_slice()), (peer, payload));
                return channel;
            }
            self.client.send_to(peer, payload).unwrap();
        }
        panic!(
            "no echo of {payload:?} through the relay; events {:?}",
            self.events
        );
    }
}

/// allocate → permission → Send/Data → channel → ChannelData → close.
fn relay_round_trip(transport: Transport, ports: (u16, u16)) {
    let server = Coturn::start(ports, &[]);
    let echo = Echo::start();
    let mut s = Session::new(&server, transport, "p");
    s.client.allocate(Instant::now()).unwrap();
    let (relayed, mapped) = s.expect("Allocated", |e| match e {
        Event::Allocated {
            relayed, mapped, ..
        } => Some((*relayed, *mapped)),
        _ => None,
    });
    assert_eq!(relayed.ip(), LOCALHOST);
    assert!(
        (ports.0..=ports.1).contains(&relayed.port()),
        "relayed {relayed} outside {ports:?}"
    );
    assert_eq!(mapped, Some(s.wire.local_addr()));

    s.client
        .create_permission(Instant::now(), LOCALHOST)
        .unwrap();
    s.expect("PermissionCreated", |e| {
        matches!(e, Event::PermissionCreated { .. }).then_some(())
    });
    assert_eq!(s.echo(echo.addr, b"through a Send indication"), None);

    let channel = s.client.bind_channel(Instant::now(), echo.addr).unwrap();
    let bound = s.expect("ChannelBound", |e| match e {
        Event::ChannelBound { channel, peer } => Some((*channel, *peer)),
        _ => None,
    });
    assert_eq!(bound, (channel, echo.addr));
    // Odd length: over TCP the frame needs padding both ways.
    assert_eq!(s.echo(echo.addr, b"through ChannelData"), Some(channel));
    assert!(
        echo.sources.lock().unwrap().iter().all(|a| *a == relayed),
        "peer saw only the relayed address"
    );

    s.client.close(Instant::now()).unwrap();
    s.expect("Closed", |e| matches!(e, Event::Closed).then_some(()));
    assert_eq!(s.client.state(), State::Closed);
    assert_eq!(
        s.client.stats().bad_integrity + s.client.stats().malformed,
        0,
        "{:?}",
        s.client.stats()
    );
}

#[test]
fn coturn_udp_allocate_permission_channel_echo_close() {
    relay_round_trip(Transport::Udp, (46100, 46149));
}

#[test]
fn coturn_tcp_allocate_permission_channel_echo_close() {
    relay_round_trip(Transport::Tcp, (46150, 46199));
}

#[test]
fn coturn_refreshes_and_stale_nonces() {
    // A 4 s allocation lifetime and 3 s nonces make the client refresh and
    // meet 438 within seconds of real time. (coturn 4.6 grants 4 s to the
    // Allocate but answers the Refresh with 600 s whatever LIFETIME we ask
    // for; the client simply follows what the server grants.)
    let server = Coturn::start(
        (46200, 46249),
        &["--max-allocate-lifetime=4", "--stale-nonce=3"],
    );
    let echo = Echo::start();
    let echo2 = Echo::start();
    let mut cfg = Config::new(server.addr, Transport::Udp, "u", "p");
    cfg.lifetime = Some(Duration::from_secs(4));
    let mut s = Session::with(&server, cfg);
    let t0 = Instant::now();
    s.client.allocate(t0).unwrap();
    let lifetime = s.expect("Allocated", |e| match e {
        Event::Allocated { lifetime, .. } => Some(*lifetime),
        _ => None,
    });
    assert_eq!(
        lifetime,
        Duration::from_secs(4),
        "coturn log:\n{}",
        server.log()
    );
    let ch = s.client.bind_channel(Instant::now(), echo.addr).unwrap();
    s.expect("ChannelBound", |e| {
        matches!(e, Event::ChannelBound { .. }).then_some(())
    });

    // The refresh is due at 80% of 4 s.
    s.expect("Refreshed", |e| {
        matches!(e, Event::Refreshed { .. }).then_some(())
    });
    let at = t0.elapsed();
    assert!(
        at >= Duration::from_millis(3200) && at < Duration::from_secs(8),
        "refreshed after {at:?}"
    );
    // Let the nonce go stale for sure, then start something new.
    assert!(!s.run(Duration::from_secs(4), |s| s
        .events
        .iter()
        .any(|e| matches!(e, Event::Failed { .. }))));
    let ch2 = s.client.bind_channel(Instant::now(), echo2.addr).unwrap();
    s.expect("ChannelBound", |e| match e {
        Event::ChannelBound { channel, .. } if *channel == ch2 => Some(()),
        _ => None,
    });
    assert!(s.client.stats().stale_nonces >= 1, "{:?}", s.client.stats());
    assert_eq!(s.echo(echo.addr, b"still relayed"), Some(ch));
    assert_eq!(s.echo(echo2.addr, b"and the new one"), Some(ch2));
    assert!(
        !s.events.iter().any(|e| matches!(e, Event::Failed { .. })),
        "{:?}",
        s.events
    );
}

#[test]
fn coturn_wrong_password_fails_with_401() {
    let server = Coturn::start((46250, 46259), &[]);
    let mut s = Session::new(&server, Transport::Udp, "wrong");
    s.client.allocate(Instant::now()).unwrap();
    assert!(s.run(WAIT, |s| !s.events.is_empty()));
    assert!(
        matches!(
            s.events[..],
            [Event::Failed {
                op: Op::Allocate,
                code: Some(401),
                ..
            }]
        ),
        "{:?}",
        s.events
    );
    assert_eq!(s.client.state(), State::Failed);
}
