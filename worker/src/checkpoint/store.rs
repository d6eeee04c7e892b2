//! Checkpoint storage on any `object_store`: a local directory (the default for local runs) or
//! an S3-compatible bucket. Layout under `<root> = <url prefix>/<application>`:
//!
//! ```text
//! <root>/generation                                   the last generation, a decimal number
//! <root>/checkpoints/<n:020>/part-g<gen>-w<worker>.bin  header (magic, crc32, length) + payload
//! <root>/checkpoints/<n:020>/MANIFEST.json            written last, by conditional create
//! ```
//!
//! Every call is bounded in time: an unavailable store fails a checkpoint within seconds
//! instead of holding it for minutes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, RetryConfig};
use tokio_stream::StreamExt;

pub use super::manifest::{Manifest, PartInfo};

const MAGIC: &[u8; 8] = b"SPNDLPT1";
const HEADER: usize = 8 + 4 + 8;
const MANIFEST: &str = "MANIFEST.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("checkpoint storage URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    /// Retryable: the storage did not answer, or answered with an error.
    #[error("checkpoint storage unavailable: {0}")]
    Unavailable(String),
    #[error("`{key}` does not exist")]
    NotFound { key: String },
    #[error("`{key}` exists already")]
    Conflict { key: String },
    #[error("`{key}` is damaged: {reason}")]
    Corrupt { key: String, reason: String },
}

fn classify(e: object_store::Error, key: &str) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound { key: key.to_string() },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StoreError::Conflict { key: key.to_string() }
        }
        other => StoreError::Unavailable(format!("{key}: {other}")),
    }
}

/// The newest intact checkpoint.
#[derive(Debug)]
pub struct Latest {
    pub manifest: Manifest,
    pub parts: Vec<(PartInfo, Bytes)>,
    /// Newer checkpoints skipped because a part or the manifest is damaged.
    pub damaged: Vec<u64>,
}

#[derive(Clone)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    describe: String,
    /// Local filesystem: the directory objects live under, for making them durable.
    local: Option<Arc<Path>>,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointStore({})", self.describe)
    }
}

impl CheckpointStore {
    /// `url`: `s3://bucket/prefix` (credentials, region, endpoint from `AWS_*` variables),
    /// `file:///abs/path`, or a path (relative ones start at `base_dir`). `application` is the
    /// root under it: the name, or `<namespace>/<name>` in Kubernetes.
    pub fn open(url: &str, base_dir: &Path, application: &str) -> Result<CheckpointStore, StoreError> {
        Self::open_with_env(url, base_dir, application, std::env::vars())
    }

