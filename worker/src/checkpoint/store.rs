//! Checkpoint storage on any `object_store`: a local directory (the default for local runs) or
//! an S3-compatible bucket. Layout under `<root> = <url prefix>/<application>`:
//!
//! ```text
//! <root>/generation                                   the last generation, a decimal number
//! <root>/checkpoints/<n:020>/part-g<gen>-w<worker>.bin  header (magic, crc32, length) + payload
//! <root>/checkpoints/<n:020>/MANIFEST.json            written last, by conditional create
//! ```
//!
//! A part's header names its format (`SPNDLPT1`: a whole `Part`; `SPNDLPT2`: sections and an
//! index, see `codec`). Parts of format 2 stay as long as a retained checkpoint's manifest
//! references them, whichever checkpoint wrote them.
//!
//! Every call is bounded in time: an unavailable store fails a checkpoint within seconds
//! instead of holding it for minutes. Large objects move in pieces ([`Transfer`]): multipart
//! uploads and ranged reads, each request with its own timeout (from a minimum transfer rate)
//! and its own retries, so a part of any size can be written and read.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use super::codec::EncodedPart;
pub use super::manifest::{Manifest, PartInfo, SectionLoc};

mod transfer;
pub use transfer::Transfer;

const MAGIC_V1: &[u8; 8] = b"SPNDLPT1";
const MAGIC_V2: &[u8; 8] = b"SPNDLPT2";
/// Header bytes before a part's payload: magic, CRC-32 and length of the payload.
pub const HEADER: u64 = 8 + 4 + 8;
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

impl StoreError {
    /// The stored bytes are lost or changed (not a passing outage).
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::NotFound { .. } | StoreError::Corrupt { .. })
    }
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

/// The newest checkpoint whose manifest and objects are there.
#[derive(Debug)]
pub struct Latest {
    pub manifest: Manifest,
    /// Newer checkpoints skipped because the manifest or an object is damaged or missing.
    pub damaged: Vec<u64>,
}

/// A multipart upload's two kinds of request, each with its own timeout: the pieces that of
/// `bulk`, the completion (which assembles the whole object) `transfer.complete_timeout`.
#[derive(Clone)]
struct Multipart {
    pieces: Arc<dyn MultipartStore>,
    complete: Arc<dyn MultipartStore>,
}

#[derive(Clone)]
pub struct CheckpointStore {
    /// Small requests (manifests, the generation, listings): the short timeout.
    store: Arc<dyn ObjectStore>,
    /// Parts: requests of up to `transfer.piece` bytes, with a timeout for that size.
    bulk: Arc<dyn ObjectStore>,
    /// Remote storage: multipart uploads of large parts.
    multipart: Option<Multipart>,
    transfer: Transfer,
    root: ObjectPath,
    describe: String,
    /// Local filesystem: the directory objects live under, for making them durable.
    local: Option<Arc<Path>>,
    /// Local filesystem: objects made durable already (a manifest only syncs new ones).
    synced: Arc<Mutex<HashSet<String>>>,
    /// Local filesystem: the application's directory was made durable with a manifest.
    root_synced: Arc<AtomicBool>,
    /// Payload bytes read from parts, for the restore's figures.
    read: Arc<AtomicU64>,
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

