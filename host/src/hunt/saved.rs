//! Saved hunts: a hunt that runs on a schedule over the last `lookback` and, when it returns
//! rows, stores a `finding` event (`provider = "vigil.hunt"`, the hunt's id, row count and
//! first rows in `attributes`). The shipped rule `saved_hunt_returned_rows` turns those
//! findings into alerts and incidents, so a hunt becomes a detection through the same path
//! as any other.

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Hunt, HuntSpec, Index};
use crate::event::{EventClass, SecurityEvent, Severity};
use crate::rules::{CompileOptions, RuleSet};
use crate::source::Ingestor;
use crate::store::Log;

/// One saved hunt (`[[hunt.saved]]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedHunt {
    /// Id, in the findings it raises.
    pub id: String,
    /// What it looks for.
    #[serde(default)]
    pub title: Option<String>,
    /// How often it runs.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub every: Duration,
    /// How far back each run looks (default: `every`).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub lookback: Option<Duration>,
    /// The severity of its findings.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// The query (its `from`/`to` are set by the schedule).
    #[serde(flatten)]
    pub query: HuntSpec,
}

fn default_severity() -> Severity {
    Severity::Medium
}

/// What a scheduled hunt runs with: the log and its indexes, where findings go, how rules
/// compile, the current rules (for `rule =` hunts), and how late events may be stored.
#[derive(Debug)]
pub struct Schedule<F> {
    /// The event log.
    pub log: Log,
    /// The hunt indexes, when on.
    pub index: Option<Index>,
    /// Where findings are appended.
    pub ingestor: Ingestor,
    /// How rule conditions compile.
    pub options: CompileOptions,
    /// The current rule set.
    pub rules: F,
    /// How long after its time an event may have been stored.
    pub max_delay: Duration,
}

impl SavedHunt {
    /// Problems with its settings.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.id.is_empty() || !self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            errors.push(("id".into(), "must be non-empty and use only A-Z a-z 0-9 _ -".into()));
        }
        if self.every.is_zero() {
            errors.push(("every".into(), "must be longer than 0s".into()));
        }
        if self.query.from.is_some() || self.query.to.is_some() {
            errors.push(("from".into(), "a saved hunt's range is its `lookback`; leave from and to out".into()));
        }
        errors
    }

    /// Runs once over the last `lookback`: the rows it found (at most `limit`).
    pub fn run_once(
        &self,
        log: &Log,
        index: Option<&Index>,
        options: &CompileOptions,
        rules: Option<&RuleSet>,
        max_delay: Duration,
    ) -> Result<Vec<serde_json::Map<String, Value>>, super::Error> {
        let now = Utc::now();
        let lookback = self.lookback.unwrap_or(self.every);
        let mut spec = self.query.clone();
        spec.from = Some((now - chrono::Duration::from_std(lookback).unwrap_or_default()).to_rfc3339());
        spec.to = Some(now.to_rfc3339());
        let hunt = Hunt::compile(&spec, options, rules, now)?;
        let mut rows = Vec::new();
        hunt.run(log, index, max_delay, usize::MAX, |r| rows.push(r), |_, _| {})?;
        Ok(rows)
    }

    /// The finding a run that returned `rows` stores.
    pub fn finding(&self, rows: &[serde_json::Map<String, Value>]) -> SecurityEvent {
        let mut event = SecurityEvent::new(EventClass::Finding, Utc::now());
        event.provider = Some("vigil.hunt".into());
        event.action = Some("hunt_returned_rows".into());
        event.severity = self.severity;
        event.message = Some(format!(
            "saved hunt {} returned {} rows: {}",
            self.id,
            rows.len(),
            self.title.as_deref().unwrap_or("")
        ));
        event.attributes.insert(
            "hunt".into(),
            json!({
                "id": self.id,
                "title": self.title,
                "rows": rows.len(),
                "sample": rows.iter().take(20).collect::<Vec<_>>(),
            }),
        );
        event
    }

    /// Runs on its schedule until `stop`, storing a finding whenever rows come back.
    pub async fn schedule<F>(self, with: Schedule<F>, stop: CancellationToken)
    where
        F: Fn() -> std::sync::Arc<RuleSet> + Send + 'static,
    {
        let Schedule { log, index, ingestor, options, rules, max_delay } = with;
        loop {
            if !crate::telemetry::pause(&stop, self.every).await {
                return;
            }
            let (me, reader, idx, opts, set) = (self.clone(), log.clone(), index.clone(), options.clone(), rules());
            let result =
                tokio::task::spawn_blocking(move || me.run_once(&reader, idx.as_ref(), &opts, Some(&set), max_delay))
                    .await;
            match result {
                Ok(Ok(rows)) if rows.is_empty() => tracing::debug!(hunt = %self.id, "Saved hunt returned no rows"),
                Ok(Ok(rows)) => {
                    tracing::info!(hunt = %self.id, rows = rows.len(), "Saved hunt returned rows; storing a finding");
                    if let Err(error) = ingestor.append("vigil.hunt", &[self.finding(&rows)], Vec::new()).await {
                        tracing::warn!(hunt = %self.id, %error, "The saved hunt's finding could not be stored");
                    }
                }
                Ok(Err(error)) => tracing::warn!(hunt = %self.id, %error, "Saved hunt failed"),
                Err(error) => tracing::warn!(hunt = %self.id, %error, "Saved hunt panicked"),
            }
        }
    }
}
