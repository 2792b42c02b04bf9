//! Hunting over a 10M-event log (20k with `--test`): what the field indexes cost to keep
//! (events indexed per second, bytes on disk) and what they gain: a time-bounded hunt for
//! one source address that scans the range, against the same hunt through the index; and
//! the scan rate of a time-bounded group-by.
//!
//! The events are stored in one go, so their append times do not spread over their event
//! times (a backfill): every hunt here considers the whole log, which is the scan rate's
//! worst case. `cargo bench --bench hunt`

use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use vigil::event::{Endpoint, EventClass, Outcome, SecurityEvent, User};
use vigil::hunt::{Hunt, HuntSpec, Index, IndexConfig};
use vigil::rules::CompileOptions;
use vigil::source::{IngestConfig, Ingestor};
use vigil::store::{Log, Store, StoreConfig, SyncPolicy};
use vigil::telemetry::MetricsRegistry;

fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn bench(c: &mut Criterion) {
    let n: u64 = if test_mode() { 20_000 } else { 10_000_000 };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig { path: dir.path().join("db"), sync: SyncPolicy::Os, ..StoreConfig::default() };
    let store = Store::open(&config).expect("store");
    let (log, writer, thread) = Log::start(&store, &config).expect("log");
    let ingestor = Ingestor::new(writer, IngestConfig::default(), &MetricsRegistry::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let t0 = Utc::now() - chrono::Duration::days(10);
    let step_ms = (10 * 86_400_000 / n as i64).max(1);
    let started = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    let mut probe = String::new();
    for i in 0..n {
        let mut e =
            SecurityEvent::new(EventClass::Authentication, t0 + chrono::Duration::milliseconds(i as i64 * step_ms));
        e.action = Some("ssh_login".into());
        e.outcome = if rng.random_bool(0.3) { Outcome::Failure } else { Outcome::Success };
        let ip = format!("10.{}.{}.{}", rng.random_range(0..4), rng.random_range(0..128), rng.random_range(1..255));
        if i == n / 2 {
            probe = ip.clone();
        }
        e.source = Some(Endpoint { ip: Some(ip.parse().expect("ip")), port: Some(22), ..Endpoint::default() });
        e.user = Some(Box::new(User { name: Some(format!("user{}", rng.random_range(0..2000))), ..User::default() }));
        batch.push(e);
        if batch.len() == 10_000 {
            ingestor.append_blocking("bench", &batch, Vec::new()).expect("append");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        ingestor.append_blocking("bench", &batch, Vec::new()).expect("append");
    }
    println!("stored {n} events in {:.1} s", started.elapsed().as_secs_f64());
    let index = Index::new(&store, &IndexConfig::default()).expect("index");
    let started = Instant::now();
    while index.catch_up(&log, 65_536).expect("index") > 0 {}
    let took = started.elapsed().as_secs_f64();
    println!("indexed {n} events (4 fields) in {took:.1} s: {:.0} events/s", n as f64 / took);
    store.flush().expect("flush");

    let from = (t0 + chrono::Duration::days(3)).to_rfc3339();
    let to = (t0 + chrono::Duration::days(7)).to_rfc3339();
    let spec = |filter: &str, group: bool| HuntSpec {
        from: Some(from.clone()),
        to: Some(to.clone()),
        filter: Some(filter.into()),
        group_by: if group { vec!["user.name".into()] } else { Vec::new() },
        limit: Some(100_000),
        ..HuntSpec::default()
    };
    let options = CompileOptions::default();
    let run = |spec: &HuntSpec, index: Option<&Index>| {
        let hunt = Hunt::compile(spec, &options, None, Utc::now()).expect("hunt");
        let mut rows = 0;
        let stats =
            hunt.run(&log, index, Duration::from_secs(30 * 86_400), 1_000_000, |_| rows += 1, |_, _| {}).expect("run");
        (rows, stats)
    };
    let one_ip = spec(&format!(r#"event.source.ip == "{probe}" && event.outcome == "failure""#), false);
    let (rows, indexed) = run(&one_ip, Some(&index));
    let (scan_rows, scanned) = run(&one_ip, None);
    assert_eq!(rows, scan_rows, "the index and the scan agree");
    println!("one address: {rows} rows; through the index {} records read, by scanning {}", indexed.read, scanned.read);

    let mut group = c.benchmark_group("hunt");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if test_mode() { 1 } else { 60 }));
    group.throughput(Throughput::Elements(n));
    group.bench_function("one_address_scan", |b| b.iter(|| run(&one_ip, None).0));
    group.bench_function("one_address_index", |b| b.iter(|| run(&one_ip, Some(&index)).0));
    let failures_by_user = spec(r#"event.outcome == "failure""#, true);
    group.bench_function("failures_by_user_scan", |b| b.iter(|| run(&failures_by_user, None).0));
    group.finish();
    drop(ingestor);
    drop(log);
    let _ = thread.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
