//! The top popular items of a tenant, with their catalog entries. Every
//! recommendation that needs filling reads this list, so each process keeps
//! it in memory for a few seconds rather than sorting it out of the database
//! on each request. With N replicas that is N reads of the list every
//! [`TTL`], which costs less than a shared cache would on every request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rtim_runtime::auth::TenantId;
use sea_orm::{DatabaseConnection, DbErr};

use crate::store::{self, Candidate};

/// Length of the list: the largest `limit` (100) plus room for the items
/// that a request excludes.
pub const LIST_LEN: u64 = 200;

/// How long a list is served before it is read again. Popularity changes
/// slowly, so a few seconds of delay are not visible to shoppers.
pub const TTL: Duration = Duration::from_secs(5);

/// Popular items, most popular first.
pub type PopularList = Arc<Vec<Candidate>>;

/// Reads the popularity list through process memory.
#[derive(Clone, Debug)]
pub struct PopularItems {
    db: DatabaseConnection,
    /// Lists read by this process, by tenant, with the time they were read.
    lists: Arc<RwLock<HashMap<String, (Instant, PopularList)>>>,
}

impl PopularItems {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            lists: Arc::default(),
        }
    }

    /// Returns up to [`LIST_LEN`] popular items, most popular first.
    pub async fn top(&self, tenant: &TenantId) -> Result<PopularList, DbErr> {
        if let Some(list) = self.fresh_list(tenant) {
            return Ok(list);
        }
        let list = Arc::new(store::popular(&self.db, tenant, LIST_LEN).await?);
        // A poisoned lock still holds whole entries, as entries are only ever replaced.
        let mut lists = self.lists.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        lists.insert(tenant.as_str().to_owned(), (Instant::now(), list.clone()));
        Ok(list)
    }

    fn fresh_list(&self, tenant: &TenantId) -> Option<PopularList> {
        let lists = self.lists.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (read_at, list) = lists.get(tenant.as_str())?;
        (read_at.elapsed() < TTL).then(|| list.clone())
    }
}
