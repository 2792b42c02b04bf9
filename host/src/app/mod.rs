//! Builds the running system from a validated config, runs it, and shuts it down in order:
//! stop intake → drain detection → flush sinks → persist → close the store.
//!
//! Top layer: may use every module.

pub mod demo;
pub mod scenario;
pub mod service;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actions::audit::AuditLog;
use crate::actions::{Registry, SafetyPolicy};
use crate::api::{self, ApiState};
use crate::config::VigilConfig;
use crate::export::sinks::chat::ChatSink;
use crate::export::sinks::datadog::DatadogSink;
use crate::export::sinks::elasticsearch::ElasticsearchSink;
use crate::export::sinks::email::EmailSink;
use crate::export::sinks::file::FileSink;
use crate::export::sinks::http::HttpSink;
use crate::export::sinks::opsgenie::OpsgenieSink;
use crate::export::sinks::pagerduty::PagerDutySink;
use crate::export::sinks::splunk_hec::SplunkHecSink;
use crate::export::sinks::sumo_logic::SumoLogicSink;
use crate::export::sinks::syslog::SyslogSink;
use crate::export::sinks::{slack, teams};
use crate::export::{Encoder, Exporter, ExporterHandle, ExporterMetrics, Route, Sink, SinkConfig, SinkError, SinkKind};
use crate::incident::worker::{DetectionWorker, LiveRules, WorkerHandle};
use crate::incident::{ChangeKind, IncidentChange};
use crate::playbook::notify::Notify;
use crate::playbook::{PlaybookSet, Runner, RunnerDeps};
use crate::plugins::PluginHost;
use crate::rules::RuleSet;
use crate::source::Ingestor;
use crate::source::file::FileSource;
use crate::source::syslog::SyslogSource;
use crate::store::{Log, LogWriter, Store};
use crate::telemetry::{MetricsRegistry, names};
use crate::transform::{Format, Redaction};

/// What to run besides the configured pipeline.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serve the HTTP API.
    pub api: bool,
    /// Print each incident to stdout as it opens.
    pub print_incidents: bool,
}

/// The running system.
#[derive(Debug)]
pub struct Pipeline {
    config: VigilConfig,
    store: Store,
    log: Log,
    writer: Option<LogWriter>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    /// The shared ingest path (the demo and tests feed it directly).
    pub ingestor: Ingestor,
    /// The metrics registry.
    pub metrics: Arc<MetricsRegistry>,
    incidents: broadcast::Sender<IncidentChange>,
    /// The live rule set.
    pub rules: LiveRules,
    /// The detection worker, which owns incidents.
    pub worker: WorkerHandle,
    printer: Option<JoinHandle<()>>,
    ready: Arc<AtomicBool>,
    intake: CancellationToken,
    intake_tasks: TaskTracker,
    drain_detection: CancellationToken,
    stop_detection: CancellationToken,
    detection_drained: Option<tokio::sync::oneshot::Receiver<()>>,
    detection: Option<JoinHandle<()>>,
    drain_sinks: CancellationToken,
    stop_sinks: CancellationToken,
    sink_tasks: TaskTracker,
    sinks: Vec<ExporterHandle>,
    /// The playbook runner.
    pub runner: Option<Runner>,
    playbooks: Option<Arc<arc_swap::ArcSwap<PlaybookSet>>>,
    background: CancellationToken,
    api_addr: Option<SocketAddr>,
    syslog_addrs: (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>),
    plugins: Option<PluginHost>,
    intel: crate::intel::Intel,
}

