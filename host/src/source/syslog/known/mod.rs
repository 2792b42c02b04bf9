//! Recognisers for well-known syslog messages: each fills the typed fields detection
//! rules rely on (`class`, `action`, `outcome`, `user.*`, `source.*`) and leaves any
//! other message as it came.
//!
//! - [`ssh`]: the OpenSSH family (logins, invalid users, disconnects, probes);
//! - [`pam`]: `pam_unix` for any service, in both the `prog: pam_unix(svc:auth)` and the
//!   legacy `prog(pam_unix)` forms;
//! - [`accounts`]: sudo, su, useradd/usermod/userdel/groupadd/gpasswd/passwd/chpasswd,
//!   systemd-logind sessions;
//! - [`services`]: FTP servers (vsftpd, ftpd, ProFTPD), Postfix and Dovecot SASL/auth,
//!   Kerberos (klogind, krb5kdc);
//! - [`netfilter`]: kernel firewall log lines (`SRC= DST= PROTO= DPT=`) as network events.
//!
//! Messages rsyslog folds (`message repeated 5 times: [ … ]`) are unfolded by the caller
//! into as many events.

mod accounts;
mod netfilter;
mod pam;
mod services;
mod ssh;

use crate::event::{Endpoint, EventClass, Network, Outcome, SecurityEvent, User};
use crate::source::decode::set;

/// Fills typed fields from a recognised message; leaves other events untouched.
pub fn recognise(event: &mut SecurityEvent) {
    let Some(app) = event.provider.clone() else { return };
    if event.message.is_none() {
        return;
    }
    // The legacy `sshd(pam_unix)` form names the PAM module beside the program.
    if let Some(program) = app.strip_suffix("(pam_unix)") {
        return pam::legacy(event, program);
    }
    match app.as_str() {
        "sshd" | "sshd-session" | "sshd-auth" => ssh::recognise(event),
        "sudo" => accounts::sudo(event),
        "su" => accounts::su(event),
        "useradd" | "usermod" | "userdel" | "groupadd" | "groupdel" | "groupmod" | "gpasswd" | "passwd"
        | "chpasswd" | "chage" => accounts::account(event),
        "systemd-logind" => accounts::logind(event),
        "kernel" => netfilter::recognise(event),
        "vsftpd" | "ftpd" | "in.ftpd" | "proftpd" | "pure-ftpd" => services::ftp(event, &app),
        "dovecot" => services::dovecot(event),
        "klogind" | "krb5kdc" | "kshd" | "kadmind" => services::kerberos(event, &app),
        "login" => pam::login_lines(event),
        _ if app.starts_with("postfix") => services::postfix(event),
        _ if app.starts_with("dovecot") || app.starts_with("auth-worker") => services::dovecot(event),
        _ => {}
    }
    // Any program may log through pam_unix.
    if event.class == EventClass::System {
        pam::modern(event, &app);
    }
}

/// `message repeated N times: [ MESSAGE]` → (MESSAGE, N).
pub fn unfold_repeated(message: &str) -> Option<(&str, usize)> {
    let rest = message.strip_prefix("message repeated ")?;
    let (count, rest) = rest.split_once(" times: [")?;
    let count: usize = count.parse().ok()?;
    let inner = rest.strip_suffix(']').unwrap_or(rest).trim();
    (count > 0 && !inner.is_empty()).then_some((inner, count))
}

/// The endpoint of an address or host name (`rhost=`, `from X`), with an optional port.
fn endpoint(addr: &str, port: Option<&str>) -> Endpoint {
    let addr = addr.trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')' || c == ',');
    let mut ep = Endpoint::default();
    set::address(&mut ep, addr);
    ep.port = port.and_then(|p| p.parse().ok());
    ep
}

/// Types an event as an authentication (or other class) attempt.
fn login(event: &mut SecurityEvent, class: EventClass, action: &str, outcome: Outcome, user: Option<&str>) {
    event.class = class;
    event.action = Some(action.to_owned());
    event.outcome = outcome;
    if let Some(user) = user.map(str::trim).filter(|u| !u.is_empty()) {
        event.user.get_or_insert_with(Default::default).name = Some(user.to_owned());
    }
}

fn source(event: &mut SecurityEvent, addr: &str, port: Option<&str>) {
    let ep = endpoint(addr, port);
    if ep.ip.is_some() || ep.domain.is_some() {
        event.source = Some(ep);
    }
}

fn protocol(event: &mut SecurityEvent, transport: &str, protocol: &str) {
    event.network = Some(Box::new(Network {
        transport: Some(transport.into()),
        protocol: Some(protocol.into()),
        ..Default::default()
    }));
}

/// The value of `key=` in a `key=value key=value` message (values end at a space).
fn kv<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = msg;
    while let Some(at) = rest.find(key) {
        let before = rest[..at].chars().last();
        let after = &rest[at + key.len()..];
        if before.is_none_or(|c| c == ' ' || c == ';' || c == ',')
            && let Some(value) = after.strip_prefix('=')
        {
            let value = value.split([' ', ',']).next().unwrap_or("");
            return (!value.is_empty()).then_some(value);
        }
        rest = after;
    }
    None
}

fn target(event: &mut SecurityEvent) -> &mut crate::event::TargetUser {
    let user = event.user.get_or_insert_with(|| Box::new(User::default()));
    user.target.get_or_insert_with(Default::default)
}

#[cfg(test)]
mod tests;
