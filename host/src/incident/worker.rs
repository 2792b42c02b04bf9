//! The detection stage: a durable consumer of the log, and the single owner of incidents.
//!
//! It reads events after its cursor, runs the [`Detector`], turns alerts into incident
//! changes, and commits — in one atomic write through the log writer — the alert and
//! incident records (for sinks), the incidents, the changed windows and its new cursor.
//! A crash anywhere before that write leaves everything as it was; after it, nothing is
//! processed twice. Alerts and incident records it appended come back to it through the
//! log and are skipped.
//!
//! Operator actions (transitions, assignments, comments) and rule reloads arrive as
//! [`Command`]s and are applied between batches, so no incident is ever written by two
//! parties.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::escalation::{EscalationConfig, IncidentsConfig};
use super::priority::{Noise, Policy};
use super::{ChangeKind, Error, IncidentBook, IncidentChange, IncidentStatus};
use crate::detect::{Alert, DetectConfig, DetectMetrics, Detector};
use crate::event::{IncidentId, REPLAY_TAG, RecordKind, SecurityEvent};
use crate::rules::RuleSet;
use crate::store::{self, ConsumerHandle, Cursor, Log, LogWriter, NewRecord, Op, Store, Table, cursors};
use crate::telemetry::{MetricsRegistry, latency_histogram, names};

/// The name of detection's cursor.
pub const CONSUMER: &str = "detect";
const BATCH: usize = 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// An operator action on an incident.
#[derive(Clone, Debug)]
pub enum Action {
    /// Move to a status.
    Transition {
        /// Target status.
        to: IncidentStatus,
        /// Why.
        note: Option<String>,
    },
    /// Assign (or unassign with `None`).
    Assign(Option<String>),
    /// Add a comment.
    Comment(String),
    /// Add a timeline entry of a kind (`playbook`).
    Timeline {
        /// Entry kind.
        kind: String,
        /// What happened.
        detail: String,
    },
    /// Raise the escalation level by one.
    Escalate {
        /// Why.
        reason: String,
    },
    /// Notify one channel about the incident.
    Notify {
        /// The channel (a sink name).
        channel: String,
        /// An optional message for the timeline.
        message: Option<String>,
    },
}

/// A request to the detection worker.
#[derive(Debug)]
pub enum Command {
    /// Apply an operator action to an incident.
    Incident {
        /// The incident.
        id: IncidentId,
        /// What to do.
        action: Action,
        /// Who asks.
        actor: String,
        /// The incident after the change, or why it was refused.
        reply: oneshot::Sender<Result<super::Incident, Error>>,
    },
    /// Switch to a new rule set (keeping windows of unchanged rules).
    Reload {
        /// The new rules, already compiled.
        rules: RuleSet,
        /// Done (or the store error that stopped it).
        reply: oneshot::Sender<Result<(), store::Error>>,
    },
}

/// A handle to send commands to the detection worker.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    tx: mpsc::Sender<Command>,
}

impl WorkerHandle {
    /// Applies an operator action; resolves with the incident after the change.
    pub async fn incident(&self, id: IncidentId, action: Action, actor: &str) -> Result<super::Incident, Error> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Incident { id, action, actor: actor.to_owned(), reply };
        self.tx.send(command).await.map_err(|_| Error::Store(store::Error::WriterStopped))?;
        rx.await.map_err(|_| Error::Store(store::Error::WriterStopped))?
    }

    /// Swaps the rule set.
    pub async fn reload(&self, rules: RuleSet) -> Result<(), store::Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Reload { rules, reply }).await.map_err(|_| store::Error::WriterStopped)?;
        rx.await.map_err(|_| store::Error::WriterStopped)?
    }
}

