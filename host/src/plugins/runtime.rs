//! The sandbox: one wasmtime engine (component model, pooling allocator, fuel, epoch
//! interruption), the host side of every WIT interface, and the call path that turns
//! whatever a guest does — trap, spin, grow, recurse, flood — into a typed [`CallError`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use wasmtime::component::{ComponentNamedList, Instance, InstancePre, Lift, Linker, Lower};
use wasmtime::{Engine, Store};

use super::http::{GuardedHttp, HttpFailure};
use super::manifest::Manifest;
use crate::event::SecurityEvent;
use crate::source::Ingestor;
use crate::store::{Cf, Table};
use crate::telemetry::{MetricsRegistry, Secret};

wasmtime::component::bindgen!({ path: "../sdk/wit", world: "plugin" });

use self::vigil::plugin as api;
pub use api::types as wit;

/// How often the engine's epoch advances: the resolution of call deadlines.
const TICK: Duration = Duration::from_millis(2);
/// Log lines a call may write (the rest are counted, not written).
const LOG_LINES_PER_CALL: u32 = 50;
/// Metric names a plugin may create.
const METRIC_NAMES: usize = 64;

/// Why a call did not produce a result. The host keeps serving after every one of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No plugin of that name is loaded.
    #[error("plugin `{0}` is not loaded")]
    NotLoaded(String),
    /// The plugin is not of the kind the caller needs.
    #[error("plugin `{plugin}` is a {actual}, not a {wanted}")]
    WrongKind {
        /// The plugin.
        plugin: String,
        /// Its kind.
        actual: &'static str,
        /// The kind asked for.
        wanted: &'static str,
    },
    /// All of its concurrent call slots are taken.
    #[error("plugin `{0}` is busy (all its concurrent calls are in use)")]
    Busy(String),
    /// It ran out of fuel.
    #[error("ran out of fuel ({0} units)")]
    OutOfFuel(u64),
    /// It ran past its wall-clock deadline.
    #[error("ran past its deadline of {0:?}")]
    Deadline(Duration),
    /// It tried to grow memory past its limit.
    #[error("tried to use more than its memory limit of {0}")]
    MemoryLimit(ByteSize),
    /// It recursed past the stack limit.
    #[error("overflowed its stack")]
    StackOverflow,
    /// It trapped (a panic, an unreachable, an out-of-bounds access).
    #[error("trapped: {0}")]
    Trap(String),
    /// Its result is over the limit.
    #[error("returned {bytes} bytes, over its limit of {limit}")]
    OutputTooLarge {
        /// Size returned.
        bytes: usize,
        /// The limit.
        limit: ByteSize,
    },
    /// It answered with an error of its own.
    #[error("{0}")]
    Plugin(PluginFailure),
    /// The host failed around the call (instantiation, a full instance pool).
    #[error("host: {0}")]
    Host(String),
}

impl CallError {
    /// The label of `vigil_plugin_calls_total{result}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotLoaded(_) => "not_loaded",
            Self::WrongKind { .. } => "wrong_kind",
            Self::Busy(_) => "busy",
            Self::OutOfFuel(_) => "out_of_fuel",
            Self::Deadline(_) => "deadline",
            Self::MemoryLimit(_) => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::Trap(_) => "trap",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::Plugin(PluginFailure::Retryable(_)) => "retryable",
            Self::Plugin(_) => "plugin_error",
            Self::Host(_) => "host_error",
        }
    }
}

/// An error the plugin returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PluginFailure {
    /// Bad input or parameters.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Transient.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Permanent.
    #[error("failed: {0}")]
    Failed(String),
    /// It does not implement the export.
    #[error("does not implement this export")]
    Unsupported,
}

