//! Setting a [`SecurityEvent`] field by its dotted path from a producer's JSON value, with
//! the conversion the field's type needs (text, address, port, count, list).
//!
//! Conversions are lenient by design: a value that does not fit its field (a port that is
//! not a number, an address that is a host name) is not an error. Addresses that are
//! names go to the endpoint's `domain`; anything else that does not fit is left out of the
//! typed field, and stays readable in the record's `attributes`.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::event::{
    Cloud, Endpoint, File, Hashes, Host, Http, Network, ParentProcess, Process, SecurityEvent, Url, User,
};

/// A producer field and the event field it fills: `("sourceIPAddress", "source.ip")`. The
/// tables of every decoder are written with these; `docs/inputs.md` lists the same rows.
pub type Mapping = (&'static str, &'static str);

/// The value as text: strings (not blank, not a lone `-`), numbers and booleans.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty() && s != "-").then(|| s.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The value as an unsigned integer: a JSON number or a string of digits (`"0x1F"` too).
pub fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
        }
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    }
}

/// The value as an IP address; IPv4-mapped IPv6 addresses become IPv4, brackets and a
/// zone (`fe80::1%eth0`) are dropped.
pub fn ip(v: &Value) -> Option<IpAddr> {
    parse_ip(v.as_str()?)
}

/// [`ip`] for text.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let s = s.split('%').next().unwrap_or(s);
    s.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The value as a list of strings: an array of texts, or one text.
fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

fn endpoint(slot: &mut Option<Endpoint>) -> &mut Endpoint {
    slot.get_or_insert_with(Default::default)
}

fn boxed<T: Default>(slot: &mut Option<Box<T>>) -> &mut T {
    slot.get_or_insert_with(Default::default)
}

/// Sets an endpoint's address: an IP address to `ip`, anything else (a host name, an AWS
/// service name) to `domain` unless one is set.
pub fn address(ep: &mut Endpoint, value: &str) {
    match parse_ip(value) {
        Some(ip) => ep.ip = Some(ip),
        None => {
            let value = value.trim();
            if ep.domain.is_none() && !value.is_empty() && value != "-" {
                ep.domain = Some(value.to_owned());
            }
        }
    }
}

