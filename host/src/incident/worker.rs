//! The detection stage: a durable consumer of the log.
//!
//! It reads events after its cursor, runs the [`Detector`], turns alerts into incident
//! changes, and commits — in one atomic write through the log writer — the alert and
//! incident records (for sinks), the incidents, the changed windows and its new cursor.
//! A crash anywhere before that write leaves everything as it was; after it, nothing is
//! processed twice. Alerts and incident records it appended come back to it through the
//! log and are skipped.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{ChangeKind, IncidentBook, IncidentChange};
use crate::detect::{Alert, DetectMetrics, Detector};
use crate::event::{RecordKind, SecurityEvent};
use crate::rules::RuleSet;
use crate::store::{self, ConsumerHandle, Cursor, Log, LogWriter, NewRecord, Store, Table, cursors};
use crate::telemetry::{MetricsRegistry, names};

/// The name of detection's cursor.
pub const CONSUMER: &str = "detect";
const BATCH: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// Runs detection over the log.
#[derive(Debug)]
pub struct DetectionWorker {
    log: Log,
    writer: LogWriter,
    store: Store,
    cursors: Table<String, Cursor>,
    detector: Detector,
    rules: RuleSet,
    detect_metrics: DetectMetrics,
    book: IncidentBook,
    consumer: ConsumerHandle,
    cursor: u64,
    changes: broadcast::Sender<IncidentChange>,
    opened: Family<RuleLabels, Counter>,
}

impl DetectionWorker {
    /// A worker resuming from its saved cursor and window state; committed incident changes
    /// are published on `changes` (a slow receiver misses some, never blocks detection).
    pub fn new(
        log: Log,
        writer: LogWriter,
        rules: RuleSet,
        registry: &MetricsRegistry,
        changes: broadcast::Sender<IncidentChange>,
    ) -> store::Result<Self> {
        let store = log.store().clone();
        let cursors = cursors(&store);
        let cursor = cursors.get(&CONSUMER.to_owned())?.map_or(0, |c| c.seq);
        let detect_metrics = DetectMetrics::register(registry);
        let opened = Family::<RuleLabels, Counter>::default();
        registry.register(names::INCIDENTS_OPENED, "Incidents opened, by rule.", opened.clone());
        let mut detector = Detector::new(rules.clone(), detect_metrics.clone());
        let windows = detector.load_state(&store)?;
        let consumer = log.register_consumer(CONSUMER, cursor);
        tracing::info!(cursor, windows, rules = rules.rules().len(), "Detection resumes.");
        Ok(Self {
            book: IncidentBook::new(&store),
            log,
            writer,
            store,
            cursors,
            detector,
            rules,
            detect_metrics,
            consumer,
            cursor,
            changes,
            opened,
        })
    }

    /// Processes records as they arrive. When `drain` is cancelled (intake has stopped), it
    /// finishes every record up to the head and returns.
    pub async fn run(mut self, drain: CancellationToken) {
        let mut head = self.log.subscribe();
        loop {
            if self.cursor < self.log.head() {
                let (worker, result) = match tokio::task::spawn_blocking(move || {
                    let result = self.step();
                    (self, result)
                })
                .await
                {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::error!(error = %e, "Detection step panicked; detection stops.");
                        return;
                    }
                };
                self = worker;
                if let Err(e) = result {
                    tracing::error!(error = %e, cursor = self.cursor, "Detection commit failed; retrying from the last commit.");
                    self.recover();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
            if drain.is_cancelled() {
                return;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                () = drain.cancelled() => {}
            }
        }
    }

    /// Processes one batch after the cursor and commits it. Returns the records consumed.
    pub fn step(&mut self) -> store::Result<usize> {
        let entries = self.log.read(self.cursor + 1, BATCH, 16 << 20)?;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(0) };
        let mut alerts: Vec<Alert> = Vec::new();
        for entry in &entries {
            if entry.kind != RecordKind::Event.tag() {
                continue;
            }
            match serde_json::from_slice::<SecurityEvent>(&entry.payload) {
                Ok(event) => self.detector.process(&Arc::new(event), &mut alerts),
                Err(e) => {
                    tracing::error!(seq = entry.seq, error = %e, "Stored event does not decode; detection skips it.")
                }
            }
        }
        let now = Utc::now();
        let mut records = Vec::with_capacity(alerts.len() * 2);
        let mut changes = Vec::with_capacity(alerts.len());
        for alert in &alerts {
            let change = self.book.apply(alert, now)?;
            records.push(record(RecordKind::Alert, alert));
            records.push(record(RecordKind::Incident, &change));
            changes.push(change);
        }
        let mut ops = self.detector.checkpoint_ops();
        ops.extend(self.book.take_ops()?);
        ops.push(self.cursors.put_op(&CONSUMER.to_owned(), &Cursor { seq: last, state: serde_json::Value::Null })?);
        self.writer.append_blocking(records, ops)?;
        self.cursor = last;
        self.consumer.set_committed(last);
        for change in changes {
            if change.change == ChangeKind::Opened {
                self.opened.get_or_create(&RuleLabels { rule: change.incident.rule_id.to_string() }).inc();
            }
            let _ = self.changes.send(change);
        }
        Ok(entries.len())
    }

    /// Rebuilds in-memory state from the store after a failed commit.
    fn recover(&mut self) {
        self.book.discard();
        self.detector = Detector::new(self.rules.clone(), self.detect_metrics.clone());
        if let Err(e) = self.detector.load_state(&self.store) {
            tracing::error!(error = %e, "Cannot reload detection state.");
        }
        self.cursor = self.cursors.get(&CONSUMER.to_owned()).ok().flatten().map_or(0, |c| c.seq);
    }

    /// The last sequence number committed.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }
}

fn record<T: serde::Serialize>(kind: RecordKind, value: &T) -> NewRecord {
    // Alerts and incident changes are plain data: encoding cannot fail.
    NewRecord { kind: kind.tag(), payload: serde_json::to_vec(value).expect("record serializes") }
}
