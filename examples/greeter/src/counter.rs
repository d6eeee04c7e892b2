//! `example/counter`: a running sum per key, reported after every addition — to the caller
//! when there is one (an HTTP request made with `Spindle-Reply: wait` gets the new total in its
//! response), else to the `example/totals` egress. Small and deterministic, so benchmarks and
//! tests can check every total.

use spindle_sdk::{Context, Functions, HandlerError, Message, ValueSpec};

use crate::{Add, COUNTER_TYPE, TOTALS_TYPE, Total};

const TOTAL: ValueSpec<i64> = ValueSpec::new("total");

pub(crate) fn register(functions: &mut Functions) {
    functions.register(COUNTER_TYPE.clone(), vec![TOTAL.decl()], counter);
}

fn counter(ctx: &mut Context<'_>, msg: Message) -> Result<(), HandlerError> {
    let Add { seq, value } = msg.get::<Add>()?;
    // Wrapping, not panicking: the sum of arbitrary inputs may overflow.
    let total = ctx.get(&TOTAL)?.unwrap_or(0).wrapping_add(value);
    ctx.set(&TOTAL, &total);
    let key = ctx.address().id.clone();
    let total = Total { seq, key, total };
    if ctx.caller().is_some() {
        ctx.reply(&total)?;
    } else {
        ctx.send_egress(&TOTALS_TYPE, &total);
    }
    Ok(())
}
