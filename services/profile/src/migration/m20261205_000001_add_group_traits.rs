use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Profiles {
    Table,
    GroupTraits,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Adds the traits of the groups from group calls. Existing profiles get
    /// an empty map, because no group call was applied to them before.
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Profiles::Table)
                    .add_column(ColumnDef::new(Profiles::GroupTraits).json().not_null().default("{}"))
                    .to_owned(),
            )
            .await
    }
}
