//! Threat intelligence: STIX 2.1 indicators from TAXII 2.1 collections and bundle files,
//! kept in RocksDB with a TTL and deduplicated by id and version, and a matcher fast enough
//! to look up every event's addresses, domains, URLs, emails and hashes at ingest.
//!
//! Layer 1. The ingest path sees this module only through [`crate::event::Enricher`],
//! which [`Intel`] implements: matched events are stored with `threat.*` fields, so
//! detection, hunts and every sink see the same enrichment. Rules also call
//! `ioc_match(value)` (in `rules`) for values enrichment does not cover.

pub mod bundle;
pub mod matcher;
pub mod stix;
pub mod store;
pub mod taxii;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use matcher::{Matcher, MatcherStats};
pub use store::{ApplyReport, FeedState, IndicatorStore};
pub use taxii::FeedError;

use crate::event::{SecurityEvent, Threat};
use crate::telemetry::{MetricsRegistry, Secret, names};

/// `[intel]`: threat-intelligence feeds and matching.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IntelConfig {
    /// Add `threat.*` fields to events that match an indicator, at ingest.
    pub enrich: bool,
    /// How long an indicator without `valid_until` is kept after it was stored or updated.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub default_ttl: Duration,
    /// Indicators below this confidence (0–100) are stored but not matched.
    pub min_confidence: u8,
    /// How often expired indicators are removed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub sweep_interval: Duration,
    /// The feeds (`[[intel.feeds]]`).
    pub feeds: Vec<FeedConfig>,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            enrich: true,
            default_ttl: Duration::from_secs(30 * 24 * 3600),
            min_confidence: 0,
            sweep_interval: Duration::from_secs(3600),
            feeds: Vec::new(),
        }
    }
}

/// What a feed is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// A TAXII 2.1 collection (`url` is the discovery endpoint or an API root).
    #[default]
    Taxii,
    /// A STIX 2.1 bundle: a file (`path`) or a URL (`url`), read whole each poll.
    Bundle,
}

/// How a feed authenticates.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FeedAuth {
    /// No credentials.
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password (`${ENV}` or `{ file = "…" }`).
        password: Secret,
    },
    /// An API key in a header.
    ApiKey {
        /// The header (`Authorization`, `X-Api-Key`).
        header: String,
        /// The key (`${ENV}` or `{ file = "…" }`).
        key: Secret,
    },
}

/// A client certificate for mutual TLS.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    /// PEM certificate (chain).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// One feed (`[[intel.feeds]]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Name, in `threat.feed` and metrics.
    pub name: String,
    /// `taxii` or `bundle`.
    #[serde(default)]
    pub kind: FeedKind,
    /// TAXII discovery or API root URL; or a bundle's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// A bundle file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The TAXII collection, by id or title.
    #[serde(default)]
    pub collection: Option<String>,
    /// Credentials.
    #[serde(default)]
    pub auth: FeedAuth,
    /// A client certificate.
    #[serde(default)]
    pub client_cert: Option<ClientCert>,
    /// Extra CA certificate (PEM) to trust for this feed.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How often to poll.
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Objects per TAXII page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// Requests per minute at most.
    #[serde(default = "default_rate")]
    pub requests_per_minute: u32,
    /// Retries of a request that failed with 429, 5xx or a network error.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_backoff: Duration,
    /// Request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// TTL of this feed's indicators (default `intel.default_ttl`).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Duration>,
    /// Confidence of indicators that state none.
    #[serde(default)]
    pub default_confidence: Option<u8>,
}

fn default_interval() -> Duration {
    Duration::from_secs(900)
}
fn default_page_size() -> usize {
    500
}
fn default_rate() -> u32 {
    60
}
fn default_retries() -> u32 {
    3
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl FeedConfig {
    /// A feed of `kind` named `name` with every other setting at its default.
    pub fn new(name: &str, kind: FeedKind) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            url: None,
            path: None,
            collection: None,
            auth: FeedAuth::None,
            client_cert: None,
            ca_file: None,
            interval: default_interval(),
            page_size: default_page_size(),
            requests_per_minute: default_rate(),
            retries: default_retries(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
            ttl: None,
            default_confidence: None,
        }
    }
}

