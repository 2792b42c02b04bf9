use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::event::{Endpoint, EventClass, Outcome, Priority, Process, User};

const GOOD: &str = r#"
    const RULE = #{
        id: "ssh_brute_force",
        title: "SSH brute force",
        severity: "high",
        group_by: ["source.ip"],
        window: #{ type: "threshold", count: 3, within: "5m" },
    };
    fn condition(event) { event.class == "authentication" && event.outcome == "failure" }
"#;

fn compile(sources: &[(&str, &str)]) -> Result<RuleSet, Vec<RuleError>> {
    compile_with(sources, &[], &CompileOptions::default())
}

fn compile_with(
    sources: &[(&str, &str)],
    lib: &[(&str, &str)],
    options: &CompileOptions,
) -> Result<RuleSet, Vec<RuleError>> {
    let owned = |s: &[(&str, &str)]| s.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect();
    RuleSet::compile(owned(sources), owned(lib), options)
}

#[test]
fn a_statistic_window_is_written_in_rule_metadata() {
    let rule = GOOD.replace(
        r#"#{ type: "threshold", count: 3, within: "5m" }"#,
        r#"#{ type: "statistic", field: "source.bytes", statistic: #{ percentile: 95 }, at_least: 1e6, within: "10m" }"#,
    );
    let set = compile(&[("a.rhai", &rule)]).expect("compiles");
    assert_eq!(
        set.rules()[0].meta.window,
        Some(WindowSpec::Statistic {
            field: crate::event::FieldPath::parse("source.bytes").expect("path"),
            statistic: crate::rules::Statistic::Percentile(95),
            at_least: 1e6,
            strictly: false,
            within: Duration::from_secs(600),
        })
    );
    let errors = compile(&[("a.rhai", &rule.replace("percentile: 95", "percentile: 0"))]).expect_err("refused");
    assert!(errors[0].to_string().contains("between 1 and 100"), "{errors:?}");
}

#[test]
fn compiles_metadata_and_condition() {
    let set = compile(&[("a.rhai", GOOD)]).expect("compiles");
    let rule = &set.rules()[0];
    assert_eq!(rule.meta.id.as_str(), "ssh_brute_force");
    assert_eq!(rule.meta.severity, Priority::P2);
    assert_eq!(rule.meta.window, Some(WindowSpec::Threshold { count: 3, within: Duration::from_secs(300) }));
    assert!(rule.is_native(), "a conjunction of comparisons compiles natively");
    assert_eq!(rule.classes, vec![EventClass::Authentication]);
    let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
    assert_eq!(set.evaluate_id("ssh_brute_force", &e), Some(Ok(false)));
    e.outcome = Outcome::Failure;
    assert_eq!(set.evaluate_id("ssh_brute_force", &e), Some(Ok(true)));
}

#[test]
fn reports_every_error_with_location() {
    let errors = compile(&[
        ("syntax.rhai", "const RULE = #{ id: \"x\" ;\nfn condition(e) { true }"),
        ("nometa.rhai", "fn condition(e) { true }"),
        ("nocond.rhai", "const RULE = #{ id: \"y\", title: \"t\", severity: \"low\" };"),
        ("badfield.rhai", "const RULE = #{ id: \"z\", title: \"t\", severity: \"low\", group_by: [\"source.ipp\"] };\nfn condition(e) { true }"),
        ("badsev.rhai", "const RULE = #{ id: \"w\", title: \"t\", severity: \"urgent\" };\nfn condition(e) { true }"),
    ])
    .expect_err("all broken");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert_eq!(errors[0].path, PathBuf::from("syntax.rhai"));
    assert!(errors[0].line.is_some(), "{}", errors[0]);
    assert!(errors[1].message.contains("const RULE"), "{}", errors[1]);
    assert!(errors[2].message.contains("fn condition"), "{}", errors[2]);
    assert!(errors[3].message.contains("did you mean `source.ip`"), "{}", errors[3]);
    assert!(errors[4].message.contains("urgent"), "{}", errors[4]);
}

#[test]
fn duplicate_ids_are_rejected() {
    let errors = compile(&[("a.rhai", GOOD), ("b.rhai", GOOD)]).expect_err("duplicate");
    assert!(errors[0].message.contains("duplicate rule id"), "{}", errors[0]);
}

