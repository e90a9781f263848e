//! Tenant-scoped reads and writes. Every function takes the tenant, and every
//! statement filters or keys on it.
//!
//! Counters are updated with `INSERT ... ON CONFLICT DO UPDATE` that adds the
//! inserted value (`excluded`) to the stored one inside the database, so
//! concurrent writers do not overwrite each other's increments and a batch of
//! rows costs one statement.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rtim_proto::recommendations::v1::Item;
use rtim_runtime::auth::TenantId;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, OnConflict, Order, Query};
use sea_orm::{
    ActiveEnum, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, JoinType, QueryFilter, QueryOrder,
    QuerySelect,
};

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

/// A recommendation candidate with its score and, when the item was imported,
/// its catalog entry, read in the same statement.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub item_id: String,
    pub score: i64,
    pub item: Option<Item>,
}

/// One candidate row: the id, the score and the catalog columns, which are
/// NULL when the item was never imported.
type CandidateRow = (String, i64, Option<String>, Option<String>, Option<f64>, Option<String>);

fn candidate((item_id, score, category, brand, price, name): CandidateRow) -> Candidate {
    // The catalog columns are NOT NULL, so a NULL category means no catalog row matched.
    let item = category.map(|category| Item {
        id: item_id.clone(),
        category,
        brand: brand.unwrap_or_default(),
        price: price.unwrap_or_default(),
        name: name.unwrap_or_default(),
    });
    Candidate { item_id, score, item }
}

/// Joins the catalog row of the candidate in `id_column`, and
/// selects its columns after the id and score, as [`CandidateRow`] expects.
fn with_catalog<E: EntityTrait>(
    select: sea_orm::Select<E>,
    tenant_column: E::Column,
    id_column: E::Column,
) -> sea_orm::Select<E> {
    let join = E::belongs_to(item::Entity)
        .from((tenant_column, id_column))
        .to((item::Column::TenantId, item::Column::Id))
        .into();
    select
        .join(JoinType::LeftJoin, join)
        .column(item::Column::Category)
        .column(item::Column::Brand)
        .column(item::Column::Price)
        .column(item::Column::Name)
}

/// Reads the items co-visited with `item_id`, by count descending, then item
/// id, with their catalog entries.
pub async fn co_visited<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    item_id: &str,
    limit: u64,
) -> Result<Vec<Candidate>, DbErr> {
    use co_visit::Column;
    let select = co_visit::Entity::find()
        .select_only()
        .column(Column::OtherItemId)
        .column(Column::Count);
    let rows: Vec<CandidateRow> = with_catalog(select, Column::TenantId, Column::OtherItemId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ItemId.eq(item_id))
        .order_by_desc(Column::Count)
        .order_by_asc(Column::OtherItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(candidate).collect())
}

/// Reads the items co-visited with any of `seeds`, with their counts summed,
/// by sum descending, then item id, with their catalog entries. Items in
/// `excluded` are left out.
pub async fn co_visited_with_any<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    seeds: &[String],
    excluded: &HashSet<String>,
    limit: u64,
) -> Result<Vec<Candidate>, DbErr> {
    use co_visit::Column;
    if seeds.is_empty() {
        return Ok(Vec::new());
    }
    // PostgreSQL sums a bigint into a numeric; the cast keeps it a 64-bit integer on both databases.
    let total = || Expr::expr(Func::cast_as(Func::sum(Expr::col(Column::Count)), Alias::new("BIGINT")));
    let select = co_visit::Entity::find()
        .select_only()
        .column(Column::OtherItemId)
        .column_as(total(), "total");
    let rows: Vec<CandidateRow> = with_catalog(select, Column::TenantId, Column::OtherItemId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ItemId.is_in(seeds.iter().map(String::as_str)))
        .filter(Column::OtherItemId.is_not_in(excluded.iter().map(String::as_str)))
        // The catalog columns depend on the item id alone, so grouping by
        // them as well keeps one row per item.
        .group_by(Column::OtherItemId)
        .group_by(item::Column::Category)
        .group_by(item::Column::Brand)
        .group_by(item::Column::Price)
        .group_by(item::Column::Name)
        .order_by_desc(total())
        .order_by_asc(Column::OtherItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(candidate).collect())
}

/// Reads the `limit` most popular items, by score descending, then item id,
/// with their catalog entries.
pub async fn popular<C: ConnectionTrait>(db: &C, tenant: &TenantId, limit: u64) -> Result<Vec<Candidate>, DbErr> {
    use popularity::Column;
    let select = popularity::Entity::find()
        .select_only()
        .column(Column::ItemId)
        .column(Column::Score);
    let rows: Vec<CandidateRow> = with_catalog(select, Column::TenantId, Column::ItemId)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .order_by_desc(Column::Score)
        .order_by_asc(Column::ItemId)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(candidate).collect())
}

/// The views and purchases that a shopper's recommendations start from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShopperHistory {
    /// Up to the requested number of most recently viewed items.
    pub recent_views: Vec<String>,
    /// Every item the shopper bought.
    pub bought: Vec<String>,
}

