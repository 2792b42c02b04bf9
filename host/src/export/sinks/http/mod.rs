//! The `http` sink: any HTTP endpoint — Microsoft Sentinel's Logs Ingestion API, a SOAR
//! webhook, an in-house collector.
//!
//! The body is a JSON array of the records (`encoding = "json_array"`, the default), one
//! record per line (`ndjson`), or a template rendered per record and joined with newlines
//! (`template`, see [`template`]). Headers are templates too. Authentication is bearer,
//! basic, API key or any header. With `signing`, each request carries
//! `X-Vigil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` over
//! the uncompressed body, so a receiver can check both origin and freshness (reject a `t`
//! older than a few minutes to stop replays).

pub mod template;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use self::template::{Context, Template};
use crate::export::http::{self, Compression, HttpAuth, HttpClientConfig, validate_url};
use crate::export::{Item, SendReport, Sink, SinkError};
use crate::telemetry::Secret;
pub use crate::telemetry::signature;

/// The request method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `POST`.
    #[default]
    Post,
    /// `PUT`.
    Put,
}

/// How records are put in a request body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `[record, record, …]` (JSON formats only).
    #[default]
    JsonArray,
    /// One record per line.
    Ndjson,
    /// `body_template` rendered per record, one per line (one record per request when
    /// `batch.max_records = 1`).
    Template,
}

/// Request signing.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The shared HMAC key.
    pub secret: Secret,
    /// The header that carries the signature.
    #[serde(default = "default_signature_header")]
    pub header: String,
}

fn default_signature_header() -> String {
    "X-Vigil-Signature".into()
}

/// Settings of an `http` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Where to send; a secret, since webhook URLs often carry a token.
    pub url: Secret,
    /// `POST` or `PUT`.
    #[serde(default)]
    pub method: Method,
    /// How records are put in the body.
    #[serde(default)]
    pub encoding: Encoding,
    /// The per-record template when `encoding = "template"`.
    #[serde(default)]
    pub body_template: Option<String>,
    /// Extra headers; values are templates over the batch's first record.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `Content-Type`; by default `application/json`, or `application/x-ndjson` for
    /// `ndjson`.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Authentication.
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// HMAC-SHA256 request signing.
    #[serde(default)]
    pub signing: Option<SigningConfig>,
    /// Body compression (off by default: not every receiver takes gzip).
    #[serde(default = "no_compression")]
    pub compression: Compression,
    /// Connection settings.
    #[serde(default)]
    pub http: HttpClientConfig,
}

fn no_compression() -> Compression {
    Compression::None
}

impl HttpSinkConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors: Vec<_> = validate_url(self.url.expose(), format!("{prefix}.url")).into_iter().collect();
        match (self.encoding, &self.body_template) {
            (Encoding::Template, None) => {
                errors.push((format!("{prefix}.body_template"), "required when encoding = \"template\"".into()))
            }
            (Encoding::Template, Some(t)) => {
                if let Err(e) = Template::parse(t, Context::Body) {
                    errors.push((format!("{prefix}.body_template"), e));
                }
            }
            (_, Some(_)) => {
                errors.push((format!("{prefix}.body_template"), "only used with encoding = \"template\"".into()))
            }
            _ => {}
        }
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push((format!("{prefix}.headers.{name}"), "not a valid header name".into()));
            }
            if let Err(e) = Template::parse(value, Context::Header) {
                errors.push((format!("{prefix}.headers.{name}"), e));
            }
        }
        if let Some(auth) = &self.auth {
            errors.extend(auth.validate(prefix));
        }
        if let Some(signing) = &self.signing {
            if signing.secret.expose().is_empty() {
                errors.push((format!("{prefix}.signing.secret"), "must not be empty".into()));
            }
            if reqwest::header::HeaderName::from_bytes(signing.header.as_bytes()).is_err() {
                errors.push((format!("{prefix}.signing.header"), "not a valid header name".into()));
            }
        }
        errors
    }
}

/// The generic HTTP sink.
#[derive(Debug)]
pub struct HttpSink {
    config: HttpSinkConfig,
    client: reqwest::Client,
    body_template: Option<Template>,
    headers: Vec<(reqwest::header::HeaderName, Template)>,
    content_type: String,
}

