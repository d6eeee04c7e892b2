//! `spindle checkpoints save|list|inspect`: take a savepoint on a running application
//! (worker 0's admin endpoint), and read what storage holds — offline, without a worker.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use http::{Method, StatusCode};
use serde_json::json;

use super::http::call;
use super::offline::{self, Storage};
use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::store::{CheckpointStore, Savepoint};

/// A time as RFC 3339 UTC.
pub fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `spindle checkpoints save NAME`: asks worker 0 for a savepoint, prints its record.
pub async fn save(name: &str, admin: &str, token: Option<&str>) -> anyhow::Result<()> {
    spindle_spec::check_savepoint_name(name).map_err(anyhow::Error::msg)?;
    let url = format!("{}/savepoints/{name}", admin.trim_end_matches('/'));
    let (status, body) = call(Method::POST, &url, token).await?;
    let text = String::from_utf8_lossy(&body).trim().to_string();
    if status != StatusCode::OK {
        bail!("{url}: {status}: {text}");
    }
    let s: Savepoint = serde_json::from_slice(&body).with_context(|| format!("{url}: not a savepoint: {text}"))?;
    println!(
        "savepoint `{}`: checkpoint {} ({})",
        s.name,
        s.checkpoint,
        time(s.created_at_ms)
    );
    Ok(())
}

/// Every object the checkpoint needs, with their bytes.
fn size(m: &Manifest) -> u64 {
    m.referenced().iter().map(|p| p.size).sum()
}

async fn savepoint_names(store: &CheckpointStore) -> anyhow::Result<BTreeMap<u64, Vec<String>>> {
    let mut by: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for s in store.savepoints().await? {
        by.entry(s.checkpoint).or_default().push(s.name);
    }
    Ok(by)
}

/// `spindle checkpoints list`: one line per completed checkpoint, oldest first.
pub async fn list(at: &Storage) -> anyhow::Result<()> {
    let (store, _) = at.open()?;
    let names = savepoint_names(&store).await?;
    println!(
        "{:>8}  {:<24}  {:>10}  {:>7}  {:>10}  {:>12}  {:>5}  SAVEPOINTS",
        "ID", "TIME", "GENERATION", "WORKERS", "KEY GROUPS", "SIZE", "PARTS"
    );
    let completed = store.completed().await?;
    for n in &completed {
        match store.manifest(*n).await {
            Ok(m) => println!(
                "{:>8}  {:<24}  {:>10}  {:>7}  {:>10}  {:>12}  {:>5}  {}",
                m.checkpoint,
                time(m.created_at_ms),
                m.generation,
                m.workers,
                m.key_groups,
                size(&m),
                m.parts.len(),
                names.get(n).map(|v| v.join(",")).unwrap_or_default()
            ),
            Err(e) => println!("{n:>8}  damaged: {e}"),
        }
    }
    for (n, v) in &names {
        if !completed.contains(n) {
            println!(
                "{n:>8}  missing: savepoints {} name it, its manifest is gone",
                v.join(",")
            );
        }
    }
    eprintln!(
        "{}: {} checkpoints, {} savepoints",
        store.describe(),
        completed.len(),
        names.values().map(Vec::len).sum::<usize>()
    );
    Ok(())
}

/// `spindle checkpoints inspect ID|NAME`: everything one checkpoint holds, as JSON. Reads
/// every object (checking each against its checksum).
pub async fn inspect(which: &str, at: &Storage) -> anyhow::Result<()> {
    let (store, app) = at.open()?;
    let m = offline::manifest(&store, Some(which)).await?;
    let capture = offline::load(&store, &m, &app).await?;
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    for (a, _) in capture.state.iter() {
        *by_type.entry(a.typename.to_string()).or_default() += 1;
    }
    let names = savepoint_names(&store).await?.remove(&m.checkpoint).unwrap_or_default();
    let held: Vec<serde_json::Value> = capture
        .egress
        .iter()
        .map(|e| {
            json!({
                "egress": e.record.egress.as_str(),
                "key": &*e.key,
                "epoch": e.epoch,
                "source": format!("{}/{}", e.record.source.typename, e.record.source.id),
                "released": e.record.key.is_some(),
            })
        })
        .collect();
    let positions: BTreeMap<&str, i64> = capture.positions.iter().map(|(k, v)| (&**k, *v)).collect();
    let out = json!({
        "storage": store.describe(),
        "checkpoint": m.checkpoint,
        "savepoints": names,
        "time": time(m.created_at_ms),
        "createdAtMs": m.created_at_ms,
        "durationMs": m.duration_ms,
        "generation": m.generation,
        "workers": m.workers,
        "keyGroups": m.key_groups,
        "format": m.format,
        "bytesWritten": m.bytes,
        "size": size(&m),
        "parts": m.parts.iter().map(|p| json!({"worker": p.worker, "key": p.key, "size": p.size})).collect::<Vec<_>>(),
        "objects": m.referenced().len(),
        "addresses": capture.state.addresses(),
        "addressesByType": by_type,
        "messages": capture.messages.len() + capture.recorded.len(),
        "delayedMessages": capture.delayed.len(),
        "deadLetters": capture.dead_letters.len(),
        "ingressPositions": positions,
        "heldEgress": held,
        "copiedFrom": m.copied_from,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
    Ok(())
}
