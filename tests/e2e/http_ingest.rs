//! `POST /v1/events`: formats, limits and precise per-line errors; good lines are stored.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Server, blocking, sink_lines, wait_for};

const SINK: &str = "[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nroute = { records = [\"event\"] }\n";
const LIMITS: &str = "[ingest]\nmax_body_bytes = \"64KiB\"\nmax_event_bytes = \"4KiB\"\n";

fn post(server: &Server, body: Vec<u8>, gzip: bool) -> (u16, Value) {
    blocking(async {
        let mut request = reqwest::Client::new().post(server.url("/v1/events")).body(body);
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    })
}

fn event(message: &str) -> String {
    format!(r#"{{"class":"network","message":"{message}","source":{{"ip":"192.0.2.1","port":4000}}}}"#)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn stored_messages(server: &Server) -> Vec<String> {
    sink_lines(&server.dir.join("out.jsonl"))
        .iter()
        .map(|l| l["record"]["message"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn bad_lines_get_precise_errors_and_cost_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &format!("{SINK}{LIMITS}"));

    let mut body = Vec::new();
    body.extend_from_slice(format!("{}\n", event("good-1")).as_bytes()); // 1
    body.extend_from_slice(b"{\"class\":\"network\",\n"); // 2: malformed JSON
    body.extend_from_slice(b"{\"class\":\"network\",\"source\":{\"port\":\"ssh\"},\"user\":{\"name\":7}}\n"); // 3: wrong types
    body.extend_from_slice(b"{\"class\":\"network\",\"message\":\"\xff\xfe\"}\n"); // 4: invalid UTF-8
    body.extend_from_slice(format!("{}\n", event(&"x".repeat(5000))).as_bytes()); // 5: oversize line
    let deep = format!("{{\"class\":\"other\",\"attributes\":{{\"a\":{}{}}}}}", "[".repeat(1000), "]".repeat(1000));
    body.extend_from_slice(format!("{deep}\n").as_bytes()); // 6: 1,000-deep nesting
    body.extend_from_slice(b"{\"class\":\"telepathy\"}\n"); // 7: unknown class
    body.extend_from_slice(format!("{}\n", event("good-2")).as_bytes()); // 8

    let (status, report) = post(&server, body, false);
    assert_eq!(status, 207, "{report}");
    assert_eq!(report["accepted"], 2);
    let rejected = report["rejected"].as_array().expect("rejected list");
    let lines: Vec<u64> = rejected.iter().map(|r| r["line"].as_u64().expect("line")).collect();
    assert_eq!(lines, [2, 3, 4, 5, 6, 7], "{report:#}");
    let kinds: Vec<&str> = rejected.iter().map(|r| r["error"].as_str().expect("error kind")).collect();
    assert_eq!(kinds, ["malformed_json", "invalid", "not_utf8", "too_large", "too_deep", "invalid"]);
    let fields = |r: &Value| {
        r["problems"]
            .as_array()
            .map(|p| p.iter().map(|p| p["field"].as_str().unwrap_or("").to_owned()).collect::<Vec<_>>())
    };
    assert_eq!(fields(&rejected[1]), Some(vec!["source.port".to_owned(), "user.name".to_owned()]));
    assert_eq!(fields(&rejected[5]), Some(vec!["class".to_owned()]));
    assert!(rejected[5]["message"].as_str().expect("message").contains("telepathy"));
    assert_eq!(rejected[2]["offset"], 30);
    assert_eq!(rejected[3]["limit"], 4096);
    assert_eq!(rejected[4]["limit"], 32);

    wait_for(Duration::from_secs(20), "the good lines in the sink", || {
        (stored_messages(&server).len() >= 2).then_some(())
    });
    assert_eq!(stored_messages(&server), ["good-1", "good-2"]);

    let metrics = server.metrics();
    assert_eq!(crate::helpers::metric(&metrics, &["vigil_events_rejected_total", "source=\"http\""]), 6.0, "{metrics}");
    assert_eq!(crate::helpers::metric(&metrics, &["vigil_events_ingested_total", "source=\"http\""]), 2.0);
}

#[test]
fn arrays_gzip_and_size_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &format!("{SINK}{LIMITS}"));

    // A JSON array, one element bad: positions are reported like lines.
    let array = format!("[{}, {{\"class\":5}}, {}]", event("arr-1"), event("arr-2"));
    let (status, report) = post(&server, array.into_bytes(), false);
    assert_eq!(status, 207, "{report}");
    assert_eq!(report["rejected"][0]["line"], 2);

    // Gzip NDJSON, all good: 202.
    let ndjson = format!("{}\n{}\n", event("gz-1"), event("gz-2"));
    let (status, report) = post(&server, gzip(ndjson.as_bytes()), true);
    assert_eq!((status, report["accepted"].as_u64()), (202, Some(2)), "{report}");

    // Over the body limit, raw and once decompressed: 413, nothing stored.
    let big = format!("{}\n", event("big")).repeat(1000);
    let (status, report) = post(&server, big.clone().into_bytes(), false);
    assert_eq!((status, report["error"]["code"].as_str()), (413, Some("body_too_large")), "{report}");
    let (status, report) = post(&server, gzip(big.as_bytes()), true);
    assert_eq!((status, report["error"]["code"].as_str()), (413, Some("body_too_large")), "{report}");

    // Broken gzip, an unclosed array, nothing at all, nothing good: 400 with a code.
    let (status, report) = post(&server, b"not gzip".to_vec(), true);
    assert_eq!((status, report["error"]["code"].as_str()), (400, Some("bad_gzip")));
    let (status, report) = post(&server, b"[{\"class\":\"dns\"}".to_vec(), false);
    assert_eq!((status, report["error"]["code"].as_str()), (400, Some("malformed_batch")));
    let (status, report) = post(&server, b"\n\n".to_vec(), false);
    assert_eq!((status, report["error"]["code"].as_str()), (400, Some("empty_batch")));
    let (status, report) = post(&server, b"{}\n".to_vec(), false);
    assert_eq!((status, report["accepted"].as_u64()), (400, Some(0)), "{report}");

    wait_for(Duration::from_secs(20), "stored events", || (stored_messages(&server).len() >= 4).then_some(()));
    assert_eq!(stored_messages(&server), ["arr-1", "arr-2", "gz-1", "gz-2"]);
}

