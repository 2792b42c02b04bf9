//! Shared helpers: a `vigil` server process in a temp directory, an HTTP client, waiting on
//! conditions with a deadline, and reading a file sink's output.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `vigil` binary built for this test run.
pub fn vigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// The shipped rule pack.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

/// A free TCP port on 127.0.0.1 (released before use; a race with other processes is
/// possible but unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `check` every 25 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A `vigil serve` process with its own data directory and config.
pub struct Server {
    child: Option<Child>,
    /// The working directory (data, config, sink output, logs).
    pub dir: PathBuf,
    /// The API address.
    pub api: SocketAddr,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Server {
    /// Writes a config (API on a free port, store and rules set) followed by `extra`, and
    /// starts the server; waits until it is ready.
    pub fn start(dir: &Path, extra: &str) -> Self {
        Self::start_with_env(dir, extra, &[])
    }

    /// [`start`](Self::start) with extra environment variables for the process.
    pub fn start_with_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Self {
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join("vigil.toml");
        // The shipped rules unless `extra` brings its own `[rules]`.
        let rules =
            if extra.contains("[rules]") { String::new() } else { format!("[rules]\ndir = {:?}\n", rules_dir()) };
        // Tests that are not about authentication run with it off; the auth tests turn it on.
        let auth = if extra.contains("[api.auth]") { "" } else { "[api.auth]\nrequired = false\n" };
        let text = format!(
            "[api]\nlisten = \"{api}\"\n{auth}[store]\npath = {data:?}\n{rules}[telemetry]\nlog_format = \"json\"\nlog_level = \"info\"\n{extra}\n",
            data = dir.join("data"),
        );
        std::fs::write(&config, text).expect("write config");
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut server = Self { child: None, dir: dir.to_owned(), api, config, env };
        server.restart();
        server
    }

    /// Starts the process again on the same directory and waits until it is ready.
    pub fn restart(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("vigil.log")).expect("log file");
        let child = Command::new(vigil_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vigil");
        self.child = Some(child);
        let url = format!("http://{}/readyz", self.api);
        wait_for(Duration::from_secs(60), "the server to be ready", || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("vigil exited early with {status}; log:\n{}", self.log());
            }
            (http_get_status(&url) == Some(200)).then_some(())
        });
    }

    /// Base URL of the API.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Everything the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vigil.log")).unwrap_or_default()
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get_text(&self.url("/metrics")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking GET that returns the status, or `None` when nothing answers.
pub fn http_get_status(url: &str) -> Option<u16> {
    blocking(async { reqwest::get(url).await.ok().map(|r| r.status().as_u16()) })
}

/// A blocking GET that returns the body.
pub fn http_get_text(url: &str) -> Option<String> {
    blocking(async { reqwest::get(url).await.ok()?.text().await.ok() })
}

/// Runs a future to completion on a small runtime of its own.
pub fn blocking<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

/// The value of a metric line (`name{labels} value`) in Prometheus text, summed over
/// every line whose name and labels contain all of `parts`.
pub fn metric(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The JSON lines of a file sink's output (an empty list while the file does not exist).
pub fn sink_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The sink may be mid-write: only complete lines count.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("sink line is not JSON ({e}): {l}")))
        .collect()
}

