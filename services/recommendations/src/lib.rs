//! The recommendations service: recommends products from popularity and
//! same-session co-visitation, both kept up to date from the event stream,
//! and stores the product catalog that recommendations are decorated with.
//!
//! - [`consumer`]: applies `Product Viewed`, `Product Added` and
//!   `Order Completed` events to popularity, sessions, co-visits and shopper
//!   history.
//! - [`service`]: the `RecommendationsService` gRPC handlers.
//! - [`ranking`]: merges co-visited and popular candidates into one list.
//! - [`popular`]: the per-tenant popularity list, cached for a few seconds.
//! - [`store`]: tenant-scoped queries.
//! - [`entity`], [`migration`]: the tables.

pub mod consumer;
pub mod entity;
pub mod error;
pub mod migration;
pub mod popular;
pub mod ranking;
pub mod service;
pub mod store;

use std::time::Duration;

use rtim_bus::worker::{self, WorkerOptions};
use rtim_proto::recommendations::v1::recommendations_service_server::RecommendationsServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::server::GrpcServer;
use rtim_runtime::settings::DatabaseSettings;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// Service name: the durable consumer, the database schema and the cache scope.
pub const NAME: &str = "recommendations";

/// Runs the service until `shutdown` is cancelled: migrates the database,
/// starts the event consumer and serves gRPC on `listener`.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = open_database(&ctx.settings.database).await?;
    let _pool_gauges = rtim_store::PoolGauges::start(&db, NAME);

    let consumer = ctx.bus.consumer(NAME, &ctx.bus.all_events_filter()).await?;
    let options = WorkerOptions {
        name: NAME.into(),
        max_batch: 256,
        retry_delay: Duration::from_secs(1),
    };
    let handler = consumer::EventHandler::new(db.clone());
    // A child token stops the worker when serving fails as well as on shutdown.
    let worker_shutdown = shutdown.child_token();
    let worker = tokio::spawn(worker::run(options, consumer, handler, worker_shutdown.clone()));

    let popular = popular::PopularItems::new(db.clone());
    let api = service::RecommendationsApi::new(db, popular);
    let max_bytes = ctx.settings.server.max_message_bytes;
    let server = RecommendationsServiceServer::new(api)
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    let served = GrpcServer::new(NAME)
        .add_service(InterceptedService::new(
            server,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        ))
        .serve(listener, shutdown.clone(), ctx.settings.server.drain_timeout)
        .await;

    worker_shutdown.cancel();
    worker.await?;
    served
}

/// Connects to the service's database and applies its pending migrations.
/// `run` calls it at start and `rtim migrate` ahead of a rollout.
pub async fn open_database(database: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let (url, schema) = database.for_service(NAME);
    let db = rtim_store::connect(&url, schema.as_deref(), database.max_connections).await?;
    rtim_store::migrate::<migration::Migrator>(&db, NAME).await?;
    Ok(db)
}
