//! [`Exporter`]: the loop that feeds one sink from the log.
//!
//! Batches are read from the cursor onward, routed, transformed and sized to the sink's and
//! the platform's limits, then sent with up to `concurrency` batches in flight. Each batch
//! retries only its failed items (backoff with jitter, `Retry-After`, rate limit, retry
//! budget, circuit breaker) until every item is delivered or dead-lettered; batches commit
//! strictly in log order, each commit writing the cursor, the sink's state and the batch's
//! dead letters in one atomic write. A crash loses nothing: uncommitted batches are sent
//! again after the restart.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dlq::{self, DeadLetter, DlqFilter};
use super::encode::{Encoded, Encoder, decode};
use super::{Backoff, CircuitBreaker, Item, PlatformLimits, RetryBudget, Sink, SinkConfig, SinkError};
use crate::event::RecordKind;
use crate::store::{self, ConsumerHandle, Cursor, Log, LogEntry, Op, Table, cursors};
use crate::telemetry::{MetricsRegistry, latency_histogram, names, pause};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    sink: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    sink: String,
    class: String,
}

/// Metrics shared by every exporter.
#[derive(Clone, Debug)]
pub struct ExporterMetrics {
    records: Family<OutcomeLabels, Counter>,
    in_flight: Family<SinkLabels, Gauge>,
    failures: Family<FailureLabels, Counter>,
    requests: Family<SinkLabels, Counter>,
    retries: Family<SinkLabels, Counter>,
    breaker_open: Family<SinkLabels, Gauge>,
    up: Family<SinkLabels, Gauge>,
    dlq: Family<SinkLabels, Gauge>,
    backlog_records: Family<SinkLabels, Gauge>,
    backlog_bytes: Family<SinkLabels, Gauge>,
    oldest_age: Family<SinkLabels, Gauge>,
    latency: Family<SinkLabels, Histogram>,
}

