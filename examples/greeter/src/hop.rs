//! `example/hop`: forwards a message along a chain of addresses, for benchmarks of routing
//! between workers. Each hop counts itself in the address's state; the last one reports to the
//! `example/totals` egress.

use spindle_sdk::{Address, Context, Functions, HandlerError, Message, ValueSpec};

use crate::{HOP_TYPE, Hop, TOTALS_TYPE, Total};

const HOPS: ValueSpec<i64> = ValueSpec::new("hops");

pub(crate) fn register(functions: &mut Functions) {
    functions.register(HOP_TYPE.clone(), vec![HOPS.decl()], hop);
}

fn hop(ctx: &mut Context<'_>, msg: Message) -> Result<(), HandlerError> {
    let hop = msg.get::<Hop>()?;
    let hops = ctx.get(&HOPS)?.unwrap_or(0).wrapping_add(1);
    ctx.set(&HOPS, &hops);
    if hop.remaining == 0 {
        let key = ctx.address().id.clone();
        ctx.send_egress(
            &TOTALS_TYPE,
            &Total {
                seq: hop.seq,
                key,
                total: hops,
            },
        );
        return Ok(());
    }
    let next = Address::new(HOP_TYPE.clone(), hop.next_id());
    ctx.send(
        &next,
        &Hop {
            remaining: hop.remaining - 1,
            ..hop
        },
    );
    Ok(())
}
