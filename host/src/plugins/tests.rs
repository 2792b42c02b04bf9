//! The plugin host against the real example plugins of `guest-examples/`, built from
//! source by `vigil-guest-artifacts`: the hostile corpus is contained, grants are enforced
//! at load and at call, signatures are checked, and reloads never fail a call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::telemetry::MetricsRegistry;

/// The hostile plugin imports `http`, `clock`, `emit` and `secrets`: every manifest of it
/// grants them.
const HOSTILE_OTHER: &str = "[capabilities]\nclock = true\nemit = true\nsecrets = [\"ALLOWED\"]\n";
const HOSTILE_HTTP: &str = concat!(
    "[capabilities]\nclock = true\nemit = true\nsecrets = [\"ALLOWED\"]\n",
    "[capabilities.http]\nallow = [\"tickets.example.com\"]\n"
);

/// A plugin directory: the component and a manifest of `extra` lines.
fn install(root: &Path, name: &str, component: &str, kind: &str, extra: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(component, dir.join(format!("{name}.wasm"))).expect("copy component");
    let grant = if component == vigil_guest_artifacts::HOSTILE && !extra.contains("[capabilities.http]") {
        HOSTILE_HTTP
    } else {
        ""
    };
    let manifest =
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nkind = \"{kind}\"\napi_version = \"0.1.0\"\n{extra}\n{grant}");
    std::fs::write(dir.join("plugin.toml"), manifest).expect("manifest");
    dir.join("plugin.toml")
}

fn host_with(root: &Path, config: PluginsConfig) -> (PluginHost, Arc<MetricsRegistry>) {
    let registry = Arc::new(MetricsRegistry::default());
    let config = PluginsConfig { dir: root.to_owned(), cache_dir: Some(root.join(".cache")), ..config };
    (PluginHost::new(config, None, None, None, &registry).expect("plugin host"), registry)
}

fn hostile(root: &Path, limits: &str) -> PluginHost {
    let (host, _) = host_with(root, PluginsConfig::default());
    let path = install(root, "hostile", vigil_guest_artifacts::HOSTILE, "function", &format!("[limits]\n{limits}"));
    host.load(&path).expect("hostile loads");
    host
}

