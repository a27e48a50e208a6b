//! Prometheus metrics of the signaling server, served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use signal::{ErrorCode, FrameKind, RelayKind};

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

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub rooms: Gauge,
    pub peers: Gauge,
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
            relayed: Family::default(),
            sent: Family::default(),
            errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open WebSocket connections", m.connections.clone());
        registry.register("rooms", "Rooms with at least one peer", m.rooms.clone());
        registry.register("peers", "Peers joined to a room", m.peers.clone());
        registry.register(
            "messages_relayed",
            "Signal messages relayed between peers, by what their data holds",
            m.relayed.clone(),
        );
        registry.register("messages_sent", "Messages sent to clients, by type", m.sent.clone());
        registry.register("errors", "Error replies sent to clients, by code", m.errors.clone());
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
        self.sent.get_or_create(&TypeLabel { r#type: kind.type_str() }).inc();
        match kind {
            FrameKind::Signal(k) => {
                self.relayed.get_or_create(&KindLabel { kind: k.as_str() }).inc();
            }
            FrameKind::Error(c) => {
                self.errors.get_or_create(&CodeLabel { code: c.as_str() }).inc();
            }
            _ => {}
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
