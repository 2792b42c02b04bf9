//! Recognisers for well-known syslog message bodies: OpenSSH logins, sudo, and account
//! creation. Each fills the typed fields detection rules rely on (`class`, `action`,
//! `outcome`, `user.*`, `source.*`).

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use crate::event::{Endpoint, EventClass, Network, Outcome, SecurityEvent, TargetUser, User};

static SSH_AUTH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Failed|Accepted) (\S+) for (invalid user )?(\S*) from (\S+) port (\d+)").expect("valid regex")
});
static SSH_INVALID_USER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Invalid user (\S*) from (\S+)(?: port (\d+))?").expect("valid regex"));
static SSH_MAX_TRIES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^error: maximum authentication attempts exceeded for (invalid user )?(\S*) from (\S+) port (\d+)")
        .expect("valid regex")
});
static SESSION_OPENED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^pam_unix\((\S+):session\): session opened for user ([^\s(]+)").expect("valid regex")
});
static SUDO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(\S+) : (?:(.*?) ; )?TTY=(\S+) ; PWD=(.*?) ; USER=(\S+) ; COMMAND=(.*)$").expect("valid regex")
});
static NEW_USER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^new user: name=([^,\s]+), UID=(\d+)").expect("valid regex"));

/// Fills typed fields from a recognised message body; leaves other events untouched.
pub fn recognise(event: &mut SecurityEvent) {
    let (Some(app), Some(msg)) = (event.provider.as_deref(), event.message.as_deref()) else { return };
    match app {
        "sshd" => sshd(event),
        "sudo" => sudo(event),
        "useradd" if msg.starts_with("new user:") => useradd(event),
        _ => {}
    }
}

fn endpoint(addr: &str, port: Option<&str>) -> Endpoint {
    let (ip, domain) = match addr.parse::<IpAddr>() {
        Ok(ip) => (Some(ip), None),
        Err(_) => (None, Some(addr.to_owned())),
    };
    Endpoint { ip, domain, port: port.and_then(|p| p.parse().ok()), ..Default::default() }
}

fn login(event: &mut SecurityEvent, action: &str, outcome: Outcome, user: &str, addr: &str, port: Option<&str>) {
    event.class = EventClass::Authentication;
    event.action = Some(action.to_owned());
    event.outcome = outcome;
    event.user = Some(Box::new(User { name: Some(user.to_owned()), ..Default::default() }));
    event.source = Some(endpoint(addr, port));
    event.network =
        Some(Box::new(Network { transport: Some("tcp".into()), protocol: Some("ssh".into()), ..Default::default() }));
}

/// `Failed|Accepted METHOD for [invalid user ]USER from ADDR port PORT …` without a regex:
/// the commonest sshd line by far, on the hot path of every auth log.
fn ssh_auth_fast(msg: &str) -> Option<(bool, &str, bool, &str, &str, &str)> {
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
    if method.contains(' ') || user.contains(' ') || addr.contains(' ') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((accepted, method, invalid, user, addr, port))
}

fn sshd(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    if let Some((accepted, method, invalid, user, addr, port)) = ssh_auth_fast(&msg) {
        let outcome = if accepted { Outcome::Success } else { Outcome::Failure };
        login(event, "ssh_login", outcome, user, addr, Some(port));
        event.attributes.insert("ssh".into(), serde_json::json!({ "method": method, "invalid_user": invalid }));
    } else if let Some(user) = session_opened_fast(&msg) {
        session_opened(event, user);
    // Each pattern starts with a literal: testing it first spares the regexes most lines.
    } else if let Some(c) = msg.starts_with(['F', 'A']).then(|| SSH_AUTH.captures(&msg)).flatten() {
        let outcome = if &c[1] == "Accepted" { Outcome::Success } else { Outcome::Failure };
        login(event, "ssh_login", outcome, &c[4], &c[5], Some(&c[6]));
        event
            .attributes
            .insert("ssh".into(), serde_json::json!({ "method": &c[2], "invalid_user": c.get(3).is_some() }));
    } else if let Some(c) = msg.starts_with("Invalid user ").then(|| SSH_INVALID_USER.captures(&msg)).flatten() {
        login(event, "ssh_invalid_user", Outcome::Failure, &c[1], &c[2], c.get(3).map(|m| m.as_str()));
    } else if let Some(c) = msg.starts_with("error: ").then(|| SSH_MAX_TRIES.captures(&msg)).flatten() {
        login(event, "ssh_max_auth_tries", Outcome::Failure, &c[2], &c[3], Some(&c[4]));
    } else if let Some(c) = msg.starts_with("pam_unix(").then(|| SESSION_OPENED.captures(&msg)).flatten() {
        session_opened(event, &c[2]);
    }
}

