//! The exporter framework: every sink tails the log with its own durable cursor.
//!
//! The framework owns everything but the wire format: the cursor, the route (which records
//! a sink takes), redaction and the transform, batching by count, bytes and time,
//! concurrency with in-order commits, retries with exponential backoff and full jitter
//! (honouring `Retry-After`, through the rate limiter, bounded by a retry budget), the
//! circuit breaker, per-item accounting and the dead-letter queue. A sink implements
//! [`Sink::send`] and says, per item, what was delivered and what failed retryably or
//! permanently. A sink that falls behind reads from disk; memory does not grow.
//!
//! Accounting, per sink: every record read is *accepted*; it ends *filtered* (the route
//! skipped it), *delivered* or *dead-lettered*, or is still *in flight*, so
//! `accepted = delivered + dead_lettered + in_flight + filtered` at all times.
//!
//! Layer 6: uses `event`, `store`, `telemetry`, `transform`, `rules`, `detect`, `incident`.

mod breaker;
pub mod dlq;
mod encode;
mod exporter;
pub mod http;
mod retry;
mod route;
pub mod sinks;

use std::future::Future;
use std::time::Duration;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

pub use breaker::{BreakerState, CircuitBreaker};
pub use dlq::{DeadLetter, DlqFilter};
pub use encode::Encoder;
pub use exporter::{Exporter, ExporterHandle, ExporterMetrics, SinkStatus};
pub use retry::{Backoff, RetryBudget, parse_retry_after};
pub use route::{Route, RouteConfig};

use crate::event::RecordKind;
use crate::transform::{Format, RedactionConfig};

/// A record ready for a sink: its place in the log, its kind, a stable id, and its body in
/// the sink's format.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Sequence number in the log.
    pub seq: u64,
    /// What the record is.
    pub kind: RecordKind,
    /// A stable id for idempotency (event id, alert id, incident id + change).
    pub id: String,
    /// Event time of the record.
    pub time: DateTime<Utc>,
    /// Host the record concerns, when known (HEC `host`, Datadog `hostname`).
    pub host: Option<String>,
    /// Severity on the 0–10 scale CEF uses (syslog severity, Datadog status).
    pub severity: u8,
    /// The body, encoded by the sink's transform (JSON or a text line).
    pub body: Vec<u8>,
    /// Whether `body` is JSON.
    pub json: bool,
}

/// How a failed delivery should be handled; decided by the sink, in the type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again (network, timeout, 408, 429, 5xx, platform busy codes), after
    /// `retry_after` when the destination said so.
    #[error("retryable: {reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// The destination's `Retry-After`, if it gave one.
        retry_after: Option<Duration>,
    },
    /// The request as a whole was refused for its size or for an item the destination did
    /// not name (HTTP 413, HEC code 6 without `invalid-event-number`): the framework sends
    /// the batch again in halves, and dead-letters a single item refused this way.
    #[error("split: {reason}")]
    Split {
        /// What happened.
        reason: String,
    },
    /// Will fail again the same way (4xx, schema); goes to the dead-letter queue.
    #[error("permanent: {reason}")]
    Permanent {
        /// What happened.
        reason: String,
        /// HTTP status (or platform code), when there was one.
        status: Option<u16>,
        /// The start of the response body.
        excerpt: Option<String>,
    },
}

impl SinkError {
    /// A retryable error without a server-given delay.
    pub fn retryable(reason: impl Into<String>) -> Self {
        Self::Retryable { reason: reason.into(), retry_after: None }
    }

    /// A permanent error without status or excerpt.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent { reason: reason.into(), status: None, excerpt: None }
    }

    /// Whether retrying may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// The outcome of one `send`: which items failed, by their index in the batch. Items not
/// listed were delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Failed items and why.
    pub failed: Vec<(usize, SinkError)>,
}

/// Limits a platform puts on one request; the framework splits batches to respect them
/// (never truncates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlatformLimits {
    /// Most items per request.
    pub max_items: Option<usize>,
    /// Most body bytes per request (before compression).
    pub max_bytes: Option<usize>,
    /// Largest single item; larger ones are dead-lettered.
    pub max_item_bytes: Option<usize>,
}

