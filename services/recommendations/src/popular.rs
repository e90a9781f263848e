//! The top popular items of a tenant. Every recommendation that needs
//! filling reads this list, so it is kept in the cache for a few seconds
//! rather than sorted out of the database on each request.

use std::time::Duration;

use rtim_cache::Cache;
use rtim_runtime::auth::TenantId;
use sea_orm::{DatabaseConnection, DbErr};

use crate::store;

/// Length of the cached list: the largest `limit` (100) plus room for the
/// items that a request excludes.
pub const LIST_LEN: u64 = 200;

/// How long a cached list is served; popularity changes slowly enough that a
/// few seconds of delay are not visible to shoppers.
pub const TTL: Duration = Duration::from_secs(5);

/// Reads the popularity list through the cache.
#[derive(Clone, Debug)]
pub struct PopularItems {
    db: DatabaseConnection,
    /// The service's cache scope; keys are `popular:<tenant>`.
    cache: Cache,
}

impl PopularItems {
    pub fn new(db: DatabaseConnection, cache: Cache) -> Self {
        Self { db, cache }
    }

    /// Returns up to [`LIST_LEN`] (item id, score) pairs, most popular first.
    /// A cache failure falls back to the database.
    pub async fn top(&self, tenant: &TenantId) -> Result<Vec<(String, i64)>, DbErr> {
        let key = format!("popular:{tenant}");
        match self.cache.get(&key).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(list) => return Ok(list),
                Err(error) => {
                    tracing::warn!(tenant.id = %tenant, %error, "undecodable popularity list in cache, reloading it")
                }
            },
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(tenant.id = %tenant, %error, "reading the popularity list from the cache failed")
            }
        }

        let list = store::popular(&self.db, tenant, LIST_LEN).await?;
        match serde_json::to_vec(&list) {
            Ok(bytes) => {
                if let Err(error) = self.cache.set(&key, &bytes, TTL).await {
                    tracing::warn!(tenant.id = %tenant, %error, "writing the popularity list to the cache failed");
                }
            }
            Err(error) => tracing::warn!(tenant.id = %tenant, %error, "encoding the popularity list failed"),
        }
        Ok(list)
    }
}
