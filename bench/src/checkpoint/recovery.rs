//! From `kill -9` of a worker process to resumed processing: three `spindle worker` processes,
//! checkpoints on the local filesystem, a steady paced load spread over the three ingresses. A worker — a non-coordinator, then the coordinator (worker 0), in
//! turn — is killed with SIGKILL and restarted at once on the same ports, as a StatefulSet
//! restarts a pod. Measured from the kill:
//! (a) until every worker reports the new generation on `/status` and `/readyz` answers 200;
//! (b) until the first egress record of a message *sent after the kill* arrives (processing
//!     resumed: accepted, applied, in a completed checkpoint of the new generation, released).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::traffic::{Keys, Load, LoadSpec, get, histogram, next_seq_floor, scrape};
use super::{CheckpointArgs, Env, app_yaml};
use crate::harness::{free_addr, spindle_command};

const WORKERS: usize = 3;

pub(crate) struct Kill {
    pub coordinator: bool,
    pub all_ready: Duration,
    pub first_completion: Duration,
    /// The coordinator's own `spindle_recovery_duration_seconds` for this rollback.
    pub reported: Option<Duration>,
}

/// The worker processes, restartable on the same ports.
struct Procs {
    spindle: Option<PathBuf>,
    dir: PathBuf,
    app: PathBuf,
    peers: Vec<String>,
    ingress: Vec<SocketAddr>,
    admin: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
}

