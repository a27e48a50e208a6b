//! The tokio side of one-shot mDNS resolution: the sockets, a receive task
//! per socket, retransmission, the cache, and the bookkeeping that lets many
//! lookups (of the same or different names) share one set of sockets.
//!
//! Sockets, and why each exists:
//! - one ephemeral-port sender per multicast-capable interface and address
//!   family, pinned to its interface with IP_MULTICAST_IF /
//!   IPV6_MULTICAST_IF, so a query reaches every link and not only the one
//!   the default route uses. RFC-conforming responders answer a query from a
//!   port other than 5353 by unicast to that port (RFC 6762 §6.7), so each
//!   sender also receives;
//! - a listener on 0.0.0.0:5353 (and [::]:5353) that has joined the mDNS
//!   group on every multicast-capable interface, because Chromium answers by
//!   multicast only. It shares the port with any local responder
//!   (SO_REUSEADDR/SO_REUSEPORT), including Chromium's own.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, trace, warn};

use crate::iface::{self, Iface};
use crate::wire::{self, QueryType, Record, RecordData, MDNS_PORT, MDNS_V4, MDNS_V6};
use crate::Error;

/// Queries per lookup: the first one plus retransmissions.
const MAX_SENDS: u32 = 3;
/// Longest wait before the first retransmission (then the gap doubles).
/// RFC 6762 §5.2 asks for at least a second between repeated queries, and
/// Chromium multicasts a given record at most once a second anyway.
const FIRST_GAP: Duration = Duration::from_secs(1);
/// Concurrent lookups of one name share queries sent this close together.
const MIN_REQUERY: Duration = Duration::from_millis(100);
/// After the first address, how long to wait for the other family when no
/// NSEC record said which families exist (responders other than Chromium).
const GRACE: Duration = Duration::from_millis(200);
/// Addresses kept per name; answers are unauthenticated, so bound them.
const MAX_ADDRS: usize = 16;
/// Cache lifetime bounds, whatever TTL the answer carried.
const MIN_TTL: u32 = 1;
const MAX_TTL: u32 = 3600;
/// Large enough for any mDNS packet (RFC 6762 §17).
const RECV_BUF: usize = 9000;

/// How a [`Resolver`] sets up its sockets.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen on port 5353 in the mDNS groups. Required to hear Chromium,
    /// which answers by multicast only. Default: true.
    pub listen_5353: bool,
    /// Send queries to these addresses instead of the mDNS groups on every
    /// multicast-capable interface; responses are then accepted from their
    /// ports as well as from 5353. For tests and unusual networks.
    /// Default: `None`.
    pub query_targets: Option<Vec<SocketAddr>>,
    /// Most names kept in the cache. Default: 1024.
    pub cache_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_5353: true,
            query_targets: None,
            cache_capacity: 1024,
        }
    }
}

/// Resolve one `.local` name with a resolver of its own (sockets opened for
/// this call and closed after). Keep a [`Resolver`] for repeated lookups:
/// it caches, and Chromium reuses a name for every candidate on that address.
pub async fn resolve(name: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
    // Fail on a bad name before opening any socket.
    wire::validate_name(name)?;
    Resolver::new()?.resolve(name, timeout).await
}

/// A caching mDNS resolver. Cheap to clone; clones share sockets, cache and
/// in-flight lookups, so any number of `resolve` calls may run concurrently.
/// The sockets close when the last clone is dropped.
///
/// The interface list is read once, at construction; make a new resolver
/// after the host's interfaces change.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("senders", &self.inner.shared.senders.len())
            .field("receive_tasks", &self.inner.tasks.len())
            .finish()
    }
}

/// Owns the receive tasks; they hold only `Shared`, so dropping the last
/// `Resolver` drops this and stops them.
struct Handle {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    senders: Vec<Sender>,
    /// Source ports responses may come from (RFC 6762 §6: 5353 only, unless
    /// `Config::query_targets` says otherwise).
    accept_ports: Vec<u16>,
}

