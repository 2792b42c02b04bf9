//! WebAssembly plugins: custom actions, transforms and rule functions, loaded and replaced
//! while Vigil runs, each confined by fuel, memory and a wall-clock deadline, and able to
//! touch only the host interfaces its manifest grants.
//!
//! A plugin is a directory under `[plugins] dir` holding `plugin.toml` (see [`manifest`])
//! and a component built against the WIT package in `sdk/wit/` (`vigil:plugin@0.1.0`).
//! Loading validates the manifest, checks the signature policy, compiles the component (or
//! takes it from the on-disk cache, keyed by content hash and engine), checks its imports
//! against the grants and its export against the kind, and links it, all before the swap:
//! a plugin that fails to load leaves the previous version running. The swap is atomic and
//! calls in flight finish on the version they started with.
//!
//! Layer 3: uses `event`, `telemetry`, `store`, `source` (emit), `transform` and `actions`
//! (the traits its adapters implement).

mod adapters;
pub mod http;
pub mod manifest;
mod runtime;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};

pub use adapters::{WasmAction, WasmDecoder, WasmTransform, wit_context};
pub use manifest::{Kind, Manifest, SignatureStatus};
pub use runtime::wit;
pub use runtime::{CallError, CallStats, PluginFailure, PluginMetrics};
use runtime::{CallState, PluginContext, Warm};

use crate::event::SecurityEvent;
use crate::source::Ingestor;
use crate::source::decode::{PluginDecoders, RecordDecoder};
use crate::telemetry::{MetricsRegistry, Secret};

/// `[plugins]`.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// The plugins directory: one sub-directory per plugin with its `plugin.toml`.
    pub dir: PathBuf,
    /// Watch the directory and reload plugins whose files change.
    pub watch: bool,
    /// Refuse components that are not signed by a trusted key.
    pub require_signatures: bool,
    /// Trusted signing keys: id → base64 Ed25519 public key.
    pub trusted_keys: BTreeMap<String, String>,
    /// Secrets plugins may be granted, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Fixed addresses for names plugins call (like /etc/hosts; the SSRF guard still
    /// applies to them).
    pub hosts: BTreeMap<String, IpAddr>,
    /// Compiled components, keyed by content hash and engine (default `<data>/plugin-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Each plugin's settings (`[plugins.config.<name>]`), checked against its manifest's
    /// `[config]` schema when it loads.
    pub config: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("plugins"),
            watch: true,
            require_signatures: false,
            trusted_keys: BTreeMap::new(),
            secrets: BTreeMap::new(),
            hosts: BTreeMap::new(),
            cache_dir: None,
            config: BTreeMap::new(),
        }
    }
}

impl PluginsConfig {
    /// Problems with the settings.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (id, key) in &self.trusted_keys {
            use base64::Engine as _;
            let ok = base64::engine::general_purpose::STANDARD.decode(key).is_ok_and(|k| k.len() == 32);
            if !ok {
                errors.push((
                    format!("plugins.trusted_keys.{id}"),
                    "must be a base64 Ed25519 public key (32 bytes)".into(),
                ));
            }
        }
        if self.require_signatures && self.trusted_keys.is_empty() {
            errors.push(("plugins.require_signatures".into(), "needs at least one key in plugins.trusted_keys".into()));
        }
        errors
    }
}

