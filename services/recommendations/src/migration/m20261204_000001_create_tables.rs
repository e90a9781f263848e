//! Catalog, popularity, sessions, co-visits, shopper history and the inbox.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Items {
    Table,
    TenantId,
    Id,
    Category,
    Brand,
    Price,
    Name,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Popularity {
    Table,
    TenantId,
    ItemId,
    Score,
}

#[derive(DeriveIden)]
enum SessionItems {
    Table,
    TenantId,
    SessionId,
    ItemId,
    FirstSeen,
}

#[derive(DeriveIden)]
enum CoVisits {
    Table,
    TenantId,
    ItemId,
    OtherItemId,
    Count,
}

#[derive(DeriveIden)]
enum ShopperItems {
    Table,
    TenantId,
    ShopperKey,
    ItemId,
    Kind,
    LastAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(rtim_store::inbox::create_table()).await?;
        manager.create_table(items()).await?;
        manager.create_table(popularity()).await?;
        // The top list reads the highest scores of one tenant.
        manager
            .create_index(
                Index::create()
                    .name("popularity_tenant_score")
                    .table(Popularity::Table)
                    .col(Popularity::TenantId)
                    .col(Popularity::Score)
                    .to_owned(),
            )
            .await?;
        manager.create_table(session_items()).await?;
        manager.create_table(co_visits()).await?;
        manager.create_table(shopper_items()).await?;
        Ok(())
    }
}

fn items() -> TableCreateStatement {
    Table::create()
        .table(Items::Table)
        .col(ColumnDef::new(Items::TenantId).string().not_null())
        .col(ColumnDef::new(Items::Id).string().not_null())
        .col(ColumnDef::new(Items::Category).string().not_null())
        .col(ColumnDef::new(Items::Brand).string().not_null())
        .col(ColumnDef::new(Items::Price).double().not_null())
        .col(ColumnDef::new(Items::Name).string().not_null())
        .col(ColumnDef::new(Items::UpdatedAt).timestamp_with_time_zone().not_null())
        .primary_key(Index::create().col(Items::TenantId).col(Items::Id))
        .to_owned()
}

fn popularity() -> TableCreateStatement {
    Table::create()
        .table(Popularity::Table)
        .col(ColumnDef::new(Popularity::TenantId).string().not_null())
        .col(ColumnDef::new(Popularity::ItemId).string().not_null())
        .col(ColumnDef::new(Popularity::Score).big_integer().not_null())
        .primary_key(Index::create().col(Popularity::TenantId).col(Popularity::ItemId))
        .to_owned()
}

fn session_items() -> TableCreateStatement {
    Table::create()
        .table(SessionItems::Table)
        .col(ColumnDef::new(SessionItems::TenantId).string().not_null())
        .col(ColumnDef::new(SessionItems::SessionId).string().not_null())
        .col(ColumnDef::new(SessionItems::ItemId).string().not_null())
        .col(
            ColumnDef::new(SessionItems::FirstSeen)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(
            Index::create()
                .col(SessionItems::TenantId)
                .col(SessionItems::SessionId)
                .col(SessionItems::ItemId),
        )
        .to_owned()
}

fn co_visits() -> TableCreateStatement {
    Table::create()
        .table(CoVisits::Table)
        .col(ColumnDef::new(CoVisits::TenantId).string().not_null())
        .col(ColumnDef::new(CoVisits::ItemId).string().not_null())
        .col(ColumnDef::new(CoVisits::OtherItemId).string().not_null())
        .col(ColumnDef::new(CoVisits::Count).big_integer().not_null())
        .primary_key(
            Index::create()
                .col(CoVisits::TenantId)
                .col(CoVisits::ItemId)
                .col(CoVisits::OtherItemId),
        )
        .to_owned()
}

fn shopper_items() -> TableCreateStatement {
    Table::create()
        .table(ShopperItems::Table)
        .col(ColumnDef::new(ShopperItems::TenantId).string().not_null())
        .col(ColumnDef::new(ShopperItems::ShopperKey).string().not_null())
        .col(ColumnDef::new(ShopperItems::ItemId).string().not_null())
        .col(ColumnDef::new(ShopperItems::Kind).string_len(16).not_null())
        .col(
            ColumnDef::new(ShopperItems::LastAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(
            Index::create()
                .col(ShopperItems::TenantId)
                .col(ShopperItems::ShopperKey)
                .col(ShopperItems::ItemId)
                .col(ShopperItems::Kind),
        )
        .to_owned()
}
