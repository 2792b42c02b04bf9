//! The `opsgenie` sink: Opsgenie Alert API v2.
//!
//! An incident opens an alert whose `alias` is the incident id; acknowledging and closing
//! address it by alias (`identifierType=alias`), and Opsgenie deduplicates a create sent
//! twice on the alias. Priority: P0 → P1 … P4 → P5. With `heartbeat`, every health check
//! pings that Opsgenie heartbeat, so Opsgenie pages when Vigil itself goes quiet.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::incident::{self, Step};
use crate::event::Priority;
use crate::export::http::{self, HttpClientConfig, validate_url};
use crate::export::{Item, SendReport, Sink, SinkError};
use crate::telemetry::Secret;

/// Settings of an `opsgenie` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    /// An API integration's key (`Authorization: GenieKey …`).
    pub api_key: Secret,
    /// API base URL: `https://api.opsgenie.com`, or `https://api.eu.opsgenie.com`.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Tags added to every alert (the incident's tags are added too).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Responder teams, by name.
    #[serde(default)]
    pub teams: Vec<String>,
    /// A heartbeat to ping at every health check.
    #[serde(default)]
    pub heartbeat: Option<String>,
    /// Link to an incident; `{id}` becomes the incident id.
    #[serde(default)]
    pub incident_url: Option<String>,
    /// 0: paged when an incident opens; n: paged when nobody acknowledged it within n
    /// response times (`[incidents.escalation]`).
    #[serde(default)]
    pub escalation_level: u8,
    /// A message template file rendering the body of the alert created (see `MessageTemplate`).
    #[serde(default)]
    pub template: Option<std::path::PathBuf>,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

fn default_endpoint() -> String {
    "https://api.opsgenie.com".into()
}

impl OpsgenieConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> = validate_url(&self.endpoint, format!("{prefix}.endpoint")).into_iter().collect();
        errors.extend(incident::validate_template(self.template.as_deref(), format!("{prefix}.template")));
        if self.api_key.expose().is_empty() {
            errors.push((format!("{prefix}.api_key"), "must not be empty".into()));
        }
        if self.heartbeat.as_deref().is_some_and(|h| h.is_empty() || h.contains('/')) {
            errors.push((format!("{prefix}.heartbeat"), "must be a heartbeat name".into()));
        }
        errors
    }
}

/// The Opsgenie sink.
#[derive(Debug)]
pub struct OpsgenieSink {
    config: OpsgenieConfig,
    client: reqwest::Client,
    base: String,
    template: Option<incident::MessageTemplate>,
}

/// Opsgenie's priority for ours.
pub fn priority(p: Priority) -> &'static str {
    match p {
        Priority::P0 => "P1",
        Priority::P1 => "P2",
        Priority::P2 => "P3",
        Priority::P3 => "P4",
        Priority::P4 => "P5",
    }
}

impl OpsgenieSink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: OpsgenieConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let base = format!("{}/v2", config.endpoint.trim_end_matches('/'));
        let template = config
            .template
            .as_deref()
            .map(incident::MessageTemplate::load)
            .transpose()
            .map_err(SinkError::permanent)?;
        Ok(Self { config, client, base, template })
    }

    /// The request for a change: path under `/v2` and body, or `None`.
    pub fn request(&self, change: &crate::incident::IncidentChange) -> Option<(String, serde_json::Value)> {
        let i = &change.incident;
        let alias = i.id.to_string();
        let note = format!("Vigil: incident is {}", i.status.as_str());
        match incident::step(change, self.config.escalation_level) {
            Step::Trigger => {
                let mut tags = self.config.tags.clone();
                tags.extend(i.tags.iter().cloned());
                let mut details = json!({
                    "rule": i.rule_id.to_string(), "priority": i.priority.as_str(), "events": i.event_count.to_string(),
                    "ips": i.entities.ips.iter().cloned().collect::<Vec<_>>().join(","),
                    "users": i.entities.users.iter().cloned().collect::<Vec<_>>().join(","),
                });
                if let Some(link) = incident::link(self.config.incident_url.as_deref(), change) {
                    details["link"] = json!(link);
                }
                let body = json!({
                    "message": incident::summary(change).chars().take(130).collect::<String>(),
                    "alias": alias,
                    "description": format!("{}\n\n{} event(s), {} alert(s) since {}.", i.title, i.event_count, i.alert_count, i.first_seen.to_rfc3339()),
                    "priority": priority(i.priority),
                    "source": "Vigil",
                    "entity": i.entities.hosts.iter().next().or(i.entities.ips.iter().next()),
                    "tags": tags,
                    "details": details,
                    "responders": self.config.teams.iter().map(|t| json!({"type": "team", "name": t})).collect::<Vec<_>>(),
                });
                Some(("/alerts".into(), body))
            }
            Step::Acknowledge => Some((
                format!("/alerts/{alias}/acknowledge?identifierType=alias"),
                json!({"source": "Vigil", "note": note}),
            )),
            Step::Resolve => {
                Some((format!("/alerts/{alias}/close?identifierType=alias"), json!({"source": "Vigil", "note": note})))
            }
            Step::Status | Step::Skip => None,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, format!("GenieKey {}", self.config.api_key.expose()))
    }
}

impl Sink for OpsgenieSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        Ok(incident::send_in_order(batch, incident::CONCURRENCY, |change| async move {
            match self.request(&change) {
                Some((path, mut body)) => {
                    if let (Some(t), "/alerts") = (&self.template, path.as_str())
                        && let Some(mut rendered) = incident::render_with(
                            t,
                            &change,
                            self.config.escalation_level,
                            self.config.incident_url.as_deref(),
                        )?
                    {
                        // The alias is how the alert is acknowledged and closed.
                        rendered["alias"] = body["alias"].take();
                        body = rendered;
                    }
                    http::send(self.post(&path).json(&body)).await.map(drop)
                }
                None => Ok(()),
            }
        })
        .await)
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        match &self.config.heartbeat {
            Some(name) => http::send(self.post(&format!("/heartbeats/{name}/ping"))).await.map(drop),
            None => Ok(()),
        }
    }

    fn incident_channel(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::sinks::incident::tests::change;
    use crate::incident::{ChangeKind, IncidentStatus};

    #[test]
    fn alerts_are_addressed_by_alias() {
        let config: OpsgenieConfig = toml::from_str("api_key = \"k\"\nteams = [\"soc\"]").expect("config");
        let sink = OpsgenieSink::new(config).expect("sink");
        let (path, body) = sink.request(&change(ChangeKind::Opened, None, IncidentStatus::Detected)).expect("create");
        assert_eq!(path, "/alerts");
        assert_eq!(body["alias"], "0190d000-0000-7000-8000-000000000001");
        assert_eq!(body["priority"], "P2");
        assert_eq!(body["responders"][0]["name"], "soc");
        let (ack, _) = sink
            .request(&change(ChangeKind::Changed, Some(IncidentStatus::Detected), IncidentStatus::Acknowledged))
            .expect("ack");
        assert_eq!(ack, "/alerts/0190d000-0000-7000-8000-000000000001/acknowledge?identifierType=alias");
        let (close, _) = sink
            .request(&change(ChangeKind::Changed, Some(IncidentStatus::Investigating), IncidentStatus::Closed))
            .expect("close");
        assert!(close.ends_with("/close?identifierType=alias"));
    }
}