/// `pam_unix(SERVICE:session): session opened for user USER…` without a regex: a third of a
/// busy auth log. USER ends at a space or `(` (`user root(uid=0)`), as in [`SESSION_OPENED`].
fn session_opened_fast(msg: &str) -> Option<&str> {
    let (service, rest) = msg.strip_prefix("pam_unix(")?.split_once(":session): session opened for user ")?;
    if service.is_empty() || service.contains(char::is_whitespace) {
        return None;
    }
    let user = rest.split(|c: char| c.is_whitespace() || c == '(').next()?;
    (!user.is_empty()).then_some(user)
}

fn session_opened(event: &mut SecurityEvent, user: &str) {
    event.class = EventClass::Authentication;
    event.action = Some("session_opened".into());
    event.outcome = Outcome::Success;
    event.user = Some(Box::new(User { name: Some(user.to_owned()), ..Default::default() }));
}

fn sudo(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let Some(c) = SUDO.captures(&msg) else { return };
    let failed = c.get(2).is_some_and(|m| m.as_str().contains("incorrect password") || m.as_str().contains("NOT"));
    event.class = EventClass::Authorization;
    event.action = Some("sudo".into());
    event.outcome = if failed { Outcome::Failure } else { Outcome::Success };
    event.user = Some(Box::new(User {
        name: Some(c[1].to_owned()),
        target: Some(Box::new(TargetUser { name: Some(c[5].to_owned()), ..Default::default() })),
        ..Default::default()
    }));
    let process = event.process.get_or_insert_with(Default::default);
    process.command_line = Some(c[6].to_owned());
    process.executable = c[6].split_whitespace().next().map(str::to_owned);
}

