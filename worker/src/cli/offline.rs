//! Reading a checkpoint or savepoint in storage from the command line: which one, and
//! everything it holds for every key group (as a single worker owning them all would
//! restore it).

use anyhow::Context as _;

use crate::app::AppIdentity;
use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::restore;
use crate::checkpoint::store::CheckpointStore;
use crate::keygroup::Layout;
use crate::partition::Capture;

/// Where a checkpoint is.
#[derive(Debug, Clone, clap::Args)]
pub struct Storage {
    /// Storage URL, as `spec.checkpoint.storage` (`s3://…`, `file://…` or a path); S3
    /// settings from the `AWS_*` variables.
    #[arg(long, env = "SPINDLE_CHECKPOINT_STORAGE")]
    pub storage: Option<String>,
    /// The application's name (`metadata.name`).
    #[arg(long, env = "SPINDLE_APPLICATION")]
    pub application: Option<String>,
    /// Its namespace: a cluster's data is under `<storage>/<namespace>/<name>`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
}

impl Storage {
    pub fn identity(&self) -> anyhow::Result<AppIdentity> {
        Ok(AppIdentity {
            namespace: self.namespace.clone(),
            name: self.application.clone().context("--storage needs --application")?,
            uid: None,
        })
    }

    pub fn open(&self) -> anyhow::Result<(CheckpointStore, AppIdentity)> {
        let url = self
            .storage
            .as_deref()
            .context("give --storage (or --admin for a running application)")?;
        let identity = self.identity()?;
        let store = CheckpointStore::open(url, &std::env::current_dir()?, &identity.storage_root())?;
        Ok((store, identity))
    }
}

/// The manifest `which` names (a checkpoint number or a savepoint), or the newest intact one.
pub async fn manifest(store: &CheckpointStore, which: Option<&str>) -> anyhow::Result<Manifest> {
    match which {
        Some(w) => {
            let m = store.resolve(w).await?;
            store
                .check(m.checkpoint)
                .await
                .with_context(|| format!("{}: checkpoint {} is damaged", store.describe(), m.checkpoint))
        }
        None => match store.latest_valid(&Default::default()).await? {
            Some(l) => Ok(l.manifest),
            None => anyhow::bail!("{}: no complete checkpoint", store.describe()),
        },
    }
}

/// Everything `manifest` holds, every key group's state included.
pub async fn load(store: &CheckpointStore, manifest: &Manifest, app: &AppIdentity) -> anyhow::Result<Capture> {
    let all = Layout {
        worker: 0,
        workers: 1,
        key_groups: manifest.key_groups,
    };
    let restored = restore::load(store, manifest.checkpoint, app, all)
        .await
        .with_context(|| store.describe())?;
    Ok(restored.capture)
}
