//! The gamification service: awards points for track events according to
//! per-tenant rules, keeps the ledger and serves balances.
//!
//! - [`service`]: the gRPC edge (point rule admin and balances).
//! - [`rulebook`]: the stored rules with a compiled in-memory copy per tenant.
//! - [`validate`]: rule validation and expression compilation.
//! - [`awards`]: the consumer that turns events into ledger entries.
//! - [`definitions`]: the point rules file applied at start.
//! - [`store`], [`entity`], [`migration`]: the database.
//! - [`error`]: the service's errors and their gRPC codes.

pub mod awards;
pub mod definitions;
pub mod entity;
pub mod error;
pub mod migration;
pub mod rulebook;
pub mod service;
pub mod store;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use rtim_bus::worker::{self, WorkerOptions};
use rtim_proto::gamification::v1::gamification_service_server::GamificationServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::server::GrpcServer;
use rtim_runtime::settings::DatabaseSettings;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

const NAME: &str = "gamification";

/// Runs the service on `listener` until `shutdown` is cancelled: migrates the
/// database, loads the rules and the rules file, starts the consumer and
/// serves gRPC.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = open_database(&ctx.settings.database).await?;
    let _pool_gauges = rtim_store::PoolGauges::start(&db, NAME);
    let rules = Arc::new(rulebook::RuleBook::load(db.clone()).await?);
    if let Some(path) = &ctx.settings.gamification.rules_file {
        definitions::apply_file(&rules, path).await?;
    }

    // The child token also stops the consumer when the server fails.
    let stop = shutdown.child_token();
    let consumer = start_consumer(&ctx, db.clone(), rules.clone(), stop.clone()).await?;
    let result = serve(&ctx, listener, rules, db, stop.clone()).await;
    stop.cancel();
    consumer.await?;
    result
}

/// Connects to the service's database and applies its pending migrations.
/// `run` calls it at start and `rtim migrate` ahead of a rollout.
pub async fn open_database(database: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let (url, schema) = database.for_service(NAME);
    let db = rtim_store::connect(&url, schema.as_deref(), database.max_connections).await?;
    rtim_store::migrate::<migration::Migrator>(&db, NAME).await?;
    Ok(db)
}

async fn start_consumer(
    ctx: &ServiceContext,
    db: DatabaseConnection,
    rules: Arc<rulebook::RuleBook>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let consumer = ctx.bus.consumer(NAME, &ctx.bus.all_events_filter()).await?;
    let options = WorkerOptions {
        name: NAME.into(),
        max_batch: 256,
        retry_delay: Duration::from_secs(1),
    };
    let handler = awards::PointAwarder { db, rules };
    Ok(tokio::spawn(worker::run(options, consumer, handler, shutdown)))
}

async fn serve(
    ctx: &ServiceContext,
    listener: TcpListener,
    rules: Arc<rulebook::RuleBook>,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let max_bytes = ctx.settings.server.max_message_bytes;
    let server = GamificationServiceServer::new(service::Gamification { rules, db })
        .max_decoding_message_size(max_bytes)
        .max_encoding_message_size(max_bytes);
    GrpcServer::new(NAME)
        .add_service(InterceptedService::new(
            server,
            rtim_runtime::auth::interceptor(ctx.keys.clone()),
        ))
        .serve(listener, shutdown, ctx.settings.server.drain_timeout)
        .await
}
