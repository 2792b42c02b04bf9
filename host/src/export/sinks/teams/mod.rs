//! The `teams` sink: a Microsoft Teams Workflows webhook ("When a Teams webhook request is
//! received") posting an Adaptive Card.
//!
//! The body is `{"type":"message","attachments":[{"contentType":
//! "application/vnd.microsoft.card.adaptive","content":<AdaptiveCard 1.4>}]}`: a title, a
//! fact set (priority, status, rule, entities, counts), and an "Open in Vigil" action when
//! `incident_url` is set. One card per state change, as for Slack.

use serde_json::json;

use super::incident;
use super::slack::headline;
use crate::incident::IncidentChange;

/// Settings of a `teams` sink.
pub type TeamsConfig = super::chat::ChatConfig;

/// The message for a change.
pub fn card(change: &IncidentChange, incident_url: Option<&str>, level: u8) -> Option<serde_json::Value> {
    let title = headline(change, level)?;
    let i = &change.incident;
    let join = |set: &std::collections::BTreeSet<String>| {
        if set.is_empty() { "—".to_owned() } else { set.iter().take(10).cloned().collect::<Vec<_>>().join(", ") }
    };
    let facts = [
        ("Priority", i.priority.as_str().to_owned()),
        ("Status", i.status.as_str().to_owned()),
        ("Rule", i.rule_id.to_string()),
        ("Events / alerts", format!("{} / {}", i.event_count, i.alert_count)),
        ("IPs", join(&i.entities.ips)),
        ("Users", join(&i.entities.users)),
        ("Hosts", join(&i.entities.hosts)),
        ("Incident", i.id.to_string()),
    ];
    let color = match i.priority {
        crate::event::Priority::P0 | crate::event::Priority::P1 => "Attention",
        crate::event::Priority::P2 => "Warning",
        _ => "Default",
    };
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true, "color": color},
            {"type": "FactSet", "facts": facts.iter().map(|(t, v)| json!({"title": t, "value": v})).collect::<Vec<_>>()},
        ],
    });
    if let Some(link) = incident::link(incident_url, change) {
        content["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open in Vigil", "url": link}]);
    }
    Some(json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": content}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::sinks::incident::tests::change;
    use crate::incident::{ChangeKind, IncidentStatus};

    #[test]
    fn adaptive_card_in_a_message() {
        let c = change(ChangeKind::Opened, None, IncidentStatus::Detected);
        let m = card(&c, Some("https://vigil.example/i/{id}"), 0).expect("card");
        assert_eq!(m["type"], "message");
        let content = &m["attachments"][0]["content"];
        assert_eq!(m["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(content["type"], "AdaptiveCard");
        assert_eq!(content["body"][0]["text"], "P1 incident opened: SSH brute force");
        assert_eq!(content["body"][1]["facts"][4]["value"], "203.0.113.7");
        assert_eq!(content["actions"][0]["url"], "https://vigil.example/i/0190d000-0000-7000-8000-000000000001");
    }
}
