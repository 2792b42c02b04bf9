//! Evaluation: runs a [`RuleSet`] over events, keeps the windows of windowed rules, and
//! produces [`Alert`]s.
//!
//! Windows are keyed by (rule, group key) and driven by *event time*, so replaying stored
//! events gives the alerts the live run gave. Their state is written to the store with the
//! detection cursor (see `incident::worker`), so a restart resumes mid-window.
//!
//! Layer 4: uses `event`, `store`, `telemetry`, `rules`.

mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

use crate::event::{AlertId, EventId, Field, RuleId, SecurityEvent, Severity};
use crate::rules::{EventRef, RuleSet, WindowSpec};
use crate::store::{self, Cf, Op, Store};
use crate::telemetry::{MetricsRegistry, Throttle, names};

pub use window::ThresholdWindow;

const STATE_PREFIX: &[u8] = b"win/";
/// Most event ids an alert carries.
pub const MAX_ALERT_EVENT_IDS: usize = 100;

/// The entities an alert or incident concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entities {
    /// IP addresses (source and destination).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ips: BTreeSet<String>,
    /// User names (actors and targets).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub users: BTreeSet<String>,
    /// Host names.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub hosts: BTreeSet<String>,
}

impl Entities {
    /// The entities named by one event.
    pub fn of(event: &SecurityEvent) -> Self {
        let mut entities = Self::default();
        let text = |field: Field| field.get(event).map(|v| v.to_text().into_owned());
        entities.ips.extend(text(Field::SourceIp));
        entities.ips.extend(text(Field::DestinationIp));
        entities.users.extend(text(Field::UserName));
        entities.users.extend(text(Field::UserTargetName));
        entities.hosts.extend(text(Field::HostName));
        entities
    }

    /// Adds `other`'s entities, keeping at most `cap` of each kind.
    pub fn merge(&mut self, other: &Entities, cap: usize) {
        for (mine, theirs) in
            [(&mut self.ips, &other.ips), (&mut self.users, &other.users), (&mut self.hosts, &other.hosts)]
        {
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
    /// The rule's severity.
    pub severity: Severity,
    /// Event time of the event that completed the match.
    pub time: DateTime<Utc>,
    /// Event time of the earliest event in the match.
    pub first_time: DateTime<Utc>,
    /// The group-by fields and their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, String>,
    /// The group values joined, the key of windows and incidents.
    pub group_key: String,
    /// Matching events in the window (1 for rules without a window).
    pub count: u64,
    /// Ids of the matching events (at most 100).
    pub event_ids: Vec<EventId>,
    /// Entities of the events.
    pub entities: Entities,
    /// The rule's tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleErrorLabels {
    rule: String,
    reason: String,
}

/// Detection metrics, registered once and shared by every detector.
#[derive(Clone, Debug, Default)]
pub struct DetectMetrics {
    evaluations: Family<RuleLabels, Counter>,
    errors: Family<RuleErrorLabels, Counter>,
    alerts: Family<RuleLabels, Counter>,
}

impl DetectMetrics {
    /// Registers the detection metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        registry.register(names::RULE_EVALUATIONS, "Rule evaluations, by rule.", m.evaluations.clone());
        registry.register(names::RULE_ERRORS, "Rule evaluation errors, by rule and reason.", m.errors.clone());
        registry.register(names::ALERTS, "Alerts raised, by rule.", m.alerts.clone());
        m
    }
}

/// Per-rule handles, resolved once so the hot path does not build label sets.
#[derive(Debug)]
struct RuleRuntime {
    evaluations: Counter,
    alerts: Counter,
    throttle: Throttle,
}

/// Runs rules over events and keeps their windows.
#[derive(Debug)]
pub struct Detector {
    rules: RuleSet,
    runtime: Vec<RuleRuntime>,
    metrics: DetectMetrics,
    windows: HashMap<(usize, String), ThresholdWindow>,
    dirty: HashSet<(usize, String)>,
    newest_event_ms: i64,
    since_sweep: u64,
}

impl Detector {
    /// A detector for `rules` with empty windows.
    pub fn new(rules: RuleSet, metrics: DetectMetrics) -> Self {
        let runtime = rules
            .rules()
            .iter()
            .map(|r| {
                let rule = RuleLabels { rule: r.meta.id.to_string() };
                RuleRuntime {
                    evaluations: metrics.evaluations.get_or_create(&rule).clone(),
                    alerts: metrics.alerts.get_or_create(&rule).clone(),
                    throttle: Throttle::new(Duration::from_secs(60)),
                }
            })
            .collect();
        Self {
            rules,
            runtime,
            metrics,
            windows: HashMap::new(),
            dirty: HashSet::new(),
            newest_event_ms: i64::MIN,
            since_sweep: 0,
        }
    }

