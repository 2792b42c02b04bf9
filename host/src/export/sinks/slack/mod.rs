//! The `slack` sink: Slack incoming webhooks with Block Kit.
//!
//! One message per state change of an incident (opened, acknowledged, resolved…): a header,
//! the fields (priority, status, rule, entities, counts), a context line, and `text` as
//! the notification fallback. Slack's limits are kept: at most 50 blocks, 3,000 characters
//! per section text, 150 per header. A webhook takes about one message a second: the
//! sink's default rate limit; a 429 with `Retry-After` is honoured by the framework.

use serde_json::json;

use super::incident::{self, Step};
use crate::incident::IncidentChange;

/// Settings of a `slack` sink.
pub type SlackConfig = super::chat::ChatConfig;

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Escapes Slack's control characters in mrkdwn text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// What a change says in a message, or `None` when it says nothing.
pub fn headline(change: &IncidentChange, level: u8) -> Option<String> {
    let i = &change.incident;
    let what = match incident::step(change, level) {
        Step::Trigger if change.change == crate::incident::ChangeKind::Escalated => "escalated, not acknowledged",
        Step::Trigger if change.change == crate::incident::ChangeKind::Notified => "needs attention",
        Step::Trigger if change.previous_status.is_some() => "reopened",
        Step::Trigger => "opened",
        Step::Acknowledge | Step::Resolve | Step::Status => i.status.as_str(),
        Step::Skip => return None,
    };
    Some(format!("{} incident {what}: {}", i.priority, i.title))
}

/// The Block Kit message for a change.
pub fn message(change: &IncidentChange, incident_url: Option<&str>, level: u8) -> Option<serde_json::Value> {
    let headline = headline(change, level)?;
    let i = &change.incident;
    let list = |set: &std::collections::BTreeSet<String>| {
        if set.is_empty() {
            "—".to_owned()
        } else {
            escape(&set.iter().take(10).cloned().collect::<Vec<_>>().join(", "))
        }
    };
    let fields = [
        format!("*Priority*\n{}", i.priority),
        format!("*Status*\n{}", i.status.as_str()),
        format!("*Rule*\n`{}`", escape(i.rule_id.as_str())),
        format!("*Events / alerts*\n{} / {}", i.event_count, i.alert_count),
        format!("*IPs*\n{}", list(&i.entities.ips)),
        format!("*Users*\n{}", list(&i.entities.users)),
        format!("*Hosts*\n{}", list(&i.entities.hosts)),
        format!("*Assignee*\n{}", i.assignee.as_deref().map_or("—".to_owned(), escape)),
    ];
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&headline, 150)}}),
        json!({"type": "section", "fields": fields.iter().map(|f| json!({"type": "mrkdwn", "text": clip(f, 2000)})).collect::<Vec<_>>()}),
    ];
    if !i.techniques.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&format!("*ATT&amp;CK* {}", escape(&i.techniques.join(", "))), 3000)}}));
    }
    let mut context = format!("Vigil · incident `{}` · first seen {}", i.id, i.first_seen.format("%Y-%m-%d %H:%M:%SZ"));
    if let Some(link) = incident::link(incident_url, change) {
        context.push_str(&format!(" · <{link}|open>"));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": clip(&context, 3000)}]}));
    blocks.truncate(50);
    Some(json!({ "text": headline, "blocks": blocks }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::sinks::incident::tests::change;
    use crate::incident::{ChangeKind, IncidentStatus};

    #[test]
    fn block_kit_message_within_limits() {
        let mut c = change(ChangeKind::Opened, None, IncidentStatus::Detected);
        c.incident.title = "x".repeat(400);
        c.incident.entities.users.insert("<script>".into());
        let m = message(&c, Some("https://vigil.example/i/{id}"), 0).expect("message");
        assert!(m["text"].as_str().expect("fallback").starts_with("P1 incident opened: xxx"));
        let blocks = m["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 50);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"].as_str().map(|t| t.chars().count()), Some(150));
        let text = m.to_string();
        assert!(text.contains("&lt;script&gt;") && !text.contains("<script>"));
        assert!(text.contains("<https://vigil.example/i/0190d000-0000-7000-8000-000000000001|open>"));
        let resolved = message(
            &change(ChangeKind::Changed, Some(IncidentStatus::Acknowledged), IncidentStatus::Resolved),
            None,
            0,
        )
        .expect("resolved");
        assert_eq!(resolved["text"], format!("P1 incident resolved: SSH brute force"));
        assert!(message(&change(ChangeKind::Updated, None, IncidentStatus::Detected), None, 0).is_none());
    }
}
