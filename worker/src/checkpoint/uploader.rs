//! Writes this worker's finished captures to the store, one at a time and off the
//! partition's loop, and tells the coordinator how it went. A failed upload fails that
//! checkpoint only; the next one is a new attempt — and carries the state changes the failed
//! part held, since the partition hands each change over once.
//!
//! Each part extends the chains of the key groups this worker owns ([`Chains`]); after each,
//! the uploader picks the key groups the partition captures whole at its next snapshot
//! (compaction, within the budget `chains` keeps).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::chains::Chains;
use super::codec::{self, PartMeta};
use super::link::CoordinatorLink;
use super::manifest::PartInfo;
use super::store::CheckpointStore;
use crate::metrics::Metrics;
use crate::partition::{Capture, Compaction};
use crate::state::GroupChanges;
use crate::stop::CancellationToken;

pub(crate) struct Uploader {
    pub store: CheckpointStore,
    pub meta: PartMeta,
    pub coordinator: CoordinatorLink,
    pub metrics: Arc<Metrics>,
    /// The chains of the key groups this worker owns: restored, then extended by each part.
    pub chains: Chains,
    /// Key groups the partition captures whole at its next snapshot.
    pub compaction: Compaction,
}

impl Uploader {
    pub async fn run(mut self, mut captures: mpsc::UnboundedReceiver<Capture>, stop: CancellationToken) {
        let (generation, worker) = (self.meta.generation, self.meta.worker);
        // State changes of a capture whose part was not written.
        let mut carry: Vec<GroupChanges> = Vec::new();
        loop {
            let mut capture = tokio::select! {
                c = captures.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            let n = capture.checkpoint;
            let clean = capture.egress.is_empty();
            let started = Instant::now();
            capture.changes.groups = merge(std::mem::take(&mut carry), std::mem::take(&mut capture.changes.groups));
            let written = tokio::select! {
                w = write(&self.store, &self.meta, &mut self.chains, capture) => w,
                _ = stop.cancelled() => return,
            };
            let result = match written {
                Ok(w) => {
                    *self.compaction.lock().expect("compaction plan lock") = w.whole;
                    let m = &self.metrics;
                    m.checkpoint_part_bytes.set(w.bytes as i64);
                    m.checkpoint_written_bytes.inc_by(w.bytes);
                    m.checkpoint_delta_bytes.inc_by(w.delta_bytes);
                    m.checkpoint_base_bytes.inc_by(w.base_bytes);
                    m.part_upload_seconds.observe(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        checkpoint = n,
                        bytes = w.bytes,
                        delta_bytes = w.delta_bytes,
                        base_bytes = w.base_bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "part written"
                    );
                    Ok(w.info)
                }
                Err(Failed {
                    reason: e,
                    changes,
                    whole,
                }) => {
                    carry = changes;
                    if !whole.is_empty() {
                        self.compaction.lock().expect("compaction plan lock").extend(whole);
                    }
                    self.metrics.part_upload_failures.inc();
                    tracing::warn!(checkpoint = n, error = %e, "writing this worker's part failed; the checkpoint fails, the next one retries");
                    Err(e)
                }
            };
            self.coordinator.part(generation, n, worker, result, clean).await;
        }
    }
}

/// A part written.
pub(crate) struct Written {
    /// What the coordinator is told (with this worker's chains).
    pub info: PartInfo,
    /// Key groups the next snapshot captures whole.
    pub whole: Vec<u32>,
    pub bytes: u64,
    pub delta_bytes: u64,
    pub base_bytes: u64,
}

/// A part that was not written.
pub(crate) struct Failed {
    pub reason: String,
    /// The state changes it held, for the next part.
    pub changes: Vec<GroupChanges>,
    /// Key groups whose changes were lost with it (encoding failed): the next snapshot
    /// captures them whole.
    pub whole: Vec<u32>,
}

/// Encodes `capture` as this worker's part (off the async threads), writes it and extends
/// `chains`.
pub(crate) async fn write(
    store: &CheckpointStore,
    meta: &PartMeta,
    chains: &mut Chains,
    capture: Capture,
) -> Result<Written, Failed> {
    let (n, generation, worker) = (capture.checkpoint, meta.generation, meta.worker);
    let groups: Vec<u32> = capture.changes.groups.iter().map(|g| g.key_group).collect();
    let m = meta.clone();
    // Encoding walks every captured value: keep it off the async worker threads.
    let (capture, part) = tokio::task::spawn_blocking(move || {
        let part = codec::encode(&capture, &m);
        (capture, part)
    })
    .await
    .map_err(|e| Failed {
        reason: format!("encoding the part failed: {e}"),
        changes: Vec::new(),
        whole: groups,
    })?;
    // No read-back: S3 checks the SHA-256 every request carries before it answers (see
    // `CheckpointStore::new`), and on a local filesystem a read would come from the page
    // cache, proving nothing the write and the manifest's fsync do not. Damage found later is
    // damage after completion (data loss); restores check every CRC where they read.
    let info = store.put_encoded(n, generation, worker, &part).await;
    let info = Arc::new(info.map_err(|e| Failed {
        reason: e.to_string(),
        changes: capture.changes.groups,
        whole: Vec::new(),
    })?);
    chains.written(&info, &part.groups, &capture.changes.sizes);
    let whole = chains.plan(&capture.changes.sizes, part.delta_bytes);
    Ok(Written {
        info: PartInfo {
            chains: Some(Arc::new(chains.report())),
            ..(*info).clone()
        },
        whole,
        bytes: part.payload.len() as u64,
        delta_bytes: part.delta_bytes,
        base_bytes: part.base_bytes,
    })
}

/// The changes of a part that was not written, under the next capture's: per key group, the
/// newer entry of an address wins, and a group captured whole stays whole.
fn merge(older: Vec<GroupChanges>, newer: Vec<GroupChanges>) -> Vec<GroupChanges> {
    if older.is_empty() {
        return newer;
    }
    let mut by_group: HashMap<u32, GroupChanges> = older.into_iter().map(|g| (g.key_group, g)).collect();
    let mut out = Vec::with_capacity(by_group.len() + newer.len());
    for g in newer {
        let Some(old) = by_group.remove(&g.key_group) else {
            out.push(g);
            continue;
        };
        if g.whole {
            out.push(g);
            continue;
        }
        let changed: HashSet<_> = g.entries.iter().map(|(a, _)| a.clone()).collect();
        let mut entries: Vec<_> = old.entries.into_iter().filter(|(a, _)| !changed.contains(a)).collect();
        entries.extend(g.entries);
        out.push(GroupChanges {
            key_group: g.key_group,
            whole: old.whole,
            entries,
        });
    }
    out.extend(by_group.into_values());
    out.sort_by_key(|g| g.key_group);
    out
}

#[cfg(test)]
mod tests {
    use spindle_spec::TypeName;

