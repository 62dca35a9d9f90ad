//! Several portal processes over one PostgreSQL store: state that must be global (revoked tokens,
//! sessions, lockout) is in the store, so a second process refuses what the first revoked.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{Actor, JWT_SECRET, StoreKind, TestApp, audit_verify, quorum_bin};

/// A second portal as a separate OS process on a free port, sharing the store and the key.
pub(crate) struct Replica {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_replica(app: &TestApp) -> Replica {
    start_replica_with(app, &[]).await
}

pub(crate) async fn start_replica_with(app: &TestApp, extra_env: &[(&str, &str)]) -> Replica {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let data = tempfile::tempdir().expect("tempdir").keep();
    let child = Command::new(quorum_bin())
        .arg("serve")
        .env_clear()
        .env("QUORUM__SERVER__ADDR", format!("127.0.0.1:{port}"))
        .env("QUORUM__DATA_DIR", &data)
        .env("QUORUM__DATABASE__URL", app.database_url())
        .env("QUORUM__AUTH__JWT_SECRET", JWT_SECRET)
        // Replicas share the master key that seals instance credentials.
        .env(
            "QUORUM__SECRETS__MASTER_KEY",
            std::fs::read_to_string(app.data_dir.path().join("master.key"))
                .expect("master key")
                .trim(),
        )
        .env("QUORUM__LOG__FILTER", "warn")
        // The guest compiled once for every test portal, not once per replica.
        .env(
            "QUORUM__EXECUTOR__SANDBOX_CACHE_DIR",
            crate::harness::shared_sandbox_cache(),
        )
        // All test traffic comes from 127.0.0.1; the per-IP limits are tested elsewhere.
        .env("QUORUM__RATE_LIMIT__AUTH_PER_MINUTE", "60000")
        .env("QUORUM__RATE_LIMIT__AUTH_BURST", "10000")
        .envs(extra_env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn quorum serve");
    let replica = Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if let Ok(r) = app
            .client
            .get(format!("{}/readyz", replica.base))
            .send()
            .await
            && r.status() == StatusCode::OK
        {
            return replica;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("replica did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_process_is_refused_by_another() {
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let replica = start_replica(&app).await;
    let me = |base: &str, token: &str| {
        app.client
            .get(format!("{base}/api/v1/me"))
            .bearer_auth(token.to_owned())
            .send()
    };

    // Issued by process A, accepted by process B.
    let s = app.login(Actor::Developer).await;
    assert_eq!(
        me(&replica.base, &s.token).await.expect("me").status(),
        StatusCode::OK
    );

    // Revoked through A: B refuses it at once.
    let (status, _) = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&s.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        me(&replica.base, &s.token).await.expect("me").status(),
        StatusCode::UNAUTHORIZED
    );

    // And the other way round: sign in through B, sign out everywhere through B, A refuses.
    let r = app
        .client
        .post(format!("{}/api/v1/auth/login", replica.base))
        .json(
            &serde_json::json!({"email": "maya@example.com", "password": crate::harness::PASSWORD}),
        )
        .send()
        .await
        .expect("login on B");
    let s2 = crate::harness::Session::from_login(r).await;
    assert_eq!(app.get("/api/v1/me", &s2.token).await.0, StatusCode::OK);
    let r = app
        .client
        .post(format!("{}/api/v1/auth/logout-all", replica.base))
        .bearer_auth(&s2.token)
        .send()
        .await
        .expect("logout-all");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &s2.token).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_appends_from_two_processes_keep_one_chain() {
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let replica = start_replica(&app).await;
    let admin = app.login(Actor::Admin).await;
    let (_, before) = app.get("/api/v1/audit?per_page=1", &admin.token).await;
    let before = before["total"].as_i64().expect("total");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = app.client.clone();
        let base = if i % 2 == 0 {
            app.base.clone()
        } else {
            replica.base.clone()
        };
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&serde_json::json!({"email": "nobody@example.com", "password": "wrong-password-x"}))
                .send()
                .await
                .expect("login")
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), StatusCode::UNAUTHORIZED);
    }
    let (code, text) = audit_verify(&app);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("{} events verified", before + 20)),
        "{text}"
    );
}

