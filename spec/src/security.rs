//! The spec's security settings: TLS of the connections Spindle makes (functions, webhooks,
//! Kafka, NATS), Kafka SASL, and bearer-token authentication of the endpoints it serves (the
//! HTTP ingress, the admin endpoints that expose data). Secrets are never in the spec: it names
//! environment variables (filled from Secrets in Kubernetes) or files (mounted Secrets).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::connectors::SecretValue;
use crate::validate::Errors;

/// TLS of a connection Spindle opens. Servers are verified against the public web roots
/// (Mozilla's list, built in) plus `caFile`; a client certificate is presented when
/// `certFile` and `keyFile` are set. File paths are relative to the application file (in
/// Kubernetes: absolute paths of a mounted Secret).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    /// PEM file of CA certificates trusted besides the public web roots (a private CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Trust only the certificates in `caFile`, not the public web roots.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ca_only: bool,
    /// PEM file of the client certificate (and its chain) for mutual TLS; needs `keyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// Kafka SASL authentication (on TLS when `tls` is set, otherwise in plain text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// The SASL user name.
    pub username: String,
    /// The password, from an environment variable (a Secret key in Kubernetes).
    pub password: SecretValue,
}

/// A SASL mechanism Kafka brokers offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// Bearer-token authentication: requests must carry `Authorization: Bearer <token>` with one
/// of the accepted tokens (compared in constant time). Exactly one of `tokens` or
/// `tokensFile` is set; either holds one token per line (blank lines and lines starting with
/// `#` are ignored), so several clients can hold different tokens and a token can be rotated
/// by adding the new one before removing the old.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpAuth {
    /// The accepted tokens, from an environment variable (a Secret key in Kubernetes; read
    /// once at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<SecretValue>,
    /// The accepted tokens, from a file (e.g. a mounted Secret); re-read when it changes, so
    /// tokens rotate without a restart. Relative to the application file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<String>,
}

/// The admin endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`, `/dead-letters`,
/// `/state/…`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSpec {
    /// When set, the endpoints that expose application data — `/state/…` and
    /// `/dead-letters` — need one of these bearer tokens. `/healthz`, `/readyz`, `/metrics`
    /// and `/status` stay open (probes and monitoring; they hold counters, no data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
}

impl crate::StatefulApplication {
    /// Every credential the application references, with where (a field path): NATS tokens
    /// and nkey seeds, Kafka SASL passwords, ingress and admin tokens. The operator fills
    /// each variable from its `secretKeyRef`; the worker refuses to start when one is unset.
    pub fn secrets(&self) -> Vec<(String, &SecretValue)> {
        let spec = &self.spec;
        let mut out = Vec::new();
        for (i, ing) in spec.ingresses.iter().enumerate() {
            let at = format!("spec.ingresses[{i}]");
            if let Some(n) = &ing.nats {
                out.extend(
                    n.auth
                        .iter()
                        .flat_map(|a| a.secrets())
                        .map(|s| (format!("{at}.nats.auth"), s)),
                );
            }
            if let Some(s) = ing.kafka.as_ref().and_then(|k| k.sasl.as_ref()) {
                out.push((format!("{at}.kafka.sasl.password"), &s.password));
            }
            if let Some(t) = ing.http.as_ref().and_then(|h| h.auth.as_ref()?.tokens.as_ref()) {
                out.push((format!("{at}.http.auth.tokens"), t));
            }
        }
        for (i, eg) in spec.egresses.iter().enumerate() {
            let at = format!("spec.egresses[{i}]");
            if let Some(n) = &eg.nats {
                out.extend(
                    n.auth
                        .iter()
                        .flat_map(|a| a.secrets())
                        .map(|s| (format!("{at}.nats.auth"), s)),
                );
            }
            if let Some(s) = eg.kafka.as_ref().and_then(|k| k.sasl.as_ref()) {
                out.push((format!("{at}.kafka.sasl.password"), &s.password));
            }
        }
        if let Some(t) = spec.admin.as_ref().and_then(|a| a.auth.as_ref()?.tokens.as_ref()) {
            out.push(("spec.admin.auth.tokens".to_string(), t));
        }
        out
    }
}

pub(crate) fn check_client_tls(t: &ClientTls, at: &str, e: &mut Errors) {
    for (name, v) in [
        ("caFile", &t.ca_file),
        ("certFile", &t.cert_file),
        ("keyFile", &t.key_file),
    ] {
        if v.as_deref().is_some_and(|p| p.trim().is_empty()) {
            e.add(format!("{at}.{name}"), "must not be empty");
        }
    }
    match (&t.cert_file, &t.key_file) {
        (Some(_), None) => e.add(format!("{at}.keyFile"), "`certFile` needs the key in `keyFile`"),
        (None, Some(_)) => e.add(
            format!("{at}.certFile"),
            "`keyFile` needs the certificate in `certFile`",
        ),
        _ => {}
    }
    if t.ca_only && t.ca_file.is_none() {
        e.add(
            format!("{at}.caOnly"),
            "`caOnly` trusts only `caFile`, which is not set",
        );
    }
}

