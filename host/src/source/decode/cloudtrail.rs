//! AWS CloudTrail: single records, the `Records[]` files CloudTrail writes to S3 (split by
//! the container logic of the module), and EventBridge events carrying a record in
//! `detail`.
//!
//! API calls are class `api` with the call's own name as the action (`GetObject`,
//! `StopLogging`): there is no better verb for thousands of APIs. Calls that mean a logon
//! or an account change take the shared vocabulary instead (`ConsoleLogin` → `logon`,
//! `CreateUser` → `user_created`, `AddUserToGroup` → `group_member_added`); the call's
//! name stays in `attributes.cloudtrail.eventName`.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent};

/// CloudTrail fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("eventTime", "time"),
    ("@timestamp", "time"),
    ("eventName", "action"),
    ("awsRegion", "cloud.region"),
    ("recipientAccountId", "cloud.account_id"),
    ("userIdentity.accountId", "cloud.account_id"),
    ("sourceIPAddress", "source.address"),
    ("userAgent", "http.user_agent"),
    ("userIdentity.arn", "user.id"),
    ("errorMessage", "message"),
    ("requestParameters.userName", "user.target.name"),
    ("requestParameters.groupName", "user.target.roles"),
];

/// Calls with a meaning in the shared vocabulary: (eventName, class, action).
pub const CALLS: &[(&str, EventClass, &str)] = &[
    ("ConsoleLogin", EventClass::Authentication, "logon"),
    ("CheckMfa", EventClass::Authentication, "mfa_check"),
    ("GetSigninToken", EventClass::Authentication, "signin_token_issued"),
    ("CreateUser", EventClass::Account, "user_created"),
    ("DeleteUser", EventClass::Account, "user_deleted"),
    ("UpdateUser", EventClass::Account, "user_changed"),
    ("CreateLoginProfile", EventClass::Account, "password_set"),
    ("UpdateLoginProfile", EventClass::Account, "password_reset"),
    ("ChangePassword", EventClass::Account, "password_changed"),
    ("CreateAccessKey", EventClass::Account, "access_key_created"),
    ("DeleteAccessKey", EventClass::Account, "access_key_deleted"),
    ("AddUserToGroup", EventClass::Account, "group_member_added"),
    ("RemoveUserFromGroup", EventClass::Account, "group_member_removed"),
    ("CreateGroup", EventClass::Account, "group_created"),
    ("DeleteGroup", EventClass::Account, "group_deleted"),
    ("DeactivateMFADevice", EventClass::Account, "mfa_disabled"),
    ("AttachUserPolicy", EventClass::Authorization, "policy_attached"),
    ("AttachRolePolicy", EventClass::Authorization, "policy_attached"),
    ("AttachGroupPolicy", EventClass::Authorization, "policy_attached"),
    ("PutUserPolicy", EventClass::Authorization, "policy_attached"),
    ("PutRolePolicy", EventClass::Authorization, "policy_attached"),
    ("PutGroupPolicy", EventClass::Authorization, "policy_attached"),
];

/// Decodes one CloudTrail record (or an EventBridge event around one).
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let record = match record {
        Value::Object(mut o) if o.get("detail").is_some_and(|d| d.get("eventName").is_some()) => {
            o.remove("detail").unwrap_or_default()
        }
        other => other,
    };
    let name = json::str(&record, "eventName").ok_or_else(|| DecodeError::missing("eventName"))?.to_owned();
    let call = CALLS.iter().find(|(n, ..)| *n == name);
    let mut e = ctx.event(call.map_or(EventClass::Api, |(_, class, _)| *class));
    e.provider = Some("aws.cloudtrail".into());
    set::apply(&mut e, &record, TABLE);
    if let Some((_, _, action)) = call {
        e.action = Some((*action).to_owned());
    }
    let cloud = e.cloud.get_or_insert_with(Default::default);
    cloud.provider = Some("aws".into());
    cloud.service = json::str(&record, "eventSource").map(|s| s.trim_end_matches(".amazonaws.com").to_owned());
    let user = e.user.get_or_insert_with(Default::default);
    user.name = principal(&record);
    if let Some(role) = json::str(&record, "userIdentity.sessionContext.sessionIssuer.userName") {
        user.roles.push(role.to_owned());
    }
    let failed = json::get(&record, "errorCode").is_some()
        || json::str(&record, "responseElements.ConsoleLogin").is_some_and(|r| r != "Success");
    e.outcome = if failed { Outcome::Failure } else { Outcome::Success };
    if let Some(bytes) = json::uint(&record, "additionalEventData.bytesTransferredOut") {
        set::put(&mut e, "destination.bytes", &Value::from(bytes));
    }
    e.attributes.insert("cloudtrail".into(), record);
    Ok(e)
}

