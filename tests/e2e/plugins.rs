//! WebAssembly plugins in a running Vigil: a function plugin turns on a shipped rule and
//! changes its verdict, the plugins directory is watched (add, replace, remove), a broken
//! version leaves the old one serving, and the CLI inspects and tests with plugins.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Server, blocking, rules_dir, vigil_bin, wait_for};

/// Installs an example plugin into `plugins/<name>/` with `manifest` lines.
fn install(plugins: &Path, name: &str, component: &str, kind: &str, manifest: &str) -> PathBuf {
    let dir = plugins.join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(component, dir.join(format!("{name}.wasm"))).expect("component");
    let text =
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nkind = \"{kind}\"\napi_version = \"0.1.0\"\n{manifest}\n");
    std::fs::write(dir.join("plugin.toml"), text).expect("manifest");
    dir
}

const REPUTATION: &str = "description = \"IP reputation\"\n[capabilities]\nmetrics = true\nkv = { quota = \"1MiB\" }";
const HOSTILE: &str = "[capabilities]\nclock = true\nemit = true\nsecrets = [\"ALLOWED\"]\n[capabilities.http]\nallow = [\"tickets.example.com\"]";

fn get(server: &Server, path: &str) -> (u16, Value) {
    blocking(async {
        let response = reqwest::get(server.url(path)).await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    })
}

fn send(server: &Server, method: reqwest::Method, path: &str, body: Option<String>) -> (u16, Value) {
    blocking(async {
        let mut request = reqwest::Client::new().request(method, server.url(path));
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    })
}

fn names(server: &Server) -> Vec<String> {
    get(server, "/v1/plugins").1["plugins"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[test]
fn a_plugin_function_drives_a_shipped_rule_and_the_directory_is_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    install(&plugins, "reputation", vigil_guest_artifacts::REPUTATION, "function", REPUTATION);
    install(&plugins, "cim", vigil_guest_artifacts::CIM, "transform", "[limits]\npooled = true");
    let cim = dir.path().join("cim.log");
    let sink = format!(
        "[sinks.splunk_cim]\ntype = \"file\"\npath = {cim:?}\nroute = {{ records = [\"event\"] }}\ntransform = \"cim\"\n"
    );
    let server = Server::start(dir.path(), &format!("[plugins]\ndir = {plugins:?}\n{sink}"));
    assert_eq!(names(&server), vec!["cim".to_owned(), "reputation".to_owned()]);

    // A login from a listed network opens the shipped rule's incident; one from elsewhere
    // does not.
    let events = [
        json!({ "class": "authentication", "outcome": "success", "user": { "name": "alice" }, "source": { "ip": "203.0.113.9" } }),
        json!({ "class": "authentication", "outcome": "success", "user": { "name": "bob" }, "source": { "ip": "192.0.2.44" } }),
    ];
    let body = events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert_eq!(send(&server, reqwest::Method::POST, "/v1/events", Some(body)).0, 202);
    let incidents = wait_for(Duration::from_secs(30), "the reputation rule's incident", || {
        let list = get(&server, "/v1/incidents?limit=100").1["incidents"].as_array().cloned().unwrap_or_default();
        let mine: Vec<Value> = list.into_iter().filter(|i| i["rule_id"] == "login_from_listed_address").collect();
        (!mine.is_empty()).then_some(mine)
    });
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["dedup_key"], "login_from_listed_address:203.0.113.9|alice");
    // The sink writes the events through the transform plugin.
    let lines = wait_for(Duration::from_secs(30), "the CIM sink's lines", || {
        let text = std::fs::read_to_string(&cim).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    });
    assert!(
        lines.lines().any(|l| l.contains("tag=\"Authentication\" action=\"success\"")
            && l.contains("src=\"203.0.113.9\" user=\"alice\"")),
        "{lines}"
    );

    // Dropping a plugin into the directory loads it; a broken version leaves it serving;
    // removing its directory unloads it.
    install(&plugins, "hostile", vigil_guest_artifacts::HOSTILE, "function", HOSTILE);
    wait_for(Duration::from_secs(30), "the watcher to load the new plugin", || {
        names(&server).contains(&"hostile".to_owned()).then_some(())
    });
    let (status, info) = get(&server, "/v1/plugins/hostile");
    assert_eq!(status, 200);
    assert_eq!(
        info["imports"],
        json!([
            "vigil:plugin/clock@0.1.0",
            "vigil:plugin/emit@0.1.0",
            "vigil:plugin/http@0.1.0",
            "vigil:plugin/secrets@0.1.0",
            "vigil:plugin/types@0.1.0"
        ])
    );
    std::fs::write(plugins.join("hostile/hostile.wasm"), b"\0asm broken").expect("break");
    let (status, error) = send(&server, reqwest::Method::POST, "/v1/plugins/hostile/reload", None);
    assert_eq!(status, 422, "{error}");
    assert!(error["error"]["message"].as_str().unwrap_or("").contains("not a valid component"), "{error}");
    assert_eq!(get(&server, "/v1/plugins/hostile").1["digest"], info["digest"], "the old version keeps serving");
    let (status, _) = send(&server, reqwest::Method::DELETE, "/v1/plugins/hostile", None);
    assert_eq!(status, 200);
    assert_eq!(get(&server, "/v1/plugins/hostile").0, 404);
    std::fs::remove_dir_all(plugins.join("reputation")).expect("remove");
    wait_for(Duration::from_secs(30), "the watcher to unload the removed plugin", || {
        (names(&server) == ["cim"]).then_some(())
    });
    let metrics = server.metrics();
    assert!(metrics.contains("vigil_plugin_calls_total{plugin=\"reputation\",result=\"ok\"}"), "{metrics}");
}

