//! The checkpoint pipeline at scale, without functions: for `spindle-bench scale` and tests.
//! A [`Model`] holds one state store per worker and drives the real pieces — the partition's
//! capture of what changed (`StateStore::capture`), the part codec, the uploader's write and
//! read-back, the key-group chains and their compaction, the manifest's assembly, storage,
//! retention and the owned-only restore — so that millions of keys can change per second on
//! a small machine. What it leaves out: the partition loop, invocations, peers and the
//! coordinator's timers (measured by the other benchmarks). Not an API.

use std::time::{Duration, Instant};

use bytes::Bytes;
use spindle_spec::TypeName;

use super::chains::Chains;
use super::codec::PartMeta;
use super::manifest::{self, Manifest, PartInfo};
use super::restore;
use super::store::CheckpointStore;
use super::uploader;
use crate::app::AppIdentity;
use crate::clock::now_ms;
use crate::keygroup::{Layout, key_group};
use crate::message::{Address, Value};
use crate::partition::Capture;
use crate::state::{Expiration, Mutation, StateSpec, StateStore};

/// The function type of every address the model writes.
pub const TYPENAME: &str = "bench/state";

struct Worker {
    layout: Layout,
    state: StateStore,
    chains: Chains,
    /// Key groups the next capture takes whole.
    whole: Vec<u32>,
}

/// Workers of one application writing checkpoints of their state.
pub struct Model {
    store: CheckpointStore,
    app: AppIdentity,
    key_groups: u32,
    generation: u64,
    next: u64,
    typename: TypeName,
    specs: Vec<StateSpec>,
    workers: Vec<Worker>,
}

/// One checkpoint, as the model took it.
#[derive(Debug, Clone)]
pub struct CheckpointFigures {
    pub checkpoint: u64,
    /// The longest capture of any worker (the partition's pause).
    pub capture: Duration,
    /// From the first capture to the manifest written.
    pub duration: Duration,
    /// Part payload bytes written; of which key-group deltas and bases.
    pub written: u64,
    pub delta: u64,
    pub base: u64,
    /// Addresses in delta sections (changed or deleted).
    pub changed_addresses: usize,
    pub manifest_bytes: u64,
}

/// One worker's restore.
#[derive(Debug, Clone)]
pub struct RestoreFigures {
    pub worker: u32,
    pub took: Duration,
    pub bytes_read: u64,
    pub addresses: usize,
}

impl Model {
    /// `workers` workers with empty state; values of `function/state` (name `v`), expiring
    /// `ttl` after each write when set.
    pub fn new(
        store: CheckpointStore,
        application: &str,
        key_groups: u32,
        workers: u32,
        ttl: Option<Duration>,
    ) -> Model {
        let layouts = (0..workers).map(|worker| Layout {
            worker,
            workers,
            key_groups,
        });
        Model {
            store,
            app: AppIdentity::named(application),
            key_groups,
            generation: 1,
            next: 1,
            typename: TypeName::parse(TYPENAME).expect("a valid typename"),
            specs: vec![StateSpec {
                name: "v".into(),
                typename: "bench/value".into(),
                expiration: ttl.map_or(Expiration::Never, Expiration::AfterWrite),
            }],
            workers: layouts
                .map(|layout| {
                    let mut state = StateStore::new(key_groups);
                    state.track_changes();
                    Worker {
                        layout,
                        state,
                        chains: Chains::default(),
                        whole: Vec::new(),
                    }
                })
                .collect(),
        }
    }

    /// `workers` workers restoring the newest checkpoint in `store` (one after another, each
    /// timed on its own), and what each read.
    pub async fn restore(
        store: CheckpointStore,
        application: &str,
        key_groups: u32,
        workers: u32,
        ttl: Option<Duration>,
    ) -> Result<(Model, Vec<RestoreFigures>), String> {
        let mut model = Model::new(store, application, key_groups, workers, ttl);
        let mut figures = Vec::new();
        for w in 0..workers {
            let r = Restored::load(&model.store, application, key_groups, w, workers).await?;
            model.next = r.checkpoint + 1;
            model.generation = r.generation + 1;
            figures.push(r.figures);
            model.workers[w as usize] = r.worker;
        }
        Ok((model, figures))
    }

    fn owner(&mut self, id: &str) -> (&mut Worker, Address) {
        let addr = Address::new(self.typename.clone(), id);
        let kg = key_group(&addr, self.key_groups);
        let w = crate::keygroup::worker_of(kg, self.workers.len() as u32, self.key_groups);
        (&mut self.workers[w as usize], addr)
    }

    /// Writes `value` to address `id`, as a function's reply would.
    pub fn set(&mut self, id: &str, value: &[u8], now_ms: u64) {
        let specs = self.specs.clone();
        let (w, addr) = self.owner(id);
        let m = Mutation {
            name: "v".into(),
            value: Some(Value::new("bench/value", Bytes::copy_from_slice(value))),
        };
        w.state.apply(&addr, vec![m], &specs, now_ms);
    }

    pub fn delete(&mut self, id: &str) {
        let specs = self.specs.clone();
        let (w, addr) = self.owner(id);
        let m = Mutation {
            name: "v".into(),
            value: None,
        };
        w.state.apply(&addr, vec![m], &specs, 0);
    }

    pub fn get(&self, id: &str) -> Option<Vec<u8>> {
        let addr = Address::new(self.typename.clone(), id);
        self.workers
            .iter()
            .find_map(|w| w.state.get(&addr, "v"))
            .map(|v| v.bytes.to_vec())
    }

    pub fn addresses(&self) -> usize {
        self.workers.iter().map(|w| w.state.addresses()).sum()
    }

