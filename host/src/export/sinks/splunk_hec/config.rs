//! Settings of the `splunk_hec` sink.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::export::http::{Compression, HttpClientConfig, validate_url};
use crate::telemetry::Secret;

/// Indexer acknowledgement (`acknowledgements = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AckConfig {
    /// Wait for Splunk to confirm that each batch was indexed (the token must have
    /// `useACK`); without it, a 200 only means the batch was well-formed.
    pub enabled: bool,
    /// How often pending acknowledgements are polled.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// How long to wait for one; past it the batch is sent again.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Most batches awaiting acknowledgement at once.
    pub max_pending: usize,
}

impl Default for AckConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(300),
            max_pending: 1000,
        }
    }
}

/// Settings of a `splunk_hec` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecConfig {
    /// Base URL of the collector, e.g. `https://splunk.example:8088`.
    pub endpoint: String,
    /// The HEC token.
    pub token: Secret,
    /// Target index (the token's default when unset).
    #[serde(default)]
    pub index: Option<String>,
    /// `source` of every event.
    #[serde(default = "default_source")]
    pub source: String,
    /// `sourcetype`; `{kind}` becomes `event`, `alert` or `incident`.
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Indexer acknowledgement.
    #[serde(default)]
    pub acknowledgements: AckConfig,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

fn default_source() -> String {
    "vigil".into()
}

fn default_sourcetype() -> String {
    "vigil:{kind}".into()
}

impl SplunkHecConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> = validate_url(&self.endpoint, format!("{prefix}.endpoint")).into_iter().collect();
        if self.token.expose().is_empty() {
            errors.push((format!("{prefix}.token"), "must not be empty".into()));
        }
        let acks = &self.acknowledgements;
        if acks.enabled && (acks.max_pending == 0 || acks.poll_interval.is_zero() || acks.timeout < acks.poll_interval)
        {
            errors.push((
                format!("{prefix}.acknowledgements"),
                "max_pending must be at least 1, poll_interval above 0 and timeout at least poll_interval".into(),
            ));
        }
        errors
    }
}