struct Sender {
    sock: Arc<UdpSocket>,
    to: SocketAddr,
}

struct State {
    /// Keys are lowercased names without a trailing dot.
    cache: HashMap<String, Cached>,
    pending: HashMap<String, Pending>,
    capacity: usize,
}

struct Cached {
    addrs: Vec<IpAddr>,
    expires: Instant,
}

/// What has been heard so far about a name someone is waiting for.
struct Pending {
    waiters: usize,
    addrs: Vec<IpAddr>,
    saw_a: bool,
    saw_aaaa: bool,
    /// (has A, has AAAA) from an NSEC record, if one came.
    nsec: Option<(bool, bool)>,
    min_ttl: u32,
    first_answer: Option<Instant>,
    last_sent: Option<Instant>,
    /// Bumped on every update; waiters sleep on it.
    changed: watch::Sender<()>,
}

enum Outcome {
    Found(Vec<IpAddr>, u32),
    NoAddress,
    Timeout,
}

impl Pending {
    fn new() -> Self {
        Pending {
            waiters: 0,
            addrs: Vec::new(),
            saw_a: false,
            saw_aaaa: false,
            nsec: None,
            min_ttl: u32::MAX,
            first_answer: None,
            last_sent: None,
            changed: watch::Sender::new(()),
        }
    }

    fn add(&mut self, ip: IpAddr, ttl: u32, now: Instant) {
        if self.addrs.len() < MAX_ADDRS && !self.addrs.contains(&ip) {
            self.addrs.push(ip);
        }
        self.min_ttl = self.min_ttl.min(ttl);
        self.first_answer.get_or_insert(now);
    }

    /// Whether the lookup can end now, and how.
    fn outcome(&self, now: Instant, deadline: Instant) -> Option<Outcome> {
        let complete = match self.nsec {
            Some((a, aaaa)) => (!a || self.saw_a) && (!aaaa || self.saw_aaaa),
            None => self.saw_a && self.saw_aaaa,
        };
        let grace_over = self.first_answer.is_some_and(|t| now >= t + GRACE);
        if !(complete || grace_over || now >= deadline) {
            return None;
        }
        Some(if !self.addrs.is_empty() {
            Outcome::Found(self.addrs.clone(), self.min_ttl)
        } else if complete {
            Outcome::NoAddress
        } else {
            Outcome::Timeout
        })
    }
}

impl State {
    fn cached(&mut self, key: &str, now: Instant) -> Option<Vec<IpAddr>> {
        match self.cache.get(key) {
            Some(c) if c.expires > now => Some(c.addrs.clone()),
            Some(_) => {
                self.cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: &str, addrs: Vec<IpAddr>, ttl: u32, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.cache.len() >= self.capacity && !self.cache.contains_key(key) {
            self.cache.retain(|_, c| c.expires > now);
            if self.cache.len() >= self.capacity {
                // Still full of live entries: evict any one, it is only a cache.
                if let Some(k) = self.cache.keys().next().cloned() {
                    self.cache.remove(&k);
                }
            }
        }
        let ttl = Duration::from_secs(u64::from(ttl.clamp(MIN_TTL, MAX_TTL)));
        self.cache.insert(
            key.to_owned(),
            Cached {
                addrs,
                expires: now + ttl,
            },
        );
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, but if one ever did,
        // the state is still consistent enough to keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feed the records of one received packet to the lookups waiting on them.
    fn deliver(&self, records: &[Record], now: Instant) {
        let mut st = self.lock();
        for r in records {
            let Some(p) = st.pending.get_mut(&r.name) else {
                continue;
            };
            // A goodbye says the record is gone: nothing to resolve to.
            if r.ttl == 0 {
                continue;
            }
            match r.data {
                RecordData::A(a) => {
                    p.add(IpAddr::V4(a), r.ttl, now);
                    p.saw_a = true;
                }
                RecordData::Aaaa(a) => {
                    p.add(IpAddr::V6(a), r.ttl, now);
                    p.saw_aaaa = true;
                }
                RecordData::Nsec { a, aaaa } => p.nsec = Some((a, aaaa)),
            }
            p.changed.send_replace(());
        }
    }

    /// A and AAAA queries (separate packets, see `wire::encode_query`) on
    /// every sender. Plain QM questions: Chromium ignores QU.
    async fn send_queries(&self, name: &str, buf: &mut Vec<u8>) {
        for qtype in [QueryType::A, QueryType::Aaaa] {
            if let Err(e) = wire::encode_query(name, 0, qtype, false, buf) {
                debug!(name, error = %e, "mdns: cannot encode query");
                return;
            }
            for s in &self.senders {
                match s.sock.send_to(buf, s.to).await {
                    Ok(_) => trace!(name, ?qtype, to = %s.to, "mdns: query sent"),
                    Err(e) => debug!(name, to = %s.to, error = %e, "mdns: query send failed"),
                }
            }
        }
    }
}

/// Decrements the waiter count when a lookup ends or its future is dropped,
/// and forgets the name when nobody waits for it any more.
struct Waiter<'a> {
    shared: &'a Shared,
    key: &'a str,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(p) = st.pending.get_mut(self.key) {
            p.waiters -= 1;
            if p.waiters == 0 {
                st.pending.remove(self.key);
            }
        }
    }
}

