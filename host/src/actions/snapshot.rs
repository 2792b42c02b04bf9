//! `audit_snapshot`: capture an incident, its events and the log around them into an
//! evidence bundle whose files are listed with their SHA-256 in a manifest.
//!
//! A bundle is a directory `<dir>/<incident>-<key>/` holding `incident.json`,
//! `events.ndjson` (every stored event whose event time lies within `window` of the
//! incident's first and last event, plus the incident's own events), `manifest.json`
//! (each file's name, size and SHA-256, the window, the time) and `manifest.sha256`
//! (the manifest's own hash, to pin it in a ticket or the audit trail). Taking the
//! snapshot again for the same step execution returns the same bundle.
//!
//! This module owns the bundle format ([`Item`], [`incident_items`], [`manifest`]). The
//! running service installs the `forensics` module as the action's [`EvidenceCollector`]:
//! it builds the same bundle with more in it (playbook runs, rule and plugin versions),
//! stores it on the configured backend (a directory or S3) and opens its chain of custody.
//! Without a collector (tools, tests), the bundle is written to a local directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::quarantine::hex;
use super::{Action, ActionContext, ActionError, ActionSpec, Outcome, ParamKind, ParamSpec};
use crate::event::{RecordKind, SecurityEvent};
use crate::store::Log;

/// Settings (`[actions.audit_snapshot]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Where bundles go (default: `evidence/` in the data directory).
    pub dir: Option<PathBuf>,
    /// Events within this much of the incident's first and last event are captured.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// Most events one bundle holds.
    pub max_events: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self { dir: None, window: Duration::from_secs(900), max_events: 100_000 }
    }
}

/// Builds and stores evidence bundles for `audit_snapshot` (implemented by `forensics`).
pub trait EvidenceCollector: Send + Sync + std::fmt::Debug {
    /// Collects the bundle of `ctx.incident` with events within `window` of it.
    fn collect<'a>(&'a self, ctx: &'a ActionContext, window: Duration) -> BoxFuture<'a, Result<Outcome, ActionError>>;
}

/// `audit_snapshot`.
#[derive(Debug, Clone)]
pub struct AuditSnapshot {
    log: Log,
    config: SnapshotConfig,
    dir: PathBuf,
    spec: ActionSpec,
    collector: Option<std::sync::Arc<dyn EvidenceCollector>>,
}

impl AuditSnapshot {
    /// The action over `log`.
    pub fn new(log: Log, config: SnapshotConfig) -> Self {
        let dir = config.dir.clone().unwrap_or_else(|| log.store().path().join("evidence"));
        let spec = ActionSpec {
            id: "audit_snapshot".into(),
            description: "Capture the incident, its events and the log around them into a hashed evidence bundle."
                .into(),
            params: vec![ParamSpec::new("window", ParamKind::Duration, false, "log window around the incident")],
            target: None,
            capabilities: vec!["log.read".into(), "fs.evidence".into()],
            idempotent: true,
            sensitive: false,
            inverse: None,
            default_ttl: None,
        };
        Self { log, config, dir, spec, collector: None }
    }

    /// The action, collecting through `collector` instead of writing a local directory.
    pub fn with_collector(mut self, collector: std::sync::Arc<dyn EvidenceCollector>) -> Self {
        self.collector = Some(collector);
        self
    }
}

/// One file of an evidence bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its name in the bundle (`events.ndjson`, `files/capture.pcap`).
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

impl Item {
    /// The item's manifest entry: name, size, SHA-256.
    pub fn entry(&self) -> Value {
        json!({ "name": self.name, "size": self.bytes.len(), "sha256": hex(&Sha256::digest(&self.bytes)) })
    }
}

/// The first and last event time of a bundle.
pub type TimeRange = (DateTime<Utc>, DateTime<Utc>);

/// The core of every bundle: `incident.json` and `events.ndjson` (the incident's events and
/// every stored event within `window` of it), with the event count and the window.
pub fn incident_items(
    log: &Log,
    incident: &Value,
    window: chrono::Duration,
    max_events: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<Item>, usize, TimeRange), ActionError> {
    let found = gather(log, incident, window, max_events, false)
        .map_err(|e| ActionError::Failed(format!("reading the log: {e}")))?;
    let mut events = Vec::new();
    for (payload, _) in &found {
        events.extend_from_slice(payload);
        events.push(b'\n');
    }
    let incident_json =
        serde_json::to_vec_pretty(incident).map_err(|e| ActionError::Failed(format!("encoding: {e}")))?;
    let items = vec![
        Item { name: "incident.json".into(), bytes: incident_json },
        Item { name: "events.ndjson".into(), bytes: events },
    ];
    Ok((items, found.len(), bounds(incident, window, now)))
}

/// A bundle's manifest (the items' names, sizes and SHA-256, plus `meta`) and its own
/// SHA-256.
pub fn manifest(items: &[Item], mut meta: serde_json::Map<String, Value>) -> (Vec<u8>, String) {
    meta.insert("files".into(), Value::Array(items.iter().map(Item::entry).collect()));
    // A JSON object always serializes.
    let bytes = serde_json::to_vec_pretty(&Value::Object(meta)).expect("JSON serializes");
    let hash = hex(&Sha256::digest(&bytes));
    (bytes, hash)
}

fn time_of(incident: &Value, field: &str) -> Option<DateTime<Utc>> {
    incident.get(field)?.as_str()?.parse().ok()
}

