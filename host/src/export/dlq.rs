//! The dead-letter queue: records a sink refused permanently, with why, kept in the store
//! for inspection, replay (after a fix) or purge. Replay is idempotent: a letter leaves the
//! queue once it is delivered, and asking twice does not send it twice.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::RecordKind;
use crate::store::{self, Cf, Op, Store};

/// A record a sink refused permanently.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The sink that refused it.
    pub sink: String,
    /// Its sequence number in the log.
    pub seq: u64,
    /// Its kind.
    pub kind: RecordKind,
    /// Why it was refused.
    pub reason: String,
    /// HTTP status (or platform code), when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The start of the destination's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<String>,
    /// When it was dead-lettered.
    pub time: DateTime<Utc>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Whether a replay was asked for.
    #[serde(default)]
    pub replay: bool,
    /// The record, as stored in the log (the log may have dropped it since).
    pub record: serde_json::Value,
}

/// Which letters an operation concerns; every part that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DlqFilter {
    /// The sink.
    pub sink: Option<String>,
    /// A substring of the reason.
    pub reason: Option<String>,
    /// Dead-lettered at or after.
    pub from: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub to: Option<DateTime<Utc>>,
}

impl DlqFilter {
    /// Whether `letter` matches.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.sink.as_ref().is_none_or(|s| *s == letter.sink)
            && self.reason.as_ref().is_none_or(|r| letter.reason.contains(r.as_str()))
            && self.from.is_none_or(|t| letter.time >= t)
            && self.to.is_none_or(|t| letter.time < t)
    }

    fn prefix(&self) -> Vec<u8> {
        match &self.sink {
            Some(s) => key_prefix(s),
            None => Vec::new(),
        }
    }
}

fn key_prefix(sink: &str) -> Vec<u8> {
    let mut key = sink.as_bytes().to_vec();
    key.push(0);
    key
}

fn key(sink: &str, seq: u64) -> Vec<u8> {
    let mut key = key_prefix(sink);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The op that stores (or replaces) a letter.
pub fn put_op(letter: &DeadLetter) -> store::Result<Op> {
    let value = serde_json::to_vec(letter).map_err(|source| store::Error::Encode { cf: "dlq", source })?;
    Ok(Op::Put { cf: Cf::Dlq, key: key(&letter.sink, letter.seq), value })
}

/// The op that removes a letter.
pub fn delete_op(sink: &str, seq: u64) -> Op {
    Op::Delete { cf: Cf::Dlq, key: key(sink, seq) }
}

/// Calls `f` on every letter matching `filter`, in (sink, seq) order, until it returns false.
fn scan(store: &Store, filter: &DlqFilter, mut f: impl FnMut(DeadLetter) -> bool) -> store::Result<()> {
    let prefix = filter.prefix();
    let mut start = prefix.clone();
    loop {
        let rows = store.scan(Cf::Dlq, &prefix, &start, 1024)?;
        let Some((last, _)) = rows.last() else { return Ok(()) };
        start = last.clone();
        start.push(0);
        for (k, v) in &rows {
            let letter: DeadLetter = serde_json::from_slice(v).map_err(|e| store::Error::Corrupt {
                cf: "dlq",
                key: store::hex(k),
                reason: e.to_string(),
            })?;
            if filter.matches(&letter) && !f(letter) {
                return Ok(());
            }
        }
        if rows.len() < 1024 {
            return Ok(());
        }
    }
}

/// Up to `limit` letters matching `filter`.
pub fn list(store: &Store, filter: &DlqFilter, limit: usize) -> store::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    scan(store, filter, |l| {
        out.push(l);
        out.len() < limit
    })?;
    Ok(out)
}

/// One letter.
pub fn get(store: &Store, sink: &str, seq: u64) -> store::Result<Option<DeadLetter>> {
    match store.get(Cf::Dlq, &key(sink, seq))? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| store::Error::Corrupt {
            cf: "dlq",
            key: format!("{sink}/{seq}"),
            reason: e.to_string(),
        }),
    }
}

/// Letters per sink.
pub fn count(store: &Store, sink: &str) -> store::Result<u64> {
    let mut n = 0;
    scan(store, &DlqFilter { sink: Some(sink.to_owned()), ..DlqFilter::default() }, |_| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// The writes that flag every matching letter for replay (already flagged ones unchanged).
pub fn mark_replay_ops(store: &Store, filter: &DlqFilter) -> store::Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut error = None;
    scan(store, filter, |mut letter| {
        if letter.replay {
            return true;
        }
        letter.replay = true;
        match put_op(&letter) {
            Ok(op) => ops.push(op),
            Err(e) => error = Some(e),
        }
        error.is_none()
    })?;
    match error {
        Some(e) => Err(e),
        None => Ok(ops),
    }
}

/// The writes that remove every matching letter.
pub fn purge_ops(store: &Store, filter: &DlqFilter) -> store::Result<Vec<Op>> {
    let mut ops = Vec::new();
    scan(store, filter, |letter| {
        ops.push(delete_op(&letter.sink, letter.seq));
        true
    })?;
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(sink: &str, seq: u64, reason: &str) -> DeadLetter {
        DeadLetter {
            sink: sink.into(),
            seq,
            kind: RecordKind::Event,
            reason: reason.into(),
            status: Some(400),
            excerpt: None,
            time: Utc::now(),
            attempts: 1,
            replay: false,
            record: serde_json::json!({ "class": "other" }),
        }
    }

    #[test]
    fn list_filter_mark_and_purge() {
        let (_dir, store) = crate::store::testing::temp_store();
        let ops = vec![
            put_op(&letter("es", 1, "mapper_parsing_exception")).expect("op"),
            put_op(&letter("es", 2, "illegal_argument_exception")).expect("op"),
            put_op(&letter("hec", 1, "Invalid data format")).expect("op"),
        ];
        store.write(ops, true).expect("write");
        assert_eq!(count(&store, "es").expect("count"), 2);
        let mapper = DlqFilter { sink: Some("es".into()), reason: Some("mapper".into()), ..DlqFilter::default() };
        assert_eq!(list(&store, &mapper, 10).expect("list").iter().map(|l| l.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(list(&store, &DlqFilter::default(), 10).expect("list").len(), 3);
        let marks = mark_replay_ops(&store, &mapper).expect("mark");
        assert_eq!(marks.len(), 1);
        store.write(marks, true).expect("write");
        assert!(mark_replay_ops(&store, &mapper).expect("mark").is_empty(), "marking twice changes nothing");
        assert!(get(&store, "es", 1).expect("get").expect("present").replay);
        store
            .write(
                purge_ops(&store, &DlqFilter { sink: Some("es".into()), ..DlqFilter::default() }).expect("purge"),
                true,
            )
            .expect("write");
        assert_eq!(count(&store, "es").expect("count"), 0);
        assert_eq!(count(&store, "hec").expect("count"), 1);
    }
}
