//! Operational endpoints without authentication: liveness, readiness,
//! Prometheus metrics, and problem responses for unknown routes.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::problem::Problem;

pub fn router() -> Router {
    Router::new()
        .route("/healthz", get(healthy))
        .route("/readyz", get(healthy))
        .route("/metrics", get(metrics))
}

/// Returns `ok` as soon as the gateway serves requests, because it keeps no
/// state and connects to the services lazily.
async fn healthy() -> &'static str {
    "ok"
}

async fn metrics() -> impl IntoResponse {
    let text = rtim_runtime::metrics::install().render();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

pub async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
