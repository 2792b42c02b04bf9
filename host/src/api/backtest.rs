//! Backtest jobs: `POST /v1/rules/backtest` replays stored events through the running
//! rules in the background (nothing is written); `GET /v1/rules/backtest/{id}` shows its
//! progress and, when done, the alerts and incidents per rule. The last 32 jobs are kept
//! in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiPath, ApiState, json_body};
use crate::incident::backtest;

const KEEP: usize = 32;

/// One job as the API shows it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// `running`, `done` or `failed`.
    pub status: String,
    /// Records replayed so far.
    pub done: u64,
    /// Records to replay.
    pub total: u64,
    /// Events replayed (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Alerts and incidents per rule (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_rule: Option<BTreeMap<String, RuleCounts>>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one rule would have raised.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct RuleCounts {
    /// Alerts.
    pub alerts: usize,
    /// Incidents.
    pub incidents: usize,
}

/// The jobs.
pub type Jobs = Arc<Mutex<VecDeque<Job>>>;

/// `POST /v1/rules/backtest` body.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BacktestBody {
    /// Start (append time, RFC 3339); default the oldest record.
    #[serde(default)]
    from: Option<DateTime<Utc>>,
    /// End (exclusive); default now.
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

fn update(jobs: &Jobs, id: &str, f: impl FnOnce(&mut Job)) {
    let mut jobs = jobs.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(job) = jobs.iter_mut().find(|j| j.id == id) {
        f(job);
    }
}

/// Starts a job.
pub async fn start(
    State(state): State<ApiState>,
    body: Result<axum::Json<BacktestBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    if let (Some(from), Some(to)) = (body.from, body.to)
        && from >= to
    {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_body", "`from` must be before `to`"));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let job =
        Job { id: id.clone(), status: "running".into(), done: 0, total: 0, events: None, by_rule: None, error: None };
    {
        let mut jobs = state.backtests.lock().unwrap_or_else(|p| p.into_inner());
        if jobs.iter().filter(|j| j.status == "running").count() >= 2 {
            return Err(ApiError::new(StatusCode::CONFLICT, "busy", "two backtests are running; wait for one to end"));
        }
        jobs.push_back(job.clone());
        while jobs.len() > KEEP {
            jobs.pop_front();
        }
    }
    let (jobs, log, rules, detect) =
        (state.backtests.clone(), state.log.clone(), state.rules.current(), state.detect.clone());
    let policy = state.incident_policy.clone();
    let job_id = id.clone();
    tokio::task::spawn_blocking(move || {
        let report = backtest::run(&log, (*rules).clone(), detect, policy, body.from, body.to, |done, total| {
            if done % 4096 == 0 || done == total {
                update(&jobs, &job_id, |j| (j.done, j.total) = (done, total));
            }
        });
        update(&jobs, &job_id, |j| match report {
            Ok(report) => {
                j.status = "done".into();
                j.events = Some(report.events);
                j.by_rule = Some(
                    report
                        .by_rule()
                        .into_iter()
                        .map(|(rule, (alerts, incidents))| (rule, RuleCounts { alerts, incidents }))
                        .collect(),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "Backtest failed.");
                j.status = "failed".into();
                j.error = Some("the log could not be read; see the server log".into());
            }
        });
    });
    Ok((StatusCode::ACCEPTED, axum::Json(job)).into_response())
}

/// Shows a job.
pub async fn get(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let jobs = state.backtests.lock().unwrap_or_else(|p| p.into_inner());
    let job = jobs
        .iter()
        .find(|j| j.id == id)
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no backtest job {id}")))?;
    Ok(axum::Json(job).into_response())
}
