//! The indicator store: STIX objects by id in the `intel` column family, one version each
//! (a newer `modified` replaces, an equal or older one is a duplicate), with an expiry
//! time; relationships and the objects they point at, to give indicators their context;
//! and each feed's polling position.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::matcher::{Context, Entry, Indexed};
use super::stix::{Observable, StixObject, observables};
use crate::store::{Cf, Result, Store, Table};

/// An indicator as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredIndicator {
    /// STIX id.
    pub id: String,
    /// Version (`modified`).
    pub version: DateTime<Utc>,
    /// The feed it came from.
    pub feed: String,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pattern, as the feed wrote it.
    pub pattern: String,
    /// The values it matches.
    pub observables: Vec<Observable>,
    /// Start of validity.
    pub valid_from: DateTime<Utc>,
    /// End of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
    /// 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<u8>,
    /// Labels and indicator types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// `chain:phase`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kill_chain_phases: Vec<String>,
    /// When the store forgets it: `valid_until`, or the feed's TTL after it was last seen.
    pub expires_at: DateTime<Utc>,
}

/// A related object (malware, threat actor, intrusion set, campaign) or a relationship.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// STIX type.
    pub kind: String,
    /// Version.
    pub version: DateTime<Utc>,
    /// Name (objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Relationship type, source and target (relationships).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<(String, String, String)>,
    /// When the store forgets it.
    pub expires_at: DateTime<Utc>,
}

/// A feed's polling position and last result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FeedState {
    /// The `added_after` of the next poll (the last page's `X-TAXII-Date-Added-Last`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_after: Option<String>,
    /// When the feed last answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// The last failure, when the last poll failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Objects read over the feed's life.
    #[serde(default)]
    pub objects: u64,
}

/// What applying a batch of objects did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ApplyReport {
    /// New objects.
    pub added: u64,
    /// Newer versions of known objects.
    pub updated: u64,
    /// Versions already stored (or older).
    pub unchanged: u64,
    /// Revoked objects removed.
    pub revoked: u64,
    /// Objects of types that carry nothing to match or to name (identities, reports…).
    pub ignored: u64,
    /// Objects not stored: `object id: reason`.
    pub skipped: Vec<String>,
}

impl ApplyReport {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.revoked > 0
    }

    /// Adds another report's counts.
    pub fn absorb(&mut self, other: ApplyReport) {
        self.added += other.added;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.revoked += other.revoked;
        self.ignored += other.ignored;
        self.skipped.extend(other.skipped);
    }
}

/// How one feed's objects are kept.
#[derive(Clone, Debug)]
pub struct FeedPolicy {
    /// The feed's name.
    pub feed: String,
    /// How long an object without `valid_until` is kept after it was last seen.
    pub ttl: std::time::Duration,
    /// The confidence of indicators that give none.
    pub default_confidence: Option<u8>,
}

/// Related-object types an indicator's context names.
const CONTEXT_TYPES: [&str; 5] = ["malware", "threat-actor", "intrusion-set", "campaign", "tool"];

/// The persisted indicators.
#[derive(Clone, Debug)]
pub struct IndicatorStore {
    indicators: Table<String, StoredIndicator>,
    objects: Table<String, StoredObject>,
    feeds: Table<String, FeedState>,
}

impl IndicatorStore {
    /// The indicator tables of `store`.
    pub fn new(store: &Store) -> Self {
        Self {
            indicators: Table::new(store, Cf::Intel, b"i/"),
            objects: Table::new(store, Cf::Intel, b"o/"),
            feeds: Table::new(store, Cf::Intel, b"f/"),
        }
    }

    /// A feed's position.
    pub fn feed_state(&self, feed: &str) -> Result<FeedState> {
        Ok(self.feeds.get(&feed.to_owned())?.unwrap_or_default())
    }

    /// Stores a feed's position.
    pub fn set_feed_state(&self, feed: &str, state: &FeedState) -> Result<()> {
        self.feeds.put(&feed.to_owned(), state)
    }

    /// One stored indicator.
    pub fn indicator(&self, id: &str) -> Result<Option<StoredIndicator>> {
        self.indicators.get(&id.to_owned())
    }

