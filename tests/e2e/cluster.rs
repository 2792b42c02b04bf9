//! Scale-out on NATS JetStream: three instances that split the partitions of a brute-force
//! stream open exactly the incidents one instance opens alone.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Nats, Server, blocking, metric, vigil_bin, wait_for};

const PARTITIONS: u32 = 6;

fn stream_file(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let now = chrono::Utc::now();
    let mut lines = Vec::new();
    // 24 attackers with 12 failures each, and 40 addresses with 3 (below the threshold).
    for (hosts, failures) in [(24, 12), (40, 3)] {
        for h in 0..hosts {
            let ip = if failures == 12 { format!("203.0.113.{h}") } else { format!("198.51.100.{h}") };
            for i in 0..failures {
                let time = (now - chrono::Duration::seconds(120 - i64::from(i) * 5)).to_rfc3339();
                lines.push(format!(
                    r#"{{"class":"authentication","action":"ssh_login","outcome":"failure","source":{{"ip":"{ip}"}},"user":{{"name":"root"}},"time":"{time}"}}"#
                ));
            }
        }
    }
    let path = dir.join("stream.ndjson");
    std::fs::write(&path, lines.join("\n")).expect("write");
    (path, lines.len())
}

fn get(server: &Server, path: &str) -> Value {
    blocking(async { reqwest::get(server.url(path)).await.expect("request").json().await.expect("json") })
}

/// (dedup key → (events, alerts)) of the brute-force incidents a server opened.
fn incidents(server: &Server) -> BTreeMap<String, (u64, u64)> {
    get(server, "/v1/incidents?limit=1000")["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .filter(|i| i["rule_id"] == "ssh_brute_force")
        .map(|i| {
            let key = i["dedup_key"].as_str().unwrap_or("").to_owned();
            (key, (i["event_count"].as_u64().unwrap_or(0), i["alert_count"].as_u64().unwrap_or(0)))
        })
        .collect()
}

fn consumed(servers: &[&Server]) -> f64 {
    servers.iter().map(|s| metric(&s.metrics(), &["vigil_nats_consumed_total"])).sum()
}

fn config(nats: &Nats, consumer: &str, owned: &[u32]) -> String {
    format!(
        "[sources.nats]\nurl = \"{}\"\npartitions = {PARTITIONS}\nconsumer = \"{consumer}\"\nowned = {owned:?}\n[playbooks]\ndry_run = true\n",
        nats.url
    )
}

#[test]
fn three_instances_open_the_incidents_one_instance_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(Some(&dir.path().join("jetstream")));
    let (stream, total) = stream_file(dir.path());
    let out = Command::new(vigil_bin())
        .args(["publish", stream.to_str().expect("utf-8"), "--url", &nats.url, "--partitions", &PARTITIONS.to_string()])
        .output()
        .expect("vigil publish");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("published {total} events")));

    let single_dir = tempfile::tempdir().expect("tempdir");
    let single = Server::start(single_dir.path(), &config(&nats, "single", &[]));
    wait_for(Duration::from_secs(60), "one instance to consume the stream", || {
        (consumed(&[&single]) as usize >= total).then_some(())
    });
    let alone = wait_for(Duration::from_secs(30), "the single instance's incidents", || {
        let found = incidents(&single);
        (found.len() == 24).then_some(found)
    });

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let owned: [&[u32]; 3] = [&[0, 1], &[2, 3], &[4, 5]];
    // Each instance also publishes its incident changes to one shared JetStream stream.
    let shared =
        format!("[sinks.shared]\ntype = \"nats\"\nurl = \"{}\"\nroute = {{ records = [\"incident\"] }}\n", nats.url);
    let cluster: Vec<Server> = dirs
        .iter()
        .zip(owned)
        .map(|(d, parts)| Server::start(d.path(), &format!("{}{shared}", config(&nats, "cluster", parts))))
        .collect();
    let refs: Vec<&Server> = cluster.iter().collect();
    wait_for(Duration::from_secs(60), "three instances to consume the stream", || {
        (consumed(&refs) as usize >= total).then_some(())
    });
    let together = wait_for(Duration::from_secs(30), "the cluster's incidents", || {
        let mut all = BTreeMap::new();
        for server in &cluster {
            for (key, counts) in incidents(server) {
                assert!(all.insert(key.clone(), counts).is_none(), "incident {key} opened by two instances");
            }
        }
        (all.len() == 24).then_some(all)
    });
    assert_eq!(together, alone, "same incident keys with the same event and alert counts");
    let per_instance: Vec<usize> = cluster.iter().map(|s| incidents(s).len()).collect();
    assert!(per_instance.iter().filter(|n| **n > 0).count() >= 2, "the work was spread: {per_instance:?}");
    assert_eq!(consumed(&refs) as usize, total, "every event consumed once across the cluster");

    let rows = cluster_status(&nats);
    let cluster_rows: Vec<&Value> =
        rows.iter().filter(|r| r["consumer"].as_str().is_some_and(|c| c.starts_with("cluster-p"))).collect();
    assert_eq!(cluster_rows.len(), PARTITIONS as usize, "{rows:?}");
    assert!(cluster_rows.iter().all(|r| r["pending"] == 0 && r["ack_pending"] == 0), "{rows:?}");
    assert_eq!(cluster_rows[0]["subject"], "vigil.events.0");
    assert!(cluster[0].metrics().contains("vigil_nats_lag{partition=\"0\"}"), "each instance exports its lag");

    // The shared view: every instance's openings in one stream.
    let opened = wait_for(Duration::from_secs(30), "the shared incident stream", || {
        let n = blocking(shared_openings(&nats.url));
        (n == 24).then_some(n)
    });
    assert_eq!(opened, 24);
}

