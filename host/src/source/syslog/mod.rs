//! The syslog listener: RFC 5424 and RFC 3164 messages over UDP, TCP (octet counting or
//! newline framing) and TLS (rustls), read by the [input decoders](super::decode).
//!
//! A malformed frame (oversize, truncated, not UTF-8) is counted in
//! `vigil_events_rejected_total{source="syslog_*"}`, logged (throttled) and skipped; the
//! connection keeps serving. A TCP connection's frames are appended in batches, and the
//! next read waits for the append to be durable, so a slow disk slows the sender instead of
//! growing memory.

mod frame;
pub mod known;
mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use frame::{Frame, SyslogFramer};
pub use parse::{parse_header, parse_syslog, parse_syslog_all, recognise_all};

use super::decode::{Decoded, Format, StreamDecoder};
use super::{Error, Ingestor, Result, reject_reason};
use crate::telemetry::Throttle;

/// Syslog listeners (`[sources.syslog]`). Each address is optional; none are on by default.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// UDP address to listen on (`127.0.0.1:5514`).
    pub udp: Option<SocketAddr>,
    /// TCP address to listen on; octet-counted and newline-framed messages both work.
    pub tcp: Option<SocketAddr>,
    /// TLS listener (RFC 5425).
    pub tls: Option<SyslogTlsConfig>,
    /// Largest accepted message.
    #[schemars(schema_with = "crate::store::byte_size_schema")]
    pub max_frame_bytes: ByteSize,
    /// Keep the original line in each event's `raw` field.
    pub keep_raw: bool,
    /// Most TCP and TLS connections served at once.
    pub max_connections: usize,
    /// How message bodies are read: `syslog` (the header, then CEF, LEEF, auditd and
    /// Windows XML payloads by their look and the recognisers for the rest), or any input
    /// format whose records arrive one per message (`cef`, `leef`, `auditd`, `auto`,
    /// `plugin:NAME`…).
    pub format: Format,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            udp: None,
            tcp: None,
            tls: None,
            max_frame_bytes: ByteSize::kib(64),
            keep_raw: false,
            max_connections: 512,
            format: Format::Syslog,
        }
    }
}

/// The TLS listener's address and key material.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogTlsConfig {
    /// Address to listen on (`0.0.0.0:6514`).
    pub address: SocketAddr,
    /// PEM file with the server certificate chain.
    pub cert_file: PathBuf,
    /// PEM file with the server's private key.
    pub key_file: PathBuf,
    /// PEM file of CAs; when set, clients must present a certificate signed by one.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl SyslogConfig {
    /// Whether any listener is configured.
    pub fn enabled(&self) -> bool {
        self.udp.is_some() || self.tcp.is_some() || self.tls.is_some()
    }

    /// Every problem with the settings, with its path.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        if self.max_frame_bytes.as_u64() < 480 {
            errors.push(("sources.syslog.max_frame_bytes".into(), "must be at least 480 bytes (RFC 5424 §6.1)".into()));
        }
        if self.max_connections == 0 {
            errors.push(("sources.syslog.max_connections".into(), "must be at least 1".into()));
        }
        errors
    }
}

/// The bound listeners, ready to serve.
pub struct SyslogSource {
    config: SyslogConfig,
    ingestor: Ingestor,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    tls: Option<(TcpListener, TlsAcceptor)>,
    throttle: Arc<Throttle>,
}

impl std::fmt::Debug for SyslogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSource").field("addrs", &self.local_addrs()).finish()
    }
}

impl SyslogSource {
    /// Binds every configured listener; fails if any address or TLS file is unusable.
    pub async fn bind(config: SyslogConfig, ingestor: Ingestor) -> Result<Self> {
        let udp = match config.udp {
            Some(addr) => {
                Some(UdpSocket::bind(addr).await.map_err(|source| Error::Bind { address: addr.to_string(), source })?)
            }
            None => None,
        };
        let tcp = match config.tcp {
            Some(addr) => Some(bind_tcp(addr).await?),
            None => None,
        };
        let tls = match &config.tls {
            Some(tls) => Some((bind_tcp(tls.address).await?, tls_acceptor(tls)?)),
            None => None,
        };
        Ok(Self { config, ingestor, udp, tcp, tls, throttle: Arc::new(Throttle::new(Duration::from_secs(10))) })
    }

