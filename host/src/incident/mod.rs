//! Alerts → incidents: one open incident per dedup key (rule id + group key), updated by
//! every further alert for that key, stored in RocksDB.
//!
//! [`worker::DetectionWorker`] is the stage that runs detection over the log and commits
//! alerts, incident changes, window state and its cursor in one atomic write.
//!
//! Layer 5: uses `event`, `store`, `telemetry`, `rules`, `detect`.

pub mod worker;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::detect::{Alert, Entities};
use crate::event::{AlertId, EventId, IncidentId, RuleId, Severity};
use crate::store::{self, Cf, Op, Store, Table};

/// Most event ids an incident keeps.
pub const MAX_INCIDENT_EVENT_IDS: usize = 1000;
/// Most entities of each kind an incident keeps.
pub const MAX_ENTITIES: usize = 100;

/// Where an incident is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Opened by detection, not yet handled.
    Detected,
}

/// An incident: what a responder works on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Incident id.
    pub id: IncidentId,
    /// The rule whose alerts it gathers.
    pub rule_id: RuleId,
    /// Title (the rule's title).
    pub title: String,
    /// Severity (the highest of its alerts).
    pub severity: Severity,
    /// Lifecycle state.
    pub status: IncidentStatus,
    /// Rule id and group key: alerts with the same key join this incident.
    pub dedup_key: String,
    /// When it was opened (wall clock).
    pub opened_at: DateTime<Utc>,
    /// When it last changed (wall clock).
    pub updated_at: DateTime<Utc>,
    /// Event time of the earliest triggering event.
    pub first_seen: DateTime<Utc>,
    /// Event time of the latest triggering event.
    pub last_seen: DateTime<Utc>,
    /// Alerts gathered.
    pub alert_count: u64,
    /// Events behind those alerts.
    pub event_count: u64,
    /// Ids of triggering events (at most 1,000).
    pub event_ids: Vec<EventId>,
    /// Entities involved.
    pub entities: Entities,
    /// Tags of the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What happened to an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new incident.
    Opened,
    /// A further alert joined it.
    Updated,
}

/// An incident after a change, as written to the log for sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentChange {
    /// What changed.
    pub change: ChangeKind,
    /// The alert that caused the change.
    pub alert_id: AlertId,
    /// The incident after the change.
    pub incident: Incident,
}

/// The incident store plus an index of open incidents by dedup key.
#[derive(Debug)]
pub struct IncidentBook {
    incidents: Table<[u8; 16], Incident>,
    open_by_key: Table<String, IncidentId>,
    /// Open incidents touched recently, by dedup key.
    cache: HashMap<String, Incident>,
    /// Incidents changed since the last `take_ops`.
    changed: HashMap<String, Incident>,
}

/// The incidents table of a store (for listing).
pub fn incidents_table(store: &Store) -> Table<[u8; 16], Incident> {
    Table::new(store, Cf::Incidents, b"")
}

impl IncidentBook {
    /// The book of `store`.
    pub fn new(store: &Store) -> Self {
        Self {
            incidents: incidents_table(store),
            open_by_key: Table::new(store, Cf::State, b"incident-key/"),
            cache: HashMap::new(),
            changed: HashMap::new(),
        }
    }

