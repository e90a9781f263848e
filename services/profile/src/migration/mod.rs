//! Schema migrations of the profile service, for PostgreSQL and SQLite.

use sea_orm_migration::prelude::*;

mod m20261204_000001_create_tables;
mod m20261205_000001_add_group_traits;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261204_000001_create_tables::Migration),
            Box::new(m20261205_000001_add_group_traits::Migration),
        ]
    }
}
