//! A real S3-compatible server for tests: `moto_server` (PyPI `moto[server]`) from the project
//! venv, on 127.0.0.1 with a port the server picks itself (port 0; read back from its output).
//! Conditional writes (`If-None-Match: *`) are atomic in moto, which the manifest relies on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl Moto {
    /// Starts moto and creates `bucket`.
    pub fn start(bucket: &str) -> Moto {
        let venv = super::python_venv();
        let exe = venv.join("bin/moto_server");
        assert!(
            exe.exists(),
            "{} is missing: run e2e/python/setup-venv.sh {}",
            exe.display(),
            venv.display()
        );
        let mut child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server starts");
        // Werkzeug prints ` * Running on http://127.0.0.1:PORT` on stderr once it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            assert!(Instant::now() < deadline, "moto_server did not report its port");
            let line = lines.next().expect("moto_server exited").unwrap();
            if let Some(url) = line.split("Running on ").nth(1) {
                break url.trim().to_string();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let status = put(&endpoint, &format!("/{bucket}"));
        assert!(status.contains(" 200 "), "creating bucket {bucket}: {status}");
        eprintln!(
            "started: moto_server (S3) at {endpoint}, bucket {bucket}, pid {}",
            child.id()
        );
        Moto {
            child,
            endpoint,
            bucket: bucket.to_string(),
        }
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a worker needs to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Storage outage: the server stops answering (SIGSTOP) until `resume`.
    pub fn pause(&self) {
        signal(self.child.id(), rustix::process::Signal::STOP);
    }

    pub fn resume(&self) {
        signal(self.child.id(), rustix::process::Signal::CONT);
    }
}

/// A bodiless HTTP PUT; the status line.
fn put(endpoint: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).expect("moto answers");
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child pid");
    rustix::process::kill_process(pid, sig).expect("signalling moto_server");
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
