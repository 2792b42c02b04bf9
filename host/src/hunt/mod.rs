//! Threat hunting: queries over the stored events after the fact.
//!
//! A hunt has a time range (event time), a filter in the rules' condition language (or a
//! rule's own condition, `--rule`), and either a projection (the matching events' fields,
//! streamed) or a group-by with aggregates (`count`, `distinct(f)`, `min(f)`, `max(f)`,
//! `sum(f)`, `avg(f)`, `p50(f)`…`p99(f)`), a sort and a limit.
//!
//! The scan never reads the whole log for a time-bounded hunt: the log's keys are in append
//! order and append times never decrease, so a time range maps to a sequence range
//! (widened by `max_delay`, how late an event may arrive after its time). When the filter
//! requires an indexed field to equal a constant (`event.source.ip == "…"` as a top-level
//! conjunct), only that value's events are read ([`index`]).
//!
//! Layer 7.

pub mod index;
pub mod saved;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::event::{FieldPath, RecordKind, SecurityEvent};
use crate::rules::{CmpOp, CompileOptions, EventRef, Literal, Predicate, RuleSet};
use crate::store::Log;

pub use index::{Index, IndexConfig};
pub use saved::SavedHunt;

/// `[hunt]`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HuntConfig {
    /// Secondary indexes.
    pub index: IndexConfig,
    /// How long after its time an event may be stored and still be found by a time-bounded
    /// hunt (the scan covers events stored up to this long after the range ends).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_delay: Duration,
    /// Most groups one hunt may build.
    pub max_groups: usize,
    /// Hunts that run on a schedule and report rows as findings (`[[hunt.saved]]`).
    pub saved: Vec<SavedHunt>,
}

impl Default for HuntConfig {
    fn default() -> Self {
        Self {
            index: IndexConfig::default(),
            max_delay: Duration::from_secs(24 * 3600),
            max_groups: 100_000,
            saved: Vec::new(),
        }
    }
}

impl HuntConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (i, field) in self.index.fields.iter().enumerate() {
            if let Err(e) = FieldPath::parse(field) {
                errors.push((format!("hunt.index.fields.{i}"), e.to_string()));
            }
        }
        if self.max_groups == 0 {
            errors.push(("hunt.max_groups".into(), "must be at least 1".into()));
        }
        let mut ids = BTreeSet::new();
        for (i, saved) in self.saved.iter().enumerate() {
            if !ids.insert(saved.id.clone()) {
                errors.push((format!("hunt.saved.{i}.id"), format!("{:?} is used twice", saved.id)));
            }
            errors.extend(saved.validate().into_iter().map(|(k, v)| (format!("hunt.saved.{i}.{k}"), v)));
        }
        errors
    }
}

/// An aggregate over a group.
#[derive(Clone, Debug, PartialEq)]
pub enum Aggregate {
    /// Events in the group.
    Count,
    /// Distinct values of a field.
    Distinct(FieldPath),
    /// Smallest value (numbers numerically, else text).
    Min(FieldPath),
    /// Largest value.
    Max(FieldPath),
    /// Sum of a numeric field.
    Sum(FieldPath),
    /// Mean of a numeric field.
    Avg(FieldPath),
    /// A percentile (1–99) of a numeric field, nearest rank.
    Percentile(u8, FieldPath),
}

