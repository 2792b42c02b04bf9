use chrono::Utc;
use serde_json::json;

use super::*;
use crate::event::{EventClass, SecurityEvent};
use crate::source::{IngestConfig, Ingestor};
use crate::store::StoreConfig;
use crate::telemetry::MetricsRegistry;

struct Fixture {
    dir: tempfile::TempDir,
    evidence: Evidence,
    incident: Value,
}

fn fixture(retention: RetentionPolicy) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig { path: dir.path().join("db"), ..StoreConfig::default() };
    let store = Store::open(&config).expect("store");
    let (log, writer, _thread) = Log::start(&store, &config).expect("log");
    let ingestor = Ingestor::new(writer, IngestConfig::default(), &MetricsRegistry::default());
    let events: Vec<SecurityEvent> =
        (0..5).map(|_| SecurityEvent::new(EventClass::Authentication, Utc::now())).collect();
    ingestor.append_blocking("test", &events, Vec::new()).expect("append");
    let incident = json!({
        "id": "0193a1b2-0000-7000-8000-000000000001", "priority": "P2", "title": "test",
        "first_seen": Utc::now(), "last_seen": Utc::now(), "opened_at": Utc::now(),
        "event_ids": [events[0].id.to_string()],
    });
    let settings = ForensicsConfig {
        storage: StorageConfig::Dir { path: dir.path().join("evidence") },
        retention,
        ..ForensicsConfig::default()
    };
    let versions: Versions = Arc::new(|| json!({ "rules": [{ "id": "ssh_brute_force", "fingerprint": "abc" }] }));
    let evidence = Evidence::new(&store, &log, settings, versions).expect("evidence");
    Fixture { dir, evidence, incident }
}

fn alice() -> Actor {
    Actor { who: "alice".into(), why: "case 42".into(), from: "10.0.0.9".into() }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

#[test]
fn a_bundle_verifies_until_an_item_or_its_custody_is_touched() {
    let f = fixture(RetentionPolicy::default());
    let capture = f.dir.path().join("capture.txt");
    std::fs::write(&capture, "captured bytes").expect("write");
    let e = &f.evidence;
    let record = block_on(e.collect("b1", &f.incident, Duration::from_secs(900), &[capture], alice(), Map::new()))
        .expect("collect");
    assert_eq!(record.events, 5);
    assert_eq!(record.priority.as_deref(), Some("P2"));
    let again =
        block_on(e.collect("b1", &f.incident, Duration::from_secs(900), &[], alice(), Map::new())).expect("again");
    assert_eq!(again, record, "collecting the same id returns the bundle");

    let ok = block_on(e.verify("b1", Some(alice()))).expect("verify");
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.items_ok, 5, "incident, events, runs, versions, the captured file");
    let root = f.dir.path().join("evidence/b1");
    let versions = std::fs::read_to_string(root.join("items/versions.json")).expect("versions");
    assert!(versions.contains("ssh_brute_force"));
    block_on(e.export("b1", &f.dir.path().join("out"), alice())).expect("export");
    assert!(f.dir.path().join("out/items/files/capture.txt").exists());
    let chain = block_on(e.custody("b1")).expect("custody");
    let events: Vec<&str> = chain.iter().map(|c| c.event.as_str()).collect();
    assert_eq!(events, ["created", "verified", "exported"]);
    assert_eq!(chain[2].actor, alice());
    assert_eq!(chain[1].prev, chain[0].hash);

    // An item changed: its hash no longer matches the manifest.
    std::fs::write(root.join("items/events.ndjson"), "{}\n").expect("tamper");
    let bad = block_on(e.verify("b1", None)).expect("verify");
    assert!(!bad.ok && bad.problems.iter().any(|p| p.starts_with("events.ndjson: SHA-256")), "{bad:?}");

    // A custody entry edited, and one cut off: both caught.
    let f = fixture(RetentionPolicy::default());
    let e = &f.evidence;
    block_on(e.collect("b2", &f.incident, Duration::from_secs(900), &[], alice(), Map::new())).expect("collect");
    block_on(e.record("b2", "accessed", alice(), "opened the events".into())).expect("record");
    let root = f.dir.path().join("evidence/b2/custody");
    let first = std::fs::read_to_string(root.join("000001.json")).expect("read");
    std::fs::write(root.join("000001.json"), first.replace("\"alice\"", "\"mallory\"")).expect("tamper");
    let bad = block_on(e.verify("b2", None)).expect("verify");
    assert!(bad.problems.iter().any(|p| p.contains("custody entry 1: altered")), "{bad:?}");
    std::fs::write(root.join("000001.json"), first).expect("restore");
    std::fs::remove_file(root.join("000002.json")).expect("cut");
    let bad = block_on(e.verify("b2", None)).expect("verify");
    assert!(bad.problems.iter().any(|p| p.contains("Vigil recorded 2")), "{bad:?}");
}

#[test]
fn the_sweeper_deletes_expired_bundles_and_records_it() {
    let f = fixture(RetentionPolicy {
        default: Duration::ZERO,
        by_priority: BTreeMap::from([("P1".to_owned(), "400d".to_owned())]),
    });
    let e = &f.evidence;
    block_on(e.collect("short", &f.incident, Duration::from_secs(60), &[], alice(), Map::new())).expect("collect");
    let mut p1 = f.incident.clone();
    p1["priority"] = json!("P1");
    block_on(e.collect("long", &p1, Duration::from_secs(60), &[], alice(), Map::new())).expect("collect");
    let deleted = block_on(e.sweep(Utc::now())).expect("sweep");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].bundle.id, "short");
    assert!(deleted[0].objects >= 6, "{:?}", deleted[0]);
    assert!(!f.dir.path().join("evidence/short/manifest.json").exists());
    assert!(f.dir.path().join("evidence/long/manifest.json").exists());
    assert_eq!(e.list().expect("list").iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["long"]);
    assert_eq!(e.deletions().expect("deletions").len(), 1);
    assert!(matches!(block_on(e.verify("short", None)), Err(Error::NotFound(_))));
}
