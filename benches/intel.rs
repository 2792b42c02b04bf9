//! Threat-intel matching: 1M indicators loaded (addresses, networks, domains, URLs, SHA-256
//! hashes), then (1) single lookups per second; (2) enrichment of the detection bench's
//! mixed stream in ingest-sized batches, on events already in memory and on freshly decoded
//! ones (as the ingest path runs it); (3) detection with the shipped pack, without and with
//! enrichment just before it on the same core; (4) the paired ratio of (2) on decoded
//! events to (3), timed back to back. The target: enrichment adds at most 5% to
//! detection.
//!
//! `cargo bench --bench intel`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use vigil::app::demo::{DemoOptions, generate};
use vigil::detect::{DetectConfig, DetectMetrics, Detector};
use vigil::event::SecurityEvent;
use vigil::intel::matcher::{Context, Entry, Indexed, Matcher};
use vigil::intel::stix::Observable;
use vigil::rules::{CompileOptions, RuleSet, read_sources};

// The allocator of the `vigil` binary (decoding allocates every event's strings).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Records per ingest batch (an HTTP request's or a file read's worth).
const INGEST_BATCH: usize = 500;

fn test_mode() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn indicators(n: usize) -> Vec<Indexed> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let context = Arc::new(Context { actors: vec!["APT-B".into()], ..Context::default() });
    let feed: Arc<str> = Arc::from("bench");
    (0..n)
        .map(|i| {
            let observable = match i % 20 {
                0..=13 => Observable::Ip(IpAddr::V4(Ipv4Addr::from(rng.random::<u32>() | 0x0100_0000))),
                14 => {
                    let len = [16u8, 20, 24, 28][i % 4];
                    let net = ipnet::Ipv4Net::new(Ipv4Addr::from(rng.random::<u32>()), len).expect("prefix").trunc();
                    Observable::Cidr(ipnet::IpNet::V4(net))
                }
                15..=17 => Observable::Domain(format!("d{}.{}.example", rng.random::<u32>(), i % 997)),
                18 => Observable::Url(format!("http://u{i}.example/p/{}", rng.random::<u32>())),
                _ => Observable::Hash(format!("{:064x}", rng.random::<u128>())),
            };
            Indexed {
                entry: Entry {
                    id: format!("indicator--{i:08}").into(),
                    name: None,
                    feed: feed.clone(),
                    confidence: Some((i % 100) as u8),
                    valid_from_ms: 0,
                    valid_until_ms: i64::MAX,
                    context: context.clone(),
                },
                observables: vec![observable],
            }
        })
        .collect()
}

fn rule_set() -> RuleSet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let sources = read_sources(&dir).expect("rule pack");
    let library = read_sources(&dir.join("lib")).expect("rule library");
    RuleSet::compile(sources, library, &CompileOptions::default()).expect("rules compile")
}

