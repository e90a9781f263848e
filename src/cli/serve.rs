//! `rtim serve <service>`: one service of the mesh, configured from an
//! optional file and `RTIM__` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rtim_runtime::{Service, ServiceContext};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// ingestion, profile, decisioning, recommendations, surveys, gamification or gateway.
    service: String,
    /// Configuration file (TOML or YAML); `RTIM__` environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let service = Service::parse(&args.service).with_context(|| {
        let names: Vec<_> = Service::ALL.iter().map(|service| service.name()).collect();
        format!(
            "unknown service '{}'; expected one of {}",
            args.service,
            names.join(", ")
        )
    })?;
    let settings = rtim_runtime::settings::load(args.config.as_deref(), &[])?;
    let telemetry = rtim_runtime::telemetry::init(&settings.telemetry, service.name())?;
    rtim_runtime::metrics::install();

    let result = start(service, settings).await;
    // After the service drained on SIGTERM, or failed to start: either way
    // the spans still buffered go out before the process exits.
    telemetry.shutdown().await;
    result
}

async fn start(service: Service, settings: rtim_runtime::Settings) -> anyhow::Result<()> {
    let address = listen_address(service, &settings);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let ctx = ServiceContext::connect(settings).await?;
    let shutdown = CancellationToken::new();
    super::signal::cancel_on_signal(shutdown.clone());
    tracing::info!(service = service.name(), listen.address = %listener.local_addr()?, "starting");
    run_service(service, ctx, listener, shutdown).await
}

/// Returns where a service listens: `server.listen`, the gateway's own setting, or
/// the service's default port on every interface.
fn listen_address(service: Service, settings: &rtim_runtime::Settings) -> SocketAddr {
    match (service, settings.server.listen) {
        (_, Some(address)) => address,
        (Service::Gateway, None) => settings.gateway.listen,
        (service, None) => SocketAddr::from(([0, 0, 0, 0], service.default_port())),
    }
}

/// Runs one service until `shutdown` is cancelled.
pub async fn run_service(
    service: Service,
    ctx: ServiceContext,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match service {
        Service::Ingestion => rtim_ingestion::run(ctx, listener, shutdown).await,
        Service::Profile => rtim_profile::run(ctx, listener, shutdown).await,
        Service::Decisioning => rtim_decisioning::run(ctx, listener, shutdown).await,
        Service::Recommendations => rtim_recommendations::run(ctx, listener, shutdown).await,
        Service::Surveys => rtim_surveys::run(ctx, listener, shutdown).await,
        Service::Gamification => rtim_gamification::run(ctx, listener, shutdown).await,
        Service::Gateway => rtim_gateway::run(ctx, listener, shutdown).await,
    }
}