/// Why a plugin did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is wrong.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// The component is missing, invalid, unsigned when signatures are required, or does
    /// not match its manifest.
    #[error("{path}: {reason}")]
    Component {
        /// The component.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One loaded plugin version.
pub struct Loaded {
    manifest: Manifest,
    manifest_path: PathBuf,
    digest: String,
    signature: SignatureStatus,
    imports: Vec<String>,
    exports: Vec<String>,
    pre: InstancePre<CallState>,
    export: ComponentExportIndex,
    /// An action's `rollback`, when the component exports it.
    rollback: Option<ComponentExportIndex>,
    context: Arc<PluginContext>,
    slots: Slots,
    pool: std::sync::Mutex<Vec<Warm>>,
    loaded_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("name", &self.manifest.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// What `vigil plugin list|inspect` and the API show of a plugin.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PluginInfo {
    /// Name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// action, transform or function.
    pub kind: Kind,
    /// WIT package version.
    pub api_version: String,
    /// What it does.
    pub description: String,
    /// The manifest's path.
    pub manifest: String,
    /// SHA-256 of the component.
    pub digest: String,
    /// `unsigned`, or the key that verified it.
    #[schemars(with = "serde_json::Value")]
    pub signature: SignatureStatus,
    /// The grants.
    pub capabilities: manifest::Capabilities,
    /// The limits.
    pub limits: manifest::Limits,
    /// The host interfaces the component imports.
    pub imports: Vec<String>,
    /// Its exports.
    pub exports: Vec<String>,
    /// When this version was loaded.
    pub loaded_at: chrono::DateTime<chrono::Utc>,
}

impl Loaded {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// What it is, for people.
    pub fn info(&self) -> PluginInfo {
        let m = &self.manifest;
        PluginInfo {
            name: m.name.clone(),
            version: m.version.clone(),
            kind: m.kind,
            api_version: m.api_version.clone(),
            description: m.description.clone(),
            manifest: self.manifest_path.display().to_string(),
            digest: self.digest.clone(),
            signature: self.signature.clone(),
            capabilities: m.capabilities.clone(),
            limits: m.limits.clone(),
            imports: self.imports.clone(),
            exports: self.exports.clone(),
            loaded_at: self.loaded_at,
        }
    }

    fn pool(&self) -> Option<&std::sync::Mutex<Vec<Warm>>> {
        self.manifest.limits.pooled.then_some(&self.pool)
    }

    fn kind(&self, wanted: Kind) -> Result<(), CallError> {
        if self.manifest.kind == wanted {
            Ok(())
        } else {
            Err(CallError::WrongKind {
                plugin: self.manifest.name.clone(),
                actual: self.manifest.kind.as_str(),
                wanted: wanted.as_str(),
            })
        }
    }

    /// Runs `execute` (blocking: call from a blocking thread).
    pub fn execute(
        &self,
        ctx: wit::ActionContext,
        clock_ms: Option<i64>,
    ) -> Result<(wit::Outcome, CallStats), CallError> {
        self.kind(Kind::Action)?;
        let ((result,), stats) = runtime::invoke::<(wit::ActionContext,), (Result<wit::Outcome, wit::PluginError>,)>(
            &self.pre,
            &self.export,
            &self.context,
            self.pool(),
            clock_ms,
            None,
            (ctx,),
        )?;
        let outcome = result.map_err(|e| CallError::Plugin(e.into()))?;
        let size = outcome.detail.len() + outcome.data.as_ref().map_or(0, String::len);
        if size as u64 > self.manifest.limits.max_output.as_u64() {
            return Err(CallError::OutputTooLarge { bytes: size, limit: self.manifest.limits.max_output });
        }
        Ok((outcome, stats))
    }

    /// Runs `rollback` (blocking); `Unsupported` when the action cannot be undone.
    pub fn rollback(
        &self,
        ctx: wit::ActionContext,
        done: wit::Outcome,
        clock_ms: Option<i64>,
    ) -> Result<(wit::Outcome, CallStats), CallError> {
        self.kind(Kind::Action)?;
        let export = self.rollback.as_ref().ok_or(CallError::Plugin(PluginFailure::Unsupported))?;
        let ((result,), stats) = runtime::invoke::<
            (wit::ActionContext, wit::Outcome),
            (Result<wit::Outcome, wit::PluginError>,),
        >(&self.pre, export, &self.context, self.pool(), clock_ms, None, (ctx, done))?;
        Ok((result.map_err(|e| CallError::Plugin(e.into()))?, stats))
    }

    /// Runs `transform` (blocking).
    pub fn transform(&self, event: &SecurityEvent) -> Result<(String, CallStats), CallError> {
        self.kind(Kind::Transform)?;
        let input = wit_event(event);
        let clock = Some(event.time.timestamp_millis());
        let ((result,), stats) = runtime::invoke::<(wit::Event,), (Result<String, wit::PluginError>,)>(
            &self.pre,
            &self.export,
            &self.context,
            self.pool(),
            clock,
            None,
            (input,),
        )?;
        let text = result.map_err(|e| CallError::Plugin(e.into()))?;
        runtime::check_output(&text, self.manifest.limits.max_output)?;
        Ok((text, stats))
    }

    /// Runs `decode` on one record (blocking): the events as JSON texts, together no larger
    /// than the plugin's `max_output`.
    pub fn decode(&self, record: &[u8]) -> Result<(Vec<String>, CallStats), CallError> {
        self.kind(Kind::Decode)?;
        let ((result,), stats) = runtime::invoke::<(Vec<u8>,), (Result<Vec<String>, wit::PluginError>,)>(
            &self.pre,
            &self.export,
            &self.context,
            self.pool(),
            None,
            None,
            (record.to_vec(),),
        )?;
        let events = result.map_err(|e| CallError::Plugin(e.into()))?;
        let bytes: usize = events.iter().map(String::len).sum();
        if bytes as u64 > self.manifest.limits.max_output.as_u64() {
            return Err(CallError::OutputTooLarge { bytes, limit: self.manifest.limits.max_output });
        }
        Ok((events, stats))
    }

    /// Runs `call` (blocking).
    /// With `fuel_cap`, at most that much fuel (a rule's budget).
    pub fn call(
        &self,
        input: &serde_json::Value,
        clock_ms: Option<i64>,
        fuel_cap: Option<u64>,
    ) -> Result<(serde_json::Value, CallStats), CallError> {
        self.kind(Kind::Function)?;
        let ((result,), stats) = runtime::invoke::<(String,), (Result<String, wit::PluginError>,)>(
            &self.pre,
            &self.export,
            &self.context,
            self.pool(),
            clock_ms,
            fuel_cap,
            (input.to_string(),),
        )?;
        let text = result.map_err(|e| CallError::Plugin(e.into()))?;
        runtime::check_output(&text, self.manifest.limits.max_output)?;
        let value = serde_json::from_str(&text)
            .map_err(|e| CallError::Plugin(PluginFailure::Failed(format!("returned non-JSON: {e}"))))?;
        Ok((value, stats))
    }
}

/// The event as the WIT record.
fn wit_event(event: &SecurityEvent) -> wit::Event {
    let ip = |e: Option<&crate::event::Endpoint>| e.and_then(|e| e.ip).map(|ip| ip.to_string());
    wit::Event {
        id: event.id.to_string(),
        time_ms: event.time.timestamp_millis(),
        class: event.class.as_str().to_owned(),
        action: event.action.clone(),
        outcome: event.outcome.as_str().to_owned(),
        source_ip: ip(event.source.as_ref()),
        destination_ip: ip(event.destination.as_ref()),
        user_name: event.user.as_ref().and_then(|u| u.name.clone()),
        host_name: event.host.as_ref().and_then(|h| h.name.clone()),
        // A SecurityEvent always serializes.
        json: serde_json::to_string(event).expect("SecurityEvent serializes to JSON"),
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<CallState>,
    config: PluginsConfig,
    cache_dir: Option<PathBuf>,
    hosts: Arc<BTreeMap<String, IpAddr>>,
    plugins: ArcSwap<BTreeMap<String, Arc<Loaded>>>,
    /// The decode plugins as input formats, refreshed with every load and unload.
    decoders: PluginDecoders,
    loading: std::sync::Mutex<()>,
    store: Option<crate::store::Store>,
    ingestor: Option<Ingestor>,
    metrics: PluginMetrics,
}

/// The plugin host: the loaded plugins and the sandbox they run in. Cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").field("plugins", &self.inner.plugins.load().keys().collect::<Vec<_>>()).finish()
    }
}

impl PluginHost {
    /// A host with no plugins loaded yet. `store` backs the `kv` capability and the compile
    /// cache lives under `data_dir` unless configured; `ingestor` receives emitted events.
    pub fn new(
        config: PluginsConfig,
        data_dir: Option<&Path>,
        store: Option<crate::store::Store>,
        ingestor: Option<Ingestor>,
        registry: &MetricsRegistry,
    ) -> Result<Self, String> {
        let engine = runtime::engine()?;
        let linker = runtime::linker(&engine)?;
        let cache_dir = config.cache_dir.clone().or_else(|| data_dir.map(|d| d.join("plugin-cache")));
        let hosts = Arc::new(config.hosts.clone());
        // The ingest path reads `plugin:NAME` formats through this handle.
        let decoders = ingestor.as_ref().map(|i| i.decoders().clone()).unwrap_or_default();
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                cache_dir,
                hosts,
                plugins: ArcSwap::from_pointee(BTreeMap::new()),
                decoders,
                loading: std::sync::Mutex::new(()),
                store,
                ingestor,
                metrics: PluginMetrics::register(registry),
            }),
        })
    }

    /// A reference that does not keep the host alive (what the decoders it hands out hold).
    fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The host behind a [`downgrade`](Self::downgrade)d reference, while it lives.
    fn upgrade(inner: &std::sync::Weak<Inner>) -> Option<Self> {
        inner.upgrade().map(|inner| Self { inner })
    }

    /// The configuration.
    pub fn config(&self) -> &PluginsConfig {
        &self.inner.config
    }

    /// The plugin called `name`, in its current version.
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.inner.plugins.load().get(name).cloned()
    }

    /// Every loaded plugin.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.inner.plugins.load().values().map(|p| p.info()).collect()
    }

    /// Names of the loaded plugins of one kind.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        self.inner
            .plugins
            .load()
            .values()
            .filter(|p| p.manifest.kind == kind)
            .map(|p| p.manifest.name.clone())
            .collect()
    }

    /// Validates and compiles the plugin at `manifest_path` without installing it.
    pub fn prepare(&self, manifest_path: &Path) -> Result<Loaded, LoadError> {
        let manifest = Manifest::load(manifest_path)?;
        let settings = manifest::resolve_config(&manifest, self.inner.config.config.get(&manifest.name))
            .map_err(|problems| manifest::ManifestError { path: manifest_path.to_owned(), problems })?;
        let path = manifest.component_path(manifest_path);
        let fail = |reason: String| LoadError::Component { path: path.clone(), reason };
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let digest = manifest::digest(&bytes);
        let signature =
            manifest::verify_signature(&manifest, &bytes, &self.inner.config.trusted_keys).map_err(&fail)?;
        if self.inner.config.require_signatures && signature == SignatureStatus::Unsigned {
            return Err(fail("is not signed, and [plugins] require_signatures is on".into()));
        }
        let component = self.compile(&bytes, &digest).map_err(&fail)?;
        let ty = component.component_type();
        let engine = &self.inner.engine;
        let mut imports = Vec::new();
        for (name, _) in ty.imports(engine) {
            let interface =
                interface_of(name).ok_or_else(|| fail(format!("imports `{name}`, which Vigil does not provide")))?;
            if !manifest.capabilities.grants(interface) {
                return Err(fail(format!("imports `{name}`, but the manifest does not grant `{interface}`")));
            }
            imports.push(name.to_owned());
        }
        imports.sort();
        let mut exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
        exports.sort();
        let wanted = manifest.kind.export();
        let export = component
            .get_export_index(None, wanted)
            .ok_or_else(|| fail(format!("is a {} but does not export `{wanted}`", manifest.kind.as_str())))?;
        let rollback = (manifest.kind == Kind::Action).then(|| component.get_export_index(None, "rollback")).flatten();
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| fail(format!("does not link: {e}")))?;
        let context = runtime::context(
            manifest.clone(),
            settings,
            &self.inner.config.secrets,
            &self.inner.hosts,
            self.inner.store.as_ref(),
            self.inner.ingestor.clone(),
            self.inner.metrics.clone(),
        )
        .map_err(&fail)?;
        Ok(Loaded {
            slots: Slots::new(manifest.limits.max_concurrent),
            manifest,
            manifest_path: manifest_path.to_owned(),
            digest,
            signature,
            imports,
            exports,
            pre,
            export,
            rollback,
            context: Arc::new(context),
            pool: std::sync::Mutex::new(Vec::new()),
            loaded_at: chrono::Utc::now(),
        })
    }

    /// Loads (or replaces) the plugin at `manifest_path`. On error the previous version, if
    /// any, keeps running.
    pub fn load(&self, manifest_path: &Path) -> Result<Arc<Loaded>, LoadError> {
        let _loading = self.inner.loading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let prepared = self.prepare(manifest_path);
        let name_hint = manifest_path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
        let loaded = match prepared {
            Ok(loaded) => Arc::new(loaded),
            Err(e) => {
                let name = name_hint.unwrap_or_default();
                self.inner
                    .metrics
                    .loads
                    .get_or_create(&runtime::CallLabels { plugin: name, result: "refused".into() })
                    .inc();
                return Err(e);
            }
        };
        let name = loaded.manifest.name.clone();
        let mut plugins = BTreeMap::clone(&self.inner.plugins.load());
        let replaced = plugins.insert(name.clone(), loaded.clone());
        self.inner.plugins.store(Arc::new(plugins));
        self.refresh_decoders();
        self.inner
            .metrics
            .loads
            .get_or_create(&runtime::CallLabels { plugin: name.clone(), result: "loaded".into() })
            .inc();
        tracing::info!(
            plugin = %name,
            version = %loaded.manifest.version,
            kind = loaded.manifest.kind.as_str(),
            digest = %loaded.digest,
            replaced = replaced.is_some(),
            "Plugin loaded."
        );
        Ok(loaded)
    }

    /// Unloads a plugin; calls in flight finish. Whether it was loaded.
    pub fn unload(&self, name: &str) -> bool {
        let _loading = self.inner.loading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut plugins = BTreeMap::clone(&self.inner.plugins.load());
        let removed = plugins.remove(name).is_some();
        self.inner.plugins.store(Arc::new(plugins));
        self.refresh_decoders();
        if removed {
            tracing::info!(plugin = %name, "Plugin unloaded.");
        }
        removed
    }

    /// Brings the loaded set in line with the plugins directory: loads new and changed
    /// plugins, unloads those whose directory is gone. Returns each failure; the others
    /// load regardless.
    pub fn sync_dir(&self) -> Vec<LoadError> {
        let dir = &self.inner.config.dir;
        let mut failures = Vec::new();
        let mut present = std::collections::BTreeSet::new();
        for manifest_path in manifests(dir) {
            let current = Manifest::load(&manifest_path).ok().and_then(|m| {
                let bytes = std::fs::read(m.component_path(&manifest_path)).ok()?;
                Some((m.name.clone(), manifest::digest(&bytes), m))
            });
            if let Some((name, digest, manifest)) = &current {
                present.insert(name.clone());
                if let Some(loaded) = self.get(name)
                    && loaded.digest == *digest
                    && toml::to_string(&loaded.manifest).ok() == toml::to_string(manifest).ok()
                {
                    continue;
                }
            }
            match self.load(&manifest_path) {
                Ok(loaded) => {
                    present.insert(loaded.manifest.name.clone());
                }
                Err(e) => {
                    tracing::error!(error = %e, "Plugin not loaded; its previous version, if any, keeps running.");
                    failures.push(e);
                }
            }
        }
        for name in self.inner.plugins.load().keys() {
            if !present.contains(name) {
                self.unload(name);
            }
        }
        failures
    }

    /// A fingerprint of the plugins directory (names, sizes, times), to notice changes.
    pub fn dir_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for manifest_path in manifests(&self.inner.config.dir) {
            let Some(dir) = manifest_path.parent() else { continue };
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                entry.path().hash(&mut hasher);
                if let Ok(meta) = entry.metadata() {
                    meta.len().hash(&mut hasher);
                    meta.modified().ok().hash(&mut hasher);
                }
            }
        }
        hasher.finish()
    }

    /// Runs an action plugin off the reactor, waiting for one of its call slots.
    pub async fn execute(&self, name: &str, ctx: wit::ActionContext) -> Result<wit::Outcome, CallError> {
        let clock = Some(ctx.now_ms);
        self.off_reactor(name, move |p| p.execute(ctx, clock)).await
    }

    /// Undoes an action plugin's `done`, off the reactor, like [`execute`](Self::execute).
    pub async fn rollback(
        &self,
        name: &str,
        ctx: wit::ActionContext,
        done: wit::Outcome,
    ) -> Result<wit::Outcome, CallError> {
        let clock = Some(ctx.now_ms);
        self.off_reactor(name, move |p| p.rollback(ctx, done, clock)).await
    }

    /// An action call on the blocking pool. Actions queue longer than functions (four times
    /// the deadline): a step may wait for a busy backend.
    async fn off_reactor(
        &self,
        name: &str,
        f: impl FnOnce(&Loaded) -> Result<(wit::Outcome, CallStats), CallError> + Send + 'static,
    ) -> Result<wit::Outcome, CallError> {
        let plugin = self.get(name).ok_or_else(|| CallError::NotLoaded(name.to_owned()))?;
        let metrics = self.inner.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let wait = plugin.manifest.limits.deadline.saturating_mul(4);
            in_slot(&metrics, &plugin, wait, f).map(|(o, _)| o)
        })
        .await
        .map_err(|e| CallError::Host(format!("the call's thread failed: {e}")))?
    }

    /// Calls a function plugin on this thread (a blocking one), waiting up to its deadline
    /// for a call slot.
    pub fn call(
        &self,
        name: &str,
        input: &serde_json::Value,
        clock_ms: Option<i64>,
    ) -> Result<serde_json::Value, CallError> {
        self.call_limited(name, input, clock_ms, None).map(|(v, _)| v)
    }

    /// [`call`](Self::call) with at most `fuel_cap` fuel, reporting what it spent.
    pub fn call_limited(
        &self,
        name: &str,
        input: &serde_json::Value,
        clock_ms: Option<i64>,
        fuel_cap: Option<u64>,
    ) -> Result<(serde_json::Value, CallStats), CallError> {
        self.with_slot(name, |p| p.call(input, clock_ms, fuel_cap))
    }

    /// Transforms an event with a transform plugin on this thread (a blocking one).
    pub fn transform(&self, name: &str, event: &SecurityEvent) -> Result<String, CallError> {
        self.with_slot(name, |p| p.transform(event)).map(|(v, _)| v)
    }

    /// Decodes one record with a decode plugin on this thread (a blocking one).
    pub fn decode(&self, name: &str, record: &[u8]) -> Result<Vec<String>, CallError> {
        self.with_slot(name, |p| p.decode(record)).map(|(v, _)| v)
    }

    /// The decode plugins, as the input formats `plugin:NAME`: a handle kept up to date as
    /// plugins load and unload (the ingestor given to [`new`](Self::new) shares it). The
    /// decoders hold the host weakly: keep the host alive while they are used.
    pub fn decoders(&self) -> PluginDecoders {
        self.refresh_decoders();
        self.inner.decoders.clone()
    }

    /// Puts the loaded decode plugins into the shared handle.
    fn refresh_decoders(&self) {
        let decoders = self
            .names(Kind::Decode)
            .into_iter()
            .map(|name| {
                let decoder: Arc<dyn RecordDecoder> = Arc::new(WasmDecoder::new(self.downgrade(), &name));
                (name, decoder)
            })
            .collect();
        self.inner.decoders.set(decoders);
    }

    /// Runs `f` in one of the plugin's call slots, waiting up to the plugin's deadline for
    /// one (calls in flight end by their deadline), so a burst queues rather than failing.
    fn with_slot<T>(&self, name: &str, f: impl FnOnce(&Loaded) -> Result<T, CallError>) -> Result<T, CallError> {
        let plugin = self.get(name).ok_or_else(|| CallError::NotLoaded(name.to_owned()))?;
        in_slot(&self.inner.metrics, &plugin, plugin.manifest.limits.deadline, f)
    }

    /// Compiles a component, through the on-disk cache when there is one.
    fn compile(&self, bytes: &[u8], digest: &str) -> Result<Component, String> {
        let engine = &self.inner.engine;
        let Some(dir) = &self.inner.cache_dir else {
            return Component::new(engine, bytes).map_err(|e| format!("is not a valid component: {e:#}"));
        };
        let path = dir.join(format!("{digest}-{}.cwasm", engine_key(engine)));
        if path.exists() {
            match cache::read(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Compiled plugin cache entry unusable; compiling again.")
                }
            }
        }
        let compiled = engine.precompile_component(bytes).map_err(|e| format!("is not a valid component: {e:#}"))?;
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &compiled)?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), error = %e, "Cannot write the compiled plugin cache.");
        }
        Component::new(engine, bytes).map_err(|e| format!("is not a valid component: {e:#}"))
    }
}

