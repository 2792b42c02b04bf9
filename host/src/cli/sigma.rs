//! `vigil sigma check|test`: what a directory of Sigma rules compiles to, and whether the
//! rules match their regression data (SigmaHQ's `regression_data` layout: one folder
//! per rule with an `info.yml` naming the rule and the expected `match_count`, next to
//! the `.evtx` it is tested on).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::VigilConfig;
use crate::event::SecurityEvent;
use crate::rules::sigma::{self, Report};
use crate::rules::{CompiledRule, RuleSet};
use crate::source::decode::{Format, Options};

/// Sigma tools.
#[derive(Debug, clap::Subcommand)]
pub enum SigmaCommand {
    /// Compile a directory of Sigma rules (recursively) and report what loaded, what was
    /// refused (file, rule, construct) and what is idle (no pipeline entry for its
    /// logsource). Exits 1 when a rule is refused.
    Check {
        /// The directory (default: `<rules.dir>/sigma`).
        dir: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run Sigma rules over their regression data and compare the number of matching
    /// events with each case's `match_count` (fewer fail, more are noted, as in SigmaHQ's
    /// own runner). Exits 1 when a case fails.
    Test {
        /// The regression data directory (folders with `info.yml` and the `.evtx`).
        data: PathBuf,
        /// The Sigma rules the cases name (default: `<rules.dir>/sigma`).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Print one JSON line per case, then the summary.
        #[arg(long)]
        json: bool,
    },
    /// Run Sigma rules (correlations included) over files, without a store, and print
    /// every detection: rule, level, author, file, record, host and time — a timeline of
    /// what the rules see in a set of EVTX (or any input format) files.
    Scan {
        /// The files (`.evtx`, Windows XML or JSON, or any `--format`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The Sigma rules (default: `<rules.dir>/sigma`).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// The files' format.
        #[arg(long, default_value = "windows")]
        format: Format,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &VigilConfig, command: SigmaCommand) -> anyhow::Result<ExitCode> {
    let default_dir = || config.rules.dir.join("sigma");
    match command {
        SigmaCommand::Check { dir, json } => check(config, &dir.unwrap_or_else(default_dir), json),
        SigmaCommand::Test { data, rules, json } => test(config, &data, &rules.unwrap_or_else(default_dir), json),
        SigmaCommand::Scan { files, rules, format, json } => {
            scan(config, &files, &rules.unwrap_or_else(default_dir), &format, json)
        }
    }
}

fn load(config: &VigilConfig, dir: &Path) -> anyhow::Result<(Vec<CompiledRule>, Report)> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory of Sigma rules", dir.display());
    }
    let pipelines = config.rules.dir.join("sigma").join("pipelines");
    sigma::load(&[dir.to_owned()], &config.rules.sigma, Some(&pipelines)).map_err(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", text.join("\n"))
    })
}

