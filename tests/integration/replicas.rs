//! Several portal processes over one PostgreSQL store: state that must be global (revoked tokens,
//! sessions, lockout) is in the store, so a second process refuses what the first revoked.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{Actor, JWT_SECRET, StoreKind, TestApp, audit_verify, quorum_bin};

/// A second portal as a separate OS process on a free port, sharing the store and the key.
struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_replica(app: &TestApp) -> Replica {
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
        .env("QUORUM__LOG__FILTER", "warn")
        // All test traffic comes from 127.0.0.1; the per-IP limits are tested elsewhere.
        .env("QUORUM__RATE_LIMIT__AUTH_PER_MINUTE", "60000")
        .env("QUORUM__RATE_LIMIT__AUTH_BURST", "10000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
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
