use std::path::PathBuf;

use chrono::Utc;

use super::*;
use crate::event::{Endpoint, EventClass, Outcome, User};
use crate::rules::{CompileOptions, RuleSet};

const BASE: i64 = 1_700_000_000;

fn rules(sources: &[&str]) -> RuleSet {
    let sources =
        sources.iter().enumerate().map(|(i, t)| (PathBuf::from(format!("r{i}.rhai")), t.to_string())).collect();
    RuleSet::compile(sources, Vec::new(), &CompileOptions::default()).expect("rules compile")
}

fn detector(sources: &[&str]) -> Detector {
    Detector::new(
        rules(sources),
        DetectConfig { allowed_lateness: Duration::from_secs(60), ..DetectConfig::default() },
        DetectMetrics::default(),
    )
}

fn auth(ip: &str, user: &str, outcome: Outcome, secs: i64) -> Arc<SecurityEvent> {
    let t = DateTime::from_timestamp(BASE + secs, 0).expect("time");
    let mut e = SecurityEvent::new(EventClass::Authentication, t);
    e.outcome = outcome;
    e.source = Some(Endpoint { ip: Some(ip.parse().expect("ip")), ..Default::default() });
    e.user = Some(Box::new(User { name: Some(user.into()), ..Default::default() }));
    Arc::new(e)
}

fn fail(ip: &str, secs: i64) -> Arc<SecurityEvent> {
    auth(ip, "root", Outcome::Failure, secs)
}

fn run(d: &mut Detector, events: &[Arc<SecurityEvent>]) -> Vec<Alert> {
    let mut out = Vec::new();
    for e in events {
        d.process(e, &mut out);
    }
    out
}

const THRESHOLD: &str = r#"
    const RULE = #{ id: "brute", title: "Brute force", severity: "high", group_by: ["source.ip"],
        window: #{ type: "threshold", count: 3, within: "1m" } };
    fn condition(event) { event.class == "authentication" && event.outcome == "failure" }
"#;

const DISTINCT: &str = r#"
    const RULE = #{ id: "spray", title: "Password spraying", severity: "high", group_by: ["source.ip"],
        window: #{ type: "distinct", field: "user.name", count: 3, within: "10m" } };
    fn condition(event) { event.class == "authentication" && event.outcome == "failure" }
"#;

const SEQUENCE: &str = r#"
    const RULE = #{ id: "brute_then_success", title: "Brute force then success", severity: "critical",
        group_by: ["source.ip"],
        window: #{ type: "sequence", within: "10m", steps: [#{ when: "failed", count: 3 }, #{ when: "succeeded" }] } };
    fn failed(event) { event.class == "authentication" && event.outcome == "failure" }
    fn succeeded(event) { event.class == "authentication" && event.outcome == "success" }
"#;

const ABSENCE: &str = r#"
    const RULE = #{ id: "no_logout", title: "Session never closed", severity: "low", group_by: ["user.name"],
        window: #{ type: "absence", first: "login", then: "logout", within: "5m" } };
    fn login(event) { event.class == "authentication" && event.action == "login" }
    fn logout(event) { event.class == "authentication" && event.action == "logout" }
"#;

#[test]
fn threshold_fires_per_group_within_the_window() {
    let mut d = detector(&[THRESHOLD]);
    let events = [fail("1.1.1.1", 0), fail("2.2.2.2", 1), fail("1.1.1.1", 10), fail("1.1.1.1", 20)];
    let alerts = run(&mut d, &events);
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!((a.group_key.as_str(), a.count, a.dedup_key.as_str()), ("1.1.1.1", 3, "1.1.1.1"));
    assert_eq!(a.event_ids, vec![events[0].id, events[2].id, events[3].id]);
    assert_eq!(a.first_time, events[0].time);
    assert!(a.entities.ips.contains("1.1.1.1"));
    assert!(
        run(&mut d, &[fail("1.1.1.1", 100), fail("1.1.1.1", 170), fail("1.1.1.1", 240)]).is_empty(),
        "too spread out"
    );
}

