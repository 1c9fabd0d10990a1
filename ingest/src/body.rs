//! From an HTTP body to a list of JSON events: decompression within the
//! size limit, then a JSON object, a JSON array of objects, or NDJSON.

use crate::error::BadEvent;
use std::io::Read;

use serde_json::{Map, Value};

use crate::IngestError;

/// One event of a request: its object, or why it could not be read.
pub type ParsedEvent = Result<Map<String, Value>, BadEvent>;

/// Whether a body with this `Content-Encoding` is its own content.
pub fn is_identity(encoding: Option<&str>) -> bool {
    encoding.is_none_or(|e| {
        let e = e.trim();
        e.is_empty() || e.eq_ignore_ascii_case("identity")
    })
}

/// Undoes `Content-Encoding`, refusing output larger than `limit` bytes so
/// that a small compressed body cannot expand without bound.
/// The largest zstd window a body may use (16 MiB): a decoder holds one
/// window, and a frame may ask for up to 2 GiB.
const ZSTD_WINDOW_LOG: u32 = 24;

pub fn decode(encoding: Option<&str>, body: &[u8], limit: usize) -> Result<Vec<u8>, IngestError> {
    if is_identity(encoding) {
        return Ok(body.to_vec());
    }
    let encoding = encoding.unwrap_or_default().trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        "zstd" => {
            let bad = |e: std::io::Error| {
                IngestError::BadBody(format!(
                    "zstd body cannot be decoded (windows up to {} MiB are taken): {e}",
                    1 << (ZSTD_WINDOW_LOG - 20)
                ))
            };
            let mut decoder = zstd::stream::read::Decoder::new(body).map_err(bad)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG).map_err(bad)?;
            Box::new(decoder)
        }
        other => return Err(IngestError::UnsupportedEncoding(other.to_string())),
    };
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            let taken = match encoding.as_str() {
                "zstd" => format!(
                    " (windows up to {} MiB are taken)",
                    1 << (ZSTD_WINDOW_LOG - 20)
                ),
                _ => String::new(),
            };
            IngestError::BadBody(format!("{encoding} body cannot be decoded{taken}: {e}"))
        })?;
    if out.len() > limit {
        return Err(IngestError::TooLarge {
            limit,
            after: " after decompression",
        });
    }
    Ok(out)
}

/// Undoes `Content-Encoding` off the async threads (`decode`); a body
/// without one is its own content.
pub async fn inflate(
    encoding: Option<String>,
    raw: bytes::Bytes,
    limit: usize,
) -> Result<bytes::Bytes, IngestError> {
    if is_identity(encoding.as_deref()) {
        return Ok(raw);
    }
    let decoded = tokio::task::spawn_blocking(move || decode(encoding.as_deref(), &raw, limit))
        .await
        .map_err(|e| IngestError::task_failed("decompressing a body", e))??;
    Ok(decoded.into())
}

/// Splits a body into events. NDJSON is read when the content type says so,
/// or when the body is not one JSON document but its first line is.
pub fn parse(body: &[u8], ndjson: bool) -> Result<Vec<ParsedEvent>, IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    if ndjson {
        return Ok(parse_ndjson(body, 0));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(event)) => Ok(vec![Ok(event)]),
        Ok(Value::Array(items)) => Ok(items.into_iter().map(into_event).collect()),
        Ok(other) => Err(IngestError::BadBody(format!(
            "body must be a JSON object, an array of objects, or NDJSON; got {}",
            kind(&other)
        ))),
        Err(_) if is_ndjson(body, false) => Ok(parse_ndjson(body, 0)),
        Err(e) => Err(IngestError::BadBody(format!("body is not JSON: {e}"))),
    }
}

/// The lines of a body, as `split` at `\n` gives them, found with memchr
/// (a byte-by-byte split was 4% of ingest).
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    line_ranges(body).map(|r| &body[r])
}

/// Where each of `lines` is in the body.
pub fn line_ranges(body: &[u8]) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body)
        .chain(std::iter::once(body.len()))
        .map(move |end| {
            let line = start..end;
            start = end + 1;
            line
        })
}

