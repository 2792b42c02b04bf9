//! The `syslog` sink: RFC 5424 messages over UDP (RFC 5426), TCP with octet counting
//! (RFC 6587) or TLS (RFC 5425) — the path to QRadar, ArcSight and Sentinel's syslog
//! connector. The payload is the sink's format: JSON, CEF or LEEF.
//!
//! Syslog has no acknowledgements: over TCP and TLS a batch counts as delivered once it is
//! written and flushed to the socket; a connection that fails mid-batch has the whole batch
//! sent again on a new one (a receiver may see duplicates, each carrying the record's id).
//! Over UDP a datagram the network drops is lost without notice; prefer TCP or TLS.
//! Messages over `max_message_bytes` are dead-lettered, never truncated. Batches go one at
//! a time, in order, on one connection.

mod config;
mod frame;
mod transport;

use tokio::sync::Mutex;

pub use config::{Protocol, SyslogSinkConfig, SyslogTlsConfig};

use crate::export::{Item, PlatformLimits, SendReport, Sink, SinkError};
use frame::Header;
use transport::{Conn, Connector};

/// The syslog sink.
#[derive(Debug)]
pub struct SyslogSink {
    config: SyslogSinkConfig,
    header: Header,
    connector: Connector,
    conn: Mutex<Option<Conn>>,
}

/// This machine's name, for HOSTNAME.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| (33..=126).contains(&b)))
        .unwrap_or_else(|| "-".into())
}

impl SyslogSink {
    /// A sink for `config`; fails if its TLS files cannot be read.
    pub fn new(config: SyslogSinkConfig) -> Result<Self, SinkError> {
        let header = Header {
            facility: config.facility_code().unwrap_or(20),
            hostname: config.hostname.clone().unwrap_or_else(local_hostname),
            app_name: config.app_name.clone(),
            procid: std::process::id().to_string(),
        };
        let connector = Connector::new(&config)?;
        Ok(Self { config, header, connector, conn: Mutex::new(None) })
    }
}

impl Sink for SyslogSink {
    async fn send(&self, batch: &[Item]) -> Result<SendReport, SinkError> {
        let max = self.config.max_message();
        let mut failed = Vec::new();
        let mut messages: Vec<(usize, Vec<u8>)> = Vec::with_capacity(batch.len());
        for (index, item) in batch.iter().enumerate() {
            let mut message = Vec::with_capacity(item.body.len() + 160);
            frame::message(&mut message, &self.header, item);
            if message.len() > max {
                let reason = format!("message of {} bytes is over max_message_bytes ({max})", message.len());
                failed.push((index, SinkError::permanent(reason)));
            } else {
                messages.push((index, message));
            }
        }
        let mut conn = self.conn.lock().await;
        if conn.as_mut().is_some_and(Conn::closed) {
            tracing::info!(address = %self.config.address, "Syslog receiver closed the connection; reconnecting.");
            *conn = None;
        }
        let open = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(self.connector.connect().await?),
        };
        let written = if let Conn::Udp(_) = open {
            let mut result = Ok(());
            for (_, message) in &messages {
                result = tokio::time::timeout(self.config.timeout, open.write(message))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
                if result.is_err() {
                    break;
                }
            }
            result
        } else {
            let mut framed = Vec::with_capacity(messages.iter().map(|(_, m)| m.len() + 8).sum());
            for (_, message) in &messages {
                frame::octet_counted(&mut framed, message);
            }
            tokio::time::timeout(self.config.timeout, open.write(&framed))
                .await
                .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        };
        if let Err(e) = written {
            *conn = None;
            return Err(SinkError::retryable(format!("writing to {} failed: {e}", self.config.address)));
        }
        Ok(SendReport { failed })
    }

    async fn healthcheck(&self) -> Result<(), SinkError> {
        let mut conn = self.conn.lock().await;
        if conn.as_mut().is_none_or(Conn::closed) {
            *conn = Some(self.connector.connect().await?);
        }
        Ok(())
    }

    fn max_concurrency(&self) -> usize {
        1
    }

    fn limits(&self) -> PlatformLimits {
        // A body over the limit cannot fit with its header; `send` checks the whole message.
        PlatformLimits { max_item_bytes: Some(self.config.max_message()), ..PlatformLimits::default() }
    }
}
