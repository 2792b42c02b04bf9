//! `vigil hunt`: a hunt over the stored events, read-only beside a running server.

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
}

pub fn run(config: &VigilConfig, args: HuntArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open_read_only(&config.store.path)
        .with_context(|| format!("opening the store in {} (has Vigil run here yet?)", config.store.path.display()))?;
    let intel = crate::intel::Intel::open(&store, config.intel.clone(), None)?;
    let plugins = crate::app::plugin_host(config, None, None, &crate::telemetry::MetricsRegistry::default())?;
    let options = crate::app::rule_options(config, plugins.as_ref(), Some(&intel));
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
    let log = Log::read_only(&store)?;
    let index = if args.no_index || !config.hunt.index.enabled {
        None
    } else {
        Some(Index::new(&store, &config.hunt.index).map_err(|e| anyhow::anyhow!(e))?)
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
    let stats = hunt.run(
        &log,
        index.as_ref(),
        max_delay,
        config.hunt.max_groups,
        |row| {
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
        },
        |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    )?;
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
