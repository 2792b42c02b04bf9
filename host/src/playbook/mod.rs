//! Playbooks: what Vigil does about an incident, and the durable runner that does it.
//!
//! A playbook is a TOML file under `rules/playbooks/`: an id and version, triggers (rule
//! ids, categories, a least priority), a completion policy, and steps. A step is
//! automated (runs an action), manual (waits for a person to do something and mark it
//! done) or an approval (waits for someone of a role to approve). Step parameters are
//! templates over the incident (`{{ incident.entities.source_ip }}`) and earlier steps'
//! outcomes (`{{ steps.snapshot.data.bundle }}`); a Rhai `when` condition over the incident
//! can skip a step. See `docs/playbooks.md`.
//!
//! Layer 6: uses `event`, `store`, `telemetry`, `actions`, `rules`, `detect`, `incident`.

pub mod notify;
pub mod report;
pub mod runner;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::actions::{ActionError, Registry};
use crate::event::Priority;
use crate::incident::Incident;
use crate::rules::{Category, Lists, SandboxLimits, build_engine};

pub use runner::{Runner, RunnerDeps};

/// Who may do what. Approvals name the least role that may approve.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sends events only (log shippers, inbound webhooks).
    Ingest,
    /// Reads.
    Viewer,
    /// Acknowledges, approves, runs playbooks.
    #[default]
    Responder,
    /// Everything, including rules, plugins, tokens and config.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Self::Ingest),
            "viewer" => Ok(Self::Viewer),
            "responder" => Ok(Self::Responder),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role `{other}` (ingest, viewer, responder, admin)")),
        }
    }
}

impl Role {
    /// The role as written in config and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Viewer => "viewer",
            Self::Responder => "responder",
            Self::Admin => "admin",
        }
    }
}

/// When a playbook runs on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Triggers {
    /// Incidents of these rules.
    pub rules: Vec<String>,
    /// Incidents of these categories.
    pub categories: Vec<Category>,
    /// Only incidents at least this urgent (`P1` takes P0 and P1).
    pub min_priority: Option<Priority>,
}

/// What happens to the incident when a run succeeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    /// The incident moves to `contained` and waits for a person to resolve it.
    #[default]
    RequireReview,
    /// The incident is resolved.
    AutoClose,
}

/// What a step is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Runs an action.
    #[default]
    Automated,
    /// A person does something and marks it done.
    Manual,
    /// Someone of a role approves before the run goes on.
    Approval,
}

/// What a failed step does to the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop the run (failed).
    #[default]
    Abort,
    /// Go on with the next step.
    Continue,
    /// Stop the run and raise the incident's escalation level.
    Escalate,
    /// Undo the completed steps in reverse order, then stop.
    Compensate,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Unique within the playbook.
    pub id: String,
    /// For people.
    #[serde(default)]
    pub name: String,
    /// Automated, manual or approval.
    #[serde(default)]
    pub kind: StepKind,
    /// The action an automated step runs.
    #[serde(default)]
    pub action: Option<String>,
    /// Parameters; strings are templates.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Rhai condition over `incident`; the step is skipped when false.
    #[serde(default)]
    pub when: Option<String>,
    /// Longest the action may take (automated) or the wait may last (manual, approval).
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Further attempts after a retryable failure.
    #[serde(default)]
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    #[schemars(with = "String")]
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// What a failure does to the run.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How long a reversible effect lasts (overrides the action's default).
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// What a person should do (manual) or check (approval).
    #[serde(default)]
    pub instructions: Option<String>,
    /// Who should do it (manual).
    #[serde(default)]
    pub assignee: Option<String>,
    /// The least role that may approve (approval).
    #[serde(default)]
    pub approvers: Role,
    /// The approver must not be who started the run (default: when a later action is
    /// declared sensitive).
    #[serde(default)]
    pub sensitive: Option<bool>,
}

fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

impl StepDef {
    /// The step's timeout, or the default for its kind.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(match self.kind {
            StepKind::Automated => Duration::from_secs(30),
            StepKind::Manual | StepKind::Approval => Duration::from_secs(3600),
        })
    }
}

