//! The `Action` trait, its registry, the native containment actions and their enforcement
//! backends, the safety policy that bounds them, and the hash-chained audit trail.
//!
//! An action is what a playbook step runs: `block_ip`, `revoke_credentials`,
//! `quarantine_data`… Native actions here and WebAssembly actions (the plugin host) implement
//! the same [`Action`] trait, so the playbook runner cannot tell them apart. Each declares
//! its parameters (checked before a run starts), the capabilities it needs, whether running
//! it twice is harmless, and, when its effect can be undone, its inverse and default TTL.
//!
//! Layer 2: uses `event`, `store`, `telemetry`.

pub mod audit;
pub mod block;
pub mod controls;
pub mod credentials;
pub mod nats;
pub mod node;
pub mod policy;
pub mod quarantine;
pub mod snapshot;
pub mod webhook;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::{Log, Store};

pub use policy::{Decision, PolicyConfig, SafetyPolicy};

/// How an action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The parameters do not fit the action's declaration.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// A transient failure (network, 5xx, busy): trying again may work.
    #[error("{0} (retryable)")]
    Retryable(String),
    /// The action failed and trying again will not help.
    #[error("{0}")]
    Failed(String),
    /// The action has no rollback.
    #[error("action `{0}` cannot be undone")]
    NotReversible(String),
}

impl ActionError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// The type of a declared parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Any string.
    String,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A duration (`15m`, `1h`).
    Duration,
    /// A whole number.
    Integer,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
    /// An absolute file path.
    Path,
}

/// One declared parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ParamSpec {
    /// Name in a step's `params`.
    pub name: String,
    /// Its type.
    pub kind: ParamKind,
    /// Whether a step must give it.
    pub required: bool,
    /// What it means.
    pub doc: String,
}

impl ParamSpec {
    fn new(name: &str, kind: ParamKind, required: bool, doc: &str) -> Self {
        Self { name: name.into(), kind, required, doc: doc.into() }
    }
}

/// What kind of thing an action's target is: the safety policy's protected assets are
/// matched by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// An IP address.
    Ip,
    /// A user account.
    Account,
    /// A host name.
    Host,
    /// A file path.
    Path,
    /// Anything else (an entity name, a scope).
    Other,
}

/// What an action declares about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActionSpec {
    /// The id steps name (`block_ip`).
    pub id: String,
    /// One line on what it does.
    pub description: String,
    /// Its parameters.
    pub params: Vec<ParamSpec>,
    /// The parameter naming the target, and the target's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<(String, TargetKind)>,
    /// What it needs (`net.firewall`, `http.outbound`, `fs.quarantine`…).
    pub capabilities: Vec<String>,
    /// Running it twice with the same parameters has the effect of running it once.
    pub idempotent: bool,
    /// An approval of a step running it needs an approver other than the requester.
    pub sensitive: bool,
    /// The action that undoes it, where its effect is reversible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inverse: Option<String>,
    /// How long its effect lasts unless the step says otherwise (then the inverse runs).
    #[schemars(with = "Option<String>")]
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<Duration>,
}

impl ActionSpec {
    /// Checks `params` against the declaration: every required one present, every one
    /// declared, each of its type. Every problem is reported.
    pub fn validate(&self, params: &Map<String, Value>) -> Result<(), ActionError> {
        let mut problems = Vec::new();
        for spec in &self.params {
            match params.get(&spec.name) {
                None | Some(Value::Null) if spec.required => problems.push(format!("`{}` is required", spec.name)),
                None | Some(Value::Null) => {}
                Some(value) => {
                    if let Err(why) = check_kind(spec.kind, value) {
                        problems.push(format!("`{}` {why}", spec.name));
                    }
                }
            }
        }
        for name in params.keys() {
            if !self.params.iter().any(|p| &p.name == name) {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                problems.push(format!("`{name}` is not a parameter of {} (known: {})", self.id, known.join(", ")));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ActionError::InvalidParams(problems.join("; "))) }
    }

    /// The target named by `params`, if the action has one.
    pub fn target_of(&self, params: &Map<String, Value>) -> Option<String> {
        let (name, _) = self.target.as_ref()?;
        params.get(name).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Whether `value` is of `kind` (the message says what it must be, and what it was).
pub fn check_kind(kind: ParamKind, value: &Value) -> Result<(), String> {
    let text = value.as_str();
    let ok = match kind {
        ParamKind::String => text.is_some(),
        ParamKind::Ip => text.is_some_and(|s| s.parse::<IpAddr>().is_ok()),
        ParamKind::Duration => text.is_some_and(|s| humantime::parse_duration(s).is_ok()),
        ParamKind::Integer => value.is_i64() || value.is_u64() || text.is_some_and(|s| s.parse::<i64>().is_ok()),
        ParamKind::Number => value.is_number() || text.is_some_and(|s| s.parse::<f64>().is_ok()),
        ParamKind::Bool => value.is_boolean() || matches!(text, Some("true" | "false")),
        ParamKind::Path => text.is_some_and(|s| std::path::Path::new(s).is_absolute()),
    };
    if ok {
        Ok(())
    } else {
        let shown = match value {
            Value::String(s) => format!("\"{}\"", s.chars().take(80).collect::<String>()),
            other => other.to_string().chars().take(80).collect(),
        };
        Err(format!("must be {} (got {shown})", kind_name(kind)))
    }
}

fn kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::String => "a string",
        ParamKind::Ip => "an IP address",
        ParamKind::Duration => "a duration like 15m or 1h",
        ParamKind::Integer => "a whole number",
        ParamKind::Number => "a number",
        ParamKind::Bool => "true or false",
        ParamKind::Path => "an absolute path",
    }
}

