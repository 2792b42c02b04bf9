//! Response routes: the deny list and controls that protected systems pull, actions and
//! playbooks, playbook runs (start, plan, approve, deny, complete, cancel), incident
//! reports and the audit trail.
//!
//! With authentication on, approvals, cancellations and started runs record the token's
//! name and use its role; with it off, the request body names them.

use super::{ApiPath, ApiQuery};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::{ApiError, ApiState, internal, json_body};
use crate::actions::{audit, block, controls};
use crate::event::{IncidentId, RunId};
use crate::playbook::runner::RunError;
use crate::playbook::{Role, Runner, report};
use axum::Extension;

type JsonBody<T> = Result<axum::Json<T>, axum::extract::rejection::JsonRejection>;

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> crate::store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| internal())?.map_err(|e| {
        tracing::error!(error = %e, "{what} failed.");
        internal()
    })
}

fn runner(state: &ApiState) -> Result<&Runner, ApiError> {
    state.runner.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_runner", "the playbook runner is not running")
    })
}

fn run_error(e: RunError) -> ApiError {
    match e {
        RunError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        RunError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        RunError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
        RunError::Store(e) => {
            tracing::error!(error = %e, "Playbook store operation failed.");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the store is unavailable; retry later")
        }
    }
}

fn incident_id(id: &str) -> Result<IncidentId, ApiError> {
    id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "incident ids are UUIDs"))
}

fn run_id(id: &str) -> Result<RunId, ApiError> {
    id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "run ids are UUIDs"))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatQuery {
    format: Option<String>,
}

fn wants_json(headers: &HeaderMap, query: &FormatQuery) -> bool {
    match query.format.as_deref() {
        Some(f) => f == "json",
        None => {
            headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("application/json"))
        }
    }
}

