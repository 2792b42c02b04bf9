//! The `elasticsearch` sink: Elasticsearch or OpenSearch `_bulk`, ECS documents by default.
//!
//! Requests are NDJSON `create` actions with `_id` = the record's id ([`bulk`]), gzipped,
//! authenticated by API key or basic auth. The answer is read per item: only the failed
//! items are retried or dead-lettered. With `template.install`, an index template (and an
//! ILM policy when `template.delete_after` is set) is put before the first write.

mod bulk;
mod config;

use serde_json::json;
use tokio::sync::OnceCell;

pub use config::{ElasticsearchConfig, TemplateConfig};

use crate::export::http;
use crate::export::{Item, SendReport, Sink, SinkError};

/// The Elasticsearch sink.
#[derive(Debug)]
pub struct ElasticsearchSink {
    config: ElasticsearchConfig,
    client: reqwest::Client,
    bulk_url: String,
    template: OnceCell<()>,
}

impl ElasticsearchSink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: ElasticsearchConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let bulk_url = format!("{}/_bulk", config.endpoint.trim_end_matches('/'));
        Ok(Self { config, client, bulk_url, template: OnceCell::new() })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.config.auth {
            Some(auth) => auth.apply(request),
            None => request,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.endpoint.trim_end_matches('/'))
    }

    /// Puts the ILM policy (if any) and the index template.
    async fn install_template(&self) -> Result<(), SinkError> {
        let t = &self.config.template;
        let mut settings = serde_json::Map::new();
        if let Some(age) = t.delete_after {
            let policy = json!({ "policy": { "phases": { "delete": { "min_age": format!("{}s", age.as_secs()), "actions": { "delete": {} } } } } });
            http::send(self.request(reqwest::Method::PUT, &self.url(&format!("_ilm/policy/{}", t.name))).json(&policy))
                .await?;
            settings.insert("index.lifecycle.name".into(), json!(t.name));
        }
        let template = json!({
            "index_patterns": [self.config.index_pattern()],
            "priority": 200,
            "_meta": { "managed_by": "vigil" },
            "template": {
                "settings": settings,
                "mappings": {
                    "dynamic_templates": [
                        { "strings_as_keywords": { "match_mapping_type": "string", "mapping": { "type": "keyword", "ignore_above": 1024 } } }
                    ],
                    "properties": {
                        "@timestamp": { "type": "date" },
                        "message": { "type": "text" },
                        "source": { "properties": { "ip": { "type": "ip" } } },
                        "destination": { "properties": { "ip": { "type": "ip" } } },
                        "client": { "properties": { "ip": { "type": "ip" } } },
                        "server": { "properties": { "ip": { "type": "ip" } } },
                        "host": { "properties": { "ip": { "type": "ip" } } },
                        "event": { "properties": { "created": { "type": "date" }, "severity": { "type": "long" }, "risk_score": { "type": "float" } } }
                    }
                }
            }
        });
        http::send(
            self.request(reqwest::Method::PUT, &self.url(&format!("_index_template/{}", t.name))).json(&template),
        )
        .await?;
        tracing::info!(template = %t.name, pattern = %self.config.index_pattern(), "Elasticsearch index template installed.");
        Ok(())
    }

    fn body(&self, batch: &[Item]) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 96).sum());
        for item in batch {
            // The pattern was validated with the config; a render failure cannot happen.
            let index = self.config.render(item.kind.as_str(), item.time).unwrap_or_else(|| "vigil".into());
            bulk::push(&mut out, &index, item);
        }
        out
    }
}

impl Sink for ElasticsearchSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        if self.config.template.install {
            self.template.get_or_try_init(|| self.install_template()).await?;
        }
        let request = self
            .request(reqwest::Method::POST, &self.bulk_url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        let body = http::send(self.config.compression.body(request, self.body(batch))).await?;
        bulk::report(&body, batch.len())
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        http::send(self.request(reqwest::Method::GET, &self.url(""))).await.map(drop)
    }
}
