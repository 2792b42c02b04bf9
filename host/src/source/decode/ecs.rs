//! Elastic Common Schema documents (Beats, Elastic Agent, Logstash, Elastic Security), with
//! keys nested, dotted or both: the inverse of the ECS sink.
//!
//! The class comes from `event.category` (and `event.type`), or from the fields present
//! when a document has no category. Fields ECS shares with the model fill it; every other
//! field stays under `attributes.ecs` by its ECS path (`attributes.ecs.winlog.event_id`).

use std::sync::LazyLock;

use serde_json::Value;

use super::pick::{Paths, Picked};
use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, EventId, FieldPath, Outcome, SecurityEvent, Severity, json_syntax_error};

/// ECS fields copied to the model as they are.
pub const TABLE: &[Mapping] = &[
    ("@timestamp", "time"),
    ("event.action", "action"),
    ("event.provider", "provider"),
    ("event.original", "raw"),
    ("message", "message"),
    ("tags", "tags"),
    ("source.ip", "source.ip"),
    ("source.address", "source.address"),
    ("source.port", "source.port"),
    ("source.domain", "source.domain"),
    ("source.bytes", "source.bytes"),
    ("source.packets", "source.packets"),
    ("destination.ip", "destination.ip"),
    ("destination.address", "destination.address"),
    ("destination.port", "destination.port"),
    ("destination.domain", "destination.domain"),
    ("destination.bytes", "destination.bytes"),
    ("destination.packets", "destination.packets"),
    ("network.transport", "network.transport"),
    ("network.protocol", "network.protocol"),
    ("network.direction", "network.direction"),
    ("network.bytes", "network.bytes"),
    ("user.name", "user.name"),
    ("user.id", "user.id"),
    ("user.domain", "user.domain"),
    ("user.email", "user.email"),
    ("user.roles", "user.roles"),
    ("user.target.name", "user.target.name"),
    ("user.target.id", "user.target.id"),
    ("user.target.roles", "user.target.roles"),
    ("host.name", "host.name"),
    ("host.id", "host.id"),
    ("host.ip", "host.ip"),
    ("host.os.name", "host.os"),
    ("process.pid", "process.pid"),
    ("process.name", "process.name"),
    ("process.executable", "process.executable"),
    ("process.command_line", "process.command_line"),
    ("process.parent.pid", "process.parent.pid"),
    ("process.parent.name", "process.parent.name"),
    ("process.parent.executable", "process.parent.executable"),
    ("process.parent.command_line", "process.parent.command_line"),
    ("file.path", "file.path"),
    ("file.name", "file.name"),
    ("file.size", "file.size"),
    ("file.hash.md5", "file.hash.md5"),
    ("file.hash.sha1", "file.hash.sha1"),
    ("file.hash.sha256", "file.hash.sha256"),
    ("url.full", "url.full"),
    ("url.domain", "url.domain"),
    ("url.path", "url.path"),
    ("url.query", "url.query"),
    ("http.request.method", "http.method"),
    ("http.request.bytes", "http.request_bytes"),
    ("http.response.status_code", "http.status_code"),
    ("http.response.bytes", "http.response_bytes"),
    ("user_agent.original", "http.user_agent"),
    ("cloud.provider", "cloud.provider"),
    ("cloud.region", "cloud.region"),
    ("cloud.account.id", "cloud.account_id"),
    ("cloud.service.name", "cloud.service"),
    ("dns.question.name", "url.domain"),
];

/// ECS fields that fill a model field only when the preferred one above is absent.
pub const FALLBACKS: &[Mapping] = &[
    ("client.ip", "source.ip"),
    ("client.address", "source.address"),
    ("client.port", "source.port"),
    ("client.domain", "source.domain"),
    ("client.bytes", "source.bytes"),
    ("server.ip", "destination.ip"),
    ("server.address", "destination.address"),
    ("server.port", "destination.port"),
    ("server.domain", "destination.domain"),
    ("server.bytes", "destination.bytes"),
    ("host.hostname", "host.name"),
    ("host.os.type", "host.os"),
    ("host.os.platform", "host.os"),
    ("url.original", "url.full"),
    ("event.module", "provider"),
    ("event.dataset", "provider"),
    ("observer.product", "provider"),
];