impl From<wit::PluginError> for PluginFailure {
    fn from(e: wit::PluginError) -> Self {
        match e {
            wit::PluginError::InvalidInput(m) => Self::InvalidInput(m),
            wit::PluginError::Retryable(m) => Self::Retryable(m),
            wit::PluginError::Failed(m) => Self::Failed(m),
            wit::PluginError::Unsupported => Self::Unsupported,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub plugin: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeniedLabels {
    pub plugin: String,
    pub capability: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GuestMetricLabels {
    pub plugin: String,
    pub name: String,
}

/// The plugin host's metrics.
#[derive(Clone, Debug, Default)]
pub struct PluginMetrics {
    pub(crate) calls: Family<CallLabels, Counter>,
    pub(crate) denied: Family<DeniedLabels, Counter>,
    pub(crate) fuel: Family<GuestMetricLabels, Counter>,
    pub(crate) guest_counters: Family<GuestMetricLabels, Counter>,
    pub(crate) guest_gauges: Family<GuestMetricLabels, Gauge>,
    pub(crate) loads: Family<CallLabels, Counter>,
}

impl PluginMetrics {
    /// Registers them.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let m = Self::default();
        registry.register("plugin_calls", "Plugin calls, by plugin and result (ok or why not).", m.calls.clone());
        registry.register(
            "plugin_denied",
            "Host calls a plugin made outside its grants, by plugin and capability.",
            m.denied.clone(),
        );
        registry.register("plugin_fuel_consumed", "Fuel plugin calls consumed, by plugin.", m.fuel.clone());
        registry.register("plugin_guest", "Counters plugins keep (metrics capability).", m.guest_counters.clone());
        registry.register("plugin_guest_gauge", "Gauges plugins set (metrics capability).", m.guest_gauges.clone());
        registry.register("plugin_loads", "Plugin loads, by plugin and result.", m.loads.clone());
        m
    }

    pub(crate) fn call(&self, plugin: &str, result: &str) {
        self.calls.get_or_create(&CallLabels { plugin: plugin.into(), result: result.into() }).inc();
    }

    pub(crate) fn deny(&self, plugin: &str, capability: &str) {
        self.denied.get_or_create(&DeniedLabels { plugin: plugin.into(), capability: capability.into() }).inc();
    }
}

/// What the host functions of one plugin may reach (shared by its calls).
#[derive(Debug)]
pub struct PluginContext {
    pub(crate) manifest: Manifest,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) http: Option<GuardedHttp>,
    pub(crate) secrets: BTreeMap<String, Secret>,
    pub(crate) kv: Option<Table<String, Vec<u8>>>,
    pub(crate) kv_used: std::sync::Mutex<u64>,
    pub(crate) ingestor: Option<Ingestor>,
    pub(crate) metrics: PluginMetrics,
    pub(crate) metric_names: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
}

impl PluginContext {
    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn kv_key(&self, key: &str) -> String {
        format!("{}/{key}", self.manifest.name)
    }
}

/// Caps memory growth and remembers that it did.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = desired <= self.memory;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

/// A store's data: one call's view of its plugin.
pub struct CallState {
    pub(crate) plugin: Arc<PluginContext>,
    pub(crate) limiter: Limiter,
    /// The event's or incident's time during replays.
    pub(crate) clock_ms: Option<i64>,
    logs: u32,
    emitted: Vec<SecurityEvent>,
}

impl std::fmt::Debug for CallState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallState").field("plugin", &self.plugin.name()).finish_non_exhaustive()
    }
}

impl CallState {
    pub(crate) fn new(plugin: Arc<PluginContext>, clock_ms: Option<i64>) -> Self {
        let memory = usize::try_from(plugin.manifest.limits.memory.as_u64()).unwrap_or(usize::MAX);
        Self { plugin, limiter: Limiter { memory, hit: false }, clock_ms, logs: 0, emitted: Vec::new() }
    }
}

impl wit::Host for CallState {}

impl api::log::Host for CallState {
    fn write(&mut self, level: api::log::Level, message: String) {
        use api::log::Level;
        self.logs += 1;
        if self.logs > LOG_LINES_PER_CALL {
            return;
        }
        let message: String = message.chars().take(1024).collect();
        let plugin = self.plugin.name();
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl api::config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.plugin.settings.get(&key).cloned()
    }
}

impl api::clock::Host for CallState {
    fn now_ms(&mut self) -> i64 {
        self.clock_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
    }
}

