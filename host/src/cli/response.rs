//! `vigil playbooks …`, `vigil runs …` and `vigil audit …`.
//!
//! Listing, checking and planning, showing runs and verifying or exporting the audit trail
//! read the store read-only (beside a running server or without one). Starting runs and
//! deciding steps go through the running server (`--url`, default `api.listen`): only it
//! runs playbooks.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use arc_swap::ArcSwap;

use super::sinks::{call, refused, server};
use super::{AuditCommand, PlaybooksCommand, RunsCommand};
use crate::actions::SafetyPolicy;
use crate::actions::audit::{self, AuditLog};
use crate::app::{self, Pipeline};
use crate::config::VigilConfig;
use crate::event::IncidentId;
use crate::playbook::runner::Run;
use crate::playbook::{PlaybookSet, Runner, RunnerDeps};
use crate::store::{Log, Store};
use crate::telemetry::MetricsRegistry;

fn open(config: &VigilConfig) -> anyhow::Result<Store> {
    Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display()))
}

fn load(config: &VigilConfig, store: &Store, dir: Option<std::path::PathBuf>) -> anyhow::Result<(Runner, PlaybookSet)> {
    let log = Log::read_only(store)?;
    let plugins = app::plugin_host(config, None, None, &crate::telemetry::MetricsRegistry::default())?;
    let actions = std::sync::Arc::new(app::actions(config, store, &log, None, plugins.as_ref())?);
    let dir = dir.unwrap_or_else(|| Pipeline::playbook_dir(config));
    let set = PlaybookSet::load_dir(&dir, &actions).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{} error(s) in {}:\n  {}", errors.len(), dir.display(), list.join("\n  "))
    })?;
    let deps = RunnerDeps {
        store: store.clone(),
        log,
        actions,
        policy: std::sync::Arc::new(SafetyPolicy::new(config.actions.policy.clone(), store)),
        audit: std::sync::Arc::new(AuditLog::open(store)?),
        playbooks: std::sync::Arc::new(ArcSwap::from_pointee(set.clone())),
        rules: None,
        worker: None,
        config: config.playbooks.clone(),
    };
    Ok((Runner::new(deps, &MetricsRegistry::default()), set))
}