/// Fields read with their own logic (class, outcome, severity, id, groups, arguments).
const SPECIAL: &[&str] = &[
    "event.category",
    "event.type",
    "event.kind",
    "event.outcome",
    "event.severity",
    "event.id",
    "event.created",
    "group.name",
    "process.args",
    "labels",
    "ecs.version",
    "vigil",
];

/// Every path the decoder reads, in one table: the rows of [`TABLE`] first (slot `i` is
/// row `i`), then the special fields, then the fallbacks (which also stay in
/// `attributes.ecs`, since they fill a field only sometimes).
static PATHS: LazyLock<Paths> = LazyLock::new(|| {
    let taken: Vec<&'static str> = TABLE.iter().map(|(from, _)| *from).chain(SPECIAL.iter().copied()).collect();
    let kept: Vec<&'static str> = FALLBACKS.iter().map(|(from, _)| *from).collect();
    Paths::new(&taken, &kept)
});

/// Decodes one ECS document, parsed.
pub fn decode(doc: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    if !doc.is_object() {
        return Err(DecodeError::unreadable("ecs", "expected a JSON object"));
    }
    let picked = PATHS.read(doc).map_err(|e| DecodeError::unreadable("ecs", e.to_string()))?;
    Ok(map(picked, ctx))
}

/// Decodes one ECS document from its text, in one pass (no tree of the whole document is
/// built).
pub fn decode_text(text: &str, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let picked = PATHS.read_str(text).map_err(|e| json_syntax_error(&e))?;
    Ok(map(picked, ctx))
}