/// A destination. Implementations deliver; the framework does everything else.
pub trait Sink: Send + Sync + 'static {
    /// Restores the sink from the state saved with its cursor (and repairs its output if
    /// it wrote past that point before a crash).
    fn open(&mut self, state: &serde_json::Value) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = state;
        async { Ok(()) }
    }

    /// Delivers a batch. `Err` fails the whole batch; `Ok` lists failed items.
    fn send(&self, batch: &[Item]) -> impl Future<Output = Result<SendReport, SinkError>> + Send;

    /// State to commit with the cursor after a batch (the file sink's offset).
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Checks that the destination is reachable and accepts our credentials.
    fn healthcheck(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Most batches in flight at once (1 for sinks that must write in order).
    fn max_concurrency(&self) -> usize {
        64
    }

    /// The platform's per-request limits.
    fn limits(&self) -> PlatformLimits {
        PlatformLimits::default()
    }

    /// Whether this is a paging, chat or mail channel: `send` makes one request per item
    /// and an incident's changes must not overtake each other. Such a sink gets one batch
    /// in flight at a time, and single-item batches when it has a rate limit (so that the
    /// limit counts requests).
    fn incident_channel(&self) -> bool {
        false
    }
}

/// The sink types (`type = "..."` in `[sinks.NAME]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkKind {
    /// JSON lines (or CEF/LEEF lines) in a local file, with rotation.
    File(sinks::file::FileSinkConfig),
    /// Splunk HTTP Event Collector.
    SplunkHec(sinks::splunk_hec::SplunkHecConfig),
    /// Elasticsearch or OpenSearch `_bulk`.
    Elasticsearch(sinks::elasticsearch::ElasticsearchConfig),
    /// Datadog Logs API v2.
    Datadog(sinks::datadog::DatadogConfig),
    /// Sumo Logic HTTP Source.
    SumoLogic(sinks::sumo_logic::SumoLogicConfig),
    /// Syslog (RFC 5424) over UDP, TCP or TLS.
    Syslog(sinks::syslog::SyslogSinkConfig),
    /// Any HTTP endpoint: templated body, auth, HMAC signing.
    Http(sinks::http::HttpSinkConfig),
    /// PagerDuty Events API v2 (incidents).
    Pagerduty(sinks::pagerduty::PagerDutyConfig),
    /// Opsgenie Alert API (incidents).
    Opsgenie(sinks::opsgenie::OpsgenieConfig),
    /// Slack incoming webhook (incidents).
    Slack(sinks::slack::SlackConfig),
    /// Microsoft Teams Workflows webhook (incidents).
    Teams(sinks::teams::TeamsConfig),
    /// Email over SMTP (incidents).
    Email(sinks::email::EmailConfig),
    /// NATS JetStream subjects (the shared view of a scaled-out deployment).
    Nats(sinks::nats::NatsSinkConfig),
}

impl SinkKind {
    /// The `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::SplunkHec(_) => "splunk_hec",
            Self::Elasticsearch(_) => "elasticsearch",
            Self::Datadog(_) => "datadog",
            Self::SumoLogic(_) => "sumo_logic",
            Self::Syslog(_) => "syslog",
            Self::Http(_) => "http",
            Self::Pagerduty(_) => "pagerduty",
            Self::Opsgenie(_) => "opsgenie",
            Self::Slack(_) => "slack",
            Self::Teams(_) => "teams",
            Self::Email(_) => "email",
            Self::Nats(_) => "nats",
        }
    }

    /// Whether this is a paging or chat channel, which takes incident changes only.
    pub fn is_channel(&self) -> bool {
        matches!(self, Self::Pagerduty(_) | Self::Opsgenie(_) | Self::Slack(_) | Self::Teams(_) | Self::Email(_))
    }

    /// The route a sink type takes when none is configured.
    pub fn default_route(&self) -> RouteConfig {
        if self.is_channel() {
            RouteConfig { records: vec![RecordKind::Incident], ..RouteConfig::default() }
        } else {
            RouteConfig::default()
        }
    }

    /// The platform's documented rate, applied unless `rate_limit` is configured:
    /// PagerDuty 120 events a minute per routing key, a Slack webhook about one a second.
    pub fn default_rate_limit(&self) -> Option<RateLimitConfig> {
        match self {
            Self::Pagerduty(_) => Some(RateLimitConfig { requests_per_second: 2.0, burst: 20 }),
            Self::Slack(_) => Some(RateLimitConfig { requests_per_second: 1.0, burst: 1 }),
            _ => None,
        }
    }

    /// The format a sink type writes when none is configured.
    pub fn default_format(&self) -> Format {
        match self {
            Self::Elasticsearch(_) => Format::Ecs,
            _ => Format::Json,
        }
    }
}