/// `vigil cluster status --json`: one row per consumer.
fn cluster_status(nats: &Nats) -> Vec<Value> {
    let out = Command::new(vigil_bin())
        .args(["cluster", "status", "--json", "--url", &nats.url])
        .output()
        .expect("vigil cluster status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

/// How many brute-force incidents the shared stream says were opened.
async fn shared_openings(url: &str) -> usize {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let Ok(stream) = js.get_stream("VIGIL_SHARED").await else { return 0 };
    let last = stream.get_info().await.map(|i| i.state.last_sequence).unwrap_or(0);
    let mut opened = 0;
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await
            && m.subject.as_str() == "vigil.shared.incidents"
        {
            let change: Value = serde_json::from_slice(&m.payload).expect("JSON");
            opened += usize::from(change["change"] == "opened" && change["incident"]["rule_id"] == "ssh_brute_force");
        }
    }
    opened
}

fn publish(nats: &Nats, path: &std::path::Path) {
    let out = Command::new(vigil_bin())
        .args(["publish", path.to_str().expect("utf-8"), "--url", &nats.url, "--partitions", &PARTITIONS.to_string()])
        .output()
        .expect("vigil publish");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_instance_killed_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(Some(&dir.path().join("jetstream")));
    let (stream, total) = stream_file(dir.path());
    let text = std::fs::read_to_string(&stream).expect("stream");
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = (dir.path().join("first.ndjson"), dir.path().join("second.ndjson"));
    std::fs::write(&first, lines[..total / 2].join("\n")).expect("write");
    std::fs::write(&second, lines[total / 2..].join("\n")).expect("write");
    publish(&nats, &first);

    // The reference: one instance reading everything without interruption.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = Server::start(reference_dir.path(), &config(&nats, "reference", &[]));

    // Two instances; the first is killed while it consumes, then restarted.
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut a = Server::start(dirs[0].path(), &config(&nats, "pair", &[0, 1, 2]));
    let b = Server::start(dirs[1].path(), &config(&nats, "pair", &[3, 4, 5]));
    wait_for(Duration::from_secs(60), "the first instance to be consuming", || (consumed(&[&a]) > 0.0).then_some(()));
    a.kill9();
    publish(&nats, &second);
    a.restart();

    let expected = wait_for(Duration::from_secs(60), "the reference's incidents", || {
        let found = incidents(&reference);
        (found.len() == 24 && consumed(&[&reference]) as usize >= total).then_some(found)
    });
    let pair = wait_for(Duration::from_secs(60), "the pair's incidents", || {
        let mut all = BTreeMap::new();
        for server in [&a, &b] {
            for (key, counts) in incidents(server) {
                assert!(all.insert(key.clone(), counts).is_none(), "incident {key} opened twice");
            }
        }
        (all == expected).then_some(all)
    });
    // Equal event counts per incident: an event lost or stored twice would change them.
    assert_eq!(pair, expected, "no event lost, no incident missing or duplicated");
}

#[test]
fn the_audit_trail_is_published_to_jetstream_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(Some(&dir.path().join("jetstream")));
    let server_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        server_dir.path(),
        &format!("[actions.audit_nats]\nurl = \"{}\"\ninstance = \"edge-1\"\n", nats.url),
    );
    let (stream, _) = stream_file(dir.path());
    let body = std::fs::read_to_string(stream).expect("stream");
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    let local = wait_for(Duration::from_secs(60), "audit records of the playbook runs", || {
        let text = crate::helpers::http_get_text(&server.url("/v1/audit")).unwrap_or_default();
        let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        (records.iter().filter(|r| r["kind"] == "result").count() >= 24).then_some(records)
    });
    let published = wait_for(Duration::from_secs(30), "the audit stream to catch up", || {
        let published = blocking(audit_stream(&nats.url));
        (published.len() >= local.len()).then_some(published)
    });
    let hashes =
        |records: &[Value]| records.iter().map(|r| r["hash"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>();
    assert_eq!(hashes(&published[..local.len()]), hashes(&local), "the same chain, in order");
}

async fn audit_stream(url: &str) -> Vec<Value> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let Ok(stream) = js.get_stream("VIGIL_AUDIT").await else { return Vec::new() };
    let last = stream.get_info().await.map(|i| i.state.last_sequence).unwrap_or(0);
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(serde_json::from_slice(&m.payload).expect("json"));
        }
    }
    out
}

