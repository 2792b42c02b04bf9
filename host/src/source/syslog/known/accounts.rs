//! Privilege changes and account management: sudo, su, the shadow utilities (useradd,
//! usermod, userdel, groupadd, groupdel, gpasswd, passwd, chpasswd) and systemd-logind
//! sessions.

use super::{login, target};
use crate::event::{EventClass, Outcome, SecurityEvent};

/// `USER : [problem ; ]TTY=… ; PWD=… ; USER=… ; [ENV=… ; ]COMMAND=…`
pub fn sudo(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let Some((user, rest)) = msg.trim_start().split_once(" : ") else { return };
    let parts: Vec<&str> = rest.split(" ; ").collect();
    let field = |key: &str| parts.iter().find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix('=')));
    let (Some(target_user), Some(command)) = (field("USER"), field("COMMAND")) else { return };
    let problem = parts.first().filter(|p| !p.contains('='));
    let failed =
        problem.is_some_and(|p| p.contains("incorrect password") || p.contains("NOT") || p.contains("not allowed"));
    login(
        event,
        EventClass::Authorization,
        "sudo",
        if failed { Outcome::Failure } else { Outcome::Success },
        Some(user),
    );
    target(event).name = Some(target_user.to_owned());
    if let Some(problem) = problem {
        event
            .attributes
            .insert("sudo".into(), serde_json::json!({ "problem": problem, "tty": field("TTY"), "pwd": field("PWD") }));
    }
    let process = event.process.get_or_insert_with(Default::default);
    process.command_line = Some(command.to_owned());
    process.executable = command.split_whitespace().next().map(str::to_owned);
}

/// `(to root) bob on pts/0`, `FAILED SU (to root) bob on pts/0`, `Successful su for root by
/// bob`, `FAILED su for root by bob`, `+ pts/0 bob:root`, `- pts/0 bob:root`.
pub fn su(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let (failed, rest) = match msg.strip_prefix("FAILED SU ") {
        Some(rest) => (true, rest),
        None => (false, msg.as_str()),
    };
    let (outcome, who, to) = if let Some(rest) = rest.strip_prefix("(to ") {
        let Some((to, rest)) = rest.split_once(") ") else { return };
        let who = rest.split(" on ").next().unwrap_or(rest);
        (if failed { Outcome::Failure } else { Outcome::Success }, who, to)
    } else if let Some(rest) = msg.strip_prefix("Successful su for ").or_else(|| msg.strip_prefix("FAILED su for ")) {
        let Some((to, who)) = rest.split_once(" by ") else { return };
        (if msg.starts_with("FAILED") { Outcome::Failure } else { Outcome::Success }, who, to)
    } else if let Some((sign, rest)) = msg.split_at_checked(2).filter(|(s, _)| *s == "+ " || *s == "- ") {
        let Some((who, to)) = rest.split_whitespace().nth(1).and_then(|pair| pair.split_once(':')) else { return };
        (if sign == "- " { Outcome::Failure } else { Outcome::Success }, who, to)
    } else {
        return;
    };
    login(event, EventClass::Authorization, "su", outcome, Some(who.trim()));
    target(event).name = Some(to.trim().to_owned());
}

/// Quoted or bare: `'bob'` → `bob`.
fn unquote(s: &str) -> &str {
    s.trim().trim_matches(|c| c == '\'' || c == '"' || c == ',')
}

fn account_change(event: &mut SecurityEvent, action: &str, target_user: Option<&str>, group: Option<&str>) {
    event.class = EventClass::Account;
    event.action = Some(action.to_owned());
    event.outcome = Outcome::Success;
    let t = target(event);
    if let Some(user) = target_user {
        t.name = Some(unquote(user).to_owned());
    }
    if let Some(group) = group {
        t.roles.push(unquote(group).to_owned());
    }
}

