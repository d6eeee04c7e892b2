//! Key groups: where an address's state lives.
//!
//! An address belongs to key group `murmur3_32(typename ++ 0x00 ++ id, seed 0) mod keyGroups`
//! (MurmurHash3 x86 32-bit over the UTF-8 bytes; typenames cannot contain 0x00, so the pair is
//! unambiguous). The function is fixed forever: checkpoints store state by key group, so a
//! different hash would put restored state on the wrong worker. Test vectors below pin it.
//!
//! Key groups are assigned to workers in contiguous ranges, as Flink assigns them to operator
//! instances: worker `i` of `n` owns `[ceil(i·K/n), ceil((i+1)·K/n))`, so any worker count from
//! 1 to K works and rescaling moves whole ranges.

use std::ops::Range;

use crate::message::Address;

/// MurmurHash3, x86 32-bit variant (Austin Appleby's reference `MurmurHash3_x86_32`).
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The key group of an address.
pub fn key_group(addr: &Address, key_groups: u32) -> u32 {
    let t = addr.typename.as_str().as_bytes();
    let id = addr.id.as_bytes();
    // Hash the bytes in place: this runs for every routed message.
    let mut buf = [0u8; 128];
    let n = t.len() + 1 + id.len();
    let h = if n <= buf.len() {
        buf[..t.len()].copy_from_slice(t);
        buf[t.len()] = 0;
        buf[t.len() + 1..n].copy_from_slice(id);
        murmur3_32(&buf[..n], 0)
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(t);
        v.push(0);
        v.extend_from_slice(id);
        murmur3_32(&v, 0)
    };
    h % key_groups
}

/// The key groups worker `index` of `workers` owns.
pub fn range_of(index: u32, workers: u32, key_groups: u32) -> Range<u32> {
    let (i, n, k) = (u64::from(index), u64::from(workers), u64::from(key_groups));
    let start = (i * k).div_ceil(n);
    let end = ((i + 1) * k).div_ceil(n);
    start as u32..end as u32
}

/// The worker owning key group `kg`.
pub fn worker_of(kg: u32, workers: u32, key_groups: u32) -> u32 {
    (u64::from(kg) * u64::from(workers) / u64::from(key_groups)) as u32
}

/// Who owns what: a worker's place among `workers` that share `key_groups`. The one answer to
/// "which worker owns this address", for routing and for restoring a checkpoint alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// This worker's index.
    pub worker: u32,
    pub workers: u32,
    pub key_groups: u32,
}

impl Layout {
    /// The worker owning `addr`.
    pub fn owner(&self, addr: &Address) -> u32 {
        if self.workers <= 1 {
            return 0;
        }
        worker_of(key_group(addr, self.key_groups), self.workers, self.key_groups)
    }

    /// True when this worker owns `addr`.
    pub fn owns(&self, addr: &Address) -> bool {
        self.owner(addr) == self.worker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_spec::TypeName;

    #[test]
    fn murmur3_matches_the_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
        assert_eq!(murmur3_32(&[0x21, 0x43, 0x65, 0x87], 0), 0xf55b_516b);
        assert_eq!(murmur3_32(&[0x21, 0x43, 0x65], 0), 0x7e4a_8634);
        assert_eq!(murmur3_32(&[0x21, 0x43], 0), 0xa0f7_b07a);
        assert_eq!(murmur3_32(&[0x21], 0), 0x7266_1cf4);
    }

    /// Pinned: changing any of these moves state between workers on restore.
    #[test]
    fn key_groups_are_pinned() {
        let a = |t: &str, id: &str| Address::new(TypeName::parse(t).unwrap(), id);
        let got: Vec<u32> = [
            a("example/person", "ada"),
            a("example/person", "grace"),
            a("example/greeter", "ada"),
            a("py/counter", "alice"),
            a("t/f", ""),
            a("t/f", &"x".repeat(200)),
        ]
        .iter()
        .map(|addr| key_group(addr, 128))
        .collect();
        assert_eq!(got, PINNED);
    }

    // Cross-checked with the PyPI `mmh3` package: mmh3.hash(typename + "\0" + id, 0, signed=False) % 128.
    const PINNED: [u32; 6] = [23, 86, 31, 54, 84, 8];

    #[test]
    fn long_and_short_keys_hash_the_same_way() {
        let addr = Address::new(TypeName::parse("t/f").unwrap(), "y".repeat(300));
        let mut bytes = b"t/f\0".to_vec();
        bytes.extend(std::iter::repeat_n(b'y', 300));
        assert_eq!(key_group(&addr, 1 << 15), murmur3_32(&bytes, 0) % (1 << 15));
    }

    #[test]
    fn ranges_partition_the_key_groups_for_every_worker_count() {
        for k in [1, 7, 128, 1000] {
            for n in 1..=k.min(130) {
                let mut next = 0;
                for i in 0..n {
                    let r = range_of(i, n, k);
                    assert_eq!(r.start, next, "k={k} n={n} i={i}: contiguous");
                    assert!(!r.is_empty(), "k={k} n={n} i={i}: every worker owns a key group");
                    for kg in r.clone() {
                        assert_eq!(worker_of(kg, n, k), i, "k={k} n={n} kg={kg}");
                    }
                    next = r.end;
                }
                assert_eq!(next, k);
            }
        }
    }
}
