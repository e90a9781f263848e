//! Tenant-scoped reads and writes. Every function takes the tenant, and every
//! statement filters or keys on it.
//!
//! Counters are updated with `INSERT ... ON CONFLICT DO UPDATE` that adds the
//! inserted value (`excluded`) to the stored one inside the database, so
//! concurrent writers do not overwrite each other's increments and a batch of
//! rows costs one statement.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rtim_proto::recommendations::v1::Item;
use rtim_runtime::auth::TenantId;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Query};
use sea_orm::{ActiveEnum, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{co_visit, item, popularity, session_item, shopper_item};

/// Rows per multi-row INSERT; 500 rows of at most 7 columns stay far below the
/// bind parameter limits of SQLite (32766) and PostgreSQL (65535).
const CHUNK_ROWS: usize = 500;

/// Refers to a column of the row that failed to insert, in the `excluded`
/// pseudo-table of `ON CONFLICT DO UPDATE`.
fn excluded<C: sea_orm::sea_query::IntoIden>(column: C) -> Expr {
    Expr::col((Alias::new("excluded"), column))
}

/// Adds score deltas to the popularity of items.
pub async fn add_popularity<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    deltas: &[(String, i64)],
) -> Result<(), DbErr> {
    use popularity::Column;
    for chunk in deltas.chunks(CHUNK_ROWS) {
        let mut insert = Query::insert();
        insert
            .into_table(popularity::Entity)
            .columns([Column::TenantId, Column::ItemId, Column::Score])
            .on_conflict(
                OnConflict::columns([Column::TenantId, Column::ItemId])
                    .value(
                        Column::Score,
                        Expr::col((popularity::Entity, Column::Score)).add(excluded(Column::Score)),
                    )
                    .to_owned(),
            );
        for (item_id, delta) in chunk {
            insert.values_panic([tenant.as_str().into(), item_id.as_str().into(), (*delta).into()]);
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

/// One shopper interaction to record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ShopperItemKey {
    pub shopper_key: String,
    pub item_id: String,
    pub kind: shopper_item::Kind,
}

/// Records shopper interactions, keeping the latest time of each, whatever
/// order the events arrive in.
pub async fn touch_shopper_items<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    rows: &[(ShopperItemKey, DateTime<Utc>)],
) -> Result<(), DbErr> {
    use shopper_item::Column;
    let stored = Expr::col((shopper_item::Entity, Column::LastAt));
    let latest = Expr::case(excluded(Column::LastAt).gt(stored.clone()), excluded(Column::LastAt)).finally(stored);
    for chunk in rows.chunks(CHUNK_ROWS) {
        let mut insert = Query::insert();
        insert
            .into_table(shopper_item::Entity)
            .columns([
                Column::TenantId,
                Column::ShopperKey,
                Column::ItemId,
                Column::Kind,
                Column::LastAt,
            ])
            .on_conflict(
                OnConflict::columns([Column::TenantId, Column::ShopperKey, Column::ItemId, Column::Kind])
                    .value(Column::LastAt, latest.clone())
                    .to_owned(),
            );
        for (key, at) in chunk {
            insert.values_panic([
                tenant.as_str().into(),
                key.shopper_key.as_str().into(),
                key.item_id.as_str().into(),
                key.kind.to_value().into(),
                (*at).into(),
            ]);
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

/// Records that `item_id` was viewed in `session_id`. When the item is new
/// in the session, counts one co-visit between it and every item viewed
/// before in the session, in both directions. Returns whether it was new.
pub async fn record_session_view<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    session_id: &str,
    item_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    use session_item::Column;
    let insert = Query::insert()
        .into_table(session_item::Entity)
        .columns([Column::TenantId, Column::SessionId, Column::ItemId, Column::FirstSeen])
        .values_panic([tenant.as_str().into(), session_id.into(), item_id.into(), at.into()])
        .on_conflict(
            OnConflict::columns([Column::TenantId, Column::SessionId, Column::ItemId])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    if db.execute(&insert).await?.rows_affected() == 0 {
        return Ok(false);
    }

    let others: Vec<String> = session_item::Entity::find()
        .select_only()
        .column(Column::ItemId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::SessionId.eq(session_id))
        .filter(Column::ItemId.ne(item_id))
        .into_tuple()
        .all(db)
        .await?;
    let pairs: Vec<(&str, &str)> = others
        .iter()
        .flat_map(|other| [(item_id, other.as_str()), (other.as_str(), item_id)])
        .collect();
    add_co_visits(db, tenant, &pairs).await?;
    Ok(true)
}

/// Adds one co-visit to each (item, other item) pair.
async fn add_co_visits<C: ConnectionTrait>(db: &C, tenant: &TenantId, pairs: &[(&str, &str)]) -> Result<(), DbErr> {
    use co_visit::Column;
    for chunk in pairs.chunks(CHUNK_ROWS) {
        let mut insert = Query::insert();
        insert
            .into_table(co_visit::Entity)
            .columns([Column::TenantId, Column::ItemId, Column::OtherItemId, Column::Count])
            .on_conflict(
                OnConflict::columns([Column::TenantId, Column::ItemId, Column::OtherItemId])
                    .value(
                        Column::Count,
                        Expr::col((co_visit::Entity, Column::Count)).add(excluded(Column::Count)),
                    )
                    .to_owned(),
            );
        for (item_id, other_item_id) in chunk {
            insert.values_panic([
                tenant.as_str().into(),
                (*item_id).into(),
                (*other_item_id).into(),
                1_i64.into(),
            ]);
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

/// Reads the items co-visited with `item_id`, by count descending, then item id.
pub async fn co_visited<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    item_id: &str,
    limit: u64,
) -> Result<Vec<(String, i64)>, DbErr> {
    use co_visit::Column;
    co_visit::Entity::find()
        .select_only()
        .column(Column::OtherItemId)
        .column(Column::Count)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ItemId.eq(item_id))
        .order_by_desc(Column::Count)
        .order_by_asc(Column::OtherItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// Reads the items co-visited with any of `seeds`, with their counts summed,
/// by sum descending, then item id. Items in `excluded` are left out.
pub async fn co_visited_with_any<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    seeds: &[String],
    excluded: &HashSet<String>,
    limit: u64,
) -> Result<Vec<(String, i64)>, DbErr> {
    use co_visit::Column;
    if seeds.is_empty() {
        return Ok(Vec::new());
    }
    // PostgreSQL sums a bigint into a numeric; the cast keeps it a 64-bit integer on both databases.
    let total = || Expr::expr(Func::cast_as(Func::sum(Expr::col(Column::Count)), Alias::new("BIGINT")));
    co_visit::Entity::find()
        .select_only()
        .column(Column::OtherItemId)
        .column_as(total(), "total")
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ItemId.is_in(seeds.iter().map(String::as_str)))
        .filter(Column::OtherItemId.is_not_in(excluded.iter().map(String::as_str)))
        .group_by(Column::OtherItemId)
        .order_by_desc(total())
        .order_by_asc(Column::OtherItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// Reads the `limit` most popular items, by score descending, then item id.
pub async fn popular<C: ConnectionTrait>(db: &C, tenant: &TenantId, limit: u64) -> Result<Vec<(String, i64)>, DbErr> {
    use popularity::Column;
    popularity::Entity::find()
        .select_only()
        .column(Column::ItemId)
        .column(Column::Score)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .order_by_desc(Column::Score)
        .order_by_asc(Column::ItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// Reads the shopper's `limit` most recently viewed items, latest first.
pub async fn recent_views<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    shopper_key: &str,
    limit: u64,
) -> Result<Vec<String>, DbErr> {
    use shopper_item::Column;
    shopper_item::Entity::find()
        .select_only()
        .column(Column::ItemId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ShopperKey.eq(shopper_key))
        .filter(Column::Kind.eq(shopper_item::Kind::Viewed))
        .order_by_desc(Column::LastAt)
        .order_by_asc(Column::ItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await
}

/// Reads every item the shopper bought.
pub async fn bought<C: ConnectionTrait>(db: &C, tenant: &TenantId, shopper_key: &str) -> Result<Vec<String>, DbErr> {
    use shopper_item::Column;
    shopper_item::Entity::find()
        .select_only()
        .column(Column::ItemId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ShopperKey.eq(shopper_key))
        .filter(Column::Kind.eq(shopper_item::Kind::Bought))
        .into_tuple()
        .all(db)
        .await
}

/// Reads the catalog entries of `ids`, keyed by id. Ids never imported are absent.
pub async fn catalog_items<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    ids: &[&str],
) -> Result<HashMap<String, item::Model>, DbErr> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let items = item::Entity::find()
        .filter(item::Column::TenantId.eq(tenant.as_str()))
        .filter(item::Column::Id.is_in(ids.iter().copied()))
        .all(db)
        .await?;
    Ok(items.into_iter().map(|item| (item.id.clone(), item)).collect())
}

/// Creates or replaces catalog items. Ids must be unique within `items`,
/// because PostgreSQL rejects one statement that updates a row twice.
pub async fn upsert_items<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    items: &[Item],
    updated_at: DateTime<Utc>,
) -> Result<(), DbErr> {
    use item::Column;
    for chunk in items.chunks(CHUNK_ROWS) {
        let mut insert = Query::insert();
        insert
            .into_table(item::Entity)
            .columns([
                Column::TenantId,
                Column::Id,
                Column::Category,
                Column::Brand,
                Column::Price,
                Column::Name,
                Column::UpdatedAt,
            ])
            .on_conflict(
                OnConflict::columns([Column::TenantId, Column::Id])
                    .update_columns([
                        Column::Category,
                        Column::Brand,
                        Column::Price,
                        Column::Name,
                        Column::UpdatedAt,
                    ])
                    .to_owned(),
            );
        for item in chunk {
            insert.values_panic([
                tenant.as_str().into(),
                item.id.as_str().into(),
                item.category.as_str().into(),
                item.brand.as_str().into(),
                item.price.into(),
                item.name.as_str().into(),
                updated_at.into(),
            ]);
        }
        db.execute(&insert).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::TransactionTrait;
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::migration::Migrator;

    #[tokio::test]
    async fn session_views_count_once() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}/store.db?mode=rwc", dir.path().display());
        let db = rtim_store::connect(&url, None, 2).await.expect("connect");
        Migrator::up(&db, None).await.expect("migrate");
        let tenant = TenantId("demo".to_owned());
        let now = Utc::now();

        let transaction = db.begin().await.expect("begin");
        for item in ["x", "y", "x", "z"] {
            record_session_view(&transaction, &tenant, "s1", item, now)
                .await
                .expect("record");
        }
        transaction.commit().await.expect("commit");
        let new = record_session_view(&db, &tenant, "s1", "y", now).await.expect("record");
        assert!(!new, "y was seen before in s1");

        let from_x = co_visited(&db, &tenant, "x", 10).await.expect("read");
        assert_eq!(
            from_x,
            [("y".to_owned(), 1), ("z".to_owned(), 1)],
            "one co-visit per pair"
        );
        let from_z = co_visited(&db, &tenant, "z", 10).await.expect("read");
        assert_eq!(
            from_z,
            [("x".to_owned(), 1), ("y".to_owned(), 1)],
            "pairs count both ways"
        );
    }
}