impl Pipeline {
    /// Opens the store and starts every stage. Fails before anything runs if a part
    /// cannot be built (bad rules, busy port, unusable TLS files).
    pub async fn start(config: VigilConfig, options: Options) -> anyhow::Result<Self> {
        let metrics = Arc::new(MetricsRegistry::default());
        let store = Store::open(&config.store).context("opening the store")?;
        let (log, writer, writer_thread) = Log::start(&store, &config.store).context("starting the event log")?;
        let intel = crate::intel::Intel::open(&store, config.intel.clone(), Some(&metrics))
            .map_err(|e| anyhow::anyhow!("intel: {e}"))?;
        let ingestor =
            Ingestor::new(writer.clone(), config.ingest.clone(), &metrics).with_enricher(Arc::new(intel.clone()));
        let plugins = plugin_host(&config, Some(&store), Some(ingestor.clone()), &metrics)?;
        let rules = load_rules(&config, plugins.as_ref(), Some(&intel))?;

        let incidents = broadcast::Sender::new(1024);
        let (worker, handle) = DetectionWorker::new(
            log.clone(),
            writer.clone(),
            rules.clone(),
            config.detect.clone(),
            &config.incidents,
            &metrics,
            incidents.clone(),
        )
        .context("starting detection")?;
        let live_rules = LiveRules::new(
            config.rules.dir.clone(),
            rule_options(&config, plugins.as_ref(), Some(&intel)),
            handle.clone(),
            rules,
            &metrics,
        );
        let worker = match &config.incidents.claims {
            Some(claims) => {
                let instance = config.store.path.display().to_string();
                let claims = crate::incident::claims::Claims::connect(claims, instance)
                    .await
                    .map_err(|e| anyhow::anyhow!("incidents.claims: {e}"))?;
                worker.with_claims(Arc::new(claims))
            }
            None => worker,
        };
        let drain_detection = CancellationToken::new();
        let stop_detection = CancellationToken::new();
        let (drained_tx, detection_drained) = tokio::sync::oneshot::channel();
        let detection = tokio::spawn(worker.run(drain_detection.clone(), stop_detection.clone(), drained_tx));

        let mut pipeline = Self {
            store,
            log,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
            ingestor,
            metrics,
            incidents,
            rules: live_rules,
            worker: handle,
            printer: None,
            ready: Arc::new(AtomicBool::new(false)),
            intake: CancellationToken::new(),
            intake_tasks: TaskTracker::new(),
            drain_detection,
            stop_detection,
            detection_drained: Some(detection_drained),
            detection: Some(detection),
            drain_sinks: CancellationToken::new(),
            stop_sinks: CancellationToken::new(),
            sink_tasks: TaskTracker::new(),
            sinks: Vec::new(),
            runner: None,
            playbooks: None,
            background: CancellationToken::new(),
            api_addr: None,
            syslog_addrs: (None, None, None),
            plugins,
            intel,
            config,
        };
        pipeline.start_sinks().await?;
        pipeline.start_playbooks()?;
        pipeline.start_sources(&options).await?;
        pipeline.start_background();
        if options.print_incidents {
            pipeline.print_incidents();
        }
        pipeline.ready.store(true, Ordering::Release);
        Ok(pipeline)
    }

