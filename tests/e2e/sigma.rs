//! Sigma on real content: the SigmaHQ corpus compiles (or each refusal says why), the
//! rules match SigmaHQ's own regression EVTX files, and the correlation examples of the
//! specification raise the same alerts live and in a backtest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use vigil::config::VigilConfig;
use vigil::rules::RuleSet;
use vigil::source::decode::Format;

use crate::helpers::{assert_backtest_reproduces, blocking, live_alerts, vigil_bin};
use crate::inputs::{decode, shared};

fn sigma_check(dir: &Path) -> Value {
    let out = Command::new(vigil_bin()).args(["sigma", "check", "--json"]).arg(dir).output().expect("run vigil");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("sigma check printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn the_sigmahq_corpus_compiles_or_says_why() {
    let report = sigma_check(&shared("sigma/rules"));
    let compiled = report["compiled"].as_u64().expect("compiled");
    let refused = report["refused"].as_array().expect("refused");
    assert!(compiled > 3000, "{compiled} rules compiled");
    let share = compiled as f64 / (compiled as f64 + refused.len() as f64);
    assert!(share >= 0.98, "only {:.1} % of the corpus compiles", share * 100.0);
    for r in refused {
        assert!(r["path"].as_str().is_some_and(|p| p.ends_with(".yml")) && r["reason"].as_str().is_some(), "{r}");
    }
    // Every modifier of the corpus is compiled somewhere.
    for modifier in ["contains", "endswith", "startswith", "all", "re", "windash", "cidr", "base64offset", "fieldref"] {
        assert!(report["modifiers"][modifier].as_u64().unwrap_or(0) > 0, "no rule with `{modifier}` compiled");
    }
    // Logsources nothing reads are idle, not dropped: macOS has no decoder.
    let idle = report["idle"].as_array().expect("idle");
    assert!(idle.iter().any(|i| i[1].as_str().is_some_and(|l| l.contains("product=macos"))), "{idle:?}");
    assert_eq!(report["logsources"]["product=windows category=process_creation"][1], 0, "process creation runs");

    // A rule that needs configuration names what it needs, with its file and id.
    let emerging = sigma_check(&shared("sigma/rules-emerging-threats"));
    assert!(emerging["modifiers"]["wide"].as_u64().unwrap_or(0) > 0, "the `wide` rule compiled");
    let refused = emerging["refused"].as_array().expect("refused");
    assert!(
        refused.iter().any(|r| r["reason"].as_str().is_some_and(|t| t.contains("%known_cdcs%")) && r["id"].is_string()),
        "{refused:?}"
    );
}

/// The three SigmaHQ rule folders side by side, as the regression data's rules.
fn all_rules(dir: &Path) -> PathBuf {
    let rules = dir.join("sigma");
    std::fs::create_dir_all(&rules).expect("mkdir");
    for folder in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        std::os::unix::fs::symlink(shared(&format!("sigma/{folder}")), rules.join(folder)).expect("symlink");
    }
    rules
}

#[test]
fn sigma_rules_match_their_regression_evtx() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = all_rules(dir.path());
    let out = Command::new(vigil_bin())
        .args(["sigma", "test", "--json", "--rules"])
        .arg(&rules)
        .arg(shared("sigma/regression_data"))
        .output()
        .expect("run vigil");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    let summary = lines.last().expect("summary");
    let failures: Vec<&Value> = lines.iter().filter(|l| l["passed"] == false).collect();
    assert_eq!(summary["cases"], 131, "every case of the regression data ran: {summary}");
    assert!(failures.is_empty(), "regression cases failed: {failures:#?}");
    assert!(out.status.success());
    // Each case decoded its EVTX and matched at least what SigmaHQ expects.
    for case in &lines[..lines.len() - 1] {
        assert!(
            case["events"].as_u64().unwrap_or(0) >= 1 && case["matched"].as_u64() >= case["expected"].as_u64(),
            "{case}"
        );
    }
}

/// The rules `vigil sigma scan` finds over `file` with SigmaHQ's Linux rules.
fn linux_detections(file: &str, format: &str) -> BTreeSet<String> {
    let dir = shared(file);
    let log = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "log"));
    let out = Command::new(vigil_bin())
        .args(["sigma", "scan", "--json", "--format", format, "--rules"])
        .arg(shared("sigma/rules/linux"))
        .arg(log.expect("the dataset's log"))
        .output()
        .expect("run vigil");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line")["title"].as_str().expect("title").to_owned())
        .collect()
}

