//! The request workflow: filing, visibility, reviews bound to the revision hash, self-review,
//! edits voiding approvals, required approvals, races, cancellation, cloning and expiry.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Actor, StoreKind, TestApp};
use crate::store_tests;

async fn review(
    app: &TestApp,
    token: &str,
    id: &str,
    decision: &str,
    hash: &str,
) -> (StatusCode, Value) {
    let comment = if decision == "approve" {
        ""
    } else {
        "please narrow the WHERE clause"
    };
    app.post(
        &format!("/api/v1/requests/{id}/reviews"),
        token,
        json!({"decision": decision, "comment": comment, "revision_hash": hash}),
    )
    .await
}

/// Makes demo-shop wait for its author to press Run, so approved requests stay approved.
async fn manual_shop(app: &TestApp) {
    let admin = app.login(Actor::Admin).await;
    let shop = app.shop_id().await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/instances/{shop}"),
            &admin.token,
            json!({"run_mode": "manual"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

fn id_hash(r: &Value) -> (String, String) {
    (
        r["id"].as_str().expect("id").to_owned(),
        r["revision_hash"].as_str().expect("hash").to_owned(),
    )
}

store_tests! {
    async fn submit_review_approve_and_read(kind) {
        let app = TestApp::spawn(kind).await;
        manual_shop(&app).await;
        let dan = app.login(Actor::Developer).await;
        let created = app.file_request(&dan, "SELECT id, email FROM customers WHERE country = 'DE'").await;
        assert_eq!(created["status"], "pending");
        assert_eq!(created["revision"], 1);
        assert_eq!(created["revision_hash"].as_str().expect("hash").len(), 64);
        assert_eq!(created["required_approvals"], 1);
        assert_eq!(created["can_review"], false);
        assert!(created["review_blocked_reason"].as_str().expect("reason").contains("managers"));
        assert_eq!(created["executions"], json!([]));
        let (id, hash) = id_hash(&created);

        // The manager's inbox has it; the author's does not.
        let maya = app.login(Actor::Manager).await;
        let (_, inbox) = app.get("/api/v1/requests?awaiting_review=me", &maya.token).await;
        assert_eq!(inbox["total"], 1);
        let (_, mine) = app.get("/api/v1/requests?author=me", &dan.token).await;
        assert_eq!(mine["total"], 1);
        assert_eq!(mine["items"][0]["author_name"], "Dan Developer");
        let (_, none) = app.get("/api/v1/requests?awaiting_review=me", &dan.token).await;
        assert_eq!(none["total"], 0);

        let (_, seen) = app.get(&format!("/api/v1/requests/{id}"), &maya.token).await;
        assert_eq!(seen["can_review"], true);
        let (status, approved) = review(&app, &maya.token, &id, "approve", &hash).await;
        assert_eq!(status, StatusCode::OK, "{approved}");
        assert_eq!(approved["status"], "approved");
        assert_eq!(approved["approvals"], 1);
        assert_eq!(approved["reviews"][0]["revision_hash"], hash.as_str());
        assert_eq!(approved["reviews"][0]["reviewer_name"], "Maya Manager");
        assert_eq!(approved["author_name"], "Dan Developer");
        let (_, inbox) = app.get("/api/v1/requests?awaiting_review=me", &maya.token).await;
        assert_eq!(inbox["total"], 0);
        let (_, by_status) = app.get("/api/v1/requests?status=approved", &dan.token).await;
        assert_eq!(by_status["total"], 1);

        let admin = app.login(Actor::Admin).await;
        let (_, log) = app.get(&format!("/api/v1/audit?target={id}"), &admin.token).await;
        let actions: Vec<&str> = log["items"].as_array().expect("items").iter().filter_map(|e| e["action"].as_str()).collect();
        assert_eq!(actions, ["request.reviewed", "request.created"]);
        assert_eq!(log["items"][0]["details"]["revision_hash"], hash.as_str());
    }

    async fn nobody_reviews_their_own_request_and_other_pods_see_nothing(kind) {
        let app = TestApp::spawn(kind).await;
        manual_shop(&app).await;
        // A manager and an admin file requests; neither may approve their own.
        let maya = app.login(Actor::Manager).await;
        let admin = app.login(Actor::Admin).await;
        let (own, hash) = id_hash(&app.file_request(&maya, "SELECT 1").await);
        let (status, body) = review(&app, &maya.token, &own, "approve", &hash).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("self_review")));
        let (admins, admin_hash) = id_hash(&app.file_request(&admin, "SELECT 2").await);
        let (status, body) = review(&app, &admin.token, &admins, "approve", &admin_hash).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("self_review")));
        // The attempt is audited; the state did not change.
        let (_, log) = app.get("/api/v1/audit?action=request.review_refused", &admin.token).await;
        assert_eq!(log["total"], 2);
        let (_, still) = app.get(&format!("/api/v1/requests/{own}"), &maya.token).await;
        assert_eq!(still["status"], "pending");
        assert_eq!(still["reviews"], json!([]));

        // The other POD's manager and developer: 404, as if it did not exist.
        let gina = app.login(Actor::OtherPodManager).await;
        let gus = app.login_as("gus@example.com", crate::harness::PASSWORD).await;
        for token in [&gina.token, &gus.token] {
            assert_eq!(app.get(&format!("/api/v1/requests/{own}"), token).await.0, StatusCode::NOT_FOUND);
            let (status, body) = review(&app, token, &own, "approve", &hash).await;
            assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
            let (_, list) = app.get("/api/v1/requests", token).await;
            assert_eq!(list["total"], 0);
        }
        // The admin approves the manager's request; the manager approves the admin's.
        assert_eq!(review(&app, &admin.token, &own, "approve", &hash).await.0, StatusCode::OK);
        assert_eq!(review(&app, &maya.token, &admins, "approve", &admin_hash).await.0, StatusCode::OK);
        // A developer of the POD sees both, read-only.
        let dee = app.login_as("dee@example.com", crate::harness::PASSWORD).await;
        let (_, list) = app.get("/api/v1/requests", &dee.token).await;
        assert_eq!(list["total"], 2);
        let (status, body) = review(&app, &dee.token, &own, "approve", &hash).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_a_reviewer")));
    }

    async fn edits_void_approvals_and_stale_hashes_are_refused(kind) {
        let app = TestApp::spawn(kind).await;
        manual_shop(&app).await;
        let dan = app.login(Actor::Developer).await;
        let maya = app.login(Actor::Manager).await;
        let (id, first_hash) = id_hash(&app.file_request(&dan, "SELECT * FROM orders WHERE status = 'open'").await);
        let (_, approved) = review(&app, &maya.token, &id, "approve", &first_hash).await;
        assert_eq!(approved["status"], "approved");

        let (status, edited) = app.patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"content": "SELECT * FROM orders"})).await;
        assert_eq!(status, StatusCode::OK, "{edited}");
        assert_eq!(edited["status"], "pending");
        assert_eq!(edited["revision"], 2);
        assert_eq!(edited["approvals"], 0);
        assert!(edited["reviews"][0]["voided_at"].is_string(), "the approval is void");
        let second_hash = edited["revision_hash"].as_str().expect("hash").to_owned();
        assert_ne!(first_hash, second_hash);
        let diff = edited["revisions"][1]["diff"].as_str().expect("diff");
        assert!(diff.contains("-SELECT * FROM orders WHERE status = 'open'") && diff.contains("+SELECT * FROM orders"), "{diff}");

        let (status, body) = review(&app, &maya.token, &id, "approve", &first_hash).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("stale_revision")));
        // Changing the target is an edit too (W5), and so is a mode switch.
        let (_, edited) = app.patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"mode": "write"})).await;
        assert_eq!(edited["revision"], 3);
        let (status, body) = review(&app, &maya.token, &id, "approve", &second_hash).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("stale_revision")));

        // Only the author edits; a no-op edit is refused.
        let (status, body) = app.patch(&format!("/api/v1/requests/{id}"), &maya.token, json!({"content": "SELECT 2"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_author")));
        let (status, body) = app.patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"mode": "write"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("no_change")));
        let (status, body) = app.patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"status": "approved"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_field")));

        // Request changes → the author edits → pending again. Sending it back needs a reason.
        let hash = edited["revision_hash"].as_str().expect("hash").to_owned();
        let (_, before) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
        let reviews = before["reviews"].as_array().map(Vec::len);
        for decision in ["request_changes", "reject"] {
            let body = json!({"decision": decision, "comment": "  ", "revision_hash": hash});
            let (status, b) = app.post(&format!("/api/v1/requests/{id}/reviews"), &maya.token, body).await;
            assert_eq!((status, b["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("comment_required")), "{b}");
        }
        let (_, still) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
        assert_eq!((still["status"].as_str(), still["reviews"].as_array().map(Vec::len)), (Some("pending"), reviews), "{still}");
        let (_, sent_back) = review(&app, &maya.token, &id, "request_changes", &hash).await;
        assert_eq!(sent_back["status"], "changes_requested");
        let (_, again) = app.patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"content": "SELECT id FROM orders LIMIT 10"})).await;
        assert_eq!(again["status"], "pending");
        let (_, rejected) = review(&app, &maya.token, &id, "reject", again["revision_hash"].as_str().expect("hash")).await;
        assert_eq!(rejected["status"], "rejected");
        let (status, body) = app.patch(&format!("/api/v1/requests/{id}"), &dan.token, json!({"content": "SELECT 3"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_editable")));
    }

    async fn production_instances_need_two_distinct_approvers(kind) {
        let app = TestApp::spawn(kind).await;
        manual_shop(&app).await;
        let admin = app.login(Actor::Admin).await;
        let shop = app.shop_id().await;
        let (status, _) = app.patch(&format!("/api/v1/instances/{shop}"), &admin.token, json!({"environment": "production", "required_approvals": 2})).await;
        assert_eq!(status, StatusCode::OK);
        let dan = app.login(Actor::Developer).await;
        let maya = app.login(Actor::Manager).await;
        let created = app.file_request(&dan, "SELECT COUNT(*) FROM orders").await;
        assert_eq!(created["required_approvals"], 2);
        let (id, hash) = id_hash(&created);
        let (_, one) = review(&app, &maya.token, &id, "approve", &hash).await;
        assert_eq!((one["status"].as_str(), one["approvals"].as_u64()), (Some("pending"), Some(1)));
        let (status, body) = review(&app, &maya.token, &id, "approve", &hash).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_reviewed")));
        let (_, two) = review(&app, &admin.token, &id, "approve", &hash).await;
        assert_eq!((two["status"].as_str(), two["approvals"].as_u64()), (Some("approved"), Some(2)));
    }

    async fn concurrent_reviews_by_one_person_count_once(kind) {
        let app = TestApp::spawn(kind).await;
        let admin = app.login(Actor::Admin).await;
        let shop = app.shop_id().await;
        app.patch(&format!("/api/v1/instances/{shop}"), &admin.token, json!({"required_approvals": 2})).await;
        let dan = app.login(Actor::Developer).await;
        let maya = app.login(Actor::Manager).await;
        let (id, hash) = id_hash(&app.file_request(&dan, "SELECT 1").await);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (client, url, token, hash) = (app.client.clone(), app.url(&format!("/api/v1/requests/{id}/reviews")), maya.token.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                client.post(url).bearer_auth(token).json(&json!({"decision": "approve", "revision_hash": hash})).send().await.expect("send").status()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("join") {
                StatusCode::OK => ok += 1,
                StatusCode::CONFLICT => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(ok, 1, "exactly one review recorded");
        let (_, r) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
        assert_eq!((r["status"].as_str(), r["approvals"].as_u64()), (Some("pending"), Some(1)));
        assert_eq!(r["reviews"].as_array().expect("reviews").len(), 1);
    }

    async fn filing_is_validated(kind) {
        let app = TestApp::spawn(kind).await;
        let dan = app.login(Actor::Developer).await;
        let payments = app.pod_id("payments").await;
        let growth = app.pod_id("growth").await;
        let shop = app.shop_id().await;
        let base = json!({"pod_id": payments, "instance_id": shop, "database": "main", "kind": "query", "mode": "read",
            "content": "SELECT 1", "justification": "Checking the daily totals"});
        let with = |k: &str, v: Value| { let mut b = base.clone(); b[k] = v; b };
        let big = "-- padding\n".repeat(25_000);
        let cases = [
            (with("pod_id", json!(growth)), 403, "not_in_pod"),
            (with("pod_id", json!(uuid::Uuid::new_v4())), 403, "not_in_pod"),
            (with("instance_id", json!(uuid::Uuid::new_v4())), 422, "unknown_instance"),
            (with("database", json!("other")), 422, "unknown_database"),
            (with("justification", json!("too short")), 422, "validation_failed"),
            (with("content", json!("   ")), 422, "validation_failed"),
            (with("content", json!("SELECT 1 -- \u{202E} hidden")), 422, "hidden_characters"),
            (with("content", json!("SELECT '\u{200B}'")), 422, "hidden_characters"),
            (with("content", json!("SELECT '\u{0000}'")), 422, "invalid_character"),
            (with("justification", json!("Totally normal\u{2066} justification")), 422, "hidden_characters"),
            (with("content", json!(big)), 422, "content_too_large"),
            (with("kind", json!("shell")), 422, "invalid_body"),
        ];
        for (body, status, code) in cases {
            let (s, b) = app.post("/api/v1/requests", &dan.token, body.clone()).await;
            assert_eq!((s.as_u16(), b["error"]["code"].as_str()), (status, Some(code)), "{} → {b}", body.to_string().chars().take(200).collect::<String>());
        }
        let (_, b) = app.post("/api/v1/requests", &dan.token, with("content", json!("SELECT 1;\nSELECT '\u{202E}'"))).await;
        assert_eq!(b["error"]["details"]["line"], 2);
        assert!(b["error"]["message"].as_str().expect("message").contains("RIGHT-TO-LEFT OVERRIDE"));
        // An instance not allowed for the POD.
        let admin = app.login(Actor::Admin).await;
        app.patch(&format!("/api/v1/instances/{shop}"), &admin.token, json!({"allowed_pod_ids": [growth]})).await;
        let (s, b) = app.post("/api/v1/requests", &admin.token, base.clone()).await;
        assert_eq!((s, b["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("instance_not_allowed")));
        let (_, list) = app.get("/api/v1/requests", &admin.token).await;
        assert_eq!(list["total"], 0, "nothing was written");
    }

    async fn cancel_and_clone(kind) {
        let app = TestApp::spawn(kind).await;
        let dan = app.login(Actor::Developer).await;
        let maya = app.login(Actor::Manager).await;
        let (id, _) = id_hash(&app.file_request(&dan, "SELECT 42").await);
        let (status, body) = app.call(Method::POST, &format!("/api/v1/requests/{id}/cancel"), Some(&maya.token), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_author")));
        let (status, body) = app.call(Method::POST, &format!("/api/v1/requests/{id}/cancel"), Some(&dan.token), None).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("cancelled")));
        let (status, body) = app.call(Method::POST, &format!("/api/v1/requests/{id}/cancel"), Some(&dan.token), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_cancellable")));
        // The manager clones it into a request of their own.
        let (status, copy) = app.call(Method::POST, &format!("/api/v1/requests/{id}/clone"), Some(&maya.token), None).await;
        assert_eq!(status, StatusCode::CREATED, "{copy}");
        assert_eq!(copy["status"], "pending");
        assert_eq!(copy["author_id"], maya.user_id());
        assert_eq!(copy["content"], "SELECT 42");
        assert_ne!(copy["id"], id.as_str());
        // Someone who cannot see it cannot clone it.
        let gina = app.login(Actor::OtherPodManager).await;
        let (status, _) = app.call(Method::POST, &format!("/api/v1/requests/{id}/clone"), Some(&gina.token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (_, found) = app.get("/api/v1/requests?q=CUSTOMER%20TICKET", &dan.token).await;
        assert_eq!(found["total"], 2);
    }

    async fn requests_expire_when_the_clock_moves(kind) {
        let app = TestApp::spawn(kind).await;
        manual_shop(&app).await;
        let dan = app.login(Actor::Developer).await;
        let maya = app.login(Actor::Manager).await;
        let (pending, _) = id_hash(&app.file_request(&dan, "SELECT 'waits'").await);
        let (approved, hash) = id_hash(&app.file_request(&dan, "SELECT 'approved'").await);
        review(&app, &maya.token, &approved, "approve", &hash).await;

        // 25 hours on: the approved request's execution window has passed; the pending one (7 days)
        // is still open.
        app.clock.advance(chrono::Duration::hours(25));
        let dan = app.login(Actor::Developer).await;
        let (_, r) = app.get(&format!("/api/v1/requests/{approved}"), &dan.token).await;
        assert_eq!(r["status"], "expired", "{r}");
        let (_, p) = app.get(&format!("/api/v1/requests/{pending}"), &dan.token).await;
        assert_eq!(p["status"], "pending");
        let (status, body) = app.patch(&format!("/api/v1/requests/{approved}"), &dan.token, json!({"content": "SELECT 3"})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_editable")));
        // Expired requests can be cloned.
        let (status, _) = app.call(Method::POST, &format!("/api/v1/requests/{approved}/clone"), Some(&dan.token), None).await;
        assert_eq!(status, StatusCode::CREATED);

        app.clock.advance(chrono::Duration::days(7));
        let dan = app.login(Actor::Developer).await;
        let (_, p) = app.get(&format!("/api/v1/requests/{pending}"), &dan.token).await;
        assert_eq!(p["status"], "expired");
        let maya = app.login(Actor::Manager).await;
        let (status, body) = review(&app, &maya.token, &pending, "approve", p["revision_hash"].as_str().expect("hash")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_pending")));
    }
}

#[tokio::test]
async fn pods_and_instances_with_requests_are_kept_for_the_record() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let dan = app.login(Actor::Developer).await;
    let created = app.file_request(&dan, "SELECT 1").await;
    let admin = app.login(Actor::Admin).await;
    let (shop, payments) = (app.shop_id().await, app.pod_id("payments").await);
    // Move every member out, so only the request ties the POD down.
    let users = app
        .get(&format!("/api/v1/users?pod_id={payments}"), &admin.token)
        .await
        .1;
    for u in users["items"].as_array().expect("items") {
        let (status, _) = app
            .patch(
                &format!("/api/v1/users/{}", u["id"].as_str().expect("id")),
                &admin.token,
                json!({"home_pod_id": null}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/pods/{payments}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("pod_in_use")),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/instances/{shop}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("instance_in_use")),
        "{body}"
    );
    // Both are still there, and so is the request.
    assert_eq!(
        app.get(&format!("/api/v1/instances/{shop}"), &admin.token)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.get(
            &format!("/api/v1/requests/{}", created["id"].as_str().expect("id")),
            &admin.token
        )
        .await
        .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn approvals_older_than_their_ttl_do_not_count() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let admin = app.login(Actor::Admin).await;
    let shop = app.shop_id().await;
    app.patch(
        &format!("/api/v1/instances/{shop}"),
        &admin.token,
        json!({"required_approvals": 2}),
    )
    .await;
    let dan = app.login(Actor::Developer).await;
    let maya = app.login(Actor::Manager).await;
    let (id, hash) = id_hash(&app.file_request(&dan, "SELECT 'slow'").await);
    review(&app, &maya.token, &id, "approve", &hash).await;
    app.clock.advance(chrono::Duration::hours(25));
    let admin = app.login(Actor::Admin).await;
    let (_, r) = review(&app, &admin.token, &id, "approve", &hash).await;
    assert_eq!(
        (r["status"].as_str(), r["approvals"].as_u64()),
        (Some("pending"), Some(1)),
        "{r}"
    );
}
