//! Input decoders: the formats security teams already have, read into [`SecurityEvent`]s.
//!
//! Every intake path names a [`Format`]: `vigil` (SecurityEvent JSON, the default), one of
//! the producer formats (ECS, OCSF, Windows events, cloud audit logs, auditd, Zeek,
//! Suricata, Falco, CEF, LEEF, syslog), `auto` (the format told per record, where the
//! record says unambiguously what it is), or a WebAssembly decode plugin
//! (`plugin:NAME`). A [`StreamDecoder`] reads one stream (an HTTP body, a file, a syslog
//! connection) and keeps what a format needs across records: the lines of an auditd
//! event, the `#fields` header of a Zeek TSV log.
//!
//! Each decoder maps what it knows to the typed fields and keeps the producer's record
//! under `attributes.<format>` by the producer's own names, so rules (and Sigma) can
//! read any field. A field that does not fit its typed slot is never an error; a record
//! the format cannot read is, and it is reported by line (or EVTX record id), field and
//! reason without costing the records around it. The mapping tables are in
//! `docs/inputs.md`.
//!
//! Part of layer 1 (`source`): uses `event`.

mod auditd;
mod azure;
mod cef;
mod cloudtrail;
mod ecs;
mod falco;
mod gcp;
mod github;
pub mod json;
mod k8s;
mod leef;
mod ocsf;
mod okta;
mod pick;
pub mod set;
mod suricata;
pub mod windows;
mod zeek;

pub use falco::slug as falco_slug;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::batch::Rejection;
use crate::event::{
    DecodeError, DecodeLimits, EventClass, SecurityEvent, check_record, decode_event, json_syntax_error, validate,
};

/// An input format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// Vigil's own `SecurityEvent` JSON.
    #[default]
    Vigil,
    /// Told per record from what the record holds (see [`detect_json`], [`detect_text`]).
    Auto,
    /// Elastic Common Schema documents (Beats, Elastic Agent, Logstash), nested or dotted.
    Ecs,
    /// OCSF events (Amazon Security Lake and others).
    Ocsf,
    /// Windows events: EVTX files, event XML, and the JSON of evtx_dump, Winlogbeat,
    /// NXLog, Sentinel and the OTRF datasets.
    Windows,
    /// AWS CloudTrail records (single, `Records[]` files, EventBridge events).
    Cloudtrail,
    /// Azure activity and sign-in logs (single, or `records[]` exports).
    Azure,
    /// Google Cloud audit logs (`protoPayload` of type `AuditLog`).
    GcpAudit,
    /// Okta System Log events.
    Okta,
    /// Kubernetes audit events (`audit.k8s.io`).
    K8sAudit,
    /// GitHub audit log events (organisation and enterprise).
    GithubAudit,
    /// Linux audit records (`type=… msg=audit(…)`), grouped into one event per serial.
    Auditd,
    /// Zeek logs, JSON or TSV with its `#fields` header.
    Zeek,
    /// Suricata EVE JSON.
    Suricata,
    /// Falco alert JSON (direct, or from Falcosidekick).
    Falco,
    /// ArcSight CEF, bare or behind a syslog header.
    Cef,
    /// IBM QRadar LEEF 1.0/2.0, bare or behind a syslog header.
    Leef,
    /// Syslog lines (RFC 5424 or 3164), with the recognisers of well-known messages.
    Syslog,
    /// A WebAssembly decode plugin, by name.
    Plugin(String),
}

/// Every built-in format with its name, in the order docs list them.
const NAMES: [(&str, Format); 18] = [
    ("vigil", Format::Vigil),
    ("auto", Format::Auto),
    ("ecs", Format::Ecs),
    ("ocsf", Format::Ocsf),
    ("windows", Format::Windows),
    ("cloudtrail", Format::Cloudtrail),
    ("azure", Format::Azure),
    ("gcp_audit", Format::GcpAudit),
    ("okta", Format::Okta),
    ("k8s_audit", Format::K8sAudit),
    ("github_audit", Format::GithubAudit),
    ("auditd", Format::Auditd),
    ("zeek", Format::Zeek),
    ("suricata", Format::Suricata),
    ("falco", Format::Falco),
    ("cef", Format::Cef),
    ("leef", Format::Leef),
    ("syslog", Format::Syslog),
];

