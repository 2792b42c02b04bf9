//! The `datadog` sink: Datadog Logs API v2.
//!
//! Batches are JSON arrays posted to `https://http-intake.logs.<site>/api/v2/logs` with
//! `DD-API-KEY`, gzipped. Each entry carries `ddsource`, `ddtags`, `hostname`, `service`,
//! `status` (from the record's severity), `timestamp` (ms) and `message` — the record as
//! formatted, which Datadog parses when it is JSON. Datadog's limits (1,000 entries, 5 MB
//! per payload, 1 MB per entry — over which it truncates silently) are enforced by
//! splitting batches; an entry over 1 MB on its own is dead-lettered, never truncated.

use serde::{Deserialize, Serialize};

use crate::export::http::{self, Compression, HttpClientConfig, validate_url};
use crate::export::{Item, PlatformLimits, SendReport, Sink, SinkError};
use crate::telemetry::Secret;

/// Datadog's sites.
pub const SITES: [&str; 9] = [
    "datadoghq.com",
    "datadoghq.eu",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
];

const MAX_PAYLOAD: usize = 5_000_000;
const MAX_ENTRY: usize = 1_000_000;

/// Settings of a `datadog` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    /// The API key.
    pub api_key: Secret,
    /// The Datadog site.
    #[serde(default = "default_site")]
    pub site: String,
    /// Overrides the intake and API base URL (a proxy, or a test server).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `service` of every entry.
    #[serde(default = "default_service")]
    pub service: String,
    /// `ddsource` of every entry.
    #[serde(default = "default_service")]
    pub source: String,
    /// Tags (`key:value`) added to every entry; `kind:<event|alert|incident>` is always added.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Body compression.
    #[serde(default)]
    pub compression: Compression,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

fn default_site() -> String {
    "datadoghq.com".into()
}

fn default_service() -> String {
    "vigil".into()
}

impl DatadogConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if !SITES.contains(&self.site.as_str()) {
            errors
                .push((format!("{prefix}.site"), format!("unknown site `{}`; one of {}", self.site, SITES.join(", "))));
        }
        if let Some(endpoint) = &self.endpoint {
            errors.extend(validate_url(endpoint, format!("{prefix}.endpoint")));
        }
        if self.api_key.expose().is_empty() {
            errors.push((format!("{prefix}.api_key"), "must not be empty".into()));
        }
        if let Some(bad) = self.tags.iter().find(|t| t.contains(',')) {
            errors.push((format!("{prefix}.tags"), format!("`{bad}`: tags cannot contain commas")));
        }
        errors
    }
}

#[derive(Serialize)]
struct Entry<'a> {
    ddsource: &'a str,
    ddtags: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    service: &'a str,
    status: &'static str,
    timestamp: i64,
    message: std::borrow::Cow<'a, str>,
}

/// The Datadog sink.
#[derive(Debug)]
pub struct DatadogSink {
    config: DatadogConfig,
    client: reqwest::Client,
    intake_url: String,
    validate_url: String,
    /// `ddtags` per record kind.
    tags: [String; 3],
}

impl DatadogSink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: DatadogConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let (intake, api) = match &config.endpoint {
            Some(e) => (e.trim_end_matches('/').to_owned(), e.trim_end_matches('/').to_owned()),
            None => (format!("https://http-intake.logs.{}", config.site), format!("https://api.{}", config.site)),
        };
        let tags = ["event", "alert", "incident"].map(|k| {
            let mut tags = config.tags.clone();
            tags.push(format!("kind:{k}"));
            tags.join(",")
        });
        Ok(Self {
            intake_url: format!("{intake}/api/v2/logs"),
            validate_url: format!("{api}/api/v1/validate"),
            client,
            tags,
            config,
        })
    }

    /// The JSON array for `batch`, or which entries are too large.
    fn body(&self, batch: &[Item]) -> Result<Vec<u8>, Vec<usize>> {
        let mut out = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 200).sum());
        let mut too_large = Vec::new();
        out.push(b'[');
        for (index, item) in batch.iter().enumerate() {
            let start = out.len();
            if index > 0 {
                out.push(b',');
            }
            let entry = Entry {
                ddsource: &self.config.source,
                ddtags: &self.tags[kind_index(item)],
                hostname: item.host.as_deref(),
                service: &self.config.service,
                status: status(item.severity),
                timestamp: item.time.timestamp_millis(),
                message: String::from_utf8_lossy(&item.body),
            };
            let _ = serde_json::to_writer(&mut out, &entry);
            if out.len() - start > MAX_ENTRY {
                too_large.push(index);
            }
        }
        out.push(b']');
        if too_large.is_empty() { Ok(out) } else { Err(too_large) }
    }
}

