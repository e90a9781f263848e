//! Reading and writing profiles and identities inside a transaction.

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};

use crate::entity::{identity, profile};
use crate::state::{ProfileState, Viewed};

pub const USER_ID: &str = "user_id";
pub const ANONYMOUS_ID: &str = "anonymous_id";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("profile {profile_id} has a corrupt {column} column: {source}")]
    Corrupt {
        profile_id: String,
        column: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

pub async fn find_identity<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    kind: &str,
    value: &str,
) -> Result<Option<String>, DbErr> {
    if value.is_empty() {
        return Ok(None);
    }
    let row = identity::Entity::find_by_id((tenant.to_owned(), kind.to_owned(), value.to_owned()))
        .one(db)
        .await?;
    Ok(row.map(|row| row.profile_id))
}

/// Points an identifier at a profile, replacing any earlier link.
pub async fn link_identity<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    kind: &str,
    value: &str,
    profile_id: &str,
) -> Result<(), DbErr> {
    let row = identity::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        kind: Set(kind.to_owned()),
        value: Set(value.to_owned()),
        profile_id: Set(profile_id.to_owned()),
        created_at: Set(Utc::now()),
    };
    identity::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                identity::Column::TenantId,
                identity::Column::Kind,
                identity::Column::Value,
            ])
            .update_column(identity::Column::ProfileId)
            .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Moves every identifier of `from` to `to`.
pub async fn move_identities<C: ConnectionTrait>(db: &C, tenant: &str, from: &str, to: &str) -> Result<(), DbErr> {
    identity::Entity::update_many()
        .col_expr(identity::Column::ProfileId, sea_orm::sea_query::Expr::value(to))
        .filter(identity::Column::TenantId.eq(tenant))
        .filter(identity::Column::ProfileId.eq(from))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn anonymous_ids<C: ConnectionTrait>(db: &C, tenant: &str, profile_id: &str) -> Result<Vec<String>, DbErr> {
    let rows = identity::Entity::find()
        .filter(identity::Column::TenantId.eq(tenant))
        .filter(identity::Column::ProfileId.eq(profile_id))
        .filter(identity::Column::Kind.eq(ANONYMOUS_ID))
        .order_by_asc(identity::Column::Value)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|row| row.value).collect())
}

pub async fn load<C: ConnectionTrait>(
    db: &C,
    tenant: &str,
    profile_id: &str,
) -> Result<Option<ProfileState>, StoreError> {
    let row = profile::Entity::find_by_id((tenant.to_owned(), profile_id.to_owned()))
        .one(db)
        .await?;
    row.map(from_row).transpose()
}

pub async fn delete<C: ConnectionTrait>(db: &C, tenant: &str, profile_id: &str) -> Result<(), DbErr> {
    profile::Entity::delete_by_id((tenant.to_owned(), profile_id.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}

/// Inserts or replaces a profile row.
pub async fn save<C: ConnectionTrait>(db: &C, tenant: &str, state: &ProfileState) -> Result<(), DbErr> {
    let row = profile::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        profile_id: Set(state.profile_id.clone()),
        user_id: Set(state.user_id.clone()),
        first_seen: Set(state.first_seen),
        last_seen: Set(state.last_seen),
        event_counts: Set(serde_json::json!(state.event_counts)),
        recently_viewed: Set(serde_json::json!(state.recently_viewed)),
        category_counts: Set(serde_json::json!(state.category_counts)),
        brand_counts: Set(serde_json::json!(state.brand_counts)),
        traits: Set(serde_json::Value::Object(state.traits.clone())),
        group_traits: Set(serde_json::json!(state.groups)),
        cart_value: Set(state.cart_value),
        total_spent: Set(state.total_spent),
        order_count: Set(state.order_count),
        updated_at: Set(Utc::now()),
    };
    profile::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([profile::Column::TenantId, profile::Column::ProfileId])
                .update_columns([
                    profile::Column::UserId,
                    profile::Column::FirstSeen,
                    profile::Column::LastSeen,
                    profile::Column::EventCounts,
                    profile::Column::RecentlyViewed,
                    profile::Column::CategoryCounts,
                    profile::Column::BrandCounts,
                    profile::Column::Traits,
                    profile::Column::GroupTraits,
                    profile::Column::CartValue,
                    profile::Column::TotalSpent,
                    profile::Column::OrderCount,
                    profile::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

fn from_row(row: profile::Model) -> Result<ProfileState, StoreError> {
    fn parse<T: serde::de::DeserializeOwned>(
        profile_id: &str,
        column: &'static str,
        value: serde_json::Value,
    ) -> Result<T, StoreError> {
        serde_json::from_value(value).map_err(|source| StoreError::Corrupt {
            profile_id: profile_id.to_owned(),
            column,
            source,
        })
    }
    let id = row.profile_id.as_str();
    Ok(ProfileState {
        event_counts: parse(id, "event_counts", row.event_counts)?,
        recently_viewed: parse::<Vec<Viewed>>(id, "recently_viewed", row.recently_viewed)?,
        category_counts: parse(id, "category_counts", row.category_counts)?,
        brand_counts: parse(id, "brand_counts", row.brand_counts)?,
        traits: parse(id, "traits", row.traits)?,
        groups: parse(id, "group_traits", row.group_traits)?,
        profile_id: row.profile_id,
        user_id: row.user_id,
        first_seen: row.first_seen,
        last_seen: row.last_seen,
        cart_value: row.cart_value,
        total_spent: row.total_spent,
        order_count: row.order_count,
    })
}
