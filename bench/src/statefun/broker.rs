//! The Apache Kafka broker both systems share: one KRaft node on loopback, started with the
//! tests' recipe (`e2e/kafka/start.sh`, jars from `e2e/kafka/fetch.sh`), plus the producer side
//! of the benchmark (topics, preloading, paced live input).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::harness::free_addr;

pub(crate) struct Broker {
    child: Child,
    pub addr: String,
    pub started_in: Duration,
}

impl Broker {
    pub async fn start(repo: &Path, dir: &Path) -> anyhow::Result<Broker> {
        let (port, controller) = (free_addr()?.port(), free_addr()?.port());
        let started = Instant::now();
        let log = std::fs::File::create(dir.join("kafka-start.out"))?;
        let mut child = Command::new("bash")
            .arg(repo.join("e2e/kafka/start.sh"))
            .arg(dir.join("kafka"))
            .args([port.to_string(), controller.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting e2e/kafka/start.sh")?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = started + Duration::from_secs(180);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "Apache Kafka exited ({status}); see {}",
                    dir.join("kafka-start.out").display()
                );
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                let ready = tokio::time::timeout(Duration::from_secs(5), async {
                    ClientBuilder::new(vec![addr.clone()])
                        .build()
                        .await
                        .ok()?
                        .list_topics()
                        .await
                        .ok()
                });
                if let Ok(Some(_)) = ready.await {
                    break;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("Apache Kafka not serving at {addr} after 180 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Broker {
            child,
            addr,
            started_in: started.elapsed(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        Ok(ClientBuilder::new(vec![self.addr.clone()]).build().await?)
    }

    /// Creates `topic` and waits until every partition has a leader.
    pub async fn create_topic(&self, client: &Client, topic: &str, partitions: i32) -> anyhow::Result<()> {
        client
            .controller_client()?
            .create_topic(topic, partitions, 1, 5_000)
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for p in 0..partitions {
            while client
                .partition_client(topic, p, UnknownTopicHandling::Error)
                .await
                .is_err()
            {
                anyhow::ensure!(Instant::now() < deadline, "{topic}/{p} has no leader after 30 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // start.sh execs the JVM: this pid is the broker.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Input `seq`: `example/Add {seq, value: 1}` for counter `c{seq % keys}` (the record key is
/// the function id in both systems), on partition `seq % partitions`.
pub(crate) fn input(seq: u64, keys: u64) -> Record {
    Record {
        key: Some(format!("c{}", seq % keys).into_bytes()),
        value: Some(serde_json::json!({"seq": seq, "value": 1}).to_string().into_bytes()),
        headers: Default::default(),
        timestamp: chrono::Utc::now(),
    }
}

/// Produces inputs `seqs` to `topic`, each on partition `seq % partitions`, in batches of up to
/// 1000 per partition.
pub(crate) async fn produce(
    client: &Client,
    topic: &str,
    partitions: i32,
    seqs: std::ops::Range<u64>,
    keys: u64,
) -> anyhow::Result<()> {
    for p in 0..partitions {
        let pc = client.partition_client(topic, p, UnknownTopicHandling::Retry).await?;
        let mine: Vec<u64> = seqs.clone().filter(|s| (*s % partitions as u64) as i32 == p).collect();
        for chunk in mine.chunks(1000) {
            pc.produce(
                chunk.iter().map(|s| input(*s, keys)).collect(),
                Compression::NoCompression,
            )
            .await?;
        }
    }
    Ok(())
}

/// Wall-clock milliseconds since the epoch (the reader process stamps arrivals on the same clock).
pub(crate) fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Produces inputs `seqs` at `rate` per second (a batch every 10 ms, round-robin over the
/// partitions): the wall-clock time each input was produced (send time of its batch).
pub(crate) async fn produce_paced(
    client: &Client,
    topic: &str,
    partitions: i32,
    seqs: std::ops::Range<u64>,
    keys: u64,
    rate: u64,
) -> anyhow::Result<Vec<(u64, f64)>> {
    let mut pcs = Vec::new();
    for p in 0..partitions {
        pcs.push(client.partition_client(topic, p, UnknownTopicHandling::Retry).await?);
    }
    let per_tick = (rate / 100).max(1);
    let mut sent = Vec::with_capacity((seqs.end - seqs.start) as usize);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next = seqs.start;
    while next < seqs.end {
        tick.tick().await;
        let end = (next + per_tick).min(seqs.end);
        let at = now_ms();
        for (p, pc) in pcs.iter().enumerate() {
            let batch: Vec<Record> = (next..end)
                .filter(|s| (*s % partitions as u64) as usize == p)
                .map(|s| input(s, keys))
                .collect();
            if !batch.is_empty() {
                pc.produce(batch, Compression::NoCompression).await?;
            }
        }
        sent.extend((next..end).map(|s| (s, at)));
        next = end;
    }
    Ok(sent)
}

/// The repository root (for the e2e scripts): `--repo`, else the current directory.
pub(crate) fn repo_root(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let root = match explicit {
        Some(p) => p.clone(),
        None => std::env::current_dir()?,
    };
    anyhow::ensure!(
        root.join("e2e/kafka/start.sh").exists(),
        "{} is not the Spindle repository (no e2e/kafka/start.sh): run from it or pass --repo",
        root.display()
    );
    Ok(root)
}
