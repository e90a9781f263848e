//! Creates the point rules, the ledger and the inbox.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PointRules {
    Table,
    TenantId,
    Id,
    Event,
    Condition,
    Points,
    Description,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Ledger {
    Table,
    TenantId,
    EventId,
    RuleId,
    UserKey,
    Points,
    CreatedAt,
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(point_rules()).await?;
        manager.create_table(ledger()).await?;
        manager
            .create_index(
                Index::create()
                    .name("ledger_by_user")
                    .table(Ledger::Table)
                    .col(Ledger::TenantId)
                    .col(Ledger::UserKey)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager.create_table(rtim_store::inbox::create_table()).await
    }
}

fn point_rules() -> TableCreateStatement {
    Table::create()
        .table(PointRules::Table)
        .if_not_exists()
        .col(ColumnDef::new(PointRules::TenantId).string().not_null())
        .col(ColumnDef::new(PointRules::Id).string().not_null())
        .col(ColumnDef::new(PointRules::Event).string().not_null())
        .col(ColumnDef::new(PointRules::Condition).text().not_null())
        .col(ColumnDef::new(PointRules::Points).text().not_null())
        .col(ColumnDef::new(PointRules::Description).text().not_null())
        .col(
            ColumnDef::new(PointRules::UpdatedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(Index::create().col(PointRules::TenantId).col(PointRules::Id))
        .to_owned()
}

fn ledger() -> TableCreateStatement {
    Table::create()
        .table(Ledger::Table)
        .if_not_exists()
        .col(ColumnDef::new(Ledger::TenantId).string().not_null())
        .col(ColumnDef::new(Ledger::EventId).string().not_null())
        .col(ColumnDef::new(Ledger::RuleId).string().not_null())
        .col(ColumnDef::new(Ledger::UserKey).string().not_null())
        .col(ColumnDef::new(Ledger::Points).big_integer().not_null())
        .col(ColumnDef::new(Ledger::CreatedAt).timestamp_with_time_zone().not_null())
        .primary_key(
            Index::create()
                .col(Ledger::TenantId)
                .col(Ledger::EventId)
                .col(Ledger::RuleId),
        )
        .to_owned()
}
