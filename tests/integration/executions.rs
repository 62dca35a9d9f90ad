//! Executing approved SQL requests: once, inside the transaction the portal controls, with
//! results stored, paged and exported; read requests write nothing; failed writes leave the
//! target unchanged; concurrent runs produce exactly one execution.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    Actor, Session, StoreKind, TestApp, finished, pg_instance, pg_target, prices,
};
use crate::store_tests;

/// Files a request, has it approved by the POD's manager, and returns the approved detail.
async fn approved(
    app: &TestApp,
    dan: &Session,
    instance: &str,
    database: &str,
    mode: &str,
    content: &str,
) -> Value {
    let body = json!({"pod_id": app.pod_id("payments").await, "instance_id": instance, "database": database, "kind": "query",
        "mode": mode, "content": content, "justification": "Fixing the data behind ticket 4711"});
    let (status, created) = app.post("/api/v1/requests", &dan.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let maya = app.login(Actor::Manager).await;
    let id = created["id"].as_str().expect("id");
    let (status, r) = app
        .post(
            &format!("/api/v1/requests/{id}/reviews"),
            &maya.token,
            json!({"decision": "approve", "revision_hash": created["revision_hash"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    r
}

/// The single execution of an approved request on an `on_approval` instance.
async fn its_execution(app: &TestApp, token: &str, request: &Value) -> Value {
    let id = request["id"].as_str().expect("id");
    for _ in 0..200 {
        let (_, r) = app.get(&format!("/api/v1/requests/{id}"), token).await;
        if let Some(e) = r["executions"].as_array().and_then(|a| a.first()) {
            return finished(app, token, e["id"].as_str().expect("execution id")).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("request {id} did not start");
}

store_tests! {
    async fn approved_sqlite_query_runs_once_with_rows_and_csv(kind) {
        let app = TestApp::spawn(kind).await;
        let dan = app.login(Actor::Developer).await;
        let shop = app.shop_id().await;
        let sql = "SELECT id, email, name FROM customers WHERE id <= 3 ORDER BY id;\nSELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY status";
        let r = approved(&app, &dan, &shop, "main", "read", sql).await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["error"], Value::Null);
        assert_eq!(e["revision_hash"], r["revision_hash"]);
        let statements = e["statements"].as_array().expect("statements");
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0]["rows_returned"], 3);
        assert_eq!(statements[1]["class"], "read");
        let id = e["id"].as_str().expect("id");

        let (_, rows) = app.get(&format!("/api/v1/executions/{id}/rows?statement=0&limit=2"), &dan.token).await;
        assert_eq!(rows["columns"][1]["name"], "email");
        assert_eq!(rows["rows"], json!([[1, "customer1@shop.example", rows["rows"][0][2]], [2, "customer2@shop.example", rows["rows"][1][2]]]));
        assert_eq!((rows["total"].as_u64(), rows["truncated"].as_bool()), (Some(3), Some(false)));
        let (_, last) = app.get(&format!("/api/v1/executions/{id}/rows"), &dan.token).await;
        assert_eq!(last["statement"], 1, "defaults to the last result");

        let csv = app.client.get(app.url(&format!("/api/v1/executions/{id}/result.csv?statement=0"))).bearer_auth(&dan.token).send().await.expect("csv");
        assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
        assert!(csv.headers()["content-disposition"].to_str().expect("ascii").contains(".csv"));
        let text = csv.text().await.expect("text");
        assert!(text.starts_with("id,email,name\r\n1,customer1@shop.example,"), "{text}");
        assert_eq!(text.matches("\r\n").count(), 4);
        let json_rows: Value = app.client.get(app.url(&format!("/api/v1/executions/{id}/result.json"))).bearer_auth(&dan.token)
            .send().await.expect("json").json().await.expect("json");
        assert!(json_rows[0]["status"].is_string() && json_rows[0]["n"].is_number(), "{json_rows}");

        // The request ran and is final: no second run, no edit.
        let (_, done) = app.get(&format!("/api/v1/requests/{}", r["id"].as_str().expect("id")), &dan.token).await;
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["executions"].as_array().expect("executions").len(), 1);
        let (status, body) = app.call(Method::POST, &format!("/api/v1/requests/{}/run", r["id"].as_str().expect("id")), Some(&dan.token), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_runnable")));
        // Other PODs cannot read the results.
        let gina = app.login(Actor::OtherPodManager).await;
        assert_eq!(app.get(&format!("/api/v1/executions/{id}"), &gina.token).await.0, StatusCode::NOT_FOUND);
        assert_eq!(app.get(&format!("/api/v1/executions/{id}/rows"), &gina.token).await.0, StatusCode::NOT_FOUND);
    }

    async fn postgres_read_requests_write_nothing(kind) {
        let app = TestApp::spawn(kind).await;
        let target = pg_target().await;
        let instance = pg_instance(&app, &target, "on_approval").await;
        let dan = app.login(Actor::Developer).await;
        let before = prices(&target).await;
        for sql in [
            "UPDATE items SET price = 0",
            "SET TRANSACTION READ WRITE; UPDATE items SET price = 0",
            "COMMIT; UPDATE items SET price = 0",
            "SELECT 1; DELETE FROM items",
            "WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone",
        ] {
            let r = approved(&app, &dan, &instance, &target.database, "read", sql).await;
            let e = its_execution(&app, &dan.token, &r).await;
            assert_eq!(e["status"], "failed", "{sql}: {e}");
            assert_eq!(e["error"]["kind"], "read_only_violation", "{sql}: {e}");
        }
        // A write the preflight cannot see (inside a function call) hits the read-only transaction.
        let r = approved(&app, &dan, &instance, &target.database, "read", "SELECT set_config('transaction_read_only', 'off', true)").await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!(e["status"], "failed", "{e}");
        assert_eq!(prices(&target).await, before, "nothing was written");

        // A plain read works and maps types: NUMERIC as an exact string.
        let r = approved(&app, &dan, &instance, &target.database, "read", "SELECT id, name, price FROM items ORDER BY id").await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        let (_, rows) = app.get(&format!("/api/v1/executions/{}/rows", e["id"].as_str().expect("id")), &dan.token).await;
        assert_eq!(rows["rows"][1], json!([2, "grinder", "99.9"]));
        assert_eq!(rows["columns"][2]["type"], "NUMERIC");
        assert!(e["statements"][0]["duration_ms"].is_number());
    }

    async fn postgres_writes_are_all_or_nothing(kind) {
        let app = TestApp::spawn(kind).await;
        let target = pg_target().await;
        let instance = pg_instance(&app, &target, "on_approval").await;
        let dan = app.login(Actor::Developer).await;
        let before = prices(&target).await;
        let r = approved(&app, &dan, &instance, &target.database, "write", "UPDATE items SET price = price + 1;\nSELECT 1 / 0").await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!(e["status"], "failed", "{e}");
        assert_eq!(e["error"]["kind"], "db_error");
        assert_eq!(e["error"]["sqlstate"], "22012");
        assert_eq!(e["error"]["statement"], 1);
        assert_eq!(prices(&target).await, before, "the first statement was rolled back");

        let r = approved(&app, &dan, &instance, &target.database, "write", "BEGIN; UPDATE items SET price = 0; COMMIT").await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!(e["error"]["kind"], "forbidden_statement", "{e}");
        // Privileges the role lacks are the database's to refuse.
        let r = approved(&app, &dan, &instance, &target.database, "write", "CREATE TABLE loot (x int)").await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!((e["error"]["kind"].as_str(), e["error"]["sqlstate"].as_str()), (Some("db_error"), Some("42501")), "{e}");
        assert_eq!(prices(&target).await, before);

        let r = approved(&app, &dan, &instance, &target.database, "write", "UPDATE items SET price = 5.25 WHERE id = 3").await;
        let e = its_execution(&app, &dan.token, &r).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(e["statements"][0]["rows_affected"], 1);
        assert_eq!(prices(&target).await, ["25.00", "99.90", "5.25"]);
    }

    async fn concurrent_runs_produce_exactly_one_execution(kind) {
        let app = TestApp::spawn(kind).await;
        let target = pg_target().await;
        let instance = pg_instance(&app, &target, "manual").await;
        let dan = app.login(Actor::Developer).await;
        let r = approved(&app, &dan, &instance, &target.database, "write", "UPDATE items SET price = price + 1 WHERE id = 1").await;
        assert_eq!(r["status"], "approved", "manual instances wait for the author");
        let id = r["id"].as_str().expect("id").to_owned();
        let maya = app.login(Actor::Manager).await;
        let (status, body) = app.call(Method::POST, &format!("/api/v1/requests/{id}/run"), Some(&maya.token), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_author")));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (client, url, token) = (app.client.clone(), app.url(&format!("/api/v1/requests/{id}/run")), dan.token.clone());
            tasks.push(tokio::spawn(async move { client.post(url).bearer_auth(token).send().await.expect("send").status() }));
        }
        let mut started = 0;
        for t in tasks {
            match t.await.expect("join") {
                StatusCode::ACCEPTED => started += 1,
                // Already claimed, or no free slot while the winner runs.
                StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(started, 1);
        let (_, detail) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
        let executions = detail["executions"].as_array().expect("executions");
        assert_eq!(executions.len(), 1);
        let e = finished(&app, &dan.token, executions[0]["id"].as_str().expect("id")).await;
        assert_eq!(e["status"], "succeeded", "{e}");
        assert_eq!(prices(&target).await[0], "26.00", "ran exactly once");
    }
}

#[tokio::test]
async fn a_pending_request_does_not_run() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let dan = app.login(Actor::Developer).await;
    let created = app.file_request(&dan, "SELECT 1").await;
    let id = created["id"].as_str().expect("id");
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/requests/{id}/run"),
            Some(&dan.token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_runnable"))
    );
    let (status, _) = app
        .get(
            &format!("/api/v1/executions/{}", uuid::Uuid::new_v4()),
            &dan.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn explain_shows_plans_and_runs_nothing() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let dan = app.login(Actor::Developer).await;
    let shop = app.shop_id().await;
    let explain = |instance: String, database: String, content: &'static str| json!({"instance_id": instance, "database": database, "content": content});
    let (status, body) = app
        .post(
            "/api/v1/requests/explain",
            &dan.token,
            explain(
                shop.clone(),
                "main".into(),
                "SELECT * FROM orders WHERE customer_id = 7; SELECT COUNT(*) FROM customers",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plans"].as_array().expect("plans").len(), 2);
    assert!(
        body["plans"][0]["plan"]
            .as_str()
            .expect("plan")
            .contains("orders_customer"),
        "{body}"
    );

    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "manual").await;
    let before = prices(&target).await;
    let (status, body) = app
        .post(
            "/api/v1/requests/explain",
            &dan.token,
            explain(
                instance.clone(),
                target.database.clone(),
                "UPDATE items SET price = 0",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["plans"][0]["plan"]
            .as_str()
            .expect("plan")
            .contains("Update on items"),
        "{body}"
    );
    assert_eq!(prices(&target).await, before, "EXPLAIN ran nothing");
    for (content, code) in [
        ("ANALYZE DELETE FROM items", "explain_failed"),
        ("EXPLAIN ANALYZE DELETE FROM items", "explain_failed"),
        ("COMMIT", "explain_failed"),
        ("SELEC 1", "explain_failed"),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/requests/explain",
                &dan.token,
                explain(instance.clone(), target.database.clone(), content),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{content}: {body}"
        );
    }
    assert_eq!(prices(&target).await, before);
    let (_, body) = app
        .post(
            "/api/v1/requests/explain",
            &dan.token,
            // Accepted by the classifier, refused by the database's parser: its SQLSTATE comes back.
            explain(
                instance.clone(),
                target.database.clone(),
                "SELECT * FROM WHERE",
            ),
        )
        .await;
    assert_eq!(body["error"]["details"]["sqlstate"], "42601", "{body}");
    // Instances of other PODs are not the caller's to explain against.
    let gus = app
        .login_as("gus@example.com", crate::harness::PASSWORD)
        .await;
    let (status, body) = app
        .post(
            "/api/v1/requests/explain",
            &gus.token,
            explain(instance, target.database.clone(), "SELECT 1"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_instance"))
    );
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_on_the_target() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let target = pg_target().await;
    let admin = app.login(Actor::Admin).await;
    let instance = pg_instance(&app, &target, "on_approval").await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{instance}"),
            &admin.token,
            json!({"limits": {"db_call_ms": 1000}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dan = app.login(Actor::Developer).await;
    let started = std::time::Instant::now();
    let r = approved(
        &app,
        &dan,
        &instance,
        &target.database,
        "read",
        "SELECT pg_sleep(30)",
    )
    .await;
    // While it runs, the target shows the execution's own connection, named after the request.
    let app_name = format!("quorum:{}", r["id"].as_str().expect("id"));
    let mut c = target.inspect().await;
    let mut seen = false;
    for _ in 0..40 {
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_sleep%'",
        )
        .bind(&app_name)
        .fetch_one(&mut c)
        .await
        .expect("activity");
        if active == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "no backend named {app_name} ran the statement");
    let e = its_execution(&app, &dan.token, &r).await;
    assert_eq!(e["status"], "timed_out", "{e}");
    assert_eq!(e["error"]["kind"], "timeout");
    assert_eq!(e["error"]["sqlstate"], "57014");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // And no backend of it is left afterwards.
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&app_name)
            .fetch_one(&mut c)
            .await
            .expect("activity");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn results_are_capped_and_unreachable_targets_are_classified() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let admin = app.login(Actor::Admin).await;
    let shop = app.shop_id().await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{shop}"),
            &admin.token,
            json!({"limits": {"max_rows": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let dan = app.login(Actor::Developer).await;
    let r = approved(
        &app,
        &dan,
        &shop,
        "main",
        "read",
        "SELECT id FROM orders ORDER BY id",
    )
    .await;
    let e = its_execution(&app, &dan.token, &r).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(
        (
            e["statements"][0]["rows_returned"].as_u64(),
            e["statements"][0]["truncated"].as_bool()
        ),
        (Some(5), Some(true))
    );
    let (_, rows) = app
        .get(
            &format!("/api/v1/executions/{}/rows", e["id"].as_str().expect("id")),
            &dan.token,
        )
        .await;
    assert_eq!(
        (rows["total"].as_u64(), rows["truncated"].as_bool()),
        (Some(5), Some(true))
    );
    assert_eq!(rows["rows"][4], json!([5]));

    // The byte cap: 2 KiB of stored values, whatever the row count.
    let limits = json!({"limits": {"max_rows": 10000, "max_result_bytes": 2048}});
    let (status, _) = app
        .patch(&format!("/api/v1/instances/{shop}"), &admin.token, limits)
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = approved(
        &app,
        &dan,
        &shop,
        "main",
        "read",
        "SELECT id, email, name FROM customers ORDER BY id",
    )
    .await;
    let e = its_execution(&app, &dan.token, &r).await;
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["statements"][0]["truncated"], true);
    let stored = e["statements"][0]["rows_returned"].as_u64().expect("rows");
    assert!(
        (10..100).contains(&stored),
        "{stored} rows of ~50 bytes each fit in 2 KiB"
    );
    let (_, rows) = app
        .get(
            &format!(
                "/api/v1/executions/{}/rows?limit=1000",
                e["id"].as_str().expect("id")
            ),
            &dan.token,
        )
        .await;
    assert!(
        rows["rows"].to_string().len() <= 2048 + 2 * stored as usize,
        "{}",
        rows["rows"].to_string().len()
    );

    // An instance nobody listens for: a clear error, never a 500.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let body = json!({"name": "gone", "engine": "postgres", "host": "127.0.0.1", "port": closed, "user": "nobody",
        "tls": "disable", "environment": "staging", "allowed_pod_ids": [app.pod_id("payments").await]});
    let (status, gone) = app.post("/api/v1/instances", &admin.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{gone}");
    let gone = gone["id"].as_str().expect("id").to_owned();
    // Probing and syncing report it as unreachable (502 for the sync), with the reason.
    let (status, _) = app
        .post(
            &format!("/api/v1/instances/{gone}/databases/sync"),
            &admin.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (_, probe) = app
        .post(
            &format!("/api/v1/instances/{gone}/test"),
            &admin.token,
            json!({}),
        )
        .await;
    assert_eq!(probe["ok"], false);
    assert!(
        probe["error"]
            .as_str()
            .expect("error")
            .contains("cannot reach"),
        "{probe}"
    );
}

/// Files and approves a request on `instance` as `author`, and returns its id.
async fn approved_as(
    app: &TestApp,
    author: &Session,
    reviewer: &Session,
    instance: &str,
    database: &str,
    content: &str,
) -> String {
    let body = json!({"pod_id": app.pod_id("payments").await, "instance_id": instance, "database": database, "kind": "query",
        "mode": "read", "content": content, "justification": "Checking load during the incident"});
    let (status, created) = app.post("/api/v1/requests", &author.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let body = json!({"decision": "approve", "revision_hash": created["revision_hash"]});
    let (status, r) = app
        .post(
            &format!("/api/v1/requests/{id}/reviews"),
            &reviewer.token,
            body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    id
}

#[tokio::test]
async fn concurrent_executions_are_capped_per_author_and_per_instance() {
    let app = TestApp::spawn_with(
        StoreKind::Sqlite,
        "[executor]\nmax_per_instance = 2\nmax_per_author = 1",
    )
    .await;
    let target = pg_target().await;
    let instance = pg_instance(&app, &target, "manual").await;
    let dan = app.login(Actor::Developer).await;
    let dee = app
        .login_as("dee@example.com", crate::harness::PASSWORD)
        .await;
    let maya = app.login(Actor::Manager).await;
    let admin = app.login(Actor::Admin).await;
    let slow = "SELECT pg_sleep(2)";
    let (d1, d2) = (
        approved_as(&app, &dan, &maya, &instance, &target.database, slow).await,
        approved_as(&app, &dan, &maya, &instance, &target.database, "SELECT 1").await,
    );
    let e1 = approved_as(&app, &dee, &maya, &instance, &target.database, slow).await;
    let m1 = approved_as(&app, &maya, &admin, &instance, &target.database, "SELECT 2").await;
    let run = |id: String, token: String| {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/api/v1/requests/{id}/run")),
        );
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("run")
        }
    };
    assert_eq!(
        run(d1.clone(), dan.token.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    // One per author: Dan's second waits.
    let r = run(d2.clone(), dan.token.clone()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_busy");
    // Two per instance: Dee's fills the instance, Maya's waits.
    assert_eq!(
        run(e1, dee.token.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        run(m1.clone(), maya.token.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A refused run changes nothing: still approved, and it runs once a slot is free.
    let (_, r) = app.get(&format!("/api/v1/requests/{d2}"), &dan.token).await;
    assert_eq!(r["status"], "approved");
    for _ in 0..200 {
        let (_, r) = app.get(&format!("/api/v1/requests/{d1}"), &dan.token).await;
        if r["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        run(d2, dan.token.clone()).await.status(),
        StatusCode::ACCEPTED
    );
}
