//! Survey responses: at most one per shopper and survey, which a unique
//! index on (tenant_id, survey_id, respondent_key) enforces.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "responses")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub response_id: String,
    pub survey_id: String,
    /// `user_id` of the respondent, or `anonymous_id` without one.
    pub respondent_key: String,
    pub answers: Answers,
    pub created_at: DateTimeUtc,
}

/// The answers of a response, stored as one JSON array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, FromJsonQueryResult)]
pub struct Answers(pub Vec<StoredAnswer>);

/// One answer: `score` for an NPS question, `text` for a text question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub question_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
