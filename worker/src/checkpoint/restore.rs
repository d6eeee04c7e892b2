//! A checkpoint read back into what one worker resumes from: its share under the current
//! layout (rescaling keeps exactly the entries of the key groups it owns).
//!
//! Format 2: the worker reads each needed part's index, then only the sections of the key
//! groups it owns — object by object in checkpoint order, which applies every group's chain
//! oldest first — with ranged reads of at most the store's `transfer.piece` bytes,
//! `transfer.concurrency` at a time, decoding each piece as it arrives (memory: the state it
//! builds plus about `piece × concurrency`), and every part's rest section (messages, egress, …). Each section is
//! checked against its CRC-32 as it is read; damage is a [`RestoreError::Damaged`], which the
//! coordinator answers by falling back to an older checkpoint. Format 1: every part is read
//! whole and decoded as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};

use super::chains::{Chains, Link};
use super::codec::{self, DecodeError, GroupDecoder, SectionError, TypeNames};
use super::manifest::{Manifest, PartInfo, SectionLoc};
use super::store::{CheckpointStore, StoreError};
use crate::app::AppIdentity;
use crate::keygroup::{Layout, range_of};
use crate::partition::Capture;
use crate::proto::checkpoint::{PartIndex, Section};

/// Index reads in flight at once: small requests (a chain can reference a few hundred
/// objects), so more at a time than a part's pieces.
const INDEXES_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// What the checkpoint holds is lost or changed: another checkpoint must be restored.
    #[error("checkpoint {checkpoint} is damaged: {reason}")]
    Damaged { checkpoint: u64, reason: String },
    #[error("reading checkpoint {checkpoint}: {source}")]
    Store { checkpoint: u64, source: StoreError },
    #[error("decoding checkpoint {checkpoint}: {source}")]
    Decode { checkpoint: u64, source: DecodeError },
    #[error("checkpoint {checkpoint}: {reason}")]
    Invalid { checkpoint: u64, reason: String },
    #[error("checkpoint {0} was requested, but checkpoints are off")]
    NoStore(u64),
}

impl RestoreError {
    pub fn is_damage(&self) -> bool {
        matches!(self, RestoreError::Damaged { .. })
    }

    fn store(checkpoint: u64, e: StoreError) -> RestoreError {
        if e.is_damage() {
            RestoreError::Damaged {
                checkpoint,
                reason: e.to_string(),
            }
        } else {
            RestoreError::Store { checkpoint, source: e }
        }
    }
}

/// What a worker resumes from.
#[derive(Debug)]
pub(crate) struct Restored {
    pub capture: Capture,
    /// The chains of the key groups it owns, which its next parts extend.
    pub chains: Chains,
    /// Part bytes read.
    pub bytes_read: u64,
}

impl Restored {
    pub fn empty(key_groups: u32) -> Restored {
        Restored {
            capture: Capture::new(key_groups),
            chains: Chains::default(),
            bytes_read: 0,
        }
    }
}

/// Reads `checkpoint` (0: nothing) into what the worker of `layout` owns.
pub(crate) async fn load(
    store: &CheckpointStore,
    checkpoint: u64,
    app: &AppIdentity,
    layout: Layout,
) -> Result<Restored, RestoreError> {
    if checkpoint == 0 {
        return Ok(Restored::empty(layout.key_groups));
    }
    let err = |e| RestoreError::store(checkpoint, e);
    let manifest = store.manifest(checkpoint).await.map_err(err)?;
    if manifest.key_groups != layout.key_groups {
        return Err(RestoreError::Decode {
            checkpoint,
            source: DecodeError::KeyGroups {
                checkpoint,
                found: manifest.key_groups,
                expected: layout.key_groups,
            },
        });
    }
    // A copy of another application's checkpoint holds that application's parts.
    let writer = manifest.copied_from.as_deref().map(writer_of);
    let app = writer.as_ref().unwrap_or(app);
    let mut restored = match manifest.format {
        1 => {
            let (capture, bytes_read) = whole_parts(store, &manifest, app, layout).await?;
            Ok(Restored {
                capture,
                chains: Chains::default(),
                bytes_read,
            })
        }
        2 => incremental(store, &manifest, app, layout).await,
        other => Err(RestoreError::Invalid {
            checkpoint,
            reason: format!("part format {other} is newer than this version of Spindle reads"),
        }),
    }?;
    // A copy's parts name the checkpoint they were written for; this is the one restored.
    restored.capture.checkpoint = checkpoint;
    Ok(restored)
}

