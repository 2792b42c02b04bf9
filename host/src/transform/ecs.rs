//! Elastic Common Schema (ECS 9.x): events as `event.kind: event` documents with ECS
//! categories and types derived from the class, action and outcome; findings as
//! `event.kind: alert` with `rule.*`, `threat.*` and `related.*`.

use serde_json::{Map, Value, json};

use super::{Finding, FindingKind, Input, Output, Transform, TransformError, object, put};
use crate::event::{EventClass, SecurityEvent, Severity};

/// The ECS version written into `ecs.version`.
pub const ECS_VERSION: &str = "9.4.0";

#[derive(Debug)]
pub struct Ecs;

impl Transform for Ecs {
    fn name(&self) -> &'static str {
        "ecs"
    }

    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError> {
        Ok(Output::Json(match input {
            Input::Event(e) => event(e),
            Input::Finding(f) => finding(f),
        }))
    }
}

/// ECS `event.category` and `event.type` for a class and action (values from ECS's allowed
/// lists, types among those expected for the category).
fn category_and_type(e: &SecurityEvent) -> (Vec<&'static str>, Vec<&'static str>) {
    let action = e.action.as_deref().unwrap_or("");
    let deleted = action.contains("delet") || action == "unlink";
    let created = action.contains("creat");
    match e.class {
        EventClass::Authentication if action.contains("logout") || action.contains("logoff") => {
            (vec!["authentication"], vec!["end"])
        }
        EventClass::Authentication => (vec!["authentication"], vec!["start"]),
        EventClass::Authorization => (vec!["iam"], vec!["admin"]),
        EventClass::Account if created => (vec!["iam"], vec!["user", "creation"]),
        EventClass::Account if deleted => (vec!["iam"], vec!["user", "deletion"]),
        EventClass::Account => (vec!["iam"], vec!["user", "change"]),
        EventClass::Network => (vec!["network"], vec!["connection"]),
        EventClass::Dns => (vec!["network"], vec!["protocol"]),
        EventClass::Http => (vec!["web"], vec!["access"]),
        EventClass::Process => (vec!["process"], vec!["start"]),
        EventClass::File if deleted => (vec!["file"], vec!["deletion"]),
        EventClass::File if created => (vec!["file"], vec!["creation"]),
        EventClass::File => (vec!["file"], vec!["access"]),
        EventClass::Api => (vec!["api"], vec!["access"]),
        EventClass::Configuration => (vec!["configuration"], vec!["change"]),
        EventClass::Audit | EventClass::System => (vec!["host"], vec!["info"]),
        EventClass::Finding => (vec!["intrusion_detection"], vec!["info"]),
        EventClass::Other => (vec![], vec![]),
    }
}

