//! The decisioning service: chooses the best actions for a shopper on a
//! placement and logs each decision, so that outcome events carrying its id
//! can be attributed to it.
//!
//! - [`service`]: the gRPC edge (Decide and the action admin RPCs).
//! - [`catalog`]: the stored actions with a compiled in-memory copy per tenant.
//! - [`validate`]: action and request validation, condition compilation.
//! - [`ranking`]: eligibility and ranking by value x priority.
//! - [`profiles`]: profile reads from the profile service through the cache.
//! - [`outcomes`]: the consumer that stores events carrying a decision id.
//! - [`definitions`]: the actions file applied at start.
//! - [`store`], [`entity`], [`migration`]: the database.
//! - [`error`]: the service's errors and their gRPC codes.

pub mod catalog;
pub mod decision_log;
pub mod definitions;
pub mod entity;
pub mod error;
pub mod migration;
pub mod outcomes;
pub mod profiles;
pub mod ranking;
pub mod service;
pub mod store;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use rtim_bus::worker::{self, WorkerOptions};
use rtim_proto::decisioning::v1::decisioning_service_server::DecisioningServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::server::GrpcServer;
use rtim_runtime::settings::DatabaseSettings;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

const NAME: &str = "decisioning";

/// Runs the service on `listener` until `shutdown` is cancelled: migrates the
/// database, loads the actions and the actions file, starts the outcome
/// consumer and serves gRPC.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = open_database(&ctx.settings.database).await?;
    let _pool_gauges = rtim_store::PoolGauges::start(&db, NAME);
    let catalog = Arc::new(catalog::Catalog::load(db.clone()).await?);
    if let Some(path) = &ctx.settings.decisioning.actions_file {
        definitions::apply_file(&catalog, path).await?;
    }

    // The child token also stops the consumer when the server fails.
    let stop = shutdown.child_token();
    let consumer = start_consumer(&ctx, db.clone(), stop.clone()).await?;
    let result = serve(&ctx, listener, catalog, db, stop.clone()).await;
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
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let consumer = ctx.bus.consumer(NAME, &ctx.bus.all_events_filter()).await?;
    let options = WorkerOptions {
        name: NAME.into(),
        max_batch: 256,
        retry_delay: Duration::from_secs(1),
    };
    let handler = outcomes::OutcomeRecorder { db };
    Ok(tokio::spawn(worker::run(options, consumer, handler, shutdown)))
}

async fn serve(
    ctx: &ServiceContext,
    listener: TcpListener,
    catalog: Arc<catalog::Catalog>,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let endpoints = &ctx.settings.endpoints;
    let channel = rtim_runtime::client::traced_channel(&endpoints.profile, endpoints.timeout)?;
    let cache = ctx.cache.scoped("decisioning:");
    let profiles = profiles::ProfileReader::new(channel, cache, ctx.settings.decisioning.profile_cache_ttl);
    let log = decision_log::DecisionLog::start(db);
    let service = service::Decisioning { catalog, profiles, log };

    let max_bytes = ctx.settings.server.max_message_bytes;
    let server = DecisioningServiceServer::new(service)
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
