//! Publishing an action to a NATS subject (`isolate_node` to an EDR agent fleet): the
//! message is JSON with the idempotency key also in the `Nats-Msg-Id` header (JetStream
//! drops duplicates by it). With `request = true` Vigil waits for a reply within the
//! timeout; a reply with an `error` field fails the step.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ActionError;
use crate::telemetry::Secret;

/// A NATS connection and subject (`nats = { url = "nats://…", subject = "…" }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsTarget {
    /// Server URL(s), comma-separated (`nats://edge1:4222,nats://edge2:4222`; `tls://` for TLS).
    pub url: String,
    /// Subject template (`edr.isolate.{{ host }}`).
    pub subject: String,
    /// Subject template for the inverse (`edr.release.{{ host }}`); default: `subject`.
    #[serde(default)]
    pub release_subject: Option<String>,
    /// Wait for a reply (an agent confirms) instead of only publishing.
    #[serde(default)]
    pub request: bool,
    /// Longest a connect, publish or request may take.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// User and password.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for `user`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Token authentication.
    #[serde(default)]
    pub token: Option<Secret>,
    /// NKey seed.
    #[serde(default)]
    pub nkey: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl NatsTarget {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.url.trim().is_empty() {
            errors.push((format!("{path}.url"), "must not be empty".into()));
        }
        for (name, subject) in [("subject", Some(&self.subject)), ("release_subject", self.release_subject.as_ref())] {
            if let Some(s) = subject
                && let Err(e) = super::ParamTemplate::new(s)
            {
                errors.push((format!("{path}.{name}"), e));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            errors.push((format!("{path}.password"), "user and password go together".into()));
        }
        errors
    }
}

/// A lazily connected client.
#[derive(Debug)]
pub struct Publisher {
    target: NatsTarget,
    client: tokio::sync::OnceCell<async_nats::Client>,
}

impl Publisher {
    /// A publisher that connects on first use.
    pub fn new(target: NatsTarget) -> Self {
        Self { target, client: tokio::sync::OnceCell::new() }
    }

    async fn client(&self) -> Result<&async_nats::Client, ActionError> {
        self.client
            .get_or_try_init(|| async {
                let t = &self.target;
                let connection = crate::source::nats::NatsConnection {
                    url: t.url.clone(),
                    user: t.user.clone(),
                    password: t.password.clone(),
                    token: t.token.clone(),
                    nkey: t.nkey.clone(),
                    credentials_file: t.credentials_file.clone(),
                };
                connection.connect(t.timeout).await.map_err(ActionError::Retryable)
            })
            .await
    }

    /// Sends `body` to `subject`: published and flushed, or as a request whose reply must
    /// not carry an `error`. Returns the reply (or an empty string).
    pub async fn send(&self, subject: String, body: &Value, key: &str) -> Result<String, ActionError> {
        let client = self.client().await?;
        let payload = serde_json::to_vec(body).map_err(|e| ActionError::Failed(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", key);
        if self.target.request {
            let reply = client
                .request_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|e| ActionError::Retryable(format!("no reply on {subject}: {}", e.kind())))?;
            let text = String::from_utf8_lossy(&reply.payload).chars().take(300).collect::<String>();
            if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&reply.payload)
                && let Some(error) = map.get("error").filter(|e| !e.is_null())
            {
                return Err(ActionError::Failed(format!("the agent on {subject} refused: {error}")));
            }
            Ok(text)
        } else {
            client
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|e| ActionError::Retryable(format!("publishing to {subject}: {}", e.kind())))?;
            tokio::time::timeout(self.target.timeout, client.flush())
                .await
                .map_err(|_| ActionError::Retryable("NATS flush timed out".into()))?
                .map_err(|e| ActionError::Retryable(format!("NATS flush: {}", e.kind())))?;
            Ok(String::new())
        }
    }

    /// The subject template for the action or its inverse.
    pub fn subject(&self, release: bool) -> &str {
        match (&self.target.release_subject, release) {
            (Some(s), true) => s,
            _ => &self.target.subject,
        }
    }
}
