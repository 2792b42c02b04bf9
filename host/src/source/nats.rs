//! NATS JetStream: the source several Vigil instances share, and the publisher that
//! partitions events for producers that do not.
//!
//! Events are published on `<prefix>.events.<partition>`, the partition being a stable hash
//! (FNV-1a, 64 bit) of a key field (`source.ip` by default) modulo the partition count, so
//! every event of one key reaches the one instance that owns its partition and stateful
//! windows stay as correct as on a single instance. Each instance consumes the partitions it
//! owns through one durable pull consumer per partition (`<consumer>-p<N>`), acknowledges a
//! message only after its event is durable in the local log (a crash redelivers, never
//! loses), and fetches the next batch only after the last one is committed, so a slow
//! instance does not grow memory. The highest stream sequence stored per partition is
//! committed in the same write as the events, so a message redelivered after a crash is
//! recognised and acknowledged without being stored twice: exactly once into the log.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::Ingestor;
use super::decode::{Decoded, Format, StreamDecoder, UnknownFormat};
use crate::store::{Cf, Store, Table};
use crate::telemetry::{MetricsRegistry, Secret, pause};

/// How to reach a NATS server and authenticate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConnection {
    /// Server URL(s), comma-separated (`tls://` for TLS).
    pub url: String,
    /// User (with `password`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Token.
    pub token: Option<Secret>,
    /// NKey seed.
    pub nkey: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
}

impl NatsConnection {
    /// Connects (retrying the first connection within `timeout`); errors never carry secrets.
    pub async fn connect(&self, timeout: Duration) -> Result<async_nats::Client, String> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(token) = &self.token {
            options = options.token(token.expose().to_owned());
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(file) = &self.credentials_file {
            options = options
                .credentials_file(file)
                .await
                .map_err(|e| format!("NATS credentials file {}: {}", file.display(), e.kind()))?;
        }
        let servers: Vec<String> = self.url.split(',').map(|s| s.trim().to_owned()).collect();
        tokio::time::timeout(timeout, options.connect(servers))
            .await
            .map_err(|_| "NATS connect timed out".to_owned())?
            .map_err(|e| format!("NATS connect failed: {}", e.kind()))
    }
}

/// The JetStream source (`[sources.nats]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSourceConfig {
    /// The server.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The stream (created with subjects `<prefix>.events.>` when missing).
    pub stream: String,
    /// Subject prefix.
    pub prefix: String,
    /// How many partitions the producers use.
    pub partitions: u32,
    /// The partitions this instance consumes; empty: all.
    pub owned: Vec<u32>,
    /// Durable consumer name prefix (`<consumer>-p<N>`); instances that split partitions
    /// share it.
    pub consumer: String,
    /// Most messages per fetch.
    pub batch: usize,
    /// How long the server waits for an ack before redelivering.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ack_wait: Duration,
    /// Deliveries before the server gives up on a message.
    pub max_deliver: i64,
    /// How much of a partition's recent history is replayed into detection's windows when
    /// this instance takes the partition over from another (set it to the longest window
    /// of your rules plus the allowed lateness; `0s` turns the replay off).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub replay: Duration,
    /// Input format of each message (`vigil` by default; any format whose records are one
    /// per message: `ecs`, `cloudtrail`, `cef`, `plugin:NAME`…).
    pub format: Format,
}

impl Default for NatsSourceConfig {
    fn default() -> Self {
        Self {
            connection: NatsConnection::default(),
            stream: "VIGIL_EVENTS".into(),
            prefix: "vigil".into(),
            partitions: 16,
            owned: Vec::new(),
            consumer: "vigil".into(),
            batch: 512,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            format: Format::Vigil,
            replay: Duration::from_secs(2 * 3600),
        }
    }
}

