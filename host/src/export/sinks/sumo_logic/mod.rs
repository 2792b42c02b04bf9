//! The `sumo_logic` sink: a Sumo Logic HTTP Logs Source.
//!
//! The source's URL carries its credentials, so it is a secret. Records are sent one per
//! line, gzipped, at most 1 MB uncompressed per request (Sumo's limit), with the
//! `X-Sumo-Category`, `X-Sumo-Name`, `X-Sumo-Host` and `X-Sumo-Fields` headers. Sumo asks
//! for few connections per source, so batches go one at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::export::http::{self, Compression, HttpClientConfig, validate_url};
use crate::export::{Item, PlatformLimits, SendReport, Sink, SinkError};
use crate::telemetry::Secret;

const MAX_PAYLOAD: usize = 1_000_000;

/// Settings of a `sumo_logic` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SumoLogicConfig {
    /// The source's URL (`https://endpoint…/receiver/v1/http/<code>`); a secret.
    pub endpoint: Secret,
    /// `X-Sumo-Category` (source category).
    #[serde(default)]
    pub category: Option<String>,
    /// `X-Sumo-Name` (source name).
    #[serde(default)]
    pub name: Option<String>,
    /// `X-Sumo-Host` (source host).
    #[serde(default)]
    pub host: Option<String>,
    /// `X-Sumo-Fields`, sent as `k=v,k2=v2`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

impl SumoLogicConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> =
            validate_url(self.endpoint.expose(), format!("{prefix}.endpoint")).into_iter().collect();
        for (k, v) in &self.fields {
            if k.is_empty() || k.contains([',', '=']) || v.contains([',', '=']) {
                errors
                    .push((format!("{prefix}.fields.{k}"), "field names and values cannot contain `,` or `=`".into()));
            }
        }
        for (key, value) in [("category", &self.category), ("name", &self.name), ("host", &self.host)] {
            if value.as_deref().is_some_and(|v| reqwest::header::HeaderValue::from_str(v).is_err()) {
                errors.push((format!("{prefix}.{key}"), "must be printable ASCII".into()));
            }
        }
        errors
    }
}

/// The Sumo Logic sink.
#[derive(Debug)]
pub struct SumoLogicSink {
    config: SumoLogicConfig,
    client: reqwest::Client,
    fields: Option<String>,
}

impl SumoLogicSink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: SumoLogicConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let fields = (!config.fields.is_empty())
            .then(|| config.fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        Ok(Self { config, client, fields })
    }
}

/// One record per line.
fn body(batch: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 1).sum());
    for item in batch {
        out.extend_from_slice(&item.body);
        out.push(b'\n');
    }
    out
}

impl Sink for SumoLogicSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let mut request = self.client.post(self.config.endpoint.expose());
        for (header, value) in [
            ("X-Sumo-Category", &self.config.category),
            ("X-Sumo-Name", &self.config.name),
            ("X-Sumo-Host", &self.config.host),
        ] {
            if let Some(v) = value {
                request = request.header(header, v);
            }
        }
        if let Some(fields) = &self.fields {
            request = request.header("X-Sumo-Fields", fields);
        }
        let body = body(batch);
        if body.len() > MAX_PAYLOAD {
            return Err(SinkError::Split {
                reason: format!("{} bytes is over Sumo Logic's {MAX_PAYLOAD} per request", body.len()),
            });
        }
        http::send(self.config.compression.body(request, body)).await.map(|_| SendReport::default())
    }

    fn max_concurrency(&self) -> usize {
        1
    }

    fn limits(&self) -> PlatformLimits {
        // Room for the newlines; a batch still over the limit is split.
        PlatformLimits { max_items: None, max_bytes: Some(MAX_PAYLOAD - 10_000), max_item_bytes: Some(MAX_PAYLOAD - 1) }
    }
}
