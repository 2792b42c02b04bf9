//! The `pagerduty` sink: PagerDuty Events API v2.
//!
//! One incident is one PagerDuty alert: `dedup_key` is the incident id, so the trigger on
//! open, the acknowledge and the resolve all address it, and a trigger sent twice (after a
//! crash) does not page twice. Severity: P0/P1 critical, P2 error, P3 warning, P4 info.
//! `custom_details` carry the entities, rule, priority, status and counts; a payload over
//! PagerDuty's 512 KB drops the event ids and entity lists rather than being refused.
//! PagerDuty accepts 120 events a minute per routing key: the sink's default rate limit.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::incident::{self, Step};
use crate::export::http::{self, HttpClientConfig, validate_url};
use crate::export::{Item, SendReport, Sink, SinkError};
use crate::telemetry::Secret;

const MAX_PAYLOAD: usize = 512 * 1024;

/// Settings of a `pagerduty` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key.
    pub routing_key: Secret,
    /// Events API base URL.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Link to an incident in the console; `{id}` becomes the incident id.
    #[serde(default)]
    pub incident_url: Option<String>,
    /// 0: paged when an incident opens; n: paged when nobody acknowledged it within n
    /// response times (`[incidents.escalation]`).
    #[serde(default)]
    pub escalation_level: u8,
    /// A message template file rendering the trigger's `payload` object (see `MessageTemplate`).
    #[serde(default)]
    pub template: Option<std::path::PathBuf>,
    /// `payload.source` (this Vigil's name).
    #[serde(default = "default_source")]
    pub source: String,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

fn default_endpoint() -> String {
    "https://events.pagerduty.com".into()
}

fn default_source() -> String {
    "vigil".into()
}

impl PagerDutyConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> = validate_url(&self.endpoint, format!("{prefix}.endpoint")).into_iter().collect();
        errors.extend(incident::validate_template(self.template.as_deref(), format!("{prefix}.template")));
        if self.routing_key.expose().len() != 32 {
            errors.push((format!("{prefix}.routing_key"), "must be the integration's 32-character routing key".into()));
        }
        errors
    }
}

/// The PagerDuty sink.
#[derive(Debug)]
pub struct PagerDutySink {
    config: PagerDutyConfig,
    client: reqwest::Client,
    url: String,
    template: Option<incident::MessageTemplate>,
}

impl PagerDutySink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: PagerDutyConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let url = format!("{}/v2/enqueue", config.endpoint.trim_end_matches('/'));
        let template = config
            .template
            .as_deref()
            .map(incident::MessageTemplate::load)
            .transpose()
            .map_err(SinkError::permanent)?;
        Ok(Self { config, client, url, template })
    }

    /// The event for a change, or `None` when it means nothing to PagerDuty.
    pub fn event(&self, change: &crate::incident::IncidentChange) -> Option<serde_json::Value> {
        let action = match incident::step(change, self.config.escalation_level) {
            Step::Trigger => "trigger",
            Step::Acknowledge => "acknowledge",
            Step::Resolve => "resolve",
            Step::Status | Step::Skip => return None,
        };
        let i = &change.incident;
        let dedup_key = i.id.to_string();
        let routing_key = self.config.routing_key.expose();
        if action != "trigger" {
            return Some(json!({ "routing_key": routing_key, "event_action": action, "dedup_key": dedup_key }));
        }
        let link = incident::link(self.config.incident_url.as_deref(), change);
        let mut event = json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "Vigil",
            "payload": {
                "summary": incident::summary(change).chars().take(1024).collect::<String>(),
                "source": self.config.source,
                "severity": incident::severity(i.priority),
                "timestamp": i.opened_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "component": i.entities.hosts.iter().next(),
                "class": i.category,
                "group": i.rule_id.to_string(),
                "custom_details": {
                    "priority": i.priority.as_str(), "status": i.status.as_str(), "rule": i.rule_id.to_string(),
                    "alerts": i.alert_count, "events": i.event_count, "ips": i.entities.ips, "users": i.entities.users,
                    "hosts": i.entities.hosts, "techniques": i.techniques, "event_ids": i.event_ids,
                },
            },
        });
        if let Some(link) = &link {
            event["client_url"] = json!(link);
            event["links"] = json!([{ "href": link, "text": "Incident in Vigil" }]);
        }
        if serde_json::to_vec(&event).map_or(0, |b| b.len()) > MAX_PAYLOAD {
            let details = &mut event["payload"]["custom_details"];
            for key in ["event_ids", "ips", "users", "hosts"] {
                details[key] = json!([]);
            }
            details["truncated"] = json!("entity lists dropped to fit PagerDuty's 512 KB");
        }
        Some(event)
    }
}

impl Sink for PagerDutySink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        Ok(incident::send_in_order(batch, incident::CONCURRENCY, |change| async move {
            match self.event(&change) {
                Some(mut event) => {
                    if let (Some(t), Some("trigger")) = (&self.template, event["event_action"].as_str())
                        && let Some(payload) = incident::render_with(
                            t,
                            &change,
                            self.config.escalation_level,
                            self.config.incident_url.as_deref(),
                        )?
                    {
                        event["payload"] = payload;
                    }
                    http::send(self.client.post(&self.url).json(&event)).await.map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::sinks::incident::tests::change;
    use crate::incident::{ChangeKind, IncidentStatus};

    #[test]
    fn lifecycle_events_share_the_dedup_key() {
        let config: PagerDutyConfig = toml::from_str(
            "routing_key = \"0123456789abcdef0123456789abcdef\"\nincident_url = \"https://vigil.example/i/{id}\"",
        )
        .expect("config");
        assert!(config.validate("sinks.pd").is_empty());
        let sink = PagerDutySink::new(config).expect("sink");
        let trigger = sink.event(&change(ChangeKind::Opened, None, IncidentStatus::Detected)).expect("trigger");
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["payload"]["severity"], "critical");
        assert_eq!(trigger["payload"]["summary"], "[P1] SSH brute force (203.0.113.7, admin, bastion01)");
        assert_eq!(trigger["links"][0]["href"], "https://vigil.example/i/0190d000-0000-7000-8000-000000000001");
        let ack = sink
            .event(&change(ChangeKind::Changed, Some(IncidentStatus::Detected), IncidentStatus::Acknowledged))
            .expect("ack");
        let resolve = sink
            .event(&change(ChangeKind::Changed, Some(IncidentStatus::Acknowledged), IncidentStatus::Resolved))
            .expect("resolve");
        assert_eq!(
            (ack["event_action"].as_str(), resolve["event_action"].as_str()),
            (Some("acknowledge"), Some("resolve"))
        );
        assert!([&ack, &resolve].iter().all(|e| e["dedup_key"] == trigger["dedup_key"]));
        assert!(sink.event(&change(ChangeKind::Updated, None, IncidentStatus::Detected)).is_none());
    }
}
