//! The decision log: one row per Decide call, with the actions returned and
//! their scores, so that outcomes can be attributed later.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "decisions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub decision_id: String,
    pub placement: String,
    pub user_id: String,
    pub anonymous_id: String,
    /// JSON array of the returned action ids, best first.
    pub action_ids: Json,
    /// JSON array of the scores of `action_ids`, in the same order.
    pub scores: Json,
    pub degraded: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