impl IntelConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.min_confidence > 100 {
            errors.push(("intel.min_confidence".into(), "must be 0–100".into()));
        }
        if self.default_ttl.is_zero() || self.sweep_interval.is_zero() {
            errors.push(("intel".into(), "default_ttl and sweep_interval must be longer than 0s".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, feed) in self.feeds.iter().enumerate() {
            let at = |field: &str| format!("intel.feeds.{i}.{field}");
            if feed.name.is_empty() || !feed.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                errors.push((at("name"), "must be non-empty and use only A-Z a-z 0-9 _ -".into()));
            } else if !names.insert(feed.name.clone()) {
                errors.push((at("name"), format!("feed {:?} is defined twice", feed.name)));
            }
            match feed.kind {
                FeedKind::Taxii => {
                    if feed.url.is_none() {
                        errors.push((at("url"), "a TAXII feed needs the discovery or API root URL".into()));
                    }
                    if feed.collection.is_none() {
                        errors.push((at("collection"), "a TAXII feed needs a collection id or title".into()));
                    }
                }
                FeedKind::Bundle => {
                    if feed.url.is_some() == feed.path.is_some() {
                        errors.push((at("path"), "a bundle feed needs exactly one of path and url".into()));
                    }
                }
            }
            if let Some(url) = &feed.url {
                match reqwest::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.password().is_none() => {}
                    Ok(_) => errors.push((at("url"), "must be http(s) without credentials in it (use auth)".into())),
                    Err(e) => errors.push((at("url"), format!("not a URL: {e}"))),
                }
            }
            if feed.interval.is_zero() || feed.timeout.is_zero() {
                errors.push((at("interval"), "interval and timeout must be longer than 0s".into()));
            }
            if feed.page_size == 0 || feed.requests_per_minute == 0 {
                errors.push((at("page_size"), "page_size and requests_per_minute must be at least 1".into()));
            }
            if feed.default_confidence.is_some_and(|c| c > 100) {
                errors.push((at("default_confidence"), "must be 0–100".into()));
            }
        }
        errors
    }
}