impl api::kv::Host for CallState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let table = self.plugin.kv.as_ref()?;
        table.get(&self.plugin.kv_key(&key)).ok().flatten()
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let plugin = &self.plugin;
        let (Some(table), Some(grant)) = (&plugin.kv, &plugin.manifest.capabilities.kv) else {
            return Err("kv is not granted".into());
        };
        let full = plugin.kv_key(&key);
        let old = table.get(&full).ok().flatten().map_or(0, |v| (full.len() + v.len()) as u64);
        let new = (full.len() + value.len()) as u64;
        let mut used = plugin.kv_used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let after = used.saturating_sub(old) + new;
        if after > grant.quota.as_u64() {
            plugin.metrics.deny(plugin.name(), "kv_quota");
            return Err(format!("kv quota of {} exceeded", grant.quota));
        }
        table.put(&full, &value).map_err(|e| format!("kv write failed: {e}"))?;
        *used = after;
        Ok(())
    }

    fn delete(&mut self, key: String) {
        let plugin = &self.plugin;
        let Some(table) = &plugin.kv else { return };
        let full = plugin.kv_key(&key);
        if let Ok(Some(old)) = table.get(&full)
            && table.delete(&full).is_ok()
        {
            let mut used = plugin.kv_used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *used = used.saturating_sub((full.len() + old.len()) as u64);
        }
    }
}

impl api::http::Host for CallState {
    fn send(&mut self, request: api::http::Request) -> Result<api::http::Response, api::http::HttpError> {
        use api::http::{HttpError, Response};
        let plugin = self.plugin.clone();
        let (Some(http), Some(runtime)) = (&plugin.http, &plugin.runtime) else {
            plugin.metrics.deny(plugin.name(), "http");
            return Err(HttpError::Denied("http is not granted".into()));
        };
        let timeout = request.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)));
        let sent = runtime.block_on(http.send(&request.method, &request.url, &request.headers, request.body, timeout));
        match sent {
            Ok(r) => Ok(Response { status: r.status, headers: r.headers, body: r.body }),
            Err(HttpFailure::Denied(reason)) => {
                plugin.metrics.deny(plugin.name(), "http");
                tracing::warn!(plugin = plugin.name(), %reason, "Plugin HTTP request denied.");
                Err(HttpError::Denied(reason))
            }
            Err(HttpFailure::Timeout) => Err(HttpError::Timeout),
            Err(HttpFailure::TooLarge) => Err(HttpError::TooLarge),
            Err(HttpFailure::Failed(m)) => Err(HttpError::Failed(m)),
        }
    }
}

impl api::secrets::Host for CallState {
    fn get(&mut self, name: String) -> Result<String, String> {
        let plugin = &self.plugin;
        if !plugin.manifest.capabilities.secrets.contains(&name) {
            plugin.metrics.deny(plugin.name(), "secrets");
            return Err(format!("secret `{name}` is not granted"));
        }
        plugin
            .secrets
            .get(&name)
            .map(|s| s.expose().to_owned())
            .ok_or_else(|| format!("secret `{name}` is not configured"))
    }
}

impl api::emit::Host for CallState {
    fn event(&mut self, json: String) -> Result<(), String> {
        if self.plugin.ingestor.is_none() {
            return Err("emit is not available here".into());
        }
        if self.emitted.len() >= 1000 {
            return Err("at most 1000 events per call".into());
        }
        let limits = crate::event::DecodeLimits::default();
        let event =
            crate::event::decode_event(json.as_bytes(), &limits, chrono::Utc::now()).map_err(|e| e.to_string())?;
        self.emitted.push(event);
        Ok(())
    }
}

impl api::metrics::Host for CallState {
    fn counter(&mut self, name: String, delta: u64) {
        if self.admit_metric(&name) {
            let labels = GuestMetricLabels { plugin: self.plugin.name().to_owned(), name };
            self.plugin.metrics.guest_counters.get_or_create(&labels).inc_by(delta);
        }
    }

    fn gauge(&mut self, name: String, value: i64) {
        if self.admit_metric(&name) {
            let labels = GuestMetricLabels { plugin: self.plugin.name().to_owned(), name };
            self.plugin.metrics.guest_gauges.get_or_create(&labels).set(value);
        }
    }
}

