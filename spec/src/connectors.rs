//! The spec's Kafka and NATS JetStream connectors (ingresses and egresses), and secrets
//! referenced by them. Credentials never appear in the spec itself: it names an environment
//! variable (and, in Kubernetes, the Secret the operator fills it from).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::HumanDuration;
use crate::security::{ClientTls, KafkaSasl};

/// A Kafka ingress: records of the listed topics become messages to functions, StateFun's
/// mapping — the record key is the function id, every record goes to each target type.
/// Partitions are assigned to workers explicitly (no consumer-group rebalancing) and their
/// positions live in checkpoints, so every record takes effect exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaIngress {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topics to read and where their records go.
    pub topics: Vec<KafkaTopic>,
    /// Consumer group that the checkpointed positions are committed to after every completed
    /// checkpoint (for lag monitoring and the `group-offsets` startup position). Default: the
    /// application name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group_id: Option<String>,
    /// Where a partition starts when no checkpoint holds a position for it: `earliest`,
    /// `latest`, `group-offsets` or `timestamp`.
    #[serde(default)]
    pub startup_position: StartupPosition,
    /// With `startupPosition: timestamp`: an RFC 3339 time in UTC, e.g. `2026-01-31T12:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timestamp: Option<String>,
    /// Most bytes one fetch asks for per partition.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    /// Speak TLS to the brokers (with these settings; `{}` for the public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Authenticate with SASL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

fn default_fetch_max_bytes() -> u32 {
    1 << 20
}

/// One topic of a Kafka ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaTopic {
    /// Topic name.
    pub topic: String,
    /// Typename of the messages made from its records (`namespace/name`), as functions see it.
    pub value_type: String,
    /// Function types (`namespace/name`) each record is sent to, with the record key (UTF-8)
    /// as the id. A record's `spindle-target` header (`namespace/name`) overrides them.
    pub targets: Vec<String>,
    /// How record values are checked before they are accepted; a value that fails goes to the
    /// dead letters.
    #[serde(default)]
    pub value_format: ValueFormat,
}

/// A check on record values. StateFun primitive value types (`io.statefun.types/…`) are always
/// checked to decode as their wrappers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ValueFormat {
    /// Any bytes.
    #[default]
    Raw,
    /// A JSON document.
    Json,
    /// UTF-8 text.
    Utf8,
}

/// Where a source starts reading when no checkpoint holds its position (the first start, or a
/// topic or stream added later); once a checkpoint holds it, the checkpoint wins.
/// `earliest`: everything retained; `latest`: only what arrives from now on; `group-offsets`
/// (Kafka): the consumer group's committed offsets, `earliest` where it has none;
/// `timestamp`: the first record at or after `startupTimestamp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StartupPosition {
    #[default]
    Earliest,
    Latest,
    GroupOffsets,
    Timestamp,
}

/// A Kafka egress: each record is produced to a topic once the checkpoint of its epoch has
/// completed, with its idempotency key in the `idempotency-key` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaEgress {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic for records that do not name one. Records whose value is a StateFun
    /// `KafkaProducerRecord` (what `kafka_egress_message` of the StateFun SDKs builds) go to the
    /// topic, key and value it carries; any other record goes here, keyed by the id of the
    /// function that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Time budget per record, retries included; then it becomes a dead letter. Unset (the
    /// default): retried for as long as the broker is away, the record staying in every
    /// checkpoint meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Speak TLS to the brokers (with these settings; `{}` for the public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Authenticate with SASL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// What a reader of the topic gets, as in StateFun's Kafka egress: `{type: at-least-once}`
    /// (the default) or `{type: exactly-once, transactionTimeout: 1m}` (Kafka transactions:
    /// a `read_committed` consumer sees every record once). docs/connectors.md says what each
    /// gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_semantic: Option<DeliverySemantic>,
}

impl KafkaEgress {
    /// True when records are written in Kafka transactions.
    pub fn exactly_once(&self) -> bool {
        self.delivery_semantic
            .as_ref()
            .is_some_and(|d| d.kind == DeliveryKind::ExactlyOnce)
    }

    /// The transaction timeout given to the broker (exactly-once): 1 minute unless set.
    pub fn transaction_timeout(&self) -> std::time::Duration {
        self.delivery_semantic
            .as_ref()
            .and_then(|d| d.transaction_timeout)
            .map_or(std::time::Duration::from_secs(60), HumanDuration::as_duration)
    }
}

