//! The `SecurityEvent` v1 field set.
//!
//! Names follow ECS where ECS has the field (`source.ip`, `user.name`, `process.command_line`)
//! and OCSF's vocabulary for the class, outcome and severity. Everything a source knows that
//! has no field here goes into `attributes`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ids::EventId;

/// The version of the event schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One security event: the unit every source produces, the log stores, rules evaluate and
/// sinks deliver. Groups most events lack are boxed, which keeps the struct small to move.
///
/// On input only `class` is required: a missing `id` gets a new time-ordered id, a missing
/// `observed_time` the time Vigil received the event, and a missing `time` the observed time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityEvent {
    /// Version of this schema the event was written with (currently 1).
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// Stable, time-ordered (UUIDv7) id; sinks use it for idempotent delivery.
    #[serde(default = "EventId::generate")]
    #[schemars(skip_serializing_if = "always")]
    pub id: EventId,
    /// When the event happened, RFC 3339. Detection windows run on this time.
    #[serde(default = "unset_time")]
    #[schemars(skip_serializing_if = "always")]
    pub time: DateTime<Utc>,
    /// When Vigil (or the collector that forwarded it) first observed the event, RFC 3339.
    #[serde(default = "unset_time")]
    #[schemars(skip_serializing_if = "always")]
    pub observed_time: DateTime<Utc>,
    /// What kind of activity this is.
    pub class: EventClass,
    /// What happened, as a short verb phrase from the producer (`ssh_login`, `user_created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Whether the activity succeeded.
    #[serde(default, skip_serializing_if = "Outcome::is_unknown")]
    pub outcome: Outcome,
    /// How severe the producer considers the event.
    #[serde(default, skip_serializing_if = "Severity::is_info")]
    pub severity: Severity,
    /// Human-readable description of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The product or service that produced the event (`sshd`, `aws.cloudtrail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Where the activity came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    /// Where the activity went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Endpoint>,
    /// Network details of the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Box<Network>>,
    /// The user who performed the activity (and, for account changes, the target account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Box<User>>,
    /// The host the event was recorded on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Box<Host>>,
    /// The process involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Box<Process>>,
    /// The file involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<File>>,
    /// The URL involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Box<Url>>,
    /// HTTP request and response details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Box<Http>>,
    /// Cloud provider context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Box<Cloud>>,
    /// The threat-intelligence indicator the event matched (set by enrichment at ingest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat: Option<Box<Threat>>,
    /// The tenant the event belongs to, for multi-tenant deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Key-value labels (string values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Everything else the producer knows, as JSON; addressable as `attributes.a.b`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    /// The original record, when the producer keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

fn schema_version() -> u32 {
    SCHEMA_VERSION
}

/// Marks a time the producer did not give; [`SecurityEvent::fill_times`] replaces it.
pub fn unset_time() -> DateTime<Utc> {
    DateTime::<Utc>::MIN_UTC
}

// Keeps generated defaults (random ids, the "unset" marker) out of the JSON Schema.
fn always<T>(_: &T) -> bool {
    true
}

impl SecurityEvent {
    /// A new event of `class` at `time`, observed now, with every optional field empty.
    pub fn new(class: EventClass, time: DateTime<Utc>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            id: EventId::generate(),
            time,
            observed_time: Utc::now(),
            class,
            action: None,
            outcome: Outcome::Unknown,
            severity: Severity::Info,
            message: None,
            provider: None,
            source: None,
            destination: None,
            network: None,
            user: None,
            host: None,
            process: None,
            file: None,
            url: None,
            http: None,
            cloud: None,
            threat: None,
            tenant: None,
            tags: Vec::new(),
            labels: BTreeMap::new(),
            attributes: Map::new(),
            raw: None,
        }
    }

    /// Fills the times the producer left out: `observed_time` with `now`, `time` with the
    /// observed time.
    pub fn fill_times(&mut self, now: DateTime<Utc>) {
        if self.observed_time == unset_time() {
            self.observed_time = now;
        }
        if self.time == unset_time() {
            self.time = self.observed_time;
        }
    }
}

/// The kind of activity an event records (after OCSF's categories).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Logons, logoffs, credential checks.
    Authentication,
    /// Permission checks and changes, privilege use.
    Authorization,
    /// Account management: users and groups created, changed, deleted.
    Account,
    /// Network connections and flows.
    Network,
    /// DNS queries and answers.
    Dns,
    /// HTTP requests.
    Http,
    /// Process starts, exits, injections.
    Process,
    /// File reads, writes, deletions.
    File,
    /// Calls to a cloud or service API.
    Api,
    /// Audit-log records about the system itself.
    Audit,
    /// Configuration changes.
    Configuration,
    /// A finding produced by another security tool (scanner, EDR, secret scanner).
    Finding,
    /// Health and operational events of systems, including Vigil's own.
    System,
    /// Anything else.
    Other,
}

