//! [`Exporter`]: the loop that feeds one sink from the log.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{ExportRecord, Sink, SinkConfig, SinkError};
use crate::event::RecordKind;
use crate::store::{self, Cf, ConsumerHandle, Cursor, Log, Op, Table, cursors};
use crate::telemetry::{MetricsRegistry, names};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    sink: String,
    class: String,
}

/// Metrics shared by every exporter.
#[derive(Clone, Debug, Default)]
pub struct ExporterMetrics {
    delivered: Family<SinkLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    dead_lettered: Family<SinkLabels, Counter>,
    filtered: Family<SinkLabels, Counter>,
}

impl ExporterMetrics {
    /// Registers the exporter metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        registry.register(names::SINK_DELIVERED, "Records delivered, by sink.", m.delivered.clone());
        registry.register(names::SINK_FAILURES, "Failed deliveries, by sink and class.", m.failures.clone());
        registry.register(
            "sink_dead_lettered_records",
            "Records sent to the dead-letter queue, by sink.",
            m.dead_lettered.clone(),
        );
        registry.register("sink_filtered_records", "Records a sink's route skipped, by sink.", m.filtered.clone());
        m
    }
}

/// A record a sink refused permanently, kept for inspection and replay.
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
    /// When it was dead-lettered.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The record.
    pub record: serde_json::Value,
}

/// Feeds one sink from the log.
#[derive(Debug)]
pub struct Exporter<S> {
    name: String,
    sink: S,
    config: SinkConfig,
    log: Log,
    cursors: Table<String, Cursor>,
    consumer: ConsumerHandle,
    cursor: u64,
    metrics: ExporterMetrics,
}

impl<S: Sink> Exporter<S> {
    /// An exporter for `sink` named `name`, resuming from its saved cursor. A sink seen for
    /// the first time starts with the oldest record still in the log (retention decides how
    /// much history that is).
    pub async fn start(
        name: &str,
        mut sink: S,
        config: SinkConfig,
        log: Log,
        metrics: ExporterMetrics,
    ) -> store::Result<Result<Self, SinkError>> {
        let cursors = cursors(log.store());
        let key = cursor_key(name);
        let saved = cursors.get(&key)?;
        let cursor = match &saved {
            Some(c) => c.seq,
            None => log.tail()?.saturating_sub(1),
        };
        let state = saved.map(|c| c.state).unwrap_or_default();
        if let Err(e) = sink.open(&state).await {
            return Ok(Err(e));
        }
        let consumer = log.register_consumer(&key, cursor);
        tracing::info!(sink = name, cursor, "Sink resumes.");
        Ok(Ok(Self { name: name.to_owned(), sink, config, log, cursors, consumer, cursor, metrics }))
    }

