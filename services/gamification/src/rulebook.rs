//! The point rules of every tenant: stored in the database, with a compiled
//! copy in memory that the consumer reads without compiling or querying.
//!
//! NOTE: the in-memory copy is loaded at start and refreshed by the writes of
//! this process only, so a change made through one replica reaches the
//! others' consumers only after they restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use rtim_proto::gamification::v1::PointRule;
use rtim_runtime::auth::TenantId;
use sea_orm::DatabaseConnection;

use crate::error::GamificationError;
use crate::store;
use crate::validate::{CompiledRule, compile_rule};

/// The compiled rules of one tenant, indexed by event name. Immutable: a
/// write builds a new one and swaps it in.
#[derive(Debug, Default)]
pub struct TenantRules {
    by_id: BTreeMap<String, Arc<CompiledRule>>,
    by_event: HashMap<String, Vec<Arc<CompiledRule>>>,
}

impl TenantRules {
    fn new(by_id: BTreeMap<String, Arc<CompiledRule>>) -> Self {
        let mut by_event: HashMap<String, Vec<Arc<CompiledRule>>> = HashMap::new();
        for compiled in by_id.values() {
            by_event
                .entry(compiled.rule.event.clone())
                .or_default()
                .push(compiled.clone());
        }
        Self { by_id, by_event }
    }

    /// Returns the rules for the track event `name`, ordered by id.
    pub fn for_event(&self, name: &str) -> &[Arc<CompiledRule>] {
        self.by_event.get(name).map(Vec::as_slice).unwrap_or_default()
    }
}

pub struct RuleBook {
    db: DatabaseConnection,
    tenants: RwLock<HashMap<String, Arc<TenantRules>>>,
    /// Serialises writes, so that the database and the in-memory copy apply
    /// concurrent writes of the same rule in the same order.
    writes: tokio::sync::Mutex<()>,
}

impl RuleBook {
    /// Loads and compiles every stored rule. A rule that no longer compiles
    /// is logged and left out rather than failing the start.
    pub async fn load(db: DatabaseConnection) -> Result<Self, GamificationError> {
        let mut tenants: HashMap<String, BTreeMap<String, Arc<CompiledRule>>> = HashMap::new();
        let rows = store::all_rules(&db).await?;
        let total = rows.len();
        for (tenant, rule) in rows {
            let id = rule.id.clone();
            match compile_rule(rule) {
                Ok(compiled) => {
                    tenants.entry(tenant).or_default().insert(id, Arc::new(compiled));
                }
                Err(violations) => {
                    let error = GamificationError::InvalidRule {
                        id: id.clone(),
                        violations,
                    };
                    tracing::error!(tenant.id = %tenant, rule.id = %id, %error, "stored point rule is invalid, leaving it out");
                }
            }
        }
        tracing::info!(rules = total, tenants = tenants.len(), "point rules loaded");
        let tenants = tenants
            .into_iter()
            .map(|(tenant, by_id)| (tenant, Arc::new(TenantRules::new(by_id))))
            .collect();
        Ok(Self {
            db,
            tenants: RwLock::new(tenants),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Returns the current rules of a tenant.
    pub fn tenant(&self, tenant: &str) -> Arc<TenantRules> {
        self.read().get(tenant).cloned().unwrap_or_default()
    }

    /// Validates, stores and activates a rule, replacing one with the same id.
    pub async fn put(&self, tenant: &TenantId, rule: PointRule) -> Result<PointRule, GamificationError> {
        let id = rule.id.clone();
        let compiled = compile_rule(rule).map_err(|violations| GamificationError::InvalidRule { id, violations })?;
        let _write = self.writes.lock().await;
        store::upsert_rule(&self.db, tenant.as_str(), &compiled.rule).await?;
        let rule = compiled.rule.clone();

        let mut tenants = self.write();
        let mut by_id = tenants
            .get(tenant.as_str())
            .map(|current| current.by_id.clone())
            .unwrap_or_default();
        by_id.insert(rule.id.clone(), Arc::new(compiled));
        tenants.insert(tenant.as_str().to_owned(), Arc::new(TenantRules::new(by_id)));
        Ok(rule)
    }

    /// Returns the stored rules of a tenant, ordered by id.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<PointRule>, GamificationError> {
        store::list_rules(&self.db, tenant.as_str()).await
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<TenantRules>>> {
        // The map only ever contains complete values swapped in whole, so one
        // left behind by a panicking writer is still consistent.
        self.tenants.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<TenantRules>>> {
        // See `read` for why a poisoned lock is still usable.
        self.tenants.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
