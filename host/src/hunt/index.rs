//! Secondary indexes of the log: for each indexed field (by default `source.ip`,
//! `destination.ip`, `user.name`, `host.name`), value → the sequence numbers of the events
//! that carry it, so a hunt for one address reads that address's events instead of the
//! whole time range.
//!
//! Key (column family `index`): `i`, the field's tag, the value's length (2 bytes) and
//! bytes, the sequence number (8 bytes big-endian); empty value. One prefix scan bounded by
//! two sequence numbers answers "this value within this time range". The indexer follows
//! the log like any consumer, a batch at a time, and writes its position (`p`) in the same
//! batch as the entries, so after a crash it resumes exactly where it stopped. Entries of
//! records retention has deleted are swept on the retention interval.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::event::{FieldPath, RecordKind, SecurityEvent};
use crate::store::{Cf, Log, Op, Store};

const POSITION: &[u8] = b"p";
const ENTRY: u8 = b'i';

/// `[hunt]` index settings.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Keep the indexes up to date as events are stored.
    pub enabled: bool,
    /// The fields indexed (at most 250).
    pub fields: Vec<String>,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            fields: ["source.ip", "destination.ip", "user.name", "host.name"].map(str::to_owned).to_vec(),
        }
    }
}

/// The indexes: which fields, and how far the log is indexed.
#[derive(Clone, Debug)]
pub struct Index {
    store: Store,
    fields: Arc<Vec<FieldPath>>,
    names: Arc<Vec<String>>,
}

fn entry_prefix(tag: u8, value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(4 + bytes.len() + 8);
    key.push(ENTRY);
    key.push(tag);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&bytes[..usize::from(len)]);
    key
}

impl Index {
    /// The indexes of `fields` in `store`. Unknown fields are an error naming them.
    pub fn new(store: &Store, config: &IndexConfig) -> Result<Self, String> {
        let mut fields = Vec::new();
        for name in config.fields.iter().take(250) {
            fields.push(FieldPath::parse(name).map_err(|e| format!("hunt.index.fields: {e}"))?);
        }
        Ok(Self { store: store.clone(), fields: Arc::new(fields), names: Arc::new(config.fields.clone()) })
    }

    /// Whether `field` is indexed.
    pub fn covers(&self, field: &str) -> bool {
        self.names.iter().any(|n| n == field)
    }

    /// The last sequence number indexed.
    pub fn position(&self) -> crate::store::Result<u64> {
        Ok(self.store.get(Cf::Index, POSITION)?.and_then(|v| Some(u64::from_be_bytes(v.try_into().ok()?))).unwrap_or(0))
    }

    /// The index entries of one event, as write ops.
    pub fn ops(&self, seq: u64, event: &SecurityEvent) -> Vec<Op> {
        let mut ops = Vec::new();
        for (tag, field) in self.fields.iter().enumerate() {
            let Some(value) = field.get(event) else { continue };
            let mut key = entry_prefix(u8::try_from(tag).unwrap_or(u8::MAX), &value.to_text());
            key.extend_from_slice(&seq.to_be_bytes());
            ops.push(Op::Put { cf: Cf::Index, key, value: Vec::new() });
        }
        ops
    }

    /// Indexes the log's records after the stored position, up to `max` of them; returns
    /// how many records it read.
    pub fn catch_up(&self, log: &Log, max: usize) -> crate::store::Result<usize> {
        let from = self.position()?.max(log.tail()?.saturating_sub(1)) + 1;
        let entries = log.read(from, max, 16 << 20)?;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(0) };
        let mut ops = Vec::new();
        for entry in &entries {
            if entry.kind != RecordKind::Event.tag() {
                continue;
            }
            // Stored events were validated at ingest; one that does not decode is reported by
            // every reader of the log, and has nothing to index.
            if let Ok(event) = serde_json::from_slice::<SecurityEvent>(&entry.payload) {
                ops.extend(self.ops(entry.seq, &event));
            }
        }
        ops.push(Op::Put { cf: Cf::Index, key: POSITION.to_vec(), value: last.to_be_bytes().to_vec() });
        self.store.write(ops, false)?;
        Ok(entries.len())
    }

    /// The sequence numbers in `[from, to)` of events whose `field` is `value`, ascending.
    /// `None` when the field is not indexed.
    pub fn lookup(&self, field: &str, value: &str, from: u64, to: u64) -> crate::store::Result<Option<Vec<u64>>> {
        let Some(tag) = self.names.iter().position(|n| n == field) else { return Ok(None) };
        let prefix = entry_prefix(u8::try_from(tag).unwrap_or(u8::MAX), value);
        let mut start = prefix.clone();
        start.extend_from_slice(&from.to_be_bytes());
        let mut out = Vec::new();
        loop {
            let page = self.store.scan(Cf::Index, &prefix, &start, 4096)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, _) in &page {
                let Some(seq) = key.get(prefix.len()..).and_then(|s| Some(u64::from_be_bytes(s.try_into().ok()?)))
                else {
                    continue;
                };
                if seq >= to {
                    return Ok(Some(out));
                }
                out.push(seq);
            }
            if page.len() < 4096 {
                break;
            }
        }
        Ok(Some(out))
    }

    /// Deletes the entries of records before `tail` (deleted by retention); returns how many.
    pub fn sweep(&self, tail: u64) -> crate::store::Result<u64> {
        let mut removed = 0;
        let mut start = vec![ENTRY];
        loop {
            let page = self.store.scan(Cf::Index, &[ENTRY], &start, 10_000)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            let ops: Vec<Op> = page
                .iter()
                .filter(|(k, _)| {
                    k.len() >= 8 && u64::from_be_bytes(k[k.len() - 8..].try_into().unwrap_or([0; 8])) < tail
                })
                .map(|(k, _)| Op::Delete { cf: Cf::Index, key: k.clone() })
                .collect();
            removed += ops.len() as u64;
            self.store.write(ops, false)?;
            if page.len() < 10_000 {
                break;
            }
        }
        Ok(removed)
    }

    /// Follows the log until `stop`: indexes each new batch; sweeps entries of deleted
    /// records every `sweep_every`.
    pub async fn run(self, log: Log, stop: CancellationToken, sweep_every: Duration) {
        let mut head = log.subscribe();
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            let (index, reader) = (self.clone(), log.clone());
            match tokio::task::spawn_blocking(move || index.catch_up(&reader, 8192)).await {
                Ok(Ok(read)) if read > 0 => continue,
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "Hunt indexing failed; retrying"),
                Err(error) => tracing::warn!(%error, "Hunt indexing panicked; retrying"),
            }
            if last_sweep.elapsed() >= sweep_every {
                last_sweep = tokio::time::Instant::now();
                let (index, reader) = (self.clone(), log.clone());
                let swept = tokio::task::spawn_blocking(move || index.sweep(reader.tail()?)).await;
                if let Ok(Ok(n)) = swept
                    && n > 0
                {
                    tracing::info!(removed = n, "Hunt index entries of deleted records removed");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = head.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
