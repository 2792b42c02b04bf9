//! Indexer acknowledgement: a bounded set of batches awaiting `ackId`s, polled together.
//!
//! A batch accepted with an `ackId` waits here until `/services/collector/ack` says it was
//! indexed. Ids are polled every `poll_interval`; one still unconfirmed after `timeout`
//! expires, and its batch is sent again (the framework retries it). At most `max_pending`
//! batches wait at once; further posts wait for a slot. The poller stops when the sink is
//! dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::config::AckConfig;
use crate::export::SinkError;
use crate::export::http::{self, excerpt};
use crate::telemetry::Secret;

#[derive(Serialize)]
struct AckRequest<'a> {
    acks: &'a [u64],
}

#[derive(Deserialize)]
struct AckResponse {
    acks: HashMap<String, bool>,
}

struct Waiter {
    since: Instant,
    done: oneshot::Sender<Result<(), SinkError>>,
}

struct Inner {
    client: reqwest::Client,
    url: String,
    channel: String,
    token: Secret,
    config: AckConfig,
    pending: Mutex<HashMap<u64, Waiter>>,
    slots: Arc<Semaphore>,
}

/// Batches awaiting indexer acknowledgement.
pub struct Acks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acks").field("channel", &self.inner.channel).finish()
    }
}

impl Acks {
    /// Starts polling `endpoint`'s ack service for `channel`.
    pub fn start(client: reqwest::Client, endpoint: &str, channel: String, token: Secret, config: AckConfig) -> Self {
        let url = format!("{}/services/collector/ack?channel={channel}", endpoint.trim_end_matches('/'));
        let slots = Arc::new(Semaphore::new(config.max_pending));
        let inner = Arc::new(Inner { client, url, channel, token, config, pending: Mutex::new(HashMap::new()), slots });
        tokio::spawn(poll(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Waits for room in the pending set; hold the slot until the batch's ack resolves.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.inner.slots.clone().acquire_owned().await.expect("the ack semaphore is never closed")
    }

    /// Waits until `id` is acknowledged (`Ok`) or expires (retryable error).
    pub async fn wait(&self, id: u64, slot: OwnedSemaphorePermit) -> Result<(), SinkError> {
        let (done, rx) = oneshot::channel();
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Waiter { since: Instant::now(), done });
        let result = rx.await.unwrap_or_else(|_| Err(SinkError::retryable("the acknowledgement poller stopped")));
        drop(slot);
        result
    }
}

async fn poll(inner: Weak<Inner>) {
    let Some(period) = inner.upgrade().map(|i| i.config.poll_interval) else { return };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let ids: Vec<u64> = inner.pending.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        if ids.is_empty() {
            continue;
        }
        let request = inner
            .client
            .post(&inner.url)
            .header(reqwest::header::AUTHORIZATION, format!("Splunk {}", inner.token.expose()))
            .header("X-Splunk-Request-Channel", &inner.channel)
            .json(&AckRequest { acks: &ids });
        let acked = match http::send(request).await {
            Ok(body) => match serde_json::from_str::<AckResponse>(&body) {
                Ok(r) => {
                    r.acks.into_iter().filter(|(_, ok)| *ok).filter_map(|(id, _)| id.parse::<u64>().ok()).collect()
                }
                Err(e) => {
                    tracing::warn!(error = %e, body = %excerpt(&body), "Splunk HEC ack poll answered something unreadable.");
                    Vec::new()
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "Splunk HEC ack poll failed.");
                Vec::new()
            }
        };
        let mut pending = inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        for id in acked {
            if let Some(w) = pending.remove(&id) {
                let _ = w.done.send(Ok(()));
            }
        }
        let timeout = inner.config.timeout;
        let expired: Vec<u64> =
            pending.iter().filter(|(_, w)| w.since.elapsed() >= timeout).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(w) = pending.remove(&id) {
                let _ = w.done.send(Err(SinkError::retryable(format!(
                    "ack {id} not confirmed within {timeout:?}; sending the batch again"
                ))));
            }
        }
    }
}
