//! The profile service: one live profile per shopper, built from the event
//! stream by its own durable consumer, and served over gRPC.
//!
//! - [`state`]: the profile in memory and how each event changes it.
//! - [`apply`]: the consumer: identity resolution and idempotent updates.
//! - [`store`]: reads and writes of profiles and identities.
//! - [`service`]: the `ProfileService` gRPC implementation.
//! - [`entity`], [`migration`]: tables and their migrations.

pub mod apply;
pub mod entity;
pub mod migration;
pub mod service;
pub mod state;
pub mod store;

use std::time::Duration;

use rtim_bus::worker::{self, WorkerOptions};
use rtim_proto::profile::v1::profile_service_server::ProfileServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::server::GrpcServer;
use rtim_runtime::settings::DatabaseSettings;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

/// Serves profiles on `listener` and consumes the event stream until
/// `shutdown` is cancelled.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = open_database(&ctx.settings.database).await?;
    let _pool_gauges = rtim_store::PoolGauges::start(&db, "profile");

    let consumer = ctx.bus.consumer("profile", &ctx.bus.all_events_filter()).await?;
    let options = WorkerOptions {
        name: "profile".to_owned(),
        max_batch: 256,
        retry_delay: Duration::from_secs(1),
    };
    let worker = tokio::spawn(worker::run(
        options,
        consumer,
        apply::ProfileConsumer::new(db.clone()),
        shutdown.clone(),
    ));

    let limit = ctx.settings.server.max_message_bytes;
    let service = ProfileServiceServer::new(service::Profiles::new(db.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let served = GrpcServer::new("profile")
        .add_service(InterceptedService::new(
            service,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        ))
        .serve(listener, shutdown.clone(), ctx.settings.server.drain_timeout)
        .await;
    shutdown.cancel();
    worker.await?;
    db.close().await?;
    served
}

/// Connects to the service's database and applies its pending migrations.
/// `run` calls it at start and `rtim migrate` ahead of a rollout.
pub async fn open_database(database: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let (url, schema) = database.for_service("profile");
    let db = rtim_store::connect(&url, schema.as_deref(), database.max_connections).await?;
    rtim_store::migrate::<migration::Migrator>(&db, "profile").await?;
    Ok(db)
}