impl Resolver {
    /// A resolver with the default [`Config`]. Must be called inside a tokio
    /// runtime (it spawns the receive tasks).
    pub fn new() -> Result<Self, Error> {
        Self::with_config(Config::default())
    }

    /// A resolver with explicit settings. Must be called inside a tokio runtime.
    pub fn with_config(config: Config) -> Result<Self, Error> {
        let ifaces = iface::multicast_interfaces().unwrap_or_else(|e| {
            debug!(error = %e, "mdns: cannot list interfaces, using the default one");
            Vec::new()
        });
        debug!(?ifaces, "mdns: multicast-capable interfaces");

        let mut accept_ports = vec![MDNS_PORT];
        let mut senders = Vec::new();
        let mut last_err = None;
        match &config.query_targets {
            Some(targets) => {
                let mut v4 = None;
                let mut v6 = None;
                for &to in targets {
                    accept_ports.push(to.port());
                    let slot = if to.is_ipv4() { &mut v4 } else { &mut v6 };
                    if slot.is_none() {
                        let made = if to.is_ipv4() {
                            v4_sender(None)
                        } else {
                            v6_sender(None)
                        };
                        match made {
                            Ok(s) => *slot = Some(Arc::new(s)),
                            Err(e) => {
                                last_err = Some(e);
                                continue;
                            }
                        }
                    }
                    let sock = slot.clone().expect("set above");
                    senders.push(Sender { sock, to });
                }
            }
            None => {
                for i in &ifaces {
                    if let Some(addr) = i.v4 {
                        match v4_sender(Some(addr)) {
                            Ok(s) => senders.push(Sender {
                                sock: Arc::new(s),
                                to: (MDNS_V4, MDNS_PORT).into(),
                            }),
                            Err(e) => {
                                debug!(iface = %i.name, error = %e, "mdns: no IPv4 sender");
                                last_err = Some(e);
                            }
                        }
                    }
                    if i.v6 {
                        match v6_sender(Some(i.index)) {
                            Ok(s) => senders.push(Sender {
                                sock: Arc::new(s),
                                to: SocketAddrV6::new(MDNS_V6, MDNS_PORT, 0, i.index).into(),
                            }),
                            // IPv6 is optional: many hosts have it half set up.
                            Err(e) => debug!(iface = %i.name, error = %e, "mdns: no IPv6 sender"),
                        }
                    }
                }
                if senders.is_empty() {
                    // No usable interface found: let the routing table pick.
                    match v4_sender(None) {
                        Ok(s) => senders.push(Sender {
                            sock: Arc::new(s),
                            to: (MDNS_V4, MDNS_PORT).into(),
                        }),
                        Err(e) => last_err = Some(e),
                    }
                }
            }
        }
        if senders.is_empty() {
            return Err(last_err
                .unwrap_or_else(|| io::Error::other("no mDNS query socket"))
                .into());
        }

        let mut listeners = Vec::new();
        if config.listen_5353 {
            match v4_listener(&ifaces) {
                Ok(s) => listeners.push(s),
                // Still useful: RFC-conforming responders answer our
                // ephemeral-port queries by unicast. Chromium will not.
                Err(e) => {
                    warn!(error = %e, "mdns: cannot listen on 0.0.0.0:5353, multicast answers (Chromium's) will be missed")
                }
            }
            if ifaces.iter().any(|i| i.v6) {
                match v6_listener(&ifaces) {
                    Ok(s) => listeners.push(s),
                    Err(e) => debug!(error = %e, "mdns: cannot listen on [::]:5353"),
                }
            }
        }

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cache: HashMap::new(),
                pending: HashMap::new(),
                capacity: config.cache_capacity,
            }),
            senders,
            accept_ports,
        });
        let mut sockets: Vec<Arc<UdpSocket>> = listeners.into_iter().map(Arc::new).collect();
        for s in &shared.senders {
            if !sockets.iter().any(|x| Arc::ptr_eq(x, &s.sock)) {
                sockets.push(s.sock.clone());
            }
        }
        let tasks = sockets
            .into_iter()
            .map(|sock| tokio::spawn(receive(shared.clone(), sock)).abort_handle())
            .collect();
        Ok(Resolver {
            inner: Arc::new(Handle { shared, tasks }),
        })
    }

    /// Resolve a `.local` name to its addresses, from the cache if possible.
    ///
    /// Sends A and AAAA queries at once, and again after g and 3g, where
    /// g = min(1 s, timeout/4). Returns as soon as the answers are complete:
    /// an NSEC record (Chromium sends one) says which families exist; without
    /// one, 200 ms after the first address. When `timeout` ends, returns the
    /// addresses that arrived, or
    /// [`Error::Timeout`] if none did.
    pub async fn resolve(&self, name: &str, timeout: Duration) -> Result<Vec<IpAddr>, Error> {
        let name = wire::validate_name(name)?;
        let key = name.to_ascii_lowercase();
        let shared = &*self.inner.shared;
        let start = Instant::now();
        // `Instant + Duration::MAX` would panic.
        let deadline = start
            .checked_add(timeout)
            .unwrap_or(start + Duration::from_secs(365 * 86400));

        let mut changed = {
            let mut st = shared.lock();
            if let Some(addrs) = st.cached(&key, start) {
                trace!(name, "mdns: cache hit");
                return Ok(addrs);
            }
            let p = st.pending.entry(key.clone()).or_insert_with(Pending::new);
            p.waiters += 1;
            p.changed.subscribe()
        };
        let _waiter = Waiter { shared, key: &key };

        let mut gap = FIRST_GAP.min(timeout / 4);
        let mut next_send = start;
        let mut sends = 0;
        let mut buf = Vec::with_capacity(64);
        let outcome = loop {
            let now = Instant::now();
            let mut send = false;
            let grace_end;
            {
                let mut st = shared.lock();
                let p = st
                    .pending
                    .get_mut(&key)
                    .expect("the entry lives as long as a waiter");
                // Mark the current state seen under the lock: an update after
                // this point wakes `changed()` below, so none is missed.
                changed.borrow_and_update();
                if let Some(o) = p.outcome(now, deadline) {
                    break o;
                }
                if sends < MAX_SENDS && now >= next_send {
                    // Another lookup of the same name may have just queried.
                    if p.last_sent
                        .is_none_or(|t| now.duration_since(t) >= MIN_REQUERY)
                    {
                        p.last_sent = Some(now);
                        send = true;
                    }
                    sends += 1;
                    next_send = now + gap;
                    gap *= 2;
                }
                grace_end = p.first_answer.map(|t| t + GRACE);
            }
            if send {
                shared.send_queries(name, &mut buf).await;
            }
            let mut wake = deadline;
            if sends < MAX_SENDS {
                wake = wake.min(next_send);
            }
            if let Some(g) = grace_end {
                wake = wake.min(g);
            }
            tokio::select! {
                // Err only if the sender is gone, which the waiter count prevents.
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        };

        match outcome {
            Outcome::Found(addrs, ttl) => {
                shared
                    .lock()
                    .insert(&key, addrs.clone(), ttl, Instant::now());
                debug!(name, ?addrs, elapsed = ?start.elapsed(), "mdns: resolved");
                Ok(addrs)
            }
            Outcome::NoAddress => Err(Error::NoAddress {
                name: name.to_owned(),
            }),
            Outcome::Timeout => Err(Error::Timeout {
                name: name.to_owned(),
                timeout,
            }),
        }
    }
}