pub(crate) fn check_sasl(s: &KafkaSasl, at: &str, e: &mut Errors) {
    if s.username.is_empty() {
        e.add(format!("{at}.username"), "must not be empty");
    }
    check_secret(&s.password, &format!("{at}.password"), e);
}

pub(crate) fn check_auth(a: &HttpAuth, at: &str, e: &mut Errors) {
    match (&a.tokens, &a.tokens_file) {
        (Some(_), Some(_)) | (None, None) => e.add(at, "exactly one of `tokens` or `tokensFile` must be set"),
        (Some(s), None) => check_secret(s, &format!("{at}.tokens"), e),
        (None, Some(f)) if f.trim().is_empty() => e.add(format!("{at}.tokensFile"), "must not be empty"),
        _ => {}
    }
}

/// A credential reference: an environment variable name, and a complete Secret key if any.
pub(crate) fn check_secret(s: &SecretValue, at: &str, e: &mut Errors) {
    let ok = !s.env.is_empty()
        && !s.env.starts_with(|c: char| c.is_ascii_digit())
        && s.env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        e.add(
            format!("{at}.env"),
            format!("`{}` is not an environment variable name", s.env),
        );
    }
    if let Some(r) = &s.secret_key_ref
        && (r.name.trim().is_empty() || r.key.trim().is_empty())
    {
        e.add(format!("{at}.secretKeyRef"), "needs a Secret `name` and `key`");
    }
}

#[cfg(test)]
mod tests {
    use crate::from_yaml_str;

    const APP: &str = r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {name: s}
spec:
  admin:
    auth: {tokensFile: /etc/spindle/admin-tokens}
  functions:
    - typename: example/*
      endpoint: "https://fns.example/statefun"
      tls: {caFile: ca.pem, certFile: client.pem, keyFile: client.key}
  ingresses:
    - name: web
      http:
        auth: {tokens: {env: INGRESS_TOKENS, secretKeyRef: {name: ingress, key: tokens}}}
    - name: k
      kafka:
        brokers: ["kafka:9093"]
        topics: [{topic: adds, valueType: example/Add, targets: [example/counter]}]
        tls: {}
        sasl: {mechanism: SCRAM-SHA-512, username: spindle, password: {env: KAFKA_PASSWORD}}
  egresses:
    - typename: example/hook
      http: {url: "https://hooks.example/in", tls: {caFile: ca.pem, caOnly: true}}
    - typename: example/out
      nats: {servers: ["tls://nats:4222"], subject: out, tls: {caFile: ca.pem}}
"#;

    fn errors(yaml: &str) -> String {
        match from_yaml_str(yaml, "s.yaml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_security_spec_loads() {
        assert_eq!(errors(APP), "");
    }

    #[test]
    fn names_every_bad_security_field() {
        let bad = APP
            .replace("certFile: client.pem, keyFile: client.key", "certFile: client.pem")
            .replace("{tokensFile: /etc/spindle/admin-tokens}", "{}")
            .replace("env: INGRESS_TOKENS", "env: 9X")
            .replace("username: spindle", "username: \"\"")
            .replace("caFile: ca.pem, caOnly: true", "caOnly: true");
        let msg = errors(&bad);
        for want in [
            "spec.functions[0].tls.keyFile: `certFile` needs the key in `keyFile`",
            "spec.admin.auth: exactly one of `tokens` or `tokensFile` must be set",
            "spec.ingresses[0].http.auth.tokens.env: `9X` is not an environment variable name",
            "spec.ingresses[1].kafka.sasl.username: must not be empty",
            "spec.egresses[0].http.tls.caOnly: `caOnly` trusts only `caFile`, which is not set",
        ] {
            assert!(msg.contains(want), "missing `{want}` in:\n{msg}");
        }
        let plain = APP.replace("https://fns.example", "http://fns.example");
        assert!(
            errors(&plain).contains("spec.functions[0].tls: TLS settings need an `https://` endpoint"),
            "{}",
            errors(&plain)
        );
        let mech = APP.replace("SCRAM-SHA-512", "GSSAPI");
        assert!(
            errors(&mech).contains("spec.ingresses[1].kafka.sasl.mechanism"),
            "{}",
            errors(&mech)
        );
    }
}
