//! RED metrics per route: `http_server_request_duration_seconds`, labelled
//! by method, route template and status as the OpenTelemetry HTTP semantic
//! conventions name them. Its `_count` series is the request rate.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use rtim_runtime::metrics::HTTP_SERVER_REQUEST_DURATION_SECONDS;

/// Label for requests that matched no route, so that scanned paths do not
/// create a series each.
pub const UNMATCHED: &str = "unmatched";

pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        HTTP_SERVER_REQUEST_DURATION_SECONDS,
        "http_request_method" => method,
        "http_route" => route,
        "http_response_status_code" => response.status().as_str().to_owned(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Returns the method as sent when it is a standard one and `_OTHER`
/// otherwise, as the conventions ask, so that made-up methods do not create
/// a series each.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}
