//! Network services that authenticate users: FTP servers (vsftpd, ftpd, ProFTPD,
//! Pure-FTPd), Postfix SASL, Dovecot, and Kerberos (klogind, krb5kdc).

use super::{login, protocol, source};
use crate::event::{EventClass, Outcome, SecurityEvent};

/// FTP logins and connections.
pub fn ftp(event: &mut SecurityEvent, program: &str) {
    let msg = event.message.clone().unwrap_or_default();
    // vsftpd: `[bob] OK LOGIN: Client "1.2.3.4"`, `[bob] FAIL LOGIN: Client "::ffff:1.2.3.4"`,
    // `CONNECT: Client "1.2.3.4"`, each perhaps after a `[pid N] `.
    let client = |m: &str| m.split_once("Client \"").and_then(|(_, c)| c.split('"').next()).map(str::to_owned);
    let body = match msg.strip_prefix("[pid ").and_then(|r| r.split_once("] ")) {
        Some((_, rest)) => rest,
        None => msg.as_str(),
    };
    if let Some((user, rest)) = body.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        let outcome = if rest.starts_with("OK LOGIN") {
            Outcome::Success
        } else if rest.starts_with("FAIL LOGIN") {
            Outcome::Failure
        } else {
            return;
        };
        login(event, EventClass::Authentication, "logon", outcome, Some(user));
        if let Some(addr) = client(rest) {
            source(event, &addr, None);
        }
        return protocol(event, "tcp", "ftp");
    }
    let msg = body.to_owned();
    if let Some(addr) = msg.strip_prefix("CONNECT: ").and_then(client) {
        login(event, EventClass::Network, "ftp_connection", Outcome::Unknown, None);
        source(event, &addr, None);
        return protocol(event, "tcp", "ftp");
    }
    // ftpd: `connection from 206.47.209.10 () at Wed Jun 15 12:12:34 2005`
    if let Some(rest) = msg.strip_prefix("connection from ") {
        let addr = rest.split(' ').next().unwrap_or("");
        let host = rest.split_once(" (").and_then(|(_, h)| h.split(')').next()).filter(|h| !h.is_empty());
        login(event, EventClass::Network, "ftp_connection", Outcome::Unknown, None);
        source(event, addr, None);
        if let (Some(host), Some(src)) = (host, event.source.as_mut()) {
            src.domain = Some(host.to_owned());
        }
        return protocol(event, "tcp", "ftp");
    }
    // ftpd: `ANONYMOUS FTP LOGIN FROM 84.102.20.2, (anonymous)`, `FTP LOGIN FROM h [ip], bob`,
    // `FTP LOGIN FAILED FROM 1.2.3.4, bob`.
    if let Some((kind, rest)) = msg.split_once(" FROM ") {
        let outcome = match kind {
            "ANONYMOUS FTP LOGIN" | "FTP LOGIN" => Outcome::Success,
            "FTP LOGIN FAILED" | "repeated login failures" => Outcome::Failure,
            _ => return,
        };
        let (addr, user) = rest.split_once(", ").unwrap_or((rest, ""));
        let addr = addr.split_once('[').map_or(addr, |(_, ip)| ip.trim_end_matches(']'));
        let user =
            if kind.starts_with("ANONYMOUS") { "anonymous" } else { user.trim_matches(|c| c == '(' || c == ')') };
        login(event, EventClass::Authentication, "logon", outcome, Some(user));
        source(event, addr.trim(), None);
        return protocol(event, "tcp", "ftp");
    }
    // ProFTPD: `host (1.2.3.4[1.2.3.4]) - USER bob: Login successful.`,
    // `… - USER bob (Login failed): Incorrect password.`, `… - USER root: no such user found from …`
    if (program == "proftpd" || msg.contains(" - USER "))
        && let Some((peer, rest)) = msg.split_once(" - USER ")
    {
        let addr = peer.rsplit_once('[').map_or(peer, |(_, ip)| ip.split(']').next().unwrap_or(ip));
        let user = rest.split([' ', ':']).next().unwrap_or("");
        let outcome = if rest.contains("Login successful") {
            Outcome::Success
        } else if rest.contains("Login failed") || rest.contains("no such user") || rest.contains("Incorrect password")
        {
            Outcome::Failure
        } else {
            return;
        };
        login(event, EventClass::Authentication, "logon", outcome, Some(user));
        source(event, addr, None);
        protocol(event, "tcp", "ftp");
    }
}

