//! Scoring a backtest against labelled ground truth (`vigil rules score`): which
//! behaviours the incidents found (recall), how many incidents explain a behaviour
//! (precision), each rule's true and false positives, and the incidents that explain no
//! label.
//!
//! A truth file lists the behaviours that must produce an incident (`expect`) and the
//! entities that must not (`benign`), each by an entity (an address, user or host name as
//! incidents list them), optionally with the rules allowed to find it:
//!
//! ```json
//! { "expect": [ { "entity": "203.0.113.10", "behaviour": "SSH brute force", "rules": ["ssh_brute_force"] } ],
//!   "benign": [ { "entity": "192.0.2.40", "why": "a user mistyping, then logging in" } ] }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Incident;

/// A truth file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    /// What the data is (shown in reports).
    #[serde(default)]
    pub name: String,
    /// Behaviours that must each be explained by an incident.
    #[serde(default)]
    pub expect: Vec<Expected>,
    /// Entities no incident may involve.
    #[serde(default)]
    pub benign: Vec<Benign>,
}

/// A behaviour that must produce an incident.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// An entity the incident must involve (address, user or host).
    pub entity: String,
    /// What it is ("SSH brute force").
    #[serde(default)]
    pub behaviour: String,
    /// Rules allowed to find it; empty: any rule.
    #[serde(default)]
    pub rules: Vec<String>,
}

/// An entity that must not appear in any incident.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benign {
    /// The entity (address, user or host).
    pub entity: String,
    /// Why it is benign ("below threshold").
    #[serde(default)]
    pub why: String,
}

/// True and false positives of one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleScore {
    /// Incidents it contributed to that explain a label.
    pub true_positives: usize,
    /// Incidents it contributed to that explain none.
    pub false_positives: usize,
}

/// An incident that explains no label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unexplained {
    /// Its title.
    pub title: String,
    /// Its rules.
    pub rules: Vec<String>,
    /// Its entities, flattened.
    pub entities: Vec<String>,
    /// The benign label it hit, if it hit one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benign: Option<String>,
}

/// The score of a backtest.
#[derive(Clone, Debug, Serialize)]
pub struct Score {
    /// Expected behaviours.
    pub expected: usize,
    /// Of those, found.
    pub found: usize,
    /// Incidents.
    pub incidents: usize,
    /// Of those, explaining at least one expected behaviour.
    pub explaining: usize,
    /// Incidents beyond the first that explain the same behaviour: one attacker split
    /// across several incidents (each still counts as explaining it).
    pub duplicates: usize,
    /// found / expected (1 when nothing was expected).
    pub recall: f64,
    /// explaining / incidents (1 when there were none).
    pub precision: f64,
    /// Per rule.
    pub rules: BTreeMap<String, RuleScore>,
    /// Expected behaviours no incident explains: "entity — behaviour".
    pub missed: Vec<String>,
    /// Incidents that explain no expected behaviour.
    pub unexplained: Vec<Unexplained>,
}

fn involves(incident: &Incident, entity: &str) -> bool {
    let e = &incident.entities;
    e.ips.contains(entity) || e.users.contains(entity) || e.hosts.contains(entity) || e.source_ips.contains(entity)
}

fn explains(incident: &Incident, label: &Expected) -> bool {
    involves(incident, &label.entity)
        && (label.rules.is_empty() || incident.rules.iter().any(|r| label.rules.iter().any(|l| l == r.as_str())))
}

