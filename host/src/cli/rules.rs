//! `vigil rules check|test|cost|list|backtest|score`: tools for rule authors.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::RulesCommand;
use crate::config::VigilConfig;
use crate::detect::examples;
use crate::incident::backtest;
use crate::rules::{CompileOptions, RuleError, RuleSet};
use crate::store::{Log, Store};

pub fn run(config: &VigilConfig, command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Check { dir } => check(&dir.unwrap_or_else(|| config.rules.dir.clone()), config),
        RulesCommand::Test { dir } => test(&dir.unwrap_or_else(|| config.rules.dir.clone()), config),
        RulesCommand::Cost { dir, input, format } => {
            cost(&dir.unwrap_or_else(|| config.rules.dir.clone()), config, input.as_deref().map(|i| (i, format)))
        }
        RulesCommand::List { dir } => list(&dir.unwrap_or_else(|| config.rules.dir.clone()), config),
        RulesCommand::Backtest { from, to, rules, input, format, json } => {
            let dir = rules.unwrap_or_else(|| config.rules.dir.clone());
            match input {
                Some(input) => replay_file(config, &dir, &input, format, After::Report { json }),
                None => backtest(config, &dir, from.as_deref(), to.as_deref(), json),
            }
        }
        RulesCommand::Score { input, format, truth, rules, min_recall, min_precision, json } => {
            let dir = rules.unwrap_or_else(|| config.rules.dir.clone());
            let text = std::fs::read_to_string(&truth)
                .with_context(|| format!("reading the truth file {}", truth.display()))?;
            let truth: crate::incident::score::Truth =
                serde_json::from_str(&text).with_context(|| format!("the truth file {}", truth.display()))?;
            replay_file(config, &dir, &input, format, After::Score { truth, min_recall, min_precision, json })
        }
    }
}

/// What a file replay ends with.
enum After {
    /// The alerts and incidents (`rules backtest --input`).
    Report { json: bool },
    /// Their score against ground truth (`rules score`).
    Score { truth: crate::incident::score::Truth, min_recall: Option<f64>, min_precision: Option<f64>, json: bool },
}

impl After {
    /// Whether stdout is for machine-readable records only.
    fn json(&self) -> bool {
        match self {
            Self::Report { json } | Self::Score { json, .. } => *json,
        }
    }
}

/// The configured compile options, with the plugins of `[plugins] dir` behind
/// `plugin::invoke` (rules that need an absent plugin are skipped, not failed).
fn options(config: &VigilConfig) -> anyhow::Result<CompileOptions> {
    with_intel(config, None)
}

/// [`options`] with stored threat intel behind `ioc_match` (backtests see the indicators
/// the live run has).
fn with_intel(config: &VigilConfig, intel: Option<&crate::intel::Intel>) -> anyhow::Result<CompileOptions> {
    let plugins = crate::app::plugin_host(config, None, None, &crate::telemetry::MetricsRegistry::default())?;
    Ok(crate::app::rule_options(config, plugins.as_ref(), intel))
}

/// The configured incident priority policy (backtests classify as the live run does).
fn policy(config: &VigilConfig) -> crate::incident::Policy {
    crate::incident::Policy::new(&config.incidents.priority)
}

fn load(dir: &Path, options: &CompileOptions) -> Result<RuleSet, ExitCode> {
    RuleSet::load_dir(dir, options).map_err(|errors| {
        print_errors(&errors);
        ExitCode::FAILURE
    })
}

