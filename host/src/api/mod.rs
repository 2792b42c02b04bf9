//! The HTTP API (axum): event ingest, incidents, health, readiness and metrics.
//!
//! Errors leave in one JSON shape, `{"error": {"code": "...", "message": "..."}}`, with a
//! stable machine-readable code; internal details go to the log, not to the client.
//!
//! Layer 8: uses `event`, `store`, `telemetry`, `source`, `actions`, `incident`, `playbook`,
//! `export`.

mod response;
mod sinks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::event::IncidentId;
use crate::export::ExporterHandle;
use crate::incident::worker::{Action, LiveRules, ReloadError, WorkerHandle};
use crate::incident::{self, IncidentStatus};
use crate::source::{self, Ingestor};
use crate::store::Store;
use crate::telemetry::MetricsRegistry;

/// HTTP API settings (`[api]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on. The default binds loopback only.
    pub listen: SocketAddr,
    /// Longest a request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8470)), request_timeout: Duration::from_secs(30) }
    }
}

impl ApiConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        if self.request_timeout.is_zero() {
            return vec![("api.request_timeout".into(), "must be longer than 0s".into())];
        }
        Vec::new()
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The ingest path.
    pub ingestor: Ingestor,
    /// The store, for reads.
    pub store: Store,
    /// Metrics to expose.
    pub metrics: Arc<MetricsRegistry>,
    /// Whether the pipeline is running (for `/readyz`).
    pub ready: Arc<AtomicBool>,
    /// The live rules.
    pub rules: LiveRules,
    /// The detection worker, which owns incidents.
    pub worker: WorkerHandle,
    /// The running sinks.
    pub sinks: Arc<[ExporterHandle]>,
    /// The playbook runner.
    pub runner: Option<crate::playbook::Runner>,
    /// The event log (reports).
    pub log: crate::store::Log,
}

/// An API error: status, stable code, message for the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<source::Error> for ApiError {
    fn from(e: source::Error) -> Self {
        match e {
            source::Error::BodyTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", e.to_string())
            }
            source::Error::Gzip(_) => Self::new(StatusCode::BAD_REQUEST, "bad_gzip", e.to_string()),
            other => {
                tracing::error!(error = %other, "Ingest failed; the batch was not acknowledged.");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the event log is unavailable; retry later",
                )
            }
        }
    }
}

