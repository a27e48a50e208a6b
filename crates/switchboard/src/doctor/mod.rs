//! `switchboard doctor URL`: whether a deployment works from where the
//! operator sits, one check per line and a verdict (docs/cli.md).
//!
//! The checks, in order: `tls` (https only: the certificate against the
//! system roots and `--ca-file`, its name and days left), `http`
//! (`/healthz`), `websocket` (a `join` on `/v1/ws` and its `welcome`),
//! then for the `iceServers` that `welcome` handed out: `stun` (the mapped
//! address), `nat` (the mapping behaviour, when the server names a second
//! STUN address in OTHER-ADDRESS), `turn-udp` / `turn-tcp` / `turn-tls`
//! (an allocation with welcome's credentials) and `relay` (two allocations
//! on the server relaying to each other, with the round-trip time). Every
//! step has a deadline (`--timeout`), so a firewalled port is a specific
//! failure, not a hang.
//!
//! [`report`] holds the pure parts (results, verdict, URL parsing, NAT
//! classification); `net` the HTTP, TLS and WebSocket side; `probe`
//! the STUN and TURN drivers around the sans-IO TURN client.

mod net;
mod probe;
pub mod report;

use anyhow::Result;
use clap::Args;
use net::{Base, Tls};
use probe::{Input, Link, TurnConn};
use report::{parse_ice_url, Check, IceUrl, Status, TurnProto, Verdict};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// `switchboard doctor`'s options.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The server's base URL: `http://HOST:PORT` or `https://HOST[:PORT]`.
    pub url: String,
    /// Room access token, for a server started with --auth-secret.
    #[arg(long, env = "SWITCHBOARD_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    /// Room the WebSocket check joins (and leaves at once) [default:
    /// doctor-RANDOM].
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,
    /// PEM file with CA certificates to trust besides the system's roots
    /// (for https:// and turns:).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Deadline of each step (a connection, a request, an allocation), in
    /// seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub timeout: f64,
    /// Also check this TURN server (turn:HOST:PORT?transport=udp|tcp or
    /// turns:HOST:PORT), with --user/--password or else welcome's TURN
    /// credentials. Repeatable.
    #[arg(long = "turn", value_name = "URL")]
    pub extra_turn: Vec<String>,
    /// Username for --turn.
    #[arg(long, value_name = "NAME", requires = "password")]
    pub user: Option<String>,
    /// Password for --turn.
    #[arg(long, value_name = "PASSWORD", requires = "user")]
    pub password: Option<String>,
    /// One JSON object per check on stdout, then the verdict.
    #[arg(long)]
    pub json: bool,
}

/// Relayed pings in the `relay` check.
const PINGS: usize = 5;

