//! User and POD administration: validation, conflicts, the rules that keep an admin around.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Actor, TestApp};
use crate::store_tests;

store_tests! {
    async fn users_are_created_listed_and_validated(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let payments = app.pod_id("payments").await;
        let (status, created) = app.post("/api/v1/users", &admin.token, json!({
            "email": " Kim.Lee@Example.com ", "name": "Kim Lee", "role": "manager", "home_pod_id": payments,
            "password": "kims initial passphrase"
        })).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["user"]["email"], "kim.lee@example.com");
        assert_eq!(created["home_pod"]["name"], "payments");
        assert!(created.get("initial_password").is_none(), "only generated passwords are echoed");

        let cases = [
            (json!({"email": "kim.lee@example.com", "name": "Dup", "role": "developer"}), 409, "email_taken"),
            (json!({"email": "KIM.LEE@example.com", "name": "Dup", "role": "developer"}), 409, "email_taken"),
            (json!({"email": "\u{0430}dmin@example.com", "name": "Homoglyph", "role": "developer"}), 422, "invalid_email"),
            (json!({"email": "not-an-email", "name": "X", "role": "developer"}), 422, "invalid_email"),
            (json!({"email": "x@example.com", "name": "X", "role": "superuser"}), 422, "invalid_body"),
            (json!({"email": "x@example.com", "name": "X\u{202E}Y", "role": "developer"}), 422, "invalid_character"),
            (json!({"email": "x@example.com", "name": "", "role": "developer"}), 422, "validation_failed"),
            (json!({"email": "x@example.com", "name": "X", "role": "developer", "home_pod_id": uuid::Uuid::new_v4()}), 422, "unknown_pod"),
            (json!({"email": "x@example.com", "name": "X", "role": "developer", "password": "short"}), 422, "weak_password"),
            (json!({"email": "x@example.com", "name": "X", "role": "developer", "is_admin": true}), 422, "unknown_field"),
        ];
        for (body, status, code) in cases {
            let (s, b) = app.post("/api/v1/users", &admin.token, body.clone()).await;
            assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (status, Some(code)), "{body} → {b}");
        }

        let (_, page) = app.get("/api/v1/users?per_page=2&page=2", &admin.token).await;
        assert_eq!(page["total"], 7);
        assert_eq!(page["items"].as_array().expect("items").len(), 2);
        assert_eq!(page["page"], 2);
        let (_, managers) = app.get("/api/v1/users?role=manager", &admin.token).await;
        assert_eq!(managers["total"], 3);
        let (_, search) = app.get("/api/v1/users?q=KIM", &admin.token).await;
        assert_eq!(search["total"], 1);
        let (_, in_pod) = app.get(&format!("/api/v1/users?pod_id={payments}"), &admin.token).await;
        assert_eq!(in_pod["total"], 4);
        let (_, wildcard) = app.get("/api/v1/users?q=%25", &admin.token).await;
        assert_eq!(wildcard["total"], 0, "LIKE wildcards in the search are literal");
        for bad in ["/api/v1/users?per_page=0", "/api/v1/users?per_page=101", "/api/v1/users?role=boss", "/api/v1/users?colour=red", "/api/v1/users?page=x"] {
            let (s, b) = app.get(bad, &admin.token).await;
            assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{bad}");
        }
    }

    async fn admins_cannot_remove_the_last_admin_or_themselves(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let me = admin.user_id().to_owned();
        let (s, b) = app.patch(&format!("/api/v1/users/{me}"), &admin.token, json!({"disabled": true})).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("cannot_modify_self")));
        let (s, _) = app.patch(&format!("/api/v1/users/{me}"), &admin.token, json!({"role": "developer"})).await;
        assert_eq!(s, StatusCode::CONFLICT);
        // A second admin may demote the first only while another admin remains.
        let (_, second) = app.post("/api/v1/users", &admin.token, json!({
            "email": "admin2@example.com", "name": "Second Admin", "role": "admin", "password": "second admin passphrase"
        })).await;
        let second_id = second["user"]["id"].as_str().expect("id").to_owned();
        let s2 = app.login_as("admin2@example.com", "second admin passphrase").await;
        let (_, _) = app.post("/api/v1/me/password", &s2.token, json!({"current_password": "second admin passphrase", "new_password": "a changed admin phrase"})).await;
        let (s, _) = app.patch(&format!("/api/v1/users/{me}"), &s2.token, json!({"role": "manager"})).await;
        assert_eq!(s, StatusCode::OK);
        let s2 = app.login_as("admin2@example.com", "a changed admin phrase").await;
        let (s, b) = app.patch(&format!("/api/v1/users/{second_id}"), &s2.token, json!({"disabled": true})).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("cannot_modify_self")));
    }

    async fn password_reset_by_admin_forces_a_change(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let dan = app.login(Actor::Developer).await;
        let id = dan.user_id().to_owned();
        let (s, b) = app.patch(&format!("/api/v1/users/{id}"), &admin.token, json!({"reset_password": true})).await;
        assert_eq!(s, StatusCode::OK);
        let temp = b["initial_password"].as_str().expect("new password").to_owned();
        assert_eq!(b["user"]["must_change_password"], true);
        assert_eq!(app.get("/api/v1/me", &dan.token).await.0, StatusCode::UNAUTHORIZED);
        let fresh = app.login_as("dan@example.com", &temp).await;
        assert_eq!(fresh.body["user"]["must_change_password"], true);
    }

    async fn pods_crud_and_managers(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let (s, pod) = app.post("/api/v1/pods", &admin.token, json!({"name": "Data Platform", "slack_channel": "#data-approvals"})).await;
        assert_eq!(s, StatusCode::CREATED, "{pod}");
        let id = pod["id"].as_str().expect("id").to_owned();
        for (body, status, code) in [
            (json!({"name": "data-platform"}), 409, "pod_name_taken"),
            (json!({"name": "DATA_PLATFORM"}), 409, "pod_name_taken"),
            (json!({"name": "-bad"}), 422, "invalid_pod_name"),
            (json!({"name": "p\u{0430}yments"}), 422, "invalid_pod_name"),
            (json!({"name": "ok-name", "slack_channel": "#has space"}), 422, "invalid_slack_channel"),
        ] {
            let (s, b) = app.post("/api/v1/pods", &admin.token, body.clone()).await;
            assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (status, Some(code)), "{body}");
        }
        let (s, pod) = app.patch(&format!("/api/v1/pods/{id}"), &admin.token, json!({"name": "Data", "slack_channel": null})).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(pod["name"], "Data");
        assert_eq!(pod["slack_channel"], serde_json::Value::Null);

        let maya = app.user_id("maya@example.com").await;
        let dan = app.user_id("dan@example.com").await;
        let path = format!("/api/v1/pods/{id}/managers");
        let (s, b) = app.call(Method::PUT, &path, Some(&admin.token), Some(json!({"user_ids": [dan]}))).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_manager")));
        let (s, b) = app.call(Method::PUT, &path, Some(&admin.token), Some(json!({"user_ids": [maya, maya]}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["managers"].as_array().expect("managers").len(), 1);
        let maya_s = app.login(Actor::Manager).await;
        let (_, me) = app.get("/api/v1/me", &maya_s.token).await;
        assert_eq!(me["managed_pods"].as_array().expect("pods").len(), 2);
        assert_eq!(app.get(&format!("/api/v1/pods/{id}"), &maya_s.token).await.0, StatusCode::OK);

        // A POD with members cannot be deleted; an empty one can.
        let payments = app.pod_id("payments").await;
        let (s, b) = app.call(Method::DELETE, &format!("/api/v1/pods/{payments}"), Some(&admin.token), None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("pod_in_use")));
        let (s, _) = app.call(Method::DELETE, &format!("/api/v1/pods/{id}"), Some(&admin.token), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&format!("/api/v1/pods/{id}"), &admin.token).await.0, StatusCode::NOT_FOUND);
        let (_, me) = app.get("/api/v1/me", &maya_s.token).await;
        assert_eq!(me["managed_pods"].as_array().expect("pods").len(), 1);
    }
}