impl Aggregate {
    /// Reads `count`, `distinct(user.name)`, `p95(source.bytes)`….
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "count" || text == "count()" {
            return Ok(Self::Count);
        }
        let (name, rest) = text.split_once('(').ok_or_else(|| format!("`{text}`: expected count or NAME(field)"))?;
        let field = rest.strip_suffix(')').ok_or_else(|| format!("`{text}`: missing `)`"))?.trim();
        let field = FieldPath::parse(field).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(match name.trim() {
            "distinct" | "dc" => Self::Distinct(field),
            "min" => Self::Min(field),
            "max" => Self::Max(field),
            "sum" => Self::Sum(field),
            "avg" => Self::Avg(field),
            p if p.starts_with('p') => match p[1..].parse::<u8>() {
                Ok(n @ 1..=99) => Self::Percentile(n, field),
                _ => return Err(format!("`{text}`: percentiles are p1 … p99")),
            },
            other => {
                return Err(format!(
                    "`{text}`: unknown aggregate `{other}` (count, distinct, min, max, sum, avg, pNN)"
                ));
            }
        })
    }

    /// The column name (`count`, `distinct(user.name)`).
    pub fn name(&self) -> String {
        match self {
            Self::Count => "count".into(),
            Self::Distinct(f) => format!("distinct({f})"),
            Self::Min(f) => format!("min({f})"),
            Self::Max(f) => format!("max({f})"),
            Self::Sum(f) => format!("sum({f})"),
            Self::Avg(f) => format!("avg({f})"),
            Self::Percentile(n, f) => format!("p{n}({f})"),
        }
    }
}

/// A hunt, as the CLI, the API and saved hunts write it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HuntSpec {
    /// Events at or after this time (RFC 3339, or a duration ago: `24h`).
    pub from: Option<String>,
    /// Events before this time.
    pub to: Option<String>,
    /// A condition over `event`, in the rules' language (`event.outcome == "failure"`).
    pub filter: Option<String>,
    /// Use this rule's condition as the filter.
    pub rule: Option<String>,
    /// Fields to show for each matching event (default: time, class, action, outcome,
    /// source.ip, user.name, host.name, message).
    pub select: Vec<String>,
    /// Fields to group by.
    pub group_by: Vec<String>,
    /// Aggregates per group (default `count`).
    pub aggregates: Vec<String>,
    /// Sort keys: a column name, `-` in front for descending.
    pub sort: Vec<String>,
    /// Most rows.
    pub limit: Option<usize>,
    /// Continue after this sequence number (the `next` of the previous page of a
    /// projection).
    pub after: Option<u64>,
}

/// Why a hunt cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query is wrong.
    #[error("{0}")]
    Query(String),
    /// The filter does not compile.
    #[error("the filter does not compile: {0}")]
    Filter(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// A compiled hunt.
#[derive(Debug)]
pub struct Hunt {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    filter: Option<(RuleSet, usize)>,
    select: Vec<FieldPath>,
    group_by: Vec<FieldPath>,
    aggregates: Vec<Aggregate>,
    sort: Vec<(String, bool)>,
    limit: usize,
    after: u64,
}

/// The default projection.
pub const DEFAULT_SELECT: [&str; 8] =
    ["time", "class", "action", "outcome", "source.ip", "user.name", "host.name", "message"];

/// A duration ago (`2h`, `7d`) or an RFC 3339 time.
pub fn parse_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(s).map_err(|_| format!("{s:?} is neither RFC 3339 nor a duration"))?;
    Ok(now - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?)
}

