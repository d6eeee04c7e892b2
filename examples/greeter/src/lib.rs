//! Example functions written with the Spindle SDK, ported from the StateFun playground's greeter:
//!
//! - `example/person` counts a person's visits and asks `example/greeter` to greet them;
//! - `example/greeter` writes the greeting to the `example/greets` egress and replies to the
//!   person, closing the cycle person → greeter → person;
//! - `example/counter` sums numbers per key and reports each sum to its caller (an HTTP
//!   request made with `Spindle-Reply: wait`) or, without one, to the `example/totals` egress;
//!   `example/hop` forwards a message along a chain of addresses, for benchmarks;
//! - `example/fetch` is an async handler: it fetches a URL over HTTP and replies with the
//!   answer.
//!
//! Messages are JSON ([`messages`]). The `greeter` binary serves them over HTTP ([`run`]).

mod counter;
mod fetch;
mod greeter;
mod hop;
pub mod messages;
mod person;
mod run;

use std::sync::LazyLock;

use spindle_sdk::{Functions, TypeName};

pub use messages::{Add, Fetch, Fetched, Greet, Greeted, Greeting, Hop, Total, Visit};
pub use run::run;

pub const PERSON: &str = "example/person";
pub const GREETER: &str = "example/greeter";
pub const COUNTER: &str = "example/counter";
pub const HOP: &str = "example/hop";
pub const FETCH: &str = "example/fetch";
/// Egress of [`Greeting`]s.
pub const GREETS_EGRESS: &str = "example/greets";
/// Egress of [`Total`]s.
pub const TOTALS_EGRESS: &str = "example/totals";

/// Parses a typename literal from above, known to be valid.
fn parse(literal: &str) -> TypeName {
    TypeName::parse(literal).expect("typename literals are valid")
}

static PERSON_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(PERSON));
static GREETER_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(GREETER));
static COUNTER_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(COUNTER));
static HOP_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(HOP));
static FETCH_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(FETCH));
static GREETS_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(GREETS_EGRESS));
static TOTALS_TYPE: LazyLock<TypeName> = LazyLock::new(|| parse(TOTALS_EGRESS));

/// All example functions, ready to [`serve`](spindle_sdk::serve) or to call with
/// [`Functions::handle_async`] (or [`Functions::handle`], for all but the async
/// `example/fetch`).
pub fn functions() -> Functions {
    let mut functions = Functions::new();
    person::register(&mut functions);
    greeter::register(&mut functions);
    counter::register(&mut functions);
    hop::register(&mut functions);
    fetch::register(&mut functions);
    functions
}

#[cfg(test)]
mod tests;