fn useradd(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let Some(c) = NEW_USER.captures(&msg) else { return };
    event.class = EventClass::Account;
    event.action = Some("user_created".into());
    event.outcome = Outcome::Success;
    let user = event.user.get_or_insert_with(Default::default);
    user.target =
        Some(Box::new(TargetUser { name: Some(c[1].to_owned()), id: Some(c[2].to_owned()), ..Default::default() }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FieldPath;
    use chrono::Utc;

    fn event(app: &str, msg: &str) -> SecurityEvent {
        let mut e = SecurityEvent::new(EventClass::System, Utc::now());
        e.provider = Some(app.into());
        e.message = Some(msg.into());
        recognise(&mut e);
        e
    }

    fn get(e: &SecurityEvent, path: &str) -> Option<String> {
        FieldPath::parse(path).expect("path").get(e).map(|v| v.to_text().into_owned())
    }

    #[test]
    fn sshd_lines() {
        let e = event("sshd", "Accepted publickey for alice from 10.1.2.3 port 50022 ssh2: RSA SHA256:abc");
        assert_eq!((e.class, e.outcome), (EventClass::Authentication, Outcome::Success));
        assert_eq!(get(&e, "user.name").as_deref(), Some("alice"));
        assert_eq!(get(&e, "attributes.ssh.method").as_deref(), Some("publickey"));

        let e = event("sshd", "Failed password for root from 198.51.100.9 port 41000 ssh2");
        assert_eq!((e.outcome, get(&e, "source.ip").as_deref()), (Outcome::Failure, Some("198.51.100.9")));

        let e = event("sshd", "Invalid user oracle from 198.51.100.9 port 41001");
        assert_eq!(e.action.as_deref(), Some("ssh_invalid_user"));
        assert_eq!(get(&e, "user.name").as_deref(), Some("oracle"));

        let e = event("sshd", "Failed password for root from gateway.example port 1 ssh2");
        assert_eq!(get(&e, "source.domain").as_deref(), Some("gateway.example"));

        let e = event("sshd", "pam_unix(sshd:session): session opened for user bob(uid=1001) by (uid=0)");
        assert_eq!((e.action.as_deref(), get(&e, "user.name").as_deref()), (Some("session_opened"), Some("bob")));

        let e = event("sshd", "Server listening on 0.0.0.0 port 22.");
        assert_eq!(e.class, EventClass::System);
    }

    #[test]
    fn the_fast_path_agrees_with_the_regex() {
        for msg in [
            "Failed password for invalid user admin from 203.0.113.7 port 52311 ssh2",
            "Failed password for root from 198.51.100.9 port 41000 ssh2",
            "Accepted publickey for alice from 10.1.2.3 port 50022 ssh2: RSA SHA256:abc",
            "Failed none for invalid user  from 1.2.3.4 port 5 ssh2",
            "Accepted keyboard-interactive/pam for bob from 2001:db8::1 port 22 ssh2",
        ] {
            let fast = ssh_auth_fast(msg)
                .map(|(a, m, i, u, ad, p)| (a, m.to_owned(), i, u.to_owned(), ad.to_owned(), p.to_owned()));
            let slow = SSH_AUTH.captures(msg).map(|c| {
                (
                    &c[1] == "Accepted",
                    c[2].to_owned(),
                    c.get(3).is_some(),
                    c[4].to_owned(),
                    c[5].to_owned(),
                    c[6].to_owned(),
                )
            });
            assert_eq!(fast, slow, "{msg}");
        }
        assert_eq!(ssh_auth_fast("Failed to start session"), None);
        for msg in [
            "pam_unix(sshd:session): session opened for user bob(uid=1001) by (uid=0)",
            "pam_unix(sshd:session): session opened for user root by (uid=0)",
            "pam_unix(cron:session): session opened for user svc",
            "pam_unix(sshd:session): session opened for user  bob",
            "pam_unix(sshd:session): session opened for user (uid=0)",
            "pam_unix(:session): session opened for user bob",
            "pam_unix(a b:session): session opened for user bob",
            "pam_unix(sshd:session): session closed for user bob",
        ] {
            let slow = SESSION_OPENED.captures(msg).map(|c| c[2].to_owned());
            assert_eq!(session_opened_fast(msg).map(str::to_owned), slow, "{msg}");
        }
    }

    #[test]
    fn sudo_and_useradd_lines() {
        let e = event("sudo", "  alice : TTY=pts/0 ; PWD=/srv/app ; USER=root ; COMMAND=/usr/bin/id -u");
        assert_eq!((e.class, e.outcome), (EventClass::Authorization, Outcome::Success));
        assert_eq!(get(&e, "user.target.name").as_deref(), Some("root"));
        assert_eq!(get(&e, "process.executable").as_deref(), Some("/usr/bin/id"));

        let e = event(
            "sudo",
            "mallory : 3 incorrect password attempts ; TTY=pts/1 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh",
        );
        assert_eq!(e.outcome, Outcome::Failure);

        let e = event("useradd", "new user: name=backdoor, UID=0, GID=0, home=/root, shell=/bin/bash");
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Account, Some("user_created")));
        assert_eq!(get(&e, "user.target.id").as_deref(), Some("0"));
    }
}
