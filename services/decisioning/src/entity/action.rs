//! An action that a placement may show: its eligibility condition, value,
//! priority and the payload returned to the caller.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "actions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    /// JSON array of placement names.
    pub placements: Json,
    /// CEL source over `profile` and `context`. Empty means always eligible.
    pub condition: String,
    pub value: f64,
    pub priority: f64,
    /// JSON object returned as the action's payload.
    pub payload: Json,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
