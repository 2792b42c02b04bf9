//! ArcSight Common Event Format: `CEF:0|Vigil|Vigil|VERSION|SignatureID|Name|Severity|ext`.
//!
//! Header fields escape `\` and `|`; extension values escape `\` and `=` and carry
//! newlines as `\n`/`\r` (pipes are not escaped in extensions). Header fields are cut to
//! the lengths ArcSight accepts (class id 1,023, name 512).

use super::{Finding, FindingKind, Input, Output, PRODUCT, Transform, TransformError, VERSION, severity_10};
use crate::event::SecurityEvent;

#[derive(Debug)]
pub struct Cef;

impl Transform for Cef {
    fn name(&self) -> &'static str {
        "cef"
    }

    fn apply(&self, input: Input<'_>) -> Result<Output, TransformError> {
        let (signature, name, ext) = match input {
            Input::Event(e) => event(e),
            Input::Finding(f) => finding(f),
        };
        let mut line = format!(
            "CEF:0|{}|{}|{}|{}|{}|{}|",
            header(PRODUCT, 63),
            header(PRODUCT, 63),
            header(VERSION, 31),
            header(&signature, 1023),
            header(&name, 512),
            severity_10(input)
        );
        let mut first = true;
        for (key, value) in ext {
            if !first {
                line.push(' ');
            }
            first = false;
            line.push_str(key);
            line.push('=');
            extension(&mut line, &value);
        }
        Ok(Output::Text(line))
    }
}

/// Escapes a header field and cuts it to `max` characters.
pub(crate) fn header(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().take(max) {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Appends an escaped extension value.
pub(crate) fn extension(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

type Ext = Vec<(&'static str, String)>;

fn push(ext: &mut Ext, key: &'static str, value: Option<impl ToString>) {
    if let Some(v) = value {
        ext.push((key, v.to_string()));
    }
}

fn event(e: &SecurityEvent) -> (String, String, Ext) {
    let signature = match &e.action {
        Some(action) => format!("{}:{action}", e.class),
        None => e.class.to_string(),
    };
    let name = e.message.clone().or_else(|| e.action.clone()).unwrap_or_else(|| e.class.to_string());
    let mut ext = Ext::new();
    push(&mut ext, "rt", Some(e.time.timestamp_millis()));
    push(&mut ext, "externalId", Some(e.id));
    push(&mut ext, "cat", Some(e.class));
    push(&mut ext, "act", e.action.as_ref());
    push(&mut ext, "outcome", Some(e.outcome.as_str()));
    if let Some(s) = &e.source {
        push(&mut ext, "src", s.ip);
        push(&mut ext, "spt", s.port);
        push(&mut ext, "shost", s.domain.as_ref());
        push(&mut ext, "out", s.bytes);
    }
    if let Some(d) = &e.destination {
        push(&mut ext, "dst", d.ip);
        push(&mut ext, "dpt", d.port);
        push(&mut ext, "dhost", d.domain.as_ref());
        push(&mut ext, "in", d.bytes);
    }
    if let Some(n) = &e.network {
        push(&mut ext, "proto", n.transport.as_ref());
        push(&mut ext, "app", n.protocol.as_ref());
    }
    if let Some(u) = &e.user {
        push(&mut ext, "suser", u.name.as_ref());
        push(&mut ext, "suid", u.id.as_ref());
        push(&mut ext, "sntdom", u.domain.as_ref());
        if let Some(t) = &u.target {
            push(&mut ext, "duser", t.name.as_ref());
            push(&mut ext, "duid", t.id.as_ref());
        }
    }
    if let Some(h) = &e.host {
        push(&mut ext, "dvchost", h.name.as_ref());
        push(&mut ext, "dvc", h.ip);
    }
    if let Some(p) = &e.process {
        push(&mut ext, "sproc", p.name.as_ref());
        push(&mut ext, "spid", p.pid);
        push(&mut ext, "cs4Label", p.command_line.as_ref().map(|_| "command_line"));
        push(&mut ext, "cs4", p.command_line.as_ref());
    }
    if let Some(f) = &e.file {
        push(&mut ext, "fname", f.name.as_ref());
        push(&mut ext, "filePath", f.path.as_ref());
        push(&mut ext, "fsize", f.size);
        push(&mut ext, "fileHash", f.hash.as_ref().and_then(|h| h.sha256.clone().or(h.sha1.clone()).or(h.md5.clone())));
    }
    push(&mut ext, "request", e.url.as_ref().and_then(|u| u.full.as_ref()));
    if let Some(h) = &e.http {
        push(&mut ext, "requestMethod", h.method.as_ref());
        push(&mut ext, "requestClientApplication", h.user_agent.as_ref());
        push(&mut ext, "cn1Label", h.status_code.map(|_| "http_status"));
        push(&mut ext, "cn1", h.status_code);
    }
    push(&mut ext, "cs1Label", e.tenant.as_ref().map(|_| "tenant"));
    push(&mut ext, "cs1", e.tenant.as_ref());
    push(&mut ext, "cs2Label", e.provider.as_ref().map(|_| "provider"));
    push(&mut ext, "cs2", e.provider.as_ref());
    push(&mut ext, "msg", e.message.as_ref());
    (signature, name, ext)
}

fn finding(f: &Finding) -> (String, String, Ext) {
    let (act, status) = match &f.kind {
        FindingKind::Alert => ("alert".to_owned(), None),
        FindingKind::Incident { change, status } => (format!("incident_{change}"), Some(status.clone())),
    };
    let mut ext = Ext::new();
    push(&mut ext, "rt", Some(f.time.timestamp_millis()));
    push(&mut ext, "start", Some(f.first_time.timestamp_millis()));
    push(&mut ext, "end", Some(f.time.timestamp_millis()));
    push(&mut ext, "externalId", Some(&f.id));
    push(&mut ext, "cat", f.category.as_ref());
    push(&mut ext, "act", Some(act));
    push(&mut ext, "cnt", Some(f.count));
    push(&mut ext, "src", f.ips.iter().next());
    push(&mut ext, "suser", f.users.iter().next());
    push(&mut ext, "dvchost", f.hosts.iter().next());
    push(&mut ext, "cs1Label", status.as_ref().map(|_| "status"));
    push(&mut ext, "cs1", status);
    push(&mut ext, "cs2Label", (!f.techniques.is_empty()).then_some("techniques"));
    push(&mut ext, "cs2", (!f.techniques.is_empty()).then(|| f.techniques.join(",")));
    push(&mut ext, "cs3Label", Some("dedup_key"));
    push(&mut ext, "cs3", Some(&f.dedup_key));
    push(&mut ext, "cs5Label", Some("priority"));
    push(&mut ext, "cs5", Some(f.priority));
    push(&mut ext, "msg", Some(&f.title));
    (f.rule_id.clone(), f.title.clone(), ext)
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::testing::check_golden;
    use super::*;

    #[test]
    fn escapes_header_and_extension_differently() {
        assert_eq!(header("a|b\\c=d\ne", 100), "a\\|b\\\\c=d e");
        let mut out = String::new();
        extension(&mut out, "a|b\\c=d\ne\rf");
        assert_eq!(out, "a|b\\\\c\\=d\\ne\\rf");
        assert_eq!(header("ééé", 2), "éé", "cut by characters, not bytes");
    }

    #[test]
    fn matches_the_golden_files() {
        check_golden(Format::Cef);
    }
}
