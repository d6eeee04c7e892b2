//! Expired state reclaimed without an invocation: `keys` addresses written with a TTL and
//! never touched again; once it passes, the sweep (which each partition runs over its key
//! groups once a minute; here all at once) drops them, and the following checkpoints fall
//! back to nothing while this process's memory falls back towards where it started.

use std::time::Duration;

use spindle_worker::checkpoint::scale::Model;
use spindle_worker::checkpoint::store::CheckpointStore;

use super::workload::Workload;
use super::{ScaleArgs, ms, now_ms, rss};

pub(crate) struct TtlRow {
    pub step: String,
    pub addresses: usize,
    /// Bytes the newest checkpoint's key-group chains reference (what a restore reads).
    pub chain_bytes: u64,
    pub written: u64,
    pub rss: u64,
}

pub(crate) struct Ttl {
    pub keys: u64,
    pub ttl: Duration,
    pub rss_start: u64,
    pub rows: Vec<TtlRow>,
}

pub(crate) async fn run(args: &ScaleArgs, keys: u64, store: CheckpointStore) -> anyhow::Result<Ttl> {
    println!(
        "ttl: {keys} keys expiring {:?} after their write, never written again",
        args.ttl
    );
    let rss_start = rss::now();
    let mut model = Model::new(store, "scale", args.key_groups, 1, Some(args.ttl));
    let work = Workload::new(keys, args.value_bytes);
    work.fill(&mut model, now_ms());
    let mut rows = Vec::new();
    let mut row = |step: String, model: &Model, written: u64| {
        let r = TtlRow {
            step,
            addresses: model.addresses(),
            chain_bytes: model.chain_bytes(),
            written,
            rss: rss::now(),
        };
        println!(
            "  {}: {} addresses, checkpoint chains {} B, wrote {} B, RSS {:.0} MiB",
            r.step,
            r.addresses,
            r.chain_bytes,
            r.written,
            rss::mib(r.rss)
        );
        rows.push(r);
    };
    let c = model.checkpoint().await.map_err(anyhow::Error::msg)?;
    row(format!("filled, checkpoint {}", c.checkpoint), &model, c.written);
    tokio::time::sleep(args.ttl + Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let swept = model.sweep(now_ms());
    row(
        format!(
            "TTL passed: sweep dropped {swept} values in {:.0} ms",
            ms(started.elapsed())
        ),
        &model,
        0,
    );
    for _ in 0..3 {
        let c = model.checkpoint().await.map_err(anyhow::Error::msg)?;
        model.retain(3).await.map_err(anyhow::Error::msg)?;
        row(format!("checkpoint {}", c.checkpoint), &model, c.written);
    }
    Ok(Ttl {
        keys,
        ttl: args.ttl,
        rss_start,
        rows,
    })
}
