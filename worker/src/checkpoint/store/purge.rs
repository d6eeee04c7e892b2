//! Deleting everything an application keeps in checkpoint storage: what the operator's
//! cleanup job runs (`spindle checkpoints delete`) for `retentionPolicy: Delete`, once the
//! workers have stopped.

use object_store::ObjectStoreExt;
use tokio_stream::StreamExt;

use super::{CheckpointStore, StoreError, classify};

impl CheckpointStore {
    /// Deletes every object under this application's root (checkpoints, stray parts, the
    /// generation). Returns how many objects were deleted; an empty root is not an error.
    pub async fn delete_all(&self) -> Result<usize, StoreError> {
        let mut list = self.store.list(Some(&self.root));
        let mut paths = Vec::new();
        while let Some(meta) = list.next().await {
            paths.push(meta.map_err(|e| classify(e, self.root.as_ref()))?.location);
        }
        for path in &paths {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(classify(e, path.as_ref())),
            }
        }
        Ok(paths.len())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;

    use super::*;

    #[tokio::test]
    async fn deletes_one_application_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("spindle-purge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = dir.to_str().unwrap();
        let gone = CheckpointStore::open(url, Path::new("/"), "gone").unwrap();
        let kept = CheckpointStore::open(url, Path::new("/"), "kept").unwrap();
        for s in [&gone, &kept] {
            s.put_part(1, 1, 0, Bytes::from_static(b"part")).await.unwrap();
            s.put_part(2, 1, 0, Bytes::from_static(b"stray")).await.unwrap();
            s.write_generation(3).await.unwrap();
        }
        assert_eq!(gone.delete_all().await.unwrap(), 3);
        assert_eq!(gone.read_generation().await.unwrap(), 0, "nothing of `gone` is left");
        assert_eq!(gone.delete_all().await.unwrap(), 0, "deleting again is no error");
        assert_eq!(
            kept.read_generation().await.unwrap(),
            3,
            "another application is untouched"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