/// Batching (`batch = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most records per request.
    pub max_records: usize,
    /// Most bytes per request (before compression).
    #[schemars(schema_with = "crate::store::byte_size_schema")]
    pub max_bytes: ByteSize,
    /// How long to wait for a batch to fill before sending what there is.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_records: 1000, max_bytes: ByteSize::mib(4), timeout: Duration::from_millis(10) }
    }
}

/// Retries (`retry = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First backoff.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts (full jitter below it).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
    /// Retries allowed per first attempt, over time (0.2 = 20 %); past it, retries wait.
    pub budget_ratio: f64,
    /// After this long failing retryably, a record goes to the dead-letter queue; without
    /// it (the default) records wait in the log for as long as retention keeps them.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub give_up_after: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            budget_ratio: 0.2,
            give_up_after: None,
        }
    }
}

/// The circuit breaker (`breaker = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed attempts that open it.
    pub failures: u32,
    /// How long it stays open before one probe is let through.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: 5, open_for: Duration::from_secs(10) }
    }
}

/// Request rate limit toward the destination (`rate_limit = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second, sustained.
    pub requests_per_second: f64,
    /// Requests allowed in a burst.
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

/// One sink (`[sinks.NAME]`): its type and settings plus the framework's options.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[schemars(transform = sink_config_schema)]
pub struct SinkConfig {
    /// Type and type-specific settings.
    #[serde(flatten)]
    pub kind: SinkKind,
    /// Which records the sink takes.
    pub route: RouteConfig,
    /// Output format; default `json` (`ecs` for Elasticsearch).
    pub format: Format,
    /// Redaction applied before the format.
    pub redact: RedactionConfig,
    /// Batching.
    pub batch: BatchConfig,
    /// Batches in flight at once (the sink type may allow fewer).
    pub concurrency: usize,
    /// Retries.
    pub retry: RetryConfig,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Request rate limit, if any.
    pub rate_limit: Option<RateLimitConfig>,
    /// How often the destination's health is checked.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub healthcheck_interval: Duration,
    /// A transform plugin whose output (one line per event) replaces the format's; events
    /// only (route alerts and incidents elsewhere).
    pub transform: Option<String>,
}

const COMMON: [&str; 10] = [
    "route",
    "format",
    "redact",
    "batch",
    "concurrency",
    "retry",
    "breaker",
    "rate_limit",
    "healthcheck_interval",
    "transform",
];

