//! Linux audit records (`type=SYSCALL msg=audit(1604994496.155:92733): …`), as auditd
//! writes them to `audit.log`, audisp forwards them to syslog, or the kernel logs them
//! (`audit: type=1300 audit(…)`), Microsoft's auoms included.
//!
//! The records of one event share `audit(timestamp:serial)`. An [`Assembler`] groups
//! them and emits the event at its `EOE` record; a user-space message (`USER_LOGIN`,
//! `ADD_USER`, …) is complete once a record of another event follows it (a syscall record
//! of the same serial joins it, as `ANOM_PROMISCUOUS` has one). Exports often drop the `EOE`
//! lines, so an event still open is emitted when a record three seconds younger arrives,
//! when 64 events are open, and when the stream ends; if the stream did write `EOE`
//! records, such an event is stored with a warning naming it.
//!
//! A syscall event takes its class from the call: `execve` is a process start with the
//! command line from `EXECVE` (hex-encoded arguments decoded) or `PROCTITLE`; `connect`
//! a connection with the address from `SOCKADDR`; file calls a file event on the `PATH`
//! item they act on. Every record stays under `attributes.auditd.records` by its type.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Ctx, Decoded, finish, set};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};
use crate::source::batch::Rejection;

/// Open events at most; the oldest is emitted past this.
const MAX_OPEN: usize = 64;
/// An open event is emitted when a record this much younger arrives.
const MAX_AGE_MS: i64 = 3000;

/// Record types that belong to a multi-record (syscall) event and wait for its `EOE`.
const GROUPED: &[&str] = &[
    "SYSCALL",
    "EXECVE",
    "CWD",
    "PATH",
    "PROCTITLE",
    "SOCKADDR",
    "OBJ_PID",
    "FD_PAIR",
    "IPC",
    "MMAP",
    "BPRM_FCAPS",
    "CAPSET",
    "SOCKETCALL",
    "NETFILTER_CFG",
    "AVC",
    "SELINUX_ERR",
    "KERN_MODULE",
    "MQ_OPEN",
    "MQ_SENDRECV",
    "MQ_NOTIFY",
    "MQ_GETSETATTR",
    "TIME_INJOFFSET",
    "TIME_ADJNTPVAL",
    "1300",
    "1302",
    "1307",
    "1309",
    "1327",
];

/// User-space message types with a meaning in the shared vocabulary.
pub const MESSAGES: &[(&str, EventClass, &str)] = &[
    ("USER_LOGIN", EventClass::Authentication, "logon"),
    ("USER_LOGOUT", EventClass::Authentication, "logoff"),
    ("USER_AUTH", EventClass::Authentication, "credential_validation"),
    ("USER_ACCT", EventClass::Authorization, "account_check"),
    ("USER_START", EventClass::Authentication, "session_opened"),
    ("USER_END", EventClass::Authentication, "session_closed"),
    ("LOGIN", EventClass::Authentication, "login_uid_set"),
    ("CRED_ACQ", EventClass::Authentication, "credentials_acquired"),
    ("CRED_DISP", EventClass::Authentication, "credentials_disposed"),
    ("CRED_REFR", EventClass::Authentication, "credentials_refreshed"),
    ("USER_ERR", EventClass::Authentication, "logon_error"),
    ("USER_CMD", EventClass::Authorization, "sudo"),
    ("USER_CHAUTHTOK", EventClass::Account, "password_changed"),
    ("ADD_USER", EventClass::Account, "user_created"),
    ("DEL_USER", EventClass::Account, "user_deleted"),
    ("ADD_GROUP", EventClass::Account, "group_created"),
    ("DEL_GROUP", EventClass::Account, "group_deleted"),
    ("USER_MGMT", EventClass::Account, "user_changed"),
    ("GRP_MGMT", EventClass::Account, "group_changed"),
    ("ROLE_ASSIGN", EventClass::Authorization, "role_assigned"),
    ("ROLE_REMOVE", EventClass::Authorization, "role_removed"),
    ("CONFIG_CHANGE", EventClass::Audit, "audit_config_changed"),
    ("DAEMON_START", EventClass::Audit, "auditd_started"),
    ("DAEMON_END", EventClass::Audit, "auditd_stopped"),
    ("DAEMON_ABORT", EventClass::Audit, "auditd_stopped"),
    ("SERVICE_START", EventClass::System, "service_started"),
    ("SERVICE_STOP", EventClass::System, "service_stopped"),
    ("SYSTEM_BOOT", EventClass::System, "system_boot"),
    ("SYSTEM_SHUTDOWN", EventClass::System, "system_shutdown"),
    ("ANOM_ABEND", EventClass::Finding, "process_crashed"),
    ("ANOM_PROMISCUOUS", EventClass::Finding, "promiscuous_mode"),
    ("ANOM_LOGIN_FAILURES", EventClass::Finding, "login_failures"),
    ("ANOM_LOGIN_LOCATION", EventClass::Finding, "login_location"),
    ("CRYPTO_KEY_USER", EventClass::Authentication, "crypto_key"),
    ("CRYPTO_SESSION", EventClass::Authentication, "crypto_session"),
    ("AUOMS_EXECVE", EventClass::Process, "process_started"),
    ("AVC", EventClass::Authorization, "access_decision"),
];

