//! Schedules: an ingress that sends a message to one address at every tick of a cron
//! expression or a fixed interval. The worker fires each tick exactly once (the last tick
//! fired lives in the checkpoint); this module holds the spec types, their validation and the
//! pure tick arithmetic ([`Plan`]) both the validator and the worker use.

use std::str::FromStr;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::HumanDuration;
use crate::validate::Errors;

/// Messages on a schedule: `cron` or `every` (exactly one), to `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleIngress {
    /// A cron expression as crontab and Kubernetes CronJobs write it — five fields, `minute
    /// hour day-of-month month day-of-week` (Sunday is 0 or 7; when both day fields are
    /// restricted, either matching is enough) — or six with seconds first, or `@hourly`,
    /// `@daily`, `@weekly`, `@monthly`, `@yearly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval instead of `cron`, e.g. `30s`: ticks at whole multiples of it since the
    /// Unix epoch (`every: 1m` ticks at every full minute), so every restart agrees on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    /// Time zone `cron` is read in: `UTC` (the default) or a fixed offset such as `+02:00`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// The address every tick is sent to: `namespace/type/id`.
    pub target: String,
    /// Typename of the message. Without `value` the message is the tick's time in Unix epoch
    /// milliseconds as a StateFun `io.statefun.types/long`, and this must be unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// The message, the same at every tick: for `io.statefun.types/string` its text, for the
    /// other StateFun primitive types (`int`, `long`, `bool`, `float`, `double`) the value
    /// written out (`42`, `true`), for any other type the bytes of this string (e.g. a JSON
    /// document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What happens to ticks that passed while the schedule did not run — the application was
    /// stopped, or crashed, or rolled back to a checkpoint taken before them: `none` skips
    /// them, `latest` fires the latest of them once, `all` fires every one of them, oldest
    /// first. Ticks are fired once either way.
    #[serde(default)]
    pub catch_up: CatchUp,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// What a schedule does with ticks missed while it did not run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// Skip them: fire from the next tick on.
    None,
    /// Fire the latest missed tick once, then go on.
    #[default]
    Latest,
    /// Fire every missed tick, oldest first.
    All,
}

/// When a schedule ticks.
#[derive(Debug, Clone)]
pub struct Plan(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Every(i64),
    Cron(Box<croner::Cron>, FixedOffset),
}

impl Plan {
    /// The plan of a schedule; `Err` names the field that is wrong (relative to the schedule)
    /// and why.
    pub fn new(s: &ScheduleIngress) -> Result<Plan, (&'static str, String)> {
        match (&s.cron, s.every) {
            (Some(_), Some(_)) | (None, None) => Err(("cron", "exactly one of `cron` and `every` must be set".into())),
            (None, Some(every)) => {
                let ms = every.as_duration().as_millis();
                if ms == 0 || ms > i64::MAX as u128 {
                    return Err(("every", "must be longer than zero".into()));
                }
                Ok(Plan(Kind::Every(ms as i64)))
            }
            (Some(expr), None) => {
                let zone = parse_zone(&s.timezone).map_err(|e| ("timezone", e))?;
                let cron = croner::Cron::new(expr)
                    .with_seconds_optional()
                    .parse()
                    .map_err(|e| ("cron", format!("`{expr}` is not a cron expression: {e}")))?;
                let plan = Plan(Kind::Cron(Box::new(cron), zone));
                // A pattern that parses but never fires (`0 0 30 2 *`) is as wrong as one
                // that does not parse.
                if plan.next_after(0).is_none() {
                    return Err(("cron", format!("`{expr}` never fires")));
                }
                Ok(plan)
            }
        }
    }

    /// The first tick strictly after `after_ms` (Unix epoch milliseconds); `None` when there
    /// is none.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match &self.0 {
            Kind::Every(every) => after_ms.div_euclid(*every).checked_add(1)?.checked_mul(*every),
            Kind::Cron(cron, zone) => {
                // Ticks are whole seconds: start from the second `after_ms` is in.
                let secs = after_ms.div_euclid(1000);
                let start: DateTime<FixedOffset> = zone.timestamp_opt(secs, 0).single()?;
                let next = cron.find_next_occurrence(&start, false).ok()?;
                Some(next.with_timezone(&Utc).timestamp_millis())
            }
        }
    }
}

/// `UTC`/`Z` or `±HH:MM`.
fn parse_zone(s: &str) -> Result<FixedOffset, String> {
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return Ok(FixedOffset::east_opt(0).expect("zero is a valid offset"));
    }
    FixedOffset::from_str(s).map_err(|_| {
        format!("`{s}` is not a time zone Spindle knows: use `UTC` or a fixed offset such as `+02:00` (named zones such as `Europe/Berlin` are not supported yet)")
    })
}

/// `namespace/type/id` split into the function type and the id.
pub fn split_target(target: &str) -> Option<(&str, &str)> {
    let (ns, rest) = target.split_once('/')?;
    let (ty, id) = rest.split_once('/')?;
    (!ns.is_empty() && !ty.is_empty() && !id.is_empty()).then(|| (&target[..ns.len() + 1 + ty.len()], id))
}

/// The StateFun primitive types a `value` can be written as.
pub const PRIMITIVES: [&str; 6] = ["string", "int", "long", "bool", "float", "double"];