/// Why an intel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A feed could not be read.
    #[error(transparent)]
    Feed(#[from] FeedError),
    /// A bundle file could not be read.
    #[error("cannot read bundle {path}: {reason}")]
    Bundle {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What one poll or import did.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct ImportReport {
    /// The feed.
    pub feed: String,
    /// Pages read (1 for a bundle).
    pub pages: u64,
    /// Objects read.
    pub objects: u64,
    /// What storing them did.
    #[serde(flatten)]
    pub applied: ApplyReport,
    /// Objects that did not parse: `object N (id): reason`.
    pub malformed: Vec<String>,
    /// The matcher after the import.
    pub matcher: MatcherStats,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedResult {
    feed: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabel {
    feed: String,
}

#[derive(Clone, Debug, Default)]
struct Metrics {
    objects: Family<FeedResult, Counter>,
    polls: Family<FeedResult, Counter>,
    indicators: Gauge,
    matches: Family<FeedLabel, Counter>,
    expired: Counter,
}

/// The threat-intel service: the store, the current matcher, the feeds. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Intel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: IndicatorStore,
    matcher: ArcSwap<Matcher>,
    config: IntelConfig,
    metrics: Metrics,
}

impl Intel {
    /// Opens the indicator store of `store` and indexes what it holds.
    pub fn open(
        store: &crate::store::Store,
        config: IntelConfig,
        registry: Option<&MetricsRegistry>,
    ) -> Result<Self, Error> {
        let metrics = Metrics::default();
        if let Some(registry) = registry {
            registry.register(
                names::INTEL_OBJECTS,
                "STIX objects read from feeds, by feed and result.",
                metrics.objects.clone(),
            );
            registry.register(names::INTEL_POLLS, "Feed polls, by feed and result.", metrics.polls.clone());
            registry.register(names::INTEL_INDICATORS, "Indicators in the matcher.", metrics.indicators.clone());
            registry.register(
                names::INTEL_MATCHES,
                "Events that matched an indicator at ingest, by feed.",
                metrics.matches.clone(),
            );
            registry.register(
                names::INTEL_EXPIRED,
                "Indicators removed because they expired.",
                metrics.expired.clone(),
            );
        }
        let intel = Self {
            inner: Arc::new(Inner {
                store: IndicatorStore::new(store),
                matcher: ArcSwap::from_pointee(Matcher::default()),
                config,
                metrics,
            }),
        };
        intel.rebuild()?;
        Ok(intel)
    }

    /// The settings.
    pub fn config(&self) -> &IntelConfig {
        &self.inner.config
    }

    /// The indicator store.
    pub fn store(&self) -> &IndicatorStore {
        &self.inner.store
    }

    /// The current matcher.
    pub fn matcher(&self) -> Arc<Matcher> {
        self.inner.matcher.load_full()
    }

    /// Re-reads every stored indicator into a new matcher and swaps it in.
    pub fn rebuild(&self) -> Result<MatcherStats, Error> {
        let matcher = Matcher::build(self.inner.store.load(self.inner.config.min_confidence)?);
        let stats = matcher.stats();
        self.inner.metrics.indicators.set(i64::try_from(stats.indicators).unwrap_or(i64::MAX));
        self.inner.matcher.store(Arc::new(matcher));
        Ok(stats)
    }

    /// The indicator for `value` (an address, domain, URL, email or hash) valid at
    /// `time_ms`, as a JSON object (what `ioc_match` returns to rules).
    pub fn lookup(&self, value: &str, time_ms: i64) -> Option<Value> {
        let matcher = self.inner.matcher.load();
        let hit = matcher.any(value, time_ms)?;
        let e = hit.entry;
        Some(serde_json::json!({
            "id": &*e.id,
            "name": e.name.as_deref(),
            "type": hit.kind,
            "feed": &*e.feed,
            "confidence": e.confidence,
            "value": value,
            "actors": e.context.actors,
            "campaigns": e.context.campaigns,
            "malware": e.context.malware,
            "labels": e.context.labels,
            "kill_chain_phases": e.context.kill_chain_phases,
        }))
    }

    fn policy(&self, feed: &FeedConfig) -> store::FeedPolicy {
        store::FeedPolicy {
            feed: feed.name.clone(),
            ttl: feed.ttl.unwrap_or(self.inner.config.default_ttl),
            default_confidence: feed.default_confidence,
        }
    }

    /// Stores the objects of a STIX bundle (or envelope) as coming from `feed` and
    /// re-indexes when anything changed. Bad objects are reported, the rest kept.
    pub fn import(&self, feed: &FeedConfig, doc: &Value) -> Result<ImportReport, Error> {
        let mut report = ImportReport { feed: feed.name.clone(), pages: 1, ..ImportReport::default() };
        self.import_page(feed, doc, &mut report)?;
        report.matcher = if report.applied.changed() { self.rebuild()? } else { self.matcher().stats() };
        Ok(report)
    }

    fn import_page(&self, feed: &FeedConfig, doc: &Value, report: &mut ImportReport) -> Result<(), Error> {
        let (objects, malformed) = stix::parse_objects(doc);
        report.objects += (objects.len() + malformed.len()) as u64;
        let applied = self.inner.store.apply(&self.policy(feed), objects, Utc::now())?;
        let count = |result: &str, n: u64| {
            if n > 0 {
                self.inner
                    .metrics
                    .objects
                    .get_or_create(&FeedResult { feed: feed.name.clone(), result: result.into() })
                    .inc_by(n);
            }
        };
        count("added", applied.added);
        count("updated", applied.updated);
        count("unchanged", applied.unchanged);
        count("revoked", applied.revoked);
        count("ignored", applied.ignored);
        count("skipped", (applied.skipped.len() + malformed.len()) as u64);
        for reason in applied.skipped.iter().chain(malformed.iter().map(|(_, r)| r)).take(20) {
            tracing::warn!(feed = %feed.name, %reason, "STIX object skipped");
        }
        report.malformed.extend(malformed.into_iter().map(|(_, r)| r));
        report.applied.absorb(applied);
        Ok(())
    }

    /// Polls one feed once: a TAXII collection from its stored `added_after`, page by
    /// page, each page stored before the next is asked for; or a whole bundle.
    pub async fn poll(&self, feed: &FeedConfig) -> Result<ImportReport, Error> {
        let result = self.poll_inner(feed).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.inner.metrics.polls.get_or_create(&FeedResult { feed: feed.name.clone(), result: outcome.into() }).inc();
        // The position was stored page by page; this records how the poll ended.
        let mut state = self.inner.store.feed_state(&feed.name)?;
        match &result {
            Ok(report) => {
                state.last_success = Some(Utc::now());
                state.last_error = None;
                state.objects += report.objects;
            }
            Err(e) => state.last_error = Some(e.to_string()),
        }
        self.inner.store.set_feed_state(&feed.name, &state)?;
        result
    }

    async fn poll_inner(&self, feed: &FeedConfig) -> Result<ImportReport, Error> {
        let mut report = ImportReport { feed: feed.name.clone(), ..ImportReport::default() };
        match feed.kind {
            FeedKind::Bundle => {
                let doc = match (&feed.path, &feed.url) {
                    (Some(path), _) => {
                        let text = tokio::fs::read(path)
                            .await
                            .map_err(|e| Error::Bundle { path: path.clone(), reason: e.to_string() })?;
                        serde_json::from_slice(&text)
                            .map_err(|e| Error::Bundle { path: path.clone(), reason: format!("not JSON: {e}") })?
                    }
                    (None, Some(url)) => {
                        let client = taxii::FeedClient::new(feed)?;
                        client.get_json(url, "application/stix+json;version=2.1, application/json").await?.0
                    }
                    (None, None) => {
                        return Err(
                            FeedError::Config { feed: feed.name.clone(), reason: "no path or url".into() }.into()
                        );
                    }
                };
                report.pages = 1;
                self.import_page(feed, &doc, &mut report)?;
            }
            FeedKind::Taxii => {
                let client = taxii::FeedClient::new(feed)?;
                let url = feed.url.as_deref().unwrap_or_default();
                let root = client.api_root(url).await?;
                let collection = client.collection(&root, feed.collection.as_deref().unwrap_or_default()).await?;
                let mut state = self.inner.store.feed_state(&feed.name)?;
                // Every page of one poll repeats the first request's parameters (TAXII
                // servers refuse a `next` whose filter changed); the position advances
                // page by page, so a poll cut short resumes after what it stored.
                let since = state.added_after.clone();
                let mut next: Option<String> = None;
                loop {
                    let page =
                        client.page(&root, &collection, since.as_deref(), next.as_deref(), feed.page_size).await?;
                    report.pages += 1;
                    self.import_page(feed, &page.envelope, &mut report)?;
                    if let Some(last) = page.date_added_last {
                        state.added_after = Some(last);
                        self.inner.store.set_feed_state(&feed.name, &state)?;
                    }
                    let more = page.envelope.get("more").and_then(Value::as_bool).unwrap_or(false);
                    next = page.envelope.get("next").and_then(Value::as_str).map(str::to_owned);
                    if !more || next.is_none() || report.pages > 100_000 {
                        break;
                    }
                }
            }
        }
        report.matcher = if report.applied.changed() { self.rebuild()? } else { self.matcher().stats() };
        tracing::info!(
            feed = %feed.name, pages = report.pages, objects = report.objects, added = report.applied.added,
            updated = report.applied.updated, skipped = report.applied.skipped.len() + report.malformed.len(),
            indicators = report.matcher.indicators, "Threat-intel feed polled"
        );
        Ok(report)
    }

    /// Removes expired indicators and re-indexes when any went.
    pub fn sweep(&self) -> Result<u64, Error> {
        let removed = self.inner.store.sweep(Utc::now())?;
        if removed > 0 {
            self.inner.metrics.expired.inc_by(removed);
            tracing::info!(removed, "Expired threat-intel indicators removed");
            self.rebuild()?;
        }
        Ok(removed)
    }

    /// Polls every feed on its interval and sweeps expired indicators, until `stop`.
    pub fn spawn(&self, stop: CancellationToken) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for feed in self.inner.config.feeds.clone() {
            let intel = self.clone();
            let stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    // Shutdown does not wait for a poll (or its retries) to finish: the
                    // position is stored page by page.
                    let polled = tokio::select! {
                        () = stop.cancelled() => return,
                        polled = intel.poll(&feed) => polled,
                    };
                    if let Err(error) = polled {
                        tracing::warn!(feed = %feed.name, %error, "Threat-intel feed poll failed; the indicators already stored stay in use");
                    }
                    if !crate::telemetry::pause(&stop, feed.interval).await {
                        return;
                    }
                }
            });
        }
        let intel = self.clone();
        tasks.spawn(async move {
            loop {
                if !crate::telemetry::pause(&stop, intel.inner.config.sweep_interval).await {
                    return;
                }
                let sweeper = intel.clone();
                match tokio::task::spawn_blocking(move || sweeper.sweep()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "Threat-intel sweep failed"),
                    Err(error) => tracing::warn!(%error, "Threat-intel sweep panicked"),
                }
            }
        });
        tasks
    }
}

impl crate::event::Enricher for Intel {
    fn threats(&self, events: &[SecurityEvent]) -> Vec<(usize, Threat)> {
        if !self.inner.config.enrich {
            return Vec::new();
        }
        let threats = self.inner.matcher.load().threats(events);
        for (_, threat) in &threats {
            self.inner.metrics.matches.get_or_create(&FeedLabel { feed: threat.feed.clone() }).inc();
        }
        threats
    }
}

#[cfg(test)]
mod tests;
