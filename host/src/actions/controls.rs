//! Controls: switches Vigil holds for the protected systems to honour, served at
//! `GET /v1/controls` and announced to an optional webhook on every change.
//!
//! - `read_only_mode`: `scope` (default `global`) goes read-only, or back.
//! - `rate_limit_adjust`: a request-rate limit (`limit`, per second) for a `target`.
//! - `enhance_logging`: raise capture (`level`, default `debug`) for an `entity` for a while.
//!
//! Each takes an optional `ttl`; an expired control is no longer served, and rolling one
//! back removes it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::webhook::{Webhook, WebhookConfig};
use super::{
    Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec, TargetKind, param_bool,
    param_number, param_str, required_str,
};
use crate::store::{Cf, Store, Table};

/// Settings (`[actions.controls]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ControlsConfig {
    /// Told `{"control": ..., "scope": ..., "value": ..., "expires_at": ...}` on each change.
    pub webhook: Option<WebhookConfig>,
}

impl ControlsConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        self.webhook.as_ref().map(|w| w.validate(&format!("{path}.webhook"))).unwrap_or_default()
    }
}

/// One control in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Control {
    /// `read_only_mode`, `rate_limit_adjust` or `enhance_logging`.
    pub control: String,
    /// What it applies to.
    pub scope: String,
    /// Its value (`{"enabled": true}`, `{"limit": 5}`, `{"level": "debug"}`).
    pub value: Value,
    /// When it was set.
    pub set_at: DateTime<Utc>,
    /// When it lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The incident behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
}

fn table(store: &Store) -> Table<String, Control> {
    Table::new(store, Cf::State, b"control/")
}

/// The controls in force at `now`.
pub fn active(store: &Store, now: DateTime<Utc>) -> crate::store::Result<Vec<Control>> {
    Ok(table(store)
        .scan(None, usize::MAX)?
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.expires_at.is_none_or(|t| t > now))
        .collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ReadOnly,
    RateLimit,
    EnhanceLogging,
}

/// One of the three control actions.
#[derive(Debug)]
pub struct ControlAction {
    kind: Kind,
    spec: ActionSpec,
    table: Table<String, Control>,
    webhook: Option<Webhook>,
}

/// The three control actions.
pub fn actions(store: &Store, config: &ControlsConfig) -> Result<Vec<ControlAction>, String> {
    let webhook = config.webhook.clone().map(Webhook::new).transpose()?;
    let ttl = ParamSpec::new("ttl", ParamKind::Duration, false, "how long it stays in force");
    let make =
        |kind: Kind, id: &str, description: &str, params: Vec<ParamSpec>, target: &str, default_ttl: Option<u64>| {
            ControlAction {
                kind,
                spec: ActionSpec {
                    id: id.into(),
                    description: description.into(),
                    params,
                    target: Some((target.into(), TargetKind::Other)),
                    capabilities: vec!["control.write".into()],
                    idempotent: true,
                    sensitive: kind == Kind::ReadOnly,
                    inverse: Some(id.into()),
                    default_ttl: default_ttl.map(Duration::from_secs),
                },
                table: table(store),
                webhook: webhook.clone(),
            }
        };
    Ok(vec![
        make(
            Kind::ReadOnly,
            "read_only_mode",
            "Put a system (scope) into read-only mode, or take it out.",
            vec![
                ParamSpec::new("scope", ParamKind::String, false, "what goes read-only (default global)"),
                ParamSpec::new("enabled", ParamKind::Bool, false, "on (default) or off"),
                ttl.clone(),
            ],
            "scope",
            None,
        ),
        make(
            Kind::RateLimit,
            "rate_limit_adjust",
            "Set a request-rate limit for a target.",
            vec![
                ParamSpec::new("target", ParamKind::String, true, "the entity (address, user, API key id)"),
                ParamSpec::new("limit", ParamKind::Number, true, "requests per second"),
                ttl.clone(),
            ],
            "target",
            Some(3600),
        ),
        make(
            Kind::EnhanceLogging,
            "enhance_logging",
            "Raise log capture for an entity for a while.",
            vec![
                ParamSpec::new("entity", ParamKind::String, true, "the host, user or address"),
                ParamSpec::new("level", ParamKind::String, false, "capture level (default debug)"),
                ttl,
            ],
            "entity",
            Some(1800),
        ),
    ])
}

