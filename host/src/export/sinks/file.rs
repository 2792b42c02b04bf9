//! The `file` sink: JSON lines in a local file, delivered exactly once.
//!
//! Each line is `{"kind":"event|alert|incident","seq":N,"record":{...}}`. After each batch
//! the file is fsynced and its length committed with the cursor; on start, anything past
//! the committed length (written by a batch whose commit did not happen) is truncated, and
//! that batch is written again. So every record appears once, even across `kill -9`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::export::{ExportRecord, SendReport, Sink, SinkError};

/// Settings of a `file` sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The output file; created with its directory if missing.
    pub path: PathBuf,
}

impl FileSinkConfig {
    /// Every problem with the settings, with its path under `sinks.NAME`.
    pub fn validate(&self, name: &str) -> Vec<(String, String)> {
        if self.path.as_os_str().is_empty() {
            return vec![(format!("sinks.{name}.path"), "must not be empty".into())];
        }
        Vec::new()
    }
}

/// The file sink.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    offset: u64,
}

impl FileSink {
    /// A sink writing to `config.path`.
    pub fn new(config: &FileSinkConfig) -> Self {
        Self { path: config.path.clone(), file: None, offset: 0 }
    }

    fn io(&self, what: &str, e: std::io::Error) -> SinkError {
        SinkError::Retryable(format!("{what} {}: {e}", self.path.display()))
    }
}

impl Sink for FileSink {
    async fn open(&mut self, state: &serde_json::Value) -> Result<(), SinkError> {
        let saved: State = serde_json::from_value(state.clone()).unwrap_or_default();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| self.io("cannot create directory for", e))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .await
            .map_err(|e| self.io("cannot open", e))?;
        let len = file.metadata().await.map_err(|e| self.io("cannot stat", e))?.len();
        if len > saved.offset {
            tracing::info!(path = %self.path.display(), bytes = len - saved.offset, "Removing output written after the last commit; it is delivered again.");
            file.set_len(saved.offset).await.map_err(|e| self.io("cannot truncate", e))?;
            file.sync_all().await.map_err(|e| self.io("cannot sync", e))?;
            self.offset = saved.offset;
        } else {
            if len < saved.offset {
                tracing::warn!(path = %self.path.display(), "Output file is shorter than committed (rotated or truncated by someone else); appending to it.");
            }
            self.offset = len;
        }
        self.file = Some(file);
        Ok(())
    }

    async fn send(&mut self, batch: &[ExportRecord]) -> Result<SendReport, SinkError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|r| r.payload.len() + 48).sum());
        for record in batch {
            buf.extend_from_slice(b"{\"kind\":\"");
            buf.extend_from_slice(record.kind.as_str().as_bytes());
            buf.extend_from_slice(b"\",\"seq\":");
            buf.extend_from_slice(record.seq.to_string().as_bytes());
            buf.extend_from_slice(b",\"record\":");
            buf.extend_from_slice(&record.payload);
            buf.extend_from_slice(b"}\n");
        }
        let offset = self.offset;
        let path = self.path.clone();
        let io = |what: &str, e: std::io::Error| SinkError::Retryable(format!("{what} {}: {e}", path.display()));
        let file = self.file.as_mut().ok_or_else(|| SinkError::Retryable("file sink is not open".into()))?;
        // A failed write may have left part of the batch: cut back before (re)writing it.
        file.set_len(offset).await.map_err(|e| io("cannot truncate", e))?;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(|e| io("cannot seek", e))?;
        file.write_all(&buf).await.map_err(|e| io("cannot write", e))?;
        file.flush().await.map_err(|e| io("cannot flush", e))?;
        file.sync_data().await.map_err(|e| io("cannot sync", e))?;
        self.offset += buf.len() as u64;
        Ok(SendReport::default())
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "offset": self.offset })
    }
}

use tokio::io::AsyncSeekExt;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RecordKind;

    fn record(seq: u64) -> ExportRecord {
        ExportRecord { seq, kind: RecordKind::Event, payload: format!("{{\"n\":{seq}}}").into_bytes() }
    }

    #[tokio::test]
    async fn writes_envelopes_and_truncates_uncommitted_output_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = FileSinkConfig { path: dir.path().join("out/events.jsonl") };
        let mut sink = FileSink::new(&config);
        sink.open(&serde_json::Value::Null).await.expect("open");
        sink.send(&[record(1), record(2)]).await.expect("send");
        let committed = sink.state();
        sink.send(&[record(3)]).await.expect("send"); // written, never committed
        drop(sink);
        let mut reopened = FileSink::new(&config);
        reopened.open(&committed).await.expect("reopen");
        reopened.send(&[record(3)]).await.expect("send again");
        let text = std::fs::read_to_string(&config.path).expect("read");
        assert_eq!(
            text,
            "{\"kind\":\"event\",\"seq\":1,\"record\":{\"n\":1}}\n{\"kind\":\"event\",\"seq\":2,\"record\":{\"n\":2}}\n{\"kind\":\"event\",\"seq\":3,\"record\":{\"n\":3}}\n"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
    }
}
