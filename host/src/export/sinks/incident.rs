//! What paging and chat channels share: reading an incident change from its record and
//! deciding what it means for a page or a message.
//!
//! | change | page (PagerDuty, Opsgenie) | message (Slack, Teams) |
//! |---|---|---|
//! | opened | trigger | "opened" |
//! | status detected → acknowledged, investigating or contained | acknowledge | the new status |
//! | status → resolved or closed | resolve | the new status |
//! | other status moves (investigating → contained, a reopen) | — (a reopen triggers again) | the new status |
//! | a further alert joined it, a repeat was suppressed, assigned, commented | — | — |
//!
//! So one incident pages once, however many alerts join it, and a record sent twice after
//! a crash carries the same incident key, which the platforms deduplicate.

use crate::event::Priority;
use crate::export::{Item, SendReport, SinkError};
use crate::incident::{ChangeKind, IncidentChange, IncidentStatus};

/// What a change means for a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Page (or announce) a new incident.
    Trigger,
    /// Someone is on it.
    Acknowledge,
    /// It is over.
    Resolve,
    /// Another status change (messages only).
    Status,
    /// Nothing to say.
    Skip,
}

/// Reads the incident change a record carries (sinks of these types write Vigil's JSON).
pub fn decode(item: &Item) -> Result<IncidentChange, SinkError> {
    serde_json::from_slice(&item.body)
        .map_err(|e| SinkError::permanent(format!("record {} is not an incident change: {e}", item.seq)))
}

/// Incidents whose changes are sent at once within a batch.
pub const CONCURRENCY: usize = 16;

/// Sends each item of `batch` with `send`, in order per incident and up to `concurrency`
/// incidents at once: a trigger and its resolve never overtake each other. When an item
/// fails, the later items of the same incident fail with it (and are retried after it).
pub async fn send_in_order<F, Fut>(batch: &[Item], concurrency: usize, send: F) -> SendReport
where
    F: Fn(IncidentChange) -> Fut,
    Fut: std::future::Future<Output = Result<(), SinkError>>,
{
    use futures_util::StreamExt;
    let mut failed = Vec::new();
    let mut groups: Vec<(crate::event::IncidentId, Vec<(usize, IncidentChange)>)> = Vec::new();
    for (index, item) in batch.iter().enumerate() {
        match decode(item) {
            Ok(change) => match groups.iter_mut().find(|(id, _)| *id == change.incident.id) {
                Some((_, group)) => group.push((index, change)),
                None => groups.push((change.incident.id, vec![(index, change)])),
            },
            Err(e) => failed.push((index, e)),
        }
    }
    let send = &send;
    let results: Vec<Vec<(usize, SinkError)>> = futures_util::stream::iter(groups)
        .map(|(_, group)| async move {
            let mut failed = Vec::new();
            let mut error: Option<SinkError> = None;
            for (index, change) in group {
                if let Some(e) = &error {
                    failed.push((index, e.clone()));
                } else if let Err(e) = send(change).await {
                    failed.push((index, e.clone()));
                    // A later change must not overtake one that will be retried.
                    if e.is_retryable() {
                        error = Some(e);
                    }
                }
            }
            failed
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    failed.extend(results.into_iter().flatten());
    failed.sort_by_key(|(index, _)| *index);
    SendReport { failed }
}

/// What `change` means to a channel at escalation `level` (0: the first channel paged;
/// n: a channel paged when nobody acknowledged within n response times).
pub fn step(change: &IncidentChange, level: u8) -> Step {
    let status = change.incident.status;
    let step = match (change.change, change.previous_status) {
        (ChangeKind::Opened, _) => Step::Trigger,
        // The route already picked the one channel a playbook's `notify` step named.
        (ChangeKind::Notified, _) => return Step::Trigger,
        (ChangeKind::Escalated, _) if level > 0 && change.incident.escalation == level => return Step::Trigger,
        (ChangeKind::Changed, Some(before)) if before != status => {
            let done = |s: IncidentStatus| matches!(s, IncidentStatus::Resolved | IncidentStatus::Closed);
            if done(status) && !done(before) {
                Step::Resolve
            } else if done(before) && !done(status) {
                Step::Trigger
            } else if before == IncidentStatus::Detected && !done(status) {
                Step::Acknowledge
            } else {
                Step::Status
            }
        }
        _ => Step::Skip,
    };
    match step {
        // An escalation channel is not paged when an incident opens, and follows only the
        // incidents that reached its level.
        Step::Trigger if level > 0 && change.change == ChangeKind::Opened => Step::Skip,
        _ if level > 0 && change.incident.escalation < level => Step::Skip,
        step => step,
    }
}

/// A message template from a file (`template = "templates/slack.json"`), rendered with
/// minijinja: `{{ incident.title }}`, `{{ headline }}`, `{{ link }}`, `{{ step }}`,
/// `{{ summary }}`, `{{ severity }}`, `{{ change }}`; a missing field renders as empty
/// (`{{ incident.nope.deeper }}` too), never as an error. Use `|tojson` for JSON values.
pub struct MessageTemplate {
    env: minijinja::Environment<'static>,
    path: String,
}

impl std::fmt::Debug for MessageTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageTemplate").field("path", &self.path).finish()
    }
}

