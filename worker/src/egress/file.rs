//! JSON-lines file egress: appends one line per record, and every line exactly once.
//!
//! - Each burst of lines is one append (`O_APPEND`, one buffer) under an exclusive lock on the
//!   file, then made durable (`fdatasync`) before its records count as written: the workers of
//!   a local multi-process run share a file without interleaving lines.
//! - A writer killed mid-write can leave a torn last line. Whoever takes the lock next cuts it
//!   off (its records were not confirmed, so they are written again after the restore).
//! - The sink's *mark* — the file's length after its last confirmed burst — is set together with
//!   the confirmation (`Unconfirmed::confirm_at`), so a snapshot holds a position before which
//!   none of its unconfirmed records can be. After a restore the partition sends
//!   `SinkItem::Resume` with the lowest mark of the checkpoint; the sink reads the file from
//!   there, and records whose key it finds are confirmed without being written again.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use spindle_spec::TypeName;

use super::{Closing, EgressRecord, SinkContext, SinkItem, json_line};
use crate::metrics::EgressLabels;
use crate::stop::CancellationToken;

/// Records taken from the queue at once.
const BURST: usize = 256;
/// Bytes read at a time when scanning or looking for the last line's end.
const CHUNK: u64 = 1 << 16;

pub struct FileSink {
    file: Arc<File>,
    path: PathBuf,
    egress: TypeName,
    name: String,
    ctx: SinkContext,
    /// Keys found in the file past the mark of the last restore: those records are written.
    written: HashSet<String>,
}

impl FileSink {
    pub fn open(path: &Path, egress: TypeName, ctx: SinkContext) -> std::io::Result<FileSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        // Before any write of this sink: its first snapshot's mark.
        ctx.unconfirmed.confirm_at(&[], &egress, file.metadata()?.len());
        Ok(FileSink {
            file: Arc::new(file),
            path: path.to_path_buf(),
            name: egress.to_string(),
            egress,
            ctx,
            written: HashSet::new(),
        })
    }

    pub async fn run(mut self, rx: super::SinkQueue, stop: CancellationToken) {
        let mut rx = Closing::new(rx, stop.clone());
        let mut items = Vec::with_capacity(BURST);
        while rx.recv_items(&mut items, BURST).await > 0 {
            let mut records = Vec::with_capacity(items.len());
            for item in items.drain(..) {
                match item {
                    SinkItem::Record(r) => records.push(r),
                    SinkItem::Resume { mark } => {
                        self.write(std::mem::take(&mut records), &stop).await;
                        self.rescan(mark).await;
                    }
                }
            }
            self.write(records, &stop).await;
        }
    }

    /// Learns which keys the file holds from `mark` on.
    async fn rescan(&mut self, mark: u64) {
        let (file, path) = (self.file.clone(), self.path.clone());
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || locked(&file, &path, |f| keys_from(f, mark))).await {
            Ok(Ok(keys)) => {
                tracing::info!(egress = %self.name, from = mark, keys = keys.len(), ms = started.elapsed().as_millis() as u64, "file egress: read back what is written since the restored checkpoint");
                self.written = keys;
            }
            // Without the keys, re-sent records may be written twice: say so loudly.
            Ok(Err(e)) => {
                tracing::error!(egress = %self.name, path = %self.path.display(), error = %e, "file egress: cannot read the file back; records released again may appear twice")
            }
            Err(e) => tracing::error!(egress = %self.name, error = %e, "file egress: the read-back task failed"),
        }
    }

    /// Writes `records` (skipping those the file holds already), retrying a failing write with
    /// backoff: the records stay in every snapshot meanwhile. Once the worker is stopping and
    /// the write still fails, they become dead letters.
    async fn write(&mut self, records: Vec<EgressRecord>, stop: &CancellationToken) {
        if records.is_empty() {
            return;
        }
        let (skipped, fresh): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| r.key.as_deref().is_some_and(|k| self.written.contains(k)));
        let mut text = String::new();
        for r in &fresh {
            text.push_str(&json_line(r));
            text.push('\n');
        }
        let text = Arc::new(text);
        let mut wait = Duration::from_millis(10);
        let mut noted: Option<Instant> = None;
        let result = loop {
            let (file, path, text) = (self.file.clone(), self.path.clone(), text.clone());
            let attempt = tokio::task::spawn_blocking(move || locked(&file, &path, |f| append(f, text.as_bytes())))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("write task failed: {e}"))));
            let error = match attempt {
                Ok(len) => break Ok(len),
                Err(e) => e,
            };
            self.ctx
                .metrics
                .connector_errors
                .get_or_create(&crate::metrics::KindLabels { kind: "file_write" })
                .inc();
            if stop.is_cancelled() {
                break Err(error);
            }
            if noted.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                tracing::warn!(egress = %self.name, path = %self.path.display(), %error, records = fresh.len(), "file egress: writing failed; retrying");
                noted = Some(Instant::now());
            }
            // A stop during the wait ends it: the next failure is the last.
            crate::stop::pause(stop, wait).await;
            wait = (wait * 2).min(Duration::from_secs(1));
        };
        let all: Vec<EgressRecord> = skipped.iter().chain(&fresh).cloned().collect();
        let outcome = match result {
            Ok(len) => {
                self.ctx.unconfirmed.confirm_at(&all, &self.egress, len);
                if self.ctx.echo {
                    for line in text.lines() {
                        println!("egress {} <- {line}", self.name);
                    }
                }
                "ok"
            }
            Err(e) => {
                self.ctx.unconfirmed.confirm(&skipped);
                let reason = format!("writing to {}: {e}", self.path.display());
                self.ctx.give_up(&self.name, &fresh, reason);
                "failed"
            }
        };
        let labels = EgressLabels {
            egress: self.name.clone(),
            outcome,
        };
        self.ctx
            .metrics
            .egress_records
            .get_or_create(&labels)
            .inc_by(fresh.len() as u64);
        self.ctx.metrics.egress_duplicates.inc_by(skipped.len() as u64);
        self.ctx.metrics.egress_pending.dec_by(all.len() as i64);
    }
}

