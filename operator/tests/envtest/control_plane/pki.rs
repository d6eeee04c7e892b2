//! The control plane's keys and certificates, made fresh for each run with rcgen (pure Rust,
//! ECDSA P-256 by ring): a CA, the API server's serving certificate for 127.0.0.1 and
//! localhost, the key that signs ServiceAccount tokens, and the admin's static token.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};

pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// PKCS#8 private key: kube-apiserver signs ServiceAccount tokens with it.
    pub service_account_key: PathBuf,
    /// Its public half (SubjectPublicKeyInfo), with which kube-apiserver verifies them.
    pub service_account_pub: PathBuf,
    /// `--token-auth-file`: the admin's token, in `system:masters`.
    pub tokens: PathBuf,
    pub admin_token: String,
}

/// PEM armour (RFC 7468) around DER, 64 characters a line.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// 32 random bytes as hex, from the kernel.
fn random_token() -> String {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("a PKI file");
            path
        };
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.distinguished_name.push(DnType::CommonName, "spindle-envtest-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate().expect("a serving key");
        let mut serving = CertificateParams::new(vec!["localhost".to_string()]).expect("serving parameters");
        serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .expect("the serving certificate");

        let sa_key = KeyPair::generate().expect("a ServiceAccount signing key");
        let admin_token = random_token();
        Pki {
            ca_cert: write("ca.crt", &pem("CERTIFICATE", ca_cert.der())),
            serving_cert: write("apiserver.crt", &pem("CERTIFICATE", serving_cert.der())),
            serving_key: write("apiserver.key", &pem("PRIVATE KEY", &serving_key.serialize_der())),
            service_account_key: write("service-account.key", &pem("PRIVATE KEY", &sa_key.serialize_der())),
            service_account_pub: write(
                "service-account.pub",
                &pem("PUBLIC KEY", &sa_key.subject_public_key_info()),
            ),
            tokens: write("tokens.csv", &format!("{admin_token},admin,admin-uid,system:masters\n")),
            admin_token,
        }
    }
}
