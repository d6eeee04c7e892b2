//! Mutual TLS on the peer port: every worker of an application holds a certificate issued by
//! the application's CA with its identity URI ([`WorkerIdentity`]). The server accepts only
//! clients whose certificate chains to that CA *and* names this application and namespace
//! (checked in the handshake, so anything else never reaches gRPC); a client accepts a server
//! only when its certificate chains to the CA, is valid for the host dialled (DNS name or IP),
//! and names exactly the worker it meant to reach. Which index a caller is, is then read from
//! its certificate by the services ([`PeerTls::caller`]).
//!
//! Files (a directory as a Kubernetes TLS Secret mounts it): `ca.crt` (the application's CA),
//! `tls.crt` (this worker's certificate, then any intermediates), `tls.key`.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::identity::{Caller, Refusal, WorkerIdentity};
use super::local::{CA_FILE, CERT_FILE, KEY_FILE};
use super::{TlsError, provider, read_certs, read_key, san_uris};
use crate::stop::CancellationToken;

/// Longest a TLS handshake on the peer port may take (a client that stalls is dropped).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaking at once; more wait to be accepted (bounds what a flood costs).
const MAX_HANDSHAKES: usize = 64;

/// This worker's side of the application's mutual TLS.
pub struct PeerTls {
    me: WorkerIdentity,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerTls({})", self.me)
    }
}

