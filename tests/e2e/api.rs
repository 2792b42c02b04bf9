//! The API with authentication on: every route of the route table refuses missing (401)
//! and insufficient (403) credentials; approvals record the token's holder; per-token
//! rate limits; request ids; precise errors for malformed, unknown and oversize bodies;
//! inbound webhooks verified by HMAC; and no token ever in the log.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Server, blocking, metric, token, vigil_bin, wait_for};

const GITHUB_KEY: &str = "github-webhook-key-0451";

/// (status, body, headers) of a request with an optional bearer token.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    blocking(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = reqwest::Client::new().request(method, server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), headers)
    })
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "01a20000-0000-7000-8000-000000000000")
        .replace("{sink}", "archive")
        .replace("{seq}", "1")
        .replace("{step}", "approve")
        .replace("{decision}", "approve")
        .replace("{source}", "github")
}

fn failures(ip: &str, n: usize) -> String {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let time = (now - chrono::Duration::seconds((n - i) as i64)).to_rfc3339();
            format!(r#"{{"class":"authentication","action":"ssh_login","outcome":"failure","source":{{"ip":"{ip}"}},"time":"{time}"}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_route_refuses_missing_and_insufficient_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).expect("mkdir");
    std::fs::write(
        playbooks.join("gated.toml"),
        "id = \"gated\"\n[[steps]]\nid = \"approve\"\nkind = \"approval\"\nsensitive = true\n[[steps]]\nid = \"note\"\naction = \"enhance_logging\"\nparams = { entity = \"{{ incident.entities.source_ip }}\" }\n",
    )
    .expect("playbook");
    let extra = format!(
        "[api.auth]\nrequired = true\nrate_per_second = 1000\nburst = 1000\n[api.webhooks.github]\nkind = \"github_secret_scanning\"\nsecret = \"{GITHUB_KEY}\"\n[playbooks]\ndir = {playbooks:?}\n[ingest]\nmax_body_bytes = \"64KiB\"\nmax_event_bytes = \"16KiB\"\n"
    );
    let server = Server::start(dir.path(), &extra);
    let tokens: Vec<(&str, String)> = ["ingest", "viewer", "responder", "admin"]
        .into_iter()
        .map(|role| (role, token(dir.path(), role, &format!("{role}-bot"))))
        .collect();
    let token_of = |role: &str| tokens.iter().find(|(r, _)| *r == role).map(|(_, t)| t.as_str()).expect("token");
    let bob = token(dir.path(), "responder", "bob");
    let below = |role: &str| match role {
        "ingest" | "responder" => "viewer",
        "viewer" => "ingest",
        _ => "responder",
    };

    let table = vigil::api::route_table();
    assert!(table.len() >= 30, "the route table lists every route ({})", table.len());
    let mut checked = 0;
    for route in &table {
        let path = concrete(route.path);
        let body = (route.method == "POST").then(|| b"{}".to_vec());
        let (status, answer, _) = call(&server, route.method, &path, None, body.clone());
        let Some(role) = route.role else {
            assert_ne!(answer["error"]["code"], "missing_token", "{} {} is public", route.method, route.path);
            continue;
        };
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("missing_token")),
            "{} {}",
            route.method,
            route.path
        );
        let (status, answer, _) = call(&server, route.method, &path, Some("vgl_not-a-token"), body.clone());
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("invalid_token")),
            "{} {}",
            route.method,
            route.path
        );
        let role = role.as_str();
        let (status, answer, _) = call(&server, route.method, &path, Some(token_of(below(role))), body.clone());
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{} {} with {}",
            route.method,
            route.path,
            below(role)
        );
        let (status, _, _) = call(&server, route.method, &path, Some(token_of(role)), body);
        assert!(status != 401 && status != 403, "{} {} with {role}: {status}", route.method, route.path);
        checked += 1;
    }
    assert!(checked >= 28, "{checked} protected routes checked");

    // Approvals record the token's holder, and a sensitive approval needs a second person.
    let status = blocking(async {
        reqwest::Client::new()
            .post(server.url("/v1/events"))
            .bearer_auth(token_of("ingest"))
            .body(failures("198.51.100.61", 12))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    let incident = wait_for(Duration::from_secs(30), "the incident", || {
        let (_, list, _) = call(&server, "GET", "/v1/incidents", Some(token_of("viewer")), None);
        list["incidents"].as_array()?.first().cloned()
    });
    let id = incident["id"].as_str().expect("id");
    let start = serde_json::to_vec(&json!({ "playbook": "gated" })).expect("json");
    let (status, run, _) =
        call(&server, "POST", &format!("/v1/incidents/{id}/runs"), Some(token_of("responder")), Some(start));
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["requested_by"], "responder-bot", "the token's holder started it");
    let run_id = run["id"].as_str().expect("run id").to_owned();
    let approve = |token: &str| {
        wait_for(Duration::from_secs(10), "the approval step", || {
            let (status, body, _) = call(
                &server,
                "POST",
                &format!("/v1/runs/{run_id}/steps/approve/approve"),
                Some(token),
                Some(b"{}".to_vec()),
            );
            (!(status == 409 && body["error"]["message"].as_str().is_some_and(|m| m.contains("not waiting"))))
                .then_some((status, body))
        })
    };
    let (status, body) = approve(token_of("responder"));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "self-approval: {body}");
    let forged = serde_json::to_vec(&json!({ "approver": "mallory" })).expect("json");
    let (status, body, _) =
        call(&server, "POST", &format!("/v1/runs/{run_id}/steps/approve/approve"), Some(&bob), Some(forged));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("identity_mismatch")));
    let (status, body) = approve(&bob);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["steps"][0]["approval"]["by"], "bob");
    assert_eq!(body["steps"][0]["approval"]["role"], "responder");

    // Errors: malformed, unknown fields, oversize; each with a request id.
    let viewer = token_of("viewer");
    let responder = token_of("responder");
    let comment = format!("/v1/incidents/{id}/comment");
    let (status, body, headers) = call(&server, "POST", &comment, Some(responder), Some(b"{\"text\": ".to_vec()));
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_body")), "{body}");
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).expect("x-request-id").to_owned();
    assert_eq!(body["error"]["request_id"], request_id.as_str());
    let (status, body, _) =
        call(&server, "POST", &comment, Some(responder), Some(br#"{"text":"x","colour":"red"}"#.to_vec()));
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("unknown field `colour`")), "{body}");
    let (status, body, _) = call(&server, "POST", &comment, Some(responder), Some(vec![b' '; 100 * 1024]));
    assert_eq!(status, 413, "{body}");
    let echoed = blocking(async {
        let r = reqwest::Client::new()
            .get(server.url("/v1/incidents"))
            .bearer_auth(viewer)
            .header("x-request-id", "trace-abc-123")
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("request");
        (r.headers().get("x-request-id").cloned(), r.headers().get("access-control-allow-origin").cloned())
    });
    assert_eq!(echoed.0.as_ref().and_then(|v| v.to_str().ok()), Some("trace-abc-123"));
    assert!(echoed.1.is_none(), "CORS is off unless configured");
    let (status, body, _) = call(&server, "GET", "/v1/nowhere", Some(viewer), None);
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // Inbound webhook: GitHub's signature, the leaked secret never stored.
    let payload = serde_json::to_vec(
        &json!({ "action": "created", "alert": { "number": 3, "secret_type": "github_personal_access_token",
        "secret": "ghp_LEAKEDVALUE000000000000000000000000", "created_at": "2026-11-22T10:00:00Z" },
        "repository": { "full_name": "acme/app" }, "sender": { "login": "octocat" } }),
    )
    .expect("json");
    let signature = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GITHUB_KEY.as_bytes()).expect("key");
        mac.update(&payload);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let send = |sig: &str| {
        blocking(async {
            let r = reqwest::Client::new()
                .post(server.url("/v1/webhooks/github"))
                .header("x-hub-signature-256", sig)
                .header("x-github-event", "secret_scanning_alert")
                .body(payload.clone())
                .send()
                .await
                .expect("request");
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    let (status, body) = send("sha256=0000");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("bad_signature")));
    let (status, body) = send(&format!("sha256={signature}"));
    assert_eq!((status, body["accepted"].as_u64()), (202, Some(1)), "{body}");
    let metrics = wait_for(Duration::from_secs(10), "the webhook event counted", || {
        let (_, text, _) = call(&server, "GET", "/metrics", Some(viewer), None);
        let text = text.as_str().unwrap_or_default().to_owned();
        (metric(&text, &["events_ingested", "webhook/github"]) >= 1.0).then_some(text)
    });
    assert!(!metrics.contains("ghp_LEAKED"));

    let log = server.log();
    for (_, t) in &tokens {
        assert!(!log.contains(t.as_str()), "a token reached the log");
    }
    assert!(!log.contains(&bob) && !log.contains("vgl_not-a-token") && !log.contains("ghp_LEAKED"));
    assert!(!log.contains(GITHUB_KEY));
}