/// A `nats-server` on a free loopback port (with JetStream when given a store directory),
/// stopped on drop.
pub struct Nats {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl Nats {
    /// Starts the server and waits until it listens.
    pub fn start(jetstream_dir: Option<&Path>) -> Self {
        let port = free_port();
        let mut command = Command::new("nats-server");
        command.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(dir) = jetstream_dir {
            command.arg("-js").arg("-sd").arg(dir);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (Debian package nats-server; scripts/setup.sh installs it)");
        wait_for(Duration::from_secs(10), "nats-server to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        Self { child, url: format!("nats://127.0.0.1:{port}") }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs JSON to the server's API; the status and the JSON answer.
pub fn post(server: &Server, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    blocking(async {
        let response = reqwest::Client::new().post(server.url(path)).json(&body).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    })
}

/// GETs JSON from the server's API.
pub fn get(server: &Server, path: &str) -> serde_json::Value {
    blocking(async { reqwest::get(server.url(path)).await.expect("request").json().await.expect("json") })
}

/// Waits (up to 30 s) for the first incident a rule opened, and returns it.
pub fn wait_for_incident(server: &Server, rule_id: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(30), &format!("an incident of {rule_id}"), || {
        get(server, "/v1/incidents")["incidents"].as_array()?.iter().find(|i| i["rule_id"] == rule_id).cloned()
    })
}

/// `n` failed SSH logins from `ip` as Vigil NDJSON, one a second up to now.
pub fn ssh_failures(ip: &str, n: usize) -> String {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let time = (now - chrono::Duration::seconds((n - i) as i64)).to_rfc3339();
            format!(
                r#"{{"class":"authentication","action":"ssh_login","outcome":"failure","source":{{"ip":"{ip}"}},"user":{{"name":"root"}},"time":"{time}"}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// POSTs an NDJSON body to `/v1/events` and expects 202.
pub fn post_events(server: &Server, body: String) {
    let status = blocking(async {
        reqwest::Client::new().post(server.url("/v1/events")).body(body).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(status.ok(), Some(202));
}

/// A token of `role` for `name`, created with `vigil token create` on the config in `dir`.
pub fn token(dir: &Path, role: &str, name: &str) -> String {
    let out = Command::new(vigil_bin())
        .arg("--config")
        .arg(dir.join("vigil.toml"))
        .args(["token", "create", "--role", role, "--name", name])
        .current_dir(dir)
        .output()
        .expect("vigil token create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// Where `scripts/setup.sh` unpacks the peer programs Debian packages but the machine
/// does not install (syslog-ng, promtool).
pub fn peers_dir() -> PathBuf {
    std::env::var_os("VIGIL_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/vigil-peers"))
}

/// The Python of the project's venv (`scripts/setup.sh`), where the Python peers live.
pub fn python() -> std::path::PathBuf {
    let venv = std::env::var_os("VIGIL_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/vigil-venv"));
    let python = venv.join("bin/python");
    assert!(python.exists(), "the Python venv is missing at {}: run scripts/setup.sh", venv.display());
    python
}

/// A peer program (a Python server from the venv, …) listening on a loopback port; killed
/// when dropped.
#[derive(Debug)]
pub struct Peer(std::process::Child);

impl Peer {
    /// Starts `command` with its stderr in `log` and waits until `port` accepts
    /// connections; panics with the log when the program exits first.
    pub fn start(mut command: Command, what: &str, port: u16, log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("peer log");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({e}); run scripts/setup.sh"));
        let mut peer = Self(child);
        wait_for(Duration::from_secs(30), what, || {
            if let Ok(Some(status)) = peer.0.try_wait() {
                panic!("{what} exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
        });
        peer
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the `vigil` binary in `dir` with `dir/vigil.toml` as its config.
pub fn vigil_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(vigil_bin())
        .arg("--config")
        .arg(dir.join("vigil.toml"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run vigil")
}

/// PEM files for mutual TLS in `dir`: a CA, a server certificate for `localhost` and a client
/// certificate, both signed by it.
#[derive(Debug)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// The client's certificate.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates them into `dir`.
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        // Each certificate has its own subject: rcgen's default one for all three would make
        // every leaf look self-issued to OpenSSL (subject = issuer), which refuses it.
        let named = |sans: Vec<String>, cn: &str| {
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
            params
        };
        let mut ca_params = named(Vec::new(), "Vigil test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let ca = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("key");
        let server = named(vec!["localhost".into()], "localhost").signed_by(&server_key, &ca).expect("cert");
        let client_key = KeyPair::generate().expect("key");
        let client = named(vec!["soc-console".into()], "soc-console").signed_by(&client_key, &ca).expect("cert");
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
        }
    }
}

/// Runs a pipeline on `config` over `events` (appended `chunk` at a time), shuts it down
/// and returns the alerts it logged.
pub fn live_alerts(
    config: &vigil::config::VigilConfig,
    events: &[vigil::event::SecurityEvent],
    chunk: usize,
) -> Vec<vigil::detect::Alert> {
    blocking(async {
        let pipeline = vigil::app::Pipeline::start(config.clone(), Default::default()).await.expect("start");
        for batch in events.chunks(chunk) {
            pipeline.ingestor.append("test", batch, Vec::new()).await.expect("append");
        }
        pipeline.shutdown().await.expect("shutdown");
    });
    let store = vigil::store::Store::open_read_only(&config.store.path).expect("store");
    let log = vigil::store::Log::read_only(&store).expect("log");
    log.read(1, usize::MAX, usize::MAX)
        .expect("read")
        .into_iter()
        .filter(|e| e.kind == vigil::event::RecordKind::Alert.tag())
        .map(|e| serde_json::from_slice(&e.payload).expect("alert"))
        .collect()
}

/// Backtests the store of `config` with the rules of `rules` and asserts it raises exactly
/// the `live` alerts (rule, group, events, time); returns the report.
pub fn assert_backtest_reproduces(
    config: &vigil::config::VigilConfig,
    rules: &Path,
    live: &[vigil::detect::Alert],
) -> vigil::incident::backtest::BacktestReport {
    let store = vigil::store::Store::open_read_only(&config.store.path).expect("store");
    let log = vigil::store::Log::read_only(&store).expect("log");
    let set = vigil::rules::RuleSet::load_dir(rules, &Default::default()).expect("rules");
    let report =
        vigil::incident::backtest::run(&log, set, config.detect.clone(), Default::default(), None, None, |_, _| {})
            .expect("backtest");
    let key = |a: &vigil::detect::Alert| (a.rule_id.to_string(), a.group_key.clone(), a.event_ids.clone(), a.time);
    let live: std::collections::BTreeSet<_> = live.iter().map(key).collect();
    let replayed: std::collections::BTreeSet<_> = report.alerts.iter().map(key).collect();
    assert_eq!(live, replayed, "backtest and live must raise identical alerts");
    report
}