    /// Restores the windows saved in `store` for the rules of this set.
    pub fn load_state(&mut self, store: &Store) -> store::Result<usize> {
        let mut start = STATE_PREFIX.to_vec();
        let mut loaded = 0;
        loop {
            let rows = store.scan(Cf::State, STATE_PREFIX, &start, 1024)?;
            let Some((last, _)) = rows.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, value) in &rows {
                let Some((rule_id, group)) = split_state_key(key) else { continue };
                let Some(index) = self.rules.rules().iter().position(|r| r.meta.id.as_str() == rule_id) else {
                    continue;
                };
                match serde_json::from_slice::<ThresholdWindow>(value) {
                    Ok(window) => {
                        self.newest_event_ms = self.newest_event_ms.max(window.newest_ms().unwrap_or(i64::MIN));
                        self.windows.insert((index, group), window);
                        loaded += 1;
                    }
                    Err(e) => {
                        tracing::warn!(rule = rule_id, error = %e, "Saved window does not decode; starting it empty.")
                    }
                }
            }
            if rows.len() < 1024 {
                break;
            }
        }
        Ok(loaded)
    }

    /// The rule set in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Evaluates every enabled rule on `event`; appends the alerts raised to `out`.
    pub fn process(&mut self, event: &Arc<SecurityEvent>, out: &mut Vec<Alert>) {
        let event_ref = EventRef(event.clone());
        let time_ms = event.time.timestamp_millis();
        self.newest_event_ms = self.newest_event_ms.max(time_ms);
        for index in 0..self.rules.rules().len() {
            let rule = self.rules.rules()[index].clone();
            if !rule.meta.enabled {
                continue;
            }
            self.runtime[index].evaluations.inc();
            match self.rules.evaluate(index, &event_ref) {
                Ok(false) => {}
                Ok(true) => {
                    if let Some(alert) = self.matched(index, event) {
                        self.runtime[index].alerts.inc();
                        out.push(alert);
                    }
                }
                Err(e) => {
                    let labels = RuleErrorLabels { rule: rule.meta.id.to_string(), reason: e.reason().into() };
                    self.metrics.errors.get_or_create(&labels).inc();
                    if let Some(suppressed) = self.runtime[index].throttle.allow() {
                        tracing::warn!(rule = %rule.meta.id, event = %event.id, error = %e, suppressed, "Rule evaluation failed.");
                    }
                }
            }
        }
        self.since_sweep += 1;
        if self.since_sweep >= 10_000 {
            self.sweep();
        }
    }

    fn matched(&mut self, index: usize, event: &SecurityEvent) -> Option<Alert> {
        let rule = self.rules.rules()[index].clone();
        let mut group = BTreeMap::new();
        for path in &rule.meta.group_by {
            match path.get(event) {
                Some(value) => {
                    group.insert(path.to_string(), value.to_text().into_owned());
                }
                // A windowed rule cannot count an event it cannot key.
                None if rule.meta.window.is_some() => return None,
                None => {}
            }
        }
        let group_key = group.values().cloned().collect::<Vec<_>>().join("|");
        let (count, event_ids, first_time) = match &rule.meta.window {
            None => (1, vec![event.id], event.time),
            Some(WindowSpec::Threshold { count, within }) => {
                let key = (index, group_key.clone());
                let window = self.windows.entry(key.clone()).or_default();
                self.dirty.insert(key);
                let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
                let fired = window.add(event.time.timestamp_millis(), event.id, *count as usize, within_ms)?;
                let first = DateTime::from_timestamp_millis(fired.first_ms).unwrap_or(event.time);
                (fired.ids.len() as u64, fired.ids.into_iter().take(MAX_ALERT_EVENT_IDS).collect(), first)
            }
        };
        Some(Alert {
            id: AlertId::generate(),
            rule_id: rule.meta.id.clone(),
            title: rule.meta.title.clone(),
            severity: rule.meta.severity,
            time: event.time,
            first_time,
            group,
            group_key,
            count,
            event_ids,
            entities: Entities::of(event),
            tags: rule.meta.tags.clone(),
        })
    }

