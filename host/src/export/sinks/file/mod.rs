//! The `file` sink: one line per record in a local file, delivered exactly once, with
//! size/time rotation and a bounded number of rotated files — for air-gapped sites.
//!
//! With `format = "json"` each line is `{"kind":"event|alert|incident","seq":N,"record":{...}}`;
//! other formats write their body as the line. After each batch the file is fsynced and
//! its length committed with the cursor (with the file's generation). On start, output past
//! the committed length (from a batch whose commit did not happen) is cut, and a rotation
//! the commit did not record is undone, so every record appears once, even across `kill -9`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::export::{Item, SendReport, Sink, SinkError};

/// Rotation (`rotate = { ... }`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RotateConfig {
    /// Rotate when the file reaches this size.
    #[schemars(schema_with = "crate::store::byte_size_option_schema")]
    pub max_bytes: Option<ByteSize>,
    /// Rotate when the file is this old.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Duration>,
    /// Rotated files kept (the oldest are deleted).
    pub keep: usize,
}

impl Default for RotateConfig {
    fn default() -> Self {
        Self { max_bytes: None, max_age: None, keep: 10 }
    }
}

/// Settings of a `file` sink.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The output file; created with its directory if missing. Rotated files are named
    /// `<path>.<generation>` (`out.jsonl.000001`).
    pub path: PathBuf,
    /// Rotation and retention.
    #[serde(default)]
    pub rotate: RotateConfig,
}

impl FileSinkConfig {
    /// Every problem with the settings, with its path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.path.as_os_str().is_empty() {
            errors.push((format!("{prefix}.path"), "must not be empty".into()));
        }
        if self.rotate.keep == 0 {
            errors.push((format!("{prefix}.rotate.keep"), "must be at least 1".into()));
        }
        errors
    }
}

#[derive(Debug)]
struct Output {
    file: tokio::fs::File,
    offset: u64,
    generation: u64,
    opened: SystemTime,
}