/// The event of a document read against [`PATHS`].
fn map(mut doc: Picked<'_>, ctx: &Ctx<'_>) -> SecurityEvent {
    let mut e = ctx.event(EventClass::Other);
    for (slot, (_, to)) in TABLE.iter().enumerate() {
        if let Some(v) = doc.at(slot) {
            set::put(&mut e, to, v);
        }
    }
    for (from, to) in FALLBACKS {
        if let Some(v) = doc.get(from)
            && !is_set(&e, to)
        {
            set::put(&mut e, to, v);
        }
    }
    let categories = strings(doc.get("event.category"));
    let types = strings(doc.get("event.type"));
    e.class = class(&doc, &categories, &types, doc.str("event.kind"));
    e.outcome = match doc.str("event.outcome") {
        Some("success") => Outcome::Success,
        Some("failure") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    if let Some(n) = doc.get("event.severity").and_then(set::uint) {
        e.severity = severity(n);
    }
    if let Some(id) = doc.str("event.id").and_then(|s| s.parse::<EventId>().ok()) {
        e.id = id;
    }
    if let Some(created) = doc.get("event.created").and_then(set::time) {
        // The time it was first read, when that is not before the event itself.
        if e.time == crate::event::unset_time() || created >= e.time - ctx.options.limits.max_future_skew {
            e.observed_time = created;
        }
    }
    // What Vigil's own ECS sink keeps under `vigil` comes back as it was.
    let from_vigil = doc.remove("vigil");
    match &from_vigil {
        Some(v) => {
            if let Some(class) = json::str(v, "class").and_then(EventClass::parse) {
                e.class = class;
            }
            e.tenant = json::text(v, "tenant");
        }
        None if e.action.is_none() => e.action = derived_action(&categories, &types),
        None => {}
    }
    if types.iter().any(|t| t == "group")
        && let Some(group) = doc.get("group.name").and_then(set::text)
    {
        let user = e.user.get_or_insert_with(Default::default);
        user.target.get_or_insert_with(Default::default).roles.push(group);
    }
    if (e.process.as_ref().is_some_and(|p| p.command_line.is_none()) || e.process.is_none())
        && let Some(Value::Array(args)) = doc.get("process.args")
    {
        let line: Vec<String> = args.iter().filter_map(set::text).collect();
        if !line.is_empty() {
            set::put_str(&mut e, "process.command_line", &line.join(" "));
        }
    }
    if let Some(Value::Object(labels)) = doc.get("labels") {
        for (k, v) in labels {
            if let Some(v) = set::text(v)
                && !k.is_empty()
                && !k.contains('.')
            {
                e.labels.insert(k.clone(), v);
            }
        }
    }
    if let Some(Value::Object(attributes)) = from_vigil.and_then(|mut v| v.get_mut("attributes").map(Value::take)) {
        e.attributes.extend(attributes);
    }
    if !doc.rest.is_empty() {
        e.attributes.insert("ecs".into(), Value::Object(std::mem::take(&mut doc.rest)));
    }
    e
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(set::text).map(|s| s.to_ascii_lowercase()).collect(),
        Some(other) => set::text(other).map(|s| s.to_ascii_lowercase()).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The class of a document: its first category Vigil has a class for, else what its
/// fields suggest.
fn class(doc: &Picked<'_>, categories: &[String], types: &[String], kind: Option<&str>) -> EventClass {
    let has = |path: &str| doc.get(path).is_some();
    for category in categories {
        let class = match category.as_str() {
            "authentication" | "session" => EventClass::Authentication,
            "iam" if types.iter().any(|t| t == "admin") => EventClass::Authorization,
            "iam" => EventClass::Account,
            "network" if has("dns.question.name") || doc.str("network.protocol") == Some("dns") => EventClass::Dns,
            "network" => EventClass::Network,
            "web" => EventClass::Http,
            "process" | "driver" | "library" => EventClass::Process,
            "file" => EventClass::File,
            "registry" | "configuration" | "package" => EventClass::Configuration,
            "api" => EventClass::Api,
            "host" => EventClass::System,
            "intrusion_detection" | "malware" | "threat" | "vulnerability" => EventClass::Finding,
            _ => continue,
        };
        return class;
    }
    if matches!(kind, Some("alert" | "signal")) {
        return EventClass::Finding;
    }
    if has("process.pid") || has("process.executable") || has("process.command_line") {
        EventClass::Process
    } else if has("dns.question.name") {
        EventClass::Dns
    } else if has("http.request.method") || has("url.full") || has("url.original") {
        EventClass::Http
    } else if has("file.path") {
        EventClass::File
    } else if (has("source.ip") || has("client.ip")) && (has("destination.ip") || has("server.ip")) {
        EventClass::Network
    } else {
        EventClass::Other
    }
}

/// The action of a document without `event.action`, from its category and type.
fn derived_action(categories: &[String], types: &[String]) -> Option<String> {
    let has = |t: &str| types.iter().any(|x| x == t);
    let category = categories.first()?.as_str();
    let action = match category {
        "authentication" if has("end") => "logoff",
        "authentication" => "logon",
        "iam" if has("group") && has("creation") => "group_created",
        "iam" if has("group") && has("deletion") => "group_deleted",
        "iam" if has("group") => "group_changed",
        "iam" if has("creation") => "user_created",
        "iam" if has("deletion") => "user_deleted",
        "iam" if has("user") || has("change") => "user_changed",
        "process" if has("end") => "process_terminated",
        "process" if has("start") => "process_started",
        "file" if has("creation") => "file_created",
        "file" if has("deletion") => "file_deleted",
        "file" if has("change") => "file_changed",
        "network" if has("connection") || has("start") => "connection",
        _ => return None,
    };
    Some(action.to_owned())
}

/// ECS `event.severity` to a severity: 1–5 as the ECS sink writes it; larger numbers as
/// a 0–100 risk score (Elastic's bands: 21, 47, 73).
fn severity(n: u64) -> Severity {
    match n {
        0 | 1 => Severity::Info,
        2 => Severity::Low,
        3 => Severity::Medium,
        4 => Severity::High,
        5 => Severity::Critical,
        6..=21 => Severity::Low,
        22..=47 => Severity::Medium,
        48..=73 => Severity::High,
        _ => Severity::Critical,
    }
}

/// Whether the event already holds the field a fallback would fill (an address counts as
/// set when the endpoint has an IP address or a domain).
fn is_set(e: &SecurityEvent, to: &str) -> bool {
    let read = |path: &str| FieldPath::parse(path).ok().and_then(|p| p.get(e)).is_some();
    match to.strip_suffix(".address") {
        Some(endpoint) => read(&format!("{endpoint}.ip")) || read(&format!("{endpoint}.domain")),
        None => read(to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_doc(doc: Value) -> SecurityEvent {
        let ctx = crate::source::decode::test_ctx();
        decode(doc, &ctx).expect("decodes")
    }

    #[test]
    fn nested_and_dotted_documents_decode_alike() {
        let nested = json!({ "@timestamp": "2026-03-02T11:58:01Z", "event": { "category": ["authentication"],
            "type": ["start"], "outcome": "failure", "action": "ssh_login", "dataset": "system.auth" },
            "source": { "ip": "203.0.113.7", "port": 52311 }, "user": { "name": "admin" },
            "host": { "hostname": "bastion01" }, "agent": { "type": "filebeat" } });
        let dotted = json!({ "@timestamp": "2026-03-02T11:58:01Z", "event.category": "authentication",
            "event.type": "start", "event.outcome": "failure", "event.action": "ssh_login",
            "event.dataset": "system.auth", "source.ip": "203.0.113.7", "source.port": "52311",
            "user.name": "admin", "host.hostname": "bastion01", "agent.type": "filebeat" });
        for doc in [nested, dotted] {
            let e = decode_doc(doc);
            assert_eq!((e.class, e.outcome), (EventClass::Authentication, Outcome::Failure));
            assert_eq!(e.action.as_deref(), Some("ssh_login"));
            assert_eq!(e.time.to_rfc3339(), "2026-03-02T11:58:01+00:00");
            assert_eq!(e.source.as_ref().and_then(|s| s.port), Some(52311));
            assert_eq!(e.host.as_ref().and_then(|h| h.name.as_deref()), Some("bastion01"));
            assert_eq!(e.provider.as_deref(), Some("system.auth"));
            assert_eq!(e.attributes["ecs"]["agent"]["type"], "filebeat");
            assert_eq!(e.attributes["ecs"]["event"]["dataset"], "system.auth", "{:?}", e.attributes);
            assert!(e.attributes["ecs"].get("user").is_none(), "mapped fields are not kept twice");
        }
    }

    #[test]
    fn class_and_action_follow_category_and_type() {
        let e = decode_doc(json!({ "event": { "category": "iam", "type": ["group", "change"] },
            "group": { "name": "Domain Admins" }, "user": { "name": "mallory", "target": { "name": "svc" } } }));
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Account, Some("group_changed")));
        let target = e.user.as_ref().and_then(|u| u.target.as_ref()).expect("target");
        assert_eq!((target.name.as_deref(), target.roles.clone()), (Some("svc"), vec!["Domain Admins".to_owned()]));
        let e = decode_doc(json!({ "process": { "pid": 4, "args": ["cmd.exe", "/c", "whoami"] } }));
        assert_eq!(e.class, EventClass::Process);
        assert_eq!(e.process.as_ref().and_then(|p| p.command_line.as_deref()), Some("cmd.exe /c whoami"));
        let e = decode_doc(json!({ "event": { "kind": "signal", "severity": 73 } }));
        assert_eq!((e.class, e.severity), (EventClass::Finding, Severity::High));
    }
}
