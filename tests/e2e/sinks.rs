//! Delivery to SIEMs: each HTTP sink against a faithful local server of its platform, the
//! dead-letter queue, the accounting invariant, faults (429 storms, 503 past the breaker, a
//! dead sink beside a live one, kill -9 mid-delivery), and secrets kept out of every output.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{Server, blocking, metric, sink_lines, wait_for};
use crate::mock::{Answer, Hec, HecFault, MockServer, Request};

/// `n` authentication events with ids `<prefix>-…`; `message(i)` sets each message.
fn events(prefix: u32, n: usize, message: impl Fn(usize) -> String) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..n).map(|i| format!("0190b000-{prefix:04}-7000-8000-{i:012}")).collect();
    let body = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({"id": id, "class": "authentication", "action": "ssh_login", "outcome": "success",
                "source": {"ip": "192.0.2.10"}, "user": {"name": "alice"}, "host": {"name": "web-1"}, "message": message(i)})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n");
    (ids, body)
}

fn post(server: &Server, body: String) {
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202), "ingest accepted");
}

fn api_json(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    blocking(async {
        let mut request = reqwest::Client::new().request(method, server.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("API answers").json().await.expect("JSON")
    })
}

/// `accepted = delivered + dead_lettered + in_flight + filtered`, read from `/metrics`.
fn assert_accounting(server: &Server, sink: &str) -> HashMap<&'static str, f64> {
    let text = server.metrics();
    let label = format!("sink=\"{sink}\"");
    let mut counts = HashMap::new();
    for outcome in ["accepted", "delivered", "dead_lettered", "filtered"] {
        let o = format!("outcome=\"{outcome}\"");
        counts.insert(outcome, metric(&text, &["sink_records_total{", &label, &o]));
    }
    let in_flight = metric(&text, &["sink_in_flight_records{", &label]);
    assert!(counts["accepted"] > 0.0, "sink {sink} read records:\n{text}");
    assert_eq!(
        counts["accepted"],
        counts["delivered"] + counts["dead_lettered"] + counts["filtered"] + in_flight,
        "accounting of sink {sink}: {counts:?}, in flight {in_flight}"
    );
    counts
}

fn assert_no_secret(server: &Server, secret: &str) {
    assert!(!server.log().contains(secret), "a secret reached the log");
    assert!(!server.metrics().contains(secret), "a secret reached /metrics");
    let sinks = api_json(server, reqwest::Method::GET, "/v1/sinks", None).to_string();
    assert!(!sinks.contains(secret), "a secret reached /v1/sinks: {sinks}");
    let dlq = api_json(server, reqwest::Method::GET, "/v1/dlq", None).to_string();
    assert!(!dlq.contains(secret), "a secret reached /v1/dlq");
}

