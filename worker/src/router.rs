//! The routing boundary: everything that hands a message to the data plane (ingresses now;
//! peers over gRPC in the distributed release) goes through a `Router`, which decides which
//! partition owns the target. Today one partition owns every key group.

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use prometheus_client::metrics::gauge::Gauge;

use crate::message::Envelope;
use crate::partition::Input;

/// An ingress record's claim on the bounded admission budget (`maxBufferedMessages`). It is
/// held until the record's invocation has completed; dropping it frees the slot.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    in_process: Gauge,
}

impl Admission {
    pub fn new(permit: OwnedSemaphorePermit, in_process: Gauge) -> Admission {
        in_process.inc();
        Admission {
            _permit: permit,
            in_process,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.in_process.dec();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the worker is shutting down")]
pub struct Closed;

#[derive(Clone, Debug)]
pub struct Router {
    // Unbounded because admission is bounded before sending (see `Admission`); a bounded
    // channel here could deadlock a partition that routes to itself.
    partition: mpsc::UnboundedSender<Input>,
}

impl Router {
    pub fn new(partition: mpsc::UnboundedSender<Input>) -> Router {
        Router { partition }
    }

    pub fn deliver(&self, env: Envelope, admission: Option<Admission>) -> Result<(), Closed> {
        self.partition
            .send(Input::Deliver(env, admission))
            .map_err(|_| Closed)
    }

    pub fn send(&self, input: Input) -> Result<(), Closed> {
        self.partition.send(input).map_err(|_| Closed)
    }
}
