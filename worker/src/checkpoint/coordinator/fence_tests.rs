//! The coordinator's task against a store whose manifest writes are slow: a rollback that
//! starts while a manifest write is in flight waits for it, so the restore sees the checkpoint
//! that write completed (and whatever it acknowledged stays true).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::core::Settings;
use super::{Coordinator, Event, Member, MemberFuture};
use crate::checkpoint::store::CheckpointStore;
use crate::inbox::{Current, Entry, Inbox, Input};
use crate::metrics::Metrics;
use crate::stop::CancellationToken;

type BoxStream<T> = std::pin::Pin<Box<dyn Stream<Item = T> + Send>>;

/// In memory, with every manifest write held back for `delay`.
#[derive(Debug)]
struct SlowManifests {
    inner: InMemory,
    delay: Duration,
}

impl fmt::Display for SlowManifests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlowManifests({:?})", self.delay)
    }
}

#[tonic::async_trait]
impl ObjectStore for SlowManifests {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        if location.filename() == Some("MANIFEST.json") {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(&self, locations: BoxStream<Result<Path>>) -> BoxStream<Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A worker that restores at once and tells the test what it restored.
struct FakeMember {
    restores: mpsc::UnboundedSender<(u64, u64)>,
    incarnation: Arc<Mutex<u64>>,
}

impl Member for FakeMember {
    fn restore(
        &self,
        generation: u64,
        checkpoint: u64,
        _: Arc<[crate::poison::MessageId]>,
    ) -> MemberFuture<std::result::Result<u64, super::RestoreFailure>> {
        let _ = self.restores.send((generation, checkpoint));
        let incarnation = *self.incarnation.lock().unwrap();
        Box::pin(async move { Ok(incarnation) })
    }
    fn completed(&self, _: u64, _: u64) -> MemberFuture<()> {
        Box::pin(async {})
    }
    fn exit(&self, _: u64, _: u64) -> MemberFuture<()> {
        Box::pin(async {})
    }
    fn ping(
        &self,
        _: u64,
        _: Duration,
    ) -> MemberFuture<std::result::Result<(u64, Vec<crate::poison::InFlight>), String>> {
        Box::pin(async { Ok((0, Vec::new())) })
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within 20 s"))
        .unwrap_or_else(|| panic!("{what}: channel closed"))
}

#[tokio::test]
async fn a_rollback_waits_for_the_manifest_write_in_flight() {
    let delay = Duration::from_millis(1500);
    let store = CheckpointStore::over(
        Arc::new(SlowManifests {
            inner: InMemory::new(),
            delay,
        }),
        "app",
    );
    let shutdown = CancellationToken::new();
    let (current_tx, current) = Current::new(shutdown.clone());
    let (restores_tx, mut restores) = mpsc::unbounded_channel();
    let incarnation = Arc::new(Mutex::new(1));
    let (tx, events) = mpsc::unbounded_channel();
    let coordinator = Coordinator {
        settings: Settings {
            application: "app".into(),
            namespace: None,
            uid: None,
            workers: 1,
            key_groups: 8,
            interval: Some(Duration::from_secs(3600)),
            min_pause: None,
            failure_timeout: Duration::from_secs(3600),
            me: 0,
            poison_after: 3,
        },
        events,
        tx: tx.clone(),
        members: vec![Arc::new(FakeMember {
            restores: restores_tx,
            incarnation: incarnation.clone(),
        })],
        me: 0,
        current,
        store: Some(store.clone()),
        retained: 10,
        metrics: Arc::new(Metrics::new()),
        spans: Default::default(),
        data_loss: Default::default(),
        suspects: Default::default(),
        shutdown: shutdown.clone(),
    };
    let task = tokio::spawn(coordinator.run());
    let (g1, from) = next(&mut restores, "the first restore").await;
    assert_eq!(from, 0, "nothing to restore yet");
    let (inbox, mut inputs) = Inbox::channel();
    current_tx.send_replace(Some(Entry {
        generation: g1,
        restored: 0,
        inbox,
        stop: shutdown.child_token(),
    }));
    // Start checkpoint 1 now (the interval is an hour) and write this worker's part.
    tx.send(Event::Eager).unwrap();
    let n = loop {
        if let Input::Trigger(n) = next(&mut inputs, "the trigger").await {
            break n;
        }
    };
    let info = store.put_part(n, g1, 0, Bytes::from_static(b"state")).await.unwrap();
    tx.send(Event::Part {
        generation: g1,
        checkpoint: n,
        worker: 0,
        result: Ok(info),
        clean: true,
    })
    .unwrap();
    // The manifest is on its way (slowly) when the worker restarts.
    tokio::time::sleep(delay / 3).await;
    assert!(
        store.completed().await.unwrap().is_empty(),
        "the manifest has not landed yet"
    );
    *incarnation.lock().unwrap() = 2;
    tx.send(Event::Join {
        worker: 0,
        incarnation: 2,
    })
    .unwrap();
    let (g2, restored) = next(&mut restores, "the rollback's restore").await;
    assert!(g2 > g1);
    assert_eq!(
        restored, n,
        "the rollback listed the storage before the manifest write in flight had ended"
    );
    shutdown.cancel();
    task.await.unwrap();
}