/// One parsed record: its type and fields (the `msg='…'` of user messages flattened in).
#[derive(Debug)]
struct Record {
    kind: String,
    fields: Map<String, Value>,
    /// Keys whose values were written bare (auditd hex-encodes a text it cannot quote).
    bare: Vec<String>,
}

/// The records of one event being assembled.
#[derive(Debug)]
struct Open {
    /// A user-space message: complete without an `EOE`, unless a syscall record joins it.
    standalone: bool,
    id: String,
    time_ms: i64,
    line: usize,
    node: Option<String>,
    records: Vec<Record>,
}

/// Groups the records of a stream into events.
#[derive(Debug, Default)]
pub struct Assembler {
    open: VecDeque<Open>,
    /// Whether this stream writes `EOE` records (then an event without one is worth a warning).
    writes_eoe: bool,
    /// The newest timestamp seen.
    newest_ms: i64,
}

impl Assembler {
    /// Reads one line (a record, or a syslog message carrying one).
    pub fn push(&mut self, line: usize, text: &str, ctx: &Ctx<'_>, out: &mut Decoded) {
        let (header, record) = match parse(text) {
            Ok(parsed) => parsed,
            Err(reason) => return out.reject(line, DecodeError::unreadable("auditd", reason)),
        };
        self.newest_ms = self.newest_ms.max(header.time_ms);
        while self.open.front().is_some_and(|o| self.newest_ms - o.time_ms > MAX_AGE_MS) || self.open.len() > MAX_OPEN {
            let open = self.open.pop_front().expect("checked");
            let complete = open.standalone;
            self.emit(open, complete, ctx, out);
        }
        // A user-space message is complete once a record of another event arrives.
        while let Some(at) = self.open.iter().position(|o| o.standalone && o.id != header.id) {
            let open = self.open.remove(at).expect("found");
            self.emit(open, true, ctx, out);
        }
        let at = self.open.iter().position(|o| o.id == header.id);
        if record.kind == "EOE" {
            self.writes_eoe = true;
            if let Some(at) = at {
                let open = self.open.remove(at).expect("found");
                self.emit(open, true, ctx, out);
            }
            return;
        }
        match at {
            Some(at) => {
                let open = &mut self.open[at];
                open.standalone &= !GROUPED.contains(&record.kind.as_str());
                open.records.push(record);
            }
            None => {
                let standalone = !GROUPED.contains(&record.kind.as_str());
                let open = Open {
                    standalone,
                    id: header.id,
                    time_ms: header.time_ms,
                    line,
                    node: header.node,
                    records: vec![record],
                };
                self.open.push_back(open);
            }
        }
    }

