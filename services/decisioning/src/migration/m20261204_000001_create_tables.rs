//! Creates the actions, the decision log, the outcomes and the inbox.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Actions {
    Table,
    TenantId,
    Id,
    Name,
    Placements,
    Condition,
    Value,
    Priority,
    Payload,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Decisions {
    Table,
    TenantId,
    DecisionId,
    Placement,
    UserId,
    AnonymousId,
    ActionIds,
    Scores,
    Degraded,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DecisionOutcomes {
    Table,
    TenantId,
    EventId,
    DecisionId,
    Event,
    CreatedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(actions()).await?;
        manager.create_table(decisions()).await?;
        manager.create_table(decision_outcomes()).await?;
        manager
            .create_index(
                Index::create()
                    .name("decision_outcomes_by_decision")
                    .table(DecisionOutcomes::Table)
                    .col(DecisionOutcomes::TenantId)
                    .col(DecisionOutcomes::DecisionId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager.create_table(rtim_store::inbox::create_table()).await
    }
}

fn actions() -> TableCreateStatement {
    Table::create()
        .table(Actions::Table)
        .if_not_exists()
        .col(ColumnDef::new(Actions::TenantId).string().not_null())
        .col(ColumnDef::new(Actions::Id).string().not_null())
        .col(ColumnDef::new(Actions::Name).string().not_null())
        .col(ColumnDef::new(Actions::Placements).json().not_null())
        .col(ColumnDef::new(Actions::Condition).text().not_null())
        .col(ColumnDef::new(Actions::Value).double().not_null())
        .col(ColumnDef::new(Actions::Priority).double().not_null())
        .col(ColumnDef::new(Actions::Payload).json().not_null())
        .col(ColumnDef::new(Actions::UpdatedAt).timestamp_with_time_zone().not_null())
        .primary_key(Index::create().col(Actions::TenantId).col(Actions::Id))
        .to_owned()
}

fn decisions() -> TableCreateStatement {
    Table::create()
        .table(Decisions::Table)
        .if_not_exists()
        .col(ColumnDef::new(Decisions::TenantId).string().not_null())
        .col(ColumnDef::new(Decisions::DecisionId).string().not_null())
        .col(ColumnDef::new(Decisions::Placement).string().not_null())
        .col(ColumnDef::new(Decisions::UserId).string().not_null())
        .col(ColumnDef::new(Decisions::AnonymousId).string().not_null())
        .col(ColumnDef::new(Decisions::ActionIds).json().not_null())
        .col(ColumnDef::new(Decisions::Scores).json().not_null())
        .col(ColumnDef::new(Decisions::Degraded).boolean().not_null())
        .col(
            ColumnDef::new(Decisions::CreatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(Index::create().col(Decisions::TenantId).col(Decisions::DecisionId))
        .to_owned()
}

fn decision_outcomes() -> TableCreateStatement {
    Table::create()
        .table(DecisionOutcomes::Table)
        .if_not_exists()
        .col(ColumnDef::new(DecisionOutcomes::TenantId).string().not_null())
        .col(ColumnDef::new(DecisionOutcomes::EventId).string().not_null())
        .col(ColumnDef::new(DecisionOutcomes::DecisionId).string().not_null())
        .col(ColumnDef::new(DecisionOutcomes::Event).string().not_null())
        .col(
            ColumnDef::new(DecisionOutcomes::CreatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(
            Index::create()
                .col(DecisionOutcomes::TenantId)
                .col(DecisionOutcomes::EventId),
        )
        .to_owned()
}
