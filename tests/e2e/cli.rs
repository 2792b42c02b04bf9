//! The command line: `schema`, `config check` and `show`, `ingest`, `incidents` and `demo`.

use std::path::Path;
use std::process::{Command, Output};

use crate::helpers::{rules_dir, vigil_bin};

fn vigil(dir: &Path, args: &[&str]) -> Output {
    Command::new(vigil_bin()).args(args).current_dir(dir).env_remove("VIGIL_CONFIG").output().expect("run vigil")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn schema_prints_the_event_json_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = vigil(dir.path(), &["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(schema["title"], "SecurityEvent");
    assert!(schema["properties"]["source"].is_object());
    assert!(schema["properties"]["schema_version"].is_object());
}

#[test]
fn config_check_reports_every_error_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.toml"),
        "[store]\nsync = \"sometimes\"\n[api]\nlisten = \"nowhere\"\n[sinks.x]\ntype = \"file\"\npath = \"\"\n[mystery]\n",
    )
    .expect("write");
    let out = vigil(dir.path(), &["--config", "bad.toml", "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for path in ["store.sync", "api.listen", "sinks.x.path", "mystery"] {
        assert!(err.contains(&format!("  {path}: ")), "`{path}` missing from:\n{err}");
    }

    let rules = rules_dir();
    std::fs::write(dir.path().join("good.toml"), format!("[rules]\ndir = {rules:?}\n")).expect("write");
    let out = vigil(dir.path(), &["--config", "good.toml", "config", "check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"));

    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("rules/broken.rhai"),
        "const RULE = #{ id: \"b\", title: \"t\", severity: \"low\" };\nfn condition(e) { e.class == }\n",
    )
    .expect("write");
    let out = vigil(dir.path(), &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("broken.rhai:2:"), "{}", text(&out.stderr));
}