/// `GET /v1/blocklist`: blocked addresses, one per line (`?format=json` or
/// `Accept: application/json` for entries with reason and expiry).
pub async fn blocklist(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<FormatQuery>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let entries = blocking("Reading the deny list", move || block::deny_list(&store, chrono::Utc::now())).await?;
    if wants_json(&headers, &query) {
        return Ok(axum::Json(serde_json::json!({ "blocked": entries })).into_response());
    }
    let mut text = String::new();
    for e in &entries {
        text.push_str(&e.ip);
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `GET /v1/controls`: controls in force (read-only mode, rate limits, enhanced logging).
pub async fn controls(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let active = blocking("Reading controls", move || controls::active(&store, chrono::Utc::now())).await?;
    let read_only: Vec<&str> = active
        .iter()
        .filter(|c| c.control == "read_only_mode" && c.value["enabled"] == true)
        .map(|c| c.scope.as_str())
        .collect();
    Ok(axum::Json(serde_json::json!({ "read_only": read_only, "controls": active })).into_response())
}

/// `GET /v1/actions`: every action's declaration.
pub async fn actions(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let actions = runner(&state)?.actions();
    Ok(axum::Json(serde_json::json!({ "actions": actions.specs() })).into_response())
}

/// `GET /v1/playbooks`: the loaded playbooks.
pub async fn playbooks(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let set = runner(&state)?.playbooks();
    let list: Vec<_> = set.all().map(|p| p.as_ref().clone()).collect();
    Ok(axum::Json(serde_json::json!({ "playbooks": list })).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    incident: Option<String>,
}

/// `GET /v1/runs`: runs, oldest first (`?incident=ID` for one incident's).
pub async fn list_runs(State(state): State<ApiState>, ApiQuery(q): ApiQuery<RunsQuery>) -> Result<Response, ApiError> {
    let incident = q.incident.as_deref().map(incident_id).transpose()?;
    let runner = runner(&state)?.clone();
    let runs = blocking("Listing runs", move || runner.list(incident)).await?;
    Ok(axum::Json(serde_json::json!({ "runs": runs })).into_response())
}

/// `GET /v1/runs/{id}`.
pub async fn get_run(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let id = run_id(&id)?;
    let runner = runner(&state)?.clone();
    match blocking("Reading a run", move || runner.get(id)).await? {
        Some(run) => Ok(axum::Json(run).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run {id}"))),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    playbook: String,
    #[serde(default)]
    dry_run: bool,
    /// Who asks, when authentication is off (with a token, the token's name).
    #[serde(default)]
    requested_by: Option<String>,
}

/// `POST /v1/incidents/{id}/runs`: start a playbook on an incident (`dry_run` records a
/// plan only).
pub async fn start_run(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: JsonBody<StartBody>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let id = incident_id(&id)?;
    let by = identity(&caller, body.requested_by)?;
    let run = runner(&state)?.start_run(id, &body.playbook, &by, body.dry_run).await.map_err(run_error)?;
    Ok((StatusCode::CREATED, axum::Json(run)).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanQuery {
    playbook: String,
}

/// `GET /v1/incidents/{id}/plan?playbook=ID`: what a run would do; nothing runs.
pub async fn plan(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<Response, ApiError> {
    let id = incident_id(&id)?;
    let runner = runner(&state)?.clone();
    let plan = tokio::task::spawn_blocking(move || runner.plan(id, &q.playbook))
        .await
        .map_err(|_| internal())?
        .map_err(run_error)?;
    Ok(axum::Json(plan).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    /// Who decides, when authentication is off (with a token, the token's name).
    #[serde(default)]
    approver: Option<String>,
    /// Their role, when authentication is off (with a token, the token's role).
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    note: Option<String>,
}

/// The identity to record: the token's name, or with authentication off the one the body
/// names (required then).
fn identity(caller: &Caller, named: Option<String>) -> Result<String, ApiError> {
    if caller.authenticated {
        if named.as_ref().is_some_and(|n| n != &caller.name) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "identity_mismatch",
                "the body names someone other than the token's holder; leave it out",
            ));
        }
        return Ok(caller.name.clone());
    }
    named
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", "name who acts (authentication is off)"))
}

/// `POST /v1/runs/{id}/steps/{step}/{approve|deny|complete}`.
pub async fn decide_step(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, step, decision)): ApiPath<(String, String, String)>,
    body: JsonBody<DecisionBody>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let id = run_id(&id)?;
    let approve = match decision.as_str() {
        "approve" | "complete" => true,
        "deny" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no step decision `{other}` (approve, deny, complete)"),
            ));
        }
    };
    let approver = identity(&caller, body.approver)?;
    let role = match (caller.authenticated, body.role) {
        (true, _) => caller.role,
        (false, Some(role)) => role,
        (false, None) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_body", "name the role (authentication is off)"));
        }
    };
    let run = runner(&state)?.decide(id, &step, &approver, role, approve, body.note).await.map_err(run_error)?;
    Ok(axum::Json(run).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelBody {
    #[serde(default)]
    actor: Option<String>,
}

/// `POST /v1/runs/{id}/cancel`.
pub async fn cancel_run(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: JsonBody<CancelBody>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let id = run_id(&id)?;
    let actor = identity(&caller, body.actor)?;
    let run = runner(&state)?.cancel(id, &actor).await.map_err(run_error)?;
    Ok(axum::Json(run).into_response())
}

/// `GET /v1/incidents/{id}/report`: the post-incident report (Markdown).
pub async fn report(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let id = incident_id(&id)?;
    let (store, log) = (state.store.clone(), state.log.clone());
    match blocking("Writing a report", move || report::markdown(&store, &log, id)).await? {
        Some(text) => Ok(([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], text).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no incident {id}"))),
    }
}

/// `GET /v1/audit/verify`: recomputes the hash chain.
pub async fn verify_audit(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let report = blocking("Verifying the audit trail", move || audit::verify(&store)).await?;
    let status = if report.ok() { StatusCode::OK } else { StatusCode::CONFLICT };
    Ok((
        status,
        axum::Json(serde_json::json!({ "ok": report.ok(), "records": report.records, "problems": report.problems })),
    )
        .into_response())
}

/// `GET /v1/audit`: every audit record as JSON lines.
pub async fn export_audit(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let text = blocking("Exporting the audit trail", move || {
        let mut out = Vec::new();
        audit::export(&store, |r| {
            serde_json::to_writer(&mut out, r).map_err(std::io::Error::other)?;
            out.push(b'\n');
            Ok(())
        })?;
        Ok(out)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], text).into_response())
}