/// The file sink.
#[derive(Debug)]
pub struct FileSink {
    config: FileSinkConfig,
    envelope: bool,
    out: Mutex<Option<Output>>,
    state: std::sync::Mutex<State>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct State {
    offset: u64,
    #[serde(default)]
    generation: u64,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> SinkError {
    SinkError::retryable(format!("{what} {}: {e}", path.display()))
}

impl FileSink {
    /// A sink writing to `config.path`; `envelope` wraps each JSON body with its kind and
    /// sequence number.
    pub fn new(config: &FileSinkConfig, envelope: bool) -> Self {
        Self { config: config.clone(), envelope, out: Mutex::new(None), state: std::sync::Mutex::default() }
    }

    fn rotated(&self, generation: u64) -> PathBuf {
        let mut name = self.config.path.as_os_str().to_owned();
        name.push(format!(".{generation:06}"));
        PathBuf::from(name)
    }

    async fn open_active(&self) -> Result<tokio::fs::File, SinkError> {
        tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.config.path)
            .await
            .map_err(|e| io(&self.config.path, "cannot open", e))
    }

    /// Renames the active file to its generation and starts a new one; deletes rotated files
    /// beyond `keep`.
    async fn rotate(&self, out: &mut Output) -> Result<(), SinkError> {
        out.file.sync_all().await.map_err(|e| io(&self.config.path, "cannot sync", e))?;
        let rotated = self.rotated(out.generation);
        tokio::fs::rename(&self.config.path, &rotated).await.map_err(|e| io(&rotated, "cannot rotate to", e))?;
        out.generation += 1;
        out.offset = 0;
        out.opened = SystemTime::now();
        out.file = self.open_active().await?;
        tracing::info!(path = %rotated.display(), "Output file rotated.");
        let keep = self.config.rotate.keep as u64;
        if out.generation > keep {
            for old in (0..out.generation - keep).rev() {
                match tokio::fs::remove_file(self.rotated(old)).await {
                    Ok(()) => {
                        tracing::info!(path = %self.rotated(old).display(), "Old rotated output deleted (rotate.keep).")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => {
                        tracing::warn!(path = %self.rotated(old).display(), error = %e, "Cannot delete an old rotated output.")
                    }
                }
            }
        }
        Ok(())
    }

    fn needs_rotation(&self, out: &Output) -> bool {
        let r = &self.config.rotate;
        out.offset > 0
            && (r.max_bytes.is_some_and(|max| out.offset >= max.as_u64())
                || r.max_age.is_some_and(|max| out.opened.elapsed().unwrap_or_default() >= max))
    }
}

impl Sink for FileSink {
    async fn open(&mut self, state: &serde_json::Value) -> Result<(), SinkError> {
        let saved: State = serde_json::from_value(state.clone()).unwrap_or_default();
        let path = self.config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| io(dir, "cannot create", e))?;
        }
        // A rotation after the last commit: the committed generation's file was renamed away.
        let rotated = self.rotated(saved.generation);
        if tokio::fs::metadata(&rotated).await.is_ok() {
            tracing::info!(path = %rotated.display(), "Undoing a rotation made after the last commit.");
            tokio::fs::rename(&rotated, &path).await.map_err(|e| io(&rotated, "cannot restore", e))?;
        }
        let file = self.open_active().await?;
        let len = file.metadata().await.map_err(|e| io(&path, "cannot stat", e))?.len();
        let offset = if len > saved.offset {
            tracing::info!(path = %path.display(), bytes = len - saved.offset, "Removing output written after the last commit; it is delivered again.");
            file.set_len(saved.offset).await.map_err(|e| io(&path, "cannot truncate", e))?;
            file.sync_all().await.map_err(|e| io(&path, "cannot sync", e))?;
            saved.offset
        } else {
            if len < saved.offset {
                tracing::warn!(path = %path.display(), "Output file is shorter than committed (changed by someone else); appending to it.");
            }
            len
        };
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State { offset, generation: saved.generation };
        *self.out.get_mut() = Some(Output { file, offset, generation: saved.generation, opened: SystemTime::now() });
        Ok(())
    }

    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|i| i.body.len() + 48).sum());
        for item in batch {
            if self.envelope && item.json {
                buf.extend_from_slice(b"{\"kind\":\"");
                buf.extend_from_slice(item.kind.as_str().as_bytes());
                buf.extend_from_slice(b"\",\"seq\":");
                buf.extend_from_slice(item.seq.to_string().as_bytes());
                buf.extend_from_slice(b",\"record\":");
                buf.extend_from_slice(&item.body);
                buf.extend_from_slice(b"}\n");
            } else {
                buf.extend_from_slice(&item.body);
                buf.push(b'\n');
            }
        }
        let path = &self.config.path;
        let mut guard = self.out.lock().await;
        let out = guard.as_mut().ok_or_else(|| SinkError::retryable("file sink is not open"))?;
        if self.needs_rotation(out) {
            self.rotate(out).await?;
        }
        // A failed write may have left part of a batch: cut back before (re)writing.
        out.file.set_len(out.offset).await.map_err(|e| io(path, "cannot truncate", e))?;
        out.file.seek(std::io::SeekFrom::Start(out.offset)).await.map_err(|e| io(path, "cannot seek", e))?;
        out.file.write_all(&buf).await.map_err(|e| io(path, "cannot write", e))?;
        out.file.flush().await.map_err(|e| io(path, "cannot flush", e))?;
        out.file.sync_data().await.map_err(|e| io(path, "cannot sync", e))?;
        out.offset += buf.len() as u64;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) =
            State { offset: out.offset, generation: out.generation };
        Ok(SendReport::default())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::to_value(*self.state.lock().unwrap_or_else(|p| p.into_inner())).unwrap_or_default()
    }

    fn max_concurrency(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RecordKind;

    fn item(seq: u64) -> Item {
        Item {
            seq,
            kind: RecordKind::Event,
            id: format!("id{seq}"),
            time: chrono::Utc::now(),
            host: None,
            severity: 3,
            body: format!("{{\"n\":{seq}}}").into_bytes(),
            json: true,
        }
    }

    #[tokio::test]
    async fn writes_envelopes_and_truncates_uncommitted_output_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = FileSinkConfig { path: dir.path().join("out/events.jsonl"), rotate: RotateConfig::default() };
        let mut sink = FileSink::new(&config, true);
        sink.open(&serde_json::Value::Null).await.expect("open");
        sink.send(&[item(1), item(2)]).await.expect("send");
        let committed = sink.state();
        sink.send(&[item(3)]).await.expect("send"); // written, never committed
        drop(sink);
        let mut reopened = FileSink::new(&config, true);
        reopened.open(&committed).await.expect("reopen");
        reopened.send(&[item(3)]).await.expect("send again");
        let text = std::fs::read_to_string(&config.path).expect("read");
        assert_eq!(
            text,
            "{\"kind\":\"event\",\"seq\":1,\"record\":{\"n\":1}}\n{\"kind\":\"event\",\"seq\":2,\"record\":{\"n\":2}}\n{\"kind\":\"event\",\"seq\":3,\"record\":{\"n\":3}}\n"
        );
    }

    #[tokio::test]
    async fn rotates_by_size_keeps_n_and_undoes_an_uncommitted_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rotate = RotateConfig { max_bytes: Some(ByteSize::b(30)), max_age: None, keep: 2 };
        let config = FileSinkConfig { path: dir.path().join("e.jsonl"), rotate };
        let mut sink = FileSink::new(&config, false);
        sink.open(&serde_json::Value::Null).await.expect("open");
        let mut committed = sink.state();
        for seq in 1..=5 {
            committed = sink.state();
            sink.send(&[item(seq), item(seq + 100)]).await.expect("send");
        }
        // Batches of 18 bytes: a file passes 30 bytes every second batch and is rotated
        // before the next: generations 0 and 1 are rotated, 2 is active.
        let names: Vec<String> = {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names, ["e.jsonl", "e.jsonl.000000", "e.jsonl.000001"]);
        // The last send rotated and wrote, but its commit never happened: reopening with the
        // previous state brings generation 1 back as the active file, at its committed length.
        drop(sink);
        let mut reopened = FileSink::new(&config, false);
        reopened.open(&committed).await.expect("reopen");
        assert_eq!(
            std::fs::read_to_string(&config.path).expect("read"),
            "{\"n\":3}\n{\"n\":103}\n{\"n\":4}\n{\"n\":104}\n"
        );
        // More rotations delete the oldest beyond `keep`.
        for seq in 6..=9 {
            reopened.send(&[item(seq), item(seq + 100)]).await.expect("send");
        }
        assert!(!dir.path().join("e.jsonl.000000").exists(), "only the newest two rotated files are kept");
        assert!(dir.path().join("e.jsonl.000002").exists());
    }
}
