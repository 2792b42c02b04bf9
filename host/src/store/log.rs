//! The record log: an append-only, sequence-numbered column family.
//!
//! Key: the sequence number, 8 bytes big-endian, so keys sort in append order. Value: a kind
//! tag byte, the append time in milliseconds (8 bytes big-endian; never decreasing along the
//! log, so time ranges map to sequence ranges), then the payload.
//!
//! All appends go through one thread ([`LogWriter`]) that owns the sequence counter and
//! does group commit: it drains every request waiting in its channel into one RocksDB write
//! batch, fsyncs once (under [`SyncPolicy::Always`]), then acknowledges them all. Extra ops
//! in a request (a cursor, an offset, detection state) commit in the same batch, which is
//! how consumers get exactly-once effects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rocksdb::{WriteBatch, WriteOptions};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Cf, Error, Op, Result, RetentionConfig, Store, StoreConfig, SyncPolicy};

const HEADER: usize = 9;

/// A record to append: its stored value with the header reserved in front, so the writer
/// fills in the append time without copying the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRecord {
    value: Vec<u8>,
}

impl NewRecord {
    /// A record of `kind` whose payload `write` appends to the buffer it is given.
    pub fn encode(kind: u8, capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Self {
        let mut value = Vec::with_capacity(HEADER + capacity);
        value.push(kind);
        value.extend_from_slice(&[0; HEADER - 1]);
        write(&mut value);
        Self { value }
    }

    /// A record of `kind` with a copy of `payload`.
    pub fn new(kind: u8, payload: &[u8]) -> Self {
        Self::encode(kind, payload.len(), |buf| buf.extend_from_slice(payload))
    }

    /// Kind tag (see `event::RecordKind`).
    pub fn kind(&self) -> u8 {
        self.value[0]
    }

    /// The encoded record.
    pub fn payload(&self) -> &[u8] {
        &self.value[HEADER..]
    }
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Sequence number (the first record is 1).
    pub seq: u64,
    /// Kind tag.
    pub kind: u8,
    /// Append time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Encoded record.
    pub payload: Vec<u8>,
}

/// Where an append landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Sequence number of the first record appended (the next one, when none were).
    pub first_seq: u64,
    /// How many records were appended.
    pub count: u64,
}

/// The progress of one consumer of the log, shared with retention.
#[derive(Clone, Debug)]
pub struct ConsumerHandle {
    name: Arc<str>,
    committed: Arc<AtomicU64>,
}

impl ConsumerHandle {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records that the consumer has durably processed everything up to `seq`.
    pub fn set_committed(&self, seq: u64) {
        self.committed.store(seq, Ordering::Release);
    }

    /// The last sequence number the consumer has durably processed.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }
}

/// What a retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Records deleted.
    pub deleted: u64,
    /// Whether the age or size limit called for deleting records some consumer still needs.
    pub held_by_consumer: bool,
}

/// Read access to the log and its head; cheap to clone.
#[derive(Clone, Debug)]
pub struct Log {
    store: Store,
    head: watch::Receiver<u64>,
    consumers: Arc<Mutex<Vec<ConsumerHandle>>>,
}

/// Append access to the log; cheap to clone. Dropping every clone stops the writer thread.
#[derive(Clone, Debug)]
pub struct LogWriter {
    tx: mpsc::Sender<Request>,
}

#[derive(Debug)]
struct Request {
    records: Vec<NewRecord>,
    ops: Vec<Op>,
    done: oneshot::Sender<Result<AppendReceipt>>,
}

impl Log {
    /// Opens the log of `store` and starts its writer thread.
    pub fn start(store: &Store, config: &StoreConfig) -> Result<(Log, LogWriter, std::thread::JoinHandle<()>)> {
        let (last_seq, last_time) = last_entry(store)?;
        let (head_tx, head_rx) = watch::channel(last_seq);
        // Sized so a burst of requests waits in the channel while one group commits.
        let (tx, rx) = mpsc::channel(1024);
        let writer = Writer {
            store: store.clone(),
            rx,
            head: head_tx,
            next_seq: last_seq + 1,
            last_time_ms: last_time,
            sync: config.sync,
            max_batch: config.max_batch_records,
        };
        let handle =
            std::thread::Builder::new().name("vigil-log-writer".into()).spawn(move || writer.run()).map_err(|e| {
                Error::Corrupt { cf: "log", key: String::new(), reason: format!("cannot spawn writer: {e}") }
            })?;
        if config.sync == SyncPolicy::Os {
            spawn_wal_syncer(store.clone(), config.sync_interval, tx.clone());
        }
        let log = Log { store: store.clone(), head: head_rx, consumers: Arc::default() };
        Ok((log, LogWriter { tx }, handle))
    }