fn writer_of(c: &crate::checkpoint::manifest::CopiedFrom) -> AppIdentity {
    AppIdentity {
        namespace: c.namespace.clone(),
        name: c.application.clone(),
        uid: None,
    }
}

/// Everything but the state of a checkpoint, for every key group (the dead-letter tools).
pub(crate) async fn load_rest(
    store: &CheckpointStore,
    manifest: &Manifest,
    app: &AppIdentity,
) -> Result<Capture, RestoreError> {
    let all = Layout {
        worker: 0,
        workers: 1,
        key_groups: manifest.key_groups,
    };
    let writer = manifest.copied_from.as_deref().map(writer_of);
    let app = writer.as_ref().unwrap_or(app);
    if manifest.format == 1 {
        return Ok(whole_parts(store, manifest, app, all).await?.0);
    }
    let n = manifest.checkpoint;
    let indexes = indexes(store, n, manifest.parts.iter()).await?;
    let mut read = 0;
    rests(store, manifest, app, all, &indexes, &mut read).await
}

async fn whole_parts(
    store: &CheckpointStore,
    manifest: &Manifest,
    app: &AppIdentity,
    layout: Layout,
) -> Result<(Capture, u64), RestoreError> {
    let n = manifest.checkpoint;
    let mut parts: Vec<Bytes> = Vec::with_capacity(manifest.parts.len());
    for part in &manifest.parts {
        parts.push(store.read_part(part).await.map_err(|e| RestoreError::store(n, e))?);
    }
    let read = parts.iter().map(|p| p.len() as u64).sum();
    let capture =
        codec::decode(app, &parts, layout).map_err(|source| RestoreError::Decode { checkpoint: n, source })?;
    Ok((capture, read))
}

/// The index of every object in `objects`, by key, each read and checked.
async fn indexes<'a>(
    store: &CheckpointStore,
    n: u64,
    objects: impl Iterator<Item = &'a PartInfo>,
) -> Result<HashMap<String, PartIndex>, RestoreError> {
    let objects: Vec<PartInfo> = objects.cloned().collect();
    let read = futures::stream::iter(objects)
        .map(|p| async move {
            let p = &p;
            let loc = p.index.ok_or_else(|| RestoreError::Invalid {
                checkpoint: n,
                reason: format!("`{}` has no index", p.key),
            })?;
            let bytes = store
                .read_section(p, loc)
                .await
                .map_err(|e| RestoreError::store(n, e))?;
            let index = codec::decode_index(&bytes).map_err(|source| RestoreError::Decode { checkpoint: n, source })?;
            Ok::<_, RestoreError>((p.key.clone(), index))
        })
        .buffer_unordered(INDEXES_IN_FLIGHT);
    read.try_collect().await
}

/// The rest sections of every part of the checkpoint, decoded into what `layout` owns.
async fn rests(
    store: &CheckpointStore,
    manifest: &Manifest,
    app: &AppIdentity,
    layout: Layout,
    indexes: &HashMap<String, PartIndex>,
    read: &mut u64,
) -> Result<Capture, RestoreError> {
    let n = manifest.checkpoint;
    let mut rests = Vec::with_capacity(manifest.parts.len());
    for p in &manifest.parts {
        let rest = indexes[&p.key].rest.as_ref().ok_or_else(|| RestoreError::Damaged {
            checkpoint: n,
            reason: format!("the index of `{}` has no rest section", p.key),
        })?;
        let loc = SectionLoc {
            offset: rest.offset,
            length: rest.length,
            crc32: rest.crc32,
        };
        let bytes = store
            .read_section(p, loc)
            .await
            .map_err(|e| RestoreError::store(n, e))?;
        *read += bytes.len() as u64;
        rests.push(bytes);
    }
    codec::decode(app, &rests, layout).map_err(|source| RestoreError::Decode { checkpoint: n, source })
}

/// A run of adjacent sections of one object, read in pieces.
#[derive(Debug, PartialEq, Eq)]
struct Piece {
    object: usize,
    range: Range<u64>,
    /// Sections (indices into the plan's list) with the part of each this piece holds.
    spans: Vec<(usize, Range<usize>)>,
}