impl EventClass {
    /// Every class, in declaration order.
    pub const ALL: [EventClass; 14] = [
        Self::Authentication,
        Self::Authorization,
        Self::Account,
        Self::Network,
        Self::Dns,
        Self::Http,
        Self::Process,
        Self::File,
        Self::Api,
        Self::Audit,
        Self::Configuration,
        Self::Finding,
        Self::System,
        Self::Other,
    ];

    /// The class as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Authorization => "authorization",
            Self::Account => "account",
            Self::Network => "network",
            Self::Dns => "dns",
            Self::Http => "http",
            Self::Process => "process",
            Self::File => "file",
            Self::Api => "api",
            Self::Audit => "audit",
            Self::Configuration => "configuration",
            Self::Finding => "finding",
            Self::System => "system",
            Self::Other => "other",
        }
    }

    /// Parses the JSON name of a class.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for EventClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the activity succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed.
    Failure,
    /// Not known or not applicable.
    #[default]
    Unknown,
}

impl Outcome {
    /// The outcome as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Unknown => "unknown",
        }
    }

    fn is_unknown(&self) -> bool {
        *self == Self::Unknown
    }
}

/// Severity of an event or alert, lowest first (OCSF's scale without "fatal").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    #[default]
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [Self::Info, Self::Low, Self::Medium, Self::High, Self::Critical];

    /// The severity as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Parses the JSON name of a severity.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn is_info(&self) -> bool {
        *self == Self::Info
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One end of a connection or request (ECS `source.*` / `destination.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// IP address, v4 or v6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Host name or domain of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Bytes sent from this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Packets sent from this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
}

/// Network details (ECS `network.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Transport protocol (`tcp`, `udp`, `icmp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Application protocol (`ssh`, `http`, `dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Direction relative to the monitored network (`inbound`, `outbound`, `internal`, `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Total bytes in both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// A user account (ECS `user.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Account id (uid, SID, ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Domain or realm of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Roles or groups the account holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The account acted upon, for account management events (ECS `user.target.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Box<TargetUser>>,
}

/// The account an account-management event acts upon.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetUser {
    /// Account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Account id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Roles or groups of the account after the change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// The host that recorded the event (ECS `host.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host id (machine id, instance id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Primary IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Operating system name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
}

/// A process (ECS `process.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Process name (`sshd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path of the executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// Full command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// The parent process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Box<ParentProcess>>,
}

/// The parent of a process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentProcess {
    /// Process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Process name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path of the executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// Full command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
}

/// A file (ECS `file.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Full path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File name without the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Hashes of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<Box<Hashes>>,
}

/// Content hashes, lowercase hex.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hashes {
    /// MD5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// SHA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A URL (ECS `url.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Url {
    /// The whole URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    /// Host part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Path part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Query string without the `?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// HTTP request and response (ECS `http.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Request method (`GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Response status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// User-Agent header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Request body size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_bytes: Option<u64>,
    /// Response body size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
}

/// Cloud context (ECS `cloud.*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cloud {
    /// Provider (`aws`, `gcp`, `azure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Account, subscription or project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Service name (`s3`, `iam`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// A threat-intelligence match: the indicator one of the event's values matched, with its
/// feed and what the feed says about it. When several indicators match, the one with the
/// highest confidence is kept and `matches` counts them all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Threat {
    /// The STIX id of the indicator (`indicator--…`).
    pub indicator_id: String,
    /// The indicator's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator_name: Option<String>,
    /// The kind of value matched: `ipv4-addr`, `ipv6-addr`, `domain-name`, `url`,
    /// `email-addr`, `file`.
    pub indicator_type: String,
    /// The feed the indicator came from.
    pub feed: String,
    /// The feed's confidence in the indicator, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<u8>,
    /// The event field that matched (`source.ip`).
    pub matched_field: String,
    /// The value of that field.
    pub matched_value: String,
    /// Threat actors and intrusion sets the indicator is related to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    /// Campaigns the indicator is related to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<String>,
    /// Malware the indicator indicates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malware: Vec<String>,
    /// The indicator's labels and indicator types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Kill-chain phases, as `chain:phase`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kill_chain_phases: Vec<String>,
    /// How many indicators matched the event's values.
    #[serde(default = "one")]
    pub matches: u32,
}

fn one() -> u32 {
    1
}
