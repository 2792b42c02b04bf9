//! Windows events: EVTX files ([`evtx`]), event XML ([`xml`]), and the JSON forms they
//! travel in — evtx_dump's `{"Event": {"System": …, "EventData": …}}`, Winlogbeat's
//! `winlog.*`, the flattened records of NXLog and the OTRF datasets (`EventID`,
//! `Channel`, `Hostname` and the event data at the top level), Sentinel's `SecurityEvent`
//! and `WindowsEvent` tables (`EventData` as a JSON string).
//!
//! Every form is first read into one flat map of Windows names — the `System` fields
//! (`EventID`, `Channel`, `Computer`, `Provider_Name`, `EventRecordID`, `TimeCreated`…)
//! and the event data (`TargetUserName`, `Image`, `CommandLine`…) — which is kept under
//! `attributes.windows` so rules and Sigma read any field by the name Windows gives it.
//! Security auditing (logons, Kerberos, NTLM, process creation, account and group
//! management, audit policy, log clearing, object access, services, tasks, WFP) and
//! Sysmon (1–29) events map to the model through the tables below.

pub mod evtx;
mod stream;
pub mod xml;

use serde_json::{Map, Value};

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};

/// Which family an event belongs to (event ids overlap between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `Microsoft-Windows-Security-Auditing` (the Security channel).
    Security,
    /// Sysmon, on Windows or Linux.
    Sysmon,
    /// `Microsoft-Windows-Eventlog` (1102, 104).
    Eventlog,
    /// `Service Control Manager` (7045).
    ServiceControl,
    /// Windows PowerShell and PowerShell 7 (4103, 4104).
    PowerShell,
    /// Anything else.
    Other,
}

/// One event kind: family, event id, class, action, and its fields.
pub type Kind = (Family, u64, EventClass, &'static str, &'static [Mapping]);

const LOGON: &[Mapping] = &[
    ("TargetUserName", "user.name"),
    ("TargetDomainName", "user.domain"),
    ("TargetUserSid", "user.id"),
    ("IpAddress", "source.address"),
    ("IpPort", "source.port"),
    ("WorkstationName", "source.domain"),
    ("ProcessName", "process.executable"),
    ("ProcessId", "process.pid"),
    ("FailureReason", "message"),
];
const SUBJECT: &[Mapping] =
    &[("SubjectUserName", "user.name"), ("SubjectDomainName", "user.domain"), ("SubjectUserSid", "user.id")];