/// A format name Vigil does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}`; one of {names}, or plugin:NAME", names = Format::names().join(", "))]
pub struct UnknownFormat(pub String);

impl Format {
    /// The names of the built-in formats.
    pub fn names() -> Vec<&'static str> {
        NAMES.iter().map(|(name, _)| *name).collect()
    }

    /// The format's name as written in configs, flags and `?format=`.
    pub fn name(&self) -> &str {
        match self {
            Self::Plugin(name) => name,
            other => NAMES.iter().find(|(_, f)| f == other).map_or("vigil", |(name, _)| name),
        }
    }

    /// Whether records of this format are JSON documents.
    fn is_json(&self) -> bool {
        matches!(
            self,
            Self::Vigil
                | Self::Ecs
                | Self::Ocsf
                | Self::Cloudtrail
                | Self::Azure
                | Self::GcpAudit
                | Self::Okta
                | Self::K8sAudit
                | Self::GithubAudit
                | Self::Suricata
                | Self::Falco
        )
    }
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(name) = s.strip_prefix("plugin:") {
            if name.is_empty() {
                return Err(UnknownFormat(s.to_owned()));
            }
            return Ok(Self::Plugin(name.to_owned()));
        }
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        if wanted == "json" {
            // The name earlier versions gave Vigil's own JSON.
            return Ok(Self::Vigil);
        }
        NAMES
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, f)| f.clone())
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plugin(name) => write!(f, "plugin:{name}"),
            other => f.write_str(other.name()),
        }
    }
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl schemars::JsonSchema for Format {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "InputFormat".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut names = Self::names();
        names.push("json");
        schemars::json_schema!({
            "description": "An input format (docs/inputs.md), or `plugin:NAME` for a decode plugin.",
            "anyOf": [{ "enum": names }, { "type": "string", "pattern": "^plugin:.+$" }]
        })
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A decoder that lives above this layer (a WebAssembly decode plugin): one record's
/// bytes in, events out. Implemented in `plugins`; looked up here by name.
pub trait RecordDecoder: Send + Sync + fmt::Debug {
    /// Decodes one record; the error says why it cannot.
    fn decode(&self, record: &[u8]) -> Result<Vec<SecurityEvent>, String>;
}

/// The decode plugins loaded now, by name; swapped whole when plugins load or unload.
#[derive(Clone, Debug, Default)]
pub struct PluginDecoders(Arc<ArcSwap<HashMap<String, Arc<dyn RecordDecoder>>>>);

impl PluginDecoders {
    /// Replaces the set of decode plugins.
    pub fn set(&self, decoders: HashMap<String, Arc<dyn RecordDecoder>>) {
        self.0.store(Arc::new(decoders));
    }

    /// The decoder of that name, if one is loaded.
    pub fn get(&self, name: &str) -> Option<Arc<dyn RecordDecoder>> {
        self.0.load().get(name).cloned()
    }
}

/// What every decoder of a stream shares.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Size and depth limits per record.
    pub limits: DecodeLimits,
    /// Keep each record's original text in `raw`.
    pub keep_raw: bool,
}

/// The events and refusals a stream produced so far.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Events, in input order.
    pub events: Vec<SecurityEvent>,
    /// Records refused, in input order.
    pub rejected: Vec<Rejection>,
    /// Records stored with a problem worth knowing (an auditd event without its `EOE`).
    pub warnings: Vec<Rejection>,
}

impl Decoded {
    fn reject(&mut self, line: usize, error: DecodeError) {
        self.rejected.push(Rejection::new(line, error));
    }
}

/// What a record decoder needs besides the record.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// When the record was received.
    pub now: DateTime<Utc>,
    /// The stream's options.
    pub options: &'a Options,
}

impl Ctx<'_> {
    /// A new event of `class`, observed now, its time to be set by the decoder (or
    /// defaulted to now).
    pub fn event(&self, class: EventClass) -> SecurityEvent {
        let mut event = SecurityEvent::new(class, crate::event::unset_time());
        event.observed_time = self.now;
        event
    }
}

