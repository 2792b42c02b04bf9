//! Running Vigil as a service: the metrics listener a Prometheus scraper reads without a
//! token (while the API's `/metrics` stays behind one), metric names linted by Prometheus's
//! own `promtool`, and the systemd readiness protocol.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{Server, blocking, free_port, http_get_text, metric, peers_dir, token, wait_for};

/// Status and body of a GET with an optional bearer token.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    blocking(async {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("GET");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    })
}

/// The OpenMetrics text Vigil serves, in the classic Prometheus text format `promtool`
/// reads: a counter's family takes its sample name (`vigil_alerts` → `vigil_alerts_total`),
/// an info metric becomes the gauge Prometheus makes of it (`vigil_build_info`), and the
/// OpenMetrics-only lines (`# EOF`, `# UNIT`) go.
fn classic_text(openmetrics: &str) -> String {
    let mut kinds = std::collections::HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            kinds.insert(name.to_owned(), kind.to_owned());
        }
    }
    let renamed = |name: &str| match kinds.get(name).map(String::as_str) {
        Some("counter") => format!("{name}_total"),
        Some("info") => format!("{name}_info"),
        _ => name.to_owned(),
    };
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let kind = if kind == "info" { "gauge" } else { kind };
            out.push_str(&format!("# TYPE {} {kind}\n", renamed(name)));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(name)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn metrics_listener_needs_no_token_the_api_does_and_every_name_passes_promtool() {
    let promtool = peers_dir().join("prometheus/usr/bin/promtool");
    assert!(promtool.exists(), "promtool is missing at {}: run scripts/setup.sh", promtool.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with_env(
        dir.path(),
        "[api.auth]\nrequired = true\n[sinks.archive]\ntype = \"file\"\npath = \"out/archive.jsonl\"\n",
        &[("VIGIL_TELEMETRY__METRICS_LISTEN", listen.as_str())],
    );
    let ingest = token(dir.path(), "ingest", "shipper");
    let viewer = token(dir.path(), "viewer", "grafana");
    let events: String = (0..20)
        .map(|i| {
            format!(
                "{{\"class\":\"authentication\",\"action\":\"ssh_login\",\"outcome\":\"failure\",\"source\":{{\"ip\":\"198.51.100.7\"}},\"user\":{{\"name\":\"root\"}},\"message\":\"attempt {i}\"}}\n"
            )
        })
        .collect();
    let status = blocking(async {
        let response = reqwest::Client::new()
            .post(server.url("/v1/events"))
            .bearer_auth(&ingest)
            .body(events)
            .send()
            .await
            .expect("POST /v1/events");
        response.status().as_u16()
    });
    assert_eq!(status, 202);

    let scrape = format!("http://{listen}/metrics");
    let text = wait_for(Duration::from_secs(30), "latency histograms with observations", || {
        let text = http_get_text(&scrape)?;
        let observed = |name: &str| metric(&text, &[&format!("{name}_count")]) > 0.0;
        (observed("vigil_ingest_durable_latency_seconds")
            && observed("vigil_detect_lag_seconds")
            && observed("vigil_sink_delivery_latency_seconds"))
        .then_some(text)
    });
    assert_eq!(metric(&text, &["vigil_ingest_durable_latency_seconds_count", "source=\"http\""]), 1.0, "{text}");
    assert!(metric(&text, &["vigil_detect_lag_seconds_count"]) >= 20.0, "{text}");
    assert!(metric(&text, &["vigil_sink_delivery_latency_seconds_bucket", "sink=\"archive\"", "le=\"+Inf\""]) >= 20.0);
    let version = env!("CARGO_PKG_VERSION");
    assert!(text.contains(&format!("vigil_build_info{{version=\"{version}\",profile=\"debug\"}} 1")), "{text}");

    // The listener serves /metrics only; the API's /metrics wants a viewer token.
    assert_eq!(get(&format!("http://{listen}/v1/incidents"), None).0, 404);
    assert_eq!(get(&format!("http://{listen}/healthz"), None).0, 404);
    assert_eq!(get(&server.url("/metrics"), None).0, 401);
    assert_eq!(get(&server.url("/metrics"), Some(&ingest)).0, 403);
    let (status, api_text) = get(&server.url("/metrics"), Some(&viewer));
    assert_eq!(status, 200);
    assert!(api_text.contains("vigil_build_info"), "{api_text}");
    assert!(!text.contains(&ingest) && !text.contains(&viewer), "no token in the metrics");

    // Prometheus's linter: `_total` on counters, base units, no abbreviations or type
    // names in names, help on every family.
    let classic = classic_text(&text);
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    lint.stdin.take().expect("stdin").write_all(classic.as_bytes()).expect("feed promtool");
    let out = lint.wait_with_output().expect("promtool");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}\n---\n{classic}");

    // What promtool does not check: the prefix, one family per name, and the unit of every
    // histogram (latencies in seconds).
    let mut families = std::collections::HashSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').expect("# TYPE name kind");
        assert!(name.starts_with("vigil_"), "{name} lacks the vigil_ prefix");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
        assert!(families.insert(name.to_owned()), "{name} registered twice");
        if kind == "histogram" {
            assert!(name.ends_with("_seconds") || name.ends_with("_bytes"), "histogram {name} has no unit");
        }
    }
    assert!(families.len() >= 30, "{families:?}");
}

