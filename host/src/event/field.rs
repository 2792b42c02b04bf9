//! Dotted field paths (`source.ip`, `labels.env`, `attributes.aws.region`) resolved once
//! into a [`FieldPath`] and then read from a typed event without re-parsing anything.
//!
//! The table of known fields below is the single list of paths: rules, group-by keys,
//! templates and exporters all address fields through it.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use uuid::Uuid;

use super::model::SecurityEvent;

/// A value read from an event. Borrowed where the event holds a string.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A string.
    Str(&'a str),
    /// An integer (ports, pids, byte counts, status codes).
    Int(i64),
    /// An IP address.
    Ip(IpAddr),
    /// A timestamp.
    Time(DateTime<Utc>),
    /// An id.
    Id(Uuid),
    /// A list of strings (tags, roles).
    List(&'a [String]),
    /// A JSON value from `attributes`.
    Json(&'a Value),
}

impl FieldValue<'_> {
    /// The value as text: strings as they are, everything else in its canonical form.
    /// Lists join with `,`; JSON strings lose their quotes.
    pub fn to_text(&self) -> Cow<'_, str> {
        match self {
            Self::Str(s) => Cow::Borrowed(s),
            Self::Int(i) => Cow::Owned(i.to_string()),
            Self::Ip(IpAddr::V4(ip)) => Cow::Owned(ipv4_text(*ip)),
            Self::Ip(ip) => Cow::Owned(ip.to_string()),
            Self::Time(t) => Cow::Owned(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Self::Id(id) => Cow::Owned(id.to_string()),
            Self::List(items) => Cow::Owned(items.join(",")),
            Self::Json(Value::String(s)) => Cow::Borrowed(s),
            Self::Json(v) => Cow::Owned(v.to_string()),
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Str(s) => Value::from(*s),
            Self::Int(i) => Value::from(*i),
            Self::List(items) => Value::from(items.to_vec()),
            Self::Json(v) => (*v).clone(),
            other => Value::from(other.to_text().into_owned()),
        }
    }
}

/// An IPv4 address in dotted decimal, as `Display` writes it, without the formatting
/// machinery: group keys and comparisons format one per event.
fn ipv4_text(ip: std::net::Ipv4Addr) -> String {
    let mut text = String::with_capacity(15);
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

impl fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

fn text(o: &Option<String>) -> Option<FieldValue<'_>> {
    o.as_deref().map(FieldValue::Str)
}

fn int<T: TryInto<i64> + Copy>(o: Option<T>) -> Option<FieldValue<'static>> {
    o.map(|v| FieldValue::Int(v.try_into().unwrap_or(i64::MAX)))
}

/// An endpoint's address as ECS means `*.address`: its IP address, else its domain (a
/// `rhost=` that was a host name). Read-only; what rules group attackers by.
fn address(endpoint: &super::model::Endpoint) -> Option<FieldValue<'_>> {
    endpoint.ip.map(FieldValue::Ip).or_else(|| endpoint.domain.as_deref().map(FieldValue::Str))
}

fn list(items: &[String]) -> Option<FieldValue<'_>> {
    (!items.is_empty()).then_some(FieldValue::List(items))
}

macro_rules! known_fields {
    ($( $variant:ident = $name:literal => |$e:ident| $get:expr; )*) => {
        /// A field of the typed part of [`SecurityEvent`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)]
        pub enum Field { $($variant),* }

        impl Field {
            /// Every known field, in schema order.
            pub const ALL: &'static [Field] = &[$(Field::$variant),*];

            /// The dotted path of the field.
            pub fn name(self) -> &'static str {
                match self { $(Field::$variant => $name),* }
            }

            /// Resolves a dotted path to a known field.
            pub fn parse(path: &str) -> Option<Field> {
                match path { $($name => Some(Field::$variant),)* _ => None }
            }

            /// Reads the field; `None` when the event does not carry it.
            pub fn get(self, event: &SecurityEvent) -> Option<FieldValue<'_>> {
                match self { $(Field::$variant => { let $e = event; $get }),* }
            }
        }
    };
}

