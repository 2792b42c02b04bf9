//! Playbook runner: runs/s of a 3-step automated playbook on the deny-list backend
//! (`block_ip`, `rate_limit_adjust`, `enhance_logging`: every step an fsynced store write
//! plus the audit intent and result), and the latency from an incident opened (its record
//! appended to the log) to the first action executed, through the trigger consumer.
//!
//! `cargo bench --bench playbooks`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::actions::audit::AuditLog;
use vigil::actions::{ActionsConfig, PolicyConfig, Registry, SafetyPolicy};
use vigil::detect::{Alert, Entities};
use vigil::event::{AlertId, EventId, IncidentId, Priority, RecordKind, RuleId};
use vigil::incident::{Incident, IncidentBook, IncidentChange};
use vigil::playbook::runner::RunStatus;
use vigil::playbook::{Playbook, PlaybookSet, PlaybooksConfig, Runner, RunnerDeps};
use vigil::store::{Log, LogWriter, NewRecord, Store, StoreConfig};
use vigil::telemetry::MetricsRegistry;

const PLAYBOOK: &str = r#"
id = "bench"
completion = "require_review"
[triggers]
rules = ["bench_rule"]
[[steps]]
id = "block"
action = "block_ip"
params = { ip = "{{ incident.entities.source_ip }}", ttl = "1h" }
[[steps]]
id = "limit"
action = "rate_limit_adjust"
params = { target = "{{ incident.entities.source_ip }}", limit = "5" }
[[steps]]
id = "log"
action = "enhance_logging"
params = { entity = "{{ incident.entities.source_ip }}" }
"#;

struct Bench {
    _dir: tempfile::TempDir,
    store: Store,
    writer: LogWriter,
    runner: Runner,
    book: std::sync::Mutex<IncidentBook>,
    next: std::sync::atomic::AtomicU32,
}

fn setup(rt: &tokio::runtime::Runtime) -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig { path: dir.path().join("data"), ..StoreConfig::default() };
    let store = Store::open(&config).expect("store");
    let (log, writer, _thread) = Log::start(&store, &config).expect("log");
    let actions_config = ActionsConfig {
        policy: PolicyConfig { max_per_hour: u32::MAX, ..PolicyConfig::default() },
        ..ActionsConfig::default()
    };
    let actions = Registry::native(&actions_config, &store, &log).expect("actions");
    let mut set = PlaybookSet::default();
    let playbook: Playbook = toml::from_str(PLAYBOOK).expect("playbook");
    assert!(playbook.check("bench", &actions).is_empty());
    set.insert(playbook);
    let deps = RunnerDeps {
        store: store.clone(),
        log,
        actions: Arc::new(actions),
        policy: Arc::new(SafetyPolicy::new(actions_config.policy.clone(), &store)),
        audit: Arc::new(AuditLog::open(&store).expect("audit")),
        playbooks: Arc::new(ArcSwap::from_pointee(set)),
        rules: None,
        worker: None,
        config: PlaybooksConfig { max_concurrent_runs: 64, ..PlaybooksConfig::default() },
    };
    let runner = rt.block_on(async { Runner::new(deps, &MetricsRegistry::default()) });
    Bench {
        book: std::sync::Mutex::new(IncidentBook::new(&store)),
        _dir: dir,
        store,
        writer,
        runner,
        next: std::sync::atomic::AtomicU32::new(1),
    }
}

impl Bench {
    /// Opens an incident from a fresh source address; returns its change record.
    fn incident(&self) -> (Incident, IncidentChange) {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ip = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
        let time = Utc::now();
        let mut entities = Entities::default();
        entities.ips.insert(ip.clone());
        entities.source_ips.insert(ip.clone());
        let alert = Alert {
            id: AlertId::generate(),
            rule_id: RuleId::from("bench_rule"),
            title: "bench".into(),
            family: None,
            priority: Priority::P1,
            category: None,
            time,
            first_time: time,
            group: BTreeMap::new(),
            group_key: ip.clone(),
            dedup_key: ip,
            count: 10,
            event_ids: vec![EventId::generate()],
            entities,
            affected_users: None,
            techniques: vec![],
            tags: vec![],
            author: None,
            suppress_ms: None,
            notify: vec![],
        };
        let mut book = self.book.lock().expect("book");
        let change = book.apply(&alert, time).expect("apply");
        self.store.write(book.take_ops().expect("ops"), true).expect("write");
        let incident = vigil::incident::get(&self.store, change.incident.id).expect("get").expect("incident");
        (incident, change)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Incidents appended to the log one by one, ~200/s; for each, the time from the append
/// to its run's first action.
fn latency(rt: &tokio::runtime::Runtime, bench: &Bench, n: usize) {
    rt.block_on(async {
        bench.runner.start().expect("start");
        let mut opened: Vec<(IncidentId, chrono::DateTime<Utc>)> = Vec::with_capacity(n);
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        for _ in 0..n {
            pace.tick().await;
            let (incident, change) = bench.incident();
            let record = NewRecord::new(RecordKind::Incident.tag(), &serde_json::to_vec(&change).expect("json"));
            let at = Utc::now();
            bench.writer.append(vec![record], Vec::new()).await.expect("append");
            opened.push((incident.id, at));
        }
        let mut samples = Vec::with_capacity(n);
        for (id, at) in opened {
            let first = bench
                .runner
                .wait_until(|runner| runner.list(Some(id)).ok()?.into_iter().find_map(|r| r.first_action_at))
                .await;
            samples.push((first - at).to_std().unwrap_or_default());
        }
        samples.sort_unstable();
        println!(
            "incident opened → first action executed ({n} incidents, ~200/s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3,
            samples[samples.len() - 1].as_secs_f64() * 1e3
        );
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let bench = setup(&rt);
    let test_mode = !std::env::args().any(|a| a == "--bench");
    latency(&rt, &bench, if test_mode { 20 } else { 1000 });
    let runs = if test_mode { 10 } else { 500 };
    let mut group = c.benchmark_group("playbooks");
    group.sample_size(10);
    group.throughput(Throughput::Elements(runs as u64));
    group.bench_function("three_step_deny_list_runs", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let incidents: Vec<Incident> = (0..runs).map(|_| bench.incident().0).collect();
                total += rt.block_on(async {
                    let started = Instant::now();
                    let mut ids = Vec::with_capacity(runs);
                    for incident in &incidents {
                        ids.push(bench.runner.start_run(incident.id, "bench", "bench", false).await.expect("run").id);
                    }
                    for id in ids {
                        let run = bench.runner.wait_for(id, |r| r.status.is_final()).await.expect("run");
                        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
                    }
                    started.elapsed()
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
