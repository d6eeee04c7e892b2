//! A real Kubernetes control plane for the envtest suite: etcd, kube-apiserver and
//! kube-controller-manager, built from their Go modules by `e2e/envtest/build.sh` (cached under
//! target/envtest/) and started here on loopback, each on a free port, with a serving
//! certificate made in the test (rcgen), RBAC authorization and a static-token admin.
//!
//! Nothing runs pods: there is no scheduler and no kubelet, so pods stay `Pending` unless the
//! test writes their status itself (what a kubelet would write), which [`Kubectl::set_pod`]
//! does. The controller-manager runs the controllers the operator's objects depend on:
//! StatefulSet, Deployment/ReplicaSet and Job (they create the pods), the garbage collector
//! (owner references, foreground deletion), ServiceAccount (the `default` account pods need),
//! Namespace and Disruption.

pub mod kubectl;
mod pki;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use kubectl::{Kubectl, wait_for};

/// Writes a line to the test's stderr past the harness's capture, so that CI shows it.
pub fn say(line: impl AsRef<str>) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{}", line.as_ref());
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ is in the repository")
        .to_path_buf()
}

/// The control plane's binaries.
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    /// What build.sh printed: built (with times) or cached.
    pub report: Vec<String>,
}

/// The binaries, built by `e2e/envtest/build.sh` unless cached there (or in
/// `SPINDLE_ENVTEST_DIR`, which CI sets after running the script). `Err`: why they cannot be
/// had here, for the one `skip:` line.
pub fn binaries() -> Result<Binaries, String> {
    let at = |dir: &Path, report: Vec<String>| Binaries {
        etcd: dir.join("etcd"),
        kube_apiserver: dir.join("kube-apiserver"),
        kube_controller_manager: dir.join("kube-controller-manager"),
        report,
    };
    if let Some(dir) = std::env::var_os("SPINDLE_ENVTEST_DIR") {
        let bins = at(
            Path::new(&dir),
            vec![format!(
                "binaries from SPINDLE_ENVTEST_DIR={}",
                Path::new(&dir).display()
            )],
        );
        for b in [&bins.etcd, &bins.kube_apiserver, &bins.kube_controller_manager] {
            assert!(
                b.is_file(),
                "SPINDLE_ENVTEST_DIR names {} but it has no {}",
                Path::new(&dir).display(),
                b.display()
            );
        }
        return Ok(bins);
    }
    let script = repo_root().join("e2e/envtest/build.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut report: Vec<String> = stderr
        .lines()
        .filter(|l| l.starts_with("envtest-build:"))
        .map(String::from)
        .collect();
    if !out.status.success() {
        return Err(format!(
            "e2e/envtest/build.sh could not build etcd/kube-apiserver ({})",
            report.last().map_or("no output", |l| l.as_str())
        ));
    }
    report.push(format!(
        "envtest-build: build.sh took {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(at(Path::new(&dir), report))
}

/// A free port on 127.0.0.1. The servers here need their port named on the command line
/// (etcd and kube-apiserver cannot report one they picked), so the port is taken from a
/// listener the kernel gave port 0 and closed just before the server binds it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

/// Two distinct free ports, bound at once (two taken one by one can be the same port).
fn free_port_pair() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let b = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = |l: &TcpListener| l.local_addr().expect("a bound listener").port();
    (port(&a), port(&b))
}

/// A child process with its output in a log file; killed when dropped (also when a check
/// panics), so that no server outlives the test.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = File::create(&log).expect("a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics (with the log's tail) if the process has exited.
    pub fn check_alive(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(30)
            );
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL: no chance to clean up (a crash, or a node gone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for the exit.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET on loopback (the operator's health endpoints): status code and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {response:?}"))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Ok((code, body))
}

/// The running control plane.
pub struct ControlPlane {
    pub server: String,
    pub ca_file: PathBuf,
    /// system:masters, through a static token.
    pub admin_kubeconfig: PathBuf,
    pub etcd: Process,
    pub apiserver: Process,
    pub controller_manager: Process,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver (waiting for /readyz) and kube-controller-manager.
    pub fn start(bins: &Binaries, kubectl_bin: &Path, dir: &Path) -> ControlPlane {
        std::fs::create_dir_all(dir).expect("the test's directory");
        let pki = pki::Pki::generate(dir);

        let started = Instant::now();
        let (client_port, peer_port) = free_port_pair();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Process::spawn(
            "etcd",
            Command::new(&bins.etcd)
                .arg(format!("--data-dir={}", dir.join("etcd").display()))
                .arg("--name=envtest")
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=envtest={peer_url}"))
                // A test's data need not survive a power cut: no fsync keeps etcd off the disk.
                .arg("--unsafe-no-fsync")
                .arg("--log-level=warn"),
            dir,
        );
        wait_for("etcd to report healthy", Duration::from_secs(60), || {
            etcd.check_alive();
            match http_get(client_port, "/health") {
                Ok((200, body)) if body.contains("\"health\":\"true\"") => Ok(()),
                Ok((code, body)) => Err(format!("/health: {code} {body}")),
                Err(e) => Err(e),
            }
        });
        let etcd_ready = started.elapsed();

        let port = free_port();
        let server = format!("https://127.0.0.1:{port}");
        let mut apiserver = Process::spawn(
            "kube-apiserver",
            Command::new(&bins.kube_apiserver)
                .arg(format!("--etcd-servers={client_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg(format!("--cert-dir={}", dir.join("apiserver-certs").display()))
                .arg(format!("--tls-cert-file={}", pki.serving_cert.display()))
                .arg(format!("--tls-private-key-file={}", pki.serving_key.display()))
                .arg(format!("--token-auth-file={}", pki.tokens.display()))
                .arg("--authorization-mode=RBAC")
                .arg(format!("--service-account-issuer={server}"))
                .arg(format!(
                    "--service-account-key-file={}",
                    pki.service_account_pub.display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ))
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                // The `kubernetes` Service's endpoints would be this loopback address, which
                // Endpoints validation refuses; nothing here reaches the API through it.
                .arg("--endpoint-reconciler-type=none")
                .arg("--profiling=false")
                .arg("-v=1"),
            dir,
        );
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, &server, &pki.ca_cert, "admin", &pki.admin_token);
        let admin = Kubectl::new(kubectl_bin, &admin_kubeconfig, dir);
        wait_for("kube-apiserver /readyz", Duration::from_secs(120), || {
            apiserver.check_alive();
            admin
                .run(&["get", "--raw", "/readyz"])
                .and_then(|out| if out.trim() == "ok" { Ok(()) } else { Err(out) })
        });
        let apiserver_ready = started.elapsed();

        let controller_manager = Process::spawn(
            "kube-controller-manager",
            Command::new(&bins.kube_controller_manager)
                .arg(format!("--kubeconfig={}", admin_kubeconfig.display()))
                .arg("--controllers=statefulset-controller,deployment-controller,replicaset-controller,job-controller,garbage-collector-controller,serviceaccount-controller,namespace-controller,disruption-controller")
                .arg("--leader-elect=false")
                // No HTTPS endpoint of its own: nothing here scrapes it.
                .arg("--secure-port=0")
                .arg("--use-service-account-credentials=false")
                .arg(format!("--root-ca-file={}", pki.ca_cert.display()))
                .arg("--concurrent-gc-syncs=5")
                .arg("-v=1"),
            dir,
        );
        let mut plane = ControlPlane {
            server,
            ca_file: pki.ca_cert,
            admin_kubeconfig,
            etcd,
            apiserver,
            controller_manager,
        };
        // The ServiceAccount controller makes `default` in every namespace: pods need it.
        wait_for(
            "kube-controller-manager to create the default ServiceAccount",
            Duration::from_secs(60),
            || {
                plane.controller_manager.check_alive();
                admin
                    .run(&["get", "serviceaccount", "default", "-n", "default", "-o", "name"])
                    .map(|_| ())
            },
        );
        say(format!(
            "envtest: started etcd (client {client_url}, ready after {:.1}s), kube-apiserver ({}, RBAC, ready after {:.1}s), kube-controller-manager (ready after {:.1}s); logs in {}",
            etcd_ready.as_secs_f64(),
            plane.server,
            apiserver_ready.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            dir.display()
        ));
        plane.check_alive();
        plane
    }

    pub fn check_alive(&mut self) {
        self.etcd.check_alive();
        self.apiserver.check_alive();
        self.controller_manager.check_alive();
    }
}

/// A kubeconfig for `user` with a bearer token, trusting the test's CA.
pub fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: &str, token: &str) {
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {user}\n  context:\n    cluster: envtest\n    user: {user}\n    namespace: default\ncurrent-context: {user}\n",
        ca = ca.display()
    );
    std::fs::write(path, config).expect("a kubeconfig");
}