impl Hunt {
    /// Compiles `spec`; `rules` is the rule set `spec.rule` names a rule of.
    pub fn compile(
        spec: &HuntSpec,
        options: &CompileOptions,
        rules: Option<&RuleSet>,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let time = |s: &Option<String>| s.as_deref().map(|s| parse_time(s, now)).transpose().map_err(Error::Query);
        let fields = |names: &[String]| -> Result<Vec<FieldPath>, Error> {
            names.iter().map(|n| FieldPath::parse(n).map_err(|e| Error::Query(e.to_string()))).collect()
        };
        let filter = match (&spec.filter, &spec.rule) {
            (Some(_), Some(_)) => return Err(Error::Query("give a filter or a rule, not both".into())),
            (Some(filter), None) => Some((compile_filter(filter, options)?, 0)),
            (None, Some(id)) => {
                let rules = rules.ok_or_else(|| Error::Query("no rule set to take the rule from".into()))?;
                let index = rules
                    .rules()
                    .iter()
                    .position(|r| r.meta.id.as_str() == id)
                    .ok_or_else(|| Error::Query(format!("no rule `{id}`")))?;
                Some((rules.clone(), index))
            }
            (None, None) => None,
        };
        let group_by: Vec<FieldPath> = fields(&spec.group_by)?;
        let mut aggregates: Vec<Aggregate> =
            spec.aggregates.iter().map(|a| Aggregate::parse(a).map_err(Error::Query)).collect::<Result<_, _>>()?;
        if aggregates.is_empty() && !group_by.is_empty() {
            aggregates.push(Aggregate::Count);
        }
        let select = if spec.select.is_empty() {
            DEFAULT_SELECT.iter().map(|s| FieldPath::parse(s).expect("default fields exist")).collect()
        } else {
            fields(&spec.select)?
        };
        let sort = spec
            .sort
            .iter()
            .map(|s| match s.strip_prefix('-') {
                Some(name) => (name.to_owned(), true),
                None => (s.clone(), false),
            })
            .collect();
        let from = time(&spec.from)?;
        let to = time(&spec.to)?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(Error::Query(format!("from ({f}) is not before to ({t})")));
        }
        Ok(Self {
            from,
            to,
            filter,
            select,
            group_by,
            aggregates,
            sort,
            limit: spec.limit.unwrap_or(1000).max(1),
            after: spec.after.unwrap_or(0),
        })
    }

    /// Whether the hunt groups.
    pub fn is_grouped(&self) -> bool {
        !self.group_by.is_empty() || !self.aggregates.is_empty()
    }

    /// The result columns.
    pub fn columns(&self) -> Vec<String> {
        if self.is_grouped() {
            self.group_by.iter().map(ToString::to_string).chain(self.aggregates.iter().map(Aggregate::name)).collect()
        } else {
            self.select.iter().map(ToString::to_string).collect()
        }
    }

    fn matches(&self, event: &Arc<SecurityEvent>) -> Result<bool, String> {
        if self.from.is_some_and(|f| event.time < f) || self.to.is_some_and(|t| event.time >= t) {
            return Ok(false);
        }
        let Some((rules, index)) = &self.filter else { return Ok(true) };
        let rule = &rules.rules()[*index];
        if !rule.classes.is_empty() && !rule.classes.contains(&event.class) {
            return Ok(false);
        }
        rules.evaluate_alone(*index, &EventRef(event.clone())).map(|mask| mask & 1 == 1).map_err(|e| e.to_string())
    }

    /// An indexed `field == "value"` the filter requires, when there is one.
    fn index_key(&self, index: &Index) -> Option<(String, String)> {
        let (rules, i) = self.filter.as_ref()?;
        let matcher = rules.rules()[*i].matchers().first()?;
        let predicate = matcher.predicate.as_ref().or(matcher.prefilter.as_ref())?;
        let conjuncts: Vec<&Predicate> = match predicate {
            Predicate::And(parts) => parts.iter().collect(),
            other => vec![other],
        };
        conjuncts.into_iter().find_map(|p| match p {
            Predicate::Cmp(field, CmpOp::Eq, Literal::Str { text, .. }) if !field.lower => {
                let name = field.path.to_string();
                index.covers(&name).then(|| (name, text.clone()))
            }
            _ => None,
        })
    }

    /// Runs the hunt over `log`. Projections stream each row to `row` (up to `limit`);
    /// grouped hunts call it once per group, sorted. `progress(done, total)` follows the
    /// records read.
    pub fn run(
        &self,
        log: &Log,
        index: Option<&Index>,
        max_delay: Duration,
        max_groups: usize,
        mut row: impl FnMut(Map<String, Value>),
        mut progress: impl FnMut(u64, u64),
    ) -> Result<HuntStats, Error> {
        let mut stats = HuntStats::default();
        let tail = log.tail()?;
        let head = log.head();
        let lo = match self.from {
            // An event is stored no earlier than it happened, give or take clock skew.
            Some(from) => log.seq_at_time(from.timestamp_millis() - 300_000)?,
            None => tail,
        };
        let hi = match self.to {
            Some(to) => {
                let delay = i64::try_from(max_delay.as_millis()).unwrap_or(i64::MAX);
                log.seq_at_time(to.timestamp_millis().saturating_add(delay))?
            }
            None => head + 1,
        };
        let lo = lo.max(tail).max(self.after + 1);
        stats.range = (lo, hi);
        let total = hi.saturating_sub(lo);
        let mut collector = self.collector(max_groups);
        let mut visit =
            |seq: u64, event: SecurityEvent, stats: &mut HuntStats| collector.visit(seq, event, stats, &mut row);
        let key = index.and_then(|i| self.index_key(i).map(|k| (i, k)));
        match key {
            Some((index, (field, value))) => {
                let indexed_to = index.position()?.saturating_add(1).min(hi);
                let seqs = index.lookup(&field, &value, lo, indexed_to)?.unwrap_or_default();
                stats.index = Some(field);
                let total = seqs.len() as u64 + hi.saturating_sub(indexed_to);
                let mut done = 0;
                'indexed: for chunk in seqs.chunks(256) {
                    for &seq in chunk {
                        let Some(entry) = log.read(seq, 1, usize::MAX)?.into_iter().next().filter(|e| e.seq == seq)
                        else {
                            continue;
                        };
                        stats.read += 1;
                        if let Some(event) = decode(&entry) {
                            stats.last_seq = seq;
                            if !visit(seq, event, &mut stats)? {
                                stats.truncated = true;
                                break 'indexed;
                            }
                        }
                    }
                    done += chunk.len() as u64;
                    progress(done, total);
                }
                // What the indexer has not reached yet is scanned.
                if !stats.truncated {
                    scan(log, indexed_to.max(lo), hi, &mut stats, &mut visit, &mut |d| progress(done + d, total))?;
                }
            }
            None => scan(log, lo, hi, &mut stats, &mut visit, &mut |d| progress(d, total))?,
        }
        collector.finish(&mut stats, row);
        Ok(stats)
    }

    /// A hunt over events from anywhere (a file being read), fed one by one with
    /// [`Collector::visit`] and ended with [`Collector::finish`].
    pub fn collector(&self, max_groups: usize) -> Collector<'_> {
        Collector { hunt: self, groups: BTreeMap::new(), rows: 0, max_groups }
    }
}