/// Reads the shopper's `views` most recently viewed items and every item
/// they bought, in one statement.
pub async fn shopper_history<C: ConnectionTrait>(
    db: &C,
    tenant: &TenantId,
    shopper_key: &str,
    views: u64,
) -> Result<ShopperHistory, DbErr> {
    use shopper_item::Column;
    let recent = Query::select()
        .column(Column::ItemId)
        .from(shopper_item::Entity)
        .and_where(Column::TenantId.eq(tenant.as_str()))
        .and_where(Column::ShopperKey.eq(shopper_key))
        .and_where(Column::Kind.eq(shopper_item::Kind::Viewed))
        .order_by(Column::LastAt, Order::Desc)
        .order_by(Column::ItemId, Order::Asc)
        .limit(views)
        .to_owned();
    let rows: Vec<(String, shopper_item::Kind)> = shopper_item::Entity::find()
        .select_only()
        .column(Column::ItemId)
        .column(Column::Kind)
        .filter(Column::TenantId.eq(tenant.as_str()))
        .filter(Column::ShopperKey.eq(shopper_key))
        .filter(
            Condition::any().add(Column::Kind.eq(shopper_item::Kind::Bought)).add(
                Condition::all()
                    .add(Column::Kind.eq(shopper_item::Kind::Viewed))
                    .add(Column::ItemId.in_subquery(recent)),
            ),
        )
        .into_tuple()
        .all(db)
        .await?;
    let mut history = ShopperHistory::default();
    for (item_id, kind) in rows {
        match kind {
            shopper_item::Kind::Viewed => history.recent_views.push(item_id),
            shopper_item::Kind::Bought => history.bought.push(item_id),
        }
    }
    Ok(history)
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
        assert_eq!(scores(&from_x), [("y", 1), ("z", 1)], "one co-visit per pair");
        let from_z = co_visited(&db, &tenant, "z", 10).await.expect("read");
        assert_eq!(scores(&from_z), [("x", 1), ("y", 1)], "pairs count both ways");
    }

    fn scores(candidates: &[Candidate]) -> Vec<(&str, i64)> {
        candidates
            .iter()
            .map(|candidate| (candidate.item_id.as_str(), candidate.score))
            .collect()
    }

    #[tokio::test]
    async fn candidates_and_shopper_history() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}/store.db?mode=rwc", dir.path().display());
        let db = rtim_store::connect(&url, None, 2).await.expect("connect");
        Migrator::up(&db, None).await.expect("migrate");
        let tenant = TenantId("demo".to_owned());
        let other = TenantId("other".to_owned());
        let start = Utc::now();
        let at = |seconds: i64| start + chrono::Duration::seconds(seconds);

        for (item, second) in [("a", 1), ("b", 2), ("c", 3)] {
            record_session_view(&db, &tenant, "s1", item, at(second))
                .await
                .expect("record");
        }
        let shoe = Item {
            id: "b".to_owned(),
            category: "shoes".to_owned(),
            brand: "acme".to_owned(),
            price: 12.5,
            name: "Shoe b".to_owned(),
        };
        upsert_items(&db, &tenant, std::slice::from_ref(&shoe), start)
            .await
            .expect("import");
        let elsewhere = Item {
            id: "c".to_owned(),
            ..shoe.clone()
        };
        upsert_items(&db, &other, &[elsewhere], start)
            .await
            .expect("import for another tenant");

        let from_a = co_visited(&db, &tenant, "a", 10).await.expect("read");
        assert_eq!(scores(&from_a), [("b", 1), ("c", 1)], "a was co-visited with b and c");
        assert_eq!(from_a[0].item, Some(shoe.clone()), "b carries its catalog entry");
        assert_eq!(from_a[1].item, None, "c was imported for another tenant only");

        let seeds = ["a".to_owned(), "c".to_owned()];
        let excluded = HashSet::from(["a".to_owned(), "c".to_owned()]);
        let from_seeds = co_visited_with_any(&db, &tenant, &seeds, &excluded, 10)
            .await
            .expect("read");
        assert_eq!(scores(&from_seeds), [("b", 2)], "b was co-visited with both seeds");
        assert_eq!(
            from_seeds[0].item,
            Some(shoe),
            "the summed row carries the catalog entry"
        );

        let key = |item: &str, kind| ShopperItemKey {
            shopper_key: "u1".to_owned(),
            item_id: item.to_owned(),
            kind,
        };
        let rows = [
            (key("a", shopper_item::Kind::Viewed), at(1)),
            (key("b", shopper_item::Kind::Viewed), at(2)),
            (key("c", shopper_item::Kind::Viewed), at(3)),
            (key("d", shopper_item::Kind::Viewed), at(4)),
            (key("a", shopper_item::Kind::Bought), at(5)),
        ];
        touch_shopper_items(&db, &tenant, &rows)
            .await
            .expect("views and a purchase");
        let mut history = shopper_history(&db, &tenant, "u1", 2).await.expect("history");
        history.recent_views.sort();
        assert_eq!(history.recent_views, ["c", "d"], "the two latest views");
        assert_eq!(history.bought, ["a"], "every purchase");
        let unknown = shopper_history(&db, &tenant, "nobody", 2).await.expect("history");
        assert_eq!(unknown, ShopperHistory::default(), "no history for an unknown shopper");
    }
}
