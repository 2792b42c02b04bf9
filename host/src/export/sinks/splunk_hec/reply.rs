//! HEC's answers: `{"text":…,"code":N,"ackId":N,"invalid-event-number":N}`, classified.
//!
//! | code | meaning | handling |
//! |---|---|---|
//! | 0 | success | delivered (or awaiting its ack) |
//! | 1–4, 21, 22 | token missing, invalid or disabled | retryable: an operator problem, records wait |
//! | 7, 10, 11, 14, 16 | index, channel, ack or query-auth misconfigured | retryable, same reason |
//! | 5, 6, 12, 13, 15 | the data: no data, bad format, missing/blank event, bad fields | items before `invalid-event-number` delivered, that one dead-lettered, the rest sent again; without the number the batch is split |
//! | 8, 9, 18–20 | internal error, busy, queues full, ack service down | retryable, `Retry-After` honoured |
//!
//! A bad object k in a batch is answered 400 code 6 with `invalid-event-number: k`; objects
//! before k are indexed, k and later are not.

use serde::Deserialize;

use crate::export::http::{Answer, excerpt, retry_after};
use crate::export::{SendReport, SinkError};

/// The JSON body of an HEC answer.
#[derive(Debug, Default, Deserialize)]
pub struct Reply {
    /// Human-readable status.
    #[serde(default)]
    pub text: String,
    /// HEC status code.
    pub code: Option<u32>,
    /// Indexer acknowledgement id of an accepted batch.
    #[serde(rename = "ackId")]
    pub ack_id: Option<u64>,
    /// Index of the first object that was refused.
    #[serde(rename = "invalid-event-number")]
    pub invalid_event: Option<usize>,
}

/// What a post achieved.
#[derive(Debug)]
pub enum Posted {
    /// Accepted; with acknowledgement on, the id to wait for.
    Accepted(Option<u64>),
    /// Some or all items failed.
    Failed(SendReport),
}

/// Classifies the answer to a post of `items` objects.
pub fn classify(answer: &Answer, items: usize) -> Result<Posted, SinkError> {
    let reply: Reply = serde_json::from_str(&answer.body).unwrap_or_default();
    let status = answer.status.as_u16();
    if answer.status.is_success() {
        return Ok(Posted::Accepted(reply.ack_id));
    }
    let describe = || match reply.code {
        Some(code) => format!("HTTP {status}, HEC code {code}: {}", reply.text),
        None => format!("HTTP {status}: {}", excerpt(&answer.body)),
    };
    match reply.code {
        Some(1..=4 | 21 | 22) => Err(SinkError::retryable(format!("{}: the token was refused", describe()))),
        Some(7 | 10 | 11 | 14 | 16) => {
            Err(SinkError::retryable(format!("{}: the collector is misconfigured for this sink", describe())))
        }
        Some(8 | 9 | 18..=20) => {
            Err(SinkError::Retryable { reason: describe(), retry_after: retry_after(&answer.headers) })
        }
        Some(5 | 6 | 12 | 13 | 15) => {
            Ok(Posted::Failed(refused_from(reply.invalid_event, items, describe(), status, &answer.body)))
        }
        _ if status == 413 => Err(SinkError::Split { reason: describe() }),
        _ if status == 408 || status == 429 || answer.status.is_server_error() => {
            Err(SinkError::Retryable { reason: describe(), retry_after: retry_after(&answer.headers) })
        }
        _ if status == 401 || status == 403 => {
            Err(SinkError::retryable(format!("{}: the token was refused", describe())))
        }
        _ => {
            Err(SinkError::Permanent { reason: describe(), status: Some(status), excerpt: Some(excerpt(&answer.body)) })
        }
    }
}

/// Items before `invalid` were indexed, `invalid` is refused for good, the rest are retried.
/// Without an index, a batch of several is split to find the culprit.
fn refused_from(invalid: Option<usize>, items: usize, reason: String, status: u16, body: &str) -> SendReport {
    let Some(k) = invalid.filter(|&k| k < items) else {
        let error = if items == 1 {
            SinkError::Permanent { reason, status: Some(status), excerpt: Some(excerpt(body)) }
        } else {
            SinkError::Split { reason }
        };
        return SendReport { failed: (0..items).map(|i| (i, error.clone())).collect() };
    };
    let mut failed = vec![(k, SinkError::Permanent { reason, status: Some(status), excerpt: Some(excerpt(body)) })];
    failed.extend(
        (k + 1..items).map(|i| (i, SinkError::retryable(format!("not indexed: object {k} of the batch was refused")))),
    );
    SendReport { failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn answer(status: u16, body: &str) -> Answer {
        Answer { status: StatusCode::from_u16(status).expect("status"), headers: HeaderMap::new(), body: body.into() }
    }

    #[test]
    fn success_carries_the_ack_id() {
        let posted = classify(&answer(200, r#"{"text":"Success","code":0,"ackId":7}"#), 3).expect("ok");
        assert!(matches!(posted, Posted::Accepted(Some(7))));
    }

    #[test]
    fn invalid_event_number_splits_the_batch() {
        let posted = classify(&answer(400, r#"{"text":"Invalid data format","code":6,"invalid-event-number":2}"#), 5)
            .expect("report");
        let Posted::Failed(report) = posted else { panic!("failed") };
        let classes: Vec<(usize, bool)> = report.failed.iter().map(|(i, e)| (*i, e.is_retryable())).collect();
        assert_eq!(classes, vec![(2, false), (3, true), (4, true)]);
    }

    #[test]
    fn codes_are_classified() {
        for (status, body, retryable) in [
            (503, r#"{"text":"Server is busy","code":9}"#, true),
            (500, r#"{"text":"Internal server error","code":8}"#, true),
            (503, r#"{"text":"HEC is unhealthy, queues are full","code":18}"#, true),
            (403, r#"{"text":"Invalid token","code":4}"#, true),
            (400, r#"{"text":"Incorrect index","code":7}"#, true),
            (400, r#"{"text":"Data channel is missing","code":10}"#, true),
        ] {
            let err = classify(&answer(status, body), 1).expect_err(body);
            assert_eq!(err.is_retryable(), retryable, "{body}");
        }
        assert!(matches!(classify(&answer(413, "too large"), 4), Err(SinkError::Split { .. })));
        let Ok(Posted::Failed(report)) = classify(&answer(400, r#"{"text":"Event field is required","code":12}"#), 1)
        else {
            panic!("report")
        };
        assert!(matches!(report.failed[0].1, SinkError::Permanent { status: Some(400), .. }));
        let Ok(Posted::Failed(report)) = classify(&answer(400, r#"{"text":"Invalid data format","code":6}"#), 3) else {
            panic!("report")
        };
        assert!(report.failed.iter().all(|(_, e)| matches!(e, SinkError::Split { .. })));
    }
}
