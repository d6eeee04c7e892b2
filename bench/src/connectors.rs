//! Records/s through the connectors: Kafka → function → Kafka and NATS JetStream → function →
//! JetStream, through 1 and 3 workers (in this process, a cluster over loopback gRPC) with
//! checkpoints every second — so at the exactly-once guarantee: output leaves after its
//! checkpoint. Each configuration preloads `records` inputs (`example/Add` for 1,000 counters)
//! into a fresh topic or stream, starts the workers from the earliest position, and measures
//! from the start until every output record is in the output topic or stream. The brokers are
//! the tests' (tansu 0.6, nats-server 2.15 from the project venv), started here on loopback.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::harness::{Harness, free_addr, start_cluster};
use crate::report::load_average;

#[derive(Debug, clap::Args)]
pub struct ConnectorArgs {
    /// Input records per configuration.
    #[arg(long, default_value_t = 30_000)]
    pub records: u64,
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub workers: Vec<u32>,
    /// The venv holding `bin/tansu` and `bin/nats-server` (`e2e/python/setup-venv.sh`).
    #[arg(long, env = "SPINDLE_PY_VENV", default_value = "target/py-venv")]
    pub venv: PathBuf,
}

const PARTITIONS: i32 = 6;
const KEYS: u64 = 1000;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_broker(mut cmd: Command, port: u16, what: &str) -> anyhow::Result<Broker> {
    let mut child = Broker(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if let Some(status) = child.0.try_wait()? {
            bail!("{what} exited ({status})");
        }
        ensure!(Instant::now() < deadline, "{what} not listening after 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(child)
}

fn add(i: u64) -> Vec<u8> {
    serde_json::json!({"seq": i, "value": 1}).to_string().into_bytes()
}

pub async fn run(args: &ConnectorArgs) -> anyhow::Result<()> {
    let tansu_exe = args.venv.join("bin/tansu");
    let nats_exe = args.venv.join("bin/nats-server");
    ensure!(
        tansu_exe.exists() && nats_exe.exists(),
        "{} needs tansu and nats-server: run `bash e2e/python/setup-venv.sh {}`",
        args.venv.display(),
        args.venv.display()
    );
    let harness = Harness::start().await?;
    let dir = std::env::temp_dir().join(format!("spindle-bench-connectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let kport = free_addr()?.port();
    let url = format!("tcp://127.0.0.1:{kport}");
    let mut cmd = Command::new(&tansu_exe);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
    ]);
    let _tansu = start_broker(cmd, kport, "tansu").await?;
    let kafka = format!("127.0.0.1:{kport}");

    let nport = free_addr()?.port();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{nport}\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join("js").display()
        ),
    )?;
    let mut cmd = Command::new(&nats_exe);
    cmd.arg("-c").arg(&conf);
    let _nats = start_broker(cmd, nport, "nats-server").await?;
    let nats = format!("nats://127.0.0.1:{nport}");

    println!(
        "spindle-bench connectors: {} records per configuration, checkpoints every 1 s (output leaves after its checkpoint), {} cores, load {}",
        args.records,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!("brokers: tansu 0.6 at {kafka} (memory storage), nats-server at {nats} (JetStream, file storage)");
    println!(
        "{:<28} {:>7} {:>9} {:>10} {:>10}",
        "path", "workers", "records", "seconds", "records/s"
    );
    let result = async {
        for &w in &args.workers {
            let secs = kafka_round(args, &harness, &kafka, w, &dir).await?;
            println!(
                "{:<28} {:>7} {:>9} {:>10.2} {:>10.0}",
                "kafka -> function -> kafka",
                w,
                args.records,
                secs,
                args.records as f64 / secs
            );
            let secs = nats_round(args, &harness, &nats, w, &dir).await?;
            println!(
                "{:<28} {:>7} {:>9} {:>10.2} {:>10.0}",
                "nats -> function -> nats",
                w,
                args.records,
                secs,
                args.records as f64 / secs
            );
        }
        anyhow::Ok(())
    }
    .await;
    println!("machine load after the run: {}", load_average());
    harness.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Waits until `count()` reaches `want`; the seconds since `started`.
async fn wait_for<F, Fut>(started: Instant, want: u64, mut count: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let deadline = started + Duration::from_secs(600);
    loop {
        let n = count().await?;
        if n >= want {
            return Ok(started.elapsed().as_secs_f64());
        }
        ensure!(Instant::now() < deadline, "only {n} of {want} outputs after 600 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn end_offsets(client: &Client, topic: &str, partitions: i32) -> anyhow::Result<u64> {
    let mut sum = 0;
    for p in 0..partitions {
        let pc = client.partition_client(topic, p, UnknownTopicHandling::Retry).await?;
        sum += pc.fetch_records(0, 1..1024, 10).await?.1 as u64;
    }
    Ok(sum)
}

async fn kafka_round(
    args: &ConnectorArgs,
    h: &Harness,
    broker: &str,
    workers: u32,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let client = ClientBuilder::new(vec![broker.to_string()]).build().await?;
    let (input, output) = (format!("bench-in-{workers}"), format!("bench-out-{workers}"));
    let controller = client.controller_client()?;
    controller.create_topic(&input, PARTITIONS, 1, 5_000).await?;
    controller.create_topic(&output, PARTITIONS, 1, 5_000).await?;
    let now = chrono::DateTime::from_timestamp_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64,
    )
    .unwrap_or_default();
    for p in 0..PARTITIONS {
        let pc = client
            .partition_client(input.clone(), p, UnknownTopicHandling::Retry)
            .await?;
        let mine: Vec<u64> = (0..args.records)
            .filter(|i| (*i % PARTITIONS as u64) as i32 == p)
            .collect();
        for chunk in mine.chunks(1000) {
            let records = chunk
                .iter()
                .map(|i| Record {
                    key: Some(format!("c{}", i % KEYS).into_bytes()),
                    value: Some(add(*i)),
                    headers: Default::default(),
                    timestamp: now,
                })
                .collect();
            pc.produce(records, Compression::NoCompression).await?;
        }
    }
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: kafka-bench-{workers}}}
spec:
  workers: {workers}
  functions:
    - {{typename: example/*, endpoint: "http://127.0.0.1:{port}/statefun"}}
  ingresses:
    - name: in
      kafka: {{brokers: ["{broker}"], topics: [{{topic: {input}, valueType: example/Add, targets: [example/counter]}}]}}
  egresses:
    - typename: example/totals
      kafka: {{brokers: ["{broker}"], topic: {output}}}
  checkpoint: {{interval: 1s, storage: {storage}}}
"#,
        port = h.function.port,
        storage = dir.join(format!("kafka-{workers}")).display()
    );
    let started = Instant::now();
    let cluster = start_cluster(
        &spindle_spec::from_yaml_str(&yaml, "connector bench")?,
        workers,
        dir,
        false,
    )
    .await?;
    let secs = wait_for(started, args.records, || end_offsets(&client, &output, PARTITIONS)).await?;
    for w in cluster {
        w.shutdown().await;
    }
    Ok(secs)
}

async fn nats_round(
    args: &ConnectorArgs,
    h: &Harness,
    url: &str,
    workers: u32,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let (input, output) = (format!("BIN{workers}"), format!("BOUT{workers}"));
    for (name, subject) in [
        (&input, format!("bin{workers}.>")),
        (&output, format!("bout{workers}.>")),
    ] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject],
            ..Default::default()
        })
        .await?;
    }
    let ids: Vec<u64> = (0..args.records).collect();
    for chunk in ids.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for i in chunk {
            acks.push(
                js.publish(format!("bin{workers}.c{}", i % KEYS), add(*i).into())
                    .await?,
            );
        }
        for a in acks {
            a.await?;
        }
    }
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: nats-bench-{workers}}}
spec:
  workers: {workers}
  functions:
    - {{typename: example/*, endpoint: "http://127.0.0.1:{port}/statefun"}}
  ingresses:
    - name: in
      nats: {{servers: ["{url}"], stream: {input}, subjects: [{{subject: "bin{workers}.>", valueType: example/Add, targets: [example/counter]}}]}}
  egresses:
    - typename: example/totals
      nats: {{servers: ["{url}"], subject: bout{workers}.totals}}
  checkpoint: {{interval: 1s, storage: {storage}}}
"#,
        port = h.function.port,
        storage = dir.join(format!("nats-{workers}")).display()
    );
    let started = Instant::now();
    let cluster = start_cluster(
        &spindle_spec::from_yaml_str(&yaml, "connector bench")?,
        workers,
        dir,
        false,
    )
    .await?;
    let secs = wait_for(started, args.records, || async {
        Ok(js.get_stream(&output).await?.info().await?.state.messages)
    })
    .await?;
    for w in cluster {
        w.shutdown().await;
    }
    Ok(secs)
}
