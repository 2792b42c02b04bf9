//! Delivery from the log to a SIEM, in one process on loopback:
//!
//! - `throughput`: a log pre-filled with ~300-byte events is delivered by a fresh sink
//!   (cursor at the start) to a local Splunk HEC endpoint and to a local Elasticsearch
//!   `_bulk` endpoint, gzip on; events/s and MiB/s (uncompressed body) per run, median of
//!   the runs. The endpoints gunzip and parse every request on the same two cores, so the
//!   figures are conservative.
//! - `latency`: events appended at a steady rate while the HEC sink runs with a 10 ms
//!   batch timeout; the endpoint computes, for every event, its arrival time minus the
//!   time it was appended (the event's `time`, set just before the append). p50/p99.
//! - `outage`: the HEC endpoint answers 503 for `--outage-minutes` while events arrive at
//!   `--rate`; the process RSS is sampled every 10 s, then the endpoint recovers and the
//!   backlog drains.
//!
//! - `channels`: incidents delivered to local PagerDuty, Opsgenie, Slack and Teams
//!   endpoints with the platforms' rate limits off (alerts/s), then Slack with its default
//!   limit on (the send rate equals the limit, nothing dropped).
//!
//! `cargo bench --bench export -- [throughput|latency|outage|channels] [--alerts N] [--events N] [--runs R]
//!  [--rate EPS] [--seconds S] [--outage-minutes M]`
//! Without `--bench` (as `cargo test` runs it) it does a small smoke run of each.

#[path = "fixtures.rs"]
mod fixtures;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio_util::sync::CancellationToken;
use vigil::event::{DecodeLimits, SecurityEvent};
use vigil::export::sinks::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use vigil::export::sinks::splunk_hec::{SplunkHecConfig, SplunkHecSink};
use vigil::export::{Encoder, Exporter, ExporterMetrics, Route, Sink, SinkConfig, SinkKind};
use vigil::source::{IngestConfig, Ingestor};
use vigil::store::{Log, LogWriter, NewRecord, Store, StoreConfig, SyncPolicy};
use vigil::telemetry::MetricsRegistry;

// The allocator of the `vigil` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the local endpoint saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    down: AtomicBool,
    /// (event time in ms, arrival in µs) of every event (latency mode).
    arrivals: Mutex<Vec<(i64, i64)>>,
    /// Event time in ms of each tick's batch → when its append returned, in µs.
    appended: Mutex<std::collections::HashMap<i64, i64>>,
    measure: AtomicBool,
}

async fn endpoint(seen: Arc<Seen>, uri: Uri, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if seen.down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, r#"{"text":"Server is busy","code":9}"#.into());
    }
    let mut plain = Vec::new();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain).expect("gzip");
    } else {
        plain = body.to_vec();
    }
    seen.requests.fetch_add(1, Ordering::Relaxed);
    seen.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
    let now = chrono::Utc::now();
    if uri.path() == "/" || uri.path() == "/services/collector/health" {
        // Health checks.
        return (StatusCode::OK, r#"{"text":"HEC is healthy","code":17}"#.into());
    }
    if uri.path() != "/services/collector/event" && uri.path() != "/_bulk" {
        // A paging or chat channel: one alert per request.
        seen.events.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::ACCEPTED, r#"{"status":"success"}"#.into());
    }
    if uri.path() == "/_bulk" {
        let mut items = Vec::new();
        #[derive(serde::Deserialize)]
        struct Action<'a> {
            #[serde(borrow)]
            create: Create<'a>,
        }
        #[derive(serde::Deserialize)]
        struct Create<'a> {
            _id: &'a str,
        }
        for (i, line) in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            if i % 2 == 0 {
                let action: Action = serde_json::from_slice(line).expect("action");
                items.push(serde_json::json!({"create": {"_id": action.create._id, "status": 201}}));
            } else {
                serde_json::from_slice::<serde::de::IgnoredAny>(line).expect("document");
            }
        }
        seen.events.fetch_add(items.len() as u64, Ordering::Relaxed);
        return (StatusCode::OK, serde_json::json!({"took": 1, "errors": false, "items": items}).to_string());
    }
    #[derive(serde::Deserialize)]
    struct Object {
        time: f64,
    }
    let mut count = 0;
    let mut arrivals = Vec::new();
    for object in serde_json::Deserializer::from_slice(&plain).into_iter::<Object>() {
        let object = object.expect("HEC object");
        count += 1;
        arrivals.push(((object.time * 1000.0).round() as i64, now.timestamp_micros()));
    }
    seen.events.fetch_add(count, Ordering::Relaxed);
    if seen.measure.load(Ordering::Relaxed) {
        seen.arrivals.lock().expect("lock").extend(arrivals);
    }
    (StatusCode::OK, r#"{"text":"Success","code":0}"#.into())
}