impl CallState {
    /// At most [`METRIC_NAMES`] names per plugin, each short and plain.
    fn admit_metric(&self, name: &str) -> bool {
        let plain =
            !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let mut names = self.plugin.metric_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        plain && (names.contains(name) || names.len() < METRIC_NAMES && names.insert(name.to_owned()))
    }
}

/// The engine every plugin runs in, with its epoch ticker.
pub fn engine() -> Result<Engine, String> {
    let mut pooling = wasmtime::PoolingAllocationConfig::new();
    pooling
        .total_component_instances(256)
        .total_core_instances(512)
        .total_memories(256)
        .total_tables(512)
        .max_memory_size(1 << 30)
        .max_component_instance_size(1 << 20)
        // A call's instance is small and short-lived: resetting the pages it dirtied in
        // place (found with Linux's PAGEMAP_SCAN where the kernel has it) is cheaper than
        // giving memory back to the kernel and faulting it in again.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10);
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        // Explicit bounds checks instead of guard pages and signals: a memory then never
        // needs its protection changed, so a fresh instance per call costs no mprotect
        // (and no TLB shootdown across cores) when its memory grows or its slot is reused.
        .signals_based_traps(false)
        .memory_guard_size(0)
        .guard_before_linear_memory(false)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
    let engine = Engine::new(&config).map_err(|e| format!("WebAssembly engine: {e}"))?;
    let weak = engine.weak();
    // The clock behind every call's deadline (wasmtime's epoch interruption): a tick every
    // TICK, not a wait for some condition. It ends with the engine.
    std::thread::Builder::new()
        .name("vigil-plugin-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map_err(|e| format!("epoch thread: {e}"))?;
    Ok(engine)
}

/// The linker with every host interface; which of them a plugin may import is checked
/// when it loads.
pub fn linker(engine: &Engine) -> Result<Linker<CallState>, String> {
    let mut linker = Linker::new(engine);
    Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
        .map_err(|e| format!("linking the host interfaces: {e}"))?;
    Ok(linker)
}

/// What one call spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Fuel consumed.
    pub fuel: u64,
    /// Wall-clock time, instantiation included.
    pub elapsed: Duration,
}

/// A reusable instance (`pooled = true`).
pub(crate) struct Warm {
    store: Store<CallState>,
    instance: Instance,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warm")
    }
}

/// Calls export `export` of a fresh instance (or a pooled one) under the plugin's limits.
pub(crate) fn invoke<P, R>(
    pre: &InstancePre<CallState>,
    export: &wasmtime::component::ComponentExportIndex,
    context: &Arc<PluginContext>,
    pool: Option<&std::sync::Mutex<Vec<Warm>>>,
    clock_ms: Option<i64>,
    fuel_cap: Option<u64>,
    params: P,
) -> Result<(R, CallStats), CallError>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    let mut limits = context.manifest.limits.clone();
    if let Some(cap) = fuel_cap {
        limits.fuel = limits.fuel.min(cap);
    }
    let limits = &limits;
    let started = Instant::now();
    let reused = pool.and_then(|p| p.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop());
    let Warm { mut store, instance } = match reused {
        Some(warm) => warm,
        None => {
            let mut store = Store::new(pre.engine(), CallState::new(context.clone(), clock_ms));
            store.limiter(|state| &mut state.limiter);
            // Instantiation runs guest start code: it spends the call's fuel and deadline too.
            arm(&mut store, limits.fuel, limits.deadline);
            let instance = pre.instantiate(&mut store).map_err(|e| classify(e, &store, limits))?;
            Warm { store, instance }
        }
    };
    store.data_mut().clock_ms = clock_ms;
    store.data_mut().logs = 0;
    arm(&mut store, limits.fuel, limits.deadline);
    let func = instance
        .get_typed_func::<P, R>(&mut store, export)
        .map_err(|e| CallError::Host(format!("export has an unexpected type: {e}")))?;
    let result = func.call(&mut store, params).map_err(|e| classify(e, &store, limits));
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    context
        .metrics
        .fuel
        .get_or_create(&GuestMetricLabels { plugin: context.name().to_owned(), name: String::new() })
        .inc_by(fuel);
    let emitted = std::mem::take(&mut store.data_mut().emitted);
    let result = result?;
    if !emitted.is_empty()
        && let Some(ingestor) = &context.ingestor
        && let Err(e) = ingestor.append_blocking(&format!("plugin/{}", context.name()), &emitted, Vec::new())
    {
        tracing::error!(plugin = context.name(), error = %e, "Storing a plugin's emitted events failed.");
    }
    if let Some(pool) = pool {
        pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Warm { store, instance });
    }
    Ok((result, CallStats { fuel, elapsed: started.elapsed() }))
}

