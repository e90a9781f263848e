//! The ingestion service. It validates shopper events, fills in what the
//! client may leave out (message id, timestamps), and replies only once the
//! event stream has stored each event it reports as accepted.
//!
//! - [`validate`]: per-event checks that name the offending field.
//! - [`normalise`]: message ids, receive time and timestamp correction.
//! - [`service`]: the `IngestionService` gRPC implementation.
//! - [`stream`]: the bidirectional Stream RPC and its flow control.
//! - [`decode`]: INVALID_ARGUMENT for requests that cannot be decoded.

pub mod decode;
pub mod normalise;
pub mod service;
pub mod stream;
pub mod validate;

use rtim_proto::ingestion::v1::ingestion_service_server::IngestionServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::server::GrpcServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

pub use service::Ingestion;

/// Serves ingestion on `listener` until `shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = &ctx.settings.ingestion;
    anyhow::ensure!(
        settings.stream_window > 0,
        "invalid configuration: ingestion.stream_window must be at least 1"
    );
    let limit = ctx.settings.server.max_message_bytes;
    let ingestion = Ingestion::new(ctx.bus.clone(), settings).with_shutdown(shutdown.clone());
    let service = IngestionServiceServer::new(ingestion)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    GrpcServer::new("ingestion")
        .add_service(decode::DecodeErrorsAsInvalidArgument::new(InterceptedService::new(
            service,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        )))
        .serve(listener, shutdown, ctx.settings.server.drain_timeout)
        .await
}