#[test]
fn splunk_hec_with_acks_busy_answers_and_a_bad_event() {
    let token = "hec-token-5f1e2d3c";
    let busy = Arc::new(AtomicUsize::new(2));
    let fixed = Arc::new(AtomicBool::new(false));
    let hec = Hec::new(token, {
        let (busy, fixed) = (busy.clone(), fixed.clone());
        move |objects| {
            if fixed.load(Ordering::SeqCst) {
                return None;
            }
            if busy.load(Ordering::SeqCst) > 0 {
                busy.fetch_sub(1, Ordering::SeqCst);
                return Some(HecFault::Answer(
                    Answer::json(503, serde_json::json!({"text": "Server is busy", "code": 9}))
                        .with_header("retry-after", "1"),
                ));
            }
            objects.iter().position(|o| o["event"]["message"] == "poison").map(HecFault::Invalid)
        }
    });
    let mock = MockServer::start({
        let hec = hec.clone();
        move |r| hec.handle(r)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &format!(
            "[sinks.hec]\ntype = \"splunk_hec\"\nendpoint = \"{}\"\ntoken = \"{token}\"\nindex = \"security\"\n\
             acknowledgements = {{ enabled = true, poll_interval = \"100ms\" }}\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\n\
             batch = {{ max_records = 40 }}\nretry = {{ initial_backoff = \"50ms\", max_backoff = \"500ms\" }}\n",
            mock.url()
        ),
    );
    let (ids, body) = events(1, 400, |i| if i == 123 { "poison".into() } else { format!("login {i}") });
    post(&server, body);

    let indexed = wait_for(Duration::from_secs(60), "every good event indexed", || {
        let indexed = hec.indexed();
        (indexed.len() >= 399).then_some(indexed)
    });
    let seen: Vec<&str> = indexed.iter().map(|o| o["event"]["id"].as_str().expect("id")).collect();
    let unique: HashSet<&str> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event indexed twice");
    let expected: HashSet<&str> =
        ids.iter().enumerate().filter(|(i, _)| *i != 123).map(|(_, id)| id.as_str()).collect();
    assert_eq!(unique, expected);
    for o in &indexed {
        assert_eq!(o["index"], "security");
        assert_eq!(o["sourcetype"], "vigil:event");
        assert_eq!(o["host"], "web-1");
    }
    assert_eq!(busy.load(Ordering::SeqCst), 0, "the busy answers were retried");
    assert!(!mock.requests_to("/services/collector/ack").is_empty(), "acks were polled");

    let letters = wait_for(Duration::from_secs(10), "the bad event in the DLQ", || {
        let letters = api_json(&server, reqwest::Method::GET, "/v1/dlq?sink=hec", None)["dead_letters"].clone();
        (letters.as_array().is_some_and(|l| !l.is_empty())).then_some(letters)
    });
    assert_eq!(letters.as_array().map(Vec::len), Some(1));
    assert_eq!(letters[0]["status"], 400);
    assert!(letters[0]["reason"].as_str().expect("reason").contains("code 6"), "{letters}");
    assert_eq!(letters[0]["record"]["id"], ids[123].as_str());

    let counts = wait_for(Duration::from_secs(10), "nothing in flight", || {
        let counts = assert_accounting(&server, "hec");
        (counts["delivered"] >= 399.0).then_some(counts)
    });
    assert_eq!(counts["dead_lettered"], 1.0);
    let status = api_json(&server, reqwest::Method::GET, "/v1/sinks", None);
    assert_eq!(status["sinks"][0]["dlq_records"], 1, "{status}");
    assert_eq!(status["sinks"][0]["type"], "splunk_hec");
    assert_no_secret(&server, token);

    // The index is fixed: replaying delivers the letter and empties the queue; replaying
    // again sends nothing.
    fixed.store(true, Ordering::SeqCst);
    let replayed = api_json(&server, reqwest::Method::POST, "/v1/dlq/replay", Some(serde_json::json!({"sink": "hec"})));
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    wait_for(Duration::from_secs(10), "the replayed event indexed", || {
        hec.indexed().iter().any(|o| o["event"]["id"] == ids[123].as_str()).then_some(())
    });
    let left =
        api_json(&server, reqwest::Method::GET, "/v1/dlq?sink=hec", None)["dead_letters"].as_array().map(Vec::len);
    assert_eq!(left, Some(0));
    let again = api_json(&server, reqwest::Method::POST, "/v1/dlq/replay", Some(serde_json::json!({"sink": "hec"})));
    assert_eq!(again["replayed"], 0);
    assert_eq!(hec.indexed().iter().filter(|o| o["event"]["id"] == ids[123].as_str()).count(), 1, "replayed once");
}

/// An Elasticsearch `_bulk` endpoint: `bad` documents get 400, `dup` ones 409 (already
/// indexed), `busy` ones 429 on their first attempt; every accepted `_id` is kept.
struct Bulk {
    docs: Mutex<HashMap<String, serde_json::Value>>,
    attempts: Mutex<HashMap<String, usize>>,
}

impl Bulk {
    fn handle(&self, r: &Request) -> Answer {
        if r.method == "GET" && r.path == "/" {
            return Answer::json(200, serde_json::json!({"version": {"number": "8.15.0"}}));
        }
        if r.method == "PUT" {
            return Answer::json(200, serde_json::json!({"acknowledged": true}));
        }
        assert_eq!(r.path, "/_bulk");
        assert_eq!(r.header("authorization"), Some("ApiKey ZXMta2V5LTkxMg=="));
        let text = r.text();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("NDJSON")).collect();
        let mut items = Vec::new();
        let mut errors = false;
        for pair in lines.chunks(2) {
            let (action, doc) = (&pair[0]["create"], &pair[1]);
            let id = action["_id"].as_str().expect("_id").to_owned();
            assert!(action["_index"].as_str().expect("index").starts_with("vigil-event-"));
            let attempt = {
                let mut attempts = self.attempts.lock().expect("lock");
                let a = attempts.entry(id.clone()).or_default();
                *a += 1;
                *a
            };
            let message = doc["message"].as_str().unwrap_or_default();
            let status = if message == "bad" {
                400
            } else if message == "busy" && attempt == 1 {
                429
            } else if message == "dup" || self.docs.lock().expect("lock").contains_key(&id) {
                409
            } else {
                201
            };
            if status == 201 {
                self.docs.lock().expect("lock").insert(id.clone(), doc.clone());
            }
            errors |= status >= 300;
            let error = match status {
                400 => {
                    serde_json::json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [source.ip]"})
                }
                429 => serde_json::json!({"type": "es_rejected_execution_exception", "reason": "rejected execution"}),
                409 => {
                    serde_json::json!({"type": "version_conflict_engine_exception", "reason": "document already exists"})
                }
                _ => serde_json::Value::Null,
            };
            items.push(serde_json::json!({"create": {"_id": id, "status": status, "error": error}}));
        }
        Answer::json(200, serde_json::json!({"took": 3, "errors": errors, "items": items}))
    }
}

