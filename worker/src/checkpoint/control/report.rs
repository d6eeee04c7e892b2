//! A part report's format-2 fields on the wire (`PartWritten.index`, `.objects`, `.chains`):
//! written by a worker's coordinator link, read and checked by the coordinator's server. A
//! report can only name objects of this application's checkpoints and key groups of its
//! layout: what it says ends up in a manifest.

use std::sync::Arc;

use crate::checkpoint::manifest::{PartInfo, SectionLoc, WorkerChains};
use crate::checkpoint::store::CheckpointStore;
use crate::proto::control::{GroupChain, ObjectRef, PartWritten, SectionRef};

fn loc_to_wire(l: SectionLoc) -> SectionRef {
    SectionRef {
        offset: l.offset,
        length: l.length,
        crc32: l.crc32,
    }
}

fn loc_from_wire(l: &SectionRef) -> SectionLoc {
    SectionLoc {
        offset: l.offset,
        length: l.length,
        crc32: l.crc32,
    }
}

/// Fills the format-2 fields of `out` from `info`.
pub(crate) fn to_wire(info: &PartInfo, out: &mut PartWritten) {
    out.index = info.index.map(loc_to_wire);
    if let Some(chains) = &info.chains {
        out.objects = chains
            .objects
            .iter()
            .map(|o| ObjectRef {
                worker: o.worker,
                key: o.key.clone(),
                size: o.size,
                crc32: o.crc32,
                index: o.index.map(loc_to_wire),
            })
            .collect();
        out.chains = chains
            .groups
            .iter()
            .map(|(kg, objects)| GroupChain {
                key_group: *kg,
                objects: objects.clone(),
            })
            .collect();
    }
}

/// The part `p` reports, of worker `from`, checked: its objects are parts of this
/// application, its key groups exist, its chains name listed objects.
pub(crate) fn from_wire(
    p: &PartWritten,
    from: u32,
    key_groups: u32,
    store: Option<&CheckpointStore>,
) -> Result<PartInfo, String> {
    let mut info = PartInfo {
        worker: from,
        key: p.key.clone(),
        size: p.size,
        crc32: p.crc32,
        index: p.index.as_ref().map(loc_from_wire),
        chains: None,
    };
    let Some(index) = info.index else {
        return Ok(info);
    };
    if index.offset.saturating_add(index.length) > p.size {
        return Err(format!("the index of `{}` lies past its end", p.key));
    }
    let mut objects = Vec::with_capacity(p.objects.len());
    for o in &p.objects {
        if let Some(store) = store
            && !store.is_part_key(&o.key)
        {
            return Err(format!("object `{}` is not a part of this application", o.key));
        }
        objects.push(PartInfo {
            worker: o.worker,
            key: o.key.clone(),
            size: o.size,
            crc32: o.crc32,
            index: Some(
                o.index
                    .as_ref()
                    .map(loc_from_wire)
                    .ok_or_else(|| format!("object `{}` has no index", o.key))?,
            ),
            chains: None,
        });
    }
    let mut groups = Vec::with_capacity(p.chains.len());
    for c in &p.chains {
        if c.key_group >= key_groups {
            return Err(format!("key group {} of {key_groups}", c.key_group));
        }
        if let Some(bad) = c.objects.iter().find(|&&o| o as usize >= objects.len()) {
            return Err(format!(
                "key group {} names object {bad} of {}",
                c.key_group,
                objects.len()
            ));
        }
        groups.push((c.key_group, c.objects.clone()));
    }
    info.chains = Some(Arc::new(WorkerChains { objects, groups }));
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PartInfo {
        let loc = SectionLoc {
            offset: 10,
            length: 5,
            crc32: 9,
        };
        PartInfo {
            worker: 1,
            key: "app/checkpoints/00000000000000000002/part-g1-w1.bin".into(),
            size: 20,
            crc32: 3,
            index: Some(loc),
            chains: Some(Arc::new(WorkerChains {
                objects: vec![PartInfo {
                    worker: 0,
                    key: "app/checkpoints/00000000000000000001/part-g1-w0.bin".into(),
                    size: 30,
                    crc32: 4,
                    index: Some(loc),
                    chains: None,
                }],
                groups: vec![(3, vec![0])],
            })),
        }
    }

    #[test]
    fn a_report_round_trips_and_lies_are_refused() {
        let store = CheckpointStore::open(
            std::env::temp_dir().join("spindle-report-test").to_str().unwrap(),
            std::path::Path::new("/"),
            "app",
        )
        .unwrap();
        let mut wire = PartWritten {
            key: info().key,
            size: 20,
            crc32: 3,
            ..PartWritten::default()
        };
        to_wire(&info(), &mut wire);
        assert_eq!(from_wire(&wire, 1, 8, Some(&store)).unwrap(), info());
        let mut other = wire.clone();
        other.objects[0].key = "elsewhere/checkpoints/00000000000000000001/part-g1-w0.bin".into();
        assert!(
            from_wire(&other, 1, 8, Some(&store))
                .unwrap_err()
                .contains("not a part")
        );
        let mut far = wire.clone();
        far.chains[0].key_group = 8;
        assert!(from_wire(&far, 1, 8, Some(&store)).is_err());
        let mut dangling = wire.clone();
        dangling.chains[0].objects = vec![1];
        assert!(from_wire(&dangling, 1, 8, Some(&store)).is_err());
    }
}