    /// Drops windows whose newest event is older than their length behind the newest event
    /// seen: they can no longer fire.
    fn sweep(&mut self) {
        self.since_sweep = 0;
        let newest = self.newest_event_ms;
        let rules = self.rules.rules();
        let stale: Vec<(usize, String)> = self
            .windows
            .iter()
            .filter(|((index, _), window)| match &rules[*index].meta.window {
                Some(WindowSpec::Threshold { within, .. }) => {
                    let within_ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
                    window.newest_ms().is_none_or(|t| t < newest.saturating_sub(within_ms))
                }
                None => true,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.windows.remove(&key);
            self.dirty.insert(key);
        }
    }

    /// The store writes that persist every window changed since the last call.
    pub fn checkpoint_ops(&mut self) -> Vec<Op> {
        let mut ops = Vec::with_capacity(self.dirty.len());
        for key in self.dirty.drain() {
            let store_key = state_key(self.rules.rules()[key.0].meta.id.as_str(), &key.1);
            match self.windows.get(&key) {
                Some(window) if !window.is_empty() => {
                    // Windows are plain data: encoding cannot fail.
                    let value = serde_json::to_vec(window).expect("window serializes");
                    ops.push(Op::Put { cf: Cf::State, key: store_key, value });
                }
                _ => {
                    self.windows.remove(&key);
                    ops.push(Op::Delete { cf: Cf::State, key: store_key });
                }
            }
        }
        ops
    }

    /// Number of open windows.
    pub fn window_count(&self) -> usize {
        self.windows.len()
    }
}

fn state_key(rule: &str, group: &str) -> Vec<u8> {
    let mut key = STATE_PREFIX.to_vec();
    key.extend_from_slice(rule.as_bytes());
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key
}

fn split_state_key(key: &[u8]) -> Option<(&str, String)> {
    let rest = key.strip_prefix(STATE_PREFIX)?;
    let split = rest.iter().position(|&b| b == 0)?;
    let rule = std::str::from_utf8(&rest[..split]).ok()?;
    let group = String::from_utf8(rest[split + 1..].to_vec()).ok()?;
    Some((rule, group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Endpoint, EventClass, Outcome};
    use crate::rules::SandboxLimits;
    use std::path::PathBuf;

    const RULE: &str = r#"
        const RULE = #{
            id: "brute",
            title: "Brute force",
            severity: "high",
            group_by: ["source.ip"],
            window: #{ type: "threshold", count: 3, within: "1m" },
        };
        fn condition(event) { event.outcome == "failure" }
    "#;

    fn detector() -> Detector {
        let rules =
            RuleSet::compile(vec![(PathBuf::from("b.rhai"), RULE.into())], &SandboxLimits::default()).expect("rules");
        Detector::new(rules, DetectMetrics::default())
    }

    fn failure(ip: &str, secs: i64) -> Arc<SecurityEvent> {
        let t = DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time");
        let mut e = SecurityEvent::new(EventClass::Authentication, t);
        e.outcome = Outcome::Failure;
        e.source = Some(Endpoint { ip: Some(ip.parse().expect("ip")), ..Default::default() });
        Arc::new(e)
    }

    fn run(d: &mut Detector, events: &[Arc<SecurityEvent>]) -> Vec<Alert> {
        let mut out = Vec::new();
        for e in events {
            d.process(e, &mut out);
        }
        out
    }

    #[test]
    fn threshold_fires_per_group_within_the_window() {
        let mut d = detector();
        let events = [failure("1.1.1.1", 0), failure("2.2.2.2", 1), failure("1.1.1.1", 10), failure("1.1.1.1", 20)];
        let alerts = run(&mut d, &events);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!((a.group_key.as_str(), a.count), ("1.1.1.1", 3));
        assert_eq!(a.group.get("source.ip").map(String::as_str), Some("1.1.1.1"));
        assert_eq!(a.event_ids, vec![events[0].id, events[2].id, events[3].id]);
        assert_eq!(a.first_time, events[0].time);
        assert!(a.entities.ips.contains("1.1.1.1"));
    }

    #[test]
    fn events_spread_wider_than_the_window_do_not_fire() {
        let mut d = detector();
        let alerts = run(&mut d, &[failure("1.1.1.1", 0), failure("1.1.1.1", 40), failure("1.1.1.1", 80)]);
        assert!(alerts.is_empty());
    }

    #[test]
    fn out_of_order_events_count_by_event_time() {
        let mut d = detector();
        let alerts = run(&mut d, &[failure("1.1.1.1", 50), failure("1.1.1.1", 10), failure("1.1.1.1", 30)]);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].first_time.timestamp(), 1_700_000_010);
    }

    #[test]
    fn window_state_survives_a_checkpoint_and_reload() {
        let (_dir, store) = crate::store::testing::temp_store();
        let mut d = detector();
        assert!(run(&mut d, &[failure("1.1.1.1", 0), failure("1.1.1.1", 1)]).is_empty());
        store.write(d.checkpoint_ops(), true).expect("persist");
        let mut restarted = detector();
        assert_eq!(restarted.load_state(&store).expect("load"), 1);
        let alerts = run(&mut restarted, &[failure("1.1.1.1", 2)]);
        assert_eq!(alerts.len(), 1);
        // The fired window is empty again and is deleted from the store.
        store.write(restarted.checkpoint_ops(), true).expect("persist");
        let mut again = detector();
        assert_eq!(again.load_state(&store).expect("load"), 0);
    }
}
