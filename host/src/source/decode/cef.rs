//! ArcSight Common Event Format on input, bare or behind a syslog header: the inverse of
//! the CEF sink. `CEF:Version|Vendor|Product|Version|SignatureID|Name|Severity|ext`.
//!
//! Header fields unescape `\|` and `\\`; extension values `\=`, `\\`, `\n`, `\r` (and
//! `\|`, which some producers write). A value runs to the next ` key=`. A header with too
//! few fields, a dangling backslash or an extension token without a key is an error that
//! names the place; an unknown escape is kept as written.

use serde_json::{Map, Value, json};

use super::Ctx;
use super::set;
use crate::event::{DecodeError, EventClass, EventId, Outcome, SecurityEvent, Severity};

/// Extension keys and the event fields they fill (the CEF sink writes the same).
pub const TABLE: &[set::Mapping] = &[
    ("rt", "time"),
    ("end", "time"),
    ("act", "action"),
    ("msg", "message"),
    ("src", "source.address"),
    ("spt", "source.port"),
    ("shost", "source.domain"),
    ("out", "source.bytes"),
    ("dst", "destination.address"),
    ("dpt", "destination.port"),
    ("dhost", "destination.domain"),
    ("in", "destination.bytes"),
    ("proto", "network.transport"),
    ("app", "network.protocol"),
    ("suser", "user.name"),
    ("suid", "user.id"),
    ("sntdom", "user.domain"),
    ("duser", "user.target.name"),
    ("duid", "user.target.id"),
    ("dvchost", "host.name"),
    ("dvc", "host.ip"),
    ("sproc", "process.name"),
    ("spid", "process.pid"),
    ("fname", "file.name"),
    ("filePath", "file.path"),
    ("fsize", "file.size"),
    ("request", "url.full"),
    ("requestMethod", "http.method"),
    ("requestClientApplication", "http.user_agent"),
];

/// Custom-string and custom-number labels the sink writes, and their fields.
pub const LABELS: &[(&str, &str)] = &[
    ("command_line", "process.command_line"),
    ("tenant", "tenant"),
    ("provider", "provider"),
    ("http_status", "http.status_code"),
];

/// Where a CEF record starts in a line: at its start, or after a syslog header.
pub fn find(text: &str) -> Option<usize> {
    marker(text, "CEF:")
}

/// Where `marker` starts a record in `text`: at the start or after a space.
pub(super) fn marker(text: &str, marker: &str) -> Option<usize> {
    if text.starts_with(marker) {
        return Some(0);
    }
    text.match_indices(marker).find(|(at, _)| text.as_bytes()[at - 1] == b' ').map(|(at, _)| at)
}

/// The syslog header before a CEF or LEEF record: its time and host, when it has them.
pub(super) fn header_context(prefix: &str, ctx: &Ctx<'_>) -> (Option<chrono::DateTime<chrono::Utc>>, Option<String>) {
    if prefix.trim().is_empty() {
        return (None, None);
    }
    let e = crate::source::syslog::parse_header(&format!("{prefix}cef: -"), ctx.now, false);
    let time = (!e.tags.iter().any(|t| t == "syslog_no_header")).then_some(e.time);
    (time, e.host.and_then(|h| h.name))
}

/// Splits `text` at unescaped `|`, unescaping `\|` and `\\`; returns the first `n` fields
/// and the rest.
fn header_fields(text: &str, n: usize) -> Result<(Vec<String>, &str), String> {
    let mut fields = Vec::with_capacity(n);
    let mut field = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ ('|' | '\\'))) => field.push(escaped),
                Some((_, other)) => {
                    field.push('\\');
                    field.push(other);
                }
                None => return Err(format!("header ends in a dangling backslash at byte {at}")),
            },
            '|' => {
                fields.push(std::mem::take(&mut field));
                if fields.len() == n {
                    return Ok((fields, &text[at + 1..]));
                }
            }
            c => field.push(c),
        }
    }
    Err(format!("the header has {} of its {n} `|`-separated fields", fields.len() + usize::from(!field.is_empty())))
}