/// ECS `event.severity` (a number; higher is more severe).
fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn event(e: &SecurityEvent) -> Value {
    let (categories, types) = category_and_type(e);
    let kind = if e.class == EventClass::Finding { "alert" } else { "event" };
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(e.time));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    let mut event = Map::new();
    event.insert("id".into(), json!(e.id));
    event.insert("kind".into(), json!(kind));
    put(&mut event, "category", json!(categories));
    put(&mut event, "type", json!(types));
    event.insert("outcome".into(), json!(e.outcome.as_str()));
    put(&mut event, "action", json!(e.action));
    event.insert("severity".into(), json!(severity_number(e.severity)));
    event.insert("created".into(), json!(e.observed_time));
    put(&mut event, "provider", json!(e.provider));
    put(&mut event, "original", json!(e.raw));
    doc.insert("event".into(), Value::Object(event));
    put(&mut doc, "message", json!(e.message));
    let endpoint = |ep: &Option<crate::event::Endpoint>| match ep {
        Some(ep) => object(&[
            ("ip", json!(ep.ip)),
            ("port", json!(ep.port)),
            ("domain", json!(ep.domain)),
            ("bytes", json!(ep.bytes)),
            ("packets", json!(ep.packets)),
        ]),
        None => Value::Null,
    };
    put(&mut doc, "source", endpoint(&e.source));
    put(&mut doc, "destination", endpoint(&e.destination));
    if let Some(n) = &e.network {
        put(
            &mut doc,
            "network",
            object(&[
                ("transport", json!(n.transport)),
                ("protocol", json!(n.protocol)),
                ("direction", json!(n.direction)),
                ("bytes", json!(n.bytes)),
            ]),
        );
    }
    if let Some(u) = &e.user {
        let target = u
            .target
            .as_ref()
            .map(|t| object(&[("name", json!(t.name)), ("id", json!(t.id)), ("roles", json!(t.roles))]));
        put(
            &mut doc,
            "user",
            object(&[
                ("name", json!(u.name)),
                ("id", json!(u.id)),
                ("domain", json!(u.domain)),
                ("email", json!(u.email)),
                ("roles", json!(u.roles)),
                ("target", target.unwrap_or(Value::Null)),
            ]),
        );
    }
    if let Some(h) = &e.host {
        let os = h.os.as_ref().map(|os| json!({ "name": os }));
        put(
            &mut doc,
            "host",
            object(&[
                ("name", json!(h.name)),
                ("id", json!(h.id)),
                ("ip", json!(h.ip.map(|ip| vec![ip]))),
                ("os", os.unwrap_or(Value::Null)),
            ]),
        );
    }
    if let Some(p) = &e.process {
        let parent = p.parent.as_ref().map(|pp| {
            object(&[
                ("pid", json!(pp.pid)),
                ("name", json!(pp.name)),
                ("executable", json!(pp.executable)),
                ("command_line", json!(pp.command_line)),
            ])
        });
        put(
            &mut doc,
            "process",
            object(&[
                ("pid", json!(p.pid)),
                ("name", json!(p.name)),
                ("executable", json!(p.executable)),
                ("command_line", json!(p.command_line)),
                ("parent", parent.unwrap_or(Value::Null)),
            ]),
        );
    }
    if let Some(f) = &e.file {
        let hash = f
            .hash
            .as_ref()
            .map(|h| object(&[("md5", json!(h.md5)), ("sha1", json!(h.sha1)), ("sha256", json!(h.sha256))]));
        put(
            &mut doc,
            "file",
            object(&[
                ("path", json!(f.path)),
                ("name", json!(f.name)),
                ("size", json!(f.size)),
                ("hash", hash.unwrap_or(Value::Null)),
            ]),
        );
    }
    if let Some(u) = &e.url {
        put(
            &mut doc,
            "url",
            object(&[
                ("full", json!(u.full)),
                ("domain", json!(u.domain)),
                ("path", json!(u.path)),
                ("query", json!(u.query)),
            ]),
        );
    }
    if let Some(h) = &e.http {
        let request = object(&[("method", json!(h.method)), ("bytes", json!(h.request_bytes))]);
        let response = object(&[("status_code", json!(h.status_code)), ("bytes", json!(h.response_bytes))]);
        put(&mut doc, "http", object(&[("request", request), ("response", response)]));
        put(&mut doc, "user_agent", object(&[("original", json!(h.user_agent))]));
    }
    if let Some(c) = &e.cloud {
        let account = c.account_id.as_ref().map(|id| json!({ "id": id }));
        let service = c.service.as_ref().map(|s| json!({ "name": s }));
        put(
            &mut doc,
            "cloud",
            object(&[
                ("provider", json!(c.provider)),
                ("region", json!(c.region)),
                ("account", account.unwrap_or(Value::Null)),
                ("service", service.unwrap_or(Value::Null)),
            ]),
        );
    }
    let mut matched = Value::Null;
    if let Some(t) = &e.threat {
        let indicator = object(&[
            ("id", json!(t.indicator_id)),
            ("name", json!(t.indicator_name)),
            ("type", json!(t.indicator_type)),
            ("confidence", json!(t.confidence.map(stix_confidence))),
            ("provider", json!(t.feed)),
        ]);
        put(
            &mut doc,
            "threat",
            object(&[
                ("indicator", indicator),
                ("feed", json!({ "name": t.feed })),
                ("group", object(&[("name", json!(t.actors))])),
                ("software", object(&[("name", json!(t.malware))])),
            ]),
        );
        matched = object(&[
            ("field", json!(t.matched_field)),
            ("value", json!(t.matched_value)),
            ("campaigns", json!(t.campaigns)),
            ("labels", json!(t.labels)),
            ("kill_chain_phases", json!(t.kill_chain_phases)),
            ("matches", json!(t.matches)),
        ]);
    }
    put(&mut doc, "tags", json!(e.tags));
    put(&mut doc, "labels", json!(e.labels));
    let vigil = object(&[
        ("class", json!(e.class.as_str())),
        ("tenant", json!(e.tenant)),
        ("threat", matched),
        ("attributes", json!(e.attributes)),
    ]);
    put(&mut doc, "vigil", vigil);
    Value::Object(doc)
}

/// A 0–100 confidence on the None/Low/Medium/High scale of STIX 2.1 Appendix A, which is
/// what ECS's `threat.indicator.confidence` expects.
fn stix_confidence(c: u8) -> &'static str {
    match c {
        0 => "None",
        1..=29 => "Low",
        30..=69 => "Medium",
        _ => "High",
    }
}

fn finding(f: &Finding) -> Value {
    let (action, status) = match &f.kind {
        FindingKind::Alert => ("alert".to_owned(), None),
        FindingKind::Incident { change, status } => (format!("incident_{change}"), Some(status.clone())),
    };
    let severity = match f.priority {
        crate::event::Priority::P0 => 5,
        crate::event::Priority::P1 => 4,
        crate::event::Priority::P2 => 3,
        crate::event::Priority::P3 => 2,
        crate::event::Priority::P4 => 1,
    };
    let techniques: Vec<Value> = f.techniques.iter().map(|t| json!({ "id": t })).collect();
    let mut doc = Map::new();
    doc.insert("@timestamp".into(), json!(f.time));
    doc.insert("ecs".into(), json!({ "version": ECS_VERSION }));
    doc.insert(
        "event".into(),
        object(&[
            ("id", json!(f.id)),
            ("kind", json!("alert")),
            ("category", json!(["intrusion_detection"])),
            ("type", json!(["info"])),
            ("action", json!(action)),
            ("severity", json!(severity)),
            ("start", json!(f.first_time)),
            ("end", json!(f.time)),
        ]),
    );
    doc.insert("message".into(), json!(f.title));
    doc.insert(
        "rule".into(),
        object(&[("id", json!(f.rule_id)), ("name", json!(f.title)), ("category", json!(f.category))]),
    );
    if !techniques.is_empty() {
        doc.insert("threat".into(), json!({ "framework": "MITRE ATT&CK", "technique": techniques }));
    }
    put(&mut doc, "related", object(&[("ip", json!(f.ips)), ("user", json!(f.users)), ("hosts", json!(f.hosts))]));
    put(&mut doc, "tags", json!(f.tags));
    let vigil = object(&[
        ("priority", json!(f.priority)),
        ("dedup_key", json!(f.dedup_key)),
        ("count", json!(f.count)),
        ("status", json!(status)),
        ("event_ids", json!(f.event_ids)),
    ]);
    doc.insert("vigil".into(), vigil);
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::check_golden;

    #[test]
    fn matches_the_golden_files() {
        check_golden(Format::Ecs);
    }
}
