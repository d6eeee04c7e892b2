//! The checkpoint pipeline end to end on a local store: incremental parts, chains, compaction,
//! retention, restores onto other worker counts (exact state), damage found where it is read,
//! and checkpoints written before incremental ones (the committed format-1 fixture).

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::checkpoint::restore::RestoreError;
use crate::deadletter::Payload;

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("spindle-scale-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn store(dir: &Path) -> CheckpointStore {
    CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "app").unwrap()
}

/// A deterministic walk over ids: which to write, with what, in round `r`.
fn round(model: &mut Model, expected: &mut BTreeMap<String, Vec<u8>>, r: u64, keys: u64) {
    let mut x = r.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..keys / 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = format!("k{}", x % keys);
        if x.is_multiple_of(11) {
            model.delete(&id);
            expected.remove(&id);
        } else {
            let v = format!("{id}-r{r}-{}", "x".repeat((x % 90) as usize)).into_bytes();
            model.set(&id, &v, 0);
            expected.insert(id, v);
        }
    }
}

fn values(expected: &BTreeMap<String, Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    expected.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[tokio::test]
async fn incremental_checkpoints_restore_exactly_onto_other_worker_counts() {
    let dir = temp("rescale");
    let keys = 3000;
    let mut model = Model::new(store(&dir), "app", 32, 3, None);
    let mut expected = BTreeMap::new();
    for i in 0..keys {
        let v = format!("initial-{i}").into_bytes();
        model.set(&format!("k{i}"), &v, 0);
        expected.insert(format!("k{i}"), v);
    }
    let first = model.checkpoint().await.unwrap();
    let mut later = Vec::new();
    for r in 1..=30 {
        round(&mut model, &mut expected, r, keys);
        later.push(model.checkpoint().await.unwrap());
        if r % 4 == 0 {
            model.retain(2).await.unwrap();
        }
    }
    assert_eq!(model.values(), values(&expected));
    let delta: u64 = later.iter().map(|c| c.delta).sum();
    let written: u64 = later.iter().map(|c| c.delta + c.base).sum();
    assert!(later.iter().any(|c| c.base > 0), "compaction rewrote some key groups");
    assert!(
        written as f64 <= 2.0 * delta as f64,
        "state written {written} vs changed {delta} (the first part: {})",
        first.delta
    );
    // 3 → 2 → 4, writing on in between: each restore holds exactly what was written.
    for workers in [2, 4] {
        let (restored, figures) = Model::restore(store(&dir), "app", 32, workers, None).await.unwrap();
        assert_eq!(restored.values(), values(&expected), "{workers} workers");
        let read: u64 = figures.iter().map(|f| f.bytes_read).sum();
        let chains = restored.chain_bytes();
        assert!(
            read as f64 <= chains as f64 * 1.1 + 4096.0 * workers as f64,
            "{workers} workers read {read} bytes for {chains} bytes of chains (owned key groups only)"
        );
        model = restored;
        for r in 0..5 {
            round(&mut model, &mut expected, 100 * workers as u64 + r, keys);
            model.checkpoint().await.unwrap();
        }
        assert_eq!(model.values(), values(&expected));
    }
    let (last, _) = Model::restore(store(&dir), "app", 32, 1, None).await.unwrap();
    assert_eq!(last.values(), values(&expected));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_changed_byte_in_a_section_is_damage_found_by_the_worker_that_reads_it() {
    let dir = temp("damage");
    let s = store(&dir);
    let mut model = Model::new(s.clone(), "app", 8, 2, None);
    for i in 0..500 {
        model.set(&format!("k{i}"), b"some value", 0);
    }
    let c = model.checkpoint().await.unwrap();
    let m = s.manifest(c.checkpoint).await.unwrap();
    // Flip a byte in the middle of worker 1's part (in a key-group section).
    let part = &m.parts[1];
    let file = dir.join(&part.key);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = 40;
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let layout = |worker| Layout {
        worker,
        workers: 2,
        key_groups: 8,
    };
    let app = AppIdentity::named("app");
    assert!(
        restore::load(&s, c.checkpoint, &app, layout(0)).await.is_ok(),
        "worker 0 does not read worker 1's state"
    );
    let err = restore::load(&s, c.checkpoint, &app, layout(1)).await.unwrap_err();
    assert!(matches!(err, RestoreError::Damaged { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn expired_values_are_swept_and_the_next_checkpoint_shrinks() {
    let dir = temp("sweep");
    let ttl = Duration::from_secs(10);
    let mut model = Model::new(store(&dir), "app", 16, 1, Some(ttl));
    for i in 0..2000 {
        model.set(&format!("k{i}"), &[7; 100], 1_000);
    }
    model.checkpoint().await.unwrap();
    let before = model.chain_bytes();
    assert_eq!(model.sweep(5_000), 0, "nothing expired yet");
    assert_eq!(model.sweep(11_000), 2000);
    assert_eq!(model.addresses(), 0);
    let c = model.checkpoint().await.unwrap();
    assert_eq!(c.changed_addresses, 2000, "the deletions are in the next part");
    // Groups without addresses need no sections: nothing is left to read.
    assert_eq!(model.chain_bytes(), 0, "was {before}");
    let (restored, figures) = Model::restore(store(&dir), "app", 16, 1, Some(ttl)).await.unwrap();
    assert_eq!(restored.addresses(), 0);
    assert!(figures[0].bytes_read < 4096, "{figures:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The committed fixture: a checkpoint of two workers written by the format-1 code (before
/// incremental checkpoints), restored now onto 1, 2 and 3 workers.
#[tokio::test]
async fn a_checkpoint_written_before_incremental_checkpoints_restores_exactly() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-checkpoint");
    let s = CheckpointStore::open(fixture.to_str().unwrap(), Path::new("/"), "v1app").unwrap();
    let latest = s.latest_valid(&Default::default()).await.unwrap().unwrap();
    assert_eq!((latest.manifest.checkpoint, latest.manifest.format), (5, 1));
    let app = AppIdentity::named("v1app");
    let t = TypeName::parse("fx/counter").unwrap();
    for workers in 1..=3u32 {
        let mut state = BTreeMap::new();
        let (mut messages, mut recorded, mut delayed, mut egress, mut seen, mut dead) = (0, 0, 0, 0, 0, 0);
        for worker in 0..workers {
            let layout = Layout {
                worker,
                workers,
                key_groups: 16,
            };
            let r = restore::load(&s, 5, &app, layout).await.unwrap();
            let c = &r.capture;
            assert_eq!(c.checkpoint, 5);
            assert!(r.chains.chain(0).is_empty(), "format 1 has no chains");
            for (a, cells) in c.state.iter() {
                assert!(layout.owns(&a));
                let mut v: Vec<(String, Vec<u8>, Option<u64>)> = cells
                    .iter()
                    .map(|c| (c.name.to_string(), c.bytes.to_vec(), c.expires_at_ms))
                    .collect();
                v.sort();
                state.insert(a.id.to_string(), v);
            }
            assert_eq!(c.specs.specs(&t).len(), 2);
            assert_eq!(c.positions.get("kafka/in/topic/0"), Some(&11), "the highest position");
            assert_eq!(
                c.sink_marks.get(&TypeName::parse("fx/totals").unwrap()),
                Some(&100),
                "the lowest mark"
            );
            messages += c.messages.len();
            recorded += c.recorded.len();
            delayed += c.delayed.len();
            egress += c.egress.len();
            seen += c.seen.entries().count();
            dead += c.dead_letters.len();
            for d in &c.dead_letters {
                if let Payload::Messages(m) = &d.payload {
                    assert!(layout.owns(&m[0].target));
                }
            }
        }
        assert_eq!(state.len(), 60, "{workers} workers: every address once");
        for i in 0..60u32 {
            let mut want = vec![("total".to_string(), (i as i64 * 7).to_le_bytes().to_vec(), None)];
            if i % 3 == 0 {
                want.push((
                    "seen".into(),
                    format!("s{i}").into_bytes(),
                    Some(4_000_000_000_000 + u64::from(i)),
                ));
            }
            want.sort();
            assert_eq!(state[&format!("k{i}")], want, "k{i}");
        }
        assert_eq!((messages, recorded, delayed, seen), (6, 4, 4, 6), "{workers} workers");
        assert_eq!(egress, 2, "held egress of both parts, once each");
        assert_eq!(dead, 4, "every dead letter once");
    }
    // The first checkpoint after it writes every key group whole (there are no chains yet).
    let dir = temp("v1-then-v2");
    let copy = dir.join("v1app/checkpoints/00000000000000000005");
    std::fs::create_dir_all(&copy).unwrap();
    for f in std::fs::read_dir(fixture.join("v1app/checkpoints/00000000000000000005")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.join(f.file_name())).unwrap();
    }
    let s = CheckpointStore::open(dir.to_str().unwrap(), Path::new("/"), "v1app").unwrap();
    let (mut model, _) = Model::restore(s.clone(), "v1app", 16, 2, None).await.unwrap();
    let before = model.values();
    assert_eq!(before.len(), 60);
    let c = model.checkpoint().await.unwrap();
    assert_eq!((c.delta, c.changed_addresses), (0, 0), "nothing changed");
    assert!(c.base > 0, "but every key group is written whole");
    let (after, _) = Model::restore(s, "v1app", 16, 3, None).await.unwrap();
    assert_eq!(after.values(), before);
    let _ = std::fs::remove_dir_all(dir);
}
