//! Forensic evidence: bundles that hold up — every item hashed in a manifest whose own hash
//! is pinned, a chain of custody for every access, export and transfer, storage on a
//! directory or S3-compatible object storage, and retention enforced by a sweeper that
//! records what it deleted.
//!
//! A bundle (`<incident>-<key>`) is stored as objects under `<prefix>/<bundle>/`:
//! `items/incident.json`, `items/events.ndjson` (the format of `actions::snapshot`, which
//! this module shares with the `audit_snapshot` action), `items/runs.json` (the incident's
//! playbook runs: every step, action and outcome), `items/versions.json` (the rules and
//! plugins loaded, with their fingerprints), `items/files/…` (captured files), then
//! `manifest.json` and `manifest.sha256`. Custody entries are objects
//! `custody/000001.json`, … each holding the SHA-256 of the previous one, so editing,
//! removing or reordering one breaks the chain; the head of each chain (count and hash) is
//! also kept in Vigil's store, so cutting the newest entries off is caught too.
//!
//! Layer 7.

mod storage;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

pub use storage::StorageConfig;

use crate::actions::quarantine::hex;
use crate::actions::snapshot::{EvidenceCollector, Item, incident_items, manifest};
use crate::actions::{ActionContext, ActionError, Outcome};
use crate::event::Priority;
use crate::store::{Cf, Log, Store, Table};

/// `[forensics]`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ForensicsConfig {
    /// Where bundles are stored.
    pub storage: StorageConfig,
    /// Events within this much of the incident's first and last event are captured.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub window: Duration,
    /// Most events one bundle holds.
    pub max_events: usize,
    /// How long bundles are kept.
    pub retention: RetentionPolicy,
    /// How often the retention sweeper runs.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub sweep_interval: Duration,
}

impl Default for ForensicsConfig {
    fn default() -> Self {
        Self {
            storage: StorageConfig::default(),
            window: Duration::from_secs(900),
            max_events: 100_000,
            retention: RetentionPolicy::default(),
            sweep_interval: Duration::from_secs(3600),
        }
    }
}

/// How long bundles are kept, by the incident's priority.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// Bundles of incidents without a longer rule.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub default: Duration,
    /// By priority (`P0 = "400d"`).
    #[serde(default)]
    pub by_priority: BTreeMap<String, String>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(30 * 24 * 3600),
            by_priority: BTreeMap::from([("P0".to_owned(), "400d".to_owned()), ("P1".to_owned(), "400d".to_owned())]),
        }
    }
}

impl RetentionPolicy {
    /// How long a bundle of an incident of `priority` is kept.
    pub fn keep(&self, priority: Option<Priority>) -> Duration {
        priority
            .and_then(|p| self.by_priority.get(p.as_str()))
            .and_then(|d| humantime::parse_duration(d).ok())
            .unwrap_or(self.default)
    }
}

impl ForensicsConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = self.storage.validate();
        for (key, value) in &self.retention.by_priority {
            if Priority::parse(key).is_none() {
                errors.push((format!("forensics.retention.by_priority.{key}"), "expected P0 … P4".into()));
            }
            if let Err(e) = humantime::parse_duration(value) {
                errors.push((format!("forensics.retention.by_priority.{key}"), format!("not a duration: {e}")));
            }
        }
        if self.sweep_interval.is_zero() || self.max_events == 0 {
            errors.push(("forensics".into(), "sweep_interval and max_events must be above 0".into()));
        }
        errors
    }
}

/// Who did something to a bundle, why and from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Actor {
    /// A person, or `vigil` (playbooks, the sweeper).
    pub who: String,
    /// Why.
    pub why: String,
    /// From where (host, address, playbook run).
    pub from: String,
}

impl Actor {
    /// Vigil itself, for `why`.
    pub fn vigil(why: impl Into<String>) -> Self {
        Self { who: "vigil".into(), why: why.into(), from: host_name() }
    }
}

