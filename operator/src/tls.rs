//! The peer certificates of an application: a CA of its own and one certificate per worker,
//! kept in the Secret `<app>-tls` (built by `builders::tls_secret`). Pure apart from key
//! generation: what is stored is read with [`Material::from_data`], [`plan`] decides what to
//! issue from it and the time, [`Material::apply`] issues it.
//!
//! The contract with the workers (docs/operator.md, "Peer TLS"): each worker pod sees
//! `ca.crt` (the CAs to trust, PEM), `tls.crt` and `tls.key` (its own certificate and
//! PKCS#8 key, PEM) in `/etc/spindle/tls/` (`SPINDLE_TLS_DIR`). Worker `i`'s certificate has
//! the URI SAN `spiffe://spindle.dev/ns/<namespace>/app/<name>/worker/<i>` and the DNS names
//! `<statefulset>-<i>.<headless service>.<namespace>.svc` and
//! `<statefulset>-<i>.<headless service>`, for server and client authentication.
//!
//! Rotation: a worker certificate is re-issued once two thirds of its life have passed. The
//! CA is replaced in two rollouts, so that no worker ever meets a peer it cannot verify: first
//! the next CA is added to every worker's `ca.crt` (certificates still signed by the old
//! one); once every worker runs with that bundle, the next CA signs new certificates, and the
//! old CA stays trusted until it expires.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use serde::{Deserialize, Serialize};

/// The Secret's keys.
pub const CA_BUNDLE: &str = "ca.crt";
const CA_CERT: &str = "ca-signing.crt";
const CA_KEY: &str = "ca-signing.key";
const NEXT_CA_CERT: &str = "ca-next.crt";
const NEXT_CA_KEY: &str = "ca-next.key";
const PREVIOUS_CA_CERT: &str = "ca-previous.crt";
pub fn worker_cert_key(i: u32) -> String {
    format!("worker-{i}.crt")
}
pub fn worker_key_key(i: u32) -> String {
    format!("worker-{i}.key")
}
/// On the Secret: every certificate's validity and the CA names, JSON ([`Validity`] by key).
pub const VALIDITY_ANNOTATION: &str = "spindle.dev/tls-validity";

pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const WORKER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start an hour back, for clocks that lag.
const BACKDATE: u64 = 3600;

/// Who the certificates are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub name: String,
    pub statefulset: String,
    pub service: String,
}

impl Identity {
    pub fn spiffe_id(&self, worker: u32) -> String {
        format!(
            "spiffe://spindle.dev/ns/{}/app/{}/worker/{worker}",
            self.namespace, self.name
        )
    }
    pub fn dns_names(&self, worker: u32) -> [String; 2] {
        let host = format!("{}-{worker}.{}", self.statefulset, self.service);
        [format!("{host}.{}.svc", self.namespace), host]
    }
}

/// When a certificate is valid (unix seconds), and for a CA its common name (the issuer's
/// name in every certificate it signs, so it must be rebuilt exactly to sign again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
}

