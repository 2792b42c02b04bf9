//! `isolate_node` / `release_node`: cut a host off the network (or hand it to the EDR that
//! does) by running a command or calling a webhook. Commands run without a shell; each
//! argument is a template over the parameters (`["/usr/local/sbin/isolate", "{{ host }}"]`),
//! and host names are checked so they cannot smuggle options or paths into it.
//!
//! Or it publishes to a NATS subject (`edr.isolate.{{ host }}`) that an agent fleet listens
//! on, optionally waiting for an agent's reply.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::nats::{NatsTarget, Publisher};
use super::webhook::{Webhook, WebhookConfig};
use super::{Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec, ParamTemplate, TargetKind};

/// Settings (`[actions.isolate_node]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Command that isolates (`["/usr/local/sbin/isolate", "{{ host }}"]`).
    pub command: Vec<String>,
    /// Command that releases.
    pub release_command: Vec<String>,
    /// Webhook told `{"action": "isolate_node" | "release_node", "host": ...}`.
    pub webhook: Option<WebhookConfig>,
    /// NATS subject told the same.
    pub nats: Option<NatsTarget>,
    /// Longest a command may run.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            release_command: Vec::new(),
            webhook: None,
            nats: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl NodeConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (name, command) in [("command", &self.command), ("release_command", &self.release_command)] {
            for (i, arg) in command.iter().enumerate() {
                if let Err(e) = ParamTemplate::new(arg) {
                    errors.push((format!("{path}.{name}.{i}"), e));
                }
            }
        }
        if !self.command.is_empty() && self.release_command.is_empty() {
            errors.push((
                format!("{path}.release_command"),
                "required with `command`, so isolation can be undone".into(),
            ));
        }
        if let Some(webhook) = &self.webhook {
            errors.extend(webhook.validate(&format!("{path}.webhook")));
        }
        if let Some(nats) = &self.nats {
            errors.extend(nats.validate(&format!("{path}.nats")));
        }
        errors
    }
}

#[derive(Debug)]
struct Backends {
    command: Vec<ParamTemplate>,
    release_command: Vec<ParamTemplate>,
    webhook: Option<Webhook>,
    nats: Option<(Publisher, ParamTemplate, ParamTemplate)>,
    timeout: Duration,
}

/// Whether `host` is a plain host name or address: no leading `-`, no `/`, no spaces.
fn check_host(host: &str) -> Result<(), ActionError> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with('-')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok { Ok(()) } else { Err(ActionError::InvalidParams(format!("`host` is not a host name: \"{host}\""))) }
}

impl Backends {
    async fn run(&self, ctx: &ActionContext, release: bool) -> Result<Outcome, ActionError> {
        let host = super::required_str(&ctx.params, "host")?;
        check_host(host)?;
        let (command, what) =
            if release { (&self.release_command, "release_node") } else { (&self.command, "isolate_node") };
        if command.is_empty() && self.webhook.is_none() && self.nats.is_none() {
            return Err(ActionError::Failed("no backend configured (actions.isolate_node)".into()));
        }
        let mut used = Vec::new();
        if !command.is_empty() {
            let args: Vec<String> = command.iter().map(|t| t.render(ctx)).collect::<Result<_, _>>()?;
            let child = tokio::process::Command::new(&args[0]).args(&args[1..]).kill_on_drop(true).output();
            let output = tokio::time::timeout(self.timeout, child)
                .await
                .map_err(|_| ActionError::Retryable(format!("{} did not finish within {:?}", args[0], self.timeout)))?
                .map_err(|e| ActionError::Failed(format!("cannot run {}: {e}", args[0])))?;
            if !output.status.success() {
                let err: String = String::from_utf8_lossy(&output.stderr).chars().take(300).collect();
                return Err(ActionError::Failed(format!("{} exited with {}: {}", args[0], output.status, err.trim())));
            }
            used.push("command");
        }
        let body = json!({
            "action": what, "host": host, "incident_id": ctx.incident_id,
            "reason": super::param_str(&ctx.params, "reason"), "idempotency_key": ctx.idempotency_key,
        });
        if let Some(webhook) = &self.webhook {
            webhook.post(&body, &ctx.idempotency_key).await?;
            used.push("webhook");
        }
        if let Some((publisher, isolate, release_subject)) = &self.nats {
            let subject = if release { release_subject } else { isolate }.render(ctx)?;
            publisher.send(subject, &body, &ctx.idempotency_key).await?;
            used.push("nats");
        }
        let verb = if release { "released" } else { "isolated" };
        Ok(Outcome::new(host, format!("{verb} {host} via {}", used.join(", "))))
    }
}

