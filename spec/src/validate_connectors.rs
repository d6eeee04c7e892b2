//! Validation of the Kafka and NATS connectors, with field paths like the rest of the spec.

use std::collections::HashSet;

use crate::connectors::{
    DeliveryKind, KafkaEgress, KafkaIngress, NatsAuth, NatsEgress, NatsIngress, StartupPosition, parse_utc_millis,
};
use crate::security::{ClientTls, KafkaSasl};
use crate::security::{check_client_tls, check_sasl};
use crate::validate::Errors;
use crate::{StatefulApplication, TypeName};

impl StatefulApplication {
    pub(crate) fn check_kafka_ingress(&self, k: &KafkaIngress, at: &str, e: &mut Errors) {
        check_brokers(&k.brokers, &format!("{at}.brokers"), e);
        if k.topics.is_empty() {
            e.add(format!("{at}.topics"), "at least one topic is required");
        }
        let mut seen = HashSet::new();
        for (j, t) in k.topics.iter().enumerate() {
            let at = format!("{at}.topics[{j}]");
            if !valid_topic(&t.topic) {
                e.add(
                    format!("{at}.topic"),
                    format!(
                        "`{}` is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)",
                        t.topic
                    ),
                );
            } else if !seen.insert(t.topic.as_str()) {
                e.add(format!("{at}.topic"), format!("topic `{}` is listed twice", t.topic));
            }
            self.check_routing(&t.value_type, &t.targets, &at, e);
        }
        if k.consumer_group_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
            e.add(format!("{at}.consumerGroupId"), "must not be empty");
        }
        check_startup(k.startup_position, k.startup_timestamp.as_deref(), true, at, e);
        if k.fetch_max_bytes < 1024 {
            e.add(format!("{at}.fetchMaxBytes"), "must be at least 1024");
        }
        check_kafka_security(k.tls.as_ref(), k.sasl.as_ref(), at, e);
        if k.startup_position == StartupPosition::GroupOffsets && (k.tls.is_some() || k.sasl.is_some()) {
            e.add(
                format!("{at}.startupPosition"),
                "`group-offsets` is not supported with TLS or SASL yet (consumer-group calls are plain text); use earliest, latest or timestamp",
            );
        }
    }

    pub(crate) fn check_nats_ingress(&self, n: &NatsIngress, at: &str, e: &mut Errors) {
        check_servers(&n.servers, &format!("{at}.servers"), e);
        if let Some(auth) = &n.auth {
            check_auth(auth, &format!("{at}.auth"), e);
        }
        if !valid_stream(&n.stream) {
            e.add(
                format!("{at}.stream"),
                format!(
                    "`{}` is not a JetStream stream name (no spaces, `.`, `*`, `>`)",
                    n.stream
                ),
            );
        }
        if n.subjects.is_empty() {
            e.add(format!("{at}.subjects"), "at least one subject is required");
        }
        for (j, s) in n.subjects.iter().enumerate() {
            let at = format!("{at}.subjects[{j}]");
            if let Err(reason) = check_subject(&s.subject, true) {
                e.add(format!("{at}.subject"), reason);
            }
            self.check_routing(&s.value_type, &s.targets, &at, e);
        }
        check_startup(n.startup_position, n.startup_timestamp.as_deref(), false, at, e);
        if let Some(tls) = &n.tls {
            check_client_tls(tls, &format!("{at}.tls"), e);
        }
    }

    /// A value type and targets: typenames, and every target served by a function.
    fn check_routing(&self, value_type: &str, targets: &[String], at: &str, e: &mut Errors) {
        if let Err(err) = TypeName::parse(value_type) {
            e.add(format!("{at}.valueType"), err.to_string());
        }
        if targets.is_empty() {
            e.add(format!("{at}.targets"), "at least one target function type is required");
        }
        for (k, t) in targets.iter().enumerate() {
            match TypeName::parse(t) {
                Err(err) => e.add(format!("{at}.targets[{k}]"), err.to_string()),
                Ok(t) if !self.serves(&t) => {
                    e.add(format!("{at}.targets[{k}]"), format!("no function serves type `{t}`"));
                }
                Ok(_) => {}
            }
        }
    }
}

