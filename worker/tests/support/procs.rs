//! `spindle worker` processes of one application on loopback, restartable on the same ports
//! (as a StatefulSet restarts a pod), killed with SIGKILL by the chaos tests; and the admin
//! look-ups those tests make (generation, readiness, state).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Procs {
    pub dir: PathBuf,
    pub app: PathBuf,
    pub peers: Vec<String>,
    pub ingress: Vec<SocketAddr>,
    pub admin: Vec<SocketAddr>,
    pub env: Vec<(String, String)>,
    /// The peer addresses worker `i` dials, when not `peers` (e.g. proxies of the links).
    pub peer_lists: Option<Vec<Vec<String>>>,
    children: Vec<Option<Child>>,
}

impl Procs {
    /// `n` workers of the application file `app`, with logs and data under `dir`; none started.
    pub fn new(dir: &Path, app: PathBuf, n: usize, env: Vec<(String, String)>) -> Procs {
        // Every port of every worker distinct (taken at once).
        let mut ports = super::free_ports(3 * n).into_iter();
        let mut addr = || SocketAddr::from(([127, 0, 0, 1], ports.next().expect("3 ports per worker")));
        let peers = (0..n).map(|_| addr().to_string()).collect();
        let ingress = (0..n).map(|_| addr()).collect();
        let admin = (0..n).map(|_| addr()).collect();
        Procs {
            dir: dir.to_path_buf(),
            app,
            peers,
            ingress,
            admin,
            env,
            peer_lists: None,
            children: (0..n).map(|_| None).collect(),
        }
    }

    pub fn spawn(&mut self, i: usize) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("worker")
            .arg(&self.app)
            .args(["--index", &i.to_string(), "--peers", &self.peer_list(i)])
            .args([
                "--ingress-addr",
                &self.ingress[i].to_string(),
                "--admin-addr",
                &self.admin[i].to_string(),
            ])
            .args(["--peer-addr", &self.peers[i]])
            .arg("--data-dir")
            .arg(self.dir.join(format!("w{i}")))
            .envs(self.env.iter().cloned())
            .env(
                "RUST_LOG",
                std::env::var("SPINDLE_TEST_WORKER_LOG").unwrap_or_else(|_| "info,rskafka=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spindle worker starts");
        self.children[i] = Some(child);
    }

    fn peer_list(&self, i: usize) -> String {
        match &self.peer_lists {
            Some(lists) => lists[i].join(","),
            None => self.peers.join(","),
        }
    }

    /// The process id of worker `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    pub fn spawn_all(&mut self) {
        for i in 0..self.children.len() {
            self.spawn(i);
        }
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = c.wait();
        }
    }

    /// Sends `signal` to worker `i` (SIGSTOP freezes it: a hung process that holds its
    /// sockets open but answers nothing; SIGCONT wakes it).
    pub fn signal(&self, i: usize, signal: rustix::process::Signal) {
        if let Some(c) = &self.children[i] {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Asks every worker to stop (SIGTERM, all at once, as Kubernetes does when an application
    /// stops) and waits until they exited; true when every one exited cleanly within `timeout`.
    pub fn term_all(&mut self, timeout: Duration) -> bool {
        for c in self.children.iter().flatten() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + timeout;
        let mut clean = true;
        for slot in self.children.iter_mut() {
            let Some(mut c) = slot.take() else { continue };
            let status = loop {
                if let Some(s) = c.try_wait().unwrap() {
                    break Some(s);
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            clean &= status.is_some_and(|s| s.success());
        }
        clean
    }

    /// Waits until every worker, just spawned, runs its first generation. A worker that exits
    /// meanwhile is started again (at most 3 times each), its log's end printed: its ports
    /// were chosen free but not held until it bound them, so another socket may have taken
    /// one in between. When the deadline passes, the end of every worker's log is printed
    /// before the test fails (the test directory is removed afterwards).
    pub async fn wait_started(&mut self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut restarts = vec![0; self.children.len()];
        loop {
            for (i, restarted) in restarts.iter_mut().enumerate() {
                let exited = self.children[i].as_mut().and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited
                    && *restarted < 3
                {
                    *restarted += 1;
                    eprintln!("worker {i} exited at start ({status}); starting it again. Its log ends:");
                    self.print_log_tail(i, 20);
                    self.spawn(i);
                }
            }
            let step = Instant::now() + Duration::from_millis(500);
            let wait = wait_running(&self.admin, 0, Duration::from_secs(3600));
            if let Ok(g) = tokio::time::timeout_at(step.min(deadline).into(), wait).await {
                return g;
            }
            if Instant::now() >= deadline {
                for i in 0..self.admin.len() {
                    self.print_log_tail(i, 40);
                }
                panic!("workers not running a first generation within {timeout:?} (their logs above)");
            }
        }
    }

    fn print_log_tail(&self, i: usize, lines: usize) {
        let log = self.log(i);
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        eprintln!("--- worker {i}'s log, last {} lines:", tail.len());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }

    /// What worker `i` logged (all its runs).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("worker-{i}.log"))).unwrap_or_default()
    }

    /// `kill -9` worker `i`, start it again, and wait until every worker runs a generation
    /// after `generation`: the new generation and how long that took.
    pub async fn kill_and_restart(&mut self, i: usize, generation: u64) -> (u64, Duration) {
        let t = Instant::now();
        self.kill9(i);
        self.spawn(i);
        let g = wait_running(&self.admin, generation, Duration::from_secs(120)).await;
        (g, t.elapsed())
    }

    /// The dead letters every worker appended to its file (survives kills), as JSON.
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        (0..self.children.len())
            .flat_map(|i| {
                std::fs::read_to_string(self.dir.join(format!("w{i}/dead-letters.jsonl")))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("dead letters are JSON"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

pub async fn status(admin: SocketAddr) -> Option<serde_json::Value> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(
        Duration::from_secs(2),
        client.get(format!("http://{admin}/status").parse().unwrap()),
    )
    .await
    .ok()?
    .ok()?;
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Waits until every worker runs generation > `after` and is ready; returns the generation.
pub async fn wait_running(admin: &[SocketAddr], after: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let mut gens = Vec::new();
        for a in admin {
            let ready = get_opt(*a, "/readyz").await == Some(200);
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
            return *g;
        }
        assert!(
            Instant::now() < deadline,
            "workers not running a new generation after {timeout:?}: {gens:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn get_opt(addr: SocketAddr, path: &str) -> Option<u16> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client.get(format!("http://{addr}{path}").parse().unwrap()),
    )
    .await;
    Some(r.ok()?.ok()?.status().as_u16())
}

/// State value `name` (a JSON number) of the address at `path` (`/ns/type/id`), from whichever
/// worker owns it.
pub async fn state(admin: &[SocketAddr], path: &str, name: &str) -> Option<i64> {
    for a in admin {
        let (code, body) = super::get(*a, &format!("/state{path}")).await;
        if code == 200
            && let Some(v) = serde_json::from_str::<serde_json::Value>(&body).unwrap()[name]["value"].as_i64()
        {
            return Some(v);
        }
    }
    None
}