impl Default for ExporterMetrics {
    fn default() -> Self {
        Self {
            records: Family::default(),
            in_flight: Family::default(),
            failures: Family::default(),
            requests: Family::default(),
            retries: Family::default(),
            breaker_open: Family::default(),
            up: Family::default(),
            dlq: Family::default(),
            backlog_records: Family::default(),
            backlog_bytes: Family::default(),
            oldest_age: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ExporterMetrics {
    /// Registers the exporter metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        registry.register(
            "sink_records",
            "Records by sink and outcome: accepted = delivered + dead_lettered + filtered + in flight.",
            m.records.clone(),
        );
        registry.register(
            "sink_in_flight_records",
            "Records read by a sink and not yet delivered or dead-lettered.",
            m.in_flight.clone(),
        );
        registry.register(
            names::SINK_FAILURES,
            "Failed delivery attempts of items, by sink and class.",
            m.failures.clone(),
        );
        registry.register("sink_requests", "Send attempts, by sink.", m.requests.clone());
        registry.register("sink_retries", "Retried send attempts, by sink.", m.retries.clone());
        registry.register("sink_breaker_open", "1 while a sink's circuit breaker is open.", m.breaker_open.clone());
        registry.register("sink_up", "1 when a sink's last health check or delivery succeeded.", m.up.clone());
        registry.register("sink_dlq_records", "Records in a sink's dead-letter queue.", m.dlq.clone());
        registry.register(
            names::SINK_DELIVERY_LATENCY,
            "From append to the log to delivery, by sink.",
            m.latency.clone(),
        );
        m
    }
}

/// Per-sink handles resolved once.
#[derive(Clone, Debug)]
struct SinkMetrics {
    accepted: Counter,
    delivered: Counter,
    dead_lettered: Counter,
    filtered: Counter,
    in_flight: Gauge,
    retryable: Counter,
    permanent: Counter,
    requests: Counter,
    retries: Counter,
    breaker_open: Gauge,
    up: Gauge,
    dlq: Gauge,
    backlog_records: Gauge,
    backlog_bytes: Gauge,
    oldest_age: Gauge,
    latency: Histogram,
}

impl SinkMetrics {
    fn new(m: &ExporterMetrics, sink: &str) -> Self {
        let outcome =
            |o: &str| m.records.get_or_create(&OutcomeLabels { sink: sink.into(), outcome: o.into() }).clone();
        let class = |c: &str| m.failures.get_or_create(&FailureLabels { sink: sink.into(), class: c.into() }).clone();
        let s = SinkLabels { sink: sink.into() };
        Self {
            accepted: outcome("accepted"),
            delivered: outcome("delivered"),
            dead_lettered: outcome("dead_lettered"),
            filtered: outcome("filtered"),
            in_flight: m.in_flight.get_or_create(&s).clone(),
            retryable: class("retryable"),
            permanent: class("permanent"),
            requests: m.requests.get_or_create(&s).clone(),
            retries: m.retries.get_or_create(&s).clone(),
            breaker_open: m.breaker_open.get_or_create(&s).clone(),
            up: m.up.get_or_create(&s).clone(),
            dlq: m.dlq.get_or_create(&s).clone(),
            backlog_records: m.backlog_records.get_or_create(&s).clone(),
            backlog_bytes: m.backlog_bytes.get_or_create(&s).clone(),
            oldest_age: m.oldest_age.get_or_create(&s).clone(),
            latency: m.latency.get_or_create(&s).clone(),
        }
    }
}

/// A sink's state as operators see it (`vigil sinks status`, `GET /v1/sinks`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: String,
    /// `healthy`, `unhealthy` or `starting`.
    pub state: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Last sequence number delivered.
    pub cursor: u64,
    /// Records in the log not yet delivered.
    pub backlog_records: u64,
    /// Bytes of those records (estimated from the log's size).
    pub backlog_bytes: u64,
    /// Age of the oldest undelivered record, in seconds.
    pub oldest_undelivered_seconds: u64,
    /// Records in the dead-letter queue.
    pub dlq_records: u64,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Operator requests to an exporter.
#[derive(Debug)]
enum Command {
    Replay { filter: DlqFilter, reply: oneshot::Sender<store::Result<usize>> },
    Purge { filter: DlqFilter, reply: oneshot::Sender<store::Result<usize>> },
}

/// A handle to a running exporter: its status and its dead-letter operations.
#[derive(Clone, Debug)]
pub struct ExporterHandle {
    name: String,
    tx: mpsc::Sender<Command>,
    status: Arc<RwLock<SinkStatus>>,
}

impl ExporterHandle {
    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sink's status now.
    pub fn status(&self) -> SinkStatus {
        self.status.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Flags the matching dead letters for replay and replays them; returns how many were
    /// delivered.
    pub async fn replay(&self, mut filter: DlqFilter) -> store::Result<usize> {
        filter.sink = Some(self.name.clone());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Replay { filter, reply }).await.map_err(|_| store::Error::WriterStopped)?;
        rx.await.map_err(|_| store::Error::WriterStopped)?
    }

    /// Removes the matching dead letters; returns how many.
    pub async fn purge(&self, mut filter: DlqFilter) -> store::Result<usize> {
        filter.sink = Some(self.name.clone());
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Purge { filter, reply }).await.map_err(|_| store::Error::WriterStopped)?;
        rx.await.map_err(|_| store::Error::WriterStopped)?
    }
}

/// One record of a batch: its item (if it is to be sent) and the stored payload (for a
/// dead letter).
#[derive(Debug)]
struct Entry {
    seq: u64,
    kind: RecordKind,
    time_ms: i64,
    payload: Vec<u8>,
}

/// A batch: the log range it covers, what to send, and what is already refused.
#[derive(Debug)]
struct Batch {
    last_seq: u64,
    items: Vec<Item>,
    /// For each item, the index of its entry.
    item_entry: Vec<usize>,
    entries: Vec<Entry>,
    /// Entries refused before sending (undecodable, too large), by entry index.
    refused: Vec<(usize, SinkError)>,
}

impl Batch {
    /// The outcome in entry indexes, with the refused entries added.
    fn settle(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Done { delivered, dead } => {
                let mut dead: Vec<(usize, SinkError, u32)> =
                    dead.into_iter().map(|(i, e, a)| (self.item_entry[i], e, a)).collect();
                dead.extend(self.refused.iter().map(|(i, e)| (*i, e.clone(), 0)));
                Outcome::Done { delivered, dead }
            }
            Outcome::Aborted => Outcome::Aborted,
        }
    }
}