#[test]
fn threshold_out_of_order_within_and_beyond_lateness() {
    let mut d = detector(&[THRESHOLD]);
    // Arrival order 50, 10, 30: within the 60 s lateness, each counts at its event time.
    let alerts = run(&mut d, &[fail("1.1.1.1", 50), fail("1.1.1.1", 10), fail("1.1.1.1", 30)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].first_time.timestamp(), BASE + 10);
    // The newest event is at 500 s: events at 300 s are beyond the lateness and ignored.
    let mut d = detector(&[THRESHOLD]);
    let alerts = run(&mut d, &[fail("9.9.9.9", 500), fail("1.1.1.1", 300), fail("1.1.1.1", 301), fail("1.1.1.1", 302)]);
    assert!(alerts.is_empty(), "late events must not count");
}

#[test]
fn distinct_counts_users_per_source() {
    let mut d = detector(&[DISTINCT]);
    let events = [
        auth("5.5.5.5", "alice", Outcome::Failure, 0),
        auth("5.5.5.5", "alice", Outcome::Failure, 5),
        auth("5.5.5.5", "bob", Outcome::Failure, 10),
        auth("6.6.6.6", "carol", Outcome::Failure, 11),
        auth("5.5.5.5", "carol", Outcome::Failure, 20),
    ];
    let alerts = run(&mut d, &events);
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].group_key.as_str(), alerts[0].count), ("5.5.5.5", 3));
}

#[test]
fn sequence_needs_the_steps_in_order() {
    let mut d = detector(&[SEQUENCE]);
    let ok = |secs| auth("7.7.7.7", "root", Outcome::Success, secs);
    // A success before the failures does not complete the chain.
    assert!(run(&mut d, &[ok(0), fail("7.7.7.7", 10), fail("7.7.7.7", 20), fail("7.7.7.7", 30)]).is_empty());
    let alerts = run(&mut d, &[ok(40)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].count, alerts[0].first_time.timestamp()), (4, BASE + 10));
    // A late failure (inside the lateness) arriving after the success still orders by time.
    let mut d = detector(&[SEQUENCE]);
    let ok8 = auth("8.8.8.8", "root", Outcome::Success, 40);
    let alerts = run(&mut d, &[fail("8.8.8.8", 10), fail("8.8.8.8", 20), ok8, fail("8.8.8.8", 30)]);
    assert_eq!(alerts.len(), 1, "the 30 s failure belongs before the 40 s success");
}

#[test]
fn absence_fires_when_the_watermark_passes_the_deadline() {
    let mut d = detector(&[ABSENCE]);
    let session = |user: &str, action: &str, secs: i64| {
        let mut e = (*auth("10.0.0.1", user, Outcome::Success, secs)).clone();
        e.action = Some(action.into());
        Arc::new(e)
    };
    let mut alerts =
        run(&mut d, &[session("alice", "login", 0), session("bob", "login", 10), session("alice", "logout", 100)]);
    assert!(alerts.is_empty());
    // 5 min + 60 s lateness after bob's login, nothing from bob: alert.
    alerts = run(&mut d, &[session("carol", "other", 10 + 300 + 61)]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].group_key, "bob");
    assert!(alerts[0].entities.users.contains("bob"));
}

#[test]
fn windows_survive_a_checkpoint_and_reload_but_not_a_rule_change() {
    let (_dir, store) = crate::store::testing::temp_store();
    let mut d = detector(&[THRESHOLD]);
    assert!(run(&mut d, &[fail("1.1.1.1", 0), fail("1.1.1.1", 1)]).is_empty());
    store.write(d.checkpoint_ops(), true).expect("persist");
    let mut restarted = detector(&[THRESHOLD]);
    assert_eq!(restarted.load_state(&store).expect("load"), 1);
    assert_eq!(run(&mut restarted, &[fail("1.1.1.1", 2)]).len(), 1);
    store.write(restarted.checkpoint_ops(), true).expect("persist");
    assert_eq!(detector(&[THRESHOLD]).load_state(&store).expect("load"), 0, "the fired window was emptied and deleted");

    // Windows of a rule whose source changed while Vigil was down are dropped.
    let mut d = detector(&[THRESHOLD]);
    run(&mut d, &[fail("3.3.3.3", 0)]);
    store.write(d.checkpoint_ops(), true).expect("persist");
    let mut changed = detector(&[&THRESHOLD.replace("count: 3", "count: 4")]);
    assert_eq!(changed.load_state(&store).expect("load"), 0);
}

