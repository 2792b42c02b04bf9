//! Zeek logs, in JSON (`LogAscii::use_json`, one object per line with `_path`) or in the
//! default TSV with its `#separator`/`#path`/`#fields`/`#types` header. Each log type
//! (`conn`, `dns`, `http`, `ssl`, `ssh`, `kerberos`, `ntlm`, `ftp`, `smb_*`, `dce_rpc`,
//! `files`, `notice`, …) maps to its class; the connection 4-tuple `id.*` to source and
//! destination. The row stays under `attributes.zeek` by Zeek's field names.

use serde_json::{Map, Value};

use super::set::{self, Mapping};
use super::{Ctx, Decoded, finish, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};

/// Fields every log type shares.
pub const TABLE: &[Mapping] = &[
    ("ts", "time"),
    ("id.orig_h", "source.ip"),
    ("id.orig_p", "source.port"),
    ("id.resp_h", "destination.ip"),
    ("id.resp_p", "destination.port"),
    ("proto", "network.transport"),
    ("service", "network.protocol"),
    ("orig_bytes", "source.bytes"),
    ("resp_bytes", "destination.bytes"),
    ("orig_pkts", "source.packets"),
    ("resp_pkts", "destination.packets"),
    ("query", "url.domain"),
    ("method", "http.method"),
    ("host", "url.domain"),
    ("uri", "url.path"),
    ("user_agent", "http.user_agent"),
    ("status_code", "http.status_code"),
    ("request_body_len", "http.request_bytes"),
    ("response_body_len", "http.response_bytes"),
    ("server_name", "destination.domain"),
    ("username", "user.name"),
    ("domainname", "user.domain"),
    ("user", "user.name"),
    ("client", "user.name"),
    ("filename", "file.name"),
    ("path", "file.path"),
    ("md5", "file.hash.md5"),
    ("sha1", "file.hash.sha1"),
    ("sha256", "file.hash.sha256"),
    ("total_bytes", "file.size"),
    ("src", "source.ip"),
    ("dst", "destination.ip"),
    ("p", "destination.port"),
    ("msg", "message"),
];

/// The class and action of each log type.
pub const LOGS: &[(&str, EventClass, &str)] = &[
    ("conn", EventClass::Network, "connection"),
    ("dns", EventClass::Dns, "dns_query"),
    ("http", EventClass::Http, "http_request"),
    ("ssl", EventClass::Network, "tls_handshake"),
    ("ssh", EventClass::Authentication, "logon"),
    ("kerberos", EventClass::Authentication, "kerberos_ticket_request"),
    ("ntlm", EventClass::Authentication, "ntlm_logon"),
    ("ftp", EventClass::Network, "ftp_command"),
    ("smb_mapping", EventClass::Network, "smb_share_mapped"),
    ("smb_files", EventClass::File, "smb_file_access"),
    ("dce_rpc", EventClass::Network, "dce_rpc_call"),
    ("files", EventClass::File, "file_transferred"),
    ("pe", EventClass::File, "pe_file_seen"),
    ("x509", EventClass::Network, "certificate_seen"),
    ("notice", EventClass::Finding, "notice"),
    ("weird", EventClass::Network, "protocol_anomaly"),
    ("known_services", EventClass::Network, "service_seen"),
    ("ntp", EventClass::Network, "ntp"),
    ("ocsp", EventClass::Network, "ocsp"),
];

/// Decodes one Zeek JSON row.
pub fn decode_json(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let path = json::text(&record, "_path").unwrap_or_else(|| guess_path(&record).to_owned());
    row(&path, record, ctx)
}

/// The log type of a JSON row without `_path`, from its fields.
fn guess_path(r: &Value) -> &'static str {
    let has = |k: &str| json::get(r, k).is_some();
    if has("query") && has("qtype_name") || has("rcode_name") {
        "dns"
    } else if has("method") && has("uri") {
        "http"
    } else if has("server_name") || has("ja3") {
        "ssl"
    } else if has("request_type") && has("service") {
        "kerberos"
    } else if has("conn_state") || has("duration") && has("id.orig_h") {
        "conn"
    } else if has("note") {
        "notice"
    } else {
        "unknown"
    }
}

