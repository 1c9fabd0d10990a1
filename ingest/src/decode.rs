//! NDJSON lines straight into flat events.
//!
//! Parsing each line into a `serde_json::Value` first cost a `String` per
//! key and per string value and a `BTreeMap` per object, all freed right
//! after flattening: about a third of ingest's instructions (callgrind,
//! docs/benchmarks.md). This decoder visits a line once and keeps keys and
//! strings borrowed from the body (owned only when they hold escapes).
//!
//! It gives exactly what parsing into a `Value` and flattening gave: keys
//! in sorted order at each level (a `Value` object is a `BTreeMap`), the
//! last of duplicate keys, integers beyond `i64` as floats, arrays that
//! are not string sets as their JSON text. Any line it cannot decode (not
//! an object, bad JSON) goes through the `Value` path again, so that
//! messages stay the same.

use crate::error::BadEvent;
use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::body;
use crate::convert::{FlatEvent, Scalar, prepare};
use atoll_store::TIME_COLUMN;

/// The events of an NDJSON piece whose first line is line `first_line`
/// (from 0) of the body: one per non-blank line, each flat or the reason
/// it cannot be stored.
pub fn ndjson_events(
    body: &[u8],
    first_line: usize,
    arrival: i64,
) -> Vec<Result<FlatEvent<'_>, BadEvent>> {
    body::lines(body)
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .enumerate()
        .map(|(index, (n, line))| {
            fast(index, line, arrival).unwrap_or_else(|| slow(index, line, n + first_line, arrival))
        })
        .collect()
}

/// The decoder; None when the line is not an object of valid JSON.
fn fast(index: usize, line: &[u8], arrival: i64) -> Option<Result<FlatEvent<'_>, BadEvent>> {
    let first = line.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let top = Object { top: true }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    let Node::Object(entries, time) = top else {
        return None;
    };
    let time = match time {
        Some(v) => match crate::time::parse_time(&v) {
            Ok(t) => t.unwrap_or(arrival),
            Err(e) => return Some(Err(e)),
        },
        None => arrival,
    };
    let mut fields = Vec::with_capacity(entries.len());
    flatten(None, entries, &mut fields);
    Some(Ok(FlatEvent {
        index,
        time,
        fields,
    }))
}

/// The `Value` path, for lines the decoder left: the same messages as
/// before, and events owning their text.
fn slow(index: usize, line: &[u8], n: usize, arrival: i64) -> Result<FlatEvent<'static>, BadEvent> {
    let parsed = body::parse_ndjson(line, n).pop().expect("a non-blank line");
    let event = parsed?;
    prepare(index, &event, arrival).map(FlatEvent::into_owned)
}

enum Node<'a> {
    Scalar(Scalar<'a>),
    /// Entries in key order, the last of duplicates kept; the top level
    /// also gives its `time` value.
    Object(Vec<(Cow<'a, str>, Node<'a>)>, Option<Value>),
}

fn flatten<'a>(
    prefix: Option<&str>,
    entries: Vec<(Cow<'a, str>, Node<'a>)>,
    out: &mut Vec<(Cow<'a, str>, Scalar<'a>)>,
) {
    for (key, node) in entries {
        let name = match prefix {
            None => key,
            Some(p) => Cow::Owned(format!("{p}.{key}")),
        };
        match node {
            Node::Scalar(s) => out.push((name, s)),
            Node::Object(inner, _) => flatten(Some(&name), inner, out),
        }
    }
}

/// A key or string: borrowed from the line unless it holds escapes.
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object; at the top level its `time` is kept as a `Value` for
/// `parse_time`.
struct Object {
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Object {
    type Value = Node<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Object {
    type Value = Node<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        let mut time = None;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if self.top && key == TIME_COLUMN {
                time = Some(map.next_value::<Value>()?);
                continue;
            }
            entries.push((key, map.next_value_seed(Any)?));
        }
        // A `Value` object is a BTreeMap: sorted keys, the last duplicate wins.
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, first| later.0 == first.0);
        Ok(Node::Object(entries, time))
    }
}

/// Any value below the top level.
struct Any;