    async fn start_sinks(&mut self) -> anyhow::Result<()> {
        let metrics = ExporterMetrics::register(&self.metrics);
        for (name, config) in self.config.sinks.clone() {
            let built = |e: SinkError| anyhow::anyhow!("sink {name} cannot start: {e}");
            match &config.kind {
                SinkKind::File(c) => {
                    // Plain JSON lines carry their kind and sequence number.
                    let sink = FileSink::new(c, config.format == Format::Json);
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::SplunkHec(c) => {
                    let sink = SplunkHecSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Elasticsearch(c) => {
                    let sink = ElasticsearchSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Datadog(c) => {
                    let sink = DatadogSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::SumoLogic(c) => {
                    let sink = SumoLogicSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Syslog(c) => {
                    let sink = SyslogSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Http(c) => {
                    let sink = HttpSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Pagerduty(c) => {
                    let sink = PagerDutySink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Opsgenie(c) => {
                    let sink = OpsgenieSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Slack(c) => {
                    let sink = ChatSink::new(c.clone(), slack::message).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Email(c) => {
                    let sink = EmailSink::new(c.clone()).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Teams(c) => {
                    let sink = ChatSink::new(c.clone(), teams::card).map_err(built)?;
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
                SinkKind::Nats(c) => {
                    let sink = crate::export::sinks::nats::NatsSink::new(c.clone());
                    self.spawn_sink(&name, sink, config, &metrics).await?
                }
            }
        }
        Ok(())
    }

    async fn spawn_sink<S: Sink>(
        &mut self,
        name: &str,
        sink: S,
        config: SinkConfig,
        metrics: &ExporterMetrics,
    ) -> anyhow::Result<()> {
        let mut route = Route::new(config.route.clone()).map_err(|e| anyhow::anyhow!("sinks.{name}.route: {e}"))?;
        if config.kind.is_channel() {
            route = route.channel(name);
        }
        let redaction = if config.redact.is_empty() {
            None
        } else {
            Some(Redaction::new(config.redact.clone()).map_err(|e| anyhow::anyhow!("sinks.{name}.redact: {e}"))?)
        };
        let mut encoder = Encoder::new(route, redaction, &config.format);
        if let Some(plugin) = &config.transform {
            let is_transform =
                |h: &&PluginHost| h.get(plugin).is_some_and(|p| p.manifest().kind == crate::plugins::Kind::Transform);
            let Some(host) = self.plugins.as_ref().filter(is_transform) else {
                anyhow::bail!("sinks.{name}.transform: no transform plugin `{plugin}` is loaded (see [plugins] dir)");
            };
            encoder = encoder.with_transform(Box::new(crate::plugins::WasmTransform::new(host, plugin)));
        }
        let (exporter, handle) =
            Exporter::start(name, sink, config, encoder, self.log.clone(), metrics, self.stop_sinks.clone())
                .await
                .with_context(|| format!("starting sink {name}"))?
                .map_err(|e| anyhow::anyhow!("sink {name} cannot open: {e}"))?;
        self.sinks.push(handle);
        self.sink_tasks.spawn(exporter.run(self.drain_sinks.clone()));
        Ok(())
    }

    /// The playbook directory of `config`.
    pub fn playbook_dir(config: &VigilConfig) -> std::path::PathBuf {
        config.playbooks.dir.clone().unwrap_or_else(|| config.rules.dir.join("playbooks"))
    }

    fn actions(&self) -> anyhow::Result<Registry> {
        let mut registry =
            actions(&self.config, &self.store, &self.log, Some(self.worker.clone()), self.plugins.as_ref())?;
        // Evidence bundles of playbooks go through `forensics`: its storage, its custody.
        let live = self.rules.clone();
        let evidence = evidence(&self.config, &self.store, &self.log, move || live.current(), self.plugins.clone())?;
        let snapshot =
            crate::actions::snapshot::AuditSnapshot::new(self.log.clone(), self.config.actions.audit_snapshot.clone())
                .with_collector(Arc::new(evidence.clone()));
        registry.insert(Arc::new(snapshot));
        tokio::spawn(evidence.run_sweeper(self.background.clone()));
        Ok(registry)
    }

    /// The threat-intel service.
    pub fn intel(&self) -> &crate::intel::Intel {
        &self.intel
    }

    /// The plugin host, when `[plugins] dir` exists.
    pub fn plugins(&self) -> Option<&PluginHost> {
        self.plugins.as_ref()
    }

    fn start_playbooks(&mut self) -> anyhow::Result<()> {
        let actions = Arc::new(self.actions()?);
        let dir = Self::playbook_dir(&self.config);
        let playbooks = PlaybookSet::load_dir(&dir, &actions).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the playbooks in {} are invalid:\n  {}", dir.display(), list.join("\n  "))
        })?;
        tracing::info!(dir = %dir.display(), playbooks = playbooks.all().count(), dry_run = self.config.playbooks.dry_run, "Playbooks loaded.");
        let playbooks = Arc::new(arc_swap::ArcSwap::from_pointee(playbooks));
        let deps = RunnerDeps {
            store: self.store.clone(),
            log: self.log.clone(),
            actions,
            policy: Arc::new(SafetyPolicy::new(self.config.actions.policy.clone(), &self.store)),
            audit: Arc::new(AuditLog::open(&self.store).context("opening the audit trail")?),
            playbooks: playbooks.clone(),
            rules: Some(self.rules.clone()),
            worker: Some(self.worker.clone()),
            config: self.config.playbooks.clone(),
        };
        let runner = Runner::new(deps, &self.metrics);
        runner.start().context("starting the playbook runner")?;
        if let Some(nats) = self.config.actions.audit_nats.clone() {
            let (store, token) = (self.store.clone(), self.background.clone());
            tokio::spawn(crate::actions::audit::publish_to_nats(store, nats, token));
        }
        self.runner = Some(runner);
        self.playbooks = Some(playbooks);
        Ok(())
    }

    /// Loads the playbook directory again; on any error the running playbooks stay.
    pub fn reload_playbooks(&self) -> anyhow::Result<usize> {
        let (Some(current), Some(runner)) = (&self.playbooks, &self.runner) else { return Ok(0) };
        reload_playbooks(&Self::playbook_dir(&self.config), current, &runner.actions())
    }

    /// The running sinks.
    pub fn sinks(&self) -> &[ExporterHandle] {
        &self.sinks
    }

    async fn start_sources(&mut self, options: &Options) -> anyhow::Result<()> {
        if self.config.sources.syslog.enabled() {
            let syslog = SyslogSource::bind(self.config.sources.syslog.clone(), self.ingestor.clone()).await?;
            self.syslog_addrs = syslog.local_addrs();
            tracing::info!(udp = ?self.syslog_addrs.0, tcp = ?self.syslog_addrs.1, tls = ?self.syslog_addrs.2, "Syslog listening.");
            self.intake_tasks.spawn(syslog.run(self.intake.clone()));
        }
        if let Some(nats) = self.config.sources.nats.clone() {
            let source = crate::source::nats::NatsSource::new(nats, self.ingestor.clone(), &self.store, &self.metrics);
            let mut tasks =
                source.start(self.intake.clone()).await.map_err(|e| anyhow::anyhow!("sources.nats: {e}"))?;
            self.intake_tasks.spawn(async move { while tasks.join_next().await.is_some() {} });
        }
        for file in self.config.sources.file.clone() {
            tracing::info!(path = %file.path.display(), "Tailing file.");
            let source = FileSource::new(file, self.ingestor.clone(), &self.store);
            let token = self.intake.clone();
            self.intake_tasks.spawn_blocking(move || source.run_blocking(token));
        }
        if let Some(address) = self.config.telemetry.metrics_listen {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (telemetry.metrics_listen)"))?;
            tracing::info!(address = ?listener.local_addr().ok(), "Metrics listening (no token).");
            // Served until the very end of shutdown, so a scraper sees the drain.
            let (router, token) = (api::metrics_router(self.metrics.clone()), self.background.clone());
            tokio::spawn(async move {
                if let Err(e) = api::serve(listener, router, None, token).await {
                    tracing::error!(error = %e, "Metrics server failed.");
                }
            });
        }
        if options.api {
            let listener = tokio::net::TcpListener::bind(self.config.api.listen)
                .await
                .with_context(|| format!("cannot listen on {} (api.listen)", self.config.api.listen))?;
            self.api_addr = listener.local_addr().ok();
            tracing::info!(address = ?self.api_addr, "API listening.");
            let state = ApiState {
                ingestor: self.ingestor.clone(),
                store: self.store.clone(),
                metrics: self.metrics.clone(),
                ready: self.ready.clone(),
                rules: self.rules.clone(),
                worker: self.worker.clone(),
                sinks: self.sinks.clone().into(),
                runner: self.runner.clone(),
                log: self.log.clone(),
                auth: api::auth::Auth::new(
                    &self.config.api.auth,
                    self.config.api.auth.tokens_path(&self.config.store.path),
                ),
                webhooks: Arc::new(self.config.api.webhooks.clone()),
                detect: self.config.detect.clone(),
                incident_policy: crate::incident::Policy::new(&self.config.incidents.priority),
                backtests: Default::default(),
                plugins: self.plugins.clone(),
                intel: self.intel.clone(),
                hunt: self.config.hunt.clone(),
            };
            let router = api::router(state, &self.config.api);
            let tls = match &self.config.api.tls {
                Some(t) => Some(
                    crate::source::tls::acceptor(&t.cert_file, &t.key_file, t.client_ca_file.as_deref())
                        .map_err(|e| anyhow::anyhow!("api.tls: {e}"))?,
                ),
                None => None,
            };
            let token = self.intake.clone();
            self.intake_tasks.spawn(async move {
                if let Err(e) = api::serve(listener, router, tls, token).await {
                    tracing::error!(error = %e, "API server failed.");
                }
            });
        }
        Ok(())
    }

    /// Gauges sampled every second, log retention, the rule-file watcher and Vigil's own
    /// health events.
    fn start_background(&self) {
        service::spawn_watchdog(self.background.clone());
        self.watch_rules();
        self.watch_plugins();
        let feeds = self.intel.spawn(self.background.clone());
        tokio::spawn(async move { feeds.join_all().await });
        self.start_hunts();
        self.emit_health();
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct ConsumerLabels {
            consumer: String,
        }
        let records = Gauge::<i64>::default();
        let bytes = Gauge::<i64>::default();
        let lag = Family::<ConsumerLabels, Gauge>::default();
        self.metrics.register(names::LOG_RECORDS, "Records in the log.", records.clone());
        self.metrics.register(names::LOG_BYTES, "Bytes the log occupies on disk.", bytes.clone());
        self.metrics.register(names::CONSUMER_LAG, "Records a consumer has yet to process.", lag.clone());
        let log = self.log.clone();
        let token = self.background.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! { _ = tick.tick() => {}, () = token.cancelled() => return }
                let log = log.clone();
                let Ok((head, tail, size, consumers)) = tokio::task::spawn_blocking(move || {
                    (log.head(), log.tail().unwrap_or(0), log.size_bytes(), log.consumers())
                })
                .await
                else {
                    continue;
                };
                records.set((head + 1).saturating_sub(tail) as i64);
                bytes.set(size as i64);
                for c in consumers {
                    lag.get_or_create(&ConsumerLabels { consumer: c.name().to_owned() })
                        .set(head.saturating_sub(c.committed()) as i64);
                }
            }
        });
        let deleted = prometheus_client::metrics::counter::Counter::<u64>::default();
        self.metrics.register(names::LOG_RETENTION_DELETED, "Records removed by retention.", deleted.clone());
        let log = self.log.clone();
        let policy = self.config.store.retention.clone();
        let token = self.background.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(policy.interval);
            loop {
                tokio::select! { _ = tick.tick() => {}, () = token.cancelled() => return }
                let (log, policy) = (log.clone(), policy.clone());
                match tokio::task::spawn_blocking(move || log.apply_retention(&policy)).await {
                    Ok(Ok(report)) => {
                        deleted.inc_by(report.deleted);
                        if report.held_by_consumer {
                            tracing::warn!(
                                "Log retention is held back by a consumer that has not caught up; the log stays over its limits."
                            );
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "Log retention failed."),
                    Err(_) => {}
                }
            }
        });
    }

    /// Loads, replaces and unloads plugins as their directory changes (polled every 2 s);
    /// when function plugins change, the rules are compiled again so the rules that need
    /// them start (or stop).
    fn watch_plugins(&self) {
        let Some(host) = self.plugins.clone() else { return };
        if !self.config.plugins.watch {
            return;
        }
        let (rules, token) = (self.rules.clone(), self.background.clone());
        tokio::spawn(async move {
            let mut seen = host.dir_fingerprint();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! { _ = tick.tick() => {}, () = token.cancelled() => return }
                let probe = host.clone();
                let Ok(now) = tokio::task::spawn_blocking(move || probe.dir_fingerprint()).await else { continue };
                if now == seen {
                    continue;
                }
                seen = now;
                let before = host.names(crate::plugins::Kind::Function);
                let synced = host.clone();
                if tokio::task::spawn_blocking(move || synced.sync_dir()).await.is_err() {
                    continue;
                }
                if host.names(crate::plugins::Kind::Function) != before
                    && let Err(e) = rules.reload().await
                {
                    tracing::warn!(error = %e, "Rules not recompiled after a plugin change.");
                }
            }
        });
    }

    /// Reloads the rules and playbooks on SIGHUP (`systemctl reload`), and when their files
    /// change (polled every 2 s) under `rules.watch`. SIGHUP is always taken: its default
    /// action would end the process.
    fn watch_rules(&self) {
        let poll = self.config.rules.watch && self.config.rules.dir.exists();
        let rules = self.rules.clone();
        let playbooks = self
            .playbooks
            .clone()
            .zip(self.runner.as_ref().map(Runner::actions))
            .map(|(set, actions)| (Self::playbook_dir(&self.config), set, actions));
        let token = self.background.clone();
        let failures = prometheus_client::metrics::counter::Counter::<u64>::default();
        self.metrics.register(
            "rules_reload_failures",
            "Rule reloads refused because the new rules did not compile.",
            failures.clone(),
        );
        tokio::spawn(async move {
            let mut seen = rules.files_fingerprint();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    _ = tick.tick(), if poll => false,
                    _ = hangup => true,
                    () = token.cancelled() => return,
                };
                let now = rules.files_fingerprint();
                if now == seen && !forced {
                    continue;
                }
                seen = now;
                if forced {
                    tracing::info!("SIGHUP: reloading rules and playbooks.");
                    service::reloading();
                }
                if let Some((dir, set, actions)) = &playbooks {
                    match reload_playbooks(dir, set, actions) {
                        Ok(count) => tracing::info!(playbooks = count, "Playbooks reloaded."),
                        Err(e) => tracing::warn!(error = %e, "Playbook reload refused."),
                    }
                }
                match rules.reload().await {
                    Ok(count) => tracing::info!(rules = count, "Rule files changed; new rules running."),
                    Err(crate::incident::worker::ReloadError::Invalid(errors)) => {
                        failures.inc();
                        for e in &errors {
                            tracing::warn!(error = %e, "Rule reload refused.");
                        }
                        tracing::warn!(
                            errors = errors.len(),
                            "The edited rules do not compile; the previous rules keep running."
                        );
                    }
                    Err(e) => tracing::error!(error = %e, "Rule reload failed."),
                }
                if forced {
                    service::ready(&format!("Running {} rule(s)", rules.current().rules().len()));
                }
            }
        });
    }

    /// Every `health_interval`, one `system` event per sink with its backlog, so rules can
    /// alert on Vigil's own delivery health.
    /// The hunt indexer and the saved hunts.
    fn start_hunts(&self) {
        let settings = &self.config.hunt;
        let index = if settings.index.enabled {
            match crate::hunt::Index::new(&self.store, &settings.index) {
                Ok(index) => {
                    let sweep = self.config.store.retention.interval.max(Duration::from_secs(60));
                    tokio::spawn(index.clone().run(self.log.clone(), self.background.clone(), sweep));
                    Some(index)
                }
                Err(error) => {
                    tracing::warn!(%error, "Hunt indexes are off");
                    None
                }
            }
        } else {
            None
        };
        let options = self.rules.options().clone();
        for saved in settings.saved.clone() {
            let live = self.rules.clone();
            let with = crate::hunt::saved::Schedule {
                log: self.log.clone(),
                index: index.clone(),
                ingestor: self.ingestor.clone(),
                options: options.clone(),
                rules: move || live.current(),
                max_delay: settings.max_delay,
            };
            tokio::spawn(saved.schedule(with, self.background.clone()));
        }
    }

    fn emit_health(&self) {
        if self.config.sinks.is_empty() {
            return;
        }
        let (log, ingestor, token) = (self.log.clone(), self.ingestor.clone(), self.background.clone());
        let interval = self.config.telemetry.health_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tokio::select! { _ = tick.tick() => {}, () = token.cancelled() => return }
                let reader = log.clone();
                let Ok(Ok(events)) = tokio::task::spawn_blocking(move || health_events(&reader)).await else {
                    continue;
                };
                if let Err(e) = ingestor.append("vigil", &events, Vec::new()).await {
                    tracing::warn!(error = %e, "Health events could not be stored.");
                }
            }
        });
    }

