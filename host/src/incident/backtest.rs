//! Backtesting: replays stored events through a rule set and reports the alerts and
//! incidents it would have produced, with no side effects (nothing is written). Because
//! detection runs on event time, the alerts equal those of a live run over the same events
//! in the same order.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Incident, IncidentBook, Policy};
use crate::detect::{Alert, DetectConfig, DetectMetrics, Detector};
use crate::event::{RecordKind, SecurityEvent};
use crate::rules::RuleSet;
use crate::store::{self, Log};

/// What a backtest found.
#[derive(Debug, Default)]
pub struct BacktestReport {
    /// Events replayed.
    pub events: u64,
    /// Stored events that did not decode (skipped).
    pub undecodable: u64,
    /// Every alert, in order (less those already handed out by [`Replay::take_alerts`]).
    pub alerts: Vec<Alert>,
    /// How many alerts of each rule [`Replay::take_alerts`] handed out.
    pub taken: BTreeMap<String, usize>,
    /// The incidents the alerts would have opened.
    pub incidents: Vec<Incident>,
}

impl BacktestReport {
    /// Alerts and incidents per rule id.
    pub fn by_rule(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (rule, count) in &self.taken {
            out.entry(rule.clone()).or_default().0 += count;
        }
        for a in &self.alerts {
            out.entry(a.rule_id.to_string()).or_default().0 += 1;
        }
        for i in &self.incidents {
            out.entry(i.rule_id.to_string()).or_default().1 += 1;
        }
        out
    }

    /// How many alerts were raised in all.
    pub fn alert_count(&self) -> usize {
        self.alerts.len() + self.taken.values().sum::<usize>()
    }
}

/// Replays the events appended to `log` between `from` and `to` (append time; either end
/// open) through `rules`. `progress` is called with (records done, records total).
pub fn run(
    log: &Log,
    rules: RuleSet,
    config: DetectConfig,
    policy: Policy,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    mut progress: impl FnMut(u64, u64),
) -> store::Result<BacktestReport> {
    let start = match from {
        Some(t) => log.seq_at_time(t.timestamp_millis())?,
        None => log.tail()?,
    };
    let end = match to {
        Some(t) => log.seq_at_time(t.timestamp_millis())?,
        None => log.head() + 1,
    };
    let total = end.saturating_sub(start);
    let mut replay = Replay::new(rules, config).with_policy(policy);
    let mut next = start;
    while next < end {
        let entries = log.read(next, 4096, 16 << 20)?;
        let Some(last) = entries.last().map(|e| e.seq) else { break };
        for entry in entries.iter().filter(|e| e.seq < end) {
            if entry.kind != RecordKind::Event.tag() {
                continue;
            }
            match serde_json::from_slice::<SecurityEvent>(&entry.payload) {
                Ok(event) => drop(replay.push(event)),
                Err(_) => replay.report.undecodable += 1,
            }
        }
        next = last + 1;
        progress(next.min(end) - start, total);
    }
    Ok(replay.finish())
}

/// Replays events from anywhere (a file being read, a generator) through `rules`, in the
/// order given, with no side effects.
#[derive(Debug)]
pub struct Replay {
    detector: Detector,
    book: IncidentBook,
    report: BacktestReport,
    now: DateTime<Utc>,
}

impl Replay {
    /// A replay through `rules` with fresh windows and no incidents.
    pub fn new(rules: RuleSet, config: DetectConfig) -> Self {
        Self {
            detector: Detector::new(rules, config, DetectMetrics::default()).without_persistence(),
            book: IncidentBook::in_memory(),
            report: BacktestReport::default(),
            now: Utc::now(),
        }
    }

    /// The replay with `policy` deciding incident priorities (as the live run's
    /// `[incidents.priority]` would).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.book = self.book.with_policy(policy);
        self
    }

    /// Feeds one event, and gives it back: the caller chooses where it is freed (a
    /// replay frees events on the thread that parsed them, where that is cheapest).
    pub fn push(&mut self, event: SecurityEvent) -> Arc<SecurityEvent> {
        self.report.events += 1;
        let before = self.report.alerts.len();
        let event = Arc::new(event);
        self.detector.process(&event, &mut self.report.alerts);
        for alert in &self.report.alerts[before..] {
            // An in-memory book has no store to fail.
            let _ = self.book.apply(alert, self.now);
        }
        event
    }

    /// Hands out the alerts raised since the last call, in order, keeping only their
    /// counts: a long replay that prints them as they come holds none in memory.
    pub fn take_alerts(&mut self) -> Vec<Alert> {
        let alerts = std::mem::take(&mut self.report.alerts);
        for alert in &alerts {
            *self.report.taken.entry(alert.rule_id.to_string()).or_default() += 1;
        }
        alerts
    }

    /// Counts a record that could not be read.
    pub fn skip(&mut self) {
        self.report.undecodable += 1;
    }

    /// The alerts and incidents raised.
    pub fn finish(mut self) -> BacktestReport {
        self.report.incidents = self.book.cached();
        self.report
    }
}
