use super::*;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn checkpoint(s: &CheckpointStore, n: u64, payloads: &[&[u8]]) -> Manifest {
    let mut parts = Vec::new();
    for (w, p) in payloads.iter().enumerate() {
        parts.push(s.put_part(n, 1, w as u32, Bytes::copy_from_slice(p)).await.unwrap());
    }
    let m = Manifest {
        application: "app".into(),
        namespace: None,
        uid: None,
        checkpoint: n,
        generation: 1,
        workers: payloads.len() as u32,
        key_groups: 8,
        bytes: parts.iter().map(|p| p.size).sum(),
        parts,
        created_at_ms: 0,
        duration_ms: 0,
    };
    s.put_manifest(&m).await.unwrap();
    m
}

#[tokio::test]
async fn parts_and_manifests_round_trip_and_a_manifest_is_never_overwritten() {
    let dir = temp("roundtrip");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    let m = checkpoint(&s, 3, &[b"zero", b"one"]).await;
    assert_eq!(s.completed().await.unwrap(), [3]);
    assert_eq!(s.manifest(3).await.unwrap(), m);
    assert_eq!(&s.read_part(&m.parts[1]).await.unwrap()[..], b"one");
    assert!(matches!(s.put_manifest(&m).await, Err(StoreError::Conflict { .. })));
    // Parts without a manifest are no checkpoint.
    s.put_part(4, 1, 0, Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(s.completed().await.unwrap(), [3]);
    assert_eq!(s.read_generation().await.unwrap(), 0);
    s.write_generation(7).await.unwrap();
    assert_eq!(s.read_generation().await.unwrap(), 7);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn damaged_parts_are_detected_and_the_previous_checkpoint_is_used() {
    let dir = temp("corrupt");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    checkpoint(&s, 1, &[b"first", b"first"]).await;
    let m2 = checkpoint(&s, 2, &[b"second", b"second"]).await;
    let file = dir.join(&m2.parts[1].key);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let err = s.read_part(&m2.parts[1]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    let latest = s.latest_valid().await.unwrap().unwrap();
    assert_eq!(latest.manifest.checkpoint, 1, "falls back past the damaged checkpoint");
    assert_eq!(latest.damaged, [2]);
    assert_eq!(&latest.parts[0].1[..], b"first");
    // Truncated.
    std::fs::write(&file, &bytes[..10]).unwrap();
    assert!(
        s.read_part(&m2.parts[1])
            .await
            .unwrap_err()
            .to_string()
            .contains("no part header")
    );
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    assert!(
        s.read_part(&m2.parts[1])
            .await
            .unwrap_err()
            .to_string()
            .contains("payload bytes")
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn retain_keeps_the_newest_and_what_is_newer_than_them() {
    let dir = temp("retain");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    s.put_part(1, 1, 0, Bytes::from_static(b"stray")).await.unwrap(); // an attempt that failed
    for n in 2..=5 {
        checkpoint(&s, n, &[b"p"]).await;
    }
    s.put_part(6, 1, 0, Bytes::from_static(b"in progress")).await.unwrap();
    assert_eq!(s.retain(2).await.unwrap(), 3, "checkpoints 1, 2 and 3 go");
    assert_eq!(s.completed().await.unwrap(), [4, 5]);
    let left: Vec<u64> = s.objects().await.unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(left.contains(&6), "a checkpoint in progress is kept: {left:?}");
    assert!(!left.iter().any(|n| *n < 4), "{left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn urls_are_checked() {
    let base = Path::new("/tmp");
    assert!(matches!(
        CheckpointStore::open("s3://", base, "a"),
        Err(StoreError::BadUrl { .. })
    ));
    assert!(matches!(
        CheckpointStore::open("gs://b/p", base, "a"),
        Err(StoreError::BadUrl { .. })
    ));
}

#[tokio::test]
async fn same_named_applications_in_two_namespaces_have_disjoint_roots() {
    let dir = std::env::temp_dir().join(format!("spindle-store-ns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = dir.to_str().unwrap();
    let a = CheckpointStore::open(url, Path::new("/"), "team-a/app").unwrap();
    let b = CheckpointStore::open(url, Path::new("/"), "team-b/app").unwrap();
    checkpoint(&a, 1, &[b"from a"]).await;
    assert!(a.latest_valid().await.unwrap().is_some());
    assert!(b.latest_valid().await.unwrap().is_none(), "b sees nothing of a");
    assert_eq!(b.delete_all().await.unwrap(), 0, "b's cleanup deletes nothing of a");
    assert!(a.latest_valid().await.unwrap().is_some());
    assert!(dir.join("team-a/app/checkpoints").is_dir(), "{}", a.describe());
    let key = a.part_key(1, 1, 0);
    assert_eq!(key, "team-a/app/checkpoints/00000000000000000001/part-g1-w0.bin");
    assert_eq!(a.put_part(1, 1, 0, Bytes::from_static(b"x")).await.unwrap().key, key);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The files under `dir` whose name is `name`.
fn find(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find(&p, name));
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn every_change_to_a_part_object_is_refused_as_corrupt() {
    let dir = temp("mutations");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    let payload: Vec<u8> = (0..200u8).collect();
    let info = s.put_part(5, 1, 0, Bytes::from(payload.clone())).await.unwrap();
    let files = find(&dir, "part-g1-w0.bin");
    assert_eq!(files.len(), 1, "{files:?}");
    let object = std::fs::read(&files[0]).unwrap();
    assert_eq!(
        &check_part(&info.key, Bytes::from(object.clone()), &info).unwrap()[..],
        &payload[..]
    );
    let mut rng = crate::fuzz::Rng::new(0x5eed_0004);
    for case in 0..crate::fuzz::CASES {
        let changed = rng.mutate(&object);
        if changed == object {
            continue;
        }
        match check_part(&info.key, Bytes::from(changed), &info) {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, info.key),
            other => panic!("case {case}: a changed part object was not refused: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
