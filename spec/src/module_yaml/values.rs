//! Reading the values of a StateFun component: typed fields with their path in messages, Flink
//! durations and StateFun's startup dates.

use serde_yaml::Value as Yaml;

/// `at.key`, or `key` at the top of a document.
pub(super) fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.into()
    } else {
        format!("{at}.{key}")
    }
}

/// A string field, absent or null as `None`.
pub(super) fn str_field<'a>(v: &'a Yaml, at: &str, key: &str) -> Result<Option<&'a str>, String> {
    match v.get(key) {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{}: expected a string, found {}", path(at, key), short(other))),
    }
}

pub(super) fn required<'a>(v: &'a Yaml, at: &str, key: &str) -> Result<&'a str, String> {
    str_field(v, at, key)?.ok_or_else(|| format!("{} is missing", path(at, key)))
}

/// A value as written, shortened for a message.
pub(super) fn short(v: &Yaml) -> String {
    let s = serde_yaml::to_string(v).unwrap_or_default();
    let s = s.trim();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("`{}…`", &s[..i]),
        None => format!("`{s}`"),
    }
}

/// A Flink duration as StateFun reads it (`TimeUtils.parseDuration`): a number and an optional
/// unit (`ms`, `s`/`sec`/`second(s)`, `m`/`min`/`minute(s)`, `h`/`hour(s)`, `d`/`day(s)`), with
/// or without a space between; a bare number is milliseconds. In milliseconds.
pub(super) fn flink_duration(v: &Yaml) -> Result<u64, String> {
    if let Some(ms) = v.as_u64() {
        return Ok(ms);
    }
    let s = v
        .as_str()
        .ok_or_else(|| format!("expected a duration, found {}", short(v)))?
        .trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let bad = || format!("`{s}` is not a duration (a number and ms, s, min, h or d, e.g. `1 min`)");
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let factor = match s[digits..].trim().to_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

/// StateFun's `date` startup position as an RFC 3339 UTC time. StateFun parses it with the
/// pattern `yyyy-MM-dd HH:mm:ss.SSS Z` (an offset such as `+0000`), while its documentation
/// writes `2020-02-01 04:15:00.00 Z`; both are read, with any number of fraction digits and an
/// offset of `Z`, `UTC`, `±HHMM`, `±HH:MM` or `±HH`.
pub(super) fn statefun_date(date: &str) -> Result<String, String> {
    let bad = || format!("`{date}` is not a date like `2020-02-01 04:15:00.000 +0000`");
    let mut parts = date.split_whitespace();
    let (day, time) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let (time, attached) = match time.find(['+', '-', 'Z']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let offset = match (attached, parts.next(), parts.next()) {
        (Some(o), None, None) | (None, Some(o), None) => o,
        _ => return Err(bad()),
    };
    let offset_minutes: i64 = match offset {
        "Z" | "z" | "UTC" | "GMT" => 0,
        o => {
            let sign = match o.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            let digits = o[1..].replace(':', "");
            if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
                return Err(bad());
            }
            let h: i64 = digits[..2].parse().map_err(|_| bad())?;
            let m: i64 = digits
                .get(2..)
                .filter(|m| !m.is_empty())
                .map_or(Ok(0), str::parse)
                .map_err(|_| bad())?;
            if h > 18 || m > 59 {
                return Err(bad());
            }
            sign * (h * 60 + m)
        }
    };
    let local = crate::parse_utc_millis(&format!("{day}T{time}Z")).map_err(|_| bad())?;
    Ok(rfc3339_utc(local - offset_minutes * 60_000))
}

/// Epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (the inverse of `parse_utc_millis`).
fn rfc3339_utc(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_durations() {
        for (text, ms) in [
            ("1 min", 60_000),
            ("1minute", 60_000),
            ("30seconds", 30_000),
            ("2m", 120_000),
            ("10 sec", 10_000),
            ("15min", 900_000),
            ("500", 500),
        ] {
            assert_eq!(flink_duration(&Yaml::from(text)), Ok(ms), "{text}");
        }
        assert_eq!(flink_duration(&Yaml::from(250u64)), Ok(250));
        assert!(
            flink_duration(&Yaml::from("1 fortnight"))
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(flink_duration(&Yaml::from("min")).is_err());
    }

    #[test]
    fn startup_dates_with_offsets() {
        assert_eq!(
            statefun_date("2020-02-01 04:15:00.00 Z"),
            Ok("2020-02-01T04:15:00.000Z".into())
        );
        assert_eq!(
            statefun_date("2020-02-01 04:15:00.000 +0000"),
            Ok("2020-02-01T04:15:00.000Z".into())
        );
        assert_eq!(
            statefun_date("2020-02-01 04:15:00.250 +0130"),
            Ok("2020-02-01T02:45:00.250Z".into())
        );
        assert_eq!(
            statefun_date("2020-03-01 00:15:00 +01:00"),
            Ok("2020-02-29T23:15:00.000Z".into())
        );
        assert_eq!(
            statefun_date("2019-12-31 23:00:00.000 -0100"),
            Ok("2020-01-01T00:00:00.000Z".into())
        );
        for bad in [
            "2020-02-01",
            "2020-02-01 04:15:00",
            "2020-02-01 04:15:00 +25",
            "yesterday at 4 Z",
        ] {
            assert!(statefun_date(bad).is_err(), "{bad}");
        }
        for ms in [0, 951_868_801_500, 1_796_110_584_192, -1] {
            assert_eq!(crate::parse_utc_millis(&rfc3339_utc(ms)), Ok(ms), "{ms}");
        }
    }
}
