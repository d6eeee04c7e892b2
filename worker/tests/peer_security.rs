//! The peer port under mutual TLS: three in-process workers over real TLS sockets on loopback,
//! with certificates from a CA generated here, run chains of messages across each other; then
//! an attacker tries every call the issue lists — without a certificate, with another
//! application's, with a valid one claiming another index, and with numbers that would break a
//! receiver — and every attempt is refused while the application's output stays exactly what
//! it would have been (every chain ends exactly once; read without deduplication).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use spindle_worker::proto::control::{
    Completed, ControlRequest, Join, PartWritten, Restore, control_request, coordination_client::CoordinationClient,
};
use spindle_worker::proto::peer::{Batch, Frame, Hello, frame, peer_client::PeerClient};
use spindle_worker::tls::WorkerIdentity;
use spindle_worker::tls::local::{Issued, LocalCa, write_dir};
use spindle_worker::tls::peer::PeerTls;
use spindle_worker::{AppConfig, Listeners, Worker, WorkerOptions};
use support::function::{self, echo_to_egress};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

const IDLE: Duration = Duration::from_secs(60);
const NS: &str = "shop";
const APP: &str = "test";

async fn start_tls_cluster(yaml: &str, dir: &Path, ca: &LocalCa, n: u32) -> Vec<Worker> {
    init_logs();
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let app = spindle_spec::from_yaml_str(yaml, "test app").unwrap();
    let mut workers = Vec::new();
    for (i, peer) in listeners.into_iter().enumerate() {
        let wdir = dir.join(format!("w{i}"));
        let id = WorkerIdentity::new(Some(NS), APP, i as u32);
        ca.write_worker_dir(&id, &wdir.join("tls")).unwrap();
        let tls = PeerTls::from_dir(&wdir.join("tls"), id).expect("worker certificate loads");
        let mut config = AppConfig::resolve(&app, &wdir);
        config.namespace = Some(NS.into());
        config.checkpoint.storage = Some(dir.join("checkpoints").display().to_string());
        let options = WorkerOptions {
            data_dir: Some(wdir.join("data")),
            cluster: spindle_worker::peer::Cluster {
                index: i as u32,
                peers: addrs.clone(),
            },
            peer_tls: Some(Arc::new(tls)),
            ..WorkerOptions::default()
        };
        let l = Listeners {
            ingress: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: Some(peer),
        };
        workers.push(Worker::start(config, options, l).await.expect("worker starts"));
    }
    workers
}

/// A gRPC channel to `addr` over TLS that trusts `ca_pem` and presents `client` (if any):
/// what an attacker in the cluster network can do with whatever certificate it holds.
async fn dial(addr: std::net::SocketAddr, ca_pem: &str, client: Option<&Issued>) -> Result<Channel, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => {
            let certs = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connect)
        .await
        .map_err(|e| format!("{e:?}"))
}

fn request(from: u32, kind: control_request::Kind) -> ControlRequest {
    ControlRequest {
        application: APP.into(),
        from_worker: from,
        kind: Some(kind),
    }
}

