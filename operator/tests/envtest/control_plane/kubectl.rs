//! The real `kubectl` (and `helm`), always with an explicit kubeconfig and a HOME of the
//! test's own (their caches stay in the test's directory), and the one way to wait for a
//! condition: poll it until a deadline, then fail naming what is still missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `check` until it returns `Ok`, at most `timeout`; then panics with the last `Err`
/// (what is missing). Polling is the waiting, not a sleep that is hoped to be long enough.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(missing) if Instant::now() >= deadline => {
                panic!(
                    "timed out after {}s waiting for {what}; still missing: {missing}",
                    timeout.as_secs()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

#[derive(Clone)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    pub fn new(bin: &Path, kubeconfig: &Path, home: &Path) -> Kubectl {
        Kubectl {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    /// The same kubectl as another identity.
    pub fn with_kubeconfig(&self, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            ..self.clone()
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .env("HOME", &self.home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        cmd
    }

    /// `Ok(stdout)` or `Err(what it printed)`.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        output(self.command(args))
    }

    /// Like [`run`](Self::run), panicking on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args)
            .unwrap_or_else(|e| panic!("kubectl {}: {e}", args.join(" ")))
    }

    /// Runs with `input` on stdin (`-f -`).
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Result<String, String> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl starts");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("kubectl reads its input");
        let out = child.wait_with_output().expect("kubectl runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(text)
        }
    }

    /// `kubectl get … -o json`; `None` when it does not exist.
    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        match self.run(&all) {
            Ok(out) => Some(serde_json::from_str(&out).expect("kubectl prints JSON")),
            Err(e) if e.contains("NotFound") || e.contains("not found") => None,
            Err(e) => panic!("kubectl {}: {e}", all.join(" ")),
        }
    }

    /// Like [`get`](Self::get), an `Err` naming the object when it does not exist.
    pub fn must_get(&self, args: &[&str]) -> Result<Value, String> {
        self.get(args)
            .ok_or_else(|| format!("{} does not exist", args.join(" ")))
    }

    /// Writes a pod's status as a kubelet would (there is none here).
    pub fn set_pod(&self, namespace: &str, pod: &str, status: &Value) {
        let patch = serde_json::json!({"status": status}).to_string();
        self.ok(&[
            "patch",
            "pod",
            pod,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    }
}

pub fn output(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The real helm against the same API server.
pub struct Helm {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    pub fn new(bin: &Path, kubeconfig: &Path, home: &Path) -> Helm {
        Helm {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: home.to_path_buf(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .env("HOME", &self.home)
            .env("HELM_CACHE_HOME", self.home.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.home.join("helm/config"))
            .env("HELM_DATA_HOME", self.home.join("helm/data"))
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null());
        output(cmd)
    }
}
