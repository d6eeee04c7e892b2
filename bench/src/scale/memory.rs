//! Memory per idle address: a child process (this binary, `scale-memory`) fills the state
//! stores and reports its RSS before, after filling, and after the first checkpoint — in a
//! fresh process, so no memory freed by an earlier measurement is reused and hidden.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use spindle_worker::checkpoint::scale::Model;
use spindle_worker::checkpoint::store::CheckpointStore;

use super::workload::Workload;
use super::{ScaleArgs, rss};

const LINE: &str = "scale-memory:";

pub(crate) struct Memory {
    pub keys: u64,
    /// Key and value bytes per address.
    pub state_per_address: f64,
    pub before: u64,
    pub filled: u64,
    pub checkpointed: u64,
}

impl Memory {
    pub fn per_address_filled(&self) -> f64 {
        self.filled.saturating_sub(self.before) as f64 / self.keys as f64
    }

    pub fn per_address_checkpointed(&self) -> f64 {
        self.checkpointed.saturating_sub(self.before) as f64 / self.keys as f64
    }
}

/// Runs the child for `keys` and reads its figures.
pub(crate) fn measure(args: &ScaleArgs, keys: u64) -> anyhow::Result<Memory> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "scale-memory",
            "--keys",
            &keys.to_string(),
            "--value-bytes",
            &args.value_bytes.to_string(),
            "--key-groups",
            &args.key_groups.to_string(),
        ])
        .output()
        .context("running the scale-memory child")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(LINE)) else {
        bail!(
            "the scale-memory child ({}) printed no figures; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad figures from the child: {line}"))?;
    let [before, filled, checkpointed] = v[..] else {
        bail!("bad figures from the child: {line}");
    };
    let work = Workload::new(keys, args.value_bytes);
    Ok(Memory {
        keys,
        state_per_address: work.logical_bytes() as f64 / keys as f64,
        before,
        filled,
        checkpointed,
    })
}

/// The child's side: one worker's state stores, `keys` addresses.
pub async fn child(keys: u64, value_bytes: usize, key_groups: u32) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("spindle-bench-scale-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = CheckpointStore::open(dir.to_str().context("a UTF-8 path")?, Path::new("/"), "scale")?;
    let work = Workload::new(keys, value_bytes);
    let before = rss::now();
    let mut model = Model::new(store, "scale", key_groups, 1, None);
    work.fill(&mut model, 0);
    let filled = rss::now();
    model.checkpoint().await.map_err(anyhow::Error::msg)?;
    let checkpointed = rss::now();
    println!("{LINE} {before} {filled} {checkpointed}");
    drop(model);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