impl Procs {
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.log")))?;
        let child = spindle_command(self.spindle.as_ref())?
            .arg("worker")
            .arg(&self.app)
            .args(["--index", &i.to_string(), "--peers", &self.peers.join(",")])
            .args([
                "--ingress-addr",
                &self.ingress[i].to_string(),
                "--admin-addr",
                &self.admin[i].to_string(),
            ])
            .args(["--peer-addr", &self.peers[i]])
            .arg("--data-dir")
            .arg(self.dir.join(format!("w{i}")))
            .env("SPINDLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a spindle worker")?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// SIGKILL (by pid, only while the child is unreaped, so the pid is still ours).
    fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            if let (Ok(None), Some(pid)) = (c.try_wait(), rustix::process::Pid::from_raw(c.id() as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

pub(crate) async fn run(args: &CheckpointArgs, env: &Env, kills: &mut Vec<Kill>) -> anyhow::Result<()> {
    let dir = env.dir.join("recovery");
    std::fs::create_dir_all(&dir)?;
    let store = dir.join("store");
    let yaml = app_yaml(
        "ck-recovery",
        WORKERS,
        env.function_port,
        env.webhook,
        args.interval,
        Some(&store),
        10_000,
    );
    if args.seed_keys > 0 {
        seed(&yaml, &store, args.seed_keys).await?;
    }
    let app = dir.join("app.yaml");
    std::fs::write(&app, yaml)?;
    let mut procs = Procs {
        spindle: args.spindle.clone(),
        dir: dir.clone(),
        app,
        peers: (0..WORKERS)
            .map(|_| free_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?,
        ingress: (0..WORKERS).map(|_| free_addr()).collect::<Result<_, _>>()?,
        admin: (0..WORKERS).map(|_| free_addr()).collect::<Result<_, _>>()?,
        children: (0..WORKERS).map(|_| None).collect(),
    };
    let result = kill_rounds(args, env, &mut procs, kills).await;
    drop(procs);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => println!("  recovery: worker logs kept in {}", dir.display()),
    }
    result
}

/// Writes `keys` addresses of state into the application's checkpoint store as its first
/// checkpoint, as its workers would have written it (the checkpoint pipeline itself).
async fn seed(yaml: &str, store: &std::path::Path, keys: u64) -> anyhow::Result<()> {
    use spindle_worker::checkpoint::scale::Model;
    use spindle_worker::checkpoint::store::CheckpointStore;
    let spec = spindle_spec::from_yaml_str(yaml, "recovery app")?;
    let name = spec.metadata.name.clone();
    let started = Instant::now();
    let checkpoints = CheckpointStore::open(
        store.to_str().context("a UTF-8 path")?,
        std::path::Path::new("/"),
        &name,
    )?;
    let mut model = Model::new(checkpoints, &name, spec.spec.key_groups, WORKERS as u32, None);
    for i in 0..keys {
        let mut v = format!("{i:010}:").into_bytes();
        v.resize(100, b'x');
        model.set(&format!("seed-{i}"), &v, 0);
    }
    let c = model.checkpoint().await.map_err(anyhow::Error::msg)?;
    println!(
        "  recovery: {keys} addresses of state written as checkpoint {} ({} bytes) in {:.1} s",
        c.checkpoint,
        c.written,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn kill_rounds(args: &CheckpointArgs, env: &Env, procs: &mut Procs, kills: &mut Vec<Kill>) -> anyhow::Result<()> {
    for i in 0..WORKERS {
        procs.spawn(i)?;
    }
    let admin = procs.admin.clone();
    let mut generation = wait_running(&admin, 0, Duration::from_secs(60)).await?;
    println!(
        "  recovery: {WORKERS} `spindle worker` processes running (generation {generation}), logs in {}",
        procs.dir.display()
    );
    env.sink.take();
    let load = Load::start(LoadSpec {
        clients: 8,
        ingresses: procs.ingress.clone(),
        keys: Keys::Cycle(args.keys as u64),
        rate: Some(args.recovery_rate),
    });
    let mut reported_before = worker0_recovery(admin[0]).await;
    for k in 0..args.kills * 2 {
        let coordinator = k % 2 == 1;
        let victim = if coordinator { 0 } else { 1 + (k / 2) % (WORKERS - 1) };
        wait_steady(&admin, env, Duration::from_secs(30)).await?;
        env.sink.take();
        let floor = next_seq_floor();
        let killed = Instant::now();
        procs.kill9(victim);
        procs.spawn(victim)?;
        generation = wait_running(&admin, generation, Duration::from_secs(60)).await?;
        let all_ready = killed.elapsed();
        let deadline = Instant::now() + Duration::from_secs(60);
        let first = loop {
            if let Some(t) = env.sink.first_from(floor) {
                break t;
            }
            if Instant::now() > deadline {
                bail!("no message sent after the kill of worker {victim} reached the egress within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let first_completion = first.saturating_duration_since(killed);
        // The coordinator's own figure: a restarted coordinator starts its histogram afresh.
        if coordinator {
            reported_before = (0.0, 0);
        }
        let now = worker0_recovery(admin[0]).await;
        let reported = (now.1 > reported_before.1)
            .then(|| Duration::from_secs_f64((now.0 - reported_before.0) / (now.1 - reported_before.1) as f64));
        reported_before = now;
        println!(
            "  recovery: kill -9 worker {victim}{}: generation {generation} ready on all after {:.0} ms, first new completion after {:.0} ms{}",
            if coordinator { " (coordinator)" } else { "" },
            all_ready.as_secs_f64() * 1e3,
            first_completion.as_secs_f64() * 1e3,
            reported.map_or(String::new(), |d| format!(
                " (coordinator's recovery metric {:.0} ms)",
                d.as_secs_f64() * 1e3
            ))
        );
        kills.push(Kill {
            coordinator,
            all_ready,
            first_completion,
            reported,
        });
    }
    let errors = load.errors.load(std::sync::atomic::Ordering::Relaxed);
    let sent = load.stop().await?;
    println!(
        "  recovery: {} messages accepted during the kills, {errors} requests refused or failed (retried at another worker)",
        sent.len()
    );
    Ok(())
}

/// The worker-0 process's `spindle_recovery_duration_seconds` (sum, count).
async fn worker0_recovery(admin: SocketAddr) -> (f64, u64) {
    match get(admin, "/metrics").await {
        Some((200, body)) => histogram(
            &scrape(&String::from_utf8_lossy(&body)),
            "spindle_recovery_duration_seconds",
        ),
        _ => (0.0, 0),
    }
}

async fn status(admin: SocketAddr) -> Option<serde_json::Value> {
    match get(admin, "/status").await {
        Some((200, body)) => serde_json::from_slice(&body).ok(),
        _ => None,
    }
}

/// Waits until every worker is ready and runs the same generation above `after`.
async fn wait_running(admin: &[SocketAddr], after: u64, timeout: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut gens = Vec::new();
        for a in admin {
            let ready = matches!(get(*a, "/readyz").await, Some((200, _)));
            gens.push(
                status(*a)
                    .await
                    .filter(|_| ready)
                    .and_then(|s| s["generation"].as_u64()),
            );
        }
        if let Some(Some(g)) = gens.first()
            && *g > after
            && gens.iter().all(|x| *x == Some(*g))
        {
            return Ok(*g);
        }
        if Instant::now() > deadline {
            bail!(
                "the workers did not all run a generation above {after} within {timeout:?} (ready generations: {gens:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Steady state before a kill: two checkpoints completed in the current generation and the
/// egress flowing.
async fn wait_steady(admin: &[SocketAddr], env: &Env, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(admin[0]).await;
        let (restored, completed) = s.as_ref().map_or((0, 0), |s| {
            (
                s["restoredCheckpoint"].as_u64().unwrap_or(0),
                s["completedCheckpoint"].as_u64().unwrap_or(0),
            )
        });
        if completed >= restored + 2 && !env.sink.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no steady state within {timeout:?}: worker 0 status {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
