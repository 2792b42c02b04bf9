//! `pam_unix` for any service, in the form of current systems (`prog: pam_unix(svc:auth):
//! authentication failure; … rhost=H user=U`) and the legacy one (`prog(pam_unix)[pid]:
//! authentication failure; …`), and the `login` program's own lines.
//!
//! A PAM authentication failure is the record of one logon attempt (`logon`, failure)
//! for every service but sshd, which writes its own `Failed password` line for the same
//! attempt: sshd's PAM line is typed `pam_authentication` so the attempt is counted once.
//! Legacy `sshd(pam_unix)` logs carry no other line per attempt, so there it is a `logon`.

use serde_json::json;

use super::{kv, login, protocol, source, target};
use crate::event::{EventClass, Outcome, SecurityEvent};

/// The application protocol a PAM service speaks, for services reached over the network.
fn service_protocol(service: &str) -> Option<&'static str> {
    match service {
        "sshd" | "sshd-session" => Some("ssh"),
        s if s.contains("ftp") => Some("ftp"),
        "dovecot" | "imap" => Some("imap"),
        "pop3" | "pop" => Some("pop3"),
        "smtp" => Some("smtp"),
        "rlogin" | "rsh" | "klogin" | "kshell" => Some("rlogin"),
        _ => None,
    }
}

/// `pam_unix(SERVICE:TYPE): …` written by any program.
pub fn modern(event: &mut SecurityEvent, program: &str) {
    let msg = event.message.clone().unwrap_or_default();
    let Some(rest) = msg.strip_prefix("pam_unix(") else { return };
    let Some((module, body)) = rest.split_once("): ") else { return };
    let (service, kind) = module.split_once(':').unwrap_or((module, ""));
    let sshd = service.starts_with("sshd") || program.starts_with("sshd");
    let attempt = if kind == "auth" && !sshd { "logon" } else { "pam_authentication" };
    body_of(event, service, body, attempt, false);
}

/// `PROGRAM(pam_unix)[pid]: …`, the form of older PAM versions.
pub fn legacy(event: &mut SecurityEvent, program: &str) {
    let msg = event.message.clone().unwrap_or_default();
    event.provider = Some(program.to_owned());
    if let Some(process) = event.process.as_mut() {
        process.name = Some(program.to_owned());
    }
    body_of(event, program, &msg, "logon", true);
}

fn body_of(event: &mut SecurityEvent, service: &str, body: &str, attempt: &str, legacy: bool) {
    let pam = |extra: serde_json::Value| {
        let mut v = json!({ "service": service, "legacy": legacy });
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        v
    };
    if let Some(rest) = body.strip_prefix("authentication failure;") {
        // su and sudo: `ruser` (or `logname`) asks to become `user`.
        let switching = matches!(service, "su" | "su-l" | "sudo" | "sudo-i");
        let requester = kv(rest, "ruser").or_else(|| kv(rest, "logname"));
        let user = kv(rest, "user");
        let (actor, class, action) = if switching {
            (
                requester,
                EventClass::Authorization,
                if service.starts_with("su") && service != "sudo" { "su" } else { "sudo" },
            )
        } else {
            (user, EventClass::Authentication, attempt)
        };
        login(event, class, action, Outcome::Failure, actor);
        if switching && let Some(user) = user {
            target(event).name = Some(user.to_owned());
        }
        if let Some(rhost) = kv(rest, "rhost") {
            source(event, rhost, None);
        }
        if let Some(protocol_name) = service_protocol(service) {
            protocol(event, "tcp", protocol_name);
            // The address keeps its place in `source` set above.
        }
        event.attributes.insert("pam".into(), pam(json!({ "tty": kv(rest, "tty") })));
    } else if body.starts_with("check pass; user unknown") {
        login(event, EventClass::Authentication, "pam_authentication", Outcome::Failure, None);
        event.attributes.insert("pam".into(), pam(json!({ "user_unknown": true })));
    } else if let Some(rest) = body.strip_prefix("session opened for user ") {
        let user = rest.split(|c: char| c.is_whitespace() || c == '(').next();
        login(event, EventClass::Authentication, "session_opened", Outcome::Success, user);
        // `by bob(uid=1000)`: who opened it (su, sudo).
        if let Some(by) = rest.split_once(" by ").map(|(_, b)| b.split('(').next().unwrap_or("").trim())
            && !by.is_empty()
            && matches!(service, "su" | "su-l" | "sudo" | "sudo-i")
        {
            let opened_for = event.user.as_ref().and_then(|u| u.name.clone());
            event.user.get_or_insert_with(Default::default).name = Some(by.to_owned());
            target(event).name = opened_for;
        }
        event.attributes.insert("pam".into(), pam(json!({})));
    } else if let Some(rest) = body.strip_prefix("session closed for user ") {
        login(event, EventClass::Authentication, "session_closed", Outcome::Success, Some(rest.trim()));
        event.attributes.insert("pam".into(), pam(json!({})));
    } else if let Some(user) = body.strip_prefix("password changed for ") {
        event.class = EventClass::Account;
        event.action = Some("password_changed".into());
        event.outcome = Outcome::Success;
        target(event).name = Some(user.trim().to_owned());
        event.attributes.insert("pam".into(), pam(json!({})));
    }
}

/// The `login` program: `FAILED LOGIN 1 FROM (null) FOR root, Authentication failure`,
/// `FAILED LOGIN (1) on '/dev/tty1' FOR 'root', …`, `ROOT LOGIN ON tty1`, `LOGIN ON tty1 BY bob`.
pub fn login_lines(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    if let Some(rest) = msg.strip_prefix("FAILED LOGIN ") {
        let user = rest.split_once(" FOR ").map(|(_, u)| u.split(',').next().unwrap_or("").trim_matches('\''));
        login(event, EventClass::Authentication, "logon", Outcome::Failure, user);
        if let Some(from) = rest.split_once(" FROM ").map(|(_, f)| f.split(' ').next().unwrap_or(""))
            && from != "(null)"
        {
            source(event, from, None);
        }
    } else if let Some(tty) = msg.strip_prefix("ROOT LOGIN ON ") {
        login(event, EventClass::Authentication, "logon", Outcome::Success, Some("root"));
        event.labels.insert("tty".into(), tty.split(' ').next().unwrap_or("").to_owned());
    } else if let Some(rest) = msg.strip_prefix("LOGIN ON ") {
        let user = rest.split_once(" BY ").map(|(_, u)| u.split(' ').next().unwrap_or(""));
        login(event, EventClass::Authentication, "logon", Outcome::Success, user);
    } else {
        modern(event, "login");
    }
}
