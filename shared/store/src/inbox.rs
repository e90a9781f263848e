//! The idempotency inbox: one row per (tenant, event id) that a service has
//! applied. Handlers claim the event in the same transaction as its effect,
//! so a redelivered event finds its row and is skipped.

use chrono::Utc;
use sea_orm::sea_query::{ColumnDef, Index, OnConflict, Query, Table, TableCreateStatement};
use sea_orm::{ConnectionTrait, DbErr, DeriveIden};

#[derive(DeriveIden)]
enum ProcessedEvents {
    Table,
    TenantId,
    EventId,
    ProcessedAt,
}

/// Builds the inbox table, for each service's first migration.
pub fn create_table() -> TableCreateStatement {
    Table::create()
        .table(ProcessedEvents::Table)
        .if_not_exists()
        .col(ColumnDef::new(ProcessedEvents::TenantId).string().not_null())
        .col(ColumnDef::new(ProcessedEvents::EventId).string().not_null())
        .col(
            ColumnDef::new(ProcessedEvents::ProcessedAt)
                .timestamp_with_time_zone()
                .not_null(),
        )
        .primary_key(
            Index::create()
                .col(ProcessedEvents::TenantId)
                .col(ProcessedEvents::EventId),
        )
        .to_owned()
}

/// Records that `event_id` is being applied; returns false when it already
/// was, in which case the caller must skip the event.
pub async fn claim<C: ConnectionTrait>(db: &C, tenant: &str, event_id: &str) -> Result<bool, DbErr> {
    let insert = Query::insert()
        .into_table(ProcessedEvents::Table)
        .columns([
            ProcessedEvents::TenantId,
            ProcessedEvents::EventId,
            ProcessedEvents::ProcessedAt,
        ])
        .values_panic([tenant.into(), event_id.into(), Utc::now().into()])
        .on_conflict(
            OnConflict::columns([ProcessedEvents::TenantId, ProcessedEvents::EventId])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    let result = db.execute(&insert).await?;
    Ok(result.rows_affected() == 1)
}
