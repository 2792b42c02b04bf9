//! GitHub audit log events (organisation and enterprise, from the API, streaming or
//! exports). The action (`repo.create`, `org.add_member`) is kept as GitHub names it,
//! except membership changes, which take the account vocabulary.

use serde_json::Value;

use super::set::{self, Mapping};
use super::{Ctx, json};
use crate::event::{DecodeError, EventClass, Outcome, SecurityEvent};

/// Audit event fields copied to the model.
pub const TABLE: &[Mapping] = &[
    ("@timestamp", "time"),
    ("created_at", "time"),
    ("action", "action"),
    ("actor", "user.name"),
    ("actor_id", "user.id"),
    ("actor_ip", "source.address"),
    ("user", "user.target.name"),
    ("user_agent", "http.user_agent"),
    ("team", "user.target.roles"),
    ("business", "cloud.account_id"),
    ("org", "cloud.account_id"),
];

/// Actions with a meaning in the shared vocabulary.
pub const ACTIONS: &[(&str, EventClass, &str)] = &[
    ("org.add_member", EventClass::Account, "group_member_added"),
    ("org.remove_member", EventClass::Account, "group_member_removed"),
    ("team.add_member", EventClass::Account, "group_member_added"),
    ("team.remove_member", EventClass::Account, "group_member_removed"),
    ("org.update_member", EventClass::Authorization, "role_assigned"),
    ("business.add_admin", EventClass::Authorization, "role_assigned"),
];

/// Decodes one audit log event.
pub fn decode(record: Value, ctx: &Ctx<'_>) -> Result<SecurityEvent, DecodeError> {
    let action = json::str(&record, "action").ok_or_else(|| DecodeError::missing("action"))?.to_owned();
    let known = ACTIONS.iter().find(|(a, ..)| *a == action);
    let mut e = ctx.event(known.map_or(EventClass::Api, |(_, class, _)| *class));
    e.provider = Some("github.audit".into());
    set::apply(&mut e, &record, TABLE);
    if let Some((_, _, normalised)) = known {
        e.action = Some((*normalised).to_owned());
    }
    let cloud = e.cloud.get_or_insert_with(Default::default);
    cloud.provider = Some("github".into());
    cloud.service = action.split_once('.').map(|(area, _)| area.to_owned());
    // The audit log records what was done.
    e.outcome = Outcome::Success;
    e.attributes.insert("github".into(), record);
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn epoch_milliseconds_and_membership() {
        let ctx = crate::source::decode::test_ctx();
        let e = decode(
            json!({ "actor": "cat", "action": "protected_branch.destroy", "created_at": 1621305118553_u64,
            "org": "my-org", "repo": "my-org/my-repo" }),
            &ctx,
        )
        .expect("decodes");
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Api, Some("protected_branch.destroy")));
        assert_eq!(e.time.to_rfc3339(), "2021-05-18T02:31:58.553+00:00");
        let e = decode(json!({ "actor": "admin", "action": "org.add_member", "user": "eve", "org": "acme" }), &ctx)
            .expect("decodes");
        assert_eq!((e.class, e.action.as_deref()), (EventClass::Account, Some("group_member_added")));
        assert_eq!(e.user.as_ref().and_then(|u| u.target.as_ref()).and_then(|t| t.name.as_deref()), Some("eve"));
    }
}