impl Validity {
    /// Two thirds of its life are over: time to replace it.
    pub fn due(&self, now: u64) -> bool {
        let life = self.not_after.saturating_sub(self.not_before);
        now >= self.not_before + life / 3 * 2
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert: String,
    pub key: String,
    pub validity: Validity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub validity: Validity,
}

/// What the Secret holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Material {
    /// Signs the workers' certificates.
    pub ca: Option<Ca>,
    /// Trusted, not yet signing (the first half of a CA rotation).
    pub next_ca: Option<Ca>,
    /// Replaced, still trusted until it expires (certificates it signed may still be in use).
    pub previous_ca: Option<(String, Validity)>,
    pub workers: BTreeMap<u32, Leaf>,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// No CA yet: make one (and every certificate).
    pub new_ca: bool,
    /// Start a CA rotation: make the next CA and trust it.
    pub next_ca: bool,
    /// Finish it: the next CA signs from now on; every certificate is re-issued.
    pub promote: bool,
    /// Drop the previous CA from the bundle (expired).
    pub forget_previous: bool,
    /// Worker certificates to issue (missing or due).
    pub issue: Vec<u32>,
    /// Worker certificates no longer needed.
    pub remove: Vec<u32>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// What to change, for `workers` certificates (indices `0..workers`) at `now`.
/// `rolled_out`: every worker pod runs the StatefulSet's newest template, so all of them
/// have the bundle last written.
pub fn plan(m: &Material, workers: u32, now: u64, rolled_out: bool) -> Plan {
    let mut p = Plan::default();
    let all: Vec<u32> = (0..workers).collect();
    let Some(ca) = &m.ca else {
        p.new_ca = true;
        p.issue = all;
        p.remove = m.workers.keys().copied().filter(|i| *i >= workers).collect();
        return p;
    };
    if let Some(next) = &m.next_ca {
        // Promote only once every worker trusts the next CA.
        if rolled_out || next.validity.due(now) {
            p.promote = true;
            p.issue = all.clone();
        }
    } else if ca.validity.due(now) {
        p.next_ca = true;
    }
    if let Some((_, v)) = &m.previous_ca
        && now >= v.not_after
    {
        p.forget_previous = true;
    }
    if !p.promote {
        p.issue = all
            .iter()
            .copied()
            .filter(|i| {
                m.workers
                    .get(i)
                    .is_none_or(|l| l.validity.due(now) || l.validity.not_after > ca.validity.not_after)
            })
            .collect();
    }
    p.remove = m.workers.keys().copied().filter(|i| *i >= workers).collect();
    p
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the stored key `{key}` is not a PKCS#8 PEM key: {reason}")]
    BadKey { key: String, reason: String },
}

impl Material {
    /// The Secret's data (raw bytes) and its validity annotation; what cannot be read counts
    /// as missing, so it is issued anew.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>, validity: Option<&str>) -> Material {
        let validity: BTreeMap<String, Validity> =
            validity.and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
        let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.clone()).ok());
        let ca = |cert: &str, key: &str| {
            Some(Ca {
                cert: text(cert)?,
                key: text(key)?,
                validity: validity.get(cert)?.clone(),
            })
            .filter(|c| c.validity.common_name.is_some())
        };
        let mut workers = BTreeMap::new();
        for k in data.keys() {
            let Some(i) = k
                .strip_prefix("worker-")
                .and_then(|r| r.strip_suffix(".crt"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let (Some(cert), Some(key), Some(v)) = (text(k), text(&worker_key_key(i)), validity.get(k)) {
                workers.insert(
                    i,
                    Leaf {
                        cert,
                        key,
                        validity: v.clone(),
                    },
                );
            }
        }
        Material {
            ca: ca(CA_CERT, CA_KEY),
            next_ca: ca(NEXT_CA_CERT, NEXT_CA_KEY),
            previous_ca: text(PREVIOUS_CA_CERT).zip(validity.get(PREVIOUS_CA_CERT).cloned()),
            workers,
        }
    }

    /// The Secret's data and validity annotation.
    pub fn to_data(&self) -> (BTreeMap<String, String>, String) {
        let mut data = BTreeMap::new();
        let mut validity = BTreeMap::new();
        let mut bundle = String::new();
        for (cert_key, key_key, ca) in [(CA_CERT, CA_KEY, &self.ca), (NEXT_CA_CERT, NEXT_CA_KEY, &self.next_ca)] {
            if let Some(ca) = ca {
                data.insert(cert_key.to_string(), ca.cert.clone());
                data.insert(key_key.to_string(), ca.key.clone());
                validity.insert(cert_key.to_string(), ca.validity.clone());
                bundle.push_str(&ca.cert);
            }
        }
        if let Some((cert, v)) = &self.previous_ca {
            data.insert(PREVIOUS_CA_CERT.to_string(), cert.clone());
            validity.insert(PREVIOUS_CA_CERT.to_string(), v.clone());
            bundle.push_str(cert);
        }
        data.insert(CA_BUNDLE.to_string(), bundle);
        for (i, leaf) in &self.workers {
            data.insert(worker_cert_key(*i), leaf.cert.clone());
            data.insert(worker_key_key(*i), leaf.key.clone());
            validity.insert(worker_cert_key(*i), leaf.validity.clone());
        }
        (data, serde_json::to_string(&validity).expect("validity serializes"))
    }

    /// Carries out `plan`.
    pub fn apply(&mut self, plan: &Plan, id: &Identity, now: u64) -> Result<(), TlsError> {
        if plan.new_ca {
            self.ca = Some(new_ca(id, now)?);
            self.next_ca = None;
        }
        if plan.next_ca {
            self.next_ca = Some(new_ca(id, now)?);
        }
        if plan.promote
            && let Some(next) = self.next_ca.take()
        {
            self.previous_ca = self.ca.take().map(|old| (old.cert, old.validity));
            self.ca = Some(next);
        }
        if plan.forget_previous {
            self.previous_ca = None;
        }
        let ca = self.ca.as_ref().expect("a CA: made above when missing");
        let issuer = issuer(ca)?;
        for i in &plan.issue {
            self.workers.insert(*i, new_leaf(id, *i, &issuer, ca, now)?);
        }
        for i in &plan.remove {
            self.workers.remove(i);
        }
        Ok(())
    }
}

