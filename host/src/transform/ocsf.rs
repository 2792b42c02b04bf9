//! OCSF 1.5: each event class maps to its OCSF class (Authentication 3002, Account Change
//! 3001, Network Activity 4001, HTTP Activity 4002, DNS Activity 4003, Process Activity
//! 1007, File System Activity 1001, API Activity 6003, else Base Event 0); findings are
//! Detection Findings (2004: Create for alerts and opened incidents, Update for changes,
//! Close when resolved). `type_uid = class_uid × 100 + activity_id`; `time` is epoch
//! milliseconds. Whatever OCSF has no attribute for goes to `unmapped`.

use serde_json::{Map, Value, json};

use super::{Finding, FindingKind, Input, Output, PRODUCT, Transform, TransformError, VERSION, object, put};
use crate::event::{EventClass, Outcome, Priority, SecurityEvent, Severity};

/// The OCSF schema version written into `metadata.version`.
pub const OCSF_VERSION: &str = "1.5.0";

#[derive(Debug)]
pub struct Ocsf;

impl Transform for Ocsf {
    fn name(&self) -> &'static str {
        "ocsf"
    }

    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError> {
        Ok(Output::Json(match input {
            Input::Event(e) => event(e),
            Input::Finding(f) => finding(f),
        }))
    }
}

/// (class_uid, class_name, category_uid, category_name)
fn class_of(class: EventClass) -> (u32, &'static str, u32, &'static str) {
    match class {
        EventClass::Authentication => (3002, "Authentication", 3, "Identity & Access Management"),
        EventClass::Account => (3001, "Account Change", 3, "Identity & Access Management"),
        EventClass::Network => (4001, "Network Activity", 4, "Network Activity"),
        EventClass::Http => (4002, "HTTP Activity", 4, "Network Activity"),
        EventClass::Dns => (4003, "DNS Activity", 4, "Network Activity"),
        EventClass::Process => (1007, "Process Activity", 1, "System Activity"),
        EventClass::File => (1001, "File System Activity", 1, "System Activity"),
        EventClass::Api => (6003, "API Activity", 6, "Application Activity"),
        _ => (0, "Base Event", 0, "Uncategorized"),
    }
}

fn activity(e: &SecurityEvent) -> (u32, &'static str) {
    let action = e.action.as_deref().unwrap_or("").to_ascii_lowercase();
    match e.class {
        EventClass::Authentication if action.contains("logout") || action.contains("logoff") => (2, "Logoff"),
        EventClass::Authentication => (1, "Logon"),
        EventClass::Account if action.contains("creat") => (1, "Create"),
        EventClass::Account if action.contains("delet") => (6, "Delete"),
        EventClass::Account if action.contains("disabl") => (5, "Disable"),
        EventClass::Account if action.contains("enabl") => (2, "Enable"),
        EventClass::Network => (6, "Traffic"),
        EventClass::Http => {
            match e.http.as_ref().and_then(|h| h.method.as_deref()).unwrap_or("").to_ascii_uppercase().as_str() {
                "CONNECT" => (1, "Connect"),
                "DELETE" => (2, "Delete"),
                "GET" => (3, "Get"),
                "HEAD" => (4, "Head"),
                "OPTIONS" => (5, "Options"),
                "POST" => (6, "Post"),
                "PUT" => (7, "Put"),
                "TRACE" => (8, "Trace"),
                _ => (99, "Other"),
            }
        }
        EventClass::Dns => (1, "Query"),
        EventClass::Process if action.contains("exit") || action.contains("terminat") => (2, "Terminate"),
        EventClass::Process => (1, "Launch"),
        EventClass::File if action.contains("creat") => (1, "Create"),
        EventClass::File if action.contains("delet") || action == "unlink" => (4, "Delete"),
        EventClass::File if action.contains("writ") || action.contains("modif") || action.contains("updat") => {
            (3, "Update")
        }
        EventClass::File if action.contains("read") || action.contains("open") => (2, "Read"),
        EventClass::Api
            if action.starts_with("get") || action.starts_with("list") || action.starts_with("describe") =>
        {
            (2, "Read")
        }
        EventClass::Api if action.starts_with("create") || action.starts_with("put") => (1, "Create"),
        EventClass::Api if action.starts_with("delete") => (4, "Delete"),
        EventClass::Api if action.starts_with("update") || action.starts_with("modify") => (3, "Update"),
        _ => (99, "Other"),
    }
}