/// Runs detection over the log.
#[derive(Debug)]
pub struct DetectionWorker {
    log: Log,
    writer: LogWriter,
    store: Store,
    cursors: Table<String, Cursor>,
    detector: Detector,
    config: DetectConfig,
    escalation: EscalationConfig,
    detect_metrics: DetectMetrics,
    book: IncidentBook,
    consumer: ConsumerHandle,
    cursor: u64,
    changes: broadcast::Sender<IncidentChange>,
    commands: mpsc::Receiver<Command>,
    opened: Family<RuleLabels, Counter>,
    recent: Family<RuleLabels, Gauge>,
    noisy: Family<RuleLabels, Gauge>,
    claims: Option<Arc<super::claims::Claims>>,
    claimed_elsewhere: Counter,
    claim_failures: Counter,
    replayed_alerts: Counter,
    lag: Histogram,
}

impl DetectionWorker {
    /// A worker resuming from its saved cursor and window state; committed incident changes
    /// are published on `changes` (a slow receiver misses some, never blocks detection).
    pub fn new(
        log: Log,
        writer: LogWriter,
        rules: RuleSet,
        config: DetectConfig,
        incidents: &IncidentsConfig,
        registry: &MetricsRegistry,
        changes: broadcast::Sender<IncidentChange>,
    ) -> store::Result<(Self, WorkerHandle)> {
        let store = log.store().clone();
        let cursors = cursors(&store);
        let cursor = cursors.get(&CONSUMER.to_owned())?.map_or(0, |c| c.seq);
        let detect_metrics = DetectMetrics::register(registry);
        let opened = Family::<RuleLabels, Counter>::default();
        registry.register(names::INCIDENTS_OPENED, "Incidents opened, by rule.", opened.clone());
        let recent = Family::<RuleLabels, Gauge>::default();
        registry.register(
            names::RULE_INCIDENTS_24H,
            "Incidents each rule opened in the 24 h of event time before its latest.",
            recent.clone(),
        );
        let noisy = Family::<RuleLabels, Gauge>::default();
        registry.register(
            names::RULE_NOISY,
            "1 when a rule opened more incidents in 24 h than incidents.priority.noisy_after.",
            noisy.clone(),
        );
        let claimed_elsewhere = Counter::default();
        let claim_failures = Counter::default();
        registry.register(
            "incidents_claimed_elsewhere",
            "Incidents not opened here because another instance holds their dedup key.",
            claimed_elsewhere.clone(),
        );
        registry.register(
            "incident_claim_failures",
            "Claims that could not be checked (the incident was opened here anyway).",
            claim_failures.clone(),
        );
        let replayed_alerts = Counter::default();
        registry.register(
            "detect_replayed_alerts",
            "Alerts replayed events would have raised (the instance that consumed them first raised them).",
            replayed_alerts.clone(),
        );
        let lag = latency_histogram();
        registry.register(
            names::DETECT_LAG,
            "From an event's append to the log until detection committed its evaluation.",
            lag.clone(),
        );
        let mut detector = Detector::new(rules.clone(), config.clone(), detect_metrics.clone());
        let windows = detector.load_state(&store)?;
        let consumer = log.register_consumer(CONSUMER, cursor);
        tracing::info!(cursor, windows, rules = rules.rules().len(), "Detection resumes.");
        let (tx, commands) = mpsc::channel(64);
        let worker = Self {
            book: IncidentBook::new(&store).with_policy(Policy::new(&incidents.priority)),
            log,
            writer,
            store,
            cursors,
            detector,
            config,
            escalation: incidents.escalation.clone(),
            detect_metrics,
            consumer,
            cursor,
            changes,
            commands,
            opened,
            recent,
            noisy,
            claims: None,
            claimed_elsewhere,
            claim_failures,
            replayed_alerts,
            lag,
        };
        Ok((worker, WorkerHandle { tx }))
    }

