use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::Utc;
use futures_util::future::BoxFuture;
use serde_json::json;

use super::runner::{Run, RunStatus, StepStatus};
use super::*;
use crate::actions::audit::{self, AuditKind, AuditLog};
use crate::actions::block::{self, BlockConfig, BlockIp, Blocker, UnblockIp};
use crate::actions::{Action, ActionContext, ActionSpec, Outcome, PolicyConfig, SafetyPolicy, TargetKind};
use crate::detect::{Alert, Entities};
use crate::event::{AlertId, EventId, RuleId};
use crate::incident::IncidentBook;
use crate::store::{Log, Store};
use crate::telemetry::MetricsRegistry;

/// A test action: records each execution's idempotency key; fails when told to.
#[derive(Debug)]
struct Probe {
    spec: ActionSpec,
    calls: Arc<Mutex<Vec<String>>>,
    fail: bool,
}

impl Probe {
    fn new(id: &str, idempotent: bool, fail: bool, calls: &Arc<Mutex<Vec<String>>>) -> Self {
        let spec = ActionSpec {
            id: id.into(),
            description: String::new(),
            params: vec![crate::actions::ParamSpec {
                name: "target".into(),
                kind: crate::actions::ParamKind::String,
                required: false,
                doc: String::new(),
            }],
            target: Some(("target".into(), TargetKind::Other)),
            capabilities: Vec::new(),
            idempotent,
            sensitive: id.contains("sensitive"),
            inverse: None,
            default_ttl: None,
        };
        Self { spec, calls: calls.clone(), fail }
    }
}

impl Action for Probe {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            self.calls.lock().expect("calls").push(ctx.idempotency_key.clone());
            if self.fail {
                Err(ActionError::Failed("probe told to fail".into()))
            } else {
                Ok(Outcome::new("x", "probed"))
            }
        })
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    runner: Runner,
    deps: RunnerDeps,
    calls: Arc<Mutex<Vec<String>>>,
    incident: Incident,
}

fn step(id: &str, action: &str, params: serde_json::Value) -> StepDef {
    let mut def: StepDef = serde_json::from_value(json!({ "id": id, "action": action })).expect("step");
    def.params = params.as_object().cloned().unwrap_or_default();
    def
}

fn playbook(id: &str, steps: Vec<StepDef>) -> Playbook {
    let mut p: Playbook = toml::from_str(&format!("id = \"{id}\"\nsteps = []")).expect("playbook");
    p.steps = steps;
    p
}

fn open_incident(store: &Store, ip: &str) -> Incident {
    let time = Utc::now();
    let mut entities = Entities::default();
    entities.ips.insert(ip.to_owned());
    entities.source_ips.insert(ip.to_owned());
    let alert = Alert {
        id: AlertId::generate(),
        rule_id: RuleId::from("ssh_brute_force"),
        title: "SSH brute force".into(),
        family: None,
        priority: crate::event::Priority::P1,
        category: None,
        time,
        first_time: time,
        group: BTreeMap::new(),
        group_key: ip.into(),
        dedup_key: ip.into(),
        count: 10,
        event_ids: vec![EventId::generate()],
        entities,
        affected_users: None,
        techniques: vec![],
        tags: vec![],
        author: None,
        suppress_ms: None,
        notify: vec![],
    };
    let mut book = IncidentBook::new(store);
    let change = book.apply(&alert, time).expect("apply");
    store.write(book.take_ops().expect("ops"), true).expect("write");
    crate::incident::get(store, change.incident.id).expect("get").expect("incident")
}