    fn print_incidents(&mut self) {
        let mut changes = self.incidents.subscribe();
        let mut actions = self.runner.as_ref().map(Runner::subscribe);
        self.printer = Some(tokio::spawn(async move {
            // How many rules each printed incident had: a rule joining is printed too.
            let mut printed: std::collections::HashMap<crate::event::IncidentId, usize> = Default::default();
            loop {
                let next_action = async {
                    match actions.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    change = changes.recv() => match change {
                        Ok(change) if change.change == ChangeKind::Opened => {
                            printed.insert(change.incident.id, change.incident.rules.len());
                            print_incident(&change);
                        }
                        Ok(change) if change.change == ChangeKind::Updated => {
                            let rules = change.incident.rules.len();
                            if printed.get(&change.incident.id).is_some_and(|n| *n < rules) {
                                printed.insert(change.incident.id, rules);
                                print_joined(&change);
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("({n} incident changes not shown)"),
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    line = next_action => match line {
                        Ok(line) => println!("PLAYBOOK {line}"),
                        Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("({n} playbook lines not shown)"),
                        Err(broadcast::error::RecvError::Closed) => actions = None,
                    },
                }
            }
            while let Some(Ok(line)) = actions.as_mut().map(|rx| rx.try_recv()) {
                println!("PLAYBOOK {line}");
            }
        }));
    }

    /// Incident changes as they are committed.
    pub fn subscribe_incidents(&self) -> broadcast::Receiver<IncidentChange> {
        self.incidents.subscribe()
    }

    /// The address the API listens on, when it runs.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The syslog listeners' addresses (udp, tcp, tls).
    pub fn syslog_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        self.syslog_addrs
    }

    /// The event log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Stops in order: intake, detection (drained to the head), playbook runs (triggered by
    /// the last incidents, steps in flight finished), sinks (flushed within
    /// `shutdown.flush_timeout`), background tasks; then persists and closes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.ready.store(false, Ordering::Release);
        tracing::info!("Stopping intake.");
        self.intake.cancel();
        self.intake_tasks.close();
        self.intake_tasks.wait().await;

        tracing::info!(head = self.log.head(), "Draining detection.");
        self.drain_detection.cancel();
        if let Some(drained) = self.detection_drained.take() {
            let _ = drained.await;
        }
        if let Some(runner) = &self.runner {
            tracing::info!("Finishing playbook runs (new incidents trigger; steps in flight finish).");
            runner.shutdown(self.config.shutdown.flush_timeout).await;
        }
        self.stop_detection.cancel();
        if let Some(detection) = self.detection.take() {
            let _ = detection.await;
        }
        // Detection is done: closing the channel lets the printer show the last incidents.
        drop(self.incidents);
        if let Some(printer) = self.printer.take() {
            let _ = printer.await;
        }

        tracing::info!("Flushing sinks.");
        self.drain_sinks.cancel();
        self.sink_tasks.close();
        if tokio::time::timeout(self.config.shutdown.flush_timeout, self.sink_tasks.wait()).await.is_err() {
            tracing::warn!(timeout = ?self.config.shutdown.flush_timeout, "Sinks did not catch up in time; they resume from their cursors at the next start.");
            self.stop_sinks.cancel();
            self.sink_tasks.wait().await;
        }
        self.background.cancel();

        tracing::info!("Persisting and closing the store.");
        drop(self.writer.take());
        drop(self.ingestor);
        if let Some(thread) = self.writer_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await??;
        Ok(())
    }
}

/// One `sink_health` event per sink consumer: backlog records and the age of the oldest
/// undelivered record.
fn health_events(log: &Log) -> crate::store::Result<Vec<crate::event::SecurityEvent>> {
    let head = log.head();
    let now = chrono::Utc::now();
    let mut events = Vec::new();
    for consumer in log.consumers() {
        let Some(sink) = consumer.name().strip_prefix("sink/") else { continue };
        let committed = consumer.committed();
        let oldest = log.read(committed + 1, 1, usize::MAX)?.into_iter().next().filter(|e| e.seq <= head);
        let age = oldest.map_or(0, |e| (now.timestamp_millis() - e.time_ms).max(0) / 1000);
        let mut event = crate::event::SecurityEvent::new(crate::event::EventClass::System, now);
        event.provider = Some("vigil".into());
        event.action = Some("sink_health".into());
        event.message = Some(format!("sink {sink}: {} records behind", head.saturating_sub(committed)));
        event.attributes.insert(
            "sink".into(),
            serde_json::json!({ "name": sink, "backlog_records": head.saturating_sub(committed), "backlog_age_seconds": age }),
        );
        events.push(event);
    }
    Ok(events)
}

/// The native actions plus `notify` over the configured channels. Without a worker
/// (planning from the command line), nftables is left untouched and `notify` cannot run.
pub fn actions(
    config: &VigilConfig,
    store: &Store,
    log: &Log,
    worker: Option<WorkerHandle>,
    plugins: Option<&PluginHost>,
) -> anyhow::Result<Registry> {
    let mut settings = config.actions.clone();
    if worker.is_none()
        && let Some(nft) = &mut settings.block_ip.nftables
    {
        nft.manage = false;
    }
    let mut actions = Registry::native(&settings, store, log).map_err(|e| anyhow::anyhow!("actions: {e}"))?;
    let channels = config.sinks.iter().filter(|(_, c)| c.kind.is_channel()).map(|(name, _)| name.clone()).collect();
    actions.insert(Arc::new(Notify::new(worker, channels)));
    Ok(match plugins {
        Some(host) => actions.with_source(Arc::new(host.clone())),
        None => actions,
    })
}

fn reload_playbooks(
    dir: &std::path::Path,
    current: &arc_swap::ArcSwap<PlaybookSet>,
    actions: &Registry,
) -> anyhow::Result<usize> {
    let set = PlaybookSet::load_dir(dir, actions).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the playbooks do not load; the previous ones keep running:\n  {}", list.join("\n  "))
    })?;
    let count = set.all().count();
    current.store(Arc::new(set));
    Ok(count)
}