fn bench(c: &mut Criterion) {
    let n = if test_mode() { 20_000 } else { 1_000_000 };
    let rss = || {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 4096
    };
    let before = rss();
    let list = indicators(n);
    let started = Instant::now();
    let matcher = Matcher::build(list);
    println!(
        "matcher: {} indicators built in {:.2} s, RSS +{} MiB, {:?}",
        n,
        started.elapsed().as_secs_f64(),
        rss().saturating_sub(before) >> 20,
        matcher.stats()
    );
    let events: Vec<Arc<SecurityEvent>> =
        generate(&DemoOptions { events: 20_000, seed: Some(1) }).events.into_iter().map(Arc::new).collect();
    let hits = matcher.threats(&events).len();
    println!("enrichment: {hits} of {} stream events match", events.len());

    let mut group = c.benchmark_group("intel");
    group.sample_size(10);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let probes: Vec<IpAddr> = (0..100_000).map(|_| IpAddr::V4(Ipv4Addr::from(rng.random::<u32>()))).collect();
    group.throughput(Throughput::Elements(probes.len() as u64));
    group.bench_function("ip_lookups_1m", |b| {
        b.iter(|| probes.iter().filter(|ip| matcher.ip(**ip, 0).is_some()).count())
    });
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("enrich_stream_1m", |b| {
        b.iter(|| events.chunks(INGEST_BATCH).map(|batch| matcher.threats(batch).len()).sum::<usize>())
    });
    // The ingest path: a batch of records is decoded, then enriched before it is stored.
    let lines: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(&**e).expect("event encodes")).collect();
    let limits = vigil::event::DecodeLimits::default();
    let now = chrono::Utc::now();
    let decode = |batch: &[Vec<u8>]| -> Vec<SecurityEvent> {
        batch.iter().map(|l| vigil::event::decode_event(l, &limits, now).expect("event decodes")).collect()
    };
    group.bench_function("enrich_decoded_1m", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| enrich_decoded(&matcher, &lines, &decode)).sum())
    });
    let rules = rule_set();
    group.bench_function("detect_stream_pack", |b| {
        b.iter_batched(
            || Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default()),
            |mut d| detect_all(&mut d, &events),
            BatchSize::PerIteration,
        )
    });
    // Both on one core, a batch's enrichment just before its detection: the worst case for
    // caches (Vigil enriches on the ingest path and detects in its own worker).
    group.bench_function("enrich_then_detect_pack", |b| {
        b.iter_batched(
            || Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default()),
            |mut d| {
                let mut out = Vec::new();
                let mut hits = 0;
                for batch in events.chunks(INGEST_BATCH) {
                    hits += matcher.threats(batch).len();
                    for e in batch {
                        d.process(e, &mut out);
                    }
                }
                out.len() + hits
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    paired_ratio(&matcher, &rules, &events, &lines, &decode);
}

/// Runs every event through `detector`; the number of outputs.
fn detect_all(detector: &mut Detector, events: &[Arc<SecurityEvent>]) -> usize {
    let mut out = Vec::new();
    for e in events {
        detector.process(e, &mut out);
    }
    out.len()
}

/// Decodes the records batch by batch, as ingest does, and times only the enrichment.
fn enrich_decoded(
    matcher: &Matcher,
    lines: &[Vec<u8>],
    decode: &dyn Fn(&[Vec<u8>]) -> Vec<SecurityEvent>,
) -> std::time::Duration {
    let mut spent = std::time::Duration::ZERO;
    for batch in lines.chunks(INGEST_BATCH) {
        let batch = decode(batch);
        let started = Instant::now();
        std::hint::black_box(matcher.threats(&batch).len());
        spent += started.elapsed();
    }
    spent
}

/// The target as one figure: enrichment of freshly decoded batches against (warm) detection
/// of the same stream, timed back to back in each of 21 rounds so that both see the same machine
/// (shared runners drift by tens of percent between criterion's groups). Prints the median
/// ratio and its range.
fn paired_ratio(
    matcher: &Matcher,
    rules: &RuleSet,
    events: &[Arc<SecurityEvent>],
    lines: &[Vec<u8>],
    decode: &dyn Fn(&[Vec<u8>]) -> Vec<SecurityEvent>,
) {
    let count = if test_mode() { 3 } else { 21 };
    let mut rounds: Vec<(f64, f64, f64)> = (0..count)
        .map(|_| {
            let enrich = enrich_decoded(matcher, lines, decode);
            // Detection as criterion measures it: warm, the second of two passes.
            let mut detect = Duration::ZERO;
            for _ in 0..2 {
                let mut detector = Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default());
                let started = Instant::now();
                std::hint::black_box(detect_all(&mut detector, events));
                detect = started.elapsed();
            }
            (enrich.as_secs_f64() / detect.as_secs_f64(), enrich.as_secs_f64(), detect.as_secs_f64())
        })
        .collect();
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, enrich, detect) = rounds[count / 2];
    println!(
        "paired: enrichment of decoded batches / detection with the shipped pack: median {:.1} % \
         ({:.2} ms / {:.2} ms; range {:.1}–{:.1} %, {count} rounds)",
        median * 100.0,
        enrich * 1e3,
        detect * 1e3,
        rounds[0].0 * 100.0,
        rounds[count - 1].0 * 100.0
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
