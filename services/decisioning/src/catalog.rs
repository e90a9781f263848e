//! The actions of every tenant: stored in the database, with a compiled copy
//! in memory that Decide reads without compiling or querying.
//!
//! NOTE: the in-memory copy is loaded at start and refreshed by the writes of
//! this process only, so a change made through one replica reaches the
//! others' decisions only after they restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use rtim_proto::decisioning::v1::Action;
use rtim_runtime::auth::TenantId;
use sea_orm::DatabaseConnection;

use crate::error::DecisioningError;
use crate::store;
use crate::validate::{CompiledAction, compile_action};

/// The compiled actions of one tenant, indexed by placement. Immutable: a
/// write builds a new one and swaps it in, so a Decide in flight keeps a
/// consistent view.
#[derive(Debug, Default)]
pub struct TenantActions {
    by_id: BTreeMap<String, Arc<CompiledAction>>,
    by_placement: HashMap<String, Vec<Arc<CompiledAction>>>,
}

impl TenantActions {
    fn new(by_id: BTreeMap<String, Arc<CompiledAction>>) -> Self {
        let mut by_placement: HashMap<String, Vec<Arc<CompiledAction>>> = HashMap::new();
        for compiled in by_id.values() {
            for placement in &compiled.action.placements {
                by_placement
                    .entry(placement.clone())
                    .or_default()
                    .push(compiled.clone());
            }
        }
        Self { by_id, by_placement }
    }

    /// Returns the actions that may appear on `placement`, ordered by id.
    pub fn for_placement(&self, placement: &str) -> &[Arc<CompiledAction>] {
        self.by_placement.get(placement).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

pub struct Catalog {
    db: DatabaseConnection,
    tenants: RwLock<HashMap<String, Arc<TenantActions>>>,
    /// Serialises writes, so that the database and the in-memory copy apply
    /// concurrent writes of the same action in the same order.
    writes: tokio::sync::Mutex<()>,
}

impl Catalog {
    /// Loads and compiles every stored action. An action that is unreadable or
    /// no longer compiles is logged and left out rather than failing the start.
    pub async fn load(db: DatabaseConnection) -> Result<Self, DecisioningError> {
        let mut tenants: HashMap<String, BTreeMap<String, Arc<CompiledAction>>> = HashMap::new();
        let rows = store::all_actions(&db).await?;
        let total = rows.len();
        for row in rows {
            let tenant = row.tenant_id.clone();
            let id = row.id.clone();
            match compile_row(row) {
                Ok(compiled) => {
                    tenants.entry(tenant).or_default().insert(id, Arc::new(compiled));
                }
                Err(error) => {
                    tracing::error!(tenant.id = %tenant, action.id = %id, %error, "stored action is invalid, leaving it out");
                }
            }
        }
        tracing::info!(actions = total, tenants = tenants.len(), "actions loaded");
        let tenants = tenants
            .into_iter()
            .map(|(tenant, by_id)| (tenant, Arc::new(TenantActions::new(by_id))))
            .collect();
        Ok(Self {
            db,
            tenants: RwLock::new(tenants),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Returns the current actions of a tenant.
    pub fn tenant(&self, tenant: &TenantId) -> Arc<TenantActions> {
        self.read().get(tenant.as_str()).cloned().unwrap_or_default()
    }

    /// Validates, stores and activates an action, replacing one with the same id.
    pub async fn put(&self, tenant: &TenantId, action: Action) -> Result<Action, DecisioningError> {
        let id = action.id.clone();
        let compiled =
            compile_action(action).map_err(|violations| DecisioningError::InvalidAction { id, violations })?;
        let _write = self.writes.lock().await;
        store::upsert_action(&self.db, tenant.as_str(), &compiled.action).await?;
        let action = compiled.action.clone();
        self.update(tenant, |by_id| {
            by_id.insert(compiled.action.id.clone(), Arc::new(compiled));
        });
        Ok(action)
    }

    /// Deletes an action, or returns `ActionNotFound` when the tenant has no
    /// action with that id.
    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<(), DecisioningError> {
        let _write = self.writes.lock().await;
        if !store::delete_action(&self.db, tenant.as_str(), id).await? {
            return Err(DecisioningError::ActionNotFound { id: id.to_owned() });
        }
        self.update(tenant, |by_id| {
            by_id.remove(id);
        });
        Ok(())
    }

    /// Returns the stored actions of a tenant, only those of `placement` when
    /// it is set, ordered by id.
    pub async fn list(&self, tenant: &TenantId, placement: Option<&str>) -> Result<Vec<Action>, DecisioningError> {
        let mut actions = store::list_actions(&self.db, tenant.as_str()).await?;
        if let Some(placement) = placement {
            actions.retain(|action| action.placements.iter().any(|candidate| candidate == placement));
        }
        Ok(actions)
    }

    fn update(&self, tenant: &TenantId, change: impl FnOnce(&mut BTreeMap<String, Arc<CompiledAction>>)) {
        let mut tenants = self.write();
        let mut by_id = tenants
            .get(tenant.as_str())
            .map(|current| current.by_id.clone())
            .unwrap_or_default();
        change(&mut by_id);
        tenants.insert(tenant.as_str().to_owned(), Arc::new(TenantActions::new(by_id)));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<TenantActions>>> {
        // The map only ever contains complete values swapped in whole, so one
        // left behind by a panicking writer is still consistent.
        self.tenants.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<TenantActions>>> {
        // See `read` for why a poisoned lock is still usable.
        self.tenants.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn compile_row(row: crate::entity::action::Model) -> Result<CompiledAction, DecisioningError> {
    let action = store::action_from_row(row)?;
    let id = action.id.clone();
    compile_action(action).map_err(|violations| DecisioningError::InvalidAction { id, violations })
}
