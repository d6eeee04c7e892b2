//! Each StateFun component kind as entries of the application (as JSON, read back by serde and
//! validated by the caller), with a note saying what each field became. A field that Spindle
//! cannot honour in StateFun's meaning is an error, not a silent drop; fields that only tune a
//! client StateFun used (pool sizes, per-attempt timeouts) are named in the note as not mapped.

use serde_json::{Map, Value as Json, json};
use serde_yaml::Value as Yaml;

use super::Component;
use super::values::{flink_duration, path, required, short, statefun_date, str_field};

/// Which component produced an entry of the application, to name it in validation errors.
pub(super) struct Source {
    /// `spec.functions[0]`, …
    pub entry: String,
    pub document: usize,
    pub kind: String,
}

#[derive(Default)]
pub(super) struct Builder {
    pub functions: Vec<Json>,
    pub ingresses: Vec<Json>,
    pub egresses: Vec<Json>,
    pub notes: Vec<String>,
    sources: Vec<Source>,
}

pub(super) fn unsupported_reason(kind: &str) -> &'static str {
    if kind.contains("kinesis") {
        "Spindle has no AWS Kinesis connector (its log connectors are Kafka and NATS JetStream: write the application with `spindle import` and replace this component)"
    } else {
        "Spindle reads io.statefun.endpoints.v1/http and v2/http, io.statefun.kafka.v1/ingress and egress, io.statefun.playground.v1/ingress and egress"
    }
}

