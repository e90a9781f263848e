//! One contract for both databases: SQLite always, PostgreSQL when
//! `RTIM_TEST_DATABASE_URL` is set, each in a fresh file or schema.

use rtim_store::{connect, inbox};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait};

async fn databases() -> Vec<(&'static str, DatabaseConnection, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}/store.db?mode=rwc", dir.path().display());
    let mut databases = vec![("sqlite", connect(&sqlite_url, None, 2).await.unwrap(), dir)];
    if let Ok(url) = std::env::var("RTIM_TEST_DATABASE_URL") {
        let schema = format!("store_test_{}", uuid::Uuid::new_v4().simple());
        let db = connect(&url, Some(&schema), 2).await.unwrap();
        databases.push(("postgres", db, tempfile::tempdir().unwrap()));
    }
    for (_, db, _) in &databases {
        db.execute(&inbox::create_table()).await.unwrap();
    }
    databases
}

#[tokio::test]
async fn inbox_claims_each_event_once() {
    for (name, db, _dir) in databases().await {
        assert!(inbox::claim(&db, "acme", "e1").await.unwrap(), "{name}");
        assert!(!inbox::claim(&db, "acme", "e1").await.unwrap(), "{name}");
        assert!(
            inbox::claim(&db, "other", "e1").await.unwrap(),
            "{name}: tenants are separate"
        );
    }
}

#[tokio::test]
async fn rolled_back_claim_is_forgotten() {
    for (name, db, _dir) in databases().await {
        let transaction = db.begin().await.unwrap();
        assert!(inbox::claim(&transaction, "acme", "e2").await.unwrap(), "{name}");
        transaction.rollback().await.unwrap();
        assert!(
            inbox::claim(&db, "acme", "e2").await.unwrap(),
            "{name}: claim must be retried after rollback"
        );
    }
}

#[tokio::test]
async fn bad_schema_name_is_rejected() {
    let error = connect("postgres://127.0.0.1/test", Some("a;drop"), 1)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid schema name 'a;drop'"), "{error}");
}

#[tokio::test]
async fn pool_usage_follows_transactions() {
    for (name, db, _dir) in databases().await {
        let idle = rtim_store::pool::usage(&db).expect("an sqlx pool");
        assert_eq!(idle.max, 2, "{name}: configured maximum");
        assert_eq!(idle.in_use, 0, "{name}: nothing borrowed");

        let transaction = db.begin().await.unwrap();
        let busy = rtim_store::pool::usage(&db).unwrap();
        assert_eq!(busy.in_use, 1, "{name}: the transaction holds a connection");
        transaction.rollback().await.unwrap();
        // sqlx returns a connection to the pool in a task of its own.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut after = rtim_store::pool::usage(&db).unwrap();
        while after.in_use > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            after = rtim_store::pool::usage(&db).unwrap();
        }
        assert_eq!(after.in_use, 0, "{name}: returned to the pool");
        assert!(after.idle >= 1, "{name}: kept idle");
    }
}