    /// Emits every open event (the stream or batch ended).
    pub fn flush(&mut self, ctx: &Ctx<'_>, out: &mut Decoded) {
        while let Some(open) = self.open.pop_front() {
            let complete = open.standalone;
            self.emit(open, complete, ctx, out);
        }
    }

    fn emit(&self, open: Open, complete: bool, ctx: &Ctx<'_>, out: &mut Decoded) {
        let (line, id, count) = (open.line, open.id.clone(), open.records.len());
        let incomplete = !complete && self.writes_eoe;
        match event(open, ctx).and_then(|e| finish(e, "", ctx)) {
            Ok(mut event) => {
                if incomplete {
                    event.tags.push("auditd_incomplete".into());
                    let reason =
                        format!("event {id} ended without its EOE record; stored with the {count} record(s) read");
                    out.warnings.push(Rejection::new(line, DecodeError::unreadable("auditd", reason)));
                }
                out.events.push(event);
            }
            Err(error) => out.reject(line, error),
        }
    }
}

/// `audit(1604994496.155:92733)` of a record.
#[derive(Debug)]
struct Header {
    id: String,
    time_ms: i64,
    node: Option<String>,
}

/// Splits a record line into its header and fields.
fn parse(text: &str) -> Result<(Header, Record), String> {
    let at = text.find("audit(").ok_or("no `audit(timestamp:serial)` in the record")?;
    let kind = text[..at]
        .rsplit_once("type=")
        .map(|(_, k)| k.trim().trim_end_matches("msg=").trim())
        .filter(|k| !k.is_empty())
        .ok_or("no `type=` before `audit(`")?
        .to_owned();
    let node = text[..at].split_whitespace().find_map(|w| w.strip_prefix("node=")).map(str::to_owned);
    let rest = &text[at + 6..];
    let close = rest.find(')').ok_or("`audit(` is not closed")?;
    let id = &rest[..close];
    let (seconds, serial) = id.split_once(':').ok_or_else(|| format!("`{id}` is not timestamp:serial"))?;
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("serial `{serial}` of `{id}` is not a number"));
    }
    let time_ms = seconds
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0).round() as i64)
        .ok_or_else(|| format!("timestamp `{seconds}` of `{id}` is not a number"))?;
    let body = rest[close + 1..].trim_start_matches(':');
    let mut record = Record { kind, fields: Map::new(), bare: Vec::new() };
    // ENRICHED logs append the names of ids after a group separator.
    let (raw, enriched) = body.split_once('\u{1d}').unwrap_or((body, ""));
    pairs(raw, &mut record);
    pairs(enriched, &mut record);
    if record.kind.starts_with("AUOMS") {
        // auoms writes the process title bare, spaces and all, before `redactors=`.
        if let Some((_, title)) = raw.split_once(" proctitle=") {
            let title = title.split(" redactors=").next().unwrap_or(title).trim();
            record.fields.insert("proctitle".into(), Value::String(title.to_owned()));
        }
    }
    Ok((Header { id: id.to_owned(), time_ms, node }, record))
}

/// Reads `key=value` pairs (values quoted with `"` or `'`, or bare); a user message's
/// `msg='…'` is read into the same map.
fn pairs(text: &str, out: &mut Record) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        let key = &text[key_start..i];
        i += 1;
        let value = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let end = text[i + 1..].find(q as char).map_or(bytes.len(), |e| i + 1 + e);
                let v = &text[i + 1..end.min(bytes.len())];
                i = (end + 1).min(bytes.len());
                if key == "msg" && q == b'\'' {
                    pairs(v, out);
                    continue;
                }
                Value::String(v.to_owned())
            }
            _ => {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                let v = &text[start..i];
                if matches!(v, "?" | "(null)" | "(none)" | "") {
                    continue;
                }
                out.bare.push(key.to_owned());
                Value::String(v.to_owned())
            }
        };
        if !key.is_empty() {
            out.fields.insert(key.to_owned(), value);
        }
    }
}

