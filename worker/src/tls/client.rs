//! TLS of the connections a worker opens to the outside — functions, webhooks, Kafka brokers,
//! NATS servers — from a spec's [`ClientTls`]: the public web roots (built in, so a
//! container needs no system store) unless `caOnly`, plus `caFile`, and a client certificate
//! when `certFile`/`keyFile` are set.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::{ClientConfig, RootCertStore};
use spindle_spec::ClientTls;

use super::{TlsError, provider, read_certs, read_key};

/// A rustls client configuration for `tls` (`None`: the public web roots, no client
/// certificate). Relative paths start at `base_dir`.
pub fn config(tls: Option<&ClientTls>, base_dir: &Path) -> Result<ClientConfig, TlsError> {
    let default = ClientTls::default();
    let tls = tls.unwrap_or(&default);
    let mut roots = RootCertStore::empty();
    if !tls.ca_only {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(ca) = &tls.ca_file {
        let path = base_dir.join(ca);
        for cert in read_certs(&path)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::new(&path, format!("not a usable CA certificate: {e}")))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(base_dir, e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (base_dir.join(cert), base_dir.join(key));
            builder
                .with_client_auth_cert(read_certs(&cert)?, read_key(&key)?)
                .map_err(|e| TlsError::new(&cert, format!("cannot be used with its key: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The HTTP client of the invoker and the webhook egress: plain HTTP/1.1 to `http://`, TLS to
/// `https://` with HTTP/2 when the server offers it (ALPN) and HTTP/1.1 otherwise; pooled
/// keep-alive connections, `TCP_NODELAY`.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(crate) fn http_client(
    tls: Option<&ClientTls>,
    base_dir: &Path,
    pool_idle: std::time::Duration,
) -> Result<HttpClient, TlsError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(config(tls, base_dir)?)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(pool_idle)
        .build(https))
}

/// An error with its causes (a TLS failure is usually two or three levels down).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// A rustls configuration shared by a connector's connections.
pub(crate) fn shared(tls: &ClientTls, base_dir: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    config(Some(tls), base_dir).map(Arc::new)
}
