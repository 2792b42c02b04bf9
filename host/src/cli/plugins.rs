//! `vigil plugin`: inspect, measure, scaffold and sign plugins here, and list, load, reload
//! and unload them in a running Vigil (through its API).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;

use super::sinks::{call, refused, server};
use crate::config::VigilConfig;
use crate::plugins::{Kind, PluginHost, PluginsConfig, manifest};

/// `vigil plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The plugins a running Vigil has loaded.
    List {
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
        /// One JSON object per plugin.
        #[arg(long)]
        json: bool,
    },
    /// Load (or replace) `<plugins dir>/NAME` in a running Vigil; on failure the previous
    /// version keeps running.
    Load {
        /// The plugin's directory name under `[plugins] dir`.
        name: String,
        /// The server.
        #[arg(long)]
        url: Option<String>,
    },
    /// Same as `load`, for a plugin already loaded.
    Reload {
        /// The plugin's name.
        name: String,
        /// The server.
        #[arg(long)]
        url: Option<String>,
    },
    /// Unload a plugin from a running Vigil.
    Unload {
        /// The plugin's name.
        name: String,
        /// The server.
        #[arg(long)]
        url: Option<String>,
    },
    /// The manifest, grants, imports, exports, API version, digest and signature status of
    /// a plugin directory (or its plugin.toml), checked as loading would check it.
    Inspect {
        /// A plugin directory or its `plugin.toml`.
        path: PathBuf,
    },
    /// Fuel and time per call of a plugin on an input.
    Cost {
        /// A plugin directory or its `plugin.toml`.
        path: PathBuf,
        /// The input: an event (transform), a JSON value (function) or an action context's
        /// params (action) — a file, or `-` for stdin.
        #[arg(long)]
        input: PathBuf,
        /// Calls to measure.
        #[arg(long, default_value_t = 100)]
        runs: usize,
    },
    /// Scaffold a plugin crate that builds with vigil-sdk.
    New {
        /// The plugin's name (and the crate's directory).
        name: String,
        /// action, transform or function.
        #[arg(long, default_value = "action")]
        kind: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print a new Ed25519 signing key (keep the seed secret; trust the public key in
    /// `[plugins.trusted_keys]`).
    Keygen,
    /// Sign a plugin's component: writes `signed_by` and `signature` into its manifest.
    Sign {
        /// A plugin directory or its `plugin.toml`.
        path: PathBuf,
        /// A file holding the base64 seed `keygen` printed.
        #[arg(long)]
        key: PathBuf,
        /// The key's id, as named in `[plugins.trusted_keys]`.
        #[arg(long)]
        key_id: String,
    },
}

/// Runs a plugin command.
pub fn run(config: &VigilConfig, command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::List { url, json } => list(config, url, json),
        PluginCommand::Load { name, url } | PluginCommand::Reload { name, url } => {
            remote(reqwest::Method::POST, format!("{}/v1/plugins/{name}/reload", server(config, url)))
        }
        PluginCommand::Unload { name, url } => {
            remote(reqwest::Method::DELETE, format!("{}/v1/plugins/{name}", server(config, url)))
        }
        PluginCommand::Inspect { path } => inspect(config, &path),
        PluginCommand::Cost { path, input, runs } => cost(config, &path, &input, runs),
        PluginCommand::New { name, kind, dir } => scaffold(&name, &kind, &dir),
        PluginCommand::Keygen => keygen(),
        PluginCommand::Sign { path, key, key_id } => sign(&path, &key, &key_id),
    }
}

