//! [`Alert`]: a rule's verdict, and the [`Entities`] it concerns.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{AlertId, EventId, Field, Priority, RuleId, SecurityEvent};
use crate::rules::Category;

/// The entities an alert or incident concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entities {
    /// IP addresses (source and destination).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ips: BTreeSet<String>,
    /// Source addresses only (what containment blocks).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub source_ips: BTreeSet<String>,
    /// User names (actors and targets).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub users: BTreeSet<String>,
    /// Host names.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hosts: BTreeSet<String>,
    /// Addresses that matched a threat-intel indicator (source or destination).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub threat_ips: BTreeSet<String>,
}

impl Entities {
    /// The entities named by one event.
    pub fn of(event: &SecurityEvent) -> Self {
        let mut entities = Self::default();
        let text = |field: Field| field.get(event).map(|v| v.to_text().into_owned());
        entities.ips.extend(text(Field::SourceIp));
        entities.source_ips.extend(text(Field::SourceIp));
        entities.ips.extend(text(Field::DestinationIp));
        entities.users.extend(text(Field::UserName));
        entities.users.extend(text(Field::UserTargetName));
        entities.hosts.extend(text(Field::HostName));
        if let Some(threat) = &event.threat
            && threat.indicator_type.ends_with("-addr")
            && threat.matched_value.parse::<std::net::IpAddr>().is_ok()
        {
            entities.threat_ips.insert(threat.matched_value.clone());
        }
        entities
    }

    /// Adds `other`'s entities, keeping at most `cap` of each kind.
    pub fn merge(&mut self, other: &Entities, cap: usize) {
        for (mine, theirs) in [
            (&mut self.ips, &other.ips),
            (&mut self.source_ips, &other.source_ips),
            (&mut self.users, &other.users),
            (&mut self.hosts, &other.hosts),
            (&mut self.threat_ips, &other.threat_ips),
        ] {
            for value in theirs {
                if mine.len() >= cap {
                    break;
                }
                mine.insert(value.clone());
            }
        }
    }
}

/// A rule's verdict: something to look at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Alert id.
    pub id: AlertId,
    /// The rule that raised it.
    pub rule_id: RuleId,
    /// The rule's title.
    pub title: String,
    /// The rule's priority.
    pub priority: Priority,
    /// The rule's category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Event time of the event that completed the match.
    pub time: DateTime<Utc>,
    /// Event time of the earliest event in the match.
    pub first_time: DateTime<Utc>,
    /// The group-by fields and their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, String>,
    /// The group values joined with `|`: the key of the window.
    pub group_key: String,
    /// The incident dedup key (the rule's `dedup` template, or the group key).
    pub dedup_key: String,
    /// Matching events behind the alert (1 for rules without a window).
    pub count: u64,
    /// Ids of the matching events (at most 100).
    pub event_ids: Vec<EventId>,
    /// Entities of the event that completed the match, plus the group values.
    pub entities: Entities,
    /// Users affected, when the events say (`attributes.affected_users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_users: Option<u64>,
    /// ATT&CK techniques of the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<String>,
    /// The rule's tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The rule's suppression window in milliseconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_ms: Option<u64>,
    /// Channels the rule asks to notify (its `notify` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}
