//! Detection throughput: the shipped rule pack and a 100-rule set (the pack plus generated
//! variants), with conditions compiled to native predicates and all in Rhai, over a mixed
//! realistic stream (the demo generator: SSH, web, DNS, process events with attacks in
//! them). Also prints the p50/p99 latency of one `Detector::process` call.
//!
//! `cargo bench --bench detect`; `VIGIL_BENCH_RULES=DIR cargo bench --bench detect` runs
//! another pack (an older one, to compare).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vigil::app::demo::{DemoOptions, generate};
use vigil::detect::{DetectConfig, DetectMetrics, Detector};
use vigil::event::SecurityEvent;
use vigil::rules::{CompileOptions, RuleSet, read_sources};

// The allocator of the `vigil` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLASSES: [&str; 7] = ["authentication", "http", "dns", "process", "network", "file", "api"];

/// 100 - pack variants: plausible single-event and windowed rules that rarely match.
fn variants(n: usize) -> Vec<(PathBuf, String)> {
    (0..n)
        .map(|i| {
            let class = CLASSES[i % CLASSES.len()];
            let window = if i % 3 == 0 { r#"group_by: ["source.ip"], window: #{ type: "threshold", count: 5, within: "5m" },"# } else { "" };
            let condition = match class {
                "http" => format!(r#"event.class == "http" && event.http.status_code == {} && event.url.path.starts_with("/v{i}")"#, 500 + i % 4),
                "authentication" => format!(r#"event.class == "authentication" && event.outcome == "failure" && event.user.name == "svc{i}""#),
                "dns" => format!(r#"event.class == "dns" && event.attributes.dns.question.name.ends_with(".evil{i}.example")"#),
                "process" => format!(r#"event.class == "process" && event.process.name == "tool{i}" && event.process.command_line.contains("--x{i}")"#),
                _ => format!(r#"event.class == "{class}" && event.action == "action_{i}" && in_cidr(event.source.ip, "198.18.{}.0/24")"#, i % 250),
            };
            let text = format!("const RULE = #{{ id: \"variant_{i}\", title: \"Variant {i}\", severity: \"low\", {window} }};\nfn condition(event) {{ {condition} }}");
            (PathBuf::from(format!("variant_{i}.rhai")), text)
        })
        .collect()
}

fn rule_set(total: usize, native: bool) -> RuleSet {
    let dir = std::env::var_os("VIGIL_BENCH_RULES")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"), PathBuf::from);
    let mut sources = read_sources(&dir).expect("rule pack");
    let library = read_sources(&dir.join("lib")).expect("rule library");
    let pack = sources.len();
    sources.extend(variants(total.saturating_sub(pack)));
    RuleSet::compile(sources, library, &CompileOptions { native, ..CompileOptions::default() }).expect("rules compile")
}

fn events() -> Vec<Arc<SecurityEvent>> {
    generate(&DemoOptions { events: 20_000, seed: Some(1) }).events.into_iter().map(Arc::new).collect()
}

fn detector(rules: &RuleSet) -> Detector {
    Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::default())
}

fn latency(name: &str, rules: &RuleSet, events: &[Arc<SecurityEvent>]) {
    let mut d = detector(rules);
    let mut out = Vec::new();
    let mut nanos: Vec<u64> = events
        .iter()
        .map(|e| {
            let started = Instant::now();
            d.process(e, &mut out);
            started.elapsed().as_nanos() as u64
        })
        .collect();
    nanos.sort_unstable();
    let pct = |p: f64| nanos[((nanos.len() as f64 * p) as usize).min(nanos.len() - 1)];
    println!("latency {name}: p50 {} ns, p99 {} ns, max {} ns per event", pct(0.5), pct(0.99), nanos[nanos.len() - 1]);
}

/// The costliest rules on the stream: time spent evaluating each on the events the index
/// selects for it.
fn per_rule(rules: &RuleSet, native: bool, events: &[Arc<SecurityEvent>]) {
    let refs: Vec<vigil::rules::EventRef> = events.iter().map(|e| vigil::rules::EventRef(e.clone())).collect();
    let mut costs: Vec<(f64, String, usize)> = rules
        .rules()
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let mut selected = Vec::new();
            let candidates: Vec<&vigil::rules::EventRef> = refs
                .iter()
                .filter(|e| {
                    rules.select(&e.0, &mut selected);
                    selected.contains(&index)
                })
                .collect();
            let started = Instant::now();
            for e in &candidates {
                let _ = rules.evaluate(index, e);
            }
            let kind = if native && rule.is_native() { "native" } else { "rhai" };
            (
                started.elapsed().as_nanos() as f64 / events.len() as f64,
                format!("{} [{kind}]", rule.meta.id),
                candidates.len(),
            )
        })
        .collect();
    costs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = costs.iter().map(|c| c.0).sum();
    println!("per-rule cost (ns per stream event, {total:.0} in all):");
    for (ns, id, n) in costs.iter().take(8) {
        println!("  {id:<40} {ns:>8.1} ns  ({n} candidate events)");
    }
}

fn bench(c: &mut Criterion) {
    let events = events();
    let sets = [
        ("pack_native", rule_set(0, true)),
        ("pack_rhai_only", rule_set(0, false)),
        ("rules_100_native", rule_set(100, true)),
        ("rules_100_rhai_only", rule_set(100, false)),
    ];
    let mut group = c.benchmark_group("detect");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    per_rule(&sets[2].1, true, &events);
    per_rule(&sets[3].1, false, &events);
    for (name, rules) in &sets {
        latency(name, rules, &events);
        group.bench_function(*name, |b| {
            b.iter_batched(
                || detector(rules),
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
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
