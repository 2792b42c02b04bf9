//! The `_bulk` request and its per-item answer.
//!
//! Each record is a `create` action with `_id` = the record's id, so a record sent twice is
//! indexed once: the second `create` answers 409, which counts as delivered. Per item:
//! 2xx and 409 delivered; 429 and 5xx retried (only that item); 403
//! `cluster_block_exception` (a read-only or frozen index) retried, being the operator's
//! problem; any other status (400 mapping errors, 404) dead-lettered with its error.

use std::collections::HashMap;

use serde::Deserialize;

use crate::export::http::excerpt;
use crate::export::{Item, SendReport, SinkError};

/// Appends one `create` action and its document to an NDJSON body.
pub fn push(out: &mut Vec<u8>, index: &str, item: &Item) {
    out.extend_from_slice(b"{\"create\":{\"_index\":");
    let _ = serde_json::to_writer(&mut *out, index);
    out.extend_from_slice(b",\"_id\":");
    let _ = serde_json::to_writer(&mut *out, &item.id);
    out.extend_from_slice(b"}}\n");
    out.extend_from_slice(&item.body);
    out.push(b'\n');
}

#[derive(Debug, Deserialize)]
struct Response {
    errors: bool,
    #[serde(default)]
    items: Vec<HashMap<String, ItemResult>>,
}

#[derive(Debug, Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Reads a 2xx `_bulk` answer for `sent` items into per-item failures.
pub fn report(body: &str, sent: usize) -> Result<SendReport, SinkError> {
    let response: Response = serde_json::from_str(body)
        .map_err(|e| SinkError::retryable(format!("unreadable _bulk answer ({e}): {}", excerpt(body))))?;
    if !response.errors {
        return Ok(SendReport::default());
    }
    if response.items.len() != sent {
        return Err(SinkError::retryable(format!("_bulk answered {} items for {sent} sent", response.items.len())));
    }
    let mut failed = Vec::new();
    for (index, result) in response.items.into_iter().enumerate() {
        let Some(result) = result.into_values().next() else { continue };
        if let Some(error) = classify(&result) {
            failed.push((index, error));
        }
    }
    Ok(SendReport { failed })
}

fn classify(result: &ItemResult) -> Option<SinkError> {
    let status = result.status;
    if (200..300).contains(&status) || status == 409 {
        return None;
    }
    let error = result.error.as_ref();
    let kind = error.and_then(|e| e.get("type")).and_then(|t| t.as_str()).unwrap_or("error");
    let reason = error.and_then(|e| e.get("reason")).and_then(|r| r.as_str()).unwrap_or("");
    let described = format!("HTTP {status} {kind}: {reason}");
    if status == 429 || status >= 500 || (status == 403 && kind == "cluster_block_exception") {
        return Some(SinkError::retryable(described));
    }
    let excerpt = error.map(|e| excerpt(&e.to_string()));
    Some(SinkError::Permanent { reason: described, status: Some(status), excerpt })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_answers_are_classified_per_item() {
        let body = r#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"a","status":201}},
            {"create":{"_index":"i","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_index":"i","_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"_index":"i","_id":"d","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [x]"}}},
            {"create":{"_index":"i","_id":"e","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
            {"create":{"_index":"i","_id":"f","status":404,"error":{"type":"index_not_found_exception","reason":"no such index"}}},
            {"create":{"_index":"i","_id":"g","status":403,"error":{"type":"cluster_block_exception","reason":"read-only"}}}
        ]}"#;
        let report = report(body, 7).expect("report");
        let classes: Vec<(usize, bool)> = report.failed.iter().map(|(i, e)| (*i, e.is_retryable())).collect();
        assert_eq!(classes, vec![(2, true), (3, false), (4, true), (5, false), (6, true)]);
        let SinkError::Permanent { status, reason, excerpt } = &report.failed[1].1 else { panic!("permanent") };
        assert_eq!(*status, Some(400));
        assert!(reason.contains("mapper_parsing_exception"), "{reason}");
        assert!(excerpt.as_deref().is_some_and(|e| e.contains("failed to parse")));
    }

    #[test]
    fn no_errors_means_all_delivered_and_a_short_answer_is_retried() {
        assert!(report(r#"{"errors":false,"items":[]}"#, 3).expect("ok").failed.is_empty());
        assert!(report(r#"{"errors":true,"items":[]}"#, 3).expect_err("short").is_retryable());
        assert!(report("<html>", 3).expect_err("garbage").is_retryable());
    }

    #[test]
    fn body_is_ndjson_with_create_actions() {
        let item = Item {
            seq: 1,
            kind: crate::event::RecordKind::Event,
            id: "0190-ab".into(),
            time: chrono::DateTime::UNIX_EPOCH,
            host: None,
            severity: 1,
            body: b"{\"a\":1}".to_vec(),
            json: true,
        };
        let mut out = Vec::new();
        push(&mut out, "vigil-event-1970.01.01", &item);
        assert_eq!(out, b"{\"create\":{\"_index\":\"vigil-event-1970.01.01\",\"_id\":\"0190-ab\"}}\n{\"a\":1}\n");
    }
}
