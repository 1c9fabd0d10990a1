//! The `time` of an event: RFC 3339, or epoch seconds/ms/µs/ns told apart
//! by magnitude, as microseconds since the epoch (UTC).

use crate::error::BadEvent;
use chrono::{DateTime, Datelike, NaiveDateTime};
use serde_json::Value;

/// Microseconds since the epoch of a `time` value; `Ok(None)` for null.
pub fn parse_time(v: &Value) -> Result<Option<i64>, BadEvent> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let micros = match n.as_i64() {
                Some(i) => epoch_int_to_micros(i),
                None => n.as_f64().and_then(epoch_float_to_micros),
            };
            micros
                .map(Some)
                .ok_or_else(|| BadEvent(format!("time {n} is out of range")))
        }
        Value::String(s) => parse_time_str(s).map(Some),
        other => Err(BadEvent(format!(
            "time must be an RFC 3339 string or epoch number, got {other}"
        ))),
    }
}

pub(crate) fn parse_time_str(s: &str) -> Result<i64, BadEvent> {
    let t = s.trim();
    if let Some(micros) = utc_micros(t) {
        return Ok(micros);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, format) {
            return Ok(dt.timestamp_micros());
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, format) {
            return Ok(naive.and_utc().timestamp_micros());
        }
    }
    if let Ok(i) = t.parse::<i64>() {
        return epoch_int_to_micros(i)
            .ok_or_else(|| BadEvent(format!("time {s:?} is out of range")));
    }
    Err(BadEvent(format!(
        "time {s:?} is neither RFC 3339 (2026-01-01T00:00:00Z) nor an epoch number"
    )))
}

/// The common spelling, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, read without
/// chrono's general parser (which was 2-3% of ingest); None for anything
/// else, which chrono then reads.
fn utc_micros(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        b[range].iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let fraction = &b[19..b.len() - 1];
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            num(20..20 + digits.len())? * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)?;
    if year < 1000 || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = i64::from(date.num_days_from_ce()) - UNIX_EPOCH_DAYS_FROM_CE;
    Some(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + nanos / 1_000)
}

/// 1970-01-01 as days from 0001-01-01 (day 1).
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Seconds below 10^11 (until year 5138), then milliseconds below 10^14,
/// microseconds below 10^17, nanoseconds beyond.
pub(crate) fn epoch_int_to_micros(i: i64) -> Option<i64> {
    let a = i.unsigned_abs();
    if a < 100_000_000_000 {
        i.checked_mul(1_000_000)
    } else if a < 100_000_000_000_000 {
        i.checked_mul(1_000)
    } else if a < 100_000_000_000_000_000 {
        Some(i)
    } else {
        Some(i / 1_000)
    }
}

pub(crate) fn epoch_float_to_micros(f: f64) -> Option<i64> {
    if !f.is_finite() {
        return None;
    }
    let a = f.abs();
    let micros = if a < 1e11 {
        f * 1e6
    } else if a < 1e14 {
        f * 1e3
    } else if a < 1e17 {
        f
    } else {
        f / 1e3
    };
    (micros.abs() < 9.2e18).then(|| micros.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    #[test]
    fn rfc3339_and_friends() {
        assert_eq!(parse_time(&json!("2026-01-01T00:00:00Z")), Ok(Some(T)));
        assert_eq!(
            parse_time(&json!("2026-01-01T01:00:00.5+01:00")),
            Ok(Some(T + 500_000))
        );
        assert_eq!(
            parse_time(&json!("2026-01-01T00:00:00.000001Z")),
            Ok(Some(T + 1))
        );
        assert_eq!(
            parse_time(&json!("2026-01-01 00:00:00")),
            Ok(Some(T)),
            "no offset reads as UTC"
        );
    }

    /// The short way reads what chrono reads, to the microsecond.
    #[test]
    fn the_common_spelling_reads_as_chrono_reads_it() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let digits = next(11) as usize;
            let fraction: String = (0..digits)
                .map(|_| char::from(b'0' + next(10) as u8))
                .collect();
            let s = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{fraction}Z",
                900 + next(9200),
                next(14),
                next(33),
                next(26),
                next(62),
                next(62),
                if digits > 0 { "." } else { "" },
            );
            let chrono = DateTime::parse_from_rfc3339(&s)
                .ok()
                .map(|d| d.timestamp_micros());
            match utc_micros(&s) {
                Some(m) => assert_eq!(Some(m), chrono, "{s}"),
                // Left to chrono: more than 9 digits, years before 1000,
                // leap seconds; and what is no time at all.
                None => assert!(
                    chrono.is_none()
                        || digits > 9
                        || s.starts_with('0')
                        || s.contains(":60Z")
                        || s.contains(":60."),
                    "{s}"
                ),
            }
            if let Some(c) = chrono {
                assert_eq!(parse_time_str(&s), Ok(c), "{s}");
            }
        }
        assert_eq!(utc_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(utc_micros("1969-12-31T23:59:59.999999Z"), Some(-1));
        assert_eq!(utc_micros("2026-01-01T00:00:00+00:00"), None);
    }

    #[test]
    fn epoch_by_magnitude() {
        assert_eq!(parse_time(&json!(1_767_225_600)), Ok(Some(T)));
        assert_eq!(parse_time(&json!(1_767_225_600.25)), Ok(Some(T + 250_000)));
        assert_eq!(parse_time(&json!(1_767_225_600_000i64)), Ok(Some(T)));
        assert_eq!(parse_time(&json!(1_767_225_600_000_000i64)), Ok(Some(T)));
        assert_eq!(
            parse_time(&json!(1_767_225_600_000_000_000i64)),
            Ok(Some(T))
        );
        assert_eq!(parse_time(&json!("1767225600")), Ok(Some(T)));
        assert_eq!(parse_time(&json!(0)), Ok(Some(0)));
    }

    #[test]
    fn bad_times_say_what_was_wrong() {
        assert_eq!(parse_time(&json!(null)), Ok(None));
        let e = parse_time(&json!("yesterday")).unwrap_err();
        assert!(e.contains("\"yesterday\" is neither RFC 3339"), "{e}");
        assert!(parse_time(&json!(true)).is_err());
        assert!(parse_time(&json!({"a": 1})).is_err());
        assert!(parse_time(&json!(1e300)).is_err());
    }
}
