//! Database access. Every function takes the tenant, and every query filters
//! by it.

use chrono::Utc;
use rtim_proto::decisioning::v1::Action;
use rtim_proto::json::{json_to_struct, struct_to_json};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::{action, decision, decision_outcome};
use crate::error::DecisioningError;

/// A decision to log.
#[derive(Clone, Debug)]
pub struct DecisionRecord {
    pub decision_id: String,
    pub placement: String,
    pub user_id: String,
    pub anonymous_id: String,
    /// Returned actions, best first, with their scores.
    pub ranked: Vec<(String, f64)>,
    pub degraded: bool,
}

/// An event that carries a decision id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub event_id: String,
    pub decision_id: String,
    pub event: String,
}

/// Creates or replaces an action.
pub async fn upsert_action<C: ConnectionTrait>(db: &C, tenant: &str, action: &Action) -> Result<(), DecisioningError> {
    let row = action::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        id: Set(action.id.clone()),
        name: Set(action.name.clone()),
        placements: Set(serde_json::json!(action.placements)),
        condition: Set(action.condition.clone()),
        value: Set(action.value),
        priority: Set(action.priority),
        payload: Set(struct_to_json(action.payload.as_ref())),
        updated_at: Set(Utc::now()),
    };
    let on_conflict = OnConflict::columns([action::Column::TenantId, action::Column::Id])
        .update_columns([
            action::Column::Name,
            action::Column::Placements,
            action::Column::Condition,
            action::Column::Value,
            action::Column::Priority,
            action::Column::Payload,
            action::Column::UpdatedAt,
        ])
        .to_owned();
    action::Entity::insert(row)
        .on_conflict(on_conflict)
        .exec_without_returning(db)
        .await
        .map_err(DecisioningError::database("saving an action"))?;
    Ok(())
}

/// Deletes an action and returns false when it did not exist.
pub async fn delete_action<C: ConnectionTrait>(db: &C, tenant: &str, id: &str) -> Result<bool, DecisioningError> {
    let result = action::Entity::delete_many()
        .filter(action::Column::TenantId.eq(tenant))
        .filter(action::Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(DecisioningError::database("deleting an action"))?;
    Ok(result.rows_affected > 0)
}

/// Returns the actions of one tenant, ordered by id.
pub async fn list_actions<C: ConnectionTrait>(db: &C, tenant: &str) -> Result<Vec<Action>, DecisioningError> {
    let rows = action::Entity::find()
        .filter(action::Column::TenantId.eq(tenant))
        .order_by_asc(action::Column::Id)
        .all(db)
        .await
        .map_err(DecisioningError::database("listing actions"))?;
    rows.into_iter().map(action_from_row).collect()
}

/// Returns the stored actions of every tenant, for loading the in-memory
/// catalog at start.
pub async fn all_actions<C: ConnectionTrait>(db: &C) -> Result<Vec<action::Model>, DecisioningError> {
    action::Entity::find()
        .order_by_asc(action::Column::TenantId)
        .order_by_asc(action::Column::Id)
        .all(db)
        .await
        .map_err(DecisioningError::database("loading actions"))
}

/// Converts a stored row back into the proto message.
pub fn action_from_row(row: action::Model) -> Result<Action, DecisioningError> {
    let corrupt = |message: String| DecisioningError::CorruptAction {
        tenant: row.tenant_id.clone(),
        id: row.id.clone(),
        message,
    };
    let placements: Vec<String> = serde_json::from_value(row.placements.clone())
        .map_err(|error| corrupt(format!("placements are not a list of strings: {error}")))?;
    let payload = match row.payload.clone() {
        serde_json::Value::Object(object) if object.is_empty() => None,
        serde_json::Value::Object(object) => Some(json_to_struct(object)),
        serde_json::Value::Null => None,
        other => return Err(corrupt(format!("payload is not an object: {other}"))),
    };
    Ok(Action {
        id: row.id,
        name: row.name,
        placements,
        condition: row.condition,
        value: row.value,
        priority: row.priority,
        payload,
    })
}

/// Inserts decisions of any tenants in one statement.
pub async fn insert_decisions<C: ConnectionTrait>(db: &C, rows: &[(&str, &DecisionRecord)]) -> Result<(), DbErr> {
    if rows.is_empty() {
        return Ok(());
    }
    let created_at = Utc::now();
    let models = rows.iter().map(|(tenant, record)| {
        let (action_ids, scores): (Vec<&str>, Vec<f64>) =
            record.ranked.iter().map(|(id, score)| (id.as_str(), *score)).unzip();
        decision::ActiveModel {
            tenant_id: Set((*tenant).to_owned()),
            decision_id: Set(record.decision_id.clone()),
            placement: Set(record.placement.clone()),
            user_id: Set(record.user_id.clone()),
            anonymous_id: Set(record.anonymous_id.clone()),
            action_ids: Set(serde_json::json!(action_ids)),
            scores: Set(serde_json::json!(scores)),
            degraded: Set(record.degraded),
            created_at: Set(created_at),
        }
    });
    decision::Entity::insert_many(models).exec_without_returning(db).await?;
    Ok(())
}

/// Stores an outcome. A second outcome with the same event id is ignored.
pub async fn insert_outcome<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    outcome: &OutcomeRecord,
) -> Result<(), DecisioningError> {
    let row = decision_outcome::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        event_id: Set(outcome.event_id.clone()),
        decision_id: Set(outcome.decision_id.clone()),
        event: Set(outcome.event.clone()),
        created_at: Set(Utc::now()),
    };
    let on_conflict = OnConflict::columns([decision_outcome::Column::TenantId, decision_outcome::Column::EventId])
        .do_nothing()
        .to_owned();
    decision_outcome::Entity::insert(row)
        .on_conflict(on_conflict)
        .exec_without_returning(db)
        .await
        .map_err(DecisioningError::database("storing an outcome"))?;
    Ok(())
}
