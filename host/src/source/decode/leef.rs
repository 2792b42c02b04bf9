//! IBM QRadar LEEF 1.0 and 2.0 on input, bare or behind a syslog header: the inverse of
//! the LEEF sink. `LEEF:1.0|Vendor|Product|Version|EventID|attrs` with tab-separated
//! attributes, or `LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|attrs` with the
//! declared delimiter (a character, or its hex code as `x5E` / `0x5E`). LEEF has no
//! escaping: a value runs to the next delimiter.

use serde_json::{Map, Value, json};

use super::cef::{fill, header_context, marker, severity, signature_action};
use super::{Ctx, set};
use crate::event::{DecodeError, EventClass, SecurityEvent};

/// LEEF attributes and the event fields they fill (the LEEF sink writes the same).
pub const TABLE: &[set::Mapping] = &[
    ("devTime", "time"),
    ("action", "action"),
    ("msg", "message"),
    ("identHostName", "host.name"),
    ("src", "source.address"),
    ("srcPort", "source.port"),
    ("srcBytes", "source.bytes"),
    ("srcPackets", "source.packets"),
    ("dst", "destination.address"),
    ("dstPort", "destination.port"),
    ("dstBytes", "destination.bytes"),
    ("dstPackets", "destination.packets"),
    ("proto", "network.transport"),
    ("usrName", "user.name"),
    ("domain", "user.domain"),
    ("accountName", "user.target.name"),
    ("proc", "process.name"),
    ("pid", "process.pid"),
    ("cmdLine", "process.command_line"),
    ("fileName", "file.name"),
    ("filePath", "file.path"),
    ("fileSize", "file.size"),
    ("url", "url.full"),
    ("method", "http.method"),
    ("httpStatus", "http.status_code"),
    ("userAgent", "http.user_agent"),
    ("tenant", "tenant"),
];

/// Where a LEEF record starts in a line.
pub fn find(text: &str) -> Option<usize> {
    marker(text, "LEEF:")
}

/// The delimiter a LEEF 2.0 header declares.
fn delimiter(declared: &str) -> Option<char> {
    let hex = declared.strip_prefix("0x").or_else(|| declared.strip_prefix("x")).filter(|h| h.len() >= 2);
    match hex {
        Some(hex) => u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
        None => {
            let mut chars = declared.chars();
            let c = chars.next()?;
            chars.next().is_none().then_some(c)
        }
    }
}

/// Decodes one LEEF line.
pub fn decode(text: &str, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let unreadable = |reason: String| DecodeError::unreadable("leef", reason);
    let start = find(text).ok_or_else(|| unreadable("no `LEEF:` in the line".into()))?;
    let (header_time, header_host) = header_context(&text[..start], ctx);
    let record = &text[start + 5..];
    let mut parts = record.splitn(6, '|');
    let mut next = |what: &str| parts.next().ok_or_else(|| unreadable(format!("the header has no {what}")));
    let version = next("version")?.to_owned();
    let (vendor, product, product_version, event_id) = (
        next("vendor")?.to_owned(),
        next("product")?.to_owned(),
        next("product version")?.to_owned(),
        next("event id")?.to_owned(),
    );
    let rest = parts.next().unwrap_or("");
    let (delim, attrs) = if version.starts_with('2') {
        let (declared, attrs) =
            rest.split_once('|').ok_or_else(|| unreadable("a LEEF 2.0 header has no delimiter field".into()))?;
        let delim = if declared.is_empty() {
            '\t'
        } else {
            delimiter(declared)
                .ok_or_else(|| unreadable(format!("delimiter `{declared}` is not one character or a hex code")))?
        };
        (delim, attrs)
    } else {
        ('\t', rest)
    };
    let mut pairs = Map::new();
    for (i, attr) in attrs.split(delim).enumerate() {
        if attr.trim().is_empty() {
            continue;
        }
        let (key, value) =
            attr.split_once('=').ok_or_else(|| unreadable(format!("attribute {} (`{attr}`) has no `=`", i + 1)))?;
        pairs.insert(key.trim().to_owned(), Value::String(value.to_owned()));
    }
    let mut e = ctx.event(EventClass::Other);
    e.provider = Some(format!("{vendor}.{product}").to_ascii_lowercase().replace(' ', "_"));
    if let Some(t) = header_time {
        e.time = t;
    }
    if let Some(host) = header_host {
        set::put_str(&mut e, "host.name", &host);
    }
    fill(&mut e, &pairs, TABLE);
    if let Some(s) = pairs.get("sev").and_then(Value::as_str).and_then(severity) {
        e.severity = s;
    }
    if e.action.is_none() {
        e.action = signature_action(&event_id, pairs.get("cat").and_then(Value::as_str).unwrap_or(""));
    }
    e.attributes.insert(
        "leef".into(),
        json!({ "version": version, "vendor": vendor, "product": product, "product_version": product_version,
                "event_id": event_id, "attributes": pairs }),
    );
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;

    fn decode_line(line: &str) -> Result<SecurityEvent, DecodeError> {
        decode(line, &crate::source::decode::test_ctx())
    }

    #[test]
    fn both_versions_and_their_delimiters() {
        let e = decode_line("LEEF:1.0|Microsoft|MSExchange|4.0 SP1|15345|src=192.0.2.0\tdst=172.50.123.1\tsev=5\tcat=anomaly\tusrName=joe.black")
            .expect("1.0");
        assert_eq!(
            (e.severity, e.user.as_ref().and_then(|u| u.name.as_deref())),
            (Severity::Medium, Some("joe.black"))
        );
        assert_eq!(e.action.as_deref(), Some("15345"));
        let e = decode_line("<13>Jan 18 11:07:53 qradar LEEF:2.0|Lancope|StealthWatch|1.0|41|x5E|src=10.0.1.8^dstPort=443^devTime=1767225600000^msg=a=b")
            .expect("2.0");
        assert_eq!(e.destination.as_ref().and_then(|d| d.port), Some(443));
        assert_eq!(e.time.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(e.message.as_deref(), Some("a=b"));
        assert_eq!(e.host.as_ref().and_then(|h| h.name.as_deref()), Some("qradar"));
        let err = decode_line("LEEF:2.0|V|P|1|41|^|src=1.2.3.4^oops").expect_err("no =");
        assert_eq!(err.to_string(), "not readable as leef: attribute 2 (`oops`) has no `=`");
    }
}
