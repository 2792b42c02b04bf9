//! The Prometheus registry shared by every module, and the metric names.
//!
//! Each module defines its own metrics struct and registers it here once at build time;
//! `/metrics` encodes the registry in the OpenMetrics text format.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// Metric names (without the `vigil_` prefix the registry adds, and without the `_total`
/// suffix counters get).
pub mod names {
    /// Records accepted into the log, by source.
    pub const EVENTS_INGESTED: &str = "events_ingested";
    /// Records refused at ingest, by source and reason.
    pub const EVENTS_REJECTED: &str = "events_rejected";
    /// Records appended to the log, by kind.
    pub const LOG_APPENDED: &str = "log_appended_records";
    /// Group commits written to the log.
    pub const LOG_COMMITS: &str = "log_commits";
    /// Records currently in the log.
    pub const LOG_RECORDS: &str = "log_records";
    /// Bytes the log occupies on disk.
    pub const LOG_BYTES: &str = "log_bytes";
    /// Records removed by retention.
    pub const LOG_RETENTION_DELETED: &str = "log_retention_deleted_records";
    /// Records a consumer (sink, detection) has yet to process.
    pub const CONSUMER_LAG: &str = "consumer_lag_records";
    /// Rule evaluations, by rule.
    pub const RULE_EVALUATIONS: &str = "rule_evaluations";
    /// Rule evaluation errors, by rule and reason.
    pub const RULE_ERRORS: &str = "rule_errors";
    /// Alerts raised, by rule.
    pub const ALERTS: &str = "alerts";
    /// Incidents opened, by rule.
    pub const INCIDENTS_OPENED: &str = "incidents_opened";
    /// Incidents a rule opened in the 24 h of event time before its latest, by rule.
    pub const RULE_INCIDENTS_24H: &str = "rule_incidents_24h";
    /// 1 for a rule past `incidents.priority.noisy_after`, by rule.
    pub const RULE_NOISY: &str = "rule_noisy";
    /// Records delivered by a sink.
    pub const SINK_DELIVERED: &str = "sink_delivered_records";
    /// Send attempts of a sink that failed, by sink and class (retryable, permanent).
    pub const SINK_FAILURES: &str = "sink_failures";
    /// Syslog frames that could not be read, by reason.
    pub const SYSLOG_MALFORMED: &str = "syslog_malformed_frames";
    /// Playbook runs that ended, by playbook and status.
    pub const PLAYBOOK_RUNS: &str = "playbook_runs";
    /// Action executions, by action and result (ok, failed, refused, rolled_back, expired).
    pub const ACTIONS: &str = "actions";
    /// Playbook timeline entries that could not be queued (the detection worker was behind).
    pub const TIMELINE_DROPPED: &str = "playbook_timeline_dropped";
    /// STIX objects read from threat-intel feeds, by feed and result (added, updated,
    /// unchanged, revoked, ignored, skipped).
    pub const INTEL_OBJECTS: &str = "intel_objects";
    /// Feed polls, by feed and result (ok, failed).
    pub const INTEL_POLLS: &str = "intel_polls";
    /// Indicators in the matcher.
    pub const INTEL_INDICATORS: &str = "intel_indicators";
    /// Events that matched an indicator at ingest, by feed.
    pub const INTEL_MATCHES: &str = "intel_matches";
    /// Indicators removed because they expired.
    pub const INTEL_EXPIRED: &str = "intel_expired";
    /// The running build (`vigil_build_info{version, profile} 1`).
    pub const BUILD: &str = "build";
    /// From a batch handed to the log writer until it is durable (the group commit and its
    /// fsync): what an HTTP 202 or a file offset waits for, by source.
    pub const INGEST_DURABLE_LATENCY: &str = "ingest_durable_latency_seconds";
    /// From an event's append to the log until detection has committed its evaluation
    /// (alerts and incidents durable).
    pub const DETECT_LAG: &str = "detect_lag_seconds";
    /// From a record's append to the log until a sink delivered it, by sink.
    pub const SINK_DELIVERY_LATENCY: &str = "sink_delivery_latency_seconds";
}

/// The buckets (seconds) of every latency histogram: from a millisecond (a group commit
/// on a fast disk) to a minute (a sink catching up after an outage).
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 60.0];

/// A latency histogram on the shared buckets (1 ms to 60 s).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The registry every module registers its metrics into.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Mutex<Registry>,
}

impl Default for MetricsRegistry {
    /// A registry holding `vigil_build_info`.
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        registry.register(
            names::BUILD,
            "The running build.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION")), ("profile", profile)]),
        );
        Self { registry: Mutex::new(registry) }
    }
}

impl MetricsRegistry {
    /// Registers a metric (or family) under `name` with a help text.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// The whole registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.lock());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_metrics_are_encoded_with_the_prefix() {
        let registry = MetricsRegistry::default();
        let counter = Counter::<u64>::default();
        registry.register(names::ALERTS, "Alerts raised.", counter.clone());
        counter.inc_by(3);
        let text = registry.encode();
        assert!(text.contains("vigil_alerts_total 3"), "{text}");
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("vigil_build_info{{version=\"{version}\",profile=\"debug\"}} 1")), "{text}");
    }
}