/// What a worker reads of a format-2 checkpoint for the key groups it owns.
#[derive(Debug)]
struct Plan {
    /// Per owned key group its chain, which the worker's next parts extend.
    chains: BTreeMap<u32, Vec<Link>>,
    /// The sections to apply, in order (object, section): objects oldest first, so every
    /// group's chain is applied oldest first.
    sections: Vec<(usize, Section)>,
    /// The ranged reads that fetch them, in the same order, each at most `piece` bytes.
    pieces: Vec<Piece>,
}

/// The objects (indices into `manifest.objects`) the key groups in `owned` need, checked
/// against the manifest's own lists.
fn needed_objects(manifest: &Manifest, owned: Range<u32>) -> Result<BTreeSet<usize>, RestoreError> {
    let invalid = |reason: String| RestoreError::Invalid {
        checkpoint: manifest.checkpoint,
        reason,
    };
    if manifest.groups.len() != manifest.key_groups as usize {
        return Err(invalid(format!(
            "the manifest lists chains of {} key groups, it has {}",
            manifest.groups.len(),
            manifest.key_groups
        )));
    }
    let mut wanted = BTreeSet::new();
    for kg in owned {
        for &o in &manifest.groups[kg as usize] {
            if o as usize >= manifest.objects.len() {
                return Err(invalid(format!(
                    "key group {kg}'s chain names object {o} of {}",
                    manifest.objects.len()
                )));
            }
            wanted.insert(o as usize);
        }
    }
    Ok(wanted)
}

/// Pure: which sections of which objects the key groups in `owned` need (from the objects'
/// `indexes`) and the reads of at most `piece` bytes that fetch them — adjacent sections of
/// one object share reads. Nothing of a group outside `owned` is read.
fn plan(
    manifest: &Manifest,
    indexes: &HashMap<String, PartIndex>,
    owned: Range<u32>,
    piece: u64,
) -> Result<Plan, RestoreError> {
    let n = manifest.checkpoint;
    needed_objects(manifest, owned.clone())?;
    // Per owned group its chain as links; per object the sections to apply from it.
    let mut chains: BTreeMap<u32, Vec<Link>> = BTreeMap::new();
    let mut by_object: BTreeMap<usize, Vec<Section>> = BTreeMap::new();
    let mut shared: HashMap<usize, Arc<PartInfo>> = HashMap::new();
    for kg in owned {
        for &o in &manifest.groups[kg as usize] {
            let object = &manifest.objects[o as usize];
            let index = indexes.get(&object.key).ok_or_else(|| RestoreError::Invalid {
                checkpoint: n,
                reason: format!("no index of `{}` was read", object.key),
            })?;
            let section = index
                .groups
                .iter()
                .find(|s| s.key_group == kg)
                .copied()
                .ok_or_else(|| RestoreError::Damaged {
                    checkpoint: n,
                    reason: format!(
                        "the manifest says `{}` holds key group {kg}, its index does not",
                        object.key
                    ),
                })?;
            if section.offset.saturating_add(section.length) > object.size {
                return Err(RestoreError::Damaged {
                    checkpoint: n,
                    reason: format!("`{}`: key group {kg}'s section lies past its end", object.key),
                });
            }
            let info = shared
                .entry(o as usize)
                .or_insert_with(|| Arc::new(object.clone()))
                .clone();
            chains.entry(kg).or_default().push(Link { object: info, section });
            by_object.entry(o as usize).or_default().push(section);
        }
    }
    // Object order: oldest checkpoint first (a chain only ever appends newer objects).
    let mut order: Vec<usize> = by_object.keys().copied().collect();
    order.sort_by_key(|&o| (checkpoint_of(&manifest.objects[o].key), o));
    let mut sections: Vec<(usize, Section)> = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    for o in order {
        let mut list = by_object.remove(&o).expect("listed");
        list.sort_by_key(|s| s.offset);
        for s in list {
            if s.length == 0 {
                // Nothing to apply (no section of a base is empty: it says it is one).
                continue;
            }
            let i = sections.len();
            let (start, end) = (s.offset, s.offset + s.length);
            sections.push((o, s));
            let mut at = start;
            while at < end {
                // Extend the last piece when this section continues it in the same object.
                let extend = pieces
                    .last()
                    .is_some_and(|p| p.object == o && p.range.end == at && p.range.end - p.range.start < piece);
                if !extend {
                    pieces.push(Piece {
                        object: o,
                        range: at..at,
                        spans: Vec::new(),
                    });
                }
                let p = pieces.last_mut().expect("pushed");
                let room = piece - (p.range.end - p.range.start);
                let take = room.min(end - at);
                let from = (p.range.end - p.range.start) as usize;
                p.spans.push((i, from..from + take as usize));
                p.range.end += take;
                at += take;
            }
        }
    }
    Ok(Plan {
        chains,
        sections,
        pieces,
    })
}

