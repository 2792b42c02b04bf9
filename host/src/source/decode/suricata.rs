//! Suricata EVE JSON: one object per line, its kind in `event_type`. Alerts are findings
//! (`alert.signature` as the message, Suricata's severity 1–3 as high–low); flows are
//! connections; `dns`, `http`, `tls`, `fileinfo`, `ssh`, `anomaly` map to their classes.
//! The record stays under `attributes.suricata`.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};

/// EVE fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("timestamp", "time"),
    ("src_ip", "source.ip"),
    ("src_port", "source.port"),
    ("dest_ip", "destination.ip"),
    ("dest_port", "destination.port"),
    ("proto", "network.transport"),
    ("app_proto", "network.protocol"),
    ("host", "host.name"),
    ("flow.bytes_toserver", "source.bytes"),
    ("flow.bytes_toclient", "destination.bytes"),
    ("flow.pkts_toserver", "source.packets"),
    ("flow.pkts_toclient", "destination.packets"),
    ("alert.signature", "message"),
    ("http.hostname", "url.domain"),
    ("http.url", "url.path"),
    ("http.http_method", "http.method"),
    ("http.http_user_agent", "http.user_agent"),
    ("http.status", "http.status_code"),
    ("http.length", "http.response_bytes"),
    ("dns.rrname", "url.domain"),
    ("dns.queries.0.rrname", "url.domain"),
    ("tls.sni", "destination.domain"),
    ("fileinfo.filename", "file.name"),
    ("fileinfo.size", "file.size"),
    ("fileinfo.md5", "file.hash.md5"),
    ("fileinfo.sha1", "file.hash.sha1"),
    ("fileinfo.sha256", "file.hash.sha256"),
];

/// The class and action of each `event_type`.
pub const EVENT_TYPES: &[(&str, EventClass, &str)] = &[
    ("alert", EventClass::Finding, "alert"),
    ("anomaly", EventClass::Finding, "protocol_anomaly"),
    ("drop", EventClass::Network, "dropped"),
    ("flow", EventClass::Network, "connection"),
    ("netflow", EventClass::Network, "connection"),
    ("dns", EventClass::Dns, "dns_query"),
    ("http", EventClass::Http, "http_request"),
    ("tls", EventClass::Network, "tls_handshake"),
    ("ssh", EventClass::Network, "ssh_handshake"),
    ("fileinfo", EventClass::File, "file_transferred"),
    ("smtp", EventClass::Network, "smtp"),
    ("stats", EventClass::System, "stats"),
];

/// Decodes one EVE record.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let kind = json::str(&record, "event_type").ok_or_else(|| DecodeError::missing("event_type"))?.to_owned();
    let (class, action) = EVENT_TYPES
        .iter()
        .find(|(t, ..)| *t == kind)
        .map_or((EventClass::Network, kind.as_str()), |(_, c, a)| (*c, *a));
    let mut e = ctx.event(class);
    e.provider = Some("suricata".into());
    e.action = Some(action.to_owned());
    set::apply(&mut e, &record, TABLE);
    if let Some(url) = json::str(&record, "http.url") {
        if let Some((path, query)) = url.split_once('?') {
            set::put_str(&mut e, "url.path", path);
            set::put_str(&mut e, "url.query", query);
        }
        if let Some(host) = json::str(&record, "http.hostname") {
            set::put_str(&mut e, "url.full", &format!("http://{host}{url}"));
        }
    }
    if kind == "alert" {
        e.severity = match json::uint(&record, "alert.severity") {
            Some(1) => Severity::High,
            Some(2) => Severity::Medium,
            _ => Severity::Low,
        };
        e.outcome = match json::str(&record, "alert.action") {
            Some("blocked") => Outcome::Failure,
            Some("allowed") => Outcome::Success,
            _ => Outcome::Unknown,
        };
    }
    if kind == "dns" {
        e.outcome = match json::str(&record, "dns.rcode") {
            Some("NOERROR") => Outcome::Success,
            Some(_) => Outcome::Failure,
            None => Outcome::Unknown,
        };
    }
    e.attributes.insert("suricata".into(), record);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alerts_are_findings() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "timestamp": "2016-06-08T20:01:52.875791+0000", "event_type": "alert", "src_ip": "188.40.238.250",
                "src_port": 80, "dest_ip": "10.16.1.11", "dest_port": 59908, "proto": "TCP",
                "alert": { "signature": "ET POLICY curl User-Agent Outbound", "severity": 2, "action": "allowed" } }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!((e.class, e.severity), (EventClass::Finding, Severity::Medium));
        assert_eq!(e.message.as_deref(), Some("ET POLICY curl User-Agent Outbound"));
        assert_eq!(e.network.as_ref().and_then(|n| n.transport.as_deref()), Some("tcp"));
        assert_eq!(e.time.to_rfc3339(), "2016-06-08T20:01:52.875791+00:00");
    }
}