impl NatsSourceConfig {
    /// Problems with the settings.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let path = |k: &str| format!("sources.nats.{k}");
        if self.connection.url.trim().is_empty() {
            errors.push((path("url"), "must not be empty".into()));
        }
        if self.partitions == 0 {
            errors.push((path("partitions"), "must be at least 1".into()));
        }
        if let Some(p) = self.owned.iter().find(|p| **p >= self.partitions) {
            errors.push((path("owned"), format!("partition {p} does not exist (0..{})", self.partitions)));
        }
        if self.batch == 0 {
            errors.push((path("batch"), "must be at least 1".into()));
        }
        for (name, value) in [("stream", &self.stream), ("prefix", &self.prefix), ("consumer", &self.consumer)] {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                errors.push((path(name), "must be A-Z a-z 0-9 _ - only".into()));
            }
        }
        errors
    }

    /// The partitions this instance consumes.
    pub fn owned_partitions(&self) -> Vec<u32> {
        if self.owned.is_empty() { (0..self.partitions).collect() } else { self.owned.clone() }
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms (the partition of a key must never
/// change).
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The value of a dotted field path in an event's JSON (`source.ip`), as text.
pub fn key_of(event: &Value, field: &str) -> String {
    let mut v = event;
    for part in field.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One partition's consumer as JetStream reports it (`vigil cluster status`).
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    /// Consumer name (`<consumer>-p<N>`).
    pub consumer: String,
    /// The partition's subject.
    pub subject: String,
    /// Messages not yet delivered (the lag).
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: usize,
    /// Delivered more than once.
    pub redelivered: usize,
}

/// Every consumer of the stream with its lag and redeliveries, by name.
pub async fn cluster_status(js: &jetstream::Context, stream: &str) -> Result<Vec<PartitionStatus>, String> {
    let stream = js.get_stream(stream).await.map_err(|e| format!("JetStream stream {stream}: {e}"))?;
    let mut consumers = stream.consumers();
    let mut out = Vec::new();
    while let Some(info) = consumers.next().await {
        let info = info.map_err(|e| format!("listing consumers: {e}"))?;
        out.push(PartitionStatus {
            consumer: info.name.clone(),
            subject: info.config.filter_subject.clone(),
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
        });
    }
    out.sort_by(|a, b| a.consumer.cmp(&b.consumer));
    Ok(out)
}

/// Creates the stream when it does not exist.
pub async fn ensure_stream(js: &jetstream::Context, stream: &str, prefix: &str) -> Result<(), String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![format!("{prefix}.events.>")],
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("JetStream stream {stream}: {e}"))
}