/// A Kafka egress's delivery guarantee (StateFun's `deliverySemantic`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySemantic {
    /// `at-least-once`: records are produced plainly; after a crash a reader may see a record
    /// twice, with the same `idempotency-key` header. `exactly-once`: records are produced in
    /// Kafka transactions per worker; a `read_committed` consumer sees each exactly once.
    /// `none` (StateFun's fire-and-forget) is accepted and behaves as `at-least-once`: Spindle
    /// never releases a record before its checkpoint.
    #[serde(rename = "type")]
    pub kind: DeliveryKind,
    /// `exactly-once` only: the transaction timeout asked of the broker (at most its
    /// `transaction.max.timeout.ms`, 15 minutes by default); a transaction left open by a
    /// worker that died is aborted after it, if no restarted worker fenced it first. Default
    /// 1 minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_timeout: Option<HumanDuration>,
}

/// The delivery semantics of a Kafka egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryKind {
    None,
    AtLeastOnce,
    ExactlyOnce,
}

/// A NATS JetStream ingress: messages of a stream become messages to functions. One worker
/// reads the stream; the stream sequence it has reached lives in checkpoints, so every message
/// takes effect exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsIngress {
    /// NATS servers, `nats://host:port` (or `tls://host:port`, which requires TLS).
    pub servers: Vec<String>,
    /// How to authenticate; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// Require TLS (with these settings; `{}` for the public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// The JetStream stream to read (it must exist).
    pub stream: String,
    /// Subject filters (wildcards allowed) and where their messages go; a message goes to the
    /// first entry whose filter matches its subject.
    pub subjects: Vec<NatsSubject>,
    /// Where the stream is read from when no checkpoint holds a position: `earliest`,
    /// `latest` or `timestamp` (`group-offsets` is Kafka's).
    #[serde(default)]
    pub startup_position: StartupPosition,
    /// With `startupPosition: timestamp`: an RFC 3339 time in UTC, e.g. `2026-01-31T12:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_timestamp: Option<String>,
}

/// One subject filter of a NATS ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsSubject {
    /// Subject filter, e.g. `orders.>`; the last token of a message's subject is the function id.
    pub subject: String,
    /// Typename of the messages made from it (`namespace/name`).
    pub value_type: String,
    /// Function types (`namespace/name`) each message is sent to. A message's `spindle-target`
    /// header (`namespace/name`) overrides them.
    pub targets: Vec<String>,
    /// How message payloads are checked before they are accepted.
    #[serde(default)]
    pub value_format: ValueFormat,
}

/// A NATS JetStream egress: each record is published once the checkpoint of its epoch has
/// completed, with its idempotency key as `Nats-Msg-Id`, so the stream's duplicate window drops
/// a re-send: exactly once in the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsEgress {
    /// NATS servers, `nats://host:port` (or `tls://host:port`, which requires TLS).
    pub servers: Vec<String>,
    /// How to authenticate; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// Require TLS (with these settings; `{}` for the public web roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Subject to publish to; a stream must capture it.
    pub subject: String,
    /// Time budget per record (waiting for the stream's acknowledgement), retries included;
    /// then it becomes a dead letter. Unset (the default): retried for as long as the server is
    /// away, the record staying in every checkpoint meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// NATS authentication: exactly one of a token or an nkey seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatsAuth {
    /// A token (`authorization { token }` on the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretValue>,
    /// An nkey seed (`SU…`), whose public key the server lists as a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nkey_seed: Option<SecretValue>,
}

/// A credential, read by the worker from an environment variable. In Kubernetes the operator
/// sets that variable from `secretKeyRef`; the value is never part of the spec or ConfigMap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretValue {
    /// Environment variable holding the value, e.g. `NATS_TOKEN`.
    pub env: String,
    /// The Secret key the operator fills the variable from (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the application's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

impl NatsAuth {
    /// Every credential it references.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretValue> {
        self.token.iter().chain(self.nkey_seed.iter())
    }
}

/// Parses an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.fff]Z`) into epoch milliseconds.
pub fn parse_utc_millis(s: &str) -> Result<i64, String> {
    let err = || format!("`{s}` is not an RFC 3339 UTC time like `2026-01-31T12:00:00Z`");
    let rest = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')).ok_or_else(err)?;
    let (date, time) = rest.split_once(['T', 't', ' ']).ok_or_else(err)?;
    let num = |x: &str| x.parse::<i64>().map_err(|_| err());
    let d: Vec<&str> = date.split('-').collect();
    let (time, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 || d[0].len() != 4 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let (y, m, day) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (h, min, sec) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return Err(err());
    }
    let ms = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<3}")[..3])?
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + min) * 60_000 + sec * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_times() {
        assert_eq!(parse_utc_millis("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_utc_millis("2000-03-01T00:00:01.5Z"), Ok(951_868_801_500));
        assert_eq!(parse_utc_millis("2026-12-01T07:36:24.192Z"), Ok(1_796_110_584_192));
        for bad in ["2026-12-01", "2026-13-01T00:00:00Z", "2026-12-01T00:00:00+01:00", "x"] {
            assert!(parse_utc_millis(bad).is_err(), "{bad}");
        }
    }
}