const EXPLICIT: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("TargetUserName", "user.target.name"),
    ("TargetServerName", "destination.domain"),
    ("IpAddress", "source.address"),
    ("IpPort", "source.port"),
    ("ProcessName", "process.executable"),
];
const PROCESS_4688: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("SubjectUserSid", "user.id"),
    ("NewProcessName", "process.executable"),
    ("NewProcessId", "process.pid"),
    ("CommandLine", "process.command_line"),
    ("ParentProcessName", "process.parent.executable"),
    ("ProcessId", "process.parent.pid"),
];
const PROCESS_4689: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("ProcessName", "process.executable"),
    ("ProcessId", "process.pid"),
];
const ACCOUNT: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("SubjectUserSid", "user.id"),
    ("TargetUserName", "user.target.name"),
    ("TargetSid", "user.target.id"),
];
const LOCKOUT: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("TargetUserName", "user.target.name"),
    ("TargetSid", "user.target.id"),
    ("TargetDomainName", "source.domain"),
];
/// Group membership: the member is the account acted upon, the group its role.
const MEMBER: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("SubjectUserSid", "user.id"),
    ("MemberName", "user.target.name"),
    ("MemberSid", "user.target.id"),
    ("TargetUserName", "user.target.roles"),
];
const KERBEROS: &[Mapping] = &[
    ("TargetUserName", "user.name"),
    ("TargetDomainName", "user.domain"),
    ("TargetSid", "user.id"),
    ("IpAddress", "source.address"),
    ("IpPort", "source.port"),
    ("ServiceName", "destination.domain"),
];
const NTLM: &[Mapping] = &[("TargetUserName", "user.name"), ("Workstation", "source.domain")];
const SERVICE_4697: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("ServiceFileName", "process.command_line"),
];
const SERVICE_7045: &[Mapping] = &[("ImagePath", "process.command_line"), ("AccountName", "user.target.name")];
const TASK: &[Mapping] = &[("SubjectUserName", "user.name"), ("SubjectDomainName", "user.domain")];
const OBJECT: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("SubjectUserSid", "user.id"),
    ("ObjectName", "file.path"),
    ("ProcessName", "process.executable"),
    ("ProcessId", "process.pid"),
];
const SHARE: &[Mapping] = &[
    ("SubjectUserName", "user.name"),
    ("SubjectDomainName", "user.domain"),
    ("IpAddress", "source.address"),
    ("IpPort", "source.port"),
    ("RelativeTargetName", "file.path"),
];
const WFP: &[Mapping] = &[
    ("SourceAddress", "source.address"),
    ("SourcePort", "source.port"),
    ("DestAddress", "destination.address"),
    ("DestPort", "destination.port"),
    ("Application", "process.executable"),
    ("ProcessID", "process.pid"),
];
const LOG_CLEARED: &[Mapping] = &[("SubjectUserName", "user.name"), ("SubjectDomainName", "user.domain")];
const SYSMON_PROCESS: &[Mapping] = &[
    ("Image", "process.executable"),
    ("ProcessId", "process.pid"),
    ("CommandLine", "process.command_line"),
    ("ParentImage", "process.parent.executable"),
    ("ParentProcessId", "process.parent.pid"),
    ("ParentCommandLine", "process.parent.command_line"),
    ("User", "user.name"),
    ("Image", "file.path"),
];
const SYSMON_IMAGE: &[Mapping] = &[
    ("Image", "process.executable"),
    ("ProcessId", "process.pid"),
    ("User", "user.name"),
    ("ImageLoaded", "file.path"),
];
const SYSMON_NETWORK: &[Mapping] = &[
    ("Image", "process.executable"),
    ("ProcessId", "process.pid"),
    ("User", "user.name"),
    ("Protocol", "network.transport"),
    ("SourceIp", "source.ip"),
    ("SourcePort", "source.port"),
    ("SourceHostname", "source.domain"),
    ("DestinationIp", "destination.ip"),
    ("DestinationPort", "destination.port"),
    ("DestinationHostname", "destination.domain"),
];
const SYSMON_ACCESS: &[Mapping] = &[
    ("SourceImage", "process.executable"),
    ("SourceProcessId", "process.pid"),
    ("SourceUser", "user.name"),
    ("TargetUser", "user.target.name"),
];
const SYSMON_FILE: &[Mapping] = &[
    ("Image", "process.executable"),
    ("ProcessId", "process.pid"),
    ("User", "user.name"),
    ("TargetFilename", "file.path"),
];
const SYSMON_REGISTRY: &[Mapping] = &[
    ("Image", "process.executable"),
    ("ProcessId", "process.pid"),
    ("User", "user.name"),
    ("TargetObject", "file.path"),
];
const SYSMON_PIPE: &[Mapping] =
    &[("Image", "process.executable"), ("ProcessId", "process.pid"), ("User", "user.name"), ("PipeName", "file.path")];
const SYSMON_DNS: &[Mapping] = &[
    ("Image", "process.executable"),
    ("ProcessId", "process.pid"),
    ("User", "user.name"),
    ("QueryName", "url.domain"),
];
const SYSMON_WMI: &[Mapping] = &[("User", "user.name")];
const POWERSHELL: &[Mapping] = &[("Path", "file.path")];
const NONE: &[Mapping] = &[];

