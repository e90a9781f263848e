//! The ingestion service. It validates shopper events, fills in what the
//! client may leave out (message id, timestamps), and replies only once the
//! event stream has stored each event it reports as accepted.
//!
//! - [`validate`]: per-event checks that name the offending field.
//! - [`normalise`]: message ids, receive time and timestamp correction.
//! - [`dedupe`]: message id and order id claims in the cache, over a window
//!   longer than the event stream's.
//! - [`dead_letters`]: rejected events kept in the dead-letter stream, and
//!   the `DeadLetterService` that lists and replays them.
//! - [`service`]: the `IngestionService` gRPC implementation.
//! - [`stream`]: the bidirectional Stream RPC and its flow control.
//! - [`decode`]: INVALID_ARGUMENT for requests that cannot be decoded.

pub mod dead_letters;
pub mod decode;
pub mod dedupe;
pub mod normalise;
pub mod service;
pub mod stream;
pub mod validate;

use rtim_proto::ingestion::v1::dead_letter_service_server::DeadLetterServiceServer;
use rtim_proto::ingestion::v1::ingestion_service_server::IngestionServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::server::GrpcServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

pub use dead_letters::admin::DeadLetterAdmin;
pub use dedupe::Dedupe;
pub use service::Ingestion;

/// Serves ingestion on `listener` until `shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let settings = &ctx.settings.ingestion;
    anyhow::ensure!(
        settings.stream_window > 0,
        "invalid configuration: ingestion.stream_window must be at least 1"
    );
    let limit = ctx.settings.server.max_message_bytes;
    let ingestion = Ingestion::new(ctx.bus.clone(), settings)
        .with_shutdown(shutdown.clone())
        .with_dedupe(Dedupe::new(ctx.cache.scoped("ingestion:"), settings.dedupe_window))
        .with_dead_letters();
    let dead_letters = DeadLetterServiceServer::new(DeadLetterAdmin::new(ctx.bus.clone(), &ingestion))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let service = IngestionServiceServer::new(ingestion)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    GrpcServer::new("ingestion")
        .add_service(decode::DecodeErrorsAsInvalidArgument::new(InterceptedService::new(
            service,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        )))
        .add_service(InterceptedService::new(
            dead_letters,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        ))
        .serve(listener, shutdown, ctx.settings.server.drain_timeout)
        .await
}
