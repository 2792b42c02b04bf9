//! `/v1/hunts` (hunting over the stored events, paged) and `/v1/intel` (threat-intel feeds
//! and lookups).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ApiError, ApiPath, ApiQuery, ApiState, json_body};
use crate::hunt::{Hunt, HuntSpec, HuntStats, Index};
use crate::intel::{FeedState, ImportReport, MatcherStats};

/// What a hunt returns.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct HuntResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows (at most the query's `limit`).
    pub rows: Vec<Map<String, Value>>,
    /// What the hunt read and found.
    pub stats: HuntStats,
    /// For a projection cut short by the limit: the `after` of the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// `POST /v1/hunts`: runs a hunt (the body is the query) and answers with its rows.
pub(super) async fn run(
    State(state): State<ApiState>,
    body: Result<axum::Json<HuntSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let spec = json_body(body)?;
    let options = state.rules.options().clone();
    let rules = state.rules.current();
    let hunt = Hunt::compile(&spec, &options, Some(&rules), chrono::Utc::now())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_hunt", e.to_string()))?;
    let settings = state.hunt.clone();
    let store = state.store.clone();
    let log = state.log.clone();
    let result = tokio::task::spawn_blocking(move || {
        let index = if settings.index.enabled { Index::new(&store, &settings.index).ok() } else { None };
        let mut rows = Vec::new();
        let stats =
            hunt.run(&log, index.as_ref(), settings.max_delay, settings.max_groups, |r| rows.push(r), |_, _| {})?;
        if stats.matched == 0
            && let Some(reason) = &stats.first_error
        {
            return Err(crate::hunt::Error::Filter(reason.clone()));
        }
        let next = (!hunt.is_grouped() && stats.truncated).then_some(stats.last_seq);
        Ok::<_, crate::hunt::Error>(HuntResult { columns: hunt.columns(), rows, stats, next })
    })
    .await
    .map_err(|_| super::internal())?;
    match result {
        Ok(result) => Ok(axum::Json(result).into_response()),
        Err(crate::hunt::Error::Store(e)) => {
            tracing::error!(error = %e, "Hunt failed reading the store");
            Err(super::internal())
        }
        Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_hunt", e.to_string())),
    }
}

/// The state of threat intel.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct IntelStatus {
    /// What the matcher holds.
    pub matcher: MatcherStats,
    /// Each configured feed's position and last result.
    pub feeds: Vec<FeedStatus>,
}

/// One feed's state.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FeedStatus {
    /// The feed.
    pub name: String,
    /// Its position and last result.
    pub state: FeedState,
}

/// `GET /v1/intel`.
pub(super) async fn status(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let intel = state.intel.clone();
    let status = tokio::task::spawn_blocking(move || IntelStatus {
        matcher: intel.matcher().stats(),
        feeds: intel
            .config()
            .feeds
            .iter()
            .map(|f| FeedStatus { name: f.name.clone(), state: intel.store().feed_state(&f.name).unwrap_or_default() })
            .collect(),
    })
    .await
    .map_err(|_| super::internal())?;
    Ok(axum::Json(status).into_response())
}

/// `POST /v1/intel/feeds/{name}/poll`: polls a feed now.
pub(super) async fn poll(State(state): State<ApiState>, ApiPath(name): ApiPath<String>) -> Result<Response, ApiError> {
    let feed = state.intel.config().feeds.iter().find(|f| f.name == name).cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no feed `{name}` in [[intel.feeds]]"))
    })?;
    match state.intel.poll(&feed).await {
        Ok(report) => Ok(axum::Json::<ImportReport>(report).into_response()),
        Err(e) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "feed_failed", e.to_string())),
    }
}

/// `GET /v1/intel/lookup` parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct LookupQuery {
    /// An address, domain, URL, email address or file hash.
    pub value: String,
}

/// `GET /v1/intel/lookup?value=…`: the indicator a value matches now.
pub(super) async fn lookup(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> Result<Response, ApiError> {
    match state.intel.lookup(&q.value, chrono::Utc::now().timestamp_millis()) {
        Some(found) => Ok(axum::Json(found).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no_match", format!("no indicator matches {:?}", q.value))),
    }
}
