//! The Prometheus registry shared by every module, and the metric names.
//!
//! Each module defines its own metrics struct and registers it here once at build time;
//! `/metrics` encodes the registry in the OpenMetrics text format.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
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
}

/// The registry every module registers its metrics into.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Mutex<Registry>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self { registry: Mutex::new(Registry::with_prefix("vigil")) }
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
    }
}
