//! The HTTP API (axum): event ingest, incidents, health, readiness and metrics.
//!
//! Errors leave in one JSON shape, `{"error": {"code": "...", "message": "..."}}`, with a
//! stable machine-readable code; internal details go to the log, not to the client.
//!
//! Layer 8: uses `event`, `store`, `telemetry`, `source`, `actions`, `incident`, `playbook`,
//! `export`.

pub mod auth;
mod backtest;
mod hunt;
pub mod openapi;
mod plugins;
mod response;
mod sinks;
mod webhooks;

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
use crate::playbook::Role;
use crate::source::{self, Ingestor};
use crate::store::Store;
use crate::telemetry::MetricsRegistry;
use auth::Caller;
use axum::Extension;
use webhooks::Validate as _;

/// HTTP API settings (`[api]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on. The default binds loopback only.
    pub listen: SocketAddr,
    /// Longest a request may take.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// Origins allowed by CORS; empty (the default): no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Tokens, roles and per-token rate limits.
    pub auth: auth::AuthConfig,
    /// Inbound webhooks from other tools (`[api.webhooks.NAME]`).
    pub webhooks: webhooks::WebhooksConfig,
    /// Serve HTTPS (and require client certificates with `client_ca_file`).
    pub tls: Option<ApiTlsConfig>,
}

/// TLS on the API listener (`[api.tls]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    /// PEM file with the server certificate chain.
    pub cert_file: std::path::PathBuf,
    /// PEM file with the server's private key.
    pub key_file: std::path::PathBuf,
    /// PEM file of CAs; when set, clients must present a certificate signed by one (mutual
    /// TLS), in addition to their token.
    #[serde(default)]
    pub client_ca_file: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            request_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            auth: auth::AuthConfig::default(),
            webhooks: webhooks::WebhooksConfig::default(),
            tls: None,
        }
    }
}

impl ApiConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.request_timeout.is_zero() {
            errors.push(("api.request_timeout".into(), "must be longer than 0s".into()));
        }
        for origin in &self.cors_origins {
            if origin.parse::<axum::http::HeaderValue>().is_err() || !origin.starts_with("http") {
                errors.push(("api.cors_origins".into(), format!("`{origin}` is not an origin (https://host[:port])")));
            }
        }
        errors.extend(self.auth.validate());
        errors.extend(self.webhooks.validate());
        errors
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
    /// Token authentication.
    pub auth: Arc<auth::Auth>,
    /// Inbound webhook settings.
    pub webhooks: Arc<webhooks::WebhooksConfig>,
    /// Detection settings (backtests replay with them).
    pub detect: crate::detect::DetectConfig,
    /// The incident priority policy (backtests classify with it).
    pub incident_policy: crate::incident::Policy,
    /// Backtest jobs.
    pub backtests: backtest::Jobs,
    /// The plugin host (when plugins are on).
    pub plugins: Option<crate::plugins::PluginHost>,
    /// Threat intel.
    pub intel: crate::intel::Intel,
    /// Hunt settings.
    pub hunt: crate::hunt::HuntConfig,
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
        let request_id = auth::REQUEST_ID.try_with(Clone::clone).ok();
        let body =
            serde_json::json!({ "error": { "code": self.code, "message": self.message, "request_id": request_id } });
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
            source::Error::Format(_) => Self::new(StatusCode::BAD_REQUEST, "unknown_format", e.to_string()),
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

/// One route: method, path, and the role it needs (`None`: public).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path template (`/v1/incidents/{id}`).
    pub path: &'static str,
    /// The least role (`None`: no token needed).
    pub role: Option<Role>,
}

type Handler = axum::routing::MethodRouter<ApiState>;

