//! API authentication: bearer tokens with a role, a per-token rate limit, and the request
//! id every response carries.
//!
//! Tokens are created with `vigil token create --role ROLE --name NAME`, shown once, and
//! stored only as their SHA-256 in the tokens file (`api.auth.tokens_file`, default
//! `api-tokens.json` in the data directory); the running server notices a change of the
//! file at the next request, so creating and revoking tokens needs no restart. Roles:
//! `viewer` reads; `responder` also acknowledges, approves and runs playbooks; `admin` also
//! manages rules, plugins and tokens; `ingest` only sends events. Every route declares the
//! role it needs (see [`super::route_table`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::playbook::Role;

/// Authentication settings (`[api.auth]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a token on every route but `/healthz`, `/readyz` and `/v1/openapi.json`.
    pub required: bool,
    /// The tokens file; default `api-tokens.json` in the data directory.
    pub tokens_file: Option<PathBuf>,
    /// Requests per second one token may make (sustained).
    pub rate_per_second: u32,
    /// Requests one token may make at once.
    pub burst: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { required: true, tokens_file: None, rate_per_second: 50, burst: 200 }
    }
}

impl AuthConfig {
    /// Problems with the settings.
    pub fn validate(&self) -> Vec<(String, String)> {
        if self.rate_per_second == 0 || self.burst == 0 {
            return vec![("api.auth".into(), "rate_per_second and burst must be at least 1".into())];
        }
        Vec::new()
    }

    /// The tokens file for a store in `data_dir`.
    pub fn tokens_path(&self, data_dir: &Path) -> PathBuf {
        self.tokens_file.clone().unwrap_or_else(|| data_dir.join("api-tokens.json"))
    }
}

impl Role {
    /// Whether a caller of this role may use a route that needs `required`.
    pub fn permits(self, required: Role) -> bool {
        match required {
            Role::Ingest => matches!(self, Role::Ingest | Role::Responder | Role::Admin),
            other => self != Role::Ingest && self >= other,
        }
    }
}

/// A stored token (only its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Short id (the first 8 hex digits of the hash), for listing and revoking.
    pub id: String,
    /// Who or what holds it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the tokens file (none when it does not exist).
pub fn read_tokens(path: &Path) -> std::io::Result<Vec<TokenRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn write_tokens(path: &Path, tokens: &[TokenRecord]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(tokens).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(tmp, path)
}

