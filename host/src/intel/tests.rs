use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;

use super::*;
use crate::event::{Endpoint, Enricher, EventClass};
use crate::store::{Store, StoreConfig};

fn open(dir: &tempfile::TempDir, config: IntelConfig) -> (Store, Intel) {
    let store = Store::open(&StoreConfig { path: dir.path().join("db"), ..StoreConfig::default() }).expect("store");
    let intel = Intel::open(&store, config, None).expect("intel");
    (store, intel)
}

fn indicator(id: &str, pattern: &str, modified: &str) -> Value {
    json!({ "type": "indicator", "spec_version": "2.1", "id": id, "created": "2026-01-01T00:00:00Z",
            "modified": modified, "pattern": pattern, "pattern_type": "stix",
            "valid_from": "2026-01-01T00:00:00Z", "confidence": 60, "name": id,
            "kill_chain_phases": [{ "kill_chain_name": "mitre-attack", "phase_name": "command-and-control" }] })
}

fn bundle(objects: Vec<Value>) -> Value {
    json!({ "type": "bundle", "id": "bundle--1", "objects": objects })
}

fn event_from(ip: &str) -> SecurityEvent {
    let mut event = SecurityEvent::new(EventClass::Network, Utc::now());
    event.source = Some(Endpoint { ip: Some(ip.parse().expect("ip")), ..Endpoint::default() });
    event
}

#[test]
fn a_bundle_is_stored_deduplicated_by_version_and_gives_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, intel) = open(&dir, IntelConfig::default());
    let feed = FeedConfig::new("local", FeedKind::Bundle);
    let first = bundle(vec![
        indicator("indicator--a", "[ipv4-addr:value ISSUBSET '203.0.113.0/24']", "2026-01-01T00:00:00Z"),
        indicator("indicator--b", "[process:name = 'x.exe']", "2026-01-01T00:00:00Z"),
        json!({ "type": "malware", "id": "malware--m", "name": "Dropper", "is_family": false,
                "created": "2026-01-01T00:00:00Z", "modified": "2026-01-01T00:00:00Z" }),
        json!({ "type": "campaign", "id": "campaign--c", "name": "Winter", "created": "2026-01-01T00:00:00Z" }),
        json!({ "type": "threat-actor", "id": "threat-actor--t", "name": "Crew", "created": "2026-01-01T00:00:00Z" }),
        json!({ "type": "relationship", "id": "relationship--1", "relationship_type": "indicates",
                "source_ref": "indicator--a", "target_ref": "malware--m", "created": "2026-01-01T00:00:00Z" }),
        json!({ "type": "relationship", "id": "relationship--2", "relationship_type": "indicates",
                "source_ref": "indicator--a", "target_ref": "campaign--c", "created": "2026-01-01T00:00:00Z" }),
        json!({ "type": "relationship", "id": "relationship--3", "relationship_type": "attributed-to",
                "source_ref": "campaign--c", "target_ref": "threat-actor--t", "created": "2026-01-01T00:00:00Z" }),
        json!({ "type": "indicator", "id": "indicator--broken", "valid_from": 7 }),
    ]);
    let report = intel.import(&feed, &first).expect("import");
    assert_eq!((report.applied.added, report.applied.skipped.len(), report.malformed.len()), (7, 1, 1), "{report:?}");
    assert!(report.applied.skipped[0].contains("process:name"), "{report:?}");
    assert_eq!(report.matcher.networks, 1);

    let threat = intel.threat(&event_from("203.0.113.9")).expect("match");
    assert_eq!(threat.indicator_id, "indicator--a");
    assert_eq!(
        (threat.feed.as_str(), threat.confidence, threat.matched_field.as_str()),
        ("local", Some(60), "source.ip")
    );
    assert_eq!(threat.malware, ["Dropper"]);
    assert_eq!(threat.campaigns, ["Winter"]);
    assert_eq!(threat.actors, ["Crew"]);
    assert_eq!(threat.kill_chain_phases, ["mitre-attack:command-and-control"]);

    // The same version again is unchanged; a newer one replaces it; a revoked one removes it.
    let again = intel.import(&feed, &first).expect("import");
    assert_eq!((again.applied.added, again.applied.updated), (0, 0));
    let newer = bundle(vec![indicator("indicator--a", "[ipv4-addr:value = '192.0.2.1']", "2026-02-01T00:00:00Z")]);
    assert_eq!(intel.import(&feed, &newer).expect("import").applied.updated, 1);
    assert!(intel.threat(&event_from("203.0.113.9")).is_none());
    assert!(intel.threat(&event_from("192.0.2.1")).is_some());
    let mut revoked = indicator("indicator--a", "[ipv4-addr:value = '192.0.2.1']", "2026-03-01T00:00:00Z");
    revoked["revoked"] = json!(true);
    assert_eq!(intel.import(&feed, &bundle(vec![revoked])).expect("import").applied.revoked, 1);
    assert!(intel.threat(&event_from("192.0.2.1")).is_none());
}

