//! The requests of this worker process that wait for their reply, by request id. The ingress
//! registers one per request and gives its message the reply address; the partition, when the
//! checkpoint containing a reply has completed, hands the reply over. Outlives generations (a
//! rollback does not end a waiting request: its reply may come again from the replay), not
//! the process (a restarted worker's requests died with their connections).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::ReplyTo;
use crate::message::{Address, Value};

/// A reply, released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub value: Value,
    /// The completed checkpoint that released it (0: checkpoints are off).
    pub checkpoint: u64,
}

pub struct Replies {
    worker: u32,
    /// This process's incarnation: request ids of a restarted worker never repeat an earlier
    /// process's, so a replayed reply for a request that died with its process answers nobody.
    incarnation: u64,
    next: AtomicU64,
    // A std mutex: held for one map operation, never across an await.
    waiting: Mutex<HashMap<Arc<str>, oneshot::Sender<Released>>>,
}

/// One waiting request; dropping it (answered, timed out, the client gone) forgets it.
pub struct Waiting {
    replies: Arc<Replies>,
    to: ReplyTo,
    rx: oneshot::Receiver<Released>,
}

impl Replies {
    pub fn new(worker: u32, incarnation: u64) -> Arc<Replies> {
        Arc::new(Replies {
            worker,
            incarnation,
            next: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// A new waiting request; `memo` is the ingress message's target and idempotency key, if
    /// it has one (the reply is then remembered with the key).
    pub fn register(self: &Arc<Self>, memo: Option<(Address, Arc<str>)>) -> Waiting {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let request: Arc<str> = format!("{:x}.{n}", self.incarnation).into();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(request.clone(), tx);
        Waiting {
            replies: self.clone(),
            to: ReplyTo {
                worker: self.worker,
                request,
                memo,
            },
            rx,
        }
    }

    /// Hands `value` to request `request`; false when no such request waits (answered
    /// already, given up, or of an earlier process).
    pub fn complete(&self, request: &str, value: Value, checkpoint: u64) -> bool {
        let Some(tx) = self.lock().remove(request) else {
            return false;
        };
        tx.send(Released { value, checkpoint }).is_ok()
    }

    /// Requests waiting now.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, oneshot::Sender<Released>>> {
        self.waiting.lock().expect("reply waiters lock")
    }
}

impl Waiting {
    /// The caller the request's message carries.
    pub fn caller(&self) -> Address {
        self.to.address()
    }

    /// Where the reply arrives (a future; it fails when the worker shuts down).
    pub fn reply(&mut self) -> &mut oneshot::Receiver<Released> {
        &mut self.rx
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.replies.lock().remove(&self.to.request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use spindle_spec::TypeName;

    #[tokio::test]
    async fn a_reply_reaches_its_request_once_and_only_while_it_waits() {
        let replies = Replies::new(2, 0xabc);
        let target = Address::new(TypeName::parse("t/f").unwrap(), "x");
        let mut w = replies.register(Some((target.clone(), "k".into())));
        let caller = ReplyTo::parse(&w.caller()).unwrap().unwrap();
        assert_eq!(caller.worker, 2);
        assert_eq!(&*caller.request, "abc.1");
        assert_eq!(caller.memo, Some((target, "k".into())));
        let v = Value::new("t/V", Bytes::from_static(b"1"));
        assert!(replies.complete("abc.1", v.clone(), 7));
        assert!(!replies.complete("abc.1", v.clone(), 8), "answered once");
        assert_eq!(
            w.reply().await.unwrap(),
            Released {
                value: v.clone(),
                checkpoint: 7
            }
        );
        let gone = replies.register(None);
        drop(gone);
        assert_eq!(replies.count(), 0);
        assert!(!replies.complete("abc.2", v, 9), "a request that gave up is forgotten");
    }
}
