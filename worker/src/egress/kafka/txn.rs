//! Exactly-once Kafka egress: every burst of released records is one Kafka transaction of
//! this worker's transactional id `spindle/[{namespace}/]{application}/{egress}/{worker}`.
//!
//! - The records reach the sink only after the checkpoint of their epoch completed (like every
//!   sink); the sink writes them at once — AddPartitionsToTxn, Produce with the producer id,
//!   epoch and per-partition sequence numbers, EndTxn(commit) — and confirms them then.
//! - A worker process starts its producer with InitProducerId, which bumps the id's epoch:
//!   every earlier process of this worker (one killed, or a zombie) is fenced, and the
//!   transaction it left open is aborted, so a `read_committed` reader never sees its records.
//! - What may be committed without being confirmed in a checkpoint — a process killed after
//!   EndTxn(commit), before the next checkpoint completed — comes back after the restore as
//!   records released again (`SinkItem::Resume` first). Then, and after a commit whose answer
//!   was lost, the sink *recovers* before it writes: it fences its own id (and the ids of
//!   removed workers whose records it took over), waits until their transactions are decided,
//!   and reads the topic back with `read_committed` from the snapshot's mark (a time, kept in
//!   checkpoints like the file sink's offset): records found there are confirmed, not sent
//!   again. Fencing before reading is what makes it exact: no commit of a fenced producer can
//!   land after the read.
//! - A failed produce aborts the transaction and starts a new producer epoch; the records stay
//!   pending and go in the next transaction.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::Compression;
use rskafka::client::transaction::{ProducerIdentity, TransactionClient, TransactionalBatch};
use rskafka::record::Record;
use tokio::task::JoinSet;

use super::{KafkaSink, Out, REQUEST_TIMEOUT, now, read_back};

pub(super) struct Transactions {
    /// `spindle/[{namespace}/]{application}/{egress}`; the worker index follows.
    prefix: String,
    worker: u32,
    workers: u32,
    timeout_ms: i32,
    /// This process's producer: fenced everything before it.
    producer: Option<(Arc<TransactionClient>, ProducerIdentity)>,
    /// The next sequence number per partition, for the current producer epoch.
    sequences: HashMap<(String, i32), i32>,
    /// Before the next write, fence and read back from this mark (a time in ms): records
    /// pending now may already be committed.
    recover_from: Option<u64>,
    /// The last recovery's findings, used until the next one.
    recovery: Option<Recovery>,
}

impl Transactions {
    pub fn new(prefix: String, worker: u32, workers: u32, timeout: Duration) -> Transactions {
        Transactions {
            prefix,
            worker,
            workers,
            timeout_ms: timeout.as_millis().min(i32::MAX as u128) as i32,
            producer: None,
            sequences: HashMap::new(),
            recover_from: None,
            recovery: None,
        }
    }

    pub fn transactional_id(&self, worker: u32) -> String {
        format!("{}/{worker}", self.prefix)
    }

    pub fn recover_from(&mut self, mark: u64) {
        self.recover_from = Some(self.recover_from.map_or(mark, |m| m.min(mark)));
    }

    /// Forgets the producer: the next write starts a new epoch (InitProducerId), which also
    /// ends whatever the old one left open.
    fn drop_producer(&mut self) {
        self.producer = None;
        self.sequences.clear();
    }

    async fn producer(&mut self, client: &Client) -> Result<(Arc<TransactionClient>, ProducerIdentity), String> {
        if let Some(p) = &self.producer {
            return Ok(p.clone());
        }
        let id = self.transactional_id(self.worker);
        let tc = Arc::new(client.transaction_client(id.clone()));
        let identity = init(&tc, self.timeout_ms).await?;
        tracing::info!(transactional_id = %id, producer_id = identity.producer_id, epoch = identity.producer_epoch, "Kafka egress: transactional producer ready (earlier epochs fenced)");
        self.sequences.clear();
        self.producer = Some((tc.clone(), identity));
        Ok((tc, identity))
    }
}

async fn init(tc: &TransactionClient, timeout_ms: i32) -> Result<ProducerIdentity, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, tc.init_producer_id(timeout_ms))
        .await
        .map_err(|_| format!("InitProducerId for {}: no answer", tc.transactional_id()))?
        .map_err(|e| format!("InitProducerId for {}: {e}", tc.transactional_id()))
}

/// The worker index in an idempotency key `{application}/{generation}/{epoch}/{worker}/{seq}`.
fn key_worker(key: &str) -> Option<u32> {
    key.rsplit('/').nth(1)?.parse().ok()
}