#[test]
fn sigma_auditd_rules_read_each_record_of_real_audit_logs() {
    // OTRF's Linux datasets (auditd of an Ubuntu host running Atomic Red Team tests): the
    // SigmaHQ rules of `service: auditd` read the `type` and fields of one record.
    let check = sigma_check(&shared("sigma/rules/linux/auditd"));
    assert_eq!(check["compiled"], 53, "{check}");
    assert_eq!(check["idle"], json!([]), "no auditd rule is idle: {check}");
    // `dd if=/dev/zero bs=1 count=1` (T1027.001): the EXECVE record holds `dd` and `if=`
    // and no `of=`.
    let padding = linux_detections("otrf/extracted/sh_binary_padding_dd", "auditd");
    assert!(padding.contains("Binary Padding - Linux"), "{padding:?}");
    assert!(padding.contains("Overwriting the File with Dev Zero or Null"), "{padding:?}");
    // `arp -a` (T1018): EXECVE's `a0` is `arp`; nothing about padding.
    let arp = linux_detections("otrf/extracted/sh_arp_cache", "auditd");
    assert_eq!(arp, BTreeSet::from(["Linux Remote System Discovery".to_owned()]));
}

/// Windows events in the flat (NXLog, OTRF) form the specification's examples need.
fn correlation_events() -> Vec<Value> {
    let at = |minute: u32, second: u32| format!("2024-05-01T10:{minute:02}:{second:02}Z");
    let mut records = Vec::new();
    let logon = |id: u32, host: &str, user: &str, ws: &str, time: String| {
        json!({ "EventID": id, "Channel": "Security", "Provider": "Microsoft-Windows-Security-Auditing",
                "Computer": host, "TargetUserName": user, "WorkstationName": ws, "IpAddress": "10.0.0.5",
                "LogonType": 3, "TimeCreated": time })
    };
    // alice: twelve failures, then a success: the chained temporal_ordered example.
    for i in 0..12 {
        records.push(logon(4625, "DC01", "alice", "WS7", at(0, i * 3)));
    }
    records.push(logon(4624, "DC01", "alice", "WS7", at(2, 0)));
    // dave: nine failures and a success: one short of the inner event_count.
    for i in 0..9 {
        records.push(logon(4625, "DC01", "dave", "WS8", at(3, i * 3)));
    }
    records.push(logon(4624, "DC01", "dave", "WS8", at(4, 0)));
    // One workstation tries 100 users on DC02: event_count and value_count.
    for i in 0..100 {
        records.push(logon(4625, "DC02", &format!("user{i:03}"), "WS9", at(10 + i / 60, i % 60)));
    }
    // A connection out to the address the DC02 failures came from (aliases); one elsewhere.
    let connection = |destination: &str, time: String| {
        json!({ "EventID": 3, "Channel": "Microsoft-Windows-Sysmon/Operational", "Provider": "Microsoft-Windows-Sysmon",
                "Computer": "WS3", "Image": "C:\\Tools\\agent.exe", "Initiated": "true", "SourceIp": "10.0.0.30",
                "DestinationIp": destination, "DestinationPort": 445, "TimeCreated": time })
    };
    records.push(connection("10.0.0.5", at(12, 0)));
    records.push(connection("192.0.2.9", at(12, 30)));
    // bob runs three reconnaissance commands within two minutes (temporal); carol runs
    // them twenty minutes apart (nothing).
    let process = |host: &str, user: &str, image: &str, cmd: &str, time: String| {
        json!({ "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Provider": "Microsoft-Windows-Sysmon",
                "Computer": host, "User": user, "Image": image, "CommandLine": cmd, "TimeCreated": time })
    };
    records.push(process("WS1", "CORP\\bob", "C:\\Windows\\System32\\ipconfig.exe", "ipconfig /all", at(20, 0)));
    records.push(process("WS1", "CORP\\bob", "C:\\Windows\\System32\\whoami.exe", "whoami", at(20, 40)));
    records.push(process("WS1", "CORP\\bob", "C:\\Windows\\System32\\net.exe", "net user /domain", at(21, 30)));
    records.push(process("WS2", "CORP\\carol", "C:\\Windows\\System32\\whoami.exe", "whoami", at(22, 0)));
    records.push(process("WS2", "CORP\\carol", "C:\\Windows\\System32\\net.exe", "net user", at(42, 0)));
    records.push(process("WS2", "CORP\\carol", "C:\\Windows\\System32\\ipconfig.exe", "ipconfig", at(59, 0)));
    records
}

