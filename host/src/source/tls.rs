//! TLS for listeners (syslog over TLS, the HTTP API): a rustls acceptor from PEM files,
//! optionally requiring client certificates signed by a given CA (mutual TLS).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

/// An acceptor with the certificate chain and key of the given PEM files; with
/// `client_ca_file`, clients must present a certificate signed by one of its CAs. Errors
/// name the file and what is wrong with it.
pub fn acceptor(cert_file: &Path, key_file: &Path, client_ca_file: Option<&Path>) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |what: &str, path: &Path, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err("cannot read certificates from", cert_file, &e))?;
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(|e| tls_err("cannot read private key from", key_file, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls_err("cannot read CAs from", ca, &e))? {
                roots
                    .add(cert.map_err(|e| tls_err("bad CA certificate in", ca, &e))?)
                    .map_err(|e| tls_err("bad CA certificate in", ca, &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder.with_single_cert(certs, key).map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