/// A value auditd hex-encoded (because it holds spaces, quotes or controls) decoded; NULs
/// (between arguments of a proctitle) become spaces.
fn unhex(v: &str) -> Option<String> {
    if !v.len().is_multiple_of(2) || v.is_empty() || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..v.len()).step_by(2).filter_map(|i| u8::from_str_radix(&v[i..i + 2], 16).ok()).collect();
    let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
    Some(text.trim_end().to_owned())
}

/// A text field as written: quoted values as they are, bare ones hex-decoded.
fn text_value(r: &Record, key: &str) -> Option<String> {
    let s = field(r, key)?;
    if r.bare.iter().any(|k| k == key) { unhex(s).or_else(|| Some(s.to_owned())) } else { Some(s.to_owned()) }
}

/// A record's fields with the texts auditd hex-encoded decoded: `EXECVE`'s arguments and
/// the names, titles and paths any record carries (not the numbers written bare).
fn text_fields(r: &Record) -> Map<String, Value> {
    let mut fields = r.fields.clone();
    for key in &r.bare {
        let argument =
            r.kind == "EXECVE" && key.strip_prefix('a').is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        let text = matches!(key.as_str(), "proctitle" | "name" | "cwd" | "comm" | "exe" | "cmd" | "path");
        if (argument || text)
            && let Some(decoded) = field(r, key).and_then(unhex)
        {
            fields.insert(key.clone(), Value::String(decoded));
        }
    }
    fields
}

fn field<'a>(r: &'a Record, key: &str) -> Option<&'a str> {
    r.fields.get(key).and_then(Value::as_str)
}

/// The syscall's name, for the x86-64 and AArch64 numbers that decide a class.
fn syscall_name(arch: Option<&str>, number: &str) -> Option<&'static str> {
    let n: u32 = number.parse().ok()?;
    let aarch64 = arch == Some("c00000b7");
    Some(match (aarch64, n) {
        (false, 59) | (true, 221) => "execve",
        (false, 322) | (true, 281) => "execveat",
        (false, 42) | (true, 203) => "connect",
        (false, 43) | (true, 202) => "accept",
        (false, 288) | (true, 242) => "accept4",
        (false, 49) | (true, 200) => "bind",
        (false, 50) | (true, 201) => "listen",
        (false, 2) => "open",
        (false, 257) | (true, 56) => "openat",
        (false, 85) => "creat",
        (false, 87) => "unlink",
        (false, 263) | (true, 35) => "unlinkat",
        (false, 84) => "rmdir",
        (false, 82) => "rename",
        (false, 264) | (true, 38) => "renameat",
        (false, 316) | (true, 276) => "renameat2",
        (false, 90) => "chmod",
        (false, 91) | (true, 52) => "fchmod",
        (false, 268) | (true, 53) => "fchmodat",
        (false, 92) => "chown",
        (false, 260) | (true, 54) => "fchownat",
        (false, 86) => "link",
        (false, 265) | (true, 37) => "linkat",
        (false, 133) => "mknod",
        (false, 165) | (true, 40) => "mount",
        (false, 175) | (true, 105) => "init_module",
        (false, 313) | (true, 273) => "finit_module",
        (false, 176) | (true, 106) => "delete_module",
        (false, 159) | (true, 171) => "adjtimex",
        (false, 164) | (true, 170) => "settimeofday",
        (false, 227) | (true, 112) => "clock_settime",
        (false, 101) | (true, 117) => "ptrace",
        _ => return None,
    })
}