/// Creates a token; returns it (shown once) and its record.
pub fn create_token(
    path: &Path,
    name: &str,
    role: Role,
    expires_in: Option<Duration>,
) -> std::io::Result<(String, TokenRecord)> {
    if name.trim().is_empty() {
        return Err(std::io::Error::other("a token needs a name"));
    }
    let mut tokens = read_tokens(path)?;
    if tokens.iter().any(|t| t.name == name && t.revoked_at.is_none()) {
        return Err(std::io::Error::other(format!("a live token named `{name}` exists; revoke it first")));
    }
    let secret: [u8; 32] = rand::random();
    let token = format!("vgl_{}", secret.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let sha256 = hash(&token);
    let now = Utc::now();
    let record = TokenRecord {
        id: sha256[..8].to_owned(),
        name: name.to_owned(),
        role,
        sha256,
        created_at: now,
        expires_at: expires_in.and_then(|d| chrono::Duration::from_std(d).ok()).map(|d| now + d),
        revoked_at: None,
    };
    tokens.push(record.clone());
    write_tokens(path, &tokens)?;
    Ok((token, record))
}

/// Revokes the live token with id or name `which`; returns it.
pub fn revoke_token(path: &Path, which: &str) -> std::io::Result<TokenRecord> {
    let mut tokens = read_tokens(path)?;
    let found = tokens
        .iter_mut()
        .find(|t| t.revoked_at.is_none() && (t.id == which || t.name == which))
        .ok_or_else(|| std::io::Error::other(format!("no live token with id or name `{which}`")))?;
    found.revoked_at = Some(Utc::now());
    let record = found.clone();
    write_tokens(path, &tokens)?;
    Ok(record)
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (`api` when authentication is off).
    pub name: String,
    /// The token's role (admin when authentication is off).
    pub role: Role,
    /// Whether the caller was authenticated.
    pub authenticated: bool,
}

#[derive(Debug, Default)]
struct Loaded {
    by_hash: HashMap<String, TokenRecord>,
    modified: Option<SystemTime>,
}

/// The authenticator the middleware consults.
#[derive(Debug)]
pub struct Auth {
    required: bool,
    path: PathBuf,
    loaded: Mutex<Loaded>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Auth {
    /// The authenticator of `config` over the tokens file at `path`.
    pub fn new(config: &AuthConfig, path: PathBuf) -> Arc<Self> {
        let rate = NonZeroU32::new(config.rate_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let auth = Arc::new(Self {
            required: config.required,
            path,
            loaded: Mutex::new(Loaded::default()),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        });
        if auth.required && auth.live_tokens() == 0 {
            tracing::warn!(
                file = %auth.path.display(),
                "API authentication is on and no token exists: create one with `vigil token create --role admin --name NAME`."
            );
        }
        auth
    }

    /// Whether tokens are required.
    pub fn required(&self) -> bool {
        self.required
    }

    fn live_tokens(&self) -> usize {
        self.refresh();
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).by_hash.len()
    }

    /// Reloads the tokens file when its modification time changed (one `stat` per request).
    fn refresh(&self) {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified == loaded.modified && modified.is_some() {
            return;
        }
        match read_tokens(&self.path) {
            Ok(tokens) => {
                loaded.by_hash =
                    tokens.into_iter().filter(|t| t.revoked_at.is_none()).map(|t| (t.sha256.clone(), t)).collect();
                loaded.modified = modified;
            }
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "Cannot read the API tokens file; keeping the tokens loaded before.")
            }
        }
    }

    /// The caller a bearer token belongs to.
    fn caller(&self, token: &str) -> Option<Caller> {
        self.refresh();
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let record = loaded.by_hash.get(&hash(token))?;
        if record.expires_at.is_some_and(|t| t <= Utc::now()) {
            return None;
        }
        Some(Caller { name: record.name.clone(), role: record.role, authenticated: true })
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

fn unauthorized(code: &'static str, message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vigil\""));
    response
}

/// The middleware of a route that needs `role` (`None`: public).
pub async fn require(
    State((auth, role)): State<(Arc<Auth>, Option<Role>)>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(role) = role else { return next.run(request).await };
    if !auth.required() {
        request.extensions_mut().insert(Caller { name: "api".into(), role: Role::Admin, authenticated: false });
        return next.run(request).await;
    }
    let Some(token) = bearer(&request) else {
        return unauthorized("missing_token", "this route needs `Authorization: Bearer <token>`");
    };
    let Some(caller) = auth.caller(token) else {
        return unauthorized("invalid_token", "the token is unknown, revoked or expired");
    };
    if !caller.role.permits(role) {
        let message = format!("this route needs the {} role; the token has {}", role.as_str(), caller.role.as_str());
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
    }
    if let Err(not_until) = auth.limiter.check_key(&caller.name) {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let mut response =
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this token")
                .into_response();
        let secs = wait.as_secs().max(1).to_string();
        if let Ok(value) = HeaderValue::from_str(&secs) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

tokio::task_local! {
    /// The id of the request being served (for error bodies).
    pub static REQUEST_ID: String;
}

/// Gives every request an id (the client's `X-Request-Id` when it is a sane one), echoes it
/// in the response and in error bodies.
pub async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let mut response = REQUEST_ID.scope(id.clone(), next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_permit_what_they_include() {
        assert!(Role::Admin.permits(Role::Responder) && Role::Admin.permits(Role::Ingest));
        assert!(Role::Responder.permits(Role::Viewer) && Role::Responder.permits(Role::Ingest));
        assert!(!Role::Viewer.permits(Role::Responder) && !Role::Viewer.permits(Role::Ingest));
        assert!(!Role::Ingest.permits(Role::Viewer), "an ingest token reads nothing");
    }

    #[test]
    fn tokens_are_stored_as_hashes_and_can_be_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        let (token, record) = create_token(&path, "ci", Role::Viewer, None).expect("create");
        assert!(token.starts_with("vgl_") && token.len() == 68);
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&token) && text.contains(&record.sha256), "only the hash is stored");
        assert!(create_token(&path, "ci", Role::Admin, None).is_err(), "names are unique among live tokens");
        let auth = Auth::new(&AuthConfig::default(), path.clone());
        assert_eq!(auth.caller(&token).map(|c| c.role), Some(Role::Viewer));
        assert_eq!(auth.caller("vgl_nope"), None);
        revoke_token(&path, &record.id).expect("revoke");
        let auth = Auth::new(&AuthConfig::default(), path);
        assert_eq!(auth.caller(&token), None, "a revoked token is refused");
    }
}