fn harness(playbooks: Vec<Playbook>, policy: PolicyConfig) -> Harness {
    let (dir, store) = crate::store::testing::temp_store();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mut actions = Registry::default();
    let blocker = Arc::new(Blocker::new(&BlockConfig::default(), &store).expect("blocker"));
    actions.insert(Arc::new(BlockIp::new(blocker.clone())));
    actions.insert(Arc::new(UnblockIp::new(blocker)));
    actions.insert(Arc::new(Probe::new("probe", true, false, &calls)));
    actions.insert(Arc::new(Probe::new("once", false, false, &calls)));
    actions.insert(Arc::new(Probe::new("broken", true, true, &calls)));
    actions.insert(Arc::new(Probe::new("sensitive_probe", true, false, &calls)));
    let mut set = PlaybookSet::default();
    for p in playbooks {
        assert!(p.check("test", &actions).is_empty(), "{:?}", p.check("test", &actions));
        set.insert(p);
    }
    let deps = RunnerDeps {
        log: Log::read_only(&store).expect("log"),
        actions: Arc::new(actions),
        policy: Arc::new(SafetyPolicy::new(policy, &store)),
        audit: Arc::new(AuditLog::open(&store).expect("audit")),
        playbooks: Arc::new(arc_swap::ArcSwap::from_pointee(set)),
        rules: None,
        worker: None,
        config: PlaybooksConfig::default(),
        store: store.clone(),
    };
    let runner = Runner::new(deps.clone(), &MetricsRegistry::default());
    let incident = open_incident(&store, "203.0.113.7");
    Harness { _dir: dir, store, runner, deps, calls, incident }
}

fn blocked(store: &Store) -> Vec<String> {
    block::deny_list(store, Utc::now()).expect("deny list").into_iter().map(|e| e.ip).collect()
}

async fn finished(h: &Harness, run: &Run) -> Run {
    h.runner.wait_for(run.id, |r| r.status.is_final() || r.status == RunStatus::Waiting).await.expect("run")
}

fn statuses(run: &Run) -> Vec<StepStatus> {
    run.steps.iter().map(|s| s.status).collect()
}

fn three_steps() -> Playbook {
    playbook(
        "contain",
        vec![
            step("block", "block_ip", json!({ "ip": "{{ incident.entities.source_ip }}", "ttl": "10m" })),
            step("probe", "probe", json!({ "target": "{{ incident.rule_id }}" })),
            step("tell", "probe", json!({ "target": "{{ steps.block.target }}" })),
        ],
    )
}

#[tokio::test]
async fn a_dry_run_touches_nothing_and_its_plan_matches_the_real_run() {
    let h = harness(vec![three_steps()], PolicyConfig::default());
    let plan = h.runner.plan(h.incident.id, "contain").expect("plan");
    let dry = h.runner.start_run(h.incident.id, "contain", "alice", true).await.expect("dry run");
    assert_eq!(dry.status, RunStatus::Planned);
    assert!(blocked(&h.store).is_empty(), "a dry run blocks nothing");
    assert!(h.calls.lock().expect("calls").is_empty(), "a dry run executes no action");
    let audited = audit::of_run(&h.store, &dry.id.to_string()).expect("audit");
    assert!(audited.iter().all(|r| r.kind == AuditKind::Run), "only the run itself is audited: {audited:?}");
    assert_eq!(plan.steps[0].target.as_deref(), Some("203.0.113.7"));
    assert_eq!(plan.steps[0].inverse.as_deref(), Some("unblock_ip"));
    assert_eq!(plan.steps[0].ttl, Some(Duration::from_secs(600)));
    assert!(plan.steps[0].decision.as_ref().is_some_and(|d| d.allowed));
    assert_eq!(dry.plan.as_ref().map(|p| &p.steps), Some(&plan.steps), "the recorded plan is the plan");

    let run = h.runner.start_run(h.incident.id, "contain", "alice", false).await.expect("run");
    let run = finished(&h, &run).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(blocked(&h.store), ["203.0.113.7"]);
    for (planned, done) in plan.steps.iter().zip(&run.steps).take(2) {
        assert_eq!(planned.params, done.params, "step {}", planned.id);
        assert_eq!(planned.target, done.target, "step {}", planned.id);
        assert_eq!(planned.ttl, done.decision.as_ref().and_then(|d| d.ttl), "step {}", planned.id);
    }
    // The third step's parameters come from the first step's outcome, known only at run time.
    assert_eq!(run.steps[2].params["target"], "203.0.113.7");
    let kinds: Vec<AuditKind> =
        audit::of_run(&h.store, &run.id.to_string()).expect("audit").iter().map(|r| r.kind).collect();
    use AuditKind::{Intent, Result, Run as R};
    assert_eq!(kinds, [R, Intent, Result, Intent, Result, Intent, Result, R]);
    assert!(audit::verify(&h.store).expect("verify").ok());
}

