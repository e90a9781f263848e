//! Request bodies. A middleware checks the encoding and bounds the raw body
//! before decompression. Handlers then read the decoded body under the
//! second limit and parse it as JSON. Reading stops at the limit, so a small
//! gzip body that expands beyond it never fills memory.

use std::error::Error as _;

use axum::BoxError;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::Value;

use crate::problem::Problem;

/// Body size limits in bytes.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Bytes on the wire, before decompression (`gateway.max_body_bytes`).
    pub raw: usize,
    /// Bytes after decompression (`gateway.max_batch_bytes`).
    pub decoded: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes before decompression (gateway.max_body_bytes)")]
    RawTooLarge { limit: usize },
    #[error("request body exceeds the limit of {limit} bytes (gateway.max_batch_bytes)")]
    TooLarge { limit: usize },
    #[error("unsupported Content-Encoding '{encoding}': send gzip or an uncompressed body")]
    UnsupportedEncoding { encoding: String },
    #[error("cannot read the request body: {source}")]
    Unreadable {
        #[source]
        source: axum::Error,
    },
    #[error("request body is not valid gzip data (Content-Encoding: gzip): {source}")]
    InvalidGzip {
        #[source]
        source: axum::Error,
    },
    #[error("event is {size} bytes, over the limit of {limit} bytes (gateway.max_event_bytes)")]
    EventTooLarge { size: usize, limit: usize },
    #[error("request body is empty: expected a JSON object")]
    Empty,
    #[error("invalid JSON body: {source}")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
}

impl From<BodyError> for Problem {
    fn from(error: BodyError) -> Self {
        let status = match error {
            BodyError::RawTooLarge { .. } | BodyError::TooLarge { .. } | BodyError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            BodyError::UnsupportedEncoding { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyError::Unreadable { .. }
            | BodyError::InvalidGzip { .. }
            | BodyError::Empty
            | BodyError::InvalidJson { .. } => StatusCode::BAD_REQUEST,
        };
        Problem::new(status, error.to_string())
    }
}

/// Raised inside the raw body stream, so that [`read`] can tell an
/// oversized upload from a corrupt one after decompression has wrapped it.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes before decompression")]
struct RawLimitExceeded {
    limit: usize,
}

/// Request extension that marks a body sent with `Content-Encoding: gzip`.
/// The decompression layer removes the header, and handlers need to know
/// the encoding to report a corrupt body as invalid gzip data.
#[derive(Clone, Copy, Debug)]
pub struct Gzipped;

/// Middleware in front of decompression: rejects encodings other than gzip
/// with a problem response, rejects a declared length over the raw limit
/// at once, and counts the bytes of bodies sent without a length.
pub async fn limit_raw_body(State(limits): State<BodyLimits>, mut request: Request, next: Next) -> Response {
    if let Err(error) = normalize_encoding(request.headers_mut()) {
        return Problem::from(error).into_response();
    }
    if let Err(error) = check_declared_length(request.headers(), limits) {
        return Problem::from(error).into_response();
    }
    if request.headers().contains_key(header::CONTENT_ENCODING) {
        request.extensions_mut().insert(Gzipped);
    }
    let request = request.map(|body| count_raw_bytes(body, limits.raw));
    next.run(request).await
}

/// Checks `Content-Length` against the limits. An uncompressed body is its
/// decoded body, so it is held to the decoded limit, and the error names that limit.
fn check_declared_length(headers: &HeaderMap, limits: BodyLimits) -> Result<(), BodyError> {
    let Some(length) = declared_length(headers) else {
        return Ok(());
    };
    let compressed = headers.contains_key(header::CONTENT_ENCODING);
    if !compressed && length > limits.decoded {
        return Err(BodyError::TooLarge { limit: limits.decoded });
    }
    if length > limits.raw {
        return Err(BodyError::RawTooLarge { limit: limits.raw });
    }
    Ok(())
}

/// Lower-cases `gzip` (and its alias `x-gzip`) to the form the
/// decompression layer matches, and drops `identity`.
fn normalize_encoding(headers: &mut HeaderMap) -> Result<(), BodyError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(());
    };
    let encoding = value.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    match encoding.as_str() {
        "gzip" | "x-gzip" => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            Ok(())
        }
        "identity" | "" => {
            headers.remove(header::CONTENT_ENCODING);
            Ok(())
        }
        _ => Err(BodyError::UnsupportedEncoding {
            encoding: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        }),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn count_raw_bytes(body: Body, limit: usize) -> Body {
    let mut received = 0_usize;
    let stream = body.into_data_stream().map(move |chunk| -> Result<Bytes, BoxError> {
        let chunk = chunk?;
        received += chunk.len();
        if received > limit {
            return Err(Box::new(RawLimitExceeded { limit }));
        }
        Ok(chunk)
    });
    Body::from_stream(stream)
}

/// Reads a decoded body, stopping as soon as it exceeds `limit` bytes.
pub async fn read(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(classify_read_error)?;
        if buffer.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
}