fn kind_index(item: &Item) -> usize {
    match item.kind {
        crate::event::RecordKind::Event => 0,
        crate::event::RecordKind::Alert => 1,
        crate::event::RecordKind::Incident => 2,
    }
}

/// Datadog's log status for a 0–10 severity.
fn status(severity: u8) -> &'static str {
    match severity {
        9.. => "critical",
        7..=8 => "error",
        5..=6 => "warning",
        3..=4 => "notice",
        _ => "info",
    }
}

impl Sink for DatadogSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let body = match self.body(batch) {
            Ok(body) => body,
            Err(too_large) => {
                let error = SinkError::permanent(format!(
                    "entry is over Datadog's {MAX_ENTRY}-byte limit once encoded; Datadog would truncate it"
                ));
                return Ok(SendReport { failed: too_large.into_iter().map(|i| (i, error.clone())).collect() });
            }
        };
        if body.len() > MAX_PAYLOAD {
            return Err(SinkError::Split {
                reason: format!("payload of {} bytes is over Datadog's {MAX_PAYLOAD}", body.len()),
            });
        }
        let request = self
            .client
            .post(&self.intake_url)
            .header("DD-API-KEY", self.config.api_key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        http::send(self.config.compression.body(request, body)).await.map(|_| SendReport::default())
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        http::send(self.client.get(&self.validate_url).header("DD-API-KEY", self.config.api_key.expose()))
            .await
            .map(drop)
    }

    fn limits(&self) -> PlatformLimits {
        // The goal leaves room for each entry's envelope under the 5 MB hard limit.
        PlatformLimits { max_items: Some(1000), max_bytes: Some(4_250_000), max_item_bytes: Some(MAX_ENTRY) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(body: &str) -> Item {
        Item {
            seq: 1,
            kind: crate::event::RecordKind::Incident,
            id: "x".into(),
            time: chrono::DateTime::UNIX_EPOCH,
            host: Some("db-1".into()),
            severity: 9,
            body: body.as_bytes().to_vec(),
            json: true,
        }
    }

    fn sink() -> DatadogSink {
        DatadogSink::new(toml::from_str("api_key = \"k\"\ntags = [\"env:prod\"]").expect("config")).expect("sink")
    }

    #[test]
    fn entries_carry_the_datadog_attributes() {
        let body = sink().body(&[item("{\"a\":\"b\"}")]).expect("body");
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            value,
            serde_json::json!([{
                "ddsource": "vigil", "ddtags": "env:prod,kind:incident", "hostname": "db-1", "service": "vigil",
                "status": "critical", "timestamp": 0, "message": "{\"a\":\"b\"}"
            }])
        );
    }

    #[test]
    fn an_entry_over_a_megabyte_once_escaped_is_refused() {
        // Under the limit raw, over it once its quotes are escaped.
        let quotes = "\"".repeat(600_000);
        assert_eq!(sink().body(&[item("{}"), item(&quotes)]).expect_err("too large"), vec![1]);
        assert!(
            DatadogConfig::validate(
                &toml::from_str("api_key = \"k\"\nsite = \"datadog.example\"").expect("config"),
                "s"
            )
            .len()
                == 1
        );
    }
}
