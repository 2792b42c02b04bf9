//! `/v1/plugins`: the loaded WebAssembly plugins, and loading, reloading and unloading them
//! in a running Vigil. A plugin that fails to load leaves its previous version running and
//! answers 422 with the reasons.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiPath, ApiState};
use crate::plugins::PluginHost;

fn host(state: &ApiState) -> Result<&PluginHost, ApiError> {
    state.plugins.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "plugins_off", "plugins are off: the [plugins] dir does not exist")
    })
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no plugin `{name}` is loaded"))
}

/// `GET /v1/plugins`.
pub(super) async fn list(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let plugins = state.plugins.as_ref().map(PluginHost::list).unwrap_or_default();
    Ok(axum::Json(serde_json::json!({ "plugins": plugins })).into_response())
}

/// `GET /v1/plugins/{name}`.
pub(super) async fn get(State(state): State<ApiState>, ApiPath(name): ApiPath<String>) -> Result<Response, ApiError> {
    let plugin = host(&state)?.get(&name).ok_or_else(|| unknown(&name))?;
    Ok(axum::Json(plugin.info()).into_response())
}

/// `POST /v1/plugins/{name}/reload`: (re)loads `<dir>/<name>/plugin.toml`.
pub(super) async fn reload(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let host = host(&state)?.clone();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", "plugin names are A-Z a-z 0-9 _ - only"));
    }
    let manifest = host.config().dir.join(&name).join("plugin.toml");
    let loaded = tokio::task::spawn_blocking(move || host.load(&manifest)).await.map_err(|_| super::internal())?;
    match loaded {
        Ok(plugin) => Ok(axum::Json(plugin.info()).into_response()),
        Err(e) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_refused", e.to_string())),
    }
}

/// `DELETE /v1/plugins/{name}`.
pub(super) async fn unload(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    if host(&state)?.unload(&name) {
        Ok(axum::Json(serde_json::json!({ "unloaded": name })).into_response())
    } else {
        Err(unknown(&name))
    }
}

/// `POST /v1/plugins/sync`: loads new and changed plugins of the directory, unloads the
/// removed ones.
pub(super) async fn sync(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let host = host(&state)?.clone();
    let probe = host.clone();
    let failures = tokio::task::spawn_blocking(move || probe.sync_dir()).await.map_err(|_| super::internal())?;
    let failed: Vec<String> = failures.iter().map(ToString::to_string).collect();
    Ok(axum::Json(serde_json::json!({ "plugins": host.list(), "failed": failed })).into_response())
}
