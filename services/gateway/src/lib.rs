//! The HTTP gateway: Segment-style tracking endpoints and REST/JSON over the
//! gRPC services. It owns no tables and consumes no bus: every request is
//! authenticated here and forwarded, with the same API key, to a service.
//!
//! - [`auth`]: API keys from `Authorization` (Bearer, or Basic and
//!   `writeKey` on the tracking endpoints) and scope checks.
//! - [`body`]: encoding check, size limits before and after gzip
//!   decompression, JSON parsing.
//! - [`grpc`]: the service clients, forwarded keys and deadlines.
//! - [`mapping`]: JSON to protobuf and back.
//! - [`metrics`]: request counts and latencies per route.
//! - [`problem`]: RFC 9457 problem responses and the gRPC status mapping.
//! - [`routes`]: the handlers, one module per area.
//! - [`trace`]: the server span of each request.

pub mod auth;
pub mod body;
pub mod grpc;
pub mod mapping;
pub mod metrics;
pub mod problem;
pub mod routes;
pub mod trace;

use std::future::IntoFuture as _;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use rtim_runtime::ServiceContext;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Auth;
use crate::body::BodyLimits;
use crate::grpc::Clients;
use crate::routes::Shared;

/// Serves the gateway on `listener` until `shutdown` is cancelled, then
/// waits up to `server.drain_timeout` for in-flight requests.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    rtim_runtime::metrics::install();
    let app = router(&ctx)?;
    serve(listener, app, shutdown, ctx.settings.server.drain_timeout).await
}

/// Builds the routes of every area, then the layers that every request
/// passes through. The last layer added runs first.
fn router(ctx: &ServiceContext) -> anyhow::Result<Router> {
    let clients = Clients::connect(&ctx.settings)?;
    let gateway = &ctx.settings.gateway;
    let limits = BodyLimits {
        raw: gateway.max_body_bytes,
        decoded: gateway.max_batch_bytes,
    };
    let shared = Shared {
        auth: Auth::new(ctx.keys.clone()),
        timeout: ctx.settings.endpoints.timeout,
        retry_after: gateway.retry_after,
        body_limit: limits.decoded,
    };

    let app = Router::new()
        .merge(routes::tracking::router(
            shared.api("ingestion", clients.ingestion),
            gateway.max_event_bytes,
        ))
        .merge(routes::profiles::router(shared.api("profile", clients.profile)))
        .merge(routes::decide::router(shared.api("decisioning", clients.decisioning)))
        .merge(routes::recommendations::router(
            shared.api("recommendations", clients.recommendations),
        ))
        .merge(routes::surveys::router(shared.api("surveys", clients.surveys)))
        .merge(routes::points::router(shared.api("gamification", clients.gamification)))
        .merge(routes::ops::router())
        .fallback(routes::ops::not_found)
        .method_not_allowed_fallback(routes::ops::method_not_allowed)
        // Innermost: decodes gzip bodies, so that the handlers' size limit
        // counts decompressed bytes.
        .layer(RequestDecompressionLayer::new())
        // In front of decompression: returns a problem response for an
        // unsupported encoding instead of the decompression layer's bare 415,
        // and bounds the bytes on the wire.
        .layer(axum::middleware::from_fn_with_state(limits, body::limit_raw_body))
        // Outside the body checks, so that their rejections are counted too.
        .layer(axum::middleware::from_fn(metrics::record))
        // Outermost: one server span per request, the parent of the gRPC
        // calls, logged at debug level. Failures are not logged again here
        // because the handlers log server faults.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(trace::request_span)
                .on_response(trace::record_response)
                .on_failure(()),
        );
    Ok(app)
}

async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken, drain: Duration) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(service = "gateway", listen.address = %address, "http server listening");
    // Nagle's algorithm off, so a response written in several small pieces
    // does not wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::select! {
        result = server => result?,
        () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(service = "gateway", drain.timeout = ?drain, "drain timed out, closing open requests");
        }
    }
    tracing::info!(service = "gateway", "http server stopped");
    Ok(())
}