/// Decodes one stream of records in one format. Formats that span records (auditd
/// events, Zeek TSV headers) keep their state here between calls.
#[derive(Debug)]
pub struct StreamDecoder {
    format: Format,
    options: Options,
    plugin: Option<Arc<dyn RecordDecoder>>,
    auditd: auditd::Assembler,
    zeek: zeek::Tsv,
}

impl StreamDecoder {
    /// A decoder for `format`; a plugin format needs its plugin loaded.
    pub fn new(format: &Format, options: Options, plugins: &PluginDecoders) -> Result<Self, UnknownFormat> {
        let plugin = match format {
            Format::Plugin(name) => Some(plugins.get(name).ok_or_else(|| UnknownFormat(format.to_string()))?),
            _ => None,
        };
        Ok(Self {
            format: format.clone(),
            options,
            plugin,
            auditd: auditd::Assembler::default(),
            zeek: zeek::Tsv::default(),
        })
    }

    /// The stream's format.
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Decodes one record of a record-framed stream (a line of a file, a syslog message,
    /// a NATS message) that is `line` in its input.
    pub fn record(&mut self, line: usize, bytes: &[u8], now: DateTime<Utc>, out: &mut Decoded) {
        let ctx = Ctx { now, options: &self.options };
        if let Some(plugin) = &self.plugin {
            return plugin_record(plugin.as_ref(), line, bytes, &ctx, out);
        }
        if self.format == Format::Vigil {
            return match decode_event(bytes, &self.options.limits, now) {
                Ok(event) => out.events.push(event),
                Err(error) => out.reject(line, error),
            };
        }
        let container = json::is_container(bytes);
        let checked = if container {
            // A container holds a whole file: the body limit bounds it, not the record one.
            let limits = DecodeLimits { max_event_bytes: usize::MAX, ..self.options.limits };
            check_record(bytes, &limits)
        } else {
            check_record(bytes, &self.options.limits)
        };
        let text = match checked {
            Ok(text) => text,
            Err(error) => return out.reject(line, error),
        };
        let format = match &self.format {
            Format::Auto => detect_text(text),
            other => other.clone(),
        };
        match format {
            Format::Syslog => Self::syslog(&mut self.auditd, line, text, &ctx, out),
            Format::Cef => finish_one(cef::decode(text, &ctx), line, text, &ctx, out),
            Format::Leef => finish_one(leef::decode(text, &ctx), line, text, &ctx, out),
            Format::Auditd => self.auditd.push(line, text, &ctx, out),
            Format::Zeek if !text.starts_with('{') => self.zeek.line(line, text, &ctx, out),
            Format::Windows if text.starts_with('<') => {
                for (at, result) in windows::xml::decode(text, &ctx) {
                    finish_one(result, line + at, text, &ctx, out);
                }
            }
            _ if text.starts_with('{') && text.contains("\"SyslogMessage\"") => {
                Self::sentinel_syslog(&mut self.auditd, line, text, &ctx, out)
            }
            format => json_record(&format, line, text, &ctx, out),
        }
    }

    /// A syslog line: the header, then the payload read as what it is (CEF, LEEF, an
    /// auditd record, Windows event XML), else through the recognisers.
    fn syslog(auditd: &mut auditd::Assembler, line: usize, text: &str, ctx: &Ctx<'_>, out: &mut Decoded) {
        if cef::find(text).is_some() {
            return finish_one(cef::decode(text, ctx), line, text, ctx, out);
        }
        if leef::find(text).is_some() {
            return finish_one(leef::decode(text, ctx), line, text, ctx, out);
        }
        if text.contains("type=") && text.contains("audit(") {
            return auditd.push(line, text, ctx, out);
        }
        let events = super::syslog::parse_syslog_all(text, ctx.now, ctx.options.keep_raw);
        for event in events {
            let payload = event.message.as_deref().filter(|m| m.starts_with("<Event"));
            match payload {
                Some(xml) => {
                    for (at, result) in windows::xml::decode(xml, ctx) {
                        let result = result.map(|mut e| {
                            if e.host.is_none() {
                                e.host = event.host.clone();
                            }
                            e
                        });
                        finish_one(result, line + at, text, ctx, out);
                    }
                }
                None => finish_one(Ok(event), line, "", ctx, out),
            }
        }
    }

    /// A row of Microsoft Sentinel's `Syslog` table: `SyslogMessage` read like the body of
    /// a syslog line, with the row's host, program and time.
    fn sentinel_syslog(auditd: &mut auditd::Assembler, line: usize, text: &str, ctx: &Ctx<'_>, out: &mut Decoded) {
        let row: Value = match serde_json::from_str(text) {
            Ok(row) => row,
            Err(e) => return out.reject(line, json_syntax_error(&e)),
        };
        let Some(message) = json::str(&row, "SyslogMessage") else {
            return out.reject(line, DecodeError::missing("SyslogMessage"));
        };
        let host = json::text(&row, "Computer").or_else(|| json::text(&row, "HostName"));
        if message.contains("audit(") && message.contains("type=") {
            return auditd.push(line, message, ctx, out);
        }
        if message.starts_with("<Event") {
            for (at, result) in windows::xml::decode(message, ctx) {
                let result = result.map(|mut e| {
                    if e.host.is_none() {
                        e.host = host
                            .as_ref()
                            .map(|h| Box::new(crate::event::Host { name: Some(h.clone()), ..Default::default() }));
                    }
                    e
                });
                finish_one(result, line + at, text, ctx, out);
            }
            return;
        }
        let mut event = ctx.event(EventClass::System);
        event.message = Some(message.to_owned());
        event.provider = json::text(&row, "ProcessName");
        if let Some(program) = event.provider.clone() {
            set::put_str(&mut event, "process.name", &program);
        }
        if let Some(host) = &host {
            set::put_str(&mut event, "host.name", host);
        }
        if let Some(t) = json::get(&row, "EventTime").or_else(|| json::get(&row, "TimeGenerated")).and_then(set::time) {
            event.time = t;
        }
        event.attributes.insert("sentinel".into(), row.clone());
        for event in super::syslog::recognise_all(event) {
            finish_one(Ok(event), line, text, ctx, out);
        }
    }

    /// Decodes a whole body (an HTTP request, a file given to `vigil ingest`): EVTX files,
    /// Windows XML documents, JSON arrays and documents, or lines, as the format reads.
    pub fn body(&mut self, body: &[u8], now: DateTime<Utc>, out: &mut Decoded) -> Result<(), String> {
        let windows = matches!(self.format, Format::Windows | Format::Auto);
        if body.starts_with(windows::evtx::MAGIC) {
            if !windows {
                return Err(format!("the body is an EVTX file; read it with format windows, not {}", self.format));
            }
            let ctx = Ctx { now, options: &self.options };
            windows::evtx::decode(body, &ctx, out);
            return Ok(());
        }
        let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
        // One event per line reads line by line, so a bad line costs only itself.
        let xml_lines = json::split_lines(body).iter().all(|(_, l)| l.trim_ascii().ends_with(b"</Event>"));
        if windows && first == Some(b'<') && self.plugin.is_none() && !xml_lines {
            let ctx = Ctx { now, options: &self.options };
            let text = std::str::from_utf8(body)
                .map_err(|e| format!("the XML body is not UTF-8 at byte {}", e.valid_up_to()))?;
            for (at, result) in windows::xml::decode(text, &ctx) {
                finish_one(result, at + 1, "", &ctx, out);
            }
            return Ok(());
        }
        let json_framed = self.plugin.is_none()
            && (self.format.is_json() || matches!(self.format, Format::Windows | Format::Auto | Format::Zeek))
            && matches!(first, Some(b'[' | b'{'));
        let records = if json_framed {
            match json::frame(body) {
                json::Frames::Records(records) => records,
                json::Frames::Broken(reason) => return Err(reason),
            }
        } else {
            json::split_lines(body)
        };
        // About one event a record (auditd's take several): sized once, not regrown.
        out.events.reserve(records.len());
        for (line, record) in records {
            self.record(line, record, now, out);
        }
        self.finish(now, out);
        Ok(())
    }

    /// Ends the stream (or a batch of it): events still being assembled are emitted.
    pub fn finish(&mut self, now: DateTime<Utc>, out: &mut Decoded) {
        let ctx = Ctx { now, options: &self.options };
        self.auditd.flush(&ctx, out);
    }
}

/// Tells a text record's format from how it starts: JSON objects by their keys, `CEF:` and
/// `LEEF:` (also behind a syslog header), auditd's `type=… msg=audit(`, Zeek's `#` header
/// lines, Windows event XML; anything else is read as syslog.
pub fn detect_text(text: &str) -> Format {
    let t = text.trim_start();
    if t.starts_with('{') {
        return Format::Auto;
    }
    if t.starts_with("type=") && t.contains(" msg=audit(") {
        return Format::Auditd;
    }
    if t.starts_with('<') && (t.starts_with("<Event") || t.starts_with("<?xml")) {
        return Format::Windows;
    }
    if t.starts_with("#separator") || t.starts_with("#fields") || t.starts_with("#path") {
        return Format::Zeek;
    }
    if t.starts_with("CEF:") || t.contains(" CEF:") && cef::find(t).is_some() {
        return Format::Cef;
    }
    if t.starts_with("LEEF:") || t.contains(" LEEF:") && leef::find(t).is_some() {
        return Format::Leef;
    }
    Format::Syslog
}

/// Tells a JSON record's format from its keys; `None` when nothing marks it (it is then
/// read as Vigil's own JSON, whose errors say what is missing).
pub fn detect_json(v: &Value) -> Option<Format> {
    let o = v.as_object()?;
    let has = |k: &str| o.contains_key(k);
    if has("class") && !has("class_uid") {
        return Some(Format::Vigil);
    }
    if has("class_uid") {
        return Some(Format::Ocsf);
    }
    let cloudtrail = has("eventName") && (has("eventSource") || has("awsRegion") || has("recipientAccountId"));
    if cloudtrail || has("Records") || o.get("detail").is_some_and(|d| d.get("eventSource").is_some()) {
        return Some(Format::Cloudtrail);
    }
    if has("EventID") || has("EventId") || o.get("Event").is_some_and(|e| e.get("System").is_some()) {
        return Some(Format::Windows);
    }
    if has("protoPayload") {
        return Some(Format::GcpAudit);
    }
    let k8s_event =
        o.get("kind").is_some_and(|k| k == "Event") && has("verb") && (has("objectRef") || has("requestURI"));
    if k8s_event || o.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v.starts_with("audit.k8s.io")) {
        return Some(Format::K8sAudit);
    }
    if has("eventType") && has("actor") && (has("published") || has("uuid")) {
        return Some(Format::Okta);
    }
    // Azure writes its keys in more than one case.
    let has_any_case = |k: &str| o.keys().any(|key| key.eq_ignore_ascii_case(k));
    if has("records") || has_any_case("operationName") && (has_any_case("resourceId") || has_any_case("category")) {
        return Some(Format::Azure);
    }
    if has("event_type") && (has("src_ip") || has("flow_id") || has("timestamp")) {
        return Some(Format::Suricata);
    }
    if has("id.orig_h") || has("_path") && has("ts") || o.get("id").is_some_and(|id| id.get("orig_h").is_some()) {
        return Some(Format::Zeek);
    }
    if has("rule") && has("output") && has("priority") {
        return Some(Format::Falco);
    }
    if has("action") && has("actor") && (has("org") || has("repo") || has("business") || has("_document_id")) {
        return Some(Format::GithubAudit);
    }
    if has("@timestamp") || has("ecs") || has("ecs.version") || has("event.kind") || has("event.category") {
        return Some(Format::Ecs);
    }
    None
}

