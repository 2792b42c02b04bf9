//! Hunting end to end: the API's grouped and indexed hunts over what a running server
//! stored, the CLI with a rule's condition as the filter and CSV output, a saved hunt
//! that turns its rows into an incident, and a hunt over a real EVTX file with no store.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Server, post, post_events, vigil_in, wait_for};

fn failures(ip: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({ "class": "authentication", "action": "ssh_login", "outcome": "failure",
                    "source": { "ip": ip }, "user": { "name": format!("u{}", i % 3) }, "provider": "sshd" })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn hunts_run_through_the_api_the_cli_and_a_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = r#"
[[hunt.saved]]
id = "password_guessing"
title = "Addresses with three or more failed logins"
every = "1s"
lookback = "1h"
filter = 'event.class == "authentication" && event.outcome == "failure"'
group_by = ["source.ip"]
"#;
    let server = Server::start(dir.path(), extra);
    post_events(&server, failures("198.51.100.10", 6) + failures("198.51.100.20", 3).as_str());

    // Grouped, through the API.
    let body = json!({ "from": "1h", "filter": "event.outcome == \"failure\"", "group_by": ["source.ip"],
                       "aggregates": ["count", "distinct(user.name)"], "sort": ["-count"] });
    let result = wait_for(Duration::from_secs(20), "the grouped hunt", || {
        let (status, result) = post(&server, "/v1/hunts", body.clone());
        assert_eq!(status, 200, "{result}");
        (result["rows"].as_array()?.len() == 2).then_some(result)
    });
    assert_eq!(result["columns"], json!(["source.ip", "count", "distinct(user.name)"]));
    assert_eq!(result["rows"][0], json!({ "source.ip": "198.51.100.10", "count": 6, "distinct(user.name)": 3 }));
    assert_eq!(result["rows"][1], json!({ "source.ip": "198.51.100.20", "count": 3, "distinct(user.name)": 3 }));

    // One address, through its index once the indexer has caught up, paged two by two.
    let page = |after: Option<u64>| json!({ "filter": "event.source.ip == \"198.51.100.10\"", "select": ["user.name"], "limit": 2, "after": after });
    let first = wait_for(Duration::from_secs(20), "the indexed hunt", || {
        let (_, r) = post(&server, "/v1/hunts", page(None));
        (r["stats"]["index"] == "source.ip" && r["rows"].as_array()?.len() == 2).then_some(r)
    });
    let next = first["next"].as_u64().expect("a next page");
    let (_, second) = post(&server, "/v1/hunts", page(Some(next)));
    assert_eq!(second["rows"], json!([{ "user.name": "u2" }, { "user.name": "u0" }]), "{second}");
    let (status, bad) = post(&server, "/v1/hunts", json!({ "filter": "event.source.ipp == 1" }));
    assert_eq!((status, bad["error"]["code"].as_str()), (400, Some("invalid_hunt")), "{bad}");

    // A rule's condition, from the CLI beside the running server, as CSV.
    let out = vigil_in(
        dir.path(),
        &["hunt", "--rule", "ssh_brute_force", "--group-by", "source.ip", "--sort", "source.ip", "--format", "csv"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "source.ip,count\n198.51.100.10,6\n198.51.100.20,3\n");

    // The saved hunt finds both addresses and raises an incident.
    let incident = crate::helpers::wait_for_incident(&server, "saved_hunt_returned_rows");
    assert_eq!(incident["title"], "A saved hunt returned rows");
    let (_, findings) = post(
        &server,
        "/v1/hunts",
        json!({ "filter": "event.provider == \"vigil.hunt\"", "select": ["attributes.hunt.id", "attributes.hunt.rows"], "limit": 1 }),
    );
    assert_eq!(findings["rows"][0], json!({ "attributes.hunt.id": "password_guessing", "attributes.hunt.rows": 2 }));
}

/// `vigil hunt --input`: a real Security log hunted without a server or a store; records
/// that do not decode are counted and named, and the good ones still answer.
#[test]
fn a_file_is_hunted_without_storing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let evtx = crate::inputs::shared("inputs/windows-evtx/security.evtx");
    let out = std::process::Command::new(crate::helpers::vigil_bin())
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["hunt", "--input"])
        .arg(&evtx)
        .args(["--input-format", "windows", "--filter", r#"event.action == "group_member_added""#])
        .args(["--select", "attributes.windows.EventRecordID,attributes.windows.TargetUserName", "--format", "csv"])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "attributes.windows.EventRecordID,attributes.windows.TargetUserName",
            "50,None",
            "54,Users",
            "58,Administrators",
            "181,None",
            "185,Users",
            "752,Administrators",
            "821,Administrators",
            "917,Performance Log Users",
        ]
    );
    assert!(!dir.path().join("data").exists(), "a file hunt stores nothing");

    // Grouped, over NDJSON with a broken line in the middle.
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, failures("198.51.100.5", 4) + "{not json\n" + failures("198.51.100.6", 2).as_str())
        .expect("write");
    let out = std::process::Command::new(crate::helpers::vigil_bin())
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["hunt", "--input"])
        .arg(&file)
        .args(["--group-by", "source.ip", "--sort", "source.ip", "--format", "csv"])
        .output()
        .expect("run");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "source.ip,count\n198.51.100.5,4\n198.51.100.6,2\n");
    assert!(stderr.contains("line 5:") && stderr.contains("1 record(s) of the input did not decode"), "{stderr}");
}
