//! One address as the store keeps it: its id and all its cells packed in a single immutable
//! allocation ([`Entry`]), shared by the store and the captures that hold it (a capture
//! clones an `Arc`, not the values), with each cell's name and typename an index into an
//! append-only table of kinds (a function declares a handful of state names, shared by all
//! its addresses).
//!
//! Packed because millions of addresses are mostly idle: separate allocations for the id, the
//! cell list and each value cost a malloc header and rounding each, and a set keyed by a
//! separate id needs a wider slot. Layout, little-endian: `id length: u32, id bytes`, then per
//! cell `kind: u32, expires_at_ms: u64 (0: never), length: u32, bytes`. No cells: the address
//! was deleted (only in change sets; the store never holds an empty entry).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const ID_LEN: usize = 4;
const CELL_HEADER: usize = 4 + 8 + 4;

/// A state value's name and typename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Kind {
    pub name: Arc<str>,
    pub typename: Arc<str>,
}

/// One cell as it is put into an entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewCell<'a> {
    pub kind: u32,
    pub bytes: &'a [u8],
    /// Epoch milliseconds; 0: never expires.
    pub expires_at_ms: u64,
}

/// One cell as it is read from an entry.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawCell<'a> {
    pub kind: u32,
    pub bytes: &'a [u8],
    pub expires_at_ms: u64,
}

impl<'a> RawCell<'a> {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    pub fn as_new(self) -> NewCell<'a> {
        NewCell {
            kind: self.kind,
            bytes: self.bytes,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// An address's id and cells in one allocation; hashed and compared by id, so a set of
/// entries is a map from id to cells with a 16-byte slot.
#[derive(Debug, Clone)]
pub(super) struct Entry(Arc<[u8]>);

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

impl Entry {
    pub fn new(id: &str, cells: &[NewCell<'_>]) -> Entry {
        let len = ID_LEN + id.len() + cells.iter().map(|c| CELL_HEADER + c.bytes.len()).sum::<usize>();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
        buf.extend_from_slice(id.as_bytes());
        for c in cells {
            buf.extend_from_slice(&c.kind.to_le_bytes());
            buf.extend_from_slice(&c.expires_at_ms.to_le_bytes());
            buf.extend_from_slice(&(c.bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(c.bytes);
        }
        debug_assert_eq!(buf.len(), len);
        Entry(buf.into())
    }

    fn id_end(&self) -> usize {
        ID_LEN + u32_at(&self.0, 0) as usize
    }

    pub fn id_bytes(&self) -> &[u8] {
        &self.0[ID_LEN..self.id_end()]
    }

    pub fn id(&self) -> &str {
        std::str::from_utf8(self.id_bytes()).expect("an entry's id was a str")
    }

    pub fn is_empty(&self) -> bool {
        self.id_end() == self.0.len()
    }

    pub fn cells(&self) -> impl Iterator<Item = RawCell<'_>> {
        let b = &self.0;
        let mut at = self.id_end();
        std::iter::from_fn(move || {
            if at >= b.len() {
                return None;
            }
            let kind = u32_at(b, at);
            let expires_at_ms = u64_at(b, at + 4);
            let len = u32_at(b, at + 12) as usize;
            let start = at + CELL_HEADER;
            at = start + len;
            Some(RawCell {
                kind,
                bytes: &b[start..at],
                expires_at_ms,
            })
        })
    }

    pub fn expiring(&self) -> bool {
        self.cells().any(|c| c.expires_at_ms != 0)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.id_bytes() == other.id_bytes()
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    // As `[u8]` hashes, so that a set of entries is looked up by an id's bytes.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id_bytes().hash(state)
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.id_bytes()
    }
}

/// The kinds of values a store has seen, by index. Append-only, so an index stays valid for
/// every entry; the table is shared with captures (copied on the rare append while one is
/// held).
#[derive(Debug, Default, Clone)]
pub(super) struct Kinds(Arc<Vec<Kind>>);

impl Kinds {
    pub fn get(&mut self, name: &str, typename: &str) -> u32 {
        if let Some(i) = self.0.iter().position(|k| *k.name == *name && *k.typename == *typename) {
            return i as u32;
        }
        // Names and typenames are shared across kinds too (`io.statefun.types/long` for most
        // counters).
        let name = self
            .0
            .iter()
            .find(|k| *k.name == *name)
            .map_or_else(|| Arc::from(name), |k| k.name.clone());
        let typename = self
            .0
            .iter()
            .find(|k| *k.typename == *typename)
            .map_or_else(|| Arc::from(typename), |k| k.typename.clone());
        let table = Arc::make_mut(&mut self.0);
        table.push(Kind { name, typename });
        (table.len() - 1) as u32
    }

    pub fn kind(&self, i: u32) -> &Kind {
        &self.0[i as usize]
    }

    /// The cell of `cells` named `name`.
    pub fn named<'a>(&self, cells: &'a Entry, name: &str) -> Option<RawCell<'a>> {
        cells.cells().find(|c| *self.kind(c.kind).name == *name)
    }
}

/// The cells of one address, readable on their own (with the kinds they name). Cloning is
/// O(1): what a checkpoint captures.
#[derive(Debug, Clone)]
pub struct Cells {
    pub(super) entry: Entry,
    pub(super) kinds: Kinds,
}

/// One cell, as the checkpoint codec reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellRef<'a> {
    pub name: &'a str,
    pub typename: &'a str,
    pub bytes: &'a [u8],
    /// Epoch milliseconds; `None`: never expires.
    pub expires_at_ms: Option<u64>,
}

impl Cells {
    pub fn iter(&self) -> impl Iterator<Item = CellRef<'_>> {
        self.entry.cells().map(|c| {
            let kind = self.kinds.kind(c.kind);
            CellRef {
                name: &kind.name,
                typename: &kind.typename,
                bytes: c.bytes,
                expires_at_ms: (c.expires_at_ms != 0).then_some(c.expires_at_ms),
            }
        })
    }

