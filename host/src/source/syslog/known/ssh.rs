//! The OpenSSH family (`sshd`, and `sshd-session` of OpenSSH 9.8+): one typed event per
//! logon attempt (`ssh_login`, success or failure, invalid users included), the probes
//! and disconnects around attempts, sessions, and the `pam_unix` lines sshd writes. User
//! names may contain spaces: they are read up to the last ` from `.

use super::{login, protocol, source};
use crate::event::{EventClass, Outcome, SecurityEvent, Severity};

/// Where a line says who and from where: `[invalid user X |authenticating user X |user X
/// ]ADDR[ port P]`, with a trailing `[preauth]` or `: reason` dropped.
struct Peer<'a> {
    user: Option<&'a str>,
    invalid: bool,
    addr: &'a str,
    port: Option<&'a str>,
}

fn peer(text: &str) -> Option<Peer<'_>> {
    let text = text.trim().trim_end_matches("[preauth]").trim_end();
    let (user, invalid, rest) = if let Some(rest) = text.strip_prefix("invalid user ") {
        let (user, rest) = split_user(rest)?;
        (Some(user), true, rest)
    } else if let Some(rest) = text.strip_prefix("authenticating user ").or_else(|| text.strip_prefix("user ")) {
        let (user, rest) = split_user(rest)?;
        (Some(user), false, rest)
    } else {
        (None, false, text)
    };
    let (addr, port) = match rest.split_once(" port ") {
        Some((addr, after)) => (addr, Some(after.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))),
        None => (rest.split(": ").next().unwrap_or(rest).trim_end_matches(':'), None),
    };
    let addr = addr.trim();
    (!addr.is_empty() && !addr.contains(' ')).then_some(Peer {
        user,
        invalid,
        addr,
        port: port.filter(|p| !p.is_empty()),
    })
}

/// A user name (which may hold spaces) followed by ` ADDR…`: the address is the last
/// word before ` port ` (or the last word).
fn split_user(rest: &str) -> Option<(&str, &str)> {
    let before_port = rest.split_once(" port ").map_or(rest, |(b, _)| b);
    let at = before_port.rfind(' ')?;
    Some((&rest[..at], &rest[at + 1..]))
}

fn apply(event: &mut SecurityEvent, class: EventClass, action: &str, outcome: Outcome, p: &Peer<'_>) {
    login(event, class, action, outcome, p.user);
    source(event, p.addr, p.port);
    protocol(event, "tcp", "ssh");
    if p.invalid {
        event.attributes.insert("ssh".into(), serde_json::json!({ "invalid_user": true }));
    }
}

/// `Failed|Accepted METHOD for [invalid user ]USER from ADDR port PORT …`: the commonest
/// sshd line by far, read without a regex.
pub fn auth(msg: &str) -> Option<(bool, &str, bool, &str, &str, &str)> {
    let (accepted, rest) = match msg.split_once(' ')? {
        ("Failed", rest) => (false, rest),
        ("Accepted", rest) => (true, rest),
        _ => return None,
    };
    let (method, rest) = rest.split_once(" for ")?;
    let (invalid, rest) = match rest.strip_prefix("invalid user ") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let (user, rest) = rest.rsplit_once(" from ")?;
    let (addr, rest) = rest.split_once(" port ")?;
    let port = rest.split(' ').next()?;
    if method.contains(' ') || addr.contains(' ') || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((accepted, method, invalid, user, addr, port))
}

/// `pam_unix(SERVICE:session): session opened for user USER…` without a regex. USER ends
/// at a space or `(` (`user root(uid=0)`).
pub fn session_opened(msg: &str) -> Option<&str> {
    let (service, rest) = msg.strip_prefix("pam_unix(")?.split_once(":session): session opened for user ")?;
    if service.is_empty() || service.contains(char::is_whitespace) {
        return None;
    }
    let user = rest.split(|c: char| c.is_whitespace() || c == '(').next()?;
    (!user.is_empty()).then_some(user)
}

