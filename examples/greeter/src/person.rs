//! `example/person`: counts visits, asks the greeter for a greeting, remembers the last one.

use spindle_sdk::{Address, Context, Functions, HandlerError, Message, ValueSpec};

use crate::{GREETER_TYPE, Greet, Greeted, PERSON_TYPE, Visit};

const VISITS: ValueSpec<i64> = ValueSpec::new("visits");
const LAST_GREETING: ValueSpec<String> = ValueSpec::new("last_greeting");

pub(crate) fn register(functions: &mut Functions) {
    functions.register(PERSON_TYPE.clone(), vec![VISITS.decl(), LAST_GREETING.decl()], person);
}

fn person(ctx: &mut Context<'_>, msg: Message) -> Result<(), HandlerError> {
    if msg.is::<Visit>() {
        // Only checks that it is JSON: a visit carries nothing we need.
        msg.get::<Visit>()?;
        let visits = ctx.get(&VISITS)?.unwrap_or(0).saturating_add(1);
        ctx.set(&VISITS, &visits);
        let name = ctx.address().id.clone();
        let greeter = Address::new(GREETER_TYPE.clone(), name.clone());
        ctx.send(&greeter, &Greet { name, visits });
    } else if msg.is::<Greeted>() {
        let greeted = msg.get::<Greeted>()?;
        ctx.set(&LAST_GREETING, &greeted.greeting);
    } else {
        return Err(HandlerError::msg(format!(
            "example/person cannot handle a message of type `{}`",
            msg.typename()
        )));
    }
    Ok(())
}
