//! Decoding one event from JSON with limits, and validating it.
//!
//! The fast path is a single typed `serde_json` parse. Only when that fails does the slow
//! path re-read the record field by field, so a bad record reports *every* top-level field
//! that is wrong, each with its dotted path, instead of only the first.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use super::model::{SCHEMA_VERSION, SecurityEvent};

/// Size and shape limits applied to each record before it is parsed.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest accepted record, in bytes.
    pub max_event_bytes: usize,
    /// Deepest accepted nesting of objects and arrays.
    pub max_depth: usize,
    /// How far `time` may lie ahead of `observed_time` (clock skew allowance).
    pub max_future_skew: Duration,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_event_bytes: 1 << 20, max_depth: 32, max_future_skew: Duration::hours(1) }
    }
}

/// One thing wrong with a record: the field (dotted path; empty for the record as a whole)
/// and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// Dotted path of the offending field; empty when the record itself is at fault.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() { f.write_str(&self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}

/// Why a record was not accepted. Each variant says exactly what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, schemars::JsonSchema)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DecodeError {
    /// The record is larger than `max_event_bytes`.
    #[error("record is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Size of the record.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Objects and arrays nest deeper than `max_depth`.
    #[error("nesting deeper than {limit} levels at byte {offset}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Byte offset where the limit was crossed.
        offset: usize,
    },
    /// The record is not valid UTF-8.
    #[error("invalid UTF-8 at byte {offset}")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// The record is not well-formed JSON.
    #[serde(rename = "malformed_json")]
    #[error("malformed JSON at column {column}: {reason}")]
    Syntax {
        /// Column (1-based) where parsing failed.
        column: usize,
        /// The parser's message.
        reason: String,
    },
    /// The record is JSON but does not fit the schema.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// The record cannot be read in the format it was given as: a CEF header with too few
    /// fields, an auditd line without `msg=audit(…)`, a damaged EVTX chunk, an XML
    /// document with a DTD.
    #[error("not readable as {format}: {reason}")]
    Unreadable {
        /// The input format.
        format: String,
        /// What is wrong, in words.
        reason: String,
    },
}

impl DecodeError {
    /// A record that is not readable as `format`.
    pub fn unreadable(format: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unreadable { format: format.into(), reason: reason.into() }
    }

    /// A record that lacks a field the format requires.
    pub fn missing(field: impl Into<String>) -> Self {
        Self::Invalid { problems: vec![Problem::new(field, "missing required field")] }
    }
}

/// The checks every record gets before any parser sees it: its size, UTF-8, and the
/// nesting depth of its brackets. Returns the record as text.
pub fn check_record<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<&'a str, DecodeError> {
    if bytes.len() > limits.max_event_bytes {
        return Err(DecodeError::TooLarge { size: bytes.len(), limit: limits.max_event_bytes });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 { offset: e.valid_up_to() })?;
    check_depth(bytes, limits.max_depth)?;
    Ok(text)
}

/// [`DecodeError::Syntax`] for a JSON parse error.
pub fn json_syntax_error(e: &serde_json::Error) -> DecodeError {
    syntax_error(e)
}

/// Decodes and validates one event record. `now` fills the times the record leaves out.
pub fn decode_event(bytes: &[u8], limits: &DecodeLimits, now: DateTime<Utc>) -> Result<SecurityEvent, DecodeError> {
    let text = check_record(bytes, limits)?;
    let mut event = match serde_json::from_str::<SecurityEvent>(text) {
        Ok(event) => event,
        // serde_json reports some type mismatches (a number where an enum's string goes)
        // as syntax errors: well-formed JSON means the schema is what failed.
        Err(_) => match serde_json::from_str::<Value>(text) {
            Ok(_) => return Err(DecodeError::Invalid { problems: explain(text) }),
            Err(e) => return Err(syntax_error(&e)),
        },
    };
    event.fill_times(now);
    let problems = validate(&event, limits);
    if problems.is_empty() { Ok(event) } else { Err(DecodeError::Invalid { problems }) }
}

fn syntax_error(e: &serde_json::Error) -> DecodeError {
    // serde_json appends " at line L column C"; the column is reported separately.
    let message = e.to_string();
    let reason = message.split(" at line ").next().unwrap_or(&message).to_owned();
    DecodeError::Syntax { column: e.column(), reason }
}

/// Checks every semantic rule the types cannot express; returns all violations.
pub fn validate(event: &SecurityEvent, limits: &DecodeLimits) -> Vec<Problem> {
    let mut problems = Vec::new();
    if event.schema_version != SCHEMA_VERSION {
        problems.push(Problem::new(
            "schema_version",
            format!("unsupported schema version {}; this build reads {SCHEMA_VERSION}", event.schema_version),
        ));
    }
    if event.time - event.observed_time > limits.max_future_skew {
        problems.push(Problem::new(
            "time",
            format!(
                "{} is more than {} ahead of observed_time {}",
                event.time.to_rfc3339(),
                humantime::format_duration(limits.max_future_skew.to_std().unwrap_or_default()),
                event.observed_time.to_rfc3339()
            ),
        ));
    }
    for (i, tag) in event.tags.iter().enumerate() {
        if tag.trim().is_empty() {
            problems.push(Problem::new(format!("tags.{i}"), "must not be empty"));
        }
    }
    for key in event.labels.keys() {
        if key.is_empty() || key.contains('.') {
            problems.push(Problem::new(format!("labels.{key}"), "label keys must be non-empty and contain no `.`"));
        }
    }
    let empty_strings = [("action", &event.action), ("provider", &event.provider), ("tenant", &event.tenant)];
    for (field, value) in empty_strings {
        if value.as_deref().is_some_and(|s| s.trim().is_empty()) {
            problems.push(Problem::new(field, "must not be empty when present"));
        }
    }
    problems
}