/// A hunt in progress: the groups (or the count of rows) so far.
#[derive(Debug)]
pub struct Collector<'h> {
    hunt: &'h Hunt,
    groups: BTreeMap<Vec<String>, Vec<State>>,
    rows: usize,
    max_groups: usize,
}

impl Collector<'_> {
    /// Takes one event (the `seq`-th read); projections stream its row to `row`. Returns
    /// whether to go on (false: the limit of rows is reached).
    pub fn visit(
        &mut self,
        seq: u64,
        event: SecurityEvent,
        stats: &mut HuntStats,
        row: &mut impl FnMut(Map<String, Value>),
    ) -> Result<bool, Error> {
        let hunt = self.hunt;
        let event = Arc::new(event);
        match hunt.matches(&event) {
            Ok(false) => return Ok(true),
            Ok(true) => {}
            Err(reason) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| reason.clone());
                if stats.errors <= 5 {
                    tracing::warn!(seq, %reason, "Hunt filter failed on an event; it is left out");
                }
                return Ok(true);
            }
        }
        stats.matched += 1;
        if hunt.is_grouped() {
            let key: Vec<String> = hunt.group_by.iter().map(|f| text(f, &event)).collect();
            if !self.groups.contains_key(&key) && self.groups.len() >= self.max_groups {
                return Err(Error::Query(format!(
                    "more than {} groups (hunt.max_groups); narrow the filter or the range",
                    self.max_groups
                )));
            }
            let states = self.groups.entry(key).or_insert_with(|| hunt.aggregates.iter().map(State::new).collect());
            for (state, aggregate) in states.iter_mut().zip(&hunt.aggregates) {
                state.add(aggregate, &event);
            }
            Ok(true)
        } else {
            let mut out = Map::new();
            for field in &hunt.select {
                out.insert(field.to_string(), field.get(&event).map_or(Value::Null, |v| v.to_json()));
            }
            row(out);
            self.rows += 1;
            stats.last_seq = seq;
            Ok(self.rows < hunt.limit)
        }
    }

    /// Ends the hunt: grouped hunts give their rows to `row`, sorted, up to the limit.
    pub fn finish(self, stats: &mut HuntStats, mut row: impl FnMut(Map<String, Value>)) {
        let hunt = self.hunt;
        if !hunt.is_grouped() {
            return;
        }
        let mut out: Vec<Map<String, Value>> = self
            .groups
            .into_iter()
            .map(|(key, states)| {
                let mut r = Map::new();
                for (field, value) in hunt.group_by.iter().zip(key) {
                    r.insert(field.to_string(), Value::String(value));
                }
                for (aggregate, state) in hunt.aggregates.iter().zip(states) {
                    r.insert(aggregate.name(), state.finish(aggregate));
                }
                r
            })
            .collect();
        let sort = if hunt.sort.is_empty() { vec![("count".to_owned(), true)] } else { hunt.sort.clone() };
        out.sort_by(|a, b| {
            for (column, descending) in &sort {
                let ordering = compare(a.get(column), b.get(column));
                let ordering = if *descending { ordering.reverse() } else { ordering };
                if ordering.is_ne() {
                    return ordering;
                }
            }
            std::cmp::Ordering::Equal
        });
        stats.groups = out.len();
        if out.len() > hunt.limit {
            stats.truncated = true;
        }
        for r in out.into_iter().take(hunt.limit) {
            row(r);
        }
    }
}

