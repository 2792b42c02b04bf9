//! The durable playbook runner.
//!
//! - **Triggers.** A consumer of the log with its own cursor reads incident records; each
//!   opened incident starts the playbooks it triggers. The new runs and the cursor are
//!   written in one commit, so a crash neither loses nor duplicates a run.
//! - **Runs.** Each run is stored with its steps (their definitions included, so a playbook
//!   edited mid-run does not change it) and rewritten at every state change. At start,
//!   runs still `running` are resumed from their first unfinished step; a completed step is
//!   never repeated, and a step interrupted mid-action is run again only when its action is
//!   idempotent (with the same idempotency key, `<run>:<step>`).
//! - **Steps.** An automated step renders its parameters, asks the safety policy, writes
//!   the audit intent (fsynced), runs the action under its timeout with retries and
//!   backoff, and writes the audit result. Manual and approval steps park the run (no
//!   task waits); an approval or completion through the API resumes it; the sweeper fails
//!   and escalates waits past their deadline.
//! - **Failure.** `on_failure` continues, aborts, escalates, or compensates: completed steps
//!   are undone in reverse order through their actions' rollbacks, each undo recorded.
//! - **Effects with a TTL** are recorded; the sweeper rolls them back when they lapse.
//! - **Dry runs** produce a plan (parameters, targets, inverses, approvals, policy
//!   decisions) and touch nothing.
//!
//! Every state change is audited and, through the detection worker, added to the incident's
//! timeline.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    Completion, OnFailure, Playbook, PlaybookSet, PlaybooksConfig, Role, StepDef, StepKind, evaluate_when,
    incident_view, render_params,
};
use crate::actions::audit::{AuditEntry, AuditKind, AuditLog};
use crate::actions::{ActionContext, ActionError, Decision, Outcome, Registry, SafetyPolicy};
use crate::event::{IncidentId, RecordKind, RunId};
use crate::incident::worker::{Action as IncidentAction, LiveRules, WorkerHandle};
use crate::incident::{self, ChangeKind, Incident, IncidentChange, IncidentStatus};
use crate::store::{self, Cursor, Log, Store, Table, cursors};
use crate::telemetry::{MetricsRegistry, names, pause};

/// The name of the runner's log cursor.
pub const CONSUMER: &str = "playbooks";

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are being run.
    Running,
    /// Parked at a manual or approval step.
    Waiting,
    /// Every step done.
    Succeeded,
    /// Stopped by a failed step.
    Failed,
    /// Stopped after undoing its completed steps.
    Compensated,
    /// Stopped by a person.
    Cancelled,
    /// A dry run: the plan is recorded, nothing ran.
    Planned,
}

impl RunStatus {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running | Self::Waiting)
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
            Self::Cancelled => "cancelled",
            Self::Planned => "planned",
        }
    }
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Its action is running (or was, when Vigil stopped).
    Running,
    /// Waiting for a person.
    Waiting,
    /// Done.
    Succeeded,
    /// Failed (see `error`).
    Failed,
    /// Its `when` was false.
    Skipped,
    /// Undone by compensation.
    RolledBack,
    /// The run was cancelled first.
    Cancelled,
}

/// A decision on an approval step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalRecord {
    /// Who decided (`timeout` when nobody did).
    pub by: String,
    /// Their role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// `approved`, `denied`, `completed` (manual) or `timed_out`.
    pub decision: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepRun {
    /// The step's definition, as it was when the run started.
    pub def: StepDef,
    /// Where it is.
    pub status: StepStatus,
    /// Executions of its action so far.
    #[serde(default)]
    pub attempts: u32,
    /// Resolved parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// The target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The safety policy's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Until when a manual or approval step waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// What the action did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The approval or completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
    /// What compensation did to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// A playbook run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Run {
    /// Run id.
    pub id: RunId,
    /// The playbook.
    pub playbook: String,
    /// Its version.
    pub version: u32,
    /// The incident.
    pub incident_id: IncidentId,
    /// Where it is.
    pub status: RunStatus,
    /// Plan only.
    pub dry_run: bool,
    /// Who or what started it (`rule:ssh_brute_force`, an operator).
    pub requested_by: String,
    /// What the incident goes to when it succeeds.
    pub completion: Completion,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When the first action ran (time to contain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_action_at: Option<DateTime<Utc>>,
    /// The steps.
    pub steps: Vec<StepRun>,
    /// The plan, for dry runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlanStep {
    /// Step id.
    pub id: String,
    /// Step name.
    pub name: String,
    /// Its kind.
    pub kind: StepKind,
    /// The action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Whether it would run (`when`).
    pub runs: bool,
    /// Resolved parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// The target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The action that undoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse: Option<String>,
    /// How long its effect would last (after repeat-offender escalation).
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// The approval it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The safety policy's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Anything else worth knowing (invalid parameters, a failing `when`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a run would do, with no side effects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    /// The playbook.
    pub playbook: String,
    /// Its version.
    pub version: u32,
    /// The incident.
    pub incident_id: IncidentId,
    /// The steps.
    pub steps: Vec<PlanStep>,
}

/// Why a runner operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such run, step, incident or playbook.
    #[error("{0}")]
    NotFound(String),
    /// Not possible in the current state.
    #[error("{0}")]
    Conflict(String),
    /// Not allowed for this caller.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What the runner needs.
#[derive(Clone, Debug)]
pub struct RunnerDeps {
    /// The store (runs, audit, expiries).
    pub store: Store,
    /// The log (incident records).
    pub log: Log,
    /// The actions steps may run.
    pub actions: Arc<Registry>,
    /// The safety policy.
    pub policy: Arc<SafetyPolicy>,
    /// The audit trail.
    pub audit: Arc<AuditLog>,
    /// The playbooks (swapped on reload).
    pub playbooks: Arc<ArcSwap<PlaybookSet>>,
    /// The live rules (a rule's `playbook` and `auto_remediate`).
    pub rules: Option<LiveRules>,
    /// The detection worker (timeline, escalation, transitions); none in unit tests.
    pub worker: Option<WorkerHandle>,
    /// Settings.
    pub config: PlaybooksConfig,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    playbook: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
    result: String,
}

/// An effect to undo when its TTL lapses.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Expiry {
    action: String,
    ctx: ActionContext,
    outcome: Outcome,
}

