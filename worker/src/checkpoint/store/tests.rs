use std::collections::BTreeSet;

use super::*;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn none() -> BTreeSet<u64> {
    BTreeSet::new()
}

fn manifest(n: u64, parts: Vec<PartInfo>) -> Manifest {
    Manifest {
        application: "app".into(),
        checkpoint: n,
        generation: 1,
        workers: parts.len() as u32,
        key_groups: 8,
        bytes: parts.iter().map(|p| p.size).sum(),
        parts,
        ..Manifest::default()
    }
}

async fn checkpoint(s: &CheckpointStore, n: u64, payloads: &[&[u8]]) -> Manifest {
    let mut parts = Vec::new();
    for (w, p) in payloads.iter().enumerate() {
        parts.push(s.put_part(n, 1, w as u32, Bytes::copy_from_slice(p)).await.unwrap());
    }
    let m = manifest(n, parts);
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
    // A section of a part, checked where it is read.
    let loc = SectionLoc {
        offset: 1,
        length: 2,
        crc32: crc32fast::hash(b"ne"),
    };
    assert_eq!(&s.read_section(&m.parts[1], loc).await.unwrap()[..], b"ne");
    let wrong = SectionLoc { crc32: 1, ..loc };
    assert!(matches!(
        s.read_section(&m.parts[1], wrong).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(s.bytes_read() > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn lost_and_cut_objects_are_found_from_metadata_and_changed_bytes_where_they_are_read() {
    let dir = temp("corrupt");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    checkpoint(&s, 1, &[b"first", b"first"]).await;
    let m2 = checkpoint(&s, 2, &[b"second", b"second"]).await;
    let file = dir.join(&m2.parts[1].key);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    // Same size: the coordinator's check (metadata) passes; the reader finds the damage.
    let err = s.read_part(&m2.parts[1]).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(err.is_damage());
    let latest = s.latest_valid(&none()).await.unwrap().unwrap();
    assert_eq!(latest.manifest.checkpoint, 2, "no bytes are read to pick it");
    // Once a restore has reported it, it is skipped.
    let latest = s.latest_valid(&BTreeSet::from([2])).await.unwrap().unwrap();
    assert_eq!((latest.manifest.checkpoint, latest.damaged), (1, vec![2]));
    // Truncated: found from the object's size.
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    let latest = s.latest_valid(&none()).await.unwrap().unwrap();
    assert_eq!((latest.manifest.checkpoint, latest.damaged), (1, vec![2]));
    assert!(s.read_part(&m2.parts[1]).await.unwrap_err().is_damage());
    std::fs::write(&file, &bytes[..10]).unwrap();
    assert!(s.read_part(&m2.parts[1]).await.unwrap_err().is_damage());
    // Gone.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(s.latest_valid(&none()).await.unwrap().unwrap().manifest.checkpoint, 1);
    assert!(matches!(
        s.read_part(&m2.parts[1]).await,
        Err(StoreError::NotFound { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn retain_keeps_the_newest_and_every_object_they_reference() {
    let dir = temp("retain");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    s.put_part(1, 1, 0, Bytes::from_static(b"stray")).await.unwrap(); // an attempt that failed
    let with = |p: PartInfo| PartInfo {
        index: Some(SectionLoc::default()),
        ..p
    };
    // Checkpoint 2's part holds a base that checkpoints 3, 4 and 5 still reference; 3's part
    // is referenced by 4 only.
    let base = with(s.put_part(2, 1, 0, Bytes::from_static(b"base")).await.unwrap());
    s.put_manifest(&Manifest {
        format: 2,
        objects: vec![base.clone()],
        groups: vec![vec![0]; 8],
        ..manifest(2, vec![base.clone()])
    })
    .await
    .unwrap();
    let mut previous = base.clone();
    for n in 3..=5u64 {
        let part = with(s.put_part(n, 1, 0, Bytes::from_static(b"delta")).await.unwrap());
        let objects = if n == 4 {
            vec![base.clone(), previous.clone(), part.clone()]
        } else {
            vec![base.clone(), part.clone()]
        };
        let chain: Vec<u32> = (0..objects.len() as u32).collect();
        s.put_manifest(&Manifest {
            format: 2,
            objects,
            groups: vec![chain; 8],
            ..manifest(n, vec![part.clone()])
        })
        .await
        .unwrap();
        previous = part;
    }
    s.put_part(6, 1, 0, Bytes::from_static(b"in progress")).await.unwrap();
    assert_eq!(
        s.retain(2).await.unwrap(),
        2,
        "checkpoints 2 and 3 lose their manifests"
    );
    assert_eq!(s.completed().await.unwrap(), [4, 5]);
    let left: BTreeSet<String> = s
        .objects()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.to_string())
        .collect();
    assert!(
        left.contains(&base.key),
        "the base checkpoints 4 and 5 reference stays: {left:?}"
    );
    assert!(
        left.contains(&s.part_key(3, 1, 0)),
        "3's part stays while 4 references it"
    );
    assert!(left.contains(&s.part_key(6, 1, 0)), "a checkpoint in progress is kept");
    assert!(!left.contains(&s.part_key(1, 1, 0)), "the stray part goes");
    assert!(s.latest_valid(&none()).await.unwrap().unwrap().damaged.is_empty());
    // Once 4 is not kept, 3's part goes too; the base stays (5 references it).
    assert_eq!(s.retain(1).await.unwrap(), 1);
    let left: BTreeSet<String> = s
        .objects()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.to_string())
        .collect();
    assert!(
        !left.contains(&s.part_key(3, 1, 0)) && !left.contains(&s.part_key(4, 1, 0)),
        "{left:?}"
    );
    assert!(left.contains(&base.key));
    assert_eq!(s.manifest(5).await.unwrap().referenced().len(), 2);
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
    let env = vec![("SPINDLE_STORAGE_PIECE_BYTES".to_string(), "12".to_string())];
    let err = CheckpointStore::open_with_env("s3://b/p", base, "a", env).unwrap_err();
    assert!(err.to_string().contains("SPINDLE_STORAGE_PIECE_BYTES"), "{err}");
}

#[tokio::test]
async fn a_manifest_may_reference_only_parts_of_its_application() {
    let dir = temp("foreign");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    let mut part = s.put_part(1, 1, 0, Bytes::from_static(b"x")).await.unwrap();
    part.key = "other/checkpoints/00000000000000000001/part-g1-w0.bin".into();
    // Written behind the store's back (it would not sync what is not there).
    let json = serde_json::to_vec(&manifest(1, vec![part])).unwrap();
    std::fs::write(dir.join("app/checkpoints/00000000000000000001/MANIFEST.json"), json).unwrap();
    let err = s.manifest(1).await.unwrap_err();
    assert!(err.to_string().contains("not a part of this application"), "{err}");
    assert!(s.is_part_key(&s.part_key(3, 2, 1)));
    assert!(!s.is_part_key("app/checkpoints/x/part-g1-w0.bin"));
    assert!(!s.is_part_key("app/generation"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn same_named_applications_in_two_namespaces_have_disjoint_roots() {
    let dir = std::env::temp_dir().join(format!("spindle-store-ns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = dir.to_str().unwrap();
    let a = CheckpointStore::open(url, Path::new("/"), "team-a/app").unwrap();
    let b = CheckpointStore::open(url, Path::new("/"), "team-b/app").unwrap();
    let part = a.put_part(1, 1, 0, Bytes::from_static(b"from a")).await.unwrap();
    a.put_manifest(&manifest(1, vec![part])).await.unwrap();
    assert!(a.latest_valid(&none()).await.unwrap().is_some());
    assert!(b.latest_valid(&none()).await.unwrap().is_none(), "b sees nothing of a");
    assert_eq!(b.delete_all().await.unwrap(), 0, "b's cleanup deletes nothing of a");
    assert!(a.latest_valid(&none()).await.unwrap().is_some());
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

#[tokio::test]
async fn a_savepoint_keeps_its_checkpoint_and_every_object_of_its_chains_past_compaction() {
    let dir = temp("savepoint");
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap();
    let with = |p: PartInfo| PartInfo {
        index: Some(SectionLoc::default()),
        ..p
    };
    let v2 = |n: u64, objects: Vec<PartInfo>, part: PartInfo| Manifest {
        format: 2,
        groups: vec![(0..objects.len() as u32).collect(); 8],
        objects,
        ..manifest(n, vec![part])
    };
    // 1: a base; 2: a delta on it (the savepoint); 3..=6: compaction wrote a new base at 3.
    let base = with(s.put_part(1, 1, 0, Bytes::from_static(b"base")).await.unwrap());
    s.put_manifest(&v2(1, vec![base.clone()], base.clone())).await.unwrap();
    let delta = with(s.put_part(2, 1, 0, Bytes::from_static(b"delta")).await.unwrap());
    s.put_manifest(&v2(2, vec![base.clone(), delta.clone()], delta.clone()))
        .await
        .unwrap();
    s.put_savepoint(&Savepoint {
        name: "before-upgrade".into(),
        checkpoint: 2,
        created_at_ms: 1,
    })
    .await
    .unwrap();
    assert!(matches!(
        s.put_savepoint(&Savepoint {
            name: "before-upgrade".into(),
            checkpoint: 1,
            created_at_ms: 2
        })
        .await,
        Err(StoreError::Conflict { .. })
    ));
    let rebase = with(s.put_part(3, 1, 0, Bytes::from_static(b"rebase")).await.unwrap());
    s.put_manifest(&v2(3, vec![rebase.clone()], rebase.clone()))
        .await
        .unwrap();
    for n in 4..=6 {
        let d = with(s.put_part(n, 1, 0, Bytes::from_static(b"d")).await.unwrap());
        s.put_manifest(&v2(n, vec![rebase.clone(), d.clone()], d))
            .await
            .unwrap();
    }
    assert_eq!(s.retain(1).await.unwrap(), 4, "1, 3, 4 and 5 lose their manifests");
    assert_eq!(s.completed().await.unwrap(), [2, 6]);
    let kept = s.check(2).await.unwrap();
    assert_eq!(kept.referenced().len(), 2, "the base of checkpoint 1 and the delta");
    for o in kept.referenced() {
        assert!(dir.join(&o.key).exists(), "{} is kept", o.key);
    }
    assert_eq!(s.resolve("before-upgrade").await.unwrap().checkpoint, 2);
    assert_eq!(s.resolve("6").await.unwrap().checkpoint, 6);
    let unknown = s.resolve("nope").await.unwrap_err().to_string();
    assert!(
        unknown.contains("no savepoint `nope` (savepoints there: before-upgrade)"),
        "{unknown}"
    );
    let unknown = s.resolve("4").await.unwrap_err().to_string();
    assert!(
        unknown.contains("no checkpoint 4 (completed checkpoints there: 2, 6)"),
        "{unknown}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_manifest_fsyncs_each_path_once_and_the_root_only_when_asked() {
    let dir = |s: &str| ObjectPath::from(s);
    let new = vec![
        "app/checkpoints/00000000000000000007/part-g1-w0.bin".to_string(),
        "app/checkpoints/00000000000000000007/part-g1-w1.bin".to_string(),
        // A part of a failed checkpoint, referenced now and never synced.
        "app/checkpoints/00000000000000000006/part-g1-w0.bin".to_string(),
    ];
    let dirs = || [dir("app/checkpoints/00000000000000000007"), dir("app/checkpoints")];
    let manifest = || dir("app/checkpoints/00000000000000000007/manifest.json");
    let first = to_make_durable(&new, manifest(), dirs(), Some(dir("app")));
    let expected: Vec<ObjectPath> = [
        "app",
        "app/checkpoints",
        "app/checkpoints/00000000000000000006",
        "app/checkpoints/00000000000000000006/part-g1-w0.bin",
        "app/checkpoints/00000000000000000007",
        "app/checkpoints/00000000000000000007/manifest.json",
        "app/checkpoints/00000000000000000007/part-g1-w0.bin",
        "app/checkpoints/00000000000000000007/part-g1-w1.bin",
    ]
    .into_iter()
    .map(dir)
    .collect();
    assert_eq!(first, expected);
    let later = to_make_durable(&new[..1], manifest(), dirs(), None);
    assert_eq!(
        later,
        [
            "app/checkpoints",
            "app/checkpoints/00000000000000000007",
            "app/checkpoints/00000000000000000007/manifest.json",
            "app/checkpoints/00000000000000000007/part-g1-w0.bin",
        ]
        .into_iter()
        .map(dir)
        .collect::<Vec<_>>()
    );
}

/// In memory; each completion of a multipart upload is done, then answered with an error
/// (`lose`: the answer is lost after the upload completed) or refused before it (not `lose`).
#[derive(Debug)]
struct FailedCompletions {
    inner: Arc<object_store::memory::InMemory>,
    lose: bool,
    aborted: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl MultipartStore for FailedCompletions {
    async fn create_multipart(&self, path: &ObjectPath) -> object_store::Result<object_store::MultipartId> {
        self.inner.create_multipart(path).await
    }
    async fn put_part(
        &self,
        path: &ObjectPath,
        id: &object_store::MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.inner.put_part(path, id, part_idx, data).await
    }
    async fn complete_multipart(
        &self,
        path: &ObjectPath,
        id: &object_store::MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<object_store::PutResult> {
        if self.lose {
            self.inner.complete_multipart(path, id, parts).await?;
        }
        Err(object_store::Error::Generic {
            store: "test",
            source: "connection reset by peer".into(),
        })
    }
    async fn abort_multipart(&self, path: &ObjectPath, id: &object_store::MultipartId) -> object_store::Result<()> {
        self.aborted.fetch_add(1, Ordering::Relaxed);
        self.inner.abort_multipart(path, id).await
    }
}

#[tokio::test]
async fn a_multipart_upload_whose_completion_answer_is_lost_is_found_complete_and_a_refused_one_fails() {
    // 20 MiB: three pieces of the default 8 MiB.
    let payload: Bytes = (0..20u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    for lose in [true, false] {
        let memory = Arc::new(object_store::memory::InMemory::new());
        let completions = Arc::new(FailedCompletions {
            inner: memory.clone(),
            lose,
            aborted: Default::default(),
        });
        let s = CheckpointStore::over(memory.clone(), "app").with_multipart(completions.clone(), completions.clone());
        let put = s.put_part(5, 1, 0, payload.clone()).await;
        if lose {
            let part = put.expect("the object is there whole: the upload completed");
            assert_eq!(s.read_part(&part).await.unwrap(), payload);
        } else {
            let err = put.expect_err("a completion that did not happen fails the part");
            assert!(
                matches!(err, StoreError::Unavailable(ref e) if e.contains("connection reset")),
                "{err}"
            );
            let key = ObjectPath::from(s.part_key(5, 1, 0));
            assert!(memory.head(&key).await.is_err(), "nothing is visible");
            assert_eq!(completions.aborted.load(Ordering::Relaxed), 1, "the upload is aborted");
        }
    }
}