/// Every route with its handler; the only place routes are declared, so none can be added
/// without a role.
fn routes() -> Vec<(RouteSpec, Handler)> {
    use Role::{Admin, Ingest, Responder, Viewer};
    let r = |method: &'static str, path: &'static str, role: Option<Role>, handler: Handler| {
        (RouteSpec { method, path, role }, handler)
    };
    vec![
        r("POST", "/v1/events", Some(Ingest), post(post_events)),
        // The signature is the credential: GitHub and Alertmanager cannot send our tokens.
        r("POST", "/v1/webhooks/{source}", None, post(webhooks::receive)),
        r("GET", "/v1/incidents", Some(Viewer), get(list_incidents)),
        r("GET", "/v1/incidents/{id}", Some(Viewer), get(get_incident)),
        r("GET", "/v1/incidents/{id}/timeline", Some(Viewer), get(incident_timeline)),
        r("POST", "/v1/incidents/{id}/transition", Some(Responder), post(transition_incident)),
        r("POST", "/v1/incidents/{id}/acknowledge", Some(Responder), post(acknowledge_incident)),
        r("POST", "/v1/incidents/{id}/assign", Some(Responder), post(assign_incident)),
        r("POST", "/v1/incidents/{id}/comment", Some(Responder), post(comment_incident)),
        r("POST", "/v1/incidents/{id}/runs", Some(Responder), post(response::start_run)),
        r("GET", "/v1/incidents/{id}/plan", Some(Viewer), get(response::plan)),
        r("GET", "/v1/incidents/{id}/report", Some(Viewer), get(response::report)),
        r("GET", "/v1/rules", Some(Viewer), get(list_rules)),
        r("GET", "/v1/rules/{id}", Some(Viewer), get(get_rule)),
        r("POST", "/v1/rules/check", Some(Admin), post(check_rules)),
        r("POST", "/v1/rules/test", Some(Admin), post(test_rules)),
        r("POST", "/v1/rules/reload", Some(Admin), post(reload_rules)),
        r("POST", "/v1/rules/backtest", Some(Responder), post(backtest::start)),
        r("GET", "/v1/rules/backtest/{id}", Some(Viewer), get(backtest::get)),
        r("GET", "/v1/sinks", Some(Viewer), get(sinks::list)),
        r("GET", "/v1/dlq", Some(Viewer), get(sinks::list_dlq)),
        r("GET", "/v1/dlq/{sink}/{seq}", Some(Viewer), get(sinks::get_dlq)),
        r("POST", "/v1/dlq/replay", Some(Admin), post(sinks::replay)),
        r("POST", "/v1/dlq/purge", Some(Admin), post(sinks::purge)),
        r("GET", "/v1/blocklist", Some(Viewer), get(response::blocklist)),
        r("GET", "/v1/controls", Some(Viewer), get(response::controls)),
        r("GET", "/v1/actions", Some(Viewer), get(response::actions)),
        r("GET", "/v1/playbooks", Some(Viewer), get(response::playbooks)),
        r("GET", "/v1/runs", Some(Viewer), get(response::list_runs)),
        r("GET", "/v1/runs/{id}", Some(Viewer), get(response::get_run)),
        r("POST", "/v1/runs/{id}/cancel", Some(Responder), post(response::cancel_run)),
        r("POST", "/v1/runs/{id}/steps/{step}/{decision}", Some(Responder), post(response::decide_step)),
        r("GET", "/v1/audit", Some(Admin), get(response::export_audit)),
        r("GET", "/v1/audit/verify", Some(Viewer), get(response::verify_audit)),
        r("POST", "/v1/hunts", Some(Viewer), post(hunt::run)),
        r("GET", "/v1/intel", Some(Viewer), get(hunt::status)),
        r("GET", "/v1/intel/lookup", Some(Viewer), get(hunt::lookup)),
        r("POST", "/v1/intel/feeds/{name}/poll", Some(Admin), post(hunt::poll)),
        r("GET", "/v1/plugins", Some(Viewer), get(plugins::list)),
        r("POST", "/v1/plugins/sync", Some(Admin), post(plugins::sync)),
        r("GET", "/v1/plugins/{name}", Some(Viewer), get(plugins::get)),
        r("POST", "/v1/plugins/{name}/reload", Some(Admin), post(plugins::reload)),
        r("DELETE", "/v1/plugins/{name}", Some(Admin), axum::routing::delete(plugins::unload)),
        r("GET", "/metrics", Some(Viewer), get(metrics)),
        r("GET", "/v1/openapi.json", None, get(openapi_json)),
        r("GET", "/healthz", None, get(|| async { "ok\n" })),
        r("GET", "/readyz", None, get(readyz)),
    ]
}

