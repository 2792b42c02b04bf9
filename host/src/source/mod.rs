//! Ingest: turns what producers send into [`SecurityEvent`]s in the log.
//!
//! Every source goes through one [`Ingestor`]: records are decoded and validated one by one
//! (a bad record is reported precisely and never costs its neighbours), the good ones are
//! appended to the log, and the source acknowledges upstream only after that append is
//! durable. Every source reads its records in an input [`Format`] through the
//! [`decode`] module. Sources: batch bodies (HTTP, files, stdin) in [`batch`], [`syslog`]
//! listeners, the [`file`] tail and [`nats`].
//!
//! Layer 1: uses `event`, `store`, `telemetry`.

pub mod batch;
pub mod decode;
pub mod file;
pub mod nats;
pub mod syslog;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use bytesize::ByteSize;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, DecodeLimits, Enricher, RecordKind, SecurityEvent};
use crate::store::{self, AppendReceipt, LogWriter, NewRecord, Op};
use crate::telemetry::{MetricsRegistry, latency_histogram, names};

pub use batch::{BatchReport, Rejection};
pub use decode::{Format, Options, PluginDecoders, StreamDecoder, UnknownFormat};

/// Errors of the ingest layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log refused the append.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A request or file body is larger than allowed.
    #[error("body is larger than the limit of {limit}")]
    BodyTooLarge {
        /// The limit.
        limit: ByteSize,
    },
    /// A gzip body did not decompress.
    #[error("gzip body does not decompress: {0}")]
    Gzip(String),
    /// A listener could not bind its address.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The thread decoding a body with a plugin failed.
    #[error("decoding failed: {0}")]
    Decoder(String),
    /// The input format names a decode plugin that is not loaded.
    #[error(transparent)]
    Format(#[from] UnknownFormat),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of ingest operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Limits applied to everything ingested (`[ingest]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request or batch body, after decompression.
    #[schemars(schema_with = "crate::store::byte_size_schema")]
    pub max_body_bytes: ByteSize,
    /// Largest single record (one NDJSON line, one array element, one syslog frame).
    #[schemars(schema_with = "crate::store::byte_size_schema")]
    pub max_event_bytes: ByteSize,
    /// Deepest nesting of JSON objects and arrays in one record.
    pub max_depth: usize,
    /// How far an event's `time` may lie ahead of the time Vigil observes it.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_future_skew: std::time::Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: ByteSize::mib(16),
            max_event_bytes: ByteSize::kib(256),
            max_depth: 32,
            max_future_skew: std::time::Duration::from_secs(3600),
        }
    }
}

impl IngestConfig {
    /// The per-record limits.
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_event_bytes: self.max_event_bytes.as_u64() as usize,
            max_depth: self.max_depth,
            max_future_skew: chrono::Duration::from_std(self.max_future_skew).unwrap_or(chrono::Duration::hours(1)),
        }
    }

    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.max_event_bytes.as_u64() == 0 {
            errors.push(("ingest.max_event_bytes".into(), "must be larger than 0".into()));
        }
        if self.max_event_bytes > self.max_body_bytes {
            errors.push(("ingest.max_event_bytes".into(), "must not exceed ingest.max_body_bytes".into()));
        }
        if self.max_depth == 0 || self.max_depth > 128 {
            errors.push(("ingest.max_depth".into(), "must be between 1 and 128".into()));
        }
        errors
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    source: String,
    format: String,
    reason: String,
}

/// Why a record was rejected, as a metric label.
pub fn reject_reason(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::TooLarge { .. } => "too_large",
        DecodeError::TooDeep { .. } => "too_deep",
        DecodeError::NotUtf8 { .. } => "not_utf8",
        DecodeError::Syntax { .. } => "malformed_json",
        DecodeError::Invalid { .. } => "invalid",
        DecodeError::Unreadable { .. } => "unreadable",
    }
}

#[derive(Clone, Debug)]
struct IngestMetrics {
    ingested: Family<SourceLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    durable: Family<SourceLabels, Histogram>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            ingested: Family::default(),
            rejected: Family::default(),
            durable: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// The shared ingest path: decode, validate, append durably, count.
#[derive(Clone, Debug)]
pub struct Ingestor {
    writer: LogWriter,
    decoders: PluginDecoders,
    enricher: Option<Arc<dyn Enricher>>,
    config: Arc<IngestConfig>,
    limits: DecodeLimits,
    metrics: IngestMetrics,
}

impl Ingestor {
    /// An ingestor appending through `writer`, registering its metrics.
    pub fn new(writer: LogWriter, config: IngestConfig, registry: &MetricsRegistry) -> Self {
        let metrics = IngestMetrics::default();
        registry.register(
            names::EVENTS_INGESTED,
            "Records accepted into the log, by source.",
            metrics.ingested.clone(),
        );
        registry.register(
            names::EVENTS_REJECTED,
            "Records refused at ingest, by source and reason.",
            metrics.rejected.clone(),
        );
        registry.register(
            names::INGEST_DURABLE_LATENCY,
            "From a batch handed to the log until it is durable (group commit and fsync), by source.",
            metrics.durable.clone(),
        );
        let limits = config.limits();
        Self { writer, decoders: PluginDecoders::default(), enricher: None, config: Arc::new(config), limits, metrics }
    }

    /// Enriches every event stored from now on (threat intelligence): an event that
    /// matches is stored with its `threat` fields set.
    pub fn with_enricher(mut self, enricher: Arc<dyn Enricher>) -> Self {
        self.enricher = Some(enricher);
        self
    }