/// Runs `f` in one of `plugin`'s call slots, waiting at most `wait` for one, and counts
/// the result in `vigil_plugin_calls_total`.
fn in_slot<T>(
    metrics: &PluginMetrics,
    plugin: &Loaded,
    wait: std::time::Duration,
    f: impl FnOnce(&Loaded) -> Result<T, CallError>,
) -> Result<T, CallError> {
    let name = &plugin.manifest.name;
    let result = match plugin.slots.acquire(wait) {
        Some(_slot) => f(plugin),
        None => Err(CallError::Busy(name.clone())),
    };
    metrics.call(name, result.as_ref().map_or_else(CallError::reason, |_| "ok"));
    result
}

/// A plugin's concurrent-call slots: a counting semaphore that blocking threads wait on.
#[derive(Debug)]
struct Slots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// One slot, given back when dropped.
struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(count: usize) -> Self {
        Self { free: std::sync::Mutex::new(count), freed: std::sync::Condvar::new() }
    }

    /// A slot, waiting at most `wait` for one.
    fn acquire(&self, wait: std::time::Duration) -> Option<Slot<'_>> {
        let free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut free, _) = self
            .freed
            .wait_timeout_while(free, wait, |free| *free == 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// The engine's compatibility key: a cache entry of another Vigil or wasmtime build, or of
/// another engine configuration, is never used.
fn engine_key(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

mod cache {
    //! Reading compiled components back. Deserializing machine code is unsafe in wasmtime's
    //! API because bytes that did not come from `precompile_component` could run anything;
    //! these files are written only by this host, into its own data directory, named by
    //! the source's SHA-256 and the engine's compatibility hash, and wasmtime itself refuses
    //! artifacts of another engine version or configuration. Whoever can write that
    //! directory can already replace the plugins themselves.
    #![allow(unsafe_code)]

    use std::path::Path;

    use wasmtime::Engine;
    use wasmtime::component::Component;

    /// Read into memory rather than mapped, so a file replaced or truncated underneath a
    /// running plugin cannot fault it.
    pub(super) fn read(engine: &Engine, path: &Path) -> Result<Component, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        // SAFETY: see the module documentation: the bytes were produced by
        // `Engine::precompile_component` of a compatible engine, in a directory only Vigil
        // writes.
        unsafe { Component::deserialize(engine, &bytes) }.map_err(|e| e.to_string())
    }
}

/// `vigil:plugin/http@0.1.0` → `http`.
fn interface_of(import: &str) -> Option<&str> {
    let rest = import.strip_prefix("vigil:plugin/")?;
    let (interface, version) = rest.split_once('@')?;
    manifest::API_VERSIONS.contains(&version).then_some(interface)
}

/// The manifests under `dir`: `<dir>/<plugin>/plugin.toml`, in name order.
fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("plugin.toml"))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests;
