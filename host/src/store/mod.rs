//! Embedded storage on RocksDB: column families, typed tables over a key codec, the
//! sequence-numbered record log with group commit, consumer cursors and retention.
//!
//! Layer 0: knows bytes, keys and sequence numbers, no domain types. Every RocksDB call is
//! blocking; async callers reach the log through [`LogWriter`] (a dedicated thread) and run
//! reads on the blocking pool.

mod log;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use rocksdb::{ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

pub use log::{AppendReceipt, ConsumerHandle, Log, LogEntry, LogWriter, NewRecord, RetentionReport};
pub use table::{Key, Table};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB reported an error.
    #[error("storage error in {op}: {source}")]
    Rocks {
        /// What was being done.
        op: &'static str,
        /// The RocksDB error.
        #[source]
        source: rocksdb::Error,
    },
    /// The data directory is held by another process.
    #[error("data directory {path} is in use by another Vigil process (RocksDB lock held)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value did not decode.
    #[error("corrupt value in {cf} at key {key}: {reason}")]
    Corrupt {
        /// Column family.
        cf: &'static str,
        /// Key, hex-encoded.
        key: String,
        /// Why it did not decode.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode value for {cf}: {source}")]
    Encode {
        /// Column family.
        cf: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The log writer has stopped (the store is shutting down).
    #[error("the log writer has stopped")]
    WriterStopped,
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
}

/// Result of storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The column families. Each holds one kind of data; tables may share one by key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    /// The record log: sequence number → record.
    Log,
    /// Consumer cursors and source offsets.
    Cursors,
    /// Incidents by id.
    Incidents,
    /// Detection state: windows, dedup indexes.
    State,
    /// Store metadata (format version).
    Meta,
    /// Dead letters: records a sink refused permanently.
    Dlq,
    /// Threat intelligence: indicators, related objects, feed positions.
    Intel,
    /// Secondary indexes of the log (field value → sequence numbers) and evidence custody.
    Index,
}

impl Cf {
    /// Every column family.
    pub const ALL: [Cf; 8] = [Cf::Log, Cf::Cursors, Cf::Incidents, Cf::State, Cf::Meta, Cf::Dlq, Cf::Intel, Cf::Index];

    /// The RocksDB name.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Log => "log",
            Cf::Cursors => "cursors",
            Cf::Incidents => "incidents",
            Cf::State => "state",
            Cf::Meta => "meta",
            Cf::Dlq => "dlq",
            Cf::Intel => "intel",
            Cf::Index => "index",
        }
    }
}

/// When a write counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncPolicy {
    /// fsync the write-ahead log on every group commit before acknowledging: an acknowledged
    /// record survives a power loss.
    #[default]
    Always,
    /// Acknowledge once the write reaches the operating system, fsync in the background every
    /// `sync_interval`: an acknowledged record survives a crash of Vigil, not of the machine.
    Os,
}

/// Log retention: the oldest records go first, and never before every consumer has them.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delete records older than this (`7d`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
    /// Keep the log under this size on disk (`10GiB`).
    #[schemars(schema_with = "byte_size_schema")]
    pub max_bytes: ByteSize,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: ByteSize::gib(10),
            interval: Duration::from_secs(60),
        }
    }
}

/// The JSON Schema of a byte size in the config: a number of bytes, or a text such as
/// `"64 MiB"` or `"4kb"`.
pub fn byte_size_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A number of bytes, or a size such as \"64 MiB\"",
        "anyOf": [{ "type": "integer", "minimum": 0 }, { "type": "string" }]
    })
}

/// [`byte_size_schema`], optional.
pub fn byte_size_option_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let size = byte_size_schema(generator);
    schemars::json_schema!({ "anyOf": [size, { "type": "null" }] })
}

/// Storage settings (`[store]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory; relative paths are relative to the working directory.
    pub path: PathBuf,
    /// When an appended record is acknowledged.
    pub sync: SyncPolicy,
    /// Background fsync interval under `sync = "os"`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub sync_interval: Duration,
    /// Most records one group commit writes.
    pub max_batch_records: usize,
    /// Size of a memtable before it is flushed.
    #[schemars(schema_with = "byte_size_schema")]
    pub write_buffer: ByteSize,
    /// Retention of the log.
    pub retention: RetentionConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data"),
            sync: SyncPolicy::Always,
            sync_interval: Duration::from_millis(200),
            max_batch_records: 65_536,
            write_buffer: ByteSize::mib(64),
            retention: RetentionConfig::default(),
        }
    }
}

