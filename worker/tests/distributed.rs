//! Several workers as one application: addresses live on the worker owning their key group,
//! messages cross workers over the peer streams, in cycles, without loss or duplication.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spindle_spec::TypeName;
use spindle_worker::Address;
use spindle_worker::keygroup::{key_group, worker_of};
use spindle_worker::metrics::RouteLabels;
use support::function::{self, echo_to_egress};
use support::*;
use tokio::net::TcpListener;

const IDLE: Duration = Duration::from_secs(60);

fn owner(id: &str, workers: u32) -> u32 {
    let addr = Address::new(TypeName::parse("t/f").unwrap(), id);
    worker_of(key_group(&addr, 128), workers, 128)
}

/// A chain `to:t/f/<id1>:to:t/f/<id2>:…:<tag>`: each hop forwards the rest to the next address.
fn chain(ids: &[String], tag: &str) -> String {
    let mut s = String::new();
    for id in ids {
        s.push_str(&format!("to:t/f/{id}:"));
    }
    s.push_str(tag);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_cross_three_workers_in_cycles_and_every_tag_arrives_once() {
    let (addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let dir = TempDir::new("cluster");
    let workers = start_cluster(&test_app(&format!("http://{addr}/x"), "  workers: 3"), dir.path(), 3).await;
    eprintln!(
        "started: 3 workers, peers {:?}",
        workers.iter().map(|w| w.peer_addr.unwrap()).collect::<Vec<_>>()
    );

    // 300 chains of 12 hops over 40 addresses (so chains revisit addresses: cycles), entering
    // at every worker's ingress.
    let mut expected = Vec::new();
    for c in 0..300 {
        let ids: Vec<String> = (0..12).map(|h| format!("n{}", (c * 7 + h * 13) % 40)).collect();
        let tag = format!("tag{c}");
        let entry = &workers[c % 3];
        send_text(
            entry.ingress_addr.unwrap(),
            "f",
            &format!("start{c}"),
            &chain(&ids, &tag),
        )
        .await;
        expected.push(tag);
    }
    wait_cluster_idle(&workers, IDLE).await;

    let mut got: Vec<String> = (0..3)
        .flat_map(|i| egress_values(&dir.path().join(format!("w{i}/out.jsonl"))))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every chain ends exactly once");
    for (i, w) in workers.iter().enumerate() {
        assert!(
            w.dead_letters.recent().is_empty(),
            "worker {i}: {:?}",
            w.dead_letters.recent()
        );
        let remote = w
            .metrics
            .messages_routed
            .get_or_create(&RouteLabels { route: "remote" })
            .get();
        let local = w
            .metrics
            .messages_routed
            .get_or_create(&RouteLabels { route: "local" })
            .get();
        assert!(
            remote > 100 && local > 100,
            "worker {i}: {remote} remote, {local} local hops"
        );
    }
    // Each address's messages were processed where its key group lives.
    let per_worker: BTreeMap<u32, usize> = (0..40).fold(BTreeMap::new(), |mut m, n| {
        *m.entry(owner(&format!("n{n}"), 3)).or_default() += 1;
        m
    });
    assert_eq!(
        per_worker.len(),
        3,
        "the 40 addresses spread over all workers: {per_worker:?}"
    );
    for w in workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_application_is_refused() {
    let (addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let dir = TempDir::new("refuse");
    let app = test_app(&format!("http://{addr}/x"), "  workers: 2");
    let workers = start_cluster(&app, dir.path(), 2).await;
    // A worker of application `other` that believes worker 0 of `test` is its peer.
    let rogue_app = app.replace("name: test", "name: other");
    let real = workers[0].peer_addr.unwrap().to_string();
    let rogue_dir = dir.path().join("rogue");
    let rogue = {
        let spec = spindle_spec::from_yaml_str(&rogue_app, "rogue").unwrap();
        let listeners = spindle_worker::Listeners {
            ingress: None,
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        };
        let options = spindle_worker::WorkerOptions {
            cluster: spindle_worker::peer::Cluster {
                index: 1,
                peers: vec![real, "127.0.0.1:9".into()],
            },
            ..Default::default()
        };
        spindle_worker::Worker::start(
            spindle_worker::AppConfig::resolve(&spec, &rogue_dir),
            options,
            listeners,
        )
        .await
        .unwrap()
    };
    let (real_metrics, rogue_metrics) = (workers[0].metrics.clone(), rogue.metrics.clone());
    wait_until("both sides to count the refusal", IDLE, || {
        real_metrics.peer_refused.get() >= 1 && rogue_metrics.peer_refused.get() >= 1
    })
    .await;
    rogue.shutdown().await;
    for w in workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_worker_back_pressures_the_ingress_of_another_without_loss() {
    // The function holds calls for addresses that worker 1 owns until the gate opens.
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let held = Arc::new(AtomicUsize::new(0));
    let h = held.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (mut gate, held) = (gate.clone(), h.clone());
        async move {
            use prost::Message;
            let req = spindle_protocol::reqreply::ToFunction::decode(body).unwrap();
            let Some(spindle_protocol::reqreply::to_function::Request::Invocation(batch)) = req.request else {
                unreachable!()
            };
            if owner(&batch.target.as_ref().unwrap().id, 2) == 1 {
                held.fetch_add(batch.invocations.len(), Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
            }
            echo_to_egress(batch)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = TempDir::new("slow-peer");
    let yaml = test_app(&format!("http://{addr}/x"), "  workers: 2\n  maxBufferedMessages: 4");
    let workers = start_cluster(&yaml, dir.path(), 2).await;
    let slow_ids: Vec<String> = (0..)
        .map(|i| format!("s{i}"))
        .filter(|id| owner(id, 2) == 1)
        .take(40)
        .collect();
    let ingress = workers[0].ingress_addr.unwrap();
    // Worker 0 forwards everything to worker 1, whose function is stuck.
    let sender = tokio::spawn({
        let ids = slow_ids.clone();
        async move {
            for (i, id) in ids.iter().enumerate() {
                send_text(ingress, "f", id, &format!("m{i}")).await;
            }
        }
    });
    let (m0, m1) = (workers[0].metrics.clone(), workers[1].metrics.clone());
    // Worker 1 holds its budget of 4, worker 0 its budget of 4 in the link: the 9th request waits.
    wait_until("both budgets spent", IDLE, || {
        m1.peer_in_process.get() == 4 && m0.ingress_in_process.get() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sender.is_finished(),
        "worker 0's ingress kept accepting past its bound"
    );
    assert!(m0.ingress_accepted.get() <= 8, "accepted {}", m0.ingress_accepted.get());
    gate_tx.send(true).unwrap();
    sender.await.unwrap();
    wait_cluster_idle(&workers, IDLE).await;
    let mut got = egress_values(&dir.path().join("w1/out.jsonl"));
    got.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert!(held.load(Ordering::SeqCst) >= 40);
    for w in workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_peer_streams_are_reopened_and_lose_or_repeat_nothing() {
    let (addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let dir = TempDir::new("cut");
    let yaml = test_app(&format!("http://{addr}/x"), "  workers: 2");
    let spec = spindle_spec::from_yaml_str(&yaml, "cut").unwrap();
    let l0 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a0, a1) = (l0.local_addr().unwrap().to_string(), l1.local_addr().unwrap());
    // Worker 0 reaches worker 1 only through the proxy; worker 1 reaches worker 0 directly.
    let proxy = support::proxy::Proxy::start(a1).await;
    let mut workers = Vec::new();
    for (i, (listener, peers)) in [
        (l0, vec![a0.clone(), proxy.addr.to_string()]),
        (l1, vec![a0.clone(), a1.to_string()]),
    ]
    .into_iter()
    .enumerate()
    {
        let wdir = dir.path().join(format!("w{i}"));
        let listeners = spindle_worker::Listeners {
            ingress: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: Some(listener),
        };
        let options = spindle_worker::WorkerOptions {
            cluster: spindle_worker::peer::Cluster { index: i as u32, peers },
            ..Default::default()
        };
        let mut config = spindle_worker::AppConfig::resolve(&spec, &wdir);
        // One checkpoint store for both, as every deployment must have.
        config.checkpoint.storage = Some(dir.path().join("checkpoints").display().to_string());
        workers.push(spindle_worker::Worker::start(config, options, listeners).await.unwrap());
    }
    let ingress = workers[0].ingress_addr.unwrap();
    let mut expected = Vec::new();
    let mut cuts = 0;
    for c in 0..400 {
        let ids: Vec<String> = (0..10).map(|h| format!("n{}", (c * 7 + h * 13) % 50)).collect();
        let tag = format!("tag{c}");
        send_text(ingress, "f", &format!("start{c}"), &chain(&ids, &tag)).await;
        expected.push(tag);
        if c % 50 == 25 {
            cuts += proxy.cut();
        }
    }
    wait_cluster_idle(&workers, IDLE).await;
    let mut got: Vec<String> = (0..2)
        .flat_map(|i| egress_values(&dir.path().join(format!("w{i}/out.jsonl"))))
        .collect();
    got.sort();
    expected.sort();
    assert!(cuts >= 4, "the proxy cut {cuts} connections");
    assert!(
        workers[0].metrics.peer_reconnects.get() >= 4,
        "reconnects: {}",
        workers[0].metrics.peer_reconnects.get()
    );
    assert_eq!(got.len(), expected.len(), "no chain lost or repeated");
    assert_eq!(got, expected);
    for w in workers {
        w.shutdown().await;
    }
}