    fn encode(&self, events: &[SecurityEvent], tag: u8) -> Vec<NewRecord> {
        let Some(enricher) = &self.enricher else { return encode(events, tag) };
        let mut threats = enricher.threats(events).into_iter().peekable();
        let mut records = Vec::with_capacity(events.len());
        for (at, event) in events.iter().enumerate() {
            match threats.next_if(|(matched, _)| *matched == at) {
                Some((_, threat)) => {
                    let mut enriched = event.clone();
                    enriched.threat = Some(Box::new(threat));
                    records.push(encode_one(&enriched, tag));
                }
                None => records.push(encode_one(event, tag)),
            }
        }
        records
    }

    /// Reads `plugin:NAME` formats with the decode plugins of `decoders` (a shared handle
    /// the plugin host keeps up to date).
    pub fn with_decoders(mut self, decoders: PluginDecoders) -> Self {
        self.decoders = decoders;
        self
    }

    /// The decode plugins formats may name.
    pub fn decoders(&self) -> &PluginDecoders {
        &self.decoders
    }

    /// A decoder for one stream of `format` with the ingest limits.
    pub fn stream_decoder(&self, format: &Format, keep_raw: bool) -> std::result::Result<StreamDecoder, UnknownFormat> {
        StreamDecoder::new(format, Options { limits: self.limits, keep_raw }, &self.decoders)
    }

    /// The per-record limits.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The ingest settings.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Counts a rejected record of `source` read as `format`.
    pub fn count_rejected(&self, source: &str, format: &str, reason: &str) {
        let labels = RejectLabels { source: source.into(), format: format.into(), reason: reason.into() };
        self.metrics.rejected.get_or_create(&labels).inc();
    }

    /// Appends `events` (and `ops`, atomically with them); resolves once durable.
    pub async fn append(&self, source: &str, events: &[SecurityEvent], ops: Vec<Op>) -> Result<AppendReceipt> {
        let records = self.encode(events, RecordKind::Event.tag());
        let started = Instant::now();
        let receipt = self.writer.append(records, ops).await?;
        self.count_ingested(source, receipt.count, started);
        Ok(receipt)
    }

    /// [`append`](Self::append) for threads outside the async runtime.
    pub fn append_blocking(&self, source: &str, events: &[SecurityEvent], ops: Vec<Op>) -> Result<AppendReceipt> {
        let records = self.encode(events, RecordKind::Event.tag());
        let started = Instant::now();
        let receipt = self.writer.append_blocking(records, ops)?;
        self.count_ingested(source, receipt.count, started);
        Ok(receipt)
    }

    /// Appends events another instance already consumed, tagged [`REPLAY_TAG`]: detection
    /// warms its windows with them and nothing else reads them. Not counted as ingested.
    ///
    /// [`REPLAY_TAG`]: crate::event::REPLAY_TAG
    pub async fn append_replayed(&self, events: &[SecurityEvent], ops: Vec<Op>) -> Result<AppendReceipt> {
        Ok(self.writer.append(self.encode(events, crate::event::REPLAY_TAG), ops).await?)
    }

    /// Counts `n` records of `source` made durable by an append that began at `started`.
    fn count_ingested(&self, source: &str, n: u64, started: Instant) {
        if n > 0 {
            let labels = SourceLabels { source: source.into() };
            self.metrics.ingested.get_or_create(&labels).inc_by(n);
            self.metrics.durable.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        }
    }

    /// Decodes a batch body in `format` (NDJSON, a JSON array or documents, an EVTX file,
    /// XML, text lines), appends its good records and reports the bad ones. `gzip` says the
    /// body is gzip-compressed.
    pub async fn ingest_body(&self, source: &str, body: &[u8], gzip: bool, format: &Format) -> Result<BatchReport> {
        let inflated;
        let body = if gzip {
            inflated = batch::gunzip(body, self.config.max_body_bytes)?;
            &inflated[..]
        } else {
            body
        };
        if body.len() as u64 > self.config.max_body_bytes.as_u64() {
            return Err(Error::BodyTooLarge { limit: self.config.max_body_bytes });
        }
        let mut decoder = self.stream_decoder(format, false).map_err(Error::Format)?;
        let (decoded, body_error) = if matches!(format, Format::Plugin(_)) {
            // A plugin call blocks its thread (up to its deadline): off the reactor.
            let body = body.to_vec();
            tokio::task::spawn_blocking(move || {
                let mut decoded = decode::Decoded::default();
                let error = decoder.body(&body, chrono::Utc::now(), &mut decoded).err();
                (decoded, error)
            })
            .await
            .map_err(|e| Error::Decoder(e.to_string()))?
        } else {
            let mut decoded = decode::Decoded::default();
            let error = decoder.body(body, chrono::Utc::now(), &mut decoded).err();
            (decoded, error)
        };
        let (events, mut report) = batch::report(decoded, body_error);
        for rejection in &report.rejected {
            self.count_rejected(source, format.name(), reject_reason(&rejection.error));
        }
        if !events.is_empty() {
            let receipt = self.append(source, &events, Vec::new()).await?;
            report.first_seq = Some(receipt.first_seq);
        }
        Ok(report)
    }
}

fn encode(events: &[SecurityEvent], tag: u8) -> Vec<NewRecord> {
    events.iter().map(|event| encode_one(event, tag)).collect()
}

fn encode_one(event: &SecurityEvent, tag: u8) -> NewRecord {
    NewRecord::encode(tag, 512, |buf| {
        // A SecurityEvent always serializes: its maps have string keys.
        serde_json::to_writer(buf, event).expect("SecurityEvent serializes to JSON");
    })
}