/// `key=value, key=value` of `new user: name=x, UID=0, …`.
fn field<'a>(msg: &'a str, key: &str) -> Option<&'a str> {
    msg.split([',', ':']).find_map(|p| p.trim().strip_prefix(key).and_then(|v| v.strip_prefix('='))).map(str::trim)
}

/// The shadow utilities.
pub fn account(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    let msg = msg.as_str();
    if let Some(rest) = msg.strip_prefix("new user:") {
        account_change(event, "user_created", field(rest, "name"), None);
        if let Some(uid) = field(rest, "UID") {
            target(event).id = Some(uid.to_owned());
        }
    } else if let Some(rest) = msg.strip_prefix("new group:").or_else(|| msg.strip_prefix("group added to /etc/group:"))
    {
        account_change(event, "group_created", None, field(rest, "name"));
    } else if let Some(rest) = msg.strip_prefix("add ") {
        // `add 'bob' to group 'sudo'`, `add 'bob' to shadow group 'sudo'`
        if let Some((user, group)) = rest.split_once(" to ").and_then(|(u, g)| Some((u, g.rsplit_once("group ")?.1))) {
            account_change(event, "group_member_added", Some(user), Some(group));
        }
    } else if let Some(rest) = msg.strip_prefix("user ") {
        // gpasswd: `user bob added by root to group sudo`, `user bob removed by root from group sudo`
        let added = rest.split_once(" added by ").map(|(u, r)| (u, r, "group_member_added"));
        let removed = rest.split_once(" removed by ").map(|(u, r)| (u, r, "group_member_removed"));
        if let Some((user, rest, action)) = added.or(removed) {
            let (actor, group) = rest.split_once(" group ").map_or((rest, ""), |(a, g)| (a, g));
            let actor = actor.split(' ').next().unwrap_or("");
            account_change(event, action, Some(user), Some(group).filter(|g| !g.is_empty()));
            event.user.get_or_insert_with(Default::default).name = Some(actor.to_owned());
        }
    } else if let Some(rest) = msg.strip_prefix("delete user ") {
        account_change(event, "user_deleted", Some(rest), None);
    } else if let Some(rest) = msg.strip_prefix("group ").and_then(|r| r.strip_suffix(" removed")) {
        account_change(event, "group_deleted", None, Some(rest));
    } else if let Some(rest) = msg.strip_prefix("change user ") {
        let (user, what) = rest.split_once(' ').unwrap_or((rest, ""));
        let action = if what.contains("password") { "password_changed" } else { "user_changed" };
        account_change(event, action, Some(user), None);
    } else if let Some(rest) = msg.strip_prefix("lock user ") {
        account_change(event, "user_disabled", rest.split(' ').next(), None);
    } else if let Some(rest) = msg.strip_prefix("unlock user ") {
        account_change(event, "user_enabled", rest.split(' ').next(), None);
    } else if let Some(rest) = msg.strip_prefix("password for ") {
        // Debian passwd: `password for 'bob' changed by 'root'`
        let (user, by) = rest.split_once(" changed by ").unwrap_or((rest, ""));
        account_change(event, "password_changed", Some(user), None);
        if !by.is_empty() {
            event.user.get_or_insert_with(Default::default).name = Some(unquote(by).to_owned());
        }
    }
}

/// `New session 42 of user bob.`, `Removed session 42.`, `Session 42 logged out. …`
pub fn logind(event: &mut SecurityEvent) {
    let msg = event.message.clone().unwrap_or_default();
    if let Some(rest) = msg.strip_prefix("New session ") {
        if let Some((session, user)) = rest.split_once(" of user ") {
            login(
                event,
                EventClass::Authentication,
                "session_opened",
                Outcome::Success,
                Some(user.trim_end_matches('.')),
            );
            event.labels.insert("session".into(), session.to_owned());
        }
    } else if let Some(session) = msg.strip_prefix("Removed session ") {
        login(event, EventClass::Authentication, "session_closed", Outcome::Success, None);
        event.labels.insert("session".into(), session.trim_end_matches('.').to_owned());
    }
}
