//! OCSF events (Amazon Security Lake, and any producer of OCSF 1.x): the inverse of the
//! OCSF sink. `class_uid` (or `category_uid`) gives the class, `status_id` the outcome,
//! `severity_id` the severity; endpoints, actor, process, file, HTTP, DNS and API objects
//! fill their fields. What Vigil's own sink put in `unmapped` comes back as it was; the
//! record itself stays under `attributes.ocsf`.

use serde_json::{Map, Value};

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, EventId, Outcome, SecurityEvent, Severity};

/// OCSF attributes copied to the model for every class.
pub const TABLE: &[Mapping] = &[
    ("time", "time"),
    ("metadata.logged_time", "observed_time"),
    ("metadata.product.name", "provider"),
    ("message", "message"),
    ("raw_data", "raw"),
    ("src_endpoint.ip", "source.ip"),
    ("src_endpoint.port", "source.port"),
    ("src_endpoint.hostname", "source.domain"),
    ("connection_info.protocol_name", "network.transport"),
    ("traffic.bytes_out", "source.bytes"),
    ("traffic.bytes_in", "destination.bytes"),
    ("traffic.bytes", "network.bytes"),
    ("actor.user.name", "user.name"),
    ("actor.user.uid", "user.id"),
    ("actor.user.domain", "user.domain"),
    ("actor.user.email_addr", "user.email"),
    ("device.hostname", "host.name"),
    ("device.uid", "host.id"),
    ("device.ip", "host.ip"),
    ("device.os.name", "host.os"),
    ("process.pid", "process.pid"),
    ("process.name", "process.name"),
    ("process.cmd_line", "process.command_line"),
    ("process.file.path", "process.executable"),
    ("process.parent_process.pid", "process.parent.pid"),
    ("process.parent_process.name", "process.parent.name"),
    ("process.parent_process.cmd_line", "process.parent.command_line"),
    ("actor.process.pid", "process.pid"),
    ("actor.process.name", "process.name"),
    ("actor.process.cmd_line", "process.command_line"),
    ("file.path", "file.path"),
    ("file.name", "file.name"),
    ("file.size", "file.size"),
    ("http_request.http_method", "http.method"),
    ("http_request.user_agent", "http.user_agent"),
    ("http_request.length", "http.request_bytes"),
    ("http_request.url.url_string", "url.full"),
    ("http_request.url.hostname", "url.domain"),
    ("http_request.url.path", "url.path"),
    ("http_request.url.query_string", "url.query"),
    ("http_response.code", "http.status_code"),
    ("http_response.length", "http.response_bytes"),
    ("query.hostname", "url.domain"),
    ("api.operation", "action"),
    ("api.service.name", "cloud.service"),
    ("cloud.provider", "cloud.provider"),
    ("cloud.region", "cloud.region"),
    ("cloud.account.uid", "cloud.account_id"),
];

/// `user` is the account logging on (Authentication) or the account changed (Account
/// Change, Group Management); `dst_endpoint` is the host logged on to for Authentication.
pub const BY_CLASS: &[(u32, Mapping)] = &[
    (3002, ("user.name", "user.name")),
    (3002, ("user.uid", "user.id")),
    (3002, ("user.domain", "user.domain")),
    (3002, ("user.email_addr", "user.email")),
    (3002, ("dst_endpoint.hostname", "host.name")),
    (3002, ("dst_endpoint.ip", "host.ip")),
    (3001, ("user.name", "user.target.name")),
    (3001, ("user.uid", "user.target.id")),
    (3006, ("user.name", "user.target.name")),
    (3006, ("user.uid", "user.target.id")),
    (3006, ("group.name", "user.target.roles")),
    (0, ("dst_endpoint.ip", "destination.ip")),
    (0, ("dst_endpoint.port", "destination.port")),
    (0, ("dst_endpoint.hostname", "destination.domain")),
];

/// The class of an OCSF `class_uid`, or of its category when the class is not listed.
fn class(class_uid: u64, category_uid: Option<u64>) -> EventClass {
    match class_uid {
        3002 => EventClass::Authentication,
        3001 | 3006 => EventClass::Account,
        3003..=3005 => EventClass::Authorization,
        4002 => EventClass::Http,
        4003 => EventClass::Dns,
        4001 | 4004..=4099 => EventClass::Network,
        1001 | 6005 | 6006 => EventClass::File,
        1002 | 1004 | 1005 | 1007 => EventClass::Process,
        1003 => EventClass::System,
        1006 | 5001..=5099 => EventClass::Configuration,
        2001..=2099 => EventClass::Finding,
        6001 | 6003 => EventClass::Api,
        6004 => EventClass::Http,
        6002 => EventClass::System,
        _ => match class_uid.checked_div(1000).filter(|c| *c > 0).or(category_uid) {
            Some(1) => EventClass::System,
            Some(2) => EventClass::Finding,
            Some(3) => EventClass::Authentication,
            Some(4) => EventClass::Network,
            Some(5) => EventClass::Configuration,
            Some(6) => EventClass::Api,
            _ => EventClass::Other,
        },
    }
}

