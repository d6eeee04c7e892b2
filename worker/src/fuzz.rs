//! Input for the property tests of the decoders: a seeded generator of random byte strings
//! and of mutations of valid encodings (bit flips, overwritten bytes, truncations, insertions,
//! repeated slices), so every decoder meets both noise and almost-valid input. The seed and
//! case are in every failure message, and the case count is fixed, so `cargo test` stays
//! deterministic and bounded.

/// xorshift64: small, fast, reproducible from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Up to `max` random bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A short string drawn mostly from awkward characters (control characters, slashes,
    /// percent signs, non-ASCII), sometimes empty, sometimes long.
    pub(crate) fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "/", "%", "%0A", "\n", "\0", "\u{7f}", "ü", " ", "..", "\u{202e}",
        ];
        let n = match self.below(10) {
            0 => 0,
            1 => 5000,
            _ => self.below(12),
        };
        (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
    }

    /// `valid`, changed in one to three places.
    pub(crate) fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        let mut b = valid.to_vec();
        for _ in 0..=self.below(3) {
            match self.below(5) {
                0 if !b.is_empty() => {
                    let i = self.below(b.len());
                    b[i] ^= 1 << self.below(8);
                }
                1 if !b.is_empty() => {
                    let i = self.below(b.len());
                    b[i] = self.next() as u8;
                }
                2 => b.truncate(self.below(b.len() + 1)),
                3 => {
                    let i = self.below(b.len() + 1);
                    let extra = self.bytes(8);
                    b.splice(i..i, extra);
                }
                _ if !b.is_empty() => {
                    let from = self.below(b.len());
                    let to = (from + 1 + self.below(16)).min(b.len());
                    let slice = b[from..to].to_vec();
                    b.splice(from..from, slice);
                }
                _ => b.push(self.next() as u8),
            }
        }
        b
    }
}

/// Cases per decoder: enough to reach every field with mutations, small enough for CI.
pub(crate) const CASES: usize = 3000;