/// The systemd notify protocol, with the test as the service manager: `READY=1` once the
/// API answers, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `RELOADING=1` (with its
/// `MONOTONIC_USEC`) then `READY=1` around a SIGHUP reload, `STOPPING=1` on SIGTERM.
#[test]
fn serve_speaks_sd_notify_readiness_watchdog_reload_and_stop() {
    use std::os::unix::net::UnixDatagram;

    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
    socket.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let api = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.path().join("vigil.toml"),
        format!(
            "[api]\nlisten = \"{api}\"\n[api.auth]\nrequired = false\n[store]\npath = \"data\"\n[rules]\ndir = {:?}\nwatch = false\n",
            crate::helpers::rules_dir()
        ),
    )
    .expect("config");
    // `exec` keeps the shell's pid, so WATCHDOG_PID names the vigil process as systemd's would.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config vigil.toml serve")
        .arg(crate::helpers::vigil_bin())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("vigil.log")).expect("log"))
        .spawn()
        .expect("spawn vigil");
    let log = || std::fs::read_to_string(dir.path().join("vigil.log")).unwrap_or_default();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no notification ({e}); log:\n{}", log()));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // Skips watchdog pings to the next message with `what`.
    let until = |what: &str, pings: &mut usize| loop {
        let message = next();
        if message.contains(what) {
            return message;
        }
        assert_eq!(message.trim(), "WATCHDOG=1", "unexpected notification");
        *pings += 1;
    };
    let mut pings = 0;
    let ready = until("READY=1", &mut pings);
    assert!(ready.contains(&format!("STATUS=Running: API on {api}")), "{ready}");
    assert_eq!(http_get_text(&format!("http://{api}/readyz")).map(|_| ()), Some(()), "ready means the API answers");
    until("WATCHDOG=1", &mut pings);

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let reloading = until("RELOADING=1", &mut pings);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let reloaded = until("READY=1", &mut pings);
    assert!(reloaded.contains("STATUS=Running ") && reloaded.contains("rule(s)"), "{reloaded}");
    assert_eq!(child.try_wait().expect("wait"), None, "SIGHUP reloads; it does not stop Vigil");

    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    until("STOPPING=1", &mut pings);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}; log:\n{}", log());
    assert!(log().contains("SIGHUP: reloading rules and playbooks."), "{}", log());
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// `scripts/package.sh` on the tests' own build: the .deb's files, conffile and control
/// (`dpkg-deb`), its unit (`systemd-analyze verify` and `security`), and an install into a
/// scratch root by dpkg itself, whose maintainer scripts create the `vigil` user there;
/// the installed binary checks the installed config with the installed rules.
#[test]
fn the_debian_package_installs_a_service_that_checks_its_own_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = std::path::Path::new(crate::helpers::vigil_bin());
    let target = bin.parent().and_then(|debug| debug.parent()).expect("the target directory");
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = dir.path().join("deb");
    run(Command::new(repo.join("scripts/package.sh"))
        .args(["--profile", "dev", "--no-build", "--fast", "--output"])
        .arg(&output)
        .env("CARGO_TARGET_DIR", target));
    let deb = std::fs::read_dir(&output)
        .expect("output")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<&str> = contents.lines().filter_map(|l| l.split_whitespace().nth(5)).collect();
    for want in [
        "./usr/bin/vigil",
        "./etc/vigil/vigil.toml",
        "./lib/systemd/system/vigil.service",
        "./usr/lib/sysusers.d/vigil.conf",
        "./usr/share/vigil/rules/auth_brute_force.rhai",
        "./usr/share/vigil/rules/lib/common.rhai",
        "./usr/share/vigil/playbooks/block_source_ip.toml",
        "./usr/share/vigil/systemd/capabilities.conf",
        "./usr/share/man/man1/vigil.1.gz",
        "./usr/share/man/man1/vigil-serve.1.gz",
        "./usr/share/bash-completion/completions/vigil",
        "./usr/share/zsh/vendor-completions/_vigil",
        "./usr/share/fish/vendor_completions.d/vigil.fish",
        "./usr/share/doc/vigil/copyright",
        "./usr/share/doc/vigil/operations.md.gz",
    ] {
        assert!(files.contains(&want), "{want} is not in the package:\n{contents}");
    }
    assert_eq!(run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("conffiles")).trim(), "/etc/vigil/vigil.toml");
    let control = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for want in ["Package: vigil", "Depends: adduser, libc6", "postinst", "prerm", "postrm"] {
        assert!(control.contains(want), "{want} missing:\n{control}");
    }

    // dpkg installs into a scratch root; the maintainer scripts run outside a chroot with
    // DPKG_ROOT set, as for a bootstrap. The dependencies live outside that root.
    let root = dir.path().join("root");
    for sub in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "etc"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    let installed = run(Command::new("dpkg")
        .arg(format!("--instdir={}", root.display()))
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["--force-script-chrootless", "--force-depends", "--force-not-root", "-i"])
        .arg(&deb));
    assert!(installed.contains("Setting up vigil"), "{installed}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("postinst wrote etc/passwd");
    assert!(passwd.lines().any(|l| l.starts_with("vigil:") && l.contains(":/var/lib/vigil:")), "{passwd}");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).expect("status");
    assert!(status.contains("Package: vigil\nStatus: install ok installed"), "{status}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("etc/vigil/vigil.toml")).expect("config").permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "the config is for root and the vigil group only");

    // The installed binary on the installed config, with the installed rules and playbooks
    // (the config's absolute paths, moved under the scratch root by the overrides).
    let checked = run(Command::new(root.join("usr/bin/vigil"))
        .arg("--config")
        .arg(root.join("etc/vigil/vigil.toml"))
        .args(["config", "check"])
        .env("VIGIL_STORE__PATH", root.join("var/lib/vigil"))
        .env("VIGIL_RULES__DIR", root.join("usr/share/vigil/rules"))
        .env("VIGIL_PLAYBOOKS__DIR", root.join("usr/share/vigil/playbooks")));
    assert!(checked.contains(": OK"), "{checked}");
    assert!(!checked.contains("warning"), "{checked}");

    // The unit, as systemd reads it: no unknown key, no bad value (the binary's path moved
    // under the scratch root so its commands exist); and its sandbox scored by systemd.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/vigil.service")).expect("unit");
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).expect("mkdir");
    let bin = root.join("usr/bin/vigil");
    std::fs::write(units.join("vigil.service"), unit.replace("/usr/bin/vigil", &bin.display().to_string()))
        .expect("unit copy");
    let verified = run(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(units.join("vigil.service")));
    assert!(verified.trim().is_empty(), "systemd-analyze verify:\n{verified}");
    let security = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", root.display()))
        .arg("vigil.service"));
    assert!(security.contains("Overall exposure level for vigil.service"), "{security}");
}