fn validity(now: u64, life: Duration) -> Validity {
    Validity {
        not_before: now.saturating_sub(BACKDATE),
        not_after: now + life.as_secs(),
        common_name: None,
    }
}

fn at(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).expect("a time within the certificate range")
}

fn ca_params(common_name: &str, v: &Validity) -> CertificateParams {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::OrganizationName, "spindle.dev");
    ca.distinguished_name.push(DnType::CommonName, common_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = at(v.not_before);
    ca.not_after = at(v.not_after);
    ca
}

fn new_ca(id: &Identity, now: u64) -> Result<Ca, TlsError> {
    let mut v = validity(now, CA_LIFETIME);
    // The issued-at time tells two CAs of one application apart.
    let name = format!("spindle {}/{} CA {now}", id.namespace, id.name);
    let key = KeyPair::generate()?;
    let cert = ca_params(&name, &v).self_signed(&key)?;
    v.common_name = Some(name);
    Ok(Ca {
        cert: pem("CERTIFICATE", cert.der()),
        key: pem("PRIVATE KEY", &key.serialize_der()),
        validity: v,
    })
}

/// The CA as an issuer: its parameters rebuilt from what is stored (name, validity) give the
/// same issuer name, and its key the same key identifier, as the stored certificate.
fn issuer(ca: &Ca) -> Result<Issuer<'static, KeyPair>, TlsError> {
    let name = ca.validity.common_name.clone().unwrap_or_default();
    let key = key_from_pem(CA_KEY, &ca.key)?;
    Ok(Issuer::new(ca_params(&name, &ca.validity), key))
}

fn new_leaf(id: &Identity, worker: u32, issuer: &Issuer<'_, KeyPair>, ca: &Ca, now: u64) -> Result<Leaf, TlsError> {
    let mut v = validity(now, WORKER_LIFETIME);
    // Never valid past its CA.
    v.not_after = v.not_after.min(ca.validity.not_after);
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, "spindle.dev");
    params.distinguished_name.push(
        DnType::CommonName,
        format!("{}/{} worker {worker}", id.namespace, id.name),
    );
    let uri = rcgen::string::Ia5String::try_from(id.spiffe_id(worker))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for dns in id.dns_names(worker) {
        params
            .subject_alt_names
            .push(SanType::DnsName(rcgen::string::Ia5String::try_from(dns)?));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = at(v.not_before);
    params.not_after = at(v.not_after);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(Leaf {
        cert: pem("CERTIFICATE", cert.der()),
        key: pem("PRIVATE KEY", &key.serialize_der()),
        validity: v,
    })
}