/// Finds every top-level field that fails to decode, by decoding each one alone.
fn explain(text: &str) -> Vec<Problem> {
    let Ok(Value::Object(record)) = serde_json::from_str::<Value>(text) else {
        return vec![Problem::new("", "expected a JSON object")];
    };
    let mut problems = Vec::new();
    if !record.contains_key("class") {
        problems.push(Problem::new("class", "missing required field"));
    }
    for (key, value) in &record {
        let mut probe = serde_json::Map::new();
        probe.insert("class".into(), Value::from("other"));
        probe.insert(key.clone(), value.clone());
        let result: Result<SecurityEvent, _> = serde_path_to_error::deserialize(Value::Object(probe));
        if let Err(err) = result {
            let path = err.path().to_string();
            let field = if path == "." { key.clone() } else { path };
            let reason = err.into_inner().to_string();
            problems.push(Problem::new(field, reason));
        }
    }
    if problems.is_empty() {
        problems.push(Problem::new("", "record does not match the event schema"));
    }
    problems
}

/// Rejects input whose arrays and objects nest deeper than `limit`, without parsing it.
pub fn check_depth(bytes: &[u8], limit: usize) -> Result<(), DecodeError> {
    // Fewer opening brackets than the limit cannot nest past it: skip the exact scan.
    if bytes.iter().filter(|&&b| b == b'{' || b == b'[').count() <= limit {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return Err(DecodeError::TooDeep { limit, offset });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::model::EventClass;

    fn decode(s: &str) -> Result<SecurityEvent, DecodeError> {
        decode_event(s.as_bytes(), &DecodeLimits::default(), Utc::now())
    }

    fn problems(s: &str) -> Vec<Problem> {
        match decode(s) {
            Err(DecodeError::Invalid { problems }) => problems,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_record_gets_id_and_times() {
        let now = Utc::now();
        let e = decode_event(br#"{"class":"authentication"}"#, &DecodeLimits::default(), now).expect("valid");
        assert_eq!(e.class, EventClass::Authentication);
        assert_eq!(e.observed_time, now);
        assert_eq!(e.time, now);
        assert_eq!(e.schema_version, 1);
    }

    #[test]
    fn given_times_are_kept() {
        let e = decode(r#"{"class":"network","time":"2026-01-02T03:04:05Z"}"#).expect("valid");
        assert_eq!(e.time.to_rfc3339(), "2026-01-02T03:04:05+00:00");
    }

    #[test]
    fn reports_every_bad_field_with_its_path() {
        let p = problems(r#"{"class":"nope","source":{"ip":"300.1.1.1","port":1},"user":{"name":5},"bogus":1}"#);
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"class"), "{p:?}");
        assert!(fields.contains(&"source.ip"), "{p:?}");
        assert!(fields.contains(&"user.name"), "{p:?}");
        assert!(fields.contains(&"bogus"), "{p:?}");
        let class = p.iter().find(|p| p.field == "class").expect("class problem");
        assert!(class.reason.contains("unknown variant `nope`"), "{}", class.reason);
    }

    #[test]
    fn missing_class_is_named() {
        let p = problems(r#"{"message":"hi"}"#);
        assert_eq!(p, vec![Problem::new("class", "missing required field")]);
    }

    #[test]
    fn wrong_types_name_the_nested_field() {
        let p = problems(r#"{"class":"network","destination":{"port":"http"}}"#);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "destination.port");
        assert!(p[0].reason.contains("invalid type"), "{}", p[0].reason);
    }

    #[test]
    fn syntax_errors_give_the_column() {
        match decode(r#"{"class":"network",}"#) {
            Err(DecodeError::Syntax { column, .. }) => assert_eq!(column, 20),
            other => panic!("expected syntax error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_utf8_gives_the_offset() {
        let mut bytes = br#"{"class":"other","message":""#.to_vec();
        let offset = bytes.len();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(br#""}"#);
        let err = decode_event(&bytes, &DecodeLimits::default(), Utc::now()).expect_err("invalid");
        assert_eq!(err, DecodeError::NotUtf8 { offset });
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(r#"{{"class":"other","attributes":{{"a":{}{}}}}}"#, "[".repeat(1000), "]".repeat(1000));
        match decode(&deep) {
            Err(DecodeError::TooDeep { limit: 32, offset }) => assert_eq!(offset, 65),
            other => panic!("expected TooDeep, got {other:?}"),
        }
        // Brackets inside strings do not count.
        let quoted = format!(r#"{{"class":"other","message":"{}"}}"#, "[".repeat(1000));
        assert!(decode(&quoted).is_ok());
    }

    #[test]
    fn oversize_records_are_refused_before_parsing() {
        let limits = DecodeLimits { max_event_bytes: 10, ..Default::default() };
        let err = decode_event(br#"{"class":"other"}"#, &limits, Utc::now()).expect_err("too large");
        assert_eq!(err, DecodeError::TooLarge { size: 17, limit: 10 });
    }

    #[test]
    fn semantic_checks_report_all_problems() {
        let p = problems(
            r#"{"class":"other","schema_version":2,"time":"2999-01-01T00:00:00Z","tags":["ok"," "],"action":""}"#,
        );
        let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["schema_version", "time", "tags.1", "action"]);
    }

    #[test]
    fn events_round_trip_through_json() {
        let e = decode(
            r#"{"class":"authentication","outcome":"failure","source":{"ip":"2001:db8::1","port":22},
                "user":{"name":"root","target":{"name":"x"}},"labels":{"env":"prod"},"attributes":{"k":[1,2]}}"#,
        )
        .expect("valid");
        let json = serde_json::to_string(&e).expect("serialize");
        let back: SecurityEvent = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, e);
    }
}