impl MessageTemplate {
    /// Reads and compiles a template file; the error names the file and the problem.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let source = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        // No escaping by file extension: JSON templates say `|tojson` where they need it.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let name = path.display().to_string();
        env.add_template_owned(name.clone(), source).map_err(|e| format!("{name}: {e}"))?;
        Ok(Self { env, path: name })
    }

    /// Renders the template for a change.
    pub fn render(
        &self,
        change: &IncidentChange,
        step: Step,
        headline: &str,
        link: Option<&str>,
    ) -> Result<String, SinkError> {
        let context = minijinja::context! {
            incident => minijinja::Value::from_serialize(&change.incident),
            change => minijinja::Value::from_serialize(change.change),
            step => format!("{step:?}").to_lowercase(),
            headline => headline,
            summary => summary(change),
            severity => severity(change.incident.priority),
            link => link,
        };
        let template = self
            .env
            .get_template(&self.path)
            .map_err(|e| SinkError::permanent(format!("template {}: {e}", self.path)))?;
        template.render(context).map_err(|e| SinkError::permanent(format!("template {}: {e}", self.path)))
    }

    /// Renders a template that must produce JSON.
    pub fn render_json(
        &self,
        change: &IncidentChange,
        step: Step,
        headline: &str,
        link: Option<&str>,
    ) -> Result<serde_json::Value, SinkError> {
        let text = self.render(change, step, headline, link)?;
        serde_json::from_str(&text)
            .map_err(|e| SinkError::permanent(format!("template {} did not render JSON: {e}", self.path)))
    }
}

/// Renders a JSON message from `template` for a change, or `None` when the change says
/// nothing at this escalation `level`.
pub fn render_with(
    template: &MessageTemplate,
    change: &IncidentChange,
    level: u8,
    url: Option<&str>,
) -> Result<Option<serde_json::Value>, SinkError> {
    let Some(headline) = super::slack::headline(change, level) else { return Ok(None) };
    let link = link(url, change);
    template.render_json(change, step(change, level), &headline, link.as_deref()).map(Some)
}

/// Checks that a configured template loads.
pub fn validate_template(path: Option<&std::path::Path>, at: String) -> Option<(String, String)> {
    path.and_then(|p| MessageTemplate::load(p).err()).map(|e| (at, e))
}

/// A one-line summary: `[P1] SSH brute force (203.0.113.7, admin)`.
pub fn summary(change: &IncidentChange) -> String {
    let i = &change.incident;
    let entities: Vec<&str> =
        i.entities.ips.iter().chain(&i.entities.users).chain(&i.entities.hosts).take(4).map(String::as_str).collect();
    if entities.is_empty() {
        format!("[{}] {}", i.priority, i.title)
    } else {
        format!("[{}] {} ({})", i.priority, i.title, entities.join(", "))
    }
}

