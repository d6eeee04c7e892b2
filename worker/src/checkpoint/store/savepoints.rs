//! Savepoints: named checkpoints that retention never deletes (nor any object they
//! reference), under `<root>/savepoints/<name>.json`, each naming its checkpoint. Also how a
//! `restoreFrom` value (a savepoint name or a checkpoint number) resolves to a manifest, and
//! the record of the last `restoreFrom` applied (`<root>/restored-from`).

use bytes::Bytes;
use futures::StreamExt as _;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};

use super::{CheckpointStore, Manifest, StoreError, classify};

/// A savepoint record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Savepoint {
    pub name: String,
    pub checkpoint: u64,
    pub created_at_ms: u64,
}

/// The last `restoreFrom` worker 0 applied, so a restart does not apply it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    /// What the spec said (`restoreFrom`, application and storage).
    pub spec: String,
    /// The checkpoint of this application it became.
    pub checkpoint: u64,
}

/// Why a `restoreFrom` value names no checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{store}: no savepoint `{name}` (savepoints there: {known})")]
    UnknownSavepoint { store: String, name: String, known: String },
    #[error("{store}: no checkpoint {checkpoint} (completed checkpoints there: {known})")]
    UnknownCheckpoint {
        store: String,
        checkpoint: u64,
        known: String,
    },
    #[error("{store}: savepoint `{name}` names checkpoint {checkpoint}, whose manifest is gone")]
    Dangling {
        store: String,
        name: String,
        checkpoint: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list_or_none<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    let names: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

impl CheckpointStore {
    fn savepoint_path(&self, name: &str) -> ObjectPath {
        self.root.clone().join("savepoints").join(format!("{name}.json"))
    }

    /// Records a savepoint; `Conflict` when the name is taken. On a local filesystem it is
    /// made durable before this returns.
    pub async fn put_savepoint(&self, s: &Savepoint) -> Result<(), StoreError> {
        let path = self.savepoint_path(&s.name);
        let json = serde_json::to_vec_pretty(s).expect("a savepoint serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path, Bytes::from(json).into(), opts)
            .await
            .map_err(|e| classify(e, path.as_ref()))?;
        let dir = self.root.clone().join("savepoints");
        self.sync(vec![path, dir, self.root.clone()]).await
    }

    pub async fn delete_savepoint(&self, name: &str) -> Result<(), StoreError> {
        let path = self.savepoint_path(name);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e, path.as_ref())),
        }
    }

    /// Every savepoint, by name.
    pub async fn savepoints(&self) -> Result<Vec<Savepoint>, StoreError> {
        let prefix = self.root.clone().join("savepoints");
        let mut list = self.store.list(Some(&prefix));
        let mut paths = Vec::new();
        while let Some(meta) = list.next().await {
            paths.push(meta.map_err(|e| classify(e, prefix.as_ref()))?.location);
        }
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            if !path.as_ref().ends_with(".json") {
                continue;
            }
            let bytes = self.get(&path).await?;
            let s: Savepoint = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                key: path.to_string(),
                reason: format!("not a savepoint record: {e}"),
            })?;
            out.push(s);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn savepoint(&self, name: &str) -> Result<Option<Savepoint>, StoreError> {
        let path = self.savepoint_path(name);
        match self.get(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: path.to_string(),
                    reason: format!("not a savepoint record: {e}"),
                }),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The manifest `what` names: a checkpoint number, or a savepoint's name.
    pub async fn resolve(&self, what: &str) -> Result<Manifest, ResolveError> {
        if let Ok(n) = what.parse::<u64>() {
            return match self.manifest(n).await {
                Ok(m) => Ok(m),
                Err(StoreError::NotFound { .. }) => Err(ResolveError::UnknownCheckpoint {
                    store: self.describe(),
                    checkpoint: n,
                    known: list_or_none(self.completed().await?),
                }),
                Err(e) => Err(e.into()),
            };
        }
        let Some(s) = self.savepoint(what).await? else {
            return Err(ResolveError::UnknownSavepoint {
                store: self.describe(),
                name: what.to_string(),
                known: list_or_none(self.savepoints().await?.into_iter().map(|s| s.name)),
            });
        };
        match self.manifest(s.checkpoint).await {
            Ok(m) => Ok(m),
            Err(StoreError::NotFound { .. }) => Err(ResolveError::Dangling {
                store: self.describe(),
                name: s.name,
                checkpoint: s.checkpoint,
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn restored_from(&self) -> Result<Option<RestoredFrom>, StoreError> {
        let path = self.root.clone().join("restored-from");
        match self.get(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: path.to_string(),
                    reason: format!("not a restore record: {e}"),
                }),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes (`Some`) or removes (`None`) the record of the last `restoreFrom` applied.
    pub async fn set_restored_from(&self, r: Option<&RestoredFrom>) -> Result<(), StoreError> {
        let path = self.root.clone().join("restored-from");
        match r {
            Some(r) => {
                let json = serde_json::to_vec_pretty(r).expect("a restore record serializes");
                self.store
                    .put(&path, Bytes::from(json).into())
                    .await
                    .map_err(|e| classify(e, path.as_ref()))?;
                self.sync(vec![path, self.root.clone()]).await
            }
            None => match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(classify(e, path.as_ref())),
            },
        }
    }

    /// The highest checkpoint number with any object (a manifest or a part).
    pub async fn highest(&self) -> Result<u64, StoreError> {
        Ok(self.objects().await?.iter().map(|(n, _)| *n).max().unwrap_or(0))
    }

    /// Copies `part` of `src` (checked against its checksum as it is read) to `key` here.
    pub(crate) async fn copy_part(
        &self,
        src: &CheckpointStore,
        part: &super::PartInfo,
        key: String,
    ) -> Result<super::PartInfo, StoreError> {
        let payload = src.read_part(part).await?;
        let magic = if part.index.is_some() {
            super::MAGIC_V2
        } else {
            super::MAGIC_V1
        };
        let crc32 = self.put_object(&key, magic, payload).await?;
        Ok(super::PartInfo {
            key,
            crc32,
            chains: None,
            ..part.clone()
        })
    }
}
