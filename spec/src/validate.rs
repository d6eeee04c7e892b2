//! Validation of a parsed spec: every problem is reported with its field path
//! (`spec.functions[1].endpoint: …`), all at once.

use std::collections::HashSet;
use std::fmt;

use crate::schedule::check_schedule;
use crate::security::{check_auth, check_client_tls};
use crate::validate_connectors::{check_kafka_egress, check_nats_egress};
use crate::{API_VERSION, KIND, StatefulApplication, TypeName};

/// The largest key-group count (as Flink's maximum parallelism).
pub const MAX_KEY_GROUPS: u32 = 32_768;

/// One problem, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.functions[1].endpoint`.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every problem found in a spec, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }
}

impl StatefulApplication {
    /// Checks everything serde cannot: formats, ranges, uniqueness and cross-field rules.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = Errors::default();
        if self.api_version != API_VERSION {
            e.add(
                "apiVersion",
                format!("must be `{API_VERSION}`, found `{}`", self.api_version),
            );
        }
        if self.kind != KIND {
            e.add("kind", format!("must be `{KIND}`, found `{}`", self.kind));
        }
        if let Err(reason) = check_dns_label(&self.metadata.name) {
            e.add("metadata.name", reason);
        }
        let spec = &self.spec;
        if spec.key_groups == 0 || spec.key_groups > MAX_KEY_GROUPS {
            e.add("spec.keyGroups", format!("must be between 1 and {MAX_KEY_GROUPS}"));
        }
        if spec.workers == 0 {
            e.add("spec.workers", "must be at least 1");
        } else if spec.workers > spec.key_groups {
            e.add(
                "spec.workers",
                format!(
                    "{} workers exceed the {} key groups; each worker needs one",
                    spec.workers, spec.key_groups
                ),
            );
        }
        if spec.failure_timeout.0 < std::time::Duration::from_millis(100) {
            e.add("spec.failureTimeout".to_string(), "must be at least 100ms");
        }
        if spec.max_buffered_messages == 0 {
            e.add("spec.maxBufferedMessages", "must be at least 1");
        }
        let m = &spec.memory;
        for (field, bytes) in [
            ("heldEgressBytes", m.held_egress_bytes),
            ("peerQueueBytes", m.peer_queue_bytes),
            ("sinkQueueBytes", m.sink_queue_bytes),
            ("idempotencyKeyBytes", m.idempotency_key_bytes),
            ("delayedMessageBytes", m.delayed_message_bytes),
        ] {
            // Below one large message a bound would refuse everything after the first.
            if bytes < 1 << 16 {
                e.add(format!("spec.memory.{field}"), "must be at least 65536 (64 KiB)");
            }
        }
        self.validate_functions(&mut e);
        self.validate_ingresses(&mut e);
        self.validate_egresses(&mut e);
        if let Some(pause) = spec.checkpoint.min_pause {
            if spec.checkpoint.interval.as_duration().is_zero() {
                e.add(
                    "spec.checkpoint.minPause",
                    "needs checkpoints, which `interval: 0s` turns off",
                );
            } else if pause.as_duration() > spec.checkpoint.interval.as_duration() {
                e.add(
                    "spec.checkpoint.minPause",
                    format!("{pause} is longer than `interval` ({}): group commit never starts a checkpoint earlier than the interval then", spec.checkpoint.interval),
                );
            }
        }
        if let Some(auth) = spec.admin.as_ref().and_then(|a| a.auth.as_ref()) {
            check_auth(auth, "spec.admin.auth", &mut e);
        }
        if spec.checkpoint.retained == 0 {
            e.add("spec.checkpoint.retained", "must be at least 1");
        }
        if let Some(secret) = &spec.checkpoint.credentials_secret
            && let Err(reason) = check_dns_subdomain(secret)
        {
            e.add("spec.checkpoint.credentialsSecret", reason);
        }
        self.validate_savepoints(&mut e);
        crate::kubernetes::validate_kubernetes(&spec.kubernetes, &mut e);
        if e.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(e.0))
        }
    }

    fn validate_functions(&self, e: &mut Errors) {
        if self.spec.functions.is_empty() {
            e.add("spec.functions", "at least one function is required");
        }
        let mut seen = HashSet::new();
        for (i, f) in self.spec.functions.iter().enumerate() {
            let at = |field: &str| format!("spec.functions[{i}].{field}");
            if let Err(reason) = check_function_typename(&f.typename) {
                e.add(at("typename"), reason);
            } else if f.typename.split('/').next() == Some("spindle.reply") {
                e.add(
                    at("typename"),
                    "the namespace `spindle.reply` is reserved: its addresses are requests waiting for their reply",
                );
            }
            if !f.types.is_empty() {
                match f.typename.strip_suffix("/*") {
                    None => e.add(
                        at("types"),
                        format!(
                            "only a `namespace/*` entry lists its types; `{}` is one type",
                            f.typename
                        ),
                    ),
                    Some(ns) => {
                        let mut names = HashSet::new();
                        for (j, name) in f.types.iter().enumerate() {
                            if name == "*" || name.contains('/') || TypeName::new(ns, name).is_err() {
                                e.add(
                                    at(&format!("types[{j}]")),
                                    format!("`{name}` is not a type name in `{ns}`"),
                                );
                            } else if !names.insert(name.as_str()) {
                                e.add(at(&format!("types[{j}]")), format!("`{name}` is listed twice"));
                            }
                        }
                    }
                }
            }
            if !seen.insert(f.typename.as_str()) {
                e.add(at("typename"), format!("`{}` is declared twice", f.typename));
            }
            if let Err(reason) = check_endpoint(&f.endpoint) {
                e.add(at("endpoint"), reason);
            }
            if let Some(tls) = &f.tls {
                check_https(&f.endpoint, &at("tls"), e);
                check_client_tls(tls, &at("tls"), e);
            }
            if let Some(r) = &f.resources {
                crate::kubernetes::validate_resources(r, &at("resources"), e);
            }
            if f.max_batch_size == 0 {
                e.add(at("maxBatchSize"), "must be at least 1");
            }
            if f.max_in_flight == 0 {
                e.add(at("maxInFlight"), "must be at least 1");
            }
            if f.call_timeout.is_some_and(|t| t.0.is_zero()) {
                e.add(at("callTimeout"), "must be longer than zero");
            }
            if let Some(local) = &f.local
                && local.command.first().is_none_or(|p| p.trim().is_empty())
            {
                e.add(at("local.command"), "must name a program to run");
            }
        }
    }

    fn validate_ingresses(&self, e: &mut Errors) {
        let mut names = HashSet::new();
        let mut ports = HashSet::new();
        for (i, ing) in self.spec.ingresses.iter().enumerate() {
            let at = |field: &str| format!("spec.ingresses[{i}].{field}");
            if ing.name.trim().is_empty() {
                e.add(at("name"), "must not be empty");
            } else if !names.insert(ing.name.as_str()) {
                e.add(at("name"), format!("`{}` is declared twice", ing.name));
            }
            let kinds = ing.http.is_some() as u8
                + ing.kafka.is_some() as u8
                + ing.nats.is_some() as u8
                + ing.schedule.is_some() as u8;
            if kinds != 1 {
                e.add(
                    format!("spec.ingresses[{i}]"),
                    "exactly one ingress kind must be set (http, kafka, nats or schedule)",
                );
            }
            if let Some(schedule) = &ing.schedule {
                let serves = |t: &str| TypeName::parse(t).is_ok_and(|t| self.serves(&t));
                check_schedule(schedule, &at("schedule"), serves, e);
            }
            if let Some(http) = &ing.http {
                if !ports.insert(http.port) {
                    e.add(
                        at("http.port"),
                        format!("port {} is used by another ingress", http.port),
                    );
                }
                if http.max_body_bytes == 0 {
                    e.add(at("http.maxBodyBytes"), "must be at least 1");
                }
                let reply = http.reply_timeout.as_duration();
                if reply.is_zero() || reply > std::time::Duration::from_secs(15 * 60) {
                    e.add(
                        at("http.replyTimeout"),
                        "must be above zero and at most 15m (the idempotency window)",
                    );
                }
                if let Some(auth) = &http.auth {
                    check_auth(auth, &at("http.auth"), e);
                }
            }
            if let Some(kafka) = &ing.kafka {
                self.check_kafka_ingress(kafka, &at("kafka"), e);
            }
            if let Some(nats) = &ing.nats {
                self.check_nats_ingress(nats, &at("nats"), e);
            }
        }
    }

    fn validate_egresses(&self, e: &mut Errors) {
        let mut seen = HashSet::new();
        for (i, eg) in self.spec.egresses.iter().enumerate() {
            let at = |field: &str| format!("spec.egresses[{i}].{field}");
            if let Err(err) = TypeName::parse(&eg.typename) {
                e.add(at("typename"), err.to_string());
            } else if !seen.insert(eg.typename.as_str()) {
                e.add(at("typename"), format!("`{}` is declared twice", eg.typename));
            }
            let kinds =
                eg.http.is_some() as u8 + eg.file.is_some() as u8 + eg.kafka.is_some() as u8 + eg.nats.is_some() as u8;
            if kinds != 1 {
                e.add(
                    format!("spec.egresses[{i}]"),
                    "exactly one egress kind must be set (http, file, kafka or nats)",
                );
            }
            if let Some(kafka) = &eg.kafka {
                check_kafka_egress(kafka, &at("kafka"), e);
            }
            if let Some(nats) = &eg.nats {
                check_nats_egress(nats, &at("nats"), e);
            }
            if let Some(http) = &eg.http {
                if let Err(reason) = check_absolute_http_url(&http.url) {
                    e.add(at("http.url"), reason);
                }
                if http.max_in_flight == 0 {
                    e.add(at("http.maxInFlight"), "must be at least 1");
                }
                if http.timeout.is_some_and(|t| t.0.is_zero()) {
                    e.add(at("http.timeout"), "must be longer than zero");
                }
                if let Some(tls) = &http.tls {
                    check_https(&http.url, &at("http.tls"), e);
                    check_client_tls(tls, &at("http.tls"), e);
                }
            }
            if let Some(file) = &eg.file
                && file.path.trim().is_empty()
            {
                e.add(at("file.path"), "must not be empty");
            }
        }
    }

    /// True when some function entry serves type `t`.
    pub(crate) fn serves(&self, t: &TypeName) -> bool {
        self.spec.functions.iter().any(|f| match f.typename.strip_suffix("/*") {
            Some(ns) => ns == t.namespace(),
            None => f.typename == t.as_str(),
        })
    }
}