/// This machine's name (`from` of local actions).
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// One entry of a chain of custody.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CustodyEntry {
    /// 1, 2, …
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// `created`, `verified`, `exported`, `transferred`, `accessed`.
    pub event: String,
    /// Who, why, from where.
    pub actor: Actor,
    /// What was done (a destination, a verification result).
    pub detail: String,
    /// SHA-256 of the bundle's manifest.
    pub manifest_sha256: String,
    /// SHA-256 of the previous entry (`0…0` for the first).
    pub prev: String,
    /// SHA-256 of this entry with `hash` empty.
    pub hash: String,
}

impl CustodyEntry {
    fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        // A struct of strings and numbers always serializes.
        hex(&Sha256::digest(serde_json::to_vec(&unhashed).expect("JSON serializes")))
    }
}

/// A stored bundle, as Vigil's store records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BundleRecord {
    /// `<incident>-<key>`.
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// Its priority when the bundle was taken.
    pub priority: Option<String>,
    /// Taken.
    pub created_at: DateTime<Utc>,
    /// Kept until.
    pub retain_until: DateTime<Utc>,
    /// SHA-256 of the manifest.
    pub manifest_sha256: String,
    /// Events captured.
    pub events: usize,
    /// Custody entries so far.
    pub custody_count: u64,
    /// Hash of the newest custody entry.
    pub custody_head: String,
}

/// What a sweep removed (also kept in the store: `vigil evidence deleted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Deletion {
    /// The bundle.
    pub bundle: BundleRecord,
    /// When it was deleted.
    pub deleted_at: DateTime<Utc>,
    /// Objects removed.
    pub objects: u64,
    /// Who and why.
    pub actor: Actor,
}

/// The result of checking a bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Verification {
    /// The bundle.
    pub bundle: String,
    /// Whether everything checked out.
    pub ok: bool,
    /// Items whose hash matched.
    pub items_ok: usize,
    /// Custody entries checked.
    pub custody_entries: u64,
    /// What did not check out.
    pub problems: Vec<String>,
}

/// Why an evidence operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store failed.
    #[error("evidence storage: {0}")]
    Storage(String),
    /// Vigil's store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// No such bundle.
    #[error("no evidence bundle {0}")]
    NotFound(String),
    /// Collecting failed.
    #[error("{0}")]
    Collect(String),
}

/// What goes into `versions.json`: the rules and plugins loaded.
pub type Versions = Arc<dyn Fn() -> Value + Send + Sync>;

/// The evidence service. Cheap to clone.
#[derive(Clone)]
pub struct Evidence {
    objects: storage::Objects,
    store: Store,
    log: Log,
    config: ForensicsConfig,
    records: Table<String, BundleRecord>,
    deletions: Table<String, Deletion>,
    versions: Versions,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence").field("objects", &self.objects).finish_non_exhaustive()
    }
}

impl Evidence {
    /// The service over `store` and `log`, storing bundles as `config` says.
    pub fn new(store: &Store, log: &Log, config: ForensicsConfig, versions: Versions) -> Result<Self, Error> {
        let objects = storage::Objects::open(&config.storage, store.path())?;
        Ok(Self {
            objects,
            store: store.clone(),
            log: log.clone(),
            records: Table::new(store, Cf::Index, b"evidence/"),
            deletions: Table::new(store, Cf::Index, b"evidence-deleted/"),
            config,
            versions,
        })
    }

