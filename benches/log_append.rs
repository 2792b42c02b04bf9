//! Durable ingest into the log: encode and group-commit batches of ~300-byte events with
//! an fsync per commit (`store.sync = "always"`), alone and with concurrent appenders, and
//! the whole ingest path from NDJSON bytes (split, decode, validate, encode, append).
//!
//! `cargo bench --bench log_append`

#[path = "fixtures.rs"]
mod fixtures;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::event::{DecodeLimits, SecurityEvent};
use vigil::source::{IngestConfig, Ingestor};
use vigil::store::{Log, Store, StoreConfig, SyncPolicy};
use vigil::telemetry::MetricsRegistry;

const BATCH: usize = 1000;

fn ingestor(dir: &std::path::Path, sync: SyncPolicy) -> Ingestor {
    let config = StoreConfig { path: dir.to_owned(), sync, ..StoreConfig::default() };
    let store = Store::open(&config).expect("store");
    let (_log, writer, _thread) = Log::start(&store, &config).expect("log");
    Ingestor::new(writer, IngestConfig::default(), &MetricsRegistry::default())
}

fn events() -> Vec<SecurityEvent> {
    let body = fixtures::ndjson_body(BATCH);
    let (events, report) =
        vigil::source::batch::decode_batch(body.as_bytes(), &DecodeLimits::default(), chrono::Utc::now());
    assert!(report.rejected.is_empty());
    events
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let events = events();
    let body = fixtures::ndjson_body(BATCH);
    let mut group = c.benchmark_group("log_append");
    group.sample_size(30);

    for (name, sync) in [("sync_always", SyncPolicy::Always), ("sync_os", SyncPolicy::Os)] {
        let ingestor = ingestor(&dir.path().join(name), sync);
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{name}/1x{BATCH}"), |b| {
            b.iter(|| rt.block_on(ingestor.append("bench", &events, Vec::new())).expect("append"))
        });
        // Eight concurrent appenders: group commit folds their batches into fewer fsyncs.
        group.throughput(Throughput::Elements(8 * BATCH as u64));
        group.bench_function(format!("{name}/8x{BATCH}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for _ in 0..8 {
                        let (ingestor, events) = (ingestor.clone(), events.clone());
                        tasks
                            .spawn(async move { ingestor.append("bench", &events, Vec::new()).await.expect("append") });
                    }
                    tasks.join_all().await
                })
            })
        });
    }

    let ingestor = ingestor(&dir.path().join("ndjson"), SyncPolicy::Always);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("ndjson_decode_and_append/1x{BATCH}"), |b| {
        b.iter(|| {
            rt.block_on(ingestor.ingest_body("bench", body.as_bytes(), false, &vigil::source::Format::Vigil))
                .expect("ingest")
        })
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(format!("ndjson_decode_only/1x{BATCH}"), |b| {
        b.iter(|| vigil::source::batch::decode_batch(body.as_bytes(), &DecodeLimits::default(), chrono::Utc::now()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