/// NDJSON events; `first_line` numbers the body's first line in messages.
pub fn parse_ndjson(body: &[u8], first_line: usize) -> Vec<ParsedEvent> {
    lines(body)
        .enumerate()
        .map(|(n, line)| (n + first_line, line))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(n, line)| match serde_json::from_slice::<Value>(line) {
            Ok(v) => into_event(v).map_err(|e| BadEvent(format!("line {}: {e}", n + 1))),
            Err(e) => Err(BadEvent(format!("line {}: not JSON: {e}", n + 1))),
        })
        .collect()
}

/// True when a body should be read as NDJSON: its content type says so, or
/// it is not one JSON document but its first line is an object. A complete
/// object on the first line followed by anything but whitespace cannot be
/// one document, so only the first line is parsed here, never the body.
pub fn is_ndjson(body: &[u8], hint: bool) -> bool {
    if hint {
        return true;
    }
    let mut lines = lines(body).skip_while(|l| l.iter().all(u8::is_ascii_whitespace));
    let first_is_object = lines
        .next()
        .is_some_and(|l| matches!(serde_json::from_slice::<Value>(l), Ok(Value::Object(_))));
    first_is_object && lines.any(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// The elements of a body that is a JSON array, in pieces of at most
/// `events`, as byte ranges: found by one pass that builds no value (the
/// whole array as `Value`s took several times the body's size), so that
/// each piece is parsed and converted on its own. None when the body is
/// not an array.
pub fn array_pieces(
    body: &[u8],
    events: usize,
) -> Option<Result<Vec<Vec<std::ops::Range<usize>>>, IngestError>> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'[' {
        return None;
    }
    let elements = match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
        Ok(elements) => elements,
        Err(e) => return Some(Err(IngestError::BadBody(format!("body is not JSON: {e}")))),
    };
    let base = body.as_ptr() as usize;
    let ranges: Vec<std::ops::Range<usize>> = elements
        .iter()
        .map(|raw| {
            let at = raw.get().as_ptr() as usize - base;
            at..at + raw.get().len()
        })
        .collect();
    Some(Ok(ranges
        .chunks(events.max(1))
        .map(<[_]>::to_vec)
        .collect()))
}

/// The events of some elements of a JSON array body.
pub fn parse_elements(body: &[u8], elements: &[std::ops::Range<usize>]) -> Vec<ParsedEvent> {
    elements
        .iter()
        .map(
            |r| match serde_json::from_slice::<Value>(&body[r.clone()]) {
                Ok(v) => into_event(v),
                Err(e) => Err(BadEvent(format!("not JSON: {e}"))),
            },
        )
        .collect()
}

/// Cuts an NDJSON body at line ends into pieces of at most `lines` lines,
/// each with the number (from 0) of its first line, so that a large body is
/// converted piece by piece instead of all parsed at once.
pub fn ndjson_pieces(body: &[u8], lines: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut pieces = Vec::new();
    let (mut start, mut first, mut count) = (0, 0, 0);
    for i in memchr::memchr_iter(b'\n', body) {
        count += 1;
        if count == lines {
            pieces.push((first, start..i + 1));
            (start, first, count) = (i + 1, first + lines, 0);
        }
    }
    if start < body.len() {
        pieces.push((first, start..body.len()));
    }
    pieces
}

fn into_event(v: Value) -> ParsedEvent {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(BadEvent(format!(
            "an event must be a JSON object, got {}",
            kind(&other)
        ))),
    }
}

