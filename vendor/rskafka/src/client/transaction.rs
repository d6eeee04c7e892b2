//! SPINDLE: a transactional producer's calls to its transaction coordinator (KIP-98):
//! InitProducerId, AddPartitionsToTxn and EndTxn, for one transactional id. The records
//! themselves go through [`PartitionClient::produce_transactional`](super::partition::PartitionClient::produce_transactional).
//!
//! Retried inside a call (within the client's backoff deadline): a lost connection or a
//! coordinator that moved (`NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE`: looked up again),
//! `COORDINATOR_LOAD_IN_PROGRESS`, and `CONCURRENT_TRANSACTIONS` (the coordinator is still
//! completing the previous transaction). Anything else — `PRODUCER_FENCED`,
//! `INVALID_PRODUCER_EPOCH`, `INVALID_TXN_STATE`, ... — is returned. (Throttle times are not
//! honoured: a producer makes a few of these calls per transaction.)

use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::{
    backoff::{Backoff, BackoffConfig, ErrorOrThrottle},
    client::error::{Error, RequestContext, Result},
    connection::{BrokerCache, BrokerConnection, BrokerConnector},
    messenger::RequestError,
    protocol::{
        error::Error as ProtocolError,
        messages::{
            AddPartitionsToTxnRequest, AddPartitionsToTxnTopic, EndTxnRequest,
            FindCoordinatorRequest, InitProducerIdRequest,
        },
        primitives::{Boolean, Int8, Int16, Int32, Int64, NullableString, String_},
    },
};

/// A producer id and epoch, as InitProducerId handed them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// What a record batch of a transaction carries besides its records.
#[derive(Debug, Clone)]
pub struct TransactionalBatch {
    pub transactional_id: String,
    pub producer: ProducerIdentity,
    /// The sequence number of the batch's first record in its partition (0 after
    /// InitProducerId, then growing by the number of records produced).
    pub base_sequence: i32,
}

pub struct TransactionClient {
    brokers: Arc<BrokerConnector>,
    backoff_config: Arc<BackoffConfig>,
    transactional_id: String,
    /// The coordinator's connection, looked up again after it failed or moved.
    coordinator: Mutex<Option<BrokerConnection>>,
}

impl std::fmt::Debug for TransactionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TransactionClient({})", self.transactional_id)
    }
}

/// One attempt's failure: whether to try again, and whether the coordinator must be looked up
/// again first.
enum Failure {
    Retry { error: Error, relookup: bool },
    Fatal(Error),
}