    /// Every address's value, for checking a restore exactly.
    pub fn values(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self
            .workers
            .iter()
            .flat_map(|w| w.state.iter())
            .map(|(a, c)| (a.id.to_string(), c.iter().flat_map(|c| c.bytes.to_vec()).collect()))
            .collect();
        out.sort();
        out
    }

    /// Drops expired values everywhere (the partitions' sweep, all at once). Returns how many.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let mut n = 0;
        for w in &mut self.workers {
            for kg in w.state.expiring_groups() {
                n += w.state.sweep(kg, now_ms);
            }
        }
        n
    }

    /// Every worker captures what changed and writes its part (concurrently), then the
    /// manifest is written, as the coordinator does.
    pub async fn checkpoint(&mut self) -> Result<CheckpointFigures, String> {
        let n = self.next;
        self.next += 1;
        let started = Instant::now();
        let mut capture = Duration::ZERO;
        let mut captures = Vec::new();
        let mut changed_addresses = 0;
        for w in &mut self.workers {
            let at = Instant::now();
            let now = now_ms();
            let whole = std::mem::take(&mut w.whole);
            for &kg in &whole {
                w.state.sweep(kg, now);
            }
            let changes = w.state.capture(&whole);
            capture = capture.max(at.elapsed());
            changed_addresses += changes
                .groups
                .iter()
                .filter(|g| !g.whole)
                .map(|g| g.entries.len())
                .sum::<usize>();
            captures.push(Capture {
                checkpoint: n,
                changes,
                ..Capture::new(self.key_groups)
            });
        }
        let workers = self.workers.len() as u32;
        let (store, app, generation, key_groups) = (&self.store, &self.app, self.generation, self.key_groups);
        let writes = self.workers.iter_mut().zip(captures).map(|(w, c)| async move {
            let meta = PartMeta {
                application: app.name.clone(),
                namespace: None,
                uid: None,
                generation,
                worker: w.layout.worker,
                workers,
                key_groups,
            };
            let written = uploader::write(store, &meta, &mut w.chains, c)
                .await
                .map_err(|f| f.reason)?;
            w.whole = written.whole.clone();
            Ok::<_, String>(written)
        });
        let written = futures::future::try_join_all(writes).await?;
        let parts: Vec<PartInfo> = written.iter().map(|w| w.info.clone()).collect();
        let (format, objects, groups) = manifest::assemble(key_groups, &parts)?;
        let m = Manifest {
            application: app.name.clone(),
            checkpoint: n,
            generation,
            workers,
            key_groups,
            bytes: parts.iter().map(|p| p.size).sum(),
            parts: parts.into_iter().map(|p| PartInfo { chains: None, ..p }).collect(),
            created_at_ms: now_ms(),
            duration_ms: started.elapsed().as_millis() as u64,
            format,
            objects,
            groups,
            ..Manifest::default()
        };
        let manifest_bytes = serde_json::to_vec(&m).map_or(0, |j| j.len() as u64);
        store.put_manifest(&m).await.map_err(|e| e.to_string())?;
        Ok(CheckpointFigures {
            checkpoint: n,
            capture,
            duration: started.elapsed(),
            written: written.iter().map(|w| w.bytes).sum(),
            delta: written.iter().map(|w| w.delta_bytes).sum(),
            base: written.iter().map(|w| w.base_bytes).sum(),
            changed_addresses,
            manifest_bytes,
        })
    }

    /// Retention as the coordinator runs it.
    pub async fn retain(&self, keep: usize) -> Result<usize, String> {
        self.store.retain(keep).await.map_err(|e| e.to_string())
    }

    /// Bytes of the state sections a restore of every key group would read now.
    pub fn chain_bytes(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| (0..self.key_groups).map(|kg| w.chains.chain_bytes(kg)).sum::<u64>())
            .sum()
    }
}

/// One worker's restore of the newest checkpoint, on its own: what a worker process holds
/// after its restore (for measuring one restore's memory without the others').
pub struct Restored {
    pub figures: RestoreFigures,
    checkpoint: u64,
    generation: u64,
    worker: Worker,
}

impl Restored {
    /// Worker `worker` of `workers` restores the newest checkpoint in `store`.
    pub async fn load(
        store: &CheckpointStore,
        application: &str,
        key_groups: u32,
        worker: u32,
        workers: u32,
    ) -> Result<Restored, String> {
        let latest = store
            .latest_valid(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no checkpoint to restore")?;
        let layout = Layout {
            worker,
            workers,
            key_groups,
        };
        let started = Instant::now();
        let r = restore::load(
            store,
            latest.manifest.checkpoint,
            &AppIdentity::named(application),
            layout,
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut state = r.capture.state;
        state.track_changes();
        let whole = state
            .groups_with_state()
            .filter(|&kg| r.chains.chain(kg).is_empty())
            .collect();
        Ok(Restored {
            figures: RestoreFigures {
                worker,
                took: started.elapsed(),
                bytes_read: r.bytes_read,
                addresses: state.addresses(),
            },
            checkpoint: latest.manifest.checkpoint,
            generation: latest.manifest.generation,
            worker: Worker {
                layout,
                state,
                chains: r.chains,
                whole,
            },
        })
    }

    /// The value of `id` if this worker owns it.
    pub fn get(&self, id: &str) -> Option<Vec<u8>> {
        let addr = Address::new(TypeName::parse(TYPENAME).expect("a valid typename"), id);
        self.worker.state.get(&addr, "v").map(|v| v.bytes.to_vec())
    }
}

#[cfg(test)]
mod tests;
