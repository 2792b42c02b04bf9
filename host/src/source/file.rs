//! Tails files of line-shaped records in any input format (Vigil JSON, syslog, auditd,
//! Zeek TSV or JSON, ECS…).
//!
//! The read offset of each file is committed in the same atomic write as the events read
//! up to it, so a restart resumes exactly where the last durable append ended: no line is
//! lost or stored twice. Rotation by rename is followed (the old file is read to its end,
//! then the new one from its start); truncation in place (`copytruncate`) restarts at 0. A
//! file is recognised across restarts by its inode and its first bytes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::decode::{Decoded, Format, StreamDecoder};
use super::{Ingestor, reject_reason};
use crate::event::SecurityEvent;
use crate::store::{Cf, Store, Table};
use crate::telemetry::Throttle;

const HEAD_BYTES: usize = 64;
const CHUNK: usize = 1 << 20;

/// Where to start a file seen for the first time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Read it from its first line.
    #[default]
    Beginning,
    /// Only read lines written from now on.
    End,
}

/// One tailed file (`[[sources.file]]`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Path of the file.
    pub path: PathBuf,
    /// Input format of the lines (`vigil`, `syslog`, `auditd`, `zeek`, `ecs`, `auto`…; any
    /// format whose records are lines). `json` is read as `vigil`.
    #[serde(default)]
    pub format: Format,
    /// Where to start a file with no saved offset.
    #[serde(default)]
    pub start_at: StartAt,
    /// How often to look for new lines.
    #[serde(default = "default_poll", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub poll_interval: Duration,
    /// Keep each line in its event's `raw` field.
    #[serde(default)]
    pub keep_raw: bool,
}

fn default_poll() -> Duration {
    Duration::from_millis(250)
}

/// The saved position in a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffset {
    /// Inode of the file the offset belongs to.
    pub inode: u64,
    /// The file's first bytes (up to 64), hex, to tell a reused inode from the same file.
    pub head: String,
    /// Bytes read and stored.
    pub offset: u64,
}

/// Feeds the `#` header lines at the start of a file to its decoder.
fn prime_header(file: &mut File, decoder: &mut StreamDecoder) -> std::io::Result<()> {
    use std::io::BufRead;
    file.seek(SeekFrom::Start(0))?;
    let mut reader = std::io::BufReader::new(&mut *file);
    let mut line = Vec::new();
    let mut out = Decoded::default();
    while reader.read_until(b'\n', &mut line)? > 0 && line.starts_with(b"#") {
        decoder.record(0, line.strip_suffix(b"\n").unwrap_or(&line), chrono::Utc::now(), &mut out);
        line.clear();
    }
    Ok(())
}

fn offsets(store: &Store) -> Table<String, FileOffset> {
    Table::new(store, Cf::Cursors, b"file/")
}

/// A file being tailed.
#[derive(Debug)]
pub struct FileSource {
    config: FileSourceConfig,
    ingestor: Ingestor,
    offsets: Table<String, FileOffset>,
    key: String,
    throttle: Throttle,
    name: String,
}

/// The file being read and the position in it (opaque; pass it back to `poll`).
#[derive(Debug)]
pub struct Open {
    file: File,
    inode: u64,
    offset: u64,
    head: Vec<u8>,
    /// The file's decoder: formats with a header (Zeek TSV) keep it across reads.
    decoder: StreamDecoder,
}

