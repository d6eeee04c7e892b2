//! The sending side of one ordered worker pair: what the partition's outbound switch sends to
//! one peer, as numbered batches on a stream that is reopened when it breaks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::inbox::Admission;
use crate::memory::Charge;
use crate::message::Envelope;
use crate::metrics::Metrics;
use crate::proto::peer::{self as proto, Frame, frame, peer_client::PeerClient, reply};
use crate::proto::{common, to_wire};
use crate::stop::CancellationToken;
use crate::tls::peer::{self as tls, PeerTls};

/// What goes down the channel to a peer, in order. Only the partition's outbound switch
/// sends these (it owns the senders), so a barrier follows exactly the messages its snapshot
/// saw as sent.
#[derive(Debug)]
// Messages are nearly everything sent: boxing them to shrink the rare barrier would cost an
// allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outgoing {
    Message {
        env: Envelope,
        admission: Option<Admission>,
        /// Its bytes in the peer queues, given back once the peer has it.
        charge: Charge,
    },
    /// This worker's epoch `n` ends here on this channel (checkpoint `n`).
    Barrier(u64),
}

fn push(
    unacked: &mut VecDeque<Unacked>,
    next_seq: &mut u64,
    envelopes: Vec<common::Envelope>,
    held: Held,
    barrier: u64,
) {
    unacked.push_back(Unacked {
        batch: proto::Batch {
            seq: *next_seq,
            envelopes,
            barrier,
        },
        _held: held,
    });
    *next_seq += 1;
}

/// Most envelopes in one batch frame.
const MAX_BATCH: usize = 512;
/// A batch is closed once its envelopes reach this size: with the largest envelope the
/// partition forwards ([`super::MAX_ENVELOPE_BYTES`]), a frame stays below [`super::MAX_FRAME_BYTES`].
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Frames queued for the stream beyond what HTTP/2 flow control lets through; when full, the
/// link stops taking envelopes and its peer's slowness shows up at this worker's ingress.
const STREAM_BUFFER: usize = 8;
// Short: after a rollback, peers refuse until they have restored too (a few ms to seconds), and
// every millisecond of waiting here adds to the recovery time.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A batch sent but not yet acknowledged: re-sent after a reconnect.
struct Unacked {
    batch: proto::Batch,
    // Held until the peer has the messages in its mailboxes.
    _held: Held,
}

/// The ingress admissions and memory charges of a batch's messages.
#[derive(Default)]
struct Held {
    _admissions: Vec<Admission>,
    _charges: Vec<Charge>,
}

pub struct Link {
    pub to: u32,
    pub addr: String,
    pub hello: proto::Hello,
    pub outbound: mpsc::UnboundedReceiver<Outgoing>,
    /// Mutual TLS to the peer (`None`: plain text).
    pub tls: Option<Arc<PeerTls>>,
    pub metrics: Arc<Metrics>,
    /// The generation's end.
    pub stop: CancellationToken,
}

enum StreamEnd {
    Shutdown,
    Broken(String),
}

