//! What the webhook chat channels (`slack`, `teams`) share: the settings, and a sink that
//! posts one message per state change of an incident, built by the channel's own builder
//! or by the user's template.

use serde::{Deserialize, Serialize};

use super::incident::{self, MessageTemplate};
use crate::export::http::{self, HttpClientConfig, validate_url};
use crate::export::{Item, SendReport, Sink, SinkError};
use crate::incident::IncidentChange;
use crate::telemetry::Secret;

/// Settings of a `slack` or `teams` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// The webhook URL (a secret: it is the credential).
    pub webhook_url: Secret,
    /// Link to an incident; `{id}` becomes the incident id.
    #[serde(default)]
    pub incident_url: Option<String>,
    /// 0: posted when an incident opens; n: when nobody acknowledged it within n response
    /// times (`[incidents.escalation]`).
    #[serde(default)]
    pub escalation_level: u8,
    /// A message template file overriding the built-in message (see `MessageTemplate`).
    #[serde(default)]
    pub template: Option<std::path::PathBuf>,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

impl ChatConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> =
            validate_url(self.webhook_url.expose(), format!("{prefix}.webhook_url")).into_iter().collect();
        errors.extend(incident::validate_template(self.template.as_deref(), format!("{prefix}.template")));
        errors
    }
}

/// Builds a channel's message for a change (change, incident URL, escalation level).
pub type Builder = fn(&IncidentChange, Option<&str>, u8) -> Option<serde_json::Value>;

/// A chat channel sink.
#[derive(Debug)]
pub struct ChatSink {
    config: ChatConfig,
    client: reqwest::Client,
    template: Option<MessageTemplate>,
    builder: Builder,
}

impl ChatSink {
    /// A sink posting what `builder` (or the configured template) makes; fails if the TLS
    /// files or the template cannot be read.
    pub fn new(config: ChatConfig, builder: Builder) -> Result<Self, SinkError> {
        let template =
            config.template.as_deref().map(MessageTemplate::load).transpose().map_err(SinkError::permanent)?;
        Ok(Self { client: config.http.build()?, config, template, builder })
    }

    fn message(&self, change: &IncidentChange) -> Result<Option<serde_json::Value>, SinkError> {
        let (url, level) = (self.config.incident_url.as_deref(), self.config.escalation_level);
        match &self.template {
            Some(t) => incident::render_with(t, change, level, url),
            None => Ok((self.builder)(change, url, level)),
        }
    }
}

impl Sink for ChatSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        Ok(incident::send_in_order(batch, incident::CONCURRENCY, |change| async move {
            match self.message(&change)? {
                Some(body) => {
                    http::send(self.client.post(self.config.webhook_url.expose()).json(&body)).await.map(drop)
                }
                None => Ok(()),
            }
        })
        .await)
    }

    fn incident_channel(&self) -> bool {
        true
    }
}