fn check(config: &VigilConfig, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (_, report) = load(config, dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for r in &report.refused {
            println!("refused  {}  {}: {}", r.path.display(), r.id.as_deref().unwrap_or("-"), r.reason);
        }
        for (id, logsource) in &report.idle {
            println!("idle     {id}: no pipeline entry for logsource {logsource}");
        }
        println!(
            "{} files: {} rules compiled ({} correlations, {} idle), {} refused — {:.1} % compile",
            report.files,
            report.compiled,
            report.correlations,
            report.idle.len(),
            report.refused.len(),
            report.compiled_percent()
        );
    }
    Ok(if report.refused.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    rule_metadata: Vec<RuleRef>,
    #[serde(default)]
    regression_tests_info: Vec<Case>,
}

#[derive(Deserialize)]
struct RuleRef {
    id: String,
}

#[derive(Deserialize)]
struct Case {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    path: String,
    #[serde(default = "one")]
    match_count: usize,
}

fn one() -> usize {
    1
}

/// One regression case's outcome.
#[derive(Debug, Serialize)]
struct Outcome {
    case: String,
    rule: String,
    expected: usize,
    matched: Option<usize>,
    events: usize,
    passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
}

fn events_of(config: &VigilConfig, file: &Path) -> anyhow::Result<Vec<SecurityEvent>> {
    let options = Options { limits: config.ingest.limits(), keep_raw: false };
    let mut events = Vec::new();
    super::input::read(file, &Format::Windows, options, &Default::default(), |batch| {
        events.extend(batch.events);
        Ok(true)
    })?;
    Ok(events)
}

fn test(config: &VigilConfig, data: &Path, rules_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (rules, report) = load(config, rules_dir)?;
    let set = RuleSet::from_compiled(rules);
    let mut files: Vec<PathBuf> =
        sigma::yaml_files(data).into_iter().filter(|p| p.file_name().is_some_and(|n| n == "info.yml")).collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no info.yml under {}", data.display());
    }
    let mut outcomes = Vec::new();
    for info_path in &files {
        let text = std::fs::read_to_string(info_path).with_context(|| format!("reading {}", info_path.display()))?;
        let info: Info = serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", info_path.display()))?;
        let folder = info_path.parent().unwrap_or(Path::new("."));
        for rule in &info.rule_metadata {
            for case in &info.regression_tests_info {
                let file_name = Path::new(&case.path).file_name().map(PathBuf::from).unwrap_or_default();
                let file = folder.join(file_name);
                let mut outcome = Outcome {
                    case: format!("{} ({})", folder.display(), case.name),
                    rule: rule.id.clone(),
                    expected: case.match_count,
                    matched: None,
                    events: 0,
                    passed: false,
                    why: None,
                };
                let refused = report.refused.iter().find(|r| r.id.as_deref() == Some(rule.id.as_str()));
                if case.kind != "evtx" {
                    outcome.why = Some(format!("case type `{}` is not evtx", case.kind));
                } else if let Some(r) = refused {
                    outcome.why = Some(format!("rule refused: {}", r.reason));
                } else {
                    match events_of(config, &file) {
                        Err(e) => outcome.why = Some(format!("reading {}: {e:#}", file.display())),
                        Ok(events) => {
                            outcome.events = events.len();
                            let mut hits = 0;
                            let mut error = None;
                            for event in &events {
                                match set.evaluate_id(&rule.id, event) {
                                    Some(Ok(true)) => hits += 1,
                                    Some(Ok(false)) => {}
                                    Some(Err(e)) => error = Some(e.to_string()),
                                    None => error = Some("rule not found in the rules directory".into()),
                                }
                            }
                            // As SigmaHQ's own runner: fewer matches than expected fail,
                            // more are noted.
                            outcome.matched = Some(hits);
                            outcome.passed = error.is_none() && hits >= case.match_count;
                            outcome.why = error.or_else(|| {
                                (hits > case.match_count)
                                    .then(|| format!("{hits} matches, {} expected", case.match_count))
                            });
                        }
                    }
                }
                outcomes.push(outcome);
            }
        }
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    for o in &outcomes {
        if json {
            println!("{}", serde_json::to_string(o)?);
        } else if !o.passed {
            println!(
                "FAIL {} rule {}: expected {}, matched {} of {} events{}",
                o.case,
                o.rule,
                o.expected,
                o.matched.map_or("-".to_owned(), |m| m.to_string()),
                o.events,
                o.why.as_deref().map(|w| format!(" — {w}")).unwrap_or_default()
            );
        }
    }
    let summary = serde_json::json!({ "cases": outcomes.len(), "passed": passed, "failed": outcomes.len() - passed });
    if json {
        println!("{summary}");
    } else {
        println!("{passed} of {} regression cases pass", outcomes.len());
    }
    Ok(if passed == outcomes.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One detection of `vigil sigma scan`.
#[derive(Debug, Serialize)]
struct Detection<'a> {
    rule: &'a str,
    title: &'a str,
    level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
    file: String,
    /// The Windows `EventRecordID`, when the event has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<u64>,
    /// The Windows channel and event id, when the event has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    time: String,
    /// Matching events behind a correlation (1 for a detection).
    count: u64,
}

fn scan(
    config: &VigilConfig,
    files: &[PathBuf],
    rules_dir: &Path,
    format: &Format,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (rules, report) = load(config, rules_dir)?;
    for r in &report.refused {
        eprintln!("refused  {}  {}: {}", r.path.display(), r.id.as_deref().unwrap_or("-"), r.reason);
    }
    let set = RuleSet::from_compiled(rules);
    let registry = crate::telemetry::MetricsRegistry::default();
    let mut detector = crate::detect::Detector::new(
        set.clone(),
        config.detect.clone(),
        crate::detect::DetectMetrics::register(&registry),
    )
    .without_persistence();
    let started = std::time::Instant::now();
    let (mut events, mut matches) = (0usize, 0usize);
    if !json {
        println!("{:<24} {:<8} {:<16} {:<10} RULE", "TIME", "LEVEL", "HOST", "RECORD");
    }
    for file in files {
        let options = Options { limits: config.ingest.limits(), keep_raw: false };
        let mut alerts = Vec::new();
        let mut seen: std::collections::HashMap<crate::event::EventId, SecurityEvent> =
            std::collections::HashMap::new();
        let totals = super::input::read(file, format, options, &Default::default(), |batch| {
            for event in batch.events {
                let event = std::sync::Arc::new(event);
                let before = alerts.len();
                detector.process(&event, &mut alerts);
                if alerts.len() > before {
                    seen.insert(event.id, (*event).clone());
                }
            }
            Ok(true)
        })?;
        events += totals.events;
        for alert in &alerts {
            matches += 1;
            let rule = set.rules().iter().find(|r| r.meta.id == alert.rule_id);
            let last = alert.event_ids.last().and_then(|id| seen.get(id));
            let windows = last.and_then(|e| e.attributes.get("windows"));
            let record = windows.and_then(|w| w.get("EventRecordID")).and_then(serde_json::Value::as_u64);
            let detection = Detection {
                rule: alert.rule_id.as_str(),
                title: &alert.title,
                level: alert.priority.to_string(),
                author: rule.and_then(|r| r.meta.author.as_deref()),
                file: file.display().to_string(),
                record,
                channel: windows.and_then(|w| w.get("Channel")).and_then(serde_json::Value::as_str),
                event_id: windows.and_then(|w| w.get("EventID")).and_then(serde_json::Value::as_u64),
                host: last.and_then(|e| e.host.as_ref()).and_then(|h| h.name.as_deref()),
                time: alert.time.to_rfc3339(),
                count: alert.count,
            };
            if json {
                println!("{}", serde_json::to_string(&detection)?);
            } else {
                println!(
                    "{:<24} {:<8} {:<16} {:<10} {} {}",
                    detection.time,
                    detection.level,
                    detection.host.unwrap_or("-"),
                    detection.record.map_or("-".to_owned(), |r| r.to_string()),
                    detection.rule,
                    detection.title
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{events} events, {matches} detections, {} rules ({} idle, {} refused) in {secs:.2} s ({:.0} events/s)",
        report.compiled,
        report.idle.len(),
        report.refused.len(),
        events as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