#[test]
fn tokens_are_rate_limited_and_revocation_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "[api.auth]\nrequired = true\nrate_per_second = 1\nburst = 3\n");
    let viewer = token(dir.path(), "viewer", "dashboard");
    // A logical check, whatever the machine's speed: over the time the calls took, no more
    // succeed than the burst plus what the rate refilled, and the calls past that are 429.
    let started = std::time::Instant::now();
    let answers: Vec<_> = (0..20).map(|_| call(&server, "GET", "/v1/incidents", Some(&viewer), None)).collect();
    let refilled = started.elapsed().as_secs() as usize; // rate_per_second = 1
    let statuses: Vec<u16> = answers.iter().map(|(status, ..)| *status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| [200, 429].contains(s)), "{statuses:?}");
    assert!((3..=3 + refilled + 1).contains(&ok), "{ok} of 20 allowed with a burst of 3 and {refilled} s of refill");
    assert_eq!(statuses[..3], [200, 200, 200], "the burst is allowed");
    let (_, body, headers) = answers.iter().find(|(status, ..)| *status == 429).expect("a call was limited");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(headers.get("retry-after").is_some());
    let other = token(dir.path(), "viewer", "other");
    assert_eq!(call(&server, "GET", "/v1/sinks", Some(&other), None).0, 200, "limits are per token");

    let out = Command::new(vigil_bin())
        .arg("--config")
        .arg(dir.path().join("vigil.toml"))
        .args(["token", "revoke", "other"])
        .output()
        .expect("revoke");
    assert!(out.status.success());
    wait_for(Duration::from_secs(10), "the revocation to take effect", || {
        (call(&server, "GET", "/v1/sinks", Some(&other), None).0 == 401).then_some(())
    });
    let out = Command::new(vigil_bin())
        .arg("--config")
        .arg(dir.path().join("vigil.toml"))
        .args(["token", "list"])
        .output()
        .expect("list");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("dashboard") && listed.contains("revoked"), "{listed}");
    assert!(!listed.contains(&viewer) && !listed.contains(&other), "tokens are never shown again");
}

