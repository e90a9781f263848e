//! Channels to other services of the mesh. On a [`TracedChannel`], every call
//! runs in a client span whose W3C trace context goes out as `traceparent`
//! metadata, so the callee's server span joins the caller's trace.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument as _;

use crate::{metrics, propagation};

/// A tonic channel that traces each call; services use it for every call
/// inside the mesh.
#[derive(Clone, Debug)]
pub struct TracedChannel {
    inner: Channel,
}

impl TracedChannel {
    pub fn new(inner: Channel) -> Self {
        Self { inner }
    }
}

/// Builds a lazily connected channel with a per-call deadline, so a service
/// can start before the services it calls.
pub fn channel(url: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("invalid endpoint URL '{url}': {error}"))?
        .timeout(timeout)
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Builds a channel like [`channel`] that traces each call.
pub fn traced_channel(url: &str, timeout: Duration) -> anyhow::Result<TracedChannel> {
    channel(url, timeout).map(TracedChannel::new)
}

impl Service<http::Request<Body>> for TracedChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let span = client_span(request.uri().path());
        propagation::inject(&span, request.headers_mut());
        let call = self.inner.call(request);
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = call.await;
                if let Ok(response) = &result {
                    record_status(&recorded, response);
                }
                result
            }
            .instrument(span),
        )
    }
}

/// Builds the client span of one call with the OpenTelemetry RPC attributes.
fn client_span(path: &str) -> tracing::Span {
    let (service, method) = metrics::split_rpc_path(path);
    tracing::info_span!(
        "grpc.client",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Records a status that arrived in the response headers, as a failed
/// unary call's does. The span ends with the headers, so a status that
/// comes later in trailers is not recorded.
fn record_status(span: &tracing::Span, response: &http::Response<Body>) {
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok());
    if let Some(code) = code {
        span.record("rpc.grpc.status_code", code);
        if code != tonic::Code::Ok as i32 {
            span.record("otel.status_code", "error");
        }
    }
}

/// Adds `authorization: Bearer KEY` to an outgoing request.
pub fn with_key<T>(mut request: tonic::Request<T>, key: &str) -> Result<tonic::Request<T>, tonic::Status> {
    let value = format!("Bearer {key}")
        .parse()
        .map_err(|_| tonic::Status::unauthenticated("API key contains characters not allowed in metadata"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}
