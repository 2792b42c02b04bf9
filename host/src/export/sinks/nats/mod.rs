//! The `nats` sink: records published to JetStream subjects, so one instance (or any
//! external consumer) holds the global view of a scaled-out deployment —
//! `<prefix>.events`, `<prefix>.alerts` and `<prefix>.incidents` by default. Each message
//! carries the record's stable id as `Nats-Msg-Id`, so JetStream drops a record sent twice
//! (after a crash, or by two instances). Every publish is acknowledged by JetStream
//! before the framework commits the cursor.

use serde::{Deserialize, Serialize};

use crate::event::RecordKind;
use crate::export::{Item, SendReport, Sink, SinkError};
use crate::source::nats::NatsConnection;

/// Settings (`type = "nats"`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// The server.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The stream to create when missing (subjects `<prefix>.events`, `.alerts`,
    /// `.incidents`); empty: do not create one (the subjects belong to an existing stream).
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subject prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_stream() -> String {
    "VIGIL_SHARED".into()
}

fn default_prefix() -> String {
    "vigil.shared".into()
}

impl NatsSinkConfig {
    /// Problems with the settings.
    pub fn validate(&self, path: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.connection.url.trim().is_empty() {
            errors.push((format!("{path}.url"), "must not be empty".into()));
        }
        if self.prefix.is_empty() || self.prefix.contains(['*', '>', ' ']) {
            errors.push((format!("{path}.prefix"), "must be a subject prefix without wildcards".into()));
        }
        errors
    }
}

/// The sink.
#[derive(Debug)]
pub struct NatsSink {
    config: NatsSinkConfig,
    js: tokio::sync::OnceCell<async_nats::jetstream::Context>,
}

impl NatsSink {
    /// A sink that connects on first use.
    pub fn new(config: NatsSinkConfig) -> Self {
        Self { config, js: tokio::sync::OnceCell::new() }
    }

    async fn context(&self) -> Result<&async_nats::jetstream::Context, SinkError> {
        self.js
            .get_or_try_init(|| async {
                let client = self
                    .config
                    .connection
                    .connect(std::time::Duration::from_secs(10))
                    .await
                    .map_err(SinkError::retryable)?;
                let js = async_nats::jetstream::new(client);
                if !self.config.stream.is_empty() {
                    let p = &self.config.prefix;
                    js.get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: self.config.stream.clone(),
                        subjects: vec![format!("{p}.events"), format!("{p}.alerts"), format!("{p}.incidents")],
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| SinkError::retryable(format!("JetStream stream {}: {e}", self.config.stream)))?;
                }
                Ok(js)
            })
            .await
    }

    fn subject(&self, kind: RecordKind) -> String {
        let what = match kind {
            RecordKind::Event => "events",
            RecordKind::Alert => "alerts",
            _ => "incidents",
        };
        format!("{}.{what}", self.config.prefix)
    }
}

impl Sink for NatsSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let js = self.context().await?;
        let mut acks = Vec::with_capacity(batch.len());
        for item in batch {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", item.id.as_str());
            let ack = js
                .publish_with_headers(self.subject(item.kind), headers, item.body.clone().into())
                .await
                .map_err(|e| SinkError::retryable(format!("publish: {e}")))?;
            acks.push(ack);
        }
        let mut report = SendReport::default();
        for (i, ack) in acks.into_iter().enumerate() {
            if let Err(e) = ack.await {
                report.failed.push((i, SinkError::retryable(format!("JetStream did not acknowledge: {e}"))));
            }
        }
        Ok(report)
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        self.context().await.map(|_| ())
    }
}