#[test]
fn windows_need_group_fields_and_steps_need_functions() {
    let text = GOOD.replace(r#"group_by: ["source.ip"],"#, "");
    let errors = compile(&[("a.rhai", &text)]).expect_err("no group_by");
    assert!(errors[0].message.contains("group_by"), "{}", errors[0]);
    let sequence = r#"
        const RULE = #{ id: "s", title: "t", severity: "low", group_by: ["source.ip"],
            window: #{ type: "sequence", within: "5m", steps: [#{ when: "failed", count: 3 }, #{ when: "succeeded" }] } };
        fn failed(event) { event.outcome == "failure" }
    "#;
    let errors = compile(&[("s.rhai", sequence)]).expect_err("missing step function");
    assert!(errors[0].message.contains("fn succeeded(event)"), "{}", errors[0]);
}

#[test]
fn sequence_rules_get_one_bit_per_step_function() {
    let sequence = r#"
        const RULE = #{ id: "s", title: "t", severity: "low", group_by: ["source.ip"],
            window: #{ type: "sequence", within: "5m", steps: [#{ when: "failed", count: 3 }, #{ when: "succeeded" }] } };
        fn failed(event) { event.class == "authentication" && event.outcome == "failure" }
        fn succeeded(event) { event.class == "authentication" && event.outcome == "success" }
    "#;
    let set = compile(&[("s.rhai", sequence)]).expect("compiles");
    let rule = &set.rules()[0];
    assert_eq!((rule.matcher_index("failed"), rule.matcher_index("succeeded")), (Some(0), Some(1)));
    let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
    e.outcome = Outcome::Success;
    assert_eq!(set.evaluate(0, &EventRef(Arc::new(e))), Ok(0b10));
    assert_eq!(rule.classes, vec![EventClass::Authentication]);
}

#[test]
fn the_index_skips_rules_of_other_classes() {
    let http =
        GOOD.replace("ssh_brute_force", "web").replace("event.class == \"authentication\"", "event.class == \"http\"");
    let any = GOOD.replace("ssh_brute_force", "any").replace("event.class == \"authentication\" && ", "");
    let both = GOOD
        .replace("ssh_brute_force", "both")
        .replace("event.class == \"authentication\"", "event.class in [\"dns\", \"http\"]");
    let set = compile(&[("a.rhai", GOOD), ("b.rhai", &http), ("c.rhai", &any), ("d.rhai", &both)]).expect("compiles");
    assert_eq!(set.candidates(EventClass::Authentication), &[0, 2]);
    assert_eq!(set.candidates(EventClass::Http), &[1, 2, 3]);
    assert_eq!(set.candidates(EventClass::Dns), &[2, 3]);
    assert_eq!(set.candidates(EventClass::File), &[2]);
}

#[test]
fn library_lists_and_functions_are_shared() {
    let lib = r#"
        const LISTS = #{ admins: ["root", "admin"] };
        fn is_private(ip) { in_cidr(ip, "10.0.0.0/8") || in_cidr(ip, "192.168.0.0/16") }
    "#;
    let rule = r#"
        const RULE = #{ id: "r", title: "t", severity: "low" };
        fn condition(event) { in_list(event.user.name, "admins") && !is_private(event.source.ip) }
    "#;
    let listed = r#"
        const RULE = #{ id: "l", title: "t", severity: "low" };
        fn condition(event) { in_list(event.user.name, "admins") }
    "#;
    let set =
        compile_with(&[("r.rhai", rule), ("l.rhai", listed)], &[("lib/common.rhai", lib)], &CompileOptions::default())
            .expect("compiles");
    assert!(!set.rules()[0].is_native(), "calling a library function needs Rhai");
    assert!(set.rules()[0].matchers()[0].prefilter.is_some(), "but its list lookup prefilters natively");
    assert!(set.rules()[1].is_native(), "a list lookup compiles natively");
    let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
    e.user = Some(Box::new(User { name: Some("root".into()), ..Default::default() }));
    e.source = Some(Endpoint { ip: Some("203.0.113.1".parse().expect("ip")), ..Default::default() });
    assert_eq!(set.evaluate_id("r", &e), Some(Ok(true)));
    e.source = Some(Endpoint { ip: Some("10.1.1.1".parse().expect("ip")), ..Default::default() });
    assert_eq!(set.evaluate_id("r", &e), Some(Ok(false)));
    let errors =
        compile_with(&[("r.rhai", rule)], &[("lib/a.rhai", lib), ("lib/b.rhai", lib)], &CompileOptions::default())
            .expect_err("dup");
    assert!(errors[0].message.contains("defined twice"), "{}", errors[0]);
}

#[test]
fn evaluation_errors_are_typed() {
    let looping = GOOD.replace("fn condition(event) {", "fn condition(event) { loop {}");
    let set = compile(&[("a.rhai", &looping)]).expect("compiles");
    let e = SecurityEvent::new(EventClass::Other, Utc::now());
    assert_eq!(set.evaluate_id("ssh_brute_force", &e), Some(Err(EvalError::Budget)));
    let not_bool = GOOD.replace("event.class == \"authentication\" && event.outcome == \"failure\"", "42");
    let set = compile(&[("a.rhai", &not_bool)]).expect("compiles");
    assert!(matches!(set.evaluate_id("ssh_brute_force", &e), Some(Err(EvalError::NotBool(_)))));
}

#[test]
fn templates_render_fields_and_missing_ones_as_empty() {
    let mut e = SecurityEvent::new(EventClass::Other, Utc::now());
    e.source = Some(Endpoint { ip: Some("192.0.2.1".parse().expect("ip")), ..Default::default() });
    assert_eq!(render("ip={{ source.ip }} user={{user.name}} {{", &e), "ip=192.0.2.1 user= {{");
    assert_eq!(placeholders("{{a}}-{{ b.c }}"), vec!["a", "b.c"]);
}

/// Conditions that must compile natively; each is checked against Rhai on the random
/// events the class index lets through (rules only ever see those).
const NATIVE_CONDITIONS: &[&str] = &[
    r#"event.class == "authentication""#,
    r#"event.class != "authentication" || event.outcome == "failure""#,
    r#"event.outcome == "failure" && event.user.name == "root""#,
    r#"!(event.user.name == "root")"#,
    r#"event.user.name != "root""#,
    r#""root" == event.user.name"#,
    r#"event.source.ip == "203.0.113.7""#,
    r#"event.source.ip == "2001:DB8::1""#,
    r#"event.source.ip != "203.0.113.7""#,
    r#"event.source.port == 22"#,
    r#"event.source.port > 1024"#,
    r#"event.source.port <= 1024 && event.source.port >= 22"#,
    r#"event.source.port == "22""#,
    r#"event.user.name == ()"#,
    r#"event.user.name != ()"#,
    r#"event.process.name.contains("ssh")"#,
    r#"event.process.name.starts_with("ss") || event.process.name.ends_with("sh")"#,
    r#"event.source.ip.starts_with("203.")"#,
    r#"event.tags.contains("prod")"#,
    r#"in_cidr(event.source.ip, "203.0.113.0/24")"#,
    r#"!in_cidr(event.source.ip, "10.0.0.0/8")"#,
    r#"regex_match(event.user.name, "^(root|admin)$")"#,
    r#"exists(event.user.name) && !exists(event.host.name)"#,
    r#"lower(event.user.name) == "root""#,
    r#"lower(event.user.name) == """#,
    r#"event.user.name in ["root", "admin", "oracle"]"#,
    r#"event["user.name"] == "root" && event.get("source.ip") != "1.1.1.1""#,
    r#"event.labels.env == "prod""#,
    r#"event.attributes.n == 3"#,
    r#"event.attributes.s == "x""#,
    r#"event.user.target.name == "backdoor" || event.process.parent.name == "bash""#,
    r#"true"#,
    r#"event.class in ["dns", "http"] && event.outcome != "unknown""#,
    r#"is_public(event.source.ip)"#,
    r#"!is_public(event.source.address)"#,
    r#"is_auth_failure(event)"#,
    r#"is_auth_success(event) && event.user.name == "root""#,
    r#"event.source.port > 1024 && is_auth_failure(event)"#,
];

fn random_event(rng: &mut StdRng) -> SecurityEvent {
    let pick = |rng: &mut StdRng, items: &[&str]| items[rng.random_range(0..items.len())].to_owned();
    let class = EventClass::ALL[rng.random_range(0..4)];
    let mut e = SecurityEvent::new(class, Utc::now());
    e.outcome = [Outcome::Success, Outcome::Failure, Outcome::Unknown][rng.random_range(0..3)];
    if rng.random_bool(0.8) {
        let ip = pick(rng, &["203.0.113.7", "10.1.2.3", "2001:db8::1", "198.51.100.2", "127.0.0.1", "fe80::1"]);
        let port = rng.random_bool(0.8).then(|| [22, 80, 1024, 4444, 65000][rng.random_range(0..5)]);
        e.source = Some(Endpoint { ip: Some(ip.parse().expect("ip")), port, ..Default::default() });
    }
    if rng.random_bool(0.8) {
        e.user = Some(Box::new(User {
            name: Some(pick(rng, &["root", "ROOT", "admin", "alice", ""])),
            ..Default::default()
        }));
    }
    if rng.random_bool(0.6) {
        e.action = Some(pick(rng, &["logon", "ssh_login", "session_opened", "pam_authentication"]));
    }
    if rng.random_bool(0.5) {
        e.process =
            Some(Box::new(Process { name: Some(pick(rng, &["sshd", "bash", "python", "ssh"])), ..Default::default() }));
    }
    if rng.random_bool(0.3) {
        e.tags = vec![pick(rng, &["prod", "dev"])];
    }
    if rng.random_bool(0.3) {
        e.labels.insert("env".into(), pick(rng, &["prod", "dev"]));
    }
    match rng.random_range(0..5) {
        0 => e.attributes = serde_json::from_str(r#"{"n":3,"s":"x"}"#).expect("json"),
        1 => e.attributes = serde_json::from_str(r#"{"n":3.0,"s":["x"]}"#).expect("json"),
        2 => e.attributes = serde_json::from_str(r#"{"n":"3","s":null}"#).expect("json"),
        _ => {}
    }
    e
}

#[test]
fn native_predicates_agree_with_rhai() {
    let mut rng = StdRng::seed_from_u64(42);
    let events: Vec<EventRef> = (0..600).map(|_| EventRef(Arc::new(random_event(&mut rng)))).collect();
    for condition in NATIVE_CONDITIONS {
        let text = format!(
            "const RULE = #{{ id: \"r\", title: \"t\", severity: \"low\" }};\nfn condition(event) {{ {condition} }}"
        );
        let native = compile(&[("r.rhai", &text)]).expect("compiles");
        assert!(native.rules()[0].is_native(), "`{condition}` should compile natively");
        let rhai_only =
            compile_with(&[("r.rhai", &text)], &[], &CompileOptions { native: false, ..CompileOptions::default() })
                .expect("compiles");
        for event in events.iter().filter(|e| native.candidates(e.0.class).contains(&0)) {
            let a = native.evaluate(0, event);
            let b = rhai_only.evaluate(0, event);
            assert_eq!(a.is_ok(), b.is_ok(), "`{condition}` on {:?}: native {a:?}, rhai {b:?}", event.0);
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a, b, "`{condition}` on {:?}", event.0);
            }
        }
    }
}

#[test]
fn statements_and_function_calls_stay_in_rhai() {
    for body in
        ["let x = 1; event.class == \"dns\"", "if event.class == \"dns\" { return true; } false", "my_fn(event)"]
    {
        let text = format!(
            "const RULE = #{{ id: \"r\", title: \"t\", severity: \"low\" }};\nfn my_fn(e) {{ true }}\nfn condition(event) {{ {body} }}"
        );
        let set = compile(&[("r.rhai", &text)]).expect("compiles");
        assert!(!set.rules()[0].is_native(), "`{body}` is not a plain expression");
    }
}

#[test]
fn the_value_index_skips_only_rules_that_cannot_match() {
    let lib = r#"
        const LISTS = #{ ports: ["22", "4444"], admins: ["root", "admin"] };
        fn slow_check(e) { e.user.name.len() > 3 }
    "#;
    let indexed = [
        r#"event.source.port == 22 || event.source.port == 4444"#,
        r#"in_list(event.source.port, "ports")"#,
        r#"in_list(event.source.ip, "ports") || event.source.ip == "10.1.2.3""#,
        r#"(event.class == "process" && event.process.name == "bash") || event.user.name in ["root", "admin"]"#,
        r#"event.source.ip == "203.0.113.7" && event.outcome == "failure" && slow_check(event)"#,
        r#"event.outcome == "failure" && in_list(event.user.name, "admins") && slow_check(event)"#,
        r#"event.class != "dns" && event.process.name == "ssh""#,
    ];
    let mut rng = StdRng::seed_from_u64(11);
    let events: Vec<EventRef> = (0..600).map(|_| EventRef(Arc::new(random_event(&mut rng)))).collect();
    let (mut candidates, mut selected) = (0, 0);
    let mut out = Vec::new();
    for condition in NATIVE_CONDITIONS.iter().chain(&indexed) {
        let text = format!(
            "const RULE = #{{ id: \"r\", title: \"t\", severity: \"low\" }};\nfn condition(event) {{ {condition} }}"
        );
        let options = CompileOptions { native: false, ..CompileOptions::default() };
        let rhai_only = compile_with(&[("r.rhai", &text)], &[("lib/l.rhai", lib)], &options).expect("compiles");
        for event in events.iter().filter(|e| rhai_only.candidates(e.0.class).contains(&0)) {
            candidates += 1;
            rhai_only.select(&event.0, &mut out);
            if out.contains(&0) {
                selected += 1;
            } else {
                let verdict = rhai_only.evaluate(0, event);
                assert!(!matches!(verdict, Ok(m) if m != 0), "`{condition}` skipped {:?}, which it matches", event.0);
            }
        }
    }
    assert!(selected < candidates * 3 / 4, "the index should skip many evaluations: {selected} of {candidates}");
}

#[test]
fn prefilters_agree_with_rhai() {
    let lib = r#"fn slow_check(e) { e.user.name.len() > 3 }"#;
    let conditions = [
        r#"event.class == "authentication" && event.outcome == "failure" && slow_check(event)"#,
        r#"event.source.port > 1000 && slow_check(event) && event.user.name != "root""#,
        r#"in_cidr(event.source.ip, "10.0.0.0/8") && slow_check(event)"#,
    ];
    let mut rng = StdRng::seed_from_u64(7);
    let events: Vec<EventRef> = (0..600).map(|_| EventRef(Arc::new(random_event(&mut rng)))).collect();
    for condition in conditions {
        let text = format!(
            "const RULE = #{{ id: \"r\", title: \"t\", severity: \"low\" }};\nfn condition(event) {{ {condition} }}"
        );
        let native =
            compile_with(&[("r.rhai", &text)], &[("lib/l.rhai", lib)], &CompileOptions::default()).expect("compiles");
        let matcher = &native.rules()[0].matchers()[0];
        assert!(matcher.predicate.is_none() && matcher.prefilter.is_some(), "`{condition}` prefilters");
        let rhai_only = compile_with(
            &[("r.rhai", &text)],
            &[("lib/l.rhai", lib)],
            &CompileOptions { native: false, ..CompileOptions::default() },
        )
        .expect("compiles");
        for event in events.iter().filter(|e| native.candidates(e.0.class).contains(&0)) {
            assert_eq!(
                native.evaluate(0, event).ok(),
                rhai_only.evaluate(0, event).ok(),
                "`{condition}` on {:?}",
                event.0
            );
        }
    }
}

const REPUTATION_RULE: &str = r#"
    const RULE = #{ id: "listed_login", title: "Login from a listed address", severity: "high", plugins: ["reputation"] };
    fn condition(event) {
        event.class == "authentication" && event.outcome == "success"
            && plugin::invoke("reputation", event.source.ip).listed
    }
"#;

/// The reputation example plugin, loaded from `guest-examples/` (built by the test build).
fn reputation_host(dir: &std::path::Path, fuel: u64) -> crate::plugins::PluginHost {
    let plugin = dir.join("reputation");
    std::fs::create_dir_all(&plugin).expect("dir");
    std::fs::copy(vigil_guest_artifacts::REPUTATION, plugin.join("reputation.wasm")).expect("copy");
    let manifest = format!(
        "name = \"reputation\"\nversion = \"1.0.0\"\nkind = \"function\"\napi_version = \"0.1.0\"\n[capabilities]\nmetrics = true\nkv = {{ quota = \"1MiB\" }}\n[limits]\nfuel = {fuel}\n"
    );
    std::fs::write(plugin.join("plugin.toml"), manifest).expect("manifest");
    let config = crate::plugins::PluginsConfig { dir: dir.to_owned(), ..Default::default() };
    let host = crate::plugins::PluginHost::new(config, None, None, None, &crate::telemetry::MetricsRegistry::default())
        .expect("host");
    assert!(host.sync_dir().is_empty());
    host
}

fn login(ip: &str) -> EventRef {
    let mut e = SecurityEvent::new(EventClass::Authentication, Utc::now());
    e.outcome = Outcome::Success;
    e.source = Some(Endpoint { ip: Some(ip.parse().expect("ip")), ..Default::default() });
    EventRef(Arc::new(e))
}

#[test]
fn a_plugin_function_changes_a_rules_verdict() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Without the plugin the rule does not run at all.
    let rules = compile(&[("listed.rhai", REPUTATION_RULE)]).expect("compiles");
    assert_eq!(rules.rules()[0].missing_plugins, vec!["reputation".to_owned()]);
    assert!(rules.candidates(EventClass::Authentication).is_empty());

    let host = reputation_host(dir.path(), 100_000_000);
    let options = CompileOptions { plugins: Some(host), ..CompileOptions::default() };
    let rules = compile_with(&[("listed.rhai", REPUTATION_RULE)], &[], &options).expect("compiles");
    assert_eq!(rules.candidates(EventClass::Authentication), &[0]);
    assert_eq!(rules.evaluate(0, &login("203.0.113.7")), Ok(1), "a listed address: the rule matches");
    assert_eq!(rules.evaluate(0, &login("192.0.2.10")), Ok(0), "an unlisted one: it does not");
}

#[test]
fn plugin_calls_spend_the_rules_own_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = reputation_host(dir.path(), 100_000_000);
    let limits = SandboxLimits { max_plugin_fuel: 1_000, ..SandboxLimits::default() };
    let options = CompileOptions { plugins: Some(host), limits, ..CompileOptions::default() };
    let rules = compile_with(&[("listed.rhai", REPUTATION_RULE)], &[], &options).expect("compiles");
    match rules.evaluate(0, &login("203.0.113.7")) {
        Err(EvalError::Runtime(why)) => assert!(why.contains("ran out of fuel (1000 units)"), "{why}"),
        other => panic!("expected the plugin call to run out of the rule's fuel, got {other:?}"),
    }
}