#[test]
fn the_cli_inspects_plugins_and_tests_rules_with_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    let reputation = install(&plugins, "reputation", vigil_guest_artifacts::REPUTATION, "function", REPUTATION);
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, format!("[plugins]\ndir = {plugins:?}\n[store]\npath = {:?}\n", dir.path().join("data")))
        .expect("config");

    let out = Command::new(vigil_bin()).args(["plugin", "inspect"]).arg(&reputation).output().expect("inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["kind"], "function");
    assert_eq!(info["signature"]["status"], "unsigned");
    assert_eq!(info["digest"].as_str().map(str::len), Some(64));

    // With the plugin, the shipped rule that needs it runs its examples; without, they are
    // skipped (and nothing fails).
    let with = Command::new(vigil_bin())
        .arg("--config")
        .arg(&config)
        .args(["rules", "test"])
        .arg(rules_dir())
        .output()
        .expect("rules test");
    let text = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success(), "{text}");
    assert!(text.contains("ok    login_from_listed_address — login from a scanner network"), "{text}");
    assert!(text.contains(", 0 failed, 0 skipped"), "{text}");
    // (From a directory without `plugins/`, the default plugins dir.)
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let without = Command::new(vigil_bin())
        .args(["rules", "test"])
        .arg(rules_dir())
        .current_dir(elsewhere.path())
        .output()
        .expect("rules test");
    let text = String::from_utf8_lossy(&without.stdout);
    assert!(without.status.success(), "{text}");
    assert!(text.contains("skip  login_from_listed_address"), "{text}");

    // Cost of a call on an input.
    let input = dir.path().join("ip.json");
    std::fs::write(&input, "\"203.0.113.9\"").expect("input");
    let out = Command::new(vigil_bin())
        .args(["plugin", "cost"])
        .arg(&reputation)
        .arg("--input")
        .arg(&input)
        .args(["--runs", "20"])
        .output()
        .expect("cost");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("reputation (function): 20 call(s), fuel "), "{text}");

    // A key, a signature, and the signed manifest verifies.
    let out = Command::new(vigil_bin()).args(["plugin", "keygen"]).output().expect("keygen");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .expect("printed")
            .to_owned()
    };
    let (seed, public) = (field("seed"), field("public key"));
    std::fs::write(dir.path().join("key"), &seed).expect("key");
    let out = Command::new(vigil_bin())
        .args(["plugin", "sign"])
        .arg(&reputation)
        .arg("--key")
        .arg(dir.path().join("key"))
        .args(["--key-id", "ops"])
        .output()
        .expect("sign");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        &config,
        format!("[plugins]\ndir = {plugins:?}\nrequire_signatures = true\ntrusted_keys = {{ ops = {public:?} }}\n"),
    )
    .expect("config");
    let out = Command::new(vigil_bin())
        .arg("--config")
        .arg(&config)
        .args(["plugin", "inspect"])
        .arg(&reputation)
        .output()
        .expect("inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["signature"], json!({ "status": "verified", "key": "ops" }));

    // Scaffolding writes a crate and a manifest.
    let out = Command::new(vigil_bin())
        .args(["plugin", "new", "my-action", "--kind", "action", "--dir"])
        .arg(dir.path())
        .output()
        .expect("new");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lib = std::fs::read_to_string(dir.path().join("my-action/src/lib.rs")).expect("lib.rs");
    assert!(lib.contains("vigil_sdk::register_plugin!(action: Plugin);"), "{lib}");
    let manifest = std::fs::read_to_string(dir.path().join("my-action/plugin.toml")).expect("manifest");
    assert!(manifest.contains("kind = \"action\""), "{manifest}");
}

