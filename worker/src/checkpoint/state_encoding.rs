//! Encodes a part's `state` entries (`repeated AddressState state = 7`) straight from the
//! state store, without building prost structs: the state is the bulk of every part, and the
//! structs cost four `String`s and two `Vec`s per address on each checkpoint. The bytes are
//! exactly what prost would write for the same entries (fields in tag order, defaults
//! omitted), so parts decode with the generated `proto::Part`.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::partition::StateStore;

const PART_STATE: u32 = 7;

fn str_len(tag: u32, n: usize) -> usize {
    if n == 0 { 0 } else { key_len(tag) + encoded_len_varint(n as u64) + n }
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
        + if expires == 0 { 0 } else { key_len(4) + encoded_len_varint(expires) }
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message as _;
    use spindle_spec::TypeName;

    use super::*;
    use crate::checkpoint::snapshot::proto;
    use crate::message::{Address, Value};

    #[test]
    fn decodes_as_what_prost_would_have_written() {
        let mut state = StateStore::default();
        let t = TypeName::parse("ns/fn").unwrap();
        for i in 0..50u64 {
            let a = Address::new(t.clone(), format!("id-{i}"));
            state.restore(a.clone(), "total", Value::new("io.statefun.types/long", Bytes::from(i.to_le_bytes().to_vec())), None);
            if i % 3 == 0 {
                state.restore(a.clone(), "seen", Value::new("ns/Seen", Bytes::new()), Some(1_700_000_000_000 + i));
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
        let via_prost = proto::Part { state: expected.clone(), ..Default::default() }.encode_to_vec();
        assert_eq!(direct, via_prost, "byte for byte");
        assert_eq!(proto::Part::decode(&direct[..]).unwrap().state, expected);
    }
}
