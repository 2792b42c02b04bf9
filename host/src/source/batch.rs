//! Batch bodies: NDJSON (one record per line), a JSON array, pretty-printed documents, an
//! EVTX file or text lines, optionally gzip, in any input [`Format`].
//!
//! Records are split without parsing them, then each is decoded on its own, so a malformed,
//! oversize, too-deep or invalid record is reported by its line (NDJSON) or position (array,
//! 1-based) and the others are kept.

use std::io::Read;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::decode::{self, Format, Options};
use super::{Error, Result};
use crate::event::{DecodeError, DecodeLimits, SecurityEvent};

/// A record that was not accepted.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Rejection {
    /// Line number (NDJSON, text) or 1-based position (JSON array, EVTX) of the record.
    pub line: usize,
    /// The EVTX record id, for records of an EVTX file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// What is wrong with it.
    #[serde(flatten)]
    pub error: DecodeError,
    /// The same, in words.
    pub message: String,
}

impl Rejection {
    /// The refusal of the record at `line`.
    pub fn new(line: usize, error: DecodeError) -> Self {
        Self { line, record: None, message: error.to_string(), error }
    }
}

/// The outcome of one batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BatchReport {
    /// Records stored.
    pub accepted: usize,
    /// Every record refused, in order.
    pub rejected: Vec<Rejection>,
    /// Sequence number of the first stored record, when any was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// Problems with the body as a whole (not an array, unbalanced brackets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_error: Option<String>,
    /// Records stored, but with a problem worth knowing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Rejection>,
}

/// Decodes every record of a body of Vigil's own JSON; returns the good events and the
/// report of the bad ones.
pub fn decode_batch(body: &[u8], limits: &DecodeLimits, now: DateTime<Utc>) -> (Vec<SecurityEvent>, BatchReport) {
    decode_format(&Format::Vigil, body, &Options { limits: *limits, keep_raw: false }, now)
}

/// Decodes every record of a body in `format`.
pub fn decode_format(
    format: &Format,
    body: &[u8],
    options: &Options,
    now: DateTime<Utc>,
) -> (Vec<SecurityEvent>, BatchReport) {
    let (decoded, body_error) = decode::decode_body(format, body, options, now);
    report(decoded, body_error)
}

/// The report of a decoded body.
pub fn report(decoded: decode::Decoded, body_error: Option<String>) -> (Vec<SecurityEvent>, BatchReport) {
    let report = BatchReport {
        accepted: decoded.events.len(),
        rejected: decoded.rejected,
        first_seq: None,
        body_error,
        warnings: decoded.warnings,
    };
    (decoded.events, report)
}

/// Decompresses a gzip body, refusing to produce more than `limit` bytes.
pub fn gunzip(body: &[u8], limit: ByteSize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(limit.as_u64() + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Gzip(e.to_string()))?;
    if out.len() as u64 > limit.as_u64() {
        return Err(Error::BodyTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str) -> (Vec<SecurityEvent>, BatchReport) {
        decode_batch(body.as_bytes(), &DecodeLimits::default(), Utc::now())
    }

    #[test]
    fn ndjson_keeps_good_lines_and_names_bad_ones() {
        let body = "{\"class\":\"network\"}\n\n{\"class\":\"bogus\"}\r\n{not json}\n{\"class\":\"dns\"}";
        let (events, report) = decode(body);
        assert_eq!(events.len(), 2);
        assert_eq!(report.accepted, 2);
        let lines: Vec<usize> = report.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4]);
        assert!(matches!(report.rejected[0].error, DecodeError::Invalid { .. }));
        assert!(matches!(report.rejected[1].error, DecodeError::Syntax { .. }));
    }

    #[test]
    fn arrays_are_split_per_element() {
        let body =
            r#" [ {"class":"network","message":"a, ] }"}, {"class":1}, {"class":"dns","attributes":{"x":[1,2]}} ] "#;
        let (events, report) = decode(body);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].message.as_deref(), Some("a, ] }"));
        assert_eq!(report.rejected.len(), 1);
        assert_eq!(report.rejected[0].line, 2);
        let json = serde_json::to_value(&report.rejected[0]).expect("serialize");
        assert_eq!(json["error"], "invalid", "{json}");
        assert_eq!(json["problems"][0]["field"], "class");
    }

    #[test]
    fn broken_arrays_are_a_body_error() {
        for body in ["[{\"class\":\"dns\"}", "[{}]]", "[{\"class\":\"dns\"}] x"] {
            let (events, report) = decode(body);
            assert!(events.is_empty());
            assert!(report.body_error.is_some(), "{body}");
        }
        let (events, report) = decode("[]");
        assert!(events.is_empty() && report.rejected.is_empty() && report.body_error.is_none());
    }

    #[test]
    fn a_deep_record_does_not_cost_its_neighbours() {
        let deep = format!("{{\"class\":\"other\",\"attributes\":{{\"a\":{}{}}}}}", "[".repeat(1000), "]".repeat(1000));
        let body = format!("{{\"class\":\"dns\"}}\n{deep}\n{{\"class\":\"dns\"}}");
        let (events, report) = decode(&body);
        assert_eq!(events.len(), 2);
        assert_eq!(report.rejected[0].line, 2);
        assert!(matches!(report.rejected[0].error, DecodeError::TooDeep { .. }));
        let array = format!("[{{\"class\":\"dns\"}},{deep}]");
        let (events, report) = decode(&array);
        assert_eq!((events.len(), report.rejected.len()), (1, 1));
    }

    #[test]
    fn gunzip_enforces_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[b'a'; 4096]).expect("write");
        let gz = enc.finish().expect("finish");
        assert_eq!(gunzip(&gz, ByteSize::kib(8)).expect("fits").len(), 4096);
        assert!(matches!(gunzip(&gz, ByteSize::kib(1)), Err(Error::BodyTooLarge { .. })));
        assert!(matches!(gunzip(b"not gzip", ByteSize::kib(1)), Err(Error::Gzip(_))));
    }
}
