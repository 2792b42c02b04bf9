//! The config file: one TOML document assembled from each module's own section.
//!
//! Loading has two phases. [`load`] parses and checks everything without side effects and
//! reports *every* error with its path (`sinks.archive.path: must not be empty`); building
//! the running system from the result is `app`'s job. With no file, every section takes
//! its defaults and Vigil runs on the embedded store under `data/`.
//!
//! Layer 9: uses every module's config type (including `api`'s); nothing uses it but `app`
//! and `cli`.

mod env;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::actions::ActionsConfig;
use crate::api::ApiConfig;
use crate::detect::DetectConfig;
use crate::export::SinkConfig;
use crate::incident::escalation::IncidentsConfig;
use crate::playbook::PlaybooksConfig;
use crate::rules::RulesConfig;
use crate::source::IngestConfig;
use crate::source::file::FileSourceConfig;
use crate::source::syslog::SyslogConfig;
use crate::store::StoreConfig;
use crate::telemetry::TelemetryConfig;

/// One problem in the config, located by its dotted path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Dotted path of the setting (`store.sync`), or the file for syntax errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

/// Ingest sources (`[sources]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Syslog listeners.
    pub syslog: SyslogConfig,
    /// Tailed files (`[[sources.file]]`).
    pub file: Vec<FileSourceConfig>,
    /// NATS JetStream (`[sources.nats]`).
    pub nats: Option<crate::source::nats::NatsSourceConfig>,
}

/// Shutdown behaviour (`[shutdown]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long sinks may take to deliver what is in the log before Vigil stops anyway
    /// (what they miss is delivered after the next start).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub flush_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { flush_timeout: Duration::from_secs(10) }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
#[schemars(default, deny_unknown_fields, title = "Vigil configuration")]
pub struct VigilConfig {
    /// `[store]`: the embedded database.
    pub store: StoreConfig,
    /// `[ingest]`: limits on what is accepted.
    pub ingest: IngestConfig,
    /// `[telemetry]`: logging.
    pub telemetry: TelemetryConfig,
    /// `[api]`: the HTTP API.
    pub api: ApiConfig,
    /// `[sources]`: syslog and file inputs.
    pub sources: SourcesConfig,
    /// `[rules]`: rule directory and sandbox limits.
    pub rules: RulesConfig,
    /// `[detect]`: windows, lateness, memory bounds.
    pub detect: DetectConfig,
    /// `[incidents]`: escalation.
    pub incidents: IncidentsConfig,
    /// `[sinks.NAME]`: destinations.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[actions]`: containment backends and the safety policy.
    pub actions: ActionsConfig,
    /// `[playbooks]`: the playbook runner.
    pub playbooks: PlaybooksConfig,
    /// `[plugins]`: WebAssembly plugins.
    pub plugins: crate::plugins::PluginsConfig,
    /// `[intel]`: threat-intelligence feeds.
    pub intel: crate::intel::IntelConfig,
    /// `[hunt]`: indexes and saved hunts.
    pub hunt: crate::hunt::HuntConfig,
    /// `[forensics]`: evidence storage and retention.
    pub forensics: crate::forensics::ForensicsConfig,
    /// `[shutdown]`.
    pub shutdown: ShutdownConfig,
}

const SECTIONS: [&str; 16] = [
    "store",
    "ingest",
    "telemetry",
    "api",
    "sources",
    "rules",
    "detect",
    "incidents",
    "sinks",
    "actions",
    "playbooks",
    "plugins",
    "intel",
    "hunt",
    "forensics",
    "shutdown",
];

/// The JSON Schema (draft 2020-12) of the config file, generated from the types that read
/// it: editors validate and complete `vigil.toml` with it (through a TOML language server),
/// and `vigil config schema` prints it.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(VigilConfig)).unwrap_or_default()
}

/// Reads and checks a config file; every error is reported.
pub fn load(path: &Path) -> Result<VigilConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))])?;
    parse(&text).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| if e.path.is_empty() { ConfigError::new(path.display().to_string(), e.message) } else { e })
            .collect()
    })
}

/// Parses and checks config text, with `${NAME}` and the `VIGIL_<SECTION>__<KEY>`
/// overrides taken from the process environment; every error is reported.
pub fn parse(text: &str) -> Result<VigilConfig, Vec<ConfigError>> {
    parse_with(text, &|name| std::env::var(name).ok(), std::env::vars())
}