fn arm(store: &mut Store<CallState>, fuel: u64, deadline: Duration) {
    // A fresh store always accepts fuel (fuel is enabled on the engine).
    let _ = store.set_fuel(fuel);
    let ticks = deadline.as_micros().div_ceil(TICK.as_micros()).max(1);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
    store.epoch_deadline_trap();
}

fn classify(error: wasmtime::Error, store: &Store<CallState>, limits: &super::manifest::Limits) -> CallError {
    if store.data().limiter.hit {
        return CallError::MemoryLimit(limits.memory);
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => CallError::OutOfFuel(limits.fuel),
        Some(wasmtime::Trap::Interrupt) => CallError::Deadline(limits.deadline),
        Some(wasmtime::Trap::StackOverflow) => CallError::StackOverflow,
        Some(trap) => CallError::Trap(trap.to_string()),
        None => CallError::Trap(format!("{error:#}").lines().next().unwrap_or("").to_owned()),
    }
}

/// Refuses a result over the plugin's output limit.
pub(crate) fn check_output(text: &str, limit: ByteSize) -> Result<(), CallError> {
    if text.len() as u64 > limit.as_u64() {
        return Err(CallError::OutputTooLarge { bytes: text.len(), limit });
    }
    Ok(())
}

/// The context a plugin's host calls use.
#[allow(clippy::too_many_arguments)]
pub(crate) fn context(
    manifest: Manifest,
    settings: BTreeMap<String, String>,
    secrets: &BTreeMap<String, Secret>,
    hosts: &Arc<BTreeMap<String, IpAddr>>,
    store: Option<&crate::store::Store>,
    ingestor: Option<Ingestor>,
    metrics: PluginMetrics,
) -> Result<PluginContext, String> {
    let http = match &manifest.capabilities.http {
        Some(grant) => Some(GuardedHttp::new(grant.clone(), hosts.clone())?),
        None => None,
    };
    let granted: BTreeMap<String, Secret> = manifest
        .capabilities
        .secrets
        .iter()
        .filter_map(|name| secrets.get(name).map(|s| (name.clone(), s.clone())))
        .collect();
    let kv = match (&manifest.capabilities.kv, store) {
        (Some(_), Some(store)) => Some(Table::new(store, Cf::State, b"plugin-kv/")),
        _ => None,
    };
    let kv_used = match &kv {
        Some(table) => kv_usage(table, &manifest.name).map_err(|e| format!("reading its kv usage: {e}"))?,
        None => 0,
    };
    let emit = if manifest.capabilities.emit { ingestor } else { None };
    Ok(PluginContext {
        manifest,
        settings,
        http,
        secrets: granted,
        kv,
        kv_used: std::sync::Mutex::new(kv_used),
        ingestor: emit,
        metrics,
        metric_names: std::sync::Mutex::new(Default::default()),
        runtime: tokio::runtime::Handle::try_current().ok(),
    })
}

/// Bytes (keys and values) a plugin keeps in kv.
fn kv_usage(table: &Table<String, Vec<u8>>, plugin: &str) -> crate::store::Result<u64> {
    let prefix = format!("{plugin}/");
    let mut used = 0u64;
    let mut from = prefix.clone();
    loop {
        let page = table.scan(Some(&from), 1024)?;
        let mut last = None;
        for (key, value) in &page {
            if !key.starts_with(&prefix) {
                return Ok(used);
            }
            used += (key.len() + value.len()) as u64;
            last = Some(key.clone());
        }
        match last {
            Some(key) if page.len() == 1024 => from = format!("{key}\0"),
            _ => return Ok(used),
        }
    }
}