    /// Vigil's store (incidents, custody heads).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &ForensicsConfig {
        &self.config
    }

    /// Stored bundles, oldest first.
    pub fn list(&self) -> Result<Vec<BundleRecord>, Error> {
        let mut out: Vec<BundleRecord> = self.records.scan(None, usize::MAX)?.into_iter().map(|(_, r)| r).collect();
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// One bundle's record.
    pub fn get(&self, id: &str) -> Result<BundleRecord, Error> {
        self.records.get(&id.to_owned())?.ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// What sweeps deleted, oldest first.
    pub fn deletions(&self) -> Result<Vec<Deletion>, Error> {
        Ok(self.deletions.scan(None, usize::MAX)?.into_iter().map(|(_, d)| d).collect())
    }

    /// Collects the bundle `id` of `incident` (a stored incident as JSON): its events within
    /// `window`, its playbook runs, the rule and plugin versions, and `files`; stores it and
    /// opens its chain of custody with a `created` entry. Collecting an existing id returns
    /// its record.
    pub async fn collect(
        &self,
        id: &str,
        incident: &Value,
        window: Duration,
        files: &[PathBuf],
        actor: Actor,
        meta: Map<String, Value>,
    ) -> Result<BundleRecord, Error> {
        if let Some(existing) = self.records.get(&id.to_owned())? {
            return Ok(existing);
        }
        let now = Utc::now();
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::minutes(15));
        let (log, incident_value, max) = (self.log.clone(), incident.clone(), self.config.max_events);
        let (mut items, count, (from, to)) =
            tokio::task::spawn_blocking(move || incident_items(&log, &incident_value, window, max, now))
                .await
                .map_err(|e| Error::Collect(e.to_string()))?
                .map_err(|e| Error::Collect(e.to_string()))?;
        let incident_id = incident.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let runs = match incident_id.parse() {
            Ok(iid) => crate::playbook::runner::stored_runs(&self.store, iid)?,
            Err(_) => Vec::new(),
        };
        items.push(Item {
            name: "runs.json".into(),
            bytes: serde_json::to_vec_pretty(&runs).map_err(|e| Error::Collect(e.to_string()))?,
        });
        items.push(Item {
            name: "versions.json".into(),
            bytes: serde_json::to_vec_pretty(&(self.versions)()).map_err(|e| Error::Collect(e.to_string()))?,
        });
        for path in files {
            let bytes =
                tokio::fs::read(path).await.map_err(|e| Error::Collect(format!("reading {}: {e}", path.display())))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
            items.push(Item { name: format!("files/{name}"), bytes });
        }
        let mut meta = meta;
        meta.insert("bundle".into(), json!(id));
        meta.insert("incident_id".into(), json!(incident_id));
        meta.insert("created_at".into(), json!(now));
        meta.insert("window".into(), json!({ "from": from, "to": to }));
        meta.insert("events".into(), json!(count));
        meta.insert("runs".into(), json!(runs.len()));
        let (manifest_bytes, manifest_hash) = manifest(&items, meta);
        for item in &items {
            self.objects.put(&format!("{id}/items/{}", item.name), item.bytes.clone()).await?;
        }
        self.objects.put(&format!("{id}/manifest.json"), manifest_bytes).await?;
        self.objects
            .put(&format!("{id}/manifest.sha256"), format!("{manifest_hash}  manifest.json\n").into_bytes())
            .await?;
        let priority = incident.get("priority").and_then(Value::as_str).and_then(Priority::parse);
        let keep =
            chrono::Duration::from_std(self.config.retention.keep(priority)).unwrap_or(chrono::Duration::days(30));
        let mut record = BundleRecord {
            id: id.to_owned(),
            incident_id,
            priority: priority.map(|p| p.as_str().to_owned()),
            created_at: now,
            retain_until: now + keep,
            manifest_sha256: manifest_hash,
            events: count,
            custody_count: 0,
            custody_head: "0".repeat(64),
        };
        self.append_custody(&mut record, "created", actor, format!("{} items, {count} events", items.len())).await?;
        Ok(record)
    }

    async fn append_custody(
        &self,
        record: &mut BundleRecord,
        event: &str,
        actor: Actor,
        detail: String,
    ) -> Result<CustodyEntry, Error> {
        let mut entry = CustodyEntry {
            seq: record.custody_count + 1,
            at: Utc::now(),
            event: event.to_owned(),
            actor,
            detail,
            manifest_sha256: record.manifest_sha256.clone(),
            prev: record.custody_head.clone(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let bytes = serde_json::to_vec_pretty(&entry).map_err(|e| Error::Collect(e.to_string()))?;
        self.objects.put(&format!("{}/custody/{:06}.json", record.id, entry.seq), bytes).await?;
        record.custody_count = entry.seq;
        record.custody_head = entry.hash.clone();
        self.records.put(&record.id, record)?;
        Ok(entry)
    }

    /// Records an access, export or transfer of a bundle.
    pub async fn record(&self, id: &str, event: &str, actor: Actor, detail: String) -> Result<CustodyEntry, Error> {
        let mut record = self.get(id)?;
        self.append_custody(&mut record, event, actor, detail).await
    }

    /// The bundle's chain of custody as stored with it.
    pub async fn custody(&self, id: &str) -> Result<Vec<CustodyEntry>, Error> {
        let mut entries = Vec::new();
        for name in self.objects.list(&format!("{id}/custody/")).await? {
            let bytes = self.objects.get(&name).await?;
            entries.push(
                serde_json::from_slice::<CustodyEntry>(&bytes)
                    .map_err(|e| Error::Storage(format!("{name} is not a custody entry: {e}")))?,
            );
        }
        Ok(entries)
    }

    /// Checks a bundle: the manifest against its pinned hash (and the one Vigil recorded),
    /// every item against the manifest, no item missing or added, and the chain of custody
    /// link by link up to the head Vigil recorded. Records the verification in the chain
    /// (when `actor` is given).
    pub async fn verify(&self, id: &str, actor: Option<Actor>) -> Result<Verification, Error> {
        let mut v = Verification { bundle: id.to_owned(), ..Verification::default() };
        let record = self.records.get(&id.to_owned())?;
        let manifest_bytes = self.objects.get(&format!("{id}/manifest.json")).await.map_err(|e| match e {
            Error::Storage(s) if s.contains("not found") || s.contains("NotFound") => Error::NotFound(id.to_owned()),
            other => other,
        })?;
        let actual = hex(&Sha256::digest(&manifest_bytes));
        let pinned = self.objects.get(&format!("{id}/manifest.sha256")).await.unwrap_or_default();
        let pinned = String::from_utf8_lossy(&pinned).split_whitespace().next().unwrap_or_default().to_owned();
        if pinned != actual {
            v.problems.push(format!("manifest.json has SHA-256 {actual}, manifest.sha256 says {pinned}"));
        }
        if let Some(r) = &record
            && r.manifest_sha256 != actual
        {
            v.problems.push(format!("manifest.json has SHA-256 {actual}, Vigil recorded {}", r.manifest_sha256));
        }
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap_or(Value::Null);
        let listed: Vec<(String, String)> = manifest["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["name"].as_str()?.to_owned(), f["sha256"].as_str()?.to_owned())))
            .collect();
        if listed.is_empty() {
            v.problems.push("the manifest lists no files".into());
        }
        let stored = self.objects.list(&format!("{id}/items/")).await?;
        for (name, sha) in &listed {
            let path = format!("{id}/items/{name}");
            match self.objects.get(&path).await {
                Ok(bytes) => {
                    let got = hex(&Sha256::digest(&bytes));
                    if &got == sha {
                        v.items_ok += 1;
                    } else {
                        v.problems.push(format!("{name}: SHA-256 {got}, the manifest says {sha}"));
                    }
                }
                Err(e) => v.problems.push(format!("{name}: missing ({e})")),
            }
        }
        for path in stored {
            let name = path.trim_start_matches(&format!("{id}/items/")).to_owned();
            if !listed.iter().any(|(n, _)| *n == name) {
                v.problems.push(format!("{name}: not in the manifest"));
            }
        }
        let chain = self.custody(id).await?;
        let mut prev = "0".repeat(64);
        for (i, entry) in chain.iter().enumerate() {
            if entry.seq != i as u64 + 1 {
                v.problems.push(format!("custody entry {} is numbered {}", i + 1, entry.seq));
            }
            if entry.prev != prev {
                v.problems.push(format!("custody entry {}: does not follow entry {}", entry.seq, i));
            }
            if entry.compute_hash() != entry.hash {
                v.problems.push(format!("custody entry {}: altered (its hash does not match)", entry.seq));
            }
            if entry.manifest_sha256 != actual {
                v.problems.push(format!("custody entry {}: names another manifest", entry.seq));
            }
            prev = entry.hash.clone();
        }
        v.custody_entries = chain.len() as u64;
        if chain.is_empty() {
            v.problems.push("no chain of custody".into());
        }
        if let Some(r) = &record
            && (r.custody_count != chain.len() as u64 || r.custody_head != prev)
        {
            v.problems.push(format!(
                "the chain has {} entries ending {}, Vigil recorded {} ending {}",
                chain.len(),
                &prev[..12],
                r.custody_count,
                &r.custody_head[..12.min(r.custody_head.len())]
            ));
        }
        v.ok = v.problems.is_empty();
        if let (Some(actor), Some(_)) = (actor, record) {
            let detail =
                if v.ok { "verified: intact".to_owned() } else { format!("verified: {} problems", v.problems.len()) };
            self.record(id, "verified", actor, detail).await?;
        }
        Ok(v)
    }

    /// Copies a bundle (items, manifest, custody) into `dest` and records the export.
    pub async fn export(&self, id: &str, dest: &std::path::Path, actor: Actor) -> Result<u64, Error> {
        self.get(id)?;
        let mut copied = 0;
        for name in self.objects.list(&format!("{id}/")).await? {
            let bytes = self.objects.get(&name).await?;
            let relative = name.trim_start_matches(&format!("{id}/")).to_owned();
            let path = dest.join(&relative);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| Error::Collect(e.to_string()))?;
            }
            tokio::fs::write(&path, bytes).await.map_err(|e| Error::Collect(format!("{}: {e}", path.display())))?;
            copied += 1;
        }
        self.record(id, "exported", actor, format!("{copied} objects to {}", dest.display())).await?;
        Ok(copied)
    }

    /// Deletes every bundle past its retention, and records each deletion.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<Deletion>, Error> {
        let mut done = Vec::new();
        for record in self.list()? {
            if record.retain_until > now {
                continue;
            }
            let mut objects = 0;
            for name in self.objects.list(&format!("{}/", record.id)).await? {
                self.objects.delete(&name).await?;
                objects += 1;
            }
            let deletion = Deletion {
                bundle: record.clone(),
                deleted_at: now,
                objects,
                actor: Actor::vigil(format!("retention: kept until {}", record.retain_until)),
            };
            self.deletions.put(&format!("{}/{}", now.to_rfc3339(), record.id), &deletion)?;
            self.records.delete(&record.id)?;
            tracing::info!(bundle = %record.id, objects, retain_until = %record.retain_until, "Evidence bundle deleted by retention");
            done.push(deletion);
        }
        Ok(done)
    }

    /// Sweeps every `sweep_interval` until `stop`.
    pub async fn run_sweeper(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            if !crate::telemetry::pause(&stop, self.config.sweep_interval).await {
                return;
            }
            if let Err(error) = self.sweep(Utc::now()).await {
                tracing::warn!(%error, "Evidence retention sweep failed; it runs again at the next interval");
            }
        }
    }
}