fn post_as(server: &Server, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
    blocking(async {
        let mut request = reqwest::Client::new().post(server.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON response"))
    })
}

#[test]
fn producer_formats_over_http_are_decoded_and_their_refusals_counted_by_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), SINK);

    // ECS NDJSON as Filebeat writes it, one line broken.
    let ecs = concat!(
        r#"{"@timestamp":"2026-03-02T11:58:01Z","event":{"category":["authentication"],"type":["start"],"outcome":"failure","action":"ssh_login"},"source":{"ip":"203.0.113.7"},"user":{"name":"admin"},"message":"ecs-1"}"#,
        "\n{\"@timestamp\":\n",
        r#"{"@timestamp":"2026-03-02T11:58:02Z","event.category":"network","source.ip":"10.0.0.1","destination.ip":"10.0.0.2","message":"ecs-2"}"#,
        "\n"
    );
    let (status, report) = post_as(&server, "/v1/events?format=ecs", ecs.as_bytes().to_vec(), &[]);
    assert_eq!((status, report["accepted"].as_u64()), (207, Some(2)), "{report}");
    assert_eq!(report["rejected"][0]["line"], 2);

    // An EVTX file, named by the header.
    let evtx = std::fs::read(crate::inputs::shared("inputs/windows-evtx/new-user-security.evtx")).expect("evtx");
    let (status, report) = post_as(&server, "/v1/events", evtx, &[("x-vigil-format", "windows")]);
    assert_eq!((status, report["accepted"].as_u64()), (202, Some(4)), "{report}");

    // A format Vigil does not know.
    let (status, report) = post_as(&server, "/v1/events?format=evtxx", b"{}".to_vec(), &[]);
    assert_eq!((status, report["error"]["code"].as_str()), (400, Some("unknown_format")), "{report}");
    assert!(report["error"]["message"].as_str().expect("message").contains("unknown format `evtxx`"));

    wait_for(Duration::from_secs(20), "the decoded events in the sink", || {
        (sink_lines(&server.dir.join("out.jsonl")).len() >= 6).then_some(())
    });
    let stored = sink_lines(&server.dir.join("out.jsonl"));
    let first = &stored[0]["record"];
    assert_eq!(
        (first["class"].as_str(), first["outcome"].as_str()),
        (Some("authentication"), Some("failure")),
        "{first}"
    );
    assert_eq!(first["user"]["name"], "admin");
    assert!(
        stored
            .iter()
            .any(|l| l["record"]["action"] == "user_created" && l["record"]["user"]["target"]["name"] == "IEUser")
    );

    let metrics = server.metrics();
    let ecs_refused = ["vigil_events_rejected_total", "source=\"http\"", "format=\"ecs\"", "reason=\"malformed_json\""];
    assert_eq!(crate::helpers::metric(&metrics, &ecs_refused), 1.0, "{metrics}");
}

