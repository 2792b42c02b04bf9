//! Transforms: turn a record (an event, or a finding — an alert or an incident change) into
//! what a destination expects: ECS documents, CEF or LEEF lines, OCSF events, or Vigil's own
//! JSON. All are pure and deterministic (golden files hold their output); redaction runs
//! before any of them.
//!
//! Layer 2: uses `event`, `telemetry`. Findings are described by [`Finding`], a plain view
//! that `export` builds from alerts and incident changes, so this layer needs neither.

mod cef;
mod ecs;
mod leef;
mod ocsf;
mod redact;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use redact::{Redaction, RedactionConfig};

use crate::event::{Priority, SecurityEvent};

/// Errors of a transform: the record cannot be expressed in the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{format}: {reason}")]
pub struct TransformError {
    /// The format.
    pub format: &'static str,
    /// Why.
    pub reason: String,
}

/// What produced a finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// An alert from a rule.
    Alert,
    /// An incident opened or changed (`change` says how, `status` where it is now).
    Incident {
        /// `opened`, `updated`, `suppressed` or `changed`.
        change: String,
        /// The incident's status after the change.
        status: String,
    },
}

/// A detection, as transforms see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// Alert or incident change.
    pub kind: FindingKind,
    /// Alert id or incident id.
    pub id: String,
    /// The rule.
    pub rule_id: String,
    /// Title.
    pub title: String,
    /// Priority.
    pub priority: Priority,
    /// Rule category.
    pub category: Option<String>,
    /// Event time of the latest triggering event.
    pub time: DateTime<Utc>,
    /// Event time of the earliest triggering event.
    pub first_time: DateTime<Utc>,
    /// Events behind it.
    pub count: u64,
    /// IPs involved.
    pub ips: BTreeSet<String>,
    /// Users involved.
    pub users: BTreeSet<String>,
    /// Hosts involved.
    pub hosts: BTreeSet<String>,
    /// Ids of triggering events (some).
    pub event_ids: Vec<String>,
    /// ATT&CK technique ids.
    pub techniques: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The dedup key (rule and group values).
    pub dedup_key: String,
    /// Channels the rule asked to notify.
    pub notify: Vec<String>,
    /// The record as Vigil stores it, for formats that carry it whole.
    pub raw: serde_json::Value,
}

/// What a transform takes.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    /// A security event.
    Event(&'a SecurityEvent),
    /// A detection.
    Finding(&'a Finding),
}

/// What a transform produces: a JSON document, or a line of text.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A JSON value (ECS, OCSF, Vigil JSON).
    Json(serde_json::Value),
    /// A text line (CEF, LEEF).
    Text(String),
}

impl Output {
    /// The output as bytes (JSON serialized compactly).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            // A serde_json::Value always serializes.
            Self::Json(v) => serde_json::to_vec(&v).expect("JSON value serializes"),
            Self::Text(t) => t.into_bytes(),
        }
    }
}

/// The formats (`format = "..."` on a sink).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Vigil's own JSON: the event, alert or incident change as stored.
    #[default]
    Json,
    /// Elastic Common Schema 9.x documents.
    Ecs,
    /// ArcSight Common Event Format lines.
    Cef,
    /// IBM QRadar LEEF 2.0 lines (fields separated by `^`).
    Leef,
    /// OCSF 1.5 events (Authentication, Network/HTTP/DNS Activity, Process, File, Account
    /// Change, API Activity, Detection Finding, Base Event).
    Ocsf,
}

impl Format {
    /// The format's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Ecs => "ecs",
            Self::Cef => "cef",
            Self::Leef => "leef",
            Self::Ocsf => "ocsf",
        }
    }

    /// Whether the output is JSON (else a text line).
    pub fn is_json(&self) -> bool {
        matches!(self, Self::Json | Self::Ecs | Self::Ocsf)
    }
}

/// A record to its destination format: pure and deterministic.
pub trait Transform: Send + Sync {
    /// The format's name.
    fn name(&self) -> &'static str;
    /// Transforms one record.
    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError>;
}

/// The product name and version written into every format's header.
pub const PRODUCT: &str = "Vigil";
/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The built-in transform for a format.
pub fn builtin(format: &Format) -> Box<dyn Transform> {
    match format {
        Format::Json => Box::new(Json),
        Format::Ecs => Box::new(ecs::Ecs),
        Format::Cef => Box::new(cef::Cef),
        Format::Leef => Box::new(leef::Leef),
        Format::Ocsf => Box::new(ocsf::Ocsf),
    }
}

/// Vigil's own JSON: events as stored, findings as stored.
#[derive(Debug)]
pub struct Json;

impl Transform for Json {
    fn name(&self) -> &'static str {
        "json"
    }

    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError> {
        Ok(Output::Json(match input {
            Input::Event(e) => {
                serde_json::to_value(e).map_err(|e| TransformError { format: "json", reason: e.to_string() })?
            }
            Input::Finding(f) => f.raw.clone(),
        }))
    }
}

/// Severity on a 0–10 scale (CEF, LEEF): events by their severity, findings by priority.
pub(crate) fn severity_10(input: Input<'_>) -> u8 {
    use crate::event::Severity;
    match input {
        Input::Event(e) => match e.severity {
            Severity::Info => 1,
            Severity::Low => 3,
            Severity::Medium => 5,
            Severity::High => 7,
            Severity::Critical => 9,
        },
        Input::Finding(f) => match f.priority {
            Priority::P0 => 10,
            Priority::P1 => 9,
            Priority::P2 => 7,
            Priority::P3 => 5,
            Priority::P4 => 3,
        },
    }
}

#[cfg(test)]
pub(crate) mod testing;

/// Inserts `value` at `key` when it is not null, an empty object or an empty array.
fn put(map: &mut serde_json::Map<String, serde_json::Value>, key: &str, value: serde_json::Value) {
    use serde_json::Value;
    let empty = match &value {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

/// An object of the non-empty `pairs`.
fn object(pairs: &[(&str, serde_json::Value)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        put(&mut map, k, v.clone());
    }
    serde_json::Value::Object(map)
}