    /// Stores `objects` from a feed: new ids and newer versions are written, the rest
    /// counted; revoked objects are removed; indicators whose pattern cannot be matched
    /// value by value are skipped with the reason.
    pub fn apply(&self, policy: &FeedPolicy, objects: Vec<StixObject>, now: DateTime<Utc>) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let ttl = ChronoDuration::from_std(policy.ttl).unwrap_or(ChronoDuration::days(30));
        let mut ops = Vec::new();
        for object in objects {
            let Some(version) = object.version() else {
                report.skipped.push(format!("{}: no modified or created time", object.id));
                continue;
            };
            match object.kind.as_str() {
                "indicator" => {
                    let stored = self.indicators.get(&object.id)?;
                    if stored.as_ref().is_some_and(|s| s.version >= version) {
                        report.unchanged += 1;
                        continue;
                    }
                    if object.revoked {
                        if stored.is_some() {
                            ops.push(self.indicators.delete_op(&object.id));
                            report.revoked += 1;
                        }
                        continue;
                    }
                    match indicator(&object, policy, version, now, ttl) {
                        Ok(indicator) => {
                            ops.push(self.indicators.put_op(&object.id, &indicator)?);
                            if stored.is_some() {
                                report.updated += 1;
                            } else {
                                report.added += 1;
                            }
                        }
                        Err(reason) => report.skipped.push(format!("{}: {reason}", object.id)),
                    }
                }
                kind if kind == "relationship" || CONTEXT_TYPES.contains(&kind) => {
                    let stored = self.objects.get(&object.id)?;
                    if stored.as_ref().is_some_and(|s| s.version >= version) {
                        report.unchanged += 1;
                        continue;
                    }
                    if object.revoked {
                        if stored.is_some() {
                            ops.push(self.objects.delete_op(&object.id));
                            report.revoked += 1;
                        }
                        continue;
                    }
                    let relation = if kind == "relationship" {
                        match (&object.relationship_type, &object.source_ref, &object.target_ref) {
                            (Some(t), Some(s), Some(d)) => Some((t.clone(), s.clone(), d.clone())),
                            _ => {
                                report
                                    .skipped
                                    .push(format!("{}: relationship without type, source or target", object.id));
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let stored_object = StoredObject {
                        kind: object.kind.clone(),
                        version,
                        name: object.name.clone(),
                        relation,
                        expires_at: now.max(version) + ttl,
                    };
                    ops.push(self.objects.put_op(&object.id, &stored_object)?);
                    if stored.is_some() {
                        report.updated += 1;
                    } else {
                        report.added += 1;
                    }
                }
                // Identities, marking definitions, reports…: nothing to match or to name.
                _ => report.ignored += 1,
            }
        }
        self.indicators.store().write(ops, false)?;
        Ok(report)
    }

    /// Every stored indicator, with the names of what its relationships point at, ready to
    /// index. Indicators under `min_confidence` are left out.
    pub fn load(&self, min_confidence: u8) -> Result<Vec<Indexed>> {
        let mut names: FxHashMap<String, (String, String)> = FxHashMap::default();
        let mut relations: Vec<(String, String, String)> = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let page = self.objects.scan(from.as_ref(), 10_000)?;
            let Some((last, _)) = page.last() else { break };
            from = Some(format!("{last}\0"));
            for (id, object) in page {
                match object.relation {
                    Some(relation) => relations.push(relation),
                    None => {
                        names.insert(id, (object.kind, object.name.unwrap_or_default()));
                    }
                }
            }
        }
        // indicator → related object ids; campaigns also bring the actors they are
        // attributed to.
        let mut related: FxHashMap<&str, Vec<&str>> = FxHashMap::default();
        for (kind, source, target) in &relations {
            if matches!(kind.as_str(), "indicates" | "related-to" | "attributed-to" | "uses") {
                related.entry(source.as_str()).or_default().push(target.as_str());
            }
        }
        let mut out = Vec::new();
        let mut feeds: FxHashMap<String, Arc<str>> = FxHashMap::default();
        let empty = Arc::new(Context::default());
        let mut from: Option<String> = None;
        loop {
            let page = self.indicators.scan(from.as_ref(), 10_000)?;
            let Some((last, _)) = page.last() else { break };
            from = Some(format!("{last}\0"));
            for (_, i) in page {
                if i.confidence.unwrap_or(0) < min_confidence {
                    continue;
                }
                let mut context =
                    Context { labels: i.labels, kill_chain_phases: i.kill_chain_phases, ..Context::default() };
                let mut seen = BTreeSet::new();
                let mut queue: Vec<&str> = related.get(i.id.as_str()).cloned().unwrap_or_default();
                while let Some(target) = queue.pop() {
                    if !seen.insert(target) || seen.len() > 32 {
                        continue;
                    }
                    let Some((kind, name)) = names.get(target) else { continue };
                    let list = match kind.as_str() {
                        "malware" | "tool" => &mut context.malware,
                        "threat-actor" | "intrusion-set" => &mut context.actors,
                        "campaign" => &mut context.campaigns,
                        _ => continue,
                    };
                    if !name.is_empty() && !list.contains(name) {
                        list.push(name.clone());
                    }
                    if kind == "campaign" {
                        queue.extend(related.get(target).into_iter().flatten().copied());
                    }
                }
                let context = if context == Context::default() { empty.clone() } else { Arc::new(context) };
                let feed = feeds.entry(i.feed.clone()).or_insert_with(|| Arc::from(i.feed.as_str())).clone();
                out.push(Indexed {
                    entry: Entry {
                        id: i.id.into(),
                        name: i.name.map(Into::into),
                        feed,
                        confidence: i.confidence,
                        valid_from_ms: i.valid_from.timestamp_millis(),
                        valid_until_ms: i.valid_until.map_or(i64::MAX, |t| t.timestamp_millis()),
                        context,
                    },
                    observables: i.observables,
                });
            }
        }
        Ok(out)
    }

    /// Removes every object past its expiry; returns how many.
    pub fn sweep(&self, now: DateTime<Utc>) -> Result<u64> {
        let mut removed = 0;
        let mut from: Option<String> = None;
        loop {
            let page = self.indicators.scan(from.as_ref(), 10_000)?;
            let Some((last, _)) = page.last() else { break };
            from = Some(format!("{last}\0"));
            let ops: Vec<_> =
                page.iter().filter(|(_, i)| i.expires_at <= now).map(|(id, _)| self.indicators.delete_op(id)).collect();
            removed += ops.len() as u64;
            self.indicators.store().write(ops, false)?;
        }
        let mut from: Option<String> = None;
        loop {
            let page = self.objects.scan(from.as_ref(), 10_000)?;
            let Some((last, _)) = page.last() else { break };
            from = Some(format!("{last}\0"));
            let ops: Vec<_> =
                page.iter().filter(|(_, o)| o.expires_at <= now).map(|(id, _)| self.objects.delete_op(id)).collect();
            self.objects.store().write(ops, false)?;
        }
        Ok(removed)
    }
}

fn indicator(
    object: &StixObject,
    policy: &FeedPolicy,
    version: DateTime<Utc>,
    now: DateTime<Utc>,
    ttl: ChronoDuration,
) -> std::result::Result<StoredIndicator, String> {
    let pattern_type = object.pattern_type.as_deref().unwrap_or("stix");
    if pattern_type != "stix" {
        return Err(format!("pattern_type {pattern_type:?} is not matched (only \"stix\")"));
    }
    let pattern = object.pattern.as_deref().ok_or("an indicator without a pattern")?;
    let valid_from = object.valid_from.ok_or("an indicator without valid_from")?;
    if object.valid_until.is_some_and(|until| until <= valid_from) {
        return Err("valid_until is not after valid_from".into());
    }
    let observables = observables(pattern).map_err(|e| e.to_string())?;
    let expires_at = object.valid_until.unwrap_or_else(|| now.max(version) + ttl);
    let mut labels = object.indicator_types.clone();
    labels.extend(object.labels.iter().cloned());
    labels.dedup();
    Ok(StoredIndicator {
        id: object.id.clone(),
        version,
        feed: policy.feed.clone(),
        name: object.name.clone(),
        pattern: pattern.to_owned(),
        observables,
        valid_from,
        valid_until: object.valid_until,
        confidence: object.confidence.or(policy.default_confidence),
        labels,
        kill_chain_phases: object
            .kill_chain_phases
            .iter()
            .map(|p| format!("{}:{}", p.kill_chain_name, p.phase_name))
            .collect(),
        expires_at,
    })
}