impl ControlAction {
    fn scope_and_value(&self, ctx: &ActionContext) -> Result<(String, Value), ActionError> {
        Ok(match self.kind {
            Kind::ReadOnly => (
                param_str(&ctx.params, "scope").unwrap_or("global").to_owned(),
                json!({ "enabled": param_bool(&ctx.params, "enabled").unwrap_or(true) }),
            ),
            Kind::RateLimit => {
                let limit = param_number(&ctx.params, "limit")
                    .filter(|l| *l >= 0.0)
                    .ok_or_else(|| ActionError::InvalidParams("`limit` must be a number ≥ 0".into()))?;
                (required_str(&ctx.params, "target")?.to_owned(), json!({ "limit": limit }))
            }
            Kind::EnhanceLogging => (
                required_str(&ctx.params, "entity")?.to_owned(),
                json!({ "level": param_str(&ctx.params, "level").unwrap_or("debug") }),
            ),
        })
    }

    async fn announce(&self, ctx: &ActionContext, body: Value) -> Result<(), ActionError> {
        match &self.webhook {
            Some(w) => w.post(&body, &ctx.idempotency_key).await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn write(&self, key: String, control: Option<Control>) -> Result<(), ActionError> {
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || match control {
            Some(c) => table.put(&key, &c),
            None => table.delete(&key),
        })
        .await
        .map_err(|e| ActionError::Failed(e.to_string()))?
        .map_err(|e| ActionError::Retryable(format!("control store: {e}")))
    }

    async fn set(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let (scope, value) = self.scope_and_value(ctx)?;
        let key = format!("{}/{scope}", self.spec.id);
        let ttl = ctx.ttl.or(self.spec.default_ttl);
        let expires_at = ttl.and_then(|t| chrono::Duration::from_std(t).ok()).map(|t| ctx.now + t);
        let off = self.kind == Kind::ReadOnly && value["enabled"] == false;
        let control = Control {
            control: self.spec.id.clone(),
            scope: scope.clone(),
            value: value.clone(),
            set_at: ctx.now,
            expires_at,
            incident_id: ctx.incident_id.clone(),
        };
        self.write(key, (!off).then(|| control.clone())).await?;
        self.announce(
            ctx,
            json!({ "control": control.control, "scope": scope, "value": value, "expires_at": expires_at }),
        )
        .await?;
        Ok(Outcome {
            target: Some(scope.clone()),
            detail: format!("{} {scope} = {value}", self.spec.id),
            data: value,
            expires_at,
        })
    }

    async fn clear(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let (scope, _) = self.scope_and_value(ctx)?;
        self.write(format!("{}/{scope}", self.spec.id), None).await?;
        self.announce(ctx, json!({ "control": self.spec.id, "scope": scope, "value": null })).await?;
        Ok(Outcome::new(scope.clone(), format!("{} {scope} cleared", self.spec.id)))
    }
}

impl Action for ControlAction {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.set(ctx))
    }

    fn rollback<'a>(&'a self, ctx: &'a ActionContext, _: &'a Outcome) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.clear(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    #[tokio::test]
    async fn controls_are_served_until_they_lapse_or_are_rolled_back() {
        let (_dir, store) = temp_store();
        let all = actions(&store, &ControlsConfig::default()).expect("actions");
        let by_id = |id: &str| all.iter().find(|a| a.spec.id == id).expect("action");
        let params = |v: Value| v.as_object().cloned().expect("object");
        let ro = ActionContext::new("k", params(json!({})));
        let done = by_id("read_only_mode").execute(&ro).await.expect("read-only");
        assert_eq!(done.target.as_deref(), Some("global"));
        let mut rl = ActionContext::new("k", params(json!({ "target": "10.0.0.9", "limit": "5" })));
        rl.ttl = Some(Duration::from_secs(60));
        by_id("rate_limit_adjust").execute(&rl).await.expect("rate limit");
        let now = Utc::now();
        let names = |at| {
            active(&store, at)
                .expect("active")
                .into_iter()
                .map(|c| format!("{}/{}={}", c.control, c.scope, c.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(now),
            ["rate_limit_adjust/10.0.0.9={\"limit\":5.0}", "read_only_mode/global={\"enabled\":true}"]
        );
        assert_eq!(names(now + chrono::Duration::minutes(2)), ["read_only_mode/global={\"enabled\":true}"]);
        by_id("read_only_mode").rollback(&ro, &done).await.expect("rollback");
        assert_eq!(names(now).len(), 1);
        let bad = ActionContext::new("k", params(json!({ "target": "x", "limit": -1 })));
        assert!(matches!(by_id("rate_limit_adjust").execute(&bad).await, Err(ActionError::InvalidParams(_))));
    }
}