#[test]
fn sigma_correlations_raise_the_same_alerts_live_and_in_backtest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    let sigma = rules.join("sigma");
    std::fs::create_dir_all(&sigma).expect("mkdir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/sigma/correlation");
    for entry in std::fs::read_dir(&examples).expect("examples") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, sigma.join(path.file_name().expect("name"))).expect("copy");
    }
    let body: String = correlation_events().iter().map(|r| format!("{r}\n")).collect();
    let mut events = decode(Format::Windows, body.as_bytes()).events;
    assert_eq!(events.len(), 131);
    // Zeek connections for value_avg and value_percentile: 10.0.0.40 uploads 2–3 MB five
    // times; 10.0.0.41 five times 1 KB, then 3 MB once (its mean stays near 0.5 MB).
    let conn = |host: &str, second: u32, bytes: u64| {
        json!({ "_path": "conn", "ts": 1714561200.0 + f64::from(second), "uid": format!("C{host}{second}"),
                "id.orig_h": host, "id.orig_p": 50000 + second, "id.resp_h": "203.0.113.9", "id.resp_p": 443,
                "proto": "tcp", "orig_bytes": bytes, "resp_bytes": 900, "local_orig": true, "local_resp": false })
    };
    let mut zeek = String::new();
    for (i, bytes) in [2_500_000, 3_000_000, 2_200_000, 2_800_000, 2_600_000].into_iter().enumerate() {
        zeek.push_str(&format!("{}\n", conn("10.0.0.40", i as u32 * 30, bytes)));
    }
    for (i, bytes) in [1_000, 1_200, 900, 1_100, 1_000, 3_000_000].into_iter().enumerate() {
        zeek.push_str(&format!("{}\n", conn("10.0.0.41", i as u32 * 30, bytes)));
    }
    let conns = decode(Format::Zeek, zeek.as_bytes()).events;
    assert_eq!(conns.len(), 11);
    events.extend(conns);

    let mut config = VigilConfig::default();
    config.store.path = dir.path().join("data");
    config.rules.dir = rules.clone();
    config.rules.watch = false;
    let live = live_alerts(&config, &events, 25);
    let fired: BTreeSet<(String, String)> = live.iter().map(|a| (a.rule_id.to_string(), a.group_key.clone())).collect();
    let expected: BTreeSet<(String, String)> = [
        ("b180ead8-d58f-40b2-ae54-c8940995b9b6", "alice"),
        ("0e95725d-7320-415d-80f7-004da920fc11", "DC02"),
        ("0e95725d-7320-415d-80f7-004da920fc12", "DC02|WS9"),
        ("3c9b2f5e-7a61-4d2b-9a0e-5b8f1e2d4c73", "WS1|CORP\\bob"),
        ("7d4c1e2a-9b3f-4c5d-8e6f-1a2b3c4d5e6f", "10.0.0.5"),
        ("5f1d2c3b-4a59-4e8f-9d7c-6b5a4e3d2c1b", "10.0.0.40"),
        ("5f1d2c3b-4a59-4e8f-9d7c-6b5a4e3d2c1c", "10.0.0.40"),
        ("5f1d2c3b-4a59-4e8f-9d7c-6b5a4e3d2c1c", "10.0.0.41"),
    ]
    .iter()
    .map(|(r, k)| ((*r).to_owned(), (*k).to_owned()))
    .collect();
    assert_eq!(fired, expected, "live alerts: {live:#?}");
    let chained = live.iter().find(|a| a.rule_id.as_str() == "b180ead8-d58f-40b2-ae54-c8940995b9b6").expect("chain");
    assert_eq!(chained.author.as_deref(), Some("Florian Roth (Nextron Systems)"), "the author travels with the alert");
    assert_eq!(chained.count, 2, "the inner correlation's firing and the success");

    assert_backtest_reproduces(&config, &rules, &live);
}

