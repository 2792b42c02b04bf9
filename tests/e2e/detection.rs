//! Detection end to end: the shipped pack's examples through the CLI, windows across a
//! restart, hot reload (good and broken rules), the incident lifecycle over the API, a
//! backtest that reproduces the live run exactly, a syslog file replayed through the CLI,
//! and the rule index checked against the shipped pack on the demo stream.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use vigil::config::VigilConfig;
use vigil::rules::{CompileOptions, RuleSet};

use crate::helpers::{Server, assert_backtest_reproduces, blocking, live_alerts, rules_dir, vigil_bin, wait_for};

fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    blocking(async {
        let response = reqwest::Client::new().post(server.url(path)).json(&body).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn get(server: &Server, path: &str) -> Value {
    blocking(async { reqwest::get(server.url(path)).await.expect("request").json().await.expect("json") })
}

fn failures(ip: &str, n: usize, start_secs: i64) -> String {
    (0..n)
        .map(|i| {
            let time = chrono::DateTime::from_timestamp(1_767_225_600 + start_secs + i as i64, 0).expect("time").to_rfc3339();
            format!(r#"{{"class":"authentication","action":"ssh_login","outcome":"failure","source":{{"ip":"{ip}"}},"time":"{time}"}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn post_events(server: &Server, body: String) {
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
}

fn incidents(server: &Server, rule: &str) -> Vec<Value> {
    get(server, "/v1/incidents?limit=1000")["incidents"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|i| i["rule_id"] == rule)
        .cloned()
        .collect()
}

#[test]
fn rules_test_passes_on_the_shipped_pack() {
    let out = Command::new(vigil_bin()).args(["rules", "test"]).arg(rules_dir()).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    assert!(!stdout.contains("rules without examples"), "{stdout}");
}

#[test]
fn rules_list_shows_how_the_index_finds_each_rule() {
    let out = Command::new(vigil_bin()).args(["rules", "list"]).arg(rules_dir()).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let found_by = |rule: &str| {
        let line =
            stdout.lines().find(|l| l.starts_with(&format!("{rule} "))).unwrap_or_else(|| panic!("{rule}: {stdout}"));
        line.split_whitespace().nth(4).expect("FOUND BY column").to_owned()
    };
    // An `action` list, except on process events, which its regex branch reads.
    assert_eq!(found_by("audit_logging_disabled"), "action,*");
    assert_eq!(found_by("web_path_scan"), "http.status_code");
    assert_eq!(found_by("log4shell_jndi"), "*");
    // `exists(event.threat.indicator_id)`: only events that carry the field.
    assert_eq!(found_by("threat_intel_match"), "threat.indicator_id");
    // Needs a plugin that is not loaded: it does not run.
    assert_eq!(found_by("login_from_listed_address"), "-");
}

#[test]
fn a_window_survives_a_restart_and_the_lifecycle_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "");
    post_events(&server, failures("203.0.113.201", 3, 0));
    wait_for(Duration::from_secs(20), "detection to catch up", || {
        let metrics = server.metrics();
        (crate::helpers::metric(&metrics, &["vigil_consumer_lag_records", "consumer=\"detect\""]) == 0.0
            && crate::helpers::metric(&metrics, &["vigil_rule_evaluations_total", "ssh_brute_force"]) >= 3.0)
            .then_some(())
    });
    assert!(incidents(&server, "ssh_brute_force").is_empty(), "three failures are not five");
    assert!(server.terminate(), "clean stop");
    server.restart();
    post_events(&server, failures("203.0.113.201", 2, 3));
    let incident = wait_for(Duration::from_secs(20), "the incident after the restart", || {
        incidents(&server, "ssh_brute_force").into_iter().next()
    });
    assert_eq!(incident["event_count"], 5, "three before the restart and two after: {incident:#}");

    let id = incident["id"].as_str().expect("id").to_owned();
    let (status, body) =
        post(&server, &format!("/v1/incidents/{id}/transition"), json!({ "to": "acknowledged", "note": "on it" }));
    assert_eq!((status, body["status"].as_str()), (200, Some("acknowledged")), "{body}");
    let (status, body) = post(&server, &format!("/v1/incidents/{id}/transition"), json!({ "to": "detected" }));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("invalid_transition")), "{body}");
    let (status, _) = post(&server, &format!("/v1/incidents/{id}/transition"), json!({ "to": "sleeping" }));
    assert_eq!(status, 400);
    let (status, _) = post(&server, &format!("/v1/incidents/{id}/comment"), json!({ "text": "blocked at the edge" }));
    assert_eq!(status, 200);
    let full = get(&server, &format!("/v1/incidents/{id}"));
    // The shipped playbook writes its own `playbook` entries beside these.
    let kinds: Vec<&str> = full["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .filter(|k| *k != "playbook")
        .collect();
    assert_eq!(kinds, ["opened", "status", "note"], "{full:#}");

    // The CLI goes through the same API.
    let out = Command::new(vigil_bin())
        .args(["incidents", "transition", &id, "resolved", "--note", "done", "--url", &server.url("")])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(&server, &format!("/v1/incidents/{id}"))["status"], "resolved");
}

fn copy_rule(from: &str, to: &Path, edit: impl Fn(String) -> String) {
    let text = std::fs::read_to_string(rules_dir().join(from)).expect("shipped rule");
    std::fs::write(to.join(from), edit(text)).expect("write rule");
}

#[test]
fn hot_reload_swaps_good_rules_and_keeps_running_on_broken_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("myrules");
    std::fs::create_dir(&rules).expect("mkdir");
    copy_rule("ssh_brute_force.rhai", &rules, |t| t);
    let mut server = Server::start(dir.path(), &format!("[rules]\ndir = {rules:?}\n"));
    let count = |server: &Server| get(server, "/v1/rules")["rules"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(count(&server), 1);

    // A broken edit is refused through the API with its errors; the old rule keeps working.
    std::fs::write(
        rules.join("broken.rhai"),
        "const RULE = #{ id: \"b\", title: \"t\", severity: \"low\" };\nfn condition(e) { e.class == }\n",
    )
    .expect("write");
    let (status, body) = post(&server, "/v1/rules/reload", json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_rules")), "{body}");
    assert!(body["error"]["errors"][0].as_str().is_some_and(|e| e.contains("broken.rhai:2:")), "{body}");
    post_events(&server, failures("198.51.100.31", 10, 0));
    wait_for(Duration::from_secs(20), "the old rule still detecting", || {
        (!incidents(&server, "ssh_brute_force").is_empty()).then_some(())
    });

    // The watcher notices the broken file too, reports it and keeps the old rules.
    wait_for(Duration::from_secs(30), "the watcher to report the broken file", || {
        server.log().contains("Rule reload refused.").then_some(())
    });
    assert_eq!(count(&server), 1);

    // A fixed directory is picked up by the watcher without any call.
    std::fs::remove_file(rules.join("broken.rhai")).expect("rm");
    copy_rule("port_scan.rhai", &rules, |t| t);
    wait_for(Duration::from_secs(30), "the watcher to load the new rule", || (count(&server) == 2).then_some(()));
    assert!(server.terminate());
}

#[test]
fn backtest_reproduces_the_live_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = VigilConfig::default();
    config.store.path = dir.path().join("data");
    config.rules.dir = rules_dir();
    config.rules.watch = false;
    let stream = vigil::app::demo::generate(&vigil::app::demo::DemoOptions { events: 6000, seed: Some(5) });
    let live = live_alerts(&config, &stream.events, 700);
    assert!(live.len() >= 6, "the demo's attacks raised alerts: {}", live.len());
    let report = assert_backtest_reproduces(&config, &rules_dir(), &live);
    assert_eq!(report.events, 6000);
}

#[test]
fn a_syslog_file_replays_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("auth.log");
    let mut lines: Vec<String> = (0..25)
        .map(|i| {
            format!(
                "Dec  2 10:00:{i:02} bastion sshd[812]: Failed password for root from 198.51.100.9 port {} ssh2",
                40000 + i
            )
        })
        .collect();
    lines
        .push("Dec  2 10:00:30 bastion sshd[812]: Accepted password for root from 198.51.100.9 port 40100 ssh2".into());
    std::fs::write(&log, lines.join("\n") + "\n").expect("log");
    let replay = |extra: &[&str]| {
        let out = Command::new(vigil_bin())
            .args(["rules", "backtest", "--rules"])
            .arg(rules_dir())
            .arg("--input")
            .arg(&log)
            .args(["--format", "syslog"])
            .args(extra)
            .current_dir(dir.path())
            .output()
            .expect("backtest");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };

    // --json: alerts as they were raised, then the incidents.
    let records: Vec<Value> =
        replay(&["--json"]).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    let kinds: Vec<&str> = records.iter().map(|r| r["kind"].as_str().expect("kind")).collect();
    let first_incident = kinds.iter().position(|k| *k == "incident").expect("an incident");
    assert!(
        kinds[..first_incident].iter().all(|k| *k == "alert")
            && kinds[first_incident..].iter().all(|k| *k == "incident")
    );
    let rules: BTreeSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "alert")
        .map(|r| r["record"]["rule_id"].as_str().expect("rule"))
        .collect();
    assert!(rules.contains("ssh_brute_force") && rules.contains("brute_force_then_success"), "{rules:?}");
    let alerts = first_incident;

    // The summary counts the same alerts.
    let text = replay(&[]);
    assert!(text.starts_with("26 record(s) in "), "{text}");
    assert!(text.contains("26 event(s) decoded, 0 record(s) did not decode"), "{text}");
    assert!(text.contains(&format!("replayed 26 event(s): {alerts} alert(s), ")), "{text}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("ssh_brute_force")), "{text}");

    // Read in the wrong format, nothing decodes: the command says so and fails.
    let wrong = Command::new(vigil_bin())
        .args(["rules", "backtest", "--rules"])
        .arg(rules_dir())
        .arg("--input")
        .arg(&log)
        .args(["--format", "vigil"])
        .current_dir(dir.path())
        .output()
        .expect("backtest");
    let stdout = String::from_utf8_lossy(&wrong.stdout);
    assert_eq!(wrong.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("0 event(s) decoded, 26 record(s) did not decode"), "{stdout}");
    assert!(stdout.contains("line 1: malformed JSON"), "{stdout}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("nothing was replayed"));
}

#[test]
fn the_index_skips_no_match_of_the_shipped_pack_on_the_demo_stream() {
    let dir = rules_dir();
    let options = vigil::app::demo::DemoOptions { events: 3000, seed: Some(3) };
    let events: Vec<vigil::rules::EventRef> = vigil::app::demo::generate(&options)
        .events
        .into_iter()
        .map(|e| vigil::rules::EventRef(std::sync::Arc::new(e)))
        .collect();
    for native in [true, false] {
        let rules = RuleSet::load_dir(&dir, &CompileOptions { native, ..CompileOptions::default() }).expect("pack");
        let (mut skipped, mut matched) = (0, 0);
        let mut selected = Vec::new();
        for event in &events {
            rules.select(&event.0, &mut selected);
            for &index in rules.candidates(event.0.class) {
                let hit = matches!(rules.evaluate(index, event), Ok(mask) if mask != 0);
                if selected.contains(&index) {
                    matched += usize::from(hit);
                } else {
                    skipped += 1;
                    assert!(!hit, "{} skipped {:?}, which it matches", rules.rules()[index].meta.id, event.0);
                }
            }
        }
        assert!(skipped > 1000 && matched > 100, "native {native}: {skipped} skipped, {matched} matched");
    }
}

/// A rule that opens many incidents is reported as noisy — in the metrics and in
/// `vigil rules list` — and its incidents keep the rule's priority: repetition is not
/// impact.
#[test]
fn a_noisy_rule_is_reported_not_escalated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "[incidents.priority]\nnoisy_after = 10\n");
    let body: Vec<String> = (0..12).map(|h| failures(&format!("203.0.113.{}", 100 + h), 5, h * 30)).collect();
    post_events(&server, body.join("\n"));
    let opened = wait_for(Duration::from_secs(30), "twelve incidents", || {
        let found = incidents(&server, "ssh_brute_force");
        (found.len() == 12).then_some(found)
    });
    assert!(opened.iter().all(|i| i["priority"] == "P2"), "no escalation by repetition: {opened:#?}");
    let metrics = server.metrics();
    let rule = "rule=\"ssh_brute_force\"";
    assert_eq!(crate::helpers::metric(&metrics, &["vigil_rule_incidents_24h", rule]), 12.0, "{metrics}");
    assert_eq!(crate::helpers::metric(&metrics, &["vigil_rule_noisy", rule]), 1.0, "{metrics}");
    let list = crate::helpers::vigil_in(dir.path(), &["rules", "list"]);
    let stdout = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&list.stderr));
    let line = stdout.lines().find(|l| l.starts_with("ssh_brute_force ")).expect("listed");
    assert!(line.contains("12 NOISY"), "{line}");
    let quiet = stdout.lines().find(|l| l.starts_with("port_scan ")).expect("listed");
    assert!(!quiet.contains("NOISY"), "{quiet}");
}
