//! The partition without sockets: a fake invoker hands every call to the test, which answers
//! it when it wants to; inputs go through the inbox, egress comes out of a channel, captures
//! out of the epochs' channel, messages for peers out of the outbound queues.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spindle_spec::TypeName;
use tokio::sync::{mpsc, oneshot};

use super::outbound::{LinkQueue, Outbound};
use super::{Capture, Compaction, Epochs, Partition, Parts};
use crate::app::AppConfig;
use crate::deadletter::DeadLetters;
use crate::egress::{EgressHub, EgressRecord, SinkItem};
use crate::inbox::Inbox;
use crate::invoker::{Call, Delayed, Effects, EgressOut, Invoke, InvokeFailure, InvokeFuture, Outcome};
use crate::keygroup::Layout;
use crate::memory::{Memory, Queue};
use crate::message::{Address, Envelope, Value};
use crate::metrics::Metrics;
use crate::peer::link::Outgoing;
use crate::state::{Expiration, Mutation, StateSpec};
use crate::stop::CancellationToken;

/// Long enough for anything that should happen on a loaded machine; a missing event fails
/// with what was expected.
const WAIT: Duration = Duration::from_secs(10);

type Answer = oneshot::Sender<Result<Outcome, InvokeFailure>>;

/// Hands every call to the test.
struct FakeInvoker(mpsc::UnboundedSender<(Call, Answer)>);

impl Invoke for FakeInvoker {
    fn invoke(&self, call: Call) -> InvokeFuture {
        let (tx, rx) = oneshot::channel();
        let _ = self.0.send((call, tx));
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(InvokeFailure {
                    kind: "test",
                    reason: "the test dropped the call".into(),
                    attempts: 1,
                })
            })
        })
    }
}