pub(crate) fn check_kafka_egress(k: &KafkaEgress, at: &str, e: &mut Errors) {
    check_brokers(&k.brokers, &format!("{at}.brokers"), e);
    if let Some(t) = &k.topic
        && !valid_topic(t)
    {
        e.add(
            format!("{at}.topic"),
            format!("`{t}` is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
        );
    }
    if k.timeout.is_some_and(|t| t.0.is_zero()) {
        e.add(format!("{at}.timeout"), "must be longer than zero");
    }
    if let Some(d) = &k.delivery_semantic
        && let Some(t) = d.transaction_timeout
    {
        let at = format!("{at}.deliverySemantic.transactionTimeout");
        if d.kind != DeliveryKind::ExactlyOnce {
            e.add(at, "applies to `type: exactly-once` only");
        } else if t.0 < std::time::Duration::from_secs(1) {
            e.add(
                at,
                "must be at least 1s (Kafka counts it in milliseconds, and a transaction lasts a checkpoint)",
            );
        }
    }
    check_kafka_security(k.tls.as_ref(), k.sasl.as_ref(), at, e);
}

fn check_kafka_security(tls: Option<&ClientTls>, sasl: Option<&KafkaSasl>, at: &str, e: &mut Errors) {
    if let Some(tls) = tls {
        check_client_tls(tls, &format!("{at}.tls"), e);
    }
    if let Some(sasl) = sasl {
        check_sasl(sasl, &format!("{at}.sasl"), e);
    }
}

pub(crate) fn check_nats_egress(n: &NatsEgress, at: &str, e: &mut Errors) {
    check_servers(&n.servers, &format!("{at}.servers"), e);
    if let Some(auth) = &n.auth {
        check_auth(auth, &format!("{at}.auth"), e);
    }
    if let Err(reason) = check_subject(&n.subject, false) {
        e.add(format!("{at}.subject"), reason);
    }
    if n.timeout.is_some_and(|t| t.0.is_zero()) {
        e.add(format!("{at}.timeout"), "must be longer than zero");
    }
    if let Some(tls) = &n.tls {
        check_client_tls(tls, &format!("{at}.tls"), e);
    }
}

fn check_brokers(brokers: &[String], at: &str, e: &mut Errors) {
    if brokers.is_empty() {
        e.add(at, "at least one broker `host:port` is required");
    }
    for (i, b) in brokers.iter().enumerate() {
        let ok = b
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            e.add(format!("{at}[{i}]"), format!("`{b}` is not `host:port`"));
        }
    }
}

fn check_servers(servers: &[String], at: &str, e: &mut Errors) {
    if servers.is_empty() {
        e.add(at, "at least one server `nats://host:port` is required");
    }
    for (i, s) in servers.iter().enumerate() {
        let rest = s
            .strip_prefix("nats://")
            .or_else(|| s.strip_prefix("tls://"))
            .unwrap_or(s);
        let ok = rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            e.add(format!("{at}[{i}]"), format!("`{s}` is not `nats://host:port`"));
        }
    }
}

fn check_auth(auth: &NatsAuth, at: &str, e: &mut Errors) {
    match (&auth.token, &auth.nkey_seed) {
        (Some(_), Some(_)) | (None, None) => e.add(at, "exactly one of `token` or `nkeySeed` must be set"),
        _ => {}
    }
    for (name, s) in [("token", &auth.token), ("nkeySeed", &auth.nkey_seed)] {
        let Some(s) = s else { continue };
        let ok = !s.env.is_empty()
            && !s.env.starts_with(|c: char| c.is_ascii_digit())
            && s.env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            e.add(
                format!("{at}.{name}.env"),
                format!("`{}` is not an environment variable name", s.env),
            );
        }
        if let Some(r) = &s.secret_key_ref
            && (r.name.trim().is_empty() || r.key.trim().is_empty())
        {
            e.add(format!("{at}.{name}.secretKeyRef"), "needs a Secret `name` and `key`");
        }
    }
}

