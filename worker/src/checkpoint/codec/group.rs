//! Key-group sections (`GroupState`, format 2) read as they stream in: bytes arrive in chunks
//! of any size (ranged reads), complete entries are applied to the state at once, and only an
//! entry cut by a chunk's end is kept (so memory is bounded by the chunk size and the largest
//! address, not by the section). The section's CRC-32 is computed over the same bytes and
//! checked at the end; the caller drops the state it built if that fails.

use std::collections::HashMap;
use std::ops::Range;

use prost::encoding::{WireType, decode_varint};
use spindle_spec::TypeName;

use crate::keygroup::key_group;
use crate::message::Address;
use crate::state::StateStore;

/// Applies one section of key group `kg` to `state`: a base first empties the group, a delta
/// replaces (or, with no cells, removes) each address it names.
pub(crate) struct GroupDecoder {
    kg: u32,
    base: bool,
    /// The entry cut off by the end of the last chunk.
    carry: Vec<u8>,
    crc: crc32fast::Hasher,
    read: u64,
    addresses: u64,
    cells: Vec<CellSpan>,
    /// The first entry that did not parse: the rest is only checksummed, to tell damage
    /// (the checksum fails too) from a section this version cannot read.
    failed: Option<String>,
}

/// Why a section was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SectionError {
    /// Its bytes are not what was written (checksum or length).
    #[error("{0}")]
    Damaged(String),
    /// Intact, but not a valid section.
    #[error("{0}")]
    Invalid(String),
}

/// A section that does not parse, or holds what it should not.
fn bad(what: impl std::fmt::Display) -> String {
    what.to_string()
}

/// Typenames parsed so far: one `TypeName` per function type, not per address.
pub(crate) type TypeNames = HashMap<Box<str>, TypeName>;

impl GroupDecoder {
    /// `base`: the index's word on what the section is (the section says so too).
    pub fn new(state: &mut StateStore, kg: u32, base: bool) -> GroupDecoder {
        if base {
            state.clear_group(kg);
        }
        GroupDecoder {
            kg,
            base,
            carry: Vec::new(),
            crc: crc32fast::Hasher::new(),
            read: 0,
            addresses: 0,
            cells: Vec::new(),
            failed: None,
        }
    }

    /// The next bytes of the section.
    pub fn push(&mut self, state: &mut StateStore, typenames: &mut TypeNames, data: &[u8]) {
        self.crc.update(data);
        self.read += data.len() as u64;
        if self.failed.is_none()
            && let Err(e) = self.parse(&mut Sink { state, typenames }, data)
        {
            self.failed = Some(e);
        }
    }

    fn parse(&mut self, sink: &mut Sink<'_>, mut data: &[u8]) -> Result<(), String> {
        if !self.carry.is_empty() {
            // Complete the entry the previous chunk cut: first its header, then its body.
            loop {
                match frame(&self.carry)? {
                    None => {
                        let Some((&b, rest)) = data.split_first() else {
                            return Ok(());
                        };
                        self.carry.push(b);
                        data = rest;
                    }
                    Some(total) => {
                        let need = total - self.carry.len();
                        if data.len() < need {
                            self.carry.extend_from_slice(data);
                            return Ok(());
                        }
                        self.carry.extend_from_slice(&data[..need]);
                        data = &data[need..];
                        let entry = std::mem::take(&mut self.carry);
                        self.entry(sink, &entry)?;
                        self.carry = entry;
                        self.carry.clear();
                        break;
                    }
                }
            }
        }
        let mut pos = 0;
        while let Some(total) = frame(&data[pos..])? {
            if pos + total > data.len() {
                break;
            }
            self.entry(sink, &data[pos..pos + total])?;
            pos += total;
        }
        self.carry.extend_from_slice(&data[pos..]);
        Ok(())
    }

    /// The section ended: checks its length and checksum. Returns the addresses it held.
    pub fn finish(self, length: u64, crc32: u32) -> Result<u64, SectionError> {
        let actual = self.crc.finalize();
        if self.read != length || actual != crc32 {
            return Err(SectionError::Damaged(format!(
                "{} bytes with checksum {actual:08x}, the index says {length} bytes and {crc32:08x}",
                self.read
            )));
        }
        if let Some(e) = self.failed {
            return Err(SectionError::Invalid(e));
        }
        if !self.carry.is_empty() {
            return Err(SectionError::Invalid(format!(
                "the section ends inside an entry ({} bytes left)",
                self.carry.len()
            )));
        }
        Ok(self.addresses)
    }

    /// One top-level field of the `GroupState` message.
    fn entry(&mut self, sink: &mut Sink<'_>, mut field: &[u8]) -> Result<(), String> {
        let key = decode_varint(&mut field).map_err(bad)?;
        match (key >> 3, key & 7) {
            (1, 0) => {
                let kg = decode_varint(&mut field).map_err(bad)?;
                if kg != u64::from(self.kg) {
                    return Err(bad(format!("section of key group {kg} where {} was expected", self.kg)));
                }
            }
            (2, 0) => {
                let base = decode_varint(&mut field).map_err(bad)? != 0;
                if base != self.base {
                    return Err(bad(format!(
                        "a {} section where the index says {}",
                        kind(base),
                        kind(self.base)
                    )));
                }
            }
            (3, 2) => {
                let len = decode_varint(&mut field).map_err(bad)? as usize;
                self.address(sink, &field[..len])?;
            }
            // Fields of later versions (unknown here) are skipped: `frame` measured them.
            _ => {}
        }
        Ok(())
    }