/// Maps one row (JSON, or a TSV row read into JSON) of log type `path`.
fn row(path: &str, record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    if json::get(&record, "ts").is_none() {
        return Err(DecodeError::missing("ts"));
    }
    let (class, action) =
        LOGS.iter().find(|(p, ..)| *p == path).map_or((EventClass::Network, path), |(_, c, a)| (*c, *a));
    let mut e = ctx.event(class);
    e.provider = Some(format!("zeek.{path}"));
    e.action = Some(action.to_owned());
    set::apply(&mut e, &record, TABLE);
    match path {
        "conn" => {
            let local = (json::bool(&record, "local_orig"), json::bool(&record, "local_resp"));
            let direction = match local {
                (Some(true), Some(false)) => Some("outbound"),
                (Some(false), Some(true)) => Some("inbound"),
                (Some(true), Some(true)) => Some("internal"),
                (Some(false), Some(false)) => Some("external"),
                _ => None,
            };
            if let Some(direction) = direction {
                set::put_str(&mut e, "network.direction", direction);
            }
        }
        "dns" => {
            e.outcome = match json::str(&record, "rcode_name") {
                Some("NOERROR") => Outcome::Success,
                Some(_) => Outcome::Failure,
                None => Outcome::Unknown,
            };
            if let Some(name) = json::str(&record, "query") {
                let question = serde_json::json!({ "name": name, "type": json::get(&record, "qtype_name") });
                e.attributes.insert("dns".into(), serde_json::json!({ "question": question }));
            }
        }
        "http" => {
            if let (Some(host), Some(uri)) = (json::str(&record, "host"), json::str(&record, "uri")) {
                set::put_str(&mut e, "url.full", &format!("http://{host}{uri}"));
                if let Some((path, query)) = uri.split_once('?') {
                    set::put_str(&mut e, "url.path", path);
                    set::put_str(&mut e, "url.query", query);
                }
            }
        }
        "ssl" => e.outcome = outcome(json::bool(&record, "established")),
        "ssh" => {
            set::put_str(&mut e, "network.protocol", "ssh");
            e.outcome = outcome(json::bool(&record, "auth_success"));
        }
        "kerberos" => {
            // `client` is `user/REALM`.
            if let Some((user, realm)) = json::str(&record, "client").and_then(|c| c.split_once('/')) {
                set::put_str(&mut e, "user.name", user);
                set::put_str(&mut e, "user.domain", realm);
            }
            set::put_str(&mut e, "network.protocol", "kerberos");
            e.outcome = outcome(json::bool(&record, "success"));
        }
        "ntlm" => e.outcome = outcome(json::bool(&record, "success")),
        "ftp" if json::str(&record, "command") == Some("PASS") => {
            e.class = EventClass::Authentication;
            e.action = Some("logon".into());
            set::put_str(&mut e, "network.protocol", "ftp");
            e.outcome = match json::uint(&record, "reply_code") {
                Some(230) => Outcome::Success,
                Some(530) => Outcome::Failure,
                _ => Outcome::Unknown,
            };
        }
        "notice" => {
            if let Some(note) = json::text(&record, "note") {
                e.action = Some(note);
            }
            e.severity = Severity::Medium;
        }
        _ => {}
    }
    e.attributes.insert("zeek".into(), record);
    Ok(e)
}

fn outcome(flag: Option<bool>) -> Outcome {
    match flag {
        Some(true) => Outcome::Success,
        Some(false) => Outcome::Failure,
        None => Outcome::Unknown,
    }
}

/// The state of a TSV log: its header, as read so far.
#[derive(Debug)]
pub struct Tsv {
    separator: String,
    set_separator: String,
    empty: String,
    unset: String,
    path: Option<String>,
    fields: Vec<String>,
    types: Vec<String>,
}

impl Default for Tsv {
    fn default() -> Self {
        Self {
            separator: "\t".into(),
            set_separator: ",".into(),
            empty: "(empty)".into(),
            unset: "-".into(),
            path: None,
            fields: Vec::new(),
            types: Vec::new(),
        }
    }
}

