//! `spindle run` with several workers: one child process per worker (`spindle worker`), all on
//! loopback, sharing the function processes; input goes to worker 0, which forwards. A worker
//! that dies is started again on the same ports, as a StatefulSet restarts a pod; it rejoins
//! and the application rolls back to its last checkpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

use super::process::free_port;
use super::{LocalOptions, input};
use crate::tls::WorkerIdentity;
use crate::tls::local::LocalCa;

struct Child_ {
    index: u32,
    admin: SocketAddr,
    child: Child,
    /// How to start it again.
    command: std::sync::Arc<dyn Fn() -> Command + Send + Sync>,
    restarts: u32,
}

impl Child_ {
    /// Restarts the process if it exited; true if it did.
    fn restart_if_dead(&mut self) -> anyhow::Result<bool> {
        let Some(status) = self.child.try_wait()? else {
            return Ok(false);
        };
        self.restarts += 1;
        eprintln!(
            "spindle: worker {} exited ({status}); starting it again (restart {})",
            self.index, self.restarts
        );
        self.child = (self.command)().spawn().context("restarting a worker process")?;
        Ok(true)
    }
}

pub async fn run(
    opts: &LocalOptions,
    workers: u32,
    function_ports: &[(usize, u16)],
    base_dir: &Path,
    ingress_port: u16,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the spindle binary")?;
    let mut peers = Vec::new();
    for _ in 0..workers {
        peers.push(format!("127.0.0.1:{}", free_port().await?));
    }
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| base_dir.join(".spindle"));
    // The workers authenticate each other with certificates of a CA made for this run.
    let spec = spindle_spec::load_file(&opts.app_file)?;
    let ca = LocalCa::new(&format!("spindle run {}", spec.metadata.name)).context("generating the run's CA")?;
    let tls_root = data_dir.join("tls");
    let mut children = Vec::new();
    let mut ingress0 = None;
    for i in 0..workers {
        let ingress = match (i, opts.ingress_addr) {
            (0, Some(a)) if a.port() != 0 => a,
            (0, None) => SocketAddr::from(([127, 0, 0, 1], ingress_port)),
            _ => SocketAddr::from(([127, 0, 0, 1], free_port().await?)),
        };
        if i == 0 {
            ingress0 = Some(ingress);
        }
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port().await?));
        let tls_dir = tls_root.join(format!("worker-{i}"));
        ca.write_worker_dir(&WorkerIdentity::new(None, &spec.metadata.name, i), &tls_dir)?;
        let (exe, app_file, all_peers, data_dir) =
            (exe.clone(), opts.app_file.clone(), peers.clone(), data_dir.clone());
        let function_ports = function_ports.to_vec();
        let stop_timeout = opts.stop_timeout;
        let command = std::sync::Arc::new(move || {
            let (guard, line) = super::orphans::guarded(&exe, std::process::id(), exe.as_os_str());
            let mut cmd = Command::new(guard);
            cmd.args(line)
                .arg("worker")
                .arg(&app_file)
                .args(["--index", &i.to_string(), "--peers", &all_peers.join(",")])
                .args([
                    "--ingress-addr",
                    &ingress.to_string(),
                    "--admin-addr",
                    &admin.to_string(),
                ])
                .args(["--peer-addr", &all_peers[i as usize]])
                .arg("--data-dir")
                .arg(data_dir.join(format!("worker-{i}")))
                .arg("--echo-egress")
                .args(["--stop-timeout", &format!("{}ms", stop_timeout.as_millis())])
                .arg("--tls-dir")
                .arg(&tls_dir)
                // A namespace from the environment would change the identity and storage root.
                .env_remove("POD_NAMESPACE")
                .stdin(Stdio::null())
                .kill_on_drop(true);
            for (id, port) in &function_ports {
                cmd.args(["--function-port", &format!("{id}={port}")]);
            }
            // Their own process group: a Ctrl-C at the terminal reaches `spindle run` only,
            // which asks every worker to stop once (a second signal to a worker stops it hard).
            #[cfg(unix)]
            cmd.process_group(0);
            cmd
        });
        let child = command().spawn().context("starting a worker process")?;
        eprintln!(
            "spindle: started worker {i} (pid {}): ingress http://{ingress}, admin http://{admin}, peer {}",
            child.id().unwrap_or(0),
            peers[i as usize]
        );
        children.push(Child_ {
            index: i,
            admin,
            child,
            command,
            restarts: 0,
        });
    }
    let result = drive(opts, &mut children, ingress0.expect("worker 0 exists"), base_dir).await;
    stop_all(&mut children, opts.stop_timeout).await;
    result
}

