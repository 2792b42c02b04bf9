//! Threat-intel matching: 1M indicators loaded (addresses, networks of several prefix
//! lengths, domains, URLs, SHA-256 hashes), then (1) single lookups per second and (2) the
//! per-event enrichment cost over the detection bench's mixed stream on its own, and (3)
//! detection with the shipped pack with and without enrichment of each event just before
//! it. The target: enrichment adds at most 5% to detection.
//!
//! `cargo bench --bench intel`

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use vigil::app::demo::{DemoOptions, generate};
use vigil::detect::{DetectConfig, DetectMetrics, Detector};
use vigil::event::SecurityEvent;
use vigil::intel::matcher::{Context, Entry, Indexed, Matcher};
use vigil::intel::stix::Observable;
use vigil::rules::{CompileOptions, RuleSet, read_sources};

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
    let hits = events.iter().filter(|e| matcher.threat(e).is_some()).count();
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
        b.iter(|| events.iter().filter(|e| matcher.threat(e).is_some()).count())
    });
    let rules = rule_set();
    group.bench_function("detect_stream_pack", |b| {
        b.iter_batched(
            || Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default()),
            |mut d| {
                let mut out = Vec::new();
                for e in &events {
                    d.process(e, &mut out);
                }
                out.len()
            },
            BatchSize::PerIteration,
        )
    });
    // Enrichment as the pipeline runs it: on each event just before detection reads it, so
    // what this adds over `detect_stream_pack` is the lookups' own cost, not the first read
    // of the event's memory (which whoever reads the event first pays).
    group.bench_function("enrich_then_detect_pack", |b| {
        b.iter_batched(
            || Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default()),
            |mut d| {
                let mut out = Vec::new();
                let mut hits = 0;
                for e in &events {
                    hits += usize::from(matcher.threat(e).is_some());
                    d.process(e, &mut out);
                }
                out.len() + hits
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