impl Tsv {
    /// Reads one line: a header line updates the state, a data row becomes an event.
    pub fn line(&mut self, line: usize, text: &str, ctx: &Ctx<'_>, out: &mut Decoded) {
        if let Some(header) = text.strip_prefix('#') {
            return self.header(header);
        }
        if self.fields.is_empty() {
            return out.reject(line, DecodeError::unreadable("zeek", "a data row before the `#fields` header"));
        }
        let values: Vec<&str> = text.split(self.separator.as_str()).collect();
        if values.len() != self.fields.len() {
            let reason = format!("{} values for {} fields", values.len(), self.fields.len());
            return out.reject(line, DecodeError::unreadable("zeek", reason));
        }
        let untyped = String::new();
        let kinds = self.types.iter().chain(std::iter::repeat(&untyped));
        let mut record = Map::new();
        for ((field, kind), value) in self.fields.iter().zip(kinds).zip(values) {
            if value != self.unset {
                record.insert(field.clone(), self.typed(kind, value));
            }
        }
        let record = Value::Object(record);
        let path = self.path.clone().unwrap_or_else(|| guess_path(&record).to_owned());
        match row(&path, record, ctx).and_then(|e| finish(e, text, ctx)) {
            Ok(event) => out.events.push(event),
            Err(error) => out.reject(line, error),
        }
    }

    fn header(&mut self, header: &str) {
        let (key, value) = header.split_once([' ', '\t']).unwrap_or((header, ""));
        let unescape = |v: &str| match v.strip_prefix("\\x").and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(b) => char::from(b).to_string(),
            None => v.to_owned(),
        };
        let list = |v: &str| v.split(self.separator.as_str()).map(str::to_owned).collect::<Vec<_>>();
        match key {
            "separator" => self.separator = unescape(value.trim()),
            "set_separator" => self.set_separator = value.to_owned(),
            "empty_field" => self.empty = value.to_owned(),
            "unset_field" => self.unset = value.to_owned(),
            "path" => self.path = Some(value.to_owned()),
            "fields" => self.fields = list(value),
            "types" => self.types = list(value),
            _ => {}
        }
    }

    /// A TSV value as the JSON Zeek would have written for its type.
    fn typed(&self, kind: &str, value: &str) -> Value {
        if let Some(inner) = kind.strip_prefix("set[").or_else(|| kind.strip_prefix("vector[")) {
            let inner = inner.trim_end_matches(']');
            if value == self.empty {
                return Value::Array(Vec::new());
            }
            return Value::Array(value.split(self.set_separator.as_str()).map(|v| self.typed(inner, v)).collect());
        }
        match kind {
            "count" | "int" | "port" => value.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::from(value)),
            "double" | "time" | "interval" => value
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::from(value), Value::Number),
            "bool" => Value::Bool(value == "T"),
            _ if value == self.empty => Value::from(""),
            _ => Value::from(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_rows_follow_their_header() {
        let ctx = crate::source::decode::test_ctx();
        let mut tsv = Tsv::default();
        let mut out = Decoded::default();
        let log = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n\
                   #fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\torig_bytes\tlocal_orig\tlocal_resp\ttunnel_parents\n\
                   #types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tcount\tbool\tbool\tset[string]\n\
                   1694009747.123456\tC1\t10.0.5.18\t5707\t10.0.5.14\t6666\ttcp\tssl\t4242\tT\tF\t(empty)\n\
                   1694009748.0\tC2\t10.0.5.18\n";
        for (i, line) in log.lines().enumerate() {
            tsv.line(i + 1, line, &ctx, &mut out);
        }
        assert_eq!(out.events.len(), 1);
        let e = &out.events[0];
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Network, Some("connection")));
        assert_eq!(e.source.as_ref().and_then(|s| s.bytes), Some(4242));
        assert_eq!(e.destination.as_ref().and_then(|d| d.port), Some(6666));
        assert_eq!(e.network.as_ref().and_then(|n| n.direction.as_deref()), Some("outbound"));
        assert_eq!(e.time.timestamp(), 1694009747);
        assert_eq!(e.attributes["zeek"]["tunnel_parents"], serde_json::json!([]));
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(
            (out.rejected[0].line, out.rejected[0].message.as_str()),
            (9, "not readable as zeek: 3 values for 12 fields")
        );
    }
}