impl StoreConfig {
    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.path.as_os_str().is_empty() {
            errors.push(("store.path".into(), "must not be empty".into()));
        }
        if self.max_batch_records == 0 {
            errors.push(("store.max_batch_records".into(), "must be at least 1".into()));
        }
        if self.retention.interval.is_zero() {
            errors.push(("store.retention.interval".into(), "must be longer than 0s".into()));
        }
        if self.sync == SyncPolicy::Os && self.sync_interval.is_zero() {
            errors.push(("store.sync_interval".into(), "must be longer than 0s when sync = \"os\"".into()));
        }
        errors
    }
}

/// One write to apply atomically with others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Set a key.
    Put {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// Column family.
        cf: Cf,
        /// Key.
        key: Vec<u8>,
    },
}

/// The open database. Cheap to clone; closes when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    path: PathBuf,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.inner.path).field("read_only", &self.inner.read_only).finish()
    }
}

/// Up to `limit` entries under `prefix` from where `it` stands, stepping with `step`.
fn collect<'a>(
    mut it: rocksdb::DBRawIteratorWithThreadMode<'a, DB>,
    prefix: &[u8],
    limit: usize,
    step: fn(&mut rocksdb::DBRawIteratorWithThreadMode<'a, DB>),
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while it.valid() && out.len() < limit {
        let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_vec(), v.to_vec()));
        step(&mut it);
    }
    it.status().map_err(|source| Error::Rocks { op: "scan", source })?;
    Ok(out)
}

impl Store {
    /// Opens (or creates) the store for writing. Recovers from a crash by replaying the WAL.
    pub fn open(config: &StoreConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.path)
            .map_err(|source| Error::CreateDir { path: config.path.clone(), source })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(3);
        let descriptors = Self::descriptors(&config.path, config);
        let db = DB::open_cf_descriptors(&opts, &config.path, descriptors).map_err(|source| {
            if source.to_string().contains("lock") {
                Error::Locked { path: config.path.clone() }
            } else {
                Error::Rocks { op: "open", source }
            }
        })?;
        Ok(Self { inner: Arc::new(Inner { db, path: config.path.clone(), read_only: false }) })
    }

    /// Opens an existing store read-only, alongside a running server if there is one. Sees
    /// the data as of the moment it opens.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let opts = Options::default();
        let config = StoreConfig { path: path.to_owned(), ..StoreConfig::default() };
        let descriptors = Self::descriptors(path, &config);
        let db = DB::open_cf_descriptors_read_only(&opts, path, descriptors, false)
            .map_err(|source| Error::Rocks { op: "open read-only", source })?;
        Ok(Self { inner: Arc::new(Inner { db, path: path.to_owned(), read_only: true }) })
    }

    fn descriptors(path: &Path, config: &StoreConfig) -> Vec<ColumnFamilyDescriptor> {
        // Open every family already on disk too, so a store written by a newer build opens.
        let mut names: Vec<String> = Cf::ALL.iter().map(|cf| cf.name().to_owned()).collect();
        for existing in DB::list_cf(&Options::default(), path).unwrap_or_default() {
            if existing != "default" && !names.contains(&existing) {
                names.push(existing);
            }
        }
        names
            .into_iter()
            .map(|name| {
                let mut opts = Options::default();
                if name == Cf::Log.name() {
                    opts.set_write_buffer_size(config.write_buffer.as_u64() as usize);
                    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
                    opts.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
                }
                ColumnFamilyDescriptor::new(name, opts)
            })
            .collect()
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    pub(crate) fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every family in `Cf::ALL` is created when the store opens.
        self.inner.db.cf_handle(cf.name()).expect("column family exists: created at open")
    }

    /// Reads one value.
    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db().get_cf(self.cf(cf), key).map_err(|source| Error::Rocks { op: "get", source })
    }

    /// Applies `ops` atomically; with `sync`, the WAL is fsynced before returning.
    pub fn write(&self, ops: Vec<Op>, sync: bool) -> Result<()> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        let mut batch = WriteBatch::default();
        self.add_ops(&mut batch, ops);
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db().write_opt(batch, &wo).map_err(|source| Error::Rocks { op: "write", source })
    }

    fn add_ops(&self, batch: &mut WriteBatch, ops: Vec<Op>) {
        for op in ops {
            match op {
                Op::Put { cf, key, value } => batch.put_cf(self.cf(cf), key, value),
                Op::Delete { cf, key } => batch.delete_cf(self.cf(cf), key),
            }
        }
    }

    /// Forward scan of `cf` from `start` (inclusive) while keys begin with `prefix`.
    pub fn scan(&self, cf: Cf, prefix: &[u8], start: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db().raw_iterator_cf(self.cf(cf));
        it.seek(start);
        collect(it, prefix, limit, rocksdb::DBRawIteratorWithThreadMode::next)
    }

    /// Up to `limit` entries under `prefix` in descending key order, starting before `end`
    /// (exclusive) or at the last key.
    pub fn scan_rev(&self, cf: Cf, prefix: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db().raw_iterator_cf(self.cf(cf));
        match end {
            Some(end) => {
                it.seek_for_prev(end);
                if it.valid() && it.key() == Some(end) {
                    it.prev();
                }
            }
            None => {
                // The first key after the prefix range, then one step back.
                let mut upper = prefix.to_vec();
                while let Some(last) = upper.pop() {
                    if last < u8::MAX {
                        upper.push(last + 1);
                        break;
                    }
                }
                if upper.is_empty() {
                    it.seek_to_last();
                } else {
                    it.seek_for_prev(&upper);
                    if it.valid() && it.key() == Some(&upper[..]) {
                        it.prev();
                    }
                }
            }
        }
        collect(it, prefix, limit, rocksdb::DBRawIteratorWithThreadMode::prev)
    }

    /// fsyncs the write-ahead log.
    pub fn sync_wal(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        self.db().flush_wal(true).map_err(|source| Error::Rocks { op: "sync wal", source })
    }

    /// Flushes memtables to disk, so the next open replays no WAL (used at shutdown).
    pub fn flush(&self) -> Result<()> {
        if self.inner.read_only {
            return Ok(());
        }
        for cf in Cf::ALL {
            self.db().flush_cf(self.cf(cf)).map_err(|source| Error::Rocks { op: "flush", source })?;
        }
        Ok(())
    }
}

