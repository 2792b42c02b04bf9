//! Sigma throughput on one thread: every Windows rule of the SigmaHQ corpus
//! (`../shared/data/sigma`, `product: windows` across rules, emerging threats and threat
//! hunting) over the real EVTX samples (`inputs/windows-evtx` and SigmaHQ's regression
//! files): detection alone, the EVTX decode alone, and both.
//!
//! `cargo bench --bench sigma` (events per second: `thrpt`). The same rules and files
//! through pySigma's SQLite backend (Zircolite's approach) are timed by
//! `benches/peers/sigma_sqlite.py --bench`; BENCHMARKS.md has both.

#[path = "samples.rs"]
mod samples;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use samples::shared;
use vigil::detect::{DetectConfig, DetectMetrics, Detector};
use vigil::event::SecurityEvent;
use vigil::rules::RuleSet;
use vigil::rules::sigma::{self, SigmaConfig};
use vigil::source::IngestConfig;
use vigil::source::decode::{Format, Options, decode_body};

// The allocator of the `vigil` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|x| x == ext) {
            out.push(path);
        }
    }
}

/// The Windows rules of the corpus, compiled.
pub fn windows_rules() -> RuleSet {
    let dirs: Vec<PathBuf> = ["sigma/rules", "sigma/rules-emerging-threats", "sigma/rules-threat-hunting"]
        .iter()
        .map(|d| shared(d))
        .collect();
    let (rules, report) = sigma::load(&dirs, &SigmaConfig::default(), None).expect("pipeline");
    let windows: Vec<_> = rules
        .into_iter()
        .filter(|r| r.sigma.as_ref().is_some_and(|s| s.logsource.contains("product=windows")))
        .collect();
    eprintln!("{} Windows rules ({} refused in the corpus)", windows.len(), report.refused.len());
    RuleSet::from_compiled(windows)
}

/// The EVTX samples: (file bytes) of every `.evtx` that decodes.
fn evtx_bodies() -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    files(&shared("inputs/windows-evtx"), "evtx", &mut paths);
    files(&shared("sigma/regression_data"), "evtx", &mut paths);
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).expect("read")).collect()
}

fn decode_all(bodies: &[Vec<u8>]) -> Vec<SecurityEvent> {
    let options = Options { limits: IngestConfig::default().limits(), keep_raw: false };
    bodies.iter().flat_map(|b| decode_body(&Format::Windows, b, &options, chrono::Utc::now()).0.events).collect()
}

fn detector(rules: &RuleSet) -> Detector {
    let registry = vigil::telemetry::MetricsRegistry::default();
    Detector::new(rules.clone(), DetectConfig::default(), DetectMetrics::register(&registry)).without_persistence()
}

fn bench(c: &mut Criterion) {
    let before = std::time::Instant::now();
    let rules = windows_rules();
    eprintln!("rules compiled in {:.2} s", before.elapsed().as_secs_f64());
    let bodies = evtx_bodies();
    let events: Vec<Arc<SecurityEvent>> = decode_all(&bodies).into_iter().map(Arc::new).collect();
    eprintln!("{} events from {} EVTX files", events.len(), bodies.len());
    let mut group = c.benchmark_group("sigma_windows");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("detect", |b| {
        b.iter_batched(
            || detector(&rules),
            |mut d| {
                let mut out = Vec::new();
                for e in &events {
                    d.process(e, &mut out);
                }
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("decode", |b| b.iter(|| decode_all(&bodies).len()));
    group.bench_function("decode_and_detect", |b| {
        b.iter_batched(
            || detector(&rules),
            |mut d| {
                let mut out = Vec::new();
                for e in decode_all(&bodies) {
                    d.process(&Arc::new(e), &mut out);
                }
                out.len()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
    // Peak memory of this process: the compiled rules, the decoded events, criterion.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
        eprintln!("peak RSS (rules, events and the harness): {}", line.trim_start_matches("VmHWM:").trim());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