impl FileSource {
    /// A tail of `config.path`, resuming from the offset saved in `store`.
    pub fn new(config: FileSourceConfig, ingestor: Ingestor, store: &Store) -> Self {
        let key = config.path.to_string_lossy().into_owned();
        Self {
            name: "file".into(),
            offsets: offsets(store),
            key,
            config,
            ingestor,
            throttle: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Tails the file on the calling thread until `shutdown` (run it on a blocking thread).
    pub fn run_blocking(self, shutdown: CancellationToken) {
        let mut current: Option<Open> = None;
        while !shutdown.is_cancelled() {
            if let Err(e) = self.poll(&mut current)
                && self.throttle.allow().is_some()
            {
                tracing::warn!(path = %self.config.path.display(), error = %e, "File tail failed; retrying.");
            }
            std::thread::sleep(self.config.poll_interval);
        }
    }

    /// One pass: follow rotation, read new complete lines, store them with the new offset.
    /// Returns how many lines were stored.
    pub fn poll(&self, current: &mut Option<Open>) -> std::io::Result<usize> {
        let path = &self.config.path;
        let meta = match std::fs::metadata(path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut stored = 0;
        match (current.as_mut(), &meta) {
            (Some(open), Some(meta)) if meta.ino() != open.inode => {
                // Rotated by rename: finish the old file, then start the new one.
                stored += self.read_available(open)?;
                *current = None;
            }
            (Some(open), Some(meta)) if meta.len() < open.offset || !starts_with(&open.file, &open.head)? => {
                tracing::info!(path = %path.display(), "File was truncated or rewritten in place; reading it from the start.");
                open.offset = 0;
                open.head.clear();
            }
            _ => {}
        }
        if current.is_none() {
            if meta.is_none() {
                return Ok(stored);
            }
            *current = Some(self.open(path)?);
        }
        if let Some(open) = current.as_mut() {
            stored += self.read_available(open)?;
        }
        Ok(stored)
    }

    fn open(&self, path: &Path) -> std::io::Result<Open> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let mut head = vec![0u8; HEAD_BYTES.min(meta.len() as usize)];
        file.read_exact(&mut head)?;
        let saved = self.offsets.get(&self.key).map_err(std::io::Error::other)?;
        let offset = match saved {
            Some(s) if s.inode == meta.ino() && hex(&head).starts_with(&s.head) && s.offset <= meta.len() => s.offset,
            Some(_) => 0,
            None if self.config.start_at == StartAt::End => meta.len(),
            None => 0,
        };
        let mut decoder =
            self.ingestor.stream_decoder(&self.config.format, self.config.keep_raw).map_err(std::io::Error::other)?;
        if offset > 0 && self.config.format == Format::Zeek {
            // Resuming mid-file: the rows need the `#fields` header of its first lines.
            prime_header(&mut file, &mut decoder)?;
        }
        Ok(Open { file, inode: meta.ino(), offset, head, decoder })
    }

    fn read_available(&self, open: &mut Open) -> std::io::Result<usize> {
        let max_line = self.ingestor.limits().max_event_bytes;
        let mut stored = 0;
        loop {
            open.file.seek(SeekFrom::Start(open.offset))?;
            let mut chunk = Vec::with_capacity(CHUNK);
            (&mut open.file).take(CHUNK as u64).read_to_end(&mut chunk)?;
            if open.head.len() < HEAD_BYTES && open.offset == 0 {
                open.head = chunk[..chunk.len().min(HEAD_BYTES)].to_vec();
            }
            let Some(last_newline) = chunk.iter().rposition(|&b| b == b'\n') else {
                if chunk.len() > max_line {
                    // A line longer than any record may be: skip what we have of it.
                    self.reject("too_large", open.offset);
                    open.offset += chunk.len() as u64;
                    self.commit(open, &[])?;
                    continue;
                }
                return Ok(stored);
            };
            let complete = &chunk[..=last_newline];
            let mut out = Decoded::default();
            let mut line_start = open.offset;
            let now = chrono::Utc::now();
            for line in complete.split(|&b| b == b'\n') {
                let offset = line_start;
                line_start += line.len() as u64 + 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    // Refusals name the line by its byte offset in the file.
                    open.decoder.record(offset as usize, line, now, &mut out);
                }
            }
            open.decoder.finish(now, &mut out);
            for rejection in &out.rejected {
                self.reject(reject_reason(&rejection.error), rejection.line as u64);
                tracing::debug!(path = %self.config.path.display(), offset = rejection.line, error = %rejection.error, "Line rejected.");
            }
            open.offset += complete.len() as u64;
            stored += out.events.len();
            self.commit(open, &out.events)?;
            if chunk.len() < CHUNK {
                return Ok(stored);
            }
        }
    }

    fn reject(&self, reason: &'static str, offset: u64) {
        self.ingestor.count_rejected(&self.name, self.config.format.name(), reason);
        if let Some(suppressed) = self.throttle.allow() {
            tracing::warn!(path = %self.config.path.display(), offset, reason, suppressed, "Line of tailed file rejected.");
        }
    }

    fn commit(&self, open: &Open, events: &[SecurityEvent]) -> std::io::Result<()> {
        let saved = FileOffset { inode: open.inode, head: hex(&open.head), offset: open.offset };
        let op = self.offsets.put_op(&self.key, &saved).map_err(std::io::Error::other)?;
        self.ingestor.append_blocking(&self.name, events, vec![op]).map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// Whether the file still begins with `head` (the bytes it began with when first read).
fn starts_with(mut file: &File, head: &[u8]) -> std::io::Result<bool> {
    if head.is_empty() {
        return Ok(true);
    }
    let mut now = vec![0u8; head.len()];
    file.seek(SeekFrom::Start(0))?;
    let n = file.read(&mut now)?;
    Ok(n == head.len() && now == head)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::IngestConfig;
    use crate::store::{Log, StoreConfig};
    use crate::telemetry::MetricsRegistry;
    use std::io::Write;

    struct Fixture {
        _dir: tempfile::TempDir,
        file: PathBuf,
        store: Store,
        log: Log,
        ingestor: Ingestor,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig { path: dir.path().join("data"), ..StoreConfig::default() };
        let store = Store::open(&config).expect("store");
        let (log, writer, _) = Log::start(&store, &config).expect("log");
        let ingestor = Ingestor::new(writer, IngestConfig::default(), &MetricsRegistry::default());
        Fixture { file: dir.path().join("events.log"), _dir: dir, store, log, ingestor }
    }

    impl Fixture {
        fn source(&self) -> FileSource {
            let config = FileSourceConfig {
                path: self.file.clone(),
                format: Format::Vigil,
                start_at: StartAt::Beginning,
                poll_interval: Duration::from_millis(10),
                keep_raw: false,
            };
            FileSource::new(config, self.ingestor.clone(), &self.store)
        }

        fn append(&self, text: &str) {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.file).expect("open");
            f.write_all(text.as_bytes()).expect("write");
        }

        fn messages(&self) -> Vec<String> {
            self.log
                .read(1, 1000, usize::MAX)
                .expect("read")
                .into_iter()
                .map(|e| {
                    serde_json::from_slice::<SecurityEvent>(&e.payload).expect("event").message.unwrap_or_default()
                })
                .collect()
        }
    }

    fn line(msg: &str) -> String {
        format!("{{\"class\":\"other\",\"message\":\"{msg}\"}}\n")
    }

    #[test]
    fn resumes_after_restart_without_loss_or_duplicates() {
        let fx = fixture();
        fx.append(&line("a"));
        fx.append(&line("b"));
        fx.append("{\"class\":\"other\",\"mess"); // partial line: waits for its newline
        let mut cur = None;
        assert_eq!(fx.source().poll(&mut cur).expect("poll"), 2);
        drop(cur);
        // A new source instance (a restart) continues from the saved offset.
        fx.append("age\":\"c\"}\n");
        let mut cur = None;
        assert_eq!(fx.source().poll(&mut cur).expect("poll"), 1);
        assert_eq!(fx.messages(), ["a", "b", "c"]);
    }

    #[test]
    fn follows_rename_rotation_and_truncation() {
        let fx = fixture();
        let src = fx.source();
        let mut cur = None;
        fx.append(&line("1"));
        src.poll(&mut cur).expect("poll");
        fx.append(&line("2")); // written before rotation, not yet read
        std::fs::rename(&fx.file, fx.file.with_extension("1")).expect("rotate");
        fx.append(&line("3"));
        src.poll(&mut cur).expect("poll");
        assert_eq!(fx.messages(), ["1", "2", "3"]);
        // copytruncate: the file shrinks in place.
        std::fs::write(&fx.file, line("4")).expect("truncate");
        src.poll(&mut cur).expect("poll");
        assert_eq!(fx.messages(), ["1", "2", "3", "4"]);
    }

    #[test]
    fn bad_lines_are_skipped_and_counted() {
        let fx = fixture();
        fx.append(&format!("{}not json\n{}", line("ok1"), line("ok2")));
        let mut cur = None;
        assert_eq!(fx.source().poll(&mut cur).expect("poll"), 2);
        assert_eq!(fx.messages(), ["ok1", "ok2"]);
    }

    #[test]
    fn start_at_end_skips_existing_lines() {
        let fx = fixture();
        fx.append(&line("old"));
        let mut config = fx.source().config;
        config.start_at = StartAt::End;
        let src = FileSource::new(config, fx.ingestor.clone(), &fx.store);
        let mut cur = None;
        assert_eq!(src.poll(&mut cur).expect("poll"), 0);
        fx.append(&line("new"));
        src.poll(&mut cur).expect("poll");
        assert_eq!(fx.messages(), ["new"]);
    }
}