/// Who made the call, as people name them: the IAM user's name, `root`, the role and
/// session of an assumed role (`WebRole/i-0317f6c6b66ae9c40`), or the AWS service.
fn principal(r: &Value) -> Option<String> {
    if let Some(name) = json::str(r, "userIdentity.userName") {
        return Some(name.to_owned());
    }
    match json::str(r, "userIdentity.type") {
        Some("Root") => return Some("root".into()),
        Some("AWSService") => return json::text(r, "userIdentity.invokedBy"),
        _ => {}
    }
    let arn = json::str(r, "userIdentity.arn")?;
    // arn:aws:sts::123456789012:assumed-role/Role/Session → Role/Session
    let resource = arn.splitn(6, ':').nth(5)?;
    Some(resource.split_once('/').map_or(resource, |(_, rest)| rest).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode_one(v: Value) -> Result<SecurityEvent, DecodeError> {
        decode(v, &crate::source::decode::test_ctx())
    }

    #[test]
    fn console_logins_and_assumed_roles() {
        let e = decode_one(json!({ "eventVersion": "1.05", "eventTime": "2019-01-01T00:00:00Z",
            "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "awsRegion": "us-east-1",
            "sourceIPAddress": "111.111.111.111", "userIdentity": { "type": "IAMUser", "userName": "tester",
            "arn": "arn:aws:iam::123456789012:user/tester", "accountId": "123456789012" },
            "responseElements": { "ConsoleLogin": "Failure" }, "additionalEventData": { "MFAUsed": "No" } }))
        .expect("decodes");
        assert_eq!(
            (e.class, e.outcome, e.action.as_deref()),
            (EventClass::Authentication, Outcome::Failure, Some("logon"))
        );
        assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("tester"));
        assert_eq!(e.cloud.as_ref().and_then(|c| c.service.as_deref()), Some("signin"));
        assert_eq!(e.attributes["cloudtrail"]["additionalEventData"]["MFAUsed"], "No");

        let e = decode_one(json!({ "detail-type": "AWS API Call via CloudTrail", "detail": {
            "eventTime": "2020-09-14T01:02:34Z", "eventSource": "s3.amazonaws.com", "eventName": "GetObject",
            "sourceIPAddress": "ec2.amazonaws.com", "userIdentity": { "type": "AssumedRole",
            "arn": "arn:aws:sts::123456789123:assumed-role/WebRole/i-0317f6c6b66ae9c40",
            "sessionContext": { "sessionIssuer": { "userName": "WebRole" } } } } }))
        .expect("decodes");
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Api, Some("GetObject")));
        assert_eq!(e.user.as_ref().and_then(|u| u.name.as_deref()), Some("WebRole/i-0317f6c6b66ae9c40"));
        assert_eq!(e.source.as_ref().and_then(|s| s.domain.as_deref()), Some("ec2.amazonaws.com"));
        assert!(
            decode_one(json!({ "eventTime": "2020-09-14T01:02:34Z" }))
                .is_err_and(|e| e.to_string().contains("eventName"))
        );
    }
}
