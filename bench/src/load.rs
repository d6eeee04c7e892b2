//! The load generator and the run over every configuration.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spindle_example_greeter::Add;
use spindle_protocol::Primitive;
use spindle_sdk::JsonType;
use spindle_spec::TypeName;
use spindle_worker::metrics::{FunctionLabels, OutcomeLabels, outcome};
use spindle_worker::{Address, AppConfig, Listeners, Worker, WorkerOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::Args;
use crate::app::BenchApp;
use crate::harness::Harness;
use crate::report::{self, Row};

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    println!(
        "spindle-bench: counter function (Rust SDK, its own process) on 127.0.0.1:{}, egress webhook on {}; {} keys, {:?} per configuration, {} cores, load {}",
        harness.function.port,
        harness.webhook,
        args.keys,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        report::load_average()
    );
    println!("{}", report::header());
    let mut result = Ok(());
    'outer: for &batch in &args.batch {
        for &concurrency in &args.concurrency {
            match measure(args, batch, concurrency, &harness).await {
                Ok(row) => println!("{}", report::line(&row)),
                Err(e) => {
                    result = Err(e);
                    break 'outer;
                }
            }
        }
    }
    println!("machine load after the run: {}", report::load_average());
    harness.stop().await;
    result
}

async fn measure(args: &Args, batch: u32, concurrency: usize, harness: &Harness) -> anyhow::Result<Row> {
    // Without checkpoints: those are measured by `spindle-bench checkpoint`.
    let yaml = BenchApp {
        max_batch: Some(batch),
        max_in_flight: Some(64),
        ..BenchApp::new("bench")
    }
    .yaml(harness.function.port, harness.webhook);
    let spec = spindle_spec::from_yaml_str(&yaml, "bench app")?;
    let listeners = Listeners {
        ingress: Some(TcpListener::bind("127.0.0.1:0").await?),
        admin: TcpListener::bind("127.0.0.1:0").await?,
        peer: None,
    };
    let worker = Worker::start(
        AppConfig::resolve(&spec, &std::env::temp_dir()),
        WorkerOptions::default(),
        listeners,
    )
    .await?;
    let ingress = worker.ingress_addr.context("no ingress")?;

    let started = Instant::now();
    let measure_from = started + args.duration / 5;
    let stop = measure_from + args.duration;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http::<Full<Bytes>>();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let (client, waiters, keys) = (client.clone(), harness.waiters.clone(), args.keys);
        clients.spawn(async move {
            let mut latencies = Vec::new();
            let mut sent = 0u64;
            for n in 0u64.. {
                let begun = Instant::now();
                if begun >= stop {
                    break;
                }
                let seq = ((c as u64) << 32) | n;
                let (tx, rx) = oneshot::channel();
                waiters.lock().unwrap().insert(seq, tx);
                let key = (c + n as usize) % keys;
                let body = serde_json::to_vec(&Add { seq, value: 1 })?;
                let req = Request::post(format!("http://{ingress}/example/counter/k{key}"))
                    .header(header::CONTENT_TYPE, format!("application/vnd.{}", Add::TYPENAME))
                    .body(Full::new(Bytes::from(body)))?;
                let resp = client.request(req).await?;
                ensure!(resp.status() == 202, "ingress answered {}", resp.status());
                sent += 1;
                let done = tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .context("no egress record within 30 s")??;
                if begun >= measure_from {
                    latencies.push(done - begun);
                }
            }
            anyhow::Ok((latencies, sent))
        });
    }
    let mut latencies = Vec::new();
    let mut sent = 0;
    while let Some(r) = clients.join_next().await {
        let (l, s) = r??;
        latencies.extend(l);
        sent += s;
    }
    latencies.sort();
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .min(args.duration);

    // Correctness: the counters add up to what was sent.
    worker.wait_idle(Duration::from_secs(30)).await?;
    let mut total = 0;
    for k in 0..args.keys {
        let addr = Address::new(TypeName::parse("example/counter")?, format!("k{k}"));
        for (name, v) in worker.read_state(addr).await? {
            if name == "total" {
                match Primitive::decode(&v.typename, &v.bytes) {
                    Some(Primitive::Long(n)) => total += n as u64,
                    other => bail!("counter state `total` is {other:?}"),
                }
            }
        }
    }
    ensure!(total == sent, "counters sum to {total}, but {sent} messages were sent");
    ensure!(
        worker.dead_letters.recent().is_empty(),
        "dead letters: {:?}",
        worker.dead_letters.recent()
    );

    let function = FunctionLabels {
        function: "example/counter".into(),
    };
    let messages = worker.metrics.invocation_messages.get_or_create(&function).get();
    let batches = worker
        .metrics
        .invocations
        .get_or_create(&OutcomeLabels {
            function: function.function.clone(),
            outcome: outcome::OK,
        })
        .get();
    worker.shutdown().await;
    Ok(Row {
        batch,
        concurrency,
        completed: latencies.len() as u64,
        elapsed,
        latencies,
        mean_batch: messages as f64 / batches.max(1) as f64,
    })
}