/// Runs `f` with the file locked exclusively, after cutting off a torn last line.
fn locked<T>(file: &File, path: &Path, f: impl FnOnce(&File) -> std::io::Result<T>) -> std::io::Result<T> {
    file.lock()?;
    let result = repair_tail(file, path).and_then(|()| f(file));
    let _ = file.unlock();
    result
}

/// A file that does not end with a newline ends with a line a writer did not finish (it died
/// mid-write): cut it off.
fn repair_tail(file: &File, path: &Path) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut end = len;
    let keep = loop {
        let start = end.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        if let Some(i) = buf.iter().rposition(|b| *b == b'\n') {
            break start + i as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    file.set_len(keep)?;
    tracing::warn!(path = %path.display(), cut = len - keep, "file egress: cut off a torn last line (a writer died mid-write; its records are written again)");
    Ok(())
}

/// Appends `text` and makes it durable; returns the file's length after it.
fn append(mut file: &File, text: &[u8]) -> std::io::Result<u64> {
    file.write_all(text)?;
    file.sync_data()?;
    Ok(file.metadata()?.len())
}

/// The keys of the complete lines from `from` on.
fn keys_from(file: &File, from: u64) -> std::io::Result<HashSet<String>> {
    #[derive(Deserialize)]
    struct Line {
        key: Option<String>,
    }
    let len = file.metadata()?.len();
    let mut keys = HashSet::new();
    let mut pos = from.min(len);
    let mut rest: Vec<u8> = Vec::new();
    while pos < len {
        let n = CHUNK.min(len - pos);
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, pos)?;
        pos += n;
        rest.extend_from_slice(&buf);
        let mut start = 0;
        while let Some(i) = rest[start..].iter().position(|b| *b == b'\n') {
            if let Ok(Line { key: Some(k) }) = serde_json::from_slice(&rest[start..start + i]) {
                keys.insert(k);
            }
            start += i + 1;
        }
        rest.drain(..start);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &[u8]) -> (PathBuf, File) {
        let dir = std::env::temp_dir().join(format!("spindle-file-egress-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.jsonl");
        std::fs::write(&path, content).unwrap();
        let f = std::fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
        (path, f)
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_complete_lines_stay() {
        let (path, f) = temp("torn", b"{\"key\":\"a\"}\n{\"key\":\"b\"}\n{\"key\":\"c\",\"va");
        locked(&f, &path, |_| Ok(())).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"key\":\"a\"}\n{\"key\":\"b\"}\n");
        let (path, f) = temp("all-torn", b"{\"key\":\"a\"");
        locked(&f, &path, |_| Ok(())).unwrap();
        assert!(std::fs::read(&path).unwrap().is_empty());
    }

    #[test]
    fn keys_are_read_from_the_mark_on() {
        let mut content = Vec::new();
        for i in 0..5000 {
            content.extend_from_slice(format!("{{\"egress\":\"e/x\",\"key\":\"k{i}\",\"value\":{i}}}\n").as_bytes());
        }
        content.extend_from_slice(b"{\"egress\":\"e/x\",\"value\":1}\n");
        let (path, f) = temp("keys", &content);
        let mark = content.len() as u64 / 2;
        let keys = locked(&f, &path, |f| keys_from(f, 0)).unwrap();
        assert_eq!(keys.len(), 5000, "every keyed line, across chunk boundaries");
        // From the middle of a line: that line is not a complete line after the mark.
        let later = keys_from(&f, mark).unwrap();
        assert!(later.len() < 2500 && later.len() > 2400, "{}", later.len());
        assert!(later.contains("k4999") && !later.contains("k0"));
    }
}