fn list(config: &VigilConfig, url: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/plugins", server(config, url));
    let (code, body) = super::block_on_value(call(reqwest::Method::GET, endpoint, None))?;
    if !code.is_success() {
        return Ok(refused(code, &body));
    }
    let plugins = body["plugins"].as_array().cloned().unwrap_or_default();
    for p in &plugins {
        if json {
            println!("{p}");
        } else {
            let digest: String = p["digest"].as_str().unwrap_or("").chars().take(12).collect();
            println!(
                "{:<20} {:<10} {:<9} {:<8} {}  {}",
                p["name"].as_str().unwrap_or(""),
                p["version"].as_str().unwrap_or(""),
                p["kind"].as_str().unwrap_or(""),
                p["signature"]["status"].as_str().unwrap_or(""),
                digest,
                p["description"].as_str().unwrap_or(""),
            );
        }
    }
    if !json {
        println!("{} plugin(s)", plugins.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn remote(method: reqwest::Method, endpoint: String) -> anyhow::Result<ExitCode> {
    let (code, body) = super::block_on_value(call(method, endpoint, None))?;
    if !code.is_success() {
        return Ok(refused(code, &body));
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(ExitCode::SUCCESS)
}

fn manifest_path(path: &Path) -> PathBuf {
    if path.is_dir() { path.join("plugin.toml") } else { path.to_owned() }
}

/// A host for one-off use from the command line (no store: `kv` reads nothing).
fn offline_host(config: &VigilConfig) -> anyhow::Result<PluginHost> {
    let settings = PluginsConfig { cache_dir: None, ..config.plugins.clone() };
    PluginHost::new(settings, None, None, None, &crate::telemetry::MetricsRegistry::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn inspect(config: &VigilConfig, path: &Path) -> anyhow::Result<ExitCode> {
    let host = offline_host(config)?;
    match host.prepare(&manifest_path(path)) {
        Ok(plugin) => {
            println!("{}", serde_json::to_string_pretty(&plugin.info())?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("would not load: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn cost(config: &VigilConfig, path: &Path, input: &Path, runs: usize) -> anyhow::Result<ExitCode> {
    let text = if input == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?
    };
    let value: serde_json::Value = serde_json::from_str(&text).context("the input is not JSON")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _guard = runtime.enter();
    let host = offline_host(config)?;
    let plugin = match host.load(&manifest_path(path)) {
        Ok(plugin) => plugin,
        Err(e) => {
            eprintln!("does not load: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let name = plugin.manifest().name.clone();
    let kind = plugin.manifest().kind;
    let event = if kind == Kind::Transform {
        Some(
            serde_json::from_value::<crate::event::SecurityEvent>(value.clone())
                .context("the input is not an event")?,
        )
    } else {
        None
    };
    let (mut fuel, mut times) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let stats = match (kind, &event) {
            (Kind::Transform, Some(event)) => plugin.transform(event).map(|(_, s)| s),
            (Kind::Function, _) => plugin.call(&value, None, None).map(|(_, s)| s),
            // A decoder is costed on the input as a record: a string as its text, else JSON.
            (Kind::Decode, _) => {
                let record = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                plugin.decode(record.as_bytes()).map(|(_, s)| s)
            }
            _ => {
                let params = value.as_object().cloned().unwrap_or_default();
                let ctx = crate::actions::ActionContext::new("cost", params);
                let wit = crate::plugins::wit_context(&ctx, true);
                plugin.execute(wit, None).map(|(_, s)| s)
            }
        };
        match stats {
            Ok(stats) => {
                fuel.push(stats.fuel);
                times.push(started.elapsed());
            }
            Err(e) => {
                eprintln!("{name}: the call failed: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    let mean_fuel = fuel.iter().sum::<u64>() / fuel.len() as u64;
    println!(
        "{name} ({}): {} call(s), fuel {mean_fuel} per call (limit {}), median {:?}, p99 {:?}",
        kind.as_str(),
        times.len(),
        plugin.manifest().limits.fuel,
        median,
        p99
    );
    Ok(ExitCode::SUCCESS)
}

fn scaffold(name: &str, kind: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let kind: Kind =
        serde_json::from_value(serde_json::json!(kind)).context("--kind: action, transform, function or decode")?;
    anyhow::ensure!(
        !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
        "the name must be a-z 0-9 _ - only"
    );
    let root = dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(root.join("src"))?;
    let module = name.replace('-', "_");
    let (trait_name, body) = match kind {
        Kind::Action => (
            "Action",
            "impl Action for Plugin {\n    fn execute(ctx: ActionContext) -> Result<Outcome, Error> {\n        let target = ctx.param_str(\"target\").ok_or_else(|| Error::InvalidInput(\"`target` is required\".into()))?;\n        if ctx.dry_run {\n            return Ok(Outcome::new(target, \"would act\"));\n        }\n        log::info(&format!(\"acting on {target}\"));\n        Ok(Outcome::new(target, \"done\"))\n    }\n}\n",
        ),
        Kind::Transform => (
            "Transform",
            "impl Transform for Plugin {\n    fn transform(event: Event) -> Result<String, Error> {\n        Ok(format!(\"{},{},{}\", event.time_ms, event.class, event.source_ip.unwrap_or_default()))\n    }\n}\n",
        ),
        Kind::Function => (
            "Function",
            "impl Function for Plugin {\n    fn call(input: Value) -> Result<Value, Error> {\n        Ok(Value::Bool(input.as_str().is_some_and(|s| s.starts_with(\"203.0.113.\"))))\n    }\n}\n",
        ),
        Kind::Decode => (
            "Decoder",
            "impl Decoder for Plugin {\n    fn decode(record: &[u8]) -> Result<Vec<Value>, Error> {\n        let text = std::str::from_utf8(record).map_err(|e| Error::InvalidInput(e.to_string()))?;\n        Ok(vec![json!({ \"class\": \"other\", \"message\": text })])\n    }\n}\n",
        ),
    };
    let uses = match kind {
        Kind::Action => "use vigil_sdk::{Action, ActionContext, Error, Outcome, log};",
        Kind::Transform => "use vigil_sdk::{Error, Event, Transform};",
        Kind::Function => "use serde_json::Value;\nuse vigil_sdk::{Error, Function};",
        Kind::Decode => "use serde_json::{Value, json};\nuse vigil_sdk::{Decoder, Error};",
    };
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nvigil-sdk = \"{}\"\nserde_json = \"1\"\n\n[profile.release]\nopt-level = \"s\"\nlto = true\npanic = \"abort\"\nstrip = true\n",
            env!("CARGO_PKG_VERSION")
        ),
    )?;
    std::fs::write(
        root.join("src/lib.rs"),
        format!(
            "//! The `{name}` Vigil plugin.\n\n{uses}\n\nstruct Plugin;\n\n{body}\nvigil_sdk::register_plugin!({}: Plugin);\n",
            if kind == Kind::Decode { "decoder" } else { kind.as_str() }
        ),
    )?;
    let grants = if kind == Kind::Action { "log = true\n" } else { "" };
    std::fs::write(
        root.join("plugin.toml"),
        format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\nkind = \"{}\"\napi_version = \"{}\"\ndescription = \"\"\ncomponent = \"{module}.wasm\"\n\n[capabilities]\n{grants}\n[limits]\nfuel = 100_000_000\nmemory = \"64MiB\"\ndeadline = \"5s\"\n",
            kind.as_str(),
            manifest::API_VERSIONS[0]
        ),
    )?;
    println!("created {} ({} plugin implementing vigil_sdk::{trait_name})", root.display(), kind.as_str());
    println!("build it as docs/plugins.md says, then copy {module}.wasm and plugin.toml into the plugins directory");
    Ok(ExitCode::SUCCESS)
}

fn keygen() -> anyhow::Result<ExitCode> {
    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    println!("seed (secret):     {}", b64.encode(seed));
    println!("public key (trust): {}", manifest::public_key(&seed));
    Ok(ExitCode::SUCCESS)
}

fn sign(path: &Path, key: &Path, key_id: &str) -> anyhow::Result<ExitCode> {
    let manifest_file = manifest_path(path);
    let m = manifest::Manifest::load(&manifest_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let component = std::fs::read(m.component_path(&manifest_file)).context("reading the component")?;
    let seed_text = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(seed_text.trim())
        .ok()
        .and_then(|s| s.try_into().ok())
        .context("the key file must hold the base64 seed `vigil plugin keygen` printed")?;
    let signature = manifest::sign(&component, &seed);
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&manifest_file)?)?;
    table.insert("signed_by".into(), toml::Value::String(key_id.to_owned()));
    table.insert("signature".into(), toml::Value::String(signature));
    std::fs::write(&manifest_file, toml::to_string(&table)?)?;
    println!("signed {} (sha256 {}) with key `{key_id}`", manifest_file.display(), manifest::digest(&component));
    Ok(ExitCode::SUCCESS)
}