/// The events mapped to the model.
pub const KINDS: &[Kind] = &[
    (Family::Security, 4624, EventClass::Authentication, "logon", LOGON),
    (Family::Security, 4625, EventClass::Authentication, "logon", LOGON),
    (Family::Security, 4634, EventClass::Authentication, "logoff", LOGON),
    (Family::Security, 4647, EventClass::Authentication, "logoff", LOGON),
    (Family::Security, 4648, EventClass::Authentication, "explicit_credential_logon", EXPLICIT),
    (Family::Security, 4672, EventClass::Authorization, "special_privileges_assigned", SUBJECT),
    (Family::Security, 4688, EventClass::Process, "process_started", PROCESS_4688),
    (Family::Security, 4689, EventClass::Process, "process_terminated", PROCESS_4689),
    (Family::Security, 4697, EventClass::Configuration, "service_installed", SERVICE_4697),
    (Family::Security, 4698, EventClass::Configuration, "scheduled_task_created", TASK),
    (Family::Security, 4699, EventClass::Configuration, "scheduled_task_deleted", TASK),
    (Family::Security, 4700, EventClass::Configuration, "scheduled_task_enabled", TASK),
    (Family::Security, 4701, EventClass::Configuration, "scheduled_task_disabled", TASK),
    (Family::Security, 4702, EventClass::Configuration, "scheduled_task_updated", TASK),
    (Family::Security, 4720, EventClass::Account, "user_created", ACCOUNT),
    (Family::Security, 4722, EventClass::Account, "user_enabled", ACCOUNT),
    (Family::Security, 4723, EventClass::Account, "password_changed", ACCOUNT),
    (Family::Security, 4724, EventClass::Account, "password_reset", ACCOUNT),
    (Family::Security, 4725, EventClass::Account, "user_disabled", ACCOUNT),
    (Family::Security, 4726, EventClass::Account, "user_deleted", ACCOUNT),
    (Family::Security, 4738, EventClass::Account, "user_changed", ACCOUNT),
    (Family::Security, 4740, EventClass::Account, "user_locked", LOCKOUT),
    (Family::Security, 4767, EventClass::Account, "user_unlocked", ACCOUNT),
    (Family::Security, 4781, EventClass::Account, "user_renamed", ACCOUNT),
    (Family::Security, 4727, EventClass::Account, "group_created", ACCOUNT),
    (Family::Security, 4731, EventClass::Account, "group_created", ACCOUNT),
    (Family::Security, 4754, EventClass::Account, "group_created", ACCOUNT),
    (Family::Security, 4728, EventClass::Account, "group_member_added", MEMBER),
    (Family::Security, 4732, EventClass::Account, "group_member_added", MEMBER),
    (Family::Security, 4756, EventClass::Account, "group_member_added", MEMBER),
    (Family::Security, 4729, EventClass::Account, "group_member_removed", MEMBER),
    (Family::Security, 4733, EventClass::Account, "group_member_removed", MEMBER),
    (Family::Security, 4757, EventClass::Account, "group_member_removed", MEMBER),
    (Family::Security, 4768, EventClass::Authentication, "kerberos_tgt_request", KERBEROS),
    (Family::Security, 4769, EventClass::Authentication, "kerberos_service_ticket", KERBEROS),
    (Family::Security, 4771, EventClass::Authentication, "kerberos_preauth", KERBEROS),
    (Family::Security, 4776, EventClass::Authentication, "credential_validation", NTLM),
    (Family::Security, 4719, EventClass::Audit, "audit_policy_changed", SUBJECT),
    (Family::Security, 4662, EventClass::Audit, "directory_object_access", SUBJECT),
    (Family::Security, 4663, EventClass::File, "object_accessed", OBJECT),
    (Family::Security, 4656, EventClass::File, "object_handle_requested", OBJECT),
    (Family::Security, 4657, EventClass::Configuration, "registry_value_set", OBJECT),
    (Family::Security, 5140, EventClass::File, "share_accessed", SHARE),
    (Family::Security, 5145, EventClass::File, "share_object_checked", SHARE),
    (Family::Security, 5156, EventClass::Network, "connection", WFP),
    (Family::Security, 5157, EventClass::Network, "connection_blocked", WFP),
    (Family::Eventlog, 1102, EventClass::Audit, "audit_log_cleared", LOG_CLEARED),
    (Family::Eventlog, 104, EventClass::Audit, "audit_log_cleared", LOG_CLEARED),
    (Family::ServiceControl, 7045, EventClass::Configuration, "service_installed", SERVICE_7045),
    (Family::PowerShell, 4103, EventClass::Process, "powershell_pipeline", POWERSHELL),
    (Family::PowerShell, 4104, EventClass::Process, "powershell_script_block", POWERSHELL),
    (Family::Sysmon, 1, EventClass::Process, "process_started", SYSMON_PROCESS),
    (Family::Sysmon, 2, EventClass::File, "file_time_changed", SYSMON_FILE),
    (Family::Sysmon, 3, EventClass::Network, "connection", SYSMON_NETWORK),
    (Family::Sysmon, 5, EventClass::Process, "process_terminated", SYSMON_PROCESS),
    (Family::Sysmon, 6, EventClass::Process, "driver_loaded", SYSMON_IMAGE),
    (Family::Sysmon, 7, EventClass::Process, "image_loaded", SYSMON_IMAGE),
    (Family::Sysmon, 8, EventClass::Process, "remote_thread_created", SYSMON_ACCESS),
    (Family::Sysmon, 9, EventClass::File, "raw_disk_read", SYSMON_FILE),
    (Family::Sysmon, 10, EventClass::Process, "process_accessed", SYSMON_ACCESS),
    (Family::Sysmon, 11, EventClass::File, "file_created", SYSMON_FILE),
    (Family::Sysmon, 12, EventClass::Configuration, "registry_key_changed", SYSMON_REGISTRY),
    (Family::Sysmon, 13, EventClass::Configuration, "registry_value_set", SYSMON_REGISTRY),
    (Family::Sysmon, 14, EventClass::Configuration, "registry_key_renamed", SYSMON_REGISTRY),
    (Family::Sysmon, 15, EventClass::File, "file_stream_created", SYSMON_FILE),
    (Family::Sysmon, 16, EventClass::Configuration, "sysmon_config_changed", NONE),
    (Family::Sysmon, 17, EventClass::File, "pipe_created", SYSMON_PIPE),
    (Family::Sysmon, 18, EventClass::File, "pipe_connected", SYSMON_PIPE),
    (Family::Sysmon, 19, EventClass::Configuration, "wmi_filter_registered", SYSMON_WMI),
    (Family::Sysmon, 20, EventClass::Configuration, "wmi_consumer_registered", SYSMON_WMI),
    (Family::Sysmon, 21, EventClass::Configuration, "wmi_binding_registered", SYSMON_WMI),
    (Family::Sysmon, 22, EventClass::Dns, "dns_query", SYSMON_DNS),
    (Family::Sysmon, 23, EventClass::File, "file_deleted", SYSMON_FILE),
    (Family::Sysmon, 24, EventClass::Other, "clipboard_changed", SYSMON_FILE),
    (Family::Sysmon, 25, EventClass::Process, "process_tampering", SYSMON_PROCESS),
    (Family::Sysmon, 26, EventClass::File, "file_deleted", SYSMON_FILE),
    (Family::Sysmon, 27, EventClass::File, "file_blocked", SYSMON_FILE),
    (Family::Sysmon, 28, EventClass::File, "file_blocked", SYSMON_FILE),
    (Family::Sysmon, 29, EventClass::File, "file_created", SYSMON_FILE),
];

