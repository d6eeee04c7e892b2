//! The function both systems run: the example counter (`example/counter`'s logic, Rust SDK)
//! registered as `bench/counter`, writing each [`Total`] as a StateFun `KafkaProducerRecord`
//! to `bench/totals` — the one egress value StateFun's generic Kafka egress takes (Spindle's
//! Kafka egress takes it too), so the very same function binary serves Spindle and StateFun.
//! The output topic comes from `OUT_TOPIC`: each system gets its own function process.

use anyhow::Context as _;
use bytes::Bytes;
use spindle_example_greeter::{Add, Total};
use spindle_protocol::Message as _;
use spindle_protocol::egress::KafkaProducerRecord;
use spindle_protocol::typenames::KAFKA_PRODUCER_RECORD;
use spindle_sdk::{Context, DecodeError, Functions, HandlerError, Message, Type, TypeName, ValueSpec};

pub(crate) const COUNTER: &str = "bench/counter";
pub(crate) const TOTALS_EGRESS: &str = "bench/totals";

const TOTAL: ValueSpec<i64> = ValueSpec::new("total");

/// A `KafkaProducerRecord` as an SDK value.
struct ProducerRecord(KafkaProducerRecord);

impl Type for ProducerRecord {
    fn typename() -> &'static str {
        KAFKA_PRODUCER_RECORD
    }

    fn encode(&self) -> Bytes {
        self.0.encode_to_vec().into()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        KafkaProducerRecord::decode(bytes)
            .map(ProducerRecord)
            .map_err(|_| DecodeError::Malformed {
                typename: KAFKA_PRODUCER_RECORD,
            })
    }
}

pub(crate) fn functions(out_topic: String) -> anyhow::Result<Functions> {
    let counter = TypeName::parse(COUNTER)?;
    let egress = TypeName::parse(TOTALS_EGRESS)?;
    let mut functions = Functions::new();
    functions.register(
        counter,
        vec![TOTAL.decl()],
        move |ctx: &mut Context<'_>, msg: Message| {
            let Add { seq, value } = msg.get::<Add>()?;
            let total = ctx.get(&TOTAL)?.unwrap_or(0).wrapping_add(value);
            ctx.set(&TOTAL, &total);
            let key = ctx.address().id.clone();
            let value = serde_json::to_vec(&Total {
                seq,
                key: key.clone(),
                total,
            })
            .map_err(HandlerError::new)?;
            let record = KafkaProducerRecord {
                key,
                value_bytes: value.into(),
                topic: out_topic.clone(),
            };
            ctx.send_egress(&egress, &ProducerRecord(record));
            Ok(())
        },
    );
    Ok(functions)
}

/// `spindle-bench serve-kafka-counter`: serves [`functions`] on 127.0.0.1:$PORT.
pub(crate) async fn serve() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT").context("PORT is not set")?.parse()?;
    let topic = std::env::var("OUT_TOPIC").context("OUT_TOPIC is not set")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    spindle_sdk::serve(listener, std::sync::Arc::new(functions(topic)?), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_protocol::reqreply::{Address, FromFunction, ToFunction, TypedValue, to_function};

    #[test]
    fn a_total_goes_out_as_a_kafka_producer_record_for_the_topic() {
        let functions = functions("out-x".into()).unwrap();
        let add = TypedValue {
            typename: "example/Add".into(),
            has_value: true,
            value: br#"{"seq":7,"value":3}"#.to_vec().into(),
        };
        let request = ToFunction {
            request: Some(to_function::Request::Invocation(to_function::InvocationBatchRequest {
                target: Some(Address {
                    namespace: "bench".into(),
                    r#type: "counter".into(),
                    id: "c1".into(),
                }),
                state: vec![to_function::PersistedValue {
                    state_name: "total".into(),
                    state_value: None,
                }],
                invocations: vec![to_function::Invocation {
                    caller: None,
                    argument: Some(add),
                }],
            })),
        };
        let reply = FromFunction::decode(functions.handle(&request.encode_to_vec()).unwrap()).unwrap();
        let Some(spindle_protocol::reqreply::from_function::Response::InvocationResult(result)) = reply.response else {
            panic!("not an invocation result: {reply:?}");
        };
        let egress = &result.outgoing_egresses[0];
        assert_eq!(
            (egress.egress_namespace.as_str(), egress.egress_type.as_str()),
            ("bench", "totals")
        );
        let arg = egress.argument.as_ref().unwrap();
        assert_eq!(arg.typename, KAFKA_PRODUCER_RECORD);
        let record = KafkaProducerRecord::decode(arg.value.as_ref()).unwrap();
        assert_eq!((record.topic.as_str(), record.key.as_str()), ("out-x", "c1"));
        let total: Total = serde_json::from_slice(&record.value_bytes).unwrap();
        assert_eq!((total.seq, total.key.as_str(), total.total), (7, "c1", 3));
    }
}