/// `warning: unknown[1.2.3.4]: SASL LOGIN authentication failed: …`
pub fn postfix(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let Some(rest) = msg.strip_prefix("warning: ") else { return };
    let Some((peer, what)) = rest.split_once("]: ") else { return };
    let Some((method, outcome)) = what.strip_prefix("SASL ").and_then(|w| w.split_once(" authentication ")) else {
        return;
    };
    if !outcome.starts_with("failed") {
        return;
    }
    let (host, addr) = peer.split_once('[').unwrap_or(("", peer));
    login(event, EventClass::Authentication, "logon", Outcome::Failure, None);
    source(event, addr, None);
    if let Some(src) = event.source.as_mut().filter(|_| !host.is_empty() && host != "unknown") {
        src.domain = Some(host.to_owned());
    }
    protocol(event, "tcp", "smtp");
    event.attributes.insert("postfix".into(), serde_json::json!({ "sasl_method": method }));
}

/// `imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN,
/// rip=1.2.3.4, lip=…`, `imap-login: Login: user=<bob>, …`, `auth-worker(1): pam(bob,1.2.3.4):
/// pam_authenticate() failed: …`.
pub fn dovecot(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let field = |key: &str| {
        msg.split(", ")
            .chain(msg.split(": ").flat_map(|p| p.split(", ")))
            .find_map(|p| p.trim().strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .map(|v| v.trim_matches(|c| c == '<' || c == '>'))
    };
    let service = msg.split('-').next().unwrap_or("imap").trim_start_matches("dovecot: ");
    if msg.contains("-login: ") {
        let outcome = if msg.contains("-login: Login: ") {
            Outcome::Success
        } else if msg.contains("auth failed") || msg.contains("Authentication failed") {
            Outcome::Failure
        } else {
            return;
        };
        login(event, EventClass::Authentication, "logon", outcome, field("user"));
        if let Some(rip) = field("rip") {
            source(event, rip, None);
        }
        return protocol(event, "tcp", if service.starts_with("pop3") { "pop3" } else { "imap" });
    }
    if let Some(rest) = msg.split_once(": pam(").map(|(_, r)| r)
        && let Some((who, rest)) = rest.split_once("): ")
        && (rest.contains("failed") || rest.contains("mismatch"))
    {
        let (user, addr) = who.split_once(',').unwrap_or((who, ""));
        // The login process writes the attempt too: this is the credential check.
        login(event, EventClass::Authentication, "pam_authentication", Outcome::Failure, Some(user));
        source(event, addr, None);
    }
}

/// klogind: `Authentication failed from 163.27.187.39 (163.27.187.39): …`, `Kerberos
/// authentication failed`; krb5kdc: `AS_REQ (…) 10.0.0.5: PREAUTH_FAILED: bob@REALM for …`.
pub fn kerberos(event: &mut SecurityEvent, program: &str) {
    let msg = event.message.clone().unwrap_or_default();
    if let Some(rest) = msg.strip_prefix("Authentication failed from ") {
        let addr = rest.split(' ').next().unwrap_or("");
        login(event, EventClass::Authentication, "logon", Outcome::Failure, None);
        source(event, addr.trim_end_matches(':'), None);
        return protocol(event, "tcp", if program == "klogind" { "klogin" } else { "kerberos" });
    }
    if msg == "Kerberos authentication failed" {
        // Follows the line above for the same attempt.
        return login(event, EventClass::Authentication, "kerberos_failure", Outcome::Failure, None);
    }
    for (kind, action) in [("AS_REQ", "kerberos_tgt_request"), ("TGS_REQ", "kerberos_service_ticket")] {
        let Some(rest) = msg.strip_prefix(kind) else { continue };
        let Some((_, rest)) = rest.split_once(") ") else { return };
        let Some((addr, rest)) = rest.split_once(": ") else { return };
        let (status, rest) = rest.split_once(": ").unwrap_or((rest, ""));
        let principal = rest.split(' ').next().unwrap_or("");
        let (user, realm) = principal.split_once('@').unwrap_or((principal, ""));
        let outcome = match status {
            "ISSUE" => Outcome::Success,
            "NEEDED_PREAUTH" => Outcome::Unknown,
            _ => Outcome::Failure,
        };
        login(event, EventClass::Authentication, action, outcome, Some(user));
        if !realm.is_empty() {
            event.user.get_or_insert_with(Default::default).domain = Some(realm.to_owned());
        }
        source(event, addr, None);
        protocol(event, "udp", "kerberos");
        event.attributes.insert("kerberos".into(), serde_json::json!({ "status": status }));
        return;
    }
}