    /// Opens or updates the incident for `alert`'s dedup key.
    pub fn apply(&mut self, alert: &Alert, now: DateTime<Utc>) -> store::Result<IncidentChange> {
        let key = format!("{}:{}", alert.rule_id, alert.group_key);
        let existing = match self.cache.get(&key) {
            Some(incident) => Some(incident.clone()),
            None => match self.open_by_key.get(&key)? {
                Some(id) => self.incidents.get(id.as_bytes())?,
                None => None,
            },
        };
        let (change, incident) = match existing {
            Some(mut incident) => {
                incident.updated_at = now;
                incident.severity = incident.severity.max(alert.severity);
                incident.first_seen = incident.first_seen.min(alert.first_time);
                incident.last_seen = incident.last_seen.max(alert.time);
                incident.alert_count += 1;
                incident.event_count += alert.count;
                let room = MAX_INCIDENT_EVENT_IDS.saturating_sub(incident.event_ids.len());
                incident.event_ids.extend(alert.event_ids.iter().take(room));
                incident.entities.merge(&alert.entities, MAX_ENTITIES);
                (ChangeKind::Updated, incident)
            }
            None => {
                let mut entities = Entities::default();
                entities.merge(&alert.entities, MAX_ENTITIES);
                let incident = Incident {
                    id: IncidentId::generate(),
                    rule_id: alert.rule_id.clone(),
                    title: alert.title.clone(),
                    severity: alert.severity,
                    status: IncidentStatus::Detected,
                    dedup_key: key.clone(),
                    opened_at: now,
                    updated_at: now,
                    first_seen: alert.first_time,
                    last_seen: alert.time,
                    alert_count: 1,
                    event_count: alert.count,
                    event_ids: alert.event_ids.iter().take(MAX_INCIDENT_EVENT_IDS).copied().collect(),
                    entities,
                    tags: alert.tags.clone(),
                };
                (ChangeKind::Opened, incident)
            }
        };
        if self.cache.len() > 10_000 {
            self.cache.clear();
        }
        self.cache.insert(key.clone(), incident.clone());
        self.changed.insert(key, incident.clone());
        Ok(IncidentChange { change, alert_id: alert.id, incident })
    }

    /// The store writes for every incident changed since the last call.
    pub fn take_ops(&mut self) -> store::Result<Vec<Op>> {
        let mut ops = Vec::with_capacity(self.changed.len() * 2);
        for (key, incident) in self.changed.drain() {
            ops.push(self.incidents.put_op(incident.id.as_bytes(), &incident)?);
            ops.push(self.open_by_key.put_op(&key, &incident.id)?);
        }
        Ok(ops)
    }

    /// Forgets unsaved changes and cached incidents (after a failed commit).
    pub fn discard(&mut self) {
        self.changed.clear();
        self.cache.clear();
    }
}

/// Up to `limit` incidents, newest first.
pub fn list(store: &Store, limit: usize) -> store::Result<Vec<Incident>> {
    // Ids are UUIDv7: key order is creation order.
    let mut all = incidents_table(store).scan(None, usize::MAX)?;
    all.reverse();
    Ok(all.into_iter().take(limit).map(|(_, i)| i).collect())
}

/// One incident by id.
pub fn get(store: &Store, id: IncidentId) -> store::Result<Option<Incident>> {
    incidents_table(store).get(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn alert(group: &str, count: u64) -> Alert {
        let mut entities = Entities::default();
        entities.ips.insert(group.to_owned());
        Alert {
            id: AlertId::generate(),
            rule_id: RuleId::from("brute"),
            title: "Brute force".into(),
            severity: Severity::High,
            time: Utc::now(),
            first_time: Utc::now(),
            group: BTreeMap::from([("source.ip".to_owned(), group.to_owned())]),
            group_key: group.into(),
            count,
            event_ids: (0..count).map(|_| EventId::generate()).collect(),
            entities,
            tags: vec![],
        }
    }

    #[test]
    fn alerts_with_the_same_key_update_one_incident() {
        let (_dir, store) = crate::store::testing::temp_store();
        let mut book = IncidentBook::new(&store);
        let first = book.apply(&alert("1.1.1.1", 3), Utc::now()).expect("apply");
        let second = book.apply(&alert("1.1.1.1", 3), Utc::now()).expect("apply");
        let other = book.apply(&alert("2.2.2.2", 3), Utc::now()).expect("apply");
        assert_eq!(
            (first.change, second.change, other.change),
            (ChangeKind::Opened, ChangeKind::Updated, ChangeKind::Opened)
        );
        assert_eq!(first.incident.id, second.incident.id);
        assert_ne!(first.incident.id, other.incident.id);
        assert_eq!((second.incident.alert_count, second.incident.event_count), (2, 6));
        store.write(book.take_ops().expect("ops"), true).expect("write");
        // A new book (after a restart) finds the open incident through the store.
        let mut book = IncidentBook::new(&store);
        let third = book.apply(&alert("1.1.1.1", 1), Utc::now()).expect("apply");
        assert_eq!((third.change, third.incident.id), (ChangeKind::Updated, first.incident.id));
        store.write(book.take_ops().expect("ops"), true).expect("write");
        let listed = list(&store, 10).expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(get(&store, first.incident.id).expect("get").map(|i| i.alert_count), Some(3));
    }
}