/// The class and action of a syscall event.
fn syscall_class(name: Option<&str>) -> (EventClass, String) {
    let (class, action) = match name {
        Some("execve" | "execveat") => (EventClass::Process, "process_started"),
        Some("connect") => (EventClass::Network, "connection"),
        Some("accept" | "accept4") => (EventClass::Network, "connection_accepted"),
        Some("bind" | "listen") => (EventClass::Network, "listen"),
        Some("open" | "openat" | "creat") => (EventClass::File, "file_opened"),
        Some("unlink" | "unlinkat" | "rmdir") => (EventClass::File, "file_deleted"),
        Some("rename" | "renameat" | "renameat2") => (EventClass::File, "file_renamed"),
        Some("chmod" | "fchmod" | "fchmodat") => (EventClass::File, "file_permissions_changed"),
        Some("chown" | "fchownat") => (EventClass::File, "file_owner_changed"),
        Some("link" | "linkat") => (EventClass::File, "file_linked"),
        Some("mknod") => (EventClass::File, "device_created"),
        Some("mount") => (EventClass::Configuration, "filesystem_mounted"),
        Some("init_module" | "finit_module") => (EventClass::Process, "kernel_module_loaded"),
        Some("delete_module") => (EventClass::Process, "kernel_module_unloaded"),
        Some("adjtimex" | "settimeofday" | "clock_settime") => (EventClass::Configuration, "time_changed"),
        Some("ptrace") => (EventClass::Process, "process_traced"),
        Some(other) => return (EventClass::Audit, format!("syscall_{other}")),
        None => (EventClass::Audit, "syscall"),
    };
    (class, action.to_owned())
}

/// A `SOCKADDR` record's `saddr`: the address and port of IPv4 and IPv6 sockets.
fn sockaddr(hex: &str) -> Option<(IpAddr, u16)> {
    let b: Vec<u8> =
        (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    let family = u16::from_le_bytes([*b.first()?, *b.get(1)?]);
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        2 => Some((IpAddr::V4(Ipv4Addr::new(*b.get(4)?, *b.get(5)?, *b.get(6)?, *b.get(7)?)), port)),
        10 => {
            let octets: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(octets)).to_canonical(), port))
        }
        _ => None,
    }
}

