//! `notify`: page or message one alert channel about the incident, through the same router
//! as a rule's `notify` list (the channel sink sends it as a trigger of the incident; a
//! paging channel deduplicates it against an open page of the same incident).

use futures_util::future::BoxFuture;

use crate::actions::{Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec, TargetKind};
use crate::incident::worker::{Action as IncidentAction, WorkerHandle};

/// `notify`.
#[derive(Debug)]
pub struct Notify {
    worker: Option<WorkerHandle>,
    channels: Vec<String>,
    spec: ActionSpec,
}

impl Notify {
    /// The action over the detection worker (none: planning only), knowing the configured
    /// channel names.
    pub fn new(worker: Option<WorkerHandle>, channels: Vec<String>) -> Self {
        let spec = ActionSpec {
            id: "notify".into(),
            description:
                "Notify an alert channel (PagerDuty, Opsgenie, Slack, Teams, email, webhook) about the incident.".into(),
            params: vec![
                ParamSpec {
                    name: "channel".into(),
                    kind: ParamKind::String,
                    required: true,
                    doc: "a channel sink's name".into(),
                },
                ParamSpec {
                    name: "message".into(),
                    kind: ParamKind::String,
                    required: false,
                    doc: "recorded on the timeline".into(),
                },
            ],
            target: Some(("channel".into(), TargetKind::Other)),
            capabilities: vec!["notify".into()],
            idempotent: true,
            sensitive: false,
            inverse: None,
            default_ttl: None,
        };
        Self { worker, channels, spec }
    }
}

impl Action for Notify {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            let channel = crate::actions::required_str(&ctx.params, "channel")?;
            if !self.channels.iter().any(|c| c == channel) {
                return Err(ActionError::Failed(format!(
                    "no channel `{channel}` (channels: {})",
                    if self.channels.is_empty() { "none configured".into() } else { self.channels.join(", ") }
                )));
            }
            let incident = ctx
                .incident_id
                .as_deref()
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| ActionError::InvalidParams("notify needs an incident".into()))?;
            let message = crate::actions::param_str(&ctx.params, "message").map(str::to_owned);
            let action = IncidentAction::Notify { channel: channel.to_owned(), message };
            let worker = self
                .worker
                .as_ref()
                .ok_or_else(|| ActionError::Failed("notify runs only in a running Vigil".into()))?;
            worker
                .incident(incident, action, "playbook")
                .await
                .map_err(|e| ActionError::Retryable(format!("recording the notification: {e}")))?;
            Ok(Outcome::new(channel, format!("notified {channel}")))
        })
    }
}
