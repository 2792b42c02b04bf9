//! Threat intel end to end against a real TAXII 2.1 server (medallion, the OASIS reference
//! implementation, from `scripts/setup.sh`) on loopback, seeded by the OASIS `stix2`
//! library: the initial sync pages through the collection; an indicator added to the
//! server later arrives by an incremental `added_after` poll (nothing is read twice); a
//! feed with a wrong password fails with an authentication error that does not show the
//! password; an event from inside a seeded CIDR is stored with `threat.*` fields, raises the
//! IOC incident, is exported with the fields, and the shipped playbook blocks the address;
//! and `vigil intel export` writes a bundle that `stix2-validator` accepts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Peer, Server, blocking, free_port, http_get_text, metric, post_events, python, sink_lines, vigil_in, wait_for,
};

fn peers_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers")
}

fn medallion(dir: &Path, port: u16) -> Peer {
    let seeded = Command::new(python())
        .arg(peers_dir().join("taxii_seed.py"))
        .arg(dir)
        .arg(port.to_string())
        .status()
        .expect("run taxii_seed.py");
    assert!(seeded.success(), "seeding the TAXII server failed");
    let mut command = Command::new(python().with_file_name("medallion"));
    command.args(["--host", "127.0.0.1", "--port", &port.to_string()]).arg(dir.join("medallion.json"));
    Peer::start(command, "medallion", port, &dir.join("medallion.log"))
}

/// Adds an indicator to the seeded collection, as the read-write user.
fn publish(port: u16, indicator: Value) {
    let url = format!("http://127.0.0.1:{port}/api1/collections/91a7b528-80eb-42ed-a74d-c6fbd5a26116/objects/");
    let status = blocking(async {
        reqwest::Client::new()
            .post(url)
            .basic_auth("admin", Some("Password0"))
            .header("Accept", "application/taxii+json;version=2.1")
            .header("Content-Type", "application/taxii+json;version=2.1")
            .body(json!({ "objects": [indicator] }).to_string())
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202), "medallion accepts the new indicator");
}

