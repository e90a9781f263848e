//! Surveys, responses, shopper event counts and the inbox.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Surveys {
    Table,
    TenantId,
    Id,
    Title,
    Questions,
    Targeting,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Responses {
    Table,
    TenantId,
    ResponseId,
    SurveyId,
    RespondentKey,
    Answers,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ShopperEvents {
    Table,
    TenantId,
    ShopperKey,
    Event,
    Count,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(rtim_store::inbox::create_table()).await?;
        manager.create_table(surveys()).await?;
        manager.create_table(responses()).await?;
        // One response per shopper and survey; also serves the lookup of the
        // surveys a shopper has answered.
        manager
            .create_index(
                Index::create()
                    .name("responses_one_per_respondent")
                    .table(Responses::Table)
                    .col(Responses::TenantId)
                    .col(Responses::SurveyId)
                    .col(Responses::RespondentKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("responses_by_respondent")
                    .table(Responses::Table)
                    .col(Responses::TenantId)
                    .col(Responses::RespondentKey)
                    .to_owned(),
            )
            .await?;
        manager.create_table(shopper_events()).await?;
        Ok(())
    }
}

fn surveys() -> TableCreateStatement {
    Table::create()
        .table(Surveys::Table)
        .col(ColumnDef::new(Surveys::TenantId).string().not_null())
        .col(ColumnDef::new(Surveys::Id).string().not_null())
        .col(ColumnDef::new(Surveys::Title).string().not_null())
        .col(ColumnDef::new(Surveys::Questions).json().not_null())
        .col(ColumnDef::new(Surveys::Targeting).text().not_null())
        .col(ColumnDef::new(Surveys::UpdatedAt).timestamp_with_time_zone().not_null())
        .primary_key(Index::create().col(Surveys::TenantId).col(Surveys::Id))
        .to_owned()
}

fn responses() -> TableCreateStatement {
    Table::create()
        .table(Responses::Table)
        .col(ColumnDef::new(Responses::TenantId).string().not_null())
        .col(ColumnDef::new(Responses::ResponseId).string().not_null())
        .col(ColumnDef::new(Responses::SurveyId).string().not_null())
        .col(ColumnDef::new(Responses::RespondentKey).string().not_null())
        .col(ColumnDef::new(Responses::Answers).json().not_null())
        .col(
            ColumnDef::new(Responses::CreatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(Index::create().col(Responses::TenantId).col(Responses::ResponseId))
        .to_owned()
}

fn shopper_events() -> TableCreateStatement {
    Table::create()
        .table(ShopperEvents::Table)
        .col(ColumnDef::new(ShopperEvents::TenantId).string().not_null())
        .col(ColumnDef::new(ShopperEvents::ShopperKey).string().not_null())
        .col(ColumnDef::new(ShopperEvents::Event).string().not_null())
        .col(ColumnDef::new(ShopperEvents::Count).big_integer().not_null())
        .primary_key(
            Index::create()
                .col(ShopperEvents::TenantId)
                .col(ShopperEvents::ShopperKey)
                .col(ShopperEvents::Event),
        )
        .to_owned()
}
