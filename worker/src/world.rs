//! One generation of the data plane: the partition, the links to the peers and the checkpoint
//! uploader. A rollback stops the world and starts a new one from the restored checkpoint, so
//! nothing of the old generation's memory survives it.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use crate::checkpoint::snapshot::Restored;
use crate::checkpoint::{uploader, wants};
use crate::node::Node;
use crate::partition::{Epochs, Partition};
use crate::peer::link::Link;
use crate::peer::proto;
use crate::router::Router;

pub struct World {
    pub generation: u64,
    /// The checkpoint this generation started from (0: none).
    pub restored: u64,
    pub router: Router,
    /// Per sending peer: the highest batch delivered in this generation. A tokio mutex because
    /// delivery waits for admission while holding it: two streams from one sender (a
    /// reconnect racing the old stream) then deliver each batch exactly once, in order.
    pub delivered: HashMap<u32, Arc<Mutex<u64>>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<JoinSet<()>>,
}

impl World {
    pub fn start(node: &Arc<Node>, generation: u64, restored: Restored) -> Arc<World> {
        let app = &node.app;
        let (me, workers) = (node.cluster.index, node.cluster.workers());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut peer_senders = Vec::new();
        for (i, addr) in node.cluster.peers.iter().enumerate() {
            let i = i as u32;
            if i == me {
                peer_senders.push(None);
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            peer_senders.push(Some(tx));
            let link = Link {
                to: i,
                addr: addr.clone(),
                hello: proto::Hello {
                    application: app.name.clone(),
                    from_worker: me,
                    to_worker: i,
                    workers,
                    key_groups: app.key_groups,
                    generation,
                },
                outbound: rx,
                metrics: node.metrics.clone(),
                shutdown: stopped.clone(),
            };
            tasks.spawn(link.run());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let router = Router::new(me, app.key_groups, tx, peer_senders, node.metrics.clone());
        let epochs = node.checkpoints_on().then(|| {
            let (snapshots, snapshots_rx) = mpsc::unbounded_channel();
            tasks.spawn(uploader::run(node.clone(), generation, snapshots_rx, stopped.clone()));
            let wants = app.checkpoint.min_pause.map(|_| {
                let (tx, rx) = watch::channel(0);
                tasks.spawn(wants::run(node.clone(), generation, rx, stopped.clone()));
                tx
            });
            Epochs::new(
                app.name.as_str().into(),
                me,
                workers,
                restored.checkpoint,
                snapshots,
                wants,
                node.metrics.clone(),
            )
        });
        let from = restored.checkpoint;
        let positions = restored.positions.clone();
        let epochs = epochs.map(
            |e| match crate::ingress::sources::committer(node, &stopped, &mut tasks) {
                Some(tx) => e.report_positions(tx),
                None => e,
            },
        );
        let partition = Partition::new(
            app.clone(),
            router.clone(),
            node.egress.clone(),
            node.dead_letters.clone(),
            node.metrics.clone(),
            epochs,
            restored,
        );
        tasks.spawn(partition.run(rx, stopped.clone()));
        crate::ingress::sources::start(node, &router, &positions, &stopped, &mut tasks);
        let delivered = (0..workers)
            .filter(|&i| i != me)
            .map(|i| (i, Arc::new(Mutex::new(0))))
            .collect();
        Arc::new(World {
            generation,
            restored: from,
            router,
            delivered,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// Turns true when this generation ends; streams bound to it close then.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Ends the generation: the partition (abandoning its invocations), links and uploader.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}
