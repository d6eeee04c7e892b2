//! JSON-lines file egress: appends one line per record. Each burst of lines is one append
//! (`O_APPEND`, one buffer), so the workers of a local multi-process run can share a file
//! without tearing lines.

use std::path::Path;

use tokio::fs::File;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Closing;
use crate::stop::CancellationToken;

use super::{EgressRecord, SinkContext, json_line};
use crate::metrics::EgressLabels;

pub struct FileSink {
    file: File,
    path: String,
    name: String,
    ctx: SinkContext,
}

impl FileSink {
    pub fn open(path: &Path, name: String, ctx: SinkContext) -> std::io::Result<FileSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileSink {
            file: File::from_std(file),
            path: path.display().to_string(),
            name,
            ctx,
        })
    }

    pub async fn run(mut self, rx: mpsc::UnboundedReceiver<EgressRecord>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(256);
        let labels = |outcome| EgressLabels {
            egress: self.name.clone(),
            outcome,
        };
        let ok = self.ctx.metrics.egress_records.get_or_create(&labels("ok")).clone();
        let failed = self.ctx.metrics.egress_records.get_or_create(&labels("failed")).clone();
        let mut rx = Closing::new(rx, stop);
        while rx.recv_many(&mut batch, 256).await > 0 {
            let mut text = String::new();
            for r in &batch {
                let line = json_line(r);
                if self.ctx.echo {
                    println!("egress {} <- {line}", self.name);
                }
                text.push_str(&line);
                text.push('\n');
            }
            let result = async {
                self.file.write_all(text.as_bytes()).await?;
                self.file.flush().await
            }
            .await;
            let n = batch.len() as u64;
            match result {
                Ok(()) => {
                    ok.inc_by(n);
                }
                Err(e) => {
                    failed.inc_by(n);
                    let messages = batch.iter().map(EgressRecord::dead_message).collect();
                    self.ctx.dead_letters.record(
                        crate::deadletter::kind::EGRESS_FAILED,
                        format!("writing to {}: {e}", self.path),
                        messages,
                    );
                }
            }
            self.ctx.unconfirmed.confirm(&batch);
            self.ctx.metrics.egress_pending.dec_by(n as i64);
            batch.clear();
        }
    }
}
