//! The webhook backend several actions share: a JSON `POST` with configured headers
//! (secrets), an `X-Vigil-Signature` HMAC over timestamp and body, and the step's
//! idempotency key in `Idempotency-Key`, so a receiver can drop a retried request.
//! Errors never repeat the URL, which often holds a token.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ActionError;
use crate::telemetry::{Secret, signature};

/// A webhook target (`webhook = { url = "...", headers = { ... }, signing_secret = "..." }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to `POST` (may carry a token, so it is a secret).
    pub url: Secret,
    /// Extra headers, e.g. `Authorization = "Bearer ${IDP_TOKEN}"`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// HMAC key for `X-Vigil-Signature: t=<unix>,v1=<hex>`.
    #[serde(default)]
    pub signing_secret: Option<Secret>,
    /// Longest a call may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl WebhookConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        match reqwest::Url::parse(self.url.expose()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            _ => errors.push((format!("{path}.url"), "must be an http:// or https:// URL".into())),
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push((format!("{path}.headers"), format!("`{name}` is not a valid header name")));
            }
        }
        errors
    }
}

/// A configured webhook with its client.
#[derive(Clone, Debug)]
pub struct Webhook {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl Webhook {
    /// Builds the client.
    pub fn new(config: WebhookConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { config, client })
    }

    /// Posts `body` as JSON to the configured URL.
    pub async fn post(&self, body: &Value, key: &str) -> Result<String, ActionError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ActionError::Failed(e.to_string()))?;
        self.send(reqwest::Method::POST, self.config.url.expose(), bytes, key).await
    }

    /// Sends `bytes` (JSON) to `url`; 2xx is success, 408/429/5xx and network errors are
    /// retryable, other answers are failures.
    pub async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        bytes: Vec<u8>,
        key: &str,
    ) -> Result<String, ActionError> {
        let mut request = self
            .client
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key);
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.expose());
        }
        if let Some(secret) = &self.config.signing_secret {
            let sig = signature(secret.expose().as_bytes(), chrono::Utc::now().timestamp(), &bytes);
            request = request.header("X-Vigil-Signature", sig);
        }
        let response = request.body(bytes).send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            ActionError::Retryable(format!("webhook {what}"))
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(200).collect();
        if status.is_success() {
            Ok(excerpt)
        } else if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(ActionError::Retryable(format!("webhook answered {status}: {excerpt}")))
        } else {
            Err(ActionError::Failed(format!("webhook answered {status}: {excerpt}")))
        }
    }
}
