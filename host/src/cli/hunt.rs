//! `vigil hunt`: a hunt over the stored events, read-only beside a running server, or
//! over a file in any input format (`--input`), which is decoded and never stored.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::config::VigilConfig;
use crate::hunt::{Hunt, HuntSpec, Index, cell, csv_line};
use crate::store::{Log, Store};

/// Result formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HuntFormat {
    /// Aligned columns.
    Table,
    /// One JSON object per row.
    Json,
    /// CSV with a header line.
    Csv,
}

/// `vigil hunt …`
#[derive(Debug, Args)]
pub struct HuntArgs {
    /// Events at or after this time (RFC 3339, or a duration ago: `24h`).
    #[arg(long)]
    pub from: Option<String>,
    /// Events before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// A condition over `event`, as in rules: `event.outcome == "failure"`.
    #[arg(long, short)]
    pub filter: Option<String>,
    /// Use a rule's condition (from `--rules` or `rules.dir`) as the filter.
    #[arg(long)]
    pub rule: Option<String>,
    /// Rule directory for `--rule`.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Fields to show, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub select: Vec<String>,
    /// Fields to group by, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// Aggregates: `count`, `distinct(f)`, `min(f)`, `max(f)`, `sum(f)`, `avg(f)`, `p95(f)`
    /// (repeat the flag).
    #[arg(long = "agg")]
    pub aggregates: Vec<String>,
    /// Sort keys, comma-separated; `-` in front for descending (`-count`).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub sort: Vec<String>,
    /// Most rows.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HuntFormat::Table)]
    pub format: HuntFormat,
    /// Read every record instead of using the field indexes.
    #[arg(long)]
    pub no_index: bool,
    /// Override `hunt.max_delay` (how long after its time an event may have been stored).
    #[arg(long)]
    pub max_delay: Option<humantime::Duration>,
    /// Hunt over this file (`-` for stdin) instead of the stored events: records are
    /// decoded on the fly and never stored.
    #[arg(long, conflicts_with = "no_index")]
    pub input: Option<PathBuf>,
    /// Format of the `--input` records (as for `vigil ingest`).
    #[arg(long = "input-format", default_value = "vigil", requires = "input")]
    pub input_format: crate::source::decode::Format,
}

