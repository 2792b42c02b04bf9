//! Evaluation: runs a [`RuleSet`] over events, keeps the windows of windowed rules, and
//! produces [`Alert`]s.
//!
//! Windows are keyed by (rule, group key) and driven by *event time* with a bounded
//! allowed lateness: the watermark is the newest event time seen minus the lateness; a
//! windowed rule ignores (and counts) events older than it, and absence windows fire when
//! the watermark passes their deadline. Replaying stored events in log order therefore gives
//! exactly the alerts the live run gave. Window state is written with the detection cursor
//! (see `incident::worker`), so a restart resumes mid-window. Memory per rule is bounded:
//! at most `max_groups_per_rule` groups (the stalest are evicted, counted) and
//! [`window::MAX_ENTRIES`] entries per group.
//!
//! Layer 4 (above `rules`): uses `event`, `store`, `telemetry`, `rules`.

mod alert;
pub mod examples;
mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

pub use alert::{Alert, Entities, EntityKind, Seen};
pub use window::{Entry, Fired, MAX_ENTRIES, Window};

use crate::event::{AlertId, FieldPath, Priority, RuleId, SecurityEvent};
use crate::rules::{Category, CompiledRule, EventRef, RuleSet, Statistic, WindowSpec, render};
use crate::store::{self, Cf, Op, Store};
use crate::telemetry::{MetricsRegistry, Throttle, names};

const WINDOW_PREFIX: &[u8] = b"win/";
const VERSION_PREFIX: &[u8] = b"winver/";
const NEWEST_KEY: &[u8] = b"detect/newest";
/// Most event ids an alert carries.
pub const MAX_ALERT_EVENT_IDS: usize = 100;
/// The rule id of the alert raised when a failing rule is disabled.
pub const RULE_DISABLED: &str = "vigil_rule_disabled";

/// Detection settings (`[detect]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// How far behind the newest event time an event may arrive and still count in
    /// windows.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub allowed_lateness: Duration,
    /// Most groups (distinct group-by values) a windowed rule keeps; the stalest are evicted.
    pub max_groups_per_rule: usize,
    /// A rule failing this many evaluations in a row is disabled, with an alert.
    pub disable_after_errors: u32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self { allowed_lateness: Duration::from_secs(120), max_groups_per_rule: 100_000, disable_after_errors: 100 }
    }
}

impl DetectConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.max_groups_per_rule < 10 {
            errors.push(("detect.max_groups_per_rule".into(), "must be at least 10".into()));
        }
        if self.disable_after_errors == 0 {
            errors.push(("detect.disable_after_errors".into(), "must be at least 1".into()));
        }
        errors
    }
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
    late: Family<RuleLabels, Counter>,
    evicted: Family<RuleLabels, Counter>,
    disabled: Family<RuleLabels, Counter>,
}

impl DetectMetrics {
    /// Registers the detection metrics.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        registry.register(names::RULE_EVALUATIONS, "Rule evaluations, by rule.", m.evaluations.clone());
        registry.register(names::RULE_ERRORS, "Rule evaluation errors, by rule and reason.", m.errors.clone());
        registry.register(names::ALERTS, "Alerts raised, by rule.", m.alerts.clone());
        registry.register("detect_late_events", "Events too late for a windowed rule, by rule.", m.late.clone());
        registry.register(
            "detect_evictions",
            "Window groups or entries evicted to bound memory, by rule.",
            m.evicted.clone(),
        );
        registry.register("rules_disabled", "Rules disabled after repeated errors, by rule.", m.disabled.clone());
        m
    }
}

/// How a rule aggregates, with everything precomputed for the hot path.
#[derive(Clone, Debug)]
enum Kind {
    Single,
    Threshold { count: usize, within_ms: i64 },
    Distinct { field: FieldPath, count: usize, within_ms: i64 },
    Sum { field: FieldPath, at_least: u64, within_ms: i64 },
    Statistic { field: FieldPath, statistic: Statistic, at_least: f64, strictly: bool, within_ms: i64 },
    Sequence { steps: Vec<(u32, u32)>, within_ms: i64 },
    AllOf { bits: u32, within_ms: i64 },
    Absence { first_bit: u32, then_bit: u32, within_ms: i64 },
}

