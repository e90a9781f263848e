//! Tenant-scoped reads and writes. Every function takes the tenant, and every
//! statement filters or keys on it.

use std::collections::HashSet;

use futures::TryStreamExt;
use rtim_runtime::auth::TenantId;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
};

use crate::entity::response::{self, Answers};
use crate::entity::{shopper_event, survey};

/// Rows per multi-row INSERT, far below the bind parameter limits of SQLite
/// (32766) and PostgreSQL (65535) with four columns.
const CHUNK_ROWS: usize = 500;

/// Creates or replaces a survey.
pub async fn upsert_survey<C: ConnectionTrait>(db: &C, model: survey::Model) -> Result<(), DbErr> {
    use survey::Column;
    survey::Entity::insert(model.into_active_model())
        .on_conflict(
            OnConflict::columns([Column::TenantId, Column::Id])
                .update_columns([Column::Title, Column::Questions, Column::Targeting, Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Reads every survey of the tenant, by id.
pub async fn surveys<C: ConnectionTrait>(db: &C, tenant: &TenantId) -> Result<Vec<survey::Model>, DbErr> {
    survey::Entity::find()
        .filter(survey::Column::TenantId.eq(tenant.as_str()))
        .order_by_asc(survey::Column::Id)
        .all(db)
        .await
}

/// Stores a response unless the respondent already answered the survey.
/// Returns false in that case.
pub async fn insert_response<C: ConnectionTrait>(db: &C, model: response::Model) -> Result<bool, DbErr> {
    use response::Column;
    let result = response::Entity::insert(model.into_active_model())
        .on_conflict_do_nothing_on([Column::TenantId, Column::SurveyId, Column::RespondentKey])
        .exec_without_returning(db)
        .await?;
    Ok(matches!(result, TryInsertResult::Inserted(rows) if rows > 0))
}

/// Reads the ids of the surveys that the shopper responded to.
pub async fn responded_surveys<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    respondent_key: &str,
) -> Result<HashSet<String>, DbErr> {
    use response::Column;
    let ids: Vec<String> = response::Entity::find()
        .select_only()
        .column(Column::SurveyId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::RespondentKey.eq(respondent_key))
        .into_tuple()
        .all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Streams the answers of every response to a survey into `visit`, and
/// returns the number of responses. Rows are read one at a time, so memory
/// does not grow with the number of responses.
pub async fn visit_answers(
    db: &DatabaseConnection,
    tenant: &TenantId,
    survey_id: &str,
    mut visit: impl FnMut(&Answers),
) -> Result<i64, DbErr> {
    use response::Column;
    let mut stream = response::Entity::find()
        .select_only()
        .column(Column::Answers)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::SurveyId.eq(survey_id))
        .into_tuple::<Answers>()
        .stream(db)
        .await?;
    let mut count = 0;
    while let Some(answers) = stream.try_next().await? {
        visit(&answers);
        count += 1;
    }
    Ok(count)
}

/// Adds event counts per (shopper key, event name).
pub async fn add_shopper_events<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    counts: &[((String, String), i64)],
) -> Result<(), DbErr> {
    use shopper_event::Column;
    for chunk in counts.chunks(CHUNK_ROWS) {
        let mut insert = Query::insert();
        insert
            .into_table(shopper_event::Entity)
            .columns([Column::TenantId, Column::ShopperKey, Column::Event, Column::Count])
            .on_conflict(
                OnConflict::columns([Column::TenantId, Column::ShopperKey, Column::Event])
                    .value(
                        Column::Count,
                        Expr::col((shopper_event::Entity, Column::Count))
                            .add(Expr::col((Alias::new("excluded"), Column::Count))),
                    )
                    .to_owned(),
            );
        for ((shopper_key, event), count) in chunk {
            insert.values_panic([
                tenant.as_str().into(),
                shopper_key.as_str().into(),
                event.as_str().into(),
                (*count).into(),
            ]);
        }
        db.execute(&insert).await?;
    }
    Ok(())
}