fn metric(registry: &MetricsRegistry, needle: &str) -> f64 {
    registry
        .encode()
        .lines()
        .filter(|l| l.starts_with(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn the_hostile_corpus_is_contained_with_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Arc::new(MetricsRegistry::default());
    let config = PluginsConfig { dir: dir.path().to_owned(), ..PluginsConfig::default() };
    let host = PluginHost::new(config, None, None, None, &registry).expect("host");
    let path = install(
        dir.path(),
        "hostile",
        vigil_guest_artifacts::HOSTILE,
        "function",
        "[limits]\nfuel = 5_000_000_000\ndeadline = \"200ms\"\nmemory = \"16MiB\"\nmax_output = \"64KiB\"",
    );
    host.load(&path).expect("loads");
    let call = |input: Value| host.call("hostile", &input, None);
    assert_eq!(call(json!({ "do": "echo", "n": 1 })), Ok(json!({ "do": "echo", "n": 1 })));
    assert_eq!(call(json!({ "do": "loop" })), Err(CallError::Deadline(Duration::from_millis(200))));
    assert_eq!(call(json!({ "do": "alloc" })), Err(CallError::MemoryLimit(bytesize::ByteSize::mib(16))));
    assert_eq!(call(json!({ "do": "recurse" })), Err(CallError::StackOverflow));
    assert!(matches!(call(json!({ "do": "trap" })), Err(CallError::Trap(_))));
    assert_eq!(
        call(json!({ "do": "output", "bytes": 1_000_000 })),
        Err(CallError::OutputTooLarge { bytes: 1_000_002, limit: bytesize::ByteSize::kib(64) })
    );
    // The host still serves, and every containment was counted.
    assert_eq!(call(json!("still here")), Ok(json!("still here")));
    for reason in ["deadline", "memory_limit", "stack_overflow", "trap", "output_too_large"] {
        let needle = format!("vigil_plugin_calls_total{{plugin=\"hostile\",result=\"{reason}\"}}");
        assert_eq!(metric(&registry, &needle), 1.0, "{needle}");
    }
    assert_eq!(metric(&registry, "vigil_plugin_calls_total{plugin=\"hostile\",result=\"ok\"}"), 2.0);

    // With little fuel the loop runs out of fuel before its deadline.
    let host = hostile(&dir.path().join("fuel"), "fuel = 1_000_000\ndeadline = \"10s\"");
    assert_eq!(host.call("hostile", &json!({ "do": "loop" }), None), Err(CallError::OutOfFuel(1_000_000)));
}

#[test]
fn imports_must_be_granted_and_api_versions_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, registry) = host_with(dir.path(), PluginsConfig::default());
    // The ticket action imports http, secrets and log: without the http grant it is refused.
    let path = install(
        dir.path(),
        "ticket",
        vigil_guest_artifacts::TICKET,
        "action",
        "[capabilities]\nlog = true\nsecrets = [\"TICKET_TOKEN\"]",
    );
    let error = host.load(&path).expect_err("http not granted").to_string();
    assert!(error.contains("does not grant `http`"), "{error}");
    assert!(host.get("ticket").is_none());
    assert_eq!(metric(&registry, "vigil_plugin_loads_total{plugin=\"ticket\",result=\"refused\"}"), 1.0);

    let path = install(dir.path(), "old", vigil_guest_artifacts::HOSTILE, "function", "");
    std::fs::write(&path, std::fs::read_to_string(&path).expect("manifest").replace("0.1.0", "0.0.9")).expect("write");
    let error = host.load(&path).expect_err("wrong api version").to_string();
    assert!(error.contains("api_version `0.0.9` is not served"), "{error}");

    // A component whose kind does not match its export is refused too.
    let path = install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "transform", "");
    assert!(host.load(&path).is_ok(), "the SDK exports every kind; the manifest picks one");
    assert!(matches!(host.call("hostile", &json!(1), None), Err(CallError::WrongKind { .. })));
    let error = host
        .transform("hostile", &crate::event::SecurityEvent::new(crate::event::EventClass::Network, chrono::Utc::now()));
    assert_eq!(error, Err(CallError::Plugin(PluginFailure::Unsupported)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_internal_addresses_even_through_allowed_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let config = PluginsConfig {
        hosts: BTreeMap::from([("metadata.example.com".to_owned(), "169.254.169.254".parse().expect("ip"))]),
        ..PluginsConfig::default()
    };
    let (host, registry) = host_with(dir.path(), config);
    let grant = format!(
        "{HOSTILE_OTHER}[capabilities.http]\nallow = [\"localhost\", \"127.0.0.1:{port}\", \"metadata.example.com\", \"tickets.example.com\"]\ntimeout = \"2s\""
    );
    host.load(&install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", &grant)).expect("loads");
    let fetch = |url: String| {
        let host = host.clone();
        tokio::task::spawn_blocking(move || host.call("hostile", &json!({ "do": "fetch", "url": url }), None))
    };
    let denied = |r: Result<Value, CallError>| matches!(r, Err(CallError::Plugin(PluginFailure::Failed(m))) if m.starts_with("denied"));
    for url in [
        format!("http://localhost:{port}/"), // an allowed name resolving to loopback
        format!("http://127.0.0.1:{port}/"), // an allowed loopback literal
        "http://metadata.example.com/latest/meta-data/".to_owned(), // an allowed name → 169.254.169.254
        format!("http://evil.example.net:{port}/"), // not allowed at all
        "file:///etc/passwd".to_owned(),
    ] {
        let result = fetch(url.clone()).await.expect("join");
        assert!(denied(result.clone()), "{url}: {result:?}");
    }
    assert_eq!(metric(&registry, "vigil_plugin_denied_total{plugin=\"hostile\",capability=\"http\"}"), 5.0);

    // With allow_private, the same loopback server answers.
    let open = format!("{HOSTILE_OTHER}[capabilities.http]\nallow = [\"127.0.0.1:{port}\"]\nallow_private = true");
    host.load(&install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", &open)).expect("reloads");
    assert_eq!(fetch(format!("http://127.0.0.1:{port}/")).await.expect("join"), Ok(json!(200)));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticket_action_opens_a_ticket_on_a_local_server() {
    use crate::actions::{Action, ActionContext};
    let dir = tempfile::tempdir().expect("tempdir");
    let received: Arc<std::sync::Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/tickets",
        axum::routing::post(move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let mut seen = seen.lock().expect("lock");
                seen.push((auth, body));
                axum::Json(json!({ "id": format!("TICKET-{}", seen.len()) }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let endpoint = format!("http://127.0.0.1:{port}/tickets");
    let config = PluginsConfig {
        secrets: BTreeMap::from([("TICKET_TOKEN".to_owned(), crate::telemetry::Secret::new("s3cret-token"))]),
        config: BTreeMap::from([("ticket".to_owned(), BTreeMap::from([("url".to_owned(), json!(endpoint))]))]),
        ..PluginsConfig::default()
    };
    let (host, _) = host_with(dir.path(), config);
    let manifest = format!(
        "description = \"Opens a ticket\"\n[capabilities]\nlog = true\nsecrets = [\"TICKET_TOKEN\"]\n[capabilities.http]\nallow = [\"127.0.0.1:{port}\"]\nallow_private = true\n[params.url]\nkind = \"string\"\nrequired = true\n[config.url]\nkind = \"string\"\nrequired = true"
    );
    host.load(&install(dir.path(), "ticket", vigil_guest_artifacts::TICKET, "action", &manifest)).expect("loads");
    let action = WasmAction::new(&host, "ticket").expect("an action");
    assert_eq!(action.spec().id, "ticket");
    assert!(action.spec().validate(&serde_json::Map::new()).is_err(), "url is required, as the manifest declares");
    let mut ctx = ActionContext::new(
        "run-1/step-1",
        json!({ "url": format!("http://127.0.0.1:{port}/tickets") }).as_object().cloned().expect("object"),
    );
    ctx.incident = json!({ "id": "inc-1", "rule_id": "ssh_brute_force", "title": "SSH brute force", "priority": "P2", "dedup_key": "203.0.113.7" });
    ctx.incident_id = Some("inc-1".into());
    let outcome = action.execute(&ctx).await.expect("ticket opened");
    assert_eq!(outcome.target.as_deref(), Some("TICKET-1"));
    assert_eq!(outcome.data, json!({ "ticket": "TICKET-1" }));
    let received = received.lock().expect("lock").clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, "Bearer s3cret-token");
    assert_eq!(received[0].1["summary"], "[P2] SSH brute force: 203.0.113.7");
    assert_eq!(received[0].1["incident"], "inc-1");
    assert_eq!(received[0].1["idempotency_key"], "run-1/step-1");

    // Without the parameter, the plugin's `url` setting from Vigil's config is used.
    let mut from_config = ctx.clone();
    from_config.params.clear();
    assert_eq!(action.execute(&from_config).await.expect("ticket opened").target.as_deref(), Some("TICKET-2"));

    // A refused host is a permanent failure; the secret never shows in the error.
    let mut bad = ctx.clone();
    bad.params.insert("url".into(), json!("http://tickets.internal.example/tickets"));
    let error = action.execute(&bad).await.expect_err("not allowed");
    assert!(!error.is_retryable() && error.to_string().contains("denied"), "{error}");
    assert!(!format!("{error:?}").contains("s3cret"));
    server.abort();
}

#[test]
fn the_reputation_function_caches_in_its_kv_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        crate::store::Store::open(&crate::store::StoreConfig { path: dir.path().join("data"), ..Default::default() })
            .expect("store");
    let registry = Arc::new(MetricsRegistry::default());
    let config = PluginsConfig { dir: dir.path().to_owned(), ..PluginsConfig::default() };
    let host = PluginHost::new(config, None, Some(store), None, &registry).expect("host");
    let manifest = "[capabilities]\nmetrics = true\nkv = { quota = \"64KiB\" }";
    host.load(&install(dir.path(), "reputation", vigil_guest_artifacts::REPUTATION, "function", manifest))
        .expect("loads");
    let call = |ip: &str| host.call("reputation", &json!(ip), None).expect("reputation");
    assert_eq!(call("203.0.113.7"), json!({ "score": 90, "listed": true, "cached": false }));
    assert_eq!(call("203.0.113.7"), json!({ "score": 90, "listed": true, "cached": true }));
    assert_eq!(call("192.0.2.1"), json!({ "score": 0, "listed": false, "cached": false }));
    assert_eq!(metric(&registry, "vigil_plugin_guest_total{plugin=\"reputation\",name=\"cache_hits\"}"), 1.0);
    assert!(matches!(
        host.call("reputation", &json!("not an ip"), None),
        Err(CallError::Plugin(PluginFailure::InvalidInput(_)))
    ));
}

#[test]
fn the_cim_transform_matches_its_golden_file() {
    use crate::transform::Transform;
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, _) = host_with(dir.path(), PluginsConfig::default());
    host.load(&install(dir.path(), "cim", vigil_guest_artifacts::CIM, "transform", "")).expect("loads");
    let transform = WasmTransform::new(&host, "cim");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/cim");
    for name in ["ssh_failure", "network"] {
        let input = std::fs::read_to_string(golden.join(format!("{name}.json"))).expect("input");
        let event: crate::event::SecurityEvent = serde_json::from_str(&input).expect("event");
        let expected = std::fs::read_to_string(golden.join(format!("{name}.txt"))).expect("golden");
        let out = transform.apply(crate::transform::Input::Event(&event)).expect("transforms");
        assert_eq!(out, crate::transform::Output::Text(expected.trim_end().to_owned()), "{name}");
    }
}

#[test]
fn signatures_are_required_when_the_policy_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = [42u8; 32];
    let config = PluginsConfig {
        require_signatures: true,
        trusted_keys: BTreeMap::from([("release".to_owned(), manifest::public_key(&seed))]),
        ..PluginsConfig::default()
    };
    let (host, _) = host_with(dir.path(), config);
    let bytes = std::fs::read(vigil_guest_artifacts::HOSTILE).expect("component");
    let unsigned = install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", "");
    assert!(host.load(&unsigned).expect_err("unsigned").to_string().contains("is not signed"));
    let wrong = manifest::sign(&bytes, &[1u8; 32]);
    let badly = install(
        dir.path(),
        "hostile",
        vigil_guest_artifacts::HOSTILE,
        "function",
        &format!("signed_by = \"release\"\nsignature = \"{wrong}\""),
    );
    assert!(host.load(&badly).expect_err("wrong key").to_string().contains("does not verify"));
    let good = manifest::sign(&bytes, &seed);
    let signed = install(
        dir.path(),
        "hostile",
        vigil_guest_artifacts::HOSTILE,
        "function",
        &format!("signed_by = \"release\"\nsignature = \"{good}\""),
    );
    let loaded = host.load(&signed).expect("signed loads");
    assert_eq!(loaded.info().signature, SignatureStatus::Verified { key: "release".into() });
    assert_eq!(loaded.info().digest, manifest::digest(&bytes));
}

#[test]
fn reloading_under_load_fails_no_call_and_a_broken_version_leaves_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, _) = host_with(dir.path(), PluginsConfig::default());
    let path =
        install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", "[limits]\nmax_concurrent = 64");
    host.load(&path).expect("loads");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let (host, stop, calls) = (host.clone(), stop.clone(), calls.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let input = json!({ "do": "echo", "caller": i });
                    assert_eq!(host.call("hostile", &input, None), Ok(input.clone()), "a call failed during a reload");
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Calls complete between every two reloads, not only before or after them.
    let calls_after = |mark: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while calls.load(Ordering::Relaxed) <= mark {
            assert!(std::time::Instant::now() < deadline, "no call completed after {mark}: the callers are stuck");
            std::thread::yield_now();
        }
    };
    for version in 2..8 {
        let mark = calls.load(Ordering::Relaxed);
        let manifest = format!(
            "name = \"hostile\"\nversion = \"1.0.{version}\"\nkind = \"function\"\napi_version = \"0.1.0\"\n[limits]\nmax_concurrent = 64\n{HOSTILE_HTTP}"
        );
        std::fs::write(&path, manifest).expect("manifest");
        let loaded = host.load(&path).expect("reload");
        assert_eq!(loaded.manifest().version, format!("1.0.{version}"));
        calls_after(mark);
    }
    // A broken new version: the old one keeps serving.
    std::fs::write(dir.path().join("hostile/hostile.wasm"), b"\0asm not really").expect("break");
    let mark = calls.load(Ordering::Relaxed);
    assert!(host.load(&path).is_err());
    assert_eq!(host.get("hostile").expect("still loaded").manifest().version, "1.0.7");
    calls_after(mark + 20);
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().expect("no caller panicked");
    }
}

