//! `revoke_credentials` / `restore_credentials`: invalidate sessions, disable an account or
//! rotate keys through the identity provider's HTTP API — any provider, since the URL and
//! body are templates over the parameters (`{{ user }}`, `{{ mode }}`). Disabling and
//! session revocation are undone by `restore_credentials` when `restore_url` is set; a key
//! rotation cannot be undone.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::webhook::{Webhook, WebhookConfig};
use super::{
    Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec, ParamTemplate, TargetKind,
    param_str, required_str,
};
use crate::telemetry::Secret;

/// The modes of `revoke_credentials`.
pub const MODES: [&str; 3] = ["sessions", "disable", "rotate_keys"];

/// Settings (`[actions.revoke_credentials]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// URL template (`https://idp.example/api/users/{{ user }}/{{ mode }}`).
    pub url: Option<String>,
    /// Request body template (JSON); default `{"user": ..., "mode": ..., "incident_id": ...}`.
    pub body: Option<String>,
    /// URL template of the undo call; without it, revocations are not reversible.
    pub restore_url: Option<String>,
    /// Body template of the undo call.
    pub restore_body: Option<String>,
    /// Headers (`Authorization = "Bearer ${IDP_TOKEN}"`).
    pub headers: BTreeMap<String, Secret>,
    /// HMAC key for `X-Vigil-Signature`.
    pub signing_secret: Option<Secret>,
    /// Longest a call may take.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

impl CredentialsConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (name, template) in [
            ("url", &self.url),
            ("body", &self.body),
            ("restore_url", &self.restore_url),
            ("restore_body", &self.restore_body),
        ] {
            if let Some(t) = template
                && let Err(e) = ParamTemplate::new(t)
            {
                errors.push((format!("{path}.{name}"), e));
            }
        }
        errors
    }
}

#[derive(Debug)]
struct Idp {
    webhook: Webhook,
    url: Option<ParamTemplate>,
    body: Option<ParamTemplate>,
    restore_url: Option<ParamTemplate>,
    restore_body: Option<ParamTemplate>,
}

impl Idp {
    async fn call(
        &self,
        ctx: &ActionContext,
        url: Option<&ParamTemplate>,
        body: Option<&ParamTemplate>,
        what: &str,
    ) -> Result<Outcome, ActionError> {
        let user = required_str(&ctx.params, "user")?;
        let mode = param_str(&ctx.params, "mode").unwrap_or("disable");
        if !MODES.contains(&mode) {
            return Err(ActionError::InvalidParams(format!(
                "`mode` must be one of {} (got \"{mode}\")",
                MODES.join(", ")
            )));
        }
        let url = url.ok_or_else(|| {
            ActionError::Failed("no identity provider configured (actions.revoke_credentials.url)".into())
        })?;
        let mut with_mode = ctx.clone();
        with_mode.params.insert("mode".into(), mode.into());
        let url = url.render(&with_mode)?;
        let bytes = match body {
            Some(t) => t.render(&with_mode)?.into_bytes(),
            None => serde_json::to_vec(&json!({ "user": user, "mode": mode, "incident_id": ctx.incident_id }))
                .map_err(|e| ActionError::Failed(e.to_string()))?,
        };
        self.webhook.send(reqwest::Method::POST, &url, bytes, &ctx.idempotency_key).await?;
        let mut outcome = Outcome::new(user, format!("{what} for {user} ({mode})"));
        outcome.data = json!({ "mode": mode });
        Ok(outcome)
    }
}

/// The two actions over one identity provider.
pub fn actions(config: &CredentialsConfig) -> Result<(RevokeCredentials, RestoreCredentials), String> {
    let compile = |t: &Option<String>| t.as_deref().map(ParamTemplate::new).transpose();
    let webhook = Webhook::new(WebhookConfig {
        url: Secret::new(""),
        headers: config.headers.clone(),
        signing_secret: config.signing_secret.clone(),
        timeout: config.timeout.unwrap_or(Duration::from_secs(10)),
    })?;
    let idp = std::sync::Arc::new(Idp {
        webhook,
        url: compile(&config.url)?,
        body: compile(&config.body)?,
        restore_url: compile(&config.restore_url)?,
        restore_body: compile(&config.restore_body)?,
    });
    let params = |doc: &str| {
        vec![
            ParamSpec::new("user", ParamKind::String, true, doc),
            ParamSpec::new("mode", ParamKind::String, false, "sessions | disable | rotate_keys (default disable)"),
            ParamSpec::new("reason", ParamKind::String, false, "recorded with the call"),
        ]
    };
    let reversible = idp.restore_url.is_some();
    let revoke = RevokeCredentials {
        spec: ActionSpec {
            id: "revoke_credentials".into(),
            description: "Revoke sessions, disable an account or rotate keys at the identity provider.".into(),
            params: params("the account"),
            target: Some(("user".into(), TargetKind::Account)),
            capabilities: vec!["http.outbound".into(), "identity.write".into()],
            idempotent: true,
            sensitive: true,
            inverse: reversible.then(|| "restore_credentials".into()),
            default_ttl: None,
        },
        idp: idp.clone(),
    };
    let restore = RestoreCredentials {
        spec: ActionSpec {
            id: "restore_credentials".into(),
            description: "Re-enable an account revoke_credentials disabled.".into(),
            params: params("the account"),
            target: Some(("user".into(), TargetKind::Account)),
            capabilities: vec!["http.outbound".into(), "identity.write".into()],
            idempotent: true,
            sensitive: true,
            inverse: None,
            default_ttl: None,
        },
        idp,
    };
    Ok((revoke, restore))
}

/// `revoke_credentials`.
#[derive(Debug)]
pub struct RevokeCredentials {
    spec: ActionSpec,
    idp: std::sync::Arc<Idp>,
}

impl Action for RevokeCredentials {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.idp.call(ctx, self.idp.url.as_ref(), self.idp.body.as_ref(), "credentials revoked"))
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a ActionContext,
        done: &'a Outcome,
    ) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            if self.idp.restore_url.is_none() || done.data["mode"] == "rotate_keys" {
                return Err(ActionError::NotReversible(self.spec.id.clone()));
            }
            self.idp
                .call(ctx, self.idp.restore_url.as_ref(), self.idp.restore_body.as_ref(), "credentials restored")
                .await
        })
    }
}

/// `restore_credentials`.
#[derive(Debug)]
pub struct RestoreCredentials {
    spec: ActionSpec,
    idp: std::sync::Arc<Idp>,
}

impl Action for RestoreCredentials {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.idp.call(
            ctx,
            self.idp.restore_url.as_ref(),
            self.idp.restore_body.as_ref(),
            "credentials restored",
        ))
    }
}