async fn openapi_json() -> Response {
    static DOCUMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| openapi::document(&route_table()).to_string());
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

/// The route table: every route with the role it needs (the auth test walks it).
pub fn route_table() -> Vec<RouteSpec> {
    routes().into_iter().map(|(spec, _)| spec).collect()
}

/// The API's routes.
pub fn router(state: ApiState, config: &ApiConfig) -> Router {
    let max_body = state.ingestor.config().max_body_bytes.as_u64() as usize;
    let auth = state.auth.clone();
    let mut router = Router::new();
    for (spec, handler) in routes() {
        let layer = axum::middleware::from_fn_with_state((auth.clone(), spec.role), auth::require);
        router = router.route(spec.path, handler.route_layer(layer));
    }
    router = router.fallback(|| async {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /v1/openapi.json")
    });
    let mut router = router.layer(DefaultBodyLimit::max(max_body)).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout),
    );
    if !config.cors_origins.is_empty() {
        let origins: Vec<axum::http::HeaderValue> = config.cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        router = router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    router.layer(axum::middleware::from_fn(auth::request_id)).with_state(state)
}

/// Serves `router` on `listener` until `shutdown`, then finishes requests in flight; with
/// `tls`, over TLS (handshakes run concurrently, each bounded to 10 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let done = shutdown.clone();
    let graceful = async move { done.cancelled().await };
    match tls {
        None => axum::serve(listener, router).with_graceful_shutdown(graceful).await,
        Some(acceptor) => {
            let listener = TlsListener::new(listener, acceptor, shutdown)?;
            axum::serve(listener, router).with_graceful_shutdown(graceful).await
        }
    }
}

/// A listener that hands axum only connections whose TLS handshake succeeded.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(error = %e, "API accept failed.");
                            continue;
                        }
                    },
                    () = shutdown.cancelled() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API TLS handshake failed."),
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out."),
                    }
                });
            }
        });
        Ok(Self { rx, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop stopped (shutdown): wait for the graceful shutdown to end us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// `POST /v1/events` options.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Input format of the body: `vigil` (default), `auto`, `ecs`, `ocsf`, `windows`
    /// (EVTX, XML, JSON), `cloudtrail`, `azure`, `gcp_audit`, `okta`, `k8s_audit`,
    /// `github_audit`, `auditd`, `zeek`, `suricata`, `falco`, `cef`, `leef`, `syslog`,
    /// `plugin:NAME`. The `X-Vigil-Format` header says the same.
    #[serde(default)]
    format: Option<String>,
}

/// The body's format: `?format=`, else the `X-Vigil-Format` header, else `vigil`.
fn body_format(query: &EventsQuery, headers: &HeaderMap) -> Result<source::Format, ApiError> {
    let named = query.format.as_deref().or_else(|| headers.get("x-vigil-format").and_then(|v| v.to_str().ok()));
    match named {
        None => Ok(source::Format::Vigil),
        Some(name) => name.parse().map_err(|e: source::UnknownFormat| {
            ApiError::new(StatusCode::BAD_REQUEST, "unknown_format", e.to_string())
        }),
    }
}

async fn post_events(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let format = body_format(&query, &headers)?;
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
    let report = state.ingestor.ingest_body("http", &body, gzip, &format).await?;
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

/// `GET /v1/incidents` filters and paging.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Page size (at most 1,000).
    #[serde(default = "default_limit")]
    #[schemars(range(min = 1, max = 1000))]
    limit: usize,
    /// Only incidents in this status.
    #[serde(default)]
    status: Option<IncidentStatus>,
    /// Only incidents of this priority or more urgent (`P1` takes P0 and P1).
    #[serde(default)]
    min_priority: Option<crate::event::Priority>,
    /// Only incidents of this rule.
    #[serde(default)]
    rule: Option<String>,
    /// The page after this one: the `next` of the previous page.
    #[serde(default)]
    before: Option<IncidentId>,
}

fn default_limit() -> usize {
    100
}

async fn list_incidents(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.clamp(1, 1000);
    let store = state.store.clone();
    let (status, least, rule) = (query.status, query.min_priority, query.rule);
    let keep = move |i: &incident::Incident| {
        status.is_none_or(|s| i.status == s)
            && least.is_none_or(|p| i.priority <= p)
            && rule.as_deref().is_none_or(|r| i.rule_id.as_str() == r)
    };
    let incidents = tokio::task::spawn_blocking(move || incident::page(&store, limit, query.before, keep))
        .await
        .map_err(|_| internal())?
        .map_err(|e| {
            tracing::error!(error = %e, "Listing incidents failed.");
            internal()
        })?;
    let next = (incidents.len() == limit).then(|| incidents.last().map(|i| i.id)).flatten();
    Ok(axum::Json(serde_json::json!({ "incidents": incidents, "next": next })).into_response())
}

async fn read_incident(state: &ApiState, id: &str) -> Result<incident::Incident, ApiError> {
    let id: IncidentId =
        id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "incident ids are UUIDs"))?;
    let store = state.store.clone();
    let found =
        tokio::task::spawn_blocking(move || incident::get(&store, id)).await.map_err(|_| internal())?.map_err(|e| {
            tracing::error!(error = %e, "Reading an incident failed.");
            internal()
        })?;
    found.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no incident {id}")))
}