impl<'de> DeserializeSeed<'de> for Any {
    type Value = Node<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Any {
    type Value = Node<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Null))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Int(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Float(v as f64),
        }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Float(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Str(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Str(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Scalar(Scalar::Str(Cow::Owned(v))))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Node<'de>, A::Error> {
        Object { top: false }.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items: Vec<Item<'de>> = Vec::new();
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            items.push(item);
        }
        if items.iter().all(|i| !matches!(i, Item::Other(_))) {
            let set = items
                .into_iter()
                .map(|i| match i {
                    Item::Str(s) => Some(s),
                    _ => None,
                })
                .collect();
            return Ok(Node::Scalar(Scalar::StrList(set)));
        }
        // Not a string set: its JSON text, as a `Value` array prints it.
        let values: Vec<Value> = items.into_iter().map(Item::into_value).collect();
        Ok(Node::Scalar(Scalar::Str(Cow::Owned(
            Value::Array(values).to_string(),
        ))))
    }
}

/// An array element: a string, null, or anything else (kept as a `Value`).
enum Item<'a> {
    Str(Cow<'a, str>),
    Null,
    Other(Value),
}

impl Item<'_> {
    fn into_value(self) -> Value {
        match self {
            Item::Str(s) => Value::String(s.into_owned()),
            Item::Null => Value::Null,
            Item::Other(v) => v,
        }
    }
}

impl<'de> de::Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

/// Strings borrowed, null, and anything else built as `serde_json` builds
/// a `Value` (so that the array's text prints the same).
struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Item<'de>, E> {
        Ok(Item::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Item<'de>, E> {
        Ok(Item::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Item<'de>, E> {
        Ok(Item::Other(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Item<'de>, E> {
        Ok(Item::Other(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Item<'de>, E> {
        Ok(Item::Other(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Item<'de>, E> {
        Ok(Item::Other(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Item::Other(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let mut m = serde_json::Map::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            m.insert(k, v);
        }
        Ok(Item::Other(Value::Object(m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `Value` path gives for the same line.
    fn by_value(line: &str) -> Result<FlatEvent<'static>, BadEvent> {
        slow(0, line.as_bytes(), 0, 7)
    }

    fn same(line: &str) {
        let fast = fast(0, line.as_bytes(), 7).expect("decoded");
        let slow = by_value(line);
        match (fast, slow) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.time, b.time, "{line}");
                assert_eq!(a.fields, b.fields, "{line}");
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "{line}"),
            (a, b) => panic!("{line}: {a:?} vs {b:?}"),
        }
    }

    #[test]
    fn gives_what_the_value_path_gives() {
        for line in [
            r#"{"time":"2026-01-01T00:00:00Z","service":"api","status":200,"duration_ms":12.5,"tags":["a",null,"b"],"is_mobile":true,"user_id":"u1"}"#,
            r#"{"b":1,"a":{"z":"q\"uote","b":{"c":null}},"a.b":2,"x":[1,"two",{"k":3}],"e":[],"big":18446744073709551615,"neg":-5,"f":-0.0}"#,
            r#"{"dup":1,"dup":"second","time":1700000000,"time":null}"#,
            r#"{"esc\u00e9":"caf\u00e9","emoji":"\ud83d\ude00","n":0.1}"#,
            r#"{"time":true}"#,
            r#"{"time":{"a":1}}"#,
            r#"  {"nested":{"time":"not the event time"}}  "#,
            r#"{}"#,
        ] {
            same(line);
        }
    }

    #[test]
    fn leaves_what_it_cannot_decode_to_the_value_path() {
        for line in [
            r#"[1,2]"#,
            r#""text""#,
            r#"{"a":1"#,
            r#"{"a":1} {"#,
            "3",
            r#"{"f":1e400}"#,
        ] {
            assert!(fast(0, line.as_bytes(), 7).is_none(), "{line}");
        }
        let events = ndjson_events(b"{\"a\":1}\n\n[1]\n{\"b\":\n", 10, 7);
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].as_ref().unwrap().fields,
            vec![("a".into(), Scalar::Int(1))]
        );
        assert_eq!(
            events[1].as_ref().unwrap_err(),
            "line 13: an event must be a JSON object, got an array"
        );
        assert!(
            events[2]
                .as_ref()
                .unwrap_err()
                .starts_with("line 14: not JSON"),
            "{events:?}"
        );
    }

    #[test]
    fn borrows_unescaped_text_from_the_line() {
        let line = br#"{"service":"api","esc":"a\nb"}"#;
        let e = fast(0, line, 0).unwrap().unwrap();
        let esc = e.fields.iter().find(|(k, _)| k == "esc").unwrap();
        assert!(matches!(esc, (Cow::Borrowed(_), Scalar::Str(Cow::Owned(s))) if s == "a\nb"));
        let service = e.fields.iter().find(|(k, _)| k == "service").unwrap();
        assert!(matches!(
            service,
            (Cow::Borrowed(_), Scalar::Str(Cow::Borrowed("api")))
        ));
    }
}