/// What a hunt read and found.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct HuntStats {
    /// Records of an input file that did not decode (`vigil hunt --input`).
    #[serde(skip_serializing_if = "is_zero")]
    pub rejected: u64,
    /// The sequence range considered.
    pub range: (u64, u64),
    /// Records read.
    pub read: u64,
    /// Events the filter accepted.
    pub matched: u64,
    /// Groups built.
    pub groups: usize,
    /// Events the filter failed on (left out).
    pub errors: u64,
    /// Why the filter failed, the first time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// The field index used, if any.
    pub index: Option<String>,
    /// Whether the limit cut the result short.
    pub truncated: bool,
    /// The sequence number of the last projected row: the `after` of the next page.
    pub last_seq: u64,
}

fn scan(
    log: &Log,
    lo: u64,
    hi: u64,
    stats: &mut HuntStats,
    visit: &mut impl FnMut(u64, SecurityEvent, &mut HuntStats) -> Result<bool, Error>,
    progress: &mut impl FnMut(u64),
) -> Result<(), Error> {
    let mut at = lo;
    while at < hi {
        let entries = log.read(at, 4096, 32 << 20)?;
        let Some(last) = entries.last().map(|e| e.seq) else { break };
        for entry in entries {
            if entry.seq >= hi {
                return Ok(());
            }
            stats.read += 1;
            if let Some(event) = decode(&entry)
                && !visit(entry.seq, event, stats)?
            {
                stats.truncated = true;
                return Ok(());
            }
        }
        at = last + 1;
        progress(at.saturating_sub(lo));
    }
    Ok(())
}

fn decode(entry: &crate::store::LogEntry) -> Option<SecurityEvent> {
    if entry.kind != RecordKind::Event.tag() {
        return None;
    }
    serde_json::from_slice(&entry.payload).ok()
}

