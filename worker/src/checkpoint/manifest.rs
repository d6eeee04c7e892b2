//! The manifest: written last, it is what makes a checkpoint exist. It lists every part with
//! its size and checksum, so a restore can tell an intact part from a damaged one.
//!
//! Format 1 (every manifest written before incremental checkpoints): each part holds all of
//! its worker's state. Format 2: each part holds, per key group, the state that changed (or a
//! whole group), and the manifest says per key group which objects hold its state, oldest
//! first (`groups`, indices into `objects`) — objects of earlier checkpoints among them.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where a section of a part is: offset and length in the payload (after the header), and
/// its CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SectionLoc {
    pub offset: u64,
    pub length: u64,
    pub crc32: u32,
}

/// One worker's part of a checkpoint, as written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartInfo {
    pub worker: u32,
    /// Object key, relative to the store's root.
    pub key: String,
    /// Payload bytes (without the header).
    pub size: u64,
    pub crc32: u32,
    /// Format 2: where the part's index of sections is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<SectionLoc>,
    /// Format 2, from a worker to the coordinator only: the chains of the key groups the
    /// worker owns (the manifest holds them as `objects` and `groups`).
    #[serde(skip)]
    pub chains: Option<Arc<WorkerChains>>,
}

/// A worker's key groups and the objects holding each one's state, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkerChains {
    pub objects: Vec<PartInfo>,
    /// Per key group the indices of its objects in `objects`.
    pub groups: Vec<(u32, Vec<u32>)>,
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
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
    /// The parts written for this checkpoint, one per worker.
    pub parts: Vec<PartInfo>,
    pub created_at_ms: u64,
    /// From trigger to the last part written.
    pub duration_ms: u64,
    /// All parts' payload bytes (what this checkpoint wrote).
    pub bytes: u64,
    /// 1: every part holds its worker's whole state; 2: incremental (below).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub format: u32,
    /// Format 2: every object a key group's state is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<PartInfo>,
    /// Format 2: per key group (by number), the objects holding its state, oldest first, as
    /// indices into `objects`; empty: the group has no state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<Vec<u32>>,
    /// A copy of another application's checkpoint (`restoreFrom`): its parts were written
    /// by that application, and a restore accepts them as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<Box<CopiedFrom>>,
}

/// Where a copied checkpoint came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopiedFrom {
    pub application: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its checkpoint number there.
    pub checkpoint: u64,
    /// Its storage (as described in logs).
    pub storage: String,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            application: String::new(),
            namespace: None,
            uid: None,
            checkpoint: 0,
            generation: 0,
            workers: 0,
            key_groups: 0,
            parts: Vec::new(),
            created_at_ms: 0,
            duration_ms: 0,
            bytes: 0,
            format: 1,
            objects: Vec::new(),
            groups: Vec::new(),
            copied_from: None,
        }
    }
}

impl Manifest {
    /// Every object this checkpoint needs, parts first (each key once).
    pub fn referenced(&self) -> Vec<&PartInfo> {
        let mut seen = std::collections::HashSet::new();
        self.parts
            .iter()
            .chain(&self.objects)
            .filter(|p| seen.insert(p.key.as_str()))
            .collect()
    }
}

/// A manifest's `format`, `objects` and `groups`.
pub type Assembled = (u32, Vec<PartInfo>, Vec<Vec<u32>>);

