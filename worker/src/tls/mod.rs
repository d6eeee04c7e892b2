//! TLS, named once: the certificates and keys Spindle reads (PEM files), the rustls
//! configurations it builds from them (always with the `ring` provider: no C library), and
//! the worker identities in certificates.
//!
//! - [`identity`]: who a worker is (a SAN URI) and the pure checks of the peer port.
//! - [`peer`]: mutual TLS between the workers of one application (the peer port).
//! - [`local`]: an ephemeral CA and worker certificates for `spindle run` and tests.
//! - [`client`]: TLS to the outside — functions, webhooks, Kafka, NATS — with the public web
//!   roots, an optional CA bundle and an optional client certificate.

pub mod client;
pub mod identity;
pub mod local;
pub mod peer;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use identity::WorkerIdentity;

/// A certificate or key file that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

impl TlsError {
    pub(crate) fn new(path: impl AsRef<Path>, reason: impl Into<String>) -> TlsError {
        TlsError {
            path: path.as_ref().display().to_string(),
            reason: reason.into(),
        }
    }
}

/// The one crypto provider: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file (a chain, or a CA bundle); at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::new(path, format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(path, "holds no `BEGIN CERTIFICATE` block"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::new(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::new(path, format!("holds no usable private key: {e}")))
}

/// PEM text of DER blocks (what `openssl` and Kubernetes TLS Secrets hold).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The SAN URIs of a certificate (empty when it cannot be parsed).
pub(crate) fn san_uris(cert: &CertificateDer<'_>) -> Vec<String> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(c) => c.valid_uri_names().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_written_here_reads_back() {
        let der = (0..200u8).collect::<Vec<_>>();
        let text = pem("CERTIFICATE", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let back: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, [CertificateDer::from(der)]);
    }
}
