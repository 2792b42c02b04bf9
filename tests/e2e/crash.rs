//! Durability: an event that got a 2xx survives `kill -9` and reaches the file sink exactly
//! once after the restart; a SIGTERM shuts down in order with everything delivered.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{Server, blocking, sink_lines, wait_for};

const SINK: &str = "[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nroute = { records = [\"event\"] }\nbatch = { max_records = 300 }\n";

fn batch(start: usize, n: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (start..start + n).map(|i| format!("0190a000-0000-7000-8000-{i:012}")).collect();
    let body = ids
        .iter()
        .map(|id| format!(r#"{{"id":"{id}","class":"authentication","action":"ssh_login","outcome":"failure","source":{{"ip":"198.51.100.9"}},"message":"attempt"}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    (ids, body)
}

/// Posts batches until `stop`; records the ids of every batch answered 2xx.
fn client(url: String, acked: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>) {
    blocking(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            let (ids, body) = batch(next, 200);
            next += 200;
            match client.post(&url).body(body).send().await {
                Ok(r) if r.status().is_success() => acked.lock().expect("lock").extend(ids),
                Ok(r) => panic!("unexpected status {}", r.status()),
                // The server is gone: this batch was never acknowledged.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
}

#[test]
fn kill_9_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), SINK);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let poster = std::thread::spawn({
        let (url, acked, stop) = (server.url("/v1/events"), acked.clone(), stop.clone());
        move || client(url, acked, stop)
    });
    // Let the stream run well past a few sink batches, then kill without warning.
    wait_for(Duration::from_secs(60), "4,000 acknowledged events", || {
        (acked.lock().expect("lock").len() >= 4000).then_some(())
    });
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    poster.join().expect("poster");
    let acked: Vec<String> = acked.lock().expect("lock").clone();

    server.restart();
    let out = dir.path().join("out.jsonl");
    let expected: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let lines = wait_for(Duration::from_secs(60), "every acknowledged event in the sink", || {
        let lines = sink_lines(&out);
        let delivered: HashSet<String> =
            lines.iter().filter_map(|l| l["record"]["id"].as_str().map(str::to_owned)).collect();
        expected.iter().all(|id| delivered.contains(*id)).then_some(lines)
    });
    // Exactly once: no event and no sequence number appears twice.
    let mut seen_ids = HashMap::new();
    let mut seen_seqs = HashSet::new();
    for line in &lines {
        let id = line["record"]["id"].as_str().expect("id").to_owned();
        *seen_ids.entry(id).or_insert(0) += 1;
        assert!(seen_seqs.insert(line["seq"].as_u64().expect("seq")), "sequence number repeated: {line}");
    }
    let duplicated: Vec<_> = seen_ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "events delivered twice: {duplicated:?}");
    // Sequence numbers in the sink are strictly increasing: no gap was filled out of order.
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(server.terminate(), "clean shutdown after the restart; log:\n{}", server.log());
}

#[test]
fn sigterm_drains_detection_and_flushes_sinks_before_exiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        dir.path(),
        &SINK.replace("records = [\"event\"]", "records = [\"event\", \"alert\", \"incident\"]"),
    );
    let (_, body) = batch(0, 1000);
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    assert!(server.terminate(), "vigil exits 0 on SIGTERM; log:\n{}", server.log());
    // Right after exit, with no restart: every event, and the brute-force alert and
    // incident detection derived from them, are in the sink.
    let lines = sink_lines(&dir.path().join("out.jsonl"));
    let count = |kind: &str| lines.iter().filter(|l| l["kind"] == kind).count();
    assert_eq!(count("event"), 1000, "log:\n{}", server.log());
    assert!(count("alert") >= 1, "the shipped brute-force rule fired");
    assert!(count("incident") >= 1);
    let log = server.log();
    let order = ["Stopping intake.", "Draining detection.", "Flushing sinks.", "Persisting and closing the store."];
    let positions: Vec<usize> =
        order.iter().map(|m| log.find(m).unwrap_or_else(|| panic!("`{m}` not logged:\n{log}"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "shutdown steps out of order:\n{log}");
}
