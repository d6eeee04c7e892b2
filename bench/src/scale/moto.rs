//! moto (PyPI `moto[server]`, from the project venv) as the S3 server of the scale benchmark,
//! on 127.0.0.1 with a port it picks itself (read back from its log).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

pub(crate) struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts `moto_server` and creates `bucket`.
    pub fn start(venv: &Path, bucket: &str) -> anyhow::Result<Moto> {
        let exe = venv.join("bin/moto_server");
        ensure!(
            exe.is_file(),
            "{} is missing: run `bash e2e/python/setup-venv.sh {}`",
            exe.display(),
            venv.display()
        );
        let mut child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        // Werkzeug prints ` * Running on http://127.0.0.1:PORT` once it listens.
        let mut lines = BufReader::new(child.stderr.take().context("moto's stderr")?).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let endpoint = loop {
            if Instant::now() > deadline {
                bail!("moto_server did not report its port within 60 s");
            }
            let line = lines.next().context("moto_server exited at start")??;
            if let Some(url) = line.split("Running on ").nth(1) {
                break url.trim().to_string();
            }
        };
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let moto = Moto { child, endpoint };
        let status = moto.put(&format!("/{bucket}"))?;
        ensure!(status.contains(" 200 "), "creating bucket {bucket}: {status}");
        Ok(moto)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the checkpoint store needs to reach it.
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

    /// A bodiless PUT; the status line.
    fn put(&self, path: &str) -> anyhow::Result<String> {
        let host = self.endpoint.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host)?;
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out.lines().next().unwrap_or("").to_string())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
