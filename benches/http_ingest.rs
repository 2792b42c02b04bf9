//! HTTP ingest end to end: a `vigil serve` process (the shipped rules running, no sinks)
//! loaded over loopback by concurrent clients posting NDJSON batches of ~300-byte events.
//! Reports events/s acknowledged (2xx: durable in the log) and the p50/p99 latency of the
//! 2xx responses.
//!
//! `cargo bench --bench http_ingest -- [--seconds S] [--clients C] [--batch B] [--format ecs]`
//! (`--format ecs`: the same events as ECS documents, posted with `?format=ecs`)
//! Without `--bench` (as `cargo test` runs it) it does a one-second smoke run.

#[path = "fixtures.rs"]
mod fixtures;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The server process, killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let seconds = arg(&args, "--seconds", if full { 15 } else { 1 });
    let clients = arg(&args, "--clients", if full { 8 } else { 2 }) as usize;
    let batch = arg(&args, "--batch", if full { 1000 } else { 100 }) as usize;
    let ecs = args.iter().position(|a| a == "--format").and_then(|i| args.get(i + 1)).is_some_and(|f| f == "ecs");

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let config = format!(
        // The load generator is one token: its rate limit is lifted (the default, 50
        // requests/s, is for people and scripts).
        "[api]\nlisten = \"127.0.0.1:{port}\"\n[api.auth]\nrate_per_second = 1000000\nburst = 1000000\n[store]\npath = {:?}\n[rules]\ndir = {rules:?}\n[telemetry]\nlog_level = \"warn\"\n",
        dir.path().join("data")
    );
    std::fs::write(dir.path().join("vigil.toml"), config).expect("config");
    let minted = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--config", dir.path().join("vigil.toml").to_str().expect("utf8")])
        .args(["token", "create", "--role", "admin", "--name", "loadgen"])
        .output()
        .expect("vigil token create");
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).expect("utf8").trim().to_owned();
    let server = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["--config", dir.path().join("vigil.toml").to_str().expect("utf8"), "serve"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn vigil");
    // Killed however the run ends (a failed assertion included), before its data dir goes.
    let server = KillOnDrop(server);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let (events, latencies, elapsed) = rt.block_on(async {
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        let client = reqwest::Client::builder().default_headers(auth).build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(Instant::now() < deadline, "vigil did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (body, path) = if ecs {
            (fixtures::encoded_body(vigil::transform::Format::Ecs, batch), "/v1/events?format=ecs")
        } else {
            (fixtures::ndjson_body(batch), "/v1/events")
        };
        let body = bytes::Bytes::from(body);
        let start = Instant::now();
        let stop = start + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let (client, url, body) = (client.clone(), format!("{base}{path}"), body.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < stop {
                    let sent = Instant::now();
                    let response = client.post(&url).body(body.clone()).send().await.expect("post");
                    assert_eq!(response.status().as_u16(), 202, "every batch is accepted");
                    latencies.push(sent.elapsed());
                }
                latencies
            });
        }
        let mut latencies: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
        let elapsed = start.elapsed();
        latencies.sort();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let metrics = client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
        let lag = metrics
            .lines()
            .find(|l| l.starts_with("vigil_consumer_lag_records{consumer=\"detect\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
            .to_owned();
        println!("detection backlog when the load stopped: {lag} records");
        (latencies.len() * batch, latencies, elapsed)
    });
    // The measurement is over: no need to wait for detection to drain its backlog.
    drop(server);

    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "http_ingest ({}): {clients} clients x {batch}-event batches for {:.1}s: {:.0} events/s acknowledged ({} requests); 2xx latency p50 {:.2} ms, p99 {:.2} ms",
        if ecs { "ecs" } else { "vigil" },
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}