impl TransactionClient {
    pub(super) fn new(
        brokers: Arc<BrokerConnector>,
        backoff_config: Arc<BackoffConfig>,
        transactional_id: String,
    ) -> Self {
        Self {
            brokers,
            backoff_config,
            transactional_id,
            coordinator: Mutex::new(None),
        }
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// A new epoch for the transactional id: every producer with an older one is fenced, and
    /// the transaction it left open is aborted (the call returns once it is).
    pub async fn init_producer_id(&self, transaction_timeout_ms: i32) -> Result<ProducerIdentity> {
        let request = &InitProducerIdRequest {
            transactional_id: NullableString(Some(self.transactional_id.clone())),
            transaction_timeout_ms: Int32(transaction_timeout_ms),
        };
        self.call("init_producer_id", || async move {
            let conn = self.coordinator().await?;
            let response = conn.request(request).await.map_err(Self::request_failed)?;
            self.check(response.error)?;
            Ok(ProducerIdentity {
                producer_id: response.producer_id.0,
                producer_epoch: response.producer_epoch.0,
            })
        })
        .await
    }

    /// Adds partitions to the open transaction (opening it with the first).
    pub async fn add_partitions(
        &self,
        producer: ProducerIdentity,
        partitions: &[(String, Vec<i32>)],
    ) -> Result<()> {
        let request = &AddPartitionsToTxnRequest {
            transactional_id: String_(self.transactional_id.clone()),
            producer_id: Int64(producer.producer_id),
            producer_epoch: Int16(producer.producer_epoch),
            topics: partitions
                .iter()
                .map(|(t, ps)| AddPartitionsToTxnTopic {
                    name: String_(t.clone()),
                    partitions: ps.iter().copied().map(Int32).collect(),
                })
                .collect(),
        };
        self.call("add_partitions_to_txn", || async move {
            let conn = self.coordinator().await?;
            let response = conn.request(request).await.map_err(Self::request_failed)?;
            for topic in response.results {
                for (_, error) in topic.results {
                    self.check(error)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Commits (`commit`) or aborts the open transaction.
    pub async fn end(&self, producer: ProducerIdentity, commit: bool) -> Result<()> {
        let request = &EndTxnRequest {
            transactional_id: String_(self.transactional_id.clone()),
            producer_id: Int64(producer.producer_id),
            producer_epoch: Int16(producer.producer_epoch),
            committed: Boolean(commit),
        };
        self.call("end_txn", || async move {
            let conn = self.coordinator().await?;
            let response = conn.request(request).await.map_err(Self::request_failed)?;
            self.check(response.error)
        })
        .await
    }

    fn request_failed(e: RequestError) -> Failure {
        Failure::Retry {
            error: e.into(),
            relookup: true,
        }
    }

    fn check(&self, error: Option<ProtocolError>) -> Result<(), Failure> {
        let Some(e) = error else {
            return Ok(());
        };
        let error = Error::ServerError {
            protocol_error: e,
            error_message: None,
            request: RequestContext::Transaction(self.transactional_id.clone()),
            response: None,
            is_virtual: false,
        };
        Err(match e {
            ProtocolError::NotCoordinator | ProtocolError::CoordinatorNotAvailable => {
                Failure::Retry {
                    error,
                    relookup: true,
                }
            }
            ProtocolError::CoordinatorLoadInProgress | ProtocolError::ConcurrentTransactions => {
                Failure::Retry {
                    error,
                    relookup: false,
                }
            }
            _ => Failure::Fatal(error),
        })
    }

    async fn call<T: Send, R, F>(&self, name: &str, f: R) -> Result<T>
    where
        R: (Fn() -> F) + Send + Sync,
        F: std::future::Future<Output = Result<T, Failure>> + Send,
    {
        let mut backoff = Backoff::new(&self.backoff_config);
        backoff
            .retry_with_backoff(name, || async {
                match f().await {
                    Ok(v) => ControlFlow::Break(Ok(v)),
                    Err(Failure::Fatal(e)) => ControlFlow::Break(Err(e)),
                    Err(Failure::Retry { error, relookup }) => {
                        debug!(transactional_id = %self.transactional_id, e = %error, "transaction call failed; retrying");
                        if relookup {
                            self.coordinator.lock().await.take();
                        }
                        ControlFlow::Continue(ErrorOrThrottle::Error(error))
                    }
                }
            })
            .await
            .map_err(Error::RetryFailed)?
    }

    /// The transaction coordinator's connection (FindCoordinator through any broker).
    async fn coordinator(&self) -> Result<BrokerConnection, Failure> {
        let mut current = self.coordinator.lock().await;
        if let Some(c) = &*current {
            return Ok(Arc::clone(c));
        }
        let retry = |error: Error| Failure::Retry {
            error,
            relookup: true,
        };
        let (any, r#gen) = (&*self.brokers).get().await.map_err(|e| retry(e.into()))?;
        let request = &FindCoordinatorRequest {
            key: String_(self.transactional_id.clone()),
            key_type: Int8(1),
        };
        let response = match any.request(request).await {
            Ok(r) => r,
            Err(e) => {
                (&*self.brokers)
                    .invalidate("transaction client: connection broken", r#gen)
                    .await;
                return Err(retry(e.into()));
            }
        };
        self.check(response.error)?;
        let node = response.node_id.0;
        let conn = match self
            .brokers
            .connect(node)
            .await
            .map_err(|e| retry(e.into()))?
        {
            Some(c) => c,
            None => {
                // A broker the topology does not know yet: learn it, then try again.
                let _ = self.brokers.refresh_metadata().await;
                return Err(retry(Error::InvalidResponse(format!(
                    "transaction coordinator {node} ({}:{}) is not in the metadata",
                    response.host.0, response.port.0
                ))));
            }
        };
        info!(transactional_id = %self.transactional_id, node, "connected to the transaction coordinator");
        *current = Some(Arc::clone(&conn));
        Ok(conn)
    }
}