async fn incremental(
    store: &CheckpointStore,
    manifest: &Manifest,
    app: &AppIdentity,
    layout: Layout,
) -> Result<Restored, RestoreError> {
    let n = manifest.checkpoint;
    let owned = range_of(layout.worker, layout.workers, layout.key_groups);
    // Objects the owned groups need, and the parts (their rest sections).
    let wanted = needed_objects(manifest, owned.clone())?;
    let needed = wanted
        .iter()
        .map(|&o| &manifest.objects[o])
        .chain(&manifest.parts)
        .fold(HashMap::new(), |mut m, p| {
            m.entry(p.key.as_str()).or_insert(p);
            m
        });
    let indexes = indexes(store, n, needed.values().copied()).await?;
    let mut read: u64 = needed.values().map(|p| p.index.map_or(0, |l| l.length)).sum();
    let mut capture = rests(store, manifest, app, layout, &indexes, &mut read).await?;
    let Plan {
        chains,
        sections,
        pieces,
    } = plan(manifest, &indexes, owned, store.transfer().piece as u64)?;
    let mut typenames = TypeNames::new();
    let mut open: Option<(usize, GroupDecoder)> = None;
    let state = &mut capture.state;
    // Reads run ahead (in order) while pieces are decoded here.
    let reads: Vec<(PartInfo, Range<u64>)> = pieces
        .iter()
        .map(|p| (manifest.objects[p.object].clone(), p.range.clone()))
        .collect();
    let mut fetched = futures::stream::iter(reads)
        .map(|(object, range)| {
            let store = store.clone();
            async move { store.read_range(&object, range).await }
        })
        .buffered(store.transfer().concurrency);
    let mut next_piece = 0;
    while let Some(bytes) = fetched.next().await {
        let bytes = bytes.map_err(|e| RestoreError::store(n, e))?;
        read += bytes.len() as u64;
        let piece = &pieces[next_piece];
        next_piece += 1;
        for (i, span) in &piece.spans {
            let (_, s) = &sections[*i];
            if open.as_ref().is_none_or(|(j, _)| j != i) {
                if let Some((j, d)) = open.take() {
                    finish(n, &manifest.objects[sections[j].0], &sections[j].1, d)?;
                }
                open = Some((*i, GroupDecoder::new(state, s.key_group, s.base)));
            }
            let (_, d) = open.as_mut().expect("opened");
            d.push(state, &mut typenames, &bytes[span.clone()]);
        }
    }
    if let Some((j, d)) = open.take() {
        finish(n, &manifest.objects[sections[j].0], &sections[j].1, d)?;
    }
    drop(fetched);
    Ok(Restored {
        capture,
        chains: Chains::restored(chains),
        bytes_read: read,
    })
}

fn finish(n: u64, object: &PartInfo, s: &Section, d: GroupDecoder) -> Result<(), RestoreError> {
    d.finish(s.length, s.crc32).map(|_| ()).map_err(|e| match e {
        SectionError::Damaged(reason) => RestoreError::Damaged {
            checkpoint: n,
            reason: format!("`{}`, key group {}: {reason}", object.key, s.key_group),
        },
        SectionError::Invalid(reason) => RestoreError::Invalid {
            checkpoint: n,
            reason: format!("`{}`, key group {}: {reason}", object.key, s.key_group),
        },
    })
}

