//! Okta System Log events. `eventType` picks the class and action of the shared
//! vocabulary (`user.session.start` → `authentication`/`logon`, `user.account.lock` →
//! `account`/`user_locked`…); other events keep `eventType` as their action. The user is
//! the actor; a `User` target is the account acted upon, `UserGroup` targets its groups.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};

/// System Log fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("published", "time"),
    ("eventType", "action"),
    ("displayMessage", "message"),
    ("outcome.reason", "message"),
    ("actor.alternateId", "user.name"),
    ("actor.id", "user.id"),
    ("client.ipAddress", "source.address"),
    ("client.userAgent.rawUserAgent", "http.user_agent"),
    ("debugContext.debugData.requestUri", "url.path"),
];

/// Event types with a meaning in the shared vocabulary.
pub const EVENT_TYPES: &[(&str, EventClass, &str)] = &[
    ("user.session.start", EventClass::Authentication, "logon"),
    ("user.session.end", EventClass::Authentication, "logoff"),
    ("user.authentication.sso", EventClass::Authentication, "sso"),
    ("user.authentication.auth_via_mfa", EventClass::Authentication, "mfa_check"),
    ("user.authentication.verify", EventClass::Authentication, "credential_validation"),
    ("user.mfa.okta_verify.deny_push", EventClass::Authentication, "mfa_denied"),
    ("user.account.lock", EventClass::Account, "user_locked"),
    ("user.account.unlock", EventClass::Account, "user_unlocked"),
    ("user.lifecycle.create", EventClass::Account, "user_created"),
    ("user.lifecycle.delete.initiated", EventClass::Account, "user_deleted"),
    ("user.lifecycle.deactivate", EventClass::Account, "user_disabled"),
    ("user.lifecycle.activate", EventClass::Account, "user_enabled"),
    ("user.lifecycle.suspend", EventClass::Account, "user_disabled"),
    ("user.account.reset_password", EventClass::Account, "password_reset"),
    ("user.account.update_password", EventClass::Account, "password_changed"),
    ("user.mfa.factor.deactivate", EventClass::Account, "mfa_disabled"),
    ("user.mfa.factor.reset_all", EventClass::Account, "mfa_disabled"),
    ("group.user_membership.add", EventClass::Account, "group_member_added"),
    ("group.user_membership.remove", EventClass::Account, "group_member_removed"),
    ("user.account.privilege.grant", EventClass::Authorization, "role_assigned"),
    ("user.account.privilege.revoke", EventClass::Authorization, "role_removed"),
];

/// Decodes one System Log event.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let event_type = json::str(&record, "eventType").ok_or_else(|| DecodeError::missing("eventType"))?.to_owned();
    let known = EVENT_TYPES.iter().find(|(t, ..)| *t == event_type);
    let class = match known {
        Some((_, class, _)) => *class,
        None if event_type.starts_with("user.authentication.") || event_type.starts_with("user.session.") => {
            EventClass::Authentication
        }
        None if event_type.starts_with("user.") || event_type.starts_with("group.") => EventClass::Account,
        None if event_type.starts_with("policy.") || event_type.starts_with("application.") => {
            EventClass::Configuration
        }
        None if event_type.starts_with("system.") => EventClass::System,
        None => EventClass::Api,
    };
    let mut e = ctx.event(class);
    e.provider = Some("okta".into());
    set::apply(&mut e, &record, TABLE);
    if let Some((_, _, action)) = known {
        e.action = Some((*action).to_owned());
    }
    for target in json::get(&record, "target").and_then(Value::as_array).into_iter().flatten() {
        match json::str(target, "type") {
            Some("User") => {
                set::put(&mut e, "user.target.name", json::get(target, "alternateId").unwrap_or(&Value::Null));
                set::put(&mut e, "user.target.id", json::get(target, "id").unwrap_or(&Value::Null));
            }
            Some("UserGroup") => {
                set::put(&mut e, "user.target.roles", json::get(target, "displayName").unwrap_or(&Value::Null));
            }
            _ => {}
        }
    }
    e.outcome = match json::str(&record, "outcome.result") {
        Some("SUCCESS" | "ALLOW") => Outcome::Success,
        Some("FAILURE" | "DENY") => Outcome::Failure,
        _ => Outcome::Unknown,
    };
    e.severity = match json::str(&record, "severity") {
        Some("ERROR") => Severity::High,
        Some("WARN") => Severity::Medium,
        _ => Severity::Info,
    };
    e.attributes.insert("okta".into(), record);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_logon_and_a_group_change() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "eventType": "user.session.start", "published": "2024-05-02 18:46:21.121000000",
                "actor": { "alternateId": "jim@example.com", "type": "User" }, "client": { "ipAddress": "11.22.33.44" },
                "outcome": { "result": "FAILURE", "reason": "INVALID_CREDENTIALS" } }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!(
            (e.class, e.outcome, e.action.as_deref()),
            (EventClass::Authentication, Outcome::Failure, Some("logon"))
        );
        assert_eq!(e.message.as_deref(), Some("INVALID_CREDENTIALS"));
        let e = decode(
            json!({ "eventType": "group.user_membership.add", "actor": { "alternateId": "admin@example.com" },
                "target": [{ "type": "User", "alternateId": "eve@example.com" }, { "type": "UserGroup", "displayName": "Admins" }],
                "outcome": { "result": "SUCCESS" } }),
            &ctx,
        )
        .expect("decodes");
        let target = e.user.as_ref().and_then(|u| u.target.as_ref()).expect("target");
        assert_eq!(
            (target.name.as_deref(), target.roles.clone()),
            (Some("eve@example.com"), vec!["Admins".to_owned()])
        );
    }
}