#[test]
fn compiled_components_are_cached_by_content_and_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", "");
    let (first, _) = host_with(dir.path(), PluginsConfig::default());
    first.load(&path).expect("compiles");
    let cached: Vec<_> = std::fs::read_dir(dir.path().join(".cache")).expect("cache dir").flatten().collect();
    assert_eq!(cached.len(), 1);
    let (second, _) = host_with(dir.path(), PluginsConfig::default());
    second.load(&path).expect("loads from the cache");
    assert_eq!(second.call("hostile", &json!([1, 2]), None), Ok(json!([1, 2])));
    // A corrupt cache entry is recompiled, not trusted.
    std::fs::write(cached[0].path(), b"garbage").expect("corrupt");
    let (third, _) = host_with(dir.path(), PluginsConfig::default());
    third.load(&path).expect("recompiles");
    assert_eq!(third.call("hostile", &json!("x"), None), Ok(json!("x")));
}

#[test]
fn the_directory_is_synced_and_pooled_instances_keep_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, _) = host_with(dir.path(), PluginsConfig::default());
    install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", "[limits]\npooled = true");
    install(dir.path(), "cim", vigil_guest_artifacts::CIM, "transform", "");
    std::fs::create_dir_all(dir.path().join("broken")).expect("dir");
    std::fs::write(dir.path().join("broken/plugin.toml"), "name = \"broken\"").expect("manifest");
    let failures = host.sync_dir();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(host.names(Kind::Function), vec!["hostile".to_owned()]);
    assert_eq!(host.names(Kind::Transform), vec!["cim".to_owned()]);
    for _ in 0..3 {
        assert_eq!(host.call("hostile", &json!("pooled"), None), Ok(json!("pooled")));
    }
    let fingerprint = host.dir_fingerprint();
    std::fs::remove_dir_all(dir.path().join("cim")).expect("remove");
    assert_ne!(host.dir_fingerprint(), fingerprint);
    host.sync_dir();
    assert!(host.get("cim").is_none(), "a removed plugin is unloaded");
}

