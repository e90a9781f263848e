//! `rtim migrate` run as a process, configured through `RTIM__` variables as
//! in Kubernetes: on SQLite always, and on PostgreSQL with a unique schema
//! prefix when `RTIM_TEST_DATABASE_URL` is set.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;

/// The tables each service's migrations create, with SeaORM's own bookkeeping
/// table.
const EXPECTED_TABLES: [(&str, &[&str]); 5] = [
    ("profile", &["identities", "processed_events", "profiles"]),
    (
        "decisioning",
        &["actions", "decision_outcomes", "decisions", "processed_events"],
    ),
    (
        "recommendations",
        &[
            "co_visits",
            "items",
            "popularity",
            "processed_events",
            "session_items",
            "shopper_items",
        ],
    ),
    (
        "surveys",
        &["processed_events", "responses", "shopper_events", "surveys"],
    ),
    ("gamification", &["ledger", "point_rules", "processed_events"]),
];

fn expected_tables(service: &str) -> BTreeSet<String> {
    let (_, tables) = EXPECTED_TABLES
        .iter()
        .find(|(name, _)| *name == service)
        .expect("service is in EXPECTED_TABLES");
    tables
        .iter()
        .map(|table| (*table).to_owned())
        .chain(["seaql_migrations".to_owned()])
        .collect()
}

/// Runs `rtim migrate ARGS` with only the given `RTIM__` variables set.
fn migrate(args: &[&str], environment: &[(&str, String)]) -> Output {
    let mut command = common::rtim();
    command.arg("migrate").args(args).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("RTIM__")) {
        command.env_remove(name);
    }
    for (name, value) in environment {
        command.env(name, value);
    }
    command.output().expect("rtim migrate runs")
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "rtim migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/{{service}}.db?mode=rwc", dir.display())
}

async fn table_names(db: &DatabaseConnection, sql: &str) -> BTreeSet<String> {
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("listing tables succeeds");
    rows.iter()
        .map(|row| row.try_get::<String>("", "name").expect("name column"))
        .collect()
}

async fn sqlite_tables(dir: &Path, service: &str) -> BTreeSet<String> {
    let url = format!("sqlite://{}/{service}.db?mode=ro", dir.display());
    let db = Database::connect(&url).await.expect("SQLite file opens");
    table_names(
        &db,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .await
}

/// Returns how many migrations the service's crate defines.
fn defined_migrations(service: &str) -> i64 {
    let count = match service {
        "profile" => rtim_profile::migration::Migrator::migrations().len(),
        "decisioning" => rtim_decisioning::migration::Migrator::migrations().len(),
        "recommendations" => rtim_recommendations::migration::Migrator::migrations().len(),
        "surveys" => rtim_surveys::migration::Migrator::migrations().len(),
        "gamification" => rtim_gamification::migration::Migrator::migrations().len(),
        other => panic!("{other} has no migrations"),
    };
    i64::try_from(count).expect("a handful of migrations")
}

async fn migration_rows(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS count FROM {table}"),
        ))
        .await
        .expect("counting migrations succeeds")
        .expect("COUNT returns a row");
    row.try_get::<i64>("", "count").expect("count column")
}

#[tokio::test]
async fn sqlite_every_service_gets_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    let environment = [("RTIM__DATABASE__URL", sqlite_url(dir.path()))];

    assert_success(&migrate(&[], &environment));
    for (service, _) in EXPECTED_TABLES {
        assert_eq!(
            sqlite_tables(dir.path(), service).await,
            expected_tables(service),
            "tables of {service}"
        );
    }

    // A second run finds nothing pending and records nothing twice.
    assert_success(&migrate(&[], &environment));
    for (service, _) in EXPECTED_TABLES {
        let url = format!("sqlite://{}/{service}.db?mode=ro", dir.path().display());
        let db = Database::connect(&url).await.unwrap();
        assert_eq!(
            migration_rows(&db, "seaql_migrations").await,
            defined_migrations(service),
            "migrations recorded for {service}"
        );
    }
}

#[tokio::test]
async fn sqlite_named_service_only() {
    let dir = tempfile::tempdir().unwrap();
    let environment = [("RTIM__DATABASE__URL", sqlite_url(dir.path()))];

    assert_success(&migrate(&["surveys"], &environment));
    assert_eq!(sqlite_tables(dir.path(), "surveys").await, expected_tables("surveys"));
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".db"))
        .collect();
    assert_eq!(files, vec!["surveys.db".to_owned()], "only surveys is migrated");
}

#[test]
fn unknown_service_fails_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let environment = [("RTIM__DATABASE__URL", sqlite_url(dir.path()))];

    let output = migrate(&["profile", "profiel"], &environment);
    assert!(!output.status.success(), "a misspelt name fails");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown service 'profiel'"), "{stderr}");
    assert!(
        stderr.contains("profile, decisioning, recommendations, surveys, gamification"),
        "lists the valid names: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is migrated when a name is wrong"
    );
}

#[test]
fn service_without_tables_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let environment = [("RTIM__DATABASE__URL", sqlite_url(dir.path()))];

    let output = migrate(&["ingestion"], &environment);
    assert!(!output.status.success(), "ingestion has nothing to migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'ingestion' has no database tables"), "{stderr}");
}

#[test]
fn unknown_setting_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let environment = [
        ("RTIM__DATABASE__URL", sqlite_url(dir.path())),
        ("RTIM__DATABASE__SCHEMA_PREFX", "x_".to_owned()),
    ];

    let output = migrate(&[], &environment);
    assert!(!output.status.success(), "a misspelt key fails as in rtim serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("schema_prefx"), "{stderr}");
}

#[tokio::test]
async fn postgres_every_service_gets_its_schema() {
    let Ok(url) = std::env::var("RTIM_TEST_DATABASE_URL") else {
        eprintln!("skipping: RTIM_TEST_DATABASE_URL is not set");
        return;
    };
    let prefix = format!("m{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let environment = [
        ("RTIM__DATABASE__URL", url.clone()),
        ("RTIM__DATABASE__SCHEMA_PREFIX", prefix.clone()),
    ];

    let first = migrate(&[], &environment);
    let second = migrate(&[], &environment);

    let db = Database::connect(&url).await.expect("PostgreSQL accepts connections");
    let mut found = Vec::new();
    for (service, _) in EXPECTED_TABLES {
        let schema = format!("{prefix}{service}");
        let tables = table_names(
            &db,
            &format!(
                "SELECT table_name::text AS name FROM information_schema.tables \
                 WHERE table_schema = '{schema}' AND table_type = 'BASE TABLE'"
            ),
        )
        .await;
        let recorded = if tables.contains("seaql_migrations") {
            migration_rows(&db, &format!("\"{schema}\".seaql_migrations")).await
        } else {
            0
        };
        found.push((service, tables, recorded));
    }
    for (service, _) in EXPECTED_TABLES {
        db.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("DROP SCHEMA IF EXISTS \"{prefix}{service}\" CASCADE"),
        ))
        .await
        .expect("dropping the test schema succeeds");
    }

    assert_success(&first);
    assert_success(&second);
    for (service, tables, recorded) in found {
        assert_eq!(tables, expected_tables(service), "tables of {service}");
        assert_eq!(
            recorded,
            defined_migrations(service),
            "migrations recorded for {service}"
        );
    }
}