/// PEM armour (RFC 7468) around DER, 64 characters a line (rcgen's `pem` feature would add a
/// second PEM crate to the tree).
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block.
pub fn pem_der(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn key_from_pem(name: &str, text: &str) -> Result<KeyPair, TlsError> {
    let bad = |reason: String| TlsError::BadKey {
        key: name.into(),
        reason,
    };
    let der = pem_der(text).ok_or_else(|| bad("no PEM block".into()))?;
    KeyPair::try_from(der.as_slice()).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            namespace: "apps".into(),
            name: "greeter".into(),
            statefulset: "greeter-worker".into(),
            service: "greeter-workers".into(),
        }
    }

    const T0: u64 = 1_800_000_000;
    const DAY: u64 = 24 * 3600;

    fn issued(workers: u32, now: u64) -> Material {
        let mut m = Material::default();
        let p = plan(&m, workers, now, true);
        m.apply(&p, &id(), now).unwrap();
        m
    }

    #[test]
    fn first_plan_makes_a_ca_and_every_certificate() {
        let p = plan(&Material::default(), 3, T0, true);
        assert!(p.new_ca);
        assert_eq!(p.issue, [0, 1, 2]);
        let m = issued(3, T0);
        assert_eq!(m.workers.len(), 3);
        assert!(plan(&m, 3, T0 + DAY, true).is_empty(), "nothing due a day later");
    }

    #[test]
    fn stored_material_reads_back() {
        let m = issued(2, T0);
        let (data, validity) = m.to_data();
        assert!(data[CA_BUNDLE].starts_with("-----BEGIN CERTIFICATE-----"));
        let raw = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        assert_eq!(Material::from_data(&raw, Some(&validity)), m);
        // Unreadable material counts as missing.
        assert_eq!(
            Material::from_data(&BTreeMap::new(), Some("garbage")),
            Material::default()
        );
    }

    #[test]
    fn scaling_issues_and_removes() {
        let m = issued(2, T0);
        let p = plan(&m, 4, T0 + 10, true);
        assert_eq!(
            (p.issue.clone(), p.remove.clone(), p.new_ca),
            (vec![2, 3], vec![], false)
        );
        let p = plan(&m, 1, T0 + 10, true);
        assert_eq!((p.issue, p.remove), (vec![], vec![1]));
    }

    #[test]
    fn worker_certificates_renew_after_two_thirds_of_their_life() {
        let m = issued(2, T0);
        let life = WORKER_LIFETIME.as_secs();
        let v = &m.workers[&0].validity;
        assert_eq!(v.not_after - v.not_before, life + BACKDATE);
        assert!(plan(&m, 2, v.not_before + (life + BACKDATE) / 3 * 2 - 1, true).is_empty());
        let p = plan(&m, 2, v.not_before + (life + BACKDATE) / 3 * 2, true);
        assert_eq!((p.issue, p.new_ca, p.next_ca), (vec![0, 1], false, false));
    }

    /// A CA rotation in two rollouts: trust the next CA first, sign with it once every worker
    /// trusts it, keep trusting the old one until it expires.
    #[test]
    fn ca_rotation_trusts_before_it_signs() {
        let mut m = issued(2, T0);
        let old_ca = m.ca.clone().unwrap();
        let due = old_ca.validity.not_before + (old_ca.validity.not_after - old_ca.validity.not_before) / 3 * 2;
        // The worker certificates were renewed on time, a while before.
        let p = plan(&m, 2, due - 30 * DAY, true);
        assert_eq!((p.issue.clone(), p.next_ca), (vec![0, 1], false));
        m.apply(&p, &id(), due - 30 * DAY).unwrap();
        let p = plan(&m, 2, due, true);
        assert!(p.next_ca && !p.promote && p.issue.is_empty(), "{p:?}");
        m.apply(&p, &id(), due).unwrap();
        let (data, _) = m.to_data();
        assert_eq!(
            data[CA_BUNDLE].matches("BEGIN CERTIFICATE").count(),
            2,
            "old and next trusted"
        );
        // Not rolled out yet: nothing more.
        assert!(plan(&m, 2, due + 60, false).is_empty());
        let p = plan(&m, 2, due + 120, true);
        assert!(p.promote && p.issue == [0, 1], "{p:?}");
        m.apply(&p, &id(), due + 120).unwrap();
        assert_ne!(m.ca.as_ref().unwrap().cert, old_ca.cert);
        assert_eq!(m.previous_ca.as_ref().unwrap().0, old_ca.cert);
        let (data, _) = m.to_data();
        assert_eq!(
            data[CA_BUNDLE].matches("BEGIN CERTIFICATE").count(),
            2,
            "new and previous trusted"
        );
        let p = plan(&m, 2, old_ca.validity.not_after, true);
        assert!(p.forget_previous, "{p:?}");
    }

    fn wall_clock() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_worker_certificate_chains_to_its_ca_and_names_its_worker() {
        // rustls checks validity against the real clock.
        let m = issued(2, wall_clock());
        let leaf = pem_der(&m.workers[&1].cert).unwrap();
        let ca = pem_der(&m.ca.as_ref().unwrap().cert).unwrap();
        // The SANs, as DER strings (IA5String).
        let contains = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(contains(&leaf, "spiffe://spindle.dev/ns/apps/app/greeter/worker/1"));
        assert!(contains(&leaf, "greeter-worker-1.greeter-workers.apps.svc"));
        // The issuer name in the leaf is the CA's subject, byte for byte (rebuilt, not parsed).
        let name = m.ca.as_ref().unwrap().validity.common_name.clone().unwrap();
        assert!(contains(&leaf, &name) && contains(&ca, &name));
        // A real mutual-TLS handshake (rustls, ring) between workers 0 and 1, each trusting
        // the bundle: what the workers will do on the peer port.
        handshake(&m, 0, 1).expect("worker 1 connects to worker 0 with mutual TLS");
        // Another application's certificate is refused.
        let mut other = Material::default();
        let stranger = Identity {
            namespace: "other".into(),
            ..id()
        };
        other
            .apply(&plan(&other, 2, wall_clock(), true), &stranger, wall_clock())
            .unwrap();
        let mut mixed = m;
        mixed.workers.insert(1, other.workers[&1].clone());
        let err = handshake(&mixed, 0, 1).unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    /// Worker `client` connects to worker `server` by its DNS name, in memory.
    fn handshake(m: &Material, server: u32, client: u32) -> Result<(), String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (data, _) = m.to_data();
        let mut roots = rustls::RootCertStore::empty();
        for block in data[CA_BUNDLE].split_inclusive("-----END CERTIFICATE-----\n") {
            roots.add(CertificateDer::from(pem_der(block).unwrap())).unwrap();
        }
        let roots = Arc::new(roots);
        let chain = |i: u32| {
            let leaf = &m.workers[&i];
            (
                vec![CertificateDer::from(pem_der(&leaf.cert).unwrap())],
                PrivateKeyDer::try_from(pem_der(&leaf.key).unwrap()).unwrap(),
            )
        };
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let (certs, key) = chain(server);
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap();
        let (certs, key) = chain(client);
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .unwrap();
        let name = ServerName::try_from(id().dns_names(server)[0].clone()).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().map_err(|e| format!("server: {e:?}"))?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().map_err(|e| format!("client: {e:?}"))?;
            if !c.is_handshaking() && !s.is_handshaking() {
                let peer = s.peer_certificates().expect("the client presented a certificate");
                assert_eq!(peer[0].as_ref(), pem_der(&m.workers[&client].cert).unwrap().as_slice());
                return Ok(());
            }
        }
        Err("the handshake did not finish".into())
    }
}
