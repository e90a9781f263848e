use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Profiles {
    Table,
    TenantId,
    ProfileId,
    UserId,
    FirstSeen,
    LastSeen,
    EventCounts,
    RecentlyViewed,
    CategoryCounts,
    BrandCounts,
    Traits,
    CartValue,
    TotalSpent,
    OrderCount,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Identities {
    Table,
    TenantId,
    Kind,
    Value,
    ProfileId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_table(rtim_store::inbox::create_table()).await?;
        manager
            .create_table(
                Table::create()
                    .table(Profiles::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Profiles::TenantId).string().not_null())
                    .col(ColumnDef::new(Profiles::ProfileId).string().not_null())
                    .col(ColumnDef::new(Profiles::UserId).string().null())
                    .col(
                        ColumnDef::new(Profiles::FirstSeen)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Profiles::LastSeen).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Profiles::EventCounts).json().not_null())
                    .col(ColumnDef::new(Profiles::RecentlyViewed).json().not_null())
                    .col(ColumnDef::new(Profiles::CategoryCounts).json().not_null())
                    .col(ColumnDef::new(Profiles::BrandCounts).json().not_null())
                    .col(ColumnDef::new(Profiles::Traits).json().not_null())
                    .col(ColumnDef::new(Profiles::CartValue).double().not_null())
                    .col(ColumnDef::new(Profiles::TotalSpent).double().not_null())
                    .col(ColumnDef::new(Profiles::OrderCount).big_integer().not_null())
                    .col(
                        ColumnDef::new(Profiles::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(Profiles::TenantId).col(Profiles::ProfileId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Identities::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Identities::TenantId).string().not_null())
                    .col(ColumnDef::new(Identities::Kind).string().not_null())
                    .col(ColumnDef::new(Identities::Value).string().not_null())
                    .col(ColumnDef::new(Identities::ProfileId).string().not_null())
                    .col(
                        ColumnDef::new(Identities::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Identities::TenantId)
                            .col(Identities::Kind)
                            .col(Identities::Value),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identities_by_profile")
                    .table(Identities::Table)
                    .col(Identities::TenantId)
                    .col(Identities::ProfileId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