/// Fields every event shares.
pub const COMMON: &[Mapping] = &[("Computer", "host.name"), ("Message", "message")];

/// The family of an event, from its provider or channel.
fn family(fields: &Map<String, Value>) -> Family {
    let get = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or("");
    let provider = get("Provider_Name");
    let channel = get("Channel");
    if provider.ends_with("Sysmon") || channel.contains("Sysmon/") {
        Family::Sysmon
    } else if provider == "Microsoft-Windows-Eventlog" || provider == "Eventlog" {
        Family::Eventlog
    } else if provider.starts_with("Microsoft-Windows-Security-Auditing")
        || provider.is_empty() && channel == "Security"
    {
        Family::Security
    } else if provider == "Service Control Manager" {
        Family::ServiceControl
    } else if provider.contains("PowerShell") || channel.contains("PowerShell") {
        Family::PowerShell
    } else {
        Family::Other
    }
}

/// Reads any JSON form of a Windows event into the flat map of Windows names.
pub fn flatten_json(record: Value) -> Result<Map<String, Value>, DecodeError> {
    let Value::Object(mut o) = record else { return Err(DecodeError::unreadable("windows", "expected a JSON object")) };
    let mut flat = Map::new();
    if let Some(Value::Object(event)) = o.remove("Event") {
        // evtx_dump / the evtx crate.
        let mut event = event;
        if let Some(system) = event.remove("System") {
            system_fields(&system, &mut flat);
        }
        for key in ["EventData", "UserData"] {
            if let Some(data) = event.remove(key) {
                event_data(data, &mut flat);
            }
        }
        return Ok(flat);
    }
    if let Some(Value::Object(winlog)) = o.remove("winlog") {
        // Winlogbeat: `winlog.*` beside ECS fields.
        let w = Value::Object(winlog);
        for (from, to) in [
            ("event_id", "EventID"),
            ("channel", "Channel"),
            ("computer_name", "Computer"),
            ("provider_name", "Provider_Name"),
            ("record_id", "EventRecordID"),
            ("process.pid", "ProcessID"),
        ] {
            if let Some(v) = json::get(&w, from) {
                flat.insert(to.into(), v.clone());
            }
        }
        for key in ["event_data", "user_data"] {
            if let Some(data) = json::get(&w, key) {
                event_data(data.clone(), &mut flat);
            }
        }
        if let Some(t) = o.get("@timestamp") {
            flat.insert("TimeCreated".into(), t.clone());
        }
        if let Some(m) = o.get("message") {
            flat.insert("Message".into(), m.clone());
        }
        return Ok(flat);
    }
    // Flattened (NXLog, OTRF, Sentinel): System fields under their NXLog names, event
    // data at the top level or in `EventData` (an object, or a JSON string). The record
    // is the flat map already: its fields stay, the System fields are added under their
    // Windows names, and the event data's fields over them.
    for (from, to) in [
        ("EventId", "EventID"),
        ("Hostname", "Computer"),
        ("SourceName", "Provider_Name"),
        ("ProviderName", "Provider_Name"),
        ("Provider", "Provider_Name"),
        ("RecordNumber", "EventRecordID"),
        ("EventTime", "TimeCreated"),
        ("TimeGenerated", "TimeCreated"),
        ("@timestamp", "TimeCreated"),
        ("ExecutionProcessID", "ProcessID"),
    ] {
        if !o.contains_key(to)
            && let Some(v) = o.get(from)
        {
            let v = v.clone();
            o.insert(to.into(), v);
        }
    }
    if let Some(data) = o.remove("EventData") {
        match data {
            Value::String(text) => match serde_json::from_str::<Value>(&text) {
                Ok(parsed) => event_data(parsed, &mut o),
                Err(_) => {
                    o.insert("EventData".into(), Value::String(text));
                }
            },
            other => event_data(other, &mut o),
        }
    }
    Ok(o)
}