pub(crate) fn check_schedule(s: &ScheduleIngress, at: &str, serves: impl Fn(&str) -> bool, e: &mut Errors) {
    if let Err((field, reason)) = Plan::new(s) {
        e.add(format!("{at}.{field}"), reason);
    }
    match split_target(&s.target) {
        None => e.add(
            format!("{at}.target"),
            format!("`{}` is not an address: expected `namespace/type/id`", s.target),
        ),
        Some((ty, _)) => {
            if let Err(err) = crate::TypeName::parse(ty) {
                e.add(format!("{at}.target"), err.to_string());
            } else if !serves(ty) {
                e.add(format!("{at}.target"), format!("no function serves type `{ty}`"));
            }
        }
    }
    match (&s.value_type, &s.value) {
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => e.add(
            format!("{at}.value"),
            "`valueType` and `value` go together (without both, the message is the tick's time as io.statefun.types/long)",
        ),
        (Some(t), Some(v)) => match crate::TypeName::parse(t) {
            Err(err) => e.add(format!("{at}.valueType"), err.to_string()),
            Ok(t) if t.namespace() == "io.statefun.types" => {
                if let Err(reason) = check_primitive(t.name(), v) {
                    e.add(format!("{at}.value"), reason);
                }
            }
            Ok(_) => {}
        },
    }
}

fn check_primitive(name: &str, v: &str) -> Result<(), String> {
    let ok = match name {
        "string" => true,
        "int" => v.parse::<i32>().is_ok(),
        "long" => v.parse::<i64>().is_ok(),
        "bool" => v.parse::<bool>().is_ok(),
        "float" => v.parse::<f32>().is_ok(),
        "double" => v.parse::<f64>().is_ok(),
        other => {
            return Err(format!(
                "io.statefun.types/{other} is not a StateFun primitive type ({})",
                PRIMITIVES.join(", ")
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("`{v}` is not an io.statefun.types/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cron: Option<&str>, every: Option<&str>, tz: &str) -> ScheduleIngress {
        ScheduleIngress {
            cron: cron.map(String::from),
            every: every.map(|e| HumanDuration::parse(e).unwrap()),
            timezone: tz.into(),
            target: "ns/f/x".into(),
            value_type: None,
            value: None,
            catch_up: CatchUp::Latest,
        }
    }

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    #[test]
    fn intervals_tick_at_multiples_since_the_epoch() {
        let p = Plan::new(&sched(None, Some("30s"), "UTC")).unwrap();
        assert_eq!(p.next_after(T0), Some(T0 + 30_000));
        assert_eq!(p.next_after(T0 + 1), Some(T0 + 30_000));
        assert_eq!(p.next_after(T0 - 1), Some(T0));
    }

    #[test]
    fn cron_follows_crontab_with_seconds_optional_and_offsets() {
        let daily = Plan::new(&sched(Some("0 3 * * *"), None, "UTC")).unwrap();
        assert_eq!(daily.next_after(T0), Some(T0 + 3 * 3_600_000));
        assert_eq!(daily.next_after(T0 + 3 * 3_600_000), Some(T0 + 27 * 3_600_000));
        let berlin = Plan::new(&sched(Some("0 3 * * *"), None, "+01:00")).unwrap();
        assert_eq!(berlin.next_after(T0), Some(T0 + 2 * 3_600_000));
        // Monday is 1, as in crontab: 2026-01-05.
        let monday = Plan::new(&sched(Some("0 0 * * 1"), None, "UTC")).unwrap();
        assert_eq!(monday.next_after(T0), Some(T0 + 4 * 86_400_000));
        let secs = Plan::new(&sched(Some("*/10 * * * * *"), None, "UTC")).unwrap();
        assert_eq!(secs.next_after(T0 + 1), Some(T0 + 10_000));
        let hourly = Plan::new(&sched(Some("@hourly"), None, "Z")).unwrap();
        assert_eq!(hourly.next_after(T0 + 5), Some(T0 + 3_600_000));
    }

    #[test]
    fn bad_schedules_name_their_field() {
        let field = |s: ScheduleIngress| Plan::new(&s).unwrap_err().0;
        assert_eq!(field(sched(Some("61 * * * *"), None, "UTC")), "cron");
        assert_eq!(field(sched(Some("0 0 30 2 *"), None, "UTC")), "cron");
        assert_eq!(field(sched(Some("* * *"), None, "UTC")), "cron");
        assert_eq!(field(sched(None, None, "UTC")), "cron");
        assert_eq!(field(sched(Some("* * * * *"), Some("1s"), "UTC")), "cron");
        assert_eq!(field(sched(None, Some("0s"), "UTC")), "every");
        let (f, why) = Plan::new(&sched(Some("* * * * *"), None, "Europe/Berlin")).unwrap_err();
        assert_eq!(f, "timezone");
        assert!(why.contains("fixed offset"), "{why}");
    }

    #[test]
    fn targets_are_namespace_type_and_id() {
        assert_eq!(split_target("shop/cart/u/1"), Some(("shop/cart", "u/1")));
        assert_eq!(split_target("shop/cart"), None);
        assert_eq!(split_target("shop//x"), None);
    }
}