    /// The bound addresses: (udp, tcp, tls).
    pub fn local_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.udp.as_ref().and_then(|s| s.local_addr().ok()),
            self.tcp.as_ref().and_then(|s| s.local_addr().ok()),
            self.tls.as_ref().and_then(|(s, _)| s.local_addr().ok()),
        )
    }

    /// Serves until `shutdown`, then waits for open connections to finish their batch.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let conn = Conn {
            ingestor: self.ingestor,
            max_frame: self.config.max_frame_bytes.as_u64() as usize,
            keep_raw: self.config.keep_raw,
            format: self.config.format.clone(),
            throttle: self.throttle,
            shutdown: shutdown.clone(),
        };
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        if let Some(socket) = self.udp {
            tracker.spawn(conn.clone().serve_udp(socket));
        }
        if let Some(listener) = self.tcp {
            tracker.spawn(conn.clone().accept(listener, None, limit.clone(), tracker.clone()));
        }
        if let Some((listener, acceptor)) = self.tls {
            tracker.spawn(conn.clone().accept(listener, Some(acceptor), limit, tracker.clone()));
        }
        shutdown.cancelled().await;
        tracker.close();
        tracker.wait().await;
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { address: addr.to_string(), source })
}

fn tls_acceptor(config: &SyslogTlsConfig) -> Result<TlsAcceptor> {
    crate::source::tls::acceptor(&config.cert_file, &config.key_file, config.client_ca_file.as_deref())
        .map_err(Error::Tls)
}

/// What every connection handler shares.
#[derive(Clone, Debug)]
struct Conn {
    ingestor: Ingestor,
    max_frame: usize,
    keep_raw: bool,
    format: Format,
    throttle: Arc<Throttle>,
    shutdown: CancellationToken,
}

