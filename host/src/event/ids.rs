//! Identifier newtypes that cross module boundaries.
//!
//! Event, alert and incident ids are UUIDv7: time-ordered, so they sort by creation time
//! and make good storage keys. Rule ids are the author's chosen names.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 bytes of the id, in their sortable order.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Rebuilds an id from its 16 bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The stable id of a [`SecurityEvent`](super::SecurityEvent); sinks use it for idempotency.
    EventId
);
uuid_id!(
    /// The id of an alert a rule produced.
    AlertId
);
uuid_id!(
    /// The id of an incident.
    IncidentId
);
uuid_id!(
    /// The id of a playbook run.
    RunId
);

/// The id of a rule, as written in its file (`ssh_brute_force`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct RuleId(pub String);

impl RuleId {
    /// Whether `s` is a valid rule id: 1–128 characters of `[A-Za-z0-9_.-]`.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl From<&str> for RuleId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_time_ordered() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.0.get_version_num(), 7);
    }

    #[test]
    fn ids_round_trip_through_strings_and_bytes() {
        let id = IncidentId::generate();
        assert_eq!(id.to_string().parse::<IncidentId>().expect("valid"), id);
        assert_eq!(IncidentId::from_bytes(*id.as_bytes()), id);
    }

    #[test]
    fn rule_id_validation() {
        assert!(RuleId::is_valid("ssh_brute-force.v2"));
        assert!(!RuleId::is_valid(""));
        assert!(!RuleId::is_valid("has space"));
        assert!(!RuleId::is_valid(&"x".repeat(129)));
    }
}