/// A playbook file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// Id (what rules' `playbook` names).
    pub id: String,
    /// Version, recorded on each run.
    #[serde(default = "one")]
    pub version: u32,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// Whether it runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When it runs on its own.
    #[serde(default)]
    pub triggers: Triggers,
    /// Plan only: every run is a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Most runs of this playbook at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_runs: usize,
    /// What a successful run does to the incident.
    #[serde(default)]
    pub completion: Completion,
    /// The steps, in order.
    pub steps: Vec<StepDef>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn default_concurrency() -> usize {
    8
}

/// A problem in a playbook file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlaybookError {
    /// The file (and step).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Playbook {
    /// Whether the playbook runs on its own for `incident`, given the rule's own
    /// `playbook` choice.
    pub fn triggered_by(&self, incident: &Incident, rule_playbook: Option<&str>) -> bool {
        if !self.enabled {
            return false;
        }
        let t = &self.triggers;
        let urgent = t.min_priority.is_none_or(|least| incident.priority <= least);
        let named = rule_playbook == Some(self.id.as_str());
        let matched = t.rules.iter().any(|r| r == incident.rule_id.as_str())
            || incident.category.is_some_and(|c| t.categories.contains(&c));
        urgent && (named || matched)
    }

    /// Every problem: unknown actions, parameters the action does not declare, steps
    /// without what their kind needs, duplicate ids, `when` conditions that do not compile.
    pub fn check(&self, path: &str, actions: &Registry) -> Vec<PlaybookError> {
        let mut errors = Vec::new();
        let mut err = |at: String, message: String| errors.push(PlaybookError { path: at, message });
        if self.id.is_empty() || !self.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            err(path.into(), format!("id `{}` must be 1+ characters of A-Z a-z 0-9 _ - .", self.id));
        }
        if self.steps.is_empty() {
            err(path.into(), "a playbook needs at least one step".into());
        }
        let engine = condition_engine();
        for (i, step) in self.steps.iter().enumerate() {
            let at = format!("{path}: step {} ({})", i + 1, step.id);
            if self.steps[..i].iter().any(|s| s.id == step.id) {
                err(at.clone(), "duplicate step id".into());
            }
            if let Some(when) = &step.when
                && let Err(e) = engine.compile_expression(when)
            {
                err(at.clone(), format!("`when` does not compile: {e}"));
            }
            match (step.kind, &step.action) {
                (StepKind::Automated, None) => err(at.clone(), "an automated step needs an `action`".into()),
                (StepKind::Automated, Some(id)) => match actions.get(id) {
                    None => {
                        let specs = actions.specs();
                        let known: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
                        err(at.clone(), format!("unknown action `{id}` (known: {})", known.join(", ")));
                    }
                    Some(action) => {
                        for name in step.params.keys() {
                            if !action.spec().params.iter().any(|p| &p.name == name) {
                                err(at.clone(), format!("`{name}` is not a parameter of {id}"));
                            }
                        }
                        for p in action.spec().params.iter().filter(|p| p.required) {
                            if !step.params.contains_key(&p.name) {
                                err(at.clone(), format!("{id} needs the parameter `{}`", p.name));
                            }
                        }
                    }
                },
                (StepKind::Manual | StepKind::Approval, Some(_)) => {
                    err(at.clone(), "only automated steps run actions; put the action in the next step".into())
                }
                (StepKind::Manual | StepKind::Approval, None) => {}
            }
            for (name, value) in &step.params {
                if let Value::String(s) = value
                    && let Err(e) = template_env().template_from_str(s)
                {
                    err(at.clone(), format!("parameter `{name}`: {e}"));
                }
            }
        }
        errors
    }
}

/// The playbooks of a directory, by id.
#[derive(Clone, Debug, Default)]
pub struct PlaybookSet {
    playbooks: BTreeMap<String, Arc<Playbook>>,
}