    /// Claims dedup keys across instances before opening incidents.
    pub fn with_claims(mut self, claims: Arc<super::claims::Claims>) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Whether this instance may open the incident `alert` would open (always, without
    /// claims).
    fn may_open(&mut self, alert: &Alert) -> store::Result<bool> {
        let Some(claims) = self.claims.clone() else { return Ok(true) };
        let (opens, key) = self.book.opens(alert).map_err(|e| match e {
            Error::Store(e) => e,
            other => store::Error::Corrupt { cf: "incidents", key: String::new(), reason: other.to_string() },
        })?;
        if !opens {
            return Ok(true);
        }
        match claims.claim(&key) {
            Ok(super::claims::Claim::Ours) => Ok(true),
            Ok(super::claims::Claim::Theirs(holder)) => {
                self.claimed_elsewhere.inc();
                tracing::info!(key = %key, holder = %holder, "Incident key held by another instance; not opened here.");
                Ok(false)
            }
            Err(e) => {
                self.claim_failures.inc();
                tracing::warn!(key = %key, error = %e, "Incident claim could not be checked; opening it here.");
                Ok(true)
            }
        }
    }

    /// Processes records and commands as they arrive. When `drain` is cancelled (intake
    /// has stopped), it finishes every record up to the head and says so on `drained`; it
    /// goes on serving commands (playbooks still record on incidents) and records appended
    /// since, until `stop` is cancelled and it is caught up.
    pub async fn run(mut self, drain: CancellationToken, stop: CancellationToken, drained: oneshot::Sender<()>) {
        let mut drained = Some(drained);
        let mut head = self.log.subscribe();
        let mut escalation = tokio::time::interval(self.escalation.check_every);
        escalation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while let Ok(command) = self.commands.try_recv() {
                self = self.blocking(move |w| w.command(command)).await;
            }
            if self.cursor < self.log.head() {
                self = self.blocking(|w| w.step_or_recover()).await;
                continue;
            }
            if drain.is_cancelled()
                && let Some(tx) = drained.take()
            {
                let _ = tx.send(());
            }
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return },
                Some(command) = self.commands.recv() => self = self.blocking(move |w| w.command(command)).await,
                _ = escalation.tick(), if self.escalation.max_level > 0 => {
                    self = self.blocking(|w| {
                        if let Err(e) = w.escalate(Utc::now()) {
                            w.book.discard();
                            tracing::error!(error = %e, "Escalation check failed; retrying at the next check.");
                        }
                    }).await;
                }
                () = drain.cancelled(), if drained.is_some() => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Runs `f` on the blocking pool (RocksDB and Rhai stay off the reactor).
    async fn blocking(self, f: impl FnOnce(&mut Self) + Send + 'static) -> Self {
        let handle = tokio::task::spawn_blocking(move || {
            let mut worker = self;
            f(&mut worker);
            worker
        });
        match handle.await {
            Ok(worker) => worker,
            // A panic here is a bug; there is no worker left to continue with.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn step_or_recover(&mut self) {
        if let Err(e) = self.step() {
            tracing::error!(error = %e, cursor = self.cursor, "Detection commit failed; retrying from the last commit.");
            self.recover();
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Incident { id, action, actor, reply } => {
                let result = self.incident_action(id, action, &actor);
                let _ = reply.send(result);
            }
            Command::Reload { rules, reply } => {
                let count = rules.rules().len();
                let ops = self.detector.replace_rules(rules);
                let result = self.writer.append_blocking(Vec::new(), ops).map(|_| ());
                if result.is_ok() {
                    tracing::info!(rules = count, "Rules reloaded.");
                }
                let _ = reply.send(result);
            }
        }
    }

    fn incident_action(&mut self, id: IncidentId, action: Action, actor: &str) -> Result<super::Incident, Error> {
        let now = Utc::now();
        let change = match action {
            Action::Transition { to, note } => self.book.transition(id, to, actor, note.as_deref(), now),
            Action::Assign(assignee) => self.book.assign(id, assignee.as_deref(), actor, now),
            Action::Comment(text) => self.book.comment(id, &text, actor, now),
            Action::Timeline { kind, detail } => self.book.record(id, &kind, actor, detail, now),
            Action::Escalate { reason } => self.book.escalate(id, None, &format!("{reason} ({actor})"), now),
            Action::Notify { channel, message } => self.book.notify(id, &channel, actor, message.as_deref(), now),
        };
        let change = match change {
            Ok(change) => change,
            Err(e) => {
                self.book.discard();
                return Err(e);
            }
        };
        let ops = self.book.take_ops()?;
        if let Err(e) = self.writer.append_blocking(vec![record(RecordKind::Incident, &change)], ops) {
            self.book.discard();
            return Err(e.into());
        }
        let incident = change.incident.clone();
        let _ = self.changes.send(change);
        Ok(incident)
    }

    /// Processes one batch after the cursor and commits it. Returns the records consumed.
    pub fn step(&mut self) -> store::Result<usize> {
        let entries = self.log.read(self.cursor + 1, BATCH, 16 << 20)?;
        let Some(last) = entries.last().map(|e| e.seq) else { return Ok(0) };
        let mut alerts: Vec<Alert> = Vec::new();
        let mut appended_ms = Vec::with_capacity(entries.len());
        for entry in &entries {
            let replayed = entry.kind == REPLAY_TAG;
            if entry.kind != RecordKind::Event.tag() && !replayed {
                continue;
            }
            if !replayed {
                appended_ms.push(entry.time_ms);
            }
            match serde_json::from_slice::<SecurityEvent>(&entry.payload) {
                Ok(event) if replayed => {
                    let raised = self.detector.warm(&Arc::new(event));
                    self.replayed_alerts.inc_by(raised as u64);
                }
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
            if !self.may_open(alert)? {
                records.push(record(RecordKind::Alert, alert));
                continue;
            }
            let change = self.book.apply(alert, now).map_err(|e| match e {
                Error::Store(e) => e,
                other => store::Error::Corrupt { cf: "incidents", key: String::new(), reason: other.to_string() },
            })?;
            records.push(record(RecordKind::Alert, alert));
            records.push(record(RecordKind::Incident, &change));
            changes.push(change);
        }
        let mut ops: Vec<Op> = self.detector.checkpoint_ops();
        ops.extend(self.book.take_ops()?);
        ops.push(self.cursors.put_op(&CONSUMER.to_owned(), &Cursor { seq: last, state: serde_json::Value::Null })?);
        self.writer.append_blocking(records, ops)?;
        self.cursor = last;
        self.consumer.set_committed(last);
        let now_ms = Utc::now().timestamp_millis();
        for ms in appended_ms {
            self.lag.observe((now_ms - ms).max(0) as f64 / 1000.0);
        }
        for change in changes {
            if change.change == ChangeKind::Opened {
                let labels = RuleLabels { rule: change.incident.rule_id.to_string() };
                self.opened.get_or_create(&labels).inc();
                let recent = self.book.opened_recently(&change.incident.rule_id);
                self.recent.get_or_create(&labels).set(i64::try_from(recent).unwrap_or(i64::MAX));
                let noisy = Noise::is_noisy(self.book.policy(), recent);
                if self.noisy.get_or_create(&labels).set(i64::from(noisy)) != i64::from(noisy) && noisy {
                    tracing::warn!(rule = %labels.rule, incidents_24h = recent, "Rule is noisy: tune it rather than let it page.");
                }
            }
            let _ = self.changes.send(change);
        }
        Ok(entries.len())
    }

    /// Escalates every unacknowledged incident past its response time (as of `now`);
    /// returns how many.
    pub fn escalate(&mut self, now: DateTime<Utc>) -> Result<usize, Error> {
        let mut records = Vec::new();
        let mut changes = Vec::new();
        for listed in super::list(&self.store, usize::MAX, Some(super::IncidentStatus::Detected))? {
            // The book may hold a newer state than the store's.
            let Some(incident) = self.book.get(listed.id)? else { continue };
            let Some(level) = self.escalation.due(&incident, now) else { continue };
            let change =
                self.book.escalate(incident.id, Some(level), "not acknowledged within its response time", now)?;
            tracing::warn!(incident = %incident.id, level, priority = %incident.priority, "Incident not acknowledged within its response time; escalated.");
            records.push(record(RecordKind::Incident, &change));
            changes.push(change);
        }
        if records.is_empty() {
            return Ok(0);
        }
        let ops = self.book.take_ops()?;
        self.writer.append_blocking(records, ops)?;
        let count = changes.len();
        for change in changes {
            let _ = self.changes.send(change);
        }
        Ok(count)
    }

    /// Rebuilds in-memory state from the store after a failed commit.
    fn recover(&mut self) {
        self.book.discard();
        self.detector = Detector::new(self.detector.rules().clone(), self.config.clone(), self.detect_metrics.clone());
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
    NewRecord::encode(kind.tag(), 1024, |buf| serde_json::to_writer(buf, value).expect("record serializes"))
}

/// Why a rule reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new rules do not compile; the old ones keep running.
    #[error("the new rules do not compile ({} error(s)); the previous rules keep running", .0.len())]
    Invalid(Vec<crate::rules::RuleError>),
    /// The swap could not be committed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The live rule set, and how to reload it from its directory.
#[derive(Clone, Debug)]
pub struct LiveRules {
    dir: std::path::PathBuf,
    options: crate::rules::CompileOptions,
    handle: WorkerHandle,
    current: Arc<arc_swap::ArcSwap<RuleSet>>,
    sigma: prometheus_client::metrics::family::Family<SigmaState, prometheus_client::metrics::gauge::Gauge>,
}

/// The label of `vigil_sigma_rules`: `compiled`, `idle`, `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct SigmaState {
    state: &'static str,
}

impl LiveRules {
    /// The rules loaded from `dir` (already `current`), reloadable through `handle`.
    pub fn new(
        dir: std::path::PathBuf,
        options: crate::rules::CompileOptions,
        handle: WorkerHandle,
        current: RuleSet,
        metrics: &crate::telemetry::MetricsRegistry,
    ) -> Self {
        let sigma = prometheus_client::metrics::family::Family::default();
        metrics.register(
            "sigma_rules",
            "Sigma rules of the running set: compiled (idle ones included), idle (no pipeline entry for their logsource), refused (see the log or `vigil sigma check`).",
            sigma.clone(),
        );
        let live = Self { dir, options, handle, current: Arc::new(arc_swap::ArcSwap::from_pointee(current)), sigma };
        live.count_sigma();
        live
    }

    fn count_sigma(&self) {
        let current = self.current();
        let report = current.sigma_report();
        for (state, n) in
            [("compiled", report.compiled), ("idle", report.idle.len()), ("refused", report.refused.len())]
        {
            self.sigma.get_or_create(&SigmaState { state }).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The rule directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// How rules compile.
    pub fn options(&self) -> &crate::rules::CompileOptions {
        &self.options
    }

    /// The rule set running now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Compiles the directory again and swaps the new set in atomically; on any error the
    /// running set stays. Returns the number of rules now running.
    pub async fn reload(&self) -> Result<usize, ReloadError> {
        let (dir, options) = (self.dir.clone(), self.options.clone());
        let compiled = tokio::task::spawn_blocking(move || RuleSet::load_dir(&dir, &options)).await.map_err(|e| {
            ReloadError::Store(store::Error::Corrupt { cf: "rules", key: String::new(), reason: e.to_string() })
        })?;
        let rules = compiled.map_err(ReloadError::Invalid)?;
        let count = rules.rules().len();
        self.handle.reload(rules.clone()).await?;
        self.current.store(Arc::new(rules));
        self.count_sigma();
        Ok(count)
    }

    /// A fingerprint of the rule files (names, sizes, modification times), to notice edits.
    pub fn files_fingerprint(&self) -> u64 {
        let mut entries: Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> = Vec::new();
        // Rhai rules, their library and the playbooks sit at one level; Sigma rule trees
        // (`<dir>/sigma`, `[rules.sigma] dirs`) are walked whole.
        let mut dirs: Vec<(std::path::PathBuf, bool)> =
            vec![(self.dir.clone(), false), (self.dir.join("lib"), false), (self.dir.join("playbooks"), false)];
        dirs.push((self.dir.join("sigma"), true));
        dirs.extend(self.options.sigma.dirs.iter().map(|d| (d.clone(), true)));
        while let Some((dir, deep)) = dirs.pop() {
            let Ok(read) = std::fs::read_dir(&dir) else { continue };
            for entry in read.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if deep && meta.is_dir() {
                    dirs.push((entry.path(), true));
                }
                entries.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
        entries.sort();
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&entries, &mut hasher);
        std::hash::Hasher::finish(&hasher)
    }
}
