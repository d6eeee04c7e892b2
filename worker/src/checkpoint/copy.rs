//! `spec.checkpoint.restoreFrom`: before the coordinator's first rollback, worker 0 makes
//! the chosen savepoint or checkpoint this application's newest checkpoint, so the ordinary
//! restore starts from it. From this application's own storage that is a new manifest over
//! the same objects (nothing copied); from another application or storage every object the
//! checkpoint references is copied (each checked against its checksum as it is read) next to
//! its original checkpoint's number, under a name of its own. Applied once per value: a
//! record (`restored-from`) makes a restart resume from the newest checkpoint as usual.

use std::path::Path;

use super::manifest::{CopiedFrom, Manifest, PartInfo};
use super::store::{CheckpointStore, ResolveError, RestoredFrom, StoreError};
use crate::app::{AppIdentity, RestoreFrom};
use crate::clock::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("spec.checkpoint.restoreFrom: {0}")]
    Resolve(#[from] ResolveError),
    #[error("spec.checkpoint.restoreFrom: {0}")]
    Store(#[from] StoreError),
    #[error(
        "spec.checkpoint.restoreFrom: checkpoint {checkpoint} of {source_store} has {found} key groups, this application {expected}: the key-group count cannot change"
    )]
    KeyGroups {
        checkpoint: u64,
        source_store: String,
        found: u32,
        expected: u32,
    },
    #[error("spec.checkpoint.restoreFrom: checkpoint {checkpoint} of {source_store} is damaged: {reason}")]
    Damaged {
        checkpoint: u64,
        source_store: String,
        reason: String,
    },
}

/// The source application: `name` (in this application's namespace) or `namespace/name`.
pub fn source_identity(me: &AppIdentity, application: Option<&str>) -> AppIdentity {
    match application {
        None => me.clone(),
        Some(a) => match a.split_once('/') {
            Some((ns, name)) => AppIdentity {
                namespace: Some(ns.to_string()),
                name: name.to_string(),
                uid: None,
            },
            None => AppIdentity {
                namespace: me.namespace.clone(),
                name: a.to_string(),
                uid: None,
            },
        },
    }
}

fn describe(from: &RestoreFrom) -> String {
    let mut s = from.from.clone();
    if let Some(a) = &from.application {
        s.push_str(&format!(" of {a}"));
    }
    if let Some(st) = &from.storage {
        s.push_str(&format!(" in {st}"));
    }
    s
}

/// Pure: where a copy of `key` (an object of the source's checkpoint `n`) goes under `dst`:
/// beside the same checkpoint number — the order of a chain's objects is their checkpoints'
/// order — named after the copy's checkpoint so it cannot meet an object of the destination.
pub fn copy_key(dst: &CheckpointStore, key: &str, copy: u64) -> String {
    let dir = key.rsplit('/').nth(1).and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
    let file = key.rsplit('/').next().unwrap_or(key);
    let stem = file.strip_suffix(".bin").unwrap_or(file);
    let at = dst.part_key(dir, 0, 0);
    let (prefix, _) = at.rsplit_once('/').expect("a part key has a directory");
    format!("{prefix}/{stem}-c{copy}.bin")
}

/// Applies `from` to `dst` (this application's store) unless it was applied already;
/// returns the checkpoint it became, `None` when there was nothing to do. Without
/// `restoreFrom` the record of an earlier one is removed, so setting it again applies it
/// again.
pub async fn apply(
    dst: &CheckpointStore,
    me: &AppIdentity,
    key_groups: u32,
    from: Option<&RestoreFrom>,
    own_url: &str,
    base_dir: &Path,
) -> Result<Option<u64>, CopyError> {
    let Some(from) = from else {
        if dst.restored_from().await?.is_some() {
            dst.set_restored_from(None).await?;
        }
        return Ok(None);
    };
    let spec = describe(from);
    if let Some(done) = dst.restored_from().await?
        && done.spec == spec
    {
        tracing::info!(restore_from = %spec, checkpoint = done.checkpoint, "restoreFrom was applied already: resuming from the newest checkpoint");
        return Ok(None);
    }
    let source = source_identity(me, from.application.as_deref());
    let same_storage = from.storage.as_deref().is_none_or(|s| s == own_url);
    let local = same_storage && source == *me;
    let src = if local {
        dst.clone()
    } else {
        CheckpointStore::open(
            from.storage.as_deref().unwrap_or(own_url),
            base_dir,
            &source.storage_root(),
        )?
    };
    let manifest = src.resolve(&from.from).await?;
    let n = manifest.checkpoint;
    let damaged = |reason: String| CopyError::Damaged {
        checkpoint: n,
        source_store: src.describe(),
        reason,
    };
    if manifest.key_groups != key_groups {
        return Err(CopyError::KeyGroups {
            checkpoint: n,
            source_store: src.describe(),
            found: manifest.key_groups,
            expected: key_groups,
        });
    }
    src.check(n).await.map_err(|e| match e {
        e if e.is_damage() => damaged(e.to_string()),
        e => CopyError::Store(e),
    })?;
    let copy = dst.highest().await?.max(if local { 0 } else { n }) + 1;
    let mut m = Manifest {
        application: me.name.clone(),
        namespace: me.namespace.clone(),
        uid: me.uid.clone(),
        checkpoint: copy,
        created_at_ms: now_ms(),
        ..manifest.clone()
    };
    if !local {
        let rename = |p: &PartInfo| copy_key(dst, &p.key, copy);
        let mut copied = std::collections::HashMap::new();
        for p in manifest.referenced() {
            let to = dst.copy_part(&src, p, rename(p)).await.map_err(|e| {
                if e.is_damage() {
                    damaged(e.to_string())
                } else {
                    CopyError::Store(e)
                }
            })?;
            copied.insert(p.key.clone(), to);
        }
        let swap = |p: &PartInfo| copied[&p.key].clone();
        m.parts = manifest.parts.iter().map(swap).collect();
        m.objects = manifest.objects.iter().map(swap).collect();
        // The parts were written by the source application (the restore accepts them so).
        m.copied_from = Some(manifest.copied_from.clone().unwrap_or_else(|| {
            Box::new(CopiedFrom {
                application: source.name.clone(),
                namespace: source.namespace.clone(),
                checkpoint: n,
                storage: src.describe(),
            })
        }));
        if source == *me {
            m.copied_from = manifest.copied_from.clone();
        }
    }
    dst.put_manifest(&m).await?;
    dst.set_restored_from(Some(&RestoredFrom {
        spec: spec.clone(),
        checkpoint: copy,
    }))
    .await?;
    tracing::info!(restore_from = %spec, from = %src.describe(), source_checkpoint = n, checkpoint = copy, copied = !local, "restoreFrom applied: the application starts from it");
    Ok(Some(copy))
}