fn print_errors(errors: &[RuleError]) {
    eprintln!("{} error(s):", errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
}

fn check(dir: &Path, config: &VigilConfig) -> anyhow::Result<ExitCode> {
    let rules = match load(dir, &options(config)?) {
        Ok(rules) => rules,
        Err(code) => return Ok(code),
    };
    let native = rules.rules().iter().filter(|r| r.is_native()).count();
    let indexed = rules.rules().iter().filter(|r| !r.classes.is_empty()).count();
    let examples: usize = rules.rules().iter().map(|r| r.meta.examples.len()).sum();
    println!(
        "{}: {} rule(s) OK — {native} compiled to native predicates, {indexed} indexed by event class, {examples} example(s)",
        dir.display(),
        rules.rules().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path, config: &VigilConfig) -> anyhow::Result<ExitCode> {
    let rules = match load(dir, &options(config)?) {
        Ok(rules) => rules,
        Err(code) => return Ok(code),
    };
    let results = examples::run(&rules);
    let mut failed = 0;
    let mut skipped = 0;
    for r in &results {
        match (&r.failure, &r.skipped) {
            (_, Some(why)) => {
                skipped += 1;
                println!("skip  {} — {}: {why}", r.rule, r.example);
            }
            (None, None) => println!("ok    {} — {}", r.rule, r.example),
            (Some(why), None) => {
                failed += 1;
                println!("FAIL  {} — {}: {why}", r.rule, r.example);
            }
        }
    }
    let without: Vec<&str> =
        rules.rules().iter().filter(|r| r.meta.examples.is_empty()).map(|r| r.meta.id.as_str()).collect();
    if !without.is_empty() {
        println!("rules without examples: {}", without.join(", "));
    }
    println!("{} example(s), {failed} failed, {skipped} skipped", results.len());
    Ok(if failed == 0 && without.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn cost(
    dir: &Path,
    config: &VigilConfig,
    input: Option<(&Path, crate::source::decode::Format)>,
) -> anyhow::Result<ExitCode> {
    let options = CompileOptions { count_operations: true, ..options(config)? };
    let rules = match load(dir, &options) {
        Ok(rules) => rules,
        Err(code) => return Ok(code),
    };
    let events = match input {
        Some((path, format)) => {
            let decode = crate::source::decode::Options { limits: config.ingest.limits(), keep_raw: false };
            let (plugins, _host) = super::input::plugin_decoders(config)?;
            let mut events = Vec::new();
            super::input::read(path, &format, decode, &plugins, |batch| {
                events.extend(batch.events.into_iter().map(|e| crate::rules::EventRef(std::sync::Arc::new(e))));
                Ok(events.len() < 100_000)
            })?;
            Some(events)
        }
        None => None,
    };
    println!("{:<36} {:>7} {:>12} {:>10} {:>7}", "RULE", "NATIVE", "OPS/EVAL", "NS/EVAL", "EVENTS");
    for c in examples::cost(&rules, events.as_deref()) {
        println!(
            "{:<36} {:>7} {:>12.1} {:>10.0} {:>7}",
            c.rule,
            if c.native { "yes" } else { "no" },
            c.operations,
            c.nanos,
            c.events
        );
    }
    println!("(operation budget per evaluation: {})", config.rules.limits.max_operations);
    Ok(ExitCode::SUCCESS)
}

fn list(dir: &Path, config: &VigilConfig) -> anyhow::Result<ExitCode> {
    let rules = match load(dir, &options(config)?) {
        Ok(rules) => rules,
        Err(code) => return Ok(code),
    };
    let recent = recent_incidents(config);
    let noisy_after = config.incidents.priority.noisy_after;
    println!(
        "{:<36} {:<4} {:<24} {:<7} {:<28} {:<13} TITLE",
        "RULE", "PRI", "CLASSES", "NATIVE", "FOUND BY", "INC/24H"
    );
    for (index, r) in rules.rules().iter().enumerate() {
        let classes: Vec<&str> = r.classes.iter().map(|c| c.as_str()).collect();
        let classes = if classes.is_empty() { "*".to_owned() } else { classes.join(",") };
        // The fields the index looks the rule up by; `*`: some class runs it on every event.
        let (fields, everywhere) = rules.keyed_on(index);
        let mut found_by: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        if everywhere {
            found_by.push("*");
        }
        // A Sigma rule is found by its logsource; one whose logsource nothing reads is idle.
        let sigma = r.sigma.as_ref().map(|s| match &s.idle {
            Some(_) => format!("IDLE {}", s.logsource),
            None if !r.meta.enabled || s.feeds_only => "off (feeds a correlation)".to_owned(),
            None => format!("sigma {}", s.logsource),
        });
        // Incidents in the 24 h of event time before the rule's latest; `-`: no store here.
        let incidents = match &recent {
            Some(counts) => {
                let n = counts.get(r.meta.id.as_str()).copied().unwrap_or(0);
                if noisy_after > 0 && n > noisy_after { format!("{n} NOISY") } else { n.to_string() }
            }
            None => "-".to_owned(),
        };
        println!(
            "{:<36} {:<4} {:<24} {:<7} {:<28} {:<13} {}",
            r.meta.id,
            r.meta.severity,
            classes,
            if r.is_native() { "yes" } else { "no" },
            sigma.unwrap_or_else(|| if found_by.is_empty() { "-".to_owned() } else { found_by.join(",") }),
            incidents,
            r.meta.title
        );
    }
    let report = rules.sigma_report();
    if !report.refused.is_empty() {
        println!("{} Sigma rules refused (`vigil sigma check` says why).", report.refused.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Incidents each rule opened in the 24 h of event time before its latest (what
/// `vigil_rule_incidents_24h` counts live), from the newest 100,000 stored incidents;
/// `None` when there is no store to read.
fn recent_incidents(config: &VigilConfig) -> Option<std::collections::HashMap<String, usize>> {
    if !config.store.path.exists() {
        return None;
    }
    let store = Store::open_read_only(&config.store.path).ok()?;
    let incidents = crate::incident::page(&store, 100_000, None, |_| true).ok()?;
    let mut noise = crate::incident::priority::Noise::default();
    for i in &incidents {
        noise.opened(&i.rule_id, i.first_seen);
    }
    Some(incidents.iter().map(|i| (i.rule_id.to_string(), noise.count(&i.rule_id))).collect())
}

/// RFC 3339, or a duration meaning that long ago (`2h`, `7d`).
pub(super) fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    crate::hunt::parse_time(s, Utc::now()).map_err(|e| anyhow::anyhow!("{e} (like 2h, or 2026-01-01T00:00:00Z)"))
}

fn backtest(
    config: &VigilConfig,
    dir: &Path,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let from = from.map(parse_time).transpose()?;
    let to = to.map(parse_time).transpose()?;
    let store = Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {}", config.store.path.display()))?;
    let intel = crate::intel::Intel::open(&store, config.intel.clone(), None)?;
    let rules = match load(dir, &with_intel(config, Some(&intel))?) {
        Ok(rules) => rules,
        Err(code) => return Ok(code),
    };
    let log = Log::read_only(&store)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = backtest::run(&log, rules, config.detect.clone(), policy(config), from, to, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    print_report(&report, json)
}

/// Decodes a file in any input format and replays it through the rules, storing nothing.
/// Records that do not decode are counted and the first few named; with none decoded
/// the command fails.
fn replay_file(
    config: &VigilConfig,
    dir: &Path,
    input: &Path,
    format: crate::source::decode::Format,
    after: After,
) -> anyhow::Result<ExitCode> {
    let json = after.json();
    let print_alerts = matches!(after, After::Report { json: true });
    let rules = match load(dir, &options(config)?) {
        Ok(rules) => rules,
        Err(code) => return Ok(code),
    };
    let options = crate::source::decode::Options { limits: config.ingest.limits(), keep_raw: false };
    let started = std::time::Instant::now();
    let mut replay = backtest::Replay::new(rules, config.detect.clone()).with_policy(policy(config));
    // Decoding runs on its own thread, detection on this one: a bounded channel of batches
    // keeps both busy without holding more than a few thousand events in memory. The
    // events come back to the decoding thread to be freed: memory is freed fastest by the
    // thread that allocated it, and it takes that work off detection, the slower side.
    let (tx, rx) = std::sync::mpsc::sync_channel::<super::input::Batch>(2);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<Vec<std::sync::Arc<crate::event::SecurityEvent>>>(4);
    let path = input.to_owned();
    let format_name = format.to_string();
    let (plugins, _host) = super::input::plugin_decoders(config)?;
    let parser = std::thread::spawn(move || {
        super::input::read(&path, &format, options, &plugins, |batch| {
            while let Ok(done) = done_rx.try_recv() {
                drop(done);
            }
            Ok(tx.send(batch).is_ok())
        })
    });
    // Alerts are printed (with --json) as they are raised and not kept, so memory stays
    // flat however long the input.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut refused = Vec::new();
    for batch in rx {
        for rejection in batch.rejected {
            replay.skip();
            if refused.len() < SHOWN_REFUSALS {
                refused.push(rejection);
            }
        }
        let mut done = Vec::with_capacity(batch.events.len());
        for event in batch.events {
            done.push(replay.push(event));
        }
        // When the parser has finished (or its queue is full), free them here.
        let _ = done_tx.try_send(done);
        for alert in replay.take_alerts() {
            if print_alerts {
                write_record(&mut out, "alert", &alert)?;
            }
        }
    }
    std::io::Write::flush(&mut out)?;
    drop(out);
    let totals = parser.join().map_err(|_| anyhow::anyhow!("the decoding thread panicked"))??;
    let report = replay.finish();
    let elapsed = started.elapsed().as_secs_f64();
    // With --json, stdout holds only records: the decoding summary goes to stderr.
    let summary = format!(
        "{} record(s) in {elapsed:.2} s ({:.0} records/s): {} event(s) decoded, {} record(s) did not decode",
        totals.records,
        totals.records as f64 / elapsed.max(1e-9),
        totals.events,
        totals.rejected
    );
    if json {
        eprintln!("{summary}")
    } else {
        println!("{summary}")
    }
    for r in &refused {
        let at = r.record.map_or(format!("line {}", r.line), |id| format!("record {} (EVTX record id {id})", r.line));
        let line = format!("  {at}: {}", r.message);
        if json { eprintln!("{line}") } else { println!("{line}") }
    }
    if totals.events == 0 {
        eprintln!("no record of the input decoded as {format_name}: nothing was replayed (try --format auto)");
        return Ok(ExitCode::FAILURE);
    }
    match after {
        After::Report { json } => print_report(&report, json),
        After::Score { truth, min_recall, min_precision, json } => print_score(
            &crate::incident::score::score(&report.incidents, &truth),
            &truth,
            json,
            min_recall,
            min_precision,
        ),
    }
}

fn print_score(
    score: &crate::incident::score::Score,
    truth: &crate::incident::score::Truth,
    json: bool,
    min_recall: Option<f64>,
    min_precision: Option<f64>,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(score)?);
    } else {
        if !truth.name.is_empty() {
            println!("{}", truth.name);
        }
        println!(
            "recall {:.3} ({}/{} behaviours found), precision {:.3} ({}/{} incidents explain one), {} duplicate(s)",
            score.recall,
            score.found,
            score.expected,
            score.precision,
            score.explaining,
            score.incidents,
            score.duplicates
        );
        println!("{:<36} {:>5} {:>5}", "RULE", "TP", "FP");
        for (rule, s) in &score.rules {
            println!("{rule:<36} {:>5} {:>5}", s.true_positives, s.false_positives);
        }
        for missed in &score.missed {
            println!("missed: {missed}");
        }
        for u in &score.unexplained {
            let benign = u.benign.as_ref().map_or(String::new(), |b| format!(" — benign: {b}"));
            println!("unexplained: {} [{}] {}{benign}", u.title, u.rules.join(","), u.entities.join(","));
        }
    }
    let below = |value: f64, min: Option<f64>| min.is_some_and(|m| value < m);
    if below(score.recall, min_recall) || below(score.precision, min_precision) {
        eprintln!("the score is below the required minimum");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// How many refused records `--input` names.
const SHOWN_REFUSALS: usize = 10;

/// One `{"kind": …, "record": …}` line of `--json` output.
fn write_record(out: &mut impl std::io::Write, kind: &str, record: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &serde_json::json!({ "kind": kind, "record": record }))?;
    writeln!(out)?;
    Ok(())
}

fn print_report(report: &backtest::BacktestReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for alert in &report.alerts {
            write_record(&mut out, "alert", alert)?;
        }
        for incident in &report.incidents {
            write_record(&mut out, "incident", incident)?;
        }
        std::io::Write::flush(&mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "replayed {} event(s): {} alert(s), {} incident(s) would have been raised",
        report.events,
        report.alert_count(),
        report.incidents.len()
    );
    for (rule, (alerts, incidents)) in report.by_rule() {
        println!("  {rule:<36} {alerts:>6} alert(s) {incidents:>6} incident(s)");
    }
    if report.undecodable > 0 {
        println!("  ({} stored record(s) did not decode and were skipped)", report.undecodable);
    }
    Ok(ExitCode::SUCCESS)
}