async fn receive(shared: Arc<Shared>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // E.g. ICMP port unreachable reported on a UDP socket:
                // transient. The pause only keeps a persistent error from spinning.
                trace!(error = %e, "mdns: recv error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !shared.accept_ports.contains(&from.port()) {
            trace!(%from, "mdns: ignoring packet from a port that is not 5353");
            continue;
        }
        match wire::parse_records(&buf[..n]) {
            Ok(records) => {
                trace!(%from, records = records.len(), "mdns: response");
                shared.deliver(&records, Instant::now());
            }
            // Our own looped-back queries land here too.
            Err(e) => trace!(%from, error = %e, "mdns: ignoring packet"),
        }
    }
}

fn v4_sender(iface: Option<Ipv4Addr>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(addr) = iface {
        s.set_multicast_if_v4(&addr)?;
    }
    // RFC 6762 §11: receivers may check for 255 to reject off-link packets.
    s.set_multicast_ttl_v4(255)?;
    // A browser on this very host must see the query.
    s.set_multicast_loop_v4(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

fn v6_sender(iface: Option<u32>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    if let Some(index) = iface {
        s.set_multicast_if_v6(index)?;
    }
    s.set_multicast_hops_v6(255)?;
    s.set_multicast_loop_v6(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Port 5353 shared with whatever else listens there (Avahi, Chromium).
fn shared_5353(domain: Domain) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(all(
        unix,
        not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))
    ))]
    s.set_reuse_port(true)?;
    Ok(s)
}

fn v4_listener(ifaces: &[Iface]) -> io::Result<UdpSocket> {
    let s = shared_5353(Domain::IPV4)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    let mut joined = 0;
    for i in ifaces {
        let Some(addr) = i.v4 else { continue };
        match s.join_multicast_v4(&MDNS_V4, &addr) {
            Ok(()) => joined += 1,
            Err(e) => debug!(iface = %i.name, error = %e, "mdns: cannot join 224.0.0.251"),
        }
    }
    if joined == 0 {
        s.join_multicast_v4(&MDNS_V4, &Ipv4Addr::UNSPECIFIED)?;
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

fn v6_listener(ifaces: &[Iface]) -> io::Result<UdpSocket> {
    let s = shared_5353(Domain::IPV6)?;
    s.set_only_v6(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, MDNS_PORT)).into())?;
    let mut joined = 0;
    for i in ifaces.iter().filter(|i| i.v6) {
        match s.join_multicast_v6(&MDNS_V6, i.index) {
            Ok(()) => joined += 1,
            Err(e) => debug!(iface = %i.name, error = %e, "mdns: cannot join ff02::fb"),
        }
    }
    if joined == 0 {
        return Err(io::Error::other("joined ff02::fb on no interface"));
    }
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}
