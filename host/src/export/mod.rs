//! The exporter framework: every sink tails the log with its own durable cursor.
//!
//! The framework owns the cursor, the route (which record kinds a sink takes), batching,
//! retries with exponential backoff and full jitter, and the dead-letter queue; a sink only
//! implements [`Sink::send`] and says, per item, what was delivered and what failed
//! retryably or permanently. A sink that falls behind reads from disk; memory does not grow.
//!
//! Layer 6: uses `event`, `store`, `telemetry`.

mod exporter;
pub mod sinks;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use exporter::{Exporter, ExporterMetrics};

use crate::event::RecordKind;

/// A record handed to a sink: its place in the log, its kind, and its JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRecord {
    /// Sequence number in the log; sinks may use it for idempotency.
    pub seq: u64,
    /// What the record is.
    pub kind: RecordKind,
    /// The record as JSON (a `SecurityEvent`, an `Alert` or an `IncidentChange`).
    pub payload: Vec<u8>,
}

/// How a failed delivery should be handled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again (network, timeout, 429, 5xx).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will fail again the same way (4xx, schema); goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// The outcome of one `send`: which items failed, by their index in the batch. Items not
/// listed were delivered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Failed items and why.
    pub failed: Vec<(usize, SinkError)>,
}

/// A destination. Implementations deliver; the framework does everything else.
pub trait Sink: Send + 'static {
    /// Restores the sink from the state saved with its cursor (and repairs its output if
    /// it wrote past that point before a crash).
    fn open(&mut self, state: &serde_json::Value) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Delivers a batch. `Err` fails the whole batch; `Ok` lists failed items.
    fn send(&mut self, batch: &[ExportRecord]) -> impl Future<Output = Result<SendReport, SinkError>> + Send;

    /// State to commit with the cursor after a successful send.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// The sink types (`type = "..."` in `[sinks.NAME]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkKind {
    /// JSON lines in a local file.
    File(sinks::file::FileSinkConfig),
}

/// One sink (`[sinks.NAME]`): its type and settings plus the framework's options.
#[derive(Clone, Debug, Serialize)]
pub struct SinkConfig {
    /// Type and type-specific settings.
    #[serde(flatten)]
    pub kind: SinkKind,
    /// Record kinds delivered (`["event", "alert", "incident"]`, the default).
    pub records: Vec<RecordKind>,
    /// Most records per send.
    pub batch_max_records: usize,
    /// Longest wait between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

const COMMON: [&str; 3] = ["records", "batch_max_records", "retry_max_backoff"];

impl<'de> Deserialize<'de> for SinkConfig {
    // The framework's options sit beside the type's own; serde's `flatten` would lose
    // `deny_unknown_fields`, so the table is split by hand.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(deserializer)?;
        let take = |table: &mut toml::Table, key: &str| table.remove(key);
        let records = match take(&mut table, COMMON[0]) {
            Some(v) => v.try_into().map_err(|e| D::Error::custom(format!("records: {e}")))?,
            None => vec![RecordKind::Event, RecordKind::Alert, RecordKind::Incident],
        };
        let batch_max_records = match take(&mut table, COMMON[1]) {
            Some(v) => v.try_into().map_err(|e| D::Error::custom(format!("batch_max_records: {e}")))?,
            None => 1000,
        };
        let retry_max_backoff = match take(&mut table, COMMON[2]) {
            Some(toml::Value::String(s)) => {
                humantime::parse_duration(&s).map_err(|e| D::Error::custom(format!("retry_max_backoff: {e}")))?
            }
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "retry_max_backoff: expected a duration like \"30s\", got {other}"
                )));
            }
            None => Duration::from_secs(30),
        };
        let kind = SinkKind::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(Self { kind, records, batch_max_records, retry_max_backoff })
    }
}

impl SinkConfig {
    /// Every problem with the settings, with its path under `sinks.NAME`.
    pub fn validate(&self, name: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.records.is_empty() {
            errors.push((format!("sinks.{name}.records"), "must name at least one record kind".into()));
        }
        if self.batch_max_records == 0 {
            errors.push((format!("sinks.{name}.batch_max_records"), "must be at least 1".into()));
        }
        match &self.kind {
            SinkKind::File(file) => errors.extend(file.validate(name)),
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
            "type = \"file\"\npath = \"out.jsonl\"\nrecords = [\"incident\"]\nretry_max_backoff = \"5s\"",
        )
        .expect("parse");
        assert_eq!(config.records, vec![RecordKind::Incident]);
        assert_eq!(config.retry_max_backoff, Duration::from_secs(5));
        assert_eq!(config.batch_max_records, 1000);
        let SinkKind::File(file) = &config.kind;
        assert_eq!(file.path, std::path::PathBuf::from("out.jsonl"));
    }

    #[test]
    fn unknown_sink_options_and_types_are_errors() {
        let err = toml::from_str::<SinkConfig>("type = \"file\"\npath = \"x\"\nbogus = 1").expect_err("unknown field");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = toml::from_str::<SinkConfig>("type = \"kafka\"").expect_err("unknown type");
        assert!(err.to_string().contains("kafka"), "{err}");
        let err =
            toml::from_str::<SinkConfig>("type = \"file\"\npath = \"x\"\nrecords = [\"nope\"]").expect_err("bad kind");
        assert!(err.to_string().contains("records"), "{err}");
    }
}
