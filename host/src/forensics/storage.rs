//! Where bundles live: a local directory or S3-compatible object storage (AWS S3, MinIO,
//! Ceph…; `object_store` also speaks GCS and Azure), behind one small interface.
//!
//! Object Lock: `object_store` does not set per-object retention, so WORM storage is the
//! bucket's: create it with Object Lock and a default retention at least as long as
//! `forensics.retention`. The sweeper's deletes then leave the locked versions in place
//! until their retention ends, as the store guarantees.

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::Error;
use crate::telemetry::Secret;

/// `[forensics.storage]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageConfig {
    /// A directory (default: `evidence/` in the data directory).
    #[default]
    Local,
    /// A directory of your choice.
    Dir {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// S3 or an S3-compatible store.
    S3 {
        /// Bucket.
        bucket: String,
        /// Region.
        #[serde(default = "default_region")]
        region: String,
        /// Endpoint of an S3-compatible store (`https://minio.example:9000`).
        #[serde(default)]
        endpoint: Option<String>,
        /// Access key id.
        access_key_id: Secret,
        /// Secret access key.
        secret_access_key: Secret,
        /// Key prefix of every bundle.
        #[serde(default = "default_prefix")]
        prefix: String,
        /// Allow `http://` endpoints (tests, private networks).
        #[serde(default)]
        allow_http: bool,
    },
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_prefix() -> String {
    "vigil-evidence".into()
}

impl StorageConfig {
    /// Problems with the settings.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if let Self::S3 { bucket, endpoint, allow_http, .. } = self {
            if bucket.is_empty() {
                errors.push(("forensics.storage.bucket".into(), "must not be empty".into()));
            }
            if let Some(e) = endpoint
                && e.starts_with("http://")
                && !allow_http
            {
                errors.push(("forensics.storage.endpoint".into(), "http:// needs allow_http = true".into()));
            }
        }
        errors
    }
}

/// The object store and the key prefix of bundles.
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

impl Objects {
    /// Opens the configured store (`data` is the data directory, for `Local`).
    pub fn open(config: &StorageConfig, data: &Path) -> Result<Self, Error> {
        let local = |dir: &Path| -> Result<Self, Error> {
            std::fs::create_dir_all(dir).map_err(|e| storage(format!("creating {}: {e}", dir.display())))?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(storage)?;
            Ok(Self { store: Arc::new(store), prefix: String::new(), describe: dir.display().to_string() })
        };
        match config {
            StorageConfig::Local => local(&data.join("evidence")),
            StorageConfig::Dir { path } => local(path),
            StorageConfig::S3 { bucket, region, endpoint, access_key_id, secret_access_key, prefix, allow_http } => {
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(access_key_id.expose())
                    .with_secret_access_key(secret_access_key.expose())
                    .with_allow_http(*allow_http);
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                let store = builder.build().map_err(storage)?;
                let prefix = prefix.trim_matches('/').to_owned();
                Ok(Self { store: Arc::new(store), describe: format!("s3://{bucket}/{prefix}"), prefix })
            }
        }
    }

    fn path(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Where a bundle is, for people (`s3://bucket/prefix/<id>`, a directory).
    pub fn describe(&self, id: &str) -> String {
        format!("{}/{id}", self.describe)
    }

    /// Stores an object.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.store.put(&self.path(name), PutPayload::from(bytes)).await.map_err(storage)?;
        Ok(())
    }

    /// Reads an object.
    pub async fn get(&self, name: &str) -> Result<Vec<u8>, Error> {
        let result = self.store.get(&self.path(name)).await.map_err(storage)?;
        Ok(result.bytes().await.map_err(storage)?.to_vec())
    }

    /// Deletes an object.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.store.delete(&self.path(name)).await.map_err(storage)
    }

    /// The names (without the prefix) under `dir`, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, Error> {
        let base = self.path(dir.trim_end_matches('/'));
        let metas: Vec<_> = self.store.list(Some(&base)).try_collect().await.map_err(storage)?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut names: Vec<String> =
            metas.into_iter().map(|m| m.location.to_string().trim_start_matches(&strip).to_owned()).collect();
        names.sort();
        Ok(names)
    }
}
