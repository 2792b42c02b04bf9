//! Plugins behind the traits native code implements: a wasm action is an [`Action`], a
//! wasm transform a [`Transform`], a wasm decoder a [`RecordDecoder`]; rule functions are
//! reached through [`PluginHost::call`](super::PluginHost::call) from the rule engine.

use serde_json::Value;

use super::runtime::wit;
use super::{CallError, Kind, PluginFailure, PluginHost};
use futures_util::future::BoxFuture;

use crate::actions::{Action, ActionContext, ActionError, ActionSpec, Outcome, ParamSpec};
use crate::event::{DecodeLimits, SecurityEvent, decode_event};
use crate::source::decode::RecordDecoder;
use crate::transform::{Input, Output, Transform, TransformError};

/// An action plugin as an [`Action`]: the playbook runner cannot tell it from a native
/// one. Each call runs the version loaded at that moment.
#[derive(Debug)]
pub struct WasmAction {
    spec: ActionSpec,
    host: PluginHost,
}

impl WasmAction {
    /// The action of the loaded plugin `name`, or `None` if it is not a loaded action.
    pub fn new(host: &PluginHost, name: &str) -> Option<Self> {
        let plugin = host.get(name)?;
        let m = plugin.manifest();
        if m.kind != Kind::Action {
            return None;
        }
        let params = m
            .params
            .iter()
            .map(|(name, p)| ParamSpec {
                name: name.clone(),
                kind: p.kind,
                required: p.required,
                doc: p.description.clone(),
            })
            .collect();
        let mut capabilities = vec![format!("plugin.{}", m.name)];
        if m.capabilities.http.is_some() {
            capabilities.push("http.outbound".into());
        }
        let spec = ActionSpec {
            id: m.name.clone(),
            description: if m.description.is_empty() {
                format!("WebAssembly plugin {} {}", m.name, m.version)
            } else {
                m.description.clone()
            },
            params,
            target: None,
            capabilities,
            idempotent: m.idempotent,
            sensitive: false,
            inverse: None,
            default_ttl: None,
        };
        Some(Self { spec, host: host.clone() })
    }
}

/// The action context as the WIT record.
pub fn wit_context(ctx: &ActionContext, dry_run: bool) -> wit::ActionContext {
    let incident = ctx.incident.as_object().map(|i| {
        let text = |key: &str| i.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        wit::Incident {
            id: ctx.incident_id.clone().unwrap_or_else(|| text("id")),
            rule_id: text("rule_id"),
            title: text("title"),
            priority: text("priority"),
            dedup_key: text("dedup_key"),
            json: ctx.incident.to_string(),
        }
    });
    wit::ActionContext {
        run_id: ctx.run_id.clone(),
        step_id: ctx.step_id.clone(),
        idempotency_key: ctx.idempotency_key.clone(),
        incident,
        params: Value::Object(ctx.params.clone()).to_string(),
        dry_run,
        now_ms: ctx.now.timestamp_millis(),
    }
}

impl Action for WasmAction {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            let outcome = self.host.execute(&self.spec.id, wit_context(ctx, false)).await.map_err(action_error)?;
            Ok(native_outcome(outcome))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a ActionContext,
        done: &'a Outcome,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            let done = wit::Outcome {
                target: done.target.clone(),
                detail: done.detail.clone(),
                data: (!done.data.is_null()).then(|| done.data.to_string()),
            };
            match self.host.rollback(&self.spec.id, wit_context(ctx, false), done).await {
                Ok(outcome) => Ok(native_outcome(outcome)),
                Err(CallError::Plugin(PluginFailure::Unsupported)) => {
                    Err(ActionError::NotReversible(self.spec.id.clone()))
                }
                Err(e) => Err(action_error(e)),
            }
        })
    }
}

fn native_outcome(outcome: wit::Outcome) -> Outcome {
    Outcome {
        target: outcome.target,
        detail: outcome.detail,
        data: outcome.data.and_then(|d| serde_json::from_str(&d).ok()).unwrap_or(Value::Null),
        expires_at: None,
    }
}

/// A failed call as the runner understands it: transient failures are retried, the rest
/// fail the step.
fn action_error(e: CallError) -> ActionError {
    match e {
        CallError::Plugin(PluginFailure::Retryable(m)) => ActionError::Retryable(m),
        CallError::Plugin(PluginFailure::InvalidInput(m)) => ActionError::InvalidParams(m),
        e @ (CallError::Busy(_) | CallError::NotLoaded(_) | CallError::Host(_)) => {
            ActionError::Retryable(e.to_string())
        }
        other => ActionError::Failed(format!("plugin {other}")),
    }
}

/// A transform plugin as a [`Transform`] (events only; alerts and incidents are refused
/// with a reason).
#[derive(Debug)]
pub struct WasmTransform {
    name: String,
    host: PluginHost,
}

impl WasmTransform {
    /// The transform of plugin `name` (resolved at each call, so reloads apply).
    pub fn new(host: &PluginHost, name: &str) -> Self {
        Self { name: name.to_owned(), host: host.clone() }
    }
}

impl Transform for WasmTransform {
    fn name(&self) -> &'static str {
        "plugin"
    }

    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError> {
        let fail = |reason: String| TransformError { format: "plugin", reason };
        match input {
            Input::Event(event) => self
                .host
                .transform(&self.name, event)
                .map(Output::Text)
                .map_err(|e| fail(format!("plugin `{}` {e}", self.name))),
            Input::Finding(_) => {
                Err(fail(format!("plugin `{}` transforms events, not alerts or incidents", self.name)))
            }
        }
    }
}

/// The loaded action plugins, for the action registry: a plugin loaded while Vigil runs is
/// a step's action at once, and each call runs the version current at that moment.
impl crate::actions::ActionSource for PluginHost {
    fn action(&self, id: &str) -> Option<std::sync::Arc<dyn Action>> {
        WasmAction::new(self, id).map(|a| std::sync::Arc::new(a) as std::sync::Arc<dyn Action>)
    }

    fn specs(&self) -> Vec<ActionSpec> {
        self.names(Kind::Action).iter().filter_map(|name| WasmAction::new(self, name)).map(|a| a.spec).collect()
    }
}

/// A decode plugin as a [`RecordDecoder`]: the input format `plugin:NAME`. It holds the
/// host weakly (the host hands these out and keeps them in its decoder table); each call
/// runs the version loaded at that moment, in one of the plugin's call slots.
#[derive(Debug)]
pub struct WasmDecoder {
    host: std::sync::Weak<super::Inner>,
    name: String,
}

impl WasmDecoder {
    /// The decoder of plugin `name` of `host`.
    pub(super) fn new(host: std::sync::Weak<super::Inner>, name: &str) -> Self {
        Self { host, name: name.to_owned() }
    }
}

impl RecordDecoder for WasmDecoder {
    fn decode(&self, record: &[u8]) -> Result<Vec<SecurityEvent>, String> {
        let host = PluginHost::upgrade(&self.host).ok_or("the plugin host has stopped")?;
        let texts = host.decode(&self.name, record).map_err(|e| format!("plugin `{}`: {e}", self.name))?;
        // Each event is checked like any ingested record: schema, size, depth.
        let now = chrono::Utc::now();
        texts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                decode_event(text.as_bytes(), &DecodeLimits::default(), now)
                    .map_err(|e| format!("plugin `{}`: event {} of the record: {e}", self.name, i + 1))
            })
            .collect()
    }
}