/// An approved write request on a manual PostgreSQL instance whose executions lapse quickly.
async fn approved_write(
    app: &TestApp,
    target: &crate::harness::PgTarget,
) -> (String, crate::harness::Session) {
    let admin = app.login(Actor::Admin).await;
    let body = serde_json::json!({"name": "crashy", "engine": "postgres", "host": target.host, "port": target.port,
        "user": target.user, "secret": target.password, "tls": "disable", "environment": "staging",
        "allowed_pod_ids": [app.pod_id("payments").await], "run_mode": "manual",
        "limits": {"wall_ms": 2000, "db_call_ms": 1000}});
    let (status, instance) = app.post("/api/v1/instances", &admin.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{instance}");
    let dan = app.login(Actor::Developer).await;
    let body = serde_json::json!({"pod_id": app.pod_id("payments").await, "instance_id": instance["id"], "database": target.database,
        "kind": "query", "mode": "write", "content": "UPDATE items SET price = price + 1 WHERE id = 1",
        "justification": "Correct the kettle price after the import"});
    let (status, created) = app.post("/api/v1/requests", &dan.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let maya = app.login(Actor::Manager).await;
    let body =
        serde_json::json!({"decision": "approve", "revision_hash": created["revision_hash"]});
    let (status, _) = app
        .post(&format!("/api/v1/requests/{id}/reviews"), &maya.token, body)
        .await;
    assert_eq!(status, StatusCode::OK);
    (id, dan)
}

async fn kettle_price(target: &crate::harness::PgTarget) -> String {
    let mut c = target.inspect().await;
    sqlx::query_scalar("SELECT price::text FROM items WHERE id = 1")
        .fetch_one(&mut c)
        .await
        .expect("price")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_through_two_processes_produce_exactly_one_execution() {
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let replica = start_replica(&app).await;
    let target = crate::harness::pg_target().await;
    let (id, dan) = approved_write(&app, &target).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let base = if i % 2 == 0 {
            app.base.clone()
        } else {
            replica.base.clone()
        };
        let (client, token, id) = (app.client.clone(), dan.token.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/api/v1/requests/{id}/run"))
                .bearer_auth(token)
                .send()
                .await
                .expect("run")
                .status()
        }));
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
    for _ in 0..200 {
        let (_, r) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
        if r["status"] == "succeeded" {
            assert_eq!(r["executions"].as_array().expect("executions").len(), 1);
            assert_eq!(kettle_price(&target).await, "26.00");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the execution did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_status_update_is_reconciled_without_a_second_run() {
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let target = crate::harness::pg_target().await;
    let (id, dan) = approved_write(&app, &target).await;

    // A replica that dies right after the target's COMMIT, before recording the outcome.
    let mut doomed = start_replica_with(&app, &[("QUORUM_FAILPOINT", "after_commit")]).await;
    let r = app
        .client
        .post(format!("{}/api/v1/requests/{id}/run", doomed.base))
        .bearer_auth(&dan.token)
        .send()
        .await
        .expect("run");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let execution: serde_json::Value = r.json().await.expect("json");
    let execution = execution["id"].as_str().expect("execution id").to_owned();
    let mut exited = None;
    for _ in 0..200 {
        if let Some(status) = doomed.child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exited = exited.expect("the failpoint aborted the replica");
    assert!(!exited.success(), "{exited}");
    assert_eq!(
        kettle_price(&target).await,
        "26.00",
        "the work committed on the target"
    );
    let (_, e) = app
        .get(&format!("/api/v1/executions/{execution}"), &dan.token)
        .await;
    assert_eq!(
        e["status"], "running",
        "the outcome was never recorded: {e}"
    );

    // After the claim lapses (wall 2 s + grace 5 s), a restarted portal settles it from the
    // target's own record of the transaction, and does not run it again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let _restarted = start_replica(&app).await;
    let mut settled = None;
    for _ in 0..100 {
        let (_, e) = app
            .get(&format!("/api/v1/executions/{execution}"), &dan.token)
            .await;
        if e["status"] != "running" {
            settled = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = settled.expect("reconciled");
    assert_eq!(e["status"], "succeeded", "{e}");
    let (_, r) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["executions"].as_array().expect("executions").len(), 1);
    assert_eq!(kettle_price(&target).await, "26.00", "no second run");
    let admin = app.login(Actor::Admin).await;
    let (_, log) = app
        .get("/api/v1/audit?action=execution.reconciled", &admin.token)
        .await;
    assert_eq!(log["total"], 1);
}