/// The two actions over one set of backends.
pub fn actions(config: &NodeConfig) -> Result<(IsolateNode, ReleaseNode), String> {
    let compile = |c: &[String]| c.iter().map(|a| ParamTemplate::new(a)).collect::<Result<Vec<_>, _>>();
    let backends = Arc::new(Backends {
        command: compile(&config.command)?,
        release_command: compile(&config.release_command)?,
        webhook: config.webhook.clone().map(Webhook::new).transpose()?,
        nats: match &config.nats {
            Some(target) => {
                let publisher = Publisher::new(target.clone());
                let isolate = ParamTemplate::new(publisher.subject(false))?;
                let release = ParamTemplate::new(publisher.subject(true))?;
                Some((publisher, isolate, release))
            }
            None => None,
        },
        timeout: config.timeout,
    });
    let spec = |id: &str, description: &str, inverse: Option<&str>| ActionSpec {
        id: id.into(),
        description: description.into(),
        params: vec![
            ParamSpec::new("host", ParamKind::String, true, "the host name or address"),
            ParamSpec::new("reason", ParamKind::String, false, "recorded with the call"),
        ],
        target: Some(("host".into(), TargetKind::Host)),
        capabilities: vec!["process.exec".into(), "http.outbound".into()],
        idempotent: true,
        sensitive: true,
        inverse: inverse.map(Into::into),
        default_ttl: None,
    };
    Ok((
        IsolateNode {
            spec: spec("isolate_node", "Cut a host off the network.", Some("release_node")),
            backends: backends.clone(),
        },
        ReleaseNode { spec: spec("release_node", "Put an isolated host back on the network.", None), backends },
    ))
}

/// `isolate_node`.
#[derive(Debug)]
pub struct IsolateNode {
    spec: ActionSpec,
    backends: Arc<Backends>,
}

impl Action for IsolateNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.backends.run(ctx, false))
    }

    fn rollback<'a>(&'a self, ctx: &'a ActionContext, _: &'a Outcome) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.backends.run(ctx, true))
    }
}

/// `release_node`.
#[derive(Debug)]
pub struct ReleaseNode {
    spec: ActionSpec,
    backends: Arc<Backends>,
}

impl Action for ReleaseNode {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(self.backends.run(ctx, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_run_with_templated_arguments_and_report_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("isolated");
        let config = NodeConfig {
            command: vec!["sh".into(), "-c".into(), format!("echo \"$0\" > {}", marker.display()), "{{ host }}".into()],
            release_command: vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
            ..NodeConfig::default()
        };
        assert!(config.validate("n").is_empty(), "{:?}", config.validate("n"));
        let (isolate, release) = actions(&config).expect("actions");
        let ctx = ActionContext::new("k", json!({ "host": "web-01" }).as_object().cloned().expect("object"));
        let done = isolate.execute(&ctx).await.expect("isolate");
        assert_eq!(done.detail, "isolated web-01 via command");
        assert_eq!(std::fs::read_to_string(&marker).expect("marker").trim(), "web-01");
        let err = release.execute(&ctx).await.expect_err("release fails");
        assert!(err.to_string().contains("exited with exit status: 3: nope"), "{err}");
        let evil = ActionContext::new("k", json!({ "host": "-rf /" }).as_object().cloned().expect("object"));
        assert!(matches!(isolate.execute(&evil).await, Err(ActionError::InvalidParams(_))));
    }
}
