//! Honeycomb's Events API: a batch's elements (`{"data": {...}, "time":
//! ..., "samplerate": N}`), or one event and its headers, become Atoll
//! events. The envelope's `time` and `samplerate` are the event's `time`
//! and `samplerate` columns (over keys of the same name in `data`); without
//! them, `data`'s own are used as in a native event.

use std::ops::Range;

use atoll_store::{SAMPLE_RATE_COLUMN, TIME_COLUMN};
use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::IngestError;
use crate::body::kind;
use crate::error::BadEvent;
use crate::protocol::{EVENTS_AT_ONCE, Made, MadeEvent, MadeLine};

/// A batch body and where its elements are, not yet read: a door reads
/// them a chunk at a time (`chunks`, `read`), so that a large batch is
/// never held as parsed values whole.
pub struct Batch {
    body: Bytes,
    items: Vec<Range<usize>>,
    msgpack: bool,
}

/// Body bytes read into events at a time: parsed values take several times
/// the bytes they came from (a MessagePack nil is 1 byte, its value 32).
const CHUNK_BYTES: usize = 1 << 20;

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The ranges of elements a door reads in turn: at most
    /// `EVENTS_AT_ONCE` elements and about `CHUNK_BYTES` of body each.
    pub fn chunks(&self) -> Vec<Range<usize>> {
        let mut chunks = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, r) in self.items.iter().enumerate() {
            if i > start && (i - start == EVENTS_AT_ONCE || bytes + r.len() > CHUNK_BYTES) {
                chunks.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes += r.len();
        }
        if start < self.items.len() {
            chunks.push(start..self.items.len());
        }
        chunks
    }

    /// Elements `range` as events: JSON ones as lines of JSON text (so
    /// that they can take native NDJSON's typed path), MessagePack ones
    /// as objects.
    pub fn read(&self, range: Range<usize>) -> Made {
        let texts = self.items[range].iter().map(|r| &self.body[r.clone()]);
        if self.msgpack {
            return Made::Objects(
                texts
                    .map(|t| crate::msgpack::value(t).and_then(element))
                    .collect(),
            );
        }
        Made::Lines(
            texts
                .map(|t| match std::str::from_utf8(t) {
                    Ok(text) => line(text),
                    Err(_) => Err(BadEvent("not UTF-8".into())),
                })
                .collect(),
        )
    }
}

/// The elements of a `POST /1/batch/{dataset}` body (decompressed): a JSON
/// array, or with `msgpack` a MessagePack one.
pub fn batch(body: Bytes, msgpack: bool) -> Result<Batch, IngestError> {
    let items = if msgpack {
        crate::msgpack::array_elements(&body).map_err(|e| {
            IngestError::BadBody(format!(
                "a Honeycomb batch in MessagePack is an array of maps: {e}"
            ))
        })?
    } else {
        let raws: Vec<&RawValue> = serde_json::from_slice(&body).map_err(|e| {
            IngestError::BadBody(format!(
                "a Honeycomb batch is a JSON array of {{\"data\": {{...}}, \"time\": ..., \"samplerate\": N}} objects: {e}"
            ))
        })?;
        let base = body.as_ptr() as usize;
        raws.iter()
            .map(|raw| {
                let start = raw.get().as_ptr() as usize - base;
                start..start + raw.get().len()
            })
            .collect()
    };
    Ok(Batch {
        body,
        items,
        msgpack,
    })
}

/// A batch element's envelope, its values left as text.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(borrow)]
    samplerate: Option<&'a RawValue>,
}

/// A JSON batch element as one line: `data`'s text with the envelope's
/// `time` and `samplerate` added after its own keys. A key given twice
/// makes the typed decoder hand the line to the general one, where the
/// last of duplicate keys wins: the envelope's, as with `with_envelope`.
fn line(raw: &str) -> MadeLine {
    // Only an object is an envelope (serde would also take an array of
    // three values for one).
    let envelope: Option<Envelope> = raw
        .starts_with('{')
        .then(|| serde_json::from_str(raw).ok())
        .flatten();
    let envelope = match envelope {
        Some(e) => e,
        None => {
            // Not an object: say what it is, as for MessagePack.
            let v: Value =
                serde_json::from_str(raw).map_err(|e| BadEvent(format!("not JSON: {e}")))?;
            return Err(element(v).err().unwrap_or_else(|| {
                BadEvent("a batch element must be an object holding \"data\"".into())
            }));
        }
    };
    let data = envelope
        .data
        .ok_or_else(|| BadEvent("the batch element has no \"data\"".into()))?
        .get()
        .trim();
    if !data.starts_with('{') {
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        return Err(BadEvent(format!(
            "\"data\" must be a JSON object, got {}",
            kind(&v)
        )));
    }
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(&data.as_bytes()[..data.len() - 1]);
    let mut empty = data[1..data.len() - 1].trim().is_empty();
    for (key, value) in [
        (TIME_COLUMN, envelope.time),
        (SAMPLE_RATE_COLUMN, envelope.samplerate),
    ] {
        let Some(v) = value.filter(|v| v.get() != "null") else {
            continue;
        };
        if !std::mem::take(&mut empty) {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v.get().as_bytes());
    }
    out.push(b'}');
    // Newlines in JSON text are whitespace between tokens (inside strings
    // they are escaped): one line, whatever the client's layout.
    for b in &mut out {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    Ok(out)
}

fn element(item: Value) -> MadeEvent {
    let Value::Object(mut envelope) = item else {
        return Err(BadEvent(
            "a batch element must be an object holding \"data\"".into(),
        ));
    };
    let data = match envelope.remove("data") {
        Some(Value::Object(data)) => data,
        Some(other) => {
            return Err(BadEvent(format!(
                "\"data\" must be a JSON object, got {}",
                kind(&other)
            )));
        }
        None => return Err(BadEvent("the batch element has no \"data\"".into())),
    };
    Ok(with_envelope(
        data,
        envelope.remove("time"),
        envelope.remove("samplerate"),
    ))
}

/// The event of a `POST /1/events/{dataset}` body, with the values of its
/// `X-Honeycomb-Event-Time` and `X-Honeycomb-Samplerate` headers.
pub fn single(
    body: &[u8],
    event_time: Option<&str>,
    samplerate: Option<&str>,
) -> Result<MadeEvent, IngestError> {
    let data = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(data)) => data,
        Ok(other) => {
            return Err(IngestError::BadBody(format!(
                "a Honeycomb event is one JSON object, got {}",
                kind(&other)
            )));
        }
        Err(e) => {
            return Err(IngestError::BadBody(format!(
                "the body is not a JSON object: {e}"
            )));
        }
    };
    let rate = match samplerate.map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(Value::from(text.parse::<i64>().map_err(|_| {
            IngestError::BadBody(format!(
                "X-Honeycomb-Samplerate {text:?} is not a whole number"
            ))
        })?)),
    };
    let time = event_time
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Value::String(t.to_string()));
    Ok(Ok(with_envelope(data, time, rate)))
}

