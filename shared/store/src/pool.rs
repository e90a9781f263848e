//! Gauges of a service's connection pool, read from sqlx through SeaORM.

use std::time::Duration;

use sea_orm::{DatabaseConnection, DbBackend};

/// Connections open in the pool, by `service` and `state` (`in_use` or `idle`).
pub const POOL_CONNECTIONS: &str = "rtim_db_pool_connections";
/// Most connections the pool opens, by `service`.
pub const POOL_MAX_CONNECTIONS: &str = "rtim_db_pool_max_connections";

/// How often the gauges are read. Reading is a few atomic loads, so the
/// interval only needs to be shorter than a scrape's.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Connection counts of a pool at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// Reads the pool's counts; `None` for a connection that is not an sqlx pool.
pub fn usage(db: &DatabaseConnection) -> Option<PoolUsage> {
    let (size, idle, max) = match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle(), pool.options().get_max_connections())
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle(), pool.options().get_max_connections())
        }
        _ => return None,
    };
    let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
    Some(PoolUsage {
        in_use: size - idle,
        idle,
        max,
    })
}

/// Keeps the pool gauges of one service current until dropped.
#[must_use = "the gauges stop updating when this is dropped"]
#[derive(Debug)]
pub struct PoolGauges(tokio::task::JoinHandle<()>);

impl PoolGauges {
    /// Starts refreshing the gauges of `db`, labelled `service`, every few
    /// seconds. Needs a Tokio runtime.
    pub fn start(db: &DatabaseConnection, service: &str) -> Self {
        let db = db.clone();
        let service = service.to_owned();
        let in_use = metrics::gauge!(POOL_CONNECTIONS, "service" => service.clone(), "state" => "in_use");
        let idle = metrics::gauge!(POOL_CONNECTIONS, "service" => service.clone(), "state" => "idle");
        let max = metrics::gauge!(POOL_MAX_CONNECTIONS, "service" => service);
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(REFRESH_INTERVAL);
            loop {
                interval.tick().await;
                let Some(usage) = usage(&db) else { return };
                in_use.set(f64::from(usage.in_use));
                idle.set(f64::from(usage.idle));
                max.set(f64::from(usage.max));
            }
        });
        Self(task)
    }
}

impl Drop for PoolGauges {
    fn drop(&mut self) {
        self.0.abort();
    }
}