/// The evidence service of `[forensics]`; `rules` gives the rule set whose versions
/// bundles record.
pub fn evidence(
    config: &VigilConfig,
    store: &Store,
    log: &Log,
    rules: impl Fn() -> Arc<RuleSet> + Send + Sync + 'static,
    plugins: Option<PluginHost>,
) -> anyhow::Result<crate::forensics::Evidence> {
    let versions: crate::forensics::Versions = Arc::new(move || {
        let rules: Vec<serde_json::Value> = rules()
            .rules()
            .iter()
            .map(|r| {
                serde_json::json!({ "id": r.meta.id.as_str(), "fingerprint": format!("{:016x}", r.fingerprint),
                                    "file": r.path.file_name().map(|f| f.to_string_lossy().into_owned()) })
            })
            .collect();
        let plugins: Vec<serde_json::Value> = plugins
            .as_ref()
            .map(PluginHost::list)
            .unwrap_or_default()
            .into_iter()
            .map(|p| serde_json::json!({ "name": p.name, "version": p.version, "digest": p.digest }))
            .collect();
        serde_json::json!({ "vigil": env!("CARGO_PKG_VERSION"), "rules": rules, "plugins": plugins })
    });
    let mut settings = config.forensics.clone();
    // The playbook action's own directory setting still says where local bundles go.
    if let (crate::forensics::StorageConfig::Local, Some(dir)) = (&settings.storage, &config.actions.audit_snapshot.dir)
    {
        settings.storage = crate::forensics::StorageConfig::Dir { path: dir.clone() };
    }
    crate::forensics::Evidence::new(store, log, settings, versions).map_err(|e| anyhow::anyhow!("forensics: {e}"))
}

