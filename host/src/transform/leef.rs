//! IBM QRadar LEEF 2.0: `LEEF:2.0|Vigil|Vigil|VERSION|EventID|^|key=value^key=value…`.
//!
//! The attribute delimiter is `^` (declared in the header). LEEF has no escaping, so the
//! delimiter and line breaks inside values are replaced by a space; header fields lose
//! their `|` the same way. `devTime` is epoch milliseconds (`devTimeFormat` is omitted).

use super::{Finding, FindingKind, Input, Output, PRODUCT, Transform, TransformError, VERSION, severity_10};
use crate::event::SecurityEvent;

const DELIMITER: char = '^';

#[derive(Debug)]
pub struct Leef;

impl Transform for Leef {
    fn name(&self) -> &'static str {
        "leef"
    }

    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError> {
        let (event_id, mut attrs) = match input {
            Input::Event(e) => event(e),
            Input::Finding(f) => finding(f),
        };
        attrs.insert(1, ("sev", severity_10(input).to_string()));
        let mut line =
            format!("LEEF:2.0|{PRODUCT}|{PRODUCT}|{}|{}|{DELIMITER}|", clean(VERSION, '|'), clean(&event_id, '|'));
        for (i, (key, value)) in attrs.iter().enumerate() {
            if i > 0 {
                line.push(DELIMITER);
            }
            line.push_str(key);
            line.push('=');
            line.push_str(&clean(value, DELIMITER));
        }
        Ok(Output::Text(line))
    }
}

fn clean(value: &str, delimiter: char) -> String {
    value.chars().map(|c| if c == delimiter || c == '\n' || c == '\r' || c == '\t' { ' ' } else { c }).collect()
}

type Attrs = Vec<(&'static str, String)>;

fn push(attrs: &mut Attrs, key: &'static str, value: Option<impl ToString>) {
    if let Some(v) = value {
        attrs.push((key, v.to_string()));
    }
}

fn event(e: &SecurityEvent) -> (String, Attrs) {
    let event_id = match &e.action {
        Some(action) => format!("{}:{action}", e.class),
        None => e.class.to_string(),
    };
    let mut a = Attrs::new();
    push(&mut a, "devTime", Some(e.time.timestamp_millis()));
    push(&mut a, "cat", Some(e.class));
    push(&mut a, "identHostName", e.host.as_ref().and_then(|h| h.name.as_ref()));
    if let Some(s) = &e.source {
        push(&mut a, "src", s.ip);
        push(&mut a, "srcPort", s.port);
        push(&mut a, "srcBytes", s.bytes);
    }
    if let Some(d) = &e.destination {
        push(&mut a, "dst", d.ip);
        push(&mut a, "dstPort", d.port);
        push(&mut a, "dstBytes", d.bytes);
    }
    push(&mut a, "proto", e.network.as_ref().and_then(|n| n.transport.as_ref()));
    push(&mut a, "usrName", e.user.as_ref().and_then(|u| u.name.as_ref()));
    push(&mut a, "domain", e.user.as_ref().and_then(|u| u.domain.as_ref()));
    push(&mut a, "action", e.action.as_ref());
    push(&mut a, "outcome", Some(e.outcome.as_str()));
    if let Some(p) = &e.process {
        push(&mut a, "proc", p.name.as_ref());
        push(&mut a, "pid", p.pid);
        push(&mut a, "cmdLine", p.command_line.as_ref());
    }
    if let Some(f) = &e.file {
        push(&mut a, "fileName", f.name.as_ref());
        push(&mut a, "filePath", f.path.as_ref());
        push(&mut a, "fileSize", f.size);
    }
    push(&mut a, "url", e.url.as_ref().and_then(|u| u.full.as_ref()));
    if let Some(h) = &e.http {
        push(&mut a, "method", h.method.as_ref());
        push(&mut a, "httpStatus", h.status_code);
        push(&mut a, "userAgent", h.user_agent.as_ref());
    }
    push(&mut a, "tenant", e.tenant.as_ref());
    push(&mut a, "externalId", Some(e.id));
    push(&mut a, "msg", e.message.as_ref());
    (event_id, a)
}

fn finding(f: &Finding) -> (String, Attrs) {
    let (action, status) = match &f.kind {
        FindingKind::Alert => ("alert".to_owned(), None),
        FindingKind::Incident { change, status } => (format!("incident_{change}"), Some(status.clone())),
    };
    let mut a = Attrs::new();
    push(&mut a, "devTime", Some(f.time.timestamp_millis()));
    push(&mut a, "cat", f.category.as_ref());
    push(&mut a, "src", f.ips.iter().next());
    push(&mut a, "usrName", f.users.iter().next());
    push(&mut a, "identHostName", f.hosts.iter().next());
    push(&mut a, "action", Some(action));
    push(&mut a, "status", status);
    push(&mut a, "priority", Some(f.priority));
    push(&mut a, "count", Some(f.count));
    push(&mut a, "techniques", (!f.techniques.is_empty()).then(|| f.techniques.join(",")));
    push(&mut a, "dedupKey", Some(&f.dedup_key));
    push(&mut a, "externalId", Some(&f.id));
    push(&mut a, "msg", Some(&f.title));
    (f.rule_id.clone(), a)
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::check_golden;

    #[test]
    fn matches_the_golden_files() {
        check_golden(Format::Leef);
    }

    #[test]
    fn delimiters_in_values_cannot_split_attributes() {
        assert_eq!(super::clean("a^b\nc", '^'), "a b c");
    }
}