    use super::*;
    use crate::message::Address;

    fn group(kg: u32, whole: bool, ids: &[&str]) -> GroupChanges {
        GroupChanges {
            key_group: kg,
            whole,
            entries: ids
                .iter()
                .map(|id| (Address::new(TypeName::parse("t/f").unwrap(), *id), None))
                .collect(),
        }
    }

    fn ids(g: &GroupChanges) -> Vec<String> {
        let mut v: Vec<String> = g.entries.iter().map(|(a, _)| a.id.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_parts_changes_go_with_the_next_part() {
        let merged = merge(
            vec![
                group(0, false, &["a", "b"]),
                group(1, true, &["c"]),
                group(2, false, &["d"]),
            ],
            vec![
                group(0, false, &["b", "e"]),
                group(1, false, &["f"]),
                group(2, true, &["g"]),
                group(3, false, &["h"]),
            ],
        );
        let by: HashMap<u32, &GroupChanges> = merged.iter().map(|g| (g.key_group, g)).collect();
        assert_eq!(
            (ids(by[&0]), by[&0].whole),
            (vec!["a".into(), "b".into(), "e".into()], false)
        );
        assert_eq!(
            (ids(by[&1]), by[&1].whole),
            (vec!["c".into(), "f".into()], true),
            "whole stays whole"
        );
        assert_eq!(
            (ids(by[&2]), by[&2].whole),
            (vec!["g".into()], true),
            "a newer whole replaces"
        );
        assert_eq!(ids(by[&3]), ["h"]);
        assert_eq!(merged.len(), 4);
    }
}