#[derive(Debug)]
struct Inner {
    deps: RunnerDeps,
    runs: Table<[u8; 16], Run>,
    waiting: Table<[u8; 16], DateTime<Utc>>,
    expiries: Table<String, Expiry>,
    lock: Mutex<()>,
    active: Mutex<HashSet<RunId>>,
    global: Arc<Semaphore>,
    per_playbook: Mutex<HashMap<String, Arc<Semaphore>>>,
    timeline: Option<mpsc::Sender<(IncidentId, IncidentAction)>>,
    tasks: TaskTracker,
    draining: CancellationToken,
    shutdown: CancellationToken,
    run_metrics: Family<RunLabels, Counter>,
    action_metrics: Family<ActionLabels, Counter>,
    timeline_dropped: Counter,
    changed: watch::Sender<u64>,
    lines: broadcast::Sender<String>,
}

/// The runner; cheap to clone.
#[derive(Clone, Debug)]
pub struct Runner {
    inner: Arc<Inner>,
}

fn runs_of(table: &Table<[u8; 16], Run>, incident: Option<IncidentId>) -> store::Result<Vec<Run>> {
    Ok(table
        .scan(None, usize::MAX)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| incident.is_none_or(|i| r.incident_id == i))
        .collect())
}

/// The stored runs of an incident, oldest first, read from `store` directly (evidence
/// bundles, tools beside a running server).
pub fn stored_runs(store: &Store, incident: IncidentId) -> store::Result<Vec<Run>> {
    runs_of(&Table::new(store, store::Cf::State, b"run/"), Some(incident))
}

enum StepEnd {
    Next,
    Park,
    Fail(String),
}

/// Runs a store operation on the blocking pool (RocksDB fsyncs stay off the reactor).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> store::Result<T> + Send + 'static) -> Result<T, RunError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RunError::Conflict(format!("store task panicked: {e}")))?
        .map_err(RunError::from)
}

fn expiry_key(at: DateTime<Utc>, run: RunId, step: &str) -> String {
    format!("{:020}/{run}/{step}", at.timestamp_millis().max(0))
}

fn is_sensitive(run: &Run, index: usize, actions: &Registry) -> bool {
    run.steps[index].def.sensitive.unwrap_or_else(|| {
        run.steps[index + 1..]
            .iter()
            .any(|s| s.def.action.as_deref().and_then(|a| actions.get(a)).is_some_and(|a| a.spec().sensitive))
    })
}

impl Runner {
    /// A runner that does not trigger on its own (the CLI's plans, tests).
    pub fn new(deps: RunnerDeps, registry: &MetricsRegistry) -> Self {
        let store = deps.store.clone();
        let run_metrics = Family::<RunLabels, Counter>::default();
        let action_metrics = Family::<ActionLabels, Counter>::default();
        let timeline_dropped = Counter::default();
        registry.register(
            names::PLAYBOOK_RUNS,
            "Playbook runs that ended, by playbook and status.",
            run_metrics.clone(),
        );
        registry.register(names::ACTIONS, "Action executions, by action and result.", action_metrics.clone());
        registry.register(
            names::TIMELINE_DROPPED,
            "Playbook timeline entries not recorded because the detection worker was behind.",
            timeline_dropped.clone(),
        );
        let timeline = deps.worker.clone().map(|worker| {
            let (tx, mut rx) = mpsc::channel::<(IncidentId, IncidentAction)>(4096);
            tokio::spawn(async move {
                while let Some((id, action)) = rx.recv().await {
                    if let Err(e) = worker.incident(id, action, "playbook").await {
                        tracing::warn!(incident = %id, error = %e, "Playbook change not recorded on the incident.");
                    }
                }
            });
            tx
        });
        let global = Arc::new(Semaphore::new(deps.config.max_concurrent_runs));
        Self {
            inner: Arc::new(Inner {
                runs: Table::new(&store, store::Cf::State, b"run/"),
                waiting: Table::new(&store, store::Cf::State, b"run-waiting/"),
                expiries: Table::new(&store, store::Cf::State, b"expiry/"),
                deps,
                lock: Mutex::new(()),
                active: Mutex::new(HashSet::new()),
                global,
                per_playbook: Mutex::new(HashMap::new()),
                timeline,
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                shutdown: CancellationToken::new(),
                run_metrics,
                action_metrics,
                timeline_dropped,
                changed: watch::Sender::new(0),
                lines: broadcast::Sender::new(256),
            }),
        }
    }

    /// Starts the trigger consumer and the sweeper, and resumes runs left running.
    pub fn start(&self) -> store::Result<()> {
        let resumed = self.list(None)?.into_iter().filter(|r| r.status == RunStatus::Running).collect::<Vec<_>>();
        if !resumed.is_empty() {
            tracing::info!(runs = resumed.len(), "Resuming playbook runs.");
        }
        for run in resumed {
            self.spawn_drive(run.id);
        }
        let consumer = self.clone();
        self.inner.tasks.spawn(async move { consumer.consume().await });
        let sweeper = self.clone();
        self.inner.tasks.spawn(async move { sweeper.sweep_loop().await });
        Ok(())
    }