impl Conn {
    async fn accept(
        self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        limit: Arc<Semaphore>,
        tracker: TaskTracker,
    ) {
        let source = if tls.is_some() { "syslog_tls" } else { "syslog_tcp" };
        loop {
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => permit,
                () = self.shutdown.cancelled() => return,
            };
            let Ok(permit) = permit else { return };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "Syslog accept failed.");
                        continue;
                    }
                },
                () = self.shutdown.cancelled() => return,
            };
            let conn = self.clone();
            let tls = tls.clone();
            tracker.spawn(async move {
                let _permit = permit;
                match tls {
                    None => conn.serve_stream(stream, peer, source).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => conn.serve_stream(stream, peer, source).await,
                        Err(e) => {
                            conn.ingestor.count_rejected(source, conn.format.name(), "tls_handshake");
                            tracing::warn!(%peer, error = %e, "Syslog TLS handshake failed.");
                        }
                    },
                }
            });
        }
    }

    /// A decoder for one stream; `None` (logged) when its plugin is not loaded.
    fn decoder(&self, source: &'static str) -> Option<StreamDecoder> {
        match self.ingestor.stream_decoder(&self.format, self.keep_raw) {
            Ok(decoder) => Some(decoder),
            Err(e) => {
                self.ingestor.count_rejected(source, self.format.name(), "unknown_format");
                tracing::error!(source, error = %e, "Syslog messages cannot be read; closing the connection.");
                None
            }
        }
    }

    async fn serve_stream<S: AsyncRead + Unpin>(&self, mut stream: S, peer: SocketAddr, source: &'static str) {
        let mut framer = SyslogFramer::new(self.max_frame);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let Some(mut decoder) = self.decoder(source) else { return };
        let mut frames = 0usize;
        loop {
            let read = tokio::select! {
                read = stream.read_buf(&mut buf) => read,
                () = self.shutdown.cancelled() => return,
            };
            let eof = match read {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "Syslog connection read failed; closing it.");
                    return;
                }
            };
            let mut out = Decoded::default();
            loop {
                let frame = if eof { framer.decode_eof(&mut buf) } else { framer.decode(&mut buf) };
                match frame {
                    Ok(Some(frame)) => {
                        frames += 1;
                        self.take_frame(frame, frames, peer, source, &mut decoder, &mut out);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "Syslog framing failed; closing the connection.");
                        return;
                    }
                }
            }
            decoder.finish(chrono::Utc::now(), &mut out);
            if !self.store(source, out, peer).await || eof {
                return;
            }
        }
    }

    async fn serve_udp(self, socket: UdpSocket) {
        let mut buf = vec![0u8; 65_536];
        let Some(mut decoder) = self.decoder("syslog_udp") else { return };
        let mut datagrams = 0usize;
        loop {
            let received = tokio::select! {
                r = socket.recv_from(&mut buf) => r,
                () = self.shutdown.cancelled() => return,
            };
            let mut out = Decoded::default();
            let mut last_peer = None;
            let mut next = received;
            // Take whatever else is already queued, so a burst becomes one append.
            for _ in 0..512 {
                match next {
                    Ok((n, peer)) => {
                        last_peer = Some(peer);
                        datagrams += 1;
                        self.take_datagram(&buf[..n], datagrams, peer, &mut decoder, &mut out);
                    }
                    Err(e) => tracing::debug!(error = %e, "Syslog UDP receive failed."),
                }
                next = match socket.try_recv_from(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    other => other,
                };
            }
            decoder.finish(chrono::Utc::now(), &mut out);
            if let Some(peer) = last_peer {
                self.store("syslog_udp", out, peer).await;
            }
        }
    }

    fn take_datagram(&self, bytes: &[u8], at: usize, peer: SocketAddr, decoder: &mut StreamDecoder, out: &mut Decoded) {
        if bytes.len() > self.max_frame {
            self.malformed("syslog_udp", "frame_too_large", peer);
            return;
        }
        self.take_frame(Frame::Message(BytesMut::from(bytes)), at, peer, "syslog_udp", decoder, out);
    }

    fn take_frame(
        &self,
        frame: Frame,
        at: usize,
        peer: SocketAddr,
        source: &'static str,
        decoder: &mut StreamDecoder,
        out: &mut Decoded,
    ) {
        match frame {
            Frame::Malformed(reason) => self.malformed(source, reason, peer),
            Frame::Message(bytes) => match std::str::from_utf8(&bytes) {
                Err(_) => self.malformed(source, "not_utf8", peer),
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => {
                    let text = text.trim_end_matches(['\n', '\r', '\0']);
                    decoder.record(at, text.as_bytes(), chrono::Utc::now(), out);
                }
            },
        }
    }

    fn malformed(&self, source: &'static str, reason: &'static str, peer: SocketAddr) {
        self.ingestor.count_rejected(source, self.format.name(), reason);
        if let Some(suppressed) = self.throttle.allow() {
            tracing::warn!(source, reason, %peer, suppressed, "Malformed syslog frame skipped.");
        }
    }

    /// Appends a batch's events and counts its refusals; false when the log refused the
    /// batch (the connection should close).
    async fn store(&self, source: &'static str, out: Decoded, peer: SocketAddr) -> bool {
        for rejection in &out.rejected {
            self.ingestor.count_rejected(source, self.format.name(), reject_reason(&rejection.error));
            if let Some(suppressed) = self.throttle.allow() {
                tracing::warn!(source, %peer, message = rejection.line, error = %rejection.error, suppressed, "Syslog message refused.");
            }
        }
        let events = out.events;
        if events.is_empty() {
            return true;
        }
        match self.ingestor.append(source, &events, Vec::new()).await {
            Ok(_) => true,
            Err(e) => {
                self.ingestor.count_rejected(source, self.format.name(), "store_failed");
                tracing::error!(source, %peer, records = events.len(), error = %e, "Syslog batch could not be stored; closing the connection.");
                false
            }
        }
    }
}
