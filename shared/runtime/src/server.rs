//! gRPC server bootstrap shared by every service: grpc.health.v1,
//! reflection (v1 and v1alpha), Prometheus `/metrics` and `/healthz` on the
//! same port over HTTP/1.1, a server span and RED metrics per RPC, and a
//! graceful shutdown bounded by the drain timeout.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument as _;

use crate::{metrics, propagation};

/// A gRPC server under construction: add the service's own gRPC services,
/// then call [`GrpcServer::serve`].
pub struct GrpcServer {
    name: &'static str,
    routes: Routes,
    health: HealthReporter,
    service_names: Vec<&'static str>,
}

impl GrpcServer {
    /// Starts a server for the service `name` with health and reflection mounted.
    pub fn new(name: &'static str) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rtim_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .expect("descriptor sets are generated at build time and always decode");
        // grpcio's reflection client still speaks only v1alpha.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rtim_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .expect("descriptor sets are generated at build time and always decode");
        let routes = Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        Self {
            name,
            routes,
            health,
            service_names: Vec::new(),
        }
    }

    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Returns the health reporter, for services whose health follows a dependency.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves until `shutdown` is cancelled, then reports NOT_SERVING, stops
    /// accepting connections and waits up to `drain` for in-flight requests.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> anyhow::Result<()> {
        let address = listener.local_addr()?;
        let mut routes = self.routes;
        let router = std::mem::take(routes.axum_router_mut())
            .route("/metrics", get(metrics::render))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(observe_rpc));
        *routes.axum_router_mut() = router;

        for name in std::iter::once("").chain(self.service_names.iter().copied()) {
            self.health.set_service_status(name, ServingStatus::Serving).await;
        }
        tracing::info!(service = self.name, listen.address = %address, "grpc server listening");

        let signal = {
            let shutdown = shutdown.clone();
            let health = self.health.clone();
            let names = self.service_names.clone();
            async move {
                shutdown.cancelled().await;
                for name in std::iter::once("").chain(names.iter().copied()) {
                    health.set_service_status(name, ServingStatus::NotServing).await;
                }
            }
        };
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener), signal);
        tokio::pin!(server);

        tokio::select! {
            result = &mut server => result?,
            () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                tracing::warn!(service = self.name, drain.timeout = ?drain, "drain timed out, closing open requests");
            }
        }
        tracing::info!(service = self.name, "grpc server stopped");
        Ok(())
    }
}

/// Turns Nagle's algorithm off on every accepted connection. tonic applies its
/// own `tcp_nodelay` only to listeners it binds itself. Without this, a
/// response written in several small frames waits for the client's delayed
/// ACK, about 40 ms on Linux.
fn incoming(listener: TcpListener) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Runs each RPC of an rtim service in a server span, a child of the
/// caller's span when the request carries a `traceparent`, and records
/// `grpc_server_handled_total` and `grpc_server_handling_seconds`. Health,
/// reflection and the HTTP routes pass through untouched.
async fn observe_rpc(request: Request<Body>, next: Next) -> axum::response::Response {
    if !request.uri().path().starts_with("/rtim.") {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let span = rpc_span(&path, request.headers());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let code = response_code(&response);
    span.record("rpc.grpc.status_code", code as i32);
    if is_server_error(code) {
        span.record("otel.status_code", "error");
    }
    metrics::record_rpc(&path, code, started.elapsed());
    response
}

/// Builds the server span of one RPC with the OpenTelemetry RPC attributes.
fn rpc_span(path: &str, headers: &http::HeaderMap) -> tracing::Span {
    let (service, method) = metrics::split_rpc_path(path);
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    propagation::set_remote_parent(&span, headers);
    span
}

/// Reads the gRPC status of a response. Errors from a unary handler travel
/// as a trailers-only response, so the status is in the headers. Success
/// puts it in trailers, which a middleware cannot see without buffering the
/// body, so a response without the header counts as OK.
// NOTE: an error that a streaming RPC sends in its trailers is counted as OK.
fn response_code(response: &axum::response::Response) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

/// Codes that mark the server span as failed, following the OpenTelemetry
/// RPC conventions: the others describe the caller's mistake, not the server's.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}