pub fn run(config: &VigilConfig, args: HuntArgs) -> anyhow::Result<ExitCode> {
    // A file needs no store; threat intel (`ioc_match`) is read from one when there is one.
    let store = match &args.input {
        Some(_) if !config.store.path.exists() => None,
        Some(_) => Store::open_read_only(&config.store.path).ok(),
        None => Some(Store::open_read_only(&config.store.path).with_context(|| {
            format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display())
        })?),
    };
    let intel = store.as_ref().map(|s| crate::intel::Intel::open(s, config.intel.clone(), None)).transpose()?;
    let plugins = crate::app::plugin_host(config, None, None, &crate::telemetry::MetricsRegistry::default())?;
    let options = crate::app::rule_options(config, plugins.as_ref(), intel.as_ref());
    let rules = match &args.rule {
        Some(_) => {
            let dir = args.rules.clone().unwrap_or_else(|| config.rules.dir.clone());
            Some(crate::rules::RuleSet::load_dir(&dir, &options).map_err(|errors| {
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("the rules in {} do not compile:\n  {}", dir.display(), list.join("\n  "))
            })?)
        }
        None => None,
    };
    let spec = HuntSpec {
        from: args.from,
        to: args.to,
        filter: args.filter,
        rule: args.rule,
        select: args.select,
        group_by: args.group_by,
        aggregates: args.aggregates,
        sort: args.sort,
        limit: Some(args.limit),
        after: None,
    };
    let hunt = match Hunt::compile(&spec, &options, rules.as_ref(), chrono::Utc::now()) {
        Ok(hunt) => hunt,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let max_delay = args.max_delay.map_or(config.hunt.max_delay, Into::into);
    let columns = hunt.columns();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out = std::io::stdout().lock();
    let mut table: Vec<Vec<String>> = Vec::new();
    if args.format == HuntFormat::Csv {
        writeln!(out, "{}", csv_line(columns.iter().cloned()))?;
    }
    let mut failed = None;
    let row = |row: serde_json::Map<String, serde_json::Value>| {
        let result = match args.format {
            HuntFormat::Json => writeln!(out, "{}", serde_json::Value::Object(row)),
            HuntFormat::Csv => writeln!(out, "{}", csv_line(columns.iter().map(|c| cell(row.get(c))))),
            HuntFormat::Table => {
                table.push(columns.iter().map(|c| cell(row.get(c))).collect());
                Ok(())
            }
        };
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
    };
    let stats = match (&args.input, &store) {
        (Some(input), _) => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            hunt_file(config, &hunt, input, &args.input_format, row)?
        }
        (None, Some(store)) => {
            let log = Log::read_only(store)?;
            let index = if args.no_index || !config.hunt.index.enabled {
                None
            } else {
                Some(Index::new(store, &config.hunt.index).map_err(|e| anyhow::anyhow!(e))?)
            };
            hunt.run(&log, index.as_ref(), max_delay, config.hunt.max_groups, row, |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?
        }
        (None, None) => unreachable!("the store is opened when there is no input"),
    };
    bar.finish_and_clear();
    if let Some(e) = failed {
        return Err(e.into());
    }
    if args.format == HuntFormat::Table {
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| table.iter().map(|r| r[i].chars().count().min(60)).chain([c.len()]).max().unwrap_or(0))
            .collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{:<w$}", c.chars().take(60).collect::<String>(), w = *w))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(out, "{}", line(&columns).trim_end())?;
        for row in &table {
            writeln!(out, "{}", line(row).trim_end())?;
        }
    }
    if stats.rejected > 0 {
        eprintln!("{} record(s) of the input did not decode and were left out", stats.rejected);
    }
    eprintln!(
        "{} records read{}, {} matched{}{}",
        stats.read,
        stats.index.as_ref().map_or(String::new(), |f| format!(" (index on {f})")),
        stats.matched,
        match &stats.first_error {
            Some(reason) => format!(", {} events the filter failed on (first: {reason})", stats.errors),
            None => String::new(),
        },
        if stats.truncated { ", limit reached".to_owned() } else { String::new() },
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `hunt` over a file decoded on the fly: each record is read once, matched and
/// forgotten (grouped hunts keep only their groups). Records that do not decode are
/// counted (`rejected`) and the first few named on stderr.
fn hunt_file(
    config: &VigilConfig,
    hunt: &Hunt,
    input: &std::path::Path,
    format: &crate::source::decode::Format,
    mut row: impl FnMut(serde_json::Map<String, serde_json::Value>),
) -> anyhow::Result<crate::hunt::HuntStats> {
    let options = crate::source::decode::Options { limits: config.ingest.limits(), keep_raw: false };
    let (plugins, _host) = super::input::plugin_decoders(config)?;
    let mut stats = crate::hunt::HuntStats::default();
    let mut collector = hunt.collector(config.hunt.max_groups);
    let mut error = None;
    let mut seq = 0;
    super::input::read(input, format, options, &plugins, |batch| {
        for rejection in batch.rejected {
            stats.rejected += 1;
            if stats.rejected <= 5 {
                eprintln!("  line {}: {}", rejection.line, rejection.message);
            }
        }
        for event in batch.events {
            seq += 1;
            stats.read += 1;
            match collector.visit(seq, event, &mut stats, &mut row) {
                Ok(true) => {}
                Ok(false) => {
                    stats.truncated = true;
                    return Ok(false);
                }
                Err(e) => {
                    error = Some(e);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    })?;
    if let Some(e) = error {
        anyhow::bail!("{e}");
    }
    collector.finish(&mut stats, row);
    Ok(stats)
}