async fn drive(
    opts: &LocalOptions,
    children: &mut [Child_],
    ingress: SocketAddr,
    base_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for c in children.iter_mut() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while get(&client, c.admin, "/readyz").await.map(|(s, _)| s) != Some(200) {
            if let Some(status) = c.child.try_wait()? {
                bail!("worker {} exited ({status}) before it was ready", c.index);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("worker {} not ready after 60 s", c.index);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("spindle: {} workers ready; ingress http://{ingress}", children.len());
    let admins: Vec<String> = children.iter().map(|c| format!("http://{}", c.admin)).collect();
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| base_dir.join(".spindle"));
    if let Err(e) = crate::status::write_local_admins(&data_dir, &admins) {
        tracing::warn!(error = %e, "cannot write the admin URLs for `spindle status`");
    }
    if let Some(file) = &opts.input {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read input file {}", file.display()))?;
        let records = input::parse_input(&text).with_context(|| format!("in {}", file.display()))?;
        let n = input::send_input(ingress, &records).await?;
        eprintln!("spindle: sent {n} records from {}", file.display());
    }
    if !opts.exit_when_idle {
        eprintln!("spindle: press Ctrl-C to stop");
        let stop = crate::stop::os_signal();
        tokio::pin!(stop);
        let live = super::live_status(&admins);
        tokio::pin!(live);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    if opts.live_status {
                        eprintln!();
                    }
                    return Ok(());
                }
                _ = &mut live, if opts.live_status => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    for c in children.iter_mut() {
                        c.restart_if_dead()?;
                    }
                }
            }
        }
    }
    // Idle when every worker is, twice in a row: a message between two workers is always
    // counted on one side, but the workers are read one after the other.
    let deadline = tokio::time::Instant::now() + opts.idle_timeout;
    let mut streak = 0;
    while streak < 2 {
        if tokio::time::Instant::now() > deadline {
            bail!("the workers did not become idle within {:?}", opts.idle_timeout);
        }
        let mut all = true;
        for c in children.iter_mut() {
            if c.restart_if_dead()? {
                all = false;
                continue;
            }
            let idle = get(&client, c.admin, "/status")
                .await
                .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .and_then(|v| v["idle"].as_bool())
                .unwrap_or(false);
            all &= idle;
        }
        streak = if all { streak + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("spindle: all {} workers idle; stopping", children.len());
    Ok(())
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Option<(u16, Bytes)> {
    let uri = format!("http://{addr}{path}").parse().ok()?;
    let resp = client.get(uri).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// Asks every worker to stop at once (SIGTERM: they stop their input together and take
/// their final checkpoint together — a checkpoint needs every worker), waits for them within
/// the stop timeout, and kills what is left; a second Ctrl-C kills them at once.
async fn stop_all(children: &mut [Child_], timeout: Duration) {
    #[cfg(unix)]
    for c in children.iter_mut() {
        if let (Ok(None), Some(pid)) = (c.child.try_wait(), c.child.id())
            && let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let waited = async {
        for c in children.iter_mut() {
            let _ = c.child.wait().await;
        }
    };
    let finished = tokio::select! {
        r = tokio::time::timeout(timeout + Duration::from_secs(5), waited) => r.is_ok(),
        _ = crate::stop::os_signal() => {
            eprintln!("spindle: stopping the workers now (second signal)");
            false
        }
    };
    if !finished {
        for c in children.iter_mut() {
            let _ = c.child.kill().await;
        }
    }
}