known_fields! {
    SchemaVersion = "schema_version" => |e| Some(FieldValue::Int(i64::from(e.schema_version)));
    Id = "id" => |e| Some(FieldValue::Id(e.id.0));
    Time = "time" => |e| Some(FieldValue::Time(e.time));
    ObservedTime = "observed_time" => |e| Some(FieldValue::Time(e.observed_time));
    Class = "class" => |e| Some(FieldValue::Str(e.class.as_str()));
    Action = "action" => |e| text(&e.action);
    Outcome = "outcome" => |e| Some(FieldValue::Str(e.outcome.as_str()));
    Severity = "severity" => |e| Some(FieldValue::Str(e.severity.as_str()));
    Message = "message" => |e| text(&e.message);
    Provider = "provider" => |e| text(&e.provider);
    SourceIp = "source.ip" => |e| e.source.as_ref()?.ip.map(FieldValue::Ip);
    SourcePort = "source.port" => |e| int(e.source.as_ref()?.port);
    SourceDomain = "source.domain" => |e| text(&e.source.as_ref()?.domain);
    SourceBytes = "source.bytes" => |e| int(e.source.as_ref()?.bytes);
    SourcePackets = "source.packets" => |e| int(e.source.as_ref()?.packets);
    SourceAddress = "source.address" => |e| address(e.source.as_ref()?);
    DestinationIp = "destination.ip" => |e| e.destination.as_ref()?.ip.map(FieldValue::Ip);
    DestinationAddress = "destination.address" => |e| address(e.destination.as_ref()?);
    DestinationPort = "destination.port" => |e| int(e.destination.as_ref()?.port);
    DestinationDomain = "destination.domain" => |e| text(&e.destination.as_ref()?.domain);
    DestinationBytes = "destination.bytes" => |e| int(e.destination.as_ref()?.bytes);
    DestinationPackets = "destination.packets" => |e| int(e.destination.as_ref()?.packets);
    NetworkTransport = "network.transport" => |e| text(&e.network.as_ref()?.transport);
    NetworkProtocol = "network.protocol" => |e| text(&e.network.as_ref()?.protocol);
    NetworkDirection = "network.direction" => |e| text(&e.network.as_ref()?.direction);
    NetworkBytes = "network.bytes" => |e| int(e.network.as_ref()?.bytes);
    UserName = "user.name" => |e| text(&e.user.as_ref()?.name);
    UserId = "user.id" => |e| text(&e.user.as_ref()?.id);
    UserDomain = "user.domain" => |e| text(&e.user.as_ref()?.domain);
    UserEmail = "user.email" => |e| text(&e.user.as_ref()?.email);
    UserRoles = "user.roles" => |e| list(&e.user.as_ref()?.roles);
    UserTargetName = "user.target.name" => |e| text(&e.user.as_ref()?.target.as_ref()?.name);
    UserTargetId = "user.target.id" => |e| text(&e.user.as_ref()?.target.as_ref()?.id);
    UserTargetRoles = "user.target.roles" => |e| list(&e.user.as_ref()?.target.as_ref()?.roles);
    HostName = "host.name" => |e| text(&e.host.as_ref()?.name);
    HostId = "host.id" => |e| text(&e.host.as_ref()?.id);
    HostIp = "host.ip" => |e| e.host.as_ref()?.ip.map(FieldValue::Ip);
    HostOs = "host.os" => |e| text(&e.host.as_ref()?.os);
    ProcessPid = "process.pid" => |e| int(e.process.as_ref()?.pid);
    ProcessName = "process.name" => |e| text(&e.process.as_ref()?.name);
    ProcessExecutable = "process.executable" => |e| text(&e.process.as_ref()?.executable);
    ProcessCommandLine = "process.command_line" => |e| text(&e.process.as_ref()?.command_line);
    ProcessParentPid = "process.parent.pid" => |e| int(e.process.as_ref()?.parent.as_ref()?.pid);
    ProcessParentName = "process.parent.name" => |e| text(&e.process.as_ref()?.parent.as_ref()?.name);
    ProcessParentExecutable = "process.parent.executable" => |e| text(&e.process.as_ref()?.parent.as_ref()?.executable);
    ProcessParentCommandLine = "process.parent.command_line" => |e| text(&e.process.as_ref()?.parent.as_ref()?.command_line);
    FilePath = "file.path" => |e| text(&e.file.as_ref()?.path);
    FileName = "file.name" => |e| text(&e.file.as_ref()?.name);
    FileSize = "file.size" => |e| int(e.file.as_ref()?.size);
    FileHashMd5 = "file.hash.md5" => |e| text(&e.file.as_ref()?.hash.as_ref()?.md5);
    FileHashSha1 = "file.hash.sha1" => |e| text(&e.file.as_ref()?.hash.as_ref()?.sha1);
    FileHashSha256 = "file.hash.sha256" => |e| text(&e.file.as_ref()?.hash.as_ref()?.sha256);
    UrlFull = "url.full" => |e| text(&e.url.as_ref()?.full);
    UrlDomain = "url.domain" => |e| text(&e.url.as_ref()?.domain);
    UrlPath = "url.path" => |e| text(&e.url.as_ref()?.path);
    UrlQuery = "url.query" => |e| text(&e.url.as_ref()?.query);
    HttpMethod = "http.method" => |e| text(&e.http.as_ref()?.method);
    HttpStatusCode = "http.status_code" => |e| int(e.http.as_ref()?.status_code);
    HttpUserAgent = "http.user_agent" => |e| text(&e.http.as_ref()?.user_agent);
    HttpRequestBytes = "http.request_bytes" => |e| int(e.http.as_ref()?.request_bytes);
    HttpResponseBytes = "http.response_bytes" => |e| int(e.http.as_ref()?.response_bytes);
    CloudProvider = "cloud.provider" => |e| text(&e.cloud.as_ref()?.provider);
    CloudRegion = "cloud.region" => |e| text(&e.cloud.as_ref()?.region);
    CloudAccountId = "cloud.account_id" => |e| text(&e.cloud.as_ref()?.account_id);
    CloudService = "cloud.service" => |e| text(&e.cloud.as_ref()?.service);
    ThreatIndicatorId = "threat.indicator_id" => |e| Some(FieldValue::Str(&e.threat.as_ref()?.indicator_id));
    ThreatIndicatorName = "threat.indicator_name" => |e| text(&e.threat.as_ref()?.indicator_name);
    ThreatIndicatorType = "threat.indicator_type" => |e| Some(FieldValue::Str(&e.threat.as_ref()?.indicator_type));
    ThreatFeed = "threat.feed" => |e| Some(FieldValue::Str(&e.threat.as_ref()?.feed));
    ThreatConfidence = "threat.confidence" => |e| int(e.threat.as_ref()?.confidence);
    ThreatMatchedField = "threat.matched_field" => |e| Some(FieldValue::Str(&e.threat.as_ref()?.matched_field));
    ThreatMatchedValue = "threat.matched_value" => |e| Some(FieldValue::Str(&e.threat.as_ref()?.matched_value));
    ThreatActors = "threat.actors" => |e| list(&e.threat.as_ref()?.actors);
    ThreatCampaigns = "threat.campaigns" => |e| list(&e.threat.as_ref()?.campaigns);
    ThreatMalware = "threat.malware" => |e| list(&e.threat.as_ref()?.malware);
    ThreatLabels = "threat.labels" => |e| list(&e.threat.as_ref()?.labels);
    ThreatKillChainPhases = "threat.kill_chain_phases" => |e| list(&e.threat.as_ref()?.kill_chain_phases);
    ThreatMatches = "threat.matches" => |e| int(Some(e.threat.as_ref()?.matches));
    Tenant = "tenant" => |e| text(&e.tenant);
    Tags = "tags" => |e| list(&e.tags);
    Raw = "raw" => |e| text(&e.raw);
}

