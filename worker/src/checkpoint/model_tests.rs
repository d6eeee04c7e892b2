//! A model-based test of the partition (here, beside the codec its checkpoints go through,
//! because it drives both: `partition` does not import `checkpoint`): seeded random interleavings of ingress messages
//! (some sent twice, as a retrying caller does), function answers in any order, barriers,
//! completions and restores, checked against a simple model of what exactly-once processing
//! means. The partition is real; the function is a fake invoker the test answers (a counter
//! per address that writes one egress record per message and forwards some messages to
//! another address); checkpoints go through the real codec (a part encoded, its state
//! sections applied in order, its rest decoded), as a restore from storage would.
//!
//! A restore rolls back to the last completed checkpoint: what the callers sent after its
//! barrier is sent again (they were never durably acknowledged), with the same idempotency
//! keys. At the end every address must hold the model's count, and the egress records ever
//! released — read without deduplication — must be exactly one per message the model
//! delivered, numbered 1..n per address, ingress messages in the order they were sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spindle_spec::TypeName;
use tokio::sync::{mpsc, oneshot};

use super::codec::{self, EncodedPart, GroupDecoder, PartMeta, TypeNames};
use crate::app::{AppConfig, AppIdentity};
use crate::deadletter::DeadLetters;
use crate::egress::{EgressHub, SinkItem};
use crate::fuzz::Rng;
use crate::inbox::Inbox;
use crate::invoker::{Call, Effects, EgressOut, Invoke, InvokeFailure, InvokeFuture, Outcome};
use crate::keygroup::Layout;
use crate::message::{Address, Envelope, Value};
use crate::metrics::Metrics;
use crate::partition::outbound::Outbound;
use crate::partition::{Capture, Compaction, Epochs, Partition, Parts};
use crate::state::{Expiration, Mutation, StateSpec, StateStore};
use crate::stop::CancellationToken;

const CASES: u64 = 40;
const STEPS: usize = 150;
const ADDRESSES: usize = 4;
const KEY_GROUPS: u32 = 8;
const WAIT: Duration = Duration::from_secs(10);

type Answer = oneshot::Sender<Result<Outcome, InvokeFailure>>;

struct Fake(mpsc::UnboundedSender<(Call, Answer)>);

impl Invoke for Fake {
    fn invoke(&self, call: Call) -> InvokeFuture {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send((call, tx));
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(InvokeFailure {
                    kind: "test",
                    reason: "abandoned by a restore".into(),
                    attempts: 1,
                })
            })
        })
    }
}

