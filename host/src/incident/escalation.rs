//! Escalation: an incident still `detected` (nobody acknowledged it) past its priority's
//! response time is escalated — level 1 after one response time, level 2 after two, up to
//! `max_level` — and each escalation is an incident change that channels configured with
//! that `escalation_level` page on.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Incident, IncidentStatus};
use crate::event::Priority;

/// `[incidents.escalation]`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// Response time of P0 incidents.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub p0: Duration,
    /// Response time of P1 incidents.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub p1: Duration,
    /// Response time of P2 incidents.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub p2: Duration,
    /// Response time of P3 incidents.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub p3: Duration,
    /// Priorities that escalate (by default P0 and P1).
    pub priorities: Vec<Priority>,
    /// Highest level (0 turns escalation off).
    pub max_level: u8,
    /// How often unacknowledged incidents are checked.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub check_every: Duration,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            p0: Duration::from_secs(15 * 60),
            p1: Duration::from_secs(3600),
            p2: Duration::from_secs(4 * 3600),
            p3: Duration::from_secs(24 * 3600),
            priorities: vec![Priority::P0, Priority::P1],
            max_level: 2,
            check_every: Duration::from_secs(30),
        }
    }
}

impl EscalationConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (key, d) in
            [("p0", self.p0), ("p1", self.p1), ("p2", self.p2), ("p3", self.p3), ("check_every", self.check_every)]
        {
            if d.is_zero() {
                errors.push((format!("incidents.escalation.{key}"), "must be longer than 0s".into()));
            }
        }
        errors
    }

    /// The response time of a priority (P4 has none).
    pub fn response_time(&self, priority: Priority) -> Option<Duration> {
        match priority {
            Priority::P0 => Some(self.p0),
            Priority::P1 => Some(self.p1),
            Priority::P2 => Some(self.p2),
            Priority::P3 => Some(self.p3),
            Priority::P4 => None,
        }
    }

    /// The level `incident` should be escalated to at `now`, if it is due for one.
    pub fn due(&self, incident: &Incident, now: DateTime<Utc>) -> Option<u8> {
        if incident.status != IncidentStatus::Detected
            || !self.priorities.contains(&incident.priority)
            || incident.escalation >= self.max_level
        {
            return None;
        }
        let response = chrono::Duration::from_std(self.response_time(incident.priority)?).ok()?;
        let next = incident.escalation + 1;
        (now - incident.opened_at >= response * i32::from(next)).then_some(next)
    }
}

/// `[incidents]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// Escalation of unacknowledged incidents.
    pub escalation: EscalationConfig,
    /// Claims of dedup keys across instances (scale-out).
    pub claims: Option<super::claims::ClaimsConfig>,
    /// What raises an incident's priority, and when a rule counts as noisy.
    pub priority: super::priority::PriorityConfig,
}
