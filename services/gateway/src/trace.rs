//! One server span per request, with the OpenTelemetry HTTP attributes. A
//! `traceparent` from the client makes the span its child; otherwise the
//! request starts a trace. The gRPC calls a handler makes are children of
//! this span.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower_http::trace::{DefaultOnResponse, OnResponse as _};

use crate::metrics::method_label;

/// Builds the span of one request.
pub fn request_span(request: &Request) -> tracing::Span {
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    // The conventions name a server span "{method} {route}", or just the
    // method when no route matched, so that span names stay few.
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "http.server",
        otel.name = name,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    rtim_runtime::propagation::set_remote_parent(&span, request.headers());
    span
}

/// Records the status on the span and logs the response at debug level, as
/// the default `TraceLayer` does.
pub fn record_response<B>(response: &Response<B>, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    // Only server errors fail the span: a 4xx is the client's mistake.
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    DefaultOnResponse::new().on_response(response, latency, span);
}
