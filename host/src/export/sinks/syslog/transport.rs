//! Connections to the receiver: a connected UDP socket, a TCP stream, or TLS over TCP
//! (rustls; the system's roots or a CA file, an optional client certificate).

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::{Protocol, SyslogSinkConfig, SyslogTlsConfig};
use crate::export::SinkError;

/// An open connection.
#[derive(Debug)]
pub enum Conn {
    /// UDP, connected to the receiver.
    Udp(UdpSocket),
    /// TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether the receiver closed a stream connection (checked before each batch, so a
    /// batch is not written into a connection that is already gone).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self {
            Self::Udp(_) => false,
            // Receivers send nothing on a syslog connection: any data (or EOF) means it is
            // closing.
            Self::Tcp(s) => !matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            // Through TLS, so that the records a receiver may send (session tickets) are
            // taken for what they are; an alert, close_notify or EOF ends the read.
            Self::Tls(s) => s.read(&mut byte).now_or_never().is_some(),
        }
    }

    /// Writes `data`: one datagram per message for UDP (`data` is then one message), the
    /// whole buffer otherwise.
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp(s) => s.send(data).await.map(drop),
            Self::Tcp(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Self::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }
}

/// Opens connections for one sink.
pub struct Connector {
    address: String,
    protocol: Protocol,
    timeout: std::time::Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Whether a TLS connection presents a client certificate (and must wait for the
    /// receiver's verdict on it: [`confirm`]).
    client_cert: bool,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("address", &self.address).field("protocol", &self.protocol).finish()
    }
}

fn tls_error(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::permanent(format!("{what} {}: {e}", path.display()))
}

fn client_config(tls: &SyslogTlsConfig) -> Result<rustls::ClientConfig, SinkError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::permanent(format!("TLS: {e}")))?;
    let builder = match &tls.ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls_error("cannot read CAs from", ca, e))? {
                roots
                    .add(cert.map_err(|e| tls_error("bad CA certificate in", ca, e))?)
                    .map_err(|e| tls_error("bad CA certificate in", ca, e))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| SinkError::permanent(format!("TLS: cannot load the system's roots: {e}")))?,
    };
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_error("cannot read certificates from", cert, e))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error("cannot read the private key from", key, e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| SinkError::permanent(format!("TLS client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

impl Connector {
    /// A connector for `config`; reads the TLS files.
    pub fn new(config: &SyslogSinkConfig) -> Result<Self, SinkError> {
        let tls = match config.protocol {
            Protocol::Tls => {
                let name = config.tls.server_name.clone().unwrap_or_else(|| config.host().to_owned());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|e| SinkError::permanent(format!("TLS server name `{name}`: {e}")))?;
                Some((TlsConnector::from(Arc::new(client_config(&config.tls)?)), server_name))
            }
            _ => None,
        };
        Ok(Self {
            address: config.address.clone(),
            protocol: config.protocol,
            timeout: config.timeout,
            tls,
            client_cert: config.tls.client_cert_file.is_some(),
        })
    }

    /// Opens a connection.
    pub async fn connect(&self) -> Result<Conn, SinkError> {
        let failed = |e: std::io::Error| SinkError::retryable(format!("cannot connect to {}: {e}", self.address));
        let connect = async {
            match self.protocol {
                Protocol::Udp => {
                    let target = tokio::net::lookup_host(&self.address)
                        .await?
                        .next()
                        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
                    let local = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                    let socket = UdpSocket::bind(local).await?;
                    socket.connect(target).await?;
                    Ok(Conn::Udp(socket))
                }
                Protocol::Tcp => {
                    let stream = TcpStream::connect(&self.address).await?;
                    stream.set_nodelay(true)?;
                    Ok(Conn::Tcp(stream))
                }
                Protocol::Tls => {
                    let stream = TcpStream::connect(&self.address).await?;
                    stream.set_nodelay(true)?;
                    let Some((connector, name)) = &self.tls else {
                        return Err(std::io::Error::other("TLS is not configured"));
                    };
                    let mut stream = connector.connect(name.clone(), stream).await?;
                    if self.client_cert {
                        confirm(&mut stream, self.timeout.min(CONFIRM)).await?;
                    }
                    Ok(Conn::Tls(Box::new(stream)))
                }
            }
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(result) => result.map_err(failed),
            Err(_) => Err(SinkError::retryable(format!("connecting to {} timed out", self.address))),
        }
    }
}

/// Longest wait for a receiver's verdict on the client certificate.
const CONFIRM: Duration = Duration::from_secs(2);

/// Waits until a TLS 1.3 receiver has accepted the client certificate. In TLS 1.3 the
/// client's handshake ends before the receiver has checked that certificate: a refusal
/// comes afterwards, as an alert, and a batch written by then would be lost while counted
/// as delivered. So the connection is used once the receiver has said yes (its first
/// session ticket) or no (an alert, or closing it), within `wait`; a receiver that sends no
/// tickets is taken at its word after the wait. TLS 1.2 checks the certificate inside the
/// handshake, so there is nothing to wait for.
async fn confirm(stream: &mut TlsStream<TcpStream>, wait: Duration) -> std::io::Result<()> {
    if stream.get_ref().1.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut byte = [0u8; 1];
    while stream.get_ref().1.tls13_tickets_received() == 0 {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        // Short slices: a ticket is consumed inside the read, which goes on waiting for
        // data that never comes on a syslog connection.
        let slice = Duration::from_millis(10).min(deadline - now);
        match tokio::time::timeout(slice, stream.read(&mut byte)).await {
            Err(_) => {}
            Ok(Ok(0)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the receiver closed the connection after the TLS handshake (is the client certificate one it trusts?)",
                ));
            }
            Ok(Ok(_)) => return Err(std::io::Error::other("the receiver sent data on a syslog connection")),
            Ok(Err(e)) => {
                return Err(std::io::Error::new(e.kind(), format!("the receiver refused the client certificate: {e}")));
            }
        }
    }
    Ok(())
}
