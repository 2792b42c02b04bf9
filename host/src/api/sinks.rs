//! Sink routes: status, and the dead-letter queue (list, show, replay, purge).

use super::{ApiPath, ApiQuery};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ApiError, ApiState, internal, json_body};
use crate::export::{DlqFilter, ExporterHandle, dlq};

/// `GET /v1/sinks`: every sink's status.
pub async fn list(State(state): State<ApiState>) -> Response {
    let sinks: Vec<_> = state.sinks.iter().map(ExporterHandle::status).collect();
    axum::Json(serde_json::json!({ "sinks": sinks })).into_response()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlqQuery {
    sink: Option<String>,
    reason: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    #[serde(default = "super::default_limit")]
    limit: usize,
}

/// `GET /v1/dlq`: dead letters matching the query, oldest first per sink.
pub async fn list_dlq(State(state): State<ApiState>, ApiQuery(q): ApiQuery<DlqQuery>) -> Result<Response, ApiError> {
    let filter = DlqFilter { sink: q.sink, reason: q.reason, from: q.from, to: q.to };
    let limit = q.limit.min(1000);
    let store = state.store.clone();
    let letters = tokio::task::spawn_blocking(move || dlq::list(&store, &filter, limit))
        .await
        .map_err(|_| internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "Listing dead letters failed.");
            internal()
        })?;
    Ok(axum::Json(serde_json::json!({ "dead_letters": letters })).into_response())
}

/// `GET /v1/dlq/{sink}/{seq}`: one dead letter.
pub async fn get_dlq(
    State(state): State<ApiState>,
    ApiPath((sink, seq)): ApiPath<(String, u64)>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let name = sink.clone();
    let letter = tokio::task::spawn_blocking(move || dlq::get(&store, &name, seq))
        .await
        .map_err(|_| internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "Reading a dead letter failed.");
            internal()
        })?;
    match letter {
        Some(letter) => Ok(axum::Json(letter).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no dead letter {sink}/{seq}"))),
    }
}

/// The sinks a filter names: the one it names, or all.
fn targets<'a>(state: &'a ApiState, filter: &DlqFilter) -> Result<Vec<&'a ExporterHandle>, ApiError> {
    match &filter.sink {
        Some(name) => match state.sinks.iter().find(|h| h.name() == name) {
            Some(h) => Ok(vec![h]),
            None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no running sink `{name}`"))),
        },
        None => Ok(state.sinks.iter().collect()),
    }
}

type FilterBody = Result<axum::Json<DlqFilter>, axum::extract::rejection::JsonRejection>;

#[derive(Clone, Copy, Debug)]
enum Change {
    Replay,
    Purge,
}

async fn change(state: &ApiState, body: FilterBody, change: Change) -> Result<Response, ApiError> {
    let filter = json_body(body)?;
    let mut count = 0;
    for handle in targets(state, &filter)? {
        let result = match change {
            Change::Replay => handle.replay(filter.clone()).await,
            Change::Purge => handle.purge(filter.clone()).await,
        };
        count += result.map_err(|e| {
            tracing::error!(sink = handle.name(), error = %e, ?change, "Dead-letter operation failed.");
            internal()
        })?;
    }
    let key = match change {
        Change::Replay => "replayed",
        Change::Purge => "purged",
    };
    Ok(axum::Json(serde_json::json!({ key: count })).into_response())
}

/// `POST /v1/dlq/replay` with a filter (`sink`, `reason`, `from`, `to`): sends the
/// matching letters again; a delivered letter leaves the queue, so asking twice is safe.
pub async fn replay(State(state): State<ApiState>, body: FilterBody) -> Result<Response, ApiError> {
    change(&state, body, Change::Replay).await
}

/// `POST /v1/dlq/purge` with a filter: deletes the matching letters.
pub async fn purge(State(state): State<ApiState>, body: FilterBody) -> Result<Response, ApiError> {
    change(&state, body, Change::Purge).await
}