/// Scores `incidents` against `truth`.
pub fn score(incidents: &[Incident], truth: &Truth) -> Score {
    let found = truth.expect.iter().filter(|label| incidents.iter().any(|i| explains(i, label))).count();
    let missed = truth
        .expect
        .iter()
        .filter(|label| !incidents.iter().any(|i| explains(i, label)))
        .map(|l| if l.behaviour.is_empty() { l.entity.clone() } else { format!("{} — {}", l.entity, l.behaviour) })
        .collect();
    let mut rules: BTreeMap<String, RuleScore> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut explaining = 0;
    for incident in incidents {
        // An incident involving a benign entity is false even if it also names an attacker.
        let benign = truth.benign.iter().find(|b| involves(incident, &b.entity));
        let good = benign.is_none() && truth.expect.iter().any(|label| explains(incident, label));
        explaining += usize::from(good);
        for rule in &incident.rules {
            let entry = rules.entry(rule.to_string()).or_default();
            if good {
                entry.true_positives += 1;
            } else {
                entry.false_positives += 1;
            }
        }
        if !good {
            let e = &incident.entities;
            unexplained.push(Unexplained {
                title: incident.title.clone(),
                rules: incident.rules.iter().map(ToString::to_string).collect(),
                entities: e.ips.iter().chain(&e.users).chain(&e.hosts).cloned().collect(),
                benign: benign
                    .map(|b| if b.why.is_empty() { b.entity.clone() } else { format!("{} ({})", b.entity, b.why) }),
            });
        }
    }
    let duplicates = truth
        .expect
        .iter()
        .map(|label| incidents.iter().filter(|i| explains(i, label)).count().saturating_sub(1))
        .sum();
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Score {
        expected: truth.expect.len(),
        found,
        incidents: incidents.len(),
        explaining,
        duplicates,
        recall: ratio(found, truth.expect.len()),
        precision: ratio(explaining, incidents.len()),
        rules,
        missed,
        unexplained,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Entities;

    fn incident(rules: &[&str], ips: &[&str], users: &[&str]) -> Incident {
        let entities = Entities {
            ips: ips.iter().map(|s| (*s).to_owned()).collect(),
            users: users.iter().map(|s| (*s).to_owned()).collect(),
            ..Entities::default()
        };
        let json = serde_json::json!({
            "id": crate::event::IncidentId::generate(), "rule_id": rules[0], "rules": rules, "title": "t",
            "priority": "P2", "status": "detected", "dedup_key": "k", "opened_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z", "first_seen": "2026-01-01T00:00:00Z",
            "last_seen": "2026-01-01T00:00:00Z", "alert_count": 1, "event_count": 1, "event_ids": [],
            "entities": entities,
        });
        serde_json::from_value(json).expect("incident")
    }

    #[test]
    fn recall_precision_and_rules_are_counted_per_label_and_incident() {
        let truth: Truth = serde_json::from_str(
            r#"{ "expect": [
                    { "entity": "203.0.113.10", "behaviour": "brute force", "rules": ["ssh_brute_force"] },
                    { "entity": "mallory", "behaviour": "privileged group change" },
                    { "entity": "198.51.100.9", "behaviour": "port scan" } ],
                 "benign": [ { "entity": "192.0.2.40", "why": "a typo" } ] }"#,
        )
        .expect("truth");
        let incidents = [
            incident(&["ssh_brute_force", "ssh_slow_brute_force"], &["203.0.113.10"], &["root"]),
            incident(&["privileged_group_member_added"], &["10.0.0.5"], &["mallory"]),
            // The right entity, but a rule the label does not allow.
            incident(&["port_scan_other"], &["203.0.113.10"], &[]),
            incident(&["ssh_brute_force"], &["192.0.2.40"], &["fztu"]),
        ];
        let s = score(&incidents, &truth);
        assert_eq!((s.expected, s.found, s.incidents, s.explaining), (3, 2, 4, 2));
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-9 && (s.precision - 0.5).abs() < 1e-9);
        assert_eq!(s.missed, ["198.51.100.9 — port scan"]);
        assert_eq!(s.duplicates, 0);
        let twice = [incidents[0].clone(), incident(&["ssh_brute_force"], &["203.0.113.10"], &[])];
        assert_eq!(score(&twice, &truth).duplicates, 1, "one attacker, two incidents");
        assert_eq!(s.rules["ssh_brute_force"], RuleScore { true_positives: 1, false_positives: 1 });
        assert_eq!(s.rules["ssh_slow_brute_force"], RuleScore { true_positives: 1, false_positives: 0 });
        assert_eq!(s.unexplained.len(), 2);
        assert_eq!(s.unexplained[1].benign.as_deref(), Some("192.0.2.40 (a typo)"));
        let empty = score(&[], &Truth::default());
        assert_eq!((empty.recall, empty.precision), (1.0, 1.0));
    }

    #[test]
    fn unknown_keys_in_a_truth_file_are_refused() {
        let err = serde_json::from_str::<Truth>(r#"{ "expected": [] }"#).expect_err("typo");
        assert!(err.to_string().contains("unknown field `expected`"), "{err}");
    }
}
