//! One row per shopper profile. The JSON columns hold [`crate::state::ProfileState`] parts.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "profiles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub profile_id: String,
    pub user_id: Option<String>,
    pub first_seen: DateTimeUtc,
    pub last_seen: DateTimeUtc,
    /// Map of event name to count.
    pub event_counts: Json,
    /// List of `{"product_id", "at"}`, most recent first.
    pub recently_viewed: Json,
    /// Map of category to product interactions.
    pub category_counts: Json,
    /// Map of brand to product interactions.
    pub brand_counts: Json,
    pub traits: Json,
    /// Map of group id to the group's traits.
    pub group_traits: Json,
    pub cart_value: f64,
    pub total_spent: f64,
    pub order_count: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
