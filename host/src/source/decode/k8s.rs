//! Kubernetes audit events (`audit.k8s.io/v1` `Event`s, as the API server, EKS and AKS
//! write them). Each is an `api` call with the verb as its action (`create`, `get`,
//! `delete`); the object (`objectRef.resource`, `subresource` such as `exec`, namespace,
//! name) stays in `attributes.k8s`. A response code of 400 or more is a failure.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent};

/// Audit event fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("requestReceivedTimestamp", "time"),
    ("stageTimestamp", "observed_time"),
    ("verb", "action"),
    ("user.username", "user.name"),
    ("user.uid", "user.id"),
    ("user.groups", "user.roles"),
    ("impersonatedUser.username", "user.target.name"),
    ("sourceIPs.0", "source.address"),
    ("userAgent", "http.user_agent"),
    ("requestURI", "url.path"),
    ("responseStatus.code", "http.status_code"),
    ("responseStatus.message", "message"),
];

/// The authorizer's decision (`allow`, `forbid`).
const DECISION: &str = "annotations.authorization.k8s.io/decision";

/// Decodes one audit event.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    if json::str(&record, "verb").is_none() {
        return Err(DecodeError::missing("verb"));
    }
    let mut e = ctx.event(EventClass::Api);
    e.provider = Some("kubernetes.audit".into());
    set::apply(&mut e, &record, TABLE);
    e.cloud.get_or_insert_with(Default::default).service = Some("kubernetes".into());
    e.outcome = match (json::uint(&record, "responseStatus.code"), json::str(&record, DECISION)) {
        (_, Some("forbid")) => Outcome::Failure,
        (Some(code), _) if code >= 400 => Outcome::Failure,
        (Some(_), _) | (None, Some("allow")) => Outcome::Success,
        _ => Outcome::Unknown,
    };
    e.attributes.insert("k8s".into(), record);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_exec_into_a_pod() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "create",
                "user": { "username": "admin@example.com", "groups": ["system:masters"] }, "sourceIPs": ["1.2.3.4"],
                "objectRef": { "resource": "pods", "subresource": "exec", "namespace": "default", "name": "web" },
                "responseStatus": { "code": 101 }, "requestReceivedTimestamp": "2022-11-29T00:09:04.380Z" }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!((e.class, e.outcome, e.action.as_deref()), (EventClass::Api, Outcome::Success, Some("create")));
        assert_eq!(e.user.as_ref().map(|u| u.roles.clone()), Some(vec!["system:masters".to_owned()]));
        assert_eq!(e.source.as_ref().and_then(|s| s.ip).map(|ip| ip.to_string()).as_deref(), Some("1.2.3.4"));
        assert_eq!(e.attributes["k8s"]["objectRef"]["subresource"], "exec");
    }
}
