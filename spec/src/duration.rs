//! Durations written as `500ms`, `10s`, `1m`, `2h` in the spec.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a whole number followed by a unit: `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration: expected a whole number and a unit (ms, s, m, h), e.g. `500ms` or `1m`")]
pub struct DurationError(String);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }

    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let err = || DurationError(s.to_string());
        let digits = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let n: u64 = s[..digits].parse().map_err(|_| err())?;
        let ms = match &s[digits..] {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => None,
        }
        .ok_or_else(err)?;
        Ok(HumanDuration::from_millis(ms))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m|h)$",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_prints_back() {
        for (s, ms) in [("500ms", 500), ("10s", 10_000), ("1m", 60_000), ("2h", 7_200_000)] {
            let d = HumanDuration::parse(s).unwrap();
            assert_eq!(d.0.as_millis(), ms);
            assert_eq!(d.to_string(), s);
        }
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10d"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad}");
        }
    }
}