fn app() -> Arc<AppConfig> {
    let yaml = format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\nmetadata: {{name: app}}\nspec:\n  keyGroups: {KEY_GROUPS}\n  functions:\n    - {{typename: t/*, endpoint: 'http://f/', maxBatchSize: 3, maxInFlight: 2}}\n  egresses:\n    - {{typename: e/out, file: {{path: out.jsonl}}}}\n"
    );
    let spec = spindle_spec::from_yaml_str(&yaml, "test").expect("valid test application");
    Arc::new(AppConfig::resolve(&spec, std::path::Path::new(".")))
}

fn addr(i: usize) -> Address {
    Address::new(TypeName::parse("t/f").unwrap(), format!("a{i}"))
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(&v.bytes).into_owned()
}

/// The fake function: `n` counts the messages of its address; each message gives the egress
/// record `<id>|<value>|<n>`, and a value `m<seq>><j>` is forwarded as `m<seq>@<id>` to
/// address `a<j>`. Until it is given its state spec it asks for it, as SDKs do.
fn answer(call: &Call) -> Outcome {
    let Some(n) = call.state.iter().find(|s| &*s.name == "n") else {
        return Outcome::Incomplete(vec![StateSpec {
            name: "n".into(),
            typename: "t/n".into(),
            expiration: Expiration::Never,
        }]);
    };
    let mut n: u64 = n.value.as_ref().map_or(0, |v| text(v).parse().unwrap());
    let mut effects = Effects::default();
    let id = &call.target.id;
    for (_, v) in &call.messages {
        n += 1;
        let v = text(v);
        effects.egress.push(Ok(EgressOut {
            egress: TypeName::parse("e/out").unwrap(),
            value: Value::new("t/line", Bytes::from(format!("{id}|{v}|{n}"))),
        }));
        if let Some((seq, to)) = v.split_once('>') {
            effects.messages.push(Ok(Envelope {
                target: addr(to.parse().unwrap()),
                caller: Some(call.target.clone()),
                value: Value::new("t/m", Bytes::from(format!("{seq}@{id}"))),
                dedup: None,
                trace: None,
            }));
        }
    }
    effects.mutations.push(Mutation {
        name: "n".into(),
        value: Some(Value::new("t/n", Bytes::from(n.to_string()))),
    });
    Outcome::Effects(effects)
}

/// A message a caller sent through the ingress.
#[derive(Clone, Debug)]
struct Sent {
    seq: u64,
    to: usize,
    value: String,
}

impl Sent {
    fn envelope(&self) -> Envelope {
        Envelope {
            target: addr(self.to),
            caller: None,
            value: Value::new("t/m", Bytes::from(self.value.clone())),
            dedup: Some(format!("k{}", self.seq).into()),
            trace: None,
        }
    }
}

/// The partition under test, with what outlives its generations.
struct Rig {
    app: Arc<AppConfig>,
    metrics: Arc<Metrics>,
    hub: EgressHub,
    egress: mpsc::UnboundedReceiver<SinkItem>,
    dead_letters: Arc<DeadLetters>,
    replies: Arc<crate::reply::Replies>,
    generation: u64,
    inbox: Inbox,
    calls: mpsc::UnboundedReceiver<(Call, Answer)>,
    captures: mpsc::UnboundedReceiver<Capture>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Parts of the checkpoints of the current lineage, oldest first.
    parts: Vec<(u64, EncodedPart)>,
    next_checkpoint: u64,
    completed: u64,
    /// Every egress record released, in order (no deduplication).
    out: Vec<String>,
}

fn layout() -> Layout {
    Layout {
        worker: 0,
        workers: 1,
        key_groups: KEY_GROUPS,
    }
}

impl Rig {
    fn new() -> Rig {
        let app = app();
        let metrics = Arc::new(Metrics::new());
        let (hub, egress) = EgressHub::to_channel(TypeName::parse("e/out").unwrap(), metrics.clone());
        let dead_letters = Arc::new(DeadLetters::open(None, metrics.clone()).unwrap());
        let replies = crate::reply::Replies::new(0, 1);
        let (inbox, calls, captures, stop, task) = Self::spawn(
            &app,
            &metrics,
            &hub,
            &dead_letters,
            &replies,
            1,
            Capture::new(KEY_GROUPS),
        );
        Rig {
            app,
            metrics,
            hub,
            egress,
            dead_letters,
            replies,
            generation: 1,
            inbox,
            calls,
            captures,
            stop,
            task,
            parts: Vec::new(),
            next_checkpoint: 1,
            completed: 0,
            out: Vec::new(),
        }
    }

    #[allow(clippy::type_complexity)]
    fn spawn(
        app: &Arc<AppConfig>,
        metrics: &Arc<Metrics>,
        hub: &EgressHub,
        dead_letters: &Arc<DeadLetters>,
        replies: &Arc<crate::reply::Replies>,
        generation: u64,
        restored: Capture,
    ) -> (
        Inbox,
        mpsc::UnboundedReceiver<(Call, Answer)>,
        mpsc::UnboundedReceiver<Capture>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let memory = crate::memory::Memory::unbounded();
        let (outbound, _links) = Outbound::new(layout(), metrics.clone(), memory.clone());
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (captures_tx, captures) = mpsc::unbounded_channel();
        let epochs = Epochs::new(
            "app".into(),
            generation,
            0,
            1,
            restored.checkpoint,
            captures_tx,
            None,
            metrics.clone(),
        );
        let partition = Partition::new(Parts {
            app: app.clone(),
            outbound,
            invoker: Arc::new(Fake(calls_tx)),
            egress: hub.clone(),
            dead_letters: dead_letters.clone(),
            metrics: metrics.clone(),
            epochs: Some(epochs),
            restored,
            generation,
            replies: replies.clone(),
            compaction: Compaction::default(),
            sweep_every: Duration::from_secs(3600),
            poison: Default::default(),
            in_flight: Default::default(),
            memory,
            tracer: crate::trace::Tracer::off(),
        });
        let (inbox, rx) = Inbox::channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(partition.run(rx, stop.clone()));
        (inbox, calls, captures, stop, task)
    }

    /// Everything sent to the partition before has been handled (the inbox is in order).
    async fn sync(&self) {
        self.inbox.read_state(addr(0)).await.expect("the partition runs");
    }

    /// Calls made so far, after letting answered invocations complete.
    async fn collect(&mut self, pending: &mut Vec<(Call, Answer)>) {
        for _ in 0..3 {
            tokio::task::yield_now().await;
            self.sync().await;
        }
        while let Ok(c) = self.calls.try_recv() {
            pending.push(c);
        }
    }

    /// A barrier: the snapshot is encoded as a part of this lineage.
    async fn barrier(&mut self) -> u64 {
        let n = self.next_checkpoint;
        self.next_checkpoint += 1;
        self.inbox.trigger(n).unwrap();
        let capture = tokio::time::timeout(WAIT, self.captures.recv())
            .await
            .expect("a snapshot after the barrier")
            .expect("the partition runs");
        assert_eq!(capture.checkpoint, n);
        let meta = PartMeta {
            application: "app".into(),
            namespace: None,
            uid: None,
            generation: self.generation,
            worker: 0,
            workers: 1,
            key_groups: KEY_GROUPS,
        };
        self.parts.push((n, codec::encode(&capture, &meta)));
        n
    }

    fn complete(&mut self, n: u64) {
        self.inbox.completed(n).unwrap();
        self.completed = n;
    }

    /// What a restore of checkpoint `n` reads: the state sections of every part of the
    /// lineage up to it, in order, and the rest of its own part.
    fn load(&self, n: u64) -> Capture {
        if n == 0 {
            return Capture::new(KEY_GROUPS);
        }
        let mut state = StateStore::new(KEY_GROUPS);
        let mut names = TypeNames::new();
        for (_, part) in self.parts.iter().filter(|(c, _)| *c <= n) {
            for s in &part.groups {
                let bytes = &part.payload[s.offset as usize..(s.offset + s.length) as usize];
                let mut d = GroupDecoder::new(&mut state, s.key_group, s.base);
                d.push(&mut state, &mut names, bytes);
                d.finish(s.length, s.crc32).expect("an intact section");
            }
        }
        let (_, part) = self
            .parts
            .iter()
            .find(|(c, _)| *c == n)
            .expect("a part of the checkpoint");
        let at = part.index;
        let index = codec::decode_index(&part.payload[at.offset as usize..(at.offset + at.length) as usize]).unwrap();
        let rest = index.rest.expect("a rest section");
        let rest = part
            .payload
            .slice(rest.offset as usize..(rest.offset + rest.length) as usize);
        let mut capture = codec::decode(&AppIdentity::named("app"), &[rest], layout()).expect("the rest decodes");
        capture.state = state;
        capture
    }

    /// Rollback to the last completed checkpoint: the partition of this generation stops
    /// (abandoning its invocations) and the next one resumes from storage.
    async fn restore(&mut self, pending: &mut Vec<(Call, Answer)>) {
        self.stop.cancel();
        (&mut self.task).await.expect("the partition ends cleanly");
        pending.clear();
        let c = self.completed;
        self.parts.retain(|(n, _)| *n <= c);
        let restored = self.load(c);
        self.generation += 1;
        let (inbox, calls, captures, stop, task) = Self::spawn(
            &self.app,
            &self.metrics,
            &self.hub,
            &self.dead_letters,
            &self.replies,
            self.generation,
            restored,
        );
        (self.inbox, self.calls, self.captures, self.stop, self.task) = (inbox, calls, captures, stop, task);
    }

    fn drain_egress(&mut self) {
        while let Ok(item) = self.egress.try_recv() {
            if let SinkItem::Record(r) = item {
                self.out.push(text(&r.value));
            }
        }
    }
}

#[derive(Debug)]
enum Op {
    Send,
    Resend,
    Answer,
    Barrier,
    Complete,
    Restore,
}

async fn one_case(seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut rig = Rig::new();
    let mut pending: Vec<(Call, Answer)> = Vec::new();
    let mut log = Vec::new();
    // Every message sent, and which of them a restore would lose: those sent after the
    // barrier of the last completed checkpoint (`barrier_at[n]`: messages sent before it).
    let mut sent: Vec<Sent> = Vec::new();
    let mut barrier_at: BTreeMap<u64, usize> = BTreeMap::new();
    barrier_at.insert(0, 0);
    // Sent since the last restore, in order (what the partition has seen of the callers).
    let mut live: Vec<usize> = Vec::new();
    for _ in 0..STEPS {
        let op = match rng.below(20) {
            0..=6 => Op::Send,
            7 => Op::Resend,
            8..=13 => Op::Answer,
            14..=15 => Op::Barrier,
            16..=18 => Op::Complete,
            _ => Op::Restore,
        };
        log.push(format!("{op:?}"));
        match op {
            Op::Send => {
                let seq = sent.len() as u64;
                let to = rng.below(ADDRESSES);
                let value = if rng.below(4) == 0 {
                    format!("m{seq}>{}", rng.below(ADDRESSES))
                } else {
                    format!("m{seq}")
                };
                let s = Sent { seq, to, value };
                rig.inbox.ingest(s.envelope(), None, false).unwrap();
                live.push(sent.len());
                sent.push(s);
            }
            // A caller that sends again what it sent (a retry): applied once.
            Op::Resend if !sent.is_empty() => {
                let i = rng.below(sent.len());
                rig.inbox.ingest(sent[i].envelope(), None, false).unwrap();
            }
            Op::Answer => {
                rig.collect(&mut pending).await;
                if !pending.is_empty() {
                    let (call, tx) = pending.swap_remove(rng.below(pending.len()));
                    let _ = tx.send(Ok(answer(&call)));
                }
            }
            Op::Barrier => {
                let before = live.len();
                let n = rig.barrier().await;
                barrier_at.insert(n, before);
                log.push(format!("  checkpoint {n} after {before} live messages"));
            }
            Op::Complete => {
                if let Some((&n, _)) = barrier_at.range(rig.completed + 1..).next_back() {
                    rig.complete(n);
                    log.push(format!("  completed {n}"));
                }
            }
            Op::Restore => {
                let c = rig.completed;
                rig.restore(&mut pending).await;
                // What the callers sent after the restored checkpoint's barrier is lost (not
                // acknowledged): they send it again, in order, with the same keys.
                let kept = barrier_at[&c];
                let lost: Vec<usize> = live.split_off(kept);
                log.push(format!("  restored {c}; {} sent again", lost.len()));
                barrier_at.retain(|n, _| *n <= c);
                for i in &lost {
                    rig.inbox.ingest(sent[*i].envelope(), None, false).unwrap();
                }
                live.extend(lost);
            }
            Op::Resend => {}
        }
        rig.drain_egress();
    }
    // Quiesce: answer everything, then a last checkpoint releases what is held.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        rig.collect(&mut pending).await;
        if pending.is_empty() && rig.metrics.batches_in_flight.get() == 0 && rig.metrics.messages_queued.get() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: not quiet: {} calls pending, {} batches in flight",
            pending.len(),
            rig.metrics.batches_in_flight.get()
        );
        for (call, tx) in pending.drain(..) {
            let _ = tx.send(Ok(answer(&call)));
        }
    }
    let n = rig.barrier().await;
    rig.complete(n);
    rig.sync().await;
    rig.drain_egress();

    // The model: every message sent is delivered once, and each forwarded one once more.
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &sent {
        expected
            .entry(format!("a{}", s.to))
            .or_default()
            .insert(s.value.clone());
        if let Some((seq, to)) = s.value.split_once('>') {
            expected
                .entry(format!("a{to}"))
                .or_default()
                .insert(format!("{seq}@a{}", s.to));
        }
    }
    let mut got: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for line in &rig.out {
        let mut p = line.split('|');
        let (id, v, n) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
        got.entry(id.to_string())
            .or_default()
            .push((n.parse().unwrap(), v.to_string()));
    }
    let context = || format!("seed {seed}, steps {log:?}");
    for i in 0..ADDRESSES {
        let id = format!("a{i}");
        let want = expected.remove(&id).unwrap_or_default();
        let mut lines = got.remove(&id).unwrap_or_default();
        lines.sort();
        let numbers: Vec<u64> = lines.iter().map(|(n, _)| *n).collect();
        let count = want.len() as u64;
        assert_eq!(
            numbers,
            (1..=count).collect::<Vec<_>>(),
            "{id}: egress numbered 1..{count}, each once; {}",
            context()
        );
        let values: BTreeSet<String> = lines.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(values, want, "{id}: every message once; {}", context());
        // Ingress messages to one address are processed in the order they were sent.
        let order: Vec<u64> = lines
            .iter()
            .filter(|(_, v)| !v.contains('@'))
            .map(|(_, v)| v[1..].split('>').next().unwrap().parse().unwrap())
            .collect();
        assert!(order.is_sorted(), "{id}: ingress order {order:?}; {}", context());
        let state = rig.inbox.read_state(addr(i)).await.unwrap();
        let n = state
            .iter()
            .find(|(k, _)| k == "n")
            .map(|(_, v)| text(v).parse::<u64>().unwrap());
        assert_eq!(
            n.unwrap_or(0),
            count,
            "{id}: the state holds the model's count; {}",
            context()
        );
    }
    assert!(got.is_empty(), "records of unknown addresses: {got:?}");
    let dead = rig.inbox.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "no dead letters expected: {dead:?}; {}", context());
    rig.stop.cancel();
    log
}

#[tokio::test]
async fn random_interleavings_agree_with_the_model() {
    let (mut restores, mut steps) = (0, 0);
    for case in 0..CASES {
        let log = one_case(0x5eed_0000 + case).await;
        restores += log.iter().filter(|l| l.starts_with("  restored")).count();
        steps += log.len();
    }
    // The generator must reach what it is for: restores, with lost messages sent again.
    assert!(restores > CASES as usize, "only {restores} restores in {CASES} cases");
    eprintln!("model: {CASES} cases, {steps} steps, {restores} restores: partition == model");
}
