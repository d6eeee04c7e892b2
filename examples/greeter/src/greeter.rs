//! `example/greeter`: turns a visit count into a greeting, publishes it and replies.

use spindle_sdk::{Address, Context, Functions, HandlerError, Message, ValueSpec};

use crate::{GREETER_TYPE, GREETS_TYPE, Greet, Greeted, Greeting, PERSON_TYPE};

const GREETINGS_SENT: ValueSpec<i64> = ValueSpec::new("greetings_sent");

pub(crate) fn register(functions: &mut Functions) {
    functions.register(GREETER_TYPE.clone(), vec![GREETINGS_SENT.decl()], greeter);
}

/// The greeting for someone's `visits`-th visit.
pub fn greeting(name: &str, visits: i64) -> String {
    match visits {
        1 => format!("Hello {name}! Welcome!"),
        2 => format!("Hello again {name}!"),
        _ => format!("Hello {name}, this is visit #{visits}."),
    }
}

fn greeter(ctx: &mut Context<'_>, msg: Message) -> Result<(), HandlerError> {
    let Greet { name, visits } = msg.get::<Greet>()?;
    let greeting = greeting(&name, visits);
    // Reply to whoever asked; a Greet straight from an ingress goes to the person it names,
    // so the person's state reflects it as well.
    let reply_to = match ctx.caller() {
        Some(caller) => caller.clone(),
        None => Address::new(PERSON_TYPE.clone(), name.clone()),
    };
    ctx.send(
        &reply_to,
        &Greeted {
            greeting: greeting.clone(),
        },
    );
    ctx.send_egress(&GREETS_TYPE, &Greeting { name, visits, greeting });
    let sent = ctx.get(&GREETINGS_SENT)?.unwrap_or(0).saturating_add(1);
    ctx.set(&GREETINGS_SENT, &sent);
    Ok(())
}