#[tokio::test]
async fn a_restart_resumes_without_repeating_a_completed_step() {
    let h = harness(
        vec![playbook(
            "steps",
            vec![
                step("one", "probe", json!({})),
                step("two", "probe", json!({})),
                step("three", "once", json!({})),
                step("four", "probe", json!({})),
            ],
        )],
        PolicyConfig::default(),
    );
    // The state a crash leaves: step one done, step two interrupted mid-action.
    let mut run = h.runner.start_run(h.incident.id, "steps", "alice", true).await.expect("run");
    run.status = RunStatus::Running;
    run.dry_run = false;
    run.plan = None;
    run.steps[0].status = StepStatus::Succeeded;
    run.steps[1].status = StepStatus::Running;
    run.steps[1].attempts = 1;
    crate::store::Table::<[u8; 16], Run>::new(&h.store, crate::store::Cf::State, b"run/")
        .put(run.id.as_bytes(), &run)
        .expect("put");
    h.runner.start().expect("start");
    let done = h.runner.wait_for(run.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(done.status, RunStatus::Succeeded, "{done:#?}");
    let calls = h.calls.lock().expect("calls").clone();
    let key = |s: &str| format!("{}:{s}", run.id);
    assert_eq!(calls, [key("two"), key("three"), key("four")], "step one is not repeated; two reruns with its key");
    assert_eq!(done.steps[1].attempts, 2);

    // A non-idempotent action interrupted mid-run is not repeated: the step fails.
    let mut again = h.runner.start_run(h.incident.id, "steps", "alice", true).await.expect("run");
    again.status = RunStatus::Running;
    again.dry_run = false;
    for s in &mut again.steps[..2] {
        s.status = StepStatus::Succeeded;
    }
    again.steps[2].status = StepStatus::Running;
    crate::store::Table::<[u8; 16], Run>::new(&h.store, crate::store::Cf::State, b"run/")
        .put(again.id.as_bytes(), &again)
        .expect("put");
    // A restart: a new runner over the same store.
    let restarted = Runner::new(h.deps.clone(), &MetricsRegistry::default());
    restarted.start().expect("restart");
    let failed = restarted.wait_for(again.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(failed.steps[2].error.as_deref().is_some_and(|e| e.contains("not idempotent")), "{failed:#?}");
}

fn approval(id: &str, role: Role) -> StepDef {
    let mut def: StepDef = serde_json::from_value(json!({ "id": id, "kind": "approval" })).expect("step");
    def.approvers = role;
    def.timeout = Some(Duration::from_secs(600));
    def
}

#[tokio::test]
async fn approvals_check_role_and_requester_and_resume_the_run() {
    let h = harness(
        vec![playbook("gated", vec![approval("ok", Role::Responder), step("act", "sensitive_probe", json!({}))])],
        PolicyConfig::default(),
    );
    let run = h.runner.start_run(h.incident.id, "gated", "alice", false).await.expect("run");
    let waiting = finished(&h, &run).await;
    assert_eq!((waiting.status, waiting.steps[0].status), (RunStatus::Waiting, StepStatus::Waiting));
    assert!(h.calls.lock().expect("calls").is_empty(), "nothing runs before the approval");
    let err = h.runner.decide(run.id, "ok", "bob", Role::Viewer, true, None).await.expect_err("viewer");
    assert!(matches!(err, runner::RunError::Forbidden(_)), "{err}");
    let err = h.runner.decide(run.id, "ok", "alice", Role::Admin, true, None).await.expect_err("self-approval");
    assert!(err.to_string().contains("must not be who started the run"), "{err}");
    h.runner.decide(run.id, "ok", "bob", Role::Responder, true, Some("looks right".into())).await.expect("approve");
    let done = h.runner.wait_for(run.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(done.status, RunStatus::Succeeded);
    let approval = done.steps[0].approval.clone().expect("approval");
    assert_eq!((approval.by.as_str(), approval.decision.as_str()), ("bob", "approved"));
    assert_eq!(h.calls.lock().expect("calls").len(), 1);
    let audited = audit::of_run(&h.store, &run.id.to_string()).expect("audit");
    assert!(audited.iter().any(|r| r.kind == AuditKind::Approval && r.detail["approval"]["by"] == "bob"));
}

#[tokio::test]
async fn a_denied_approval_stops_the_run_and_a_timeout_escalates() {
    let h = harness(
        vec![playbook("gated", vec![approval("ok", Role::Responder), step("act", "probe", json!({}))])],
        PolicyConfig::default(),
    );
    let run = h.runner.start_run(h.incident.id, "gated", "alice", false).await.expect("run");
    finished(&h, &run).await;
    let denied = h.runner.decide(run.id, "ok", "bob", Role::Responder, false, None).await.expect("deny");
    let denied = h.runner.wait_for(denied.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!((denied.status, denied.steps[1].status), (RunStatus::Failed, StepStatus::Cancelled));
    assert!(h.calls.lock().expect("calls").is_empty());

    let run = h.runner.start_run(h.incident.id, "gated", "alice", false).await.expect("run");
    finished(&h, &run).await;
    assert_eq!(h.runner.sweep(Utc::now()).await.expect("sweep"), (0, 0), "not due yet");
    let later = Utc::now() + chrono::Duration::minutes(11);
    assert_eq!(h.runner.sweep(later).await.expect("sweep").0, 1);
    let timed_out = h.runner.wait_for(run.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(timed_out.status, RunStatus::Failed);
    let approval = timed_out.steps[0].approval.clone().expect("record");
    assert_eq!(approval.decision, "timed_out");
    assert!(timed_out.steps[0].error.as_deref().is_some_and(|e| e.contains("nobody handled it within 10m")));
}

#[tokio::test]
async fn a_failing_step_with_compensate_undoes_the_completed_steps() {
    let mut broken = step("break", "broken", json!({}));
    broken.on_failure = OnFailure::Compensate;
    let h = harness(
        vec![playbook(
            "undo",
            vec![
                step("block", "block_ip", json!({ "ip": "{{ incident.entities.source_ip }}" })),
                step("note", "probe", json!({})),
                broken,
            ],
        )],
        PolicyConfig::default(),
    );
    let run = h.runner.start_run(h.incident.id, "undo", "alice", false).await.expect("run");
    let done = h.runner.wait_for(run.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(done.status, RunStatus::Compensated, "{done:#?}");
    assert_eq!(statuses(&done), [StepStatus::RolledBack, StepStatus::Succeeded, StepStatus::Failed]);
    assert!(done.steps[0].rollback.as_deref().is_some_and(|r| r.starts_with("undone: unblocked 203.0.113.7")));
    assert_eq!(done.steps[1].rollback.as_deref(), Some("not reversible; left as is"));
    assert!(blocked(&h.store).is_empty(), "the block was undone");
    let rollbacks = audit::of_run(&h.store, &run.id.to_string())
        .expect("audit")
        .into_iter()
        .filter(|r| r.kind == AuditKind::Rollback)
        .count();
    assert_eq!(rollbacks, 2, "each undo is recorded, also the one that could not be done");
}

#[tokio::test]
async fn the_policy_refuses_protected_assets_and_budgets_before_anything_runs() {
    let mut policy = PolicyConfig::default();
    policy.protected.cidrs.push("203.0.113.0/24".parse().expect("cidr"));
    let h = harness(vec![three_steps()], policy);
    let plan = h.runner.plan(h.incident.id, "contain").expect("plan");
    let refusal = plan.steps[0].decision.as_ref().and_then(|d| d.refusal.clone());
    assert_eq!(refusal.as_deref(), Some("protected asset: 203.0.113.7 is in protected range 203.0.113.0/24"));
    let run = h.runner.start_run(h.incident.id, "contain", "alice", false).await.expect("run");
    let done = h.runner.wait_for(run.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(done.status, RunStatus::Failed);
    assert!(
        done.steps[0].error.as_deref().is_some_and(|e| e.contains("refused by the safety policy: protected asset"))
    );
    assert!(blocked(&h.store).is_empty());
    let intent =
        audit::of_run(&h.store, &run.id.to_string()).expect("audit").into_iter().find(|r| r.kind == AuditKind::Intent);
    assert_eq!(intent.expect("intent").detail["decision"]["allowed"], false, "the refusal is audited");

    let mut policy = PolicyConfig::default();
    policy.per_action_hour.insert("block_ip".into(), 1);
    let h = harness(vec![three_steps()], policy);
    let first = h.runner.start_run(h.incident.id, "contain", "alice", false).await.expect("run");
    assert_eq!(h.runner.wait_for(first.id, |r| r.status.is_final()).await.expect("run").status, RunStatus::Succeeded);
    let second = h.runner.start_run(h.incident.id, "contain", "alice", false).await.expect("run");
    let second = h.runner.wait_for(second.id, |r| r.status.is_final()).await.expect("run");
    assert!(
        second.steps[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("budget: 1 block_ip executions in the last hour (max 1)")),
        "{:?}",
        second.steps[0].error
    );
}

#[tokio::test]
async fn ttl_expiry_rolls_the_effect_back() {
    let h = harness(vec![three_steps()], PolicyConfig::default());
    let run = h.runner.start_run(h.incident.id, "contain", "alice", false).await.expect("run");
    h.runner.wait_for(run.id, |r| r.status.is_final()).await.expect("run");
    assert_eq!(blocked(&h.store), ["203.0.113.7"]);
    assert_eq!(h.runner.sweep(Utc::now()).await.expect("sweep"), (0, 0));
    assert_eq!(h.runner.sweep(Utc::now() + chrono::Duration::minutes(11)).await.expect("sweep"), (0, 1));
    assert!(blocked(&h.store).is_empty());
    let expired = audit::of_run(&h.store, "").expect("audit").into_iter().filter(|r| r.actor == "ttl").count();
    assert_eq!(expired, 1);
}

#[test]
fn playbook_files_are_checked_against_the_actions() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("bad.toml"),
        r#"
            id = "bad"
            [[steps]]
            id = "a"
            action = "block_ipp"
            [[steps]]
            id = "b"
            action = "block_ip"
            params = { address = "x" }
            [[steps]]
            id = "b"
            kind = "approval"
            when = "incident.priority =="
        "#,
    )
    .expect("write");
    let h = harness(vec![], PolicyConfig::default());
    let actions = &h.runner_actions();
    let errors = PlaybookSet::load_dir(dir.path(), actions).expect_err("invalid");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    for expected in [
        "step 1 (a): unknown action `block_ipp`",
        "step 2 (b): `address` is not a parameter of block_ip",
        "step 2 (b): block_ip needs the parameter `ip`",
        "step 3 (b): duplicate step id",
        "step 3 (b): `when` does not compile",
    ] {
        assert!(text.iter().any(|t| t.contains(expected)), "{expected} missing in {text:#?}");
    }
}

#[test]
fn the_shipped_playbooks_load() {
    let h = harness(vec![], PolicyConfig::default());
    let (_dir, store) = crate::store::testing::temp_store();
    let log = Log::read_only(&store).expect("log");
    let actions = Registry::native(&crate::actions::ActionsConfig::default(), &store, &log).expect("actions");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/playbooks");
    let set = PlaybookSet::load_dir(&dir, &actions).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(set.get("block_source_ip").is_some());
    assert!(set.get("contain_compromised_account").is_some());
    assert!(set.get("block_source_ip").is_some_and(|p| p.triggered_by(&h.incident, Some("block_source_ip"))));
}

impl Harness {
    fn runner_actions(&self) -> Registry {
        let mut actions = Registry::default();
        let blocker = Arc::new(Blocker::new(&BlockConfig::default(), &self.store).expect("blocker"));
        actions.insert(Arc::new(BlockIp::new(blocker)));
        actions
    }
}