#[test]
fn two_instances_seeing_the_same_keys_never_open_one_incident_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(Some(&dir.path().join("jetstream")));
    let (stream, total) = stream_file(dir.path());
    publish(&nats, &stream);
    // Both consume every partition (different consumer names): without claims, each would
    // open all 24 incidents.
    let claims = |name: &str| format!("[incidents.claims]\nurl = \"{}\"\ninstance = \"{name}\"\n", nats.url);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let servers: Vec<Server> = ["left", "right"]
        .iter()
        .zip(&dirs)
        .map(|(name, d)| Server::start(d.path(), &format!("{}{}", config(&nats, name, &[]), claims(name))))
        .collect();
    let refs: Vec<&Server> = servers.iter().collect();
    wait_for(Duration::from_secs(60), "both instances to consume everything", || {
        (consumed(&refs) as usize >= 2 * total).then_some(())
    });
    let all = wait_for(Duration::from_secs(30), "24 incidents in all", || {
        let mut all = BTreeMap::new();
        for server in &servers {
            for (key, counts) in incidents(server) {
                assert!(all.insert(key.clone(), counts).is_none(), "incident {key} opened by both instances");
            }
        }
        (all.len() == 24).then_some(all)
    });
    assert_eq!(all.len(), 24);
    let elsewhere: f64 =
        servers.iter().map(|s| metric(&s.metrics(), &["vigil_incidents_claimed_elsewhere_total"])).sum();
    assert!(elsewhere >= 24.0, "each key was refused to the second instance at least once ({elsewhere})");
}

#[test]
fn window_state_follows_a_partition_to_its_new_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = Nats::start(Some(&dir.path().join("jetstream")));
    let (stream, _) = stream_file(dir.path());
    let text = std::fs::read_to_string(&stream).expect("stream");
    // Each attacker's first 3 failures before the move, 2 more after: the brute-force
    // threshold (5 in 10 minutes) is reached only if the new owner counts the first 3.
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let ip = serde_json::from_str::<Value>(line).expect("json")["source"]["ip"].as_str().expect("ip").to_owned();
        let n = seen.entry(ip).or_default();
        *n += 1;
        match *n {
            ..=3 => before.push(line),
            4..=5 => after.push(line),
            _ => {}
        }
    }
    let total = before.len() + after.len();
    let (first, second) = (dir.path().join("first.ndjson"), dir.path().join("second.ndjson"));
    std::fs::write(&first, before.join("\n")).expect("write");
    std::fs::write(&second, after.join("\n")).expect("write");
    publish(&nats, &first);

    let old_dir = tempfile::tempdir().expect("tempdir");
    let mut old = Server::start(old_dir.path(), &config(&nats, "moving", &[]));
    wait_for(Duration::from_secs(60), "the old owner to consume the first half", || {
        (consumed(&[&old]) as usize >= before.len()).then_some(())
    });
    assert!(incidents(&old).is_empty(), "3 failures per attacker are below the threshold");
    wait_for(Duration::from_secs(30), "the old owner's acknowledgements to reach the server", || {
        let rows = cluster_status(&nats);
        rows.iter()
            .filter(|r| r["consumer"].as_str().is_some_and(|c| c.starts_with("moving-p")))
            .all(|r| r["pending"] == 0 && r["ack_pending"] == 0)
            .then_some(())
    });
    assert!(old.terminate(), "the old owner stops cleanly");

    // The new owner has never seen these partitions: it replays their recent history.
    let new_dir = tempfile::tempdir().expect("tempdir");
    let new = Server::start(new_dir.path(), &config(&nats, "moving", &[]));
    publish(&nats, &second);
    wait_for(Duration::from_secs(60), "the new owner to consume the second half", || {
        (consumed(&[&new]) as usize >= after.len()).then_some(())
    });
    let moved = wait_for(Duration::from_secs(30), "the new owner's incidents", || {
        let found = incidents(&new);
        (found.len() == 24).then_some(found)
    });

    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = Server::start(reference_dir.path(), &config(&nats, "reference", &[]));
    let expected = wait_for(Duration::from_secs(60), "the reference's incidents", || {
        let found = incidents(&reference);
        (found.len() == 24 && consumed(&[&reference]) as usize >= total).then_some(found)
    });
    assert_eq!(moved, expected, "the attacks that straddle the move are detected as by one instance");
    let metrics = new.metrics();
    assert_eq!(metric(&metrics, &["vigil_nats_replayed_total"]) as usize, before.len(), "the first half, replayed");
    assert_eq!(consumed(&[&new]) as usize, after.len(), "replayed events are not consumed again");
    assert_eq!(metric(&metrics, &["vigil_detect_replayed_alerts_total"]), 0.0);
    assert_eq!(
        metric(&metrics, &["vigil_events_ingested_total"]) as usize,
        after.len(),
        "replayed events warm windows; they are not this instance's events"
    );
}
