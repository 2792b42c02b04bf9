//! `vigil intel sync|import|lookup|status|export`: threat-intel feeds and the STIX export
//! of Vigil's detections.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::VigilConfig;
use crate::intel::{FeedConfig, FeedKind, Intel, bundle};
use crate::store::Store;

/// `vigil intel …`
#[derive(Debug, Subcommand)]
pub enum IntelCommand {
    /// Poll the configured feeds once (all, or `--feed`) and store what they send. Needs the
    /// store to itself: stop the server first, or let it poll on its schedule.
    Sync {
        /// Only this feed.
        #[arg(long)]
        feed: Option<String>,
    },
    /// Store the indicators of a STIX 2.1 bundle file as coming from a feed.
    Import {
        /// The bundle.
        file: PathBuf,
        /// The feed name the indicators are stored under.
        #[arg(long, default_value = "local")]
        feed: String,
    },
    /// Which indicator matches a value (address, domain, URL, email, hash), now.
    Lookup {
        /// The value.
        value: String,
    },
    /// The feeds' positions and last results, and what the matcher holds.
    Status,
    /// Export incidents as a STIX 2.1 bundle (incidents, indicators and sightings of the
    /// attacking addresses, ATT&CK patterns).
    Export {
        /// Incidents opened at or after this time (RFC 3339 or `24h` ago).
        #[arg(long)]
        from: Option<String>,
        /// Incidents opened before this time.
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn run(config: &VigilConfig, command: IntelCommand) -> anyhow::Result<ExitCode> {
    match command {
        IntelCommand::Sync { feed } => {
            let store = open_writable(config)?;
            let intel = Intel::open(&store, config.intel.clone(), None)?;
            let feeds: Vec<&FeedConfig> =
                config.intel.feeds.iter().filter(|f| feed.as_ref().is_none_or(|n| &f.name == n)).collect();
            if feeds.is_empty() {
                anyhow::bail!("no feed {} in [[intel.feeds]]", feed.as_deref().unwrap_or("at all"));
            }
            let feeds: Vec<FeedConfig> = feeds.into_iter().cloned().collect();
            super::block_on(async move {
                let mut failed = false;
                for feed in &feeds {
                    match intel.poll(feed).await {
                        Ok(report) => println!("{}", serde_json::to_string(&report)?),
                        Err(e) => {
                            eprintln!("feed {}: {e}", feed.name);
                            failed = true;
                        }
                    }
                }
                Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
            })
        }
        IntelCommand::Import { file, feed } => {
            let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc: serde_json::Value =
                serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            let store = open_writable(config)?;
            let intel = Intel::open(&store, config.intel.clone(), None)?;
            let settings = config
                .intel
                .feeds
                .iter()
                .find(|f| f.name == feed)
                .cloned()
                .unwrap_or_else(|| FeedConfig::new(&feed, FeedKind::Bundle));
            let report = intel.import(&settings, &doc)?;
            for reason in report.applied.skipped.iter().chain(&report.malformed) {
                eprintln!("skipped {reason}");
            }
            println!("{}", serde_json::to_string(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        IntelCommand::Lookup { value } => {
            let store = open_read_only(config)?;
            let intel = Intel::open(&store, config.intel.clone(), None)?;
            match intel.lookup(&value, chrono::Utc::now().timestamp_millis()) {
                Some(found) => {
                    println!("{}", serde_json::to_string_pretty(&found)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no indicator matches {value}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        IntelCommand::Status => {
            let store = open_read_only(config)?;
            let intel = Intel::open(&store, config.intel.clone(), None)?;
            let feeds: Vec<serde_json::Value> = config
                .intel
                .feeds
                .iter()
                .map(|f| {
                    let state = intel.store().feed_state(&f.name).unwrap_or_default();
                    serde_json::json!({ "feed": f.name, "kind": f.kind, "state": state })
                })
                .collect();
            let status = serde_json::json!({ "matcher": intel.matcher().stats(), "feeds": feeds });
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        IntelCommand::Export { from, to, output } => {
            let store = open_read_only(config)?;
            let from = from.as_deref().map(super::rules::parse_time).transpose()?;
            let to = to.as_deref().map(super::rules::parse_time).transpose()?;
            let incidents = crate::incident::list(&store, usize::MAX, None)?;
            let detections: Vec<bundle::Detection> = incidents
                .iter()
                .filter(|i| from.is_none_or(|f| i.opened_at >= f) && to.is_none_or(|t| i.opened_at < t))
                .map(|i| bundle::Detection {
                    id: i.id.to_string(),
                    title: i.title.clone(),
                    description: None,
                    priority: i.priority.as_str().to_owned(),
                    status: i.status.as_str().to_owned(),
                    rule: i.rule_id.to_string(),
                    created: i.opened_at,
                    modified: i.updated_at,
                    first_seen: i.first_seen,
                    last_seen: i.last_seen,
                    count: i.alert_count,
                    techniques: i.techniques.clone(),
                    source_ips: i.entities.source_ips.iter().chain(&i.entities.threat_ips).cloned().collect(),
                })
                .collect();
            let doc = bundle::export(&detections, chrono::Utc::now());
            let text = serde_json::to_string_pretty(&doc)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("{} incidents exported to {}", detections.len(), path.display());
                }
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_writable(config: &VigilConfig) -> anyhow::Result<Store> {
    Store::open(&config.store).map_err(|e| match e {
        crate::store::Error::Locked { .. } => {
            anyhow::anyhow!("{e}; the running server polls its feeds itself (or use POST /v1/intel/feeds/NAME/poll)")
        }
        e => anyhow::Error::new(e).context("opening the store"),
    })
}

fn open_read_only(config: &VigilConfig) -> anyhow::Result<Store> {
    Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display()))
}