/// Publishes events (JSON objects) partitioned by `key`, each acknowledged by JetStream;
/// an event's `id`, when it has one, is its `Nats-Msg-Id` (JetStream drops duplicates).
/// Returns how many went to each partition.
pub async fn publish(
    js: &jetstream::Context,
    prefix: &str,
    partitions: u32,
    key: &str,
    events: &[Value],
) -> Result<BTreeMap<u32, u64>, String> {
    let mut counts = BTreeMap::new();
    let mut pending = Vec::with_capacity(events.len());
    for event in events {
        let partition = partition_of(&key_of(event, key), partitions);
        let payload = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = event.get("id").and_then(Value::as_str) {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = js
            .publish_with_headers(format!("{prefix}.events.{partition}"), headers, payload.into())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        pending.push(ack);
        *counts.entry(partition).or_insert(0) += 1;
        if pending.len() >= 256 {
            for ack in pending.drain(..) {
                ack.await.map_err(|e| format!("publish ack: {e}"))?;
            }
        }
    }
    for ack in pending {
        ack.await.map_err(|e| format!("publish ack: {e}"))?;
    }
    Ok(counts)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: String,
}

/// The running source.
#[derive(Debug)]
pub struct NatsSource {
    config: NatsSourceConfig,
    ingestor: Ingestor,
    sequences: Table<String, u64>,
    redelivered: Family<PartitionLabels, Counter>,
    consumed: Family<PartitionLabels, Counter>,
    lag: Family<PartitionLabels, prometheus_client::metrics::gauge::Gauge>,
    replayed: Family<PartitionLabels, Counter>,
}

impl NatsSource {
    /// The source of `config`, storing through `ingestor`.
    /// A decoder for the configured format.
    fn decoder(&self) -> Result<StreamDecoder, UnknownFormat> {
        self.ingestor.stream_decoder(&self.config.format, false)
    }

    pub fn new(config: NatsSourceConfig, ingestor: Ingestor, store: &Store, registry: &MetricsRegistry) -> Self {
        let sequences = Table::new(store, Cf::Cursors, b"nats/");
        let redelivered = Family::<PartitionLabels, Counter>::default();
        let consumed = Family::<PartitionLabels, Counter>::default();
        registry.register(
            "nats_redelivered",
            "JetStream messages delivered more than once, by partition.",
            redelivered.clone(),
        );
        registry.register(
            "nats_consumed",
            "JetStream messages stored and acknowledged, by partition.",
            consumed.clone(),
        );
        let lag = Family::<PartitionLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register("nats_lag", "JetStream messages of an owned partition not yet consumed.", lag.clone());
        let replayed = Family::<PartitionLabels, Counter>::default();
        registry.register(
            "nats_replayed",
            "Events another instance consumed, replayed into detection's windows on takeover, by partition.",
            replayed.clone(),
        );
        Self { config, ingestor, sequences, redelivered, consumed, lag, replayed }
    }

    /// Connects, makes sure the stream and this instance's consumers exist, and consumes
    /// until `shutdown`. Fails before consuming if the server or stream cannot be set up.
    pub async fn start(self, shutdown: CancellationToken) -> Result<tokio::task::JoinSet<()>, String> {
        let client = self.config.connection.connect(Duration::from_secs(10)).await?;
        let js = jetstream::new(client);
        ensure_stream(&js, &self.config.stream, &self.config.prefix).await?;
        let stream = js.get_stream(&self.config.stream).await.map_err(|e| format!("JetStream stream: {e}"))?;
        let mut tasks = tokio::task::JoinSet::new();
        let source = std::sync::Arc::new(self);
        for partition in source.config.owned_partitions() {
            let name = format!("{}-p{partition}", source.config.consumer);
            let consumer: jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &name,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: format!("{}.events.{partition}", source.config.prefix),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: source.config.ack_wait,
                        max_deliver: source.config.max_deliver,
                        // Above the batch, or a fetch waits out its expiry for messages the
                        // server will not send while the batch is unacknowledged.
                        max_ack_pending: i64::try_from(source.config.batch * 2).unwrap_or(i64::MAX),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| format!("JetStream consumer {name}: {e}"))?;
            let (source2, shutdown2, watched) = (source.clone(), shutdown.clone(), consumer.clone());
            tasks.spawn(async move { source2.watch_lag(partition, watched, shutdown2).await });
            let (source, shutdown, stream) = (source.clone(), shutdown.clone(), stream.clone());
            tasks.spawn(async move { source.consume(partition, consumer, stream, shutdown).await });
        }
        tracing::info!(partitions = ?source.config.owned_partitions(), stream = %source.config.stream, "Consuming JetStream.");
        Ok(tasks)
    }

    /// Samples the partition's backlog every 5 s into `vigil_nats_lag`.
    async fn watch_lag(
        &self,
        partition: u32,
        consumer: jetstream::consumer::PullConsumer,
        shutdown: CancellationToken,
    ) {
        let gauge = self.lag.get_or_create(&PartitionLabels { partition: partition.to_string() }).clone();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! { _ = tick.tick() => {}, () = shutdown.cancelled() => return }
            if let Ok(info) = consumer.get_info().await {
                gauge.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            }
        }
    }

    async fn consume(
        &self,
        partition: u32,
        consumer: jetstream::consumer::PullConsumer,
        stream: jetstream::stream::Stream,
        shutdown: CancellationToken,
    ) {
        let labels = PartitionLabels { partition: partition.to_string() };
        let source = format!("nats/{partition}");
        let key = format!("{}/{}-p{partition}", self.config.stream, self.config.consumer);
        let mut stored = match self.sequences.get(&key) {
            Ok(seq) => seq.unwrap_or(0),
            Err(e) => {
                tracing::error!(partition, error = %e, "Cannot read the JetStream position; not consuming this partition.");
                return;
            }
        };
        loop {
            match self.take_over(partition, &consumer, &stream, stored, &key).await {
                Ok(position) => {
                    stored = position;
                    break;
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "Replaying the partition's history failed; retrying.");
                    if !pause(&shutdown, Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        }
        while !shutdown.is_cancelled() {
            let fetched = tokio::select! {
                batch = consumer.fetch().max_messages(self.config.batch).expires(Duration::from_secs(1)).messages() => batch,
                () = shutdown.cancelled() => return,
            };
            let mut batch = match fetched {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "JetStream fetch failed; retrying.");
                    if pause(&shutdown, Duration::from_secs(1)).await {
                        continue;
                    }
                    return;
                }
            };
            let mut messages = Vec::new();
            while let Some(message) = batch.next().await {
                match message {
                    Ok(m) => messages.push(m),
                    Err(e) => tracing::debug!(partition, error = %e, "JetStream batch ended early."),
                }
            }
            if messages.is_empty() {
                continue;
            }
            let now = chrono::Utc::now();
            let mut events = Vec::with_capacity(messages.len());
            let mut highest = stored;
            let mut decoder = match self.decoder() {
                Ok(decoder) => decoder,
                Err(e) => {
                    tracing::error!(partition, error = %e, "JetStream messages cannot be read; waiting for the plugin.");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            for m in &messages {
                let Ok(info) = m.info() else { continue };
                if info.delivered > 1 {
                    self.redelivered.get_or_create(&labels).inc();
                }
                if info.stream_sequence <= stored {
                    // Stored before a crash, not acknowledged: acknowledge, do not store again.
                    continue;
                }
                highest = highest.max(info.stream_sequence);
                let mut out = Decoded::default();
                decoder.record(info.stream_sequence as usize, &m.payload, now, &mut out);
                events.append(&mut out.events);
                for r in out.rejected {
                    self.ingestor.count_rejected(&source, self.config.format.name(), super::reject_reason(&r.error));
                    tracing::warn!(partition, subject = %m.subject, error = %r.error, "JetStream event refused.");
                }
            }
            let mut out = Decoded::default();
            decoder.finish(now, &mut out);
            events.append(&mut out.events);
            // Acknowledged only once durable, with the position in the same write: a crash
            // before this point redelivers, and a redelivery after it is recognised.
            let ops = match self.sequences.put_op(&key, &highest) {
                Ok(op) => vec![op],
                Err(e) => {
                    tracing::error!(partition, error = %e, "Cannot encode the JetStream position.");
                    continue;
                }
            };
            // Retried until stored: moving on past an unstored message would skip it when it
            // is redelivered (its sequence would be below the position).
            while let Err(e) = self.ingestor.append(&source, &events, ops.clone()).await {
                tracing::error!(partition, error = %e, "Storing JetStream events failed; retrying.");
                if !pause(&shutdown, Duration::from_secs(1)).await {
                    return;
                }
            }
            stored = highest;
            for m in &messages {
                if let Err(e) = m.ack().await {
                    tracing::warn!(partition, error = %e, "JetStream ack failed; the message will be redelivered (ids deduplicate it).");
                }
            }
            self.consumed.get_or_create(&labels).inc_by(messages.len() as u64);
        }
    }
}

impl NatsSource {
    /// Rebuilds the windows of a partition another instance consumed since this one last
    /// did. Whatever the partition's consumer acknowledged beyond this instance's position
    /// was stored and detected elsewhere; of it, the messages of the last `replay` are
    /// stored here as replayed events, which detection adds to its windows without raising
    /// anything (the other instance raised it), and the position moves to the consumer's
    /// ack floor. Each chunk is committed with its position, so a crash mid-replay resumes
    /// where it stopped and no event warms a window twice. Returns the new position.
    async fn take_over(
        &self,
        partition: u32,
        consumer: &jetstream::consumer::PullConsumer,
        stream: &jetstream::stream::Stream,
        mut stored: u64,
        key: &str,
    ) -> Result<u64, String> {
        let floor = consumer.get_info().await.map_err(|e| format!("consumer info: {e}"))?.ack_floor.stream_sequence;
        if floor <= stored || self.config.replay.is_zero() {
            return Ok(stored);
        }
        let replay_secs = i64::try_from(self.config.replay.as_secs()).unwrap_or(i64::MAX);
        let start =
            time::OffsetDateTime::from_unix_timestamp(chrono::Utc::now().timestamp().saturating_sub(replay_secs))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let reader: jetstream::consumer::PullConsumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: format!("{}.events.{partition}", self.config.prefix),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartTime { start_time: start },
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("replay consumer: {e}"))?;
        let labels = PartitionLabels { partition: partition.to_string() };
        let mut replayed = 0u64;
        let mut done = false;
        while !done {
            let mut batch = reader
                .fetch()
                .max_messages(self.config.batch)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| format!("replay fetch: {e}"))?;
            let now = chrono::Utc::now();
            let mut events = Vec::new();
            let mut highest = stored;
            let mut fetched = 0;
            let mut decoder = self.decoder().map_err(|e| e.to_string())?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| format!("replay fetch: {e}"))?;
                fetched += 1;
                let info = message.info().map_err(|e| format!("replay message: {e}"))?;
                if info.stream_sequence > floor {
                    done = true;
                    break;
                }
                done = info.pending == 0 || info.stream_sequence == floor;
                if info.stream_sequence <= stored {
                    continue;
                }
                highest = info.stream_sequence;
                // Refused here as it was by the instance that consumed it (and counted there).
                let mut out = Decoded::default();
                decoder.record(0, &message.payload, now, &mut out);
                events.append(&mut out.events);
            }
            done |= fetched == 0;
            if done {
                highest = floor;
            }
            if highest > stored {
                let ops = vec![self.sequences.put_op(&key.to_owned(), &highest).map_err(|e| e.to_string())?];
                self.ingestor
                    .append_replayed(&events, ops)
                    .await
                    .map_err(|e| format!("storing replayed events: {e}"))?;
                replayed += events.len() as u64;
                self.replayed.get_or_create(&labels).inc_by(events.len() as u64);
                stored = highest;
            }
        }
        let name = reader.cached_info().name.clone();
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(partition, error = %e, "Replay consumer not deleted; the server removes it when idle.");
        }
        tracing::info!(
            partition,
            replayed,
            position = stored,
            "Took the partition over: its recent history warmed detection's windows."
        );
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("203.0.113.7", 16), partition_of("203.0.113.7", 16));
        // Pinned: a change here would move every key to another instance.
        assert_eq!(partition_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as u32);
        let used: std::collections::BTreeSet<u32> =
            (0..200).map(|i| partition_of(&format!("10.0.{}.{}", i / 256, i % 256), 8)).collect();
        assert_eq!(used.len(), 8, "200 addresses use every one of 8 partitions");
        let event = serde_json::json!({ "source": { "ip": "192.0.2.1" }, "user": { "name": "alice" } });
        assert_eq!(key_of(&event, "source.ip"), "192.0.2.1");
        assert_eq!(key_of(&event, "host.name"), "");
    }
}