/// A record decoder of a JSON format: the record, parsed, to one event.
type JsonDecoder = fn(Value, &Ctx<'_>) -> Result<SecurityEvent, DecodeError>;

fn json_decoder(format: &Format) -> Option<JsonDecoder> {
    Some(match format {
        Format::Ecs => ecs::decode,
        Format::Ocsf => ocsf::decode,
        Format::Windows => windows::decode_json,
        Format::Cloudtrail => cloudtrail::decode,
        Format::Azure => azure::decode,
        Format::GcpAudit => gcp::decode,
        Format::Okta => okta::decode,
        Format::K8sAudit => k8s::decode,
        Format::GithubAudit => github::decode,
        Format::Zeek => zeek::decode_json,
        Format::Suricata => suricata::decode,
        Format::Falco => falco::decode,
        _ => return None,
    })
}

fn json_record(format: &Format, line: usize, text: &str, ctx: &Ctx<'_>, out: &mut Decoded) {
    // ECS keeps what it does not map, so it reads the text in one pass instead of a tree.
    if *format == Format::Ecs && text.starts_with('{') && !json::is_container(text.as_bytes()) {
        return finish_one(ecs::decode_text(text, ctx), line, text, ctx, out);
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return out.reject(line, json_syntax_error(&e)),
    };
    let format = match format {
        Format::Auto => match detect_json(&value) {
            Some(Format::Vigil) | None => {
                return match decode_event(text.as_bytes(), &ctx.options.limits, ctx.now) {
                    Ok(event) => out.events.push(event),
                    Err(error) => out.reject(line, error),
                };
            }
            Some(found) => found,
        },
        other => other.clone(),
    };
    let Some(decode) = json_decoder(&format) else {
        return out.reject(line, DecodeError::unreadable(format.name(), "records of this format are not JSON"));
    };
    // Containers (`{"Records": […]}`, `{"records": […]}`) hold one record per element.
    let items = match value {
        Value::Object(o) if o.len() == 1 && (o.contains_key("Records") || o.contains_key("records")) => {
            match o.into_iter().next() {
                Some((_, Value::Array(items))) => items,
                _ => return out.reject(line, DecodeError::unreadable(format.name(), "`Records` is not an array")),
            }
        }
        Value::Object(o) => return finish_one(decode(Value::Object(o), ctx), line, text, ctx, out),
        _ => return out.reject(line, DecodeError::unreadable(format.name(), "expected a JSON object")),
    };
    for item in items {
        finish_one(decode(item, ctx), line, "", ctx, out);
    }
}

fn plugin_record(plugin: &dyn RecordDecoder, line: usize, bytes: &[u8], ctx: &Ctx<'_>, out: &mut Decoded) {
    if bytes.len() > ctx.options.limits.max_event_bytes {
        return out
            .reject(line, DecodeError::TooLarge { size: bytes.len(), limit: ctx.options.limits.max_event_bytes });
    }
    match plugin.decode(bytes) {
        Ok(events) => {
            let raw = std::str::from_utf8(bytes).unwrap_or("");
            for mut event in events {
                event.observed_time = ctx.now;
                finish_one(Ok(event), line, raw, ctx, out);
            }
        }
        Err(reason) => out.reject(line, DecodeError::unreadable("plugin", reason)),
    }
}

/// Completes a decoded event (times, `raw`) and validates it, or records its refusal.
fn finish_one(result: Result<SecurityEvent, DecodeError>, line: usize, raw: &str, ctx: &Ctx<'_>, out: &mut Decoded) {
    match result.and_then(|event| finish(event, raw, ctx)) {
        Ok(event) => out.events.push(event),
        Err(error) => out.reject(line, error),
    }
}

/// Fills the times a producer left out, keeps `raw` when asked, and validates.
pub fn finish(mut event: SecurityEvent, raw: &str, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    event.fill_times(ctx.now);
    if ctx.options.keep_raw && !raw.is_empty() && event.raw.is_none() {
        event.raw = Some(raw.to_owned());
    }
    let problems = validate(&event, &ctx.options.limits);
    if problems.is_empty() { Ok(event) } else { Err(DecodeError::Invalid { problems }) }
}

/// Decodes a whole body in `format` with default plugins: what batch callers without a
/// plugin registry use.
pub fn decode_body(format: &Format, body: &[u8], options: &Options, now: DateTime<Utc>) -> (Decoded, Option<String>) {
    let mut out = Decoded::default();
    let error = match StreamDecoder::new(format, options.clone(), &PluginDecoders::default()) {
        Ok(mut decoder) => decoder.body(body, now, &mut out).err(),
        Err(e) => Some(e.to_string()),
    };
    (out, error)
}

/// A context with default options, for the decoders' tests.
#[cfg(test)]
pub(crate) fn test_ctx() -> Ctx<'static> {
    static OPTIONS: std::sync::LazyLock<Options> = std::sync::LazyLock::new(Options::default);
    Ctx { now: Utc::now(), options: &OPTIONS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for (name, format) in NAMES {
            assert_eq!(name.parse::<Format>().as_ref(), Ok(&format));
            assert_eq!(format.to_string(), name);
        }
        assert_eq!("plugin:pcap".parse::<Format>(), Ok(Format::Plugin("pcap".into())));
        assert_eq!("GCP-Audit".parse::<Format>(), Ok(Format::GcpAudit));
        let err = "evtxx".parse::<Format>().expect_err("unknown");
        assert!(err.to_string().contains("unknown format `evtxx`; one of vigil, auto, ecs"), "{err}");
    }

    #[test]
    fn every_table_row_is_a_settable_field_and_in_the_docs() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/inputs.md")).expect("docs/inputs.md");
        let tables: &[&[set::Mapping]] = &[
            ecs::TABLE,
            ecs::FALLBACKS,
            ocsf::TABLE,
            cloudtrail::TABLE,
            azure::TABLE,
            gcp::TABLE,
            okta::TABLE,
            k8s::TABLE,
            github::TABLE,
            zeek::TABLE,
            suricata::TABLE,
            falco::TABLE,
            cef::TABLE,
            leef::TABLE,
            windows::COMMON,
        ];
        let mut probe = SecurityEvent::new(EventClass::Other, chrono::Utc::now());
        for (from, to) in tables.iter().flat_map(|t| t.iter()) {
            assert!(set::put(&mut probe, to, &Value::from("1")), "`{to}` (from `{from}`) is not a settable field");
            assert!(doc.contains(&format!("| `{from}` | `{to}` |")), "docs/inputs.md lacks the row `{from}` → `{to}`");
        }
        let vocabularies: &[&[(&str, EventClass, &str)]] = &[
            cloudtrail::CALLS,
            azure::OPERATIONS,
            okta::EVENT_TYPES,
            github::ACTIONS,
            auditd::MESSAGES,
            zeek::LOGS,
            suricata::EVENT_TYPES,
        ];
        for (name, class, action) in vocabularies.iter().flat_map(|t| t.iter()) {
            let row = format!("| `{name}` | `{class}` | `{action}` |");
            assert!(doc.contains(&row), "docs/inputs.md lacks the row {row}");
        }
        for (family, id, class, action, _) in windows::KINDS {
            let row = format!("| {family:?} | {id} | `{class}` | `{action}` |");
            assert!(doc.contains(&row), "docs/inputs.md lacks the row {row}");
        }
    }

    #[test]
    fn text_records_are_told_apart() {
        assert_eq!(detect_text("CEF:0|Vendor|Product|1|100|Name|5|src=10.0.0.1"), Format::Cef);
        assert_eq!(detect_text("<134>Feb 12 10:00:00 fw01 CEF:0|V|P|1|100|Name|5|src=10.0.0.1"), Format::Cef);
        assert_eq!(detect_text("LEEF:2.0|V|P|1|4625|^|src=10.0.0.1"), Format::Leef);
        assert_eq!(detect_text("type=EOE msg=audit(1492798541.391:20246): "), Format::Auditd);
        assert_eq!(detect_text("#fields\tts\tuid"), Format::Zeek);
        assert_eq!(detect_text("<Event xmlns='x'><System/></Event>"), Format::Windows);
        assert_eq!(
            detect_text("Mar  2 11:58:01 h sshd[1]: Accepted password for a from 1.2.3.4 port 1 ssh2"),
            Format::Syslog
        );
    }
}