/// The format, objects and key-group chains of a manifest, from its parts' reports: format 1
/// when no part has chains (workers of an earlier version), 2 when all do. Each key group's
/// chain comes from the one worker that owns it.
pub fn assemble(key_groups: u32, parts: &[PartInfo]) -> Result<Assembled, String> {
    let with = parts.iter().filter(|p| p.chains.is_some()).count();
    if with == 0 {
        return Ok((1, Vec::new(), Vec::new()));
    }
    if with != parts.len() {
        return Err(
            "some workers wrote version-1 parts, others version-2 ones: every worker must run the same Spindle version"
                .into(),
        );
    }
    let mut objects: Vec<PartInfo> = Vec::new();
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut groups: Vec<Option<Vec<u32>>> = vec![None; key_groups as usize];
    for p in parts {
        let chains = p.chains.as_ref().expect("counted above");
        let mut mine = Vec::with_capacity(chains.objects.len());
        for o in &chains.objects {
            let i = *index.entry(o.key.clone()).or_insert_with(|| {
                objects.push(PartInfo {
                    chains: None,
                    ..o.clone()
                });
                objects.len() as u32 - 1
            });
            mine.push(i);
        }
        for (kg, links) in &chains.groups {
            let slot = groups
                .get_mut(*kg as usize)
                .ok_or_else(|| format!("worker {} reported key group {kg} of {key_groups}", p.worker))?;
            if slot.is_some() {
                return Err(format!("key group {kg} was reported by two workers"));
            }
            let chain = links
                .iter()
                .map(|&l| {
                    mine.get(l as usize)
                        .copied()
                        .ok_or_else(|| format!("worker {} reported object {l} of {}", p.worker, mine.len()))
                })
                .collect::<Result<Vec<u32>, String>>()?;
            *slot = Some(chain);
        }
    }
    Ok((2, objects, groups.into_iter().map(Option::unwrap_or_default).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(worker: u32, key: &str) -> PartInfo {
        PartInfo {
            worker,
            key: key.into(),
            size: 3,
            crc32: 7,
            index: Some(SectionLoc {
                offset: 1,
                length: 2,
                crc32: 3,
            }),
            chains: None,
        }
    }

    #[test]
    fn chains_of_all_workers_make_one_table() {
        let shared = info(0, "c1-w0");
        let w0 = PartInfo {
            chains: Some(Arc::new(WorkerChains {
                objects: vec![shared.clone(), info(0, "c2-w0")],
                groups: vec![(0, vec![0, 1]), (1, vec![1])],
            })),
            ..info(0, "c2-w0")
        };
        // After a rescale, worker 1 continues a chain that worker 0 began.
        let w1 = PartInfo {
            chains: Some(Arc::new(WorkerChains {
                objects: vec![shared, info(1, "c2-w1")],
                groups: vec![(3, vec![0, 1])],
            })),
            ..info(1, "c2-w1")
        };
        let (format, objects, groups) = assemble(4, &[w0.clone(), w1]).unwrap();
        assert_eq!(format, 2);
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["c1-w0", "c2-w0", "c2-w1"]);
        assert_eq!(groups, [vec![0, 1], vec![1], vec![], vec![0, 2]]);
        let m = Manifest {
            format,
            objects,
            groups,
            parts: vec![w0],
            ..Manifest::default()
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("chains"), "{json}");
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.groups, m.groups);
        assert_eq!(back.parts[0].chains, None);
        assert_eq!(back.referenced().len(), 3);
    }

    #[test]
    fn a_manifest_of_format_1_reads_as_before() {
        let json = r#"{"application":"a","checkpoint":3,"generation":2,"workers":1,"keyGroups":8,
            "parts":[{"worker":0,"key":"k","size":5,"crc32":9}],"createdAtMs":1,"durationMs":2,"bytes":5}"#;
        let m: Manifest = serde_json::from_str(json).unwrap();
        assert_eq!((m.format, m.objects.len(), m.groups.len()), (1, 0, 0));
        assert_eq!(m.parts[0].index, None);
        assert_eq!(assemble(8, &m.parts).unwrap().0, 1);
    }

    #[test]
    fn inconsistent_reports_are_refused() {
        let with = |kg: u32, obj: u32| PartInfo {
            chains: Some(Arc::new(WorkerChains {
                objects: vec![info(0, "x")],
                groups: vec![(kg, vec![obj])],
            })),
            ..info(0, "x")
        };
        assert!(
            assemble(4, &[with(0, 0), info(1, "y")])
                .unwrap_err()
                .contains("same Spindle version")
        );
        assert!(
            assemble(4, &[with(0, 0), with(0, 0)])
                .unwrap_err()
                .contains("two workers")
        );
        assert!(assemble(4, &[with(9, 0)]).is_err());
        assert!(assemble(4, &[with(1, 4)]).is_err());
    }
}
