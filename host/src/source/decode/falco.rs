//! Falco alerts (its JSON output, directly or through Falcosidekick's webhook): findings
//! of a runtime detector, with the process, user, container and connection fields of
//! `output_fields` mapped. Also what the `falco` inbound webhook reads.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, SecurityEvent, Severity};

/// Alert fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("time", "time"),
    ("output", "message"),
    ("hostname", "host.name"),
    ("tags", "tags"),
    ("output_fields.user.name", "user.name"),
    ("output_fields.user.uid", "user.id"),
    ("output_fields.proc.name", "process.name"),
    ("output_fields.proc.pid", "process.pid"),
    ("output_fields.proc.exepath", "process.executable"),
    ("output_fields.proc.cmdline", "process.command_line"),
    ("output_fields.proc.pname", "process.parent.name"),
    ("output_fields.proc.ppid", "process.parent.pid"),
    ("output_fields.proc.pcmdline", "process.parent.command_line"),
    ("output_fields.fd.name", "file.path"),
    ("output_fields.fd.cip", "source.ip"),
    ("output_fields.fd.cport", "source.port"),
    ("output_fields.fd.sip", "destination.ip"),
    ("output_fields.fd.sport", "destination.port"),
    ("output_fields.fd.l4proto", "network.transport"),
];

/// Falco's priority as a severity.
pub fn severity(priority: &str) -> Severity {
    match priority.to_ascii_lowercase().as_str() {
        "emergency" | "alert" | "critical" => Severity::Critical,
        "error" => Severity::High,
        "warning" => Severity::Medium,
        "notice" | "informational" | "info" => Severity::Low,
        _ => Severity::Info,
    }
}

/// An action from a rule name: `Terminal shell in container` → `terminal_shell_in_container`.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').chars().take(120).collect()
}

/// Decodes one Falco alert.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let rule = json::str(&record, "rule").ok_or_else(|| DecodeError::missing("rule"))?.to_owned();
    let mut e = ctx.event(EventClass::Finding);
    e.provider = Some("falco".into());
    e.action = Some(slug(&rule));
    e.severity = json::str(&record, "priority").map(severity).unwrap_or_default();
    set::apply(&mut e, &record, TABLE);
    if let Some(path) = e.file.as_ref().and_then(|f| f.path.clone()) {
        // `fd.name` is a path for files, `ip:port->ip:port` for sockets.
        if !path.starts_with('/') {
            e.file = None;
        }
    }
    e.attributes.insert("falco".into(), record);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_shell_in_a_container() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "output": "Warning A shell was spawned in a container", "priority": "Warning",
                "rule": "Terminal shell in container", "time": "2026-11-22T10:20:05.408091526Z", "hostname": "node-7",
                "source": "syscall", "tags": ["container", "shell"],
                "output_fields": { "user.name": "root", "proc.name": "bash", "proc.cmdline": "bash -i", "fd.name": "10.0.0.1:4444->10.0.0.2:80" } }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!(
            (e.class, e.severity, e.action.as_deref()),
            (EventClass::Finding, Severity::Medium, Some("terminal_shell_in_container"))
        );
        assert_eq!(e.process.as_ref().and_then(|p| p.command_line.as_deref()), Some("bash -i"));
        assert!(e.file.is_none());
        assert_eq!(e.tags, ["container", "shell"]);
    }
}