#[test]
fn the_watermark_survives_a_restart() {
    let (_dir, store) = crate::store::testing::temp_store();
    let mut d = detector(&[THRESHOLD]);
    run(&mut d, &[fail("9.9.9.9", 1000)]);
    store.write(d.checkpoint_ops(), true).expect("persist");
    let mut restarted = detector(&[THRESHOLD]);
    restarted.load_state(&store).expect("load");
    assert!(
        run(&mut restarted, &[fail("1.1.1.1", 0), fail("1.1.1.1", 1), fail("1.1.1.1", 2)]).is_empty(),
        "still late after restart"
    );
}

#[test]
fn group_count_is_bounded_and_evictions_counted() {
    let rules = rules(&[THRESHOLD]);
    let config = DetectConfig { max_groups_per_rule: 10, ..DetectConfig::default() };
    let metrics = DetectMetrics::default();
    let mut d = Detector::new(rules, config, metrics.clone());
    for i in 0..100 {
        run(&mut d, &[fail(&format!("10.0.0.{i}"), i)]);
    }
    assert!(d.window_count() <= 10, "{} groups", d.window_count());
    let evicted = metrics.evicted.get_or_create(&RuleLabels { rule: "brute".into() }).get();
    assert!(evicted >= 90, "{evicted} evictions");
}

