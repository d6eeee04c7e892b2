//! Reply addresses: the caller an HTTP request that waits for its reply gives its ingress
//! message. A function answers with the ordinary StateFun idiom — it sends a message to its
//! caller — so the address must say, by itself, where that message goes:
//!
//! - typename `spindle.reply/{worker}`: the worker holding the waiting request;
//! - id `{request}`, or `{request}~{key}~{target type}~{target id}` when the request has an
//!   idempotency key: then the reply passes the worker owning the target first, which
//!   remembers it with the key (a retry after a crash gets the same reply), and goes on with
//!   the id cut to `{request}`.
//!
//! The parts are percent-escaped (`%` and `~`), so any key and id round-trip. Pure: no I/O.

use std::fmt::Write as _;
use std::sync::Arc;

use spindle_spec::TypeName;

use crate::message::Address;

/// The namespace no function may use: addresses in it are waiting requests.
pub const NAMESPACE: &str = "spindle.reply";

const SEP: char = '~';

/// A parsed reply address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The worker holding the request.
    pub worker: u32,
    /// The request's id within that worker (unique across its restarts).
    pub request: Arc<str>,
    /// With an idempotency key: the ingress message's target and the key, where the reply is
    /// remembered on its way.
    pub memo: Option<(Address, Arc<str>)>,
}

/// Why an address in the reply namespace is not a reply address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a reply address: expected spindle.reply/<worker>/<request>")]
pub struct Malformed(pub String);

impl ReplyTo {
    /// True when `addr` is in the reply namespace (well-formed or not).
    pub fn is_reply(addr: &Address) -> bool {
        addr.typename.namespace() == NAMESPACE
    }

    /// The reply address in `addr`; `None` when `addr` is not in the reply namespace.
    pub fn parse(addr: &Address) -> Option<Result<ReplyTo, Malformed>> {
        if !Self::is_reply(addr) {
            return None;
        }
        let bad = || Malformed(addr.to_string());
        let Ok(worker) = addr.typename.name().parse::<u32>() else {
            return Some(Err(bad()));
        };
        let mut parts = addr.id.split(SEP);
        let request = parts.next().filter(|r| !r.is_empty()).and_then(unescape);
        let memo = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (None, ..) => Some(None),
            (Some(key), Some(ty), Some(id), None) => memo(key, ty, id).map(Some),
            _ => None,
        };
        Some(match (request, memo) {
            (Some(request), Some(memo)) => Ok(ReplyTo {
                worker,
                request: request.into(),
                memo,
            }),
            _ => Err(bad()),
        })
    }

    /// The address a function sees as its caller.
    pub fn address(&self) -> Address {
        let typename = TypeName::new(NAMESPACE, &self.worker.to_string()).expect("a number is a valid name");
        let mut id = escape(&self.request);
        if let Some((target, key)) = &self.memo {
            let _ = write!(
                id,
                "{SEP}{}{SEP}{}{SEP}{}",
                escape(key),
                escape(target.typename.as_str()),
                escape(&target.id)
            );
        }
        Address::new(typename, id)
    }

    /// The same request without the memo: where the reply goes once remembered.
    pub fn plain(&self) -> ReplyTo {
        ReplyTo {
            memo: None,
            ..self.clone()
        }
    }
}

fn memo(key: &str, ty: &str, id: &str) -> Option<(Address, Arc<str>)> {
    let key = unescape(key).filter(|k| !k.is_empty())?;
    let typename = TypeName::parse(&unescape(ty)?).ok()?;
    Some((Address::new(typename, unescape(id)?), key.into()))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            SEP => out.push_str("%7E"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("25") => out.push('%'),
            Some("7E") => out.push(SEP),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str, id: &str) -> Address {
        Address::new(TypeName::parse(s).unwrap(), id)
    }

    #[test]
    fn reply_addresses_round_trip_with_and_without_a_memo() {
        let plain = ReplyTo {
            worker: 3,
            request: "18f.7".into(),
            memo: None,
        };
        assert_eq!(plain.address().to_string(), "spindle.reply/3/18f.7");
        assert_eq!(ReplyTo::parse(&plain.address()), Some(Ok(plain.clone())));
        let keyed = ReplyTo {
            memo: Some((addr("shop/cart", "a~b%c/d"), "key~1%".into())),
            ..plain.clone()
        };
        let a = keyed.address();
        assert_eq!(&*a.id, "18f.7~key%7E1%25~shop/cart~a%7Eb%25c/d");
        assert_eq!(ReplyTo::parse(&a), Some(Ok(keyed.clone())));
        assert_eq!(keyed.plain(), plain);
    }

    #[test]
    fn other_namespaces_are_not_replies_and_bad_ones_are_malformed() {
        assert_eq!(ReplyTo::parse(&addr("shop/cart", "x")), None);
        for (ty, id) in [
            ("spindle.reply/x", "1"),
            ("spindle.reply/1", ""),
            ("spindle.reply/1", "r~k"),
            ("spindle.reply/1", "r~k~notatype~i"),
            ("spindle.reply/1", "r~~t/f~i"),
            ("spindle.reply/1", "r%zz"),
            ("spindle.reply/1", "r~k~t/f~i~extra"),
        ] {
            assert!(
                matches!(ReplyTo::parse(&addr(ty, id)), Some(Err(_))),
                "{ty}/{id} should be malformed"
            );
        }
    }
}