/// A link to the incident: `url` with `{id}` replaced.
pub fn link(url: Option<&str>, change: &IncidentChange) -> Option<String> {
    url.map(|u| u.replace("{id}", &change.incident.id.to_string()))
}

/// PagerDuty-style severity: P0/P1 critical, P2 error, P3 warning, P4 info.
pub fn severity(priority: Priority) -> &'static str {
    match priority {
        Priority::P0 | Priority::P1 => "critical",
        Priority::P2 => "error",
        Priority::P3 => "warning",
        Priority::P4 => "info",
    }
}

/// The paging and chat sinks take incident changes only, in Vigil's JSON.
pub fn validate_records(
    prefix: &str,
    route: &crate::export::RouteConfig,
    format: &crate::transform::Format,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if route.records != [crate::event::RecordKind::Incident] {
        errors.push((
            format!("{prefix}.route.records"),
            "paging and chat channels take incident changes only: [\"incident\"]".into(),
        ));
    }
    if *format != crate::transform::Format::Json {
        errors.push((
            format!("{prefix}.format"),
            "paging and chat channels build their own messages; leave format unset".into(),
        ));
    }
    errors
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An incident change as detection writes it.
    pub fn change(kind: ChangeKind, before: Option<IncidentStatus>, status: IncidentStatus) -> IncidentChange {
        let mut value = serde_json::json!({
            "change": "opened",
            "incident": {
                "id": "0190d000-0000-7000-8000-000000000001", "rule_id": "ssh_brute_force", "title": "SSH brute force",
                "priority": "P1", "status": "detected", "dedup_key": "ssh_brute_force|203.0.113.7",
                "opened_at": "2026-11-22T08:00:00Z", "updated_at": "2026-11-22T08:00:00Z",
                "first_seen": "2026-11-22T07:59:00Z", "last_seen": "2026-11-22T08:00:00Z",
                "alert_count": 1, "suppressed_count": 0, "event_count": 12, "event_ids": [],
                "entities": {"ips": ["203.0.113.7"], "users": ["admin"], "hosts": ["bastion01"]}
            }
        });
        let mut change: IncidentChange = serde_json::from_value(value.take()).expect("incident change");
        change.change = kind;
        change.previous_status = before;
        change.incident.status = status;
        change
    }

    fn step_0(change: &IncidentChange) -> Step {
        step(change, 0)
    }

    #[test]
    fn escalation_channels_page_only_at_their_level() {
        use IncidentStatus::*;
        let mut escalated = change(ChangeKind::Escalated, None, Detected);
        escalated.incident.escalation = 1;
        assert_eq!(step(&escalated, 0), Step::Skip, "the first channel was paged already");
        assert_eq!(step(&escalated, 1), Step::Trigger);
        assert_eq!(step(&escalated, 2), Step::Skip);
        assert_eq!(step(&change(ChangeKind::Opened, None, Detected), 1), Step::Skip);
        let mut ack = change(ChangeKind::Changed, Some(Detected), Acknowledged);
        assert_eq!(step(&ack, 1), Step::Skip, "never escalated: nothing was paged at level 1");
        ack.incident.escalation = 1;
        assert_eq!((step(&ack, 0), step(&ack, 1)), (Step::Acknowledge, Step::Acknowledge));
    }

    #[test]
    fn one_incident_pages_once_and_follows_its_status() {
        use IncidentStatus::*;
        assert_eq!(step_0(&change(ChangeKind::Opened, None, Detected)), Step::Trigger);
        assert_eq!(step_0(&change(ChangeKind::Updated, None, Detected)), Step::Skip);
        assert_eq!(step_0(&change(ChangeKind::Suppressed, None, Detected)), Step::Skip);
        assert_eq!(step_0(&change(ChangeKind::Changed, None, Detected)), Step::Skip, "assigned or commented");
        assert_eq!(step_0(&change(ChangeKind::Changed, Some(Detected), Acknowledged)), Step::Acknowledge);
        assert_eq!(step_0(&change(ChangeKind::Changed, Some(Detected), Contained)), Step::Acknowledge);
        assert_eq!(step_0(&change(ChangeKind::Changed, Some(Acknowledged), Investigating)), Step::Status);
        assert_eq!(step_0(&change(ChangeKind::Changed, Some(Investigating), Resolved)), Step::Resolve);
        assert_eq!(step_0(&change(ChangeKind::Changed, Some(Resolved), Closed)), Step::Status);
        assert_eq!(
            step_0(&change(ChangeKind::Changed, Some(Resolved), Detected)),
            Step::Trigger,
            "a reopen pages again"
        );
        let c = change(ChangeKind::Opened, None, Detected);
        assert_eq!(summary(&c), "[P1] SSH brute force (203.0.113.7, admin, bastion01)");
        assert_eq!(
            link(Some("https://vigil.example/incidents/{id}"), &c).as_deref(),
            Some("https://vigil.example/incidents/0190d000-0000-7000-8000-000000000001")
        );
    }

    fn item(seq: u64, change: &IncidentChange) -> Item {
        Item {
            seq,
            kind: crate::event::RecordKind::Incident,
            id: format!("{}-{seq}", change.incident.id),
            time: change.incident.opened_at,
            host: None,
            severity: 9,
            body: serde_json::to_vec(change).expect("encode"),
            json: true,
        }
    }

    #[test]
    fn templates_render_fields_and_missing_ones_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.json");
        std::fs::write(&path, r#"{"text": {{ headline|tojson }}, "ip": "{{ incident.entities.ips[0] }}", "none": "{{ incident.nope.deeper }}", "step": "{{ step }}"}"#).expect("write");
        let template = MessageTemplate::load(&path).expect("load");
        let c = change(ChangeKind::Opened, None, IncidentStatus::Detected);
        let value = template.render_json(&c, Step::Trigger, "P1 \"quoted\"", None).expect("render");
        assert_eq!(
            value,
            serde_json::json!({"text": "P1 \"quoted\"", "ip": "203.0.113.7", "none": "", "step": "trigger"})
        );
        std::fs::write(&path, "{{ unclosed").expect("write");
        assert!(MessageTemplate::load(&path).expect_err("syntax").contains("t.json"));
        assert!(MessageTemplate::load(&dir.path().join("missing")).expect_err("missing").contains("cannot read"));
    }

    #[tokio::test]
    async fn changes_keep_their_order_per_incident_and_wait_behind_a_retry() {
        use IncidentStatus::*;
        let a_open = change(ChangeKind::Opened, None, Detected);
        let a_resolve = change(ChangeKind::Changed, Some(Detected), Resolved);
        let mut b_open = change(ChangeKind::Opened, None, Detected);
        b_open.incident.id = "0190d000-0000-7000-8000-000000000002".parse().expect("id");
        let mut b_resolve = b_open.clone();
        (b_resolve.change, b_resolve.previous_status, b_resolve.incident.status) =
            (ChangeKind::Changed, Some(Detected), Resolved);
        let batch = [item(1, &a_open), item(2, &b_open), item(3, &a_resolve), item(4, &b_resolve)];
        let sent = std::sync::Mutex::new(Vec::new());
        let report = send_in_order(&batch, 4, |c| {
            let sent = &sent;
            async move {
                if c.incident.id == a_open.incident.id && c.change == ChangeKind::Opened {
                    return Err(SinkError::retryable("busy"));
                }
                sent.lock().expect("lock").push((c.incident.id, c.incident.status));
                Ok(())
            }
        })
        .await;
        let failed: Vec<usize> = report.failed.iter().map(|(i, _)| *i).collect();
        assert_eq!(failed, [0, 2], "A's resolve waits behind A's trigger");
        let sent = sent.into_inner().expect("lock");
        assert_eq!(sent, [(b_open.incident.id, Detected), (b_open.incident.id, Resolved)]);
    }
}