#[test]
fn clock_secrets_and_emit_answer_within_their_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::store::StoreConfig { path: dir.path().join("data"), ..Default::default() };
    let store = crate::store::Store::open(&config).expect("store");
    let (log, writer, _thread) = crate::store::Log::start(&store, &config).expect("log");
    let registry = Arc::new(MetricsRegistry::default());
    let ingestor = crate::source::Ingestor::new(writer, Default::default(), &registry);
    let plugins = PluginsConfig {
        dir: dir.path().to_owned(),
        secrets: BTreeMap::from([
            ("ALLOWED".to_owned(), crate::telemetry::Secret::new("granted-value")),
            ("OTHER".to_owned(), crate::telemetry::Secret::new("never-shown")),
        ]),
        ..PluginsConfig::default()
    };
    let host = PluginHost::new(plugins, None, Some(store), Some(ingestor), &registry).expect("host");
    host.load(&install(dir.path(), "hostile", vigil_guest_artifacts::HOSTILE, "function", "")).expect("loads");

    // The clock is the event's time when the host gives one (replays), else the wall clock.
    assert_eq!(
        host.call("hostile", &json!({ "do": "clock" }), Some(1_700_000_000_123)),
        Ok(json!(1_700_000_000_123_i64))
    );
    let now = chrono::Utc::now().timestamp_millis();
    let wall = host.call("hostile", &json!({ "do": "clock" }), None).expect("clock").as_i64().expect("ms");
    assert!((wall - now).abs() < 60_000, "{wall} vs {now}");

    // Only the named secret.
    assert_eq!(host.call("hostile", &json!({ "do": "secret", "name": "ALLOWED" }), None), Ok(json!("granted-value")));
    let refused = host.call("hostile", &json!({ "do": "secret", "name": "OTHER" }), None);
    assert_eq!(refused, Err(CallError::Plugin(PluginFailure::Failed("secret `OTHER` is not granted".into()))));
    assert_eq!(metric(&registry, "vigil_plugin_denied_total{plugin=\"hostile\",capability=\"secrets\"}"), 1.0);

    // An emitted event lands in the log, as the plugin's source.
    let head = log.head();
    assert_eq!(host.call("hostile", &json!({ "do": "emit", "message": "derived" }), None), Ok(json!(true)));
    let entries = log.read(head + 1, 10, 1 << 20).expect("read");
    assert_eq!(entries.len(), 1);
    let event: Value = serde_json::from_slice(&entries[0].payload).expect("json");
    assert_eq!((event["class"].as_str(), event["message"].as_str()), (Some("system"), Some("derived")));
    assert_eq!(metric(&registry, "vigil_events_ingested_total{source=\"plugin/hostile\"}"), 1.0);
}