#[test]
fn falcosidekick_and_alertmanager_post_with_a_header_and_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hooks = "[api.webhooks.falco]\nkind = \"falco\"\nheader = { name = \"X-Falco-Key\", value = \"falco-header-key-0123\" }\n\
                 [api.webhooks.alerts]\nkind = \"alertmanager\"\ntoken = \"am-bearer-token-0123\"\n";
    let server = Server::start(dir.path(), &format!("{SINK}{hooks}"));
    // Falcosidekick's webhook output: Falco's own JSON, with the uuid Falcosidekick adds.
    let falco = serde_json::json!({
        "uuid": "3f7e2e2a-4c6e-4c3e-9a59-4f6e0f6f7a10", "output": "10:20:05.408091526: Notice A shell was spawned in a container with an attached terminal (user=root user_loginuid=-1 k8s.ns=default k8s.pod=web-7 container=8f1 shell=bash parent=runc cmdline=bash -i terminal=34816 container_id=8f1 image=nginx)",
        "priority": "Notice", "rule": "Terminal shell in container", "time": "2026-11-22T10:20:05.408091526Z",
        "source": "syscall", "tags": ["container", "maturity_stable", "mitre_execution", "shell", "T1059"], "hostname": "node-7",
        "output_fields": { "container.id": "8f1", "container.image.repository": "nginx", "evt.time": 1763806805408091526_u64,
            "k8s.ns.name": "default", "k8s.pod.name": "web-7", "proc.cmdline": "bash -i", "proc.name": "bash",
            "proc.pname": "runc", "proc.tty": 34816, "user.loginuid": -1, "user.name": "root" } });
    let body = serde_json::to_vec(&falco).expect("json");
    let (status, report) = post_as(&server, "/v1/webhooks/falco", body.clone(), &[("x-falco-key", "wrong")]);
    assert_eq!((status, report["error"]["code"].as_str()), (401, Some("bad_credential")), "{report}");
    let (status, report) = post_as(&server, "/v1/webhooks/falco", body, &[("x-falco-key", "falco-header-key-0123")]);
    assert_eq!((status, report["accepted"].as_u64()), (202, Some(1)), "{report}");

    // Alertmanager's webhook (version 4) with `http_config.authorization`.
    let alerts = serde_json::json!({ "version": "4", "groupKey": "{}:{alertname=\"NodeDown\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "vigil", "groupLabels": { "alertname": "NodeDown" },
        "commonLabels": { "alertname": "NodeDown", "severity": "critical" }, "commonAnnotations": { "summary": "db-1 is down" },
        "externalURL": "http://alertmanager:9093", "alerts": [
            { "status": "firing", "labels": { "alertname": "NodeDown", "instance": "db-1:9100", "severity": "critical" },
              "annotations": { "summary": "db-1 is down" }, "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
              "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c8b4d1b2a3e4f5a6" } ] });
    let body = serde_json::to_vec(&alerts).expect("json");
    let (status, _) = post_as(&server, "/v1/webhooks/alerts", body.clone(), &[]);
    assert_eq!(status, 401);
    let (status, report) =
        post_as(&server, "/v1/webhooks/alerts", body, &[("authorization", "Bearer am-bearer-token-0123")]);
    assert_eq!((status, report["accepted"].as_u64()), (202, Some(1)), "{report}");

    wait_for(Duration::from_secs(20), "both events in the sink", || {
        (sink_lines(&server.dir.join("out.jsonl")).len() >= 2).then_some(())
    });
    let stored = sink_lines(&server.dir.join("out.jsonl"));
    let falco = stored.iter().map(|l| &l["record"]).find(|r| r["provider"] == "falco").expect("the Falco event");
    assert_eq!(
        (falco["class"].as_str(), falco["action"].as_str()),
        (Some("finding"), Some("terminal_shell_in_container"))
    );
    assert_eq!(
        (falco["process"]["command_line"].as_str(), falco["process"]["parent"]["name"].as_str()),
        (Some("bash -i"), Some("runc"))
    );
    assert_eq!(falco["attributes"]["falco"]["output_fields"]["k8s.pod.name"], "web-7");
    let alert = stored.iter().map(|l| &l["record"]).find(|r| r["provider"] == "alertmanager").expect("the alert");
    assert_eq!(alert["host"]["name"], "db-1");
    // The credentials are never logged.
    let log = server.log();
    assert!(log.contains("Inbound webhook refused"), "the refusals are logged");
    assert!(!log.contains("falco-header-key-0123") && !log.contains("am-bearer-token-0123"));
}