#[test]
fn taxii_feeds_reach_enrichment_detection_response_and_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taxii_dir = dir.path().join("taxii");
    std::fs::create_dir_all(&taxii_dir).expect("mkdir");
    let port = free_port();
    let _taxii = medallion(&taxii_dir, port);
    let out = dir.path().join("ecs.jsonl");
    let extra = format!(
        r#"
[[intel.feeds]]
name = "cti"
url = "http://127.0.0.1:{port}/taxii2/"
collection = "Indicators (read/write)"
auth = {{ basic = {{ username = "readonly", password = "Password1" }} }}
page_size = 2
interval = "1s"

[[intel.feeds]]
name = "wrong-password"
url = "http://127.0.0.1:{port}/taxii2/"
collection = "Indicators (read/write)"
auth = {{ basic = {{ username = "readonly", password = "NOT-THE-PASSWORD-4711" }} }}
interval = "1h"
retries = 0

[sinks.ecs]
type = "file"
path = {out:?}
format = "ecs"
route = {{ records = ["event"] }}
"#
    );
    let server = Server::start(dir.path(), &extra);

    // The initial sync: 7 objects over 4 pages of 2; 4 indicators indexed.
    let metrics = wait_for(Duration::from_secs(30), "the initial sync", || {
        let m = server.metrics();
        (metric(&m, &["vigil_intel_indicators "]) == 4.0).then_some(m)
    });
    assert_eq!(metric(&metrics, &["vigil_intel_objects_total", "feed=\"cti\"", "result=\"added\""]), 6.0, "{metrics}");
    let log = server.log();
    assert!(log.contains("\"pages\":4"), "paged through the collection:\n{log}");

    // The wrong password: an authentication failure, counted, without the password.
    let metrics = wait_for(Duration::from_secs(30), "the failing feed to be counted", || {
        let m = server.metrics();
        (metric(&m, &["vigil_intel_polls_total", "wrong-password", "failed"]) >= 1.0).then_some(m)
    });
    let log = server.log();
    assert!(log.contains("authentication failed (HTTP 401)"), "{log}");
    assert!(
        !log.contains("NOT-THE-PASSWORD-4711") && !metrics.contains("NOT-THE-PASSWORD-4711"),
        "the password leaked"
    );

    // An indicator published later arrives by an incremental poll: only it is read.
    publish(
        port,
        json!({
            "type": "indicator", "spec_version": "2.1", "id": "indicator--0b7e5a1c-3f6d-4c2e-9a8b-1d2e3f4a5b6c",
            "created": "2026-06-01T00:00:00.000Z", "modified": "2026-06-01T00:00:00.000Z",
            "name": "New C2", "pattern": "[ipv4-addr:value = '192.0.2.200']", "pattern_type": "stix",
            "valid_from": "2026-06-01T00:00:00.000Z", "confidence": 90,
        }),
    );
    let metrics = wait_for(Duration::from_secs(30), "the incremental poll", || {
        let m = server.metrics();
        (metric(&m, &["vigil_intel_indicators "]) == 5.0).then_some(m)
    });
    assert_eq!(metric(&metrics, &["vigil_intel_objects_total", "feed=\"cti\"", "result=\"added\""]), 7.0, "{metrics}");
    assert_eq!(
        metric(&metrics, &["vigil_intel_objects_total", "feed=\"cti\"", "result=\"unchanged\""]),
        0.0,
        "no poll re-read the collection\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, &["vigil_intel_objects_total", "feed=\"cti\"", "result=\"ignored\""]),
        1.0,
        "the identity"
    );

    // An event from the seeded CIDR: enriched, an incident, exported with threat.*, blocked.
    let event = json!({ "class": "network", "action": "connection_attempt",
                        "source": { "ip": "203.0.113.50", "port": 51234 },
                        "destination": { "ip": "10.0.0.8", "port": 22 } });
    post_events(&server, format!("{event}\n"));
    let incident = crate::helpers::wait_for_incident(&server, "threat_intel_match");
    assert_eq!(incident["entities"]["threat_ips"], json!(["203.0.113.50"]));
    let exported = wait_for(Duration::from_secs(30), "the enriched event in the sink", || {
        sink_lines(&out).into_iter().find(|l| l["source"]["ip"] == "203.0.113.50")
    });
    let threat = &exported["threat"];
    assert_eq!(threat["indicator"]["id"], "indicator--a932fcc6-e032-476c-826f-cb970a5a1ade", "{exported}");
    assert_eq!(threat["indicator"]["type"], "ipv4-addr");
    assert_eq!(threat["indicator"]["confidence"], "High");
    assert_eq!(threat["feed"]["name"], "cti");
    assert_eq!(threat["software"]["name"], json!(["TestDropper"]));
    assert_eq!(exported["vigil"]["threat"]["field"], "source.ip");
    wait_for(Duration::from_secs(30), "the playbook to block the address", || {
        http_get_text(&server.url("/v1/blocklist")).filter(|b| b.lines().any(|l| l == "203.0.113.50"))
    });

    // The incidents as a STIX 2.1 bundle, checked by the OASIS validator.
    let bundle = dir.path().join("bundle.json");
    let export = vigil_in(dir.path(), &["intel", "export", "--output", &bundle.display().to_string()]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let doc: Value = serde_json::from_slice(&std::fs::read(&bundle).expect("bundle")).expect("json");
    let types: Vec<&str> =
        doc["objects"].as_array().expect("objects").iter().filter_map(|o| o["type"].as_str()).collect();
    for kind in ["identity", "incident", "indicator", "sighting", "ipv4-addr", "attack-pattern", "relationship"] {
        assert!(types.contains(&kind), "{kind} missing from {types:?}");
    }
    let validator = python().with_file_name("stix2_validator");
    let checked = Command::new(validator).arg(&bundle).output().expect("run stix2_validator");
    assert!(
        checked.status.success(),
        "stix2-validator rejected the bundle:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// A TAXII server of our own that rate-limits the first objects request (429 with
/// `Retry-After`) and wants an API key; and a bundle served over HTTP. `vigil intel sync`
/// retries, authenticates, reads both, and never prints the key.
#[test]
fn feeds_retry_rate_limits_use_api_keys_and_read_bundles_over_http() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::mock::{Answer, MockServer};

    let limited = Arc::new(AtomicUsize::new(0));
    let seen = limited.clone();
    let indicator = |id: &str, ip: &str| {
        json!({ "type": "indicator", "spec_version": "2.1", "id": id, "created": "2026-01-01T00:00:00Z",
                "modified": "2026-01-01T00:00:00Z", "pattern": format!("[ipv4-addr:value = '{ip}']"),
                "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z" })
    };
    let (taxii_object, bundle_object) =
        (indicator("indicator--1", "192.0.2.11"), indicator("indicator--2", "192.0.2.22"));
    let server = MockServer::start(move |r| {
        if r.header("x-api-key") != Some("KEY-8642-SECRET") && r.path != "/bundle.json" {
            return Answer::json(401, json!({ "title": "unauthorized" }));
        }
        match r.path.split('?').next().unwrap_or_default() {
            "/api1/" => {
                Answer::json(200, json!({ "title": "root", "versions": ["application/taxii+json;version=2.1"] }))
            }
            "/api1/collections/" => Answer::json(
                200,
                json!({ "collections": [
                { "id": "c1", "title": "Indicators", "can_read": true, "can_write": false } ] }),
            ),
            "/api1/collections/c1/objects/" if seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                Answer::json(429, json!({ "title": "slow down" })).with_header("Retry-After", "1")
            }
            "/api1/collections/c1/objects/" => {
                Answer::json(200, json!({ "more": false, "objects": [taxii_object.clone()] }))
                    .with_header("X-TAXII-Date-Added-Last", "2026-01-01T00:00:01.000000Z")
            }
            "/bundle.json" => {
                Answer::json(200, json!({ "type": "bundle", "id": "bundle--1", "objects": [bundle_object.clone()] }))
            }
            _ => Answer::json(404, json!({})),
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        r#"[store]
path = {data:?}
[[intel.feeds]]
name = "limited"
url = "{url}/api1/"
collection = "Indicators"
auth = {{ api_key = {{ header = "X-Api-Key", key = "KEY-8642-SECRET" }} }}
max_backoff = "2s"

[[intel.feeds]]
name = "remote-bundle"
kind = "bundle"
url = "{url}/bundle.json"
"#,
        data = dir.path().join("data"),
        url = server.url()
    );
    std::fs::write(dir.path().join("vigil.toml"), config).expect("config");
    let sync = vigil_in(dir.path(), &["intel", "sync"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&sync.stdout), String::from_utf8_lossy(&sync.stderr));
    assert!(sync.status.success(), "{stdout}{stderr}");
    assert_eq!(limited.load(Ordering::SeqCst), 2, "the rate-limited request was retried once");
    assert!(stderr.contains("retrying"), "{stderr}");
    assert!(!stdout.contains("KEY-8642-SECRET") && !stderr.contains("KEY-8642-SECRET"), "the API key leaked");
    let lookup = |ip: &str| {
        let out = vigil_in(dir.path(), &["intel", "lookup", ip]);
        serde_json::from_slice::<Value>(&out.stdout).ok()
    };
    assert_eq!(lookup("192.0.2.11").expect("taxii indicator")["feed"], "limited");
    assert_eq!(lookup("192.0.2.22").expect("bundle indicator")["feed"], "remote-bundle");
    assert!(lookup("192.0.2.33").is_none());
}

/// A feed behind mutual TLS (served by Vigil's own TLS listener, which checks client
/// certificates against a CA): with `client_cert` and `ca_file` the bundle is read; without
/// the certificate the handshake is refused and the poll fails.
#[test]
fn feeds_authenticate_with_client_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = crate::helpers::TlsFiles::generate(dir.path());
    let acceptor = vigil::source::tls::acceptor(&tls.server_cert, &tls.server_key, Some(&tls.ca)).expect("acceptor");
    let (ca_file, client_pem, client_key_pem) = (&tls.ca, &tls.client_cert, &tls.client_key);

    let bundle = json!({ "type": "bundle", "id": "bundle--m", "objects": [{
        "type": "indicator", "spec_version": "2.1", "id": "indicator--mtls", "created": "2026-01-01T00:00:00Z",
        "modified": "2026-01-01T00:00:00Z", "pattern": "[ipv4-addr:value = '192.0.2.77']",
        "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z" }] });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = tokio_util::sync::CancellationToken::new();
    let served = stop.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let router = axum::Router::new()
                .route("/bundle.json", axum::routing::get(move || async move { axum::Json(bundle) }));
            vigil::api::serve(listener, router, Some(acceptor), served).await.expect("serve");
        });
    });
    let config = |with_cert: bool| {
        let cert = if with_cert {
            format!("client_cert = {{ cert = {client_pem:?}, key = {client_key_pem:?} }}\n")
        } else {
            String::new()
        };
        format!(
            "[store]\npath = {:?}\n[[intel.feeds]]\nname = \"mtls\"\nkind = \"bundle\"\nurl = \"https://localhost:{port}/bundle.json\"\nca_file = {ca_file:?}\nretries = 0\n{cert}",
            dir.path().join("data")
        )
    };
    let sync = |with_cert: bool| {
        std::fs::write(dir.path().join("vigil.toml"), config(with_cert)).expect("config");
        vigil_in(dir.path(), &["intel", "sync"])
    };
    let refused = sync(false);
    assert!(!refused.status.success(), "no client certificate, no feed");
    let ok = sync(true);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"added\":1"), "{}", String::from_utf8_lossy(&ok.stdout));
    stop.cancel();
    server.join().expect("server thread");
}