impl PeerTls {
    /// Reads `ca.crt`, `tls.crt` and `tls.key` from `dir` — or, when there is no `tls.crt`,
    /// `worker-<index>.crt` and `worker-<index>.key` (one Secret holding every worker's pair,
    /// mounted as is into every pod); the certificate must be `me`'s.
    pub fn from_dir(dir: &Path, me: WorkerIdentity) -> Result<PeerTls, TlsError> {
        let ca = read_certs(&dir.join(CA_FILE))?;
        let (cert_file, key_file) = if dir.join(CERT_FILE).exists() {
            (dir.join(CERT_FILE), dir.join(KEY_FILE))
        } else {
            (
                dir.join(format!("worker-{}.crt", me.worker)),
                dir.join(format!("worker-{}.key", me.worker)),
            )
        };
        let chain = read_certs(&cert_file)?;
        let key = read_key(&key_file)?;
        let own = WorkerIdentity::from_uris(san_uris(&chain[0]).iter().map(String::as_str));
        if own.as_ref() != Some(&me) {
            let found = own.map_or("no worker identity".to_string(), |o| format!("`{o}`"));
            return Err(TlsError::new(
                &cert_file,
                format!("this worker is `{me}`, but the certificate names {found}"),
            ));
        }
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots
                .add(c)
                .map_err(|e| TlsError::new(dir.join(CA_FILE), format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let server = server_config(&me, roots.clone(), chain.clone(), key.clone_key())
            .map_err(|e| TlsError::new(dir, e.to_string()))?;
        Ok(PeerTls {
            me,
            roots,
            chain,
            key,
            server,
        })
    }

    pub fn me(&self) -> &WorkerIdentity {
        &self.me
    }

    /// Who made a call, from the certificate its connection presented.
    pub(crate) fn caller(&self, certs: Option<&[CertificateDer<'static>]>) -> Result<Caller, Refusal> {
        let cert = certs.and_then(<[_]>::first).ok_or(Refusal::NoCertificate)?;
        let id = WorkerIdentity::from_uris(san_uris(cert).iter().map(String::as_str)).ok_or(Refusal::NoIdentity)?;
        self.me.same_application(&id)?;
        Ok(Caller::Worker(id))
    }

    /// The client configuration for dialling worker `to`.
    fn client_config(&self, to: u32) -> Result<Arc<ClientConfig>, rustls::Error> {
        let expect = WorkerIdentity {
            worker: to,
            ..self.me.clone()
        };
        let inner = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedServer { inner, expect }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

fn server_config(
    me: &WorkerIdentity,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier = Arc::new(SameApplication { inner, me: me.clone() });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn refused(r: Refusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(r))))
}

/// The server's check of a client: chains to the CA, and is a worker of this application.
#[derive(Debug)]
struct SameApplication {
    inner: Arc<dyn ClientCertVerifier>,
    me: WorkerIdentity,
}

impl ClientCertVerifier for SameApplication {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let id = WorkerIdentity::from_uris(san_uris(end_entity).iter().map(String::as_str))
            .ok_or(refused(Refusal::NoIdentity))?;
        self.me.same_application(&id).map_err(refused)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client's check of a server: chains to the CA, valid for the host dialled, and exactly
/// the worker meant (so a worker of the application cannot pose as another).
#[derive(Debug)]
struct ExpectedServer {
    inner: Arc<WebPkiServerVerifier>,
    expect: WorkerIdentity,
}

impl ServerCertVerifier for ExpectedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        let id = WorkerIdentity::from_uris(san_uris(end_entity).iter().map(String::as_str))
            .ok_or(refused(Refusal::NoIdentity))?;
        self.expect.same_application(&id).map_err(refused)?;
        if id.worker != self.expect.worker {
            return Err(refused(Refusal::OtherIndex {
                claimed: self.expect.worker,
                certified: id.worker,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificates the client of a peer-port request presented (read from tonic's
/// connection info: the port's connections are [`incoming`]'s TLS streams).
pub(crate) fn request_certs<T>(request: &tonic::Request<T>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    request.peer_certs()
}

/// The gRPC endpoint of a peer at `host:port`.
pub(crate) fn endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(connect_timeout).tcp_nodelay(true))
        .map_err(|e| format!("bad peer address `{addr}`: {e}"))
}

/// A channel to worker `to` that connects when first used (and again after a failure), over
/// mutual TLS when `tls` is given.
pub(crate) fn connect_lazy(tls: Option<&PeerTls>, endpoint: Endpoint, to: u32) -> Result<Channel, String> {
    match tls {
        None => Ok(endpoint.connect_lazy()),
        Some(tls) => Ok(endpoint.connect_with_connector_lazy(connector(tls, to)?)),
    }
}

/// A channel to worker `to`, connected now.
pub(crate) async fn connect(tls: Option<&PeerTls>, endpoint: Endpoint, to: u32) -> Result<Channel, String> {
    let result = match tls {
        None => endpoint.connect().await,
        Some(tls) => endpoint.connect_with_connector(connector(tls, to)?).await,
    };
    result.map_err(|e| {
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(inner) = cur {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            cur = inner.source();
        }
        s
    })
}

type Connector = tower::util::ServiceFn<
    Box<
        dyn Fn(
                Uri,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>,
            > + Send
            + Sync,
    >,
>;

fn connector(tls: &PeerTls, to: u32) -> Result<Connector, String> {
    let config = tls
        .client_config(to)
        .map_err(|e| format!("TLS configuration for worker {to}: {e}"))?;
    let connect = TlsConnector::from(config);
    Ok(tower::service_fn(Box::new(move |uri: Uri| {
        let connect = connect.clone();
        Box::pin(async move {
            let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("peer address `{uri}`: {what}"));
            let host = uri
                .host()
                .ok_or_else(|| bad("no host"))?
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
            let name = ServerName::try_from(host.clone()).map_err(|_| bad("not a DNS name or IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = connect.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        }) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>
    })))
}

/// TLS connections accepted on `listener`, for `tonic`'s `serve_with_incoming`: handshakes run
/// concurrently (at most [`MAX_HANDSHAKES`], each within [`HANDSHAKE_TIMEOUT`]), and one that
/// fails — no certificate, another CA, another application — is logged, counted in
/// `refused` and dropped, without affecting the others. Ends with `stop`.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: &PeerTls,
    refused: Counter,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(tls.server.clone());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        // Handshakes in progress: bounded, and aborted with this task at the stop.
        let mut handshakes = JoinSet::new();
        loop {
            while handshakes.try_join_next().is_some() {}
            if handshakes.len() >= MAX_HANDSHAKES {
                tokio::select! {
                    _ = handshakes.join_next() => continue,
                    _ = stop.cancelled() => return,
                }
            }
            let (tcp, from) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a peer connection failed");
                        if !crate::stop::pause(&stop, Duration::from_millis(50)).await {
                            return;
                        }
                        continue;
                    }
                },
                _ = stop.cancelled() => return,
            };
            let (acceptor, tx, refused) = (acceptor.clone(), tx.clone(), refused.clone());
            handshakes.spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        refused.inc();
                        tracing::warn!(%from, error = %e, "refused a peer connection at the TLS handshake");
                    }
                    Err(_) => {
                        refused.inc();
                        tracing::warn!(%from, "a peer connection did not finish its TLS handshake in time");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