/// FortiGate logs, a format Vigil does not read natively, through the `fortigate` decode
/// plugin: over HTTP (`?format=plugin:fortigate`) and with `vigil ingest`.
#[test]
fn a_decode_plugin_is_an_input_format_everywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    install(&plugins, "fortigate", vigil_guest_artifacts::FORTIGATE, "decode", "description = \"FortiGate logs\"");
    let logs = concat!(
        "date=2026-03-02 time=11:58:01 devname=\"FGT60F\" type=\"traffic\" subtype=\"forward\" srcip=10.0.0.5 srcport=51234 dstip=203.0.113.10 dstport=443 proto=6 action=\"deny\"\n",
        "date=2026-03-02 time=11:58:02 devname=\"FGT60F\" type=\"event\" subtype=\"system\" logdesc=\"Admin login failed\" user=\"admin\" srcip=198.51.100.7 status=\"failed\"\n",
        "garbage\n",
    );
    let server = Server::start(dir.path(), &format!("[plugins]\ndir = {plugins:?}\n"));
    let (status, report) = blocking(async {
        let response = reqwest::Client::new()
            .post(server.url("/v1/events?format=plugin:fortigate"))
            .body(logs)
            .send()
            .await
            .expect("request");
        (response.status().as_u16(), response.json::<Value>().await.expect("json"))
    });
    assert_eq!((status, report["accepted"].as_u64()), (207, Some(2)), "{report}");
    assert_eq!(report["rejected"][0]["line"], 3);
    assert!(report["rejected"][0]["message"].as_str().expect("message").contains("no `date=`"), "{report}");
    let (status, report) = blocking(async {
        let response = reqwest::Client::new()
            .post(server.url("/v1/events?format=plugin:nosuch"))
            .body(logs)
            .send()
            .await
            .expect("request");
        (response.status().as_u16(), response.json::<Value>().await.expect("json"))
    });
    assert_eq!((status, report["error"]["code"].as_str()), (400, Some("unknown_format")), "{report}");
    drop(server);

    // The CLI loads the configured plugins the same way.
    let input = dir.path().join("fortigate.log");
    std::fs::write(&input, logs).expect("log");
    let config = dir.path().join("cli.toml");
    std::fs::write(
        &config,
        format!("[plugins]\ndir = {plugins:?}\n[store]\npath = {:?}\n", dir.path().join("cli-data")),
    )
    .expect("config");
    let out = Command::new(vigil_bin())
        .arg("--config")
        .arg(&config)
        .args(["ingest", "--format", "plugin:fortigate"])
        .arg(&input)
        .output()
        .expect("ingest");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("accepted 2 event(s), rejected 1 record(s)"), "{text}");
    assert!(
        text.contains("line 3: not readable as plugin: plugin `fortigate`: invalid input: no `date=` in the record"),
        "{text}"
    );
}

#[test]
fn a_webassembly_action_is_a_playbook_step_end_to_end() {
    use crate::mock::{Answer, MockServer};
    let tickets = MockServer::start(|_| Answer::json(201, json!({ "id": "TICKET-42" })));
    let port = tickets.addr.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    install(
        &plugins,
        "ticket",
        vigil_guest_artifacts::TICKET,
        "action",
        &format!(
            "description = \"Opens a ticket\"\n[capabilities]\nlog = true\nsecrets = [\"TICKET_TOKEN\"]\n\
             [capabilities.http]\nallow = [\"127.0.0.1:{port}\"]\nallow_private = true\n[config.url]\nkind = \"string\"\nrequired = true"
        ),
    );
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir_all(&playbooks).expect("mkdir");
    std::fs::write(
        playbooks.join("ticketing.toml"),
        "id = \"ticketing\"\n[[steps]]\nid = \"open_ticket\"\naction = \"ticket\"\n",
    )
    .expect("playbook");
    let server = Server::start(
        dir.path(),
        &format!(
            "[plugins]\ndir = {plugins:?}\nsecrets = {{ TICKET_TOKEN = \"tk-7f7f-secret\" }}\n\
             config = {{ ticket = {{ url = \"{}/tickets\" }} }}\n[playbooks]\ndir = {playbooks:?}\n",
            tickets.url()
        ),
    );
    crate::helpers::post_events(&server, crate::helpers::ssh_failures("198.51.100.90", 12));
    let incident = crate::helpers::wait_for_incident(&server, "ssh_brute_force");
    let id = incident["id"].as_str().expect("id").to_owned();
    let (status, run) = crate::helpers::post(
        &server,
        &format!("/v1/incidents/{id}/runs"),
        json!({ "playbook": "ticketing", "requested_by": "alice" }),
    );
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().expect("run id").to_owned();
    let done = wait_for(Duration::from_secs(30), "the run to finish", || {
        let (_, r) = get(&server, &format!("/v1/runs/{run_id}"));
        (r["status"] != "running" && r["status"] != "pending").then_some(r)
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    let step = &done["steps"][0];
    assert_eq!(
        (step["status"].as_str(), step["outcome"]["target"].as_str()),
        (Some("succeeded"), Some("TICKET-42")),
        "{done}"
    );
    let requests = tickets.requests_to("/tickets");
    assert_eq!(requests.len(), 1, "one ticket for one step");
    assert_eq!(requests[0].header("authorization"), Some("Bearer tk-7f7f-secret"));
    let body: Value = serde_json::from_slice(&requests[0].body).expect("JSON");
    assert_eq!(body["incident"], id.as_str());
    assert!(body["summary"].as_str().is_some_and(|s| s.contains("198.51.100.90")), "{body}");
    let (_, runs) = get(&server, "/v1/runs");
    assert!(!runs.to_string().contains("tk-7f7f-secret"), "the granted secret stays out of the API");
}