#[test]
fn hostile_rules_are_bounded_and_do_not_stop_the_others() {
    let hostile = [
        ("loop", "loop {}"),
        ("huge", r#"let s = "xxxxxxxx"; loop { s += s; }"#),
        ("recurse", "deep(0)"),
        ("regex", r#"regex_match(event.user.name, "(a+)+$") || regex_match(event.user.name, "x{1000}{1000}")"#),
    ];
    let mut sources: Vec<String> = hostile
        .iter()
        .map(|(id, body)| format!("const RULE = #{{ id: \"{id}\", title: \"t\", severity: \"low\" }};\nfn deep(n) {{ deep(n + 1) }}\nfn condition(event) {{ {body} }}"))
        .collect();
    sources.push(THRESHOLD.to_owned());
    let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    let metrics = DetectMetrics::default();
    let config = DetectConfig { disable_after_errors: 3, ..DetectConfig::default() };
    let mut d = Detector::new(rules(&refs), config, metrics.clone());
    let started = std::time::Instant::now();
    let alerts = run(&mut d, &[fail("4.4.4.4", 0), fail("4.4.4.4", 1), fail("4.4.4.4", 2), fail("4.4.4.4", 3)]);
    let brute = alerts.iter().filter(|a| a.rule_id.as_str() == "brute").count();
    assert_eq!(brute, 1, "the healthy rule still fires: {alerts:#?}");
    let disabled: Vec<&str> =
        alerts.iter().filter(|a| a.rule_id.as_str() == RULE_DISABLED).map(|a| a.group_key.as_str()).collect();
    assert_eq!(disabled, ["loop", "huge", "recurse", "regex"], "each hostile rule is disabled after 3 errors");
    for (id, _) in hostile {
        let errors: u64 = ["budget", "runtime"]
            .iter()
            .map(|r| metrics.errors.get_or_create(&RuleErrorLabels { rule: id.into(), reason: (*r).into() }).get())
            .sum();
        assert_eq!(errors, 3, "{id}");
    }
    // Bounded: four hostile rules evaluated a few times each finish promptly (generous bound,
    // only to catch a runaway, not to measure speed).
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn replacing_rules_keeps_windows_of_unchanged_rules() {
    let mut d = detector(&[THRESHOLD, DISTINCT]);
    run(
        &mut d,
        &[
            fail("1.1.1.1", 0),
            fail("1.1.1.1", 1),
            auth("2.2.2.2", "a", Outcome::Failure, 2),
            auth("2.2.2.2", "b", Outcome::Failure, 3),
        ],
    );
    let ops = d.replace_rules(rules(&[THRESHOLD, &DISTINCT.replace("count: 3", "count: 2")]));
    let deleted: Vec<String> = ops
        .iter()
        .map(|op| match op {
            Op::Delete { key, .. } => String::from_utf8_lossy(key).into_owned(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut deleted = deleted;
    deleted.sort();
    assert_eq!(deleted, ["win/spray\u{0}1.1.1.1", "win/spray\u{0}2.2.2.2"], "only the changed rule's windows go");
    let alerts = run(&mut d, &[fail("1.1.1.1", 4)]);
    assert!(alerts.iter().any(|a| a.rule_id.as_str() == "brute"), "the threshold window survived the reload");
}

#[test]
fn dedup_templates_and_affected_users() {
    let rule = r#"
        const RULE = #{ id: "leak", title: "Leak", severity: "P3", category: "data_leak", dedup: "{{user.name}}@{{host.name}}" };
        fn condition(event) { event.class == "file" }
    "#;
    let mut d = detector(&[rule]);
    let mut e = SecurityEvent::new(EventClass::File, Utc::now());
    e.user = Some(Box::new(User { name: Some("eve".into()), ..Default::default() }));
    e.attributes.insert("affected_users".into(), serde_json::json!(12000));
    let alerts = run(&mut d, &[Arc::new(e)]);
    assert_eq!(alerts[0].dedup_key, "eve@");
    assert_eq!(alerts[0].affected_users, Some(12000));
    assert_eq!(alerts[0].category, Some(Category::DataLeak));
}

#[test]
fn warming_replays_windows_without_alerts_even_behind_the_watermark() {
    const SINGLE: &str = r#"
        const RULE = #{ id: "any_failure", title: "Failure", severity: "low" };
        fn condition(event) { event.class == "authentication" && event.outcome == "failure" }
    "#;
    // The new owner of a partition has already seen newer events of other keys (its
    // watermark is at 540 s); the moved key's last failures are replayed.
    let mut d = detector(&[THRESHOLD, ABSENCE, SINGLE]);
    assert_eq!(run(&mut d, &[fail("9.9.9.9", 600)]).len(), 1, "the single-event rule");
    for secs in [590, 595] {
        assert_eq!(d.warm(&fail("1.1.1.1", secs)), 0, "nothing fires, single-event rules are skipped");
    }
    // A login whose logout wait ended long ago is not started again.
    let mut old_login = (*auth("1.1.1.1", "bob", Outcome::Success, 10)).clone();
    old_login.action = Some("login".into());
    assert_eq!(d.warm(&Arc::new(old_login)), 0);
    // Live: one more failure within the minute fires with the replayed ones counted.
    let alerts = run(&mut d, &[fail("1.1.1.1", 598), fail("9.9.9.9", 1000)]);
    let brute: Vec<&Alert> = alerts.iter().filter(|a| a.rule_id.as_str() == "brute").collect();
    assert_eq!(brute.len(), 1, "{alerts:?}");
    assert_eq!(brute[0].count, 3);
    assert_eq!(brute[0].first_time.timestamp(), BASE + 590);
    assert!(alerts.iter().all(|a| a.rule_id.as_str() != "no_logout"), "{alerts:?}");
    // What the first owner already raised is counted, not raised again.
    let raised: usize = [990, 991, 992].iter().map(|s| d.warm(&fail("2.2.2.2", *s))).sum();
    assert_eq!(raised, 1);
}