/// Starts the endpoint on its own runtime thread; returns its URL.
fn start_endpoint(seen: Arc<Seen>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let app = axum::Router::new()
                .fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| endpoint(seen.clone(), uri, headers, body));
            axum::serve(tokio::net::TcpListener::from_std(listener).expect("listener"), app).await.expect("serve");
        });
    });
    url
}

struct Pipeline {
    log: Log,
    writer: LogWriter,
    ingestor: Ingestor,
    metrics: ExporterMetrics,
    thread: std::thread::JoinHandle<()>,
}

impl Pipeline {
    /// Closes the store before the process exits (RocksDB aborts if it is still open
    /// while the process tears down).
    fn close(self) {
        let Self { log, writer, ingestor, metrics, thread } = self;
        let store = log.store().clone();
        drop((ingestor, writer, log, metrics));
        let _ = thread.join();
        let _ = store.flush();
        drop(store);
    }
}

/// The data directories of the runs, removed only once the process is done with RocksDB
/// (a directory removed under a store still open makes RocksDB abort at teardown).
static DATA_DIRS: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

/// A fresh data directory that lives until `main` ends.
fn data_dir() -> std::path::PathBuf {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_owned();
    DATA_DIRS.lock().expect("lock").push(dir);
    path
}

fn pipeline(dir: &std::path::Path) -> Pipeline {
    let config = StoreConfig { path: dir.to_owned(), sync: SyncPolicy::Os, ..StoreConfig::default() };
    let store = Store::open(&config).expect("store");
    let (log, writer, thread) = Log::start(&store, &config).expect("log");
    let registry = MetricsRegistry::default();
    Pipeline {
        thread,
        log,
        ingestor: Ingestor::new(writer.clone(), IngestConfig::default(), &registry),
        writer,
        metrics: ExporterMetrics::register(&registry),
    }
}

fn events(n: usize) -> Vec<SecurityEvent> {
    let (events, report) = vigil::source::batch::decode_batch(
        fixtures::ndjson_body(n).as_bytes(),
        &DecodeLimits::default(),
        chrono::Utc::now(),
    );
    assert!(report.rejected.is_empty());
    events
}

fn hec(url: &str, batch_timeout: Duration) -> (SplunkHecSink, SinkConfig) {
    let config: SplunkHecConfig =
        toml::from_str(&format!("endpoint = \"{url}\"\ntoken = \"bench\"")).expect("hec config");
    let sink = SplunkHecSink::new(config.clone()).expect("hec");
    let mut sink_config = SinkConfig::new(SinkKind::SplunkHec(config));
    sink_config.batch.timeout = batch_timeout;
    (sink, sink_config)
}

fn bulk(url: &str) -> (ElasticsearchSink, SinkConfig) {
    let config: ElasticsearchConfig = toml::from_str(&format!("endpoint = \"{url}\"")).expect("es config");
    let sink = ElasticsearchSink::new(config.clone()).expect("es");
    (sink, SinkConfig::new(SinkKind::Elasticsearch(config)))
}