    /// A read-only view of the log of a store opened without a writer (CLI reads).
    pub fn read_only(store: &Store) -> Result<Log> {
        let (last_seq, _) = last_entry(store)?;
        let (_tx, head) = watch::channel(last_seq);
        Ok(Log { store: store.clone(), head, consumers: Arc::default() })
    }

    /// The store this log lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sequence number of the last appended record (0 when the log is empty).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever records are appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// The first sequence number still in the log (head + 1 when it is empty).
    pub fn tail(&self) -> Result<u64> {
        let mut it = self.store.db().raw_iterator_cf(self.store.cf(Cf::Log));
        it.seek_to_first();
        match it.key() {
            Some(k) => Ok(decode_seq(k)),
            None => {
                it.status().map_err(|source| Error::Rocks { op: "log tail", source })?;
                Ok(self.head() + 1)
            }
        }
    }

    /// Reads up to `max_records` records (and about `max_bytes`) starting at `from`.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<LogEntry>> {
        let mut it = self.store.db().raw_iterator_cf(self.store.cf(Cf::Log));
        it.seek(from.to_be_bytes());
        let mut out = Vec::new();
        let mut bytes = 0;
        while it.valid() && out.len() < max_records && bytes < max_bytes {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            let entry = decode_entry(k, v)?;
            bytes += entry.payload.len();
            out.push(entry);
            it.next();
        }
        it.status().map_err(|source| Error::Rocks { op: "log read", source })?;
        Ok(out)
    }

    /// Registers a consumer whose progress retention must respect.
    pub fn register_consumer(&self, name: &str, committed: u64) -> ConsumerHandle {
        let handle = ConsumerHandle { name: name.into(), committed: Arc::new(AtomicU64::new(committed)) };
        self.consumers.lock().unwrap_or_else(|p| p.into_inner()).push(handle.clone());
        handle
    }

    /// Every registered consumer.
    pub fn consumers(&self) -> Vec<ConsumerHandle> {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Approximate bytes the log occupies (SST files plus memtables).
    pub fn size_bytes(&self) -> u64 {
        let cf = self.store.cf(Cf::Log);
        let prop = |name| self.store.db().property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
        prop("rocksdb.total-sst-files-size") + prop("rocksdb.cur-size-all-mem-tables")
    }

    /// Approximate bytes of the records after `seq`: the log's size shared out evenly.
    pub fn bytes_after(&self, seq: u64) -> u64 {
        let head = self.head();
        let Ok(tail) = self.tail() else { return 0 };
        let total = (head + 1).saturating_sub(tail);
        let after = head.saturating_sub(seq.max(tail.saturating_sub(1)));
        if total == 0 {
            return 0;
        }
        (self.size_bytes() as u128 * u128::from(after) / u128::from(total)) as u64
    }

    /// The first sequence number at or after `time_ms` (head + 1 when none is), by binary
    /// search over the append times.
    pub fn seq_at_time(&self, time_ms: i64) -> Result<u64> {
        let (mut lo, mut hi) = (self.tail()?, self.head() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.read(mid, 1, usize::MAX)?.first() {
                Some(e) if e.time_ms < time_ms => lo = e.seq + 1,
                Some(_) | None => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Deletes the oldest records past the age and size limits, but never one a registered
    /// consumer has not committed.
    pub fn apply_retention(&self, policy: &RetentionConfig) -> Result<RetentionReport> {
        let tail = self.tail()?;
        let head = self.head();
        if tail > head {
            return Ok(RetentionReport::default());
        }
        let cutoff_ms = Utc::now().timestamp_millis() - i64::try_from(policy.max_age.as_millis()).unwrap_or(i64::MAX);
        // Records at or before the cutoff have reached the maximum age.
        let mut wanted = self.seq_at_time(cutoff_ms.saturating_add(1))?;
        let size = self.size_bytes();
        let max = policy.max_bytes.as_u64();
        if size > max && size > 0 {
            // Records are of similar size on average: drop the matching share, plus 5%.
            let count = head + 1 - tail;
            let excess = (count as f64 * ((size - max) as f64 / size as f64 + 0.05)).ceil() as u64;
            wanted = wanted.max(tail + excess.min(count));
        }
        let allowed = self.consumers().iter().map(|c| c.committed() + 1).min().unwrap_or(head + 1);
        let cut = wanted.min(allowed);
        let report = RetentionReport { deleted: cut.saturating_sub(tail), held_by_consumer: allowed < wanted };
        if cut > tail {
            let db = self.store.db();
            let cf = self.store.cf(Cf::Log);
            db.delete_range_cf(cf, tail.to_be_bytes(), cut.to_be_bytes())
                .map_err(|source| Error::Rocks { op: "retention delete", source })?;
            db.compact_range_cf(cf, None::<&[u8]>, Some(cut.to_be_bytes()));
        }
        Ok(report)
    }
}

impl LogWriter {
    /// Appends `records` and applies `ops` in one atomic write; resolves once durable under
    /// the configured sync policy.
    pub async fn append(&self, records: Vec<NewRecord>, ops: Vec<Op>) -> Result<AppendReceipt> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Request { records, ops, done }).await.map_err(|_| Error::WriterStopped)?;
        rx.await.map_err(|_| Error::WriterStopped)?
    }

    /// [`append`](Self::append) for threads outside the async runtime.
    pub fn append_blocking(&self, records: Vec<NewRecord>, ops: Vec<Op>) -> Result<AppendReceipt> {
        let (done, rx) = oneshot::channel();
        self.tx.blocking_send(Request { records, ops, done }).map_err(|_| Error::WriterStopped)?;
        rx.blocking_recv().map_err(|_| Error::WriterStopped)?
    }
}

struct Writer {
    store: Store,
    rx: mpsc::Receiver<Request>,
    head: watch::Sender<u64>,
    next_seq: u64,
    last_time_ms: i64,
    sync: SyncPolicy,
    max_batch: usize,
}

impl Writer {
    fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut group = vec![first];
            let mut records = group[0].records.len();
            while records < self.max_batch {
                match self.rx.try_recv() {
                    Ok(req) => {
                        records += req.records.len();
                        group.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    fn commit(&mut self, mut group: Vec<Request>) {
        // Append times never decrease, even if the wall clock steps back.
        let now_ms = Utc::now().timestamp_millis().max(self.last_time_ms);
        let mut batch = WriteBatch::default();
        let log_cf = self.store.cf(Cf::Log);
        let mut seq = self.next_seq;
        let mut receipts = Vec::with_capacity(group.len());
        for req in &mut group {
            receipts.push(AppendReceipt { first_seq: seq, count: req.records.len() as u64 });
            for record in &mut req.records {
                record.value[1..HEADER].copy_from_slice(&now_ms.to_be_bytes());
                batch.put_cf(log_cf, seq.to_be_bytes(), &record.value);
                seq += 1;
            }
        }
        let mut dones = Vec::with_capacity(group.len());
        for req in group {
            self.store.add_ops(&mut batch, req.ops);
            dones.push(req.done);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync == SyncPolicy::Always);
        match self.store.db().write_opt(batch, &wo) {
            Ok(()) => {
                self.next_seq = seq;
                self.last_time_ms = now_ms;
                self.head.send_replace(seq - 1);
                for (done, receipt) in dones.into_iter().zip(receipts) {
                    let _ = done.send(Ok(receipt));
                }
            }
            Err(source) => {
                tracing::error!(error = %source, records = seq - self.next_seq, "Log write failed; the appends were refused.");
                for done in dones {
                    let _ = done.send(Err(Error::Rocks { op: "log append", source: source.clone() }));
                }
            }
        }
    }
}

/// Under `sync = "os"`, fsyncs the WAL periodically until the writer goes away.
fn spawn_wal_syncer(store: Store, interval: Duration, writer: mpsc::Sender<Request>) {
    let weak = writer.downgrade();
    drop(writer);
    let _ = std::thread::Builder::new().name("vigil-wal-sync".into()).spawn(move || {
        while weak.upgrade().is_some() {
            std::thread::sleep(interval);
            if let Err(e) = store.sync_wal() {
                tracing::error!(error = %e, "Background WAL sync failed.");
            }
        }
    });
}

fn last_entry(store: &Store) -> Result<(u64, i64)> {
    let mut it = store.db().raw_iterator_cf(store.cf(Cf::Log));
    it.seek_to_last();
    match (it.key(), it.value()) {
        (Some(k), Some(v)) => Ok((decode_seq(k), decode_entry(k, v)?.time_ms)),
        _ => {
            it.status().map_err(|source| Error::Rocks { op: "log open", source })?;
            Ok((0, i64::MIN))
        }
    }
}

fn decode_seq(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = key.len().min(8);
    buf[8 - n..].copy_from_slice(&key[..n]);
    u64::from_be_bytes(buf)
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<LogEntry> {
    if key.len() != 8 || value.len() < HEADER {
        return Err(Error::Corrupt { cf: "log", key: super::hex(key), reason: "short record".into() });
    }
    let mut time = [0u8; 8];
    time.copy_from_slice(&value[1..HEADER]);
    Ok(LogEntry {
        seq: decode_seq(key),
        kind: value[0],
        time_ms: i64::from_be_bytes(time),
        payload: value[HEADER..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::temp_store;

    fn rec(n: u8) -> NewRecord {
        NewRecord::new(1, &[n; 3])
    }

    fn start(store: &Store) -> (Log, LogWriter, std::thread::JoinHandle<()>) {
        Log::start(store, &StoreConfig::default()).expect("start log")
    }

    #[test]
    fn appends_get_consecutive_sequence_numbers() {
        let (_dir, store) = temp_store();
        let (log, writer, _) = start(&store);
        let a = writer.append_blocking(vec![rec(1), rec(2)], vec![]).expect("append");
        let b = writer.append_blocking(vec![rec(3)], vec![]).expect("append");
        assert_eq!(a, AppendReceipt { first_seq: 1, count: 2 });
        assert_eq!(b, AppendReceipt { first_seq: 3, count: 1 });
        assert_eq!(log.head(), 3);
        let entries = log.read(2, 10, usize::MAX).expect("read");
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(entries[0].payload, vec![2; 3]);
        assert!(entries[0].time_ms <= entries[1].time_ms);
    }

    #[test]
    fn extra_ops_commit_with_the_records() {
        let (_dir, store) = temp_store();
        let (_log, writer, _) = start(&store);
        let op = Op::Put { cf: Cf::Cursors, key: b"c".to_vec(), value: b"7".to_vec() };
        writer.append_blocking(vec![rec(1)], vec![op]).expect("append");
        assert_eq!(store.get(Cf::Cursors, b"c").expect("get"), Some(b"7".to_vec()));
    }

    #[test]
    fn sequence_continues_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig { path: dir.path().to_owned(), ..StoreConfig::default() };
        {
            let store = Store::open(&config).expect("open");
            let (_log, writer, thread) = Log::start(&store, &config).expect("start");
            writer.append_blocking(vec![rec(1), rec(2)], vec![]).expect("append");
            drop(writer);
            thread.join().expect("writer exits when its handles are gone");
        }
        let store = Store::open(&config).expect("reopen");
        let (log, writer, _) = Log::start(&store, &config).expect("start");
        assert_eq!(log.head(), 2);
        assert_eq!(writer.append_blocking(vec![rec(3)], vec![]).expect("append").first_seq, 3);
    }

    #[test]
    fn concurrent_appends_are_all_acknowledged_in_order() {
        let (_dir, store) = temp_store();
        let (log, writer, _) = start(&store);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = writer.clone();
                std::thread::spawn(move || (0..50).filter(|i| w.append_blocking(vec![rec(*i)], vec![]).is_ok()).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().expect("join")).sum();
        assert_eq!(total, 200);
        assert_eq!(log.head(), 200);
        let seqs: Vec<u64> = log.read(1, 1000, usize::MAX).expect("read").iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    }

    #[test]
    fn retention_respects_consumers_and_age() {
        let (_dir, store) = temp_store();
        let (log, writer, _) = start(&store);
        writer.append_blocking((0..10).map(rec).collect(), vec![]).expect("append");
        let consumer = log.register_consumer("sink", 4);
        let all = RetentionConfig { max_age: Duration::ZERO, ..RetentionConfig::default() };
        let report = log.apply_retention(&all).expect("retention");
        assert_eq!(report, RetentionReport { deleted: 4, held_by_consumer: true });
        assert_eq!(log.tail().expect("tail"), 5);
        consumer.set_committed(10);
        let report = log.apply_retention(&all).expect("retention");
        assert_eq!(report, RetentionReport { deleted: 6, held_by_consumer: false });
        assert_eq!(log.tail().expect("tail"), 11);
        // Nothing old enough: nothing deleted.
        writer.append_blocking(vec![rec(1)], vec![]).expect("append");
        consumer.set_committed(11);
        assert_eq!(log.apply_retention(&RetentionConfig::default()).expect("retention").deleted, 0);
    }

    #[test]
    fn seq_at_time_finds_the_first_record_at_or_after() {
        let (_dir, store) = temp_store();
        let (log, writer, _) = start(&store);
        writer.append_blocking(vec![rec(1)], vec![]).expect("append");
        let t1 = log.read(1, 1, usize::MAX).expect("read")[0].time_ms;
        std::thread::sleep(Duration::from_millis(5));
        writer.append_blocking(vec![rec(2)], vec![]).expect("append");
        assert_eq!(log.seq_at_time(t1).expect("search"), 1);
        assert_eq!(log.seq_at_time(t1 + 1).expect("search"), 2);
        assert_eq!(log.seq_at_time(i64::MAX).expect("search"), 3);
    }
}