/// `vigil playbooks list|check|plan`.
pub fn playbooks(config: &VigilConfig, command: PlaybooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        PlaybooksCommand::Check { dir } | PlaybooksCommand::List { dir } if !config.store.path.exists() => {
            let (_tmp, store) = scratch_store()?;
            list_or_check(config, &store, dir)
        }
        PlaybooksCommand::Check { dir } | PlaybooksCommand::List { dir } => list_or_check(config, &open(config)?, dir),
        PlaybooksCommand::Plan { incident, playbook } => {
            let store = open(config)?;
            let (runner, set) = load(config, &store, None)?;
            let id: IncidentId = incident.parse().context("incident ids are UUIDs")?;
            let found = crate::incident::get(&store, id)?.with_context(|| format!("no incident {id}"))?;
            let chosen: Vec<String> = match playbook {
                Some(p) => vec![p],
                None => {
                    let rules =
                        crate::rules::RuleSet::load_dir(&config.rules.dir, &config.rules.compile_options()).ok();
                    let rule_playbook = rules.as_ref().and_then(|r| {
                        r.rules().iter().find(|c| c.meta.id == found.rule_id).and_then(|c| c.meta.playbook.clone())
                    });
                    set.all()
                        .filter(|p| p.triggered_by(&found, rule_playbook.as_deref()))
                        .map(|p| p.id.clone())
                        .collect()
                }
            };
            if chosen.is_empty() {
                println!("No playbook triggers on incident {id} ({}); name one with --playbook.", found.rule_id);
            }
            for name in chosen {
                let plan = runner.plan(id, &name)?;
                println!("{}", serde_json::to_string_pretty(&plan)?);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn scratch_store() -> anyhow::Result<(tempfile_dir::Dir, Store)> {
    let dir = tempfile_dir::Dir::new()?;
    let store = Store::open(&crate::store::StoreConfig { path: dir.0.clone(), ..Default::default() })?;
    Ok((dir, store))
}

/// A temporary directory removed on drop (checking playbooks needs a store for the
/// actions' state even when Vigil never ran here).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            let path = std::env::temp_dir().join(format!("vigil-check-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&path)?;
            Ok(Self(path))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn list_or_check(config: &VigilConfig, store: &Store, dir: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    match load(config, store, dir) {
        Ok((_, set)) => {
            for p in set.all() {
                let steps: Vec<String> = p
                    .steps
                    .iter()
                    .map(|s| s.action.clone().unwrap_or_else(|| format!("{:?}", s.kind).to_lowercase()))
                    .collect();
                println!(
                    "{:<32} v{:<3} {}  [{}]",
                    p.id,
                    p.version,
                    if p.dry_run { "dry-run" } else { "       " },
                    steps.join(" → ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `vigil runs …`.
pub fn runs(config: &VigilConfig, command: RunsCommand) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match command {
        RunsCommand::List { incident } => {
            let store = open(config)?;
            let incident = incident.map(|i| i.parse::<IncidentId>()).transpose().context("incident ids are UUIDs")?;
            for run in crate::playbook::report::runs_of(&store, incident)? {
                print_run_line(&run);
            }
            return Ok(ExitCode::SUCCESS);
        }
        RunsCommand::Show { id } => {
            let store = open(config)?;
            let found = crate::playbook::report::runs_of(&store, None)?.into_iter().find(|r| r.id.to_string() == id);
            return match found {
                Some(run) => {
                    println!("{}", serde_json::to_string_pretty(&run)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no run {id}");
                    Ok(ExitCode::FAILURE)
                }
            };
        }
        RunsCommand::Start { incident, playbook, dry_run, url, by } => (
            url,
            format!("/v1/incidents/{incident}/runs"),
            serde_json::json!({ "playbook": playbook, "dry_run": dry_run, "requested_by": by }),
        ),
        RunsCommand::Decide { decision, run, step, by, role, note, url } => (
            url,
            format!("/v1/runs/{run}/steps/{step}/{decision}"),
            serde_json::json!({ "approver": by, "role": role, "note": note }),
        ),
        RunsCommand::Cancel { run, by, url } => {
            (url, format!("/v1/runs/{run}/cancel"), serde_json::json!({ "actor": by }))
        }
    };
    let endpoint = format!("{}{path}", server(config, method));
    let (code, answer) = super::block_on_value(call(reqwest::Method::POST, endpoint, Some(body)))?;
    if !code.is_success() {
        return Ok(refused(code, &answer));
    }
    let run: Run = serde_json::from_value(answer).context("unexpected answer")?;
    print_run_line(&run);
    Ok(ExitCode::SUCCESS)
}

fn print_run_line(run: &Run) {
    let steps: Vec<String> =
        run.steps.iter().map(|s| format!("{}:{}", s.def.id, format!("{:?}", s.status).to_lowercase())).collect();
    println!(
        "{}  {:<28} {:<11} incident {}  [{}]",
        run.id,
        run.playbook,
        format!("{:?}", run.status).to_lowercase(),
        run.incident_id,
        steps.join(" ")
    );
}

/// `vigil audit verify|export`.
pub fn audit(config: &VigilConfig, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let store = open(config)?;
    match command {
        AuditCommand::Verify => {
            let report = audit::verify(&store)?;
            if report.ok() {
                println!("audit trail intact: {} record(s), hash chain verified", report.records);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("audit trail BROKEN ({} record(s) checked):", report.records);
                for p in &report.problems {
                    eprintln!("  {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        AuditCommand::Export { output } => {
            let mut out: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let n = audit::export(&store, |r| {
                serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
                out.write_all(b"\n")
            })?;
            out.flush()?;
            if output.is_some() {
                eprintln!("{n} audit record(s) written");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