/// The plugin host of `[plugins]`, with every plugin of its directory loaded; `None` when
/// the directory does not exist. A plugin that fails to load is logged and left out.
pub fn plugin_host(
    config: &VigilConfig,
    store: Option<&Store>,
    ingestor: Option<Ingestor>,
    metrics: &MetricsRegistry,
) -> anyhow::Result<Option<PluginHost>> {
    let settings = &config.plugins;
    if !settings.dir.is_dir() {
        tracing::debug!(dir = %settings.dir.display(), "No plugins directory; plugins are off.");
        return Ok(None);
    }
    let host = PluginHost::new(settings.clone(), Some(&config.store.path), store.cloned(), ingestor, metrics)
        .map_err(|e| anyhow::anyhow!("plugins: {e}"))?;
    let failures = host.sync_dir();
    tracing::info!(dir = %settings.dir.display(), loaded = host.list().len(), failed = failures.len(), "Plugins loaded.");
    Ok(Some(host))
}

/// How rules compile here: the configured options, with the plugin host behind
/// `plugin::invoke` and the threat intel behind `ioc_match`.
pub fn rule_options(
    config: &VigilConfig,
    plugins: Option<&PluginHost>,
    intel: Option<&crate::intel::Intel>,
) -> crate::rules::CompileOptions {
    crate::rules::CompileOptions { plugins: plugins.cloned(), intel: intel.cloned(), ..config.rules.compile_options() }
}

