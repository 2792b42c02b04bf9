//! Windows event XML: one `<Event>` (as a forwarded event, `wevtutil qe /f:xml`, or a
//! Sysmon-for-Linux syslog message), or many inside any wrapper (`<Events>`).
//!
//! A document with a DTD is refused outright: without one, no entity other than XML's
//! five and character references can exist, so entity expansion ("billion laughs") and
//! external entities cannot happen. Nesting is bounded by the ingest depth limit.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde_json::{Map, Value};

use super::super::Ctx;
use crate::event::{DecodeError, SecurityEvent};

/// What the reader is inside of.
#[derive(Debug, Default)]
struct Current {
    fields: Map<String, Value>,
    /// Element names from `<Event>` down.
    path: Vec<String>,
    /// The `Name` of the `<Data>` element being read.
    data_name: Option<String>,
    /// Unnamed `<Data>` values, in order.
    unnamed: Vec<Value>,
    text: String,
}

fn unreadable(reason: impl Into<String>) -> DecodeError {
    DecodeError::unreadable("windows", reason)
}

/// References as producers write them by mistake, made well-formed: Sysmon for Linux
/// writes `&lt unknown process&gt ` (no `;`), others a bare `&`. A known entity missing its
/// `;` gets it; any other `&` that starts no reference becomes `&amp;`.
fn repair_references(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('&') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name_len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'#').count();
        let name = &after[..name_len];
        let closed = after[name_len..].starts_with(';');
        let known = matches!(name, "lt" | "gt" | "amp" | "quot" | "apos");
        let char_ref = name.starts_with('#') && name.len() > 1;
        if closed && (known || char_ref) {
            out.push('&');
        } else if known {
            out.push('&');
            out.push_str(name);
            out.push(';');
            rest = &after[name_len..];
            continue;
        } else {
            out.push_str("&amp;");
        }
        rest = after;
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Decodes every `<Event>` of a document: (0-based position, result). An event cut short
/// (a syslog relay truncating long messages) is decoded from what arrived and tagged
/// `truncated`.
pub fn decode(text: &str, ctx: &Ctx<'_>) -> Vec<(usize, Result<SecurityEvent, DecodeError>)> {
    let repaired = repair_references(text);
    let text = repaired.as_ref();
    let mut out = Vec::new();
    let mut reader = Reader::from_str(text);
    let mut current: Option<Current> = None;
    let mut depth = 0usize;
    let limit = ctx.options.limits.max_depth;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => {
                let at = reader.error_position();
                out.push((out.len(), Err(DecodeError::Syntax { column: at as usize + 1, reason: e.to_string() })));
                return out;
            }
        };
        match event {
            Event::DocType(_) => {
                out.push((
                    out.len(),
                    Err(unreadable("XML with a DTD (`<!DOCTYPE`) is refused: no entity is expanded")),
                ));
                return out;
            }
            Event::Start(start) => {
                depth += 1;
                if depth > limit {
                    out.push((
                        out.len(),
                        Err(DecodeError::TooDeep { limit, offset: reader.buffer_position() as usize }),
                    ));
                    return out;
                }
                let name = local_name(&start);
                if name == "Event" && current.is_none() {
                    current = Some(Current::default());
                }
                if let Some(c) = current.as_mut() {
                    open(c, &name, &start);
                }
            }
            Event::Empty(start) => {
                if let Some(c) = current.as_mut() {
                    let name = local_name(&start);
                    open(c, &name, &start);
                    close(c);
                }
            }
            Event::Text(t) => {
                if let Some(c) = current.as_mut() {
                    match t.xml10_content() {
                        Ok(text) => c.text.push_str(&text),
                        Err(e) => {
                            out.push((out.len(), Err(unreadable(format!("undecodable text: {e}")))));
                            return out;
                        }
                    }
                }
            }
            Event::CData(t) => {
                if let Some(c) = current.as_mut() {
                    match t.xml10_content() {
                        Ok(text) => c.text.push_str(&text),
                        Err(e) => {
                            out.push((out.len(), Err(unreadable(format!("undecodable CDATA: {e}")))));
                            return out;
                        }
                    }
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => {
                        let name = r.xml10_content().unwrap_or_default();
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => s.to_owned(),
                            None => {
                                out.push((out.len(), Err(unreadable(format!("undefined entity `&{name};`")))));
                                return out;
                            }
                        }
                    }
                    Err(e) => {
                        out.push((out.len(), Err(unreadable(format!("bad character reference: {e}")))));
                        return out;
                    }
                };
                if let Some(c) = current.as_mut() {
                    c.text.push_str(&resolved);
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                let done = current.as_ref().is_some_and(|c| c.path.len() == 1);
                if let Some(c) = current.as_mut() {
                    close(c);
                }
                if done {
                    let mut c = current.take().expect("checked");
                    if !c.unnamed.is_empty() {
                        c.fields.insert("Data".into(), Value::Array(c.unnamed));
                    }
                    out.push((out.len(), super::map(c.fields, ctx)));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(mut c) = current.take() {
        // Keep what arrived, the element being read included.
        while !c.path.is_empty() {
            close(&mut c);
        }
        let result = if c.fields.contains_key("EventID") {
            super::map(c.fields, ctx).map(|mut e| {
                e.tags.push("truncated".into());
                e
            })
        } else {
            Err(unreadable("the document ends inside an `<Event>` before its EventID"))
        };
        out.push((out.len(), result));
    }
    if out.is_empty() {
        out.push((0, Err(unreadable("no `<Event>` element in the document"))));
    }
    out
}

fn local_name(start: &BytesStart<'_>) -> String {
    String::from_utf8_lossy(start.local_name().as_ref()).into_owned()
}

fn attribute(start: &BytesStart<'_>, name: &str) -> Option<String> {
    start
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name.as_bytes())
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Explicit1_0).ok().map(|v| v.into_owned()))
}