/// Reads a string parameter.
pub fn param_str<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    params.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Reads a required string parameter.
pub fn required_str<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, ActionError> {
    param_str(params, name).ok_or_else(|| ActionError::InvalidParams(format!("`{name}` is required")))
}

/// Reads a boolean parameter (`true`, `"true"`).
pub fn param_bool(params: &Map<String, Value>, name: &str) -> Option<bool> {
    match params.get(name)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Reads a number parameter (`5`, `"5"`).
pub fn param_number(params: &Map<String, Value>, name: &str) -> Option<f64> {
    match params.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Everything an action execution knows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionContext {
    /// The playbook run.
    pub run_id: String,
    /// The step within it.
    pub step_id: String,
    /// The incident being contained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
    /// Stable for one step execution across retries and restarts: backends that can
    /// deduplicate use it.
    pub idempotency_key: String,
    /// Resolved parameters.
    pub params: Map<String, Value>,
    /// How long the effect should last (after policy), for reversible actions.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// When it runs (wall clock; the incident's time during replays).
    pub now: DateTime<Utc>,
    /// The incident, as JSON (for actions that record it).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub incident: Value,
}

impl ActionContext {
    /// A context for a one-off execution (expiry, tests).
    pub fn new(key: impl Into<String>, params: Map<String, Value>) -> Self {
        Self {
            run_id: String::new(),
            step_id: String::new(),
            incident_id: None,
            idempotency_key: key.into(),
            params,
            ttl: None,
            now: Utc::now(),
            incident: Value::Null,
        }
    }
}

/// What an execution did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outcome {
    /// The target acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What happened, for people.
    pub detail: String,
    /// What the rollback needs (a quarantine id, the backends that took a block).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// When the effect lapses (the inverse runs then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl Outcome {
    /// An outcome with a target and a detail.
    pub fn new(target: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { target: Some(target.into()), detail: detail.into(), data: Value::Null, expires_at: None }
    }
}

/// An action: native or WebAssembly, the runner cannot tell.
pub trait Action: Send + Sync + std::fmt::Debug {
    /// What it declares.
    fn spec(&self) -> &ActionSpec;

    /// Does it. Must not be called with parameters [`ActionSpec::validate`] refused.
    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>>;

    /// Undoes what `execute` did, given its outcome. Actions without an inverse say so.
    fn rollback<'a>(
        &'a self,
        ctx: &'a ActionContext,
        done: &'a Outcome,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        let _ = (ctx, done);
        let id = self.spec().id.clone();
        Box::pin(async move { Err(ActionError::NotReversible(id)) })
    }
}

/// Actions that come and go while Vigil runs (WebAssembly plugins): the registry asks
/// them for an id it does not hold itself.
pub trait ActionSource: Send + Sync + std::fmt::Debug {
    /// The action with `id`, in its current version.
    fn action(&self, id: &str) -> Option<Arc<dyn Action>>;
    /// Every action's declaration.
    fn specs(&self) -> Vec<ActionSpec>;
}

/// The actions steps can name, by id.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    actions: BTreeMap<String, Arc<dyn Action>>,
    dynamic: Option<Arc<dyn ActionSource>>,
}

impl Registry {
    /// Adds (or replaces) an action.
    pub fn insert(&mut self, action: Arc<dyn Action>) {
        self.actions.insert(action.spec().id.clone(), action);
    }

    /// Asks `source` for ids this registry does not hold (native actions win a name clash).
    pub fn with_source(mut self, source: Arc<dyn ActionSource>) -> Self {
        self.dynamic = Some(source);
        self
    }

    /// The action with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<dyn Action>> {
        self.actions.get(id).cloned().or_else(|| self.dynamic.as_ref()?.action(id))
    }

    /// Every action's declaration.
    pub fn specs(&self) -> Vec<ActionSpec> {
        let mut specs: Vec<ActionSpec> = self.actions.values().map(|a| a.spec().clone()).collect();
        if let Some(dynamic) = &self.dynamic {
            specs.extend(dynamic.specs().into_iter().filter(|s| !self.actions.contains_key(&s.id)));
        }
        specs
    }

    /// The native actions, built from their settings.
    pub fn native(config: &ActionsConfig, store: &Store, log: &Log) -> Result<Self, String> {
        let mut registry = Self::default();
        let blocker = Arc::new(block::Blocker::new(&config.block_ip, store)?);
        registry.insert(Arc::new(block::BlockIp::new(blocker.clone())));
        registry.insert(Arc::new(block::UnblockIp::new(blocker)));
        let (revoke, restore) = credentials::actions(&config.revoke_credentials)?;
        registry.insert(Arc::new(revoke));
        registry.insert(Arc::new(restore));
        let (isolate, release) = node::actions(&config.isolate_node)?;
        registry.insert(Arc::new(isolate));
        registry.insert(Arc::new(release));
        let vault = Arc::new(quarantine::Vault::new(&config.quarantine_data, store.path()));
        registry.insert(Arc::new(quarantine::QuarantineData::new(vault.clone())));
        registry.insert(Arc::new(quarantine::RestoreData::new(vault)));
        for action in controls::actions(store, &config.controls)? {
            registry.insert(Arc::new(action));
        }
        registry.insert(Arc::new(snapshot::AuditSnapshot::new(log.clone(), config.audit_snapshot.clone())));
        Ok(registry)
    }
}

