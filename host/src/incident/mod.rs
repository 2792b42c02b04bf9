//! Alerts → incidents: dedup by key, suppression, the lifecycle state machine, P0–P4
//! classification, and the timeline.
//!
//! Alerts with the same dedup key (the rule's incident family, or else its id, + the rule's
//! `dedup` template or its group-by values) join the key's incident while it is open: one
//! incident per attacker across the rules of a family, listing every rule that
//! contributed. A resolved or closed incident still
//! absorbs repeats within the rule's `suppress` window (counted, not reopened); after that,
//! a new incident opens. [`IncidentBook`] is the single owner of incident state: the
//! detection worker applies alerts and operator transitions to it in one place.
//!
//! Layer 5: uses `event`, `store`, `telemetry`, `rules`, `detect`.

pub mod backtest;
pub mod claims;
pub mod escalation;
mod lifecycle;
pub mod priority;
pub mod score;
pub mod worker;

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub use lifecycle::{IncidentStatus, TransitionError};
pub use priority::{Policy, PriorityConfig};

use crate::detect::{Alert, Entities};
use crate::event::{AlertId, EventId, IncidentId, Priority, RuleId};
use crate::rules::Category;
use crate::store::{self, Cf, Op, Store, Table};

/// The latest incident of a dedup key: its id, whether it is open, and until when new
/// alerts for it are suppressed.
type Latest = (IncidentId, bool, Option<DateTime<Utc>>);

/// Most event ids an incident keeps.
pub const MAX_INCIDENT_EVENT_IDS: usize = 1000;
/// Most entities of each kind an incident keeps.
pub const MAX_ENTITIES: usize = 100;
/// Most timeline entries recording individual alerts (status changes are always kept).
pub const MAX_ALERT_ENTRIES: usize = 200;

/// Errors of the incident stage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// No incident has that id.
    #[error("no incident {0}")]
    NotFound(IncidentId),
    /// The transition is not allowed from the current status.
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Result of incident operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One line of an incident's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TimelineEntry {
    /// When it happened (wall clock).
    pub time: DateTime<Utc>,
    /// What happened: `opened`, `alert`, `suppressed`, `status`, `note`, `assigned`.
    pub kind: String,
    /// Who did it, for operator actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Details.
    pub detail: String,
}

/// An incident: what a responder works on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Incident {
    /// Incident id.
    pub id: IncidentId,
    /// The rule whose alert opened it.
    pub rule_id: RuleId,
    /// The incident family of its rules (`RULE.family`), when they declare one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Every rule whose alerts it gathers, in the order they first contributed.
    #[serde(default)]
    pub rules: Vec<RuleId>,
    /// Title: the title of its most urgent rule.
    pub title: String,
    /// Priority after classification.
    pub priority: Priority,
    /// The rule's category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    /// Lifecycle state.
    pub status: IncidentStatus,
    /// Alerts with this key join the incident.
    pub dedup_key: String,
    /// Who works on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// When it was opened (wall clock).
    pub opened_at: DateTime<Utc>,
    /// When it last changed (wall clock).
    pub updated_at: DateTime<Utc>,
    /// When it was resolved (wall clock), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Event time of the earliest triggering event.
    pub first_seen: DateTime<Utc>,
    /// Event time of the latest triggering event.
    pub last_seen: DateTime<Utc>,
    /// Until when (event time) repeats are absorbed even after it is resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_until: Option<DateTime<Utc>>,
    /// Alerts gathered.
    pub alert_count: u64,
    /// Alerts absorbed by suppression after it was resolved.
    #[serde(default)]
    pub suppressed_count: u64,
    /// Events behind those alerts.
    pub event_count: u64,
    /// Users affected, when the events said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affected_users: Option<u64>,
    /// Ids of triggering events (at most 1,000).
    pub event_ids: Vec<EventId>,
    /// Entities involved.
    pub entities: Entities,
    /// ATT&CK techniques of the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<String>,
    /// Tags of the rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Authors of the contributing rules (Sigma's licence asks for the credit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authors: Vec<String>,
    /// Channels the rule asked to notify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// Escalations so far (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub escalation: u8,
    /// History.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl Incident {
    /// The incident without its timeline and with at most 20 event ids: what change records
    /// in the log carry (the full incident is in the store and the API).
    pub fn summary(&self) -> Incident {
        Incident {
            timeline: Vec::new(),
            event_ids: self.event_ids.iter().take(20).copied().collect(),
            entities: self.entities.clone(),
            ..self.clone_header()
        }
    }

    fn clone_header(&self) -> Incident {
        Incident {
            id: self.id,
            rule_id: self.rule_id.clone(),
            family: self.family.clone(),
            rules: self.rules.clone(),
            title: self.title.clone(),
            priority: self.priority,
            category: self.category,
            status: self.status,
            dedup_key: self.dedup_key.clone(),
            assignee: self.assignee.clone(),
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            resolved_at: self.resolved_at,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            suppress_until: self.suppress_until,
            alert_count: self.alert_count,
            suppressed_count: self.suppressed_count,
            event_count: self.event_count,
            affected_users: self.affected_users,
            event_ids: Vec::new(),
            entities: Entities::default(),
            techniques: self.techniques.clone(),
            tags: self.tags.clone(),
            authors: self.authors.clone(),
            notify: self.notify.clone(),
            escalation: self.escalation,
            timeline: Vec::new(),
        }
    }

    fn note(&mut self, time: DateTime<Utc>, kind: &str, actor: Option<&str>, detail: String) {
        let alerts = self.timeline.iter().filter(|e| e.kind == "alert" || e.kind == "suppressed").count();
        if (kind == "alert" || kind == "suppressed") && alerts >= MAX_ALERT_ENTRIES {
            return;
        }
        self.timeline.push(TimelineEntry { time, kind: kind.into(), actor: actor.map(str::to_owned), detail });
    }
}

