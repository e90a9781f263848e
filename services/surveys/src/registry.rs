//! Compiled surveys per tenant, held in memory so that targeting is not
//! compiled again on every request. Each replica reloads a tenant's surveys
//! from the database when its copy is older than [`RELOAD_AFTER`], and at
//! once after a change made through itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtim_runtime::auth::TenantId;
use sea_orm::{DatabaseConnection, DbErr};

use crate::definition::CompiledSurvey;
use crate::store;

/// Maximum age of a tenant's surveys in memory. A change saved through
/// another replica is visible here after at most this long.
pub const RELOAD_AFTER: Duration = Duration::from_secs(5);

/// The surveys of one tenant, by id.
pub type Surveys = BTreeMap<String, Arc<CompiledSurvey>>;

#[derive(Clone, Debug)]
pub struct SurveyRegistry {
    db: DatabaseConnection,
    loaded: Arc<Mutex<HashMap<TenantId, Loaded>>>,
}

/// A tenant's surveys and when they were read from the database.
#[derive(Debug)]
struct Loaded {
    at: Instant,
    surveys: Arc<Surveys>,
}

impl SurveyRegistry {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            loaded: Arc::default(),
        }
    }

    /// Returns the tenant's surveys, loading them when missing or stale.
    pub async fn surveys(&self, tenant: &TenantId) -> Result<Arc<Surveys>, DbErr> {
        if let Some(loaded) = self.lock().get(tenant)
            && loaded.at.elapsed() < RELOAD_AFTER
        {
            return Ok(loaded.surveys.clone());
        }

        let surveys: Surveys = store::surveys(&self.db, tenant)
            .await?
            .into_iter()
            .map(|model| (model.id.clone(), Arc::new(CompiledSurvey::from_model(model))))
            .collect();
        let surveys = Arc::new(surveys);
        let loaded = Loaded {
            at: Instant::now(),
            surveys: surveys.clone(),
        };
        self.lock().insert(tenant.clone(), loaded);
        Ok(surveys)
    }

    /// Returns one survey, or `None` when the tenant has no survey `id`.
    pub async fn survey(&self, tenant: &TenantId, id: &str) -> Result<Option<Arc<CompiledSurvey>>, DbErr> {
        Ok(self.surveys(tenant).await?.get(id).cloned())
    }

    /// Drops the tenant's surveys so that the next read loads them again.
    pub fn invalidate(&self, tenant: &TenantId) {
        self.lock().remove(tenant);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Loaded>> {
        // The map contains plain values, so one left by a panicking holder is still consistent.
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