impl HttpSink {
    /// A sink for validated `config`; fails if its TLS files cannot be read.
    pub fn new(config: HttpSinkConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let body_template = match (&config.encoding, &config.body_template) {
            (Encoding::Template, Some(t)) => Some(Template::parse(t, Context::Body).map_err(SinkError::permanent)?),
            _ => None,
        };
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| SinkError::permanent(format!("header {name}: {e}")))?;
            headers.push((name, Template::parse(value, Context::Header).map_err(SinkError::permanent)?));
        }
        let content_type = config.content_type.clone().unwrap_or_else(|| match config.encoding {
            Encoding::Ndjson => "application/x-ndjson".into(),
            _ => "application/json".into(),
        });
        Ok(Self { config, client, body_template, headers, content_type })
    }

    fn body(&self, batch: &[Item]) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 1).sum::<usize>() + 2);
        match (&self.config.encoding, &self.body_template) {
            (Encoding::JsonArray, _) => {
                out.push(b'[');
                for (i, item) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    if item.json {
                        out.extend_from_slice(&item.body);
                    } else {
                        // A text format in an array: each line becomes a JSON string.
                        let _ = serde_json::to_writer(&mut out, &String::from_utf8_lossy(&item.body));
                    }
                }
                out.push(b']');
            }
            (Encoding::Template, Some(template)) => {
                for (i, item) in batch.iter().enumerate() {
                    if i > 0 {
                        out.push(b'\n');
                    }
                    template.render_body(&mut out, item);
                }
            }
            _ => {
                for item in batch {
                    out.extend_from_slice(&item.body);
                    out.push(b'\n');
                }
            }
        }
        out
    }
}

impl Sink for HttpSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let Some(first) = batch.first() else { return Ok(SendReport::default()) };
        let method = match self.config.method {
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
        };
        let body = self.body(batch);
        let mut request = self
            .client
            .request(method, self.config.url.expose())
            .header(reqwest::header::CONTENT_TYPE, &self.content_type);
        for (name, template) in &self.headers {
            request = request.header(name, template.render_header(first, batch.len()));
        }
        if let Some(auth) = &self.config.auth {
            request = auth.apply(request);
        }
        if let Some(signing) = &self.config.signing {
            request = request.header(
                signing.header.as_str(),
                signature(signing.secret.expose().as_bytes(), chrono::Utc::now().timestamp(), &body),
            );
        }
        http::send(self.config.compression.body(request, body)).await.map(|_| SendReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> HttpSinkConfig {
        toml::from_str(&format!("url = \"http://127.0.0.1:1/hook\"\n{extra}")).expect("config")
    }

    fn item(body: &str, json: bool) -> Item {
        Item {
            seq: 1,
            kind: crate::event::RecordKind::Alert,
            id: "a-1".into(),
            time: chrono::DateTime::UNIX_EPOCH,
            host: None,
            severity: 7,
            body: body.as_bytes().to_vec(),
            json,
        }
    }

    #[test]
    fn encodes_arrays_lines_and_templates() {
        let sink = HttpSink::new(config("")).expect("sink");
        let body = sink.body(&[item("{\"a\":1}", true), item("CEF:0|x", false)]);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
            serde_json::json!([{"a": 1}, "CEF:0|x"])
        );
        let sink = HttpSink::new(config("encoding = \"ndjson\"")).expect("sink");
        assert_eq!(sink.body(&[item("{\"a\":1}", true), item("{\"b\":2}", true)]), b"{\"a\":1}\n{\"b\":2}\n");
        let sink = HttpSink::new(config(
            "encoding = \"template\"\nbody_template = '{\"text\": {{ record_json }}, \"sev\": {{ severity }}}'",
        ))
        .expect("sink");
        let body = sink.body(&[item("{\"a\":1}", true)]);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
            serde_json::json!({"text": "{\"a\":1}", "sev": 7})
        );
    }

    #[test]
    fn validation_names_each_problem() {
        let errors = config("encoding = \"template\"\nheaders = { \"bad header\" = \"x\", X-Ok = \"{{ nope }}\" }\nsigning = { secret = \"\" }").validate("sinks.h");
        let paths: Vec<_> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"sinks.h.body_template"), "{errors:?}");
        assert!(paths.contains(&"sinks.h.headers.bad header"), "{errors:?}");
        assert!(paths.contains(&"sinks.h.headers.X-Ok"), "{errors:?}");
        assert!(paths.contains(&"sinks.h.signing.secret"), "{errors:?}");
        let bad_url: HttpSinkConfig = toml::from_str("url = \"ftp://user:hunter2@example\"").expect("config");
        let errors = bad_url.validate("sinks.h");
        assert_eq!(errors.len(), 1);
        assert!(!errors[0].1.contains("hunter2"));
    }

    #[test]
    fn signature_is_hmac_of_timestamp_and_body() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