/// Decodes one OCSF event.
pub fn decode(mut record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let class_uid = json::uint(&record, "class_uid").ok_or_else(|| DecodeError::missing("class_uid"))?;
    let unmapped = record.as_object_mut().and_then(|o| o.remove("unmapped")).unwrap_or(Value::Null);
    let vigil_class = json::str(&unmapped, "vigil_class").and_then(EventClass::parse);
    let mut e = ctx.event(vigil_class.unwrap_or_else(|| class(class_uid, json::uint(&record, "category_uid"))));
    set::apply(&mut e, &record, TABLE);
    for (uid, (from, to)) in BY_CLASS {
        let applies = *uid == class_uid as u32 || *uid == 0 && class_uid != 3002;
        if let Some(v) = json::get(&record, from).filter(|_| applies) {
            set::put(&mut e, to, v);
        }
    }
    e.outcome = match json::uint(&record, "status_id") {
        Some(1) => Outcome::Success,
        Some(2) => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    e.severity = match json::uint(&record, "severity_id") {
        Some(2) => Severity::Low,
        Some(3) => Severity::Medium,
        Some(4) => Severity::High,
        Some(5 | 6) => Severity::Critical,
        _ => Severity::Info,
    };
    if let Some(direction) = match json::uint(&record, "connection_info.direction_id") {
        Some(1) => Some("inbound"),
        Some(2) => Some("outbound"),
        Some(3) => Some("internal"),
        _ => None,
    } {
        set::put_str(&mut e, "network.direction", direction);
    }
    if let Some(Value::Array(hashes)) = json::get(&record, "file.hashes") {
        for h in hashes {
            let to = match json::uint(h, "algorithm_id") {
                Some(1) => "file.hash.md5",
                Some(2) => "file.hash.sha1",
                Some(3) => "file.hash.sha256",
                _ => continue,
            };
            if let Some(v) = json::get(h, "value") {
                set::put(&mut e, to, v);
            }
        }
    }
    if let Some(id) = json::str(&record, "metadata.uid").and_then(|s| s.parse::<EventId>().ok()) {
        e.id = id;
    }
    if e.class == EventClass::Dns
        && let Some(name) = json::str(&record, "query.hostname")
    {
        let question = serde_json::json!({ "name": name, "type": json::get(&record, "query.type") });
        e.attributes.insert("dns".into(), serde_json::json!({ "question": question }));
    }
    if e.action.is_none() && vigil_class.is_none() {
        e.action = json::str(&record, "activity_name").map(|a| a.to_ascii_lowercase().replace(' ', "_"));
    }
    restore(&mut e, unmapped);
    e.attributes.insert("ocsf".into(), record);
    Ok(e)
}

/// Puts back what Vigil's OCSF sink wrote under `unmapped`; any other producer's
/// `unmapped` object stays in `attributes.ocsf.unmapped`.
fn restore(e: &mut SecurityEvent, unmapped: Value) {
    let Value::Object(mut u) = unmapped else { return };
    if !u.contains_key("vigil_class") {
        e.attributes.insert("ocsf_unmapped".into(), Value::Object(u));
        return;
    }
    if let Some(action) = u.remove("action").as_ref().and_then(set::text) {
        e.action = Some(action);
    }
    if let Some(provider) = u.remove("provider").as_ref().and_then(set::text) {
        e.provider = Some(provider);
    }
    if let Some(tenant) = u.remove("tenant").as_ref().and_then(set::text) {
        e.tenant = Some(tenant);
    }
    if let Some(Value::Array(tags)) = u.remove("tags") {
        e.tags.extend(tags.iter().filter_map(set::text));
    }
    if let Some(Value::Object(labels)) = u.remove("labels") {
        e.labels.extend(labels.iter().filter_map(|(k, v)| Some((k.clone(), set::text(v)?))));
    }
    if let Some(host) = u.remove("host").filter(|h| !h.is_null())
        && let Ok(host) = serde_json::from_value(host)
    {
        e.host = Some(Box::new(host));
    }
    if let Some(Value::Object(attributes)) = u.remove("attributes") {
        let attributes: Map<String, Value> = attributes;
        e.attributes.extend(attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_authentication_failure_from_security_lake() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "class_uid": 3002, "category_uid": 3, "activity_id": 1, "activity_name": "Logon",
                "status_id": 2, "severity_id": 3, "time": 1_767_225_600_000_u64,
                "user": { "name": "alice", "uid": "S-1-5-21-1" }, "src_endpoint": { "ip": "198.51.100.4" },
                "dst_endpoint": { "hostname": "dc01" }, "metadata": { "product": { "name": "Active Directory" } } }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!((e.class, e.outcome, e.severity), (EventClass::Authentication, Outcome::Failure, Severity::Medium));
        assert_eq!(e.action.as_deref(), Some("logon"));
        assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("alice"));
        assert_eq!(e.host.as_ref().and_then(|h| h.name.as_deref()), Some("dc01"));
        assert_eq!(e.time.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(e.attributes["ocsf"]["activity_id"], 1);
        assert!(decode(json!({ "time": 1 }), &ctx).is_err_and(|err| err.to_string().contains("class_uid")));
    }
}
