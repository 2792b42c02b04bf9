//! Forensic evidence end to end against a real S3-compatible server with signature checking
//! on (moto in auth mode, from `scripts/setup.sh`) on loopback: a brute force's playbook
//! takes an evidence bundle, which lands in the bucket; `vigil evidence verify` accepts it,
//! then rejects it once one object is overwritten in the bucket; a wrong secret key is
//! refused by the server; a bundle past its retention is deleted by the sweep, which
//! records what it deleted; and the chain of custody lists every access.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Peer, Server, free_port, get, post_events, python, vigil_in, wait_for};

fn peer(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/s3_peer.py");
    let out = Command::new(python()).arg(script).args(args).output().expect("run s3_peer.py");
    assert!(out.status.success(), "s3_peer.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failures(ip: &str, n: usize) -> String {
    (0..n)
        .map(|_| {
            json!({ "class": "authentication", "action": "ssh_login", "outcome": "failure",
                    "source": { "ip": ip }, "user": { "name": "root" } })
            .to_string()
                + "\n"
        })
        .collect()
}

#[test]
fn evidence_in_s3_verifies_detects_tampering_and_is_swept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(python().with_file_name("moto_server"));
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]).env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
    let _moto = Peer::start(command, "moto_server", port, &dir.path().join("moto.log"));
    let keys: Value = serde_json::from_str(&peer(&["setup", &endpoint, "evidence"])).expect("keys");
    let (ak, sk) = (keys["access_key_id"].as_str().expect("ak"), keys["secret_access_key"].as_str().expect("sk"));
    let storage = |secret: &str, retention: &str| {
        format!(
            "[forensics]\nretention = {retention}\n[forensics.storage]\ntype = \"s3\"\nbucket = \"evidence\"\nendpoint = \"{endpoint}\"\nallow_http = true\naccess_key_id = \"{ak}\"\nsecret_access_key = \"{secret}\"\n"
        )
    };
    let mut server = Server::start(dir.path(), &storage(sk, "{ default = \"1h\" }"));
    post_events(&server, failures("198.51.100.66", 12));
    let bundle = wait_for(Duration::from_secs(60), "the playbook's evidence step", || {
        let runs = get(&server, "/v1/runs");
        let steps = runs["runs"].as_array()?.first()?["steps"].as_array()?.clone();
        let evidence = steps.iter().find(|s| s["def"]["id"] == "evidence")?;
        (evidence["status"] == "succeeded")
            .then(|| evidence["outcome"]["data"]["bundle"].as_str().map(str::to_owned))?
    });
    let log = server.log();
    assert!(!log.contains(sk), "the secret key leaked into the log");
    assert!(server.terminate(), "the server stops cleanly");

    let objects = peer(&["keys", &endpoint, "evidence", &format!("vigil-evidence/{bundle}/"), ak, sk]);
    for name in [
        "items/incident.json",
        "items/events.ndjson",
        "items/runs.json",
        "items/versions.json",
        "manifest.json",
        "manifest.sha256",
        "custody/000001.json",
    ] {
        assert!(objects.lines().any(|l| l.ends_with(name)), "{name} missing from the bucket:\n{objects}");
    }
    let listed = vigil_in(dir.path(), &["evidence", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&bundle), "{}", String::from_utf8_lossy(&listed.stderr));

    let ok = vigil_in(dir.path(), &["evidence", "verify", &bundle, "--as", "alice", "--reason", "case 7"]);
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));

    // One object overwritten in the bucket: verification fails and says which.
    peer(&["put", &endpoint, "evidence", &format!("vigil-evidence/{bundle}/items/events.ndjson"), "{}\n", ak, sk]);
    let bad = vigil_in(dir.path(), &["evidence", "verify", &bundle, "--as", "alice"]);
    assert_eq!(bad.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&bad.stdout).expect("report");
    assert_eq!(report["ok"], false);
    assert!(report["problems"].to_string().contains("events.ndjson: SHA-256"), "{report}");

    let custody = vigil_in(dir.path(), &["evidence", "custody", &bundle]);
    let entries: Vec<Value> =
        String::from_utf8_lossy(&custody.stdout).lines().map(|l| serde_json::from_str(l).expect("entry")).collect();
    let events: Vec<&str> = entries.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(events, ["created", "verified", "verified"]);
    assert_eq!(entries[1]["actor"]["who"], "alice");
    assert_eq!(entries[1]["actor"]["why"], "case 7");
    assert!(entries[0]["actor"]["why"].as_str().unwrap_or("").starts_with("playbook step evidence"));

    // The server checks signatures: a wrong secret is refused, and not echoed.
    let config = std::fs::read_to_string(dir.path().join("vigil.toml")).expect("config");
    std::fs::write(dir.path().join("vigil.toml"), config.replace(sk, "WRONG-SECRET-KEY-1234")).expect("config");
    let refused = vigil_in(dir.path(), &["evidence", "custody", &bundle]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    assert!(!stderr.contains("WRONG-SECRET-KEY-1234"), "{stderr}");
    std::fs::write(dir.path().join("vigil.toml"), &config).expect("config");

    // A bundle with no retention left is deleted by the sweep, which records it.
    std::fs::write(
        dir.path().join("vigil.toml"),
        config.replace("retention = { default = \"1h\" }", "retention = { default = \"0s\", by_priority = {} }"),
    )
    .expect("config");
    // A bundle id is `<incident id>-<key>`.
    let incident = bundle[..36].to_owned();
    let collected = vigil_in(dir.path(), &["evidence", "collect", &incident, "--reason", "second look", "--as", "bob"]);
    assert!(collected.status.success(), "{}", String::from_utf8_lossy(&collected.stderr));
    let short: Value = serde_json::from_slice(&collected.stdout).expect("record");
    let short_id = short["id"].as_str().expect("id").to_owned();
    let swept = vigil_in(dir.path(), &["evidence", "sweep"]);
    assert!(swept.status.success(), "{}", String::from_utf8_lossy(&swept.stderr));
    let deleted = String::from_utf8_lossy(&swept.stdout).into_owned();
    assert!(deleted.contains(&short_id) && !deleted.contains(&format!("\"{bundle}\"")), "{deleted}");
    assert_eq!(peer(&["keys", &endpoint, "evidence", &format!("vigil-evidence/{short_id}/"), ak, sk]), "");
    let record = vigil_in(dir.path(), &["evidence", "deleted"]);
    assert!(String::from_utf8_lossy(&record.stdout).contains(&short_id));
    server.kill9();
}
