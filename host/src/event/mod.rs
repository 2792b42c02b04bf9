//! The canonical event model: [`SecurityEvent`] v1, the id newtypes, severities, dotted
//! field paths, and decoding with validation.
//!
//! Layer 0: uses no other module of the crate.

mod decode;
mod field;
mod ids;
mod model;
mod priority;

pub use decode::{
    DecodeError, DecodeLimits, Problem, check_depth, check_record, decode_event, json_syntax_error, validate,
};
pub use field::{Field, FieldPath, FieldValue, UnknownField};
pub use ids::{AlertId, EventId, IncidentId, RuleId, RunId};
pub use model::unset_time;
pub use model::{
    Cloud, Endpoint, EventClass, File, Hashes, Host, Http, Network, Outcome, ParentProcess, Process, SCHEMA_VERSION,
    SecurityEvent, Severity, TargetUser, Threat, Url, User,
};
pub use priority::Priority;

/// Whether an address is public: outside the private (RFC 1918, ULA), loopback,
/// link-local, shared (CGNAT), multicast, unspecified, broadcast and reserved ranges. The
/// documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32)
/// count as public: they stand for internet hosts in examples and tests.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80)
        }
    }
}

/// Ingest-time enrichment: what the ingest path asks before it stores an event. Implemented
/// above (threat intelligence, in `intel`); declared here so sources need not know it.
pub trait Enricher: Send + Sync + std::fmt::Debug {
    /// The threat matches among `events`: (index in `events`, match), in index order, for
    /// the events one of whose values is a known indicator. Ingest asks once per batch, so
    /// the lookups can overlap.
    fn threats(&self, events: &[SecurityEvent]) -> Vec<(usize, Threat)>;

    /// The threat match for one event.
    fn threat(&self, event: &SecurityEvent) -> Option<Threat> {
        self.threats(std::slice::from_ref(event)).pop().map(|(_, threat)| threat)
    }
}

/// What a log record holds. The event log stores events and, after detection, the alerts and
/// incident changes derived from them, so every sink reads one ordered stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RecordKind {
    /// A [`SecurityEvent`].
    Event = 1,
    /// An alert produced by a rule.
    Alert = 2,
    /// An incident opened or changed.
    Incident = 3,
}

/// The log tag of a *replayed* event: an event another instance already consumed, stored
/// here only so detection can rebuild the windows of a NATS partition that moved to this
/// instance (`source::nats`). Detection warms its windows with it and raises nothing; it is
/// not a [`RecordKind`], so sinks, hunts, backtests and snapshots never see it.
pub const REPLAY_TAG: u8 = 4;

impl RecordKind {
    /// The tag byte stored in the log.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The kind for a stored tag byte.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::Event),
            2 => Some(Self::Alert),
            3 => Some(Self::Incident),
            _ => None,
        }
    }

    /// The kind as written in configs and output (`event`, `alert`, `incident`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Alert => "alert",
            Self::Incident => "incident",
        }
    }
}

/// The JSON Schema of [`SecurityEvent`] (what `vigil schema` prints).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(SecurityEvent)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_kind_tags_round_trip() {
        for kind in [RecordKind::Event, RecordKind::Alert, RecordKind::Incident] {
            assert_eq!(RecordKind::from_tag(kind.tag()), Some(kind));
        }
        assert_eq!(RecordKind::from_tag(0), None);
    }

    #[test]
    fn json_schema_describes_the_event() {
        let schema = json_schema();
        let props = &schema["properties"];
        assert!(props["source"].is_object(), "{schema}");
        assert_eq!(schema["required"], serde_json::json!(["class"]));
        assert!(schema["additionalProperties"] == serde_json::json!(false), "{schema}");
        // No generated defaults (random ids, the unset-time marker) leak into the schema.
        assert!(props["id"].get("default").is_none(), "{}", props["id"]);
        assert!(props["time"].get("default").is_none(), "{}", props["time"]);
    }
}
