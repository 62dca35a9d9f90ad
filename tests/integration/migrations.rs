//! Upgrades: a store created by an earlier release, holding data in the old shapes, migrates to
//! the current schema and the portal reads that data correctly.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Actor, StoreKind, TestApp, fresh_pg_database};
use crate::store_tests;

/// The store as release 0004 left it: migrations 0001-0004 only.
async fn migrate_up_to_0004(kind: StoreKind, url: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(match kind {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        });
    let old = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&source).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.as_str() < "0005" && name.ends_with(".sql") {
            std::fs::copy(&path, old.path().join(&name)).expect("copy");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("migrator");
    assert_eq!(migrator.iter().count(), 4);
    match kind {
        StoreKind::Sqlite => {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse().expect("url");
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
                .await
                .expect("connect");
            migrator.run(&pool).await.expect("0001-0004");
            insert_old_instance(&pool).await;
        }
        StoreKind::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            migrator.run(&pool).await.expect("0001-0004");
            insert_old_instance(&pool).await;
        }
    }
}

const OLD_ID: &str = "0190f5a4-7d3c-7b1e-9f00-2b6c1d8e4a10";

/// An instance whose limit overrides use the 0004 keys (seconds).
async fn insert_old_instance<DB>(pool: &sqlx::Pool<DB>)
where
    DB: sqlx::Database,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'e> &'e sqlx::Pool<DB>: sqlx::Executor<'e, Database = DB>,
    uuid::Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    chrono::DateTime<chrono::Utc>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i32: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let now = chrono::Utc::now();
    sqlx::query(
        "INSERT INTO instances (id, name, name_key, engine, tls_mode, path, environment, required_approvals, \
         run_mode, slack_approval, limits, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(OLD_ID.parse::<uuid::Uuid>().expect("uuid"))
    .bind("legacy-reports".to_owned())
    .bind("legacy-reports".to_owned())
    .bind("sqlite".to_owned())
    .bind("disable".to_owned())
    .bind("legacy.db".to_owned())
    .bind("production".to_owned())
    .bind(1i32)
    .bind("manual".to_owned())
    .bind(false)
    .bind(json!({"wall_secs": 5, "statement_timeout_secs": 2, "max_rows": 50}).to_string())
    .bind(now)
    .execute(pool)
    .await
    .expect("insert an 0004 instance");
}

store_tests! {
    async fn limits_in_seconds_become_milliseconds(kind) {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let url = match kind {
            StoreKind::Sqlite => format!("sqlite://{}", data_dir.path().join("quorum.db").display()),
            StoreKind::Postgres => fresh_pg_database().await,
        };
        migrate_up_to_0004(kind, &url).await;
        // Starting the portal applies 0005 onwards.
        let app = TestApp::spawn_on(kind, data_dir, &url, "").await;
        let admin = app.login(Actor::Admin).await;
        let (status, i) = app.get(&format!("/api/v1/instances/{OLD_ID}"), &admin.token).await;
        assert_eq!(status, StatusCode::OK, "{i}");
        assert_eq!(i["limits"]["wall_ms"], 5000, "{i}");
        assert_eq!(i["limits"]["db_call_ms"], 2000, "{i}");
        assert_eq!(i["limits"]["max_rows"], 50, "{i}");
        assert!(i["limits"].get("wall_secs").is_none(), "{i}");
        assert_eq!(i["effective_limits"]["wall_ms"], 5000, "{i}");
        assert_eq!(i["effective_limits"]["memory_mb"], 128, "{i}");
    }
}