async fn get_incident(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(read_incident(&state, &id).await?).into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransitionBody {
    to: String,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignBody {
    assignee: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommentBody {
    text: String,
}

async fn incident_action(state: &ApiState, caller: &Caller, id: &str, action: Action) -> Result<Response, ApiError> {
    let id: IncidentId =
        id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", "incident ids are UUIDs"))?;
    match state.worker.incident(id, action, &caller.name).await {
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

/// `Query` whose rejection is an [`ApiError`] (JSON, with the request id).
#[derive(Debug)]
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
    }
}

/// `Path` whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Self(p))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))
    }
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|axum::Json(b)| b).map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", e.body_text()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", e.body_text())
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.body_text()),
    })
}

async fn transition_incident(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: Result<axum::Json<TransitionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    let to = body.to.parse::<IncidentStatus>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_status", e))?;
    incident_action(&state, &caller, &id, Action::Transition { to, note: body.note }).await
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteBody {
    #[serde(default)]
    note: Option<String>,
}

async fn acknowledge_incident(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: Option<axum::Json<NoteBody>>,
) -> Result<Response, ApiError> {
    let note = body.and_then(|axum::Json(b)| b.note);
    incident_action(&state, &caller, &id, Action::Transition { to: IncidentStatus::Acknowledged, note }).await
}

async fn incident_timeline(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let incident = read_incident(&state, &id).await?;
    Ok(axum::Json(serde_json::json!({ "id": incident.id, "timeline": incident.timeline })).into_response())
}

async fn assign_incident(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: Result<axum::Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    incident_action(&state, &caller, &id, Action::Assign(body.assignee)).await
}

async fn comment_incident(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    body: Result<axum::Json<CommentBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let body = json_body(body)?;
    incident_action(&state, &caller, &id, Action::Comment(body.text)).await
}

fn rule_json(r: &crate::rules::CompiledRule) -> serde_json::Value {
    serde_json::json!({
        "id": r.meta.id, "title": r.meta.title, "severity": r.meta.severity, "enabled": r.meta.enabled,
        "category": r.meta.category, "mitre": r.meta.mitre, "tags": r.meta.tags, "classes": r.classes,
        "native": r.is_native(), "window": r.meta.window, "path": r.path.file_name().map(|f| f.to_string_lossy()),
        "author": r.meta.author, "language": if r.sigma.is_some() { "sigma" } else { "rhai" },
        "logsource": r.sigma.as_ref().map(|s| &s.logsource), "idle": r.sigma.as_ref().and_then(|s| s.idle.as_ref()),
    })
}

async fn list_rules(State(state): State<ApiState>) -> Response {
    let rules = state.rules.current();
    let list: Vec<serde_json::Value> = rules.rules().iter().map(|r| rule_json(r)).collect();
    axum::Json(serde_json::json!({ "rules": list })).into_response()
}

async fn get_rule(State(state): State<ApiState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let rules = state.rules.current();
    let rule = rules
        .rules()
        .iter()
        .find(|r| r.meta.id.as_str() == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no rule {id}")))?;
    let mut body = rule_json(rule);
    body["description"] = serde_json::json!(rule.meta.description);
    body["playbook"] = serde_json::json!(rule.meta.playbook);
    body["notify"] = serde_json::json!(rule.meta.notify);
    body["auto_remediate"] = serde_json::json!(rule.meta.auto_remediate);
    body["group_by"] = serde_json::json!(rule.meta.group_by);
    body["examples"] = serde_json::json!(rule.meta.examples.len());
    body["references"] = serde_json::json!(rule.meta.references);
    body["falsepositives"] = serde_json::json!(rule.meta.falsepositives);
    Ok(axum::Json(body).into_response())
}

/// Rule errors name the file, not the server's directory layout.
fn rule_errors(errors: &[crate::rules::RuleError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.path = e.path.file_name().map(std::path::PathBuf::from).unwrap_or_default();
            e.to_string()
        })
        .collect()
}

/// `POST /v1/rules/check`: compiles the rule directory as it is on disk now, without
/// swapping it in.
async fn check_rules(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let (dir, options) = (state.rules.dir().to_owned(), state.rules.options().clone());
    let compiled = tokio::task::spawn_blocking(move || crate::rules::RuleSet::load_dir(&dir, &options))
        .await
        .map_err(|_| internal())?;
    let body = match compiled {
        Ok(rules) => serde_json::json!({ "ok": true, "rules": rules.rules().len(), "errors": [] }),
        Err(errors) => serde_json::json!({ "ok": false, "rules": 0, "errors": rule_errors(&errors) }),
    };
    Ok(axum::Json(body).into_response())
}

/// `POST /v1/rules/test`: runs the running rules' examples.
async fn test_rules(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let rules = state.rules.current();
    let results =
        tokio::task::spawn_blocking(move || crate::detect::examples::run(&rules)).await.map_err(|_| internal())?;
    let failed: Vec<serde_json::Value> = results
        .iter()
        .filter_map(|r| {
            r.failure.as_ref().map(|f| serde_json::json!({ "rule": r.rule, "example": r.example, "failure": f }))
        })
        .collect();
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    let passed = results.len() - failed.len() - skipped;
    let body = serde_json::json!({ "examples": results.len(), "passed": passed, "skipped": skipped, "failed": failed });
    Ok(axum::Json(body).into_response())
}

async fn reload_rules(State(state): State<ApiState>) -> Result<Response, ApiError> {
    match state.rules.reload().await {
        Ok(count) => Ok(axum::Json(serde_json::json!({ "rules": count })).into_response()),
        Err(ReloadError::Invalid(errors)) => {
            let errors = rule_errors(&errors);
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
    openmetrics(&state.metrics)
}

fn openmetrics(registry: &MetricsRegistry) -> Response {
    let text = registry.encode();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// The router of `[telemetry] metrics_listen`: `GET /metrics` and nothing else, without a
/// token, for a Prometheus scraper on a network the operator trusts. Every other path is a
/// 404, so the listener shows nothing of the API.
pub fn metrics_router(registry: Arc<MetricsRegistry>) -> Router {
    Router::new()
        .route("/metrics", get(move || std::future::ready(openmetrics(&registry))))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "this listener serves /metrics only") })
}