/// The `System` element of evtx_dump JSON, flattened.
fn system_fields(system: &Value, flat: &mut Map<String, Value>) {
    // Direct steps, not dotted paths: this runs for every EVTX record.
    let attr = |path: &str, name: &str| system.get(path)?.get("#attributes")?.get(name).cloned();
    let text = |path: &str| match system.get(path)? {
        Value::Object(o) => o.get("#text").cloned(),
        other => Some(other.clone()),
    };
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            flat.insert(k.into(), v);
        }
    };
    put("Provider_Name", attr("Provider", "Name"));
    put("Provider_Guid", attr("Provider", "Guid"));
    put("EventSourceName", attr("Provider", "EventSourceName"));
    for key in ["EventID", "Version", "Level", "Task", "Opcode", "Keywords", "EventRecordID", "Channel", "Computer"] {
        put(key, text(key));
    }
    put("TimeCreated", attr("TimeCreated", "SystemTime"));
    put("ProcessID", attr("Execution", "ProcessID"));
    put("ThreadID", attr("Execution", "ThreadID"));
    put("UserID", attr("Security", "UserID"));
    put("ActivityID", attr("Correlation", "ActivityID"));
}

/// Event data into the flat map: named fields as they are; `UserData`'s one wrapper
/// element (`LogFileCleared`) unwrapped; unnamed `Data` as `Data`.
fn event_data(data: Value, flat: &mut Map<String, Value>) {
    let Value::Object(map) = data else {
        if !data.is_null() {
            flat.insert("Data".into(), data);
        }
        return;
    };
    for (k, v) in map {
        if k != "#attributes" {
            data_field(k, v, flat);
        }
    }
}

