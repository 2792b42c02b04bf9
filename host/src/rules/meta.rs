//! What a rule file declares in its `RULE` map.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{EventClass, FieldPath, Priority, RuleId};

/// What kind of problem a rule detects; drives incident classification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// An attacker got in or is getting in.
    SecurityBreach,
    /// Data is leaving or exposed (data at risk).
    DataLeak,
    /// A service is down or degraded by an attack.
    ServiceOutage,
    /// A control required by policy or regulation is violated (compliance impact).
    ComplianceViolation,
    /// Performance is degraded.
    PerformanceDegradation,
    /// Credentials are being guessed or misused.
    AuthenticationFailure,
    /// Access beyond what is granted was attempted.
    AuthorizationFailure,
    /// A system (including Vigil) is failing.
    SystemError,
}

impl Category {
    /// Whether incidents of this category put data at risk or have compliance impact
    /// (classified at least P1).
    pub fn raises_to_p1(self) -> bool {
        matches!(self, Self::DataLeak | Self::SecurityBreach | Self::ComplianceViolation)
    }
}

/// MITRE ATT&CK mapping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mitre {
    /// Tactic ids (`TA0006`).
    #[serde(default)]
    pub tactics: Vec<String>,
    /// Technique ids (`T1110`, `T1110.001`).
    #[serde(default)]
    pub techniques: Vec<String>,
}

/// One step of a sequence: the name of a function of the rule file that matches it, and
/// how many matches the step needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Function `fn NAME(event)` in the rule file.
    pub when: String,
    /// Matches needed to complete the step.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// How matches of a rule are aggregated before an alert is raised. All windows are keyed