#[test]
fn config_takes_the_environment_everywhere_and_show_redacts_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("vigil.toml"),
        "[store]\npath = \"${VIGIL_TEST_DATA:-state}\"\n[api]\nlisten = \"${VIGIL_TEST_LISTEN}\"\n\
         [sinks.siem]\ntype = \"splunk_hec\"\nendpoint = \"https://${VIGIL_TEST_HOST}:8088\"\n\
         token = \"${VIGIL_TEST_TOKEN}\"\nsource = \"$${literal}\"\n",
    )
    .expect("write");
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(vigil_bin());
        cmd.args(["--config", "vigil.toml"]).args(args).current_dir(dir.path()).env_remove("VIGIL_CONFIG");
        cmd.envs(envs.iter().copied()).output().expect("run vigil")
    };
    let env = [
        ("VIGIL_TEST_LISTEN", "127.0.0.1:18470"),
        ("VIGIL_TEST_HOST", "splunk.example"),
        ("VIGIL_TEST_TOKEN", "hec-token-never-shown"),
        ("VIGIL_INGEST__MAX_DEPTH", "12"),
        ("VIGIL_SINKS__SIEM__INDEX", "security"),
    ];
    let out = run(&env, &["config", "show"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let config: toml::Table = shown.parse().expect("`config show` prints TOML");
    assert_eq!(config["store"]["path"].as_str(), Some("state"), "the default of an unset variable");
    assert_eq!(config["api"]["listen"].as_str(), Some("127.0.0.1:18470"));
    assert_eq!(config["ingest"]["max_depth"].as_integer(), Some(12), "an override, typed as the setting");
    let siem = &config["sinks"]["siem"];
    assert_eq!(siem["endpoint"].as_str(), Some("https://splunk.example:8088"));
    assert_eq!(siem["index"].as_str(), Some("security"));
    assert_eq!(siem["source"].as_str(), Some("${literal}"), "`$${{` is a literal `${{`");
    assert_eq!(siem["token"].as_str(), Some("<redacted>"));
    assert!(!shown.contains("hec-token-never-shown"), "{shown}");

    let out = run(&env[1..], &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("api.listen: environment variable `VIGIL_TEST_LISTEN` is not set"), "{err}");
    let out = run(&[&env[..3], &[("VIGIL_INGEST__MAX_DEPTH", "deep")]].concat(), &["config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("ingest.max_depth: invalid type: string \"deep\""), "{err}");
    assert!(!err.contains("hec-token-never-shown"), "{err}");
}

/// `vigil config schema` read by the reference JSON Schema validator (`jsonschema`, Draft
/// 2020-12): every shipped example config conforms, and the mistakes `config check`
/// refuses are refused by the schema too, at the same setting.
#[test]
fn config_schema_accepts_the_examples_and_refuses_what_config_check_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = vigil(dir.path(), &["config", "schema"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, &out.stdout).expect("write the schema");
    let validate = |files: &[std::path::PathBuf]| {
        Command::new(crate::helpers::python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/validate_config.py"))
            .arg(&schema)
            .args(files)
            .output()
            .expect("run the validator")
    };
    let examples: Vec<_> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(examples.len() >= 5, "{examples:?}");
    let out = validate(&examples);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().filter(|l| l.starts_with("ok ")).count(), examples.len());

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[store]\npath = \"data\"\nsyncc = \"always\"\n[api]\nlisten = 8080\n\
         [sinks.siem]\ntype = \"splunk_hec\"\nendpoint = \"https://splunk.example:8088\"\ntoken = \"t\"\nbatch_size = 5\n\
         [sinks.other]\ntype = \"carrier_pigeon\"\n[telemetry]\nhealth_interval = 30\n",
    )
    .expect("write");
    let out = validate(std::slice::from_ref(&bad));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for (setting, why) in [
        ("store", "'syncc' was unexpected"),
        ("api.listen", "8080 is not of type 'string'"),
        ("sinks.siem", ""),
        ("sinks.other", ""),
        ("telemetry.health_interval", "30 is not of type 'string'"),
    ] {
        assert!(
            report.lines().any(|l| l.contains(&format!(": {setting}: ")) && l.contains(why)),
            "no error at {setting} ({why}):\n{report}"
        );
    }
    let out = vigil(dir.path(), &["--config", "bad.toml", "config", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for setting in ["store", "api.listen", "sinks.siem", "sinks.other", "telemetry.health_interval"] {
        assert!(err.contains(&format!("  {setting}")), "`config check` has no error at {setting}:\n{err}");
    }
}

#[test]
fn ingest_reports_bad_lines_and_incidents_lists_what_detection_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut input = String::new();
    for i in 0..12 {
        input.push_str(&format!(
            "{{\"class\":\"authentication\",\"action\":\"ssh_login\",\"outcome\":\"failure\",\"source\":{{\"ip\":\"203.0.113.50\"}},\"message\":\"try {i}\"}}\n"
        ));
        if i == 4 {
            input.push_str("{\"class\":\"authentication\",\"outcome\":\"maybe\"}\n");
        }
    }
    std::fs::write(dir.path().join("events.ndjson"), input).expect("write");
    let out = vigil(dir.path(), &["--data-dir", "data", "ingest", "events.ndjson"]);
    assert_eq!(out.status.code(), Some(2), "partial success: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("accepted 12 event(s), rejected 1"), "{stdout}");
    assert!(stdout.contains("line 6: outcome:"), "{stdout}");

    // Syslog lines from stdin.
    let mut child = Command::new(vigil_bin())
        .args(["--data-dir", "data", "ingest", "-", "--format", "syslog"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"<38>Mar  2 11:58:01 bastion01 sshd[1]: Failed password for root from 203.0.113.50 port 2 ssh2\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("accepted 1 event(s), rejected 0"), "{}", text(&out.stdout));
    // …and the stdin event is in the store, typed by the syslog recogniser.
    let out = vigil(
        dir.path(),
        &[
            "--data-dir",
            "data",
            "hunt",
            "--from",
            "2000-01-01T00:00:00Z",
            "--filter",
            "event.host.name == \"bastion01\"",
            "--select",
            "class,outcome,user.name,source.ip",
            "--format",
            "csv",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "class,outcome,user.name,source.ip\nauthentication,failure,root,203.0.113.50\n",
        "the stdin event is stored"
    );

    // Detection runs when the server does; a short demo run over the same data picks the
    // stored events up, then `incidents list` reads the store.
    let rules = rules_dir();
    let rules_arg = rules.to_str().expect("utf8");
    std::fs::write(
        dir.path().join("vigil.toml"),
        format!("[rules]\ndir = {rules_arg:?}\n[api]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .expect("config");
    let out =
        vigil(dir.path(), &["--config", "vigil.toml", "--data-dir", "data", "demo", "--events", "200", "--seed", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = vigil(dir.path(), &["--data-dir", "data", "incidents", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let incidents: Vec<serde_json::Value> =
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let brute = incidents
        .iter()
        .find(|i| i["rule_id"] == "ssh_brute_force" && i["entities"]["ips"][0] == "203.0.113.50")
        .unwrap_or_else(|| panic!("no brute-force incident for the ingested events in {incidents:#?}"));
    let id = brute["id"].as_str().expect("id");
    let out = vigil(dir.path(), &["--data-dir", "data", "incidents", "show", id]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("SSH brute force"));
}

#[test]
fn demo_prints_each_hidden_attack_as_an_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = dir.path().join("data");
    let out = Command::new(vigil_bin())
        .args(["--data-dir", data.to_str().expect("utf8"), "demo", "--events", "3000", "--seed", "11"])
        .current_dir(&repo)
        .env_remove("VIGIL_CONFIG")
        .output()
        .expect("run demo");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let incidents: Vec<&str> = stdout.lines().filter(|l| l.starts_with("INCIDENT")).collect();
    let joined: Vec<&str> = stdout.lines().filter(|l| l.starts_with("JOINED")).collect();
    let header = stdout.lines().next().unwrap_or_default();
    let attackers: Vec<&str> =
        header.split(' ').map(|w| w.trim_end_matches(',')).filter(|w| w.parse::<std::net::IpAddr>().is_ok()).collect();
    assert_eq!(attackers.len(), 3, "{header}");
    let (brute_forcer, sprayer, scanner) = (attackers[0], attackers[1], attackers[2]);
    // Each line names its incident's rules; the last line of an incident has them all.
    let about = |ip: &str| -> Vec<&str> {
        incidents
            .iter()
            .chain(&joined)
            .filter(|l| l.split("entities=").nth(1).is_some_and(|e| e.starts_with(ip)))
            .copied()
            .collect()
    };
    let rules_of = |ip: &str| -> std::collections::BTreeSet<String> {
        about(ip)
            .iter()
            .flat_map(|l| l.split('[').nth(1).and_then(|r| r.split(']').next()).unwrap_or("").split(','))
            .map(str::to_owned)
            .collect()
    };
    let opened_for =
        |ip: &str| incidents.iter().filter(|l| l.split("entities=").nth(1).is_some_and(|e| e.starts_with(ip))).count();
    // The brute forcer: one incident for the guessing (its success joins and raises it to
    // P0: root was compromised), one for root logging in from the internet.
    for rule in ["ssh_brute_force", "brute_force_then_success", "root_login_from_public_address"] {
        assert!(rules_of(brute_forcer).contains(rule), "{rule} for {brute_forcer}:\n{stdout}");
    }
    assert_eq!(opened_for(brute_forcer), 2, "{stdout}");
    let success = joined.iter().find(|l| l.contains("rule=brute_force_then_success ")).expect("the success joined");
    assert!(success.starts_with("JOINED   P0"), "root's compromise raised the brute force: {success}");
    // The sprayer: one incident, listing every account tried.
    assert!(rules_of(sprayer).contains("password_spraying"), "{stdout}");
    assert_eq!(opened_for(sprayer), 1, "{stdout}");
    let spray = about(sprayer).last().copied().expect("sprayer");
    assert!(spray.contains("more)") || spray.matches(',').count() >= 7, "{spray}");
    // The scanner, and the planted account.
    assert!(rules_of(scanner).contains("web_path_scan"), "{stdout}");
    assert_eq!(
        incidents.iter().filter(|l| l.contains("[new_privileged_account]") && l.contains("sysupdate")).count(),
        1
    );
    // No false positives: every incident is about an attacker's address or the planted account.
    for line in &incidents {
        assert!(
            attackers.iter().any(|ip| line.contains(ip)) || line.contains("sysupdate"),
            "an incident about normal traffic: {line}"
        );
    }
    assert!(stdout.contains(&format!("{} incident(s) opened", incidents.len())), "{stdout}");
}