struct Harness {
    inbox: Inbox,
    calls: mpsc::UnboundedReceiver<(Call, Answer)>,
    egress: mpsc::UnboundedReceiver<SinkItem>,
    captures: mpsc::UnboundedReceiver<Capture>,
    links: Vec<LinkQueue>,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    /// The memory budget (unbounded): what the partition's queues count in it.
    memory: Arc<Memory>,
    replies: Arc<crate::reply::Replies>,
    /// What the uploader would ask the next snapshot to capture whole.
    compaction: Compaction,
    /// The batches in flight the partition shows the coordinator's heartbeat.
    board: Arc<crate::poison::Board>,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn app(max_batch: u32, max_in_flight: u32) -> Arc<AppConfig> {
    let yaml = format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\nmetadata: {{name: app}}\nspec:\n  keyGroups: 8\n  functions:\n    - {{typename: t/*, endpoint: 'http://f/', maxBatchSize: {max_batch}, maxInFlight: {max_in_flight}}}\n  egresses:\n    - {{typename: e/out, file: {{path: out.jsonl}}}}\n"
    );
    let spec = spindle_spec::from_yaml_str(&yaml, "test").expect("valid test application");
    Arc::new(AppConfig::resolve(&spec, std::path::Path::new(".")))
}

/// A partition of worker `me` of `workers`, with checkpoints on.
fn start(app: Arc<AppConfig>, me: u32, workers: u32) -> Harness {
    let restored = Capture::new(app.key_groups);
    start_from(app, me, workers, restored, Default::default())
}

/// As [`start`], restored from `restored`.
fn start_restored(app: Arc<AppConfig>, me: u32, workers: u32, restored: Capture) -> Harness {
    start_from(app, me, workers, restored, Default::default())
}

/// A partition of generation 7 that resumes from `restored`, setting `poison` aside.
fn start_from(
    app: Arc<AppConfig>,
    me: u32,
    workers: u32,
    restored: Capture,
    poison: std::collections::HashSet<crate::poison::MessageId>,
) -> Harness {
    let metrics = Arc::new(Metrics::new());
    let layout = Layout {
        worker: me,
        workers,
        key_groups: app.key_groups,
    };
    let memory = Memory::unbounded();
    let (outbound, links) = Outbound::new(layout, metrics.clone(), memory.clone());
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let (egress_hub, egress) = EgressHub::to_channel(TypeName::parse("e/out").unwrap(), metrics.clone());
    let (captures_tx, captures) = mpsc::unbounded_channel();
    let epochs = Epochs::new("app".into(), 7, me, workers, 0, captures_tx, None, metrics.clone());
    let compaction = Compaction::default();
    let dead_letters = Arc::new(DeadLetters::open(None, metrics.clone()).unwrap());
    let replies = crate::reply::Replies::new(me, 1);
    let board = Arc::new(crate::poison::Board::default());
    let partition = Partition::new(Parts {
        app,
        outbound,
        invoker: Arc::new(FakeInvoker(calls_tx)),
        egress: egress_hub,
        dead_letters: dead_letters.clone(),
        metrics: metrics.clone(),
        epochs: Some(epochs),
        restored,
        generation: 7,
        replies: replies.clone(),
        compaction: compaction.clone(),
        sweep_every: Duration::from_millis(20),
        tracer: crate::trace::Tracer::off(),
        memory: memory.clone(),
        poison,
        in_flight: board.clone(),
    });
    let (inbox, rx) = Inbox::channel();
    let stop = CancellationToken::new();
    tokio::spawn(partition.run(rx, stop.clone()));
    Harness {
        inbox,
        calls,
        egress,
        captures,
        links,
        dead_letters,
        metrics,
        memory,
        replies,
        compaction,
        board,
        stop,
    }
}

fn addr(id: &str) -> Address {
    Address::new(TypeName::parse("t/f").unwrap(), id)
}

fn msg(to: &str, v: &str) -> Envelope {
    Envelope {
        target: addr(to),
        caller: None,
        value: Value::new("t/m", Bytes::from(v.to_string())),
        dedup: None,
        trace: None,
    }
}

fn values(call: &Call) -> Vec<String> {
    call.messages
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(&v.bytes).into_owned())
        .collect()
}

fn record(item: SinkItem) -> EgressRecord {
    match item {
        SinkItem::Record(r) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

fn done(effects: Effects) -> Result<Outcome, InvokeFailure> {
    Ok(Outcome::Effects(effects))
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("{what}: the channel closed"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// Nothing arrives: checked after the partition has handled everything sent before (a state
/// read goes through the same inbox, in order).
async fn nothing<T: std::fmt::Debug>(inbox: &Inbox, rx: &mut mpsc::UnboundedReceiver<T>, what: &str) {
    inbox.read_state(addr("sync")).await.unwrap();
    if let Ok(v) = rx.try_recv() {
        panic!("{what}: expected nothing, got {v:?}");
    }
}

impl Harness {
    async fn call(&mut self, what: &str) -> (Call, Answer) {
        next(&mut self.calls, what).await
    }

    fn ingest(&self, env: Envelope) {
        self.inbox.ingest(env, None, false).unwrap();
    }

    /// Waits until no batch is in flight or queued: every answer given has been applied.
    async fn idle(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (in_flight, queued) = (self.metrics.batches_in_flight.get(), self.metrics.messages_queued.get());
            if in_flight == 0 && queued == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not idle after {WAIT:?}: {in_flight} batches in flight, {queued} messages queued"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test]
async fn one_batch_per_address_in_arrival_order_and_the_next_batch_from_what_waited() {
    let mut h = start(app(3, 64), 0, 1);
    h.ingest(msg("a", "a0"));
    let (first, answer_a) = h.call("a's first batch").await;
    assert_eq!(values(&first), ["a0"]);
    for i in 1..=4 {
        h.ingest(msg("a", &format!("a{i}")));
    }
    // Another address is not held up by a's batch in flight.
    h.ingest(msg("b", "b0"));
    let (other, answer_b) = h.call("b's batch").await;
    assert_eq!(
        (other.target.clone(), values(&other)),
        (addr("b"), vec!["b0".to_string()])
    );
    nothing(
        &h.inbox,
        &mut h.calls,
        "a second batch of a while its first is in flight",
    )
    .await;
    answer_a.send(done(Effects::default())).unwrap();
    let (second, answer) = h.call("a's second batch").await;
    assert_eq!(values(&second), ["a1", "a2", "a3"], "maxBatchSize 3, arrival order");
    answer.send(done(Effects::default())).unwrap();
    let (third, answer) = h.call("a's third batch").await;
    assert_eq!(values(&third), ["a4"]);
    answer.send(done(Effects::default())).unwrap();
    answer_b.send(done(Effects::default())).unwrap();
}

#[tokio::test]
async fn max_in_flight_bounds_the_batches_of_a_function_entry() {
    let mut h = start(app(10, 1), 0, 1);
    h.ingest(msg("a", "1"));
    h.ingest(msg("b", "2"));
    let (first, answer) = h.call("the first batch").await;
    assert_eq!(first.target, addr("a"));
    nothing(&h.inbox, &mut h.calls, "a second batch beyond maxInFlight 1").await;
    answer.send(done(Effects::default())).unwrap();
    let (second, answer) = h.call("b's batch once a slot is free").await;
    assert_eq!(second.target, addr("b"));
    answer.send(done(Effects::default())).unwrap();
}

#[tokio::test]
async fn an_incomplete_context_registers_the_specs_and_resends_the_same_batch() {
    let mut h = start(app(10, 64), 0, 1);
    h.ingest(msg("a", "x"));
    let (call, answer) = h.call("the first attempt").await;
    assert!(call.state.is_empty(), "no specs known yet");
    let spec = StateSpec {
        name: "seen".into(),
        typename: "io.statefun.types/int".into(),
        expiration: Expiration::Never,
    };
    answer.send(Ok(Outcome::Incomplete(vec![spec]))).unwrap();
    let (again, answer) = h.call("the batch sent again").await;
    assert_eq!(values(&again), ["x"], "the same messages");
    assert_eq!(again.state.len(), 1);
    assert_eq!((&*again.state[0].name, again.state[0].value.clone()), ("seen", None));
    let one = Value::new("io.statefun.types/int", Bytes::from_static(b"\x08\x01"));
    answer
        .send(done(Effects {
            mutations: vec![Mutation {
                name: "seen".into(),
                value: Some(one.clone()),
            }],
            ..Effects::default()
        }))
        .unwrap();
    h.ingest(msg("a", "y"));
    let (later, answer) = h.call("the next batch").await;
    assert_eq!(
        later.state[0].value,
        Some(one.clone()),
        "the state the last batch wrote"
    );
    answer.send(done(Effects::default())).unwrap();
    assert_eq!(
        h.inbox.read_state(addr("a")).await.unwrap(),
        [("seen".to_string(), one)]
    );
}

#[tokio::test]
async fn a_function_that_keeps_asking_for_its_specs_is_a_dead_letter() {
    let mut h = start(app(10, 64), 0, 1);
    h.ingest(msg("a", "x"));
    for round in 0..3 {
        let (_, answer) = h.call(&format!("attempt {round}")).await;
        let spec = StateSpec {
            name: "seen".into(),
            typename: "io.statefun.types/int".into(),
            expiration: Expiration::Never,
        };
        answer.send(Ok(Outcome::Incomplete(vec![spec]))).unwrap();
    }
    h.idle().await;
    nothing(&h.inbox, &mut h.calls, "a fourth attempt").await;
    let letters = h.dead_letters.recent();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, "bad_reply");
    assert!(letters[0].reason.contains("asked again"), "{}", letters[0].reason);
    assert_eq!(letters[0].messages.len(), 1);
}

#[tokio::test]
async fn a_failed_invocation_is_a_dead_letter_and_the_address_goes_on() {
    let mut h = start(app(1, 64), 0, 1);
    h.ingest(msg("a", "1"));
    h.ingest(msg("a", "2"));
    let (_, answer) = h.call("the first batch").await;
    answer
        .send(Err(InvokeFailure {
            kind: "http_status",
            reason: "400".into(),
            attempts: 1,
        }))
        .unwrap();
    let (second, answer) = h.call("the next batch of the address").await;
    assert_eq!(values(&second), ["2"]);
    answer.send(done(Effects::default())).unwrap();
    let letters = h.dead_letters.recent();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].kind, "invocation_failed");
    assert!(
        letters[0].reason.contains("t/f/a failed (http_status, 1 attempts)"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test]
async fn a_snapshot_holds_the_batch_in_flight_then_the_mailbox() {
    let mut h = start(app(10, 64), 0, 1);
    h.ingest(msg("a", "in-flight"));
    let (_, answer) = h.call("a's batch").await;
    h.ingest(msg("a", "queued"));
    h.inbox.trigger(1).unwrap();
    let capture = next(&mut h.captures, "the capture of checkpoint 1").await;
    assert_eq!(capture.checkpoint, 1);
    let captured: Vec<_> = capture.messages.iter().map(|e| e.value.bytes.clone()).collect();
    assert_eq!(captured, [Bytes::from("in-flight"), Bytes::from("queued")]);
    // What the batch does afterwards belongs to the next epoch.
    answer
        .send(done(Effects {
            mutations: vec![Mutation {
                name: "n".into(),
                value: Some(Value::new("t/n", Bytes::from_static(b"1"))),
            }],
            ..Effects::default()
        }))
        .unwrap();
    let (_, answer) = h.call("the queued message's batch").await;
    answer.send(done(Effects::default())).unwrap();
    h.idle().await;
    assert!(
        capture.changes.groups.is_empty(),
        "the capture does not see later writes"
    );
    h.inbox.trigger(2).unwrap();
    let capture = next(&mut h.captures, "the capture of checkpoint 2").await;
    assert!(capture.messages.is_empty());
    let changed: usize = capture.changes.groups.iter().map(|g| g.entries.len()).sum();
    assert_eq!(changed, 1, "the next capture holds the write");
}

#[tokio::test]
async fn egress_is_held_until_the_checkpoint_of_its_epoch_completes() {
    let mut h = start(app(10, 64), 0, 1);
    let out = |v: &'static str| {
        done(Effects {
            egress: vec![Ok(EgressOut {
                egress: TypeName::parse("e/out").unwrap(),
                value: Value::new("t/o", Bytes::from_static(v.as_bytes())),
            })],
            ..Effects::default()
        })
    };
    h.ingest(msg("a", "1"));
    let (_, answer) = h.call("epoch 1's batch").await;
    answer.send(out("from epoch 1")).unwrap();
    h.idle().await;
    let memory = h.memory.clone();
    wait_until("held egress counted in the memory budget", || {
        memory.usage().get(Queue::HeldEgress) > 0
    })
    .await;
    h.inbox.trigger(1).unwrap();
    let capture = next(&mut h.captures, "the capture of checkpoint 1").await;
    assert_eq!(capture.egress.len(), 1, "held egress is in the snapshot");
    h.ingest(msg("a", "2"));
    let (_, answer) = h.call("epoch 2's batch").await;
    answer.send(out("from epoch 2")).unwrap();
    h.idle().await;
    nothing(&h.inbox, &mut h.egress, "egress before its checkpoint completed").await;
    h.inbox.completed(1).unwrap();
    let first = record(next(&mut h.egress, "epoch 1's record").await);
    assert_eq!(first.value.bytes.as_ref(), b"from epoch 1");
    assert_eq!(
        first.key.as_deref(),
        Some("app/7/1/0/1"),
        "{{app}}/{{generation}}/{{epoch}}/{{worker}}/{{seq}}"
    );
    nothing(&h.inbox, &mut h.egress, "epoch 2's record at checkpoint 1").await;
    h.inbox.trigger(2).unwrap();
    next(&mut h.captures, "the capture of checkpoint 2").await;
    h.inbox.completed(2).unwrap();
    let second = record(next(&mut h.egress, "epoch 2's record").await);
    assert_eq!(second.key.as_deref(), Some("app/7/2/0/1"));
    wait_until("held egress given back once released", || {
        memory.usage().get(Queue::HeldEgress) == 0
    })
    .await;
}

#[tokio::test]
async fn delayed_messages_are_delivered_or_cancelled_by_their_sender() {
    let mut h = start(app(10, 64), 0, 1);
    h.ingest(msg("a", "go"));
    let (_, answer) = h.call("a's batch").await;
    let later = |v: &'static str| {
        Ok(Delayed::Send {
            env: Envelope {
                caller: Some(addr("a")),
                ..msg("b", v)
            },
            delay_ms: 30,
            token: v.into(),
        })
    };
    let cancel = |token: &str| Ok(Delayed::Cancel { token: token.into() });
    answer
        .send(done(Effects {
            // In reply order: both scheduled, then one cancelled by its token.
            delayed: vec![later("kept"), later("cancelled"), cancel("cancelled")],
            ..Effects::default()
        }))
        .unwrap();
    let (due, answer) = h.call("the delayed message that was not cancelled").await;
    assert_eq!(
        (due.target.clone(), values(&due)),
        (addr("b"), vec!["kept".to_string()])
    );
    assert_eq!(due.messages[0].0, Some(addr("a")), "the sender is the caller");
    answer.send(done(Effects::default())).unwrap();
    h.idle().await;
    nothing(&h.inbox, &mut h.calls, "the cancelled message").await;
}

#[tokio::test]
async fn messages_for_other_workers_leave_by_the_outbound_switch_and_barriers_follow_them() {
    let app = app(10, 64);
    let layout = Layout {
        worker: 0,
        workers: 2,
        key_groups: app.key_groups,
    };
    let remote = (0..100)
        .map(|i| format!("k{i}"))
        .find(|id| layout.owner(&addr(id)) == 1)
        .expect("some id is owned by worker 1");
    let mut h = start(app, 0, 2);
    h.ingest(msg(&remote, "for worker 1"));
    h.inbox.trigger(1).unwrap();
    let memory = h.memory.clone();
    wait_until("the forwarded message counted in the peer queues", || {
        memory.usage().get(Queue::Peers) > 0
    })
    .await;
    let link = &mut h.links[0].rx;
    match next(link, "the forwarded message").await {
        Outgoing::Message { env, .. } => assert_eq!(env.target, addr(&remote)),
        other => panic!("expected the message, got {other:?}"),
    }
    // Its bytes leave the peer queues with it (a link holds them until the peer acknowledged).
    assert_eq!(memory.usage().get(Queue::Peers), 0);
    assert!(matches!(next(link, "the barrier").await, Outgoing::Barrier(1)));
    nothing(&h.inbox, &mut h.calls, "a local invocation of a remote address").await;
    // The snapshot waits for worker 1's barrier; messages from worker 1 before it are
    // recorded as channel state.
    nothing(&h.inbox, &mut h.captures, "a capture before every channel's barrier").await;
    let local = (0..100)
        .map(|i| format!("k{i}"))
        .find(|id| layout.owner(&addr(id)) == 0)
        .expect("some id is owned by worker 0");
    h.inbox.deliver_routed(msg(&local, "in transit"), None, 1).unwrap();
    h.inbox.barrier(1, 1).unwrap();
    let capture = next(&mut h.captures, "the capture once worker 1's barrier arrived").await;
    assert_eq!(capture.recorded.len(), 1, "the message in transit is channel state");
    assert_eq!(capture.recorded[0].target, addr(&local));
    let (call, answer) = h.call("the delivered message's batch").await;
    assert_eq!(values(&call), ["in transit"]);
    answer.send(done(Effects::default())).unwrap();
}

#[tokio::test]
async fn a_dead_letter_is_kept_in_snapshots_and_replayed_exactly_once() {
    let mut h = start(app(10, 64), 0, 1);
    h.ingest(msg("a", "doomed"));
    let (_, answer) = h.call("the batch that fails").await;
    answer
        .send(Err(InvokeFailure {
            kind: "http_status",
            reason: "400".into(),
            attempts: 1,
        }))
        .unwrap();
    h.idle().await;
    let kept = h.inbox.dead_letters().await.unwrap();
    assert_eq!(kept.len(), 1);
    let id = kept[0].id.to_string();
    assert_eq!(id, "0-7-1", "{{worker}}-{{generation}}-{{sequence}}");
    h.inbox.trigger(1).unwrap();
    let capture = next(&mut h.captures, "the capture with the dead letter").await;
    assert_eq!(capture.dead_letters, kept, "dead letters are part of the snapshot");
    // Replay: out of the dead letters and into the mailbox in one step.
    assert_eq!(h.inbox.settle_dead_letter(&id, false).await.unwrap(), Ok(()));
    h.inbox.trigger(2).unwrap();
    let capture = next(&mut h.captures, "the capture after the replay").await;
    assert!(capture.dead_letters.is_empty());
    assert_eq!(capture.messages.len(), 1, "the replayed message, in flight or queued");
    let (again, answer) = h.call("the replayed batch").await;
    assert_eq!(values(&again), ["doomed"]);
    answer.send(done(Effects::default())).unwrap();
    assert!(
        h.inbox.settle_dead_letter(&id, false).await.unwrap().is_err(),
        "a dead letter replays once"
    );
    nothing(&h.inbox, &mut h.calls, "a second replay").await;
}

#[tokio::test]
async fn records_without_messages_are_kept_but_not_replayable_and_can_be_dropped() {
    let h = start(app(10, 64), 0, 1);
    h.inbox
        .dead_letter(crate::inbox::Refused {
            kind: "bad_record",
            reason: "kafka record t/0@5: the record has no key".into(),
            payload: crate::deadletter::Payload::Record {
                target: "t/f/?".into(),
                typename: "t/m".into(),
                value: Bytes::from_static(b"{}"),
            },
        })
        .unwrap();
    let kept = h.inbox.dead_letters().await.unwrap();
    let id = kept[0].id.to_string();
    let refused = h.inbox.settle_dead_letter(&id, false).await.unwrap().unwrap_err();
    assert!(refused.contains("holds no message"), "{refused}");
    assert_eq!(h.inbox.dead_letters().await.unwrap().len(), 1, "still kept");
    assert_eq!(h.inbox.settle_dead_letter(&id, true).await.unwrap(), Ok(()));
    assert!(h.inbox.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reply_is_released_with_its_checkpoint_and_a_retry_gets_the_same_one_without_a_call() {
    let mut h = start(app(10, 64), 0, 1);
    let key: Arc<str> = "k1".into();
    let request = |h: &Harness| h.replies.register(Some((addr("a"), key.clone())));
    let mut first = request(&h);
    let with_caller = |w: &crate::reply::Waiting| Envelope {
        caller: Some(w.caller()),
        dedup: Some(key.clone()),
        trace: None,
        ..msg("a", "go")
    };
    h.ingest(with_caller(&first));
    let (call, answer) = h.call("the request's batch").await;
    let caller = call.messages[0]
        .0
        .clone()
        .expect("the message has the reply address as caller");
    answer
        .send(done(Effects {
            messages: vec![Ok(Envelope {
                target: caller,
                caller: Some(addr("a")),
                value: Value::new("t/r", Bytes::from_static(b"r1")),
                dedup: None,
                trace: None,
            })],
            ..Effects::default()
        }))
        .unwrap();
    h.idle().await;
    h.inbox.read_state(addr("sync")).await.unwrap();
    assert!(first.reply().try_recv().is_err(), "held until its checkpoint completes");
    h.inbox.trigger(1).unwrap();
    let capture = next(&mut h.captures, "the capture of checkpoint 1").await;
    assert_eq!(capture.egress.len(), 1, "the held reply is in the snapshot");
    let (_, _, seen) = capture.seen.entries().next().expect("the key is remembered");
    assert_eq!(seen.reply.as_ref().map(|v| &v.bytes[..]), Some(&b"r1"[..]));
    h.inbox.completed(1).unwrap();
    let got = tokio::time::timeout(WAIT, first.reply()).await.unwrap().unwrap();
    assert_eq!((&got.value.bytes[..], got.checkpoint), (&b"r1"[..], 1));

    // A retry with the key: no call, the same reply, after its own checkpoint.
    let mut retry = request(&h);
    h.ingest(with_caller(&retry));
    nothing(&h.inbox, &mut h.calls, "a call for a retried key").await;
    h.inbox.trigger(2).unwrap();
    next(&mut h.captures, "the capture of checkpoint 2").await;
    h.inbox.completed(2).unwrap();
    let again = tokio::time::timeout(WAIT, retry.reply()).await.unwrap().unwrap();
    assert_eq!((&again.value.bytes[..], again.checkpoint), (&b"r1"[..], 2));
    assert_eq!(h.metrics.ingress_duplicates.get(), 1);
}

#[tokio::test]
async fn replies_to_another_worker_leave_by_its_link_and_bad_ones_are_dead_letters() {
    let mut h = start(app(10, 64), 0, 2);
    let to_worker_1 = Address::new(TypeName::parse("spindle.reply/1").unwrap(), "abc.9");
    h.inbox
        .deliver_routed(
            Envelope {
                target: to_worker_1.clone(),
                caller: None,
                value: Value::new("t/r", Bytes::from_static(b"x")),
                dedup: None,
                trace: None,
            },
            None,
            1,
        )
        .unwrap();
    let link = h.links.iter_mut().find(|l| l.to == 1).unwrap();
    match next(&mut link.rx, "the reply on the link to worker 1").await {
        Outgoing::Message { env, .. } => assert_eq!(env.target, to_worker_1),
        other => panic!("expected the reply, got {other:?}"),
    }
    let bad = Address::new(TypeName::parse("spindle.reply/x").unwrap(), "abc.9");
    h.ingest(Envelope {
        target: bad,
        ..msg("a", "?")
    });
    h.inbox.read_state(addr("sync")).await.unwrap();
    assert_eq!(
        h.dead_letters.recent().len(),
        1,
        "a malformed reply address is a dead letter"
    );
}

#[tokio::test]
async fn expired_state_is_swept_without_an_invocation_and_whole_groups_are_captured_on_request() {
    let mut h = start(app(10, 64), 0, 1);
    let spec = |name: &str, expiration| StateSpec {
        name: name.into(),
        typename: "t/n".into(),
        expiration,
    };
    for id in ["a", "b"] {
        h.ingest(msg(id, "x"));
        let (_, answer) = h.call("the first attempt").await;
        answer
            .send(Ok(Outcome::Incomplete(vec![
                spec("ttl", Expiration::AfterWrite(Duration::from_millis(50))),
                spec("kept", Expiration::Never),
            ])))
            .unwrap();
        let (_, answer) = h.call("the batch again").await;
        let mut mutations = vec![Mutation {
            name: "ttl".into(),
            value: Some(Value::new("t/n", Bytes::from_static(b"1"))),
        }];
        if id == "b" {
            mutations.push(Mutation {
                name: "kept".into(),
                value: Some(Value::new("t/n", Bytes::from_static(b"2"))),
            });
        }
        answer
            .send(done(Effects {
                mutations,
                ..Effects::default()
            }))
            .unwrap();
    }
    h.idle().await;
    h.inbox.trigger(1).unwrap();
    let first = next(&mut h.captures, "the first capture").await;
    assert_eq!(first.changes.groups.iter().map(|g| g.entries.len()).sum::<usize>(), 2);
    // Nobody invokes them again: the sweep drops the expired values (the timer runs every
    // 20 ms here), and the next capture says so.
    wait_until("the sweep", || h.metrics.state_expired.get() == 2).await;
    h.inbox.trigger(2).unwrap();
    let second = next(&mut h.captures, "the capture after the sweep").await;
    let entries: Vec<_> = second.changes.groups.iter().flat_map(|g| &g.entries).collect();
    assert_eq!(entries.len(), 2);
    for (a, cells) in entries {
        match &*a.id {
            "a" => assert!(cells.is_none(), "a had only the expired value: deleted"),
            _ => assert_eq!(cells.as_ref().unwrap().len(), 1, "b keeps its other value"),
        }
    }
    // The uploader asks for b's key group whole: the next capture holds all of it.
    let kg = crate::keygroup::key_group(&addr("b"), 8);
    *h.compaction.lock().unwrap() = vec![kg];
    h.inbox.trigger(3).unwrap();
    let third = next(&mut h.captures, "the capture with a whole group").await;
    assert_eq!(third.changes.groups.len(), 1);
    assert!(third.changes.groups[0].whole);
    assert_eq!(third.changes.groups[0].key_group, kg);
    assert!(h.compaction.lock().unwrap().is_empty(), "the plan is taken once");
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_poison_message_is_set_aside_at_the_restore_and_long_batches_are_shown() {
    let poison = msg("p", "stalls");
    let mut restored = Capture::new(8);
    restored.messages = vec![poison.clone(), msg("q", "fine"), msg("p", "after it")];
    let ids = [crate::poison::message_id(&poison)].into_iter().collect();
    let mut h = start_from(app(10, 64), 0, 1, restored, ids);
    // The poison is not invoked; what was queued behind it for the same address is.
    let (first, answer_first) = h.call("a restored batch").await;
    let (second, answer_second) = h.call("the other restored batch").await;
    let mut got = vec![
        (first.target.id.to_string(), values(&first)),
        (second.target.id.to_string(), values(&second)),
    ];
    got.sort();
    assert_eq!(
        got,
        [
            ("p".to_string(), vec!["after it".to_string()]),
            ("q".to_string(), vec!["fine".to_string()])
        ]
    );
    let dead = h.inbox.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].kind, "poison");
    assert_eq!(dead[0].reason, "in flight at 3 consecutive rollbacks");
    assert_eq!(
        dead[0].payload,
        crate::deadletter::Payload::Messages(vec![poison.clone()])
    );
    assert_eq!(h.metrics.poison_dead_letters.get(), 1);
    // Batches in flight for a while are shown, with the identities of their messages.
    let shown = || h.board.read();
    wait_until("both batches shown", || shown().1.len() == 2).await;
    assert_eq!(shown().0, 7, "the generation of the report");
    answer_first.send(done(Effects::default())).unwrap();
    answer_second.send(done(Effects::default())).unwrap();
    wait_until("nothing shown once they ended", || shown().1.is_empty()).await;
    // Set aside once: the same message arriving again (a replay) is invoked.
    h.ingest(poison.clone());
    let (again, answer) = h.call("the message again").await;
    assert_eq!(values(&again), ["stalls"]);
    answer.send(done(Effects::default())).unwrap();
}

#[tokio::test]
async fn a_retry_recorded_as_channel_state_is_not_applied_again_after_a_restore() {
    // Channel state is recorded before the duplicate check: a caller that retried one input
    // at two workers left both copies in a snapshot (one accepted, one recorded in transit).
    let app = app(10, 64);
    let mut restored = Capture::new(app.key_groups);
    let keyed = |text: &str, key: &str| Envelope {
        dedup: Some(key.into()),
        ..msg("a", text)
    };
    restored.messages.push(keyed("k1 accepted", "k1"));
    restored
        .seen
        .insert(&addr("a"), &Arc::from("k1"), crate::clock::now_ms());
    restored.recorded.push(keyed("k1 retried", "k1"));
    restored.recorded.push(keyed("k2 in transit", "k2"));
    restored.recorded.push(keyed("k2 retried", "k2"));
    let mut h = start_restored(app, 0, 1, restored);
    let (call, answer) = h.call("the restored batch").await;
    let mut applied = values(&call);
    answer.send(done(Effects::default())).unwrap();
    let (call, answer) = h.call("the batch of what was recorded").await;
    applied.extend(values(&call));
    answer.send(done(Effects::default())).unwrap();
    assert_eq!(applied, ["k1 accepted", "k2 in transit"]);
    h.idle().await;
    nothing(&h.inbox, &mut h.calls, "a second application of a retried input").await;
    assert_eq!(h.metrics.ingress_duplicates.get(), 2);
}