/// An element opens: System attributes are read from it.
fn open(c: &mut Current, name: &str, start: &BytesStart<'_>) {
    c.path.push(name.to_owned());
    c.text.clear();
    let in_system = c.path.len() == 3 && c.path[1] == "System";
    if in_system {
        let attrs: &[(&str, &str)] = match name {
            "Provider" => {
                &[("Name", "Provider_Name"), ("Guid", "Provider_Guid"), ("EventSourceName", "EventSourceName")]
            }
            "TimeCreated" => &[("SystemTime", "TimeCreated")],
            "Execution" => &[("ProcessID", "ProcessID"), ("ThreadID", "ThreadID")],
            "Security" => &[("UserID", "UserID")],
            "Correlation" => &[("ActivityID", "ActivityID")],
            _ => &[],
        };
        for (attr, key) in attrs {
            if let Some(v) = attribute(start, attr) {
                c.fields.insert((*key).into(), Value::String(v));
            }
        }
    }
    if name == "Data" {
        c.data_name = attribute(start, "Name");
    }
}

/// An element closes: its text goes to the field it names.
fn close(c: &mut Current) {
    let Some(name) = c.path.pop() else { return };
    let text = std::mem::take(&mut c.text);
    let parent = c.path.last().map(String::as_str);
    match (c.path.len(), parent) {
        // <Event><System><X>text</X>
        (2, Some("System")) if !text.trim().is_empty() => {
            c.fields.insert(name, Value::String(text.trim().to_owned()));
        }
        // <Event><EventData><Data Name="X">text</Data>
        (2, Some("EventData")) if name == "Data" => match c.data_name.take() {
            Some(key) => {
                c.fields.insert(key, Value::String(text));
            }
            None if !text.is_empty() => c.unnamed.push(Value::String(text)),
            None => {}
        },
        // <Event><UserData><Wrapper><X>text</X>
        (3, _) if c.path[1] == "UserData" => {
            c.fields.insert(name, Value::String(text));
        }
        // <Event><RenderingInfo><Message>text</Message>
        (2, Some("RenderingInfo")) if name == "Message" => {
            c.fields.insert("Message".into(), Value::String(text));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventClass;

    fn decode_doc(text: &str) -> Vec<(usize, Result<SecurityEvent, DecodeError>)> {
        decode(text, &crate::source::decode::test_ctx())
    }

    #[test]
    fn events_read_with_entities_and_user_data() {
        let doc = r#"<Events><Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System><Provider Name="Microsoft-Windows-Sysmon"/><EventID>1</EventID><TimeCreated SystemTime="2022-05-13T08:54:05.123Z"/><Channel>Microsoft-Windows-Sysmon/Operational</Channel><Computer>WS1</Computer></System><EventData><Data Name="Image">C:\Windows\cmd.exe</Data><Data Name="CommandLine">cmd /c "echo a &amp; b &#x41;"</Data></EventData></Event>
<Event><System><Provider Name="Microsoft-Windows-Eventlog"/><EventID>1102</EventID><Channel>Security</Channel><Computer>DC01</Computer></System><UserData><LogFileCleared xmlns="x"><SubjectUserName>mallory</SubjectUserName></LogFileCleared></UserData></Event></Events>"#;
        let events = decode_doc(doc);
        assert_eq!(events.len(), 2);
        let e = events[0].1.as_ref().expect("first");
        assert_eq!(e.process.as_ref().and_then(|p| p.command_line.as_deref()), Some("cmd /c \"echo a & b A\""));
        assert_eq!(e.time.to_rfc3339(), "2022-05-13T08:54:05.123+00:00");
        let e = events[1].1.as_ref().expect("second");
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Audit, Some("audit_log_cleared")));
        assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("mallory"));
    }

    #[test]
    fn bombs_and_broken_documents_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><Event><System><EventID>&lol2;</EventID></System></Event>"#;
        let result = decode_doc(bomb);
        assert_eq!(result.len(), 1);
        assert!(result[0].1.as_ref().is_err_and(|e| e.to_string().contains("DTD")), "{result:?}");
        // Without a DTD no entity can be defined: an unknown one is read as the text it is.
        let undefined = decode_doc(
            "<Event><System><EventID>1</EventID></System><EventData><Data Name=\"X\">&lol;</Data></EventData></Event>",
        );
        let e = undefined[0].1.as_ref().expect("decodes");
        assert_eq!(e.attributes["windows"]["X"], "&lol;");
        let truncated = decode_doc("<Event><System><EventID>4624</EventID>");
        let event = truncated[0].1.as_ref().expect("what arrived is kept");
        assert!(event.tags.contains(&"truncated".to_owned()));
        assert!(decode_doc("<Event><System><Channel>Security")[0].1.is_err(), "no EventID: nothing to map");
        let repaired = decode_doc(
            "<Event><System><EventID>1</EventID></System><EventData><Data Name=\"Image\">&lt unknown process&gt </Data><Data Name=\"CommandLine\">a && b</Data></EventData></Event>",
        );
        let e = repaired[0].1.as_ref().expect("repaired");
        assert_eq!(e.attributes["windows"]["Image"], "< unknown process> ");
        assert_eq!(e.attributes["windows"]["CommandLine"], "a && b");
        let deep = format!("<Event>{}{}</Event>", "<a>".repeat(100), "</a>".repeat(100));
        assert!(decode_doc(&deep)[0].1.as_ref().is_err_and(|e| matches!(e, DecodeError::TooDeep { .. })));
    }
}