    /// Stops: incidents already in the log still start their playbooks, and runs go on
    /// until they end or park (within `timeout`); then no new step starts. Runs left
    /// running resume at the next start.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.draining.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(timeout, self.inner.tasks.wait()).await.is_err() {
            tracing::warn!("Playbook steps still running at shutdown; they resume at the next start.");
            self.inner.shutdown.cancel();
            self.inner.tasks.wait().await;
        }
        self.inner.shutdown.cancel();
    }

    /// The actions steps may run.
    pub fn actions(&self) -> Arc<Registry> {
        self.deps().actions.clone()
    }

    /// The playbooks now loaded.
    pub fn playbooks(&self) -> Arc<PlaybookSet> {
        self.deps().playbooks.load_full()
    }

    fn deps(&self) -> &RunnerDeps {
        &self.inner.deps
    }

    /// One run.
    pub fn get(&self, id: RunId) -> store::Result<Option<Run>> {
        self.inner.runs.get(id.as_bytes())
    }

    /// Runs, oldest first, optionally of one incident.
    pub fn list(&self, incident: Option<IncidentId>) -> store::Result<Vec<Run>> {
        runs_of(&self.inner.runs, incident)
    }

    /// Waits until `check` returns a value (checked after every run change).
    pub async fn wait_until<T>(&self, mut check: impl FnMut(&Runner) -> Option<T>) -> T {
        let mut changes = self.inner.changed.subscribe();
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            // The sender lives as long as `self`: this cannot fail.
            let _ = changes.changed().await;
        }
    }

    /// Waits until run `id` satisfies `done` (checked after every run change).
    pub async fn wait_for(&self, id: RunId, done: impl Fn(&Run) -> bool) -> Result<Run, RunError> {
        let mut changes = self.inner.changed.subscribe();
        loop {
            if let Some(run) = self.get(id)?
                && done(&run)
            {
                return Ok(run);
            }
            changes.changed().await.map_err(|_| RunError::Conflict("runner stopped".into()))?;
        }
    }

    /// Reads, changes and writes a run under the runner's lock (and keeps the waiting index).
    async fn update<T: Send + 'static>(
        &self,
        id: RunId,
        f: impl FnOnce(&mut Run) -> Result<T, RunError> + Send + 'static,
    ) -> Result<(Run, T), RunError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = inner.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut run = inner.runs.get(id.as_bytes())?.ok_or_else(|| RunError::NotFound(format!("no run {id}")))?;
            let out = f(&mut run)?;
            run.updated_at = Utc::now();
            let mut ops = vec![inner.runs.put_op(id.as_bytes(), &run)?];
            let deadline = run.steps.iter().find(|s| s.status == StepStatus::Waiting).and_then(|s| s.deadline);
            match (run.status, deadline) {
                (RunStatus::Waiting, Some(at)) => ops.push(inner.waiting.put_op(id.as_bytes(), &at)?),
                _ => ops.push(inner.waiting.delete_op(id.as_bytes())),
            }
            inner.runs.store().write(ops, true)?;
            inner.changed.send_modify(|n| *n += 1);
            Ok((run, out))
        })
        .await
        .map_err(|e| RunError::Conflict(format!("run update panicked: {e}")))?
    }

    fn note(&self, incident: IncidentId, action: IncidentAction) {
        let Some(tx) = &self.inner.timeline else { return };
        if tx.try_send((incident, action)).is_err() {
            self.inner.timeline_dropped.inc();
            tracing::warn!(incident = %incident, "Playbook timeline entry dropped: the detection worker is behind.");
        }
    }

    /// One line per run state change (what goes on the incident timelines), for people
    /// watching a terminal; a slow receiver misses some.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.lines.subscribe()
    }

    fn timeline(&self, run: &Run, detail: String) {
        let detail = format!("playbook {} (run {}): {detail}", run.playbook, run.id);
        let _ = self.inner.lines.send(format!("incident {}: {detail}", run.incident_id));
        self.note(run.incident_id, IncidentAction::Timeline { kind: "playbook".into(), detail });
    }

    /// Appends an audit record (fsynced, on the blocking pool: never on the reactor).
    async fn audit(&self, run: &Run, step: Option<&StepRun>, kind: AuditKind, detail: Value) -> Result<(), RunError> {
        let entry = AuditEntry {
            kind: Some(kind),
            actor: run.requested_by.clone(),
            run_id: run.id.to_string(),
            step_id: step.map(|s| s.def.id.clone()).unwrap_or_default(),
            incident_id: Some(run.incident_id.to_string()),
            action: step.and_then(|s| s.def.action.clone()).unwrap_or_default(),
            target: step.and_then(|s| s.target.clone()),
            detail,
        };
        self.append_audit(entry).await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), RunError> {
        let audit = self.deps().audit.clone();
        tokio::task::spawn_blocking(move || audit.append(entry))
            .await
            .map_err(|e| RunError::Conflict(format!("audit append panicked: {e}")))??;
        Ok(())
    }

    fn count_action(&self, action: &str, result: &str) {
        self.inner.action_metrics.get_or_create(&ActionLabels { action: action.into(), result: result.into() }).inc();
    }

    fn incident(&self, id: IncidentId) -> Result<Incident, RunError> {
        incident::get(&self.deps().store, id)?.ok_or_else(|| RunError::NotFound(format!("no incident {id}")))
    }

    /// A new run of `playbook` on `incident` (not yet stored). With `gate`, an approval
    /// step comes first (the rule does not allow automatic remediation).
    fn new_run(&self, playbook: &Playbook, incident: &Incident, requested_by: &str, dry_run: bool, gate: bool) -> Run {
        let now = Utc::now();
        let step = |def: StepDef| StepRun {
            def,
            status: StepStatus::Pending,
            attempts: 0,
            params: Map::new(),
            target: None,
            decision: None,
            started_at: None,
            finished_at: None,
            deadline: None,
            outcome: None,
            error: None,
            approval: None,
            rollback: None,
        };
        let mut steps: Vec<StepRun> = Vec::new();
        if gate {
            steps.push(step(StepDef {
                id: "approve-run".into(),
                name: "Approve automatic remediation".into(),
                kind: StepKind::Approval,
                action: None,
                params: Map::new(),
                when: None,
                timeout: None,
                retries: 0,
                backoff: Duration::from_secs(1),
                on_failure: OnFailure::Abort,
                ttl: None,
                instructions: Some(format!(
                    "Rule {} does not allow automatic remediation; approve to run playbook {}.",
                    incident.rule_id, playbook.id
                )),
                assignee: None,
                approvers: Role::Responder,
                sensitive: None,
            }));
        }
        steps.extend(playbook.steps.iter().cloned().map(step));
        Run {
            id: RunId::generate(),
            playbook: playbook.id.clone(),
            version: playbook.version,
            incident_id: incident.id,
            status: if dry_run { RunStatus::Planned } else { RunStatus::Running },
            dry_run,
            requested_by: requested_by.into(),
            completion: playbook.completion,
            created_at: now,
            updated_at: now,
            first_action_at: None,
            steps,
            plan: None,
            error: None,
        }
    }

    fn playbook(&self, id: &str) -> Result<Arc<Playbook>, RunError> {
        self.deps().playbooks.load().get(id).cloned().ok_or_else(|| RunError::NotFound(format!("no playbook {id}")))
    }

    /// Starts `playbook` on an incident (an operator's request); a dry run records its plan.
    pub async fn start_run(
        &self,
        incident: IncidentId,
        playbook: &str,
        requested_by: &str,
        dry_run: bool,
    ) -> Result<Run, RunError> {
        let playbook = self.playbook(playbook)?;
        let found = self.incident(incident)?;
        let dry = dry_run || playbook.dry_run || self.deps().config.dry_run;
        let mut run = self.new_run(&playbook, &found, requested_by, dry, false);
        if dry {
            run.plan = Some(self.plan_for(&run, &found)?);
        }
        let (runs, stored) = (self.inner.runs.clone(), run.clone());
        blocking(move || runs.put(stored.id.as_bytes(), &stored)).await?;
        self.started(&run).await;
        Ok(run)
    }

    async fn started(&self, run: &Run) {
        let detail =
            json!({ "event": "started", "playbook": run.playbook, "version": run.version, "dry_run": run.dry_run });
        if let Err(e) = self.audit(run, None, AuditKind::Run, detail).await {
            tracing::error!(run = %run.id, error = %e, "Cannot audit the start of a run.");
        }
        if run.dry_run {
            self.timeline(run, format!("dry run planned ({} steps, nothing executed)", run.steps.len()));
            self.finished(run);
        } else {
            self.timeline(run, format!("started by {}", run.requested_by));
            self.spawn_drive(run.id);
        }
    }

    fn finished(&self, run: &Run) {
        let labels = RunLabels { playbook: run.playbook.clone(), status: run.status.as_str().into() };
        self.inner.run_metrics.get_or_create(&labels).inc();
    }

    /// What a run of `playbook` on `incident` would do now; nothing is executed or counted.
    pub fn plan(&self, incident: IncidentId, playbook: &str) -> Result<Plan, RunError> {
        let playbook = self.playbook(playbook)?;
        let found = self.incident(incident)?;
        let run = self.new_run(&playbook, &found, "plan", true, false);
        self.plan_for(&run, &found)
    }

    fn plan_for(&self, run: &Run, incident: &Incident) -> Result<Plan, RunError> {
        let view = incident_view(incident);
        let context = json!({ "incident": view, "run": { "id": run.id, "playbook": run.playbook }, "steps": {} });
        let mut steps = Vec::new();
        for (i, step) in run.steps.iter().enumerate() {
            let def = &step.def;
            let mut plan = PlanStep {
                id: def.id.clone(),
                name: def.name.clone(),
                kind: def.kind,
                action: def.action.clone(),
                runs: true,
                params: Map::new(),
                target: None,
                inverse: None,
                ttl: None,
                approval: None,
                decision: None,
                note: None,
            };
            if let Some(when) = &def.when {
                match evaluate_when(when, &view) {
                    Ok(runs) => plan.runs = runs,
                    Err(e) => {
                        plan.runs = false;
                        plan.note = Some(format!("`when` fails: {e}"));
                    }
                }
            }
            match def.kind {
                StepKind::Approval => {
                    let distinct =
                        if is_sensitive(run, i, &self.deps().actions) { "; approver ≠ requester" } else { "" };
                    plan.approval = Some(format!("{:?} or above{distinct}", def.approvers).to_lowercase());
                }
                StepKind::Manual => {
                    plan.approval = Some(format!("manual: {}", def.instructions.clone().unwrap_or_default()));
                }
                StepKind::Automated => {
                    let resolved = self.resolve(run, i, &context, incident, false);
                    match resolved {
                        Ok((params, target, ttl, decision, inverse)) => {
                            plan.params = params;
                            plan.target = target;
                            plan.ttl = decision.ttl.or(ttl);
                            plan.inverse = inverse;
                            plan.decision = Some(decision);
                        }
                        Err(e) => plan.note = Some(e),
                    }
                }
            }
            steps.push(plan);
        }
        Ok(Plan { playbook: run.playbook.clone(), version: run.version, incident_id: run.incident_id, steps })
    }

    /// Renders and checks an automated step's parameters and asks the policy (counting the
    /// execution with `commit`): (params, target, requested ttl, decision, inverse).
    #[allow(clippy::type_complexity)]
    fn resolve(
        &self,
        run: &Run,
        index: usize,
        context: &Value,
        incident: &Incident,
        commit: bool,
    ) -> Result<(Map<String, Value>, Option<String>, Option<Duration>, Decision, Option<String>), String> {
        let def = &run.steps[index].def;
        let action_id = def.action.as_deref().ok_or("no action")?;
        let action = self.deps().actions.get(action_id).ok_or_else(|| format!("unknown action {action_id}"))?;
        let spec = action.spec();
        let params = render_params(def, context).map_err(|e| e.to_string())?;
        spec.validate(&params).map_err(|e| e.to_string())?;
        let target = spec.target_of(&params);
        let ttl = params
            .get("ttl")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_duration(t).ok())
            .or(def.ttl)
            .or(spec.default_ttl);
        let decision = self
            .deps()
            .policy
            .decide(spec, target.as_deref(), Some(&incident.id.to_string()), ttl, Utc::now(), commit)
            .map_err(|e| format!("policy state unavailable: {e}"))?;
        Ok((params, target, ttl, decision, spec.inverse.clone()))
    }

    fn spawn_drive(&self, id: RunId) {
        let runner = self.clone();
        self.inner.tasks.spawn(async move { runner.drive(id).await });
    }

    fn semaphore_for(&self, playbook: &str, limit: usize) -> Arc<Semaphore> {
        let mut map = self.inner.per_playbook.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(playbook.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(limit.max(1)))).clone()
    }

    /// Runs a run's steps until it ends or parks.
    async fn drive(self, id: RunId) {
        if !self.inner.active.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            return;
        }
        let result = self.drive_inner(id).await;
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Err(e) = result {
            tracing::error!(run = %id, error = %e, "Playbook run stopped on an error; it resumes at the next start.");
        }
    }

    async fn drive_inner(&self, id: RunId) -> Result<(), RunError> {
        let Some(run) = self.get(id)? else { return Ok(()) };
        let limit = self.deps().playbooks.load().get(&run.playbook).map_or(8, |p| p.max_concurrent_runs);
        let per_playbook = self.semaphore_for(&run.playbook, limit);
        let _global = self.inner.global.acquire().await.map_err(|e| RunError::Conflict(e.to_string()))?;
        let _local = per_playbook.acquire().await.map_err(|e| RunError::Conflict(e.to_string()))?;
        loop {
            if self.inner.shutdown.is_cancelled() {
                return Ok(());
            }
            let Some(run) = self.get(id)? else { return Ok(()) };
            if run.status != RunStatus::Running {
                return Ok(());
            }
            let Some(index) =
                run.steps.iter().position(|s| matches!(s.status, StepStatus::Pending | StepStatus::Running))
            else {
                self.complete(id).await?;
                return Ok(());
            };
            match self.run_step(&run, index).await? {
                StepEnd::Next => {}
                StepEnd::Park => return Ok(()),
                StepEnd::Fail(error) => {
                    if !self.fail_step(id, index, error).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn run_step(&self, run: &Run, index: usize) -> Result<StepEnd, RunError> {
        let step = &run.steps[index];
        let def = step.def.clone();
        let incident = self.incident(run.incident_id)?;
        let view = incident_view(&incident);
        if let Some(when) = &def.when {
            let skip = match evaluate_when(when, &view) {
                Ok(true) => None,
                Ok(false) => Some("`when` is false".to_owned()),
                Err(e) => Some(format!("`when` failed: {e}")),
            };
            if let Some(why) = skip {
                let why2 = why.clone();
                let (run, ()) = self
                    .update(run.id, move |r| {
                        let s = &mut r.steps[index];
                        s.status = StepStatus::Skipped;
                        s.error = Some(why2);
                        s.finished_at = Some(Utc::now());
                        Ok(())
                    })
                    .await?;
                self.timeline(&run, format!("step {} skipped: {why}", def.id));
                return Ok(StepEnd::Next);
            }
        }
        match def.kind {
            StepKind::Manual | StepKind::Approval => {
                let deadline =
                    Utc::now() + chrono::Duration::from_std(def.timeout()).unwrap_or(chrono::Duration::hours(1));
                let (run, ()) = self
                    .update(run.id, move |r| {
                        if r.status != RunStatus::Running {
                            return Err(RunError::Conflict("run is not running".into()));
                        }
                        let s = &mut r.steps[index];
                        s.status = StepStatus::Waiting;
                        s.started_at = Some(Utc::now());
                        s.deadline = Some(deadline);
                        r.status = RunStatus::Waiting;
                        Ok(())
                    })
                    .await?;
                let what = match def.kind {
                    StepKind::Approval => format!("approval by a {:?} or above", def.approvers).to_lowercase(),
                    _ => format!("manual step for {}", def.assignee.as_deref().unwrap_or("the on-call responder")),
                };
                let instructions = def.instructions.as_deref().map(|i| format!(": {i}")).unwrap_or_default();
                self.timeline(&run, format!("step {} waits for {what} until {deadline}{instructions}", def.id));
                Ok(StepEnd::Park)
            }
            StepKind::Automated => self.run_action(run, index, &incident, view).await,
        }
    }

    async fn run_action(&self, run: &Run, index: usize, incident: &Incident, view: Value) -> Result<StepEnd, RunError> {
        let step = &run.steps[index];
        let def = step.def.clone();
        let Some(action) = def.action.as_deref().and_then(|a| self.deps().actions.get(a)) else {
            return Ok(StepEnd::Fail(format!("unknown action {}", def.action.unwrap_or_default())));
        };
        let spec = action.spec().clone();
        let resumed = step.status == StepStatus::Running;
        if resumed && !spec.idempotent {
            return Ok(StepEnd::Fail(format!(
                "interrupted while {} ran; its outcome is unknown and it is not idempotent, so it is not repeated",
                spec.id
            )));
        }
        let (params, target, decision) = match (&step.decision, resumed) {
            // Resumed: the policy already counted this execution.
            (Some(decision), true) => (step.params.clone(), step.target.clone(), decision.clone()),
            _ => {
                let mut outcomes = Map::new();
                for s in &run.steps[..index] {
                    if let Some(o) = &s.outcome {
                        outcomes.insert(s.def.id.clone(), serde_json::to_value(o).unwrap_or(Value::Null));
                    }
                }
                let context =
                    json!({ "incident": view, "run": { "id": run.id, "playbook": run.playbook }, "steps": outcomes });
                let (this, run2, incident2) = (self.clone(), run.clone(), incident.clone());
                let resolved =
                    tokio::task::spawn_blocking(move || this.resolve(&run2, index, &context, &incident2, true))
                        .await
                        .map_err(|e| RunError::Conflict(format!("resolving a step panicked: {e}")))?;
                match resolved {
                    Ok((params, target, ttl, mut decision, _)) => {
                        decision.ttl = decision.ttl.or(ttl);
                        (params, target, decision)
                    }
                    Err(e) => return Ok(StepEnd::Fail(e)),
                }
            }
        };
        let key = format!("{}:{}", run.id, def.id);
        let mut current = run.clone();
        current.steps[index].target = target.clone();
        let intent = json!({
            "params": params, "decision": decision, "ttl": decision.ttl.map(|t| humantime::format_duration(t).to_string()),
            "idempotency_key": key, "resumed": resumed,
        });
        self.audit(&current, Some(&current.steps[index]), AuditKind::Intent, intent).await?;
        if !decision.allowed {
            self.count_action(&spec.id, "refused");
            let why = decision.refusal.clone().unwrap_or_default();
            let (p, t, d) = (params.clone(), target.clone(), decision.clone());
            self.update(run.id, move |r| {
                let s = &mut r.steps[index];
                (s.params, s.target, s.decision) = (p, t, Some(d));
                Ok(())
            })
            .await?;
            return Ok(StepEnd::Fail(format!("refused by the safety policy: {why}")));
        }
        let (p, t, d) = (params.clone(), target.clone(), decision.clone());
        let (run, ()) = self
            .update(run.id, move |r| {
                if r.status != RunStatus::Running {
                    return Err(RunError::Conflict("run is not running".into()));
                }
                let s = &mut r.steps[index];
                (s.params, s.target, s.decision) = (p, t, Some(d));
                s.status = StepStatus::Running;
                s.started_at.get_or_insert(Utc::now());
                Ok(())
            })
            .await?;
        let ctx = ActionContext {
            run_id: run.id.to_string(),
            step_id: def.id.clone(),
            incident_id: Some(run.incident_id.to_string()),
            idempotency_key: key,
            params,
            ttl: decision.ttl,
            now: Utc::now(),
            incident: view,
        };
        let mut attempt = run.steps[index].attempts;
        let mut tries = 0u32;
        let result = loop {
            attempt += 1;
            tries += 1;
            let result = match tokio::time::timeout(def.timeout(), action.execute(&ctx)).await {
                Ok(result) => result,
                Err(_) => Err(ActionError::Retryable(format!(
                    "did not finish within {}",
                    humantime::format_duration(def.timeout())
                ))),
            };
            match result {
                Err(e) if e.is_retryable() && tries <= def.retries && !self.inner.shutdown.is_cancelled() => {
                    let wait = def.backoff.saturating_mul(1 << (tries - 1).min(10));
                    tracing::warn!(run = %run.id, step = %def.id, error = %e, retry_in = ?wait, "Action failed; retrying.");
                    if !pause(&self.inner.shutdown, wait).await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        let now = Utc::now();
        match result {
            Ok(outcome) => {
                self.count_action(&spec.id, "ok");
                let detail = json!({ "outcome": outcome, "attempts": tries });
                self.audit(&run, Some(&run.steps[index]), AuditKind::Result, detail).await?;
                if let (Some(at), true) = (outcome.expires_at, spec.inverse.is_some()) {
                    let expiry = Expiry { action: spec.id.clone(), ctx: ctx.clone(), outcome: outcome.clone() };
                    let (expiries, key) = (self.inner.expiries.clone(), expiry_key(at, run.id, &def.id));
                    blocking(move || expiries.put(&key, &expiry)).await?;
                }
                let o = outcome.clone();
                let (run, ()) = self
                    .update(run.id, move |r| {
                        let s = &mut r.steps[index];
                        s.status = StepStatus::Succeeded;
                        s.attempts = attempt;
                        s.outcome = Some(o);
                        s.finished_at = Some(now);
                        r.first_action_at.get_or_insert(now);
                        Ok(())
                    })
                    .await?;
                self.timeline(&run, format!("step {} ({}): {}", def.id, spec.id, outcome.detail));
                Ok(StepEnd::Next)
            }
            Err(e) => {
                self.count_action(&spec.id, "failed");
                let detail = json!({ "error": e.to_string(), "attempts": tries });
                self.audit(&run, Some(&run.steps[index]), AuditKind::Result, detail).await?;
                self.update(run.id, move |r| {
                    r.steps[index].attempts = attempt;
                    Ok(())
                })
                .await?;
                Ok(StepEnd::Fail(format!("{} failed after {tries} attempt(s): {e}", spec.id)))
            }
        }
    }

    /// Marks a step failed and applies its `on_failure`; returns whether the run goes on.
    async fn fail_step(&self, id: RunId, index: usize, error: String) -> Result<bool, RunError> {
        let e = error.clone();
        let (run, policy) = self
            .update(id, move |r| {
                let s = &mut r.steps[index];
                s.status = StepStatus::Failed;
                s.error = Some(e);
                s.finished_at = Some(Utc::now());
                Ok(s.def.on_failure)
            })
            .await?;
        let step_id = run.steps[index].def.id.clone();
        self.timeline(&run, format!("step {step_id} failed: {error}"));
        match policy {
            OnFailure::Continue => Ok(true),
            OnFailure::Abort => {
                self.end(id, RunStatus::Failed, Some(format!("step {step_id} failed: {error}"))).await?;
                Ok(false)
            }
            OnFailure::Escalate => {
                self.note(
                    run.incident_id,
                    IncidentAction::Escalate { reason: format!("playbook {} step {step_id} failed", run.playbook) },
                );
                self.end(id, RunStatus::Failed, Some(format!("step {step_id} failed: {error}"))).await?;
                Ok(false)
            }
            OnFailure::Compensate => {
                self.compensate(id, index).await?;
                self.end(id, RunStatus::Compensated, Some(format!("step {step_id} failed: {error}"))).await?;
                Ok(false)
            }
        }
    }

    /// Undoes the completed steps before `failed`, newest first.
    async fn compensate(&self, id: RunId, failed: usize) -> Result<(), RunError> {
        let run = self.get(id)?.ok_or_else(|| RunError::NotFound(format!("no run {id}")))?;
        for index in (0..failed).rev() {
            let step = &run.steps[index];
            let (Some(outcome), Some(action_id)) = (&step.outcome, &step.def.action) else { continue };
            if step.status != StepStatus::Succeeded {
                continue;
            }
            let Some(action) = self.deps().actions.get(action_id) else { continue };
            let ctx = ActionContext {
                run_id: run.id.to_string(),
                step_id: step.def.id.clone(),
                incident_id: Some(run.incident_id.to_string()),
                idempotency_key: format!("{}:{}:rollback", run.id, step.def.id),
                params: step.params.clone(),
                ttl: None,
                now: Utc::now(),
                incident: Value::Null,
            };
            let result = match tokio::time::timeout(step.def.timeout(), action.rollback(&ctx, outcome)).await {
                Ok(r) => r,
                Err(_) => Err(ActionError::Failed("rollback timed out".into())),
            };
            let (status, text, metric) = match &result {
                Ok(o) => (StepStatus::RolledBack, format!("undone: {}", o.detail), "rolled_back"),
                Err(ActionError::NotReversible(_)) => {
                    (StepStatus::Succeeded, "not reversible; left as is".into(), "not_reversible")
                }
                Err(e) => (StepStatus::Succeeded, format!("undo failed: {e}"), "rollback_failed"),
            };
            self.count_action(action_id, metric);
            self.audit(&run, Some(step), AuditKind::Rollback, json!({ "reason": "compensation", "result": text }))
                .await?;
            if let (Ok(_), Some(at)) = (&result, outcome.expires_at) {
                let (expiries, key) = (self.inner.expiries.clone(), expiry_key(at, run.id, &step.def.id));
                blocking(move || expiries.delete(&key)).await?;
            }
            let t = text.clone();
            self.update(id, move |r| {
                r.steps[index].status = status;
                r.steps[index].rollback = Some(t);
                Ok(())
            })
            .await?;
            self.timeline(&run, format!("compensation, step {}: {text}", step.def.id));
        }
        Ok(())
    }

    async fn end(&self, id: RunId, status: RunStatus, error: Option<String>) -> Result<Run, RunError> {
        let before = self.get(id)?.ok_or_else(|| RunError::NotFound(format!("no run {id}")))?;
        // Audited before the status is stored: whoever sees the run ended sees its record.
        self.audit(&before, None, AuditKind::Run, json!({ "event": "finished", "status": status, "error": error }))
            .await?;
        let (run, ()) = self
            .update(id, move |r| {
                r.status = status;
                r.error = error;
                for s in &mut r.steps {
                    if matches!(s.status, StepStatus::Pending | StepStatus::Waiting) {
                        s.status = StepStatus::Cancelled;
                    }
                }
                Ok(())
            })
            .await?;
        self.timeline(
            &run,
            format!("{}{}", status.as_str(), run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()),
        );
        self.finished(&run);
        Ok(run)
    }

    async fn complete(&self, id: RunId) -> Result<(), RunError> {
        let run = self.end(id, RunStatus::Succeeded, None).await?;
        let to = match run.completion {
            Completion::AutoClose => IncidentStatus::Resolved,
            Completion::RequireReview => IncidentStatus::Contained,
        };
        let current = self.incident(run.incident_id)?.status;
        if current < to {
            let note = format!("playbook {} completed", run.playbook);
            self.note(run.incident_id, IncidentAction::Transition { to, note: Some(note) });
        }
        Ok(())
    }

    /// Approves or denies a waiting approval step, or marks a manual step done.
    pub async fn decide(
        &self,
        id: RunId,
        step: &str,
        actor: &str,
        role: Role,
        approve: bool,
        note: Option<String>,
    ) -> Result<Run, RunError> {
        let actions = self.deps().actions.clone();
        let (step_id, actor_owned) = (step.to_owned(), actor.to_owned());
        let (run, index) = self
            .update(id, move |r| {
                let index = r
                    .steps
                    .iter()
                    .position(|s| s.def.id == step_id)
                    .ok_or_else(|| RunError::NotFound(format!("run {id} has no step {step_id}")))?;
                if r.status != RunStatus::Waiting || r.steps[index].status != StepStatus::Waiting {
                    return Err(RunError::Conflict(format!("step {step_id} is not waiting")));
                }
                let def = &r.steps[index].def;
                if !role.permits(def.approvers) {
                    return Err(RunError::Forbidden(format!(
                        "step {step_id} needs a {:?} or above",
                        def.approvers
                    )
                    .to_lowercase()));
                }
                if def.kind == StepKind::Approval && is_sensitive(r, index, &actions) && actor_owned == r.requested_by {
                    return Err(RunError::Forbidden(format!(
                        "step {step_id} guards a sensitive action: the approver must not be who started the run ({actor_owned})"
                    )));
                }
                let decision = match (def.kind, approve) {
                    (StepKind::Manual, true) => "completed",
                    (_, true) => "approved",
                    (_, false) => "denied",
                };
                let s = &mut r.steps[index];
                s.approval = Some(ApprovalRecord {
                    by: actor_owned,
                    role: Some(role),
                    decision: decision.into(),
                    at: Utc::now(),
                    note,
                });
                s.finished_at = Some(Utc::now());
                if approve {
                    s.status = StepStatus::Succeeded;
                    r.status = RunStatus::Running;
                } else {
                    s.status = StepStatus::Failed;
                    s.error = Some(format!("denied by {}", s.approval.as_ref().map_or("", |a| a.by.as_str())));
                    r.status = RunStatus::Running;
                }
                Ok(index)
            })
            .await?;
        let step = &run.steps[index];
        let record = step.approval.clone();
        self.audit(&run, Some(step), AuditKind::Approval, json!({ "approval": record })).await?;
        let decision = record.as_ref().map_or("", |a| a.decision.as_str());
        self.timeline(&run, format!("step {} {decision} by {actor}", step.def.id));
        if approve {
            self.spawn_drive(id);
        } else {
            // A denial never lets the run go on.
            let error = step.error.clone().unwrap_or_default();
            if step.def.on_failure == OnFailure::Continue {
                self.end(id, RunStatus::Failed, Some(error)).await?;
            } else {
                self.fail_step(id, index, error).await?;
            }
        }
        self.get(id)?.ok_or_else(|| RunError::NotFound(format!("no run {id}")))
    }

    /// Cancels a run that has not ended.
    pub async fn cancel(&self, id: RunId, actor: &str) -> Result<Run, RunError> {
        let by = actor.to_owned();
        self.update(id, move |r| {
            if r.status.is_final() {
                return Err(RunError::Conflict(format!("run {id} has already ended ({})", r.status.as_str())));
            }
            r.status = RunStatus::Cancelled;
            r.error = Some(format!("cancelled by {by}"));
            for s in &mut r.steps {
                if matches!(s.status, StepStatus::Pending | StepStatus::Waiting) {
                    s.status = StepStatus::Cancelled;
                }
            }
            Ok(())
        })
        .await?;
        let run = self.get(id)?.ok_or_else(|| RunError::NotFound(format!("no run {id}")))?;
        let mut audited = run.clone();
        audited.requested_by = actor.to_owned();
        self.audit(&audited, None, AuditKind::Run, json!({ "event": "cancelled" })).await?;
        self.timeline(&run, format!("cancelled by {actor}"));
        self.finished(&run);
        Ok(run)
    }

    /// Reads incident records after the cursor and starts the playbooks they trigger.
    async fn consume(self) {
        let log = self.deps().log.clone();
        let cursors = cursors(&self.deps().store);
        let mut cursor = match cursors.get(&CONSUMER.to_owned()) {
            Ok(c) => c.map_or(0, |c| c.seq),
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the playbook cursor; playbooks will not trigger.");
                return;
            }
        };
        if cursor == 0 {
            // First start: only incidents from now on.
            cursor = log.head();
            let saved = cursors.put(&CONSUMER.to_owned(), &Cursor { seq: cursor, state: Value::Null });
            if let Err(e) = saved {
                tracing::error!(error = %e, "Cannot store the playbook cursor; playbooks will not trigger.");
                return;
            }
        }
        let consumer = log.register_consumer(CONSUMER, cursor);
        let mut head = log.subscribe();
        loop {
            if cursor >= log.head() {
                if self.inner.draining.is_cancelled() {
                    return;
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    () = self.inner.draining.cancelled() => {},
                    () = self.inner.shutdown.cancelled() => return,
                }
                continue;
            }
            let (reader, from) = (log.clone(), cursor + 1);
            let entries = match tokio::task::spawn_blocking(move || reader.read(from, 1024, 16 << 20)).await {
                Ok(Ok(entries)) => entries,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "Playbook trigger cannot read the log; retrying.");
                    if pause(&self.inner.shutdown, Duration::from_secs(1)).await {
                        continue;
                    }
                    return;
                }
                Err(_) => return,
            };
            let Some(last) = entries.last().map(|e| e.seq) else { continue };
            let mut runs = Vec::new();
            for entry in entries.iter().filter(|e| e.kind == RecordKind::Incident.tag()) {
                match serde_json::from_slice::<IncidentChange>(&entry.payload) {
                    Ok(change) if change.change == ChangeKind::Opened => runs.extend(self.triggered(&change.incident)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(seq = entry.seq, error = %e, "Incident record does not decode; no playbook runs for it.")
                    }
                }
            }
            let (table, positions, store, new_runs) =
                (self.inner.runs.clone(), cursors.clone(), self.deps().store.clone(), runs.clone());
            let commit = blocking(move || {
                let mut ops = Vec::with_capacity(new_runs.len() + 1);
                for run in &new_runs {
                    ops.push(table.put_op(run.id.as_bytes(), run)?);
                }
                ops.push(positions.put_op(&CONSUMER.to_owned(), &Cursor { seq: last, state: Value::Null })?);
                store.write(ops, true)
            });
            if let Err(e) = commit.await {
                tracing::error!(error = %e, "Cannot store new playbook runs; retrying.");
                if pause(&self.inner.shutdown, Duration::from_secs(1)).await {
                    continue;
                }
                return;
            }
            cursor = last;
            consumer.set_committed(last);
            for run in &runs {
                self.started(run).await;
            }
        }
    }

    /// The runs an opened incident starts.
    fn triggered(&self, incident: &Incident) -> Vec<Run> {
        let rule = self
            .deps()
            .rules
            .as_ref()
            .and_then(|r| r.current().rules().iter().find(|c| c.meta.id == incident.rule_id).cloned());
        let rule_playbook = rule.as_ref().and_then(|r| r.meta.playbook.clone());
        let auto = rule.as_ref().is_none_or(|r| r.meta.auto_remediate);
        // A playbook that asks for approval before its first action needs no extra gate.
        let gated = |p: &Playbook| {
            p.steps.iter().take_while(|s| s.kind != StepKind::Automated).any(|s| s.kind == StepKind::Approval)
        };
        let playbooks = self.deps().playbooks.load();
        let mut runs = Vec::new();
        for playbook in playbooks.all().filter(|p| p.triggered_by(incident, rule_playbook.as_deref())) {
            let dry = playbook.dry_run || self.deps().config.dry_run;
            let gate = !auto && !gated(playbook);
            let mut run = self.new_run(playbook, incident, &format!("rule:{}", incident.rule_id), dry, gate);
            if dry {
                match self.plan_for(&run, incident) {
                    Ok(plan) => run.plan = Some(plan),
                    Err(e) => run.error = Some(format!("cannot plan: {e}")),
                }
            }
            runs.push(run);
        }
        if let Some(name) = rule_playbook.filter(|n| playbooks.get(n).is_none()) {
            tracing::warn!(rule = %incident.rule_id, playbook = %name, "The rule names a playbook that does not exist.");
        }
        runs
    }

    async fn sweep_loop(self) {
        let mut tick = tokio::time::interval(self.deps().config.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! { _ = tick.tick() => {}, () = self.inner.draining.cancelled() => return }
            if let Err(e) = self.sweep(Utc::now()).await {
                tracing::error!(error = %e, "Playbook sweep failed; retrying at the next check.");
            }
        }
    }

    /// Times out waits past their deadline and rolls back effects past their TTL, as of
    /// `now`. Returns (timeouts, expiries).
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<(usize, usize), RunError> {
        let mut timeouts = 0;
        for (id, deadline) in self.inner.waiting.scan(None, usize::MAX)? {
            if deadline > now {
                continue;
            }
            let id = RunId::from_bytes(id);
            let Some(run) = self.get(id)? else { continue };
            let Some(index) = run.steps.iter().position(|s| s.status == StepStatus::Waiting) else { continue };
            let (run, ()) = self
                .update(id, move |r| {
                    let s = &mut r.steps[index];
                    s.approval = Some(ApprovalRecord {
                        by: "timeout".into(),
                        role: None,
                        decision: "timed_out".into(),
                        at: now,
                        note: None,
                    });
                    r.status = RunStatus::Running;
                    Ok(())
                })
                .await?;
            let step = &run.steps[index];
            self.audit(&run, Some(step), AuditKind::Approval, json!({ "approval": step.approval })).await?;
            self.note(
                run.incident_id,
                IncidentAction::Escalate {
                    reason: format!("playbook {} step {} was not handled in time", run.playbook, step.def.id),
                },
            );
            let error = format!("nobody handled it within {}", humantime::format_duration(step.def.timeout()));
            if self.fail_step(id, index, error).await? {
                self.spawn_drive(id);
            }
            timeouts += 1;
        }
        let mut expired = 0;
        let until = format!("{:020}0", now.timestamp_millis().max(0) + 1);
        for (key, expiry) in self.inner.expiries.scan(None, usize::MAX)? {
            if key >= until {
                break;
            }
            let Some(action) = self.deps().actions.get(&expiry.action) else {
                let (expiries, gone) = (self.inner.expiries.clone(), key.clone());
                blocking(move || expiries.delete(&gone)).await?;
                continue;
            };
            let mut ctx = expiry.ctx.clone();
            ctx.idempotency_key = format!("{}:expire", ctx.idempotency_key);
            ctx.now = now;
            let result = action.rollback(&ctx, &expiry.outcome).await;
            if let Err(e) = &result
                && e.is_retryable()
            {
                tracing::warn!(action = %expiry.action, error = %e, "Undoing an expired effect failed; retrying.");
                continue;
            }
            let text = match &result {
                Ok(o) => o.detail.clone(),
                Err(e) => format!("undo failed: {e}"),
            };
            self.count_action(&expiry.action, if result.is_ok() { "expired" } else { "rollback_failed" });
            let entry = AuditEntry {
                kind: Some(AuditKind::Rollback),
                actor: "ttl".into(),
                run_id: expiry.ctx.run_id.clone(),
                step_id: expiry.ctx.step_id.clone(),
                incident_id: expiry.ctx.incident_id.clone(),
                action: expiry.action.clone(),
                target: expiry.outcome.target.clone(),
                detail: json!({ "reason": "ttl expired", "result": text }),
            };
            self.append_audit(entry).await?;
            if let Some(incident) = expiry.ctx.incident_id.as_deref().and_then(|i| i.parse().ok()) {
                let detail = format!("{} expired: {text}", expiry.action);
                self.note(incident, IncidentAction::Timeline { kind: "playbook".into(), detail });
            }
            let (expiries, gone) = (self.inner.expiries.clone(), key.clone());
            blocking(move || expiries.delete(&gone)).await?;
            expired += 1;
        }
        Ok((timeouts, expired))
    }
}