#[test]
fn rules_look_values_up_with_ioc_match() {
    use crate::intel::{FeedConfig, FeedKind, Intel, IntelConfig};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::store::StoreConfig { path: dir.path().join("db"), ..crate::store::StoreConfig::default() };
    let store = crate::store::Store::open(&config).expect("store");
    let intel = Intel::open(&store, IntelConfig::default(), None).expect("intel");
    let indicator = serde_json::json!({ "type": "bundle", "objects": [{
        "type": "indicator", "id": "indicator--f", "modified": "2026-01-01T00:00:00Z", "confidence": 60,
        "pattern": "[ipv4-addr:value = '192.0.2.99']", "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z" }] });
    intel.import(&FeedConfig::new("local", FeedKind::Bundle), &indicator).expect("import");
    let rule = r#"
        const RULE = #{ id: "forwarded_for_listed", title: "t", severity: "high" };
        fn condition(event) {
            let hit = ioc_match(event.attributes.forwarded_for);
            hit != () && hit.feed == "local" && hit.confidence == 60
        }
    "#;
    let options = CompileOptions { intel: Some(intel), ..CompileOptions::default() };
    let rules = RuleSet::compile(vec![("r.rhai".into(), rule.into())], Vec::new(), &options).expect("compile");
    let mut event = crate::event::SecurityEvent::new(crate::event::EventClass::Http, chrono::Utc::now());
    assert!(!rules.evaluate_id("forwarded_for_listed", &event).expect("rule").expect("evaluates"));
    event.attributes.insert("forwarded_for".into(), serde_json::json!("192.0.2.99"));
    assert!(rules.evaluate_id("forwarded_for_listed", &event).expect("rule").expect("evaluates"));
    event.attributes.insert("forwarded_for".into(), serde_json::json!("192.0.2.100"));
    assert!(!rules.evaluate_id("forwarded_for_listed", &event).expect("rule").expect("evaluates"));
}

#[test]
fn a_misspelt_event_field_is_a_compile_error_with_the_nearest_field() {
    let rule = |condition: &str| {
        let text = format!(
            "const RULE = #{{ id: \"r\", title: \"t\", severity: \"low\" }};\nfn condition(event) {{\n    {condition}\n}}\n"
        );
        RuleSet::compile(vec![("r.rhai".into(), text)], Vec::new(), &CompileOptions::default())
    };
    let errors = rule(r#"event.class == "authentication" && event.user.nmae == "root""#).expect_err("misspelt");
    let message = errors[0].to_string();
    assert!(message.contains("r.rhai:3:") && message.contains("did you mean `user.name`"), "{message}");
    assert!(
        rule(r#"exists(event.source) && event.attributes.anything.at_all == 1 && event.labels.env == "x""#).is_ok()
    );
    assert!(rule(r#"event.user.name.starts_with("svc") && event.tags.contains("x")"#).is_ok());
}