/// What happened to an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new incident.
    Opened,
    /// A further alert joined it.
    Updated,
    /// A repeat was absorbed by suppression.
    Suppressed,
    /// Its status changed (or it was assigned or annotated).
    Changed,
    /// Nobody acknowledged it within its response time (or a playbook escalated it):
    /// `incident.escalation` is the new level.
    Escalated,
    /// A playbook asked to notify one channel: the change's `incident.notify` names only
    /// that channel.
    Notified,
}

/// An incident after a change, as written to the log for sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentChange {
    /// What changed.
    pub change: ChangeKind,
    /// The alert that caused the change, for alert-driven changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<AlertId>,
    /// The status before, for status changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<IncidentStatus>,
    /// The incident after the change, summarised (no timeline, at most 20 event ids).
    pub incident: Incident,
}

#[derive(Debug)]
struct Tables {
    incidents: Table<[u8; 16], Incident>,
    by_key: Table<String, IncidentId>,
}

/// The incident store plus an index of each dedup key's latest incident. With no store
/// (backtests) it keeps everything in memory and writes nothing.
#[derive(Debug)]
pub struct IncidentBook {
    tables: Option<Tables>,
    /// Incidents touched recently, by id.
    cache: HashMap<IncidentId, Incident>,
    /// Latest incident per dedup key (cached part of the index).
    keys: HashMap<String, IncidentId>,
    /// Incidents changed since the last `take_ops`, by id.
    changed: HashMap<IncidentId, String>,
    /// What raises priority.
    policy: Policy,
    /// Incidents each rule opened recently (for the noisy-rule report).
    noise: priority::Noise,
}

/// The incidents table of a store (for listing).
pub fn incidents_table(store: &Store) -> Table<[u8; 16], Incident> {
    Table::new(store, Cf::Incidents, b"")
}

impl IncidentBook {
    /// The book of `store`.
    pub fn new(store: &Store) -> Self {
        let mut book = Self::in_memory();
        book.tables =
            Some(Tables { incidents: incidents_table(store), by_key: Table::new(store, Cf::State, b"incident-key/") });
        book
    }

    /// A book that only lives in memory.
    pub fn in_memory() -> Self {
        Self {
            tables: None,
            cache: HashMap::new(),
            keys: HashMap::new(),
            changed: HashMap::new(),
            policy: Policy::default(),
            noise: priority::Noise::default(),
        }
    }

    /// The book with `policy` deciding priorities.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy deciding priorities.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The latest incident for a dedup key, loaded into the cache.
    fn latest_for_key(&mut self, key: &str) -> Result<Option<Latest>> {
        let id = match self.keys.get(key) {
            Some(id) => Some(*id),
            None => match &self.tables {
                Some(t) => t.by_key.get(&key.to_owned())?,
                None => None,
            },
        };
        let Some(id) = id else { return Ok(None) };
        if !self.cache.contains_key(&id)
            && let Some(incident) = self.tables.as_ref().map(|t| t.incidents.get(id.as_bytes())).transpose()?.flatten()
        {
            self.cache.insert(id, incident);
        }
        Ok(self.cache.get(&id).map(|i| (i.id, i.status.is_open(), i.suppress_until)))
    }