/// Builds the event of one group of records.
fn event(open: Open, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let time = DateTime::<Utc>::from_timestamp_millis(open.time_ms)
        .ok_or_else(|| DecodeError::unreadable("auditd", format!("timestamp of {} is out of range", open.id)))?;
    let records = &open.records;
    let first = &records[0];
    let syscall = records.iter().find(|r| r.kind == "SYSCALL" || r.kind == "1300");
    let (class, action) = match syscall {
        Some(s) => syscall_class(field(s, "syscall").and_then(|n| syscall_name(field(s, "arch"), n)).or_else(|| {
            // Some producers write the name already (`syscall=execve`).
            field(s, "syscall").filter(|n| n.parse::<u32>().is_err())
        })),
        None => match MESSAGES.iter().find(|(t, ..)| *t == first.kind) {
            Some((_, class, action)) => (*class, (*action).to_owned()),
            None => (EventClass::Audit, first.kind.to_ascii_lowercase()),
        },
    };
    let mut e = ctx.event(class);
    e.time = time;
    e.provider = Some("auditd".into());
    e.action = Some(action);
    if let Some(node) = &open.node {
        set::put_str(&mut e, "host.name", node);
    }
    let main = syscall.unwrap_or(first);
    let put = |e: &mut SecurityEvent, to: &str, r: &Record, key: &str| {
        if let Some(v) = r.fields.get(key) {
            set::put(e, to, v);
        }
    };
    put(&mut e, "process.pid", main, "pid");
    put(&mut e, "process.parent.pid", main, "ppid");
    if let Some(comm) = text_value(main, "comm") {
        set::put_str(&mut e, "process.name", &comm);
    }
    if let Some(exe) = text_value(main, "exe") {
        set::put_str(&mut e, "process.executable", &exe);
    }
    put(&mut e, "user.id", main, "uid");
    // The names ENRICHED logs add, else the account a user message names.
    for key in ["acct", "UID", "user", "AUID", "id"] {
        if let Some(name) = field(main, key).filter(|n| !n.is_empty() && *n != "unset")
            && e.user.as_ref().is_none_or(|u| u.name.is_none())
            && (key != "id" || name.parse::<u32>().is_err())
        {
            set::put_str(&mut e, "user.name", name);
        }
    }
    if let Some(addr) = field(main, "addr").filter(|a| *a != "?") {
        set::put_str(&mut e, "source.address", addr);
    }
    if let Some(host) = field(main, "hostname").filter(|h| *h != "?" && field(main, "addr") != Some(h)) {
        set::put_str(&mut e, "source.domain", host);
    }
    e.outcome = match (field(main, "success"), field(main, "res")) {
        (Some("yes"), _) | (_, Some("success" | "1")) => Outcome::Success,
        (Some("no"), _) | (_, Some("failed" | "0")) => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    command_line(&mut e, records);
    paths_and_sockets(&mut e, records);
    messages(&mut e, first, syscall.is_some());
    let by_type: Vec<Value> = records.iter().map(|r| json!({ "type": r.kind, "fields": text_fields(r) })).collect();
    e.attributes.insert(
        "auditd".into(),
        json!({ "id": open.id, "node": open.node, "key": syscall.and_then(|s| field(s, "key")), "records": by_type }),
    );
    Ok(e)
}

/// The command line of an exec: `EXECVE`'s arguments, else `PROCTITLE`, else auoms'
/// `cmdline`/`proctitle`.
fn command_line(e: &mut SecurityEvent, records: &[Record]) {
    if let Some(exec) = records.iter().find(|r| r.kind == "EXECVE" || r.kind == "1309") {
        let argc: usize = field(exec, "argc").and_then(|a| a.parse().ok()).unwrap_or(0);
        let args: Vec<String> = (0..argc.max(1)).map_while(|i| text_value(exec, &format!("a{i}"))).collect();
        if !args.is_empty() {
            set::put_str(e, "process.command_line", &args.join(" "));
            return;
        }
    }
    let title = records.iter().find_map(|r| {
        let key = if r.fields.contains_key("proctitle") { "proctitle" } else { "cmdline" };
        // auoms writes the title as text even when bare.
        if r.kind == "AUOMS_EXECVE" { field(r, key).map(str::to_owned) } else { text_value(r, key) }
    });
    if let Some(title) = title {
        set::put_str(e, "process.command_line", &title);
    }
}

/// `PATH` items (the file acted on; the program of an exec) and `SOCKADDR` addresses.
fn paths_and_sockets(e: &mut SecurityEvent, records: &[Record]) {
    let paths: Vec<&Record> = records.iter().filter(|r| r.kind == "PATH" || r.kind == "1302").collect();
    let name = |r: &Record| text_value(r, "name");
    match e.class {
        EventClass::Process => {
            if e.process.as_ref().is_none_or(|p| p.executable.is_none())
                && let Some(path) = paths.iter().find(|r| field(r, "item") == Some("0")).and_then(|r| name(r))
            {
                set::put_str(e, "process.executable", &path);
            }
        }
        EventClass::File => {
            // The item created or deleted, else the last one that is not a parent dir.
            let acted = paths
                .iter()
                .find(|r| matches!(field(r, "nametype"), Some("CREATE" | "DELETE")))
                .or_else(|| paths.iter().rev().find(|r| field(r, "nametype") != Some("PARENT")));
            if let Some(path) = acted.and_then(|r| name(r)) {
                if let Some(file_name) = path.rsplit('/').next().filter(|n| !n.is_empty()) {
                    set::put_str(e, "file.name", file_name);
                }
                set::put_str(e, "file.path", &path);
            }
            if e.action.as_deref() == Some("file_opened")
                && paths.iter().any(|r| field(r, "nametype") == Some("CREATE"))
            {
                e.action = Some("file_created".into());
            }
        }
        _ => {}
    }
    if let Some((ip, port)) = records.iter().find(|r| r.kind == "SOCKADDR").and_then(|r| sockaddr(field(r, "saddr")?)) {
        let endpoint = if e.action.as_deref() == Some("connection") { &mut e.destination } else { &mut e.source };
        let ep = endpoint.get_or_insert_with(Default::default);
        ep.ip = Some(ip);
        ep.port = Some(port);
    }
    if let Some(cwd) = records.iter().find(|r| r.kind == "CWD").and_then(|r| field(r, "cwd")) {
        e.labels.insert("cwd".into(), cwd.to_owned());
    }
}

/// What user-space messages and configuration changes add.
fn messages(e: &mut SecurityEvent, first: &Record, with_syscall: bool) {
    match first.kind.as_str() {
        "CONFIG_CHANGE" => {
            // `audit_enabled=0` switches auditing off.
            if field(first, "audit_enabled") == Some("0") {
                e.action = Some("audit_disabled".into());
                e.severity = Severity::High;
            }
            if let Some(op) = field(first, "op") {
                e.labels.insert("op".into(), op.to_owned());
            }
        }
        "USER_CMD" => {
            if let Some(cmd) = text_value(first, "cmd") {
                set::put_str(e, "process.command_line", &cmd);
            }
        }
        "ADD_USER" | "DEL_USER" | "USER_MGMT" | "ADD_GROUP" | "DEL_GROUP" | "GRP_MGMT" => {
            // The account changed is `id=` (a uid) or `acct=`; the actor is `auid`.
            if let Some(acct) = field(first, "acct") {
                set::put_str(e, "user.target.name", acct);
            }
            if let Some(id) = field(first, "id") {
                set::put_str(e, "user.target.id", id);
            }
            if let Some(user) = e.user.as_mut()
                && user.name.as_deref() == field(first, "acct")
            {
                user.name = field(first, "AUID").map(str::to_owned);
            }
        }
        "ANOM_ABEND" | "ANOM_PROMISCUOUS" => e.severity = Severity::Medium,
        "AVC" => {
            // AppArmor's `apparmor="DENIED"`, SELinux's `avc: denied { … }`.
            // Beside a syscall, the call's own result is the outcome.
            let denied = field(first, "apparmor") == Some("DENIED") || first.fields.contains_key("denied");
            if !with_syscall {
                e.outcome = if denied { Outcome::Failure } else { Outcome::Success };
            }
            if let Some(name) = text_value(first, "name") {
                set::put_str(e, "file.path", &name);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(lines: &str) -> Decoded {
        let ctx = crate::source::decode::test_ctx();
        let mut assembler = Assembler::default();
        let mut out = Decoded::default();
        for (i, line) in lines.lines().enumerate() {
            assembler.push(i + 1, line, &ctx, &mut out);
        }
        assembler.flush(&ctx, &mut out);
        out
    }

    #[test]
    fn an_exec_with_hex_arguments_and_its_eoe() {
        let out = assemble(concat!(
            "type=SYSCALL msg=audit(1492752522.985:8972): arch=c000003e syscall=59 success=yes exit=0 ppid=10027 pid=10043 auid=1001 uid=1001 comm=\"uname\" exe=\"/bin/uname\" key=\"user_commands\"\n",
            "type=EXECVE msg=audit(1492752522.985:8972): argc=3 a0=\"sh\" a1=\"-c\" a2=6563686F20612062\n",
            "type=CWD msg=audit(1492752522.985:8972): cwd=\"/srv/build\"\n",
            "type=USER_LOGIN msg=audit(1492752523.752:42120): pid=18981 uid=0 auid=4294967295 ses=4294967295 msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" hostname=? addr=46.160.144.250 terminal=ssh res=failed'\n",
            "type=EOE msg=audit(1492752522.985:8972):\n",
        ));
        assert!(out.rejected.is_empty() && out.warnings.is_empty(), "{:?} {:?}", out.rejected, out.warnings);
        assert_eq!(out.events.len(), 2);
        let login = &out.events[0];
        assert_eq!(
            (login.class, login.outcome, login.action.as_deref()),
            (EventClass::Authentication, Outcome::Failure, Some("logon"))
        );
        assert_eq!(login.user.as_ref().and_then(|u| u.name.as_deref()), Some("root"));
        assert_eq!(
            login.source.as_ref().and_then(|s| s.ip).map(|ip| ip.to_string()).as_deref(),
            Some("46.160.144.250")
        );
        let exec = &out.events[1];
        assert_eq!((exec.class, exec.action.as_deref()), (EventClass::Process, Some("process_started")));
        assert_eq!(exec.process.as_ref().and_then(|p| p.command_line.as_deref()), Some("sh -c echo a b"));
        assert_eq!(exec.process.as_ref().and_then(|p| p.parent.as_ref()).and_then(|p| p.pid), Some(10027));
        assert_eq!(exec.time.to_rfc3339(), "2017-04-21T05:28:42.985+00:00");
        assert_eq!(exec.attributes["auditd"]["key"], "user_commands");
        // The records keep the texts decoded, the numbers written bare as they are.
        let records = &exec.attributes["auditd"]["records"];
        assert_eq!(records[1]["fields"]["a2"], "echo a b");
        assert_eq!(records[0]["fields"]["exit"], "0");
    }

    #[test]
    fn hex_names_of_any_record_are_decoded_and_syscall_arguments_are_not() {
        // From aucoalesce's RHEL 7 test data: an `exe` auditd could not quote.
        let out = assemble(concat!(
            "type=SYSCALL msg=audit(1492800799.050:20294): arch=c000003e syscall=133 success=yes exit=0 a0=7ff61dde1960 a1=1180 a2=0 a3=2 items=2 ppid=1 pid=326 auid=4294967295 uid=0 comm=\"systemd-logind\" exe=2F7573722F6C69622F73797374656D642F73797374656D642D6C6F67696E643B3538663938633835202864656C6574656429 key=\"specialfiles\"\n",
            "type=EOE msg=audit(1492800799.050:20294):\n",
        ));
        let fields = &out.events[0].attributes["auditd"]["records"][0]["fields"];
        assert_eq!(fields["exe"], "/usr/lib/systemd/systemd-logind;58f98c85 (deleted)");
        assert_eq!((fields["a0"].as_str(), fields["a1"].as_str()), (Some("7ff61dde1960"), Some("1180")));
    }

    #[test]
    fn connects_decode_their_sockaddr_and_a_missing_eoe_is_a_warning() {
        let out = assemble(concat!(
            "type=EOE msg=audit(1.000:1):\n",
            "type=SYSCALL msg=audit(1492753107.096:9004): arch=c000003e syscall=42 success=no exit=-115 pid=1648 uid=0 comm=\"python3\" exe=\"/usr/bin/python3.5\"\n",
            "type=SOCKADDR msg=audit(1492753107.096:9004): saddr=02000050A9FEA9FE0000000000000000\n",
            "garbage\n",
        ));
        assert_eq!(out.events.len(), 1);
        let e = &out.events[0];
        assert_eq!((e.class, e.outcome), (EventClass::Network, Outcome::Failure));
        let dst = e.destination.as_ref().expect("destination");
        assert_eq!((dst.ip.map(|ip| ip.to_string()).as_deref(), dst.port), (Some("169.254.169.254"), Some(80)));
        assert_eq!(out.rejected[0].line, 4);
        assert_eq!(out.rejected[0].message, "not readable as auditd: no `audit(timestamp:serial)` in the record");
        assert_eq!(out.warnings[0].line, 2);
        assert!(
            out.warnings[0]
                .message
                .contains("event 1492753107.096:9004 ended without its EOE record; stored with the 2 record(s)")
        );
        assert!(e.tags.contains(&"auditd_incomplete".to_owned()));
    }
}