fn severity_id(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn metadata(uid: &str, logged: Option<i64>) -> Value {
    object(&[
        ("product", json!({ "name": PRODUCT, "vendor_name": PRODUCT, "version": VERSION })),
        ("version", json!(OCSF_VERSION)),
        ("uid", json!(uid)),
        ("logged_time", json!(logged)),
    ])
}

fn endpoint(ep: Option<&crate::event::Endpoint>) -> Value {
    match ep {
        Some(ep) => object(&[("ip", json!(ep.ip)), ("port", json!(ep.port)), ("hostname", json!(ep.domain))]),
        None => Value::Null,
    }
}

fn user(u: Option<&crate::event::User>) -> Value {
    match u {
        Some(u) => object(&[
            ("name", json!(u.name)),
            ("uid", json!(u.id)),
            ("domain", json!(u.domain)),
            ("email_addr", json!(u.email)),
        ]),
        None => Value::Null,
    }
}

fn device(e: &SecurityEvent) -> Value {
    let host = e.host.as_deref();
    let os = host.and_then(|h| h.os.as_ref()).map(|name| {
        let lower = name.to_ascii_lowercase();
        let type_id = if lower.contains("windows") {
            100
        } else if lower.contains("linux") {
            200
        } else if lower.contains("mac") {
            300
        } else {
            0
        };
        json!({ "name": name, "type_id": type_id })
    });
    object(&[
        ("type_id", json!(0)),
        ("hostname", json!(host.and_then(|h| h.name.as_ref()))),
        ("uid", json!(host.and_then(|h| h.id.as_ref()))),
        ("ip", json!(host.and_then(|h| h.ip))),
        ("os", os.unwrap_or(Value::Null)),
    ])
}

fn file(f: &crate::event::File) -> Value {
    let name = f.name.clone().or_else(|| f.path.as_ref().map(|p| p.rsplit(['/', '\\']).next().unwrap_or(p).to_owned()));
    let mut hashes = Vec::new();
    if let Some(h) = &f.hash {
        for (algorithm_id, value) in [(1, &h.md5), (2, &h.sha1), (3, &h.sha256)] {
            if let Some(value) = value {
                hashes.push(json!({ "algorithm_id": algorithm_id, "value": value }));
            }
        }
    }
    object(&[
        ("name", json!(name.unwrap_or_default())),
        ("type_id", json!(1)),
        ("path", json!(f.path)),
        ("size", json!(f.size)),
        ("hashes", json!(hashes)),
    ])
}

fn process(e: &SecurityEvent) -> Value {
    match &e.process {
        Some(p) => {
            let parent = p.parent.as_ref().map(|pp| {
                object(&[("pid", json!(pp.pid)), ("name", json!(pp.name)), ("cmd_line", json!(pp.command_line))])
            });
            let file = p.executable.as_ref().map(|path| {
                let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
                json!({ "name": name, "path": path, "type_id": 1 })
            });
            object(&[
                ("pid", json!(p.pid)),
                ("name", json!(p.name)),
                ("cmd_line", json!(p.command_line)),
                ("file", file.unwrap_or(Value::Null)),
                ("parent_process", parent.unwrap_or(Value::Null)),
            ])
        }
        None => json!({}),
    }
}

fn event(e: &SecurityEvent) -> Value {
    let (class_uid, class_name, category_uid, category_name) = class_of(e.class);
    let (activity_id, activity_name) = if class_uid == 0 { (99, "Other") } else { activity(e) };
    let (status_id, status) = match e.outcome {
        Outcome::Success => (1, "Success"),
        Outcome::Failure => (2, "Failure"),
        Outcome::Unknown => (0, "Unknown"),
    };
    let mut doc = Map::new();
    doc.insert("class_uid".into(), json!(class_uid));
    doc.insert("class_name".into(), json!(class_name));
    doc.insert("category_uid".into(), json!(category_uid));
    doc.insert("category_name".into(), json!(category_name));
    doc.insert("activity_id".into(), json!(activity_id));
    doc.insert("activity_name".into(), json!(activity_name));
    doc.insert("type_uid".into(), json!(u64::from(class_uid) * 100 + u64::from(activity_id)));
    doc.insert("time".into(), json!(e.time.timestamp_millis()));
    doc.insert("severity_id".into(), json!(severity_id(e.severity)));
    doc.insert("status_id".into(), json!(status_id));
    doc.insert("status".into(), json!(status));
    doc.insert("metadata".into(), metadata(&e.id.to_string(), Some(e.observed_time.timestamp_millis())));
    put(&mut doc, "message", json!(e.message));
    put(&mut doc, "raw_data", json!(e.raw));
    let actor_user = user(e.user.as_deref());
    match e.class {
        EventClass::Authentication => {
            doc.insert("user".into(), if actor_user.is_null() { json!({}) } else { actor_user });
            put(&mut doc, "src_endpoint", endpoint(e.source.as_ref()));
            put(
                &mut doc,
                "dst_endpoint",
                object(&[
                    ("hostname", json!(e.host.as_ref().and_then(|h| h.name.as_ref()))),
                    ("ip", json!(e.host.as_ref().and_then(|h| h.ip))),
                ]),
            );
        }
        EventClass::Account => {
            let target = e
                .user
                .as_ref()
                .and_then(|u| u.target.as_ref())
                .map(|t| object(&[("name", json!(t.name)), ("uid", json!(t.id))]));
            doc.insert("user".into(), target.unwrap_or(json!({})));
            put(&mut doc, "actor", object(&[("user", actor_user)]));
        }
        EventClass::Network | EventClass::Http | EventClass::Dns => {
            put(&mut doc, "src_endpoint", endpoint(e.source.as_ref()));
            put(&mut doc, "dst_endpoint", endpoint(e.destination.as_ref()));
            if let Some(n) = &e.network {
                let direction_id = match n.direction.as_deref() {
                    Some("inbound") => 1,
                    Some("outbound") => 2,
                    Some("internal") => 3,
                    _ => 0,
                };
                put(
                    &mut doc,
                    "connection_info",
                    object(&[("direction_id", json!(direction_id)), ("protocol_name", json!(n.transport))]),
                );
            }
            let bytes_out = e.source.as_ref().and_then(|s| s.bytes);
            let bytes_in = e.destination.as_ref().and_then(|d| d.bytes);
            put(
                &mut doc,
                "traffic",
                object(&[
                    ("bytes_out", json!(bytes_out)),
                    ("bytes_in", json!(bytes_in)),
                    ("bytes", json!(e.network.as_ref().and_then(|n| n.bytes))),
                ]),
            );
            if e.class == EventClass::Http {
                let url = e.url.as_ref().map(|u| {
                    object(&[
                        ("url_string", json!(u.full)),
                        ("hostname", json!(u.domain)),
                        ("path", json!(u.path)),
                        ("query_string", json!(u.query)),
                    ])
                });
                let h = e.http.as_deref();
                put(
                    &mut doc,
                    "http_request",
                    object(&[
                        ("http_method", json!(h.and_then(|h| h.method.as_ref()))),
                        ("user_agent", json!(h.and_then(|h| h.user_agent.as_ref()))),
                        ("url", url.unwrap_or(Value::Null)),
                        ("length", json!(h.and_then(|h| h.request_bytes))),
                    ]),
                );
                if let Some(code) = h.and_then(|h| h.status_code) {
                    doc.insert(
                        "http_response".into(),
                        object(&[("code", json!(code)), ("length", json!(h.and_then(|h| h.response_bytes)))]),
                    );
                }
            }
            if e.class == EventClass::Dns {
                let question = e.attributes.get("dns").and_then(|d| d.get("question"));
                if let Some(hostname) = question.and_then(|q| q.get("name")).and_then(Value::as_str) {
                    doc.insert(
                        "query".into(),
                        object(&[("hostname", json!(hostname)), ("type", json!(question.and_then(|q| q.get("type"))))]),
                    );
                }
            }
        }
        EventClass::Process => {
            doc.insert("process".into(), process(e));
            doc.insert("actor".into(), object(&[("user", actor_user)]));
            doc.insert("device".into(), device(e));
        }
        EventClass::File => {
            doc.insert(
                "file".into(),
                e.file.as_deref().map(file).unwrap_or_else(|| json!({ "name": "", "type_id": 1 })),
            );
            doc.insert(
                "actor".into(),
                object(&[
                    ("user", actor_user),
                    ("process", if e.process.is_some() { process(e) } else { Value::Null }),
                ]),
            );
            doc.insert("device".into(), device(e));
        }
        EventClass::Api => {
            let service = e.cloud.as_ref().and_then(|c| c.service.as_ref()).map(|s| json!({ "name": s }));
            doc.insert(
                "api".into(),
                object(&[
                    ("operation", json!(e.action.clone().unwrap_or_else(|| "unknown".into()))),
                    ("service", service.unwrap_or(Value::Null)),
                ]),
            );
            doc.insert("actor".into(), object(&[("user", actor_user)]));
            doc.insert("src_endpoint".into(), if e.source.is_some() { endpoint(e.source.as_ref()) } else { json!({}) });
            if let Some(c) = &e.cloud {
                // `cloud` belongs to OCSF's cloud profile, which the metadata then declares.
                let account = c.account_id.as_ref().map(|id| json!({ "uid": id }));
                put(
                    &mut doc,
                    "cloud",
                    object(&[
                        ("provider", json!(c.provider.clone().unwrap_or_else(|| "unknown".into()))),
                        ("region", json!(c.region)),
                        ("account", account.unwrap_or(Value::Null)),
                    ]),
                );
                if let Some(Value::Object(meta)) = doc.get_mut("metadata") {
                    meta.insert("profiles".into(), json!(["cloud"]));
                }
            }
        }
        _ => {}
    }
    let host_in_unmapped = matches!(e.class, EventClass::Account) || class_uid == 0;
    let unmapped = object(&[
        ("vigil_class", json!(e.class.as_str())),
        ("host", if host_in_unmapped { json!(e.host) } else { Value::Null }),
        ("action", if matches!(e.class, EventClass::Api) { Value::Null } else { json!(e.action) }),
        ("provider", json!(e.provider)),
        ("tenant", json!(e.tenant)),
        ("tags", json!(e.tags)),
        ("labels", json!(e.labels)),
        ("attributes", json!(e.attributes)),
    ]);
    put(&mut doc, "unmapped", unmapped);
    Value::Object(doc)
}

fn finding(f: &Finding) -> Value {
    let (activity_id, activity_name, status) = match &f.kind {
        FindingKind::Alert => (1, "Create", None),
        FindingKind::Incident { change, status } if change == "opened" => (1, "Create", Some(status.as_str())),
        FindingKind::Incident { status, .. } if status == "resolved" || status == "closed" => {
            (3, "Close", Some(status.as_str()))
        }
        FindingKind::Incident { status, .. } => (2, "Update", Some(status.as_str())),
    };
    let (status_id, status_name) = match status {
        None | Some("detected") => (1, "New"),
        Some("resolved") | Some("closed") => (4, "Resolved"),
        Some(_) => (2, "In Progress"),
    };
    let severity_id = match f.priority {
        Priority::P0 => 6,
        Priority::P1 => 5,
        Priority::P2 => 4,
        Priority::P3 => 3,
        Priority::P4 => 2,
    };
    let attacks: Vec<Value> = f.techniques.iter().map(|t| json!({ "technique": { "uid": t } })).collect();
    let finding_info = object(&[
        ("uid", json!(f.id)),
        ("title", json!(f.title)),
        ("analytic", json!({ "uid": f.rule_id, "name": f.rule_id, "type_id": 1, "type": "Rule" })),
        ("attacks", json!(attacks)),
        ("types", json!(f.category.iter().collect::<Vec<_>>())),
        ("first_seen_time", json!(f.first_time.timestamp_millis())),
        ("last_seen_time", json!(f.time.timestamp_millis())),
        ("related_events_count", json!(f.count)),
    ]);
    let mut doc = Map::new();
    doc.insert("class_uid".into(), json!(2004));
    doc.insert("class_name".into(), json!("Detection Finding"));
    doc.insert("category_uid".into(), json!(2));
    doc.insert("category_name".into(), json!("Findings"));
    doc.insert("activity_id".into(), json!(activity_id));
    doc.insert("activity_name".into(), json!(activity_name));
    doc.insert("type_uid".into(), json!(200_400 + activity_id));
    doc.insert("time".into(), json!(f.time.timestamp_millis()));
    doc.insert("severity_id".into(), json!(severity_id));
    doc.insert("status_id".into(), json!(status_id));
    doc.insert("status".into(), json!(status_name));
    doc.insert("metadata".into(), metadata(&f.id, None));
    doc.insert("message".into(), json!(f.title));
    doc.insert("count".into(), json!(f.count));
    doc.insert("finding_info".into(), finding_info);
    let unmapped = object(&[
        ("priority", json!(f.priority)),
        ("dedup_key", json!(f.dedup_key)),
        ("ips", json!(f.ips)),
        ("users", json!(f.users)),
        ("hosts", json!(f.hosts)),
        ("event_ids", json!(f.event_ids)),
        ("tags", json!(f.tags)),
    ]);
    put(&mut doc, "unmapped", unmapped);
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::check_golden;

    #[test]
    fn matches_the_golden_files() {
        check_golden(Format::Ocsf);
    }

    #[test]
    fn type_uid_is_class_times_100_plus_activity() {
        super::super::testing::with_inputs(|name, input| {
            let super::Output::Json(doc) = super::super::builtin(&Format::Ocsf).apply(input).expect("transform") else {
                panic!("json")
            };
            let class = doc["class_uid"].as_u64().expect("class");
            let activity = doc["activity_id"].as_u64().expect("activity");
            assert_eq!(doc["type_uid"].as_u64(), Some(class * 100 + activity), "{name}");
            assert!(doc["time"].as_i64().is_some_and(|t| t > 1_700_000_000_000), "{name}: time in ms");
        });
    }
}