impl PlaybookSet {
    /// Reads and checks every `*.toml` in `dir` (none when it does not exist). Every
    /// problem of every file is reported.
    pub fn load_dir(dir: &Path, actions: &Registry) -> Result<Self, Vec<PlaybookError>> {
        let mut set = Self::default();
        let mut errors = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(set) };
        let mut paths: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
        paths.sort();
        for path in paths {
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(PlaybookError { path: shown, message: format!("cannot read: {e}") });
                    continue;
                }
            };
            let playbook: Playbook = match toml::from_str(&text) {
                Ok(p) => p,
                Err(e) => {
                    let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                    let at = line.map_or(shown.clone(), |l| format!("{shown}:{l}"));
                    errors.push(PlaybookError { path: at, message: e.message().to_owned() });
                    continue;
                }
            };
            let problems = playbook.check(&shown, actions);
            if !problems.is_empty() {
                errors.extend(problems);
                continue;
            }
            if set.playbooks.contains_key(&playbook.id) {
                errors.push(PlaybookError {
                    path: shown,
                    message: format!("playbook id `{}` is used twice", playbook.id),
                });
                continue;
            }
            set.playbooks.insert(playbook.id.clone(), Arc::new(playbook));
        }
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    /// The playbook with `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Playbook>> {
        self.playbooks.get(id)
    }

    /// Every playbook.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Playbook>> {
        self.playbooks.values()
    }

    /// Adds a playbook (tests, benchmarks).
    pub fn insert(&mut self, playbook: Playbook) {
        self.playbooks.insert(playbook.id.clone(), Arc::new(playbook));
    }
}

/// Settings of the runner (`[playbooks]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PlaybooksConfig {
    /// Directory of playbook files (default: `playbooks/` in the rule directory).
    pub dir: Option<PathBuf>,
    /// Plan only, everywhere: no action runs.
    pub dry_run: bool,
    /// Most runs at once, over all playbooks.
    pub max_concurrent_runs: usize,
    /// How often waiting steps and effect TTLs are checked.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub check_every: Duration,
}

impl Default for PlaybooksConfig {
    fn default() -> Self {
        Self { dir: None, dry_run: false, max_concurrent_runs: 64, check_every: Duration::from_secs(1) }
    }
}

impl PlaybooksConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.max_concurrent_runs == 0 {
            errors.push(("playbooks.max_concurrent_runs".into(), "must be at least 1".into()));
        }
        if self.check_every.is_zero() {
            errors.push(("playbooks.check_every".into(), "must be longer than 0s".into()));
        }
        errors
    }
}

fn template_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    env
}

fn condition_engine() -> rhai::Engine {
    build_engine(&SandboxLimits::default(), &Lists::new(), false)
}

/// The incident as templates and conditions see it: the stored incident plus shortcuts
/// `entities.source_ip`, `entities.ip`, `entities.user`, `entities.host`, `entities.threat_ip`
/// (the first of each).
pub fn incident_view(incident: &Incident) -> Value {
    let mut value = serde_json::to_value(incident).unwrap_or(Value::Null);
    if let Some(entities) = value.get_mut("entities").and_then(Value::as_object_mut) {
        let e = &incident.entities;
        let first =
            |set: &std::collections::BTreeSet<String>| set.iter().next().cloned().map_or(Value::Null, Value::String);
        entities.insert("source_ip".into(), first(&e.source_ips));
        entities.insert("ip".into(), first(&e.ips));
        entities.insert("user".into(), first(&e.users));
        entities.insert("host".into(), first(&e.hosts));
        entities.insert("threat_ip".into(), first(&e.threat_ips));
    }
    if let Some(obj) = value.as_object_mut() {
        obj.remove("timeline");
    }
    value
}

/// Renders a step's parameters: strings are templates over `incident`, `run` and `steps`;
/// a string that renders empty leaves the parameter out.
pub fn render_params(step: &StepDef, context: &Value) -> Result<Map<String, Value>, ActionError> {
    let env = template_env();
    let mut out = Map::new();
    for (name, value) in &step.params {
        match value {
            Value::String(s) => {
                let rendered = env
                    .render_str(s, context)
                    .map_err(|e| ActionError::InvalidParams(format!("parameter `{name}`: {e}")))?;
                let rendered = rendered.trim();
                if !rendered.is_empty() {
                    out.insert(name.clone(), Value::String(rendered.to_owned()));
                }
            }
            other => {
                out.insert(name.clone(), other.clone());
            }
        }
    }
    Ok(out)
}

/// Evaluates a step's `when` over `incident`; errors count as false, with the reason.
pub fn evaluate_when(when: &str, incident: &Value) -> Result<bool, String> {
    let engine = condition_engine();
    let mut scope = rhai::Scope::new();
    let dynamic = rhai::serde::to_dynamic(incident).map_err(|e| e.to_string())?;
    scope.push_constant("incident", dynamic);
    engine.eval_expression_with_scope::<bool>(&mut scope, when).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
