//! Database access. Every function takes the tenant, and every query filters
//! by it.

use chrono::Utc;
use rtim_proto::gamification::v1::PointRule;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{ledger_entry, point_rule};
use crate::error::GamificationError;

/// Points awarded by one rule for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Award {
    pub event_id: String,
    pub rule_id: String,
    pub user_key: String,
    pub points: i64,
}

/// A shopper's balance and the number of ledger entries behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Balance {
    pub points: i64,
    pub entries: i64,
}

/// Creates or replaces a point rule.
pub async fn upsert_rule<C: ConnectionTrait>(db: &C, tenant: &str, rule: &PointRule) -> Result<(), GamificationError> {
    let row = point_rule::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        id: Set(rule.id.clone()),
        event: Set(rule.event.clone()),
        condition: Set(rule.condition.clone()),
        points: Set(rule.points.clone()),
        description: Set(rule.description.clone()),
        updated_at: Set(Utc::now()),
    };
    let on_conflict = OnConflict::columns([point_rule::Column::TenantId, point_rule::Column::Id])
        .update_columns([
            point_rule::Column::Event,
            point_rule::Column::Condition,
            point_rule::Column::Points,
            point_rule::Column::Description,
            point_rule::Column::UpdatedAt,
        ])
        .to_owned();
    point_rule::Entity::insert(row)
        .on_conflict(on_conflict)
        .exec_without_returning(db)
        .await
        .map_err(GamificationError::database("saving a point rule"))?;
    Ok(())
}

/// Returns the point rules of one tenant, ordered by id.
pub async fn list_rules<C: ConnectionTrait>(db: &C, tenant: &str) -> Result<Vec<PointRule>, GamificationError> {
    let rows = point_rule::Entity::find()
        .filter(point_rule::Column::TenantId.eq(tenant))
        .order_by_asc(point_rule::Column::Id)
        .all(db)
        .await
        .map_err(GamificationError::database("listing point rules"))?;
    Ok(rows.into_iter().map(|row| rule_from_row(row).1).collect())
}

/// Returns the point rules of every tenant as (tenant, rule), for loading
/// the in-memory copy at start.
pub async fn all_rules<C: ConnectionTrait>(db: &C) -> Result<Vec<(String, PointRule)>, GamificationError> {
    let rows = point_rule::Entity::find()
        .order_by_asc(point_rule::Column::TenantId)
        .order_by_asc(point_rule::Column::Id)
        .all(db)
        .await
        .map_err(GamificationError::database("loading point rules"))?;
    Ok(rows.into_iter().map(rule_from_row).collect())
}

fn rule_from_row(row: point_rule::Model) -> (String, PointRule) {
    let rule = PointRule {
        id: row.id,
        event: row.event,
        condition: row.condition,
        points: row.points,
        description: row.description,
    };
    (row.tenant_id, rule)
}

/// Writes an award. A second award for the same event and rule is ignored.
pub async fn insert_award<C: ConnectionTrait>(db: &C, tenant: &str, award: &Award) -> Result<(), GamificationError> {
    let row = ledger_entry::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        event_id: Set(award.event_id.clone()),
        rule_id: Set(award.rule_id.clone()),
        user_key: Set(award.user_key.clone()),
        points: Set(award.points),
        created_at: Set(Utc::now()),
    };
    let on_conflict = OnConflict::columns([
        ledger_entry::Column::TenantId,
        ledger_entry::Column::EventId,
        ledger_entry::Column::RuleId,
    ])
    .do_nothing()
    .to_owned();
    ledger_entry::Entity::insert(row)
        .on_conflict(on_conflict)
        .exec_without_returning(db)
        .await
        .map_err(GamificationError::database("writing a ledger entry"))?;
    Ok(())
}

/// Sums the ledger of one shopper, which is zero for a shopper with no entries.
pub async fn balance<C: ConnectionTrait>(db: &C, tenant: &str, user_key: &str) -> Result<Balance, GamificationError> {
    // PostgreSQL sums a bigint column as numeric, so the sum is cast back to
    // bigint to read it as an i64 on both databases.
    let row: Option<(Option<i64>, i64)> = ledger_entry::Entity::find()
        .select_only()
        .column_as(
            Expr::col(ledger_entry::Column::Points).sum().cast_as("bigint"),
            "points",
        )
        .column_as(Expr::col(ledger_entry::Column::EventId).count(), "entries")
        .filter(ledger_entry::Column::TenantId.eq(tenant))
        .filter(ledger_entry::Column::UserKey.eq(user_key))
        .into_tuple()
        .one(db)
        .await
        .map_err(GamificationError::database("reading a balance"))?;
    let (points, entries) = row.unwrap_or_default();
    Ok(Balance {
        points: points.unwrap_or(0),
        entries,
    })
}
