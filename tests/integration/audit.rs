//! The audit log: events for every sensitive action, filters, and the hash chain that
//! `quorum audit verify` checks, including after a row is edited or deleted behind the portal's
//! back.

use reqwest::StatusCode;
use sqlx::Connection;

use crate::harness::{Actor, StoreKind, TestApp, audit_verify};
use crate::store_tests;

/// Runs SQL as the database owner with the append-only trigger out of the way, as an attacker
/// with direct database access would.
async fn tamper(app: &TestApp, sql: &str) {
    match app.kind {
        StoreKind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.database_url())
                .await
                .expect("connect");
            sqlx::query("DROP TRIGGER IF EXISTS audit_events_no_update")
                .execute(&mut c)
                .await
                .expect("drop");
            sqlx::query("DROP TRIGGER IF EXISTS audit_events_no_delete")
                .execute(&mut c)
                .await
                .expect("drop");
            sqlx::query(sql).execute(&mut c).await.expect("tamper");
        }
        StoreKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.database_url())
                .await
                .expect("connect");
            sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change")
                .execute(&mut c)
                .await
                .expect("disable");
            sqlx::query(sql).execute(&mut c).await.expect("tamper");
        }
    }
}

async fn direct_update_is_refused(app: &TestApp) {
    let sql = "UPDATE audit_events SET action = 'nothing.happened' WHERE seq = 1";
    let err = match app.kind {
        StoreKind::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&app.database_url())
                .await
                .expect("connect");
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .expect_err("trigger refuses")
        }
        StoreKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.database_url())
                .await
                .expect("connect");
            sqlx::query(sql)
                .execute(&mut c)
                .await
                .expect_err("trigger refuses")
        }
    };
    assert!(err.to_string().contains("append-only"), "{err}");
}

store_tests! {
    async fn chain_verifies_then_detects_an_edited_row(kind) {
        let app = TestApp::spawn(kind).await;
        app.login(Actor::Developer).await;
        app.raw_login("dan@example.com", "wrong-password-x", "t").await;
        app.login(Actor::Admin).await;
        let (code, out) = audit_verify(&app);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("audit chain intact"), "{out}");
        let admin = app.login(Actor::Admin).await;
        let (s, verdict) = app.get("/api/v1/audit/verify", &admin.token).await;
        assert_eq!(s, StatusCode::OK, "{verdict}");
        assert_eq!(verdict["intact"], true, "{verdict}");
        assert!(verdict["broken"].is_null());

        direct_update_is_refused(&app).await;
        tamper(&app, "UPDATE audit_events SET details = '{\"source\":\"nobody\"}' WHERE seq = 7").await;
        let (code, out) = audit_verify(&app);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("BROKEN at event 7 "), "{out}");
        assert!(out.contains("6 events before it verified"), "{out}");
        let (_, verdict) = app.get("/api/v1/audit/verify", &admin.token).await;
        assert_eq!(verdict["intact"], false, "{verdict}");
        assert_eq!(verdict["broken"]["seq"], 7, "{verdict}");
        assert_eq!(verdict["events"], 6, "{verdict}");
    }

    async fn chain_detects_a_deleted_row(kind) {
        let app = TestApp::spawn(kind).await;
        app.login(Actor::Developer).await;
        app.login(Actor::Manager).await;
        app.login(Actor::Admin).await;
        tamper(&app, "DELETE FROM audit_events WHERE seq = 12").await;
        let (code, out) = audit_verify(&app);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("BROKEN at event 13 "), "{out}");
        assert!(out.contains("missing"), "{out}");
    }

    async fn audit_log_is_filterable_and_records_origin(kind) {
        let app = TestApp::spawn(kind).await;
        let dan = app.login(Actor::Developer).await;
        let admin = app.login(Actor::Admin).await;
        let (s, log) = app.get(&format!("/api/v1/audit?actor={}&action=auth.login", dan.user_id()), &admin.token).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(log["total"], 1);
        let e = &log["items"][0];
        assert_eq!(e["ip"], "127.0.0.1");
        assert_eq!(e["user_agent"], "quorum-tests");
        assert_eq!(e["target_type"], "user");
        assert_eq!(e["hash"].as_str().expect("hash").len(), 64);

        let (_, all) = app.get("/api/v1/audit?per_page=100", &admin.token).await;
        let total = all["total"].as_i64().expect("total");
        let items = all["items"].as_array().expect("items");
        assert_eq!(items.len() as i64, total);
        assert!(items.windows(2).all(|w| w[0]["seq"].as_i64() > w[1]["seq"].as_i64()), "newest first");
        assert!(items.windows(2).all(|w| w[0]["prev_hash"] == w[1]["hash"]), "each event links to the one before");

        let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (_, none) = app.get(&format!("/api/v1/audit?since={future}"), &admin.token).await;
        assert_eq!(none["total"], 0);
        let (_, before) = app.get(&format!("/api/v1/audit?until={future}"), &admin.token).await;
        assert_eq!(before["total"], total);
        let (s, b) = app.get("/api/v1/audit?since=yesterday", &admin.token).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    }
}
