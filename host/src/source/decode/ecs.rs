//! Elastic Common Schema documents (Beats, Elastic Agent, Logstash, Elastic Security), with
//! keys nested, dotted or both: the inverse of the ECS sink.
//!
//! The class comes from `event.category` (and `event.type`), or from the fields present
//! when a document has no category. Fields ECS shares with the model fill it; every other
//! field stays under `attributes.ecs` by its ECS path (`attributes.ecs.winlog.event_id`).

use std::sync::LazyLock;

use rustc_hash::FxHashSet;
use serde_json::{Map, Value};

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, EventId, FieldPath, Outcome, SecurityEvent, Severity};

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

/// Decodes one ECS document.
pub fn decode(doc: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let Value::Object(doc) = doc else { return Err(DecodeError::unreadable("ecs", "expected a JSON object")) };
    let doc = Value::Object(doc);
    let mut e = ctx.event(EventClass::Other);
    set::apply(&mut e, &doc, TABLE);
    for (from, to) in FALLBACKS {
        if let Some(v) = json::get(&doc, from)
            && !is_set(&e, to)
        {
            set::put(&mut e, to, v);
        }
    }
    let categories = strings(json::get(&doc, "event.category"));
    let types = strings(json::get(&doc, "event.type"));
    let kind = json::str(&doc, "event.kind");
    e.class = class(&doc, &categories, &types, kind);
    e.outcome = match json::str(&doc, "event.outcome") {
        Some("success") => Outcome::Success,
        Some("failure") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    if let Some(n) = json::uint(&doc, "event.severity") {
        e.severity = severity(n);
    }
    if let Some(id) = json::str(&doc, "event.id").and_then(|s| s.parse::<EventId>().ok()) {
        e.id = id;
    }
    if let Some(created) = json::get(&doc, "event.created").and_then(set::time) {
        // The time it was first read, when that is not before the event itself.
        if e.time == crate::event::unset_time() || created >= e.time - ctx.options.limits.max_future_skew {
            e.observed_time = created;
        }
    }
    // What Vigil's own ECS sink keeps under `vigil` comes back as it was.
    let from_vigil = json::get(&doc, "vigil").cloned();
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
        && let Some(group) = json::text(&doc, "group.name")
    {
        let user = e.user.get_or_insert_with(Default::default);
        user.target.get_or_insert_with(Default::default).roles.push(group);
    }
    if (e.process.as_ref().is_some_and(|p| p.command_line.is_none()) || e.process.is_none())
        && let Some(Value::Array(args)) = json::get(&doc, "process.args")
    {
        let line: Vec<String> = args.iter().filter_map(set::text).collect();
        if !line.is_empty() {
            set::put_str(&mut e, "process.command_line", &line.join(" "));
        }
    }
    if let Some(Value::Object(labels)) = json::get(&doc, "labels") {
        for (k, v) in labels {
            if let Some(v) = set::text(v)
                && !k.is_empty()
                && !k.contains('.')
            {
                e.labels.insert(k.clone(), v);
            }
        }
    }
    let rest = leftovers(doc);
    if let Some(Value::Object(attributes)) = from_vigil.and_then(|v| v.get("attributes").cloned()) {
        e.attributes.extend(attributes);
    }
    if !rest.is_empty() {
        e.attributes.insert("ecs".into(), Value::Object(rest));
    }
    Ok(e)
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
fn class(doc: &Value, categories: &[String], types: &[String], kind: Option<&str>) -> EventClass {
    let has = |path: &str| json::get(doc, path).is_some();
    for category in categories {
        let class = match category.as_str() {
            "authentication" | "session" => EventClass::Authentication,
            "iam" if types.iter().any(|t| t == "admin") => EventClass::Authorization,
            "iam" => EventClass::Account,
            "network" if has("dns.question.name") || json::str(doc, "network.protocol") == Some("dns") => {
                EventClass::Dns
            }
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

/// Whether an ECS path is read into the model (a table row or one of the special fields),
/// and so left out of `attributes.ecs`.
fn mapped(path: &str) -> bool {
    static MAPPED: LazyLock<FxHashSet<&'static str>> = LazyLock::new(|| {
        // Fallbacks fill a field only sometimes, so they stay in `attributes.ecs` too.
        TABLE.iter().map(|(from, _)| *from).chain(SPECIAL.iter().copied()).collect()
    });
    MAPPED.contains(path)
}

/// The document's fields the model does not hold, nested by their ECS paths.
fn leftovers(doc: Value) -> Map<String, Value> {
    let mut rest = Map::new();
    let mut key = String::new();
    walk(doc, &mut key, &mut |path, value| {
        if !mapped(path) {
            insert(&mut rest, path, value);
        }
    });
    rest
}

/// Calls `f` with each leaf (a value that is not an object) and its dotted path.
fn walk(v: Value, key: &mut String, f: &mut impl FnMut(&str, Value)) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let len = key.len();
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&k);
                if mapped(key) {
                    // A mapped object (`labels`) is consumed whole.
                    key.truncate(len);
                    continue;
                }
                walk(child, key, f);
                key.truncate(len);
            }
        }
        other => f(key, other),
    }
}

/// Inserts `value` at a dotted `path` of nested objects.
fn insert(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, tail)) => {
            let slot = map.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                // A leaf and an object at one path (`a: 1` and `a.b: 2`): keep both.
                let leaf = std::mem::replace(slot, Value::Object(Map::new()));
                if let Value::Object(m) = slot {
                    m.insert("value".into(), leaf);
                }
            }
            if let Value::Object(inner) = slot {
                insert(inner, tail, value);
            }
        }
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