fn text(field: &FieldPath, event: &SecurityEvent) -> String {
    field.get(event).map(|v| v.to_text().into_owned()).unwrap_or_default()
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => {
            let s = |v: Option<&Value>| v.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
            s(a).cmp(&s(b))
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One aggregate's running state.
#[derive(Debug)]
enum State {
    Count(u64),
    Distinct(BTreeSet<String>),
    Extreme(Option<Value>),
    Sum(f64, u64),
    Values(Vec<f64>),
}

impl State {
    fn new(aggregate: &Aggregate) -> Self {
        match aggregate {
            Aggregate::Count => Self::Count(0),
            Aggregate::Distinct(_) => Self::Distinct(BTreeSet::new()),
            Aggregate::Min(_) | Aggregate::Max(_) => Self::Extreme(None),
            Aggregate::Sum(_) | Aggregate::Avg(_) => Self::Sum(0.0, 0),
            Aggregate::Percentile(..) => Self::Values(Vec::new()),
        }
    }

    fn add(&mut self, aggregate: &Aggregate, event: &SecurityEvent) {
        let number = |f: &FieldPath| f.get(event).and_then(|v| v.to_json().as_f64());
        match (self, aggregate) {
            (Self::Count(n), _) => *n += 1,
            (Self::Distinct(set), Aggregate::Distinct(f)) => {
                if let Some(v) = f.get(event) {
                    set.insert(v.to_text().into_owned());
                }
            }
            (Self::Extreme(current), Aggregate::Min(f) | Aggregate::Max(f)) => {
                let Some(v) = f.get(event).map(|v| v.to_json()) else { return };
                let replace = match current {
                    None => true,
                    Some(c) => {
                        let ordering = compare(Some(&v), Some(c));
                        if matches!(aggregate, Aggregate::Min(_)) { ordering.is_lt() } else { ordering.is_gt() }
                    }
                };
                if replace {
                    *current = Some(v);
                }
            }
            (Self::Sum(sum, n), Aggregate::Sum(f) | Aggregate::Avg(f)) => {
                if let Some(x) = number(f) {
                    *sum += x;
                    *n += 1;
                }
            }
            (Self::Values(values), Aggregate::Percentile(_, f)) => {
                if let Some(x) = number(f) {
                    values.push(x);
                }
            }
            _ => {}
        }
    }

    fn finish(self, aggregate: &Aggregate) -> Value {
        match (self, aggregate) {
            (Self::Count(n), _) => json!(n),
            (Self::Distinct(set), _) => json!(set.len()),
            (Self::Extreme(v), _) => v.unwrap_or(Value::Null),
            (Self::Sum(sum, _), Aggregate::Sum(_)) => number(sum),
            (Self::Sum(sum, n), _) => {
                if n == 0 {
                    Value::Null
                } else {
                    number(sum / n as f64)
                }
            }
            (Self::Values(mut values), Aggregate::Percentile(p, _)) => {
                if values.is_empty() {
                    return Value::Null;
                }
                values.sort_by(f64::total_cmp);
                // Nearest rank: the smallest value with at least p% of the values at or below it.
                let rank = (f64::from(*p) / 100.0 * values.len() as f64).ceil() as usize;
                number(values[rank.clamp(1, values.len()) - 1])
            }
            (Self::Values(_), _) => Value::Null,
        }
    }
}

/// Integers stay integers.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 { json!(x as i64) } else { json!(x) }
}

/// Compiles a filter expression as a one-rule set, so it gets the same sandbox, native
/// predicates and class inference as rules.
pub fn compile_filter(filter: &str, options: &CompileOptions) -> Result<RuleSet, Error> {
    let source = format!(
        "const RULE = #{{ id: \"hunt\", title: \"hunt\", severity: \"info\" }};\nfn condition(event) {{\n{filter}\n}}\n"
    );
    // A misspelt field is a compile error (with the nearest field), as for rules.
    RuleSet::compile(vec![(PathBuf::from("hunt"), source)], Vec::new(), options).map_err(|errors| {
        Error::Filter(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ").replace("hunt:", ""))
    })
}

/// Writes rows as CSV (RFC 4180): a header line, then one line per row.
pub fn csv_line(values: impl IntoIterator<Item = String>) -> String {
    values
        .into_iter()
        .map(|v| if v.contains([',', '"', '\n', '\r']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v })
        .collect::<Vec<_>>()
        .join(",")
}

/// A cell as text (tables and CSV).
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
