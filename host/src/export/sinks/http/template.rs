//! Body and header templates of the `http` sink: text with `{{ name }}` placeholders.
//!
//! | placeholder | value |
//! |---|---|
//! | `record` | the record as formatted, inserted as is (a JSON document, a CEF line) |
//! | `record_json` | the record as a JSON string literal (quoted and escaped) |
//! | `id`, `kind`, `seq`, `host`, `severity` | the record's id, `event`/`alert`/`incident`, log sequence, host, 0–10 severity |
//! | `time` | the record's time, RFC 3339 |
//! | `count` | records in the request (headers only) |
//!
//! Values other than `record` and `record_json` are inserted raw in headers and JSON-escaped
//! (without quotes) in bodies, so `"{{ host }}"` is always a valid JSON string.

use std::io::Write;

use crate::export::Item;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Record,
    RecordJson,
    Id,
    Kind,
    Seq,
    Host,
    Severity,
    Time,
    Count,
}

impl Var {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "record" => Self::Record,
            "record_json" => Self::RecordJson,
            "id" => Self::Id,
            "kind" => Self::Kind,
            "seq" => Self::Seq,
            "host" => Self::Host,
            "severity" => Self::Severity,
            "time" => Self::Time,
            "count" => Self::Count,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Where a template is used: bodies escape values for JSON, headers do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// A request body.
    Body,
    /// A header value.
    Header,
}

impl Template {
    /// Parses `text`; the error names the bad placeholder.
    pub fn parse(text: &str, context: Context) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` at byte {}", text.len() - rest.len() + start))?;
            let name = after[..end].trim();
            let var = Var::parse(name).ok_or_else(|| format!("unknown placeholder `{{{{ {name} }}}}`"))?;
            match (context, var) {
                (Context::Header, Var::Record | Var::RecordJson) => {
                    return Err(format!("`{{{{ {name} }}}}` cannot be used in a header"));
                }
                (Context::Body, Var::Count) => return Err("`{{ count }}` can only be used in headers".into()),
                _ => parts.push(Part::Var(var)),
            }
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Renders a body template for one record.
    pub fn render_body(&self, out: &mut Vec<u8>, item: &Item) {
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Var(Var::Record) => out.extend_from_slice(&item.body),
                Part::Var(Var::RecordJson) => {
                    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(&item.body));
                }
                Part::Var(var) => {
                    let value = scalar(*var, item, 1);
                    let quoted = serde_json::to_string(&value).unwrap_or_default();
                    out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
                }
            }
        }
    }

    /// Renders a header template from the first record of a request of `count`.
    pub fn render_header(&self, item: &Item, count: usize) -> String {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Var(var) => {
                    let _ = write!(out, "{}", scalar(*var, item, count));
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn scalar(var: Var, item: &Item, count: usize) -> String {
    match var {
        Var::Id => item.id.clone(),
        Var::Kind => item.kind.as_str().to_owned(),
        Var::Seq => item.seq.to_string(),
        Var::Host => item.host.clone().unwrap_or_default(),
        Var::Severity => item.severity.to_string(),
        Var::Time => item.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        Var::Count => count.to_string(),
        Var::Record | Var::RecordJson => String::from_utf8_lossy(&item.body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        Item {
            seq: 3,
            kind: crate::event::RecordKind::Incident,
            id: "inc-1".into(),
            time: chrono::DateTime::UNIX_EPOCH,
            host: Some("h\"1".into()),
            severity: 9,
            body: b"{\"title\":\"Brute force\"}".to_vec(),
            json: true,
        }
    }

    #[test]
    fn renders_bodies_with_json_escaping() {
        let t = Template::parse(r#"{"text": {{ record_json }}, "host": "{{host}}", "raw": {{record}}}"#, Context::Body)
            .expect("parse");
        let mut out = Vec::new();
        t.render_body(&mut out, &item());
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["text"], "{\"title\":\"Brute force\"}");
        assert_eq!(value["host"], "h\"1");
        assert_eq!(value["raw"]["title"], "Brute force");
    }

    #[test]
    fn headers_and_errors() {
        let t = Template::parse("vigil-{{kind}}-{{ count }}", Context::Header).expect("parse");
        assert_eq!(t.render_header(&item(), 5), "vigil-incident-5");
        assert!(Template::parse("{{ nope }}", Context::Body).expect_err("unknown").contains("nope"));
        assert!(Template::parse("{{ record }}", Context::Header).is_err());
        assert!(Template::parse("{{ count }}", Context::Body).is_err());
        assert!(Template::parse("{{ id ", Context::Body).expect_err("unclosed").contains("unclosed"));
    }
}
