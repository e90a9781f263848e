//! `rtim migrate [SERVICE...]`: applies the database migrations of the named
//! services, or of every service that owns tables, and exits. In Kubernetes a
//! Job runs it before a rollout, so that replicas starting together find the
//! schema ready instead of each trying to create it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rtim_runtime::Service;
use rtim_runtime::settings::DatabaseSettings;

/// The services that own database tables. Ingestion and the gateway own none.
const WITH_TABLES: [Service; 5] = [
    Service::Profile,
    Service::Decisioning,
    Service::Recommendations,
    Service::Surveys,
    Service::Gamification,
];

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// profile, decisioning, recommendations, surveys or gamification; every
    /// one of them when none is named.
    services: Vec<String>,
    /// Configuration file (TOML or YAML); `RTIM__` environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let services = select(&args.services)?;
    let settings = rtim_runtime::settings::load(args.config.as_deref(), &[])?;
    let telemetry = rtim_runtime::telemetry::init(&settings.telemetry, "migrate")?;
    let mut result = Ok(());
    for service in services {
        result = migrate(service, &settings.database)
            .await
            .with_context(|| format!("migrating the database of {} failed", service.name()));
        if result.is_err() {
            break;
        }
    }
    telemetry.shutdown().await;
    result
}

/// Resolves the names on the command line before anything connects, so that
/// a typo in the last name does not leave the first services migrated.
fn select(names: &[String]) -> anyhow::Result<Vec<Service>> {
    if names.is_empty() {
        return Ok(WITH_TABLES.to_vec());
    }
    names
        .iter()
        .map(|name| match Service::parse(name) {
            Some(service) if WITH_TABLES.contains(&service) => Ok(service),
            Some(_) => anyhow::bail!(
                "service '{name}' has no database tables; services with tables: {}",
                names_with_tables()
            ),
            None => anyhow::bail!(
                "unknown service '{name}'; services with tables: {}",
                names_with_tables()
            ),
        })
        .collect()
}

fn names_with_tables() -> String {
    let names: Vec<_> = WITH_TABLES.iter().map(|service| service.name()).collect();
    names.join(", ")
}

async fn migrate(service: Service, database: &DatabaseSettings) -> anyhow::Result<()> {
    let db = match service {
        Service::Profile => rtim_profile::open_database(database).await?,
        Service::Decisioning => rtim_decisioning::open_database(database).await?,
        Service::Recommendations => rtim_recommendations::open_database(database).await?,
        Service::Surveys => rtim_surveys::open_database(database).await?,
        Service::Gamification => rtim_gamification::open_database(database).await?,
        Service::Ingestion | Service::Gateway => {
            anyhow::bail!("service '{}' has no database tables", service.name())
        }
    };
    db.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn no_names_selects_every_service_with_tables() {
        assert_eq!(select(&[]).unwrap(), WITH_TABLES.to_vec());
    }

    #[test]
    fn named_services_keep_their_order() {
        let selected = select(&strings(&["surveys", "profile"])).unwrap();
        assert_eq!(selected, vec![Service::Surveys, Service::Profile]);
    }

    #[test]
    fn unknown_name_is_rejected() {
        let error = select(&strings(&["profile", "profiel"])).unwrap_err().to_string();
        assert!(error.contains("unknown service 'profiel'"), "{error}");
        assert!(error.contains("gamification"), "lists the valid names: {error}");
    }

    #[test]
    fn service_without_tables_is_rejected() {
        let error = select(&strings(&["gateway"])).unwrap_err().to_string();
        assert!(error.contains("'gateway' has no database tables"), "{error}");
    }
}
