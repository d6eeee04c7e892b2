//! One address's cells as the store keeps them: a single allocation shared, copy-on-write,
//! by the store and the captures that hold it (a capture clones an `Arc`, not the values), with
//! each cell's name and typename interned (one `Arc` per kind of value, not per address).

use std::collections::HashMap;
use std::sync::Arc;

/// A state value's name and typename, shared by every cell of that kind.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Kind {
    pub name: Arc<str>,
    pub typename: Arc<str>,
}

#[derive(Debug, Clone)]
pub(super) struct Cell {
    pub kind: Arc<Kind>,
    pub bytes: Box<[u8]>,
    /// Epoch milliseconds; 0: never expires.
    pub expires_at_ms: u64,
}

impl Cell {
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// The cells of one address. Cloning is O(1): what a checkpoint captures.
#[derive(Debug, Clone)]
pub struct Cells(pub(super) Arc<[Cell]>);

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
        self.0.iter().map(|c| CellRef {
            name: &c.kind.name,
            typename: &c.kind.typename,
            bytes: &c.bytes,
            expires_at_ms: (c.expires_at_ms != 0).then_some(c.expires_at_ms),
        })
    }

    /// Cells of the address (never 0: an address without cells has none stored).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn expiring(&self) -> bool {
        self.0.iter().any(|c| c.expires_at_ms != 0)
    }
}

/// Interned kinds: a function declares a handful of state names, shared by all its addresses.
#[derive(Debug, Default)]
pub(super) struct Kinds {
    by_name: HashMap<Arc<str>, Vec<Arc<Kind>>>,
}

impl Kinds {
    pub fn get(&mut self, name: &str, typename: &str) -> Arc<Kind> {
        if let Some(kinds) = self.by_name.get(name)
            && let Some(k) = kinds.iter().find(|k| &*k.typename == typename)
        {
            return k.clone();
        }
        let name: Arc<str> = match self.by_name.get_key_value(name) {
            Some((n, _)) => n.clone(),
            None => name.into(),
        };
        // Typenames are shared across names too (`io.statefun.types/long` for most counters).
        let typename = self
            .by_name
            .values()
            .flatten()
            .find(|k| &*k.typename == typename)
            .map_or_else(|| Arc::from(typename), |k| k.typename.clone());
        let kind = Arc::new(Kind {
            name: name.clone(),
            typename,
        });
        self.by_name.entry(name).or_default().push(kind.clone());
        kind
    }
}