/// Parses `key=value key=value…`, where a value runs to the next ` key=`. An error says
/// where (a byte offset into `text`) and why.
pub fn extension(text: &str) -> Result<Vec<(String, String)>, (usize, String)> {
    let bytes = text.as_bytes();
    let mut pairs = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        while at < bytes.len() && bytes[at] == b' ' {
            at += 1;
        }
        if at >= bytes.len() {
            break;
        }
        let key_end =
            text[at..].find('=').map(|i| at + i).ok_or_else(|| (at, format!("`{}` has no `=`", &text[at..])))?;
        let key = &text[at..key_end];
        if key.is_empty() || !key.bytes().all(is_key_byte) {
            return Err((at, format!("`{key}` is not an extension key")));
        }
        let (value, next) = value_until_next_key(text, key_end + 1).map_err(|reason| (key_end + 1, reason))?;
        pairs.push((key.to_owned(), value));
        at = next;
    }
    Ok(pairs)
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'[' | b']')
}

/// The unescaped value starting at `start`, and where the next key starts.
fn value_until_next_key(text: &str, start: usize) -> Result<(String, usize), String> {
    let bytes = text.as_bytes();
    let mut value = String::new();
    let mut i = start;
    let mut chunk_start = start;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                value.push_str(&text[chunk_start..i]);
                match bytes.get(i + 1) {
                    Some(b'=') => value.push('='),
                    Some(b'\\') => value.push('\\'),
                    Some(b'|') => value.push('|'),
                    Some(b'n') => value.push('\n'),
                    Some(b'r') => value.push('\r'),
                    Some(_) => {
                        // Unknown escapes are kept as written.
                        value.push('\\');
                        i += 1;
                        chunk_start = i;
                        continue;
                    }
                    None => {
                        return Err(format!("the value of `{}` ends in a dangling backslash", key_before(text, start)));
                    }
                }
                i += 2;
                chunk_start = i;
            }
            b' ' => {
                // A space followed by `key=` ends the value.
                let rest = &bytes[i + 1..];
                let key_len = rest.iter().take_while(|b| is_key_byte(**b)).count();
                if key_len > 0 && rest.get(key_len) == Some(&b'=') {
                    value.push_str(&text[chunk_start..i]);
                    return Ok((value, i + 1));
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    value.push_str(&text[chunk_start..]);
    Ok((value.trim_end().to_owned(), bytes.len()))
}

/// The key whose value starts at `start`.
fn key_before(text: &str, start: usize) -> &str {
    let before = &text[..start.saturating_sub(1)];
    before.rsplit(' ').next().unwrap_or(before)
}

/// The action a signature id names: `class:action` (as Vigil's sinks write it, `cat`
/// being the class) gives the action, the class alone none, any other id itself.
pub(super) fn signature_action(signature: &str, category: &str) -> Option<String> {
    if signature.is_empty() || signature == category {
        return None;
    }
    let action = match signature.split_once(':') {
        Some((class, action)) if class == category => action,
        _ => signature,
    };
    Some(action.to_owned())
}

/// A CEF or LEEF severity (0–10, or CEF's words) as a severity.
pub fn severity(text: &str) -> Option<Severity> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "unknown" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "very-high" | "very high" => Severity::Critical,
        n => match n.parse::<u8>().ok()? {
            0 | 1 => Severity::Info,
            2 | 3 => Severity::Low,
            4 | 5 => Severity::Medium,
            6 | 7 => Severity::High,
            _ => Severity::Critical,
        },
    })
}