/// The bundle id of a step execution: the incident and a key derived from the step's
/// idempotency key, so taking the snapshot again returns the same bundle.
pub fn bundle_id(incident_id: &str, key: &str) -> String {
    format!("{incident_id}-{}", &hex(&Sha256::digest(key.as_bytes()))[..12])
}

impl EvidenceCollector for Evidence {
    fn collect<'a>(&'a self, ctx: &'a ActionContext, window: Duration) -> BoxFuture<'a, Result<Outcome, ActionError>> {
        Box::pin(async move {
            let incident_id = ctx.incident.get("id").and_then(Value::as_str).unwrap_or("none");
            let id = bundle_id(incident_id, &ctx.idempotency_key);
            let actor = Actor {
                who: "vigil".into(),
                why: format!("playbook step {} of run {}", ctx.step_id, ctx.run_id),
                from: host_name(),
            };
            let meta = json!({ "run_id": ctx.run_id, "step_id": ctx.step_id }).as_object().cloned().unwrap_or_default();
            let record = Evidence::collect(self, &id, &ctx.incident, window, &[], actor, meta)
                .await
                .map_err(|e| ActionError::Failed(e.to_string()))?;
            let location = self.objects.describe(&id);
            Ok(Outcome {
                target: Some(location.clone()),
                detail: format!(
                    "evidence bundle {location} ({} events, manifest sha256 {})",
                    record.events, record.manifest_sha256
                ),
                data: json!({ "bundle": id, "location": location, "manifest_sha256": record.manifest_sha256,
                              "events": record.events, "retain_until": record.retain_until }),
                expires_at: None,
            })
        })
    }
}

#[cfg(test)]
mod tests;