/// Finds the raw limit in the error's cause chain; anything else is a
/// transport or gzip failure.
fn classify_read_error(error: axum::Error) -> BodyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(current) = cause {
        if let Some(exceeded) = current.downcast_ref::<RawLimitExceeded>() {
            return BodyError::RawTooLarge { limit: exceeded.limit };
        }
        cause = current.source();
    }
    BodyError::Unreadable { source: error }
}

/// Parses a body as JSON. The result is a `Value` rather than a typed
/// struct, because the mappers check each field's type themselves and name
/// the field in the violation, where serde's errors would name Rust types.
pub fn parse(bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    serde_json::from_slice(bytes).map_err(|source| BodyError::InvalidJson { source })
}

/// Reads a decoded body under `limit` and parses it as JSON.
pub async fn json(body: Body, limit: usize) -> Result<Value, Problem> {
    let bytes = read(body, limit).await?;
    Ok(parse(&bytes)?)
}

/// Reads the decoded body of `request` like [`read`], and reports a body
/// that fails to decompress as invalid gzip data.
pub async fn read_request(request: Request, limit: usize) -> Result<(HeaderMap, Bytes), BodyError> {
    let (parts, body) = request.into_parts();
    let gzipped = parts.extensions.get::<Gzipped>().is_some();
    match read(body, limit).await {
        Ok(bytes) => Ok((parts.headers, bytes)),
        Err(BodyError::Unreadable { source }) if gzipped => Err(BodyError::InvalidGzip { source }),
        Err(error) => Err(error),
    }
}

/// Returns the size of the compact JSON encoding of `value`, the measure of
/// `gateway.max_event_bytes`. Whitespace that the client added is not
/// counted, so pretty-printed and compact bodies of the same event get the
/// same size.
pub fn encoded_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // serde_json fails to write a `Value` only when the writer fails, and
    // `Counter::write` always returns Ok.
    serde_json::to_writer(&mut counter, value).expect("counting writer never fails");
    counter.0
}

/// Checks one event against `gateway.max_event_bytes`.
pub fn check_event_size(event: &Value, limit: usize) -> Result<(), BodyError> {
    let size = encoded_len(event);
    if size > limit {
        return Err(BodyError::EventTooLarge { size, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_stops_at_limit() {
        let result = read(Body::from(vec![b'x'; 11]), 10).await;
        assert!(matches!(result, Err(BodyError::TooLarge { limit: 10 })), "{result:?}");
        let result = read(Body::from(vec![b'x'; 10]), 10).await;
        assert_eq!(result.map(|bytes| bytes.len()).ok(), Some(10), "body at the limit");
    }

    #[tokio::test]
    async fn raw_limit_found_through_wrapping() {
        let counted = count_raw_bytes(Body::from(vec![b'x'; 11]), 10);
        let wrapped = Body::new(counted);
        let result = read(wrapped, 100).await;
        assert!(
            matches!(result, Err(BodyError::RawTooLarge { limit: 10 })),
            "{result:?}"
        );
    }

    #[test]
    fn declared_length_limits() {
        let limits = BodyLimits { raw: 100, decoded: 50 };
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("60"));
        let result = check_declared_length(&headers, limits);
        assert!(
            matches!(result, Err(BodyError::TooLarge { limit: 50 })),
            "uncompressed: {result:?}"
        );
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(
            check_declared_length(&headers, limits).is_ok(),
            "compressed under the raw limit"
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("101"));
        let result = check_declared_length(&headers, limits);
        assert!(
            matches!(result, Err(BodyError::RawTooLarge { limit: 100 })),
            "compressed: {result:?}"
        );
    }

    #[test]
    fn encodings_are_normalized() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert!(normalize_encoding(&mut headers).is_ok(), "GZIP accepted");
        assert_eq!(
            headers.get(header::CONTENT_ENCODING).map(HeaderValue::as_bytes),
            Some(&b"gzip"[..])
        );
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        let result = normalize_encoding(&mut headers);
        assert!(
            matches!(result, Err(BodyError::UnsupportedEncoding { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn event_size_is_compact_encoding() {
        let compact: Value = serde_json::from_str(r#"{"a":"bc","d":[1,2]}"#).expect("valid JSON");
        let pretty: Value = serde_json::from_str("{ \"a\" : \"bc\",\n  \"d\": [ 1, 2 ] }").expect("valid JSON");
        assert_eq!(encoded_len(&compact), 20, "compact");
        assert_eq!(encoded_len(&pretty), 20, "whitespace not counted");
        assert!(check_event_size(&compact, 20).is_ok(), "at the limit");
        let result = check_event_size(&compact, 19);
        assert!(
            matches!(result, Err(BodyError::EventTooLarge { size: 20, limit: 19 })),
            "{result:?}"
        );
    }

    #[test]
    fn empty_and_invalid_json() {
        let result = parse(b"  ");
        assert!(matches!(result, Err(BodyError::Empty)), "{result:?}");
        let result = parse(b"{\"a\":");
        assert!(matches!(result, Err(BodyError::InvalidJson { .. })), "{result:?}");
    }
}