fn load_rules(
    config: &VigilConfig,
    plugins: Option<&PluginHost>,
    intel: Option<&crate::intel::Intel>,
) -> anyhow::Result<RuleSet> {
    let dir = &config.rules.dir;
    if !dir.exists() {
        tracing::warn!(dir = %dir.display(), "Rule directory does not exist; running without rules.");
        return Ok(RuleSet::empty(&config.rules.limits));
    }
    match RuleSet::load_dir(dir, &rule_options(config, plugins, intel)) {
        Ok(rules) => {
            let sigma = rules.sigma_report();
            tracing::info!(
                dir = %dir.display(),
                rules = rules.rules().len(),
                sigma = sigma.compiled,
                sigma_idle = sigma.idle.len(),
                sigma_refused = sigma.refused.len(),
                "Rules loaded."
            );
            Ok(rules)
        }
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            bail!("the rules in {} do not compile:\n  {}", dir.display(), list.join("\n  "))
        }
    }
}

/// One line per opened incident, for people watching a terminal.
pub fn print_incident(change: &IncidentChange) {
    let i = &change.incident;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "INCIDENT {}  {}  [{}]  events={} entities={}  id={}",
        i.priority,
        i.title,
        i.rule_id,
        i.event_count,
        entity_list(i),
        i.id
    );
}

/// Prints a further rule joining an incident (its family): `JOINED P1  title  rule=…`.
pub fn print_joined(change: &IncidentChange) {
    let i = &change.incident;
    let joined = i.rules.last().map_or("", |r| r.as_str());
    let rules: Vec<&str> = i.rules.iter().map(|r| r.as_str()).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "JOINED   {}  {}  rule={joined}  [{}]  events={} entities={}  id={}",
        i.priority,
        i.title,
        rules.join(","),
        i.event_count,
        entity_list(i),
        i.id
    );
}

/// Up to eight of an incident's entities, and how many more it has.
fn entity_list(i: &crate::incident::Incident) -> String {
    let e = &i.entities;
    let all: Vec<&String> = e.ips.iter().chain(&e.users).chain(&e.hosts).collect();
    let shown: Vec<&str> = all.iter().take(8).map(|s| s.as_str()).collect();
    let more = (all.len() - shown.len()) as u64 + e.omitted;
    if more == 0 { shown.join(",") } else { format!("{} (+{more} more)", shown.join(",")) }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