impl Kind {
    fn of(rule: &CompiledRule) -> Self {
        let ms = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let bit = |name: &str| rule.matcher_index(name).map_or(0, |i| 1u32 << i);
        match &rule.meta.window {
            None => Self::Single,
            Some(WindowSpec::Threshold { count, within }) => {
                Self::Threshold { count: *count as usize, within_ms: ms(within) }
            }
            Some(WindowSpec::Distinct { field, count, within }) => {
                Self::Distinct { field: field.clone(), count: *count as usize, within_ms: ms(within) }
            }
            Some(WindowSpec::Sum { field, at_least, within }) => {
                Self::Sum { field: field.clone(), at_least: *at_least, within_ms: ms(within) }
            }
            Some(WindowSpec::Statistic { field, statistic, at_least, strictly, within }) => Self::Statistic {
                field: field.clone(),
                statistic: *statistic,
                at_least: *at_least,
                strictly: *strictly,
                within_ms: ms(within),
            },
            Some(WindowSpec::Sequence { steps, within }) => {
                Self::Sequence { steps: steps.iter().map(|s| (bit(&s.when), s.count)).collect(), within_ms: ms(within) }
            }
            Some(WindowSpec::AllOf { steps, within }) => {
                Self::AllOf { bits: steps.iter().fold(0, |all, s| all | bit(&s.when)), within_ms: ms(within) }
            }
            Some(WindowSpec::Absence { first, then, within }) => {
                Self::Absence { first_bit: bit(first), then_bit: bit(then), within_ms: ms(within) }
            }
        }
    }

    fn within_ms(&self) -> i64 {
        match self {
            Self::Single => 0,
            Self::Threshold { within_ms, .. }
            | Self::Distinct { within_ms, .. }
            | Self::Sum { within_ms, .. }
            | Self::Statistic { within_ms, .. }
            | Self::Sequence { within_ms, .. }
            | Self::AllOf { within_ms, .. }
            | Self::Absence { within_ms, .. } => *within_ms,
        }
    }
}

/// The live state of one rule.
#[derive(Debug)]
struct RuleState {
    rule: Arc<CompiledRule>,
    /// Shared so the hot path can hold it while it changes the rule's state.
    kind: Arc<Kind>,
    windows: FxHashMap<String, Window>,
    pending_evaluations: u64,
    evaluations: Counter,
    alerts: Counter,
    late: Counter,
    evicted: Counter,
    error_streak: u32,
    disabled: bool,
    throttle: Throttle,
}

impl RuleState {
    fn new(rule: Arc<CompiledRule>, metrics: &DetectMetrics) -> Self {
        let labels = RuleLabels { rule: rule.meta.id.to_string() };
        Self {
            kind: Arc::new(Kind::of(&rule)),
            windows: FxHashMap::default(),
            pending_evaluations: 0,
            evaluations: metrics.evaluations.get_or_create(&labels).clone(),
            alerts: metrics.alerts.get_or_create(&labels).clone(),
            late: metrics.late.get_or_create(&labels).clone(),
            evicted: metrics.evicted.get_or_create(&labels).clone(),
            error_streak: 0,
            disabled: false,
            throttle: Throttle::new(Duration::from_secs(60)),
            rule,
        }
    }
}

/// The windows changed since the last checkpoint (rule index, group key); `None` when
/// windows are not persisted.
#[derive(Debug)]
struct Changed(Option<FxHashSet<(usize, String)>>);

impl Changed {
    fn mark(&mut self, index: usize, key: &str) {
        if let Some(changed) = &mut self.0 {
            changed.insert((index, key.to_owned()));
        }
    }

