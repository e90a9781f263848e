//! Database access shared by the services: SeaORM connections to PostgreSQL
//! (one schema per service) or SQLite (one file per service), the
//! idempotency inbox that makes event handlers safe to run twice, and the
//! pool gauges.

pub mod inbox;
pub mod pool;

pub use pool::PoolGauges;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};
use sea_orm_migration::MigratorTrait;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: DbErr,
    },
    #[error("invalid schema name '{0}': use letters, digits and underscores")]
    BadSchema(String),
    #[error("cannot create the folder of SQLite file {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Opens a pool. On PostgreSQL, creates `schema` when missing and puts it
/// first on the search path, so every table of the service lands there.
pub async fn connect(url: &str, schema: Option<&str>, max_connections: u32) -> Result<DatabaseConnection, StoreError> {
    let connect_error = |source| StoreError::Connect {
        url: redact(url),
        source,
    };
    if url.starts_with("sqlite:") {
        create_sqlite_dir(url)?;
    }
    if let Some(schema) = schema {
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || schema.is_empty() {
            return Err(StoreError::BadSchema(schema.to_owned()));
        }
        let bootstrap = Database::connect(url).await.map_err(connect_error)?;
        bootstrap
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
            ))
            .await
            .map_err(connect_error)?;
        bootstrap.close().await.map_err(connect_error)?;
    }

    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        // WAL lets readers run beside the single writer; NORMAL sync is
        // durable across process crashes, which is what embedded mode promises.
        .map_sqlx_sqlite_opts(|options| {
            options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
        });
    if let Some(schema) = schema {
        options.set_schema_search_path(schema);
    }
    Database::connect(options).await.map_err(connect_error)
}

/// Applies the pending migrations of `M` to the database of `service`. A
/// service calls it at start and `rtim migrate` calls it ahead of a rollout;
/// with nothing pending it changes nothing.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection, service: &str) -> Result<(), DbErr> {
    let pending = M::get_pending_migrations(db).await?.len();
    M::up(db, None).await?;
    tracing::info!(service, migrations.applied = pending, "database schema is up to date");
    Ok(())
}

fn create_sqlite_dir(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Drops the password from a URL before it goes into an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_password() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