#[test]
fn the_dispatcher_never_skips_a_rule_that_matches() {
    // Every Windows rule, every event of the EVTX samples: the rules `select` picks (by
    // logsource, channel and required substrings) include every rule that matches.
    let dirs: Vec<PathBuf> = ["sigma/rules", "sigma/rules-emerging-threats", "sigma/rules-threat-hunting"]
        .iter()
        .map(|d| shared(d))
        .collect();
    let (rules, _) = vigil::rules::sigma::load(&dirs, &Default::default(), None).expect("pipeline");
    let rules = RuleSet::from_compiled(rules);
    let mut evtx = Vec::new();
    for dir in ["inputs/windows-evtx", "sigma/regression_data"] {
        let mut stack = vec![shared(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("dir").flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "evtx") {
                    evtx.push(p);
                }
            }
        }
    }
    let (mut checked, mut matched) = (0usize, 0usize);
    let mut selected = Vec::new();
    for file in &evtx {
        let body = std::fs::read(file).expect("read");
        for event in decode(Format::Windows, &body).events {
            let event = vigil::rules::EventRef(std::sync::Arc::new(event));
            rules.select(&event.0, &mut selected);
            for index in 0..rules.rules().len() {
                if rules.rules()[index].runs() && rules.evaluate_alone(index, &event) == Ok(1) {
                    matched += 1;
                    assert!(
                        selected.contains(&index),
                        "{} matches record {} of {} but was not selected",
                        rules.rules()[index].meta.id,
                        event.0.attributes["windows"]["EventRecordID"],
                        file.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 5000 && matched > 300, "{checked} events, {matched} matches");
}

#[test]
fn sigma_matches_what_pysigma_sqlite_matches() {
    // The same Windows rules over the same events, through pySigma's SQLite backend (the
    // way Zircolite runs Sigma) and through Vigil: the same (rule, file, record) matches.
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("sigma");
    std::fs::create_dir_all(&rules).expect("mkdir");
    let folders = ["sigma/rules/windows", "sigma/rules-emerging-threats", "sigma/rules-threat-hunting"];
    for (i, folder) in folders.iter().enumerate() {
        std::os::unix::fs::symlink(shared(folder), rules.join(i.to_string())).expect("symlink");
    }
    // EVTX files: SigmaHQ's regression files have JSON twins; the other samples are
    // dumped to the same flat maps by `vigil hunt`.
    let mut evtx = Vec::new();
    let mut events = Vec::new();
    let mut stack = vec![shared("sigma/regression_data")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = entry.path();
            match p.extension().and_then(|x| x.to_str()) {
                _ if p.is_dir() => stack.push(p),
                Some("evtx") => evtx.push(p),
                Some("json") => events.push(p),
                _ => {}
            }
        }
    }
    for entry in std::fs::read_dir(shared("inputs/windows-evtx")).expect("dir").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "evtx") {
            let out = Command::new(vigil_bin())
                .args(["hunt", "--limit", "1000000", "--input-format", "windows", "--select", "attributes.windows"])
                .args(["--format", "json", "--input"])
                .arg(&path)
                .output()
                .expect("vigil hunt");
            let dump = dir.path().join(path.file_stem().expect("stem")).with_extension("jsonl");
            std::fs::write(&dump, &out.stdout).expect("write");
            events.push(dump);
            evtx.push(path);
        }
    }
    let oracle = Command::new(crate::helpers::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/sigma_sqlite.py"))
        .arg("--rules")
        .args(folders.iter().map(|f| shared(f)))
        .arg("--events")
        .args(&events)
        .output()
        .expect("run the pySigma oracle");
    assert!(oracle.status.success(), "{}", String::from_utf8_lossy(&oracle.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&oracle.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let summary = lines.last().expect("summary");
    let compared: BTreeSet<&str> =
        summary["compared"].as_array().expect("compared").iter().filter_map(Value::as_str).collect();
    assert!(compared.len() > 2500 && summary["query_failed"] == 0, "{}", summary["skipped"]);
    let stem = |p: &str| Path::new(p).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let reference: BTreeSet<(String, String, u64)> = lines[..lines.len() - 1]
        .iter()
        .map(|m| {
            (
                m["rule"].as_str().unwrap_or("").to_owned(),
                m["file"].as_str().unwrap_or("").to_owned(),
                m["record"].as_u64().unwrap_or(0),
            )
        })
        .collect();

    let scan = Command::new(vigil_bin())
        .args(["sigma", "scan", "--json", "--rules"])
        .arg(&rules)
        .args(&evtx)
        .output()
        .expect("scan");
    assert!(scan.status.success(), "{}", String::from_utf8_lossy(&scan.stderr));
    let vigil: BTreeSet<(String, String, u64)> = String::from_utf8_lossy(&scan.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        // The oracle's process creation is Sysmon's: Security 4688 (which Vigil's pipeline
        // maps too) is left out of the comparison, as are the rules it did not compare.
        .filter(|d| !(d["channel"] == "Security" && d["event_id"] == 4688))
        .filter(|d| d["rule"].as_str().is_some_and(|r| compared.contains(r)))
        .map(|d| {
            (
                d["rule"].as_str().unwrap_or("").to_owned(),
                stem(d["file"].as_str().unwrap_or("")),
                d["record"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(reference.len() > 300, "{} reference matches", reference.len());
    let missed: Vec<_> = reference.difference(&vigil).collect();
    let extra: Vec<_> = vigil.difference(&reference).collect();
    assert!(missed.is_empty() && extra.is_empty(), "pySigma only: {missed:#?}\nVigil only: {extra:#?}");
}

#[test]
fn a_running_server_detects_with_sigma_rules_and_reloads_them() {
    use crate::helpers::{Server, get, wait_for};
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("sigma/windows")).expect("mkdir");
    // A real SigmaHQ rule, in a nested folder as in a SigmaHQ checkout.
    let whoami = "windows/process_creation/proc_creation_win_whoami_all_execution.yml";
    std::fs::copy(shared(&format!("sigma/rules/{whoami}")), rules.join("sigma/windows/whoami.yml")).expect("copy");
    let mut server = Server::start(dir.path(), &format!("[rules]\ndir = {rules:?}\n"));
    let event = json!({ "EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "WS1",
        "Image": "C:\\Windows\\System32\\whoami.exe", "OriginalFileName": "whoami.exe", "CommandLine": "whoami /all",
        "User": "CORP\\bob", "TimeCreated": "2024-05-01T10:00:00Z" });
    let status = blocking(async {
        reqwest::Client::new()
            .post(server.url("/v1/events?format=windows"))
            .body(format!("{event}\n"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    let incident = wait_for(Duration::from_secs(30), "an incident from the Sigma rule", || {
        get(&server, "/v1/incidents?limit=100")["incidents"]
            .as_array()
            .and_then(|list| list.iter().find(|i| i["title"].as_str().is_some_and(|t| t.contains("Whoami"))).cloned())
    });
    assert!(incident["authors"].as_array().is_some_and(|a| !a.is_empty()), "the rule's author is credited: {incident}");
    let compiled =
        |server: &Server| crate::helpers::metric(&server.metrics(), &["vigil_sigma_rules", "state=\"compiled\""]);
    assert_eq!(compiled(&server), 1.0);

    // A new file deep in the tree is picked up by the watcher; a broken one is refused alone.
    let second = shared("sigma/rules/windows/process_creation/proc_creation_win_net_user_add.yml");
    std::fs::create_dir_all(rules.join("sigma/more/deeper")).expect("mkdir");
    std::fs::copy(second, rules.join("sigma/more/deeper/second.yml")).expect("copy");
    std::fs::write(
        rules.join("sigma/more/broken.yml"),
        "title: Broken\nid: broken\nlogsource: {product: windows}\ndetection:\n  s: {X|nope: 1}\n  condition: s\n",
    )
    .expect("write");
    wait_for(Duration::from_secs(30), "the reload", || (compiled(&server) == 2.0).then_some(()));
    assert_eq!(crate::helpers::metric(&server.metrics(), &["vigil_sigma_rules", "state=\"refused\""]), 1.0);
    let list = get(&server, "/v1/rules");
    let sigma: Vec<&Value> =
        list["rules"].as_array().expect("rules").iter().filter(|r| r["language"] == "sigma").collect();
    assert_eq!(sigma.len(), 2, "{list}");
    assert!(server.log().contains("unknown value modifier `nope`"), "the refusal is logged with its reason");
    assert!(server.terminate());
}