    fn take(&mut self) -> FxHashSet<(usize, String)> {
        self.0.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// Runs rules over events and keeps their windows.
#[derive(Debug)]
pub struct Detector {
    rules: RuleSet,
    states: Vec<RuleState>,
    config: DetectConfig,
    metrics: DetectMetrics,
    dirty: Changed,
    /// Absence deadlines: (deadline ms, rule index, group key).
    deadlines: BTreeSet<(i64, usize, String)>,
    newest_ms: i64,
    since_sweep: u64,
    /// The rules the current event is evaluated by (kept to reuse its allocation).
    selected: Vec<usize>,
    /// Sigma correlations of correlations: by inner rule index, the outer rules (index
    /// and matcher bit) each of its alerts is a match of.
    consumers: FxHashMap<usize, Vec<(usize, u32)>>,
}

/// The correlations fed by other rules' alerts (see [`Detector::chain`]).
fn consumers(rules: &RuleSet) -> FxHashMap<usize, Vec<(usize, u32)>> {
    let mut out: FxHashMap<usize, Vec<(usize, u32)>> = FxHashMap::default();
    for (outer, rule) in rules.rules().iter().enumerate() {
        for (inner_id, bit) in rule.sigma.iter().flat_map(|s| s.chained.iter()) {
            if let Some(inner) = rules.rules().iter().position(|r| r.meta.id.as_str() == inner_id) {
                out.entry(inner).or_default().push((outer, *bit));
            }
        }
    }
    out
}

impl Detector {
    /// A detector for `rules` with empty windows.
    pub fn new(rules: RuleSet, config: DetectConfig, metrics: DetectMetrics) -> Self {
        let states = rules.rules().iter().map(|r| RuleState::new(r.clone(), &metrics)).collect();
        Self {
            states,
            config,
            metrics,
            dirty: Changed(Some(FxHashSet::default())),
            deadlines: BTreeSet::new(),
            newest_ms: i64::MIN,
            since_sweep: 0,
            selected: Vec::new(),
            consumers: consumers(&rules),
            rules,
        }
    }

    /// A detector whose windows are never saved (a backtest or a replay): it does not track
    /// which windows changed, so its memory holds only live windows.
    pub fn without_persistence(mut self) -> Self {
        self.dirty = Changed(None);
        self
    }

    /// The rule set in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Open window groups across all rules.
    pub fn window_count(&self) -> usize {
        self.states.iter().map(|s| s.windows.len()).sum()
    }

    fn lateness_ms(&self) -> i64 {
        i64::try_from(self.config.allowed_lateness.as_millis()).unwrap_or(i64::MAX)
    }

    /// Newest event time seen minus the allowed lateness.
    pub fn watermark_ms(&self) -> i64 {
        self.newest_ms.saturating_sub(self.lateness_ms())
    }

    /// Evaluates the enabled rules of the event's class; appends the alerts raised to `out`.
    pub fn process(&mut self, event: &Arc<SecurityEvent>, out: &mut Vec<Alert>) {
        let time_ms = event.time.timestamp_millis();
        let late = time_ms < self.watermark_ms();
        self.newest_ms = self.newest_ms.max(time_ms);
        let event_ref = EventRef(event.clone());
        let rules = self.rules.clone();
        let first_new = out.len();
        let mut selected = std::mem::take(&mut self.selected);
        let lookup = crate::rules::sigma::Lookup::new(event);
        rules.select_in(&lookup, &mut selected);
        for &index in &selected {
            if self.states[index].disabled {
                continue;
            }
            self.states[index].pending_evaluations += 1;
            match rules.evaluate_in(index, &event_ref, &lookup) {
                Ok(mask) => {
                    self.states[index].error_streak = 0;
                    if mask != 0 {
                        self.matched(index, mask, event, late, out);
                    }
                }
                Err(e) => self.failed(index, &e, event, out),
            }
        }
        self.selected = selected;
        if !self.consumers.is_empty() {
            self.chain(first_new, event, late, out);
        }
        self.fire_due_absences(out);
        self.since_sweep += 1;
        if self.since_sweep >= 10_000 {
            self.sweep();
        }
    }

    /// Feeds the alerts from `out[first..]` to the correlations that count them (Sigma's
    /// chained correlations: the event that completed the inner match is the outer's
    /// match), then drops the alerts of inner rules that only feed others.
    fn chain(&mut self, first: usize, event: &SecurityEvent, late: bool, out: &mut Vec<Alert>) {
        let mut next = first;
        while next < out.len() {
            let rule = out[next].rule_id.clone();
            next += 1;
            let Some(inner) = self.states.iter().position(|s| s.rule.meta.id == rule) else { continue };
            for (outer, bit) in self.consumers.get(&inner).cloned().unwrap_or_default() {
                if !self.states[outer].disabled && self.states[outer].rule.runs() {
                    self.matched(outer, bit, event, late, out);
                }
            }
        }
        let feeds_only = |a: &Alert| {
            self.states
                .iter()
                .any(|s| s.rule.meta.id == a.rule_id && s.rule.sigma.as_ref().is_some_and(|g| g.feeds_only))
        };
        let mut i = first;
        while i < out.len() {
            if feeds_only(&out[i]) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Adds a replayed event to the windows of the windowed rules it matches, as if it had
    /// arrived in time, and raises nothing: the instance that consumed it first did. This
    /// is how window state follows a NATS partition to its new owner (see
    /// `source::nats`). An absence whose wait already ended is not started again, and a
    /// rule error here is not counted against the rule (the live run counted it).
    /// Returns the alerts the event would have raised, for the caller to count.
    pub fn warm(&mut self, event: &Arc<SecurityEvent>) -> usize {
        let mut discarded = Vec::new();
        let event_ref = EventRef(event.clone());
        let rules = self.rules.clone();
        let watermark = self.watermark_ms();
        let t = event.time.timestamp_millis();
        let mut selected = std::mem::take(&mut self.selected);
        rules.select(event, &mut selected);
        for &index in &selected {
            let state = &self.states[index];
            let stateless = match *state.kind {
                Kind::Single => true,
                Kind::Absence { within_ms, .. } => t.saturating_add(within_ms) <= watermark,
                _ => false,
            };
            if state.disabled || stateless {
                continue;
            }
            if let Ok(mask) = rules.evaluate(index, &event_ref)
                && mask != 0
            {
                self.matched(index, mask, event, false, &mut discarded);
            }
        }
        self.selected = selected;
        discarded.len()
    }

    fn failed(&mut self, index: usize, error: &crate::rules::EvalError, event: &SecurityEvent, out: &mut Vec<Alert>) {
        let state = &mut self.states[index];
        let rule_id = state.rule.meta.id.to_string();
        self.metrics
            .errors
            .get_or_create(&RuleErrorLabels { rule: rule_id.clone(), reason: error.reason().into() })
            .inc();
        state.error_streak += 1;
        if let Some(suppressed) = state.throttle.allow() {
            tracing::warn!(rule = %rule_id, event = %event.id, error = %error, suppressed, "Rule evaluation failed.");
        }
        if state.error_streak >= self.config.disable_after_errors {
            state.disabled = true;
            self.metrics.disabled.get_or_create(&RuleLabels { rule: rule_id.clone() }).inc();
            tracing::error!(rule = %rule_id, errors = state.error_streak, last_error = %error, "Rule disabled after repeated errors; fix it and reload.");
            let group = BTreeMap::from([("rule".to_owned(), rule_id.clone())]);
            out.push(Alert {
                id: AlertId::generate(),
                rule_id: RuleId::from(RULE_DISABLED),
                title: format!("Rule {rule_id} disabled after {} consecutive errors", state.error_streak),
                family: None,
                priority: Priority::P2,
                category: Some(Category::SystemError),
                time: event.time,
                first_time: event.time,
                group,
                group_key: rule_id.clone(),
                dedup_key: rule_id,
                count: u64::from(state.error_streak),
                event_ids: vec![event.id],
                entities: Entities::default(),
                affected_users: None,
                techniques: Vec::new(),
                tags: vec!["vigil".into()],
                author: None,
                suppress_ms: None,
                notify: Vec::new(),
            });
        }
    }

    fn matched(&mut self, index: usize, mask: u32, event: &SecurityEvent, late: bool, out: &mut Vec<Alert>) {
        let kind = Arc::clone(&self.states[index].kind);
        if let Kind::Single = *kind {
            let rule = &self.states[index].rule;
            let (group, key) =
                (group_of(rule, mask, event).unwrap_or_default(), group_key(rule, mask, event).unwrap_or_default());
            let fired = Fired {
                first_ms: event.time.timestamp_millis(),
                last_ms: event.time.timestamp_millis(),
                ids: vec![event.id],
                entities: Entities::of(event),
            };
            let alert = self.alert(index, &fired, group, key, Some(event));
            out.push(alert);
            return;
        }
        if late {
            self.states[index].late.inc();
            return;
        }
        let Some(key) = group_key(&self.states[index].rule, mask, event) else { return };
        let value = match &*kind {
            Kind::Distinct { field, .. } | Kind::Sum { field, .. } | Kind::Statistic { field, .. } => {
                match field.get(event) {
                    Some(v) => Some(v.to_text().into_owned()),
                    None => return,
                }
            }
            _ => None,
        };
        let t = event.time.timestamp_millis();
        let cutoff = self.watermark_ms().saturating_sub(kind.within_ms());
        self.make_room(index, &key);
        let state = &mut self.states[index];
        if !state.windows.contains_key(&key) {
            state.windows.insert(key.clone(), Window::default());
        }
        let window = state.windows.get_mut(&key).expect("inserted above");
        let fired = match &*kind {
            Kind::Absence { first_bit, then_bit, within_ms } => {
                if mask & then_bit != 0 {
                    window.absence_clear(t, *first_bit, *within_ms);
                }
                if mask & first_bit != 0 {
                    let (_, dropped) =
                        window.insert(Entry { t, id: event.id, bits: mask, value, seen: Entities::seen(event) });
                    state.evicted.inc_by(dropped as u64);
                    self.deadlines.insert((t.saturating_add(*within_ms), index, key.clone()));
                }
                None
            }
            Kind::Distinct { count, within_ms, .. } => {
                // Only the newest match of each value matters for windows that reach the
                // present, so a distinct window holds at most one entry per value (and
                // fewer than `count` values, or it would have fired).
                let value = value.unwrap_or_default();
                match window.position_of_value(&value) {
                    Some(p) if window.entry(p).t >= t => None,
                    existing => {
                        if let Some(p) = existing {
                            window.remove(p);
                        }
                        let (at, dropped) = window.insert(Entry {
                            t,
                            id: event.id,
                            bits: mask,
                            value: Some(value),
                            seen: Entities::seen(event),
                        });
                        state.evicted.inc_by(dropped as u64);
                        let fired = window.distinct(at, *count, *within_ms);
                        window.expire(cutoff);
                        fired
                    }
                }
            }
            _ => {
                let (at, dropped) =
                    window.insert(Entry { t, id: event.id, bits: mask, value, seen: Entities::seen(event) });
                state.evicted.inc_by(dropped as u64);
                let fired = match &*kind {
                    Kind::Threshold { count, within_ms } => window.threshold(at, *count, *within_ms),
                    Kind::Sum { at_least, within_ms, .. } => window.sum(at, *at_least, *within_ms),
                    Kind::Statistic { statistic, at_least, strictly, within_ms, .. } => {
                        window.statistic(at, *statistic, (*at_least, *strictly), *within_ms)
                    }
                    Kind::Sequence { steps, within_ms } => window.sequence(steps, *within_ms),
                    Kind::AllOf { bits, within_ms } => window.all_of(at, *bits, *within_ms),
                    Kind::Single | Kind::Absence { .. } | Kind::Distinct { .. } => None,
                };
                window.expire(cutoff);
                fired
            }
        };
        self.dirty.mark(index, &key);
        if let Some(fired) = fired {
            let group = group_of(&self.states[index].rule, mask, event).unwrap_or_default();
            let alert = self.alert(index, &fired, group, key, Some(event));
            out.push(alert);
        }
    }

    /// Keeps a rule under its group cap before a new group is added: evicts the stalest
    /// tenth of its groups at once, so eviction costs little per event.
    fn make_room(&mut self, index: usize, key: &str) {
        let cap = self.config.max_groups_per_rule;
        let state = &mut self.states[index];
        if state.windows.len() < cap || state.windows.contains_key(key) {
            return;
        }
        let mut by_age: Vec<(i64, String)> =
            state.windows.iter().map(|(k, w)| (w.newest_ms().unwrap_or(i64::MIN), k.clone())).collect();
        let evict = (cap / 10).max(1);
        by_age.select_nth_unstable(evict - 1);
        for (_, k) in by_age.into_iter().take(evict) {
            state.windows.remove(&k);
            self.dirty.mark(index, &k);
        }
        state.evicted.inc_by(evict as u64);
    }

    fn alert(
        &mut self,
        index: usize,
        fired: &Fired,
        group: BTreeMap<String, String>,
        key: String,
        event: Option<&SecurityEvent>,
    ) -> Alert {
        let state = &mut self.states[index];
        state.alerts.inc();
        let meta = &state.rule.meta;
        // Every matched event's entities (a window remembers them per match).
        let mut entities = fired.entities.clone();
        for (field, value) in &group {
            match field.as_str() {
                "source.ip" | "destination.ip" | "host.ip" => entities.ips.insert(value.clone()),
                "user.name" | "user.target.name" => entities.users.insert(value.clone()),
                "host.name" => entities.hosts.insert(value.clone()),
                _ => false,
            };
        }
        let dedup_key = match (&meta.dedup, event) {
            (Some(template), Some(event)) => render(template, event),
            _ => key.clone(),
        };
        let affected_users = event.and_then(|e| e.attributes.get("affected_users")).and_then(serde_json::Value::as_u64);
        let time = DateTime::from_timestamp_millis(fired.last_ms).unwrap_or_default();
        Alert {
            id: AlertId::generate(),
            rule_id: meta.id.clone(),
            title: meta.title.clone(),
            family: meta.family.clone(),
            priority: meta.severity,
            category: meta.category,
            time: event.map_or(time, |e| e.time),
            first_time: DateTime::from_timestamp_millis(fired.first_ms).unwrap_or(time),
            group,
            group_key: key,
            dedup_key,
            count: fired.ids.len() as u64,
            event_ids: fired.ids.iter().take(MAX_ALERT_EVENT_IDS).copied().collect(),
            entities,
            affected_users,
            techniques: meta.mitre.techniques.clone(),
            tags: meta.tags.clone(),
            author: meta.author.clone(),
            suppress_ms: meta.suppress.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            notify: meta.notify.clone(),
        }
    }

    /// Fires absence windows whose wait ended before the watermark.
    fn fire_due_absences(&mut self, out: &mut Vec<Alert>) {
        let watermark = self.watermark_ms();
        while let Some((deadline, index, key)) = self.deadlines.first().cloned() {
            if deadline >= watermark {
                break;
            }
            self.deadlines.pop_first();
            let Kind::Absence { within_ms, .. } = *self.states[index].kind else { continue };
            let mut fired_all = Vec::new();
            if let Some(window) = self.states[index].windows.get_mut(&key) {
                while let Some(fired) = window.absence_due(watermark, within_ms) {
                    fired_all.push(fired);
                }
            }
            if fired_all.is_empty() {
                continue;
            }
            self.dirty.mark(index, &key);
            let group = parse_group(&self.states[index].rule, &key);
            for fired in fired_all {
                let alert = self.alert(index, &fired, group.clone(), key.clone(), None);
                out.push(alert);
            }
        }
    }

    /// Drops windows that can no longer fire, and flushes the evaluation counters.
    fn sweep(&mut self) {
        self.since_sweep = 0;
        let watermark = self.watermark_ms();
        for (index, state) in self.states.iter_mut().enumerate() {
            let cutoff = watermark.saturating_sub(state.kind.within_ms());
            let absence = matches!(*state.kind, Kind::Absence { .. });
            let stale: Vec<String> = state
                .windows
                .iter()
                .filter(|(_, w)| w.is_empty() || (!absence && w.newest_ms().is_some_and(|t| t < cutoff)))
                .map(|(k, _)| k.clone())
                .collect();
            for key in stale {
                state.windows.remove(&key);
                self.dirty.mark(index, &key);
            }
        }
    }

    /// The store writes that persist every window changed since the last call, the rule
    /// versions and the newest event time; flushes metrics.
    pub fn checkpoint_ops(&mut self) -> Vec<Op> {
        let dirty = self.dirty.take();
        let mut ops = Vec::with_capacity(dirty.len() + 1);
        for state in &mut self.states {
            state.evaluations.inc_by(std::mem::take(&mut state.pending_evaluations));
        }
        for (index, key) in dirty {
            let state = &mut self.states[index];
            let store_key = window_key(state.rule.meta.id.as_str(), &key);
            match state.windows.get(&key) {
                Some(window) if !window.is_empty() => {
                    // Windows are plain data: encoding cannot fail.
                    let value = serde_json::to_vec(window).expect("window serializes");
                    ops.push(Op::Put { cf: Cf::State, key: store_key, value });
                }
                _ => {
                    state.windows.remove(&key);
                    ops.push(Op::Delete { cf: Cf::State, key: store_key });
                }
            }
        }
        if self.newest_ms > i64::MIN {
            ops.push(Op::Put {
                cf: Cf::State,
                key: NEWEST_KEY.to_vec(),
                value: self.newest_ms.to_string().into_bytes(),
            });
        }
        for state in &self.states {
            let mut key = VERSION_PREFIX.to_vec();
            key.extend_from_slice(state.rule.meta.id.as_str().as_bytes());
            ops.push(Op::Put { cf: Cf::State, key, value: state.rule.fingerprint.to_string().into_bytes() });
        }
        ops
    }

    /// Restores the windows saved in `store` for rules whose source has not changed since
    /// (windows of changed rules start empty and are deleted at the next checkpoint).
    pub fn load_state(&mut self, store: &Store) -> store::Result<usize> {
        if let Some(newest) = store.get(Cf::State, NEWEST_KEY)? {
            self.newest_ms = std::str::from_utf8(&newest).ok().and_then(|s| s.parse().ok()).unwrap_or(i64::MIN);
        }
        let by_id: HashMap<String, usize> =
            self.states.iter().enumerate().map(|(i, s)| (s.rule.meta.id.to_string(), i)).collect();
        let mut loaded = 0;
        let mut start = WINDOW_PREFIX.to_vec();
        loop {
            let rows = store.scan(Cf::State, WINDOW_PREFIX, &start, 4096)?;
            let Some((last, _)) = rows.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, value) in &rows {
                let Some((rule_id, group)) = split_window_key(key) else { continue };
                let Some(&index) = by_id.get(rule_id) else { continue };
                let mut version_key = VERSION_PREFIX.to_vec();
                version_key.extend_from_slice(rule_id.as_bytes());
                let saved = store.get(Cf::State, &version_key)?;
                let state = &mut self.states[index];
                if saved.as_deref() != Some(state.rule.fingerprint.to_string().as_bytes()) {
                    self.dirty.mark(index, &group);
                    continue;
                }
                match serde_json::from_slice::<Window>(value) {
                    Ok(window) => {
                        if let Kind::Absence { within_ms, .. } = *state.kind {
                            for entry in window.entries() {
                                self.deadlines.insert((entry.t.saturating_add(within_ms), index, group.clone()));
                            }
                        }
                        state.windows.insert(group, window);
                        loaded += 1;
                    }
                    Err(e) => {
                        tracing::warn!(rule = rule_id, error = %e, "Saved window does not decode; starting it empty.");
                        self.dirty.mark(index, &group);
                    }
                }
            }
            if rows.len() < 4096 {
                break;
            }
        }
        Ok(loaded)
    }

    /// Switches to a new rule set. Windows of rules whose source did not change are kept;
    /// the others start empty. Returns the store writes deleting the dropped windows.
    pub fn replace_rules(&mut self, rules: RuleSet) -> Vec<Op> {
        let mut old: HashMap<String, RuleState> =
            self.states.drain(..).map(|s| (s.rule.meta.id.to_string(), s)).collect();
        let mut ops = Vec::new();
        self.deadlines.clear();
        self.dirty.take();
        for rule in rules.rules() {
            let state = match old.remove(rule.meta.id.as_str()) {
                Some(mut state) if state.rule.fingerprint == rule.fingerprint => {
                    state.rule = rule.clone();
                    state
                }
                Some(state) => {
                    ops.extend(
                        state
                            .windows
                            .keys()
                            .map(|k| Op::Delete { cf: Cf::State, key: window_key(rule.meta.id.as_str(), k) }),
                    );
                    RuleState::new(rule.clone(), &self.metrics)
                }
                None => RuleState::new(rule.clone(), &self.metrics),
            };
            self.states.push(state);
        }
        for (id, state) in old {
            ops.extend(state.windows.keys().map(|k| Op::Delete { cf: Cf::State, key: window_key(&id, k) }));
        }
        for (index, state) in self.states.iter().enumerate() {
            if let Kind::Absence { within_ms, .. } = *state.kind {
                for (key, window) in &state.windows {
                    for entry in window.entries() {
                        self.deadlines.insert((entry.t.saturating_add(within_ms), index, key.clone()));
                    }
                }
            }
        }
        self.consumers = consumers(&rules);
        self.rules = rules;
        ops
    }
}

/// The group-by values of an event (field → value); `None` when a field is missing.
/// The group of a match of matchers `mask`, named by the rule's `group_by`.
fn group_of(rule: &CompiledRule, mask: u32, event: &SecurityEvent) -> Option<BTreeMap<String, String>> {
    let names = rule.meta.group_by.iter().map(ToString::to_string);
    let values = rule.group_paths(mask).iter().map(|path| Some(path.get(event)?.to_text().into_owned()));
    names.zip(values).map(|(name, value)| Some((name, value?))).collect()
}

/// The key of a match's group: its group-by values joined by `|`; `None` when a field is
/// missing. (Built on every windowed match, so it allocates once.)
fn group_key(rule: &CompiledRule, mask: u32, event: &SecurityEvent) -> Option<String> {
    let mut key = String::new();
    for (i, path) in rule.group_paths(mask).iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        key.push_str(&path.get(event)?.to_text());
    }
    Some(key)
}

fn parse_group(rule: &CompiledRule, key: &str) -> BTreeMap<String, String> {
    rule.meta.group_by.iter().map(ToString::to_string).zip(key.split('|').map(str::to_owned)).collect()
}

fn window_key(rule: &str, group: &str) -> Vec<u8> {
    let mut key = WINDOW_PREFIX.to_vec();
    key.extend_from_slice(rule.as_bytes());
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key
}

fn split_window_key(key: &[u8]) -> Option<(&str, String)> {
    let rest = key.strip_prefix(WINDOW_PREFIX)?;
    let split = rest.iter().position(|&b| b == 0)?;
    let rule = std::str::from_utf8(&rest[..split]).ok()?;
    let group = String::from_utf8(rest[split + 1..].to_vec()).ok()?;
    Some((rule, group))
}

#[cfg(test)]
mod tests;
