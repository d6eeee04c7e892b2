//! The manifest: written last, it is what makes a checkpoint exist. It lists every part with
//! its size and checksum, so a restore can tell an intact part from a damaged one.

use serde::{Deserialize, Serialize};

/// One worker's part of a checkpoint, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartInfo {
    pub worker: u32,
    /// Object key, relative to the store's root.
    pub key: String,
    /// Payload bytes (without the header).
    pub size: u64,
    pub crc32: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub application: String,
    /// The application's namespace (absent outside Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The `StatefulApplication`'s UID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub checkpoint: u64,
    pub generation: u64,
    pub workers: u32,
    pub key_groups: u32,
    pub parts: Vec<PartInfo>,
    pub created_at_ms: u64,
    /// From trigger to the last part written.
    pub duration_ms: u64,
    /// All parts' payload bytes.
    pub bytes: u64,
}