#[test]
fn elasticsearch_bulk_with_mixed_item_statuses() {
    let bulk = Arc::new(Bulk { docs: Mutex::default(), attempts: Mutex::default() });
    let mock = MockServer::start({
        let bulk = bulk.clone();
        move |r| bulk.handle(r)
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &format!(
            "[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\nauth = {{ type = \"api_key\", key = \"ZXMta2V5LTkxMg==\" }}\n\
             template = {{ install = true }}\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\nretry = {{ initial_backoff = \"50ms\" }}\n",
            mock.url()
        ),
    );
    let kinds = ["ok", "bad", "dup", "busy"];
    let (ids, body) = events(2, 200, |i| kinds[i % 4].into());
    post(&server, body);
    let want = ids.iter().enumerate().filter(|(i, _)| kinds[i % 4] == "ok" || kinds[i % 4] == "busy").count();
    wait_for(Duration::from_secs(60), "ok and busy documents indexed", || {
        (bulk.docs.lock().expect("lock").len() >= want).then_some(())
    });
    let counts = wait_for(Duration::from_secs(10), "bad documents dead-lettered", || {
        let counts = assert_accounting(&server, "es");
        (counts["dead_lettered"] >= 50.0 && counts["delivered"] >= 150.0).then_some(counts)
    });
    assert_eq!(counts["dead_lettered"], 50.0, "only the 400s go to the DLQ; 409 counts as delivered");
    assert_eq!(counts["delivered"], 150.0);
    let attempts = bulk.attempts.lock().expect("lock").clone();
    for (i, id) in ids.iter().enumerate() {
        let expected = if kinds[i % 4] == "busy" { 2 } else { 1 };
        assert_eq!(attempts.get(id), Some(&expected), "only the failed items are retried ({})", kinds[i % 4]);
    }
    let doc = bulk.docs.lock().expect("lock")[&ids[0]].clone();
    assert_eq!(doc["event"]["kind"], "event", "ECS document: {doc}");
    assert!(doc["@timestamp"].is_string());
    assert!(
        mock.requests().iter().any(|r| r.method == "PUT" && r.path.starts_with("/_index_template/")),
        "template installed"
    );
    let letters = api_json(&server, reqwest::Method::GET, "/v1/dlq?sink=es&limit=1000", None)["dead_letters"].clone();
    let letters = letters.as_array().expect("letters");
    assert_eq!(letters.len(), 50);
    assert!(
        letters
            .iter()
            .all(|l| l["status"] == 400 && l["excerpt"].as_str().is_some_and(|e| e.contains("mapper_parsing")))
    );
    // Replay by reason: the destination still refuses them, so they stay, once each.
    let replayed = api_json(
        &server,
        reqwest::Method::POST,
        "/v1/dlq/replay",
        Some(serde_json::json!({"sink": "es", "reason": "HTTP 400"})),
    );
    assert_eq!(replayed["replayed"], 0, "{replayed}");
    let after = api_json(&server, reqwest::Method::GET, "/v1/dlq?sink=es&limit=1000", None)["dead_letters"]
        .as_array()
        .map(Vec::len);
    assert_eq!(after, Some(50));
    // The same through the CLI: listing reads the store beside the running server; status
    // and purge go through it.
    let vigil = |args: &[&str]| {
        let out = std::process::Command::new(crate::helpers::vigil_bin())
            .arg("--config")
            .arg(server.dir.join("vigil.toml"))
            .args(args)
            .output()
            .expect("run vigil");
        assert!(out.status.success(), "vigil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    };
    let listed = vigil(&["dlq", "list", "--sink", "es", "--reason", "HTTP 400", "--json", "--limit", "1000"]);
    assert_eq!(listed.lines().count(), 50);
    let first: serde_json::Value = serde_json::from_str(listed.lines().next().expect("a letter")).expect("JSON");
    let shown = vigil(&["dlq", "show", "es", &first["seq"].to_string()]);
    assert!(shown.contains("mapper_parsing"), "{shown}");
    let status = vigil(&["sinks", "status", "--json"]);
    let es: serde_json::Value = serde_json::from_str(status.lines().next().expect("a sink")).expect("JSON");
    assert_eq!(
        (es["name"].as_str(), es["dlq_records"].as_u64(), es["breaker"].as_str()),
        (Some("es"), Some(50), Some("closed"))
    );
    assert!(vigil(&["sinks", "status"]).contains("elasticsearch"));
    assert_eq!(vigil(&["dlq", "purge", "--sink", "es"]).trim(), "purged 50");
    assert!(vigil(&["dlq", "list"]).contains("(no dead letters)"));
    assert_no_secret(&server, "ZXMta2V5LTkxMg==");
}

#[test]
fn datadog_sumo_and_a_signed_webhook() {
    let mock = MockServer::start(|r| {
        if r.path.starts_with("/api/v1/validate") {
            return Answer::json(200, serde_json::json!({"valid": true}));
        }
        Answer::json(202, serde_json::json!({}))
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let url = mock.url();
    let server = Server::start(
        dir.path(),
        &format!(
            "[sinks.dd]\ntype = \"datadog\"\napi_key = \"dd-key-77aa\"\nendpoint = \"{url}\"\ntags = [\"env:test\"]\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\n\
             [sinks.sumo]\ntype = \"sumo_logic\"\nendpoint = \"{url}/receiver/v1/http/sumo-code-31ce\"\ncategory = \"security/vigil\"\n\
             fields = {{ team = \"soc\" }}\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\n\
             [sinks.hook]\ntype = \"http\"\nurl = \"{url}/hook\"\nencoding = \"template\"\n\
             body_template = '{{\"text\": \"{{{{ kind }}}} on {{{{ host }}}}\", \"record\": {{{{ record }}}}}}'\n\
             headers = {{ X-Vigil-Kind = \"{{{{ kind }}}}\" }}\nauth = {{ type = \"bearer\", token = \"hook-token-0c0c\" }}\n\
             signing = {{ secret = \"hook-signing-9e9e\" }}\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\nbatch = {{ max_records = 1 }}\n"
        ),
    );
    let (ids, body) = events(3, 30, |i| format!("login {i}"));
    post(&server, body);
    wait_for(Duration::from_secs(30), "every record at each destination", || {
        let requests = mock.requests();
        let dd = requests
            .iter()
            .filter(|r| r.path == "/api/v2/logs")
            .map(|r| serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).expect("array").len())
            .sum::<usize>();
        let sumo = requests
            .iter()
            .filter(|r| r.path.starts_with("/receiver/"))
            .map(|r| r.text().lines().count())
            .sum::<usize>();
        let hook = requests.iter().filter(|r| r.path == "/hook").count();
        (dd >= 30 && sumo >= 30 && hook >= 30).then_some(())
    });
    for r in mock.requests_to("/api/v2/logs") {
        assert_eq!(r.header("dd-api-key"), Some("dd-key-77aa"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        for entry in serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).expect("array") {
            assert_eq!(entry["ddsource"], "vigil");
            assert_eq!(entry["ddtags"], "env:test,kind:event");
            assert_eq!(entry["hostname"], "web-1");
            let message: serde_json::Value =
                serde_json::from_str(entry["message"].as_str().expect("message")).expect("JSON message");
            assert!(ids.contains(&message["id"].as_str().expect("id").to_owned()));
        }
    }
    for r in mock.requests_to("/receiver/") {
        assert_eq!(r.header("x-sumo-category"), Some("security/vigil"));
        assert_eq!(r.header("x-sumo-fields"), Some("team=soc"));
    }
    let now = chrono::Utc::now().timestamp();
    for r in mock.requests_to("/hook") {
        assert_eq!(r.header("authorization"), Some("Bearer hook-token-0c0c"));
        assert_eq!(r.header("x-vigil-kind"), Some("event"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("rendered template is JSON");
        assert_eq!(body["text"], "event on web-1");
        // A receiver's check: recompute the HMAC over "<t>.<body>" and bound the age.
        let signature = r.header("x-vigil-signature").expect("signed");
        let (t, v1) = signature.split_once(",v1=").expect("t=…,v1=…");
        let t: i64 = t.strip_prefix("t=").expect("t=").parse().expect("unix time");
        assert!((now - t).abs() < 300, "fresh timestamp");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"hook-signing-9e9e").expect("key");
        mac.update(format!("{t}.").as_bytes());
        mac.update(&r.body);
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(v1, expected, "signature verifies");
    }
    for sink in ["dd", "sumo", "hook"] {
        wait_for(Duration::from_secs(10), "all delivered", || {
            (assert_accounting(&server, sink)["delivered"] >= 30.0).then_some(())
        });
    }
    for secret in ["dd-key-77aa", "sumo-code-31ce", "hook-token-0c0c", "hook-signing-9e9e"] {
        assert_no_secret(&server, secret);
    }
}

#[test]
fn retry_after_storms_and_an_open_breaker_do_not_stall_other_sinks() {
    // `storm`: 429 with Retry-After: 1 for its first five requests. `down`: 503 until told.
    // How long each wait lasts (Retry-After, the breaker's cool-down) is checked on a paused
    // clock by the delivery loop's unit tests (`export/exporter_tests.rs`); here, what
    // reaches the destinations.
    let storm_left = Arc::new(AtomicUsize::new(5));
    let storm = MockServer::start({
        let left = storm_left.clone();
        move |_| {
            if left.load(Ordering::SeqCst) > 0 {
                left.fetch_sub(1, Ordering::SeqCst);
                return Answer::json(429, serde_json::json!({"error": "slow down"})).with_header("retry-after", "1");
            }
            Answer::json(200, serde_json::json!({}))
        }
    });
    let up = Arc::new(AtomicBool::new(false));
    let down = MockServer::start({
        let up = up.clone();
        move |_| {
            if up.load(Ordering::SeqCst) {
                Answer::json(200, serde_json::json!({}))
            } else {
                Answer::json(503, serde_json::json!({}))
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &format!(
            "[sinks.storm]\ntype = \"http\"\nurl = \"{}/in\"\nencoding = \"ndjson\"\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\n\
             [sinks.down]\ntype = \"http\"\nurl = \"{}/in\"\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\nhealthcheck_interval = \"1s\"\n\
             breaker = {{ failures = 3, open_for = \"2s\" }}\nretry = {{ initial_backoff = \"20ms\", max_backoff = \"200ms\" }}\n\
             [sinks.archive]\ntype = \"file\"\npath = \"out.jsonl\"\nroute = {{ records = [\"event\"], classes = [\"authentication\"] }}\n",
            storm.url(),
            down.url()
        ),
    );
    let (ids, body) = events(4, 500, |i| format!("login {i}"));
    post(&server, body);
    // The archive gets everything while `down` is down and `storm` is throttled.
    wait_for(Duration::from_secs(30), "the archive to have every event", || {
        (sink_lines(&server.dir.join("out.jsonl")).len() >= 500).then_some(())
    });
    let status = wait_for(Duration::from_secs(30), "the breaker to open", || {
        let status = api_json(&server, reqwest::Method::GET, "/v1/sinks", None);
        let down = status["sinks"].as_array()?.iter().find(|s| s["name"] == "down")?.clone();
        (down["breaker"] == "open" && down["backlog_records"] == 500).then_some(down)
    });
    assert_eq!(status["state"], "unhealthy", "{status}");
    assert!(status["backlog_bytes"].as_u64() > Some(0), "{status}");
    assert!(metric(&server.metrics(), &["sink_breaker_open{", "sink=\"down\""]) >= 1.0);
    // While open, nothing goes out until `open_for` has passed; then one probe.
    let tries_while_open = down.requests().len();
    wait_for(Duration::from_secs(30), "the half-open probe", || {
        (down.requests().len() > tries_while_open).then_some(())
    });
    assert_eq!(down.requests().len(), tries_while_open + 1, "an open breaker lets one probe through");

    // The storm passes, honouring each Retry-After.
    wait_for(Duration::from_secs(60), "storm delivered", || {
        (storm_left.load(Ordering::SeqCst) == 0 && assert_accounting(&server, "storm")["delivered"] >= 500.0)
            .then_some(())
    });
    let delivered: HashSet<String> = storm
        .requests()
        .iter()
        .skip(5)
        .flat_map(|r| {
            r.text()
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("line")["id"].as_str().expect("id").to_owned()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(delivered, ids.iter().cloned().collect());

    // The destination recovers: the half-open probe succeeds and the backlog drains.
    up.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(60), "down recovered", || {
        (assert_accounting(&server, "down")["delivered"] >= 500.0).then_some(())
    });
    assert_eq!(assert_accounting(&server, "down")["dead_lettered"], 0.0, "retryable failures never dead-letter");
}

#[test]
fn kill_9_mid_delivery_loses_nothing_and_repeats_only_same_ids() {
    let bulk = Arc::new(Bulk { docs: Mutex::default(), attempts: Mutex::default() });
    // After the first 300 documents the endpoint holds every request until released, so
    // the kill lands with batches in flight.
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let gated = {
        let (bulk, gate) = (bulk.clone(), gate.clone());
        move |r: &Request| {
            if r.path == "/_bulk" && bulk.docs.lock().expect("lock").len() >= 300 {
                let (open, changed) = &*gate;
                let _unused = changed.wait_while(open.lock().expect("lock"), |open| !*open).expect("gate");
            }
            bulk.handle(r)
        }
    };
    let mock = MockServer::start(gated);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        dir.path(),
        &format!(
            "[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\nauth = {{ type = \"api_key\", key = \"ZXMta2V5LTkxMg==\" }}\n\
             route = {{ records = [\"event\"], classes = [\"authentication\"] }}\nbatch = {{ max_records = 50 }}\nconcurrency = 4\n",
            mock.url()
        ),
    );
    let (ids, body) = events(5, 3000, |i| format!("login {i}"));
    post(&server, body);
    wait_for(Duration::from_secs(30), "delivery under way", || {
        (bulk.docs.lock().expect("lock").len() >= 300).then_some(())
    });
    server.kill9();
    let before = bulk.docs.lock().expect("lock").len();
    assert!(before < 3000, "killed mid-delivery ({before} delivered)");
    *gate.0.lock().expect("lock") = true;
    gate.1.notify_all();
    server.restart();
    wait_for(Duration::from_secs(60), "every event indexed after the restart", || {
        (bulk.docs.lock().expect("lock").len() >= 3000).then_some(())
    });
    let docs = bulk.docs.lock().expect("lock").clone();
    assert_eq!(docs.keys().cloned().collect::<HashSet<_>>(), ids.iter().cloned().collect::<HashSet<_>>());
    // Anything sent twice was sent with the same `_id`, so the destination kept one copy.
    let attempts = bulk.attempts.lock().expect("lock").clone();
    assert!(attempts.keys().all(|id| docs.contains_key(id)), "no unknown ids");
    let resent = attempts.values().filter(|&&n| n > 1).count();
    eprintln!("{resent} record(s) re-sent after kill -9, each under its original _id");
}