/// One field of the event data: a named value as it is, an element with attributes by
/// its text, a wrapper element (`UserData`'s `LogFileCleared`) by its fields.
fn data_field(k: String, v: Value, flat: &mut Map<String, Value>) {
    match v {
        Value::Object(inner) if !inner.contains_key("#text") => {
            for (ik, iv) in inner {
                if ik != "#attributes" {
                    flat.entry(ik).or_insert(iv);
                }
            }
        }
        Value::Object(mut inner) => {
            if let Some(text) = inner.remove("#text") {
                flat.insert(k, text);
            }
        }
        other => {
            flat.insert(k, other);
        }
    }
}

/// Decodes one JSON Windows event (any of the forms above).
pub fn decode_json(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let flat = flatten_json(record)?;
    map(flat, ctx)
}

/// Maps the flat fields of one event to the model.
pub fn map(mut fields: Map<String, Value>, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    // Some providers name their data with spaces (Defender's `Threat Name`); they are
    // kept without them (`ThreatName`), the names Sigma rules and every Windows tool use.
    if fields.keys().any(|k| k.contains(' ')) {
        fields =
            fields.into_iter().map(|(k, v)| if k.contains(' ') { (k.replace(' ', ""), v) } else { (k, v) }).collect();
    }
    let id = fields.get("EventID").and_then(set::uint).ok_or_else(|| DecodeError::missing("EventID"))?;
    let family = family(&fields);
    let kind = KINDS.iter().find(|(f, k, ..)| *f == family && *k == id);
    let (class, action, table) = match kind {
        Some((_, _, class, action, table)) => (*class, (*action).to_owned(), *table),
        None => {
            let class = match family {
                Family::Security | Family::Eventlog => EventClass::Audit,
                Family::Sysmon => EventClass::Other,
                _ => EventClass::System,
            };
            (class, format!("event_{id}"), NONE)
        }
    };
    let mut e = ctx.event(class);
    e.action = Some(action);
    let record = Value::Object(fields);
    e.provider = json::text(&record, "Provider_Name").or_else(|| json::text(&record, "Channel"));
    if let Some(t) = ["TimeCreated", "UtcTime"].iter().find_map(|k| json::get(&record, k).and_then(set::time)) {
        e.time = t;
    }
    set::apply(&mut e, &record, COMMON);
    set::apply(&mut e, &record, table);
    split_domain_users(&mut e);
    e.outcome = outcome(&record, id, family);
    e.severity = match json::uint(&record, "Level") {
        Some(1) => Severity::Critical,
        Some(2) => Severity::High,
        Some(3) => Severity::Medium,
        _ => Severity::Info,
    };
    specifics(&mut e, &record, id, family);
    let Value::Object(fields) = record else { unreachable!("built as an object") };
    e.attributes.insert("windows".into(), Value::Object(fields));
    Ok(e)
}

/// `DOMAIN\user` (Sysmon's `User`, a member's name) split into domain and name.
fn split_domain_users(e: &mut SecurityEvent) {
    if let Some(user) = e.user.as_mut() {
        if let Some((domain, name)) = user.name.as_deref().and_then(|n| n.split_once('\\')) {
            let (domain, name) = (domain.to_owned(), name.to_owned());
            user.domain.get_or_insert(domain);
            user.name = Some(name);
        }
        if let Some(target) = user.target.as_mut()
            && let Some((_, name)) = target.name.as_deref().and_then(|n| n.split_once('\\'))
        {
            target.name = Some(name.to_owned());
        }
    }
}