/// A CEF/LEEF time: epoch milliseconds, or `MMM dd yyyy HH:mm:ss[.SSS]`, or RFC 3339.
pub fn time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = text.trim();
    if let Some(t) = set::parse_time(text) {
        return Some(t);
    }
    for format in ["%b %d %Y %H:%M:%S%.f", "%b %d %Y %H:%M:%S", "%b %d %H:%M:%S %Y"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// Fills an event from key/value pairs through a table and the label convention.
pub(super) fn fill(e: &mut SecurityEvent, pairs: &Map<String, Value>, table: &[set::Mapping]) {
    for (from, to) in table {
        let Some(v) = pairs.get(*from) else { continue };
        if *to == "time" {
            if let Some(t) = v.as_str().and_then(time) {
                e.time = t;
            }
        } else {
            set::put(e, to, v);
        }
    }
    for (key, value) in pairs {
        // csNLabel / cnNLabel name what csN / cnN hold.
        let Some(slot) = key.strip_suffix("Label") else { continue };
        let Some(label) = value.as_str() else { continue };
        if let (Some((_, to)), Some(v)) = (LABELS.iter().find(|(l, _)| *l == label), pairs.get(slot)) {
            set::put(e, to, v);
        }
    }
    if let Some(outcome) = pairs.get("outcome").and_then(Value::as_str) {
        e.outcome = match outcome.to_ascii_lowercase().as_str() {
            "success" | "succeeded" | "allowed" | "allow" => Outcome::Success,
            "failure" | "failed" | "denied" | "deny" | "blocked" => Outcome::Failure,
            _ => e.outcome,
        };
    }
    if let Some(class) = pairs.get("cat").and_then(Value::as_str).and_then(EventClass::parse) {
        e.class = class;
    }
    if let Some(id) = pairs.get("externalId").and_then(Value::as_str).and_then(|s| s.parse::<EventId>().ok()) {
        e.id = id;
    }
}

/// Decodes one CEF line.
pub fn decode(text: &str, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let unreadable = |reason: String| DecodeError::unreadable("cef", reason);
    let start = find(text).ok_or_else(|| unreadable("no `CEF:` in the line".into()))?;
    let (header_time, header_host) = header_context(&text[..start], ctx);
    let record = &text[start + 4..];
    let (h, ext) = header_fields(record, 7).map_err(unreadable)?;
    let base = text.len() - ext.len();
    let pairs =
        extension(ext).map_err(|(at, reason)| unreadable(format!("extension at byte {}: {reason}", base + at)))?;
    let pairs: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let mut e = ctx.event(EventClass::Other);
    e.provider = Some(format!("{}.{}", h[1], h[2]).to_ascii_lowercase().replace(' ', "_"));
    if let Some(t) = header_time {
        e.time = t;
    }
    if let Some(host) = header_host {
        set::put_str(&mut e, "host.name", &host);
    }
    fill(&mut e, &pairs, TABLE);
    e.severity = severity(&h[6]).ok_or_else(|| unreadable(format!("severity `{}` is not 0–10 or a CEF word", h[6])))?;
    let category = pairs.get("cat").and_then(Value::as_str).unwrap_or("");
    if e.action.is_none() {
        e.action = signature_action(&h[4], category);
    }
    // Vigil's sink names a record without a message by its action or class.
    let named_after = |n: &str| n == category || Some(n) == e.action.as_deref();
    if e.message.is_none() && !h[5].is_empty() && !named_after(&h[5]) {
        e.message = Some(h[5].clone());
    }
    e.attributes.insert(
        "cef".into(),
        json!({ "version": h[0], "device_vendor": h[1], "device_product": h[2], "device_version": h[3],
                "signature_id": h[4], "name": h[5], "severity": h[6], "extension": pairs }),
    );
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_line(line: &str) -> Result<SecurityEvent, DecodeError> {
        decode(line, &crate::source::decode::test_ctx())
    }

    #[test]
    fn header_and_extension_escapes() {
        let e = decode_line(r"<134>Feb 12 10:00:00 fw01 CEF:0|Security|threat\|manager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232 msg=a \= b\\c\nd suser=j smith cs1Label=tenant cs1=acme")
            .expect("decodes");
        assert_eq!(e.severity, Severity::Critical);
        assert_eq!(e.message.as_deref(), Some("a = b\\c\nd"));
        assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("j smith"));
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.host.as_ref().and_then(|h| h.name.as_deref()), Some("fw01"));
        assert_eq!(e.attributes["cef"]["device_product"], "threat|manager");
        assert_eq!(e.action.as_deref(), Some("100"));
    }

    #[test]
    fn broken_records_name_the_place() {
        let err = decode_line("CEF:0|V|P|1|100|Name|5|src=10.0.0.1 msg=oops\\").expect_err("dangling");
        assert_eq!(
            err.to_string(),
            "not readable as cef: extension at byte 40: the value of `msg` ends in a dangling backslash"
        );
        let err = decode_line("CEF:0|V|P|1|100").expect_err("short");
        assert_eq!(err.to_string(), "not readable as cef: the header has 5 of its 7 `|`-separated fields");
        let err = decode_line("CEF:0|V|P|1|100|N|5|=x").expect_err("no key");
        assert!(err.to_string().contains("is not an extension key"), "{err}");
        let err = decode_line("CEF:0|V|P|1|100|N|urgent|src=1.2.3.4").expect_err("severity");
        assert!(err.to_string().contains("severity `urgent`"), "{err}");
    }
}