#[test]
fn other_calls_are_served_while_a_plugin_spins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = hostile(dir.path(), "fuel = 50_000_000_000\ndeadline = \"3s\"");
    let spinner = {
        let host = host.clone();
        std::thread::spawn(move || host.call("hostile", &json!({ "do": "loop" }), None))
    };
    // While one call spins towards its deadline, others complete.
    let mut served = 0;
    while !spinner.is_finished() {
        assert_eq!(host.call("hostile", &json!({ "n": served }), None), Ok(json!({ "n": served })));
        served += 1;
    }
    assert_eq!(spinner.join().expect("no panic"), Err(CallError::Deadline(Duration::from_secs(3))));
    assert!(served > 10, "only {served} calls served during the spin");
}

#[test]
fn call_slots_queue_and_are_given_back() {
    let slots = Slots::new(1);
    let first = slots.acquire(Duration::ZERO).expect("one free slot");
    assert!(slots.acquire(Duration::from_millis(10)).is_none(), "the only slot is taken");
    let waiter = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| slots.acquire(Duration::from_secs(30)).is_some());
        drop(first);
        waiter.join().expect("no panic")
    });
    assert!(waiter, "a waiting call gets the slot given back");
    assert!(slots.acquire(Duration::ZERO).is_some(), "and gives it back in turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_plugins_roll_back_or_say_they_cannot() {
    use crate::actions::{Action, ActionContext, ActionError};
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, _) = host_with(dir.path(), PluginsConfig::default());
    host.load(&install(dir.path(), "noop", vigil_guest_artifacts::NOOP, "action", "")).expect("noop loads");
    let manifest = "[capabilities]\nlog = true\nsecrets = [\"TICKET_TOKEN\"]\n[capabilities.http]\nallow = [\"tickets.example.com\"]";
    host.load(&install(dir.path(), "ticket", vigil_guest_artifacts::TICKET, "action", manifest)).expect("ticket loads");
    let mut ctx = ActionContext::new("run/step", serde_json::Map::new());
    ctx.step_id = "contain".into();
    let noop = WasmAction::new(&host, "noop").expect("action");
    let done = noop.execute(&ctx).await.expect("executes");
    assert_eq!((done.target.as_deref(), done.detail.as_str()), (Some("contain"), "nothing done"));
    let undone = noop.rollback(&ctx, &done).await.expect("rolls back");
    assert_eq!(undone.detail, "undid: nothing done");
    // The ticket example implements no rollback: not reversible, as a native action says.
    let ticket = WasmAction::new(&host, "ticket").expect("action");
    match ticket.rollback(&ctx, &done).await {
        Err(ActionError::NotReversible(id)) => assert_eq!(id, "ticket"),
        other => panic!("expected NotReversible, got {other:?}"),
    }
}

