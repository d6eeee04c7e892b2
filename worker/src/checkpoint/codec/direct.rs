//! Encodes the bulk of a part — its `state` entries (`repeated AddressState state = 7`) and
//! its egress records (`repeated EgressOut egress = 12`) — straight from memory, without
//! building prost structs, which cost a `String` per text field of every entry on every
//! checkpoint (under load, a checkpoint holds every egress record of its epoch). The bytes are
//! exactly what prost would write for the same entries (fields in tag order, defaults
//! omitted), so parts decode with the generated `proto::Part`.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::egress::PendingEgress;
use crate::state::StateStore;

const PART_STATE: u32 = 7;
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

fn cell_len(name: &str, typename: &str, value: &[u8], expires: u64) -> usize {
    str_len(1, name.len())
        + str_len(2, typename.len())
        + str_len(3, value.len())
        + if expires == 0 {
            0
        } else {
            key_len(4) + encoded_len_varint(expires)
        }
}

/// Appends every address's state as `Part.state` entries.
pub fn append_state(state: &StateStore, buf: &mut Vec<u8>) {
    // One buffer for every address's cells: they are walked twice (lengths, then bytes).
    let mut cells: Vec<(&str, &str, &[u8], u64)> = Vec::new();
    for (addr, each) in state.iter() {
        cells.clear();
        cells.extend(each.map(|(name, v, exp)| (name, &*v.typename, &v.bytes[..], exp.unwrap_or(0))));
        let typename = addr.typename.as_str();
        let body: usize = str_len(1, typename.len())
            + str_len(2, addr.id.len())
            + cells
                .iter()
                .map(|c| {
                    let n = cell_len(c.0, c.1, c.2, c.3);
                    key_len(3) + encoded_len_varint(n as u64) + n
                })
                .sum::<usize>();
        encode_key(PART_STATE, WireType::LengthDelimited, buf);
        encode_varint(body as u64, buf);
        put_bytes(buf, 1, typename.as_bytes());
        put_bytes(buf, 2, addr.id.as_bytes());
        for &(name, ty, value, expires) in &cells {
            encode_key(3, WireType::LengthDelimited, buf);
            encode_varint(cell_len(name, ty, value, expires) as u64, buf);
            put_bytes(buf, 1, name.as_bytes());
            put_bytes(buf, 2, ty.as_bytes());
            put_bytes(buf, 3, value);
            if expires != 0 {
                encode_key(4, WireType::Varint, buf);
                encode_varint(expires, buf);
            }
        }
    }
}

fn varint_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
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
        if p.epoch != 0 {
            encode_key(7, WireType::Varint, buf);
            encode_varint(p.epoch, buf);
        }
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

    #[test]
    fn decodes_as_what_prost_would_have_written() {
        let mut state = StateStore::default();
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
        let mut direct = Vec::new();
        append_state(&state, &mut direct);
        let expected: Vec<proto::AddressState> = state
            .iter()
            .map(|(a, cells)| proto::AddressState {
                typename: a.typename.to_string(),
                id: a.id.to_string(),
                cells: cells
                    .map(|(name, v, exp)| proto::Cell {
                        name: name.into(),
                        typename: v.typename.to_string(),
                        value: v.bytes.clone(),
                        expires_at_ms: exp.unwrap_or(0),
                    })
                    .collect(),
            })
            .collect();
        let via_prost = proto::Part {
            state: expected.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(direct, via_prost, "byte for byte");
        assert_eq!(proto::Part::decode(&direct[..]).unwrap().state, expected);
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