/// Sets the field at `path` from `v`; a value that does not fit the field is skipped.
/// Returns whether the path names a settable field (tables are checked against this).
pub fn put(e: &mut SecurityEvent, path: &str, v: &Value) -> bool {
    let s = || text(v);
    let n = || uint(v);
    match path {
        "time" => {
            if let Some(t) = time(v) {
                e.time = t;
            }
        }
        "observed_time" => {
            if let Some(t) = time(v) {
                e.observed_time = t;
            }
        }
        "action" => e.action = s().or(e.action.take()),
        "message" => e.message = s().or(e.message.take()),
        "provider" => e.provider = s().or(e.provider.take()),
        "tenant" => e.tenant = s().or(e.tenant.take()),
        "raw" => e.raw = s().or(e.raw.take()),
        "tags" => e.tags.extend(list(v)),
        "source.ip" | "source.address" => {
            if let Some(a) = v.as_str() {
                address(endpoint(&mut e.source), a);
            }
        }
        "source.port" => keep(&mut endpoint(&mut e.source).port, n().and_then(|p| u16::try_from(p).ok())),
        "source.domain" => keep(&mut endpoint(&mut e.source).domain, s()),
        "source.bytes" => keep(&mut endpoint(&mut e.source).bytes, n()),
        "source.packets" => keep(&mut endpoint(&mut e.source).packets, n()),
        "destination.ip" | "destination.address" => {
            if let Some(a) = v.as_str() {
                address(endpoint(&mut e.destination), a);
            }
        }
        "destination.port" => keep(&mut endpoint(&mut e.destination).port, n().and_then(|p| u16::try_from(p).ok())),
        "destination.domain" => keep(&mut endpoint(&mut e.destination).domain, s()),
        "destination.bytes" => keep(&mut endpoint(&mut e.destination).bytes, n()),
        "destination.packets" => keep(&mut endpoint(&mut e.destination).packets, n()),
        "network.transport" => {
            keep(&mut boxed::<Network>(&mut e.network).transport, s().map(|t| t.to_ascii_lowercase()))
        }
        "network.protocol" => keep(&mut boxed::<Network>(&mut e.network).protocol, s().map(|t| t.to_ascii_lowercase())),
        "network.direction" => {
            keep(&mut boxed::<Network>(&mut e.network).direction, s().map(|t| t.to_ascii_lowercase()))
        }
        "network.bytes" => keep(&mut boxed::<Network>(&mut e.network).bytes, n()),
        "user.name" => keep(&mut boxed::<User>(&mut e.user).name, s()),
        "user.id" => keep(&mut boxed::<User>(&mut e.user).id, s()),
        "user.domain" => keep(&mut boxed::<User>(&mut e.user).domain, s()),
        "user.email" => keep(&mut boxed::<User>(&mut e.user).email, s()),
        "user.roles" => boxed::<User>(&mut e.user).roles.extend(list(v)),
        "user.target.name" => keep(&mut boxed(&mut boxed::<User>(&mut e.user).target).name, s()),
        "user.target.id" => keep(&mut boxed(&mut boxed::<User>(&mut e.user).target).id, s()),
        "user.target.roles" => boxed(&mut boxed::<User>(&mut e.user).target).roles.extend(list(v)),
        "host.name" => keep(&mut boxed::<Host>(&mut e.host).name, s()),
        "host.id" => keep(&mut boxed::<Host>(&mut e.host).id, s()),
        "host.ip" => {
            let first = match v {
                Value::Array(items) => items.iter().find_map(ip),
                other => ip(other),
            };
            if let Some(addr) = first {
                boxed::<Host>(&mut e.host).ip = Some(addr);
            }
        }
        "host.os" => keep(&mut boxed::<Host>(&mut e.host).os, s()),
        "process.pid" => keep(&mut boxed::<Process>(&mut e.process).pid, n().and_then(|p| u32::try_from(p).ok())),
        "process.name" => keep(&mut boxed::<Process>(&mut e.process).name, s()),
        "process.executable" => keep(&mut boxed::<Process>(&mut e.process).executable, s()),
        "process.command_line" => keep(&mut boxed::<Process>(&mut e.process).command_line, s()),
        "process.parent.pid" => keep(&mut parent(e).pid, n().and_then(|p| u32::try_from(p).ok())),
        "process.parent.name" => keep(&mut parent(e).name, s()),
        "process.parent.executable" => keep(&mut parent(e).executable, s()),
        "process.parent.command_line" => keep(&mut parent(e).command_line, s()),
        "file.path" => keep(&mut boxed::<File>(&mut e.file).path, s()),
        "file.name" => keep(&mut boxed::<File>(&mut e.file).name, s()),
        "file.size" => keep(&mut boxed::<File>(&mut e.file).size, n()),
        "file.hash.md5" => keep(&mut hashes(e).md5, s().map(|h| h.to_ascii_lowercase())),
        "file.hash.sha1" => keep(&mut hashes(e).sha1, s().map(|h| h.to_ascii_lowercase())),
        "file.hash.sha256" => keep(&mut hashes(e).sha256, s().map(|h| h.to_ascii_lowercase())),
        "url.full" => keep(&mut boxed::<Url>(&mut e.url).full, s()),
        "url.domain" => keep(&mut boxed::<Url>(&mut e.url).domain, s()),
        "url.path" => keep(&mut boxed::<Url>(&mut e.url).path, s()),
        "url.query" => keep(&mut boxed::<Url>(&mut e.url).query, s()),
        "http.method" => keep(&mut boxed::<Http>(&mut e.http).method, s().map(|m| m.to_ascii_uppercase())),
        "http.status_code" => {
            keep(&mut boxed::<Http>(&mut e.http).status_code, n().and_then(|c| u16::try_from(c).ok()))
        }
        "http.user_agent" => keep(&mut boxed::<Http>(&mut e.http).user_agent, s()),
        "http.request_bytes" => keep(&mut boxed::<Http>(&mut e.http).request_bytes, n()),
        "http.response_bytes" => keep(&mut boxed::<Http>(&mut e.http).response_bytes, n()),
        "cloud.provider" => keep(&mut boxed::<Cloud>(&mut e.cloud).provider, s()),
        "cloud.region" => keep(&mut boxed::<Cloud>(&mut e.cloud).region, s()),
        "cloud.account_id" => keep(&mut boxed::<Cloud>(&mut e.cloud).account_id, s()),
        "cloud.service" => keep(&mut boxed::<Cloud>(&mut e.cloud).service, s()),
        _ => return false,
    }
    true
}

/// Sets the field at `path` from text.
pub fn put_str(e: &mut SecurityEvent, path: &str, value: &str) -> bool {
    put(e, path, &Value::String(value.to_owned()))
}

/// Sets `slot` when `value` is something: a blank producer field never erases a value.
fn keep<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

fn parent(e: &mut SecurityEvent) -> &mut ParentProcess {
    boxed(&mut boxed::<Process>(&mut e.process).parent)
}

fn hashes(e: &mut SecurityEvent) -> &mut Hashes {
    boxed(&mut boxed::<File>(&mut e.file).hash)
}

/// Applies a mapping table: each producer field present in `record` fills its event field.
pub fn apply(e: &mut SecurityEvent, record: &Value, table: &[Mapping]) {
    for (from, to) in table {
        if let Some(v) = super::json::get(record, from) {
            put(e, to, v);
        }
    }
}