/// by the rule's `group_by` values and measured in event time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// At least `count` matching events within `within`.
    Threshold {
        /// Events needed.
        count: u32,
        /// Window length (`5m`).
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
    /// At least `count` distinct values of `field` among matching events within `within`
    /// (password spraying: distinct `user.name` per `source.ip`).
    Distinct {
        /// The field whose distinct values are counted.
        field: FieldPath,
        /// Distinct values needed.
        count: u32,
        /// Window length.
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
    /// The sum of numeric `field` over matching events within `within` reaches `at_least`
    /// (data exfiltration: `source.bytes` per `user.name`).
    Sum {
        /// The numeric field summed.
        field: FieldPath,
        /// The total that fires the window.
        at_least: u64,
        /// Window length.
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
    /// A statistic of numeric `field` over the matching events within `within` reaches
    /// `at_least` (exceeds it, when `strictly`): Sigma's `value_avg`, `value_median` and
    /// `value_percentile` (a request size far above normal, per host).
    Statistic {
        /// The numeric field.
        field: FieldPath,
        /// Which statistic: `"avg"`, `"median"`, or `{ "percentile": 95 }`.
        statistic: Statistic,
        /// The value that fires the window.
        at_least: f64,
        /// Fire only above `at_least`, not at it.
        #[serde(default)]
        strictly: bool,
        /// Window length.
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
    /// The steps matched in order (by event time), all within `within` of the first.
    Sequence {
        /// The steps, in order.
        steps: Vec<Step>,
        /// Window length.
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
    /// Every step matched, in any order, all within `within` (Sigma's `temporal`).
    AllOf {
        /// The steps, any order.
        steps: Vec<Step>,
        /// Window length.
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
    /// A match of `first` not followed by a match of `then` within `within`.
    Absence {
        /// Function matching the first event.
        first: String,
        /// Function matching the event that should follow.
        then: String,
        /// How long to wait for it.
        #[serde(with = "humantime_serde")]
        within: Duration,
    },
}

/// A statistic of a window's values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// The mean.
    Avg,
    /// The median (the 50th percentile).
    Median,
    /// The `n`th percentile, by nearest rank (1–100).
    Percentile(u8),
}

impl Statistic {
    /// The statistic of `values` (not empty; reordered).
    pub fn of(self, values: &mut [f64]) -> f64 {
        let rank = |p: u8, values: &mut [f64]| {
            // Nearest rank: the smallest value with at least p % of the values at or below it.
            let n = values.len();
            let k = (usize::from(p) * n).div_ceil(100).clamp(1, n) - 1;
            *values.select_nth_unstable_by(k, f64::total_cmp).1
        };
        match self {
            Self::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Self::Median => rank(50, values),
            Self::Percentile(p) => rank(p, values),
        }
    }
}

impl WindowSpec {
    /// The window length.
    pub fn within(&self) -> Duration {
        match self {
            Self::Threshold { within, .. }
            | Self::Distinct { within, .. }
            | Self::Sum { within, .. }
            | Self::Statistic { within, .. }
            | Self::Sequence { within, .. }
            | Self::AllOf { within, .. }
            | Self::Absence { within, .. } => *within,
        }
    }
}

/// An example event stream shipped with a rule, and the alerts it must produce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// What the example shows.
    #[serde(default)]
    pub name: String,
    /// The events, in order. Each is a `SecurityEvent` map, or
    /// `#{ repeat: N, every: "10s", event: #{...} }` for N copies spaced in event time.
    pub events: Vec<serde_json::Value>,
    /// How many alerts the rule must raise on them.
    pub alerts: usize,
    /// The group key every alert must have, when given (`"203.0.113.7"`).
    #[serde(default)]
    pub group: Option<String>,
}

/// Rule metadata as written in the `RULE` map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMeta {
    /// Unique id (`[A-Za-z0-9_.-]`, ≤128 chars).
    pub id: RuleId,
    /// One-line title; becomes the incident title.
    pub title: String,
    /// What the rule detects and why it matters.
    #[serde(default)]
    pub description: String,
    /// `P0`–`P4`, or `info`, `low`, `medium`, `high`, `critical`.
    pub severity: Priority,
    /// What kind of problem it detects.
    #[serde(default)]
    pub category: Option<Category>,
    /// ATT&CK tactics and techniques.
    #[serde(default)]
    pub mitre: Mitre,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who maintains the rule.
    #[serde(default)]
    pub owner: Option<String>,
    /// Who wrote it (carried on alerts and incidents: Sigma's licence asks for it).
    #[serde(default)]
    pub author: Option<String>,
    /// Where the detection comes from.
    #[serde(default)]
    pub references: Vec<String>,
    /// What else it is known to match.
    #[serde(default)]
    pub falsepositives: Vec<String>,
    /// Playbook to run on its incidents.
    #[serde(default)]
    pub playbook: Option<String>,
    /// Notification channels for its incidents.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Whether its playbook may run without a human approving it.
    #[serde(default)]
    pub auto_remediate: bool,
    /// Event classes the rule can match; inferred from the condition when left out.
    #[serde(default)]
    pub classes: Vec<EventClass>,
    /// Fields whose values key windows and incidents (`["source.ip"]`).
    #[serde(default)]
    pub group_by: Vec<FieldPath>,
    /// Aggregation before alerting; none alerts on every matching event.
    #[serde(default)]
    pub window: Option<WindowSpec>,
    /// Incident dedup key template (`"{{source.ip}}"`); default: the group-by values.
    #[serde(default)]
    pub dedup: Option<String>,
    /// Incident family: alerts of the rules of one family with the same dedup key join
    /// one incident (one incident per attacker across the SSH rules).
    #[serde(default)]
    pub family: Option<String>,
    /// After an incident opens for a key, further alerts for the key within this long
    /// join it (counted as suppressed) even if it was resolved meanwhile.
    #[serde(default, with = "humantime_serde")]
    pub suppress: Option<Duration>,
    /// Example streams and the alerts they must produce (run by `vigil rules test`).
    #[serde(default)]
    pub examples: Vec<Example>,
    /// Function plugins the condition calls (`plugin::invoke`). While one is not loaded the
    /// rule does not run, and its examples are reported as skipped.
    #[serde(default)]
    pub plugins: Vec<String>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::Statistic;

    #[test]
    fn statistics_by_nearest_rank() {
        let mut values = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(Statistic::Avg.of(&mut values), 3.0);
        assert_eq!(Statistic::Median.of(&mut values), 3.0);
        assert_eq!(Statistic::Percentile(95).of(&mut values), 5.0);
        assert_eq!(Statistic::Percentile(20).of(&mut values), 1.0);
        assert_eq!(Statistic::Percentile(21).of(&mut values), 2.0);
        assert_eq!(Statistic::Median.of(&mut [7.0, 1.0]), 1.0, "the lower middle of an even count");
        assert_eq!(Statistic::Percentile(100).of(&mut [2.0]), 2.0);
    }
}
