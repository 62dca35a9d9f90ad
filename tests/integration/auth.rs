//! Sign-in, refresh rotation, reuse detection, sign-out, sessions, password change, lockout.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Actor, PASSWORD, Session, StoreKind, TestApp, refresh_cookie};
use crate::store_tests;

async fn refresh(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/auth/refresh"))
        .header("cookie", format!("quorum_refresh={cookie}"))
        .header("user-agent", "quorum-tests")
        .send()
        .await
        .expect("refresh")
}

store_tests! {
    async fn login_returns_token_user_and_hardened_cookie(kind) {
        let app = TestApp::spawn(kind).await;
        let r = app.raw_login("Dan@Example.com", PASSWORD, "tests/1.0").await;
        assert_eq!(r.status(), StatusCode::OK);
        let set_cookie = r.headers().get("set-cookie").expect("cookie").to_str().expect("ascii").to_owned();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/v1/auth"] {
            assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
        }
        let s = Session::from_login(r).await;
        assert_eq!(s.body["token_type"], "Bearer");
        let ttl = s.body["expires_in"].as_i64().expect("expires_in");
        assert!((600..=900).contains(&ttl), "{ttl}");
        assert_eq!(s.body["user"]["email"], "dan@example.com");
        assert_eq!(s.body["user"]["role"], "developer");
        assert!(s.body["user"].get("password_hash").is_none());
        let (status, me) = app.get("/api/v1/me", &s.token).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["home_pod"]["name"], "payments");
        assert_eq!(me["managed_pods"], json!([]));
    }

    async fn unknown_user_and_wrong_password_look_the_same(kind) {
        let app = TestApp::spawn(kind).await;
        let a = app.raw_login("nobody@example.com", "whatever-password", "t").await;
        let b = app.raw_login("dan@example.com", "wrong-password-1", "t").await;
        assert_eq!(a.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(b.status(), StatusCode::UNAUTHORIZED);
        let a: serde_json::Value = a.json().await.expect("json");
        let b: serde_json::Value = b.json().await.expect("json");
        assert_eq!(a["error"]["code"], "invalid_credentials");
        assert_eq!(a["error"]["code"], b["error"]["code"]);
        assert_eq!(a["error"]["message"], b["error"]["message"]);
        // Both attempts are in the audit log.
        let admin = app.login(Actor::Admin).await;
        let (_, log) = app.get("/api/v1/audit?action=auth.login_failed", &admin.token).await;
        assert_eq!(log["total"], 2, "{log}");
    }

    async fn refresh_rotates_and_reuse_revokes_the_family(kind) {
        let app = TestApp::spawn(kind).await;
        let s = app.login(Actor::Developer).await;
        let first = s.refresh.clone().expect("refresh cookie");

        let r = refresh(&app, &first).await;
        assert_eq!(r.status(), StatusCode::OK);
        let second = refresh_cookie(&r).expect("rotated cookie");
        assert_ne!(first, second);
        let rotated = Session::from_login(r).await;
        assert_eq!(app.get("/api/v1/me", &rotated.token).await.0, StatusCode::OK);

        // The old token again: the whole family dies, including the newest token and the
        // access tokens issued to the session.
        let r = refresh(&app, &first).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "refresh_reused");
        assert_eq!(refresh(&app, &second).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/api/v1/me", &rotated.token).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/api/v1/me", &s.token).await.0, StatusCode::UNAUTHORIZED);

        let admin = app.login(Actor::Admin).await;
        let (_, log) = app.get("/api/v1/audit?action=auth.refresh_reuse", &admin.token).await;
        assert_eq!(log["total"], 1, "{log}");
        assert_eq!(log["items"][0]["actor_id"], s.user_id());
    }

    async fn refresh_without_or_with_garbage_cookie_is_refused(kind) {
        let app = TestApp::spawn(kind).await;
        let r = app.client.post(app.url("/api/v1/auth/refresh")).send().await.expect("send");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "refresh_missing");
        for junk in ["x", "qrt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "' OR 1=1 --"] {
            let r = refresh(&app, junk).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{junk}");
        }
    }

    async fn logout_revokes_session_and_access_token(kind) {
        let app = TestApp::spawn(kind).await;
        let s = app.login(Actor::Developer).await;
        let other = app.login(Actor::Developer).await;
        let (status, _) = app.call(Method::POST, "/api/v1/auth/logout", Some(&s.token), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/me", &s.token).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(refresh(&app, s.refresh.as_deref().expect("cookie")).await.status(), StatusCode::UNAUTHORIZED);
        // Another device of the same user is untouched.
        assert_eq!(app.get("/api/v1/me", &other.token).await.0, StatusCode::OK);

        let (status, _) = app.call(Method::POST, "/api/v1/auth/logout-all", Some(&other.token), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/me", &other.token).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(refresh(&app, other.refresh.as_deref().expect("cookie")).await.status(), StatusCode::UNAUTHORIZED);
    }

    async fn sessions_are_listed_and_revocable_per_device(kind) {
        let app = TestApp::spawn(kind).await;
        let laptop = Session::from_login(app.raw_login("dan@example.com", PASSWORD, "Laptop/1").await).await;
        let phone = Session::from_login(app.raw_login("dan@example.com", PASSWORD, "Phone/2").await).await;
        let (status, list) = app.get("/api/v1/auth/sessions", &laptop.token).await;
        assert_eq!(status, StatusCode::OK);
        let list = list.as_array().expect("array").clone();
        assert_eq!(list.len(), 2);
        let current: Vec<_> = list.iter().filter(|s| s["current"] == true).collect();
        assert_eq!(current.len(), 1);
        assert_eq!(current[0]["user_agent"], "Laptop/1");
        assert_eq!(current[0]["ip"], "127.0.0.1");
        let phone_id = list.iter().find(|s| s["user_agent"] == "Phone/2").expect("phone")["id"].as_str().expect("id").to_owned();

        // Someone else's session id is not found.
        let maya = app.login(Actor::Manager).await;
        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/auth/sessions/{phone_id}"), Some(&maya.token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, _) = app.call(Method::DELETE, &format!("/api/v1/auth/sessions/{phone_id}"), Some(&laptop.token), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/me", &phone.token).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(refresh(&app, phone.refresh.as_deref().expect("cookie")).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.get("/api/v1/me", &laptop.token).await.0, StatusCode::OK);
        let (_, list) = app.get("/api/v1/auth/sessions", &laptop.token).await;
        assert_eq!(list.as_array().expect("array").len(), 1);
    }

    async fn sessions_per_user_are_capped(kind) {
        let app = TestApp::spawn_with(kind, "[auth]\nmax_sessions_per_user = 2").await;
        let oldest = app.login(Actor::Developer).await;
        let _second = app.login(Actor::Developer).await;
        let newest = app.login(Actor::Developer).await;
        assert_eq!(app.get("/api/v1/me", &oldest.token).await.0, StatusCode::UNAUTHORIZED);
        let (_, list) = app.get("/api/v1/auth/sessions", &newest.token).await;
        assert_eq!(list.as_array().expect("array").len(), 2);
    }

    async fn password_change_revokes_other_sessions(kind) {
        let app = TestApp::spawn(kind).await;
        let here = app.login(Actor::Developer).await;
        let elsewhere = app.login(Actor::Developer).await;
        let path = "/api/v1/me/password";
        let (status, body) = app.post(path, &here.token, json!({"current_password": "nope-nope-nope", "new_password": "a brand new passphrase"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("invalid_current_password")));
        let (status, body) = app.post(path, &here.token, json!({"current_password": PASSWORD, "new_password": "short"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("weak_password")));
        let (status, _) = app.post(path, &here.token, json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/me", &here.token).await.0, StatusCode::OK);
        assert_eq!(app.get("/api/v1/me", &elsewhere.token).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.raw_login("dan@example.com", PASSWORD, "t").await.status(), StatusCode::UNAUTHORIZED);
        app.login_as("dan@example.com", "a brand new passphrase").await;
    }

    async fn new_users_must_change_their_password_first(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let (status, created) = app.post("/api/v1/users", &admin.token, json!({
            "email": "newbie@example.com", "name": "New Bie", "role": "developer"
        })).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let initial = created["initial_password"].as_str().expect("generated password").to_owned();
        let s = app.login_as("newbie@example.com", &initial).await;
        assert_eq!(s.body["user"]["must_change_password"], true);
        let (status, body) = app.get("/api/v1/pods", &s.token).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("password_change_required")));
        assert_eq!(app.get("/api/v1/me", &s.token).await.0, StatusCode::OK);
        let (status, _) = app.post("/api/v1/me/password", &s.token, json!({"current_password": initial, "new_password": "my own secret phrase"})).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(app.get("/api/v1/pods", &s.token).await.0, StatusCode::OK);
    }

    async fn lockout_delays_then_locks_until_admin_unlocks(kind) {
        // Small numbers keep the test fast; the rules are the same as the defaults.
        let app = TestApp::spawn_with(kind, "[auth]\nlockout_delay_after = 2\nlockout_lock_after = 4\nlockout_max_delay_secs = 1").await;
        let email = "dee@example.com";
        // Two failures: the second starts a 1 s delay.
        for _ in 0..2 {
            assert_eq!(app.raw_login(email, "wrong-password-x", "t").await.status(), StatusCode::UNAUTHORIZED);
        }
        let r = app.raw_login(email, PASSWORD, "t").await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password waits");
        let retry: i64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=2).contains(&retry), "{retry}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "login_throttled");
        assert!(body["error"]["details"]["retry_after_seconds"].as_i64().is_some());

        // Two more failures (after each delay) lock the account.
        for _ in 0..2 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            assert_eq!(app.raw_login(email, "wrong-password-x", "t").await.status(), StatusCode::UNAUTHORIZED);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let r = app.raw_login(email, PASSWORD, "t").await;
        assert_eq!(r.status(), StatusCode::LOCKED);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "account_locked");

        let admin = app.login(Actor::Admin).await;
        let id = app.user_id(email).await;
        let (_, user) = app.get(&format!("/api/v1/users/{id}"), &admin.token).await;
        assert_eq!(user["user"]["locked"], true);
        assert_eq!(user["user"]["failed_logins"], 4);
        let (_, locked) = app.get("/api/v1/users?status=locked", &admin.token).await;
        assert_eq!(locked["total"], 1);

        // Others cannot unlock; the admin can, and the password works again.
        let maya = app.login(Actor::Manager).await;
        let (status, _) = app.call(Method::POST, &format!("/api/v1/users/{id}/unlock"), Some(&maya.token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, user) = app.call(Method::POST, &format!("/api/v1/users/{id}/unlock"), Some(&admin.token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(user["user"]["locked"], false);
        assert_eq!(user["user"]["failed_logins"], 0);
        app.login_as(email, PASSWORD).await;

        let (_, log) = app.get(&format!("/api/v1/audit?target={id}&action=user.unlocked"), &admin.token).await;
        assert_eq!(log["total"], 1);
    }

    async fn per_ip_rate_limit_answers_429_with_retry_after(kind) {
        let app = TestApp::spawn_with(kind, "[rate_limit]\nauth_per_minute = 2\nauth_burst = 3").await;
        let mut statuses = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let r = app.raw_login("nobody@example.com", "wrong-password-x", "t").await;
            statuses.push(r.status());
            last = Some(r);
        }
        assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3]);
        assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
        let r = last.expect("response");
        let retry: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=30).contains(&retry), "{retry}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(body["error"]["request_id"].is_string());
        // Other routes have their own, separate budget.
        assert_eq!(app.client.get(app.url("/api/v1/openapi.json")).send().await.expect("send").status(), StatusCode::OK);
    }

    async fn disabled_and_demoted_users_lose_their_sessions(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let dan = app.login(Actor::Developer).await;
        let maya = app.login(Actor::Manager).await;
        let dan_id = dan.user_id().to_owned();
        let maya_id = maya.user_id().to_owned();

        let (status, _) = app.patch(&format!("/api/v1/users/{maya_id}"), &admin.token, json!({"role": "developer"})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.get("/api/v1/me", &maya.token).await.0, StatusCode::UNAUTHORIZED);
        let maya = app.login(Actor::Manager).await;
        assert_eq!(maya.body["user"]["role"], "developer");
        let (_, me) = app.get("/api/v1/me", &maya.token).await;
        assert_eq!(me["managed_pods"], json!([]), "a developer manages nothing");

        let (status, _) = app.patch(&format!("/api/v1/users/{dan_id}"), &admin.token, json!({"disabled": true})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(app.get("/api/v1/me", &dan.token).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(app.raw_login("dan@example.com", PASSWORD, "t").await.status(), StatusCode::UNAUTHORIZED);
        let (status, _) = app.patch(&format!("/api/v1/users/{dan_id}"), &admin.token, json!({"disabled": false})).await;
        assert_eq!(status, StatusCode::OK);
        app.login(Actor::Developer).await;

        let (_, log) = app.get(&format!("/api/v1/audit?target={dan_id}&action=user.updated"), &admin.token).await;
        assert_eq!(log["total"], 2);
        assert_eq!(log["items"][1]["details"]["sessions_revoked"], "disabled");
    }
}

#[tokio::test]
async fn access_tokens_from_another_key_or_tampered_are_refused() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let s = app.login(Actor::Developer).await;
    let parts: Vec<&str> = s.token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    claims["role"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    for bad in [forged.as_str(), none.as_str(), "garbage", ""] {
        let (status, body) = app.get("/api/v1/users", bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("quorum_auth_failures_total{reason=\"signature\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quorum_auth_failures_total{reason=\"malformed\"}"),
        "{metrics}"
    );
}
