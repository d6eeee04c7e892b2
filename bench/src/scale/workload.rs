//! The state a scale run writes: `keys` addresses of `value_bytes` each, a share of them
//! rewritten every interval, each value naming its key and version so a restore can be
//! checked without keeping a copy of the state.

use std::time::{Duration, Instant};

use spindle_worker::checkpoint::scale::{CheckpointFigures, Model};

/// Steps through the keys: coprime with every power of ten, so `changes` consecutive steps
/// from any offset visit distinct keys.
const STRIDE: u64 = 1_000_003;

pub(crate) struct Workload {
    pub keys: u64,
    pub value_bytes: usize,
    /// Version of every key's value (0: as filled).
    versions: Vec<u32>,
    offset: u64,
}

/// One interval: what changed, what the checkpoint wrote.
pub(crate) struct Round {
    pub changed_keys: u64,
    /// Key and value bytes of the changed addresses (what a user's data changed by).
    pub changed_bytes: u64,
    /// Writing the new values into the state stores (the functions' work, not the checkpoint's).
    pub apply: Duration,
    pub checkpoint: CheckpointFigures,
}

pub(crate) fn id(i: u64) -> String {
    format!("k{i}")
}

impl Workload {
    pub fn new(keys: u64, value_bytes: usize) -> Workload {
        Workload {
            keys,
            value_bytes,
            versions: vec![0; keys as usize],
            offset: 0,
        }
    }

    pub fn value(&self, i: u64) -> Vec<u8> {
        value(i, self.versions[i as usize], self.value_bytes)
    }

    /// Every key with its first value; progress on stdout every ~10 s.
    pub fn fill(&self, model: &mut Model, now_ms: u64) {
        let started = Instant::now();
        let mut shown = started;
        for i in 0..self.keys {
            model.set(&id(i), &self.value(i), now_ms);
            if i % 65_536 == 0 && shown.elapsed() > Duration::from_secs(10) {
                shown = Instant::now();
                println!(
                    "    filled {i} of {} keys ({:.0} s)",
                    self.keys,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Rewrites `changes` distinct keys, then takes a checkpoint.
    pub async fn round(&mut self, model: &mut Model, changes: u64, now_ms: u64) -> anyhow::Result<Round> {
        let changes = changes.min(self.keys);
        let started = Instant::now();
        let mut changed_bytes = 0;
        for j in 0..changes {
            let i = (self.offset + j * STRIDE) % self.keys;
            self.versions[i as usize] += 1;
            let (k, v) = (id(i), self.value(i));
            changed_bytes += (k.len() + v.len()) as u64;
            model.set(&k, &v, now_ms);
        }
        self.offset = (self.offset + changes * STRIDE) % self.keys;
        let apply = started.elapsed();
        let checkpoint = model.checkpoint().await.map_err(anyhow::Error::msg)?;
        Ok(Round {
            changed_keys: changes,
            changed_bytes,
            apply,
            checkpoint,
        })
    }

    /// Key and value bytes of the whole state.
    pub fn logical_bytes(&self) -> u64 {
        (0..self.keys).map(|i| id(i).len() as u64).sum::<u64>() + self.keys * self.value_bytes as u64
    }

    /// `n` keys spread over the whole range, to check a restore by.
    pub fn sample(&self, n: u64) -> impl Iterator<Item = u64> + '_ {
        let step = (self.keys / n.max(1)).max(1);
        (0..self.keys).step_by(step as usize)
    }
}

fn value(i: u64, version: u32, len: usize) -> Vec<u8> {
    let mut v = format!("{i:010}:{version:06}:").into_bytes();
    v.resize(len.max(v.len()), b'x');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_visits_distinct_keys() {
        for keys in [10u64, 1000, 1_000_000] {
            let changes = keys / 100 + 1;
            let mut seen = std::collections::HashSet::new();
            for j in 0..changes {
                assert!(seen.insert((7 + j * STRIDE) % keys), "{keys} keys: step {j} repeats");
            }
        }
    }

    #[test]
    fn values_name_key_and_version_at_the_size_asked() {
        let v = value(42, 3, 100);
        assert_eq!(v.len(), 100);
        assert!(v.starts_with(b"0000000042:000003:"));
        assert_ne!(value(42, 3, 100), value(42, 4, 100));
    }
}