fn check_startup(p: StartupPosition, timestamp: Option<&str>, kafka: bool, at: &str, e: &mut Errors) {
    match (p, timestamp) {
        (StartupPosition::Timestamp, None) => e.add(
            format!("{at}.startupTimestamp"),
            "`startupPosition: timestamp` needs a startupTimestamp",
        ),
        (StartupPosition::Timestamp, Some(t)) => {
            if let Err(reason) = parse_utc_millis(t) {
                e.add(format!("{at}.startupTimestamp"), reason);
            }
        }
        (_, Some(_)) => e.add(
            format!("{at}.startupTimestamp"),
            "only `startupPosition: timestamp` takes a timestamp",
        ),
        (StartupPosition::GroupOffsets, None) if !kafka => e.add(
            format!("{at}.startupPosition"),
            "`group-offsets` is a Kafka startup position; use earliest, latest or timestamp",
        ),
        _ => {}
    }
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn valid_stream(s: &str) -> bool {
    !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

/// A subject (`filter`: wildcards allowed): dot-separated non-empty tokens.
fn check_subject(s: &str, filter: bool) -> Result<(), String> {
    let tokens: Vec<&str> = s.split('.').collect();
    let bad = |why: &str| Err(format!("`{s}` is not a NATS subject: {why}"));
    if s.is_empty() || tokens.iter().any(|t| t.is_empty() || t.contains(char::is_whitespace)) {
        return bad("expected dot-separated tokens without spaces");
    }
    for (i, t) in tokens.iter().enumerate() {
        if (t.contains('*') && *t != "*") || (t.contains('>') && (*t != ">" || i + 1 != tokens.len())) {
            return bad("`*` must be a whole token, `>` the whole last token");
        }
        if !filter && (*t == "*" || *t == ">") {
            return bad("a subject to publish to has no wildcards");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::from_yaml_str;

    const APP: &str = r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {name: c}
spec:
  functions:
    - {typename: example/*, endpoint: "http://f:8000/"}
  ingresses:
    - name: k
      kafka:
        brokers: ["kafka:9092"]
        topics: [{topic: adds, valueType: example/Add, targets: [example/counter], valueFormat: json}]
        startupPosition: timestamp
        startupTimestamp: "2026-01-31T12:00:00Z"
    - name: n
      nats:
        servers: ["nats://nats:4222"]
        auth: {token: {env: NATS_TOKEN, secretKeyRef: {name: nats, key: token}}}
        stream: IN
        subjects: [{subject: "in.>", valueType: example/Add, targets: [example/counter]}]
  egresses:
    - typename: example/totals
      kafka: {brokers: ["kafka:9092"], topic: totals}
    - typename: example/out
      nats: {servers: ["nats://nats:4222"], subject: out.totals}
"#;

    fn errors(yaml: &str) -> String {
        match from_yaml_str(yaml, "c.yaml") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_connector_spec_loads() {
        assert_eq!(errors(APP), "");
    }

    #[test]
    fn names_every_bad_connector_field() {
        let bad = APP
            .replace("kafka:9092\"]\n        topics", "kafka\"]\n        topics")
            .replace(
                "targets: [example/counter], valueFormat",
                "targets: [other/counter], valueFormat",
            )
            .replace("2026-01-31T12:00:00Z", "yesterday")
            .replace("env: NATS_TOKEN", "env: 1TOKEN")
            .replace("subject: \"in.>\"", "subject: \"in.>.x\"")
            .replace("subject: out.totals", "subject: out.*");
        let msg = errors(&bad);
        for want in [
            "spec.ingresses[0].kafka.brokers[0]: `kafka` is not `host:port`",
            "spec.ingresses[0].kafka.topics[0].targets[0]: no function serves type `other/counter`",
            "spec.ingresses[0].kafka.startupTimestamp: `yesterday` is not an RFC 3339",
            "spec.ingresses[1].nats.auth.token.env: `1TOKEN` is not an environment variable name",
            "spec.ingresses[1].nats.subjects[0].subject: `in.>.x` is not a NATS subject",
            "spec.egresses[1].nats.subject: `out.*` is not a NATS subject",
        ] {
            assert!(msg.contains(want), "missing `{want}` in:\n{msg}");
        }
        let group = APP.replace("stream: IN", "stream: IN\n        startupPosition: group-offsets");
        assert!(errors(&group).contains("spec.ingresses[1].nats.startupPosition: `group-offsets` is a Kafka"));
    }
}