#[test]
fn indicators_expire_and_low_confidence_ones_are_not_matched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, intel) = open(&dir, IntelConfig { min_confidence: 50, ..IntelConfig::default() });
    let feed = FeedConfig::new("local", FeedKind::Bundle);
    let past = (Utc::now() - ChronoDuration::days(1)).to_rfc3339();
    let mut expired = indicator("indicator--old", "[ipv4-addr:value = '192.0.2.7']", "2026-01-01T00:00:00Z");
    expired["valid_until"] = json!(past);
    let mut weak = indicator("indicator--weak", "[ipv4-addr:value = '192.0.2.8']", "2026-01-01T00:00:00Z");
    weak["confidence"] = json!(10);
    intel.import(&feed, &bundle(vec![expired, weak])).expect("import");
    assert!(intel.threat(&event_from("192.0.2.7")).is_none(), "past valid_until");
    assert!(intel.threat(&event_from("192.0.2.8")).is_none(), "under min_confidence");
    // An event from before the end of validity still matches (replays and backtests).
    let mut old_event = event_from("192.0.2.7");
    old_event.time = Utc::now() - ChronoDuration::days(2);
    assert!(intel.threat(&old_event).is_some());
    assert_eq!(intel.sweep().expect("sweep"), 1);
    assert!(intel.store().indicator("indicator--old").expect("read").is_none());
    assert!(intel.store().indicator("indicator--weak").expect("read").is_some());
    drop(intel);
    // Reopening indexes what is stored.
    let intel = Intel::open(&store, IntelConfig::default(), None).expect("reopen");
    assert!(intel.threat(&event_from("192.0.2.8")).is_some());
    assert_eq!(intel.lookup("192.0.2.8", Utc::now().timestamp_millis()).expect("lookup")["id"], "indicator--weak");
}

#[test]
fn feed_settings_are_checked() {
    let mut taxii = FeedConfig::new("cti", FeedKind::Taxii);
    taxii.url = Some("https://user:pw@taxii.example/taxii2/".into());
    let config = IntelConfig {
        feeds: vec![taxii, FeedConfig::new("cti", FeedKind::Bundle), FeedConfig::new("bad name", FeedKind::Bundle)],
        ..IntelConfig::default()
    };
    let errors = config.validate();
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"intel.feeds.0.collection"), "{errors:?}");
    assert!(paths.contains(&"intel.feeds.0.url"), "{errors:?}");
    assert!(paths.contains(&"intel.feeds.1.name"), "{errors:?}");
    assert!(paths.contains(&"intel.feeds.1.path"), "{errors:?}");
    assert!(paths.contains(&"intel.feeds.2.name"), "{errors:?}");
}

#[test]
fn a_bundle_file_is_a_feed_and_a_broken_one_fails_the_poll_not_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, intel) = open(&dir, IntelConfig::default());
    let path = dir.path().join("bundle.json");
    let doc = bundle(vec![indicator("indicator--file", "[domain-name:value = 'bad.example']", "2026-01-01T00:00:00Z")]);
    std::fs::write(&path, doc.to_string()).expect("write");
    let mut feed = FeedConfig::new("file", FeedKind::Bundle);
    feed.path = Some(path.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let report = rt.block_on(intel.poll(&feed)).expect("poll");
    assert_eq!((report.pages, report.applied.added), (1, 1));
    assert!(intel.lookup("www.bad.example", Utc::now().timestamp_millis()).is_some());
    std::fs::write(&path, "{ not json").expect("write");
    let err = rt.block_on(intel.poll(&feed)).expect_err("broken bundle").to_string();
    assert!(err.contains("not JSON"), "{err}");
    let state = intel.store().feed_state("file").expect("state");
    assert!(state.last_error.is_some_and(|e| e.contains("not JSON")));
    assert!(intel.lookup("www.bad.example", Utc::now().timestamp_millis()).is_some(), "what was stored stays");
}
