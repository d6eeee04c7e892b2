//! Encodes the bulk of a part straight from memory, without building prost structs (which
//! cost a `String` per text field of every entry on every checkpoint): a key group's state as
//! a `GroupState` section, and egress records as `Part.egress` entries (under load, a
//! checkpoint holds every egress record of its epoch). The bytes are exactly what prost would
//! write for the same entries (fields in tag order, defaults omitted), so they decode with
//! the generated types.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::egress::PendingEgress;
use crate::state::{CellRef, GroupChanges};

const GROUP_KEY_GROUP: u32 = 1;
const GROUP_BASE: u32 = 2;
const GROUP_STATE: u32 = 3;
const PART_EGRESS: u32 = 12;

fn str_len(tag: u32, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(n as u64) + n
    }
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(b.len() as u64, buf);
        buf.extend_from_slice(b);
    }
}

fn varint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn cell_len(c: &CellRef<'_>) -> usize {
    str_len(1, c.name.len())
        + str_len(2, c.typename.len())
        + str_len(3, c.bytes.len())
        + varint_len(4, c.expires_at_ms.unwrap_or(0))
}

/// Appends one key group's changes as a `GroupState` message: every address with its cells
/// (none: deleted).
pub fn append_group(group: &GroupChanges, buf: &mut Vec<u8>) {
    put_varint(buf, GROUP_KEY_GROUP, u64::from(group.key_group));
    put_varint(buf, GROUP_BASE, u64::from(group.whole));
    // One buffer for every address's cells: they are walked twice (lengths, then bytes).
    let mut cells: Vec<CellRef<'_>> = Vec::new();
    for (addr, each) in &group.entries {
        cells.clear();
        if let Some(each) = each {
            cells.extend(each.iter());
        }
        let typename = addr.typename.as_str();
        let body: usize = str_len(1, typename.len())
            + str_len(2, addr.id.len())
            + cells
                .iter()
                .map(|c| {
                    let n = cell_len(c);
                    key_len(3) + encoded_len_varint(n as u64) + n
                })
                .sum::<usize>();
        encode_key(GROUP_STATE, WireType::LengthDelimited, buf);
        encode_varint(body as u64, buf);
        put_bytes(buf, 1, typename.as_bytes());
        put_bytes(buf, 2, addr.id.as_bytes());
        for c in &cells {
            encode_key(3, WireType::LengthDelimited, buf);
            encode_varint(cell_len(c) as u64, buf);
            put_bytes(buf, 1, c.name.as_bytes());
            put_bytes(buf, 2, c.typename.as_bytes());
            put_bytes(buf, 3, c.bytes);
            put_varint(buf, 4, c.expires_at_ms.unwrap_or(0));
        }
    }
}

/// Appends egress records as `Part.egress` entries.
pub fn append_egress(egress: &[PendingEgress], buf: &mut Vec<u8>) {
    for p in egress {
        let r = &p.record;
        let fields: [(u32, &[u8]); 6] = [
            (1, r.egress.as_str().as_bytes()),
            (2, r.source.typename.as_str().as_bytes()),
            (3, r.source.id.as_bytes()),
            (4, r.value.typename.as_bytes()),
            (5, &r.value.bytes[..]),
            (6, p.key.as_bytes()),
        ];
        let body: usize = fields.iter().map(|(t, b)| str_len(*t, b.len())).sum::<usize>() + varint_len(7, p.epoch);
        encode_key(PART_EGRESS, WireType::LengthDelimited, buf);
        encode_varint(body as u64, buf);
        for (tag, bytes) in fields {
            put_bytes(buf, tag, bytes);
        }
        put_varint(buf, 7, p.epoch);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message as _;
    use spindle_spec::TypeName;

    use super::*;
    use crate::message::{Address, Value};
    use crate::proto::checkpoint as proto;
    use crate::state::StateStore;

    #[test]
    fn a_group_decodes_as_what_prost_would_have_written() {
        let mut state = StateStore::new(1);
        state.track_changes();
        let t = TypeName::parse("ns/fn").unwrap();
        for i in 0..50u64 {
            let a = Address::new(t.clone(), format!("id-{i}"));
            state.restore(
                a.clone(),
                "total",
                Value::new("io.statefun.types/long", Bytes::from(i.to_le_bytes().to_vec())),
                None,
            );
            if i % 3 == 0 {
                state.restore(
                    a.clone(),
                    "seen",
                    Value::new("ns/Seen", Bytes::new()),
                    Some(1_700_000_000_000 + i),
                );
            }
        }
        let mut whole = state.capture(&[0]);
        let group = whole.groups.remove(0);
        let mut direct = Vec::new();
        append_group(&group, &mut direct);
        let expected: Vec<proto::AddressState> = group
            .entries
            .iter()
            .map(|(a, cells)| proto::AddressState {
                typename: a.typename.to_string(),
                id: a.id.to_string(),
                cells: cells
                    .iter()
                    .flat_map(|c| c.iter())
                    .map(|c| proto::Cell {
                        name: c.name.into(),
                        typename: c.typename.into(),
                        value: Bytes::copy_from_slice(c.bytes),
                        expires_at_ms: c.expires_at_ms.unwrap_or(0),
                    })
                    .collect(),
            })
            .collect();
        let via_prost = proto::GroupState {
            key_group: 0,
            base: true,
            state: expected.clone(),
        }
        .encode_to_vec();
        assert_eq!(direct, via_prost, "byte for byte");
        assert_eq!(proto::GroupState::decode(&direct[..]).unwrap().state, expected);
    }

    #[test]
    fn egress_decodes_as_what_prost_would_have_written() {
        let t = TypeName::parse("ns/fn").unwrap();
        let pending: Vec<PendingEgress> = (0..20u64)
            .map(|i| PendingEgress {
                epoch: i / 5,
                key: format!("app/{}/0/{i}", i / 5).into(),
                record: crate::egress::EgressRecord {
                    egress: TypeName::parse("ns/out").unwrap(),
                    value: Value::new(
                        "ns/Out",
                        Bytes::from(if i % 4 == 0 { vec![] } else { vec![i as u8; 3] }),
                    ),
                    source: Address::new(t.clone(), format!("id-{i}")),
                    key: None,
                },
            })
            .collect();
        let mut direct = Vec::new();
        append_egress(&pending, &mut direct);
        let expected: Vec<proto::EgressOut> = pending
            .iter()
            .map(|p| proto::EgressOut {
                egress: p.record.egress.to_string(),
                source_type: p.record.source.typename.to_string(),
                source_id: p.record.source.id.to_string(),
                typename: p.record.value.typename.to_string(),
                value: p.record.value.bytes.clone(),
                key: p.key.to_string(),
                epoch: p.epoch,
            })
            .collect();
        let via_prost = proto::Part {
            egress: expected.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(direct, via_prost, "byte for byte");
        assert_eq!(proto::Part::decode(&direct[..]).unwrap().egress, expected);
    }
}
