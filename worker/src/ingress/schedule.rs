//! Schedule ingress: one worker fires a schedule's ticks, each a message to its target. A
//! schedule is a source whose position is the last tick fired (Unix epoch ms): a tick's
//! message and the position past it reach the partition in one input, so a snapshot holds a
//! tick's message (or its effects) exactly when it holds the position — and after any restore
//! the schedule goes on from the last tick the checkpoint fired. Ticks that passed meanwhile
//! are handled by the schedule's `catchUp` (docs/connectors.md).
//!
//! The first start records the start time as the position, so ticks missed from then on are
//! caught up too.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spindle_protocol::Primitive;
use spindle_spec::schedule::split_target;
use spindle_spec::{CatchUp, Plan, ScheduleIngress, TypeName};

use super::sources::{SourceContext, Taken};
use crate::clock::now_ms;
use crate::inbox::Positions;
use crate::message::{Address, Envelope, Value};

/// Most missed ticks fired in one step when catching up (`catchUp: all`).
const CATCH_UP_CHUNK: usize = 256;

/// The checkpoint key of a schedule's last tick.
pub fn position_key(ingress: &str) -> String {
    format!("schedule/{ingress}")
}

/// What a tick sends.
#[derive(Debug, Clone)]
enum Payload {
    /// The tick's time as `io.statefun.types/long`.
    Tick,
    Fixed(Value),
}

pub struct ScheduleSource {
    ctx: SourceContext,
    name: String,
    key: Arc<str>,
    plan: Plan,
    target: Address,
    payload: Payload,
    catch_up: CatchUp,
    restored: Option<i64>,
}

impl ScheduleSource {
    /// The schedule of a validated spec.
    pub fn new(ctx: SourceContext, name: &str, spec: &ScheduleIngress, positions: &Positions) -> ScheduleSource {
        let key: Arc<str> = position_key(name).into();
        let plan = Plan::new(spec).expect("validated spec has a valid schedule");
        let (ty, id) = split_target(&spec.target).expect("validated spec has a valid target");
        let target = Address::new(TypeName::parse(ty).expect("validated target type"), id);
        let payload = match (&spec.value_type, &spec.value) {
            (Some(t), Some(v)) => Payload::Fixed(fixed_value(t, v)),
            _ => Payload::Tick,
        };
        ScheduleSource {
            restored: positions.get(&key).copied(),
            ctx,
            name: name.to_string(),
            key,
            plan,
            target,
            payload,
            catch_up: spec.catch_up,
        }
    }

    pub async fn run(self) {
        let last = match self.restored {
            Some(last) => last,
            None => {
                // Recorded at once: ticks missed after the first start are caught up too.
                let start = now_ms() as i64;
                if !self.ctx.deliver(&self.key, Vec::new(), start).await {
                    return;
                }
                start
            }
        };
        let Some(mut last) = self.catch_up(last).await else {
            return;
        };
        loop {
            let Some(next) = self.plan.next_after(last) else {
                tracing::info!(ingress = %self.name, "the schedule fires no more");
                return;
            };
            let wait = Duration::from_millis(next.saturating_sub(now_ms() as i64).max(0) as u64);
            if !self.ctx.pause(wait).await {
                return;
            }
            // A wall clock that jumped back: wait for the tick's time again.
            if (now_ms() as i64) < next {
                continue;
            }
            if !self.fire(vec![next]).await {
                return;
            }
            last = next;
        }
    }

    /// Deals with the ticks after `last` that are due already: `None` once the generation
    /// stopped, otherwise the new last tick.
    async fn catch_up(&self, last: i64) -> Option<i64> {
        let now = now_ms() as i64;
        let mut due = std::iter::successors(self.plan.next_after(last), |t| self.plan.next_after(*t))
            .take_while(|t| *t <= now)
            .peekable();
        if due.peek().is_none() {
            return Some(last);
        }
        match self.catch_up {
            CatchUp::All => {
                let mut at = last;
                let mut fired = 0u64;
                loop {
                    let chunk: Vec<i64> = due.by_ref().take(CATCH_UP_CHUNK).collect();
                    let Some(&end) = chunk.last() else { break };
                    fired += chunk.len() as u64;
                    if !self.fire(chunk).await {
                        return None;
                    }
                    at = end;
                }
                tracing::info!(ingress = %self.name, ticks = fired, "caught up on missed ticks");
                Some(at)
            }
            CatchUp::Latest | CatchUp::None => {
                let (skipped, latest) = due.fold((0u64, last), |(n, _), t| (n + 1, t));
                let fire = self.catch_up == CatchUp::Latest;
                tracing::info!(
                    ingress = %self.name,
                    missed = skipped,
                    fired = u8::from(fire),
                    "missed ticks: skipped but {}",
                    if fire { "the latest" } else { "none" }
                );
                let ok = match fire {
                    true => self.fire(vec![latest]).await,
                    // The position moves past the skipped ticks, so they stay skipped.
                    false => self.ctx.deliver(&self.key, Vec::new(), latest).await,
                };
                ok.then_some(latest)
            }
        }
    }

    /// Sends the messages of `ticks` (in order) with the position at the last one.
    async fn fire(&self, ticks: Vec<i64>) -> bool {
        let Some(&last) = ticks.last() else {
            return true;
        };
        let records = ticks
            .into_iter()
            .map(|t| (Taken::Messages(vec![self.message(t)]), t))
            .collect();
        self.ctx.deliver(&self.key, records, last).await
    }

    fn message(&self, tick: i64) -> Envelope {
        let value = match &self.payload {
            Payload::Tick => {
                let p = Primitive::Long(tick);
                Value::new(p.typename(), p.encode())
            }
            Payload::Fixed(v) => v.clone(),
        };
        Envelope {
            target: self.target.clone(),
            caller: None,
            value,
            dedup: None,
            trace: None,
        }
    }
}

/// The value of a schedule with `valueType` and `value` (validated).
fn fixed_value(typename: &str, value: &str) -> Value {
    let t = TypeName::parse(typename).expect("validated value type");
    let primitive = match (t.namespace(), t.name()) {
        ("io.statefun.types", "string") => Some(Primitive::String(value.to_string())),
        ("io.statefun.types", "int") => value.parse().ok().map(Primitive::Int),
        ("io.statefun.types", "long") => value.parse().ok().map(Primitive::Long),
        ("io.statefun.types", "bool") => value.parse().ok().map(Primitive::Bool),
        ("io.statefun.types", "float") => value.parse().ok().map(Primitive::Float),
        ("io.statefun.types", "double") => value.parse().ok().map(Primitive::Double),
        _ => None,
    };
    match primitive {
        Some(p) => Value::new(typename, p.encode()),
        None => Value::new(typename, Bytes::copy_from_slice(value.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_are_primitives_or_the_bytes_written() {
        let v = fixed_value("io.statefun.types/long", "42");
        assert_eq!(Primitive::decode(&v.typename, &v.bytes), Some(Primitive::Long(42)));
        let v = fixed_value("io.statefun.types/string", "tick");
        assert_eq!(
            Primitive::decode(&v.typename, &v.bytes),
            Some(Primitive::String("tick".into()))
        );
        let v = fixed_value("shop/Sweep", r#"{"all":true}"#);
        assert_eq!(&v.bytes[..], br#"{"all":true}"#);
    }
}