/// The schema of `[sinks.NAME]` as [`SinkConfig::deserialize`] reads it: every framework
/// option is optional, and each sink type's settings sit beside them in one table, so a
/// key neither knows is refused whatever the type.
fn sink_config_schema(schema: &mut schemars::Schema) {
    let Some(object) = schema.as_object_mut() else { return };
    object.remove("required");
    let Some(serde_json::Value::Object(common)) = object.get("properties").cloned() else { return };
    let Some(serde_json::Value::Array(kinds)) = object.get_mut("oneOf") else { return };
    for kind in kinds.iter_mut().filter_map(|k| k.as_object_mut()) {
        if let Some(serde_json::Value::Object(own)) = kind.get_mut("properties") {
            for (key, value) in &common {
                own.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        kind.insert("additionalProperties".into(), false.into());
    }
}

impl<'de> Deserialize<'de> for SinkConfig {
    // The framework's options sit beside the type's own; serde's `flatten` would lose
    // `deny_unknown_fields`, so the table is split by hand.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        fn take<T: serde::de::DeserializeOwned + Default, E: Error>(
            table: &mut toml::Table,
            key: &str,
        ) -> Result<T, E> {
            match table.remove(key) {
                Some(v) => v.try_into().map_err(|e| E::custom(format!("{key}: {e}"))),
                None => Ok(T::default()),
            }
        }
        let route: Option<RouteConfig> = take(&mut table, COMMON[0])?;
        let format: Option<Format> = take(&mut table, COMMON[1])?;
        let redact: RedactionConfig = take(&mut table, COMMON[2])?;
        let batch: BatchConfig = take(&mut table, COMMON[3])?;
        let concurrency: Option<usize> = take(&mut table, COMMON[4])?;
        let retry: RetryConfig = take(&mut table, COMMON[5])?;
        let breaker: BreakerConfig = take(&mut table, COMMON[6])?;
        let rate_limit: Option<RateLimitConfig> = take(&mut table, COMMON[7])?;
        let healthcheck_interval = match table.remove(COMMON[8]) {
            Some(toml::Value::String(s)) => {
                humantime::parse_duration(&s).map_err(|e| D::Error::custom(format!("healthcheck_interval: {e}")))?
            }
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "healthcheck_interval: expected a duration like \"30s\", got {other}"
                )));
            }
            None => Duration::from_secs(30),
        };
        let transform: Option<String> = take(&mut table, COMMON[9])?;
        let kind = SinkKind::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        let format = format.unwrap_or_else(|| kind.default_format());
        let route = route.unwrap_or_else(|| kind.default_route());
        let rate_limit = rate_limit.or_else(|| kind.default_rate_limit());
        Ok(Self {
            kind,
            route,
            format,
            redact,
            batch,
            concurrency: concurrency.unwrap_or(4),
            retry,
            breaker,
            rate_limit,
            healthcheck_interval,
            transform,
        })
    }
}

impl SinkConfig {
    /// A sink of `kind` with every framework option at its default.
    pub fn new(kind: SinkKind) -> Self {
        let format = kind.default_format();
        Self {
            route: kind.default_route(),
            rate_limit: kind.default_rate_limit(),
            kind,
            format,
            redact: RedactionConfig::default(),
            batch: BatchConfig::default(),
            concurrency: 4,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            healthcheck_interval: Duration::from_secs(30),
            transform: None,
        }
    }

