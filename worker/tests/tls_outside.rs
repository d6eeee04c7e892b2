//! TLS to the outside, against real TLS servers on loopback with certificates generated here
//! (a private CA the workers are told about with `caFile`/`caOnly`):
//! - the official StateFun Python SDK (aiohttp) behind HTTPS that requires a client
//!   certificate (mutual TLS);
//! - a webhook egress to an HTTPS server that offers HTTP/2 (the request arrives as HTTP/2),
//!   and one whose certificate is not trusted (every record becomes a dead letter, naming TLS);
//! - NATS JetStream in and out over TLS with a client certificate (`nats-server` with `tls`
//!   and `verify`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use spindle_spec::{HumanDuration, LocalProcess};
use spindle_worker::local::{FunctionProcess, InputRecord, send_input};
use spindle_worker::tls::local::LocalCa;
use support::brokers::{Kafka, Nats, TestRecord};
use support::function::{self, echo_to_egress};
use support::*;
use tokio::net::TcpListener;

const IDLE: Duration = Duration::from_secs(60);

/// Emits every message to egress `t/out`, or to `t/bad` when its text starts with `bad:`.
fn two_egresses(batch: spindle_protocol::reqreply::to_function::InvocationBatchRequest) -> axum::response::Response {
    use spindle_protocol::reqreply::from_function::{self, EgressMessage, InvocationResponse};
    use spindle_protocol::reqreply::{FromFunction, TypedValue};
    let mut r = InvocationResponse::default();
    for inv in batch.invocations {
        let arg = inv.argument.unwrap();
        let bad = arg.value.starts_with(b"bad:");
        r.outgoing_egresses.push(EgressMessage {
            egress_namespace: "t".into(),
            egress_type: if bad { "bad" } else { "out" }.into(),
            argument: Some(TypedValue {
                typename: arg.typename,
                has_value: true,
                value: arg.value,
            }),
        });
    }
    function::protobuf(FromFunction {
        response: Some(from_function::Response::InvocationResult(r)),
    })
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as files in
/// `dir`: (ca.pem, server.pem, server.key, client.pem, client.key).
fn pki(dir: &std::path::Path) -> (LocalCa, [String; 5]) {
    let ca = LocalCa::new("test servers CA").unwrap();
    let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
    let server = ca.issue("test server", &[], &hosts).unwrap();
    let client = ca.issue("spindle client", &[], &[]).unwrap();
    let files = [
        write(dir, "ca.pem", ca.ca_pem()),
        write(dir, "server.pem", &server.cert_pem),
        write(dir, "server.key", &server.key_pem),
        write(dir, "client.pem", &client.cert_pem),
        write(dir, "client.key", &client.key_pem),
    ];
    (ca, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_functions_behind_https_with_a_client_certificate() {
    let venv = python_venv();
    let dir = TempDir::new("python-tls");
    let (_ca, [ca, cert, key, client_cert, client_key]) = pki(dir.path());
    let local = LocalProcess {
        command: vec![
            venv.join("bin/python").display().to_string(),
            workspace_root().join("e2e/python/functions.py").display().to_string(),
        ],
        env: [
            ("TLS_CERT".to_string(), cert),
            ("TLS_KEY".to_string(), key),
            ("TLS_CLIENT_CA".to_string(), ca.clone()),
        ]
        .into(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(60),
    };
    let function = FunctionProcess::start("py/*", &local, dir.path()).await.unwrap();
    eprintln!(
        "started: StateFun Python SDK 3.3.0 functions (aiohttp, HTTPS requiring a client certificate) on 127.0.0.1:{}",
        function.port
    );
    let app = |tls: &str| {
        format!(
            r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: python-tls}}
spec:
  functions:
    - typename: py/*
      endpoint: https://localhost:{port}/statefun
      callTimeout: 5s
      tls: {tls}
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: py/out
      file: {{path: out.jsonl}}
"#,
            port = function.port
        )
    };
    let cmd = |target: &str, value: serde_json::Value| InputRecord {
        target: target.into(),
        typename: "py/Command".into(),
        value,
    };

    let yaml = app(&format!(
        "{{caFile: {ca}, caOnly: true, certFile: {client_cert}, keyFile: {client_key}}}"
    ));
    let worker = start_worker(&yaml, dir.path()).await;
    let records = [
        cmd("py/counter/alice", json!({"op": "add", "n": 2})),
        cmd("py/counter/alice", json!({"op": "add", "n": 3})),
    ];
    send_input(worker.ingress_addr.unwrap(), &records).await.unwrap();
    worker.wait_idle(IDLE).await.unwrap();
    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );
    let mut got = egress_values(&dir.path().join("out.jsonl"));
    got.sort();
    assert_eq!(got, ["echoed:alice:2#seen=1", "echoed:alice:5#seen=2"]);
    worker.shutdown().await;

    // Without the client certificate the function refuses the connection: the batch fails
    // (network errors are retried until callTimeout) and becomes a dead letter naming why.
    let dir2 = TempDir::new("python-tls-nocert");
    let worker = start_worker(&app(&format!("{{caFile: {ca}, caOnly: true}}")), dir2.path()).await;
    send_input(worker.ingress_addr.unwrap(), &records[..1]).await.unwrap();
    worker.wait_idle(IDLE).await.unwrap();
    let dead = worker.dead_letters.recent();
    eprintln!("without a client certificate: {:?}", dead.first().map(|d| &d.reason));
    assert_eq!(dead.len(), 1, "{dead:?}");
    worker.shutdown().await;
    function.stop().await;
}

/// An HTTPS webhook that offers HTTP/2 and HTTP/1.1 (ALPN) and records what it received:
/// (HTTP version, idempotency key, body).
async fn https_webhook(cert: &str, key: &str) -> (std::net::SocketAddr, Arc<Mutex<Vec<(String, String, String)>>>) {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let version = format!("{:?}", req.version());
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        seen.lock()
                            .unwrap()
                            .push((version, key, String::from_utf8_lossy(&body).to_string()));
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_over_https_gets_http2_and_an_untrusted_one_gets_nothing() {
    let dir = TempDir::new("webhook-tls");
    let (_ca, [ca, cert, key, _, _]) = pki(dir.path());
    let (hook, got) = https_webhook(&cert, &key).await;
    let other = LocalCa::new("unknown CA").unwrap();
    let untrusted = other
        .issue("impostor", &[], &["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap();
    let (bad_hook, bad_got) = https_webhook(
        &write(dir.path(), "bad.pem", &untrusted.cert_pem),
        &write(dir.path(), "bad.key", &untrusted.key_pem),
    )
    .await;
    eprintln!("started: HTTPS webhooks (h2 + http/1.1 by ALPN) on {hook} (trusted CA) and {bad_hook} (unknown CA)");
    let (fn_addr, _stop) = function::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), Arc::new(two_egresses));
    let yaml = test_app(&format!("http://{fn_addr}/x"), "  checkpoint: {interval: 100ms}")
        .replace(
            "    - typename: t/out\n      file: {path: out.jsonl}",
            &format!(
                "    - typename: t/out\n      http: {{url: \"https://localhost:{}/in\", tls: {{caFile: {ca}, caOnly: true}}}}\n    - typename: t/bad\n      http: {{url: \"https://127.0.0.1:{}/in\", timeout: 2s}}",
                hook.port(),
                bad_hook.port()
            ),
        );
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    for i in 0..5 {
        send_text(ingress, "f", &format!("a{i}"), &format!("hello-{i}")).await;
    }
    send_text(ingress, "f", "b", "bad:secret").await;
    worker.wait_idle(IDLE).await.unwrap();
    let mut received = got.lock().unwrap().clone();
    received.sort_by(|a, b| a.2.cmp(&b.2));
    eprintln!("the webhook received: {received:?}");
    let bodies: Vec<&str> = received.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(bodies, ["hello-0", "hello-1", "hello-2", "hello-3", "hello-4"]);
    assert!(
        received.iter().all(|r| r.0 == "HTTP/2.0"),
        "HTTP/2 by ALPN: {received:?}"
    );
    assert!(received.iter().all(|r| !r.1.is_empty()), "idempotency keys sent");
    assert!(
        bad_got.lock().unwrap().is_empty(),
        "nothing reached the untrusted webhook"
    );
    let dead = worker.dead_letters.recent();
    eprintln!("dead letters: {:?}", dead.iter().map(|d| &d.reason).collect::<Vec<_>>());
    assert_eq!(
        dead.len(),
        1,
        "{:?}",
        dead.iter().map(|d| &d.reason).collect::<Vec<_>>()
    );
    assert_eq!(dead[0].kind, "egress_failed");
    assert!(dead[0].reason.contains("UnknownIssuer"), "{}", dead[0].reason);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_jetstream_in_and_out_over_tls_with_a_client_certificate() {
    let dir = TempDir::new("nats-tls");
    let (_ca, [ca, cert, key, client_cert, client_key]) = pki(dir.path());
    let nats = Nats::start(
        dir.path(),
        &format!("tls {{ cert_file: \"{cert}\"\n key_file: \"{key}\"\n ca_file: \"{ca}\"\n verify: true }}"),
    );
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.clone().into())
        .add_client_certificate(client_cert.clone().into(), client_key.clone().into())
        .connect(&nats.url)
        .await
        .expect("a TLS client with a certificate connects");
    let js = async_nats::jetstream::new(client);
    Nats::create_stream(&js, "IN", &["in.>"]).await;
    Nats::create_stream(&js, "OUT", &["out.>"]).await;
    // Without a client certificate the server refuses.
    let refused = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.clone().into())
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .connect(&nats.url);
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        match refused.await {
            Ok(c) => c.flush().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    eprintln!("a client without a certificate: {refused:?}");
    assert!(
        !matches!(refused, Ok(Ok(()))),
        "the server must require a client certificate"
    );

    let (fn_addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let tls = format!("{{caFile: {ca}, caOnly: true, certFile: {client_cert}, keyFile: {client_key}}}");
    let yaml = format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: nats-tls}}
spec:
  functions:
    - typename: t/*
      endpoint: http://{fn_addr}/x
  ingresses:
    - name: in
      nats:
        servers: ["{url}"]
        tls: {tls}
        stream: IN
        subjects: [{{subject: "in.>", valueType: t/Text, targets: [t/f], valueFormat: utf8}}]
  egresses:
    - typename: t/out
      nats: {{servers: ["{url}"], subject: out.texts, tls: {tls}}}
  checkpoint: {{interval: 100ms}}
"#,
        url = nats.url
    );
    let worker = start_worker(&yaml, dir.path()).await;
    eprintln!("started: worker reading IN and writing OUT over TLS at {}", nats.url);
    for i in 0..20 {
        js.publish(format!("in.k{i}"), format!("text-{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let n = js.get_stream("OUT").await.unwrap().info().await.unwrap().state.messages;
        if n >= 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "OUT has {n} of 20 messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.wait_idle(IDLE).await.unwrap();
    let mut out: Vec<String> = Nats::read_stream(&js, "OUT")
        .await
        .into_iter()
        .map(|m| String::from_utf8(m.payload).unwrap())
        .collect();
    out.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("text-{i}")).collect();
    want.sort();
    assert_eq!(out, want, "every message in and out once over TLS");
    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );
    worker.shutdown().await;
}

/// A TLS terminator on `port` in front of `target` that requires a client certificate of
/// `ca`: tansu 0.6 does not serve TLS itself (its `--cert` and `--key` flags cannot be given
/// together, and with either alone it still speaks plain TCP), so TLS to Kafka is tested
/// through this.
async fn tls_terminator(port: u16, target: String, cert: &str, key: &str, ca: &str) {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, target) = (acceptor.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_in_and_out_over_tls_with_a_client_certificate() {
    let dir = TempDir::new("kafka-tls");
    let (_ca, [ca, cert, key, client_cert, client_key]) = pki(dir.path());
    let proxy = free_port();
    let tansu = Kafka::tansu_advertising(Some(proxy));
    tls_terminator(proxy, tansu.addr.clone(), &cert, &key, &ca).await;
    eprintln!("started: TLS terminator on 127.0.0.1:{proxy} (client certificate required) in front of tansu");
    // The test's own client speaks TLS too, with the same files the worker is given.
    let tls_spec = spindle_spec::ClientTls {
        ca_file: Some(ca.clone()),
        ca_only: true,
        cert_file: Some(client_cert.clone()),
        key_file: Some(client_key.clone()),
    };
    let config = Arc::new(spindle_worker::tls::client::config(Some(&tls_spec), dir.path()).unwrap());
    let client = rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{proxy}")])
        .tls_config(config)
        .build()
        .await
        .expect("a TLS client reaches tansu through the terminator");
    let controller = client.controller_client().unwrap();
    for topic in ["texts", "echoed"] {
        controller.create_topic(topic, 1, 1, 5_000).await.unwrap();
    }
    let plain = rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{proxy}")]).build();
    let plain = tokio::time::timeout(Duration::from_secs(5), plain).await;
    assert!(!matches!(plain, Ok(Ok(_))), "a plain-text client must not get through");

    let (fn_addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let tls = format!("{{caFile: {ca}, caOnly: true, certFile: {client_cert}, keyFile: {client_key}}}");
    let yaml = format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: kafka-tls}}
spec:
  functions:
    - typename: t/*
      endpoint: http://{fn_addr}/x
  ingresses:
    - name: in
      kafka:
        brokers: ["127.0.0.1:{proxy}"]
        tls: {tls}
        topics: [{{topic: texts, valueType: t/Text, targets: [t/f], valueFormat: utf8}}]
  egresses:
    - typename: t/out
      kafka: {{brokers: ["127.0.0.1:{proxy}"], topic: echoed, tls: {tls}}}
  checkpoint: {{interval: 100ms}}
"#
    );
    let worker = start_worker(&yaml, dir.path()).await;
    let records = (0..20)
        .map(|i| TestRecord::new(Some(&format!("k{i}")), format!("text-{i}").as_bytes()))
        .collect();
    tansu.produce(&client, "texts", 0, records).await;
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let n = tansu.end_offsets(&client, "echoed", 1).await[0];
        if n >= 20 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "echoed has {n} of 20 records");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.wait_idle(IDLE).await.unwrap();
    let mut out: Vec<String> = tansu
        .read_all(&client, "echoed", 1)
        .await
        .into_iter()
        .map(|(_, _, r)| String::from_utf8(r.value.unwrap()).unwrap())
        .collect();
    out.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("text-{i}")).collect();
    want.sort();
    assert_eq!(out, want, "every record in and out once over TLS");
    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );
    worker.shutdown().await;
}