/// A function typename: `ns/name`, or `ns/*` for a whole namespace.
fn check_function_typename(s: &str) -> Result<(), String> {
    if let Some(ns) = s.strip_suffix("/*") {
        TypeName::new(ns, "x").map_err(|_| format!("`{s}` is not a typename pattern: expected `namespace/*`"))?;
        return Ok(());
    }
    if s.contains('*') {
        return Err(format!("`{s}`: `*` is only allowed as the whole name (`namespace/*`)"));
    }
    TypeName::parse(s).map(|_| ()).map_err(|e| e.to_string())
}

/// TLS settings belong to an `https://` URL.
fn check_https(url: &str, at: &str, e: &mut Errors) {
    if url.starts_with("http://") {
        e.add(
            at,
            format!("TLS settings need an `https://` endpoint, but `{url}` is plain HTTP"),
        );
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    check_absolute_http_url(endpoint)?;
    let without = endpoint.replace("{function.name}", "");
    if let Some(start) = without.find('{') {
        let end = without[start..].find('}').map_or(without.len(), |e| start + e + 1);
        return Err(format!(
            "unknown placeholder `{}`: the only placeholder is {{function.name}}",
            &without[start..end]
        ));
    }
    Ok(())
}

fn check_absolute_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{url}` is not an absolute URL: it must start with http:// or https://"))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` contains whitespace"));
    }
    Ok(())
}

fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a DNS-1123 label (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
        ))
    }
}

/// A Kubernetes object name such as a Secret's: DNS-1123 labels joined by dots, at most 253.
fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() <= 253 && name.split('.').all(|label| check_dns_label(label).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid object name (lowercase letters, digits, '-' and '.', at most 253)"
        ))
    }
}

/// A savepoint's name: 1-63 characters of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter
/// or digit, and not only digits (a number names a checkpoint). It is an object name in
/// checkpoint storage.
pub fn check_savepoint_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("`{name}` is not a savepoint name: 1-63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!(
            "`{name}` is not a savepoint name: it must start with a-z or 0-9"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`{name}` is not a savepoint name: `{c}` is not one of a-z, 0-9, `.`, `_`, `-`"
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{name}` is not a savepoint name: only digits name a checkpoint"
        ));
    }
    Ok(())
}

impl StatefulApplication {
    fn validate_savepoints(&self, e: &mut Errors) {
        let c = &self.spec.checkpoint;
        let off = c.interval.as_duration().is_zero();
        if let Some(name) = &c.savepoint_request {
            if let Err(reason) = check_savepoint_name(name) {
                e.add("spec.checkpoint.savepointRequest", reason);
            } else if off {
                e.add(
                    "spec.checkpoint.savepointRequest",
                    "needs checkpoints, which `interval: 0s` turns off",
                );
            }
        }
        match &c.restore_from {
            Some(from) => {
                let number = !from.is_empty() && from.chars().all(|ch| ch.is_ascii_digit());
                if number {
                    if from.parse::<u64>().map_or(true, |n| n == 0) {
                        e.add(
                            "spec.checkpoint.restoreFrom",
                            format!("`{from}` is not a checkpoint number (1 or more)"),
                        );
                    }
                } else if let Err(reason) = check_savepoint_name(from) {
                    e.add(
                        "spec.checkpoint.restoreFrom",
                        format!("{reason} (nor a checkpoint number)"),
                    );
                }
                if off {
                    e.add(
                        "spec.checkpoint.restoreFrom",
                        "needs checkpoints, which `interval: 0s` turns off",
                    );
                }
                if let Some(app) = &c.restore_from_application {
                    let ok = match app.split_once('/') {
                        Some((ns, name)) => check_dns_subdomain(ns).is_ok() && check_dns_subdomain(name).is_ok(),
                        None => check_dns_subdomain(app).is_ok(),
                    };
                    if !ok {
                        e.add(
                            "spec.checkpoint.restoreFromApplication",
                            format!("`{app}` is not an application: `name` or `namespace/name`"),
                        );
                    }
                }
            }
            None => {
                if c.restore_from_application.is_some() {
                    e.add("spec.checkpoint.restoreFromApplication", "needs `restoreFrom`");
                }
                if c.restore_from_storage.is_some() {
                    e.add("spec.checkpoint.restoreFromStorage", "needs `restoreFrom`");
                }
            }
        }
    }
}

#[cfg(test)]
mod savepoint_tests {
    use crate::from_yaml_str;

    fn errors(checkpoint: &str) -> String {
        let yaml = format!(
            "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\nmetadata: {{name: app}}\nspec:\n  functions:\n    - {{typename: example/f, endpoint: \"http://127.0.0.1:1/\"}}\n  checkpoint: {checkpoint}\n"
        );
        match from_yaml_str(&yaml, "s.yaml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn savepoint_fields_are_checked() {
        assert_eq!(errors("{savepointRequest: before-v2, restoreFrom: before-v1}"), "");
        assert_eq!(
            errors("{restoreFrom: \"42\", restoreFromApplication: prod/greeter}"),
            ""
        );
        let msg = errors("{savepointRequest: Before, restoreFrom: \"0\"}");
        assert!(
            msg.contains("spec.checkpoint.savepointRequest: `Before` is not a savepoint name"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.checkpoint.restoreFrom: `0` is not a checkpoint number"),
            "{msg}"
        );
        let msg = errors("{restoreFromStorage: \"s3://b/p\"}");
        assert!(
            msg.contains("spec.checkpoint.restoreFromStorage: needs `restoreFrom`"),
            "{msg}"
        );
        let msg = errors("{restoreFrom: a/b, interval: 0s}");
        assert!(msg.contains("`/` is not one of"), "{msg}");
        assert!(msg.contains("needs checkpoints"), "{msg}");
        assert!(crate::check_savepoint_name("123").is_err());
    }
}
