//! A TCP proxy on loopback that the tests break on purpose: `cut` closes every connection
//! (what a crash or a reset looks like), `partition` keeps them open but lets no byte through
//! in either direction and holds new connections unanswered (what a network partition looks
//! like: nothing fails, everything waits), until `heal`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::procs::Procs;

pub struct Proxy {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    partitioned: watch::Sender<bool>,
    accept: tokio::task::AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (partitioned, gate) = watch::channel(false);
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut gate = gate.clone();
                let task = tokio::spawn(async move {
                    if gate.wait_for(|p| !*p).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ir, ow, gate.clone()) => {}
                        _ = pump(or, iw, gate) => {}
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy {
            addr,
            conns,
            partitioned,
            accept,
        }
    }

    /// Drops every open connection (both sockets close mid-stream): how many there were.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        conns.iter().for_each(|c| c.abort());
        conns.len()
    }

    /// From now on nothing passes, in either direction, until [`Proxy::heal`].
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Copies `from` to `to`, holding what it read while the gate says "partitioned".
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|p| !*p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A proxy on every peer link of `Procs`' workers: `links[i][j]` carries what worker `i` sends
/// worker `j` (its data and the coordinator's control calls), so one worker can be cut off
/// from all the others while its sockets stay open.
pub struct Links(Vec<Vec<Option<Proxy>>>);

impl Links {
    /// Starts the proxies and makes every worker dial its peers through them.
    pub async fn start(procs: &mut Procs) -> Links {
        let n = procs.peers.len();
        let mut links = Vec::new();
        let mut lists = Vec::new();
        for i in 0..n {
            let (mut row, mut list) = (Vec::new(), Vec::new());
            for j in 0..n {
                if i == j {
                    row.push(None);
                    list.push(procs.peers[j].clone());
                } else {
                    let proxy = Proxy::start(procs.peers[j].parse().unwrap()).await;
                    list.push(proxy.addr.to_string());
                    row.push(Some(proxy));
                }
            }
            links.push(row);
            lists.push(list);
        }
        procs.peer_lists = Some(lists);
        Links(links)
    }

    /// Partitions (or heals) worker `w` from all the others: every link to or from it.
    pub fn isolate(&self, w: usize, cut_off: bool) {
        for (i, row) in self.0.iter().enumerate() {
            for (j, proxy) in row.iter().enumerate() {
                if let Some(p) = proxy
                    && (i == w || j == w)
                {
                    if cut_off { p.partition() } else { p.heal() }
                }
            }
        }
    }
}
