//! An ephemeral certificate authority for one run of an application on this machine
//! (`spindle run --workers N`) and for tests: a CA and, per worker, a certificate with the
//! worker's identity URI, `localhost` and `127.0.0.1`, usable as both TLS server and client.
//! Written as a Kubernetes TLS Secret mounts them: `ca.crt`, `tls.crt`, `tls.key`.
//! (rcgen with ring; the CA key lives only in this process.)

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use super::{TlsError, WorkerIdentity, pem};

/// File names in a TLS directory (those of a Kubernetes `kubernetes.io/tls` Secret plus the CA).
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl LocalCa {
    /// A new CA named `name` (its common name; nothing checks it).
    pub fn new(name: &str) -> Result<LocalCa, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(LocalCa {
            ca_pem: pem("CERTIFICATE", cert.der()),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A certificate for `uris` and `hosts` (DNS names or IP addresses), for TLS servers and
    /// clients alike.
    pub fn issue(&self, common_name: &str, uris: &[String], hosts: &[String]) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        for uri in uris {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into()?));
        }
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: pem("CERTIFICATE", cert.der()),
            key_pem: pem("PRIVATE KEY", &key.serialize_der()),
        })
    }

    /// The certificate of worker `id` on this machine (`localhost`, `127.0.0.1`, and `hosts`).
    pub fn issue_worker(&self, id: &WorkerIdentity, hosts: &[String]) -> Result<Issued, rcgen::Error> {
        let mut all = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        all.extend(hosts.iter().cloned());
        self.issue(&format!("{}-worker-{}", id.application, id.worker), &[id.uri()], &all)
    }

    /// Writes `ca.crt`, `tls.crt` and `tls.key` (owner-only) for worker `id` into `dir`.
    pub fn write_worker_dir(&self, id: &WorkerIdentity, dir: &Path) -> Result<(), TlsError> {
        let issued = self
            .issue_worker(id, &[])
            .map_err(|e| TlsError::new(dir, format!("generating a certificate: {e}")))?;
        write_dir(dir, &self.ca_pem, &issued)
    }
}

/// Writes a TLS directory: the CA, the certificate and its key (owner-only).
pub fn write_dir(dir: &Path, ca_pem: &str, issued: &Issued) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TlsError::new(&path, format!("cannot write: {e}"))
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = [
        (CA_FILE, ca_pem, 0o644),
        (CERT_FILE, issued.cert_pem.as_str(), 0o644),
        (KEY_FILE, issued.key_pem.as_str(), 0o600),
    ];
    for (name, text, mode) in files {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = options.open(&path).map_err(io(&path))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io(&path))?;
    }
    Ok(())
}