    /// An `AddressState`.
    fn address(&mut self, sink: &mut Sink<'_>, body: &[u8]) -> Result<(), String> {
        let mut typename: Option<&str> = None;
        let mut id: &str = "";
        self.cells.clear();
        let mut buf = body;
        while !buf.is_empty() {
            let key = decode_varint(&mut buf).map_err(bad)?;
            let wire = key & 7;
            if wire != 2 {
                skip(&mut buf, wire)?;
                continue;
            }
            let len = decode_varint(&mut buf).map_err(bad)? as usize;
            if len > buf.len() {
                return Err(bad("an address entry is cut short"));
            }
            let (value, rest) = buf.split_at(len);
            match key >> 3 {
                1 => typename = Some(std::str::from_utf8(value).map_err(bad)?),
                2 => id = std::str::from_utf8(value).map_err(bad)?,
                3 => {
                    let start = body.len() - buf.len();
                    let cell = cell(value, start)?;
                    self.cells.push(cell);
                }
                _ => {}
            }
            buf = rest;
        }
        let typename = typename.ok_or_else(|| bad("an address entry without a typename"))?;
        let t = match sink.typenames.get(typename) {
            Some(t) => t.clone(),
            None => {
                let t = TypeName::parse(typename).map_err(|e| bad(format!("state address: {e}")))?;
                sink.typenames.insert(typename.into(), t.clone());
                t
            }
        };
        let addr = Address::new(t, id);
        let actual = key_group(&addr, sink.state.key_groups());
        if actual != self.kg {
            return Err(bad(format!(
                "{addr} is in key group {actual}, not in the section's {}",
                self.kg
            )));
        }
        let text = |r: &Range<usize>| std::str::from_utf8(&body[r.clone()]).map_err(bad);
        let mut cells = Vec::with_capacity(self.cells.len());
        for (name, ty, value, expires) in &self.cells {
            cells.push((text(name)?, text(ty)?, &body[value.clone()], *expires));
        }
        sink.state.load(self.kg, &addr, &cells);
        self.addresses += 1;
        Ok(())
    }
}

/// Where decoded entries go.
struct Sink<'a> {
    state: &'a mut StateStore,
    typenames: &'a mut TypeNames,
}

fn kind(base: bool) -> &'static str {
    if base { "base" } else { "delta" }
}

/// A `Cell` at `start` in its address's body: ranges of name, typename and value, and expiry.
/// Where one cell's name, typename and value are in the section's body, and its expiry.
type CellSpan = (Range<usize>, Range<usize>, Range<usize>, u64);

fn cell(mut buf: &[u8], start: usize) -> Result<CellSpan, String> {
    let total = buf.len();
    let (mut name, mut ty, mut value, mut expires) = (0..0, 0..0, 0..0, 0);
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).map_err(bad)?;
        match (key >> 3, key & 7) {
            (4, 0) => expires = decode_varint(&mut buf).map_err(bad)?,
            (tag @ 1..=3, 2) => {
                let len = decode_varint(&mut buf).map_err(bad)? as usize;
                if len > buf.len() {
                    return Err(bad("a cell is cut short"));
                }
                let at = start + (total - buf.len());
                let r = at..at + len;
                match tag {
                    1 => name = r,
                    2 => ty = r,
                    _ => value = r,
                }
                buf = &buf[len..];
            }
            (_, wire) => skip(&mut buf, wire)?,
        }
    }
    Ok((name, ty, value, expires))
}

fn skip(buf: &mut &[u8], wire: u64) -> Result<(), String> {
    let n = match wire {
        0 => {
            decode_varint(buf).map_err(bad)?;
            0
        }
        1 => 8,
        2 => decode_varint(buf).map_err(bad)? as usize,
        5 => 4,
        _ => return Err(bad(format!("wire type {wire}"))),
    };
    if n > buf.len() {
        return Err(bad("a field is cut short"));
    }
    *buf = &buf[n..];
    Ok(())
}

/// The length of the top-level field at the start of `buf`, once its header is complete.
fn frame(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut b = buf;
    let Some(key) = varint(&mut b)? else {
        return Ok(None);
    };
    let header = buf.len() - b.len();
    match WireType::try_from(key & 7).map_err(bad)? {
        WireType::Varint => Ok(varint(&mut b)?.map(|_| buf.len() - b.len())),
        WireType::LengthDelimited => {
            let Some(len) = varint(&mut b)? else {
                return Ok(None);
            };
            Ok(Some(buf.len() - b.len() + len as usize))
        }
        WireType::SixtyFourBit => Ok(Some(header + 8)),
        WireType::ThirtyTwoBit => Ok(Some(header + 4)),
        other => Err(bad(format!("unexpected wire type {other:?} in a key-group section"))),
    }
}

/// A varint, or `None` when `buf` ends inside it.
fn varint(buf: &mut &[u8]) -> Result<Option<u64>, String> {
    let end = buf.iter().position(|b| b & 0x80 == 0);
    match end {
        None if buf.len() >= 10 => Err(bad("a varint longer than 10 bytes")),
        None => Ok(None),
        Some(_) => decode_varint(buf).map(Some).map_err(bad),
    }
}
