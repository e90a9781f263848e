//! The ingestion service. It validates shopper events, fills in what the
//! client may leave out (message id, timestamps), and replies only once the
//! event stream has stored each event it reports as accepted.
//!
//! - [`validate`]: per-event checks that name the offending field.
//! - [`service`]: the `IngestionService` gRPC implementation.

pub mod service;
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
    let limit = ctx.settings.server.max_message_bytes;
    let ingestion = Ingestion::new(ctx.bus.clone(), ctx.settings.ingestion.max_batch_events);
    let service = IngestionServiceServer::new(ingestion)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    GrpcServer::new("ingestion")
        .add_service(InterceptedService::new(
            service,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        ))
        .serve(listener, shutdown, ctx.settings.server.drain_timeout)
        .await
}
