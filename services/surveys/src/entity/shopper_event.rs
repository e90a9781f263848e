//! Event counts per shopper and event name, kept by this service from the
//! event stream so that targeting can use events that profiles do not count.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "shopper_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    /// `user_id`, or `anonymous_id` for events without one.
    #[sea_orm(primary_key, auto_increment = false)]
    pub shopper_key: String,
    /// Track event name; page, screen and identify calls count as
    /// "Page Viewed", "Screen Viewed" and "Identify".
    #[sea_orm(primary_key, auto_increment = false)]
    pub event: String,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
