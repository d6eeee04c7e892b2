// TEMPORARY stub until the store branch lands.
use serde::{Deserialize, Serialize};
use super::store::PartInfo;
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest { pub application: String, pub checkpoint: u64, pub generation: u64, pub workers: u32,
    pub key_groups: u32, pub parts: Vec<PartInfo>, pub created_at_ms: u64, pub duration_ms: u64, pub bytes: u64 }
