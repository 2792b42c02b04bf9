//! Batch bodies: NDJSON (one event per line) or a JSON array of events, optionally gzip.
//!
//! Records are split without parsing them, then each is decoded on its own, so a malformed,
//! oversize, too-deep or invalid record is reported by its line (NDJSON) or position (array,
//! 1-based) and the others are kept.

use std::io::Read;

use bytesize::ByteSize;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Error, Result};
use crate::event::{DecodeError, DecodeLimits, SecurityEvent, decode_event};

/// A record that was not accepted.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Rejection {
    /// Line number (NDJSON) or 1-based position (JSON array) of the record.
    pub line: usize,
    /// What is wrong with it.
    #[serde(flatten)]
    pub error: DecodeError,
    /// The same, in words.
    pub message: String,
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
}

/// Decodes every record of `body`; returns the good events and the report of the bad ones.
pub fn decode_batch(body: &[u8], limits: &DecodeLimits, now: DateTime<Utc>) -> (Vec<SecurityEvent>, BatchReport) {
    let mut report = BatchReport::default();
    let records = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match split_array(body) {
            Ok(records) => records,
            Err(reason) => {
                report.body_error = Some(reason);
                return (Vec::new(), report);
            }
        },
        _ => split_lines(body),
    };
    let mut events = Vec::with_capacity(records.len());
    for (line, record) in records {
        match decode_event(record, limits, now) {
            Ok(event) => events.push(event),
            Err(error) => {
                let message = error.to_string();
                report.rejected.push(Rejection { line, error, message });
            }
        }
    }
    report.accepted = events.len();
    (events, report)
}

/// Non-blank lines with their 1-based numbers; a trailing `\r` is dropped.
fn split_lines(body: &[u8]) -> Vec<(usize, &[u8])> {
    let mut lines = Vec::with_capacity(memchr::memchr_iter(b'\n', body).count() + 1);
    let mut start = 0;
    for (number, end) in memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len())).enumerate() {
        let line = &body[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push((number + 1, line));
        }
        start = end + 1;
    }
    lines
}

/// The elements of a top-level JSON array, found by tracking strings and nesting only.
fn split_array(body: &[u8]) -> std::result::Result<Vec<(usize, &[u8])>, String> {
    let start = body.iter().position(|&b| b == b'[').unwrap_or(0);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut element_start = start + 1;
    let mut end = None;
    for (i, &b) in body.iter().enumerate().skip(start) {
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
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.checked_sub(1).ok_or_else(|| format!("unbalanced `{}` at byte {i}", b as char))?;
                if depth == 0 {
                    push_element(&mut out, &body[element_start..i]);
                    end = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => {
                push_element(&mut out, &body[element_start..i]);
                element_start = i + 1;
            }
            _ => {}
        }
    }
    let end = end.ok_or_else(|| "JSON array is not closed".to_owned())?;
    if body[end + 1..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err(format!("unexpected data after the JSON array at byte {}", end + 1));
    }
    // An empty array yields one blank element: drop it.
    if out.len() == 1 && out[0].1.iter().all(u8::is_ascii_whitespace) {
        out.clear();
    }
    Ok(out)
}

fn push_element<'a>(out: &mut Vec<(usize, &'a [u8])>, element: &'a [u8]) {
    out.push((out.len() + 1, element.trim_ascii()));
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