    /// Every problem with the settings, with its path under `sinks.NAME`.
    pub fn validate(&self, name: &str) -> Vec<(String, String)> {
        let p = format!("sinks.{name}");
        let mut errors = Vec::new();
        errors.extend(self.route.validate(&format!("{p}.route")));
        errors.extend(self.redact.validate(&format!("{p}.redact")));
        if self.batch.max_records == 0 {
            errors.push((format!("{p}.batch.max_records"), "must be at least 1".into()));
        }
        if self.batch.max_bytes.as_u64() < 1024 {
            errors.push((format!("{p}.batch.max_bytes"), "must be at least 1KiB".into()));
        }
        if self.concurrency == 0 {
            errors.push((format!("{p}.concurrency"), "must be at least 1".into()));
        }
        if !(0.0..=10.0).contains(&self.retry.budget_ratio) {
            errors.push((format!("{p}.retry.budget_ratio"), "must be between 0 and 10".into()));
        }
        if self.breaker.failures == 0 {
            errors.push((format!("{p}.breaker.failures"), "must be at least 1".into()));
        }
        if let Some(rl) = &self.rate_limit
            && (rl.requests_per_second.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || rl.burst == 0)
        {
            errors.push((format!("{p}.rate_limit"), "requests_per_second and burst must be greater than 0".into()));
        }
        let text_only = matches!(self.format, Format::Cef | Format::Leef);
        match &self.kind {
            SinkKind::File(c) => errors.extend(c.validate(&p)),
            SinkKind::SplunkHec(c) => errors.extend(c.validate(&p)),
            SinkKind::Elasticsearch(c) => {
                errors.extend(c.validate(&p));
                if text_only {
                    errors
                        .push((format!("{p}.format"), "Elasticsearch needs a JSON format (ecs, ocsf or json)".into()));
                }
            }
            SinkKind::Datadog(c) => errors.extend(c.validate(&p)),
            SinkKind::SumoLogic(c) => errors.extend(c.validate(&p)),
            SinkKind::Syslog(c) => errors.extend(c.validate(&p)),
            SinkKind::Http(c) => errors.extend(c.validate(&p)),
            SinkKind::Pagerduty(c) => errors.extend(c.validate(&p)),
            SinkKind::Opsgenie(c) => errors.extend(c.validate(&p)),
            SinkKind::Slack(c) => errors.extend(c.validate(&p)),
            SinkKind::Teams(c) => errors.extend(c.validate(&p)),
            SinkKind::Email(c) => errors.extend(c.validate(&p)),
            SinkKind::Nats(c) => errors.extend(c.validate(&p)),
        }
        if self.kind.is_channel() {
            errors.extend(sinks::incident::validate_records(&p, &self.route, &self.format));
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_config_splits_common_and_type_options() {
        let config: SinkConfig = toml::from_str(
            "type = \"file\"\npath = \"out.jsonl\"\nformat = \"cef\"\nroute = { records = [\"incident\"] }\nretry = { max_backoff = \"5s\" }",
        )
        .expect("parse");
        assert_eq!(config.route.records, vec![RecordKind::Incident]);
        assert_eq!(config.retry.max_backoff, Duration::from_secs(5));
        assert_eq!(config.batch.max_records, 1000);
        assert_eq!(config.format, Format::Cef);
        let SinkKind::File(file) = &config.kind else { panic!("file sink") };
        assert_eq!(file.path, std::path::PathBuf::from("out.jsonl"));
    }

    #[test]
    fn unknown_sink_options_and_types_are_errors() {
        let err = toml::from_str::<SinkConfig>("type = \"file\"\npath = \"x\"\nbogus = 1").expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = toml::from_str::<SinkConfig>("type = \"kafka\"").expect_err("unknown type");
        assert!(err.to_string().contains("kafka"), "{err}");
        let err = toml::from_str::<SinkConfig>("type = \"file\"\npath = \"x\"\nroute = { records = [\"nope\"] }")
            .expect_err("bad kind");
        assert!(err.to_string().contains("route"), "{err}");
    }

    #[test]
    fn elasticsearch_defaults_to_ecs_and_refuses_text_formats() {
        let config: SinkConfig =
            toml::from_str("type = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:9200\"").expect("parse");
        assert_eq!(config.format, Format::Ecs);
        let config: SinkConfig =
            toml::from_str("type = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:9200\"\nformat = \"cef\"")
                .expect("parse");
        assert!(config.validate("es").iter().any(|(p, _)| p == "sinks.es.format"));
    }

    #[test]
    fn channels_take_incidents_with_their_platform_limits_and_say_what_is_wrong() {
        let config: SinkConfig =
            toml::from_str("type = \"slack\"\nwebhook_url = \"https://hooks.slack.com/services/T/B/x\"")
                .expect("parse");
        assert_eq!(config.route.records, vec![RecordKind::Incident]);
        assert_eq!(config.rate_limit.as_ref().map(|r| r.requests_per_second), Some(1.0));
        assert!(config.validate("chat").is_empty());
        let config: SinkConfig = toml::from_str(
            "type = \"pagerduty\"\nrouting_key = \"short\"\ntemplate = \"missing.json\"\nformat = \"cef\"\nroute = { records = [\"event\"] }",
        )
        .expect("parse");
        let paths: Vec<String> = config.validate("pd").into_iter().map(|(p, _)| p).collect();
        for expected in ["sinks.pd.routing_key", "sinks.pd.template", "sinks.pd.route.records", "sinks.pd.format"] {
            assert!(paths.iter().any(|p| p == expected), "{expected} in {paths:?}");
        }
        let errors = config.validate("pd");
        assert!(!errors.iter().any(|(_, m)| m.contains("short")), "the key is not echoed: {errors:?}");
    }
}
