//! The `splunk_hec` sink: Splunk's HTTP Event Collector.
//!
//! Batches go to `/services/collector/event` as concatenated JSON objects (no array, no
//! commas) `{"time":…,"host":…,"source":…,"sourcetype":…,"index":…,"event":…}`, gzipped,
//! with `Authorization: Splunk <token>` and this sink's channel in
//! `X-Splunk-Request-Channel`. With acknowledgements on, a batch counts as delivered only
//! once `/services/collector/ack` confirms it was indexed ([`acks`]). Answers are classified
//! by HEC code ([`reply`]).

mod acks;
mod config;
mod reply;

use std::io::Write;

pub use config::{AckConfig, SplunkHecConfig};

use crate::event::RecordKind;
use crate::export::http;
use crate::export::{Item, SendReport, Sink, SinkError};
use acks::Acks;
use reply::Posted;

/// The Splunk HEC sink.
#[derive(Debug)]
pub struct SplunkHecSink {
    config: SplunkHecConfig,
    client: reqwest::Client,
    event_url: String,
    channel: String,
    /// `sourcetype` per record kind.
    sourcetypes: [String; 3],
    acks: Option<Acks>,
}

impl SplunkHecSink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: SplunkHecConfig) -> Result<Self, SinkError> {
        let client = config.http.build()?;
        let event_url = format!("{}/services/collector/event", config.endpoint.trim_end_matches('/'));
        let sourcetypes = [RecordKind::Event, RecordKind::Alert, RecordKind::Incident]
            .map(|k| config.sourcetype.replace("{kind}", k.as_str()));
        Ok(Self { client, event_url, channel: uuid::Uuid::new_v4().to_string(), sourcetypes, acks: None, config })
    }

    fn authorization(&self) -> String {
        format!("Splunk {}", self.config.token.expose())
    }

    /// The batch as concatenated HEC event objects.
    fn body(&self, batch: &[Item]) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 160).sum());
        for item in batch {
            let millis = item.time.timestamp_millis();
            let _ = write!(out, "{{\"time\":{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000));
            if let Some(host) = &item.host {
                out.extend_from_slice(b",\"host\":");
                let _ = serde_json::to_writer(&mut out, host);
            }
            out.extend_from_slice(b",\"source\":");
            let _ = serde_json::to_writer(&mut out, &self.config.source);
            out.extend_from_slice(b",\"sourcetype\":");
            let kind = match item.kind {
                RecordKind::Event => 0,
                RecordKind::Alert => 1,
                RecordKind::Incident => 2,
            };
            let _ = serde_json::to_writer(&mut out, &self.sourcetypes[kind]);
            if let Some(index) = &self.config.index {
                out.extend_from_slice(b",\"index\":");
                let _ = serde_json::to_writer(&mut out, index);
            }
            out.extend_from_slice(b",\"event\":");
            if item.json {
                out.extend_from_slice(&item.body);
            } else {
                let _ = serde_json::to_writer(&mut out, &String::from_utf8_lossy(&item.body));
            }
            out.push(b'}');
        }
        out
    }
}

impl Sink for SplunkHecSink {
    async fn open(&mut self, _state: &serde_json::Value) -> Result<(), SinkError> {
        if self.config.acknowledgements.enabled {
            let acks = Acks::start(
                self.client.clone(),
                &self.config.endpoint,
                self.channel.clone(),
                self.config.token.clone(),
                self.config.acknowledgements.clone(),
            );
            self.acks = Some(acks);
        }
        Ok(())
    }

    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let slot = match &self.acks {
            Some(acks) => Some(acks.slot().await),
            None => None,
        };
        let request = self
            .client
            .post(&self.event_url)
            .header(reqwest::header::AUTHORIZATION, self.authorization())
            .header("X-Splunk-Request-Channel", &self.channel)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let request = self.config.compression.body(request, self.body(batch));
        let answer = http::exchange(request).await?;
        match reply::classify(&answer, batch.len())? {
            Posted::Failed(report) => Ok(report),
            Posted::Accepted(Some(id)) => match (&self.acks, slot) {
                (Some(acks), Some(slot)) => acks.wait(id, slot).await.map(|()| SendReport::default()),
                _ => Ok(SendReport::default()),
            },
            Posted::Accepted(None) if self.acks.is_some() => Err(SinkError::retryable(
                "acknowledgements are on but HEC returned no ackId; is useACK enabled on the token?",
            )),
            Posted::Accepted(None) => Ok(SendReport::default()),
        }
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let url = format!("{}/services/collector/health", self.config.endpoint.trim_end_matches('/'));
        http::send(self.client.get(url).header(reqwest::header::AUTHORIZATION, self.authorization())).await.map(drop)
    }

    fn max_concurrency(&self) -> usize {
        if self.config.acknowledgements.enabled { self.config.acknowledgements.max_pending } else { 64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn item(seq: u64, body: &str, json: bool) -> Item {
        Item {
            seq,
            kind: RecordKind::Alert,
            id: format!("id-{seq}"),
            time: chrono::Utc.timestamp_millis_opt(1_700_000_000_123).single().expect("time"),
            host: Some("web-1".into()),
            severity: 7,
            body: body.as_bytes().to_vec(),
            json,
        }
    }

    #[test]
    fn batch_is_concatenated_objects() {
        let config: SplunkHecConfig =
            toml::from_str("endpoint = \"http://127.0.0.1:8088\"\ntoken = \"t\"\nindex = \"sec\"").expect("config");
        let sink = SplunkHecSink::new(config).expect("sink");
        let body =
            String::from_utf8(sink.body(&[item(1, "{\"a\":1}", true), item(2, "CEF:0|x", false)])).expect("utf8");
        assert_eq!(
            body,
            "{\"time\":1700000000.123,\"host\":\"web-1\",\"source\":\"vigil\",\"sourcetype\":\"vigil:alert\",\"index\":\"sec\",\"event\":{\"a\":1}}\
             {\"time\":1700000000.123,\"host\":\"web-1\",\"source\":\"vigil\",\"sourcetype\":\"vigil:alert\",\"index\":\"sec\",\"event\":\"CEF:0|x\"}"
        );
        let objects: Vec<serde_json::Value> =
            serde_json::Deserializer::from_str(&body).into_iter().collect::<Result<_, _>>().expect("parse");
        assert_eq!(objects.len(), 2);
    }
}
