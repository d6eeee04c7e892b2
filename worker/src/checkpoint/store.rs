// TEMPORARY stub until the store branch lands: local directory only, no checksums.
use std::path::{Path, PathBuf};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use super::manifest::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartInfo { pub worker: u32, pub key: String, pub size: u64, pub crc32: u32 }
#[derive(Clone, Debug)]
pub struct CheckpointStore { root: PathBuf }
impl CheckpointStore {
    pub fn open(url: &str, base_dir: &Path, application: &str) -> Result<CheckpointStore, StoreError> {
        let root = base_dir.join(url.trim_start_matches("file://")).join(application);
        std::fs::create_dir_all(&root)?;
        Ok(CheckpointStore { root })
    }
    pub fn describe(&self) -> String { self.root.display().to_string() }
    fn dir(&self, n: u64) -> PathBuf { self.root.join("checkpoints").join(format!("{n:020}")) }
    pub async fn put_part(&self, checkpoint: u64, generation: u64, worker: u32, payload: Bytes) -> Result<PartInfo, StoreError> {
        let d = self.dir(checkpoint); std::fs::create_dir_all(&d)?;
        let key = d.join(format!("part-g{generation}-w{worker}.bin"));
        std::fs::write(&key, &payload)?;
        Ok(PartInfo { worker, key: key.display().to_string(), size: payload.len() as u64, crc32: 0 })
    }
    pub async fn put_manifest(&self, m: &Manifest) -> Result<(), StoreError> {
        std::fs::write(self.dir(m.checkpoint).join("MANIFEST.json"), serde_json::to_vec(m)?)?; Ok(())
    }
    pub async fn completed(&self) -> Result<Vec<u64>, StoreError> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("checkpoints")) { for e in rd { let e = e?; if e.path().join("MANIFEST.json").exists() { if let Ok(n) = e.file_name().to_string_lossy().parse() { v.push(n) } } } }
        v.sort(); Ok(v)
    }
    pub async fn manifest(&self, checkpoint: u64) -> Result<Manifest, StoreError> {
        Ok(serde_json::from_slice(&std::fs::read(self.dir(checkpoint).join("MANIFEST.json"))?)?)
    }
    pub async fn read_part(&self, part: &PartInfo) -> Result<Bytes, StoreError> { Ok(Bytes::from(std::fs::read(&part.key)?)) }
    pub async fn latest_valid(&self) -> Result<Option<(Manifest, Vec<(PartInfo, Bytes)>)>, StoreError> {
        match self.completed().await?.last() { None => Ok(None), Some(&n) => Ok(Some((self.manifest(n).await?, vec![]))) }
    }
    pub async fn retain(&self, _keep: usize) -> Result<usize, StoreError> { Ok(0) }
    pub async fn read_generation(&self) -> Result<u64, StoreError> {
        Ok(std::fs::read_to_string(self.root.join("generation")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0))
    }
    pub async fn write_generation(&self, g: u64) -> Result<(), StoreError> { std::fs::write(self.root.join("generation"), g.to_string())?; Ok(()) }
}
