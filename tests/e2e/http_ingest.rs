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