/// Hex of a key, for error messages.
pub(crate) fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A store in a fresh temporary directory (kept alive by the returned guard).
    pub fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig { path: dir.path().join("data"), ..StoreConfig::default() };
        let store = Store::open(&config).expect("open store");
        (dir, store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_atomic_and_readable() {
        let (_dir, store) = testing::temp_store();
        store
            .write(
                vec![
                    Op::Put { cf: Cf::State, key: b"a".to_vec(), value: b"1".to_vec() },
                    Op::Put { cf: Cf::State, key: b"b".to_vec(), value: b"2".to_vec() },
                ],
                true,
            )
            .expect("write");
        assert_eq!(store.get(Cf::State, b"a").expect("get"), Some(b"1".to_vec()));
        store.write(vec![Op::Delete { cf: Cf::State, key: b"a".to_vec() }], false).expect("delete");
        assert_eq!(store.get(Cf::State, b"a").expect("get"), None);
        let rows = store.scan(Cf::State, b"", b"", 10).expect("scan");
        assert_eq!(rows, vec![(b"b".to_vec(), b"2".to_vec())]);
    }

    #[test]
    fn a_second_writer_is_refused_but_readers_are_not() {
        let (dir, store) = testing::temp_store();
        store.write(vec![Op::Put { cf: Cf::Meta, key: b"k".to_vec(), value: b"v".to_vec() }], true).expect("write");
        let config = StoreConfig { path: dir.path().join("data"), ..StoreConfig::default() };
        match Store::open(&config) {
            Err(Error::Locked { .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        let reader = Store::open_read_only(&config.path).expect("read-only open");
        assert_eq!(reader.get(Cf::Meta, b"k").expect("get"), Some(b"v".to_vec()));
        assert!(matches!(reader.write(vec![], false), Err(Error::ReadOnly)));
    }

    #[test]
    fn config_validation_reports_every_problem() {
        let config = StoreConfig {
            path: PathBuf::new(),
            max_batch_records: 0,
            sync: SyncPolicy::Os,
            sync_interval: Duration::ZERO,
            ..StoreConfig::default()
        };
        let fields: Vec<String> = config.validate().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["store.path", "store.max_batch_records", "store.sync_interval"]);
    }
}

/// A consumer's durable position in the log, with state of its own (a file offset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Last sequence number processed.
    pub seq: u64,
    /// Consumer-specific state committed with the position.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub state: serde_json::Value,
}

/// The table of cursors, keyed by consumer name.
pub fn cursors(store: &Store) -> Table<String, Cursor> {
    Table::new(store, Cf::Cursors, b"log/")
}
