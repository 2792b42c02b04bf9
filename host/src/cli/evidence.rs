//! `vigil evidence list|collect|verify|export|custody|sweep|deleted`: forensic evidence
//! bundles and their chain of custody. Commands that add to a chain of custody need the
//! store to themselves (stop the server first); `list`, `custody` and `deleted` read it
//! beside a running server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::VigilConfig;
use crate::forensics::{Actor, Evidence, bundle_id, host_name};
use crate::store::{Log, Store};

/// `vigil evidence …`
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Stored bundles, oldest first.
    List,
    /// Collect a bundle for an incident now (with files, if any).
    Collect {
        /// Incident id.
        incident: String,
        /// Why (recorded in the chain of custody).
        #[arg(long)]
        reason: String,
        /// Files to capture into the bundle (repeat the flag).
        #[arg(long = "file")]
        files: Vec<PathBuf>,
        /// Who (default: $USER).
        #[arg(long = "as")]
        actor: Option<String>,
    },
    /// Check a bundle's items against its manifest, the manifest against its pinned hash,
    /// and the chain of custody; exit 1 when anything is off.
    Verify {
        /// Bundle id.
        bundle: String,
        /// Who (default: $USER).
        #[arg(long = "as")]
        actor: Option<String>,
        /// Why (recorded in the chain of custody).
        #[arg(long, default_value = "verification")]
        reason: String,
    },
    /// Copy a bundle into a directory (recorded in the chain of custody).
    Export {
        /// Bundle id.
        bundle: String,
        /// Destination directory.
        dest: PathBuf,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Who (default: $USER).
        #[arg(long = "as")]
        actor: Option<String>,
    },
    /// A bundle's chain of custody.
    Custody {
        /// Bundle id.
        bundle: String,
    },
    /// Delete the bundles past their retention now (the server does it every
    /// `forensics.sweep_interval`).
    Sweep,
    /// What retention deleted.
    Deleted,
}

fn actor(who: Option<String>, why: String) -> Actor {
    Actor {
        who: who.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into()),
        why,
        from: host_name(),
    }
}

fn open(config: &VigilConfig, writable: bool) -> anyhow::Result<Evidence> {
    let store = if writable {
        Store::open(&config.store).map_err(|e| match e {
            crate::store::Error::Locked { .. } => {
                anyhow::anyhow!("{e}; stop the server to record custody from the command line")
            }
            e => anyhow::Error::new(e).context("opening the store"),
        })?
    } else {
        Store::open_read_only(&config.store.path).with_context(|| {
            format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display())
        })?
    };
    let log = Log::read_only(&store)?;
    let dir = config.rules.dir.clone();
    let options = config.rules.compile_options();
    let rules = move || {
        std::sync::Arc::new(
            crate::rules::RuleSet::load_dir(&dir, &options)
                .unwrap_or_else(|_| crate::rules::RuleSet::empty(&options.limits)),
        )
    };
    crate::app::evidence(config, &store, &log, rules, None)
}

pub fn run(config: &VigilConfig, command: EvidenceCommand) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        match command {
            EvidenceCommand::List => {
                for record in open(config, false)?.list()? {
                    println!("{}", serde_json::to_string(&record)?);
                }
            }
            EvidenceCommand::Custody { bundle } => {
                for entry in open(config, false)?.custody(&bundle).await? {
                    println!("{}", serde_json::to_string(&entry)?);
                }
            }
            EvidenceCommand::Deleted => {
                for deletion in open(config, false)?.deletions()? {
                    println!("{}", serde_json::to_string(&deletion)?);
                }
            }
            EvidenceCommand::Collect { incident, reason, files, actor: who } => {
                let evidence = open(config, true)?;
                let id: crate::event::IncidentId = incident.parse().context("incident ids are UUIDs")?;
                let stored =
                    crate::incident::get(evidence.store(), id)?.with_context(|| format!("no incident {id}"))?;
                let value = serde_json::to_value(&stored)?;
                let bundle =
                    bundle_id(&incident, &format!("cli:{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)));
                let record = evidence
                    .collect(&bundle, &value, config.forensics.window, &files, actor(who, reason), Default::default())
                    .await?;
                println!("{}", serde_json::to_string(&record)?);
            }
            EvidenceCommand::Verify { bundle, actor: who, reason } => {
                let evidence = open(config, true)?;
                let result = evidence.verify(&bundle, Some(actor(who, reason))).await?;
                println!("{}", serde_json::to_string_pretty(&result)?);
                if !result.ok {
                    return Ok(ExitCode::FAILURE);
                }
            }
            EvidenceCommand::Export { bundle, dest, reason, actor: who } => {
                let copied = open(config, true)?.export(&bundle, &dest, actor(who, reason)).await?;
                eprintln!("{copied} objects of {bundle} written to {}", dest.display());
            }
            EvidenceCommand::Sweep => {
                for deletion in open(config, true)?.sweep(chrono::Utc::now()).await? {
                    println!("{}", serde_json::to_string(&deletion)?);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
