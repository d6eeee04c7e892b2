//! The example's messages, all JSON. Field names are the JSON keys, so other SDKs (and the
//! HTTP ingress) can produce and read them.

use serde::{Deserialize, Serialize};
use spindle_sdk::JsonType;

/// A person visits: sent to `example/person/<name>`. Any JSON object is accepted.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Visit {}

impl JsonType for Visit {
    const TYPENAME: &'static str = "example/Visit";
}

/// Person → greeter: greet `name`, who has visited `visits` times.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Greet {
    pub name: String,
    pub visits: i64,
}

impl JsonType for Greet {
    const TYPENAME: &'static str = "example/Greet";
}

/// Greeter → person: the greeting it sent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Greeted {
    pub greeting: String,
}

impl JsonType for Greeted {
    const TYPENAME: &'static str = "example/Greeted";
}

/// Written to the `example/greets` egress.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub name: String,
    pub visits: i64,
    pub greeting: String,
}

impl JsonType for Greeting {
    const TYPENAME: &'static str = "example/Greeting";
}

/// Sent to `example/counter/<key>`: add `value`; `seq` is echoed in the [`Total`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub seq: u64,
    pub value: i64,
}

impl JsonType for Add {
    const TYPENAME: &'static str = "example/Add";
}

/// Written to the `example/totals` egress after each [`Add`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Total {
    pub seq: u64,
    pub key: String,
    pub total: i64,
}

impl JsonType for Total {
    const TYPENAME: &'static str = "example/Total";
}

/// Sent to `example/hop/<id>`: forwarded `remaining` more times, to addresses spread over
/// `spread` ids; the last hop writes a [`Total`] with this `seq` to `example/totals`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub seq: u64,
    pub remaining: u32,
    pub spread: u32,
}

impl Hop {
    /// The id of the next address: deterministic, spread over `spread` ids.
    pub fn next_id(&self) -> String {
        let n = self.seq.wrapping_mul(31).wrapping_add(u64::from(self.remaining) * 17) % u64::from(self.spread.max(1));
        format!("h{n}")
    }
}

impl JsonType for Hop {
    const TYPENAME: &'static str = "example/Hop";
}

/// Sent to `example/fetch/<id>`: fetch `url` (plain HTTP).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub url: String,
}

impl JsonType for Fetch {
    const TYPENAME: &'static str = "example/Fetch";
}

/// `example/fetch`'s reply: the answer's status and body (as text), and how many fetches this
/// address has made.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub url: String,
    pub status: u16,
    pub body: String,
    pub fetches: i64,
}

impl JsonType for Fetched {
    const TYPENAME: &'static str = "example/Fetched";
}