/// Success or failure: the status codes of Kerberos and NTLM, the audit keywords, the
/// failure events.
fn outcome(r: &Value, id: u64, family: Family) -> Outcome {
    if family == Family::Security {
        match id {
            4625 | 4771 | 5157 => return Outcome::Failure,
            4768 | 4769 | 4776 => {
                let status = json::text(r, "Status").or_else(|| json::text(r, "ResultCode"));
                return match status.as_deref().map(|s| s.trim_start_matches("0x").trim_start_matches('0')) {
                    Some("") => Outcome::Success,
                    Some(_) => Outcome::Failure,
                    None => Outcome::Unknown,
                };
            }
            _ => {}
        }
    }
    if family == Family::Sysmon && id == 22 {
        return match json::uint(r, "QueryStatus") {
            Some(0) => Outcome::Success,
            Some(_) => Outcome::Failure,
            None => Outcome::Unknown,
        };
    }
    // Security auditing marks its events as audit success or failure.
    let keywords = json::text(r, "Keywords").unwrap_or_default().to_ascii_lowercase();
    match json::str(r, "EventType") {
        Some("AUDIT_SUCCESS") => return Outcome::Success,
        Some("AUDIT_FAILURE") => return Outcome::Failure,
        _ => {}
    }
    if keywords.starts_with("0x802") {
        Outcome::Success
    } else if keywords.starts_with("0x801") {
        Outcome::Failure
    } else if family == Family::Security || family == Family::Sysmon {
        Outcome::Success
    } else {
        Outcome::Unknown
    }
}

/// What a few events carry beyond their table.
fn specifics(e: &mut SecurityEvent, r: &Value, id: u64, family: Family) {
    // The program's name beside its path.
    if let Some(name) = e.process.as_ref().and_then(|p| p.executable.as_deref()).and_then(base_name) {
        let name = name.to_owned();
        e.process.get_or_insert_with(Default::default).name.get_or_insert(name);
    }
    if let Some(name) =
        e.process.as_ref().and_then(|p| p.parent.as_ref()).and_then(|p| p.executable.as_deref()).and_then(base_name)
    {
        let name = name.to_owned();
        if let Some(parent) = e.process.as_mut().and_then(|p| p.parent.as_mut()) {
            parent.name.get_or_insert(name);
        }
    }
    if let Some(name) = e.file.as_ref().and_then(|f| f.path.as_deref()).and_then(base_name) {
        let name = name.to_owned();
        e.file.get_or_insert_with(Default::default).name.get_or_insert(name);
    }
    // Sysmon's `Hashes`: `SHA256=…,MD5=…`.
    if let Some(hashes) = json::str(r, "Hashes").or_else(|| json::str(r, "Hash")) {
        for part in hashes.split(',') {
            if let Some((algorithm, value)) = part.split_once('=') {
                let to = match algorithm.trim().to_ascii_uppercase().as_str() {
                    "MD5" => "file.hash.md5",
                    "SHA1" => "file.hash.sha1",
                    "SHA256" => "file.hash.sha256",
                    _ => continue,
                };
                set::put_str(e, to, value);
            }
        }
    }
    match (family, id) {
        (Family::Sysmon, 3) => {
            let outbound = json::bool(r, "Initiated");
            if let Some(direction) = outbound.map(|o| if o { "outbound" } else { "inbound" }) {
                set::put_str(e, "network.direction", direction);
            }
        }
        (Family::Sysmon, 22) => {
            if let Some(name) = json::str(r, "QueryName") {
                let question = serde_json::json!({ "name": name, "type": json::get(r, "QueryType") });
                e.attributes.insert("dns".into(), serde_json::json!({ "question": question }));
            }
        }
        (Family::Security, 5156 | 5157) => {
            let direction = match json::str(r, "Direction") {
                Some("%%14592") => Some("inbound"),
                Some("%%14593") => Some("outbound"),
                _ => None,
            };
            if let Some(direction) = direction {
                set::put_str(e, "network.direction", direction);
            }
            let transport = match json::uint(r, "Protocol") {
                Some(6) => Some("tcp"),
                Some(17) => Some("udp"),
                Some(1) => Some("icmp"),
                _ => None,
            };
            if let Some(transport) = transport {
                set::put_str(e, "network.transport", transport);
            }
        }
        (Family::Security, 4624 | 4625) => {
            if let Some(logon_type) = json::text(r, "LogonType") {
                e.labels.insert("logon_type".into(), logon_type);
            }
        }
        _ => {}
    }
}

