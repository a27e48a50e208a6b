//! A scriptable fake mDNS responder for the resolver tests, with its own
//! minimal encoder (deliberately not the crate's, so the tests do not just
//! check the codec against itself).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

const A: u16 = 1;
const AAAA: u16 = 28;
const NSEC: u16 = 47;

/// What the fake responder knows and how it misbehaves.
#[derive(Clone, Default)]
pub struct Answers {
    addrs: HashMap<String, Vec<IpAddr>>,
    empty_nsec: Vec<String>,
    nsec: bool,
    ttl: Option<u32>,
    drop_first: usize,
    other_port: bool,
}

impl Answers {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn v4(mut self, name: &str, ip: &str) -> Self {
        self.addrs
            .entry(name.to_owned())
            .or_default()
            .push(ip.parse().unwrap());
        self
    }
    pub fn v6(self, name: &str, ip: &str) -> Self {
        self.v4(name, ip)
    }
    /// Send an NSEC with every answer, and as a negative answer (Chromium does).
    pub fn nsec(mut self, on: bool) -> Self {
        self.nsec = on;
        self
    }
    /// Answer `name` with an NSEC that lists neither A nor AAAA.
    pub fn empty_nsec(mut self, name: &str) -> Self {
        self.empty_nsec.push(name.to_owned());
        self
    }
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Ignore the first `n` queries.
    pub fn drop_first(mut self, n: usize) -> Self {
        self.drop_first = n;
        self
    }
    /// Answer from a different socket (another source port).
    pub fn reply_from_other_port(mut self) -> Self {
        self.other_port = true;
        self
    }
}

pub struct FakeResponder {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeResponder {
    /// Unicast responder on 127.0.0.1: answers to the query's source.
    pub async fn start(answers: Answers) -> Self {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut seen = 0;
            let mut buf = vec![0u8; 9000];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Some((name, qtype)) = parse_query(&buf[..n]) else {
                    continue;
                };
                *c.lock()
                    .unwrap()
                    .entry(name.to_ascii_lowercase())
                    .or_insert(0) += 1;
                seen += 1;
                if seen <= answers.drop_first {
                    continue;
                }
                if let Some(resp) = answer(&answers, &name, qtype) {
                    let out = if answers.other_port { &other } else { &sock };
                    let _ = out.send_to(&resp, from).await;
                }
            }
        });
        FakeResponder { addr, counts, task }
    }

    pub fn queries_for(&self, name: &str) -> usize {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    pub fn total_queries(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }
}

/// Name and type of a single-question query with an uncompressed name.
pub fn parse_query(p: &[u8]) -> Option<(String, u16)> {
    if p.len() < 12 || p[2] & 0x80 != 0 || u16::from_be_bytes([p[4], p[5]]) != 1 {
        return None;
    }
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *p.get(pos)? as usize;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8(p.get(pos + 1..pos + 1 + len)?.to_vec()).ok()?);
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([*p.get(pos + 1)?, *p.get(pos + 2)?]);
    Some((labels.join("."), qtype))
}

/// The response the scripted responder gives, if any.
pub fn answer(a: &Answers, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let key = name.to_ascii_lowercase();
    let ttl = a.ttl.unwrap_or(120);
    if a.empty_nsec.contains(&key) {
        return Some(response(name, &[], Some((false, false)), ttl));
    }
    let addrs = a.addrs.get(&key)?;
    let matching: Vec<IpAddr> = addrs
        .iter()
        .copied()
        .filter(|ip| (qtype == A && ip.is_ipv4()) || (qtype == AAAA && ip.is_ipv6()))
        .collect();
    let nsec = a.nsec.then(|| {
        (
            addrs.iter().any(|i| i.is_ipv4()),
            addrs.iter().any(|i| i.is_ipv6()),
        )
    });
    if matching.is_empty() && nsec.is_none() {
        return None;
    }
    Some(response(name, &matching, nsec, ttl))
}

/// An mDNS response: the addresses as answers (cache-flush set), and an NSEC
/// in the additional section, with owner names spelled out in full.
pub fn response(name: &str, addrs: &[IpAddr], nsec: Option<(bool, bool)>, ttl: u32) -> Vec<u8> {
    let mut p = vec![0, 0, 0x84, 0, 0, 0];
    p.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&(nsec.is_some() as u16).to_be_bytes());
    let write_name = |p: &mut Vec<u8>| {
        for l in name.split('.') {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
    };
    for ip in addrs {
        write_name(&mut p);
        let (t, data) = match ip {
            IpAddr::V4(a) => (A, a.octets().to_vec()),
            IpAddr::V6(a) => (AAAA, a.octets().to_vec()),
        };
        p.extend_from_slice(&t.to_be_bytes());
        p.extend_from_slice(&0x8001u16.to_be_bytes());
        p.extend_from_slice(&ttl.to_be_bytes());
        p.extend_from_slice(&(data.len() as u16).to_be_bytes());
        p.extend_from_slice(&data);
    }
    if let Some((has_a, has_aaaa)) = nsec {
        let owner = p.len();
        write_name(&mut p);
        p.extend_from_slice(&NSEC.to_be_bytes());
        p.extend_from_slice(&0x8001u16.to_be_bytes());
        p.extend_from_slice(&ttl.to_be_bytes());
        // Next name: pointer to the owner. Bitmap window 0, 4 bytes.
        let mut bm = [0u8; 4];
        if has_a {
            bm[0] |= 0x40;
        }
        if has_aaaa {
            bm[3] |= 0x08;
        }
        let rdata: Vec<u8> = (0xc000 | owner as u16)
            .to_be_bytes()
            .into_iter()
            .chain([0, 4])
            .chain(bm)
            .collect();
        p.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        p.extend_from_slice(&rdata);
    }
    p
}