/// A resolved path into an event: a known field, a label, or a path inside `attributes`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldPath {
    /// A field of the typed schema.
    Known(Field),
    /// `labels.<key>`.
    Label(String),
    /// `attributes.<a>.<b>…`, the segments after `attributes`.
    Attribute(Vec<String>),
}

/// Why a dotted path does not name a field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown field `{path}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
pub struct UnknownField {
    /// The path as written.
    pub path: String,
    /// The closest known path, when one is close.
    pub suggestion: Option<&'static str>,
}

impl FieldPath {
    /// Resolves a dotted path. Errors name the closest known field.
    pub fn parse(path: &str) -> Result<Self, UnknownField> {
        if let Some(field) = Field::parse(path) {
            return Ok(Self::Known(field));
        }
        if let Some(key) = path.strip_prefix("labels.").filter(|k| !k.is_empty()) {
            return Ok(Self::Label(key.to_owned()));
        }
        if let Some(rest) = path.strip_prefix("attributes.") {
            let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
            if segments.iter().all(|s| !s.is_empty()) {
                return Ok(Self::Attribute(segments));
            }
        }
        Err(UnknownField { path: path.to_owned(), suggestion: closest(path) })
    }

    /// Reads the value at this path; `None` when the event does not carry it.
    pub fn get<'e>(&self, event: &'e SecurityEvent) -> Option<FieldValue<'e>> {
        match self {
            Self::Known(field) => field.get(event),
            Self::Label(key) => event.labels.get(key).map(|v| FieldValue::Str(v)),
            Self::Attribute(segments) => {
                let (first, rest) = segments.split_first()?;
                let mut value = event.attributes.get(first)?;
                for segment in rest {
                    value = match value {
                        Value::Object(map) => map.get(segment)?,
                        Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                        _ => return None,
                    };
                }
                match value {
                    Value::Null => None,
                    Value::String(s) => Some(FieldValue::Str(s)),
                    Value::Number(n) if n.is_i64() => n.as_i64().map(FieldValue::Int),
                    other => Some(FieldValue::Json(other)),
                }
            }
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(field) => f.write_str(field.name()),
            Self::Label(key) => write!(f, "labels.{key}"),
            Self::Attribute(segments) => write!(f, "attributes.{}", segments.join(".")),
        }
    }
}

