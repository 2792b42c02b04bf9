//! What HTTP sinks share: the client (timeouts, TLS with a custom CA or a client
//! certificate), authentication, gzip, and the classification of answers into delivered,
//! retryable and permanent. Errors never carry the request URL, which often holds a token.
//!
//! Retryable: network errors, timeouts, 408, 429, 5xx (with `Retry-After`), and 401/403 —
//! a rejected credential is the destination's or the operator's problem, not the record's,
//! so records wait in the log (the breaker opens, the sink shows unhealthy) instead of
//! filling the dead-letter queue. Permanent: the other 4xx.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{SinkError, parse_retry_after};
use crate::telemetry::Secret;

/// Request body compression.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain bodies.
    None,
    /// `Content-Encoding: gzip`.
    #[default]
    Gzip,
}

impl Compression {
    /// Adds the body to `request`, compressed if configured.
    pub fn body(self, request: reqwest::RequestBuilder, body: Vec<u8>) -> reqwest::RequestBuilder {
        match self {
            Self::None => request.body(body),
            Self::Gzip => request.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gzip(&body)),
        }
    }
}

/// How an HTTP sink authenticates (`auth = { type = "...", ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: Secret,
    },
    /// `Authorization: ApiKey <key>` (Elasticsearch API keys, already base64-encoded).
    ApiKey {
        /// The encoded key.
        key: Secret,
    },
    /// Any header, e.g. `X-Api-Key`.
    Header {
        /// Header name.
        name: String,
        /// Header value.
        value: Secret,
    },
}

impl HttpAuth {
    /// Adds the credentials to `request`.
    pub fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer { token } => request.bearer_auth(token.expose()),
            Self::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
            Self::ApiKey { key } => request.header(reqwest::header::AUTHORIZATION, format!("ApiKey {}", key.expose())),
            Self::Header { name, value } => request.header(name.as_str(), value.expose()),
        }
    }

    /// Problems with the settings.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        match self {
            Self::Header { name, .. } if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() => {
                vec![(format!("{prefix}.auth.name"), format!("`{name}` is not a valid header name"))]
            }
            _ => Vec::new(),
        }
    }
}

/// Checks that `url` is an absolute http(s) URL; the error never repeats the URL.
pub fn validate_url(url: &str, path: String) -> Option<(String, String)> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => None,
        Ok(_) => Some((path, "must be an http:// or https:// URL".into())),
        Err(e) => Some((path, format!("not a URL: {e}"))),
    }
}

/// Connection settings of an HTTP sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
    /// Longest a request may take.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// PEM file of CAs to trust (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM file with a client certificate and its key, for mutual TLS.
    pub client_identity_file: Option<PathBuf>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), ca_file: None, client_identity_file: None }
    }
}

impl HttpClientConfig {
    /// Builds the client (reads the TLS files).
    pub fn build(&self) -> Result<reqwest::Client, SinkError> {
        let mut builder =
            reqwest::Client::builder().timeout(self.timeout).connect_timeout(self.timeout.min(Duration::from_secs(10)));
        if let Some(ca) = &self.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| SinkError::permanent(format!("cannot read {}: {e}", ca.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SinkError::permanent(format!("bad CA file {}: {e}", ca.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(file) = &self.client_identity_file {
            let pem = std::fs::read(file)
                .map_err(|e| SinkError::permanent(format!("cannot read {}: {e}", file.display())))?;
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| SinkError::permanent(format!("bad client identity {}: {e}", file.display())))?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|e| SinkError::permanent(format!("cannot build the HTTP client: {e}")))
    }
}

/// Gzips a body.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// A transport failure (no answer): retryable, without the URL.
pub fn transport_error(e: reqwest::Error) -> SinkError {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    SinkError::retryable(format!("{what}: {e}"))
}

/// The first 512 characters of a body, for dead letters and logs.
pub fn excerpt(body: &str) -> String {
    body.chars().take(512).collect()
}

/// Classifies an HTTP answer: `Ok` for 2xx, else a retryable or permanent error carrying
/// the status, an excerpt of the body and any `Retry-After`.
pub fn classify(status: reqwest::StatusCode, headers: &HeaderMap, body: &str) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let code = status.as_u16();
    if matches!(code, 401 | 403) {
        return Err(SinkError::retryable(format!(
            "HTTP {code}: the destination rejected the credentials: {}",
            excerpt(body)
        )));
    }
    if code == 413 {
        return Err(SinkError::Split { reason: format!("HTTP 413: {}", excerpt(body)) });
    }
    if code == 408 || code == 429 || status.is_server_error() {
        return Err(SinkError::Retryable {
            reason: format!("HTTP {code}: {}", excerpt(body)),
            retry_after: retry_after(headers),
        });
    }
    Err(SinkError::Permanent { reason: format!("HTTP {code}"), status: Some(code), excerpt: Some(excerpt(body)) })
}

/// The `Retry-After` of an answer, in either form.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()))
}

/// An answer: status, headers and body.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: reqwest::StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as text.
    pub body: String,
}

/// Sends a request and reads the whole answer; fails only when there is no answer.
pub async fn exchange(request: reqwest::RequestBuilder) -> Result<Answer, SinkError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.map_err(transport_error)?;
    Ok(Answer { status, headers, body })
}

/// Sends a request and classifies the answer; returns the body on success.
pub async fn send(request: reqwest::RequestBuilder) -> Result<String, SinkError> {
    let answer = exchange(request).await?;
    classify(answer.status, &answer.headers, &answer.body).map(|()| answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn classifies_statuses() {
        let mut headers = HeaderMap::new();
        assert!(classify(StatusCode::ACCEPTED, &headers, "").is_ok());
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &headers, "bad"),
            Err(SinkError::Permanent { status: Some(400), .. })
        ));
        assert!(matches!(classify(StatusCode::NOT_FOUND, &headers, ""), Err(SinkError::Permanent { .. })));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, &headers, ""), Err(SinkError::Retryable { .. })));
        assert!(matches!(classify(StatusCode::FORBIDDEN, &headers, ""), Err(SinkError::Retryable { .. })));
        assert!(matches!(classify(StatusCode::REQUEST_TIMEOUT, &headers, ""), Err(SinkError::Retryable { .. })));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &headers, ""),
            Err(SinkError::Retryable { retry_after: None, .. })
        ));
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().expect("header"));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &headers, ""),
            Err(SinkError::Retryable { retry_after: Some(d), .. }) if d == Duration::from_secs(7)
        ));
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let data = b"hello hello hello".repeat(100);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip(&data)[..]).read_to_end(&mut out).expect("gunzip");
        assert_eq!(out, data);
    }
}
