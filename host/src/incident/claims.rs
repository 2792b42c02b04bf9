//! Incident claims across instances (`[incidents.claims]`): before an instance opens an
//! incident it claims the dedup key in a JetStream key-value bucket with a
//! compare-and-set create; a key another instance holds is not opened again here (the
//! alert is still recorded and exported). Claims lapse with the bucket's `ttl`, so a key
//! can move to another instance after a rebalance. If the bucket cannot be reached, the
//! incident is opened locally (a duplicate is better than a missed incident) and the
//! failure is logged and counted.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::source::nats::NatsConnection;

/// Settings (`[incidents.claims]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimsConfig {
    /// The server.
    #[serde(flatten)]
    pub connection: NatsConnection,
    /// The key-value bucket (created when missing).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// This instance's name (default: the data directory's path).
    #[serde(default)]
    pub instance: Option<String>,
    /// How long a claim holds.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ttl: Duration,
}

fn default_bucket() -> String {
    "VIGIL_INCIDENTS".into()
}

fn default_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The claim store.
#[derive(Debug)]
pub struct Claims {
    kv: kv::Store,
    instance: String,
    runtime: tokio::runtime::Handle,
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is this instance's: open the incident.
    Ours,
    /// Another instance holds it.
    Theirs(String),
}

impl Claims {
    /// Connects and makes sure the bucket exists.
    pub async fn connect(config: &ClaimsConfig, default_instance: String) -> Result<Self, String> {
        let client = config.connection.connect(Duration::from_secs(10)).await?;
        let js = async_nats::jetstream::new(client);
        // The bucket's stream, declared as a plain stream: what `create_key_value` sends
        // is not understood by every server version (2.9 answers it with an error).
        let bucket = &config.bucket;
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: config.ttl,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("key-value bucket {bucket}: {e}"))?;
        let kv = js.get_key_value(bucket).await.map_err(|e| format!("key-value bucket {bucket}: {e}"))?;
        Ok(Self {
            kv,
            instance: config.instance.clone().unwrap_or(default_instance),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Claims `dedup_key` for this instance. Called from the detection worker's blocking
    /// thread.
    pub fn claim(&self, dedup_key: &str) -> Result<Claim, String> {
        let key: String = Sha256::digest(dedup_key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        self.runtime.block_on(async {
            match self.kv.create(&key, self.instance.clone().into_bytes().into()).await {
                Ok(_) => Ok(Claim::Ours),
                Err(create) => match self.kv.get(&key).await {
                    Ok(Some(holder)) => {
                        let holder = String::from_utf8_lossy(&holder).into_owned();
                        Ok(if holder == self.instance { Claim::Ours } else { Claim::Theirs(holder) })
                    }
                    Ok(None) => Err(format!("claim of {dedup_key} failed: {create}")),
                    Err(e) => Err(format!("reading the claim of {dedup_key}: {e}")),
                },
            }
        })
    }
}