impl Serialize for FieldPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl schemars::JsonSchema for FieldPath {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FieldPath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A field of the event: `source.ip`, `labels.NAME`, `attributes.a.b`.",
            "type": "string",
            "minLength": 1
        })
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        FieldPath::parse(&path).map_err(serde::de::Error::custom)
    }
}

/// The known field nearest to `path` by edit distance, if it is plausibly a typo.
fn closest(path: &str) -> Option<&'static str> {
    Field::ALL
        .iter()
        .map(|f| (edit_distance(path, f.name()), f.name()))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::model::{Endpoint, EventClass, User};

    fn event() -> SecurityEvent {
        let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
        e.source =
            Some(Endpoint { ip: Some("198.51.100.7".parse().expect("ip")), port: Some(51234), ..Default::default() });
        e.user = Some(Box::new(User { name: Some("root".into()), ..Default::default() }));
        e.labels.insert("env".into(), "prod".into());
        e.attributes = serde_json::from_str(r#"{"aws":{"region":"eu-west-1","n":3,"list":["a","b"]}}"#).expect("json");
        e
    }

    #[test]
    fn every_known_field_parses_back_to_itself() {
        for field in Field::ALL {
            assert_eq!(FieldPath::parse(field.name()), Ok(FieldPath::Known(*field)));
        }
    }

    #[test]
    fn reads_known_label_and_attribute_paths() {
        let e = event();
        let get = |p: &str| FieldPath::parse(p).expect("valid path").get(&e).map(|v| v.to_text().into_owned());
        assert_eq!(get("source.ip").as_deref(), Some("198.51.100.7"));
        assert_eq!(get("source.port").as_deref(), Some("51234"));
        assert_eq!(get("user.name").as_deref(), Some("root"));
        assert_eq!(get("class").as_deref(), Some("authentication"));
        assert_eq!(get("labels.env").as_deref(), Some("prod"));
        assert_eq!(get("attributes.aws.region").as_deref(), Some("eu-west-1"));
        assert_eq!(get("attributes.aws.n").as_deref(), Some("3"));
        assert_eq!(get("attributes.aws.list.1").as_deref(), Some("b"));
        assert_eq!(get("destination.ip"), None);
        assert_eq!(get("attributes.aws.missing"), None);
        assert_eq!(get("labels.none"), None);
    }

    #[test]
    fn the_event_reference_documents_every_field() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/events.md")).expect("docs/events.md");
        let missing: Vec<&str> =
            Field::ALL.iter().map(|f| f.name()).filter(|n| !doc.contains(&format!("| `{n}` |"))).collect();
        assert!(missing.is_empty(), "docs/events.md lacks {missing:?}");
    }

    #[test]
    fn addresses_read_as_their_display_text() {
        for ip in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "198.51.100.23", "1.20.3.199", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().expect("address");
            assert_eq!(FieldValue::Ip(ip).to_text(), ip.to_string());
        }
    }

    #[test]
    fn unknown_paths_suggest_the_nearest_field() {
        let err = FieldPath::parse("source.ipp").expect_err("unknown");
        assert_eq!(err.suggestion, Some("source.ip"));
        assert_eq!(err.to_string(), "unknown field `source.ipp`; did you mean `source.ip`?");
        assert_eq!(FieldPath::parse("zzzzzzzzzzzz").expect_err("unknown").suggestion, None);
        assert!(FieldPath::parse("attributes.").is_err());
        assert!(FieldPath::parse("labels.").is_err());
    }
}