/// How a batch ended.
#[derive(Debug)]
enum Outcome {
    /// Every item delivered or refused for good (indexes into the items sent, or once
    /// settled, into the batch's entries).
    Done { delivered: usize, dead: Vec<(usize, SinkError, u32)> },
    /// Stopped before the end; nothing is committed, the batch is sent again after a restart.
    Aborted,
}

/// What the send tasks share.
struct Shared<S> {
    name: Arc<str>,
    sink: Arc<S>,
    breaker: CircuitBreaker,
    limiter: Option<DefaultDirectRateLimiter>,
    budget: RetryBudget,
    backoff: Backoff,
    give_up_after: Option<Duration>,
    metrics: SinkMetrics,
    status: Arc<RwLock<SinkStatus>>,
    stop: CancellationToken,
}

/// Feeds one sink from the log.
pub struct Exporter<S: Sink> {
    shared: Arc<Shared<S>>,
    encoder: Arc<Encoder>,
    config: SinkConfig,
    limits: PlatformLimits,
    concurrency: usize,
    log: Log,
    cursors: Table<String, Cursor>,
    consumer: ConsumerHandle,
    cursor: u64,
    next_read: u64,
    carry: Option<(Item, Entry)>,
    commands: mpsc::Receiver<Command>,
}

impl<S: Sink> std::fmt::Debug for Exporter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").field("sink", &self.shared.name).field("cursor", &self.cursor).finish()
    }
}

