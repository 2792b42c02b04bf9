//! Hunts over a stored stream, checked against a brute-force computation over the same
//! events in memory.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use rand::{Rng, SeedableRng};

use super::*;
use crate::event::{Endpoint, EventClass, Outcome, User};
use crate::source::{IngestConfig, Ingestor};
use crate::store::{Store, StoreConfig};
use crate::telemetry::MetricsRegistry;

struct Fixture {
    _dir: tempfile::TempDir,
    _store: Store,
    log: Log,
    index: Index,
    events: Vec<SecurityEvent>,
    t0: DateTime<Utc>,
}

fn fixture(n: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig { path: dir.path().join("db"), ..StoreConfig::default() };
    let store = Store::open(&config).expect("store");
    let (log, writer, _thread) = Log::start(&store, &config).expect("log");
    let ingestor = Ingestor::new(writer, IngestConfig::default(), &MetricsRegistry::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Event times over the last ten minutes, stored now: as live ingest stores them, a
    // little after they happened.
    let t0 = Utc::now() - ChronoDuration::minutes(10);
    let mut events = Vec::new();
    for i in 0..n {
        let time = t0 + ChronoDuration::milliseconds((i as i64) * 600_000 / n as i64);
        let mut e = SecurityEvent::new(
            if rng.random_bool(0.8) { EventClass::Authentication } else { EventClass::Network },
            time,
        );
        e.outcome = if rng.random_bool(0.7) { Outcome::Failure } else { Outcome::Success };
        e.source = Some(Endpoint {
            ip: Some(format!("203.0.113.{}", rng.random_range(1..20)).parse().expect("ip")),
            bytes: rng.random_bool(0.9).then(|| rng.random_range(0..10_000)),
            ..Endpoint::default()
        });
        e.user = Some(Box::new(User { name: Some(format!("user{}", rng.random_range(0..30))), ..User::default() }));
        events.push(e);
    }
    for chunk in events.chunks(500) {
        ingestor.append_blocking("test", chunk, Vec::new()).expect("append");
    }
    let index = Index::new(&store, &IndexConfig::default()).expect("index");
    while index.catch_up(&log, 1000).expect("index") > 0 {}
    Fixture { _dir: dir, _store: store, log, index, events, t0 }
}

fn run(f: &Fixture, spec: HuntSpec, index: bool) -> (Vec<Map<String, Value>>, HuntStats) {
    let hunt = Hunt::compile(&spec, &CompileOptions::default(), None, Utc::now()).expect("compile");
    let mut rows = Vec::new();
    let stats = hunt
        .run(&f.log, index.then_some(&f.index), Duration::from_secs(3600), 100_000, |r| rows.push(r), |_, _| {})
        .expect("run");
    (rows, stats)
}

#[test]
fn grouped_hunts_match_a_brute_force_computation() {
    let f = fixture(3000);
    let from = f.t0 + ChronoDuration::minutes(2);
    let to = f.t0 + ChronoDuration::minutes(8);
    let spec = HuntSpec {
        from: Some(from.to_rfc3339()),
        to: Some(to.to_rfc3339()),
        filter: Some(r#"event.class == "authentication" && event.outcome == "failure""#.into()),
        group_by: vec!["source.ip".into()],
        aggregates: [
            "count",
            "distinct(user.name)",
            "sum(source.bytes)",
            "max(source.bytes)",
            "min(user.name)",
            "p90(source.bytes)",
        ]
        .map(str::to_owned)
        .to_vec(),
        sort: vec!["source.ip".into()],
        limit: Some(1000),
        ..HuntSpec::default()
    };
    let (rows, stats) = run(&f, spec, true);
    assert!(stats.index.is_none(), "no equality on an indexed field");

    #[derive(Default)]
    struct Expect {
        count: u64,
        users: BTreeSet<String>,
        bytes: Vec<u64>,
        min_user: Option<String>,
    }
    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    for e in &f.events {
        if e.time < from || e.time >= to || e.class != EventClass::Authentication || e.outcome != Outcome::Failure {
            continue;
        }
        let ip = e.source.as_ref().and_then(|s| s.ip).expect("ip").to_string();
        let x = expected.entry(ip).or_default();
        x.count += 1;
        let user = e.user.as_ref().and_then(|u| u.name.clone()).expect("user");
        x.min_user = Some(x.min_user.take().map_or(user.clone(), |m| m.min(user.clone())));
        x.users.insert(user);
        x.bytes.extend(e.source.as_ref().and_then(|s| s.bytes));
    }
    assert_eq!(rows.len(), expected.len());
    for (row, (ip, x)) in rows.iter().zip(&expected) {
        assert_eq!(row["source.ip"], json!(ip));
        assert_eq!(row["count"], json!(x.count), "{ip}");
        assert_eq!(row["distinct(user.name)"], json!(x.users.len()), "{ip}");
        assert_eq!(row["sum(source.bytes)"], json!(x.bytes.iter().sum::<u64>()), "{ip}");
        assert_eq!(row["max(source.bytes)"], json!(x.bytes.iter().max()), "{ip}");
        assert_eq!(row["min(user.name)"], json!(x.min_user), "{ip}");
        let mut sorted = x.bytes.clone();
        sorted.sort_unstable();
        let rank = ((0.9 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        assert_eq!(row["p90(source.bytes)"], json!(sorted[rank - 1]), "{ip}");
    }
}

#[test]
fn an_indexed_hunt_reads_only_its_value_and_agrees_with_a_scan() {
    let f = fixture(3000);
    let spec = |_: ()| HuntSpec {
        from: Some((f.t0 + ChronoDuration::minutes(1)).to_rfc3339()),
        to: Some((f.t0 + ChronoDuration::minutes(9)).to_rfc3339()),
        filter: Some(r#"event.source.ip == "203.0.113.7" && event.outcome == "success""#.into()),
        select: vec!["id".into(), "user.name".into()],
        limit: Some(100_000),
        ..HuntSpec::default()
    };
    let (indexed, stats) = run(&f, spec(()), true);
    let (scanned, scan_stats) = run(&f, spec(()), false);
    assert_eq!(stats.index.as_deref(), Some("source.ip"));
    assert_eq!(indexed, scanned);
    assert!(stats.read * 5 < scan_stats.read, "the index reads a fraction: {stats:?} vs {scan_stats:?}");
    let expected: Vec<String> = f
        .events
        .iter()
        .filter(|e| {
            e.time >= f.t0 + ChronoDuration::minutes(1)
                && e.time < f.t0 + ChronoDuration::minutes(9)
                && e.outcome == Outcome::Success
                && e.source.as_ref().and_then(|s| s.ip) == Some("203.0.113.7".parse().expect("ip"))
        })
        .map(|e| e.id.to_string())
        .collect();
    let got: Vec<String> = indexed.iter().map(|r| r["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(got, expected);
    assert!(!got.is_empty());
}

#[test]
fn a_time_range_reads_only_the_records_stored_in_it() {
    let f = fixture(300);
    let count = |from: DateTime<Utc>, to: DateTime<Utc>, max_delay: Duration| {
        let spec = HuntSpec { from: Some(from.to_rfc3339()), to: Some(to.to_rfc3339()), ..HuntSpec::default() };
        let hunt = Hunt::compile(&spec, &CompileOptions::default(), None, Utc::now()).expect("compile");
        hunt.run(&f.log, None, max_delay, 10, |_| {}, |_, _| {}).expect("run")
    };
    // Everything was stored just now: a range that ended over `max_delay` ago reads nothing,
    // and neither does one that starts in the future.
    let past = count(f.t0 - ChronoDuration::hours(3), f.t0 - ChronoDuration::hours(2), Duration::from_secs(600));
    assert_eq!((past.read, past.range.0, past.range.1), (0, past.range.0, past.range.0));
    let future = count(Utc::now() + ChronoDuration::hours(1), Utc::now() + ChronoDuration::hours(2), Duration::ZERO);
    assert_eq!(future.read, 0);
    // A range around the stored events reads them all.
    let all = count(f.t0 - ChronoDuration::minutes(1), Utc::now() + ChronoDuration::minutes(1), Duration::ZERO);
    assert_eq!((all.read, all.matched), (300, 300));
}

#[test]
fn projections_page_and_queries_are_checked() {
    let f = fixture(500);
    let page = |after: Option<u64>| HuntSpec {
        filter: Some(r#"event.user.name == "user3""#.into()),
        select: vec!["id".into()],
        limit: Some(4),
        after,
        ..HuntSpec::default()
    };
    let (first, stats) = run(&f, page(None), true);
    assert_eq!(first.len(), 4);
    assert!(stats.truncated);
    let (second, _) = run(&f, page(Some(stats.last_seq)), true);
    let all: Vec<&SecurityEvent> =
        f.events.iter().filter(|e| e.user.as_ref().and_then(|u| u.name.as_deref()) == Some("user3")).collect();
    let ids: Vec<String> = first.iter().chain(&second).map(|r| r["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids, all.iter().take(8).map(|e| e.id.to_string()).collect::<Vec<_>>());

    let compile = |spec: HuntSpec| Hunt::compile(&spec, &CompileOptions::default(), None, Utc::now()).map(|_| ());
    let err = |spec: HuntSpec| compile(spec).expect_err("refused").to_string();
    assert!(err(HuntSpec { filter: Some("event.nope == 1".into()), ..HuntSpec::default() }).contains("nope"));
    assert!(
        err(HuntSpec { aggregates: vec!["median(source.bytes)".into()], ..HuntSpec::default() }).contains("median")
    );
    assert!(err(HuntSpec { select: vec!["source.ipp".into()], ..HuntSpec::default() }).contains("source.ip"));
    assert!(
        err(HuntSpec { from: Some("2h".into()), to: Some("3h".into()), ..HuntSpec::default() }).contains("not before")
    );
    let fixed = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("time");
    assert_eq!(parse_time("2026-01-01T00:00:00Z", Utc::now()), Ok(fixed));
}

#[test]
fn a_saved_hunt_reports_rows_as_a_finding() {
    let f = fixture(200);
    let saved = SavedHunt {
        id: "many_failures".into(),
        title: Some("Addresses with many failures".into()),
        every: Duration::from_secs(60),
        lookback: Some(Duration::from_secs(3 * 3600)),
        severity: crate::event::Severity::High,
        query: HuntSpec {
            filter: Some(r#"event.outcome == "failure""#.into()),
            group_by: vec!["source.ip".into()],
            sort: vec!["-count".into()],
            limit: Some(3),
            ..HuntSpec::default()
        },
    };
    let rows =
        saved.run_once(&f.log, Some(&f.index), &CompileOptions::default(), None, Duration::from_secs(60)).expect("run");
    assert_eq!(rows.len(), 3);
    let finding = saved.finding(&rows);
    assert_eq!((finding.class, finding.provider.as_deref()), (EventClass::Finding, Some("vigil.hunt")));
    assert_eq!(finding.attributes["hunt"]["id"], "many_failures");
    assert_eq!(finding.attributes["hunt"]["rows"], 3);
    assert!(saved.validate().is_empty());
}
