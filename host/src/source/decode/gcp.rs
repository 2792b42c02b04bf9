//! Google Cloud audit logs: `LogEntry`s whose `protoPayload` is an `AuditLog` (admin
//! activity, data access, system event, policy denied), including GKE's Kubernetes audit
//! entries. Calls are `api` events named by `methodName`; IAM policy changes are
//! `authorization`/`policy_changed`; a non-zero `protoPayload.status.code` is a failure.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent, Severity};

/// Audit log fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("timestamp", "time"),
    ("receiveTimestamp", "observed_time"),
    ("protoPayload.methodName", "action"),
    ("protoPayload.serviceName", "cloud.service"),
    ("protoPayload.authenticationInfo.principalEmail", "user.name"),
    ("protoPayload.authenticationInfo.principalEmail", "user.email"),
    ("protoPayload.authenticationInfo.principalSubject", "user.id"),
    ("protoPayload.requestMetadata.callerIP", "source.address"),
    ("protoPayload.requestMetadata.callerSuppliedUserAgent", "http.user_agent"),
    ("protoPayload.status.message", "message"),
    ("protoPayload.resourceName", "url.path"),
    ("resource.labels.project_id", "cloud.account_id"),
    ("resource.labels.location", "cloud.region"),
    ("resource.labels.zone", "cloud.region"),
    ("resource.labels.cluster_name", "host.name"),
];

/// Decodes one audit log entry.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let method =
        json::str(&record, "protoPayload.methodName").ok_or_else(|| DecodeError::missing("protoPayload.methodName"))?;
    let policy = method.ends_with("SetIamPolicy") || method.contains(".setIamPolicy");
    let mut e = ctx.event(if policy { EventClass::Authorization } else { EventClass::Api });
    e.provider = Some("gcp.audit".into());
    set::apply(&mut e, &record, TABLE);
    if policy {
        e.action = Some("policy_changed".into());
    }
    e.cloud.get_or_insert_with(Default::default).provider = Some("gcp".into());
    e.outcome = match json::uint(&record, "protoPayload.status.code") {
        None | Some(0) => Outcome::Success,
        Some(_) => Outcome::Failure,
    };
    if json::get(&record, "protoPayload.authorizationInfo")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|grant| json::bool(grant, "granted") == Some(false)))
    {
        e.outcome = Outcome::Failure;
    }
    e.severity = match json::str(&record, "severity") {
        Some("EMERGENCY" | "ALERT" | "CRITICAL") => Severity::Critical,
        Some("ERROR") => Severity::High,
        Some("WARNING") => Severity::Medium,
        Some("NOTICE") => Severity::Low,
        _ => Severity::Info,
    };
    e.attributes.insert("gcp".into(), record);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_denied_call_is_a_failure() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "protoPayload": { "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "methodName": "v1.compute.instances.insert", "serviceName": "compute.googleapis.com",
                "authenticationInfo": { "principalEmail": "some.user@company.com" },
                "authorizationInfo": [{ "granted": false, "permission": "compute.instances.create" }],
                "requestMetadata": { "callerIP": "1.2.3.4" } },
                "resource": { "labels": { "project_id": "p1" } }, "severity": "NOTICE",
                "timestamp": "2024-01-19 13:47:18.279921000" }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!((e.class, e.outcome), (EventClass::Api, Outcome::Failure));
        assert_eq!(e.action.as_deref(), Some("v1.compute.instances.insert"));
        assert_eq!(e.user.as_ref().and_then(|u| u.email.as_deref()), Some("some.user@company.com"));
        assert_eq!(e.cloud.as_ref().and_then(|c| c.account_id.as_deref()), Some("p1"));
        assert_eq!(e.time.to_rfc3339(), "2024-01-19T13:47:18.279921+00:00");
    }
}