/// A timestamp in any of the forms producers write: RFC 3339 (with `Z` or an offset, or
/// without a zone: UTC), `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), or a number of seconds,
/// milliseconds or microseconds since the epoch (told apart by size).
pub fn time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_time(s),
        Value::Number(n) => epoch(n.as_f64()?),
        _ => None,
    }
}

/// [`time`] for text.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // The common zone-less form (`2020-08-05 02:09:26.123`, Windows exports) as RFC 3339 in
    // UTC: much cheaper than trying the formats below one by one.
    if s.len() >= 19 && matches!(s.as_bytes()[10], b' ' | b'T') && s.as_bytes()[s.len() - 1].is_ascii_digit() {
        let utc = format!("{}T{}Z", &s[..10], &s[11..]);
        if let Ok(t) = DateTime::parse_from_rfc3339(&utc) {
            return Some(t.with_timezone(&Utc));
        }
    }
    // Offsets written without a colon (`+0000`, Suricata) and other near-RFC 3339 forms.
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f %z"] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%d %H:%M:%S%.fZ"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && !s.is_empty() {
        return epoch(s.parse().ok()?);
    }
    None
}

/// Seconds, milliseconds or microseconds since the epoch, told apart by magnitude
/// (seconds up to the year 5138).
pub fn epoch(x: f64) -> Option<DateTime<Utc>> {
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    let micros = if x < 1e11 {
        x * 1e6
    } else if x < 1e14 {
        x * 1e3
    } else if x < 1e17 {
        x
    } else {
        x / 1e3
    };
    DateTime::from_timestamp_micros(micros.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventClass;
    use serde_json::json;

    #[test]
    fn values_convert_to_their_field_types() {
        let mut e = SecurityEvent::new(EventClass::Other, Utc::now());
        assert!(put(&mut e, "source.ip", &json!("::ffff:203.0.113.9")));
        assert!(put(&mut e, "source.port", &json!("52311")));
        assert!(put(&mut e, "destination.ip", &json!("s3.amazonaws.com")));
        assert!(put(&mut e, "process.pid", &json!("0x1F4")));
        assert!(put(&mut e, "host.ip", &json!(["fe80::1%eth0", "10.0.0.1"])));
        assert!(put(&mut e, "http.method", &json!("get")));
        assert!(put(&mut e, "user.roles", &json!("Domain Admins")));
        assert!(!put(&mut e, "no.such.field", &json!("x")));
        assert_eq!(e.source.as_ref().and_then(|s| s.ip).map(|ip| ip.to_string()).as_deref(), Some("203.0.113.9"));
        assert_eq!(e.source.as_ref().and_then(|s| s.port), Some(52311));
        let dst = e.destination.as_ref().expect("destination");
        assert_eq!((dst.ip, dst.domain.as_deref()), (None, Some("s3.amazonaws.com")));
        assert_eq!(e.process.as_ref().and_then(|p| p.pid), Some(500));
        assert_eq!(e.host.as_ref().and_then(|h| h.ip).map(|ip| ip.to_string()).as_deref(), Some("fe80::1"));
        assert_eq!(e.http.as_ref().and_then(|h| h.method.as_deref()), Some("GET"));
        assert_eq!(e.user.as_ref().map(|u| u.roles.clone()), Some(vec!["Domain Admins".to_owned()]));
        // Values that do not fit are skipped, not errors, and never erase a value.
        assert!(put(&mut e, "source.port", &json!("ssh")));
        assert_eq!(e.source.as_ref().and_then(|s| s.port), Some(52311));
    }

    #[test]
    fn times_in_every_producer_form() {
        let at = |s: &str| parse_time(s).map(|t| t.to_rfc3339());
        assert_eq!(at("2020-09-14T00:44:23Z").as_deref(), Some("2020-09-14T00:44:23+00:00"));
        assert_eq!(at("2016-06-08T20:01:52.875791+0000").as_deref(), Some("2016-06-08T20:01:52.875791+00:00"));
        assert_eq!(at("2020-08-05 02:09:26").as_deref(), Some("2020-08-05T02:09:26+00:00"));
        assert_eq!(at("2026-04-17 05:24:53.079").as_deref(), Some("2026-04-17T05:24:53.079+00:00"));
        assert_eq!(at("1604994496.155").as_deref(), Some("2020-11-10T07:48:16.155+00:00"));
        assert_eq!(
            time(&json!(1604994496155_u64)).map(|t| t.to_rfc3339()).as_deref(),
            Some("2020-11-10T07:48:16.155+00:00")
        );
        assert_eq!(at("2020-08-05T02:09:26.5").as_deref(), Some("2020-08-05T02:09:26.500+00:00"));
        assert_eq!(at("2020-08-05 02:09:26 +0100").as_deref(), Some("2020-08-05T01:09:26+00:00"));
        assert_eq!(at("2020-08-05 99:09:26"), None);
        assert_eq!(at("2020-08-05é02:09:26.123"), None, "no panic on a multi-byte separator");
        assert_eq!(at("yesterday"), None);
    }
}
