//! The command line (clap): parses flags into a command and runs it.
//!
//! Flags are parsed in two stages: clap turns them into [`Cli`]; the config file (if any)
//! is then loaded and validated, and flags like `--data-dir` override it.
//!
//! Top layer: may use every module.

mod evidence;
mod hunt;
mod incidents;
mod ingest;
mod input;
mod intel;
mod plugins;
mod response;
mod rules;
mod sigma;
mod sinks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::app::{self, Options, Pipeline, demo};
use crate::config::{self, VigilConfig};
use crate::rules::RuleSet;
use crate::source::decode::Format;

/// Vigil: security response engine.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    /// Config file (TOML). Without one, every setting takes its default.
    #[arg(long, short, global = true, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory; overrides `store.path`.
    #[arg(long, global = true, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: sources, detection, sinks and the HTTP API.
    Serve {
        /// Print each incident to stdout as it opens.
        #[arg(long)]
        print_incidents: bool,
    },
    /// Run the pipeline on a generated stream with attacks hidden in normal traffic, and
    /// print incidents as they open.
    Demo {
        /// Events to generate.
        #[arg(long, default_value_t = 5000)]
        events: usize,
        /// Seed for a reproducible stream.
        #[arg(long)]
        seed: Option<u64>,
        /// Keep serving (with the HTTP API) after the stream ends, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// Instead of running, write the labelled scenario for `vigil rules score` to this
        /// directory: `scenario.log` (mixed formats, read with `--format auto`) and
        /// `scenario.truth.json`.
        #[arg(long, conflicts_with = "keep_running")]
        scenario: Option<PathBuf>,
    },
    /// Ingest events from a file or stdin (`-`) into the log, or send them to a server.
    Ingest {
        /// File to read, or `-` for stdin.
        input: PathBuf,
        /// Input format: vigil (SecurityEvent JSON), auto, ecs, ocsf, windows (EVTX, XML,
        /// JSON), cloudtrail, azure, gcp_audit, okta, k8s_audit, github_audit, auditd, zeek,
        /// suricata, falco, cef, leef, syslog, or plugin:NAME.
        #[arg(long, default_value = "vigil")]
        format: Format,
        /// Send to a running server (`http://127.0.0.1:8470`) instead of opening the store.
        #[arg(long)]
        url: Option<String>,
    },
    /// Publish events to NATS JetStream, partitioned by a key field, for Vigil instances
    /// that consume `[sources.nats]`.
    Publish {
        /// NDJSON file of events, or `-` for stdin.
        input: PathBuf,
        /// Server URL (default: `sources.nats.url`).
        #[arg(long)]
        url: Option<String>,
        /// Partition count (default: `sources.nats.partitions`).
        #[arg(long)]
        partitions: Option<u32>,
        /// The field whose value picks the partition.
        #[arg(long, default_value = "source.ip")]
        key: String,
    },
    /// Scale-out status from JetStream: each partition consumer's lag, unacknowledged and
    /// redelivered messages (each instance's own view is in its `/metrics`: `vigil_nats_*`).
    Cluster {
        /// What to show.
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Inspect incidents.
    #[command(alias = "incident")]
    Incidents {
        /// What to show.
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Rule authoring tools: check, test, cost, list, backtest.
    Rules {
        /// What to do.
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Sigma rules: check what a directory compiles to, test rules on their regression data.
    Sigma {
        /// What to do.
        #[command(subcommand)]
        command: sigma::SigmaCommand,
    },
    /// WebAssembly plugins: inspect, cost, scaffold, sign; list, load, reload and unload
    /// them in a running Vigil.
    Plugin {
        /// What to do.
        #[command(subcommand)]
        command: plugins::PluginCommand,
    },
    /// Forensic evidence bundles: list, collect, verify (items, manifest, chain of custody),
    /// export, custody, retention sweep.
    Evidence {
        /// What to do.
        #[command(subcommand)]
        command: evidence::EvidenceCommand,
    },
    /// Hunt through the stored events: a time range, a filter (or a rule's condition),
    /// fields or a group-by with aggregates; as a table, JSON lines or CSV.
    Hunt(hunt::HuntArgs),
    /// Threat intelligence: sync feeds, import a STIX bundle, look a value up, export
    /// incidents as STIX 2.1.
    Intel {
        /// What to do.
        #[command(subcommand)]
        command: intel::IntelCommand,
    },
    /// Sink status (through the running server).
    Sinks {
        /// What to show.
        #[command(subcommand)]
        command: SinksCommand,
    },
    /// The dead-letter queue: records sinks refused permanently.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Playbooks: list, check, and plan what one would do for an incident (dry run).
    Playbooks {
        /// What to do.
        #[command(subcommand)]
        command: PlaybooksCommand,
    },
    /// Playbook runs: list, show, start, approve, deny, complete, cancel.
    Runs {
        /// What to do.
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// API tokens: create (shown once), list, revoke. Works beside a running server, which
    /// picks changes up at its next request.
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit trail of actions: verify its hash chain, export it.
    Audit {
        /// What to do.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Configuration tools.
    Config {
        /// What to do.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the JSON Schema of SecurityEvent v1.
    Schema,
    /// Print a completion script for a shell (`vigil completions bash > /etc/bash_completion.d/vigil`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of `vigil`, or write every command's page into a directory.
    #[command(hide = true)]
    Manpage {
        /// Write one page per command (`vigil.1`, `vigil-serve.1`, …) into this directory
        /// instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `vigil incidents …`
#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        /// Most incidents to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident as JSON.
    Show {
        /// Incident id.
        id: String,
    },
    /// The post-incident report (Markdown): timeline, triggering events, actions and
    /// outcomes, time to detect / contain / resolve.
    Report {
        /// Incident id.
        id: String,
    },
    /// Move an incident through its lifecycle (detected, acknowledged, investigating,
    /// contained, resolved, closed), through a running server.
    Transition {
        /// Incident id.
        id: String,
        /// Target status.
        status: String,
        /// Why.
        #[arg(long)]
        note: Option<String>,
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
    },
}

/// `vigil rules …`
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile every rule; report errors as file:line:col with a hint.
    Check {
        /// Rule directory (default: `rules.dir`).
        dir: Option<PathBuf>,
    },
    /// Run every rule's examples and check the alerts they must and must not produce.
    Test {
        /// Rule directory (default: `rules.dir`).
        dir: Option<PathBuf>,
    },
    /// Rhai operations and time per evaluation of each rule, on its examples.
    Cost {
        /// Rule directory (default: `rules.dir`).
        dir: Option<PathBuf>,
        /// Measure every rule (Sigma rules too, which have no examples) over the records
        /// of this file instead of over each rule's examples.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Format of the `--input` records (as for `vigil ingest`).
        #[arg(long, default_value = "vigil")]
        format: Format,
    },
    /// List the rules with their priority, classes and whether they run natively.
    List {
        /// Rule directory (default: `rules.dir`).
        dir: Option<PathBuf>,
    },
    /// Replay stored events through a rule set and report what it would have raised.
    Backtest {
        /// Start: RFC 3339 time, or a duration ago (`24h`). Default: the oldest record.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive), same forms. Default: now.
        #[arg(long)]
        to: Option<String>,
        /// Rule directory to test (default: `rules.dir`).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Replay this file (`-` for stdin) instead of the stored log, without storing it:
        /// lines are parsed, detected on and forgotten (like a time-machine replay).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        input: Option<PathBuf>,
        /// Format of the `--input` records (as for `vigil ingest`).
        #[arg(long, default_value = "vigil")]
        format: Format,
        /// Print every alert and incident as JSON lines instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Replay a file through the rules and score the incidents against labelled ground
    /// truth: recall, precision, true and false positives per rule, and the incidents
    /// that explain no label (truth file format: docs/rules.md).
    Score {
        /// The records to replay (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// Their format (as for `vigil ingest`).
        #[arg(long, default_value = "vigil")]
        format: Format,
        /// The truth file (JSON: `expect` and `benign` labels).
        #[arg(long)]
        truth: PathBuf,
        /// Rule directory to score (default: `rules.dir`).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Fail (exit 1) when recall is below this (0–1).
        #[arg(long)]
        min_recall: Option<f64>,
        /// Fail (exit 1) when precision is below this (0–1).
        #[arg(long)]
        min_precision: Option<f64>,
        /// Print the score as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `vigil sinks …`
#[derive(Debug, Subcommand)]
pub enum SinksCommand {
    /// State, breaker, backlog (records, bytes, age of the oldest) and DLQ size per sink.
    Status {
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Which dead letters (every option given must match).
#[derive(Debug, Clone, clap::Args)]
pub struct DlqSelect {
    /// Only this sink's letters.
    #[arg(long)]
    pub sink: Option<String>,
    /// Only letters whose reason contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// Dead-lettered at or after: RFC 3339 time, or a duration ago (`24h`).
    #[arg(long)]
    pub from: Option<String>,
    /// Dead-lettered before, same forms.
    #[arg(long)]
    pub to: Option<String>,
}

/// `vigil dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (reads the store; works with or without a running server).
    List {
        /// Which letters.
        #[command(flatten)]
        select: DlqSelect,
        /// Most letters to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with the stored record, as JSON.
    Show {
        /// The sink.
        sink: String,
        /// The record's sequence number.
        seq: u64,
    },
    /// Send matching letters again (after fixing the cause); delivered letters leave the
    /// queue, so replaying twice is safe. Goes through the running server.
    Replay {
        /// Which letters.
        #[command(flatten)]
        select: DlqSelect,
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
    },
    /// Delete matching letters. Goes through the running server.
    Purge {
        /// Which letters.
        #[command(flatten)]
        select: DlqSelect,
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
    },
}

/// `vigil playbooks …`
#[derive(Debug, Subcommand)]
pub enum PlaybooksCommand {
    /// List the playbooks with their steps.
    List {
        /// Playbook directory (default: `playbooks.dir`, or `playbooks/` in the rule directory).
        dir: Option<PathBuf>,
    },
    /// Check every playbook file against the actions; report every error.
    Check {
        /// Playbook directory.
        dir: Option<PathBuf>,
    },
    /// Print what the playbooks an incident triggers would do (a dry run: parameters,
    /// targets, inverses, approvals, policy decisions); nothing is executed.
    Plan {
        /// Incident id.
        incident: String,
        /// Plan this playbook instead of the ones the incident triggers.
        #[arg(long)]
        playbook: Option<String>,
    },
}

/// A decision on a waiting step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StepDecision {
    /// Approve an approval step.
    Approve,
    /// Deny an approval step (the run stops).
    Deny,
    /// Mark a manual step done.
    Complete,
}

impl std::fmt::Display for StepDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Complete => "complete",
        })
    }
}

/// `vigil runs …`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, oldest first.
    List {
        /// Only this incident's.
        #[arg(long)]
        incident: Option<String>,
    },
    /// Show a run with its steps as JSON.
    Show {
        /// Run id.
        id: String,
    },
    /// Start a playbook on an incident (through the running server).
    Start {
        /// Incident id.
        incident: String,
        /// Playbook id.
        playbook: String,
        /// Record a plan only.
        #[arg(long)]
        dry_run: bool,
        /// Who asks (authentication off; with a token, the token's name is recorded).
        #[arg(long = "as")]
        by: Option<String>,
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
    },
    /// Approve, deny or complete a waiting step (through the running server). With a token
    /// (`VIGIL_TOKEN`), the token's name and role are recorded; without authentication,
    /// `--as` and `--role` say who decides.
    Decide {
        /// approve, deny or complete.
        decision: StepDecision,
        /// Run id.
        run: String,
        /// Step id.
        step: String,
        /// Who decides (authentication off).
        #[arg(long = "as")]
        by: Option<String>,
        /// Their role (authentication off): viewer, responder, admin.
        #[arg(long)]
        role: Option<String>,
        /// Why.
        #[arg(long)]
        note: Option<String>,
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
    },
    /// Cancel a run that has not ended (through the running server).
    Cancel {
        /// Run id.
        run: String,
        /// Who cancels (authentication off; with a token, the token's name is recorded).
        #[arg(long = "as")]
        by: Option<String>,
        /// The server (default: the configured `api.listen`).
        #[arg(long)]
        url: Option<String>,
    },
}

/// `vigil cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Partition consumers with their lag and redeliveries.
    Status {
        /// Server URL (default: `sources.nats.url`).
        #[arg(long)]
        url: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// `vigil token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// ingest, viewer, responder or admin.
        #[arg(long)]
        role: String,
        /// Who or what holds it (recorded on what it does).
        #[arg(long)]
        name: String,
        /// Expire after this long (`90d`); default never.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token by id or name.
    Revoke {
        /// Token id (from `list`) or name.
        token: String,
    },
}

/// `vigil audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; fails on any edited, reordered or missing record.
    Verify,
    /// Write every record as JSON lines.
    Export {
        /// File to write (default: stdout).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// `vigil config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file and the rules it points to; report every error.
    Check,
    /// Print the effective config (the file, its `${VAR}` references and the
    /// `VIGIL_<SECTION>__<KEY>` overrides applied, defaults filled in) as TOML, with every
    /// secret redacted.
    Show,
    /// Print the JSON Schema of the config file, generated from the types that read it.
    Schema,
}

/// Writes the man pages: `vigil`'s to stdout, or one file per command into `dir`
/// (`vigil.1`, `vigil-serve.1`, `vigil-config-check.1`, …).
fn write_man_pages(dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout().lock())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // What needs no config.
    match &cli.command {
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&crate::event::json_schema())?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Config { command: ConfigCommand::Schema } => {
            println!("{}", serde_json::to_string_pretty(&config::json_schema())?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "vigil", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Manpage { dir } => return write_man_pages(dir.as_deref()),
        _ => {}
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("The configuration has {} error(s):", errors.len());
            for e in &errors {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    crate::telemetry::init_tracing(&config.telemetry);
    match cli.command {
        Command::Schema
        | Command::Config { command: ConfigCommand::Schema }
        | Command::Completions { .. }
        | Command::Manpage { .. } => unreachable!("handled above"),
        Command::Config { command: ConfigCommand::Check } => check_config(&cli, &config),
        Command::Config { command: ConfigCommand::Show } => {
            print!("{}", toml::to_string_pretty(&config).context("writing the config as TOML")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { print_incidents } => block_on(serve(config, print_incidents)),
        Command::Demo { scenario: Some(dir), seed, .. } => write_scenario(&dir, seed.unwrap_or(1)),
        Command::Demo { events, seed, keep_running, scenario: None } => {
            block_on(run_demo(config, demo::DemoOptions { events, seed }, keep_running))
        }
        Command::Ingest { input, format, url } => block_on(ingest::run(config, input, format, url)),
        Command::Incidents { command } => incidents::run(&config, command),
        Command::Rules { command } => rules::run(&config, command),
        Command::Sigma { command } => sigma::run(&config, command),
        Command::Sinks { command: SinksCommand::Status { url, json } } => sinks::status(&config, url, json),
        Command::Dlq { command } => sinks::dlq(&config, command),
        Command::Plugin { command } => plugins::run(&config, command),
        Command::Intel { command } => intel::run(&config, command),
        Command::Hunt(args) => hunt::run(&config, args),
        Command::Evidence { command } => evidence::run(&config, command),
        Command::Playbooks { command } => response::playbooks(&config, command),
        Command::Runs { command } => response::runs(&config, command),
        Command::Audit { command } => response::audit(&config, command),
        Command::Token { command } => token(&config, command),
        Command::Publish { input, url, partitions, key } => block_on(publish(config, input, url, partitions, key)),
        Command::Cluster { command: ClusterCommand::Status { url, json } } => {
            block_on(cluster_status(config, url, json))
        }
    }
}

async fn publish(
    config: VigilConfig,
    input: PathBuf,
    url: Option<String>,
    partitions: Option<u32>,
    key: String,
) -> anyhow::Result<ExitCode> {
    use crate::source::nats;
    let mut settings = config.sources.nats.clone().unwrap_or_default();
    if let Some(url) = url {
        settings.connection.url = url;
    }
    if let Some(p) = partitions {
        settings.partitions = p;
    }
    anyhow::ensure!(!settings.connection.url.is_empty(), "no NATS server: give --url or set sources.nats.url");
    let text = if input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?
    };
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        events.push(
            serde_json::from_str::<serde_json::Value>(line).with_context(|| format!("line {}: not JSON", i + 1))?,
        );
    }
    let client = settings.connection.connect(std::time::Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
    let js = async_nats::jetstream::new(client);
    nats::ensure_stream(&js, &settings.stream, &settings.prefix).await.map_err(anyhow::Error::msg)?;
    let counts =
        nats::publish(&js, &settings.prefix, settings.partitions, &key, &events).await.map_err(anyhow::Error::msg)?;
    println!(
        "published {} events to {} over {} partitions: {counts:?}",
        events.len(),
        settings.stream,
        settings.partitions
    );
    Ok(ExitCode::SUCCESS)
}

async fn cluster_status(config: VigilConfig, url: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let mut settings = config.sources.nats.clone().unwrap_or_default();
    if let Some(url) = url {
        settings.connection.url = url;
    }
    anyhow::ensure!(!settings.connection.url.is_empty(), "no NATS server: give --url or set sources.nats.url");
    let client = settings.connection.connect(std::time::Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
    let js = async_nats::jetstream::new(client);
    let status = crate::source::nats::cluster_status(&js, &settings.stream).await.map_err(anyhow::Error::msg)?;
    if json {
        for s in &status {
            println!("{}", serde_json::to_string(s)?);
        }
    } else {
        println!("{:<24}  {:<24}  {:>10}  {:>11}  {:>11}", "CONSUMER", "SUBJECT", "LAG", "UNACKED", "REDELIVERED");
        for s in &status {
            println!(
                "{:<24}  {:<24}  {:>10}  {:>11}  {:>11}",
                s.consumer, s.subject, s.pending, s.ack_pending, s.redelivered
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token(config: &VigilConfig, command: TokenCommand) -> anyhow::Result<ExitCode> {
    use crate::api::auth;
    let path = config.api.auth.tokens_path(&config.store.path);
    match command {
        TokenCommand::Create { role, name, expires_in } => {
            let role: crate::playbook::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let expires = expires_in
                .map(|e| humantime::parse_duration(&e).with_context(|| format!("--expires-in {e}")))
                .transpose()?;
            let (token, record) = auth::create_token(&path, &name, role, expires)
                .with_context(|| format!("creating a token in {}", path.display()))?;
            eprintln!("token {} ({}, {}) created; it is shown once:", record.id, record.name, record.role.as_str());
            println!("{token}");
        }
        TokenCommand::List => {
            println!("{:<8}  {:<24}  {:<9}  {:<20}  STATE", "ID", "NAME", "ROLE", "CREATED");
            for t in auth::read_tokens(&path)? {
                let state = match (t.revoked_at, t.expires_at) {
                    (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    (None, Some(at)) if at <= chrono::Utc::now() => "expired".into(),
                    (None, Some(at)) => format!("expires {}", at.format("%Y-%m-%d")),
                    (None, None) => "live".into(),
                };
                println!(
                    "{:<8}  {:<24}  {:<9}  {:<20}  {state}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    t.created_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
        TokenCommand::Revoke { token } => {
            let record = auth::revoke_token(&path, &token)?;
            println!("revoked {} ({})", record.id, record.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_config(cli: &Cli) -> Result<VigilConfig, Vec<config::ConfigError>> {
    let mut config = match &cli.config {
        Some(path) => config::load(path)?,
        None => config::parse("")?,
    };
    if let Some(dir) = &cli.data_dir {
        config.store.path = dir.clone();
    }
    Ok(config)
}

/// Runs a future that returns a value on a fresh runtime.
pub(crate) fn block_on_value<T, F: Future<Output = anyhow::Result<T>>>(future: F) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
}

pub(crate) fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(future: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("vigil").build()?.block_on(future)
}

fn check_config(cli: &Cli, config: &VigilConfig) -> anyhow::Result<ExitCode> {
    let source = cli.config.as_ref().map_or("defaults (no config file)".to_owned(), |p| p.display().to_string());
    if config.rules.dir.exists() {
        if let Err(errors) = RuleSet::load_dir(&config.rules.dir, &config.rules.compile_options()) {
            eprintln!("The rules have {} error(s):", errors.len());
            for e in &errors {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    } else {
        eprintln!("warning: rules.dir {} does not exist; Vigil would run without rules", config.rules.dir.display());
    }
    println!(
        "{source}: OK ({} sink(s), {} tailed file(s), syslog {})",
        config.sinks.len(),
        config.sources.file.len(),
        if config.sources.syslog.enabled() { "on" } else { "off" }
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: VigilConfig, print_incidents: bool) -> anyhow::Result<ExitCode> {
    let listen = config.api.listen;
    let pipeline = Pipeline::start(config, Options { api: true, print_incidents }).await?;
    tracing::info!("Vigil is running; Ctrl-C stops it.");
    app::service::ready(&format!("Running: API on {listen}"));
    app::shutdown_signal().await;
    app::service::stopping();
    pipeline.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the labelled scenario of `seed` (the last hour) to `dir`.
fn write_scenario(dir: &Path, seed: u64) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let start = chrono::Utc::now() - chrono::Duration::hours(1);
    let scenario = crate::app::scenario::generate(seed, start);
    let log = dir.join("scenario.log");
    let truth = dir.join("scenario.truth.json");
    std::fs::write(&log, scenario.lines.join("\n") + "\n").with_context(|| format!("writing {}", log.display()))?;
    std::fs::write(&truth, serde_json::to_vec_pretty(&scenario.truth)?)
        .with_context(|| format!("writing {}", truth.display()))?;
    println!(
        "{} records with {} attacks and {} look-alikes in {}\nscore the rules on it: vigil rules score --input {} --format auto --truth {}",
        scenario.lines.len(),
        scenario.truth.expect.len(),
        scenario.truth.benign.len(),
        dir.display(),
        log.display(),
        truth.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(config: VigilConfig, options: demo::DemoOptions, keep_running: bool) -> anyhow::Result<ExitCode> {
    let data_dir = config.store.path.clone();
    let pipeline = Pipeline::start(config, Options { api: keep_running, print_incidents: true }).await?;
    let stream = demo::generate(&options);
    println!(
        "vigil demo: {} events, ten minutes of traffic; hidden in it: an SSH brute force from {} that succeeds and plants a UID-0 account, password spraying from {}, and a web scan from {}",
        stream.events.len(),
        stream.brute_force_ip,
        stream.sprayer_ip,
        stream.scanner_ip
    );
    let mut opened = pipeline.subscribe_incidents();
    for chunk in stream.events.chunks(500) {
        pipeline.ingestor.append("demo", chunk, Vec::new()).await.context("storing demo events")?;
    }
    if keep_running {
        println!(
            "Stream done; serving on http://{} until Ctrl-C.",
            pipeline.api_addr().map_or("?".into(), |a| a.to_string())
        );
        app::shutdown_signal().await;
    }
    pipeline.shutdown().await?;
    let mut count = 0;
    while let Ok(change) = opened.try_recv() {
        count += usize::from(change.change == crate::incident::ChangeKind::Opened);
    }
    println!("done: {} events stored, {count} incident(s) opened; data in {}", stream.events.len(), data_dir.display());
    println!("next: `vigil incidents list`, or `vigil serve` and POST events to http://127.0.0.1:8470/v1/events");
    Ok(ExitCode::SUCCESS)
}