    /// An incident by id, from the cache or the store.
    pub fn get(&mut self, id: IncidentId) -> Result<Option<Incident>> {
        if let Some(incident) = self.cache.get(&id) {
            return Ok(Some(incident.clone()));
        }
        let found = match &self.tables {
            Some(t) => t.incidents.get(id.as_bytes())?,
            None => None,
        };
        if let Some(incident) = &found {
            self.cache.insert(id, incident.clone());
        }
        Ok(found)
    }

    /// Whether `alert` would open a new incident (no open incident for its key, and not
    /// absorbed by suppression); with the key it would be opened under.
    pub fn opens(&mut self, alert: &Alert) -> Result<(bool, String)> {
        let key = incident_key(alert);
        let opens = match self.latest_for_key(&key)? {
            Some((_, true, _)) => false,
            Some((_, false, Some(until))) if alert.time < until => false,
            _ => true,
        };
        Ok((opens, key))
    }

    /// Opens, updates or suppresses into the incident for `alert`'s dedup key. An opening
    /// also counts towards its rule's noise: [`IncidentBook::opened_recently`].
    pub fn apply(&mut self, alert: &Alert, now: DateTime<Utc>) -> Result<IncidentChange> {
        let key = incident_key(alert);
        let latest = self.latest_for_key(&key)?;
        let change = match latest {
            Some((_, true, _)) => ChangeKind::Updated,
            Some((_, false, Some(until))) if alert.time < until => ChangeKind::Suppressed,
            _ => ChangeKind::Opened,
        };
        let id = match (change, latest) {
            (ChangeKind::Opened, _) | (_, None) => {
                let incident = self.open(alert, key.clone(), now);
                self.noise.opened(&alert.rule_id, alert.first_time);
                let id = incident.id;
                self.cache.insert(id, incident);
                id
            }
            (_, Some((id, ..))) => {
                if let Some(incident) = self.cache.get_mut(&id) {
                    join(incident, alert, change, &self.policy, now);
                }
                id
            }
        };
        self.keys.insert(key.clone(), id);
        self.remember(id, key);
        let incident = self.cache.get(&id).map(Incident::summary).ok_or(Error::NotFound(id))?;
        Ok(IncidentChange { change, alert_id: Some(alert.id), previous_status: None, incident })
    }

    /// Incidents `rule` opened in the 24 h of event time before its latest.
    pub fn opened_recently(&self, rule: &RuleId) -> usize {
        self.noise.count(rule)
    }