/// Recognises one sshd message.
pub fn recognise(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    if let Some((accepted, method, invalid, user, addr, port)) = auth(msg) {
        let outcome = if accepted { Outcome::Success } else { Outcome::Failure };
        login(event, EventClass::Authentication, "ssh_login", outcome, Some(user));
        source(event, addr, Some(port));
        protocol(event, "tcp", "ssh");
        event.attributes.insert("ssh".into(), serde_json::json!({ "method": method, "invalid_user": invalid }));
        return;
    }
    if let Some(user) = session_opened(msg) {
        login(event, EventClass::Authentication, "session_opened", Outcome::Success, Some(user));
        return;
    }
    let failure = Outcome::Failure;
    let unknown = Outcome::Unknown;
    if let Some(rest) = msg.strip_prefix("Invalid user ") {
        // `Invalid user NAME from ADDR[ port P]`; NAME may be empty or hold spaces.
        if let Some((user, after)) = rest.rsplit_once("from ").map(|(u, a)| (u.trim_end(), a))
            && let Some(p) = peer(after)
        {
            let p = Peer { user: Some(user), invalid: true, ..p };
            apply(event, EventClass::Authentication, "ssh_invalid_user", failure, &p)
        }
    } else if let Some(rest) = msg.strip_prefix("maximum authentication attempts exceeded for ") {
        if let Some((who, after)) = rest.rsplit_once(" from ") {
            let (invalid, user) = who.strip_prefix("invalid user ").map_or((false, who), |u| (true, u));
            if let Some(p) = peer(after) {
                let p = Peer { user: Some(user), invalid, ..p };
                apply(event, EventClass::Authentication, "ssh_max_auth_tries", failure, &p)
            }
        }
    } else if let Some(rest) = msg.strip_prefix("Disconnecting: Too many authentication failures") {
        // `… for [invalid user ]USER [preauth]` (older) — no address on the line.
        let who = rest.trim_start_matches(" for ").trim_end_matches("[preauth]").trim();
        let (invalid, user) = who.strip_prefix("invalid user ").map_or((false, who), |u| (true, u));
        login(event, EventClass::Authentication, "ssh_max_auth_tries", failure, Some(user));
        protocol(event, "tcp", "ssh");
        event.attributes.insert("ssh".into(), serde_json::json!({ "invalid_user": invalid }));
    } else if let Some(rest) = msg.strip_prefix("Disconnecting ") {
        // `Disconnecting authenticating user root ADDR port P: Too many authentication failures`
        if let Some((who, reason)) = rest.split_once(": ")
            && reason.starts_with("Too many authentication failures")
            && let Some(p) = peer(who)
        {
            apply(event, EventClass::Authentication, "ssh_max_auth_tries", failure, &p)
        }
    } else if let Some(rest) = msg.strip_prefix("reverse mapping checking getaddrinfo for ") {
        // `HOST [ADDR] failed - POSSIBLE BREAK-IN ATTEMPT!`
        if let Some((host, rest)) = rest.split_once(" [")
            && let Some((addr, _)) = rest.split_once(']')
        {
            let p = Peer { user: None, invalid: false, addr, port: None };
            apply(event, EventClass::Network, "ssh_reverse_mapping_failed", unknown, &p);
            event.source.get_or_insert_with(Default::default).domain = Some(host.to_owned());
            event.severity = Severity::Low;
        }
    } else if let Some(rest) = msg.strip_prefix("Address ") {
        // `Address ADDR maps to HOST, but this does not map back to the address - POSSIBLE BREAK-IN ATTEMPT!`
        if let Some((addr, rest)) = rest.split_once(" maps to ")
            && let Some((host, _)) = rest.split_once(", but this does not map back")
        {
            let p = Peer { user: None, invalid: false, addr, port: None };
            apply(event, EventClass::Network, "ssh_reverse_mapping_failed", unknown, &p);
            event.source.get_or_insert_with(Default::default).domain = Some(host.to_owned());
            event.severity = Severity::Low;
        }
    } else if let Some(rest) = msg.strip_prefix("Received disconnect from ") {
        if let Some(p) = peer(rest) {
            apply(event, EventClass::Network, "ssh_disconnect", unknown, &p);
            preauth(event, msg);
        }
    } else if let Some(rest) = msg.strip_prefix("Disconnected from ") {
        if let Some(p) = peer(rest) {
            apply(event, EventClass::Network, "ssh_disconnect", unknown, &p);
            preauth(event, msg);
        }
    } else if let Some(rest) =
        msg.strip_prefix("Connection closed by ").or_else(|| msg.strip_prefix("Connection reset by "))
    {
        if let Some(p) = peer(rest) {
            apply(event, EventClass::Network, "ssh_connection_closed", unknown, &p);
            preauth(event, msg);
        }
    } else if let Some(rest) = msg.strip_prefix("Did not receive identification string from ") {
        if let Some(p) = peer(rest) {
            apply(event, EventClass::Network, "ssh_no_identification", unknown, &p);
        }
    } else if let Some(rest) = msg.strip_prefix("Unable to negotiate with ") {
        if let Some(p) = peer(rest) {
            apply(event, EventClass::Network, "ssh_negotiation_failed", failure, &p);
        }
    } else if let Some(rest) = msg.strip_prefix("Bad protocol version identification ") {
        if let Some((_, after)) = rest.rsplit_once(" from ")
            && let Some(p) = peer(after)
        {
            apply(event, EventClass::Network, "ssh_bad_protocol", failure, &p);
        }
    } else if let Some(rest) = msg.strip_prefix("banner exchange: Connection from ") {
        if let Some(p) = peer(rest.split_once(": ").map_or(rest, |(w, _)| w)) {
            apply(event, EventClass::Network, "ssh_bad_protocol", failure, &p);
        }
    } else if let Some(rest) = msg.strip_prefix("Timeout before authentication for ") {
        if let Some(p) = peer(rest) {
            apply(event, EventClass::Network, "ssh_auth_timeout", failure, &p);
        }
    } else if let Some(rest) = msg.strip_prefix("Connection from ") {
        // `Connection from ADDR port P on ADDR port P[ rdomain …]`
        if let Some(p) = peer(rest.split_once(" on ").map_or(rest, |(w, _)| w)) {
            apply(event, EventClass::Network, "ssh_connection", unknown, &p);
        }
    } else if let Some(rest) = msg.strip_prefix("User ") {
        // `User USER from ADDR not allowed because …`
        if let Some((user, after)) = rest.split_once(" from ")
            && let Some((addr, reason)) = after.split_once(" not allowed because ")
        {
            let p = Peer { user: Some(user), invalid: false, addr, port: None };
            apply(event, EventClass::Authentication, "ssh_login_not_allowed", failure, &p);
            event.message = Some(format!("not allowed because {reason}"));
        }
    } else if let Some(rest) = msg.strip_prefix("input_userauth_request: invalid user ") {
        // The same attempt as the `Invalid user` line before it: typed, not counted twice.
        let user = rest.trim_end_matches("[preauth]").trim();
        login(event, EventClass::Authentication, "ssh_invalid_user_request", unknown, Some(user));
        protocol(event, "tcp", "ssh");
    } else if let Some(rest) = msg.strip_prefix("PAM ") {
        // `PAM 5 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=X  user=root`
        if let Some((count, rest)) = rest.split_once(" more authentication failure")
            && let Ok(count) = count.parse::<u64>()
        {
            login(event, EventClass::Authentication, "ssh_pam_more_failures", failure, super::kv(rest, "user"));
            if let Some(rhost) = super::kv(rest, "rhost") {
                source(event, rhost, None);
            }
            protocol(event, "tcp", "ssh");
            event.attributes.insert("ssh".into(), serde_json::json!({ "failures": count }));
        }
    } else if let Some(rest) = msg.strip_prefix("pam_unix(")
        && let Some(user) = rest.split_once(":session): session closed for user ").map(|(_, u)| u)
    {
        login(event, EventClass::Authentication, "session_closed", Outcome::Success, Some(user.trim()));
    }
}

fn preauth(event: &mut SecurityEvent, msg: &str) {
    if msg.ends_with("[preauth]") {
        let ssh = event.attributes.entry("ssh").or_insert_with(|| serde_json::json!({}));
        if let Some(o) = ssh.as_object_mut() {
            o.insert("preauth".into(), true.into());
        }
    }
}
