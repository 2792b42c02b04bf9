//! The incident lifecycle: detected → acknowledged → investigating → contained → resolved
//! → closed. An incident may skip ahead (a false positive goes straight to resolved) but
//! never back, except by reopening a resolved or closed one into investigating.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an incident is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Opened by detection, not yet seen by a person.
    Detected,
    /// Someone has seen it.
    Acknowledged,
    /// Someone is working on it.
    Investigating,
    /// The threat is contained (blocked, isolated) but not yet resolved.
    Contained,
    /// The cause is dealt with.
    Resolved,
    /// Reviewed and done.
    Closed,
}

impl IncidentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [IncidentStatus; 6] =
        [Self::Detected, Self::Acknowledged, Self::Investigating, Self::Contained, Self::Resolved, Self::Closed];

    /// The status as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detected => "detected",
            Self::Acknowledged => "acknowledged",
            Self::Investigating => "investigating",
            Self::Contained => "contained",
            Self::Resolved => "resolved",
            Self::Closed => "closed",
        }
    }

    /// Whether new alerts still join the incident.
    pub fn is_open(self) -> bool {
        self < Self::Resolved
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncidentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!("unknown status `{s}`; expected one of {}", Self::ALL.map(|x| x.as_str()).join(", "))
        })
    }
}

/// A transition the lifecycle does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an incident cannot go from {from} to {to}{}", hint(*from, *to))]
pub struct TransitionError {
    /// The current status.
    pub from: IncidentStatus,
    /// The status asked for.
    pub to: IncidentStatus,
}

fn hint(from: IncidentStatus, to: IncidentStatus) -> &'static str {
    if !from.is_open() && to.is_open() && to != IncidentStatus::Investigating {
        "; reopen it into investigating"
    } else {
        ""
    }
}

/// Checks a transition.
pub fn check(from: IncidentStatus, to: IncidentStatus) -> Result<(), TransitionError> {
    let reopen = !from.is_open() && to == IncidentStatus::Investigating;
    if to > from || reopen { Ok(()) } else { Err(TransitionError { from, to }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IncidentStatus::*;

    #[test]
    fn forward_moves_and_reopen_only() {
        assert!(check(Detected, Acknowledged).is_ok());
        assert!(check(Detected, Resolved).is_ok(), "a false positive skips ahead");
        assert!(check(Contained, Closed).is_ok());
        assert!(check(Resolved, Investigating).is_ok(), "reopen");
        assert!(check(Closed, Investigating).is_ok(), "reopen");
        let e = check(Investigating, Acknowledged).expect_err("backwards");
        assert_eq!(e.to_string(), "an incident cannot go from investigating to acknowledged");
        assert!(check(Detected, Detected).is_err());
        let e = check(Closed, Detected).expect_err("reopen goes to investigating");
        assert!(e.to_string().ends_with("reopen it into investigating"), "{e}");
        assert_eq!("contained".parse::<IncidentStatus>(), Ok(Contained));
        assert!("bogus".parse::<IncidentStatus>().is_err());
    }
}