    fn open(&mut self, alert: &Alert, key: String, now: DateTime<Utc>) -> Incident {
        let mut entities = Entities::default();
        entities.merge(&alert.entities, MAX_ENTITIES);
        let affected = alert.affected_users.unwrap_or(0).max(entities.users.len() as u64);
        let (priority, raised_by) = self.policy.classify(alert.priority, alert.category, &entities, affected);
        let suppress_until = alert
            .suppress_ms
            .map(|ms| alert.first_time + Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)));
        let mut incident = Incident {
            id: IncidentId::generate(),
            rule_id: alert.rule_id.clone(),
            family: alert.family.clone(),
            rules: vec![alert.rule_id.clone()],
            title: alert.title.clone(),
            priority,
            category: alert.category,
            status: IncidentStatus::Detected,
            dedup_key: key,
            assignee: None,
            opened_at: now,
            updated_at: now,
            resolved_at: None,
            first_seen: alert.first_time,
            last_seen: alert.time,
            suppress_until,
            alert_count: 1,
            suppressed_count: 0,
            event_count: alert.count,
            affected_users: alert.affected_users,
            event_ids: alert.event_ids.iter().take(MAX_INCIDENT_EVENT_IDS).copied().collect(),
            entities,
            techniques: alert.techniques.clone(),
            tags: alert.tags.clone(),
            authors: alert.author.iter().cloned().collect(),
            notify: alert.notify.clone(),
            escalation: 0,
            timeline: Vec::new(),
        };
        let why = if raised_by.is_empty() {
            String::new()
        } else {
            format!(" (rule says {}, raised by {})", alert.priority, raised_by.join(", "))
        };
        incident.note(
            now,
            "opened",
            None,
            format!("opened at {priority}{why} by alert {} ({} events)", alert.id, alert.count),
        );
        incident
    }

    /// Moves an incident to `to`, recording who and why.
    pub fn transition(
        &mut self,
        id: IncidentId,
        to: IncidentStatus,
        actor: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IncidentChange> {
        let mut incident = self.get(id)?.ok_or(Error::NotFound(id))?;
        let from = incident.status;
        lifecycle::check(from, to)?;
        incident.status = to;
        incident.updated_at = now;
        match to {
            IncidentStatus::Resolved => incident.resolved_at = Some(now),
            open if open.is_open() => incident.resolved_at = None,
            _ => {}
        }
        let detail = match note {
            Some(note) => format!("{} → {}: {note}", from.as_str(), to.as_str()),
            None => format!("{} → {}", from.as_str(), to.as_str()),
        };
        incident.note(now, "status", Some(actor), detail);
        Ok(IncidentChange {
            change: ChangeKind::Changed,
            alert_id: None,
            previous_status: Some(from),
            incident: self.store_back(incident),
        })
    }

    /// Assigns an incident (or clears the assignee with `None`).
    pub fn assign(
        &mut self,
        id: IncidentId,
        assignee: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<IncidentChange> {
        let mut incident = self.get(id)?.ok_or(Error::NotFound(id))?;
        incident.assignee = assignee.map(str::to_owned);
        incident.updated_at = now;
        incident.note(
            now,
            "assigned",
            Some(actor),
            assignee.map_or("unassigned".into(), |a| format!("assigned to {a}")),
        );
        Ok(IncidentChange {
            change: ChangeKind::Changed,
            alert_id: None,
            previous_status: None,
            incident: self.store_back(incident),
        })
    }

    /// Raises an incident's escalation level (`level`, or one more than now with `None`).
    pub fn escalate(
        &mut self,
        id: IncidentId,
        level: Option<u8>,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<IncidentChange> {
        let mut incident = self.get(id)?.ok_or(Error::NotFound(id))?;
        let level = level.unwrap_or(incident.escalation.saturating_add(1));
        incident.escalation = level;
        incident.updated_at = now;
        incident.note(now, "escalated", None, format!("{why}; escalation level {level}"));
        Ok(IncidentChange {
            change: ChangeKind::Escalated,
            alert_id: None,
            previous_status: None,
            incident: self.store_back(incident),
        })
    }

    /// Adds a comment to an incident's timeline.
    pub fn comment(&mut self, id: IncidentId, text: &str, actor: &str, now: DateTime<Utc>) -> Result<IncidentChange> {
        let mut incident = self.get(id)?.ok_or(Error::NotFound(id))?;
        incident.updated_at = now;
        incident.note(now, "note", Some(actor), text.to_owned());
        Ok(IncidentChange {
            change: ChangeKind::Changed,
            alert_id: None,
            previous_status: None,
            incident: self.store_back(incident),
        })
    }

    /// Adds an entry of `kind` (`playbook`, …) to an incident's timeline.
    pub fn record(
        &mut self,
        id: IncidentId,
        kind: &str,
        actor: &str,
        detail: String,
        now: DateTime<Utc>,
    ) -> Result<IncidentChange> {
        let mut incident = self.get(id)?.ok_or(Error::NotFound(id))?;
        incident.updated_at = now;
        incident.note(now, kind, Some(actor), detail);
        Ok(IncidentChange {
            change: ChangeKind::Changed,
            alert_id: None,
            previous_status: None,
            incident: self.store_back(incident),
        })
    }

    /// Asks the channel `channel` to notify about an incident (a playbook's `notify` step).
    pub fn notify(
        &mut self,
        id: IncidentId,
        channel: &str,
        actor: &str,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<IncidentChange> {
        let mut incident = self.get(id)?.ok_or(Error::NotFound(id))?;
        incident.updated_at = now;
        let detail = match message {
            Some(m) => format!("notified {channel}: {m}"),
            None => format!("notified {channel}"),
        };
        incident.note(now, "notified", Some(actor), detail);
        let mut summary = self.store_back(incident);
        summary.notify = vec![channel.to_owned()];
        Ok(IncidentChange { change: ChangeKind::Notified, alert_id: None, previous_status: None, incident: summary })
    }

    /// Puts a changed incident back and returns its summary for the change record.
    fn store_back(&mut self, incident: Incident) -> Incident {
        let (id, key, summary) = (incident.id, incident.dedup_key.clone(), incident.summary());
        self.cache.insert(id, incident);
        self.remember(id, key);
        summary
    }

    /// Marks an incident changed (to be written at the next `take_ops`).
    fn remember(&mut self, id: IncidentId, key: String) {
        self.changed.insert(id, key);
        if self.cache.len() > 10_000 {
            let changed = &self.changed;
            self.cache.retain(|id, _| changed.contains_key(id));
        }
    }

    /// The store writes for every incident changed since the last call.
    pub fn take_ops(&mut self) -> store::Result<Vec<Op>> {
        let Some(tables) = &self.tables else {
            self.changed.clear();
            return Ok(Vec::new());
        };
        let mut ops = Vec::with_capacity(self.changed.len() * 2);
        for (id, key) in self.changed.drain() {
            if let Some(incident) = self.cache.get(&id) {
                ops.push(tables.incidents.put_op(id.as_bytes(), incident)?);
                if self.keys.get(&key) == Some(&id) {
                    ops.push(tables.by_key.put_op(&key, &id)?);
                }
            }
        }
        Ok(ops)
    }

    /// Forgets unsaved changes and cached incidents (after a failed commit).
    pub fn discard(&mut self) {
        self.changed.clear();
        self.cache.clear();
        self.keys.clear();
    }

    /// Every incident this book holds in memory (backtests).
    pub fn cached(&self) -> Vec<Incident> {
        let mut all: Vec<Incident> = self.cache.values().cloned().collect();
        all.sort_by_key(|i| i.id);
        all
    }
}

/// The key alerts share to join one incident: the rule's family (or id) and dedup key.
fn incident_key(alert: &Alert) -> String {
    format!("{}:{}", alert.family.as_deref().unwrap_or(alert.rule_id.as_str()), alert.dedup_key)
}

/// Adds a further alert to an incident (updated while open, absorbed by suppression after).
/// A more urgent rule of the family lends the incident its title; priority is classified
/// again over the entities gathered so far.
fn join(incident: &mut Incident, alert: &Alert, change: ChangeKind, policy: &Policy, now: DateTime<Utc>) {
    if change == ChangeKind::Suppressed {
        incident.suppressed_count += 1;
        incident.note(now, "suppressed", None, format!("alert {} absorbed by suppression", alert.id));
    } else {
        incident.alert_count += 1;
        incident.note(now, "alert", None, format!("alert {} ({} events)", alert.id, alert.count));
    }
    incident.updated_at = now;
    incident.first_seen = incident.first_seen.min(alert.first_time);
    incident.last_seen = incident.last_seen.max(alert.time);
    incident.event_count += alert.count;
    let room = MAX_INCIDENT_EVENT_IDS.saturating_sub(incident.event_ids.len());
    incident.event_ids.extend(alert.event_ids.iter().take(room));
    incident.entities.merge(&alert.entities, MAX_ENTITIES);
    incident.affected_users = incident.affected_users.max(alert.affected_users);
    if let Some(author) = alert.author.as_ref().filter(|a| !incident.authors.contains(a)) {
        incident.authors.push(author.clone());
    }
    if !incident.rules.contains(&alert.rule_id) {
        incident.rules.push(alert.rule_id.clone());
        incident.note(now, "rule", None, format!("rule {} contributed", alert.rule_id));
    }
    let affected = incident.affected_users.unwrap_or(0).max(incident.entities.users.len() as u64);
    let category = alert.category.or(incident.category);
    let (classified, why) = policy.classify(alert.priority, category, &incident.entities, affected);
    // A rule more urgent than the incident so far names it; context alone does not.
    if alert.priority < incident.priority {
        incident.title = alert.title.clone();
    }
    if classified < incident.priority {
        let by = if why.is_empty() { format!("rule {}", alert.rule_id) } else { why.join(", ") };
        incident.note(
            now,
            "status",
            None,
            format!("priority raised from {} to {classified} by {by}", incident.priority),
        );
        incident.priority = classified;
    }
}

/// Up to `limit` incidents, newest first, optionally only those with `status`.
pub fn list(store: &Store, limit: usize, status: Option<IncidentStatus>) -> store::Result<Vec<Incident>> {
    page(store, limit, None, |i| status.is_none_or(|s| i.status == s))
}

/// Up to `limit` incidents older than `before` (or the newest), newest first, that `keep`
/// accepts. Ids are UUIDv7: key order is creation order, so this reads only as far back as
/// it must.
pub fn page(
    store: &Store,
    limit: usize,
    before: Option<IncidentId>,
    keep: impl Fn(&Incident) -> bool,
) -> store::Result<Vec<Incident>> {
    let table = incidents_table(store);
    let mut out = Vec::new();
    let mut end = before.map(|id| *id.as_bytes());
    while out.len() < limit {
        let chunk = table.scan_rev(end.as_ref(), 256)?;
        let Some((last, _)) = chunk.last() else { break };
        end = Some(*last);
        let done = chunk.len() < 256;
        out.extend(chunk.into_iter().map(|(_, i)| i).filter(|i| keep(i)).take(limit - out.len()));
        if done {
            break;
        }
    }
    Ok(out)
}

/// One incident by id.
pub fn get(store: &Store, id: IncidentId) -> store::Result<Option<Incident>> {
    incidents_table(store).get(id.as_bytes())
}

#[cfg(test)]
mod tests;