    /// As [`open`](Self::open), with the `AWS_*` and `SPINDLE_STORAGE_*` settings taken from
    /// `env`.
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
        let env: Vec<(String, String)> = env.into_iter().collect();
        let transfer = Transfer::from_env(&env).map_err(&bad)?;
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket".into()));
            }
            // TLS to S3 goes through rustls with the ring provider; installing it is
            // idempotent (an error just means it is installed already).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let s3 = |timeout: Duration, retry: RetryConfig| {
                let options = ClientOptions::new()
                    .with_timeout(timeout)
                    .with_connect_timeout(Duration::from_secs(2));
                // S3 verifies each request's SHA-256 before it stores a part (a multipart
                // upload's pieces each, and the whole at completion), so a part that was
                // accepted is intact without reading it back. `AWS_CHECKSUM_ALGORITHM` can
                // choose another algorithm.
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_checksum_algorithm(object_store::aws::Checksum::SHA256);
                let mut allow_http = false;
                for (k, v) in &env {
                    if k == "AWS_ALLOW_HTTP" {
                        // Plain-HTTP endpoints: tests, an in-cluster MinIO.
                        allow_http = v.eq_ignore_ascii_case("true");
                    } else if k.starts_with("AWS_")
                        && let Ok(key) = k.to_ascii_lowercase().parse::<object_store::aws::AmazonS3ConfigKey>()
                    {
                        builder = builder.with_config(key, v);
                    }
                }
                builder
                    .with_bucket_name(bucket)
                    .with_client_options(options)
                    .with_allow_http(allow_http)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| bad(e.to_string()))
            };
            let small = s3(
                Duration::from_secs(5),
                RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_secs(8),
                    ..RetryConfig::default()
                },
            )?;
            let bulk = Arc::new(s3(transfer.request_timeout(), transfer.retry())?);
            let complete = Arc::new(s3(transfer.complete_timeout, transfer.complete_retry())?);
            // `application` may be `<namespace>/<name>`: one path segment each.
            let root = ObjectPath::from_iter(prefix.split('/').chain(application.split('/')));
            return Ok(CheckpointStore {
                store: Arc::new(small),
                bulk: bulk.clone(),
                multipart: Some(Multipart { pieces: bulk, complete }),
                transfer,
                describe: format!("s3://{bucket}/{root}"),
                root,
                local: None,
                synced: Arc::default(),
                root_synced: Arc::default(),
                read: Arc::default(),
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
        let fs: Arc<dyn ObjectStore> = Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| bad(e.to_string()))?
                .with_automatic_cleanup(true),
        );
        Ok(CheckpointStore {
            bulk: fs.clone(),
            store: fs,
            multipart: None,
            transfer,
            describe: format!("{}/{application}", dir.display()),
            root: ObjectPath::from(application),
            local: Some(dir.into()),
            synced: Arc::default(),
            root_synced: Arc::default(),
            read: Arc::default(),
        })
    }

    /// A store over any object store (unit tests: in memory, with faults injected).
    #[cfg(test)]
    pub(crate) fn over(store: Arc<dyn ObjectStore>, application: &str) -> CheckpointStore {
        CheckpointStore {
            bulk: store.clone(),
            store,
            multipart: None,
            transfer: Transfer::default(),
            root: ObjectPath::from(application),
            describe: format!("test/{application}"),
            local: None,
            synced: Arc::default(),
            root_synced: Arc::default(),
            read: Arc::default(),
        }
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Large parts go up as multipart uploads through `pieces` and `complete` (unit tests:
    /// remote storage, in memory, with faults injected).
    #[cfg(test)]
    fn with_multipart(mut self, pieces: Arc<dyn MultipartStore>, complete: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(Multipart { pieces, complete });
        self
    }

    /// How large transfers are cut into requests (`SPINDLE_STORAGE_*`).
    pub fn transfer(&self) -> Transfer {
        self.transfer
    }

    /// Part payload bytes read through this store (and its clones) so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
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

    /// True when `key` names a part object of this application (what a worker's report may
    /// reference).
    pub fn is_part_key(&self, key: &str) -> bool {
        let path = ObjectPath::from(key);
        let prefix = self.root.clone().join("checkpoints");
        let Some(mut parts) = path.prefix_match(&prefix) else {
            return false;
        };
        let dir = parts.next().is_some_and(|d| d.as_ref().parse::<u64>().is_ok());
        let file = parts
            .next()
            .is_some_and(|f| f.as_ref().starts_with("part-g") && f.as_ref().ends_with(".bin"));
        dir && file && parts.next().is_none() && path.as_ref() == key
    }

    /// Writes a format-1 part with `payload` (a whole `Part`).
    pub async fn put_part(
        &self,
        checkpoint: u64,
        generation: u64,
        worker: u32,
        payload: Bytes,
    ) -> Result<PartInfo, StoreError> {
        let key = self.part_key(checkpoint, generation, worker);
        let crc32 = self.put_object(&key, MAGIC_V1, payload.clone()).await?;
        Ok(PartInfo {
            worker,
            key,
            size: payload.len() as u64,
            crc32,
            index: None,
            chains: None,
        })
    }

    /// Writes a format-2 part.
    pub(crate) async fn put_encoded(
        &self,
        checkpoint: u64,
        generation: u64,
        worker: u32,
        part: &EncodedPart,
    ) -> Result<PartInfo, StoreError> {
        let key = self.part_key(checkpoint, generation, worker);
        let crc32 = self.put_object(&key, MAGIC_V2, part.payload.clone()).await?;
        Ok(PartInfo {
            worker,
            key,
            size: part.payload.len() as u64,
            crc32,
            index: Some(part.index),
            chains: None,
        })
    }

    /// Header and payload as one object; in pieces when it is large and the store remote.
    /// Returns the payload's CRC-32.
    async fn put_object(&self, key: &str, magic: &[u8; 8], payload: Bytes) -> Result<u32, StoreError> {
        let path = ObjectPath::from(key);
        let crc32 = crc32fast::hash(&payload);
        let mut header = BytesMut::with_capacity(HEADER as usize);
        header.put_slice(magic);
        header.put_u32_le(crc32);
        header.put_u64_le(payload.len() as u64);
        let header = header.freeze();
        let piece = self.transfer.piece;
        let multipart = match &self.multipart {
            Some(m) if payload.len() + (HEADER as usize) > piece => m,
            _ => {
                let body: PutPayload = [header, payload].into_iter().collect();
                self.bulk.put(&path, body).await.map_err(|e| classify(e, key))?;
                return Ok(crc32);
            }
        };
        let size = HEADER + payload.len() as u64;
        let id = multipart
            .pieces
            .create_multipart(&path)
            .await
            .map_err(|e| classify(e, key))?;
        // Pieces of `piece` bytes (S3 wants at least 5 MiB but for the last), the header in
        // the first; each one its own request, retried on its own.
        let first = piece - HEADER as usize;
        let mut pieces = vec![[header, payload.slice(..first)].into_iter().collect::<PutPayload>()];
        let mut at = first;
        while at < payload.len() {
            let end = (at + piece).min(payload.len());
            pieces.push(payload.slice(at..end).into());
            at = end;
        }
        let (path_ref, id_ref) = (&path, &id);
        let sent = futures::stream::iter(pieces.into_iter().enumerate())
            .map(|(i, p)| multipart.pieces.put_part(path_ref, id_ref, i, p))
            .buffered(self.transfer.concurrency)
            .try_collect::<Vec<PartId>>()
            .await;
        let e = match sent {
            Ok(parts) => match multipart.complete.complete_multipart(&path, &id, parts).await {
                Ok(_) => return Ok(crc32),
                // An answer lost after the storage completed the upload (a reset connection, a
                // retry that finds the upload gone) leaves the object there, whole: only its
                // completion makes it visible, and only this worker writes this key.
                Err(e) => match self.bulk.head(&path).await {
                    Ok(meta) if meta.size == size => {
                        tracing::warn!(key, error = %e, "completing a multipart upload failed, but the object is there whole: the completion succeeded");
                        return Ok(crc32);
                    }
                    _ => e,
                },
            },
            Err(e) => e,
        };
        let _ = multipart.pieces.abort_multipart(&path, &id).await;
        Err(classify(e, key))
    }

    /// Writes the manifest, which completes the checkpoint. On a local filesystem the
    /// checkpoint is made durable first — its objects, the manifest and their directories —
    /// because completion acknowledges durable records and releases egress: it must survive a
    /// power loss, not only a process crash.
    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), StoreError> {
        let path = self.dir(m.checkpoint).join(MANIFEST);
        // Compact: under group commit hundreds of manifests a second are written (and
        // `spindle checkpoints show` is the readable view).
        let json = serde_json::to_vec(m).expect("a manifest serializes");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&path, Bytes::from(json).into(), opts)
            .await
            .map_err(|e| classify(e, path.as_ref()))?;
        if self.local.is_none() {
            return Ok(());
        }
        // Objects of earlier checkpoints were made durable with their manifests; parts of a
        // checkpoint that failed, now referenced, were not.
        let referenced: Vec<String> = m.referenced().iter().map(|p| p.key.clone()).collect();
        let new: Vec<String> = {
            let synced = self.synced.lock().expect("synced set lock");
            referenced.iter().filter(|k| !synced.contains(*k)).cloned().collect()
        };
        let root = (!self.root_synced.load(Ordering::Acquire)).then(|| self.root.clone());
        let dirs = [self.dir(m.checkpoint), self.root.clone().join("checkpoints")];
        let durable = to_make_durable(&new, path, dirs, root);
        self.sync(durable).await?;
        self.root_synced.store(true, Ordering::Release);
        // Only what the newest manifest references can be referenced again.
        *self.synced.lock().expect("synced set lock") = referenced.into_iter().collect();
        Ok(())
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
        // On the blocking pool's threads, which stay alive between checkpoints (a thread of
        // its own per file cost a clone() per fsync, hundreds a second under group commit);
        // at most 32 at a time (a first manifest after a restart syncs every object it
        // references).
        let synced: Vec<Result<(), String>> = futures::stream::iter(paths)
            .map(|p| tokio::task::spawn_blocking(move || fsync(p)))
            .buffer_unordered(32)
            .map(|joined| joined.unwrap_or_else(|e| Err(format!("fsync task failed: {e}"))))
            .collect()
            .await;
        synced
            .into_iter()
            .collect::<Result<(), String>>()
            .map_err(StoreError::Unavailable)
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
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            reason: format!("not a manifest: {e}"),
        })?;
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        if m.checkpoint != checkpoint {
            return Err(corrupt(format!("it names checkpoint {}", m.checkpoint)));
        }
        if m.format == 2 {
            if m.groups.len() != m.key_groups as usize {
                return Err(corrupt(format!(
                    "{} key-group chains for {} key groups",
                    m.groups.len(),
                    m.key_groups
                )));
            }
            if m.groups.iter().flatten().any(|&i| i as usize >= m.objects.len()) {
                return Err(corrupt("a key-group chain names an object it does not list".into()));
            }
        }
        if let Some(p) = m.referenced().into_iter().find(|p| !self.is_part_key(&p.key)) {
            return Err(corrupt(format!(
                "it references `{}`, not a part of this application",
                p.key
            )));
        }
        Ok(m)
    }

    async fn get(&self, path: &ObjectPath) -> Result<Bytes, StoreError> {
        let key = path.to_string();
        let result = self.store.get(path).await.map_err(|e| classify(e, &key))?;
        result.bytes().await.map_err(|e| classify(e, &key))
    }

    /// Bytes `range` of a part object (its header included in the offsets), in one request.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let want = range.end - range.start;
        let path = ObjectPath::from(key);
        let bytes = match self.bulk.get_range(&path, range.clone()).await {
            Ok(b) => b,
            Err(e) => {
                // An object shorter than the range (or gone) is damage; anything else is the
                // storage failing for now.
                return Err(match self.bulk.head(&path).await {
                    Err(object_store::Error::NotFound { .. }) => StoreError::NotFound { key: key.to_string() },
                    Ok(meta) if meta.size < range.end => StoreError::Corrupt {
                        key: key.to_string(),
                        reason: format!("{} bytes long, bytes {range:?} were asked for", meta.size),
                    },
                    _ => classify(e, key),
                });
            }
        };
        if bytes.len() as u64 != want {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                reason: format!("{} bytes where {want} were asked for (range {range:?})", bytes.len()),
            });
        }
        self.read.fetch_add(want, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Payload bytes `range` of `part`, in one request (the caller checks the checksum).
    pub(crate) async fn read_range(&self, part: &PartInfo, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.get_range(&part.key, HEADER + range.start..HEADER + range.end)
            .await
    }

    /// Section `loc` of `part` in pieces of at most `transfer.piece` bytes, in order, up to
    /// `transfer.concurrency` requests at a time. The caller checks the checksum.
    pub fn stream_section(
        &self,
        part: &PartInfo,
        loc: SectionLoc,
    ) -> impl futures::Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
        let piece = self.transfer.piece as u64;
        let start = HEADER + loc.offset;
        let end = start + loc.length;
        let ranges: Vec<Range<u64>> = (start..end)
            .step_by(piece as usize)
            .map(|s| s..(s + piece).min(end))
            .collect();
        let (store, key) = (self.clone(), part.key.clone());
        futures::stream::iter(ranges)
            .map(move |r| {
                let (store, key) = (store.clone(), key.clone());
                async move { store.get_range(&key, r).await }
            })
            .buffered(self.transfer.concurrency)
    }

    /// Section `loc` of `part`, whole and checked against its checksum (an index, a rest).
    pub async fn read_section(&self, part: &PartInfo, loc: SectionLoc) -> Result<Bytes, StoreError> {
        if loc.offset.saturating_add(loc.length) > part.size {
            return Err(StoreError::Corrupt {
                key: part.key.clone(),
                reason: format!(
                    "a section at {}+{} past the payload's {} bytes",
                    loc.offset, loc.length, part.size
                ),
            });
        }
        let pieces: Vec<Bytes> = self.stream_section(part, loc).try_collect().await?;
        let bytes = concat(pieces);
        let actual = crc32fast::hash(&bytes);
        if actual != loc.crc32 {
            return Err(StoreError::Corrupt {
                key: part.key.clone(),
                reason: format!(
                    "section at {}: checksum {actual:08x}, the index says {:08x}",
                    loc.offset, loc.crc32
                ),
            });
        }
        Ok(bytes)
    }

    /// The payload of a part, checked against its header and the manifest, read in pieces.
    pub async fn read_part(&self, part: &PartInfo) -> Result<Bytes, StoreError> {
        let whole = SectionLoc {
            offset: 0,
            length: part.size,
            crc32: part.crc32,
        };
        let head = self.get_range(&part.key, 0..HEADER).await?;
        let pieces: Vec<Bytes> = if part.size == 0 {
            Vec::new()
        } else {
            self.stream_section(part, whole).try_collect().await?
        };
        let mut bytes = BytesMut::with_capacity((HEADER + part.size) as usize);
        bytes.put_slice(&head);
        for p in pieces {
            bytes.put_slice(&p);
        }
        // Nothing past the payload either: the object is exactly header + payload.
        if self
            .bulk
            .head(&ObjectPath::from(part.key.as_str()))
            .await
            .map(|m| m.size)
            .ok()
            != Some(HEADER + part.size)
        {
            return Err(StoreError::Corrupt {
                key: part.key.clone(),
                reason: format!("not {} bytes long", HEADER + part.size),
            });
        }
        check_part(&part.key, bytes.freeze(), part)
    }

    /// The object exists with the size the manifest says (no bytes read).
    async fn present(&self, part: &PartInfo) -> Result<(), StoreError> {
        let meta = self
            .store
            .head(&ObjectPath::from(part.key.as_str()))
            .await
            .map_err(|e| classify(e, &part.key))?;
        if meta.size != HEADER + part.size {
            return Err(StoreError::Corrupt {
                key: part.key.clone(),
                reason: format!("{} bytes, the manifest says {}", meta.size, HEADER + part.size),
            });
        }
        Ok(())
    }

    /// The newest checkpoint whose manifest reads and whose objects are all there with their
    /// sizes — checked from the manifest and the objects' metadata, without reading their
    /// bytes (each worker checks the bytes it reads). `skip`: checkpoints a restore found
    /// damaged. Damaged ones are skipped with a warning naming them, and listed.
    pub async fn latest_valid(&self, skip: &BTreeSet<u64>) -> Result<Option<Latest>, StoreError> {
        let mut damaged = Vec::new();
        for n in self.completed().await?.into_iter().rev() {
            if skip.contains(&n) {
                damaged.push(n);
                continue;
            }
            match self.check(n).await {
                Ok(manifest) => return Ok(Some(Latest { manifest, damaged })),
                Err(e) if e.is_damage() => {
                    tracing::warn!(checkpoint = n, error = %e, "checkpoint is damaged; falling back to the previous one");
                    damaged.push(n);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Checkpoint `n`'s manifest, once every object it references is there with its size.
    pub async fn check(&self, n: u64) -> Result<Manifest, StoreError> {
        let m = self.manifest(n).await?;
        let referenced: Vec<PartInfo> = m.referenced().into_iter().cloned().collect();
        let store = self.clone();
        futures::stream::iter(referenced)
            .map(move |p| {
                let store = store.clone();
                async move { store.present(&p).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(m)
    }

    /// Keeps the newest `keep` completed checkpoints and every object they reference; deletes
    /// the manifests of older ones, then every object of an older checkpoint than the newest
    /// that none of the kept ones references (parts of failed attempts among them). Returns
    /// how many checkpoints lost their manifest.
    pub async fn retain(&self, keep: usize) -> Result<usize, StoreError> {
        let objects = self.objects().await?;
        let completed = with_manifest(&objects);
        let keep = keep.max(1);
        if completed.is_empty() {
            return Ok(0);
        }
        let newest = *completed.last().expect("not empty");
        let mut kept: Vec<u64> = completed.iter().rev().take(keep).copied().collect();
        let oldest_kept = *kept.last().expect("keep >= 1");
        // Savepoints keep their checkpoints, and so every object those reference (the
        // earlier objects of incremental chains among them).
        let saved: BTreeSet<u64> = self.savepoints().await?.into_iter().map(|s| s.checkpoint).collect();
        kept.extend(saved.iter().filter(|n| **n < oldest_kept));
        let mut referenced: HashSet<String> = HashSet::new();
        for &n in &kept {
            match self.manifest(n).await {
                Ok(m) => referenced.extend(m.referenced().into_iter().map(|p| p.key.clone())),
                // A damaged manifest restores nothing: what it references does not count.
                Err(e @ StoreError::Corrupt { .. }) => {
                    tracing::warn!(checkpoint = n, error = %e, "retention: a kept checkpoint's manifest is damaged")
                }
                Err(e) => return Err(e),
            }
        }
        let delete = |path: ObjectPath| async move {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(classify(e, path.as_ref())),
            }
        };
        // Manifests first: a manifest never outlives the objects it references.
        let mut dropped = BTreeSet::new();
        for (n, path) in &objects {
            if *n < oldest_kept && !saved.contains(n) && path.filename() == Some(MANIFEST) {
                delete(path.clone()).await?;
                dropped.insert(*n);
            }
        }
        for (n, path) in objects {
            let garbage = n < newest && path.filename() != Some(MANIFEST) && !referenced.contains(path.as_ref());
            if garbage {
                delete(path).await?;
            }
        }
        Ok(dropped.len())
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

    /// The coordinator's poison counts as last saved (`crate::poison`), if any.
    pub async fn read_suspects(&self) -> Result<Option<Bytes>, StoreError> {
        let path = self.root.clone().join(SUSPECTS);
        match self.get(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the coordinator's poison counts, so that a restarted coordinator goes on counting.
    /// Not synced: what a power loss takes costs a few more rollbacks, not correctness.
    pub async fn write_suspects(&self, saved: Bytes) -> Result<(), StoreError> {
        let path = self.root.clone().join(SUSPECTS);
        self.store
            .put(&path, saved.into())
            .await
            .map(|_| ())
            .map_err(|e| classify(e, path.as_ref()))
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

/// The object holding the coordinator's poison counts, beside `generation`.
const SUSPECTS: &str = "poison-suspects.json";

/// What a manifest's fsync covers: the objects not yet durable and the directories holding
/// them, the manifest, its checkpoint's directory and `checkpoints/`, and `root` when given
/// (it gains an entry only when `checkpoints/` is created). Each once: a new part's
/// directory is usually the checkpoint's own.
fn to_make_durable(
    new: &[String],
    manifest: ObjectPath,
    dirs: [ObjectPath; 2],
    root: Option<ObjectPath>,
) -> Vec<ObjectPath> {
    let mut durable: BTreeSet<ObjectPath> = BTreeSet::new();
    for key in new {
        let p = ObjectPath::from(key.as_str());
        let parts: Vec<_> = p.parts().collect();
        if parts.len() > 1 {
            durable.insert(ObjectPath::from_iter(parts[..parts.len() - 1].iter().cloned()));
        }
        durable.insert(p);
    }
    durable.insert(manifest);
    durable.extend(dirs);
    durable.extend(root);
    durable.into_iter().collect()
}

fn concat(pieces: Vec<Bytes>) -> Bytes {
    if pieces.len() == 1 {
        return pieces.into_iter().next().expect("one");
    }
    let mut b = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for p in pieces {
        b.put_slice(&p);
    }
    b.freeze()
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
    let magic = if expected.index.is_some() { MAGIC_V2 } else { MAGIC_V1 };
    if bytes.len() < HEADER as usize || &bytes[..8] != magic {
        return Err(corrupt(format!("no part header ({} bytes)", bytes.len())));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let payload = bytes.slice(HEADER as usize..);
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

/// Makes file or directory `p` durable; names what is wrong when it cannot.
fn fsync(p: std::path::PathBuf) -> Result<(), String> {
    std::fs::File::open(&p)
        .and_then(|f| f.sync_all())
        .map_err(|e| match e.kind() {
            // Another worker's part is not where this one looks: their storage is not shared,
            // and a restore could never read it.
            std::io::ErrorKind::NotFound => format!(
                "{} does not exist: every worker of an application must use the same checkpoint storage",
                p.display()
            ),
            _ => format!("fsync {}: {e}", p.display()),
        })
}

mod purge;
mod savepoints;
pub use savepoints::{ResolveError, RestoredFrom, Savepoint};
#[cfg(test)]
mod tests;
