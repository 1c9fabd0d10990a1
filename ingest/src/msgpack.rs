//! MessagePack bodies (libhoney-go sends its batches so): an array's
//! elements found without decoding them, and one element decoded into the
//! JSON value a JSON body would have given (timestamps, MessagePack's
//! extension -1, as RFC 3339 text; other extensions and binary as base64).

use base64::Engine;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};

use crate::error::BadEvent;

/// Where each element of a top-level array is.
pub fn array_elements(body: &[u8]) -> Result<Vec<std::ops::Range<usize>>, String> {
    let mut rest = body;
    let len = rmp::decode::read_array_len(&mut rest).map_err(|e| format!("not an array: {e}"))?;
    let mut at = body.len() - rest.len();
    // Not `with_capacity(len)`: a length is only a claim.
    let mut items = Vec::new();
    for i in 0..len {
        let mut cursor = &body[at..];
        rmpv::decode::read_value_ref(&mut cursor)
            .map_err(|e| format!("element {i} cannot be read: {e}"))?;
        let end = body.len() - cursor.len();
        items.push(at..end);
        at = end;
    }
    if at != body.len() {
        return Err(format!("{} bytes follow the array", body.len() - at));
    }
    Ok(items)
}

/// One encoded value as JSON.
pub fn value(bytes: &[u8]) -> Result<Value, BadEvent> {
    let mut cursor = bytes;
    let v = rmpv::decode::read_value(&mut cursor)
        .map_err(|e| BadEvent(format!("not MessagePack: {e}")))?;
    json(v)
}

fn json(v: Mp) -> Result<Value, BadEvent> {
    Ok(match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (None, Some(n)) => Value::from(n),
            _ => return Err(BadEvent(format!("integer {i} is out of range"))),
        },
        Mp::F32(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Mp::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Mp::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(BadEvent("a string is not UTF-8".into())),
        },
        Mp::Binary(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Mp::Array(items) => Value::Array(items.into_iter().map(json).collect::<Result<_, _>>()?),
        Mp::Map(pairs) => {
            let mut m = Map::new();
            for (k, v) in pairs {
                let key = match k {
                    Mp::String(s) => s
                        .into_str()
                        .ok_or_else(|| BadEvent("a key is not UTF-8".into()))?,
                    other => other.to_string(),
                };
                m.insert(key, json(v)?);
            }
            Value::Object(m)
        }
        Mp::Ext(-1, data) => Value::String(timestamp(&data)?),
        Mp::Ext(_, data) => Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
    })
}

/// MessagePack's timestamp extension (4, 8 or 12 bytes) as RFC 3339.
fn timestamp(data: &[u8]) -> Result<String, BadEvent> {
    let (secs, nanos): (i64, u32) = match data.len() {
        4 => (
            i64::from(u32::from_be_bytes(data.try_into().expect("4"))),
            0,
        ),
        8 => {
            let x = u64::from_be_bytes(data.try_into().expect("8"));
            ((x & 0x3_ffff_ffff) as i64, (x >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(data[4..].try_into().expect("8")),
            u32::from_be_bytes(data[..4].try_into().expect("4")),
        ),
        n => return Err(BadEvent(format!("a timestamp of {n} bytes"))),
    };
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .ok_or_else(|| BadEvent(format!("timestamp {secs} s is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_of_maps_with_a_timestamp_reads_as_json_would() {
        let stamp = {
            // 8-byte form: 2026-11-29T08:00:00.5Z.
            let secs: u64 = 1_795_939_200;
            let nanos: u64 = 500_000_000;
            ((nanos << 34) | secs).to_be_bytes().to_vec()
        };
        let element = Mp::Map(vec![
            (
                Mp::from("data"),
                Mp::Map(vec![
                    (Mp::from("a"), Mp::from(1)),
                    (Mp::from("s"), Mp::from("x")),
                ]),
            ),
            (Mp::from("time"), Mp::Ext(-1, stamp)),
            (Mp::from("samplerate"), Mp::from(3)),
        ]);
        let mut body = Vec::new();
        rmpv::encode::write_value(&mut body, &Mp::Array(vec![element.clone(), Mp::from(5)]))
            .unwrap();
        let items = array_elements(&body).unwrap();
        assert_eq!(items.len(), 2);
        let first = value(&body[items[0].clone()]).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"data": {"a": 1, "s": "x"}, "time": "2026-11-29T08:00:00.500Z", "samplerate": 3})
        );
        assert_eq!(value(&body[items[1].clone()]).unwrap(), 5);
        assert!(
            array_elements(&body[..body.len() - 1]).is_err(),
            "cut short"
        );
        assert!(array_elements(b"\xa1x").is_err(), "not an array");
    }
}