/// The checkpoint number in a part's key (`…/checkpoints/<n>/part-…`).
fn checkpoint_of(key: &str) -> u64 {
    key.rsplit('/').nth(1).and_then(|d| d.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(checkpoint: u64, worker: u32) -> String {
        format!("app/checkpoints/{checkpoint:020}/part-g1-w{worker}.bin")
    }

    fn object(checkpoint: u64, worker: u32, size: u64) -> PartInfo {
        PartInfo {
            worker,
            key: key(checkpoint, worker),
            size,
            ..PartInfo::default()
        }
    }

    fn section(kg: u32, offset: u64, length: u64) -> Section {
        Section {
            key_group: kg,
            base: false,
            offset,
            length,
            crc32: 0,
            addresses: 1,
        }
    }

    fn index(groups: Vec<Section>) -> PartIndex {
        PartIndex {
            groups,
            ..PartIndex::default()
        }
    }

    /// Four key groups over two workers, chains across three checkpoints; the objects are
    /// listed out of checkpoint order on purpose.
    fn fixture() -> (Manifest, HashMap<String, PartIndex>) {
        let manifest = Manifest {
            checkpoint: 3,
            key_groups: 4,
            format: 2,
            objects: vec![object(3, 0, 50), object(1, 0, 150), object(2, 1, 2600)],
            groups: vec![vec![1, 0], vec![1], vec![2], vec![2, 0]],
            ..Manifest::default()
        };
        let indexes = HashMap::from([
            (key(1, 0), index(vec![section(0, 0, 100), section(1, 100, 50)])),
            (key(3, 0), index(vec![section(0, 0, 30), section(3, 30, 20)])),
            (key(2, 1), index(vec![section(2, 0, 2500), section(3, 2500, 10)])),
        ]);
        (manifest, indexes)
    }

    /// Each read as (checkpoint of its object, byte range).
    fn read(p: &Plan) -> Vec<(String, Range<u64>)> {
        let objects = fixture().0.objects;
        p.pieces
            .iter()
            .map(|x| (checkpoint_of(&objects[x.object].key).to_string(), x.range.clone()))
            .collect()
    }

    #[test]
    fn a_worker_reads_only_the_sections_of_its_key_groups_oldest_first() {
        let (m, idx) = fixture();
        let first = plan(&m, &idx, 0..2, 1000).unwrap();
        // Groups 0 and 1: checkpoint 1's two adjacent sections in one read, then checkpoint
        // 3's section of group 0; nothing of checkpoint 2 (groups 2 and 3).
        assert_eq!(read(&first), [("1".to_string(), 0..150), ("3".to_string(), 0..30)]);
        assert_eq!(first.pieces[0].spans, [(0, 0..100), (1, 100..150)]);
        let keys: Vec<u32> = first.sections.iter().map(|(_, s)| s.key_group).collect();
        assert_eq!(keys, [0, 1, 0], "group 0's chain in order: checkpoint 1, then 3");
        assert_eq!(first.chains.keys().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(first.chains[&0].len(), 2);
        assert_eq!(first.chains[&0][1].object.key, key(3, 0));

        let second = plan(&m, &idx, 2..4, 1000).unwrap();
        // Group 2's 2500 bytes in reads of at most 1000; group 3's first section continues the
        // last read; then its newer section in checkpoint 3.
        assert_eq!(
            read(&second),
            [
                ("2".to_string(), 0..1000),
                ("2".to_string(), 1000..2000),
                ("2".to_string(), 2000..2510),
                ("3".to_string(), 30..50)
            ]
        );
        // Spans are positions in the piece's bytes: the last 500 of group 2, then group 3.
        assert_eq!(second.pieces[2].spans, [(0, 0..500), (1, 500..510)]);
        let bytes: u64 = second.pieces.iter().map(|p| p.range.end - p.range.start).sum();
        assert_eq!(bytes, 2500 + 10 + 20, "exactly the owned sections");
        assert!(second.pieces.iter().all(|p| p.range.end - p.range.start <= 1000));
    }

    #[test]
    fn a_manifest_and_indexes_that_disagree_are_refused() {
        let (m, mut idx) = fixture();
        idx.insert(key(1, 0), index(vec![section(0, 0, 100)]));
        let err = plan(&m, &idx, 0..2, 1000).unwrap_err();
        assert!(
            err.is_damage() && err.to_string().contains("holds key group 1"),
            "{err}"
        );

        let (m, mut idx) = fixture();
        idx.insert(key(3, 0), index(vec![section(0, 0, 60)]));
        let err = plan(&m, &idx, 0..2, 1000).unwrap_err();
        assert!(err.is_damage() && err.to_string().contains("past its end"), "{err}");

        let (mut m, idx) = fixture();
        m.groups[1] = vec![7];
        let err = plan(&m, &idx, 0..2, 1000).unwrap_err();
        assert!(
            !err.is_damage() && err.to_string().contains("names object 7 of 3"),
            "{err}"
        );
        assert!(
            plan(&m, &idx, 2..4, 1000).is_ok(),
            "another worker's groups are not looked at"
        );

        let (mut m, idx) = fixture();
        m.groups.pop();
        let err = plan(&m, &idx, 0..2, 1000).unwrap_err();
        assert!(err.to_string().contains("chains of 3 key groups, it has 4"), "{err}");
    }
}