/// What a JSON value is, for messages ("got a number").
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_what_split_gives() {
        for body in ["", "\n", "a", "a\n", "a\nb", "\n\na\n\n", "{}\r\n{}"] {
            let ours: Vec<&[u8]> = lines(body.as_bytes()).collect();
            let split: Vec<&[u8]> = body.as_bytes().split(|&b| b == b'\n').collect();
            assert_eq!(ours, split, "{body:?}");
        }
    }

    #[test]
    fn object_array_and_ndjson() {
        assert_eq!(parse(br#"{"a":1}"#, false).unwrap().len(), 1);
        let arr = parse(br#"[{"a":1}, 2, {"b":2}]"#, false).unwrap();
        assert!(arr[0].is_ok() && arr[2].is_ok());
        assert_eq!(
            arr[1].as_ref().unwrap_err(),
            "an event must be a JSON object, got a number"
        );
        let nd = parse(b"{\"a\":1}\n\n{oops\r\n{\"a\":2}\r\n", true).unwrap();
        assert_eq!(nd.len(), 3, "blank lines are skipped");
        assert!(
            nd[1].as_ref().unwrap_err().starts_with("line 3: not JSON"),
            "{:?}",
            nd[1]
        );
        assert!(nd[2].is_ok(), "CRLF line endings are fine");
    }

    #[test]
    fn array_bodies_are_cut_into_elements_without_values() {
        let body = b" [ {\"a\": 1},\n  {\"a\":\n 2}, 3, {\"b\": [1, {\"c\": \"]\"}]} ] ";
        let pieces = array_pieces(body, 2).unwrap().unwrap();
        assert_eq!(pieces.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        let events: Vec<ParsedEvent> = pieces
            .iter()
            .flat_map(|p| parse_elements(body, p))
            .collect();
        assert_eq!(events.len(), 4);
        assert_eq!(events[1].as_ref().unwrap()["a"], 2);
        assert_eq!(
            events[2].as_ref().unwrap_err(),
            "an event must be a JSON object, got a number"
        );
        assert_eq!(events[3].as_ref().unwrap()["b"][1]["c"], "]");
        assert!(array_pieces(b"{\"a\": 1}", 2).is_none());
        assert!(array_pieces(b"[1, 2", 2).unwrap().is_err());
        assert_eq!(array_pieces(b"[]", 2).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn pieces_keep_line_numbers() {
        let body = b"{\"a\":1}\n{\"a\":2}\n\n{oops\n{\"a\":5}";
        let pieces = ndjson_pieces(body, 2);
        assert_eq!(pieces.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 2, 4]);
        let errors: Vec<BadEvent> = pieces
            .iter()
            .flat_map(|(first, r)| parse_ndjson(&body[r.clone()], *first))
            .filter_map(Result::err)
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 4: not JSON"), "{errors:?}");
        assert!(is_ndjson(body, false) && !is_ndjson(b"[{}]", false) && is_ndjson(b"[{}]", true));
        assert!(
            !is_ndjson(b"\n{\"a\":1}\n\n", false),
            "one object is one document"
        );
        assert!(
            !is_ndjson(b"{\n\"a\": 1\n}\n", false),
            "a pretty-printed object is one document"
        );
        assert!(
            is_ndjson(b"\n{\"a\":1}\n oops", false),
            "what follows a first-line object makes NDJSON"
        );
    }

    #[test]
    fn ndjson_without_its_content_type() {
        let nd = parse(b"{\"a\":1}\n{\"a\":2}\n", false).unwrap();
        assert_eq!(nd.len(), 2);
    }

    #[test]
    fn not_json_at_all() {
        let err = parse(b"hello", false).unwrap_err();
        assert!(err.to_string().starts_with("body is not JSON"), "{err}");
        let err = parse(b"\"text\"", false).unwrap_err();
        assert!(err.to_string().contains("got a string"), "{err}");
        assert!(parse(b"  \n", false).unwrap().is_empty());
    }

    #[test]
    fn gzip_and_zstd_within_the_limit() {
        let raw = b"{\"a\":1}".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode(Some("gzip"), &gz, 10_000).unwrap(), raw);
        let zs = zstd::encode_all(&raw[..], 3).unwrap();
        assert_eq!(decode(Some("zstd"), &zs, 10_000).unwrap(), raw);
        let err = decode(Some("gzip"), &gz, 100).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { .. }), "{err}");
        assert!(matches!(
            decode(Some("br"), &gz, 100),
            Err(IngestError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            decode(Some("gzip"), b"not gzip", 100),
            Err(IngestError::BadBody(_))
        ));
    }
}