/// The first sequence number whose append time is at or after `ms` (binary search: append
/// times never go backwards).
fn first_seq_at(log: &Log, ms: i64) -> crate::store::Result<u64> {
    let (mut lo, mut hi) = (log.tail()?.max(1), log.head() + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match log.read(mid, 1, usize::MAX)?.first() {
            Some(e) if e.time_ms < ms => lo = e.seq + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

fn bounds(incident: &Value, window: chrono::Duration, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (time_of(incident, "first_seen").unwrap_or(now) - window, time_of(incident, "last_seen").unwrap_or(now) + window)
}

/// The stored events of an incident (JSON as stored, and decoded): those it lists, and with
/// `only_listed` false every event whose event time lies within `window` of its first and
/// last event. At most `max`.
pub fn gather(
    log: &Log,
    incident: &Value,
    window: chrono::Duration,
    max: usize,
    only_listed: bool,
) -> crate::store::Result<Vec<(Vec<u8>, SecurityEvent)>> {
    let now = Utc::now();
    let (first, last) = bounds(incident, window, now);
    let opened = time_of(incident, "opened_at").unwrap_or(now);
    let wanted: HashSet<&str> =
        incident.get("event_ids").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    // Append time follows event time closely on a live stream; the scan starts a window
    // before the earliest of the two and ends a window after the latest.
    let slack = window.max(chrono::Duration::minutes(5));
    let start_ms = first.min(opened - slack).timestamp_millis();
    let stop_ms = last.max(opened + slack).timestamp_millis();
    let mut seq = first_seq_at(log, start_ms)?;
    let mut out = Vec::new();
    loop {
        let batch = log.read(seq, 1024, 16 << 20)?;
        let Some(last_entry) = batch.last() else { return Ok(out) };
        seq = last_entry.seq + 1;
        for entry in batch {
            if entry.time_ms > stop_ms || out.len() >= max {
                return Ok(out);
            }
            if entry.kind != RecordKind::Event.tag() {
                continue;
            }
            let Ok(event) = serde_json::from_slice::<SecurityEvent>(&entry.payload) else { continue };
            let listed = wanted.contains(event.id.to_string().as_str());
            if listed || (!only_listed && event.time >= first && event.time <= last) {
                out.push((entry.payload, event));
            }
        }
    }
}

impl AuditSnapshot {
    fn window(&self, ctx: &ActionContext) -> Duration {
        super::param_str(&ctx.params, "window")
            .and_then(|w| humantime::parse_duration(w).ok())
            .unwrap_or(self.config.window)
    }

    fn take(&self, ctx: &ActionContext) -> Result<Outcome, ActionError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| ActionError::Failed(format!("{what}: {e}"));
        let incident = &ctx.incident;
        let id = incident.get("id").and_then(Value::as_str).unwrap_or("none").to_owned();
        let key = hex(&Sha256::digest(ctx.idempotency_key.as_bytes()))[..12].to_owned();
        let bundle = self.dir.join(format!("{id}-{key}"));
        if let Ok(hash) = std::fs::read_to_string(bundle.join("manifest.sha256")) {
            return Ok(outcome(&bundle, hash.trim(), None));
        }
        let window = chrono::Duration::from_std(self.window(ctx)).unwrap_or(chrono::Duration::minutes(15));
        let (items, count, (first, last)) =
            incident_items(&self.log, incident, window, self.config.max_events, ctx.now)?;
        std::fs::create_dir_all(&bundle).map_err(|e| fail("creating the bundle", &e))?;
        for item in &items {
            std::fs::write(bundle.join(&item.name), &item.bytes).map_err(|e| fail("writing", &e))?;
        }
        let meta = json!({
            "incident_id": id, "created_at": ctx.now, "window": { "from": first, "to": last },
            "events": count, "run_id": ctx.run_id, "step_id": ctx.step_id,
        });
        let (manifest, hash) = manifest(&items, meta.as_object().cloned().unwrap_or_default());
        std::fs::write(bundle.join("manifest.json"), &manifest).map_err(|e| fail("writing", &e))?;
        std::fs::write(bundle.join("manifest.sha256"), format!("{hash}  manifest.json\n"))
            .map_err(|e| fail("writing", &e))?;
        Ok(outcome(&bundle, &hash, Some(count)))
    }
}

fn outcome(bundle: &Path, hash: &str, events: Option<usize>) -> Outcome {
    let hash = hash.split_whitespace().next().unwrap_or_default();
    Outcome {
        target: Some(bundle.display().to_string()),
        detail: match events {
            Some(n) => format!("evidence bundle {} ({n} events, manifest sha256 {hash})", bundle.display()),
            None => format!("evidence bundle {} already taken (manifest sha256 {hash})", bundle.display()),
        },
        data: json!({ "bundle": bundle.display().to_string(), "manifest_sha256": hash, "events": events }),
        expires_at: None,
    }
}

impl Action for AuditSnapshot {
    fn spec(&self) -> &ActionSpec {
        &self.spec
    }

    fn execute<'a>(&'a self, ctx: &'a ActionContext) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            if let Some(collector) = &self.collector {
                return collector.collect(ctx, self.window(ctx)).await;
            }
            let this = self.clone();
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || this.take(&ctx))
                .await
                .map_err(|e| ActionError::Failed(e.to_string()))?
        })
    }
}