/// An ingress name (a DNS label) from a StateFun id such as `com.example/users`.
fn name_of(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// Kafka client properties (`- key: value` items) that decide whether the client can connect
/// at all; dropping them would not run the module as written.
const KAFKA_SECURITY_PREFIXES: [&str; 3] = ["security.protocol", "ssl.", "sasl."];

/// The keys of a `properties` list, refusing those Spindle cannot give (see
/// `KAFKA_SECURITY_PREFIXES`); the rest tune the client and are listed as not mapped.
fn kafka_properties(spec: &Yaml, at: &str) -> Result<Vec<String>, String> {
    let Some(props) = spec.get("properties") else {
        return Ok(Vec::new());
    };
    let list = props
        .as_sequence()
        .ok_or_else(|| format!("{}: expected a list of `- key: value`", path(at, "properties")))?;
    let mut keys = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let entry = p
            .as_mapping()
            .filter(|m| m.len() == 1)
            .ok_or_else(|| format!("{}[{i}]: expected one `key: value`", path(at, "properties")))?;
        let (k, v) = entry.iter().next().expect("one entry");
        let key = k.as_str().unwrap_or_default().to_string();
        let plaintext = key == "security.protocol" && v.as_str().is_some_and(|v| v.eq_ignore_ascii_case("PLAINTEXT"));
        if KAFKA_SECURITY_PREFIXES.iter().any(|p| key.starts_with(p)) && !plaintext {
            return Err(format!(
                "{}[{i}] `{key}` is not supported: Kafka client security properties are not translated; write the application with `spindle import` and set `tls` / `sasl` of the Kafka connector",
                path(at, "properties")
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn brokers(spec: &Yaml, at: &str) -> Result<Vec<Json>, String> {
    let address = required(spec, at, "address")?;
    let list: Vec<Json> = address
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(Json::from)
        .collect();
    if list.is_empty() {
        return Err(format!("{}: names no broker", path(at, "address")));
    }
    Ok(list)
}

impl Builder {
    /// The component behind a failing field of the application (`spec.ingresses[1].kafka…`).
    pub fn source_of(&self, field: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| field == s.entry || field.starts_with(&format!("{}.", s.entry)))
    }

    fn record(&mut self, c: &Component, entry: String, note: String) {
        self.notes.push(format!("document {} ({}): {note}", c.document, c.kind));
        self.sources.push(Source {
            entry,
            document: c.document,
            kind: c.kind.clone(),
        });
    }

    /// Adds one component. An error starting with `is not supported` is about the kind.
    pub fn component(&mut self, c: &Component) -> Result<(), String> {
        if !c.spec.is_mapping() {
            return Err(format!("{}: expected a mapping, found {}", c.at, short(&c.spec)));
        }
        match c.kind.as_str() {
            "io.statefun.endpoints.v2/http" => {
                let transport = c.spec.get("transport");
                // v2's default (OkHttp) transport has its timeouts under `timeouts`; the async
                // one has them flat beside `type`.
                let timeouts = transport.map(|t| {
                    t.get("timeouts").map_or((t, path(&c.at, "transport")), |x| {
                        (x, path(&c.at, "transport.timeouts"))
                    })
                });
                self.endpoint(c, transport, timeouts)
            }
            "io.statefun.endpoints.v1/http" => {
                let timeouts = c.spec.get("timeouts").map(|t| (t, path(&c.at, "timeouts")));
                self.endpoint(c, None, timeouts)
            }
            "io.statefun.kafka.v1/ingress" => self.kafka_ingress(c),
            "io.statefun.kafka.v1/egress" => self.kafka_egress(c),
            "io.statefun.playground.v1/ingress" => self.playground_ingress(c),
            "io.statefun.playground.v1/egress" => self.playground_egress(c),
            other => Err(format!("is not supported: {}", unsupported_reason(other))),
        }
    }

    fn endpoint(
        &mut self,
        c: &Component,
        transport: Option<&Yaml>,
        timeouts: Option<(&Yaml, String)>,
    ) -> Result<(), String> {
        let (spec, at) = (&c.spec, c.at.as_str());
        let functions = required(spec, at, "functions")?;
        let url = required(spec, at, "urlPathTemplate")?;
        if url.starts_with("http+unix") || url.starts_with("https+unix") {
            return Err(format!(
                "{} `{url}`: UNIX domain sockets are not supported (use http:// or https://)",
                path(at, "urlPathTemplate")
            ));
        }
        let entry = format!("spec.functions[{}]", self.functions.len());
        let mut f = Map::new();
        f.insert("typename".into(), functions.into());
        f.insert("endpoint".into(), url.into());
        let mut mapped = vec![format!("functions {functions} at {url} → {entry}")];
        if let Some(n) = spec.get("maxNumBatchRequests") {
            let n = n
                .as_u64()
                .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                .ok_or_else(|| {
                    format!(
                        "{}: expected a positive number, found {}",
                        path(at, "maxNumBatchRequests"),
                        short(n)
                    )
                })?;
            f.insert("maxBatchSize".into(), n.into());
            mapped.push(format!("maxNumBatchRequests {n} → maxBatchSize"));
        }
        let mut left = Vec::new();
        if let Some(t) = transport {
            let tat = path(at, "transport");
            match str_field(t, &tat, "type")? {
                None | Some("io.statefun.transports.v1/okhttp" | "io.statefun.transports.v1/async") => {}
                Some(other) => {
                    return Err(format!(
                        "{}.type `{other}` is not a StateFun transport (io.statefun.transports.v1/okhttp or /async)",
                        tat
                    ));
                }
            }
            let mut tls = Map::new();
            for (from, to) in [
                ("trust_cacerts", "caFile"),
                ("client_cert", "certFile"),
                ("client_key", "keyFile"),
            ] {
                if let Some(file) = str_field(t, &tat, from)? {
                    if file.starts_with("classpath:") {
                        return Err(format!(
                            "{}.{from} `{file}`: classpath resources exist only inside StateFun's JVM; give a file path",
                            tat
                        ));
                    }
                    tls.insert(to.into(), file.trim_start_matches("file:").into());
                    mapped.push(format!("transport.{from} → tls.{to}"));
                }
            }
            if str_field(t, &tat, "client_key_password")?.is_some() {
                return Err(format!(
                    "{tat}.client_key_password is not supported: Spindle reads unencrypted private keys (decrypt it, e.g. `openssl pkcs8 -in key -out plain.key`)"
                ));
            }
            if !tls.is_empty() {
                f.insert("tls".into(), Json::Object(tls));
            }
            for k in ["pool_ttl", "pool_size", "payload_max_bytes"] {
                if t.get(k).is_some() {
                    left.push(k.to_string());
                }
            }
        }
        if let Some((t, tat)) = timeouts {
            for k in ["call", "connect", "read", "write"] {
                if let Some(v) = t.get(k) {
                    let ms = flink_duration(v).map_err(|e| format!("{tat}.{k}: {e}"))?;
                    left.push(format!("{k} {}", crate::HumanDuration::from_millis(ms)));
                }
            }
        }
        if !left.is_empty() {
            // StateFun fails the job when a call runs out of time and retries it from the last
            // checkpoint; Spindle's unset `callTimeout` keeps retrying the batch, which is that
            // behaviour without the restart. A `callTimeout` would set batches aside instead.
            mapped.push(format!(
                "not mapped: {} (Spindle retries a call with backoff until it succeeds, as StateFun's restart from a checkpoint does; each attempt waits at most a minute)",
                left.join(", ")
            ));
        }
        self.record(c, entry, mapped.join("; "));
        self.functions.push(Json::Object(f));
        Ok(())
    }

    fn kafka_ingress(&mut self, c: &Component) -> Result<(), String> {
        let (spec, at) = (&c.spec, c.at.as_str());
        let id = required(spec, at, "id")?;
        let entry = format!("spec.ingresses[{}]", self.ingresses.len());
        let mut k = Map::new();
        k.insert("brokers".into(), brokers(spec, at)?.into());
        let mut mapped = vec![format!("ingress {id} → {entry} `{}`", name_of(id))];
        if let Some(group) = str_field(spec, at, "consumerGroupId")? {
            k.insert("consumerGroupId".into(), group.into());
        }
        let pat = path(at, "startupPosition");
        let position = spec.get("startupPosition");
        // StateFun 3.x's binder starts from `latest` when no position is given (its
        // documentation says group offsets; `RoutableKafkaIngressSpec` says latest).
        let ty = match position {
            None => "latest",
            Some(p) => required(p, &pat, "type")?,
        };
        match ty {
            "group-offsets" | "earliest" | "latest" => {
                k.insert("startupPosition".into(), ty.into());
            }
            "date" => {
                let date = required(position.expect("a type was read"), &pat, "date")?;
                let ts = statefun_date(date).map_err(|e| format!("{pat}.date: {e}"))?;
                k.insert("startupPosition".into(), "timestamp".into());
                k.insert("startupTimestamp".into(), ts.into());
            }
            "specific-offsets" => {
                return Err(format!(
                    "{pat}.type `specific-offsets` is not supported: Spindle starts from `earliest`, `latest`, `group-offsets` or a `date`"
                ));
            }
            other => {
                return Err(format!(
                    "{pat}.type `{other}` is not a startup position (group-offsets, earliest, latest, specific-offsets, date)"
                ));
            }
        }
        mapped.push(format!(
            "startupPosition {ty}{}",
            if position.is_none() {
                " (StateFun's default)"
            } else {
                ""
            }
        ));
        match str_field(spec, at, "autoOffsetResetPosition")?
            .map(str::to_lowercase)
            .as_deref()
        {
            None | Some("latest" | "earliest") => {}
            Some(other) => {
                return Err(format!(
                    "{} `{other}` is not a position (latest or earliest)",
                    path(at, "autoOffsetResetPosition")
                ));
            }
        }
        if ty == "group-offsets" || spec.get("autoOffsetResetPosition").is_some() {
            mapped.push("where the group has no offset or one out of range, Spindle starts from the earliest retained record (StateFun: autoOffsetResetPosition, default latest)".into());
        }
        let props = kafka_properties(spec, at)?;
        if !props.is_empty() {
            mapped.push(format!("properties not mapped: {}", props.join(", ")));
        }
        let tat = path(at, "topics");
        let topics = spec
            .get("topics")
            .and_then(Yaml::as_sequence)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("{tat}: expected a list of topics (`- topic`, `valueType`, `targets`)"))?;
        let mut out = Vec::new();
        for (i, t) in topics.iter().enumerate() {
            let at = format!("{tat}[{i}]");
            let topic = required(t, &at, "topic")?;
            let value_type = required(t, &at, "valueType")?;
            let targets: Vec<Json> = t
                .get("targets")
                .and_then(Yaml::as_sequence)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("{at}.targets: expected a list of function types"))?
                .iter()
                .enumerate()
                .map(|(j, x)| {
                    x.as_str()
                        .map(Json::from)
                        .ok_or_else(|| format!("{at}.targets[{j}]: expected a function type, found {}", short(x)))
                })
                .collect::<Result<_, _>>()?;
            out.push(json!({"topic": topic, "valueType": value_type, "targets": targets}));
        }
        k.insert("topics".into(), out.into());
        self.record(c, entry, mapped.join("; "));
        self.ingresses
            .push(json!({"name": name_of(id), "kafka": Json::Object(k)}));
        Ok(())
    }

    fn kafka_egress(&mut self, c: &Component) -> Result<(), String> {
        let (spec, at) = (&c.spec, c.at.as_str());
        let id = required(spec, at, "id")?;
        let brokers = brokers(spec, at)?;
        let dat = path(at, "deliverySemantic");
        let semantic = match spec.get("deliverySemantic") {
            None => "at-least-once",
            Some(d) => required(d, &dat, "type")?,
        };
        let gives = match semantic {
            "exactly-once" => {
                "exactly-once → the same: records are produced in Kafka transactions after the checkpoint that made them, a `read_committed` reader sees each once"
            }
            "at-least-once" => {
                "at-least-once → the same: produced after their checkpoint, after a crash possibly twice with the same `idempotency-key` header"
            }
            "none" => "none → behaves as at-least-once (Spindle never releases a record before its checkpoint)",
            other => {
                return Err(format!(
                    "{dat}.type `{other}` is not a delivery semantic (exactly-once, at-least-once, none)"
                ));
            }
        };
        let mut delivery = Map::new();
        delivery.insert("type".into(), semantic.into());
        // The documentation writes both `transactionTimeout` and `transactionTimeoutMillis`.
        if let Some(d) = spec.get("deliverySemantic") {
            for key in ["transactionTimeout", "transactionTimeoutMillis"] {
                if let Some(v) = d.get(key) {
                    let ms = flink_duration(v).map_err(|e| format!("{dat}.{key}: {e}"))?;
                    if semantic == "exactly-once" {
                        delivery.insert(
                            "transactionTimeout".into(),
                            crate::HumanDuration::from_millis(ms).to_string().into(),
                        );
                    }
                }
            }
        }
        let entry = format!("spec.egresses[{}]", self.egresses.len());
        let mut mapped = vec![format!("egress {id} → {entry}; deliverySemantic {gives}")];
        let props = kafka_properties(spec, at)?;
        if !props.is_empty() {
            mapped.push(format!("properties not mapped: {}", props.join(", ")));
        }
        self.record(c, entry, mapped.join("; "));
        self.egresses.push(json!({
            "typename": id,
            "kafka": {"brokers": brokers, "deliverySemantic": Json::Object(delivery)},
        }));
        Ok(())
    }

    fn playground_ingress(&mut self, c: &Component) -> Result<(), String> {
        let port = match c.spec.get("port") {
            None => 8090,
            Some(p) => p
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| format!("{}: expected a port, found {}", path(&c.at, "port"), short(p)))?,
        };
        let entry = format!("spec.ingresses[{}]", self.ingresses.len());
        self.record(
            c,
            entry,
            format!("→ an HTTP ingress on port {port}, the same requests (POST /{{namespace}}/{{type}}/{{id}}, Content-Type application/vnd.{{typename}})"),
        );
        self.ingresses
            .push(json!({"name": format!("playground-{port}"), "http": {"port": port}}));
        Ok(())
    }

    fn playground_egress(&mut self, c: &Component) -> Result<(), String> {
        if let Some(p) = c.spec.get("port")
            && !p.as_u64().is_some_and(|p| (1..=65535).contains(&p))
        {
            return Err(format!("{}: expected a port, found {}", path(&c.at, "port"), short(p)));
        }
        let entry = format!("spec.egresses[{}]", self.egresses.len());
        self.record(
            c,
            entry,
            "→ egress io.statefun.playground/egress as the JSON-lines file .spindle/playground-egress.jsonl; the playground's GET /{topic} on its port is not served".into(),
        );
        self.egresses.push(json!({
            "typename": "io.statefun.playground/egress",
            "file": {"path": ".spindle/playground-egress.jsonl"},
        }));
        Ok(())
    }
}
