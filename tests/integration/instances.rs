//! Instances: admin registration with sealed secrets, probing, database sync, visibility by POD,
//! the demo SQLite instance, secrets at rest and key rotation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::harness::{Actor, PgTarget, StoreKind, TestApp, pg_target};
use crate::store_tests;

fn pg_body(t: &PgTarget, name: &str, pods: &[String]) -> Value {
    json!({
        "name": name, "engine": "postgres", "host": t.host, "port": t.port, "user": t.user,
        "secret": t.password, "tls": "disable", "environment": "production",
        "allowed_pod_ids": pods, "required_approvals": 2, "run_mode": "manual",
        "limits": {"max_rows": 500, "db_call_ms": 5000}
    })
}

/// Everything the store holds, as bytes, for "is the canary anywhere" checks.
async fn store_dump(app: &TestApp) -> Vec<u8> {
    match app.kind {
        StoreKind::Sqlite => {
            let db = app.data_dir.path().join("quorum.db");
            let mut bytes = std::fs::read(&db).expect("db file");
            if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
                bytes.extend(wal);
            }
            bytes
        }
        StoreKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(&app.database_url())
                .await
                .expect("connect");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            )
            .fetch_all(&mut c)
            .await
            .expect("tables");
            let mut out = Vec::new();
            for t in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(x)::text FROM {t} x"))
                        .fetch_all(&mut c)
                        .await
                        .expect("rows");
                for r in rows {
                    out.extend(r.into_bytes());
                }
            }
            out
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

