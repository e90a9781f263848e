//! The top popular items of a tenant. Every recommendation that needs
//! filling reads this list, so it is kept for a few seconds rather than
//! sorted out of the database on each request: in process memory first, so
//! that most requests neither wait on the network nor decode it, then in the
//! shared cache, so that replicas read the database once between them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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

/// How long this process serves a list it read before reading it again.
/// Together with [`TTL`] a list is at most ten seconds old.
pub const LOCAL_TTL: Duration = Duration::from_secs(5);

/// (item id, score) pairs, most popular first.
pub type PopularList = Arc<Vec<(String, i64)>>;

/// Reads the popularity list through process memory and the cache.
#[derive(Clone, Debug)]
pub struct PopularItems {
    db: DatabaseConnection,
    /// The service's cache scope; keys are `popular:<tenant>`.
    cache: Cache,
    /// Lists read by this process, by tenant, with the time they were read.
    local: Arc<RwLock<HashMap<String, (Instant, PopularList)>>>,
}

impl PopularItems {
    pub fn new(db: DatabaseConnection, cache: Cache) -> Self {
        Self {
            db,
            cache,
            local: Arc::default(),
        }
    }

    /// Returns up to [`LIST_LEN`] (item id, score) pairs, most popular first.
    /// A cache failure falls back to the database.
    pub async fn top(&self, tenant: &TenantId) -> Result<PopularList, DbErr> {
        if let Some(list) = self.local_list(tenant) {
            return Ok(list);
        }
        let list = Arc::new(self.shared_list(tenant).await?);
        // A poisoned lock still holds whole entries, as entries are only ever replaced.
        let mut local = self.local.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        local.insert(tenant.as_str().to_owned(), (Instant::now(), list.clone()));
        Ok(list)
    }

    fn local_list(&self, tenant: &TenantId) -> Option<PopularList> {
        let local = self.local.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (read_at, list) = local.get(tenant.as_str())?;
        (read_at.elapsed() < LOCAL_TTL).then(|| list.clone())
    }

    async fn shared_list(&self, tenant: &TenantId) -> Result<Vec<(String, i64)>, DbErr> {
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
