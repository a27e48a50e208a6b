//! Prometheus metrics of the signaling server, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use signal::{ErrorCode, FrameKind, Note, RelayKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// TURN figures; the workers keep plain counters, copied here on scrape.
#[derive(Default)]
struct TurnMetrics {
    allocations: Gauge,
    permissions: Gauge,
    channels: Gauge,
    packets: Family<DirLabel, Counter>,
    bytes: Family<DirLabel, Counter>,
    auth_failures: Counter,
    denied_peers: Counter,
    dropped: Family<ReasonLabel, Counter>,
    stream_connections: Gauge,
    stream_expired: Counter,
    last: std::sync::Mutex<(turn::server::Stats, u64, u64)>,
}

pub struct Metrics {
    registry: Registry,
    turn: TurnMetrics,
    /// The HTTP listeners' refusals and deadlines.
    pub http: crate::listen::Counters,
    pub connections: Gauge,
    pub rooms: Gauge,
    pub peers: Gauge,
    /// Messages kept for sessions, unacked (with --redis: cluster-wide).
    pub buffered: Gauge,
    resumes: Family<OutcomeLabel, Counter>,
    store_errors: Counter,
    redis_rtt: prometheus_client::metrics::histogram::Histogram,
    redis_errors: Counter,
    relayed: Family<KindLabel, Counter>,
    sent: Family<TypeLabel, Counter>,
    errors: Family<CodeLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let m = Metrics {
            connections: Gauge::default(),
            rooms: Gauge::default(),
            peers: Gauge::default(),
            buffered: Gauge::default(),
            resumes: Family::default(),
            store_errors: Counter::default(),
            redis_rtt: prometheus_client::metrics::histogram::Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 2.0,
            ]),
            redis_errors: Counter::default(),
            relayed: Family::default(),
            sent: Family::default(),
            errors: Family::default(),
            registry: Registry::default(),
            turn: TurnMetrics::default(),
            http: crate::listen::Counters::default(),
        };
        registry.register(
            "http_refused_per_ip",
            "HTTP connections closed at accept: their source was at --max-connections-per-ip",
            m.http.refused_per_ip.clone(),
        );
        registry.register(
            "tls_handshake_timeouts",
            "TLS handshakes not finished within --tls-handshake-timeout",
            m.http.handshake_timeouts.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed (untrusted certificate, not TLS, ...)",
            m.http.handshake_failures.clone(),
        );
        registry.register(
            "http_header_timeouts",
            "HTTP connections closed because request headers did not arrive within --header-read-timeout",
            m.http.header_timeouts.clone(),
        );
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register("rooms", "Rooms with at least one peer", m.rooms.clone());
        registry.register(
            "peers",
            "Peers attached on this node (joined, socket open)",
            m.peers.clone(),
        );
        registry.register(
            "session_buffered_messages",
            "Unacked messages kept for sessions (with --redis: over the whole cluster)",
            m.buffered.clone(),
        );
        registry.register(
            "resumes",
            "Session resumes, by outcome (ok, failed)",
            m.resumes.clone(),
        );
        for outcome in ["ok", "failed"] {
            let _ = m.resumes.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "redis_roundtrip_seconds",
            "Round trip of one Redis script call (a batch of store ops), --redis only",
            m.redis_rtt.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis script calls that failed or timed out, --redis only",
            m.redis_errors.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations that failed because the store was unreachable",
            m.store_errors.clone(),
        );
        registry.register(
            "messages_relayed",
            "Signal messages relayed between peers, by what their data holds",
            m.relayed.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages sent to clients, by type",
            m.sent.clone(),
        );
        registry.register(
            "errors",
            "Error replies sent to clients, by code",
            m.errors.clone(),
        );
        let t = &m.turn;
        registry.register(
            "turn_allocations",
            "TURN allocations",
            t.allocations.clone(),
        );
        registry.register(
            "turn_permissions",
            "TURN permissions",
            t.permissions.clone(),
        );
        registry.register("turn_channels", "TURN channel bindings", t.channels.clone());
        registry.register(
            "turn_relayed_packets",
            "Packets relayed, by direction (to_peer, to_client)",
            t.packets.clone(),
        );
        registry.register(
            "turn_relayed_bytes",
            "Payload bytes relayed, by direction",
            t.bytes.clone(),
        );
        registry.register(
            "turn_auth_failures",
            "TURN requests with bad credentials",
            t.auth_failures.clone(),
        );
        registry.register(
            "turn_denied_peers",
            "Permissions or channels refused by the peer address policy",
            t.denied_peers.clone(),
        );
        registry.register(
            "turn_dropped_packets",
            "Packets not relayed, by reason",
            t.dropped.clone(),
        );
        registry.register(
            "turn_stream_connections",
            "Open TURN connections over TCP and TLS",
            t.stream_connections.clone(),
        );
        registry.register(
            "turn_stream_expired",
            "TURN connections over TCP and TLS closed by a deadline (no allocation in time, or idle)",
            t.stream_expired.clone(),
        );
        // Touch every label value so dashboards see zeros rather than gaps.
        for k in RelayKind::ALL {
            let _ = m.relayed.get_or_create(&KindLabel { kind: k.as_str() });
        }
        for c in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&CodeLabel { code: c.as_str() });
        }
        Metrics { registry, ..m }
    }

    /// Counts one frame handed to a client.
    pub fn count(&self, kind: FrameKind) {
        self.sent
            .get_or_create(&TypeLabel {
                r#type: kind.type_str(),
            })
            .inc();
        if let FrameKind::Error(c) = kind {
            self.errors
                .get_or_create(&CodeLabel { code: c.as_str() })
                .inc();
        }
    }

    /// What the Redis store reports after each call.
    pub fn redis_observer(&self) -> cluster::Observer {
        let (rtt, errors) = (self.redis_rtt.clone(), self.redis_errors.clone());
        std::sync::Arc::new(move |took, ok| {
            rtt.observe(took.as_secs_f64());
            if !ok {
                errors.inc();
            }
        })
    }

    /// Counts what the hub noted.
    pub fn note(&self, note: Note) {
        match note {
            Note::Relayed(k) => {
                self.relayed
                    .get_or_create(&KindLabel { kind: k.as_str() })
                    .inc();
            }
            Note::Resumed => {
                self.resumes
                    .get_or_create(&OutcomeLabel { outcome: "ok" })
                    .inc();
            }
            Note::ResumeFailed => {
                self.resumes
                    .get_or_create(&OutcomeLabel { outcome: "failed" })
                    .inc();
            }
            Note::StoreUnavailable => {
                self.store_errors.inc();
            }
        }
    }

    /// Copies the TURN workers' figures in.
    pub fn update_turn(&self, s: &crate::relay::Snapshot) {
        let t = &self.turn;
        t.allocations.set(s.allocations as i64);
        t.permissions.set(s.permissions as i64);
        t.channels.set(s.channels as i64);
        let mut last = t.last.lock().unwrap_or_else(|e| e.into_inner());
        t.stream_connections.set(s.tcp_connections as i64);
        let ((new, new_drops, new_exp), (old, old_drops, old_exp)) =
            ((s.stats, s.send_drops, s.tcp_expired), *last);
        t.stream_expired.inc_by(new_exp - old_exp);
        let dir = |d| DirLabel { direction: d };
        let why = |r| ReasonLabel { reason: r };
        t.packets
            .get_or_create(&dir("to_peer"))
            .inc_by(new.packets_to_peer - old.packets_to_peer);
        t.packets
            .get_or_create(&dir("to_client"))
            .inc_by(new.packets_to_client - old.packets_to_client);
        t.bytes
            .get_or_create(&dir("to_peer"))
            .inc_by(new.bytes_to_peer - old.bytes_to_peer);
        t.bytes
            .get_or_create(&dir("to_client"))
            .inc_by(new.bytes_to_client - old.bytes_to_client);
        t.auth_failures
            .inc_by(new.auth_failures - old.auth_failures);
        t.denied_peers.inc_by(new.denied_peers - old.denied_peers);
        t.dropped
            .get_or_create(&why("bandwidth"))
            .inc_by(new.dropped_bandwidth - old.dropped_bandwidth);
        t.dropped
            .get_or_create(&why("total_bandwidth"))
            .inc_by(new.dropped_total_bandwidth - old.dropped_total_bandwidth);
        t.dropped
            .get_or_create(&why("no_permission"))
            .inc_by(new.dropped_no_permission - old.dropped_no_permission);
        t.dropped
            .get_or_create(&why("throttled"))
            .inc_by(new.throttled - old.throttled);
        t.dropped
            .get_or_create(&why("malformed"))
            .inc_by(new.malformed - old.malformed);
        t.dropped
            .get_or_create(&why("send_buffer_full"))
            .inc_by(new_drops - old_drops);
        *last = (new, new_drops, new_exp);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