impl<S: Sink> Exporter<S> {
    /// An exporter for `sink` named `name`, resuming from its saved cursor. A sink seen for
    /// the first time starts with the oldest record still in the log.
    pub async fn start(
        name: &str,
        mut sink: S,
        config: SinkConfig,
        encoder: Encoder,
        log: Log,
        metrics: &ExporterMetrics,
        stop: CancellationToken,
    ) -> store::Result<Result<(Self, ExporterHandle), SinkError>> {
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
        let sink_metrics = SinkMetrics::new(metrics, name);
        let dlq_records = dlq::count(log.store(), name)?;
        sink_metrics.dlq.set(dlq_records as i64);
        let status = Arc::new(RwLock::new(SinkStatus {
            name: name.to_owned(),
            kind: config.kind.type_name().to_owned(),
            state: "starting".into(),
            breaker: "closed".into(),
            cursor,
            dlq_records,
            ..SinkStatus::default()
        }));
        let limiter = config.rate_limit.as_ref().and_then(|rl| {
            let burst = NonZeroU32::new(rl.burst)?;
            let period = Duration::from_secs_f64(1.0 / rl.requests_per_second);
            Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(burst)))
        });
        let concurrency =
            if sink.incident_channel() { 1 } else { config.concurrency.min(sink.max_concurrency()).max(1) };
        let mut limits = sink.limits();
        limits.max_items = Some(limits.max_items.map_or(config.batch.max_records, |m| m.min(config.batch.max_records)));
        if config.rate_limit.is_some() && sink.incident_channel() {
            limits.max_items = Some(1);
        }
        let configured_bytes = config.batch.max_bytes.as_u64() as usize;
        limits.max_bytes = Some(limits.max_bytes.map_or(configured_bytes, |m| m.min(configured_bytes)));
        let shared = Arc::new(Shared {
            name: name.into(),
            sink: Arc::new(sink),
            breaker: CircuitBreaker::new(config.breaker.failures, config.breaker.open_for),
            limiter,
            budget: RetryBudget::new(config.retry.budget_ratio),
            backoff: Backoff { initial: config.retry.initial_backoff, max: config.retry.max_backoff },
            give_up_after: config.retry.give_up_after,
            metrics: sink_metrics,
            status: status.clone(),
            stop,
        });
        let (tx, commands) = mpsc::channel(16);
        tracing::info!(sink = name, cursor, concurrency, "Sink resumes.");
        let exporter = Self {
            shared,
            encoder: Arc::new(encoder),
            config,
            limits,
            concurrency,
            log,
            cursors,
            consumer,
            cursor,
            next_read: cursor + 1,
            carry: None,
            commands,
        };
        Ok(Ok((exporter, ExporterHandle { name: name.to_owned(), tx, status })))
    }

    /// The last sequence number delivered.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Delivers records as they arrive. When `drain` is cancelled, delivers up to the head
    /// and returns; when the exporter's stop token is cancelled, returns at the next
    /// opportunity (batches not yet committed are sent again after a restart).
    pub async fn run(mut self, drain: CancellationToken) {
        let stop = self.shared.stop.clone();
        let mut head = self.log.subscribe();
        let mut in_flight: JoinSet<(u64, Outcome)> = JoinSet::new();
        let mut pending: VecDeque<(u64, Batch, Option<Outcome>)> = VecDeque::new();
        let mut health = tokio::time::interval(self.config.healthcheck_interval);
        let mut replay_check = tokio::time::interval(Duration::from_secs(30));
        let mut backlog_tick = tokio::time::interval(Duration::from_secs(1));
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if stop.is_cancelled() {
                break;
            }
            // Fill the pipeline.
            while pending.len() < self.concurrency && self.next_read <= self.log.head() {
                let batch = match self.next_batch(&head).await {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::error!(sink = %self.shared.name, error = %e, "Sink cannot read the log; retrying.");
                        pause(&stop, Duration::from_secs(1)).await;
                        break;
                    }
                };
                let id = batch.last_seq;
                self.shared.metrics.in_flight.inc_by(batch.entries.len() as i64);
                if batch.items.is_empty() {
                    let outcome = batch.settle(Outcome::Done { delivered: 0, dead: Vec::new() });
                    pending.push_back((id, batch, Some(outcome)));
                } else {
                    let shared = self.shared.clone();
                    let items = batch.items.clone();
                    in_flight.spawn(async move { (id, deliver(&shared, items).await) });
                    pending.push_back((id, batch, None));
                }
            }
            if let Err(e) = self.commit_ready(&mut pending).await {
                tracing::error!(sink = %self.shared.name, error = %e, "Sink cannot commit its cursor; retrying.");
                pause(&stop, Duration::from_secs(1)).await;
                continue;
            }
            let unread = self.next_read <= self.log.head();
            if pending.len() < self.concurrency && unread {
                // A commit made room: read on before waiting for news.
                continue;
            }
            if pending.is_empty() && !unread && drain.is_cancelled() {
                break;
            }
            let can_read = pending.len() < self.concurrency;
            tokio::select! {
                Some(joined) = in_flight.join_next() => {
                    if let Ok((id, outcome)) = joined
                        && let Some(slot) = pending.iter_mut().find(|(b, ..)| *b == id) {
                            slot.2 = Some(slot.1.settle(outcome));
                        }
                }
                changed = head.changed(), if can_read => if changed.is_err() { break },
                Some(command) = self.commands.recv() => self.command(command).await,
                _ = health.tick() => self.health().await,
                _ = backlog_tick.tick() => self.refresh_backlog().await,
                _ = replay_check.tick() => { self.replay(None).await; }
                () = drain.cancelled(), if !drain.is_cancelled() => {}
                () = stop.cancelled() => break,
            }
        }
        // Stopped: batches still in flight are abandoned, not committed.
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
        let abandoned: usize = pending.iter().map(|(_, b, _)| b.entries.len()).sum();
        self.shared.metrics.in_flight.dec_by(abandoned as i64);
    }

    /// Reads, routes and encodes the next batch, waiting up to `batch.timeout` for it to
    /// fill when the log has fewer records than a full batch.
    async fn next_batch(&mut self, head: &tokio::sync::watch::Receiver<u64>) -> store::Result<Batch> {
        let max_items = self.limits.max_items.unwrap_or(usize::MAX);
        let max_bytes = self.limits.max_bytes.unwrap_or(usize::MAX);
        let max_item = self.limits.max_item_bytes.unwrap_or(usize::MAX);
        let mut batch = Batch {
            last_seq: self.next_read.saturating_sub(1),
            items: Vec::new(),
            item_entry: Vec::new(),
            entries: Vec::new(),
            refused: Vec::new(),
        };
        let mut bytes = 0usize;
        let deadline = Instant::now() + self.config.batch.timeout;
        let mut head = head.clone();
        loop {
            if let Some((item, entry)) = self.carry.take() {
                bytes += item.body.len();
                batch.push(item, entry);
            }
            let (log, encoder, from) = (self.log.clone(), self.encoder.clone(), self.next_read);
            let want = max_items.saturating_sub(batch.items.len()).clamp(1, 4096);
            let encoded = tokio::task::spawn_blocking(move || -> store::Result<Vec<(LogEntry, Encoded)>> {
                let entries = log.read(from, want, 8 << 20)?;
                Ok(entries
                    .into_iter()
                    .map(|e| {
                        let encoded = encoder.encode(&e);
                        (e, encoded)
                    })
                    .collect())
            })
            .await
            .map_err(|e| store::Error::Corrupt {
                cf: "log",
                key: String::new(),
                reason: e.to_string(),
            })??;
            let read_any = !encoded.is_empty();
            for (entry, encoded) in encoded {
                self.next_read = entry.seq + 1;
                self.shared.metrics.accepted.inc();
                let kind = RecordKind::from_tag(entry.kind).unwrap_or(RecordKind::Event);
                let stored = Entry { seq: entry.seq, kind, time_ms: entry.time_ms, payload: entry.payload };
                match encoded {
                    Encoded::Filtered => {
                        self.shared.metrics.filtered.inc();
                        batch.last_seq = stored.seq;
                    }
                    Encoded::Refused(reason) => batch.refuse(stored, reason),
                    Encoded::Item(item) if item.body.len() > max_item => {
                        let reason = format!(
                            "record is {} bytes, over the destination's limit of {max_item} per item",
                            item.body.len()
                        );
                        batch.refuse(stored, reason);
                    }
                    Encoded::Item(item) => {
                        if !batch.items.is_empty() && bytes + item.body.len() > max_bytes {
                            self.carry = Some((item, stored));
                            return Ok(batch);
                        }
                        bytes += item.body.len();
                        batch.push(item, stored);
                        if batch.items.len() >= max_items {
                            return Ok(batch);
                        }
                    }
                }
            }
            if read_any && self.next_read <= self.log.head() {
                continue;
            }
            // The log is drained: send what there is, or wait a little for more.
            let now = Instant::now();
            if batch.items.is_empty() || now >= deadline {
                return Ok(batch);
            }
            let _ = tokio::time::timeout(deadline - now, head.changed()).await;
            if self.next_read > self.log.head() {
                return Ok(batch);
            }
        }
    }

    /// Commits every finished batch at the front of the pipeline, in order.
    async fn commit_ready(&mut self, pending: &mut VecDeque<(u64, Batch, Option<Outcome>)>) -> store::Result<()> {
        while let Some((_, batch, Some(outcome))) = pending.front() {
            let (delivered, dead) = match outcome {
                Outcome::Done { delivered, dead } => (*delivered, dead),
                // An aborted batch only happens when stopping: leave it uncommitted.
                Outcome::Aborted => return Ok(()),
            };
            let now = Utc::now();
            let mut ops: Vec<Op> = Vec::with_capacity(dead.len() + 1);
            for (index, error, attempts) in dead {
                let Some(entry) = batch.entries.get(*index) else { continue };
                let (reason, status, excerpt) = match error {
                    SinkError::Permanent { reason, status, excerpt } => (reason.clone(), *status, excerpt.clone()),
                    SinkError::Retryable { reason, .. } | SinkError::Split { reason } => (reason.clone(), None, None),
                };
                tracing::error!(sink = %self.shared.name, seq = entry.seq, kind = entry.kind.as_str(), %reason, "Record refused permanently; moved to the dead-letter queue.");
                let letter = DeadLetter {
                    sink: self.shared.name.to_string(),
                    seq: entry.seq,
                    kind: entry.kind,
                    reason,
                    status,
                    excerpt,
                    time: now,
                    attempts: *attempts,
                    replay: false,
                    record: serde_json::from_slice(&entry.payload).unwrap_or(serde_json::Value::Null),
                };
                ops.push(dlq::put_op(&letter)?);
            }
            let last = batch.last_seq;
            ops.push(
                self.cursors
                    .put_op(&cursor_key(&self.shared.name), &Cursor { seq: last, state: self.shared.sink.state() })?,
            );
            // Not fsynced: a process crash keeps the write (RocksDB's WAL), and an OS
            // crash that lost it only means the batch is delivered again (the file sink's
            // offset travels in the same write, so it stays exactly once).
            let store = self.log.store().clone();
            tokio::task::spawn_blocking(move || store.write(ops, false))
                .await
                .map_err(|e| store::Error::Corrupt { cf: "cursor", key: String::new(), reason: e.to_string() })??;
            let m = &self.shared.metrics;
            m.delivered.inc_by(delivered as u64);
            m.dead_lettered.inc_by(dead.len() as u64);
            m.dlq.inc_by(dead.len() as i64);
            m.in_flight.dec_by(batch.entries.len() as i64);
            let now_ms = now.timestamp_millis();
            for entry in &batch.entries {
                m.latency.observe((now_ms - entry.time_ms).max(0) as f64 / 1000.0);
            }
            self.cursor = last;
            self.consumer.set_committed(last);
            {
                let mut status = self.shared.status.write().unwrap_or_else(|p| p.into_inner());
                status.cursor = last;
                status.dlq_records = status.dlq_records.saturating_add(dead.len() as u64);
            }
            pending.pop_front();
        }
        Ok(())
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Replay { filter, reply } => {
                let store = self.log.store().clone();
                let marked = tokio::task::spawn_blocking({
                    let filter = filter.clone();
                    move || dlq::mark_replay_ops(&store, &filter).and_then(|ops| store.write(ops, true))
                })
                .await;
                let result = match marked {
                    Ok(Ok(())) => Ok(self.replay(Some(filter)).await),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(store::Error::Corrupt { cf: "dlq", key: String::new(), reason: e.to_string() }),
                };
                let _ = reply.send(result);
            }
            Command::Purge { filter, reply } => {
                let store = self.log.store().clone();
                let name = self.shared.name.to_string();
                let result = tokio::task::spawn_blocking(move || {
                    let ops = dlq::purge_ops(&store, &filter)?;
                    let n = ops.len();
                    store.write(ops, true)?;
                    Ok((n, dlq::count(&store, &name)?))
                })
                .await
                .map_err(|e| store::Error::Corrupt { cf: "dlq", key: String::new(), reason: e.to_string() })
                .and_then(|r| r);
                let _ = reply.send(result.map(|(purged, left)| {
                    self.set_dlq_size(left);
                    tracing::info!(sink = %self.shared.name, purged, "Dead letters purged.");
                    purged
                }));
            }
        }
    }

    fn set_dlq_size(&self, size: u64) {
        self.shared.metrics.dlq.set(size as i64);
        self.shared.status.write().unwrap_or_else(|p| p.into_inner()).dlq_records = size;
    }

    /// Sends the letters flagged for replay; returns how many were delivered.
    async fn replay(&mut self, filter: Option<DlqFilter>) -> usize {
        let store = self.log.store().clone();
        let mut filter = filter.unwrap_or_default();
        filter.sink = Some(self.shared.name.to_string());
        let letters = match tokio::task::spawn_blocking(move || dlq::list(&store, &filter, 10_000)).await {
            Ok(Ok(letters)) => letters.into_iter().filter(|l| l.replay).collect::<Vec<_>>(),
            _ => return 0,
        };
        if letters.is_empty() {
            return 0;
        }
        let mut ops = Vec::new();
        let mut delivered = 0;
        for mut letter in letters {
            let payload = serde_json::to_vec(&letter.record).unwrap_or_default();
            let item = match decode(letter.kind, &payload).map(|d| self.encoder.to_item(letter.seq, letter.kind, &d)) {
                Ok(Encoded::Item(item)) => item,
                Ok(Encoded::Refused(reason)) | Err(reason) => {
                    letter.reason = reason;
                    letter.replay = false;
                    letter.attempts += 1;
                    ops.extend(dlq::put_op(&letter));
                    continue;
                }
                Ok(Encoded::Filtered) => continue,
            };
            match deliver(&self.shared, vec![item]).await {
                Outcome::Done { dead, .. } if dead.is_empty() => {
                    delivered += 1;
                    ops.push(dlq::delete_op(&letter.sink, letter.seq));
                }
                Outcome::Done { dead, .. } => {
                    letter.reason = dead[0].1.to_string();
                    letter.replay = false;
                    letter.attempts += 1;
                    ops.extend(dlq::put_op(&letter));
                }
                Outcome::Aborted => break,
            }
        }
        let store = self.log.store().clone();
        let name = self.shared.name.to_string();
        if let Ok(Ok(left)) =
            tokio::task::spawn_blocking(move || store.write(ops, true).and_then(|()| dlq::count(&store, &name))).await
        {
            self.set_dlq_size(left);
        }
        tracing::info!(sink = %self.shared.name, delivered, "Dead letters replayed.");
        delivered
    }

    /// Checks the destination and refreshes the status.
    async fn health(&mut self) {
        let result = self.shared.sink.healthcheck().await;
        {
            let mut status = self.shared.status.write().unwrap_or_else(|p| p.into_inner());
            match result {
                // A sink without a real check would pass it while its deliveries fail.
                Ok(()) if self.shared.breaker.state() != super::BreakerState::Closed => {
                    status.state = "unhealthy".into();
                    self.shared.metrics.up.set(0);
                }
                Ok(()) => {
                    status.state = "healthy".into();
                    self.shared.metrics.up.set(1);
                }
                Err(e) => {
                    if status.state != "unhealthy" {
                        tracing::warn!(sink = %self.shared.name, error = %e, "Sink health check failed.");
                    }
                    status.state = "unhealthy".into();
                    status.last_error = Some(e.to_string());
                    self.shared.metrics.up.set(0);
                }
            }
        }
        self.refresh_backlog().await;
    }

    /// Refreshes backlog records and bytes, the oldest undelivered record's age and the
    /// breaker state, in the status and the metrics.
    async fn refresh_backlog(&self) {
        let log = self.log.clone();
        let cursor = self.cursor;
        let Ok((oldest, bytes)) = tokio::task::spawn_blocking(move || {
            let oldest = log.read(cursor + 1, 1, usize::MAX).ok().and_then(|e| e.into_iter().next());
            (oldest, log.bytes_after(cursor))
        })
        .await
        else {
            return;
        };
        let head = self.log.head();
        let records = head.saturating_sub(cursor);
        let age = oldest
            .filter(|e| e.seq <= head)
            .map_or(0, |e| ((Utc::now().timestamp_millis() - e.time_ms).max(0) / 1000) as u64);
        let breaker = self.shared.breaker.state();
        let m = &self.shared.metrics;
        m.backlog_records.set(records as i64);
        m.backlog_bytes.set(bytes as i64);
        m.oldest_age.set(age as i64);
        m.breaker_open.set(i64::from(breaker != super::BreakerState::Closed));
        let mut status = self.shared.status.write().unwrap_or_else(|p| p.into_inner());
        status.cursor = cursor;
        status.backlog_records = records;
        status.backlog_bytes = bytes;
        status.oldest_undelivered_seconds = age;
        status.breaker = breaker.as_str().to_owned();
    }
}