/// [`parse`] with the environment given: `lookup` for `${NAME}` references, `vars` for
/// the overrides (which are taken as written, after the file's references are expanded).
pub fn parse_with(
    text: &str,
    lookup: env::Lookup<'_>,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<VigilConfig, Vec<ConfigError>> {
    let mut table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| vec![ConfigError::new("", syntax_message(&e, text))])?;
    let mut errors = Vec::new();
    for (section, value) in table.iter_mut() {
        env::expand_all(value, &mut section.clone(), lookup, &mut errors);
    }
    env::apply_overrides(&mut table, vars, &SECTIONS, &mut errors);
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            errors.push(ConfigError::new(key, format!("unknown section; expected one of: {}", SECTIONS.join(", "))));
        }
    }
    let mut config = VigilConfig {
        store: section(&mut table, "store", &mut errors),
        ingest: section(&mut table, "ingest", &mut errors),
        telemetry: section(&mut table, "telemetry", &mut errors),
        api: section(&mut table, "api", &mut errors),
        sources: section(&mut table, "sources", &mut errors),
        rules: section(&mut table, "rules", &mut errors),
        detect: section(&mut table, "detect", &mut errors),
        incidents: section(&mut table, "incidents", &mut errors),
        sinks: BTreeMap::new(),
        actions: section(&mut table, "actions", &mut errors),
        playbooks: section(&mut table, "playbooks", &mut errors),
        plugins: section(&mut table, "plugins", &mut errors),
        intel: section(&mut table, "intel", &mut errors),
        hunt: section(&mut table, "hunt", &mut errors),
        forensics: section(&mut table, "forensics", &mut errors),
        shutdown: section(&mut table, "shutdown", &mut errors),
    };
    match table.remove("sinks") {
        None => {}
        Some(toml::Value::Table(sinks)) => {
            for (name, value) in sinks {
                match deserialize::<SinkConfig>(value, &format!("sinks.{name}")) {
                    Ok(sink) => {
                        config.sinks.insert(name, sink);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        Some(_) => errors.push(ConfigError::new("sinks", "must be a table of named sinks ([sinks.NAME])")),
    }
    errors.extend(validate(&config));
    if errors.is_empty() { Ok(config) } else { Err(errors) }
}

/// Checks every section's semantic rules.
pub fn validate(config: &VigilConfig) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    problems.extend(config.store.validate());
    problems.extend(config.ingest.validate());
    problems.extend(config.api.validate());
    problems.extend(config.sources.syslog.validate());
    if let Some(nats) = &config.sources.nats {
        problems.extend(nats.validate());
    }
    problems.extend(config.rules.validate());
    problems.extend(config.detect.validate());
    problems.extend(config.incidents.escalation.validate());
    problems.extend(config.incidents.priority.validate());
    problems.extend(config.actions.validate());
    problems.extend(config.playbooks.validate());
    problems.extend(config.plugins.validate());
    problems.extend(config.intel.validate());
    problems.extend(config.hunt.validate());
    problems.extend(config.forensics.validate());
    for (i, file) in config.sources.file.iter().enumerate() {
        if file.path.as_os_str().is_empty() {
            problems.push((format!("sources.file.{i}.path"), "must not be empty".into()));
        }
    }
    for (name, sink) in &config.sinks {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            problems.push((format!("sinks.{name}"), "sink names may only use A-Z a-z 0-9 _ -".into()));
        }
        problems.extend(sink.validate(name));
    }
    problems.into_iter().map(|(path, message)| ConfigError::new(path, message)).collect()
}

fn section<T: DeserializeOwned + Default>(table: &mut toml::Table, name: &str, errors: &mut Vec<ConfigError>) -> T {
    match table.remove(name) {
        None => T::default(),
        Some(value) => deserialize(value, name).unwrap_or_else(|e| {
            errors.push(e);
            T::default()
        }),
    }
}

fn deserialize<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { prefix.to_owned() } else { format!("{prefix}.{inner}") };
        ConfigError::new(path, e.into_inner().to_string())
    })
}

fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let config = parse("").expect("valid");
        assert_eq!(config.store.path, std::path::PathBuf::from("data"));
        assert!(config.sinks.is_empty());
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let text = r#"
            [store]
            sync = "sometimes"
            [ingest]
            max_depth = 0
            [api]
            listen = "not an address"
            [sinks.archive]
            type = "file"
            path = ""
            [sinks.bad]
            type = "nope"
            [bogus]
            x = 1
        "#;
        let errors = parse(text).expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        for expected in ["bogus", "store.sync", "api.listen", "sinks.bad", "ingest.max_depth", "sinks.archive.path"] {
            assert!(paths.contains(&expected), "missing {expected} in {errors:#?}");
        }
        let sync = errors.iter().find(|e| e.path == "store.sync").expect("store.sync");
        assert!(sync.message.contains("sometimes"), "{sync}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errors = parse("[store]\npath = \n").expect_err("syntax");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.starts_with("line 2"), "{}", errors[0]);
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("examples directory") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|errors| panic!("{}: {errors:#?}", path.display()));
                checked += 1;
            }
        }
        assert!(checked > 0, "no example configs found in {}", dir.display());
    }
}
