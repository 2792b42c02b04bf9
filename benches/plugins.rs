//! WebAssembly plugins: what one call of a trivial action (`guest-examples/noop`) costs
//! with a fresh instance per call (the default: nothing leaks from one incident to the
//! next) and with a pooled instance; and a transform's throughput as WebAssembly (the
//! `cim` example) against the same transform compiled natively, on the same events.
//! Also prints p50/p99 per call from 20,000 timed calls of each.
//!
//! `cargo bench --bench plugins`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil::actions::ActionContext;
use vigil::event::SecurityEvent;
use vigil::plugins::{PluginHost, PluginsConfig, wit_context};
use vigil::telemetry::MetricsRegistry;

#[path = "fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

fn install(root: &Path, name: &str, component: &str, kind: &str, extra: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(component, dir.join(format!("{name}.wasm"))).expect("component");
    let manifest =
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nkind = \"{kind}\"\napi_version = \"0.1.0\"\n{extra}\n");
    std::fs::write(dir.join("plugin.toml"), manifest).expect("manifest");
}

fn host(root: &Path) -> PluginHost {
    install(root, "fresh", vigil_guest_artifacts::NOOP, "action", "");
    install(root, "pooled", vigil_guest_artifacts::NOOP, "action", "[limits]\npooled = true");
    install(root, "cim", vigil_guest_artifacts::CIM, "transform", "[limits]\npooled = true");
    install(root, "cim_fresh", vigil_guest_artifacts::CIM, "transform", "");
    let config = PluginsConfig { dir: root.to_owned(), ..PluginsConfig::default() };
    let host = PluginHost::new(config, None, None, None, &MetricsRegistry::default()).expect("host");
    let failures = host.sync_dir();
    assert!(failures.is_empty(), "{failures:?}");
    host
}

fn events(n: usize) -> Vec<SecurityEvent> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            vigil::event::decode_event(fixtures::ndjson_event(i).as_bytes(), &Default::default(), now).expect("event")
        })
        .collect()
}

/// The `cim` example's transform, natively: the same fields, the same quoting.
fn cim_native(event: &SecurityEvent) -> String {
    fn quoted(value: &str) -> String {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
    let full = serde_json::to_value(event).expect("event serializes");
    let (model, action) = match event.class.as_str() {
        "authentication" => (
            "Authentication",
            match event.outcome.as_str() {
                "success" => "success",
                "failure" => "failure",
                _ => "unknown",
            },
        ),
        "network" | "http" | "dns" => ("Network_Traffic", "allowed"),
        "process" | "file" => ("Endpoint", "allowed"),
        _ => ("Vigil", "unknown"),
    };
    let time_ms = event.time.timestamp_millis();
    let mut fields = vec![
        ("time", format!("{:.3}", time_ms as f64 / 1000.0)),
        ("tag", quoted(model)),
        ("action", quoted(action)),
        ("event_id", quoted(&event.id.to_string())),
    ];
    if let Some(app) = full["service"]["name"].as_str().or(event.action.as_deref()) {
        fields.push(("app", quoted(app)));
    }
    if let Some(ip) = event.source.as_ref().and_then(|s| s.ip) {
        fields.push(("src", quoted(&ip.to_string())));
    }
    let dest = event.destination.as_ref().and_then(|d| d.ip).map(|ip| ip.to_string());
    if let Some(dest) = dest.or_else(|| event.host.as_ref().and_then(|h| h.name.clone())) {
        fields.push(("dest", quoted(&dest)));
    }
    if let Some(user) = event.user.as_ref().and_then(|u| u.name.as_deref()) {
        fields.push(("user", quoted(user)));
    }
    if let Some(signature) = &event.action {
        fields.push(("signature", quoted(signature)));
    }
    fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

fn percentiles(name: &str, mut call: impl FnMut()) {
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)].as_secs_f64() * 1e6;
    println!("latency {name}: p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs per call", at(0.5), at(0.99), at(1.0));
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = host(dir.path());
    let ctx = wit_context(&ActionContext::new("bench", serde_json::Map::new()), false);
    let (fresh, pooled) = (host.get("fresh").expect("fresh"), host.get("pooled").expect("pooled"));
    // Native and wasm give the same lines (the bench compares like with like).
    let sample = events(1_000);
    let (cim, cim_fresh) = (host.get("cim").expect("cim"), host.get("cim_fresh").expect("cim_fresh"));
    for event in sample.iter().take(50) {
        assert_eq!(cim.transform(event).expect("wasm").0, cim_native(event));
    }

    let mut group = c.benchmark_group("plugin_call");
    group.bench_function("action_fresh_instance", |b| b.iter(|| fresh.execute(ctx.clone(), None).expect("call")));
    group.bench_function("action_pooled_instance", |b| b.iter(|| pooled.execute(ctx.clone(), None).expect("call")));
    group.finish();
    percentiles("action_fresh_instance", || {
        fresh.execute(ctx.clone(), None).expect("call");
    });
    percentiles("action_pooled_instance", || {
        pooled.execute(ctx.clone(), None).expect("call");
    });

    let mut group = c.benchmark_group("transform_cim");
    group.throughput(Throughput::Elements(sample.len() as u64));
    group.bench_function("native", |b| {
        b.iter(|| sample.iter().map(|e| cim_native(e).len()).sum::<usize>());
    });
    group.bench_function("wasm_pooled_instance", |b| {
        b.iter(|| sample.iter().map(|e| cim.transform(e).expect("wasm").0.len()).sum::<usize>());
    });
    group.bench_function("wasm_fresh_instance", |b| {
        b.iter(|| sample.iter().map(|e| cim_fresh.transform(e).expect("wasm").0.len()).sum::<usize>());
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