/// True for errors after which this producer epoch is dead: another producer took the
/// transactional id (a newer process of this worker), or the broker aborted the transaction
/// (its timeout passed).
fn fenced(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::ServerError {
            protocol_error: ProtocolError::ProducerFenced
                | ProtocolError::InvalidProducerEpoch
                | ProtocolError::InvalidTxnState
                | ProtocolError::TransactionCoordinatorFenced,
            ..
        }
    )
}

impl KafkaSink {
    /// Exactly-once: recovers if needed, then writes every record whose partition is known in
    /// one transaction. What is left in `outs` is not written (or not known to be).
    pub(super) async fn attempt_transactional(&mut self, outs: &mut Vec<Out>) -> Result<(), String> {
        let client = self.connect().await?;
        self.learn_partitions(&client, outs).await?;
        if self.txn.as_ref().expect("transactional").recover_from.is_some() {
            self.recover(&client).await?;
        }
        self.skip_written(&client, outs).await?;
        if outs.is_empty() {
            return Ok(());
        }
        let t = self.txn.as_mut().expect("transactional");
        let (tc, producer) = t.producer(&client).await?;
        let transactional_id = tc.transactional_id().to_string();
        let (groups, unknown) = self.place(outs);
        // Partition clients first: a partition without a leader waits for the next round.
        let mut ready = Vec::with_capacity(groups.len());
        for ((topic, p), group) in groups {
            match self.partition_client(&client, &topic, p).await {
                Ok(pc) => ready.push((topic, p, pc, group)),
                Err(e) => {
                    tracing::debug!(egress = %self.name, %topic, p, error = %e, "no producer for the partition yet");
                    outs.extend(group);
                }
            }
        }
        let missing = self.unknown_topics(unknown, outs);
        if ready.is_empty() {
            return Err(missing.unwrap_or_else(|| "partitions without a leader".into()));
        }
        let mut by_topic: BTreeSet<(String, i32)> = BTreeSet::new();
        for (topic, p, _, _) in &ready {
            by_topic.insert((topic.clone(), *p));
        }
        let mut partitions: Vec<(String, Vec<i32>)> = Vec::new();
        for (topic, p) in by_topic {
            match partitions.last_mut() {
                Some((t, ps)) if *t == topic => ps.push(p),
                _ => partitions.push((topic, vec![p])),
            }
        }
        let added = tokio::time::timeout(REQUEST_TIMEOUT, tc.add_partitions(producer, &partitions)).await;
        if let Err(e) = flatten(added, "AddPartitionsToTxn") {
            self.txn.as_mut().expect("transactional").drop_producer();
            outs.extend(ready.into_iter().flat_map(|(_, _, _, g)| g));
            return Err(e);
        }
        // Every copy of a record has a timestamp after the last confirmation's mark.
        let stamp = now();
        let mut produces = JoinSet::new();
        let t = self.txn.as_mut().expect("transactional");
        for (topic, p, pc, group) in ready {
            let seq = t.sequences.entry((topic.clone(), p)).or_insert(0);
            let batch = TransactionalBatch {
                transactional_id: transactional_id.clone(),
                producer,
                base_sequence: *seq,
            };
            *seq = seq.wrapping_add(group.len() as i32);
            produces.spawn(async move {
                let records: Vec<Record> = group
                    .iter()
                    .map(|o| Record {
                        timestamp: stamp,
                        ..o.record.clone()
                    })
                    .collect();
                let r = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    pc.produce_transactional(records, Compression::NoCompression, &batch),
                )
                .await;
                (topic, p, group, flatten(r, "Produce").map(|_| ()))
            });
        }
        let mut written = Vec::new();
        let mut error = None;
        while let Some(joined) = produces.join_next().await {
            let Ok((topic, p, group, result)) = joined else {
                error = Some("a produce task failed".to_string());
                continue;
            };
            if let Err(e) = result {
                self.producers.remove(&(topic.clone(), p));
                error = Some(format!("producing to {topic}/{p}: {e}"));
            }
            written.extend(group);
        }
        if let Some(e) = error {
            // Nothing of this transaction may become visible: abort it (the next producer's
            // InitProducerId would, too) and start a new epoch, with sequences from zero.
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, tc.end(producer, false)).await;
            self.txn.as_mut().expect("transactional").drop_producer();
            outs.extend(written);
            return Err(e);
        }
        let committed = tokio::time::timeout(REQUEST_TIMEOUT, tc.end(producer, true)).await;
        match flatten(committed, "EndTxn(commit)") {
            Ok(()) => {
                let n = written.len();
                self.done_at(written.into_iter().map(|o| o.source).collect(), crate::clock::now_ms());
                tracing::trace!(egress = %self.name, records = n, "transaction committed");
                match missing {
                    Some(e) => Err(e),
                    None if outs.is_empty() => Ok(()),
                    None => Err("partitions without a leader".into()),
                }
            }
            Err(e) => {
                // Committed or not: unknown. Find out by fencing and reading back.
                let t = self.txn.as_mut().expect("transactional");
                t.drop_producer();
                t.recover_from(stamp.timestamp_millis().max(0) as u64);
                outs.extend(written);
                Err(e)
            }
        }
    }

    /// Starts a recovery from the mark: a new epoch of our own id (no transaction of an earlier
    /// one can commit after this), and what was read back before is forgotten.
    async fn recover(&mut self, client: &Client) -> Result<(), String> {
        let t = self.txn.as_mut().expect("transactional");
        let mark = t.recover_from.expect("recovering");
        t.drop_producer();
        t.producer(client).await?;
        t.recovery = Some(Recovery {
            mark,
            topics: BTreeSet::new(),
            fenced: BTreeSet::new(),
            found: HashSet::new(),
            skipped: 0,
        });
        t.recover_from = None;
        Ok(())
    }

    /// Since the last recovery: records whose key was read back from the topic are committed
    /// already (by an earlier process or epoch): confirmed, not sent again. Every record
    /// released again after a restore passes here, whichever burst it comes in; topics and
    /// transactional ids are read and fenced the first time a record needs them.
    async fn skip_written(&mut self, client: &Client, outs: &mut Vec<Out>) -> Result<(), String> {
        let t = self.txn.as_mut().expect("transactional");
        let Some(rec) = t.recovery.as_mut() else {
            return Ok(());
        };
        // Ids of workers beyond the worker count (records taken over after a rescale): fenced
        // (a new epoch, dropped at once) before their records are looked for. Ids of live
        // workers are never touched: their own sinks own them.
        let (me, workers) = (t.worker, t.workers);
        let others: BTreeSet<u32> = outs
            .iter()
            .filter_map(|o| o.source.key.as_deref().and_then(key_worker))
            .filter(|w| *w != me && *w >= workers && !rec.fenced.contains(w))
            .collect();
        for w in others {
            let tc = client.transaction_client(format!("{}/{w}", t.prefix));
            init(&tc, t.timeout_ms).await?;
            rec.fenced.insert(w);
            tracing::info!(
                transactional_id = tc.transactional_id(),
                "Kafka egress: fenced the transactional id of a removed worker whose records this one resends"
            );
        }
        let topics: BTreeSet<String> = outs
            .iter()
            .filter(|o| !rec.topics.contains(&o.topic))
            .map(|o| o.topic.clone())
            .collect();
        for topic in topics {
            let Some(&n) = self.partitions.get(&topic) else {
                continue;
            };
            let keys = read_back::keys_since(client, &topic, n, rec.mark).await?;
            tracing::info!(egress = %self.name, %topic, from_ms = rec.mark, keys = keys.len(), "Kafka egress: read the topic back after a restore; records found there are not sent again");
            rec.found.extend(keys);
            rec.topics.insert(topic);
        }
        let (seen, rest): (Vec<Out>, Vec<Out>) = outs
            .drain(..)
            .partition(|o| o.source.key.as_deref().is_some_and(|k| rec.found.contains(k)));
        *outs = rest;
        if !seen.is_empty() {
            rec.skipped += seen.len() as u64;
            tracing::debug!(egress = %self.name, skipped = seen.len(), total = rec.skipped, "Kafka egress: released again but committed already");
            self.ctx.metrics.egress_duplicates.inc_by(seen.len() as u64);
            // Not `done_at`: the mark stays where the restore put it (held.rs keeps snapshots
            // at or before it while records released again are unconfirmed anyway).
            self.done(seen.into_iter().map(|o| o.source).collect(), Ok(()));
        }
        Ok(())
    }
}

/// What a recovery read back: the keys committed since `mark` in the topics read so far.
pub(super) struct Recovery {
    mark: u64,
    topics: BTreeSet<String>,
    /// Removed workers whose ids were fenced.
    fenced: BTreeSet<u32>,
    found: HashSet<String>,
    skipped: u64,
}

fn flatten<T>(r: Result<Result<T, KafkaError>, tokio::time::error::Elapsed>, what: &str) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if fenced(&e) => Err(format!(
            "{what}: this producer was fenced or its transaction aborted ({e})"
        )),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::key_worker;

    #[test]
    fn the_worker_of_an_idempotency_key() {
        assert_eq!(key_worker("app/3/17/2/40"), Some(2));
        assert_eq!(key_worker("app/3/17/x/40"), None);
        assert_eq!(key_worker("nothing"), None);
    }
}
