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
    let latest = s.latest_valid().await.unwrap().unwrap();
    assert_eq!((latest.manifest.checkpoint, latest.damaged), (1, vec![2]));
    assert_eq!(&latest.parts[0].1[..], b"first");

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
