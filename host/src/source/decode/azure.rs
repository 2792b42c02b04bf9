//! Azure Monitor logs: the activity log (`Administrative`, `Security`, `Policy`…), Entra ID
//! sign-in logs (interactive, non-interactive, service principal, managed identity) and
//! Entra ID audit logs, single or in the `records[]` exports of Event Hubs and storage.
//!
//! Azure writes the same keys in different cases depending on the path (`callerIpAddress`,
//! `callerIPAddress`, `calleripaddress`): top-level keys are read case-insensitively.
//! Sign-ins are `authentication`/`logon`, failed when `properties.status.errorCode` is
//! not 0; audit logs of user and group management take the account vocabulary; the rest
//! are `api` calls named by `operationName`.

use serde_json::{Map, Value};

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};

/// Azure fields copied to the model (top-level keys in lower case).
pub const TABLE: &[Mapping] = &[
    ("time", "time"),
    ("operationname", "action"),
    ("calleripaddress", "source.address"),
    ("properties.ipAddress", "source.address"),
    ("identity.claims.name", "user.name"),
    ("caller", "user.name"),
    ("properties.userPrincipalName", "user.name"),
    ("properties.servicePrincipalName", "user.name"),
    ("properties.userId", "user.id"),
    ("properties.initiatedBy.user.userPrincipalName", "user.name"),
    ("properties.initiatedBy.user.ipAddress", "source.address"),
    ("properties.initiatedBy.app.displayName", "user.name"),
    ("properties.targetResources.0.userPrincipalName", "user.target.name"),
    ("properties.targetResources.0.id", "user.target.id"),
    ("properties.userAgent", "http.user_agent"),
    ("properties.appDisplayName", "destination.domain"),
    ("location", "cloud.region"),
    ("tenantid", "cloud.account_id"),
    ("resultdescription", "message"),
    ("properties.status.failureReason", "message"),
];

/// Entra ID audit operations with a meaning in the shared vocabulary.
pub const OPERATIONS: &[(&str, EventClass, &str)] = &[
    ("Add user", EventClass::Account, "user_created"),
    ("Delete user", EventClass::Account, "user_deleted"),
    ("Update user", EventClass::Account, "user_changed"),
    ("Disable account", EventClass::Account, "user_disabled"),
    ("Enable account", EventClass::Account, "user_enabled"),
    ("Reset password (by admin)", EventClass::Account, "password_reset"),
    ("Reset user password", EventClass::Account, "password_reset"),
    ("Change user password", EventClass::Account, "password_changed"),
    ("Add member to group", EventClass::Account, "group_member_added"),
    ("Remove member from group", EventClass::Account, "group_member_removed"),
    ("Add member to role", EventClass::Authorization, "role_assigned"),
    ("Remove member from role", EventClass::Authorization, "role_removed"),
    ("Add eligible member to role", EventClass::Authorization, "role_assigned"),
    ("Microsoft.Authorization/roleAssignments/write", EventClass::Authorization, "role_assigned"),
    ("Microsoft.Authorization/roleAssignments/delete", EventClass::Authorization, "role_removed"),
];