fn venv() -> std::path::PathBuf {
    std::env::var_os("VIGIL_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/vigil-venv"))
}

#[test]
fn the_openapi_document_validates_and_a_fuzz_run_finds_no_error() {
    let venv = venv();
    assert!(
        venv.join("bin/schemathesis").exists(),
        "schemathesis is missing from {}; scripts/setup.sh installs it",
        venv.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "[api.auth]\nrequired = true\nrate_per_second = 10000\nburst = 10000\n");
    let admin = token(dir.path(), "admin", "fuzzer");
    // Some data, so list and get answers carry real incidents, runs and blocks.
    let status = blocking(async {
        reqwest::Client::new()
            .post(server.url("/v1/events"))
            .bearer_auth(&admin)
            .body(failures("198.51.100.44", 12))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    wait_for(Duration::from_secs(30), "a playbook run", || {
        let (_, runs, _) = call(&server, "GET", "/v1/runs", Some(&admin), None);
        runs["runs"].as_array().is_some_and(|r| !r.is_empty()).then_some(())
    });

    let (status, document, _) = call(&server, "GET", "/v1/openapi.json", None, None);
    assert_eq!(status, 200, "the document is public");
    assert_eq!(document["openapi"], "3.1.0");
    for route in vigil::api::route_table() {
        let operation = &document["paths"][route.path][route.method.to_lowercase()];
        assert!(operation.is_object(), "{} {} is not in the document", route.method, route.path);
        assert_eq!(
            operation["x-vigil-role"].as_str(),
            route.role.map(|r| r.as_str()),
            "{} {} documents its role",
            route.method,
            route.path
        );
    }
    let spec = dir.path().join("openapi.json");
    std::fs::write(&spec, document.to_string()).expect("write");
    let out = Command::new(venv.join("bin/openapi-spec-validator")).arg(&spec).output().expect("validator runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let out = Command::new(venv.join("bin/schemathesis"))
        .args(["run", &server.url("/v1/openapi.json"), "--experimental=openapi-3.1", "--checks", "all"])
        .args(["--hypothesis-max-examples", "12", "--hypothesis-seed", "7", "--hypothesis-deadline", "None"])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Hypothesis keeps an example database in the working directory: not the repository's.
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("not_a_server_error") && report.contains("response_schema_conformance"), "{report}");
    assert!(!server.log().contains(&admin), "the token never reaches the log");
}

#[test]
fn the_api_serves_tls_and_requires_client_certificates_with_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = crate::helpers::TlsFiles::generate(dir.path());
    let (ca_file, cert_file, key_file) = (&tls.ca, &tls.server_cert, &tls.server_key);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("pem");
    let identity = format!("{}{}", read(&tls.client_cert), read(&tls.client_key));

    let port = crate::helpers::free_port();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n[api.tls]\ncert_file = {cert_file:?}\nkey_file = {key_file:?}\nclient_ca_file = {ca_file:?}\n[store]\npath = {:?}\n[rules]\ndir = {:?}\n",
            dir.path().join("data"),
            crate::helpers::rules_dir()
        ),
    )
    .expect("config");
    let admin = token(dir.path(), "admin", "console");
    let mut child = Command::new(vigil_bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let client = |with_identity: bool| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(read(ca_file).as_bytes()).expect("ca"))
            .timeout(Duration::from_secs(5));
        if with_identity {
            builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("identity"));
        }
        builder.build().expect("client")
    };
    let url = format!("https://localhost:{port}");
    let ready = wait_for(Duration::from_secs(60), "the TLS API", || {
        blocking(async { client(true).get(format!("{url}/readyz")).send().await.ok().map(|r| r.status().as_u16()) })
            .filter(|s| *s == 200)
    });
    assert_eq!(ready, 200);
    let (with_cert, without_cert, plain) = blocking(async {
        let with_cert = client(true)
            .get(format!("{url}/v1/incidents"))
            .bearer_auth(&admin)
            .send()
            .await
            .map(|r| r.status().as_u16());
        let without_cert = client(false)
            .get(format!("{url}/v1/incidents"))
            .bearer_auth(&admin)
            .send()
            .await
            .map(|r| r.status().as_u16());
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        (with_cert, without_cert, plain)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(with_cert.ok(), Some(200), "a client certificate from the CA and a token: in");
    assert!(without_cert.is_err(), "no client certificate: the handshake fails ({without_cert:?})");
    assert!(plain.is_err() || plain.as_ref().is_ok_and(|s| *s != 200), "plain HTTP is not served ({plain:?})");
}

#[test]
fn rules_can_be_read_checked_and_tested_through_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "");
    let (status, rule, _) = call(&server, "GET", "/v1/rules/ssh_brute_force", None, None);
    assert_eq!(status, 200);
    assert_eq!((rule["playbook"].as_str(), rule["auto_remediate"].as_bool()), (Some("block_source_ip"), Some(true)));
    assert_eq!(call(&server, "GET", "/v1/rules/nope", None, None).0, 404);
    let (status, tested, _) = call(&server, "POST", "/v1/rules/test", None, None);
    assert_eq!(status, 200);
    assert!(tested["examples"].as_u64().is_some_and(|n| n > 20), "{tested}");
    assert_eq!(tested["failed"], json!([]), "the shipped examples pass");
    let (status, checked, _) = call(&server, "POST", "/v1/rules/check", None, None);
    assert_eq!((status, checked["ok"].as_bool()), (200, Some(true)), "{checked}");
    assert!(checked["rules"].as_u64().is_some_and(|n| n >= 24));
}

#[test]
fn a_backtest_job_replays_stored_events_through_the_running_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), "[playbooks]\ndry_run = true\n");
    let status = blocking(async {
        reqwest::Client::new()
            .post(server.url("/v1/events"))
            .body(failures("198.51.100.71", 12))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
    let (status, body, _) = call(
        &server,
        "POST",
        "/v1/rules/backtest",
        None,
        Some(br#"{"to":"2001-01-01T00:00:00Z","from":"2002-01-01T00:00:00Z"}"#.to_vec()),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_body")));
    let (status, job, _) = call(&server, "POST", "/v1/rules/backtest", None, Some(b"{}".to_vec()));
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();
    let done = wait_for(Duration::from_secs(30), "the backtest", || {
        let (_, job, _) = call(&server, "GET", &format!("/v1/rules/backtest/{id}"), None, None);
        (job["status"] == "done").then_some(job)
    });
    assert_eq!(done["events"], 12);
    assert_eq!(done["by_rule"]["ssh_brute_force"]["incidents"], 1, "{done}");
    assert_eq!(call(&server, "GET", "/v1/rules/backtest/nope", None, None).0, 404);
}