store_tests! {
    async fn postgres_instance_lifecycle_with_a_sealed_secret(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let growth = app.pod_id("growth").await;
        let target = pg_target().await;
        let (status, created) = app.post("/api/v1/instances", &admin.token, pg_body(&target, "orders-prod", std::slice::from_ref(&growth))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert!(!created.to_string().contains(&target.password), "the secret is never returned");
        assert_eq!(created["connection"]["has_secret"], true);
        assert_eq!(created["required_approvals"], 2);
        assert_eq!(created["effective_limits"]["max_rows"], 500);
        assert_eq!(created["effective_limits"]["wall_ms"], 30000);
        let id = created["id"].as_str().expect("id").to_owned();

        // Created and synced at once: the least-privilege role sees its own database.
        let (_, dbs) = app.get(&format!("/api/v1/instances/{id}/databases"), &admin.token).await;
        let names: Vec<&str> = dbs["databases"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
        assert!(names.contains(&target.database.as_str()), "{dbs}");
        assert!(dbs["synced_at"].is_string());

        let (status, probe) = app.post(&format!("/api/v1/instances/{id}/test"), &admin.token, json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(probe["ok"], true, "{probe}");
        assert!(probe["server_version"].as_str().expect("version").starts_with("PostgreSQL "));

        // A wrong secret fails the probe with the server's reason and the sync with 502.
        let (status, _) = app.patch(&format!("/api/v1/instances/{id}"), &admin.token, json!({"secret": "not-the-password"})).await;
        assert_eq!(status, StatusCode::OK);
        let (_, probe) = app.post(&format!("/api/v1/instances/{id}/test"), &admin.token, json!({})).await;
        assert_eq!(probe["ok"], false);
        assert!(probe["error"].as_str().expect("error").contains("password authentication failed"), "{probe}");
        let (status, body) = app.post(&format!("/api/v1/instances/{id}/databases/sync"), &admin.token, json!({})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("target_unavailable")));

        // Visibility: growth's manager sees it without connection details; payments does not.
        let gina = app.login(Actor::OtherPodManager).await;
        let (status, seen) = app.get(&format!("/api/v1/instances/{id}"), &gina.token).await;
        assert_eq!(status, StatusCode::OK);
        assert!(seen.get("connection").is_none(), "{seen}");
        let dan = app.login(Actor::Developer).await;
        assert_eq!(app.get(&format!("/api/v1/instances/{id}"), &dan.token).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.get(&format!("/api/v1/instances/{id}/databases"), &dan.token).await.0, StatusCode::NOT_FOUND);
        let (_, list) = app.get("/api/v1/instances", &dan.token).await;
        assert_eq!(list["total"], 1, "only demo-shop: {list}");
        assert_eq!(list["items"][0]["name"], "demo-shop");

        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/instances/{id}"), Some(&admin.token), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&format!("/api/v1/instances/{id}"), &admin.token).await.0, StatusCode::NOT_FOUND);
        let (_, log) = app.get(&format!("/api/v1/audit?target={id}"), &admin.token).await;
        let actions: Vec<&str> = log["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
        for a in ["instance.created", "instance.updated", "instance.deleted"] {
            assert!(actions.contains(&a), "{actions:?}");
        }
    }

    async fn secrets_are_absent_from_the_store_and_bound_to_their_row(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let target = pg_target().await;
        let (_, a) = app.post("/api/v1/instances", &admin.token, pg_body(&target, "alpha", &[])).await;
        let mut other = pg_body(&target, "beta", &[]);
        other["secret"] = json!("a-different-password");
        let (_, b) = app.post("/api/v1/instances", &admin.token, other).await;
        let (a, b) = (a["id"].as_str().expect("a").to_owned(), b["id"].as_str().expect("b").to_owned());

        let dump = store_dump(&app).await;
        assert!(!dump.is_empty());
        assert!(!contains(&dump, &target.password), "the plaintext secret is in the store");

        // Copy alpha's ciphertext onto beta's row: it must not decrypt there.
        let sql = "UPDATE instances SET secret_ciphertext = (SELECT secret_ciphertext FROM instances WHERE id = $1), \
                   secret_key_id = (SELECT secret_key_id FROM instances WHERE id = $1) WHERE id = $2";
        let (ua, ub) = (uuid::Uuid::parse_str(&a).expect("uuid"), uuid::Uuid::parse_str(&b).expect("uuid"));
        match kind {
            StoreKind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&app.database_url()).await.expect("connect");
                sqlx::query(sql).bind(ua).bind(ub).execute(&mut c).await.expect("copy");
            }
            StoreKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&app.database_url()).await.expect("connect");
                sqlx::query(sql).bind(ua).bind(ub).execute(&mut c).await.expect("copy");
            }
        }
        let (status, body) = app.post(&format!("/api/v1/instances/{b}/test"), &admin.token, json!({})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("credential_unavailable")), "{body}");
        assert!(body["error"]["message"].as_str().expect("message").contains("copied from another row"), "{body}");
        // The original row still works.
        let (_, probe) = app.post(&format!("/api/v1/instances/{a}/test"), &admin.token, json!({})).await;
        assert_eq!(probe["ok"], true, "{probe}");
    }

    async fn instance_settings_are_validated(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let base = json!({"name": "x", "engine": "postgres", "host": "db.internal", "user": "reader", "environment": "staging"});
        let with = |patch: Value| {
            let mut b = base.clone();
            for (k, v) in patch.as_object().expect("object") {
                if v.is_null() {
                    b.as_object_mut().expect("object").remove(k);
                } else {
                    b[k] = v.clone();
                }
            }
            b
        };
        let cases = [
            (with(json!({"host": null})), 422, "invalid_instance"),
            (with(json!({"host": "db internal; rm -rf"})), 422, "invalid_instance"),
            (with(json!({"path": "x.db"})), 422, "invalid_instance"),
            (with(json!({"environment": "Production!"})), 422, "invalid_instance"),
            (with(json!({"required_approvals": 4})), 422, "invalid_instance"),
            (with(json!({"limits": {"max_rows": 0}})), 422, "invalid_instance"),
            (with(json!({"limits": {"wall_ms": 5000, "db_call_ms": 10000}})), 422, "invalid_instance"),
            (with(json!({"limits": {"max_rowz": 5}})), 422, "unknown_field"),
            (with(json!({"allowed_pod_ids": [uuid::Uuid::new_v4()]})), 422, "unknown_pod"),
            (with(json!({"engine": "oracle"})), 422, "invalid_body"),
            (with(json!({"engine": "sqlite", "host": null, "user": null, "path": "../quorum.db"})), 422, "invalid_instance"),
            (with(json!({"engine": "sqlite", "host": null, "user": null, "path": "/etc/passwd"})), 422, "invalid_instance"),
            (with(json!({"engine": "sqlite", "host": null, "user": null, "path": "missing.db"})), 422, "invalid_instance"),
            (with(json!({"engine": "mongodb", "host": null, "user": null, "uri": "mongodb://u:pw@db1/"})), 422, "invalid_instance"),
            (with(json!({"name": "demo-shop"})), 409, "instance_name_taken"),
            // The portal's own store and keys are never a target.
            (with(json!({"engine": "sqlite", "host": null, "user": null, "path": "quorum.db"})), 422, "invalid_instance"),
            (with(json!({"engine": "sqlite", "host": null, "user": null, "path": "master.key"})), 422, "invalid_instance"),
            (with(json!({"secret": "pw\u{0007}"})), 422, "invalid_instance"),
        ];
        for (body, status, code) in cases {
            let (s, b) = app.post("/api/v1/instances", &admin.token, body.clone()).await;
            assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (status, Some(code)), "{body} → {b}");
        }
        // MongoDB instances register; an unreachable one cannot be synced, and says why.
        let (s, m) = app.post("/api/v1/instances", &admin.token, with(json!({
            "name": "events", "engine": "mongodb", "host": null, "user": null, "uri": "mongodb://reader@db1:27017/?replicaSet=rs0"
        }))).await;
        assert_eq!(s, StatusCode::CREATED, "{m}");
        let id = m["id"].as_str().expect("id");
        let (s, b) = app.post(&format!("/api/v1/instances/{id}/databases/sync"), &admin.token, json!({})).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("target_unavailable")), "{b}");
    }

    async fn the_demo_shop_instance_is_ready_to_use(kind) {
        let app = TestApp::spawn(kind).await;
        let dan = app.login(Actor::Developer).await;
        let (_, list) = app.get("/api/v1/instances", &dan.token).await;
        let shop = &list["items"][0];
        assert_eq!(shop["name"], "demo-shop");
        assert_eq!(shop["engine"], "sqlite");
        assert_eq!(shop["environment"], "demo");
        let id = shop["id"].as_str().expect("id");
        let (_, dbs) = app.get(&format!("/api/v1/instances/{id}/databases"), &dan.token).await;
        assert_eq!(dbs["databases"], json!(["main"]));
        let admin = app.login(Actor::Admin).await;
        let (_, probe) = app.post(&format!("/api/v1/instances/{id}/test"), &admin.token, json!({})).await;
        assert_eq!(probe["ok"], true, "{probe}");
        assert!(probe["server_version"].as_str().expect("v").starts_with("SQLite 3."));
        let file = app.data_dir.path().join("demo-shop.db");
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.expect("open shop");
        let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&mut c).await.expect("count");
        let customers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers").fetch_one(&mut c).await.expect("count");
        assert_eq!((orders, customers), (4000, 1000));
    }

    async fn key_rotation_re_encrypts_every_secret(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let target = pg_target().await;
        let (_, created) = app.post("/api/v1/instances", &admin.token, pg_body(&target, "rotating", &[])).await;
        let id = created["id"].as_str().expect("id").to_owned();
        let key_file = app.data_dir.path().join("master.key");
        let old_key = std::fs::read_to_string(&key_file).expect("generated master key");
        let url = app.database_url();
        let kind_ = app.kind;
        let data_dir = app.stop().await;

        let out = std::process::Command::new(crate::harness::quorum_bin())
            .args(["keys", "rotate"])
            .env_clear()
            .env("QUORUM__DATA_DIR", data_dir.path())
            .env("QUORUM__DATABASE__URL", &url)
            .output()
            .expect("rotate");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("re-encrypted 1 secret(s)"), "{text}");
        let new_key = std::fs::read_to_string(data_dir.path().join("master.key")).expect("key");
        assert_ne!(old_key, new_key);
        assert!(!data_dir.path().join("master.key.new").exists());

        let app = TestApp::spawn_on(kind_, data_dir, &url, "").await;
        let admin = app.login(Actor::Admin).await;
        let (_, probe) = app.post(&format!("/api/v1/instances/{id}/test"), &admin.token, json!({})).await;
        assert_eq!(probe["ok"], true, "{probe}");
        let (_, log) = app.get("/api/v1/audit?action=keys.rotated", &admin.token).await;
        assert_eq!(log["total"], 1);
    }
}
