//! The checkpoint store against a real S3-compatible server (moto, started here on loopback):
//! parts and manifests round trip, a manifest is created once, a damaged part is detected and
//! the previous checkpoint used, and an unavailable server fails calls within seconds.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spindle_worker::checkpoint::store::{CheckpointStore, Manifest, StoreError};
use support::moto::Moto;

async fn write(s: &CheckpointStore, n: u64, payload: &'static [u8]) -> Manifest {
    let part = s.put_part(n, 1, 0, Bytes::from_static(payload)).await.unwrap();
    let m = Manifest {
        application: "app".into(),
        namespace: None,
        uid: None,
        checkpoint: n,
        generation: 1,
        workers: 1,
        key_groups: 8,
        bytes: part.size,
        parts: vec![part],
        created_at_ms: 0,
        duration_ms: 0,
        ..Manifest::default()
    };
    s.put_manifest(&m).await.unwrap();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_checkpoints_round_trip_fall_back_past_damage_and_fail_fast_when_down() {
    support::init_logs();
    let moto = Moto::start("store");
    // Credentials and endpoint as a worker reads them from its environment.
    let s = CheckpointStore::open_with_env(&moto.url("tests"), Path::new("/"), "app", moto.env()).unwrap();
    assert_eq!(s.read_generation().await.unwrap(), 0);
    s.write_generation(4).await.unwrap();
    assert_eq!(s.read_generation().await.unwrap(), 4);

    let m1 = write(&s, 1, b"first").await;
    let m2 = write(&s, 2, b"second").await;
    assert_eq!(s.completed().await.unwrap(), [1, 2]);
    assert_eq!(&s.read_part(&m1.parts[0]).await.unwrap()[..], b"first");
    assert!(
        matches!(s.put_manifest(&m2).await, Err(StoreError::Conflict { .. })),
        "S3 conditional create"
    );

    // Overwrite checkpoint 2's part behind the manifest's back: its checksum no longer matches.
    s.put_part(2, 1, 0, Bytes::from_static(b"tampered")).await.unwrap();
    let err = s.read_part(&m2.parts[0]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let latest = s.latest_valid(&Default::default()).await.unwrap().unwrap();
    assert_eq!((latest.manifest.checkpoint, latest.damaged), (1, vec![2]));
    assert_eq!(&s.read_part(&latest.manifest.parts[0]).await.unwrap()[..], b"first");

    for n in 3..=5 {
        write(&s, n, b"more").await;
    }
    assert_eq!(s.retain(2).await.unwrap(), 3);
    assert_eq!(s.completed().await.unwrap(), [4, 5]);

    moto.pause();
    let started = Instant::now();
    let err = s.put_part(6, 1, 0, Bytes::from_static(b"x")).await.unwrap_err();
    let took = started.elapsed();
    moto.resume();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        took < Duration::from_secs(30),
        "an unavailable store fails within seconds, took {took:?}"
    );
    eprintln!("storage paused: put failed after {:.1} s ({err})", took.as_secs_f64());
    s.put_part(6, 1, 0, Bytes::from_static(b"x")).await.unwrap();
}

/// Incremental checkpoints through S3 (moto): 3 workers hold 200k keys, then 1 % of them
/// change (some deleted) between checkpoints, with retention keeping 2; the newest checkpoint
/// is restored onto 2 workers and must hold exactly what was written. Parts of the first
/// checkpoint exceed the piece size, so they go up by multipart upload; restores read by
/// ranges, only the key groups each worker owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_incremental_chain_restores_exactly_onto_fewer_workers() {
    use spindle_worker::checkpoint::scale::Model;
    use std::collections::BTreeMap;

    support::init_logs();
    let moto = Moto::start("scale");
    let mut env = moto.env();
    // S3's smallest multipart part, so the first checkpoint's parts are multipart uploads.
    env.push(("SPINDLE_STORAGE_PIECE_BYTES".into(), (5u64 << 20).to_string()));
    let open = || CheckpointStore::open_with_env(&moto.url("scale"), Path::new("/"), "app", env.clone()).unwrap();
    let keys = 200_000u64;
    let key_groups = 64;
    let mut model = Model::new(open(), "app", key_groups, 3, None);
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..keys {
        let v = format!("v{i:06}-{}", "x".repeat(80)).into_bytes();
        model.set(&format!("k{i}"), &v, 0);
        expected.insert(format!("k{i}"), v);
    }
    let first = model.checkpoint().await.unwrap();
    assert!(
        first.written > 3 * (5 << 20),
        "parts larger than a piece: {} bytes",
        first.written
    );
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut later = Vec::new();
    for r in 1..=6u64 {
        for _ in 0..keys / 100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("k{}", x % keys);
            if x.is_multiple_of(13) {
                model.delete(&id);
                expected.remove(&id);
            } else {
                let v = format!("r{r}-{id}").into_bytes();
                model.set(&id, &v, 0);
                expected.insert(id, v);
            }
        }
        later.push(model.checkpoint().await.unwrap());
        model.retain(2).await.unwrap();
    }
    let changed: u64 = later.iter().map(|c| c.delta).sum();
    let written: u64 = later.iter().map(|c| c.delta + c.base).sum();
    eprintln!(
        "moto S3, 3 workers, {keys} keys: first checkpoint {} bytes; then 6 × 1 % changed: {changed} bytes of deltas, {written} bytes of state written in all; {:.1} s",
        first.written,
        started.elapsed().as_secs_f64()
    );
    assert!(
        (written as f64) < 0.25 * first.written as f64,
        "6 incremental checkpoints wrote {written} bytes, a full one {}",
        first.written
    );
    let total_state = model.chain_bytes();
    let (restored, figures) = Model::restore(open(), "app", key_groups, 2, None).await.unwrap();
    let got = restored.values();
    let want: Vec<(String, Vec<u8>)> = expected.into_iter().collect();
    assert_eq!(got.len(), want.len(), "addresses after 3 → 2");
    assert!(got == want, "every value exactly as written after 3 → 2");
    let read: u64 = figures.iter().map(|f| f.bytes_read).sum();
    eprintln!("restore 3 → 2: {figures:?}; {read} bytes read for {total_state} bytes of chains");
    assert!(
        read as f64 <= 1.1 * total_state as f64 + 65536.0,
        "restores read {read} bytes, the chains hold {total_state}"
    );
}