    /// Cells of the address (never 0: an address without cells has none stored).
    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.entry.cells().count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn an_entry_packs_its_id_and_cells_and_is_found_by_id() {
        let cells = [
            NewCell {
                kind: 0,
                bytes: b"seven",
                expires_at_ms: 0,
            },
            NewCell {
                kind: 3,
                bytes: b"",
                expires_at_ms: 1_700_000_000_000,
            },
        ];
        let e = Entry::new("user-ü", &cells);
        assert_eq!(e.id(), "user-ü");
        assert!(!e.is_empty());
        let read: Vec<_> = e.cells().map(|c| (c.kind, c.bytes.to_vec(), c.expires_at_ms)).collect();
        assert_eq!(
            read,
            vec![(0, b"seven".to_vec(), 0), (3, Vec::new(), 1_700_000_000_000)]
        );
        assert!(e.expiring());
        assert!(Entry::new("x", &[]).is_empty());

        let mut set = HashSet::new();
        set.insert(e);
        assert!(set.contains("user-ü".as_bytes()));
        assert!(!set.contains("user-u".as_bytes()));
        // Replacing by id keeps one entry, the newer.
        set.replace(Entry::new("user-ü", &[]));
        assert_eq!(set.len(), 1);
        assert!(set.get("user-ü".as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn kinds_keep_their_index_and_a_held_table_is_not_changed() {
        let mut kinds = Kinds::default();
        let a = kinds.get("n", "io.statefun.types/long");
        let held = kinds.clone();
        let b = kinds.get("m", "io.statefun.types/long");
        assert_eq!((a, b), (0, 1));
        assert_eq!(kinds.get("n", "io.statefun.types/long"), a);
        assert_eq!(held.0.len(), 1, "a capture's table stays as it was");
        assert!(Arc::ptr_eq(&kinds.kind(a).typename, &kinds.kind(b).typename));
    }
}
