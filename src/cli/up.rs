//! `rtim up`: the whole platform in one process, for trying it out, demos
//! and fast tests. SQLite files keep what the services own. The bus and the
//! cache live in memory, so events not yet consumed are lost if the process
//! dies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rtim_bus::Bus;
use rtim_cache::Cache;
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::{Service, ServiceContext, Settings};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Tenant of the demo key and of the example definitions.
pub const DEMO_TENANT: &str = "demo";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Folder for the SQLite files, the demo API key (`api-key`) and the
    /// bound addresses (`endpoints.json`).
    #[arg(long, default_value_os_t = super::default_data_dir())]
    data_dir: PathBuf,
    /// Address of the HTTP gateway.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway: SocketAddr,
    /// Address of the ingestion gRPC service.
    #[arg(long, default_value = "127.0.0.1:50051")]
    ingestion: SocketAddr,
    /// Bind every listener, the gateway and ingestion included, on a free
    /// port chosen by the system; the addresses are printed and written to
    /// `endpoints.json`.
    #[arg(long)]
    ephemeral_ports: bool,
    /// Folder with actions.yaml, surveys.yaml and point-rules.yaml.
    #[arg(long)]
    examples: Option<PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data folder {}", args.data_dir.display()))?;
    let _lock = lock_data_dir(&args.data_dir)?;
    let key = demo_key(&args.data_dir)?;
    let examples = examples_dir(args.examples.as_deref())?;
    let settings = embedded_settings(&args.data_dir, &examples, &key)?;
    let telemetry = rtim_runtime::telemetry::init(&settings.telemetry, "embedded")?;
    rtim_runtime::metrics::install();

    let result = start(&args, settings, &key).await;
    // Every service has stopped, after a signal or a failure: export the
    // spans still buffered before the process exits.
    telemetry.shutdown().await;
    result
}

/// Binds every listener, then runs every service until shutdown.
async fn start(args: &UpArgs, settings: Settings, key: &str) -> anyhow::Result<()> {
    let listeners = bind_all(args).await?;
    let mut settings = settings;
    for (service, listener) in &listeners {
        let url = format!("http://{}", listener.local_addr()?);
        match service {
            Service::Ingestion => settings.endpoints.ingestion = url,
            Service::Profile => settings.endpoints.profile = url,
            Service::Decisioning => settings.endpoints.decisioning = url,
            Service::Recommendations => settings.endpoints.recommendations = url,
            Service::Surveys => settings.endpoints.surveys = url,
            Service::Gamification => settings.endpoints.gamification = url,
            Service::Gateway => {}
        }
    }

    let ctx = ServiceContext {
        keys: ApiKeys::from_settings(&settings.auth)?,
        settings: Arc::new(settings),
        bus: Bus::connect(&rtim_bus::BusConfig::default()).await?,
        cache: Cache::memory("rtim:"),
    };
    let endpoints = describe(&listeners)?;
    write_endpoints(&args.data_dir, &endpoints)?;
    print_banner(&args.data_dir, &endpoints, key);

    let shutdown = CancellationToken::new();
    super::signal::cancel_on_signal(shutdown.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (service, listener) in listeners {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let result = super::serve::run_service(service, ctx, listener, shutdown.clone()).await;
            if let Err(error) = &result {
                tracing::error!(service = service.name(), error = %format!("{error:#}"), "service failed, stopping every service");
                shutdown.cancel();
            }
            result
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(error) = joined.context("service task panicked").and_then(|result| result) {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Holds an exclusive lock on `DIR/lock` for the life of the process, so a
/// second `rtim up` on the same folder fails instead of sharing its files.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("lock");
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another rtim up is running on {}; stop it or pass another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Reads the demo key from `DIR/api-key`, or creates one, so that restarts
/// keep the key that clients already use.
fn demo_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("api-key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let key = format!("rtim_demo_{}", uuid::Uuid::new_v4().simple());
    write_private(&path, &format!("{key}\n"))?;
    Ok(key)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// Finds the examples folder: the one given, else `examples/` in the current
/// folder, else the one in the source tree this binary was built from.
fn examples_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates = match given {
        Some(path) => vec![path.to_path_buf()],
        None => vec![
            PathBuf::from("examples"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        ],
    };
    candidates
        .into_iter()
        .find(|path| path.join("actions.yaml").is_file())
        .context("no examples folder with actions.yaml found; pass --examples DIR")
}

fn embedded_settings(data_dir: &Path, examples: &Path, key: &str) -> anyhow::Result<Settings> {
    let database_url = format!("sqlite://{}/{{service}}.db?mode=rwc", data_dir.display());
    // Service start-up lines would bury the banner, so only warnings are
    // logged unless RUST_LOG or RTIM__TELEMETRY__LOG_FILTER is set.
    let mut settings = rtim_runtime::settings::load(None, &[("database.url", database_url)])?;
    if std::env::var_os("RTIM__TELEMETRY__LOG_FILTER").is_none() {
        settings.telemetry.log_filter = "warn".to_owned();
    }
    settings.bus.url = "memory".to_owned();
    settings.cache.url = "memory".to_owned();
    settings.auth.keys.push(ApiKeySpec {
        tenant: DEMO_TENANT.to_owned(),
        scopes: Scope::ALL.to_vec(),
        sha256: hash_key_hex(key),
    });
    settings.decisioning.actions_file = Some(examples.join("actions.yaml"));
    settings.surveys.surveys_file = Some(examples.join("surveys.yaml"));
    settings.gamification.rules_file = Some(examples.join("point-rules.yaml"));
    Ok(settings)
}

async fn bind_all(args: &UpArgs) -> anyhow::Result<Vec<(Service, TcpListener)>> {
    let mut listeners = Vec::new();
    for service in Service::ALL {
        let address = match (args.ephemeral_ports, service) {
            (true, _) => SocketAddr::from(([127, 0, 0, 1], 0)),
            (false, Service::Gateway) => args.gateway,
            (false, Service::Ingestion) => args.ingestion,
            (false, service) => SocketAddr::from(([127, 0, 0, 1], service.default_port())),
        };
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for {}", service.name()))?;
        listeners.push((service, listener));
    }
    Ok(listeners)
}

fn describe(listeners: &[(Service, TcpListener)]) -> anyhow::Result<BTreeMap<&'static str, String>> {
    listeners
        .iter()
        .map(|(service, listener)| Ok((service.name(), listener.local_addr()?.to_string())))
        .collect()
}

fn write_endpoints(data_dir: &Path, endpoints: &BTreeMap<&'static str, String>) -> anyhow::Result<()> {
    let path = data_dir.join("endpoints.json");
    std::fs::write(&path, serde_json::to_string_pretty(endpoints)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn print_banner(data_dir: &Path, endpoints: &BTreeMap<&'static str, String>, key: &str) {
    println!(
        "rtim is up (embedded mode: SQLite in {}, in-process bus and cache)",
        data_dir.display()
    );
    println!("events in the in-process bus that are not yet consumed are lost if this process stops");
    println!();
    println!("  gateway          http://{}", endpoints["gateway"]);
    for service in Service::ALL.iter().filter(|service| **service != Service::Gateway) {
        println!("  {:<16} grpc://{}", service.name(), endpoints[service.name()]);
    }
    println!();
    println!(
        "  demo API key     {key}   (tenant '{DEMO_TENANT}', saved in {})",
        data_dir.join("api-key").display()
    );
    println!();
    println!("try: rtim replay --format rees46 FILE");
}
