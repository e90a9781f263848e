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