fn with_envelope(
    mut data: Map<String, Value>,
    time: Option<Value>,
    samplerate: Option<Value>,
) -> Map<String, Value> {
    if let Some(t) = time.filter(|t| !t.is_null()) {
        data.insert(TIME_COLUMN.into(), t);
    }
    if let Some(r) = samplerate.filter(|r| !r.is_null()) {
        data.insert(SAMPLE_RATE_COLUMN.into(), r);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_envelope_gives_time_and_sample_rate() {
        let body = json!([
            {"data": {"a": 1, "time": "x"}, "time": "2026-01-01T00:00:00Z", "samplerate": 4},
            {"data": {"a": 2}},
            {"data": 3},
            {"time": "2026-01-01T00:00:00Z"},
            7,
        ]);
        let text = body.to_string();
        let b = batch(Bytes::from(text), false).unwrap();
        assert_eq!(b.len(), 5);
        let Made::Lines(events) = b.read(0..5) else {
            panic!("JSON elements are lines")
        };
        assert_eq!(events.len(), 5);
        let parsed =
            |i: usize| -> Value { serde_json::from_slice(events[i].as_ref().unwrap()).unwrap() };
        // Both times are in the line; the general path keeps the last.
        let first = String::from_utf8(events[0].clone().unwrap()).unwrap();
        assert_eq!(
            first,
            r#"{"a":1,"time":"x","time":"2026-01-01T00:00:00Z","samplerate":4}"#
        );
        assert_eq!(parsed(0)["time"], "2026-01-01T00:00:00Z");
        assert_eq!(parsed(1), json!({"a": 2}));
        assert!(events[2].as_ref().unwrap_err().0.contains("a number"));
        assert!(events[3].as_ref().unwrap_err().0.contains("no \"data\""));
        assert!(events[4].as_ref().unwrap_err().0.contains("holding"));
        // Any layout becomes one line; an empty object takes the envelope.
        let b = batch(
            Bytes::from_static(
                b"[{\"data\": {\n\"a\": 1\n}}, {\"data\": {}, \"samplerate\": 2}, [{\"a\": 1}, null, null]]",
            ),
            false,
        )
        .unwrap();
        let Made::Lines(events) = b.read(0..3) else {
            panic!("lines")
        };
        assert_eq!(events[0].as_ref().unwrap(), b"{ \"a\": 1 }");
        assert_eq!(events[1].as_ref().unwrap(), br#"{"samplerate":2}"#);
        assert!(events[2].is_err(), "an array is not an envelope");
        assert!(
            batch(Bytes::from_static(b"{\"data\": {}}"), false).is_err(),
            "a batch is an array"
        );
    }

    #[test]
    fn a_single_event_takes_its_headers() {
        let e = single(b"{\"a\": 1}", Some("1700000000"), Some("10"))
            .unwrap()
            .unwrap();
        assert_eq!(e["time"], "1700000000");
        assert_eq!(e["samplerate"], 10);
        let err = single(b"{}", None, Some("ten")).unwrap_err().to_string();
        assert!(err.contains("X-Honeycomb-Samplerate"), "{err}");
        assert!(single(b"[1]", None, None).is_err());
    }

    #[test]
    fn batches_are_read_in_chunks_of_bounded_size() {
        let element = format!("{{\"data\": {{\"s\": \"{}\"}}}}", "x".repeat(300_000));
        let body = format!("[{}]", vec![element; 7].join(","));
        let b = batch(Bytes::from(body), false).unwrap();
        // 300 KB each: three fit in a MiB.
        assert_eq!(b.chunks(), vec![0..3, 3..6, 6..7]);
        let small = format!("[{}]", vec!["{\"data\": {}}"; 20_000].join(","));
        let b = batch(Bytes::from(small), false).unwrap();
        assert_eq!(b.chunks(), vec![0..EVENTS_AT_ONCE, EVENTS_AT_ONCE..20_000]);
    }
}