impl Link {
    pub async fn run(mut self) {
        let mut unacked: VecDeque<Unacked> = VecDeque::new();
        let mut next_seq = 1u64;
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        loop {
            let end = self.stream(&mut unacked, &mut next_seq, &mut backoff).await;
            let reason = match end {
                StreamEnd::Shutdown => return self.discard(&unacked),
                StreamEnd::Broken(reason) => reason,
            };
            failures += 1;
            self.metrics.peer_reconnects.inc();
            // Peers start in any order: the first failures are expected, later ones are news.
            if failures > 20 {
                tracing::warn!(peer = self.to, addr = %self.addr, %reason, "peer stream failed; reconnecting");
            } else {
                tracing::debug!(peer = self.to, addr = %self.addr, %reason, "peer stream failed; reconnecting");
            }
            if !crate::stop::pause(&self.stop, backoff).await {
                return self.discard(&unacked);
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One stream's life: handshake, re-send what is unacknowledged, then send and collect
    /// acknowledgements until it breaks or the worker stops.
    async fn stream(
        &mut self,
        unacked: &mut VecDeque<Unacked>,
        next_seq: &mut u64,
        backoff: &mut Duration,
    ) -> StreamEnd {
        let endpoint = match tls::endpoint(&self.addr, Duration::from_secs(2)) {
            Ok(e) => e,
            Err(e) => return StreamEnd::Broken(e),
        };
        let channel = match tls::connect(self.tls.as_deref(), endpoint, self.to).await {
            Ok(c) => c,
            Err(e) => return StreamEnd::Broken(format!("connect: {e}")),
        };
        let (tx, rx) = mpsc::channel::<Frame>(STREAM_BUFFER);
        let hello = Frame {
            kind: Some(frame::Kind::Hello(self.hello.clone())),
        };
        tx.send(hello)
            .await
            .expect("the receiver is alive until the stream is dropped");
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(super::MAX_FRAME_BYTES)
            .max_decoding_message_size(super::MAX_FRAME_BYTES);
        let mut replies = match client.exchange(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                if matches!(status.code(), Code::FailedPrecondition | Code::PermissionDenied) {
                    self.metrics.peer_refused.inc();
                    tracing::error!(peer = self.to, addr = %self.addr, reason = status.message(), "peer refused the handshake");
                }
                return StreamEnd::Broken(format!("handshake: {status}"));
            }
        };
        match replies.message().await {
            Ok(Some(proto::Reply {
                kind: Some(reply::Kind::Welcome(w)),
            })) => {
                self.acknowledge(unacked, w.delivered);
            }
            Ok(other) => return StreamEnd::Broken(format!("expected Welcome, got {other:?}")),
            Err(status) => return StreamEnd::Broken(format!("handshake: {status}")),
        }
        *backoff = FIRST_BACKOFF;

        // unacked[..sent] went out on this stream; the rest (everything, after a reconnect)
        // is still to send. New envelopes are taken only once all of it is out.
        let mut sent = 0usize;
        let mut buf = Vec::with_capacity(MAX_BATCH);
        let stop = self.stop.clone();
        loop {
            tokio::select! {
                reply = replies.message() => match reply {
                    Ok(Some(proto::Reply { kind: Some(reply::Kind::Ack(a)) })) => {
                        let acked = self.acknowledge(unacked, a.delivered);
                        sent = sent.saturating_sub(acked);
                    }
                    Ok(Some(other)) => return StreamEnd::Broken(format!("unexpected reply {other:?}")),
                    Ok(None) => return StreamEnd::Broken("the peer closed the stream".into()),
                    Err(status) => return StreamEnd::Broken(status.to_string()),
                },
                n = self.outbound.recv_many(&mut buf, MAX_BATCH), if sent == unacked.len() => {
                    if n == 0 {
                        return StreamEnd::Shutdown;
                    }
                    let mut envelopes = Vec::with_capacity(n);
                    let mut held = Held::default();
                    let mut bytes = 0;
                    for o in buf.drain(..) {
                        match o {
                            Outgoing::Message { env, admission, charge } => {
                                let wire = to_wire(&env);
                                // Batches stay well below the frame limit, whatever the sizes.
                                let size = wire.encoded_len();
                                if !envelopes.is_empty() && bytes + size > MAX_BATCH_BYTES {
                                    let envelopes = std::mem::take(&mut envelopes);
                                    push(unacked, next_seq, envelopes, std::mem::take(&mut held), 0);
                                    bytes = 0;
                                }
                                bytes += size;
                                envelopes.push(wire);
                                held._admissions.extend(admission);
                                held._charges.push(charge);
                            }
                            // A barrier ends its batch, so it follows exactly what preceded it.
                            Outgoing::Barrier(n) => {
                                let envelopes = std::mem::take(&mut envelopes);
                                push(unacked, next_seq, envelopes, std::mem::take(&mut held), n);
                            }
                        }
                    }
                    if !envelopes.is_empty() {
                        push(unacked, next_seq, envelopes, held, 0);
                    }
                }
                // Sends only when the stream has room, so acknowledgements keep being read
                // while the peer is slow (the peer may be waiting for us to read them).
                permit = tx.reserve(), if sent < unacked.len() => {
                    let Ok(permit) = permit else {
                        return StreamEnd::Broken("stream closed".into());
                    };
                    let batch = unacked[sent].batch.clone();
                    sent += 1;
                    self.metrics.peer_batches_sent.inc();
                    self.metrics.peer_envelopes_sent.inc_by(batch.envelopes.len() as u64);
                    self.metrics.peer_bytes_sent.inc_by(batch.encoded_len() as u64);
                    permit.send(Frame { kind: Some(frame::Kind::Batch(batch)) });
                }
                _ = stop.cancelled() => return StreamEnd::Shutdown,
            }
        }
    }

    /// The messages still here when the link ends (its generation is over) are no longer
    /// pending: a rollback restores them from the checkpoint.
    fn discard(&mut self, unacked: &VecDeque<Unacked>) {
        let mut n: usize = unacked.iter().map(|u| u.batch.envelopes.len()).sum();
        while let Ok(o) = self.outbound.try_recv() {
            n += matches!(o, Outgoing::Message { .. }) as usize;
        }
        self.metrics.peer_pending.dec_by(n as i64);
    }

    /// Forgets batches the peer has delivered; returns how many.
    fn acknowledge(&self, unacked: &mut VecDeque<Unacked>, delivered: u64) -> usize {
        let mut n = 0;
        while unacked.front().is_some_and(|u| u.batch.seq <= delivered) {
            let u = unacked.pop_front().expect("checked");
            self.metrics.peer_pending.dec_by(u.batch.envelopes.len() as i64);
            n += 1;
        }
        n
    }
}
