//! Schedule ingresses fire each tick exactly once through `kill -9` of the worker that owns
//! them and through a clean stop and restart. Two 1 s schedules feed the official StateFun
//! Python SDK function `py/ticks`, which appends every tick it receives to its state (repeats
//! included — the reader does not deduplicate):
//!
//! - `catchUp: all`: the ticks in state are exactly every tick from the first on, one second
//!   apart, none twice — also those that fell in the downtimes;
//! - `catchUp: latest`: no tick twice, and a gap (ticks skipped) only at the interruptions.

mod support;

use std::time::{Duration, Instant};

use spindle_spec::{HumanDuration, LocalProcess};
use spindle_worker::local::FunctionProcess;
use support::procs::{Procs, wait_running};
use support::*;

const WORKERS: usize = 2;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The ticks `py/ticks/{id}` holds, from whichever worker owns it (`None` until it has some).
async fn ticks(admin: &[std::net::SocketAddr], id: &str) -> Option<Vec<i64>> {
    for a in admin {
        let (code, body) = get(*a, &format!("/state/py/ticks/{id}")).await;
        if code != 200 {
            continue;
        }
        let state: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(list) = state["ticks"]["value"].as_str() {
            return Some(serde_json::from_str(list).unwrap());
        }
    }
    None
}

/// Waits until `py/ticks/{id}` holds more than `n` ticks; returns them.
async fn more_than(admin: &[std::net::SocketAddr], id: &str, n: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = ticks(admin, id).await
            && t.len() > n
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "py/ticks/{id} never held more than {n} ticks: {:?}",
            ticks(admin, id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_every_tick_once_through_kill_9_and_a_clean_restart() {
    let dir = TempDir::new("schedule");
    let venv = python_venv();
    let local = LocalProcess {
        command: vec![
            venv.join("bin/python").display().to_string(),
            workspace_root().join("e2e/python/functions.py").display().to_string(),
        ],
        env: Default::default(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(60),
    };
    let function = FunctionProcess::start("py/*", &local, dir.path()).await.unwrap();
    let yaml = format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: ticks}}
spec:
  workers: {WORKERS}
  keyGroups: 16
  functions:
    - typename: py/*
      endpoint: http://127.0.0.1:{port}/statefun
  ingresses:
    - name: every-second
      schedule: {{every: 1s, target: py/ticks/all, catchUp: all}}
    - name: cron-seconds
      schedule: {{cron: "* * * * * *", target: py/ticks/latest, catchUp: latest}}
"#,
        port = function.port
    );
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), file, WORKERS, Vec::new());
    let started = now_ms();
    procs.spawn_all();
    let generation = wait_running(&procs.admin, 0, Duration::from_secs(120)).await;
    eprintln!(
        "started: StateFun Python SDK functions on 127.0.0.1:{}, {WORKERS} spindle worker processes (generation {generation}); logs in {}",
        function.port,
        dir.path().display()
    );
    let admin = procs.admin.clone();

    // The first schedule is fired by worker 0 (sources go to worker index % workers), the
    // second by worker 1: kill each one's owner once.
    let before = more_than(&admin, "all", 2).await.len();
    let kill_at = now_ms();
    procs.kill9(0);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    procs.spawn(0);
    let generation = wait_running(&admin, generation, Duration::from_secs(120)).await;
    eprintln!("kill -9 of worker 0 (owns `every-second`) after {before} ticks; back in generation {generation}");
    let before = more_than(&admin, "latest", more_than(&admin, "latest", 0).await.len() + 1)
        .await
        .len();
    procs.kill9(1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    procs.spawn(1);
    let generation = wait_running(&admin, generation, Duration::from_secs(120)).await;
    eprintln!("kill -9 of worker 1 (owns `cron-seconds`) after {before} ticks; back in generation {generation}");
    more_than(&admin, "all", more_than(&admin, "all", 0).await.len() + 2).await;

    // A clean stop (every worker at once, a final checkpoint), 2.5 s down, a start.
    let stop_at = now_ms();
    assert!(procs.term_all(Duration::from_secs(60)), "a clean stop");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    procs.spawn_all();
    let generation = wait_running(&admin, 0, Duration::from_secs(120)).await;
    eprintln!("stopped cleanly, 2.5 s down, started again (generation {generation})");
    let n = more_than(&admin, "all", 0).await.len();
    let all = more_than(&admin, "all", n + 2).await;
    let latest = more_than(&admin, "latest", 0).await;
    let read_at = now_ms();

    // catchUp: all — every tick from the first on, each once, also through both downtimes.
    let first = all[0];
    assert!(
        first > started - 1000 && first % 1000 == 0,
        "the first tick {first} is a whole second after the start {started}"
    );
    let expected: Vec<i64> = (0..all.len() as i64).map(|i| first + i * 1000).collect();
    assert_eq!(all, expected, "every tick exactly once, in order (first {first})");
    assert!(*all.last().unwrap() <= read_at);
    assert!(
        all.iter().any(|t| (kill_at..kill_at + 2500).contains(t))
            && all.iter().any(|t| (stop_at..stop_at + 2500).contains(t)),
        "ticks of the downtimes were caught up"
    );
    // catchUp: latest — none twice, in order; ticks missing only around the downtimes.
    let mut sorted = latest.clone();
    sorted.dedup();
    assert_eq!(sorted, latest, "no tick twice");
    assert!(latest.windows(2).all(|w| w[0] < w[1]), "in order: {latest:?}");
    let gaps: Vec<(i64, i64)> = latest
        .windows(2)
        .filter(|w| w[1] - w[0] > 1000)
        .map(|w| (w[0], w[1]))
        .collect();
    // Three interruptions: the rollback of worker 0's kill, worker 1's kill, the clean stop.
    assert!(
        gaps.len() <= 3,
        "missing ticks only at the three interruptions: {gaps:?}"
    );
    eprintln!(
        "exactly once: `all` holds {} ticks, one per second from {first}, none twice; `latest` holds {} ticks, none twice, {} gaps {gaps:?}",
        all.len(),
        latest.len(),
        gaps.len()
    );
    drop(procs);
    function.stop().await;
}
