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
    /// Values left out because their kind had reached the cap (counted per alert that
    /// carried them, so a value left out of several alerts counts several times).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which kind of entity a [`Seen`] value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityKind {
    /// A source address (also an address).
    #[serde(rename = "s")]
    SourceIp,
    /// Another address.
    #[serde(rename = "i")]
    Ip,
    /// A user name.
    #[serde(rename = "u")]
    User,
    /// A host name.
    #[serde(rename = "h")]
    Host,
    /// An address that matched threat intelligence.
    #[serde(rename = "t")]
    ThreatIp,
}

/// One entity value a window remembers for a match, so the alert it ends in names the
/// entities of every event of the match, not only the last one's.
pub type Seen = (EntityKind, String);

impl Entities {
    /// The entities named by one event.
    pub fn of(event: &SecurityEvent) -> Self {
        let mut entities = Self::default();
        for seen in Self::seen(event) {
            entities.add(&seen, usize::MAX);
        }
        entities
    }

    /// The entities of one event as a short list (what a window keeps per match).
    pub fn seen(event: &SecurityEvent) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut push = |kind: EntityKind, field: Field| {
            if let Some(value) = field.get(event) {
                seen.push((kind, value.to_text().into_owned()));
            }
        };
        push(EntityKind::SourceIp, Field::SourceIp);
        push(EntityKind::Ip, Field::DestinationIp);
        push(EntityKind::User, Field::UserName);
        push(EntityKind::User, Field::UserTargetName);
        push(EntityKind::Host, Field::HostName);
        if let Some(threat) = &event.threat
            && threat.indicator_type.ends_with("-addr")
            && threat.matched_value.parse::<std::net::IpAddr>().is_ok()
        {
            seen.push((EntityKind::ThreatIp, threat.matched_value.clone()));
        }
        seen
    }

    /// Adds one remembered value, keeping at most `cap` of its kind.
    pub fn add(&mut self, (kind, value): &Seen, cap: usize) {
        match kind {
            EntityKind::SourceIp => {
                insert_capped(&mut self.source_ips, value, cap, &mut self.omitted);
                insert_capped(&mut self.ips, value, cap, &mut self.omitted);
            }
            EntityKind::Ip => insert_capped(&mut self.ips, value, cap, &mut self.omitted),
            EntityKind::User => insert_capped(&mut self.users, value, cap, &mut self.omitted),
            EntityKind::Host => insert_capped(&mut self.hosts, value, cap, &mut self.omitted),
            EntityKind::ThreatIp => insert_capped(&mut self.threat_ips, value, cap, &mut self.omitted),
        }
    }

    /// Adds `other`'s entities, keeping at most `cap` of each kind and counting the rest
    /// in `omitted`.
    pub fn merge(&mut self, other: &Entities, cap: usize) {
        let mut omitted = other.omitted;
        for (mine, theirs) in [
            (&mut self.ips, &other.ips),
            (&mut self.source_ips, &other.source_ips),
            (&mut self.users, &other.users),
            (&mut self.hosts, &other.hosts),
            (&mut self.threat_ips, &other.threat_ips),
        ] {
            for value in theirs {
                insert_capped(mine, value, cap, &mut omitted);
            }
        }
        self.omitted = self.omitted.saturating_add(omitted);
    }
}

fn insert_capped(set: &mut BTreeSet<String>, value: &str, cap: usize, omitted: &mut u64) {
    if set.contains(value) {
        return;
    }
    if set.len() >= cap {
        *omitted = omitted.saturating_add(1);
    } else {
        set.insert(value.to_owned());
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
    /// The rule's incident family (`RULE.family`): alerts of a family with one dedup key
    /// join one incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
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
    /// Entities of every event of the match (windows remember them per match), plus the
    /// group values; at most 100 of each kind.
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
    /// The rule's author (Sigma's licence asks for the credit to travel with the alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The rule's suppression window in milliseconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_ms: Option<u64>,
    /// Channels the rule asks to notify (its `notify` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}