/// `C:\Windows\System32\cmd.exe` → `cmd.exe` (either slash).
fn base_name(path: &str) -> Option<&str> {
    path.rsplit(['\\', '/']).next().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_one(v: Value) -> SecurityEvent {
        decode_json(v, &crate::source::decode::test_ctx()).expect("decodes")
    }

    #[test]
    fn evtx_dump_json_flattened_json_and_sentinel_read_alike() {
        let evtx = json!({ "Event": { "System": { "Provider": { "#attributes": { "Name": "Microsoft-Windows-Security-Auditing" } },
            "EventID": 4625, "Channel": "Security", "Computer": "DC01", "Keywords": "0x8010000000000000",
            "TimeCreated": { "#attributes": { "SystemTime": "2026-03-02T11:58:01.123Z" } } },
            "EventData": { "TargetUserName": "admin", "TargetDomainName": "CORP", "IpAddress": "::ffff:203.0.113.7",
                           "IpPort": "52311", "LogonType": 3 } } });
        let flat = json!({ "EventID": 4625, "Channel": "Security", "SourceName": "Microsoft-Windows-Security-Auditing",
            "Hostname": "DC01", "EventTime": "2026-03-02 11:58:01", "TargetUserName": "admin", "TargetDomainName": "CORP",
            "IpAddress": "203.0.113.7", "IpPort": "52311", "LogonType": "3", "EventType": "AUDIT_FAILURE" });
        let sentinel = json!({ "EventID": 4625, "Channel": "Security", "Provider": "Microsoft-Windows-Security-Auditing",
            "Computer": "DC01", "TimeGenerated": "2026-03-02T11:58:01Z",
            "EventData": "{\"TargetUserName\":\"admin\",\"TargetDomainName\":\"CORP\",\"IpAddress\":\"203.0.113.7\",\"IpPort\":\"52311\",\"LogonType\":\"3\"}" });
        for doc in [evtx, flat, sentinel] {
            let e = decode_one(doc);
            assert_eq!(
                (e.class, e.outcome, e.action.as_deref()),
                (EventClass::Authentication, Outcome::Failure, Some("logon"))
            );
            assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("admin"));
            assert_eq!(e.source.as_ref().and_then(|s| s.ip).map(|ip| ip.to_string()).as_deref(), Some("203.0.113.7"));
            assert_eq!(e.host.as_ref().and_then(|h| h.name.as_deref()), Some("DC01"));
            assert_eq!(e.labels.get("logon_type").map(String::as_str), Some("3"));
            assert_eq!(e.attributes["windows"]["TargetDomainName"], "CORP");
        }
    }

    #[test]
    fn sysmon_process_creation_and_group_membership() {
        let e = decode_one(json!({ "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "WS1",
            "UtcTime": "2022-05-13 08:54:05.123", "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami",
            "ParentImage": "C:\\Java\\bin\\java.exe", "User": "CORP\\svc", "ProcessId": "3936",
            "Hashes": "SHA256=AB12,MD5=CD34" }));
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Process, Some("process_started")));
        let p = e.process.as_ref().expect("process");
        assert_eq!((p.name.as_deref(), p.pid), (Some("cmd.exe"), Some(3936)));
        assert_eq!(p.parent.as_ref().and_then(|pp| pp.name.as_deref()), Some("java.exe"));
        let u = e.user.as_ref().expect("user");
        assert_eq!((u.name.as_deref(), u.domain.as_deref()), (Some("svc"), Some("CORP")));
        assert_eq!(e.file.as_ref().and_then(|f| f.hash.as_ref()).and_then(|h| h.sha256.as_deref()), Some("ab12"));
        let e = decode_one(json!({ "EventID": 4728, "Channel": "Security", "SubjectUserName": "mallory",
            "MemberName": "CN=svc,OU=Users,DC=corp", "TargetUserName": "Domain Admins" }));
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Account, Some("group_member_added")));
        assert_eq!(
            e.user.as_ref().and_then(|u| u.target.as_ref()).map(|t| t.roles.clone()),
            Some(vec!["Domain Admins".into()])
        );
    }
}