/// Settings of the native actions and the safety policy (`[actions]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    /// `block_ip` / `unblock_ip` backends.
    pub block_ip: block::BlockConfig,
    /// The identity provider `revoke_credentials` calls.
    pub revoke_credentials: credentials::CredentialsConfig,
    /// How `isolate_node` / `release_node` reach the node.
    pub isolate_node: node::NodeConfig,
    /// Where `quarantine_data` keeps files, and which files it may take.
    pub quarantine_data: quarantine::QuarantineConfig,
    /// Where `read_only_mode`, `rate_limit_adjust` and `enhance_logging` announce changes.
    pub controls: controls::ControlsConfig,
    /// Where `audit_snapshot` writes evidence bundles.
    pub audit_snapshot: snapshot::SnapshotConfig,
    /// Protected assets, budgets, rate limits, repeat offenders.
    pub policy: PolicyConfig,
    /// Publish the audit trail to NATS JetStream.
    pub audit_nats: Option<audit::AuditNatsConfig>,
}

impl ActionsConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        errors.extend(self.block_ip.validate("actions.block_ip"));
        errors.extend(self.revoke_credentials.validate("actions.revoke_credentials"));
        errors.extend(self.isolate_node.validate("actions.isolate_node"));
        errors.extend(self.controls.validate("actions.controls"));
        errors.extend(self.policy.validate("actions.policy"));
        errors
    }
}

/// A string template over action parameters (`{{ user }}`), rendered with minijinja; a
/// missing parameter renders as empty.
#[derive(Debug)]
pub struct ParamTemplate {
    env: minijinja::Environment<'static>,
}

impl ParamTemplate {
    /// Compiles `source`; the error says where it is wrong.
    pub fn new(source: &str) -> Result<Self, String> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env.add_template_owned("t", source.to_owned()).map_err(|e| e.to_string())?;
        Ok(Self { env })
    }

    /// Renders with `params` (and `key`, the idempotency key).
    pub fn render(&self, ctx: &ActionContext) -> Result<String, ActionError> {
        let template = self.env.get_template("t").map_err(|e| ActionError::Failed(e.to_string()))?;
        let mut values = ctx.params.clone();
        values.insert("idempotency_key".into(), Value::String(ctx.idempotency_key.clone()));
        values.insert("incident_id".into(), ctx.incident_id.clone().map_or(Value::Null, Value::String));
        template.render(Value::Object(values)).map_err(|e| ActionError::Failed(format!("template: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ActionSpec {
        ActionSpec {
            id: "t".into(),
            description: String::new(),
            params: vec![
                ParamSpec::new("ip", ParamKind::Ip, true, ""),
                ParamSpec::new("ttl", ParamKind::Duration, false, ""),
                ParamSpec::new("n", ParamKind::Integer, false, ""),
            ],
            target: Some(("ip".into(), TargetKind::Ip)),
            capabilities: Vec::new(),
            idempotent: true,
            sensitive: false,
            inverse: None,
            default_ttl: None,
        }
    }

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn parameters_are_checked_against_the_declaration() {
        let spec = spec();
        assert!(spec.validate(&params(serde_json::json!({"ip": "10.0.0.1", "ttl": "15m", "n": 3}))).is_ok());
        let err = spec
            .validate(&params(serde_json::json!({"ttl": "soon", "n": "x", "extra": 1})))
            .expect_err("invalid")
            .to_string();
        for part in ["`ip` is required", "`ttl` must be a duration", "`n` must be a whole number", "`extra` is not"] {
            assert!(err.contains(part), "{part} missing in {err}");
        }
        let err = spec.validate(&params(serde_json::json!({"ip": "999.1.1.1"}))).expect_err("bad ip").to_string();
        assert!(err.contains("must be an IP address (got \"999.1.1.1\")"), "{err}");
        assert_eq!(spec.target_of(&params(serde_json::json!({"ip": "10.0.0.1"}))).as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn templates_render_missing_parameters_as_empty() {
        let t = ParamTemplate::new("/users/{{ user }}/{{ nope }}?k={{ idempotency_key }}").expect("template");
        let ctx = ActionContext::new("k1", params(serde_json::json!({"user": "alice"})));
        assert_eq!(t.render(&ctx).expect("render"), "/users/alice/?k=k1");
        assert!(ParamTemplate::new("{{ user").is_err());
    }
}