/// The API's routes.
pub fn router(state: ApiState, config: &ApiConfig) -> Router {
    let max_body = state.ingestor.config().max_body_bytes.as_u64() as usize;
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/incidents", get(list_incidents))
        .route("/v1/incidents/{id}", get(get_incident))
        .route("/v1/incidents/{id}/transition", post(transition_incident))
        .route("/v1/incidents/{id}/assign", post(assign_incident))
        .route("/v1/incidents/{id}/comment", post(comment_incident))
        .route("/v1/rules", get(list_rules))
        .route("/v1/rules/reload", post(reload_rules))
        .route("/v1/sinks", get(sinks::list))
        .route("/v1/dlq", get(sinks::list_dlq))
        .route("/v1/dlq/{sink}/{seq}", get(sinks::get_dlq))
        .route("/v1/dlq/replay", post(sinks::replay))
        .route("/v1/dlq/purge", post(sinks::purge))
        .route("/v1/blocklist", get(response::blocklist))
        .route("/v1/controls", get(response::controls))
        .route("/v1/actions", get(response::actions))
        .route("/v1/playbooks", get(response::playbooks))
        .route("/v1/runs", get(response::list_runs))
        .route("/v1/runs/{id}", get(response::get_run))
        .route("/v1/runs/{id}/cancel", post(response::cancel_run))
        .route("/v1/runs/{id}/steps/{step}/{decision}", post(response::decide_step))
        .route("/v1/incidents/{id}/runs", post(response::start_run))
        .route("/v1/incidents/{id}/plan", get(response::plan))
        .route("/v1/incidents/{id}/report", get(response::report))
        .route("/v1/audit", get(response::export_audit))
        .route("/v1/audit/verify", get(response::verify_audit))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown`, then finishes requests in flight.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn post_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let limit = state.ingestor.config().max_body_bytes;
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("body is larger than the limit of {limit}"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text())
        }
    })?;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let report = state.ingestor.ingest_body("http", &body, gzip).await?;
    if let Some(reason) = &report.body_error {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_batch", reason.clone()));
    }
    let status = match (report.accepted, report.rejected.len()) {
        (0, 0) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty_batch", "the body contains no records")),
        (_, 0) => StatusCode::ACCEPTED,
        (0, _) => StatusCode::BAD_REQUEST,
        _ => StatusCode::MULTI_STATUS,
    };
    Ok((status, axum::Json(report)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    status: Option<String>,
}

fn default_limit() -> usize {
    100
}

async fn list_incidents(State(state): State<ApiState>, Query(query): Query<ListQuery>) -> Result<Response, ApiError> {
    let limit = query.limit.min(1000);
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => {
            Some(s.parse::<IncidentStatus>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_status", e))?)
        }
    };
    let store = state.store.clone();
    let incidents = tokio::task::spawn_blocking(move || incident::list(&store, limit, status))
        .await
        .map_err(|_| internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "Listing incidents failed.");
            internal()
        })?;
    Ok(axum::Json(serde_json::json!({ "incidents": incidents })).into_response())
}

async fn get_incident(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: IncidentId =
        id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "incident ids are UUIDs"))?;
    let store = state.store.clone();
    let found =
        tokio::task::spawn_blocking(move || incident::get(&store, id)).await.map_err(|_| internal())?.map_err(|e| {
            tracing::error!(error = %e, "Reading an incident failed.");
            internal()
        })?;
    match found {
        Some(incident) => Ok(axum::Json(incident).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no incident {id}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    to: String,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    assignee: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    text: String,
}

/// The caller's identity for audit entries (tokens and roles come with API authentication).
const ACTOR: &str = "api";

async fn incident_action(state: &ApiState, id: &str, action: Action) -> Result<Response, ApiError> {
    let id: IncidentId =
        id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "incident ids are UUIDs"))?;
    match state.worker.incident(id, action, ACTOR).await {
        Ok(incident) => Ok(axum::Json(incident).into_response()),
        Err(incident::Error::NotFound(id)) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no incident {id}")))
        }
        Err(incident::Error::Transition(e)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string()))
        }
        Err(incident::Error::Store(e)) => {
            tracing::error!(error = %e, "Incident change failed.");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the incident store is unavailable; retry later",
            ))
        }
    }
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|axum::Json(b)| b).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text()))
}

async fn transition_incident(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::Json<TransitionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let to = body.to.parse::<IncidentStatus>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_status", e))?;
    incident_action(&state, &id, Action::Transition { to, note: body.note }).await
}

async fn assign_incident(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    incident_action(&state, &id, Action::Assign(body.assignee)).await
}

async fn comment_incident(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<axum::Json<CommentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    incident_action(&state, &id, Action::Comment(body.text)).await
}

async fn list_rules(State(state): State<ApiState>) -> Response {
    let rules = state.rules.current();
    let list: Vec<serde_json::Value> = rules
        .rules()
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.meta.id, "title": r.meta.title, "severity": r.meta.severity, "enabled": r.meta.enabled,
                "category": r.meta.category, "mitre": r.meta.mitre, "tags": r.meta.tags, "classes": r.classes,
                "native": r.is_native(), "window": r.meta.window, "path": r.path.file_name().map(|f| f.to_string_lossy()),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "rules": list })).into_response()
}

async fn reload_rules(State(state): State<ApiState>) -> Result<Response, ApiError> {
    match state.rules.reload().await {
        Ok(count) => Ok(axum::Json(serde_json::json!({ "rules": count })).into_response()),
        Err(ReloadError::Invalid(errors)) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let body = serde_json::json!({ "error": { "code": "invalid_rules", "message": "the new rules do not compile; the previous rules keep running", "errors": errors } });
            Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response())
        }
        Err(ReloadError::Store(e)) => {
            tracing::error!(error = %e, "Rule reload failed.");
            Err(internal())
        }
    }
}

pub(crate) fn internal() -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
}

async fn readyz(State(state): State<ApiState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.metrics.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