async fn start<S: Sink>(p: &Pipeline, name: &str, sink: S, config: SinkConfig, stop: CancellationToken) -> Exporter<S> {
    let encoder = Encoder::new(Route::new(config.route.clone()).expect("route"), None, &config.format);
    let (exporter, _handle) = Exporter::start(name, sink, config, encoder, p.log.clone(), &p.metrics, stop)
        .await
        .expect("store")
        .expect("open");
    exporter
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(rt: &tokio::runtime::Runtime, events_total: usize, runs: usize) {
    let p = pipeline(&data_dir());
    let batch = events(1000);
    rt.block_on(async {
        for _ in 0..events_total / 1000 {
            p.ingestor.append("bench", &batch, Vec::new()).await.expect("append");
        }
    });
    for target in ["splunk_hec", "elasticsearch"] {
        let (mut eps, mut mibs) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let seen = Arc::new(Seen::default());
            let url = start_endpoint(seen.clone());
            let started = Instant::now();
            rt.block_on(async {
                let drain = CancellationToken::new();
                drain.cancel();
                let name = format!("{target}-{run}");
                match target {
                    "splunk_hec" => {
                        let (sink, config) = hec(&url, Duration::from_millis(10));
                        start(&p, &name, sink, config, CancellationToken::new()).await.run(drain).await
                    }
                    _ => {
                        let (sink, config) = bulk(&url);
                        start(&p, &name, sink, config, CancellationToken::new()).await.run(drain).await
                    }
                }
            });
            let secs = started.elapsed().as_secs_f64();
            let delivered = seen.events.load(Ordering::Relaxed);
            assert_eq!(delivered as usize, events_total, "every event delivered");
            eps.push(delivered as f64 / secs);
            mibs.push(seen.bytes.load(Ordering::Relaxed) as f64 / secs / (1 << 20) as f64);
            println!(
                "{target} run {run}: {delivered} events in {secs:.2} s = {:.0} events/s, {:.1} MiB/s, {} requests",
                eps[run],
                mibs[run],
                seen.requests.load(Ordering::Relaxed)
            );
        }
        println!(
            "{target}: median {:.0} events/s, {:.1} MiB/s (uncompressed) over {runs} runs",
            median(eps),
            median(mibs)
        );
    }
    p.close();
}

/// Appends `rate` events/s in 10 ms ticks, each event's time set just before its append.
async fn feed(ingestor: &Ingestor, rate: u64, duration: Duration, seen: Option<&Seen>) {
    let per_tick = (rate / 100).max(1) as usize;
    let template = events(per_tick);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let until = Instant::now() + duration;
    while Instant::now() < until {
        tick.tick().await;
        let now = chrono::Utc::now();
        let mut batch = template.clone();
        for e in &mut batch {
            e.time = now;
            e.id = vigil::event::EventId::generate();
        }
        ingestor.append("bench", &batch, Vec::new()).await.expect("append");
        if let Some(seen) = seen {
            seen.appended.lock().expect("lock").insert(now.timestamp_millis(), chrono::Utc::now().timestamp_micros());
        }
    }
}