    /// The last sequence number delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Delivers records as they arrive. When `drain` is cancelled, delivers up to the head
    /// and returns; when `stop` is cancelled, returns at the next opportunity.
    pub async fn run(mut self, drain: CancellationToken, stop: CancellationToken) {
        let mut head = self.log.subscribe();
        loop {
            if stop.is_cancelled() {
                return;
            }
            if self.cursor < self.log.head() {
                if let Err(e) = self.deliver_next(&stop).await {
                    tracing::error!(sink = %self.name, error = %e, "Sink cannot commit its cursor; retrying.");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stop.cancelled() => return,
                    }
                }
                continue;
            }
            if drain.is_cancelled() {
                return;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = drain.cancelled() => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Reads, routes, sends (retrying what failed retryably) and commits one batch.
    async fn deliver_next(&mut self, stop: &CancellationToken) -> store::Result<()> {
        let log = self.log.clone();
        let from = self.cursor + 1;
        let max = self.config.batch_max_records;
        let entries = tokio::task::spawn_blocking(move || log.read(from, max, 8 << 20))
            .await
            .map_err(|e| store::Error::Corrupt { cf: "log", key: String::new(), reason: e.to_string() })??;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(()) };
        let total = entries.len();
        let mut pending: Vec<ExportRecord> = entries
            .into_iter()
            .filter_map(|e| {
                let kind = RecordKind::from_tag(e.kind)?;
                self.config.records.contains(&kind).then_some(ExportRecord { seq: e.seq, kind, payload: e.payload })
            })
            .collect();
        let labels = SinkLabels { sink: self.name.clone() };
        self.metrics.filtered.get_or_create(&labels).inc_by((total - pending.len()) as u64);
        let mut dead = Vec::new();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let (retry, failed_for_good) = self.send_once(&pending).await;
            let delivered = pending.len() - retry.len() - failed_for_good.len();
            dead.extend(failed_for_good);
            self.metrics.delivered.get_or_create(&labels).inc_by(delivered as u64);
            pending = retry;
            if pending.is_empty() {
                break;
            }
            attempt += 1;
            let wait = backoff(attempt, self.config.retry_max_backoff);
            tracing::warn!(sink = %self.name, attempt, records = pending.len(), wait_ms = wait.as_millis() as u64, "Delivery failed; retrying.");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Not committed: the batch is delivered again after a restart.
                () = stop.cancelled() => return Ok(()),
            }
        }
        self.commit(last, dead)
    }

    /// One send; returns the items to retry and the items that failed for good.
    async fn send_once(&mut self, batch: &[ExportRecord]) -> (Vec<ExportRecord>, Vec<(ExportRecord, String)>) {
        let failures = match self.sink.send(batch).await {
            Ok(report) => report.failed,
            Err(e) => (0..batch.len()).map(|i| (i, e.clone())).collect(),
        };
        let mut retry = Vec::new();
        let mut dead = Vec::new();
        for (index, error) in failures {
            let Some(record) = batch.get(index) else { continue };
            let class = match &error {
                SinkError::Retryable(_) => "retryable",
                SinkError::Permanent(_) => "permanent",
            };
            self.metrics.failures.get_or_create(&FailureLabels { sink: self.name.clone(), class: class.into() }).inc();
            match error {
                SinkError::Retryable(_) => retry.push(record.clone()),
                SinkError::Permanent(reason) => dead.push((record.clone(), reason)),
            }
        }
        (retry, dead)
    }

    fn commit(&mut self, last: u64, dead: Vec<(ExportRecord, String)>) -> store::Result<()> {
        let mut ops = Vec::with_capacity(dead.len() + 1);
        let now = chrono::Utc::now();
        for (record, reason) in &dead {
            tracing::error!(sink = %self.name, seq = record.seq, kind = record.kind.as_str(), %reason, "Record refused permanently; moved to the dead-letter queue.");
            let letter = DeadLetter {
                sink: self.name.clone(),
                seq: record.seq,
                kind: record.kind,
                reason: reason.clone(),
                time: now,
                record: serde_json::from_slice(&record.payload).unwrap_or_default(),
            };
            let mut key = format!("{}\0", self.name).into_bytes();
            key.extend_from_slice(&record.seq.to_be_bytes());
            let value = serde_json::to_vec(&letter).map_err(|source| store::Error::Encode { cf: "dlq", source })?;
            ops.push(Op::Put { cf: Cf::Dlq, key, value });
        }
        self.metrics.dead_lettered.get_or_create(&SinkLabels { sink: self.name.clone() }).inc_by(dead.len() as u64);
        ops.push(self.cursors.put_op(&cursor_key(&self.name), &Cursor { seq: last, state: self.sink.state() })?);
        self.log.store().write(ops, true)?;
        self.cursor = last;
        self.consumer.set_committed(last);
        Ok(())
    }
}

/// The cursor name of a sink.
pub fn cursor_key(sink: &str) -> String {
    format!("sink/{sink}")
}

/// Exponential backoff with full jitter: uniform in [0, min(cap, 100ms · 2^attempt)].
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let ceiling = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(16)).min(cap);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cap = Duration::from_secs(2);
        for attempt in 0..40 {
            assert!(backoff(attempt, cap) <= cap);
        }
        let samples: std::collections::HashSet<Duration> = (0..50).map(|_| backoff(10, cap)).collect();
        assert!(samples.len() > 1, "jitter varies the wait");
    }
}