/// Runs every check and prints the report; returns the exit code.
pub fn run(args: DoctorArgs) -> Result<i32> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 600.0) {
        eprintln!("error: --timeout must be a number of seconds in (0, 600]");
        return Ok(2);
    }
    let base = match Base::parse(&args.url) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    for url in &args.extra_turn {
        if !matches!(parse_ice_url(url), Some(IceUrl::Turn { .. })) {
            eprintln!("error: --turn {url:?} is not a turn: or turns: URL");
            return Ok(2);
        }
    }
    let tls = match net::roots(args.ca_file.as_deref()) {
        Ok(r) => Tls::new(r),
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let rt = tokio::runtime::Runtime::new()?;
    let json = args.json;
    let mut out = std::io::stdout().lock();
    let checks = rt.block_on(run_checks(&args, &base, &tls, |c| {
        let line = if json {
            c.to_json().to_string()
        } else {
            c.to_string()
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }));
    let verdict = Verdict::of(&checks);
    let line = if json {
        verdict.to_json().to_string()
    } else {
        verdict.to_string()
    };
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    Ok(verdict.exit_code())
}

/// A TURN URL with the credentials to try it with.
struct TurnTarget {
    url: String,
    host: String,
    port: u16,
    proto: TurnProto,
    creds: Option<(String, String)>,
}

async fn run_checks(
    args: &DoctorArgs,
    base: &Base,
    tls: &Tls,
    mut emit: impl FnMut(&Check),
) -> Vec<Check> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut checks = Vec::new();
    let mut push = |c: Check, checks: &mut Vec<Check>| {
        emit(&c);
        checks.push(c);
    };
    let http_alpn: &[&[u8]] = &[b"http/1.1"];

    // HTTP(S): the certificate, then /healthz.
    let healthz = base.url(if base.tls { "https" } else { "http" }, "/healthz");
    let (stream, tls_check) = net::open(base, tls, http_alpn, timeout).await;
    let tls_ok = tls_check.as_ref().is_none_or(|c| c.status != Status::Fail);
    if let Some(c) = tls_check {
        push(c, &mut checks);
    }
    let started = Instant::now();
    let http = match stream {
        Err(e) if !tls_ok => Check::new("http", &healthz, Status::Fail, format!("not tried: {e}")),
        Err(e) => Check::new("http", &healthz, Status::Fail, e),
        Ok(s) => match tokio::time::timeout(timeout, net::get_healthz(s, base)).await {
            Err(_) => Check::new(
                "http",
                &healthz,
                Status::Fail,
                format!("no answer within {} s", args.timeout),
            ),
            Ok(Err(e)) => Check::new("http", &healthz, Status::Fail, format!("GET failed: {e:#}")),
            Ok(Ok((200, body))) => Check::new("http", &healthz, Status::Ok, format!("200 {body}")),
            Ok(Ok((code, body))) => Check::new(
                "http",
                &healthz,
                Status::Fail,
                format!("answered {code}: {body}"),
            ),
        }
        .ms(started.elapsed().as_millis() as u64),
    };
    push(http, &mut checks);

    // The WebSocket join and its iceServers.
    let ws_url = base.url(if base.tls { "wss" } else { "ws" }, "/v1/ws");
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("doctor-{:08x}", rand::random::<u32>()));
    let started = Instant::now();
    let welcome = if !tls_ok {
        Err("not tried: the TLS check failed".to_string())
    } else {
        match net::open(base, tls, http_alpn, timeout).await.0 {
            Err(e) => Err(e),
            Ok(s) => match tokio::time::timeout(
                timeout,
                net::join(s, base, &room, args.token.as_deref()),
            )
            .await
            {
                Err(_) => Err(format!("no welcome within {} s", args.timeout)),
                Ok(r) => r,
            },
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    let ice = match welcome {
        Err(e) => {
            push(
                Check::new("websocket", &ws_url, Status::Fail, e).ms(ms),
                &mut checks,
            );
            None
        }
        Ok(w) => {
            let urls: Vec<&str> = w
                .ice_servers
                .iter()
                .flat_map(|s| s.urls.iter().map(String::as_str))
                .collect();
            let msg = format!(
                "joined room {room} as {}; welcome lists {} ICE URL(s): {}",
                w.peer,
                urls.len(),
                if urls.is_empty() {
                    "none".to_string()
                } else {
                    urls.join(", ")
                }
            );
            push(
                Check::new("websocket", &ws_url, Status::Ok, msg)
                    .ms(ms)
                    .with("ice_servers", urls.len()),
                &mut checks,
            );
            Some(w.ice_servers)
        }
    };
    let Some(ice) = ice else {
        for name in ["stun", "nat", "turn-udp", "turn-tcp", "turn-tls", "relay"] {
            push(
                Check::new(
                    name,
                    "-",
                    Status::Skip,
                    "not tried: no iceServers (the WebSocket check failed)",
                ),
                &mut checks,
            );
        }
        return checks;
    };

    // STUN, and the NAT mapping where the server names a second address.
    let stun_urls: Vec<(String, String, u16)> = ice
        .iter()
        .flat_map(|s| s.urls.iter())
        .filter_map(|u| match parse_ice_url(u) {
            Some(IceUrl::Stun { host, port }) => Some((u.clone(), host, port)),
            _ => None,
        })
        .collect();
    if stun_urls.is_empty() {
        push(
            Check::new("stun", "-", Status::Skip, "welcome lists no stun: URL"),
            &mut checks,
        );
    }
    let mut nat_done = false;
    let mut stun_ok = false;
    for (url, host, port) in &stun_urls {
        let (check, nat) = stun_check(url, host, *port, timeout).await;
        stun_ok |= check.status == Status::Ok;
        push(check, &mut checks);
        if let Some(nat) = nat {
            nat_done = true;
            push(nat, &mut checks);
        }
    }
    if !nat_done {
        let why = if stun_ok {
            "the server names no second STUN address (OTHER-ADDRESS; serve --stun-alt-listen)"
        } else {
            "not tried: no STUN answer"
        };
        push(Check::new("nat", "-", Status::Skip, why), &mut checks);
    }

    // TURN over each transport offered, with welcome's credentials.
    let welcome_creds = ice
        .iter()
        .find_map(|s| Some((s.username.clone()?, s.credential.clone()?)));
    let mut targets: Vec<TurnTarget> = Vec::new();
    for s in &ice {
        let creds = s.username.clone().zip(s.credential.clone());
        for u in &s.urls {
            if let Some(IceUrl::Turn { host, port, proto }) = parse_ice_url(u) {
                targets.push(TurnTarget {
                    url: u.clone(),
                    host,
                    port,
                    proto,
                    creds: creds.clone(),
                });
            }
        }
    }
    let extra_creds = args
        .user
        .clone()
        .zip(args.password.clone())
        .or(welcome_creds);
    for u in &args.extra_turn {
        if let Some(IceUrl::Turn { host, port, proto }) = parse_ice_url(u) {
            targets.push(TurnTarget {
                url: u.clone(),
                host,
                port,
                proto,
                creds: extra_creds.clone(),
            });
        }
    }
    let mut relay_target: Option<(usize, SocketAddr)> = None;
    for proto in [TurnProto::Udp, TurnProto::Tcp, TurnProto::Tls] {
        let of_kind: Vec<usize> = (0..targets.len())
            .filter(|&i| targets[i].proto == proto)
            .collect();
        if of_kind.is_empty() {
            let scheme = if proto == TurnProto::Tls {
                "turns:"
            } else {
                "turn:"
            };
            let what = match proto {
                TurnProto::Udp => "?transport=udp",
                TurnProto::Tcp => "?transport=tcp",
                TurnProto::Tls => "",
            };
            push(
                Check::new(
                    proto.check_name(),
                    "-",
                    Status::Skip,
                    format!("welcome offers no {scheme}…{what} URL"),
                ),
                &mut checks,
            );
        }
        for i in of_kind {
            let t = &targets[i];
            let (check, server) = turn_check(t, tls, timeout).await;
            if let Some(server) = server {
                // UDP first: the round trip then measures the relay, not TCP.
                if relay_target.is_none() {
                    relay_target = Some((i, server));
                }
            }
            push(check, &mut checks);
        }
    }

    // Two allocations relaying to each other.
    let relay = match relay_target {
        None => Check::new(
            "relay",
            "-",
            Status::Skip,
            "not tried: no TURN allocation succeeded",
        ),
        Some((i, server)) => relay_check(&targets[i], server, tls, timeout).await,
    };
    push(relay, &mut checks);
    checks
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A UDP socket of `server`'s family, connected to it when `connect`.
async fn udp_for(server: SocketAddr, connect: bool) -> Result<UdpSocket, String> {
    let any: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = UdpSocket::bind(any)
        .await
        .map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
    if connect {
        s.connect(server)
            .await
            .map_err(|e| format!("UDP connect to {server}: {e}"))?;
    }
    Ok(s)
}

async fn stun_check(url: &str, host: &str, port: u16, timeout: Duration) -> (Check, Option<Check>) {
    let server = match net::resolve(host, port, timeout).await {
        Ok(a) => a[0],
        Err(e) => return (Check::new("stun", url, Status::Fail, e), None),
    };
    let sock = match udp_for(server, true).await {
        Ok(s) => s,
        Err(e) => return (Check::new("stun", url, Status::Fail, e), None),
    };
    let b = match probe::binding(&sock, server, timeout).await {
        Ok(b) => b,
        Err(e) => return (Check::new("stun", url, Status::Fail, e), None),
    };
    let local_ip = sock.local_addr().ok().map(|a| a.ip());
    let rtt = b.rtt.as_millis() as u64;
    let check = Check::new(
        "stun",
        url,
        Status::Ok,
        format!("mapped address {}", b.mapped),
    )
    .ms(rtt)
    .with("mapped", b.mapped.to_string());
    let Some(alt) = b.other else {
        return (check, None);
    };
    // Both Bindings from one unconnected socket: the NAT's mapping toward
    // two destinations.
    let target = format!("{server} and {alt}");
    let nat = async {
        let sock = udp_for(server, false).await?;
        // The socket is bound to the wildcard; the connected one knows
        // which local IP the route to the server leaves from.
        let local = match (&local_ip, sock.local_addr()) {
            (Some(ip), Ok(a)) => Some(SocketAddr::new(*ip, a.port())),
            _ => None,
        };
        let first = probe::binding(&sock, server, timeout).await?;
        let second = probe::binding(&sock, alt, timeout)
            .await
            .map_err(|e| format!("second STUN address (OTHER-ADDRESS): {e}"))?;
        Ok::<_, String>(report::classify_mapping(
            local,
            server,
            first.mapped,
            alt,
            second.mapped,
        ))
    }
    .await;
    let nat = match nat {
        Err(e) => Check::new("nat", target, Status::Fail, e),
        Ok(m) => Check::new(
            "nat",
            target,
            if m.good { Status::Ok } else { Status::Warn },
            m.message,
        )
        .with("mapping", m.kind),
    };
    (check, Some(nat))
}

/// Connects a link to a TURN server. For TLS, a certificate problem is the
/// error.
async fn link(
    t: &TurnTarget,
    server: SocketAddr,
    tls: &Tls,
    timeout: Duration,
) -> Result<Link, String> {
    match t.proto {
        TurnProto::Udp => Ok(Link::Udp(udp_for(server, true).await?)),
        TurnProto::Tcp | TurnProto::Tls => {
            let tcp = net::tcp(&[server], timeout).await?;
            let io: Box<dyn net::Io> = if t.proto == TurnProto::Tls {
                match tokio::time::timeout(timeout, tls.connect(tcp, &t.host, &[])).await {
                    Err(_) => return Err(format!("TLS handshake with {server} timed out")),
                    Ok(Err((why, _))) => return Err(why),
                    Ok(Ok((s, _))) => s,
                }
            } else {
                Box::new(tcp)
            };
            Ok(Link::Stream {
                io,
                framer: stun::Framer::new(),
            })
        }
    }
}

async fn allocation(
    t: &TurnTarget,
    server: SocketAddr,
    tls: &Tls,
    timeout: Duration,
) -> Result<(TurnConn, SocketAddr, Option<SocketAddr>), String> {
    let (user, pass) = t
        .creds
        .as_ref()
        .ok_or("no username/credential for it in iceServers")?;
    let link = link(t, server, tls, timeout).await?;
    let mut conn = TurnConn::new(link, server, user, pass);
    let (relayed, mapped) = conn.allocate(timeout).await?;
    Ok((conn, relayed, mapped))
}

async fn turn_check(t: &TurnTarget, tls: &Tls, timeout: Duration) -> (Check, Option<SocketAddr>) {
    let name = t.proto.check_name();
    let server = match net::resolve(&t.host, t.port, timeout).await {
        Ok(a) => a[0],
        Err(e) => return (Check::new(name, &t.url, Status::Fail, e), None),
    };
    let started = Instant::now();
    match allocation(t, server, tls, timeout).await {
        Err(e) => (
            Check::new(name, &t.url, Status::Fail, e).ms(started.elapsed().as_millis() as u64),
            None,
        ),
        Ok((conn, relayed, mapped)) => {
            let ms = started.elapsed().as_millis() as u64;
            conn.close().await;
            let mut msg = format!("allocated relayed address {relayed}");
            if let Some(m) = mapped {
                msg.push_str(&format!(" (we are {m} to the server)"));
            }
            let mut c = Check::new(name, &t.url, Status::Ok, msg)
                .ms(ms)
                .with("relayed", relayed.to_string());
            if let Some(m) = mapped {
                c = c.with("mapped", m.to_string());
            }
            (c, Some(server))
        }
    }
}

/// Two allocations on one server: A pings B's relayed address through the
/// relay, B echoes through its own, A measures each round trip.
async fn relay_check(t: &TurnTarget, server: SocketAddr, tls: &Tls, timeout: Duration) -> Check {
    let started = Instant::now();
    let r = async {
        let (mut a, a_relayed, _) = allocation(t, server, tls, timeout).await?;
        let (mut b, b_relayed, _) = allocation(t, server, tls, timeout).await?;
        let hint = |e: String| {
            if e.contains("refused: 403") {
                // The relayed address is the server's own (or, on a test
                // box, a private one), which serve's peer policy refuses.
                let ip = b_relayed.ip();
                format!(
                    "{e}; so two clients relayed by this server cannot reach each other \
                     (serve --allow-peer {ip}/32 lets them, and opens every port of {ip} to relayed traffic)"
                )
            } else {
                e
            }
        };
        a.bind(b_relayed, Instant::now() + timeout)
            .await
            .map_err(hint)?;
        b.bind(a_relayed, Instant::now() + timeout)
            .await
            .map_err(hint)?;
        // B echoes whatever comes from A until the check is over (the
        // guard stops it on every way out of this block).
        let _echo = AbortOnDrop(tokio::spawn(async move {
            let far = Instant::now() + Duration::from_secs(600);
            while let Ok(input) = b.next(far).await {
                if let Input::Data(peer, data) = input {
                    if b.send_to(peer, &data).await.is_err() {
                        break;
                    }
                }
            }
        }));
        let mut rtts = Vec::new();
        let mut lost = 0;
        for i in 0..PINGS {
            let payload =
                format!("switchboard doctor ping {i} {}", rand::random::<u64>()).into_bytes();
            let sent = Instant::now();
            a.send_to(b_relayed, &payload).await?;
            let deadline = sent + timeout;
            let got = loop {
                match a.next(deadline).await {
                    Ok(Input::Data(peer, data)) if peer == b_relayed && data == payload => {
                        break true
                    }
                    Ok(_) => {}
                    Err(_) => break false,
                }
            };
            if got {
                rtts.push(sent.elapsed());
            } else {
                lost += 1;
            }
        }
        a.close().await;
        Ok::<_, String>((a_relayed, b_relayed, rtts, lost))
    }
    .await;
    let ms = started.elapsed().as_millis() as u64;
    let target = t.url.clone();
    match r {
        Err(e) => Check::new("relay", target, Status::Fail, e).ms(ms),
        Ok((_, _, rtts, lost)) if rtts.is_empty() => Check::new(
            "relay",
            target,
            Status::Fail,
            format!(
                "none of {PINGS} relayed pings came back within {} s",
                timeout.as_secs_f64()
            ),
        )
        .ms(ms)
        .with("lost", lost),
        Ok((a, b, mut rtts, lost)) => {
            rtts.sort();
            let f = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
            let (min, median) = (f(rtts[0]), f(rtts[rtts.len() / 2]));
            let status = if lost == 0 { Status::Ok } else { Status::Warn };
            Check::new(
                "relay",
                target,
                status,
                format!(
                    "{a} -> {b} -> {a} through the relay: {}/{PINGS} pings back, RTT min {min} ms, median {median} ms",
                    rtts.len()
                ),
            )
            .ms(ms)
            .with("rtt_ms", median)
            .with("rtt_min_ms", min)
            .with("lost", lost)
        }
    }
}
