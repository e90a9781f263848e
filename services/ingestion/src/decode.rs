//! Reports a request that cannot be decoded as INVALID_ARGUMENT.
//!
//! tonic returns INTERNAL when prost fails to decode a request message, as
//! gRPC's status code guide recommends for parse errors. For ingestion such a
//! request is the client's mistake, most often a string field holding bytes
//! that are not UTF-8, which protobuf forbids, and the client must learn that
//! resending will not help. Decode failures of streamed requests reach the
//! handler as an error instead and are converted in [`crate::stream`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Start of the message of every prost decode error, as tonic passes it on.
const PROST_DECODE_PREFIX: &str = "failed to decode Protobuf message: ";
/// Machine-readable reason in the `ErrorInfo` detail.
pub const UNDECODABLE_REASON: &str = "UNDECODABLE_MESSAGE";

/// Wraps a gRPC service and rewrites the status of requests whose message
/// failed to decode.
#[derive(Clone, Debug)]
pub struct DecodeErrorsAsInvalidArgument<S> {
    inner: S,
}

impl<S> DecodeErrorsAsInvalidArgument<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for DecodeErrorsAsInvalidArgument<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, Request, Body> tower::Service<Request> for DecodeErrorsAsInvalidArgument<S>
where
    S: tower::Service<Request, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            rewrite_decode_error(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites a trailers-only INTERNAL response that carries a prost decode
/// error. tonic sends the error of a unary call that way, with the status in
/// the headers, while a successful response has no `grpc-status` header.
fn rewrite_decode_error(headers: &mut HeaderMap) {
    if headers.get("grpc-status").map(|code| code.as_bytes()) != Some(b"13") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(detail) = status.message().strip_prefix(PROST_DECODE_PREFIX) else {
        return;
    };
    if let Err(error) = undecodable(detail).add_header(headers) {
        tracing::warn!(error = %error, "cannot rewrite a decode error as INVALID_ARGUMENT");
    }
}

/// Builds INVALID_ARGUMENT for a request that failed to decode, from prost's
/// description of the failure (the field path and what was wrong).
pub fn undecodable(detail: &str) -> Status {
    let details = ErrorDetails::with_error_info(UNDECODABLE_REASON, "rtim.ingestion", []);
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: the message is not valid protobuf ({detail}); string fields must hold valid UTF-8"),
        details,
    )
}

/// Converts the error of a streamed request: a decode failure becomes
/// INVALID_ARGUMENT, anything else is returned unchanged.
pub fn classify_stream_error(status: Status) -> Status {
    match status.message().strip_prefix(PROST_DECODE_PREFIX) {
        Some(detail) if status.code() == Code::Internal => undecodable(detail),
        _ => status,
    }
}