impl Batch {
    fn push(&mut self, item: Item, entry: Entry) {
        self.last_seq = entry.seq;
        self.item_entry.push(self.entries.len());
        self.entries.push(entry);
        self.items.push(item);
    }

    fn refuse(&mut self, entry: Entry, reason: String) {
        self.last_seq = entry.seq;
        self.refused.push((self.entries.len(), SinkError::permanent(reason)));
        self.entries.push(entry);
    }
}

/// Sends `items` until each is delivered or refused for good, retrying only the failed
/// ones. A batch refused as a whole for its size ([`SinkError::Split`]) is sent again in
/// halves, at once. Returns indexes into `items`.
async fn deliver<S: Sink>(shared: &Shared<S>, items: Vec<Item>) -> Outcome {
    let m = &shared.metrics;
    let started = tokio::time::Instant::now();
    // Positions of the items still to send, in the original batch, in order.
    let mut remaining: Vec<usize> = (0..items.len()).collect();
    let mut dead: Vec<(usize, SinkError, u32)> = Vec::new();
    // Failed attempts so far (drives the backoff), and the most items per request.
    let mut attempt: u32 = 0;
    let mut retrying = false;
    let mut chunk = items.len().max(1);
    loop {
        while let Some(wait) = shared.breaker.acquire() {
            m.breaker_open.set(1);
            if !pause(&shared.stop, wait).await {
                return Outcome::Aborted;
            }
        }
        m.breaker_open.set(0);
        if let Some(limiter) = &shared.limiter {
            tokio::select! { () = limiter.until_ready() => {}, () = shared.stop.cancelled() => return Outcome::Aborted }
        }
        if retrying {
            m.retries.inc();
            while let Some(wait) = shared.budget.withdraw() {
                if !pause(&shared.stop, wait).await {
                    return Outcome::Aborted;
                }
            }
        } else {
            shared.budget.deposit();
        }
        m.requests.inc();
        let sent = remaining.len().min(chunk);
        let batch: Vec<Item> = remaining[..sent].iter().map(|&i| items[i].clone()).collect();
        let failures: Vec<(usize, SinkError)> = match shared.sink.send(&batch).await {
            Ok(report) => report.failed,
            Err(e) => (0..batch.len()).map(|i| (i, e.clone())).collect(),
        };
        let all_failed_retryably =
            !failures.is_empty() && failures.len() == batch.len() && failures.iter().all(|(_, e)| e.is_retryable());
        if all_failed_retryably {
            if shared.breaker.failure() {
                tracing::warn!(sink = %shared.name, "Circuit breaker opened: the destination keeps failing; records wait in the log.");
            }
        } else {
            shared.breaker.success();
        }
        let mut retry = Vec::new();
        let mut again = Vec::new();
        let mut retry_after: Option<Duration> = None;
        let mut last_error = None;
        for (index, error) in failures {
            let Some(&original) = remaining[..sent].get(index) else { continue };
            match &error {
                SinkError::Retryable { retry_after: after, .. } => {
                    m.retryable.inc();
                    retry_after = retry_after.max(*after);
                    retry.push(original);
                }
                SinkError::Split { reason } if sent > 1 => {
                    chunk = (sent / 2).max(1);
                    tracing::debug!(sink = %shared.name, %reason, chunk, "Batch refused as a whole; sending it in halves.");
                    again.push(original);
                }
                SinkError::Split { reason } => {
                    m.permanent.inc();
                    dead.push((original, SinkError::permanent(format!("refused on its own: {reason}")), attempt + 1));
                }
                SinkError::Permanent { .. } => {
                    m.permanent.inc();
                    dead.push((original, error.clone(), attempt + 1));
                }
            }
            last_error = Some(error);
        }
        {
            let mut status = shared.status.write().unwrap_or_else(|p| p.into_inner());
            status.breaker = shared.breaker.state().as_str().to_owned();
            if retry.is_empty() {
                status.state = "healthy".into();
                m.up.set(1);
            } else {
                status.last_error = last_error.map(|e| e.to_string());
            }
            if all_failed_retryably {
                status.state = "unhealthy".into();
                m.up.set(0);
            }
        }
        let unsent = remaining[sent..].to_vec();
        if retry.is_empty() && again.is_empty() && unsent.is_empty() {
            let delivered = items.len() - dead.len();
            return Outcome::Done { delivered, dead };
        }
        if retry.is_empty() {
            // Nothing failed retryably: send the halves and the rest now.
            again.extend(unsent);
            again.sort_unstable();
            remaining = again;
            retrying = false;
            continue;
        }
        if shared.give_up_after.is_some_and(|limit| started.elapsed() >= limit) {
            for i in retry {
                dead.push((
                    i,
                    SinkError::permanent(format!(
                        "still failing after {:?}; gave up",
                        shared.give_up_after.unwrap_or_default()
                    )),
                    attempt + 1,
                ));
            }
            retry = Vec::new();
        }
        retry.extend(again);
        retry.extend(unsent);
        retry.sort_unstable();
        if retry.is_empty() {
            let delivered = items.len() - dead.len();
            return Outcome::Done { delivered, dead };
        }
        let wait = shared.backoff.delay_with(attempt, retry_after);
        if attempt < 3 || attempt.is_multiple_of(10) {
            tracing::warn!(sink = %shared.name, attempt, records = retry.len(), wait_ms = wait.as_millis() as u64, "Delivery failed; retrying.");
        }
        if !pause(&shared.stop, wait).await {
            return Outcome::Aborted;
        }
        remaining = retry;
        retrying = true;
        attempt = attempt.saturating_add(1);
    }
}

/// The cursor name of a sink.
pub fn cursor_key(sink: &str) -> String {
    format!("sink/{sink}")
}

#[cfg(test)]
#[path = "exporter_tests.rs"]
mod tests;