#[test]
fn a_decode_plugin_reads_a_format_vigil_does_not_know() {
    use crate::source::decode::{Decoded, Format, Options, StreamDecoder};
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, registry) = host_with(dir.path(), PluginsConfig::default());
    let decoders = host.decoders();
    assert!(decoders.get("fortigate").is_none());
    let path = install(dir.path(), "fortigate", vigil_guest_artifacts::FORTIGATE, "decode", "");
    host.load(&path).expect("fortigate loads");
    assert!(decoders.get("fortigate").is_some(), "the shared handle sees the plugin once loaded");

    let mut decoder =
        StreamDecoder::new(&Format::Plugin("fortigate".into()), Options::default(), &decoders).expect("decoder");
    let mut out = Decoded::default();
    let lines = [
        r#"<189>date=2026-03-02 time=11:58:01 devname="FGT60F" devid="FGT60F0000000001" logid="0000000013" type="traffic" subtype="forward" level="notice" srcip=10.0.0.5 srcport=51234 dstip=203.0.113.10 dstport=443 proto=6 action="deny" sentbyte=0 rcvdbyte=0"#,
        r#"date=2026-03-02 time=11:58:02 tz="+0100" devname="FGT60F" type="event" subtype="system" logdesc="Admin login failed" user="admin" srcip=198.51.100.7 action="login" status="failed" msg="Administrator admin login failed from https(198.51.100.7) because of invalid password""#,
        "not a fortigate line",
    ];
    for (i, line) in lines.iter().enumerate() {
        decoder.record(i + 1, line.as_bytes(), chrono::Utc::now(), &mut out);
    }
    assert_eq!(out.events.len(), 2, "{:?}", out.rejected);
    let traffic = &out.events[0];
    assert_eq!(
        (traffic.class, traffic.action.as_deref()),
        (crate::event::EventClass::Network, Some("connection_blocked"))
    );
    assert_eq!(traffic.destination.as_ref().and_then(|d| d.port), Some(443));
    assert_eq!(traffic.attributes["fortigate"]["devid"], "FGT60F0000000001");
    let login = &out.events[1];
    assert_eq!(
        (login.class, login.outcome),
        (crate::event::EventClass::Authentication, crate::event::Outcome::Failure)
    );
    assert_eq!(login.user.as_ref().and_then(|u| u.name.as_deref()), Some("admin"));
    assert_eq!(login.time.to_rfc3339(), "2026-03-02T10:58:02+00:00");
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].line, 3);
    assert!(out.rejected[0].message.contains("no `date=` in the record"), "{}", out.rejected[0].message);
    assert!(metric(&registry, "vigil_plugin_calls_total") >= 3.0);

    // Unloaded: the format is gone from the handle, and a new stream says so.
    assert!(host.unload("fortigate"));
    assert!(decoders.get("fortigate").is_none());
    assert!(StreamDecoder::new(&Format::Plugin("fortigate".into()), Options::default(), &decoders).is_err());
}