/// A control call over `channel`: the status code of its refusal (or `Ok`).
async fn control(channel: Channel, from: u32, kind: control_request::Kind) -> Result<(), (Code, String)> {
    CoordinationClient::new(channel)
        .control(request(from, kind))
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

fn chain(c: usize) -> (String, String) {
    let mut s = String::new();
    for h in 0..8 {
        s.push_str(&format!("to:t/f/n{}:", (c * 7 + h * 13) % 30));
    }
    let tag = format!("tag{c}");
    s.push_str(&tag);
    (s, tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_applications_workers_reach_the_peer_port_and_only_as_themselves() {
    let (addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let dir = TempDir::new("peer-mtls");
    let ca = LocalCa::new("test CA").unwrap();
    let yaml = test_app(
        &format!("http://{addr}/x"),
        "  workers: 3\n  checkpoint: {interval: 200ms}",
    );
    let workers = start_tls_cluster(&yaml, dir.path(), &ca, 3).await;
    eprintln!(
        "started: 3 workers with mutual TLS (ephemeral CA, ns `{NS}`), peers {:?}",
        workers.iter().map(|w| w.peer_addr.unwrap()).collect::<Vec<_>>()
    );

    let mut expected = Vec::new();
    for c in 0..60 {
        let (text, tag) = chain(c);
        send_text(workers[c % 3].ingress_addr.unwrap(), "f", &format!("s{c}"), &text).await;
        expected.push(tag);
    }
    wait_cluster_idle(&workers, IDLE).await;
    let generation = workers[0].progress().generation;
    let refused_before: u64 = workers.iter().map(|w| w.metrics.peer_refused.get()).sum();
    assert!(generation > 0);
    for w in &workers {
        assert_eq!(w.metrics.peer_refused.get(), 0, "the workers accepted each other");
    }

    let w0 = workers[0].peer_addr.unwrap();
    let w1 = workers[1].peer_addr.unwrap();
    let completed_max = || {
        control_request::Kind::Completed(Completed {
            generation,
            checkpoint: u64::MAX,
        })
    };

    // 1. No client certificate: the TLS handshake fails, nothing reaches gRPC.
    let attempt = match dial(w1, ca.ca_pem(), None).await {
        Err(e) => Err(e),
        Ok(ch) => control(ch, 0, completed_max())
            .await
            .map_err(|(c, m)| format!("{c:?}: {m}")),
    };
    eprintln!("no certificate: {attempt:?}");
    assert!(attempt.is_err());

    // 2. Another application's certificate, from its own CA and from this CA.
    let other_ca = LocalCa::new("other CA").unwrap();
    let foreign = other_ca
        .issue_worker(&WorkerIdentity::new(Some(NS), APP, 0), &[])
        .unwrap();
    let same_ca_other_app = ca
        .issue_worker(&WorkerIdentity::new(Some(NS), "other", 0), &[])
        .unwrap();
    let other_namespace = ca
        .issue_worker(&WorkerIdentity::new(Some("test"), APP, 0), &[])
        .unwrap();
    for (what, cert) in [
        ("another CA", &foreign),
        ("another application", &same_ca_other_app),
        ("another namespace", &other_namespace),
    ] {
        let attempt = match dial(w1, ca.ca_pem(), Some(cert)).await {
            Err(e) => Err(e),
            Ok(ch) => control(ch, 0, completed_max())
                .await
                .map_err(|(c, m)| format!("{c:?}: {m}")),
        };
        eprintln!("{what}: {attempt:?}");
        assert!(attempt.is_err(), "{what}");
    }

    // 3. A valid certificate (worker 2's) claiming another index, or commanding as itself.
    let stolen = ca.issue_worker(&WorkerIdentity::new(Some(NS), APP, 2), &[]).unwrap();
    let ch1 = dial(w1, ca.ca_pem(), Some(&stolen))
        .await
        .expect("worker 2's certificate connects");
    let ch0 = dial(w0, ca.ca_pem(), Some(&stolen))
        .await
        .expect("worker 2's certificate connects");
    let denied = |r: Result<(), (Code, String)>, want: &str| {
        let (code, msg) = r.expect_err("refused");
        eprintln!("refused: {code:?}: {msg}");
        assert!(
            matches!(code, Code::PermissionDenied | Code::FailedPrecondition),
            "{code:?}"
        );
        assert!(msg.contains(want), "`{msg}` lacks `{want}`");
    };
    denied(
        control(ch1.clone(), 0, completed_max()).await,
        "claims to be worker 0, but its certificate is worker 2's",
    );
    denied(
        control(
            ch1.clone(),
            0,
            control_request::Kind::Restore(Restore {
                generation: generation + 1_000_000,
                checkpoint: 0,
                poison: vec![],
            }),
        )
        .await,
        "claims to be worker 0",
    );
    denied(
        control(
            ch1.clone(),
            2,
            control_request::Kind::Restore(Restore {
                generation: generation + 1_000_000,
                checkpoint: 0,
                poison: vec![],
            }),
        )
        .await,
        "only the coordinator (worker 0) may send Restore",
    );
    denied(
        control(ch1.clone(), 2, completed_max()).await,
        "only the coordinator (worker 0) may send Completed",
    );
    denied(
        control(
            ch0.clone(),
            1,
            control_request::Kind::Join(Join {
                incarnation: 42,
                workers: 3,
                key_groups: 128,
            }),
        )
        .await,
        "claims to be worker 1",
    );
    denied(
        control(
            ch0.clone(),
            1,
            control_request::Kind::Part(PartWritten {
                generation,
                checkpoint: 1,
                ..Default::default()
            }),
        )
        .await,
        "claims to be worker 1",
    );
    // As itself, a part report must name worker 2's own object.
    denied(
        control(
            ch0.clone(),
            2,
            control_request::Kind::Part(PartWritten {
                generation,
                checkpoint: 1_000_000,
                key: "elsewhere/part.bin".into(),
                size: 1,
                crc32: 0,
                error: String::new(),
                clean: true,
                ..PartWritten::default()
            }),
        )
        .await,
        "is not the part of worker 2",
    );
    // A Join to a worker that is not the coordinator.
    denied(
        control(
            ch1.clone(),
            2,
            control_request::Kind::Join(Join {
                incarnation: 42,
                workers: 3,
                key_groups: 128,
            }),
        )
        .await,
        "goes to the coordinator",
    );

    // A message stream claiming to come from worker 0.
    let hello = |from: u32| Hello {
        application: APP.into(),
        from_worker: from,
        to_worker: 1,
        workers: 3,
        key_groups: 128,
        generation,
    };
    let stream = tokio_stream::iter(vec![Frame {
        kind: Some(frame::Kind::Hello(hello(0))),
    }]);
    let refused = PeerClient::new(ch1.clone())
        .exchange(stream)
        .await
        .expect_err("refused");
    eprintln!("forged Hello: {:?}: {}", refused.code(), refused.message());
    assert_eq!(refused.code(), Code::PermissionDenied);

    // As itself, numbers that would break the receiver: seq = u64::MAX, barrier u64::MAX.
    for (seq, barrier, want) in [
        (u64::MAX, 0, "batches are numbered without gaps"),
        (1_000_000_000, 0, "batches are numbered without gaps"),
    ] {
        let frames = tokio_stream::iter(vec![
            Frame {
                kind: Some(frame::Kind::Hello(hello(2))),
            },
            Frame {
                kind: Some(frame::Kind::Batch(Batch {
                    seq,
                    envelopes: Vec::new(),
                    barrier,
                })),
            },
        ]);
        let mut replies = PeerClient::new(ch1.clone())
            .exchange(frames)
            .await
            .expect("worker 2 may open a stream")
            .into_inner();
        let welcome = replies.message().await.expect("welcome").expect("welcome");
        eprintln!("welcome: {welcome:?}");
        let end = loop {
            match replies.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
        };
        let status = end.expect("the stream ends with a refusal");
        eprintln!("batch seq {seq}: {:?}: {}", status.code(), status.message());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains(want), "{}", status.message());
    }

    let refused_after: u64 = workers.iter().map(|w| w.metrics.peer_refused.get()).sum();
    assert!(
        refused_after >= refused_before + 10,
        "every attempt is counted ({refused_before} -> {refused_after})"
    );

    // The application carries on untouched: same generation (no forced rollback), and more
    // chains end exactly once; nothing released early, nothing lost.
    for c in 60..90 {
        let (text, tag) = chain(c);
        send_text(workers[c % 3].ingress_addr.unwrap(), "f", &format!("s{c}"), &text).await;
        expected.push(tag);
    }
    wait_cluster_idle(&workers, IDLE).await;
    for w in &workers {
        assert_eq!(w.progress().generation, generation, "no rollback was forced");
    }
    let mut got: Vec<String> = (0..3)
        .flat_map(|i| egress_values(&dir.path().join(format!("w{i}/out.jsonl"))))
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "every chain ends exactly once");
    for w in workers {
        assert!(w.dead_letters.recent().is_empty());
        w.shutdown().await;
    }
}

#[tokio::test]
async fn a_worker_refuses_a_certificate_that_is_not_its_own() {
    let dir = TempDir::new("peer-cert");
    let ca = LocalCa::new("test CA").unwrap();
    let issued = ca.issue_worker(&WorkerIdentity::new(Some(NS), APP, 1), &[]).unwrap();
    write_dir(dir.path(), ca.ca_pem(), &issued).unwrap();
    let err = PeerTls::from_dir(dir.path(), WorkerIdentity::new(Some(NS), APP, 2)).unwrap_err();
    assert!(
        err.to_string().contains(
            "this worker is `spiffe://spindle.dev/ns/shop/app/test/worker/2`, but the certificate names `spiffe://spindle.dev/ns/shop/app/test/worker/1`"
        ),
        "{err}"
    );
    let missing = PeerTls::from_dir(&dir.path().join("nope"), WorkerIdentity::new(Some(NS), APP, 1)).unwrap_err();
    assert!(missing.to_string().contains("ca.crt: cannot read"), "{missing}");

    // One directory with every worker's pair (`worker-<i>.crt`/`.key`) serves every worker.
    let all = dir.path().join("all");
    std::fs::create_dir_all(&all).unwrap();
    std::fs::write(all.join("ca.crt"), ca.ca_pem()).unwrap();
    for i in 0..3 {
        let issued = ca.issue_worker(&WorkerIdentity::new(Some(NS), APP, i), &[]).unwrap();
        std::fs::write(all.join(format!("worker-{i}.crt")), &issued.cert_pem).unwrap();
        std::fs::write(all.join(format!("worker-{i}.key")), &issued.key_pem).unwrap();
    }
    for i in 0..3 {
        let tls = PeerTls::from_dir(&all, WorkerIdentity::new(Some(NS), APP, i)).unwrap();
        assert_eq!(tls.me().worker, i);
    }
}