/// Decodes one Azure log record.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let Value::Object(original) = record else {
        return Err(DecodeError::unreadable("azure", "expected a JSON object"));
    };
    // Keys in one case; `{"value": …, "localizedValue": …}` (the REST API's form) as its
    // value; a string `properties` (some exports) parsed.
    let mut r: Map<String, Value> = original
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Object(o) if o.contains_key("localizedValue") => o.get("value").cloned().unwrap_or(Value::Null),
                other => other.clone(),
            };
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    if let Some(Value::String(text)) = r.get("properties")
        && let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(text)
    {
        r.insert("properties".into(), parsed);
    }
    let r = Value::Object(r);
    let operation = json::text(&r, "operationname").ok_or_else(|| DecodeError::missing("operationName"))?;
    let category = json::text(&r, "category").unwrap_or_default();
    let signin = category.ends_with("SignInLogs") || operation == "Sign-in activity";
    let known = OPERATIONS.iter().find(|(name, ..)| name.eq_ignore_ascii_case(&operation));
    let class = match known {
        _ if signin => EventClass::Authentication,
        Some((_, class, _)) => *class,
        None => EventClass::Api,
    };
    let mut e = ctx.event(class);
    set::apply(&mut e, &r, TABLE);
    e.action = Some(match known {
        _ if signin => "logon".to_owned(),
        Some((_, _, action)) => (*action).to_owned(),
        None => operation,
    });
    e.provider = Some(
        match () {
            _ if signin => "azure.signin",
            _ if category == "AuditLogs" => "azure.audit",
            _ => "azure.activity",
        }
        .into(),
    );
    if let Some(Value::String(role)) = json::get(&r, "properties.targetResources.1.displayName") {
        e.user
            .get_or_insert_with(Default::default)
            .target
            .get_or_insert_with(Default::default)
            .roles
            .push(role.clone());
    }
    let cloud = e.cloud.get_or_insert_with(Default::default);
    cloud.provider = Some("azure".into());
    // The subscription of the resource, when there is one, names the account best.
    if let Some(subscription) = json::str(&r, "resourceid").and_then(|id| {
        id.to_ascii_lowercase().split('/').skip_while(|s| *s != "subscriptions").nth(1).map(str::to_owned)
    }) {
        cloud.account_id = Some(subscription);
    }
    cloud.service = json::str(&r, "resourceprovidername")
        .or_else(|| operation_namespace(json::str(&r, "operationname")?))
        .map(str::to_owned);
    e.outcome = outcome(&r, signin);
    e.severity = match json::str(&r, "level").map(str::to_ascii_lowercase).as_deref() {
        Some("critical" | "1") => Severity::Critical,
        Some("error" | "2") => Severity::High,
        Some("warning" | "3") => Severity::Medium,
        _ => Severity::Info,
    };
    e.attributes.insert("azure".into(), Value::Object(original));
    Ok(e)
}

/// `Microsoft.Storage` of `Microsoft.Storage/storageAccounts/delete`.
fn operation_namespace(operation: &str) -> Option<&str> {
    operation.split_once('/').map(|(ns, _)| ns).filter(|ns| ns.contains('.'))
}

fn outcome(r: &Value, signin: bool) -> Outcome {
    if signin {
        return match json::uint(r, "properties.status.errorCode").or_else(|| json::uint(r, "resulttype")) {
            Some(0) => Outcome::Success,
            Some(_) => Outcome::Failure,
            None => Outcome::Unknown,
        };
    }
    let result =
        json::text(r, "resulttype").or_else(|| json::text(r, "status")).or_else(|| json::text(r, "properties.result"));
    match result.map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("success" | "succeeded" | "0") => Outcome::Success,
        Some("failure" | "failed") => Outcome::Failure,
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sign_ins_in_any_key_case() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "calleripaddress": "12.12.12.12", "category": "ServicePrincipalSignInLogs",
                "operationname": "Sign-in activity", "time": "2023-07-26 23:00:20.889",
                "properties": { "servicePrincipalName": "svc", "status": { "errorCode": 7000215 } } }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!(
            (e.class, e.outcome, e.action.as_deref()),
            (EventClass::Authentication, Outcome::Failure, Some("logon"))
        );
        assert_eq!(e.source.as_ref().and_then(|s| s.ip).map(|ip| ip.to_string()).as_deref(), Some("12.12.12.12"));
        assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("svc"));
        let e = decode(
            json!({ "time": "2024-12-17T10:30:00.0000000Z", "operationName": "Microsoft.Insights/diagnosticSettings/delete",
                "resourceId": "/subscriptions/1234/resourceGroups/rg/providers/Microsoft.Storage/x", "resultType": "Success",
                "category": "Administrative", "callerIpAddress": "1.1.1.1" }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!((e.class, e.outcome), (EventClass::Api, Outcome::Success));
        assert_eq!(e.action.as_deref(), Some("Microsoft.Insights/diagnosticSettings/delete"));
        let cloud = e.cloud.as_ref().expect("cloud");
        assert_eq!((cloud.account_id.as_deref(), cloud.service.as_deref()), (Some("1234"), Some("Microsoft.Insights")));
    }
}
