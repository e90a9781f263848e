//! The surveys service: targets surveys at shoppers with CEL conditions over
//! their profile, collects one response per shopper and survey, and reports
//! Net Promoter Scores.
//!
//! - [`service`]: the `SurveysService` gRPC handlers.
//! - [`definition`]: survey validation and compiled targeting.
//! - [`answers`]: response validation and NPS results.
//! - [`registry`]: compiled surveys per tenant, held in memory.
//! - [`profile`]: profiles read from the profile service.
//! - [`file`]: the surveys file loaded at start.
//! - [`consumer`]: counts events per shopper from the event stream.
//! - [`store`], [`entity`], [`migration`]: the tables.

pub mod answers;
pub mod consumer;
pub mod definition;
pub mod entity;
pub mod error;
pub mod file;
pub mod migration;
pub mod profile;
pub mod registry;
pub mod service;
pub mod store;

use std::time::Duration;

use anyhow::Context;
use rtim_bus::worker::{self, WorkerOptions};
use rtim_proto::surveys::v1::surveys_service_server::SurveysServiceServer;
use rtim_runtime::ServiceContext;
use rtim_runtime::errors::FieldViolation;
use rtim_runtime::server::GrpcServer;
use rtim_runtime::settings::DatabaseSettings;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::error::SurveyError;
use crate::service::SurveysApi;

/// Service name: the durable consumer and the database schema.
pub const NAME: &str = "surveys";

/// Runs the service until `shutdown` is cancelled: migrates the database,
/// loads the surveys file, starts the event consumer and serves gRPC on
/// `listener`.
pub async fn run(ctx: ServiceContext, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db = open_database(&ctx.settings.database).await?;
    let _pool_gauges = rtim_store::PoolGauges::start(&db, NAME);

    let channel =
        rtim_runtime::client::traced_channel(&ctx.settings.endpoints.profile, ctx.settings.endpoints.timeout)?;
    let api = SurveysApi::new(db.clone(), profile::ProfileSource::new(channel));
    if let Some(path) = &ctx.settings.surveys.surveys_file {
        load_file(&api, path).await?;
    }

    let consumer = ctx.bus.consumer(NAME, &ctx.bus.all_events_filter()).await?;
    let options = WorkerOptions {
        name: NAME.into(),
        max_batch: 256,
        retry_delay: Duration::from_secs(1),
    };
    // A child token stops the worker when serving fails as well as on shutdown.
    let worker_shutdown = shutdown.child_token();
    let worker = tokio::spawn(worker::run(
        options,
        consumer,
        consumer::EventHandler::new(db),
        worker_shutdown.clone(),
    ));

    let max_bytes = ctx.settings.server.max_message_bytes;
    let server = SurveysServiceServer::new(api)
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

/// Upserts every survey of the surveys file. The first invalid survey stops
/// the start with an error naming the file, the survey id and the field.
async fn load_file(api: &SurveysApi, path: &std::path::Path) -> anyhow::Result<()> {
    let definitions = file::load(path)?;
    let count = definitions.surveys.len();
    for survey in definitions.surveys {
        let id = survey.id.clone();
        api.put(&definitions.tenant, survey)
            .await
            .map_err(|error| match error {
                SurveyError::Invalid(violations) => anyhow::anyhow!(
                    "invalid surveys file {}: survey '{id}': {}",
                    path.display(),
                    describe(&violations)
                ),
                other => anyhow::Error::new(other),
            })
            .with_context(|| format!("loading surveys file {}", path.display()))?;
    }
    tracing::info!(tenant.id = %definitions.tenant, surveys.count = count, file = %path.display(), "surveys file loaded");
    Ok(())
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|violation| format!("invalid {}: {}", violation.field, violation.description))
        .collect::<Vec<_>>()
        .join("; ")
}