fn latency(rt: &tokio::runtime::Runtime, rate: u64, seconds: u64) {
    let p = pipeline(&data_dir());
    let seen = Arc::new(Seen::default());
    let url = start_endpoint(seen.clone());
    rt.block_on(async {
        let (sink, config) = hec(&url, Duration::from_millis(10));
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let exporter = start(&p, "latency", sink, config, stop.clone()).await;
        let task = tokio::spawn(exporter.run(drain.clone()));
        feed(&p.ingestor, rate, Duration::from_secs(2), None).await;
        seen.measure.store(true, Ordering::Relaxed);
        feed(&p.ingestor, rate, Duration::from_secs(seconds), Some(&seen)).await;
        drain.cancel();
        task.await.expect("exporter");
    });
    // From the event's creation (just before its append), and from the moment its append
    // returned (durable in the log): the second is log → send.
    let arrivals = seen.arrivals.lock().expect("lock").clone();
    let appended = seen.appended.lock().expect("lock").clone();
    let mut from_creation: Vec<i64> = arrivals.iter().map(|(t, at)| at - t * 1000).collect();
    let mut from_log: Vec<i64> = arrivals.iter().filter_map(|(t, at)| appended.get(t).map(|done| at - done)).collect();
    for (name, l) in [("created → sent", &mut from_creation), ("log → sent", &mut from_log)] {
        l.sort_unstable();
        let pct = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)] as f64 / 1000.0;
        println!(
            "latency {name} at {rate} events/s for {seconds} s, batch timeout 10 ms: {} events, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
    p.close();
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn outage(rt: &tokio::runtime::Runtime, rate: u64, minutes: u64) {
    let p = pipeline(&data_dir());
    let seen = Arc::new(Seen::default());
    seen.down.store(true, Ordering::Relaxed);
    let url = start_endpoint(seen.clone());
    rt.block_on(async {
        let (sink, config) = hec(&url, Duration::from_millis(10));
        let drain = CancellationToken::new();
        let exporter = start(&p, "outage", sink, config, CancellationToken::new()).await;
        let task = tokio::spawn(exporter.run(drain.clone()));
        let feeder = {
            let ingestor = p.ingestor.clone();
            tokio::spawn(async move { feed(&ingestor, rate, Duration::from_secs(minutes * 60), None).await })
        };
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut every = tokio::time::interval(Duration::from_secs(10));
        while !feeder.is_finished() {
            every.tick().await;
            samples.push(rss_mib());
            println!(
                "outage {:>4} s: RSS {:.1} MiB, log head {}",
                started.elapsed().as_secs(),
                rss_mib(),
                p.log.head()
            );
        }
        let (first, last) = (samples.first().copied().unwrap_or(0.0), samples.last().copied().unwrap_or(0.0));
        let max = samples.iter().copied().fold(0.0, f64::max);
        println!(
            "outage of {minutes} min at {rate} events/s: RSS first {first:.1} MiB, last {last:.1} MiB, max {max:.1} MiB"
        );
        seen.down.store(false, Ordering::Relaxed);
        let recovered = Instant::now();
        drain.cancel();
        task.await.expect("exporter");
        println!(
            "recovered: {} events delivered in {:.1} s after the endpoint came back",
            seen.events.load(Ordering::Relaxed),
            recovered.elapsed().as_secs_f64()
        );
    });
    p.close();
}

/// `n` incidents opened, as detection writes them to the log.
async fn incidents(p: &Pipeline, n: usize) {
    let records = (0..n)
        .map(|i| {
            let change = serde_json::json!({
                "change": "opened",
                "incident": {
                    "id": format!("0190f000-0000-7000-8000-{i:012}"), "rule_id": "ssh_brute_force", "title": "SSH brute force",
                    "priority": "P1", "status": "detected", "dedup_key": format!("ssh_brute_force|203.0.113.{}", i % 250),
                    "opened_at": "2026-11-22T08:00:00Z", "updated_at": "2026-11-22T08:00:00Z",
                    "first_seen": "2026-11-22T07:59:00Z", "last_seen": "2026-11-22T08:00:00Z",
                    "alert_count": 1, "suppressed_count": 0, "event_count": 12, "event_ids": [],
                    "entities": {"ips": [format!("203.0.113.{}", i % 250)], "users": ["root"], "hosts": ["bastion01"]}
                }
            });
            NewRecord::encode(vigil::event::RecordKind::Incident.tag(), 1024, |buf| serde_json::to_writer(buf, &change).expect("encode"))
        })
        .collect();
    p.writer.append(records, Vec::new()).await.expect("append");
}

/// Alerts/s per paging and chat channel with the platforms' rate limits off, then one
/// channel with its limit on: the send rate equals the limit and nothing is dropped.
fn channels(rt: &tokio::runtime::Runtime, alerts: usize, limited: usize) {
    use vigil::export::sinks::{chat, opsgenie, pagerduty, slack, teams};
    let p = pipeline(&data_dir());
    rt.block_on(incidents(&p, alerts));
    for channel in ["pagerduty", "opsgenie", "slack", "teams"] {
        let seen = Arc::new(Seen::default());
        let url = start_endpoint(seen.clone());
        let kind: SinkKind = toml::from_str(&match channel {
            "pagerduty" => format!(
                "type = \"pagerduty\"\nrouting_key = \"0123456789abcdef0123456789abcdef\"\nendpoint = \"{url}\""
            ),
            "opsgenie" => format!("type = \"opsgenie\"\napi_key = \"k\"\nendpoint = \"{url}\""),
            "slack" => format!("type = \"slack\"\nwebhook_url = \"{url}/slack\""),
            _ => format!("type = \"teams\"\nwebhook_url = \"{url}/teams\""),
        })
        .expect("channel config");
        let mut config = SinkConfig::new(kind.clone());
        config.rate_limit = None;
        config.concurrency = 16;
        let started = Instant::now();
        rt.block_on(async {
            let drain = CancellationToken::new();
            drain.cancel();
            match kind {
                SinkKind::Pagerduty(c) => {
                    start(
                        &p,
                        channel,
                        pagerduty::PagerDutySink::new(c).expect("sink"),
                        config,
                        CancellationToken::new(),
                    )
                    .await
                    .run(drain)
                    .await
                }
                SinkKind::Opsgenie(c) => {
                    start(&p, channel, opsgenie::OpsgenieSink::new(c).expect("sink"), config, CancellationToken::new())
                        .await
                        .run(drain)
                        .await
                }
                SinkKind::Slack(c) => {
                    start(
                        &p,
                        channel,
                        chat::ChatSink::new(c, slack::message).expect("sink"),
                        config,
                        CancellationToken::new(),
                    )
                    .await
                    .run(drain)
                    .await
                }
                SinkKind::Teams(c) => {
                    start(
                        &p,
                        channel,
                        chat::ChatSink::new(c, teams::card).expect("sink"),
                        config,
                        CancellationToken::new(),
                    )
                    .await
                    .run(drain)
                    .await
                }
                _ => unreachable!("a channel"),
            }
        });
        let secs = started.elapsed().as_secs_f64();
        let sent = seen.events.load(Ordering::Relaxed);
        assert_eq!(sent as usize, alerts, "every alert sent");
        println!("{channel}, limits off: {sent} alerts in {secs:.2} s = {:.0} alerts/s", sent as f64 / secs);
    }
    p.close();
    // Slack's default limit (1/s, burst 1) on a fresh log of `limited` incidents.
    let p = pipeline(&data_dir());
    rt.block_on(incidents(&p, limited));
    let seen = Arc::new(Seen::default());
    let url = start_endpoint(seen.clone());
    let config: slack::SlackConfig = toml::from_str(&format!("webhook_url = \"{url}/slack\"")).expect("slack");
    let sink_config = SinkConfig::new(SinkKind::Slack(config.clone()));
    let started = Instant::now();
    rt.block_on(async {
        let drain = CancellationToken::new();
        drain.cancel();
        start(
            &p,
            "slack-limited",
            chat::ChatSink::new(config, slack::message).expect("sink"),
            sink_config,
            CancellationToken::new(),
        )
        .await
        .run(drain)
        .await
    });
    let secs = started.elapsed().as_secs_f64();
    let sent = seen.events.load(Ordering::Relaxed);
    assert_eq!(sent as usize, limited, "nothing dropped under the limit");
    // The first message goes at once; the rest one per second.
    println!(
        "slack, default limit 1/s: {sent} messages in {secs:.2} s = {:.2} messages/s after the first, 0 dropped",
        (sent - 1) as f64 / secs
    );
    p.close();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let only = ["throughput", "latency", "outage", "channels"].into_iter().find(|m| args.iter().any(|a| a == m));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if only.is_none_or(|m| m == "throughput") {
        throughput(
            &rt,
            arg(&args, "--events", if full { 200_000 } else { 2_000 }) as usize,
            arg(&args, "--runs", if full { 5 } else { 1 }) as usize,
        );
    }
    if only.is_none_or(|m| m == "latency") {
        latency(
            &rt,
            arg(&args, "--rate", if full { 50_000 } else { 1_000 }),
            arg(&args, "--seconds", if full { 20 } else { 1 }),
        );
    }
    if only.is_none_or(|m| m == "channels") {
        channels(&rt, arg(&args, "--alerts", if full { 20_000 } else { 200 }) as usize, if full { 11 } else { 2 });
    }
    if only.is_some_and(|m| m == "outage") || !full {
        outage(
            &rt,
            arg(&args, "--rate", if full { 5_000 } else { 1_000 }),
            arg(&args, "--outage-minutes", if full { 10 } else { 0 }),
        );
    }
    // Tasks the exporters spawned may still hold the store: end them (and with them the
    // last handles of RocksDB) before the process tears down, or RocksDB aborts.
    rt.shutdown_timeout(Duration::from_secs(30));
    DATA_DIRS.lock().expect("lock").clear();
}
