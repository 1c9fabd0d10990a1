//! The `time` of an event: RFC 3339, or epoch seconds/ms/µs/ns told apart
//! by magnitude, as microseconds since the epoch (UTC).

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

/// Microseconds since the epoch of a `time` value; `Ok(None)` for null.
pub fn parse_time(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            let micros = match n.as_i64() {
                Some(i) => epoch_int_to_micros(i),
                None => n.as_f64().and_then(epoch_float_to_micros),
            };
            micros
                .map(Some)
                .ok_or_else(|| format!("time {n} is out of range"))
        }
        Value::String(s) => parse_time_str(s).map(Some),
        other => Err(format!(
            "time must be an RFC 3339 string or epoch number, got {other}"
        )),
    }
}

pub(crate) fn parse_time_str(s: &str) -> Result<i64, String> {
    let t = s.trim();
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
        return epoch_int_to_micros(i).ok_or_else(|| format!("time {s:?} is out of range"));
    }
    Err(format!(
        "time {s:?} is neither RFC 3339 (2026-01-01T00:00:00Z) nor an epoch number"
    ))
}

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