    /// As [`open`](Self::open), with the `AWS_*` settings taken from `env`.
    pub fn open_with_env(
        url: &str,
        base_dir: &Path,
        application: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CheckpointStore, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket".into()));
            }
            // TLS to S3 goes through rustls with the ring provider; installing it is
            // idempotent (an error just means it is installed already).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let options = ClientOptions::new()
                .with_timeout(Duration::from_secs(5))
                .with_connect_timeout(Duration::from_secs(2));
            let retry = RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(8),
                ..RetryConfig::default()
            };
            let mut builder = object_store::aws::AmazonS3Builder::new();
            let mut allow_http = false;
            for (k, v) in env {
                if k == "AWS_ALLOW_HTTP" {
                    // Plain-HTTP endpoints: tests, an in-cluster MinIO.
                    allow_http = v.eq_ignore_ascii_case("true");
                } else if k.starts_with("AWS_")
                    && let Ok(key) = k.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>()
                {
                    builder = builder.with_config(key, v);
                }
            }
            let s3 = builder
                .with_bucket_name(bucket)
                .with_client_options(options)
                .with_allow_http(allow_http)
                .with_retry(retry)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            // `application` may be `<namespace>/<name>`: one path segment each.
            let root = ObjectPath::from_iter(prefix.split('/').chain(application.split('/')));
            return Ok(CheckpointStore {
                store: Arc::new(s3),
                describe: format!("s3://{bucket}/{root}"),
                root,
                local: None,
            });
        }
        let dir = match url.strip_prefix("file://") {
            Some(p) => Path::new(p).to_path_buf(),
            None if url.contains("://") => return Err(bad("expected s3://, file:// or a path".into())),
            None => base_dir.join(url),
        };
        std::fs::create_dir_all(&dir).map_err(|e| bad(format!("cannot create {}: {e}", dir.display())))?;
        // Writes are not fsynced one by one: `put_manifest` makes a whole checkpoint durable
        // at once (see `sync`).
        // Automatic cleanup removes a checkpoint's directory with its last file: otherwise
        // every checkpoint ever taken leaves an empty directory that each listing walks.
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| bad(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(CheckpointStore {
            store: Arc::new(fs),
            describe: format!("{}/{application}", dir.display()),
            root: ObjectPath::from(application),
            local: Some(dir.into()),
        })
    }

    /// A store over any object store (unit tests: in memory, with faults injected).
    #[cfg(test)]
    pub(crate) fn over(store: Arc<dyn ObjectStore>, application: &str) -> CheckpointStore {
        CheckpointStore {
            store,
            root: ObjectPath::from(application),
            describe: format!("test/{application}"),
            local: None,
        }
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    fn dir(&self, checkpoint: u64) -> ObjectPath {
        self.root.clone().join("checkpoints").join(format!("{checkpoint:020}"))
    }

    /// The key of worker `worker`'s part (what `put_part` writes and its report names).
    pub fn part_key(&self, checkpoint: u64, generation: u64, worker: u32) -> String {
        self.dir(checkpoint)
            .join(format!("part-g{generation}-w{worker}.bin"))
            .to_string()
    }

    pub async fn put_part(
        &self,
        checkpoint: u64,
        generation: u64,
        worker: u32,
        payload: Bytes,
    ) -> Result<PartInfo, StoreError> {
        let path = self.dir(checkpoint).join(format!("part-g{generation}-w{worker}.bin"));
        let crc32 = crc32fast::hash(&payload);
        let mut buf = BytesMut::with_capacity(HEADER + payload.len());
        buf.put_slice(MAGIC);
        buf.put_u32_le(crc32);
        buf.put_u64_le(payload.len() as u64);
        buf.put_slice(&payload);
        let key = path.to_string();
        self.store
            .put(&path, buf.freeze().into())
            .await
            .map_err(|e| classify(e, &key))?;
        Ok(PartInfo {
            worker,
            key,
            size: payload.len() as u64,
            crc32,
        })
    }

    /// Writes the manifest, which completes the checkpoint. On a local filesystem the
    /// checkpoint is made durable first — its parts, the manifest and their directories —
    /// because completion acknowledges durable records and releases egress: it must survive a
    /// power loss, not only a process crash.
    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), StoreError> {
        let path = self.dir(m.checkpoint).join(MANIFEST);
        let json = serde_json::to_vec_pretty(m).expect("a manifest serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path, Bytes::from(json).into(), opts)
            .await
            .map_err(|e| classify(e, path.as_ref()))?;
        let checkpoints = self.root.clone().join("checkpoints");
        let mut durable: Vec<ObjectPath> = m.parts.iter().map(|p| ObjectPath::from(p.key.as_str())).collect();
        durable.extend([path, self.dir(m.checkpoint), checkpoints, self.root.clone()]);
        self.sync(durable).await
    }

    /// Local filesystem only: fsyncs these files and directories, all at once — concurrent
    /// fsyncs share journal commits, so a checkpoint costs about one commit, not one per file.
    /// Nothing acknowledged depends on a checkpoint before this returns, so the order in which
    /// its files reach the disk does not matter: after a power loss in between, a manifest
    /// without intact parts fails its checksums and the previous checkpoint is restored.
    async fn sync(&self, keys: Vec<ObjectPath>) -> Result<(), StoreError> {
        let Some(dir) = self.local.clone() else {
            return Ok(());
        };
        let paths: Vec<std::path::PathBuf> = keys.iter().map(|k| dir.join(k.as_ref())).collect();
        let result = tokio::task::spawn_blocking(move || {
            std::thread::scope(|s| {
                let handles: Vec<_> = paths
                    .iter()
                    .map(|p| {
                        s.spawn(move || {
                            std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| match e.kind() {
                                // Another worker's part is not where this one looks: their
                                // storage is not shared, and a restore could never read it.
                                std::io::ErrorKind::NotFound => format!(
                                    "{} does not exist: every worker of an application must use the same checkpoint storage",
                                    p.display()
                                ),
                                _ => format!("fsync {}: {e}", p.display()),
                            })
                        })
                    })
                    .collect();
                handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("fsync thread panicked".into())))
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("fsync task failed: {e}")));
        result.map_err(StoreError::Unavailable)
    }

    /// Every object key under `checkpoints/`, with the checkpoint it belongs to.
    async fn objects(&self) -> Result<Vec<(u64, ObjectPath)>, StoreError> {
        let prefix = self.root.clone().join("checkpoints");
        let mut list = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(|e| classify(e, prefix.as_ref()))?;
            let n = meta
                .location
                .prefix_match(&prefix)
                .and_then(|mut parts| parts.next())
                .and_then(|p| p.as_ref().parse::<u64>().ok());
            if let Some(n) = n {
                out.push((n, meta.location));
            }
        }
        Ok(out)
    }

    /// Checkpoints that have a manifest, ascending.
    pub async fn completed(&self) -> Result<Vec<u64>, StoreError> {
        Ok(with_manifest(&self.objects().await?))
    }

    pub async fn manifest(&self, checkpoint: u64) -> Result<Manifest, StoreError> {
        let path = self.dir(checkpoint).join(MANIFEST);
        let key = path.to_string();
        let bytes = self.get(&path).await?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            key,
            reason: format!("not a manifest: {e}"),
        })
    }

    async fn get(&self, path: &ObjectPath) -> Result<Bytes, StoreError> {
        let key = path.to_string();
        let result = self.store.get(path).await.map_err(|e| classify(e, &key))?;
        result.bytes().await.map_err(|e| classify(e, &key))
    }

    /// The payload of a part, checked against its header and the manifest.
    pub async fn read_part(&self, part: &PartInfo) -> Result<Bytes, StoreError> {
        let bytes = self.get(&ObjectPath::from(part.key.as_str())).await?;
        check_part(&part.key, bytes, part)
    }

    /// The newest checkpoint whose manifest and parts are intact, with the payloads; damaged
    /// ones are skipped with a warning naming them, and listed.
    pub async fn latest_valid(&self) -> Result<Option<Latest>, StoreError> {
        let mut damaged = Vec::new();
        for n in self.completed().await?.into_iter().rev() {
            match self.read_all(n).await {
                Ok((manifest, parts)) => {
                    return Ok(Some(Latest {
                        manifest,
                        parts,
                        damaged,
                    }));
                }
                Err(e @ (StoreError::Corrupt { .. } | StoreError::NotFound { .. })) => {
                    tracing::warn!(checkpoint = n, error = %e, "checkpoint is damaged; falling back to the previous one");
                    damaged.push(n);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn read_all(&self, n: u64) -> Result<(Manifest, Vec<(PartInfo, Bytes)>), StoreError> {
        let m = self.manifest(n).await?;
        let mut parts = Vec::with_capacity(m.parts.len());
        for p in &m.parts {
            parts.push((p.clone(), self.read_part(p).await?));
        }
        Ok((m, parts))
    }

    /// Keeps the newest `keep` completed checkpoints; deletes older ones and incomplete ones
    /// older than the oldest kept. Returns how many checkpoints were deleted.
    pub async fn retain(&self, keep: usize) -> Result<usize, StoreError> {
        let objects = self.objects().await?;
        let completed = with_manifest(&objects);
        if completed.len() <= keep {
            return Ok(0);
        }
        let oldest_kept = completed[completed.len() - keep.max(1)];
        let mut deleted = std::collections::BTreeSet::new();
        for (n, path) in objects {
            if n < oldest_kept {
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(classify(e, path.as_ref())),
                }
                deleted.insert(n);
            }
        }
        Ok(deleted.len())
    }

    pub async fn read_generation(&self) -> Result<u64, StoreError> {
        let path = self.root.clone().join("generation");
        match self.get(&path).await {
            Ok(b) => String::from_utf8_lossy(&b)
                .trim()
                .parse()
                .map_err(|e| StoreError::Corrupt {
                    key: path.to_string(),
                    reason: format!("not a number: {e}"),
                }),
            Err(StoreError::NotFound { .. }) => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub async fn write_generation(&self, g: u64) -> Result<(), StoreError> {
        let path = self.root.clone().join("generation");
        self.store
            .put(&path, Bytes::from(g.to_string()).into())
            .await
            .map_err(|e| classify(e, path.as_ref()))?;
        // A restarted coordinator must go higher even after a power loss.
        self.sync(vec![path, self.root.clone()]).await
    }
}

/// The checkpoints among `objects` that have a manifest, ascending.
fn with_manifest(objects: &[(u64, ObjectPath)]) -> Vec<u64> {
    let mut ids: Vec<u64> = objects
        .iter()
        .filter(|(_, p)| p.filename() == Some(MANIFEST))
        .map(|(n, _)| *n)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Checks magic, length and checksum of a part object; returns the payload.
fn check_part(key: &str, bytes: Bytes, expected: &PartInfo) -> Result<Bytes, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_string(),
        reason,
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(corrupt(format!("no part header ({} bytes)", bytes.len())));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = bytes.slice(HEADER..);
    if payload.len() as u64 != len || len != expected.size {
        return Err(corrupt(format!(
            "{} payload bytes, the header says {len} and the manifest {}",
            payload.len(),
            expected.size
        )));
    }
    let actual = crc32fast::hash(&payload);
    if actual != crc || crc != expected.crc32 {
        return Err(corrupt(format!(
            "checksum {actual:08x}, the header says {crc:08x} and the manifest {:08x}",
            expected.crc32
        )));
    }
    Ok(payload)
}

mod purge;
#[cfg(test)]
mod tests;
