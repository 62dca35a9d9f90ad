//! The RBAC matrix: every route × {anonymous, developer, manager of the POD, manager of another
//! POD, admin} → expected status, one row per route, on both stores. A route missing from this
//! table fails `every_api_route_is_in_the_matrix`.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{Actor, PASSWORD, TestApp};
use crate::store_tests;

/// Routes anyone may call; their behaviour is covered in `auth.rs` and (Slack's signed
/// interactions) `slack.rs`.
const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/slack/interactions"),
];

struct Row {
    method: Method,
    /// Placeholders: {payments} {growth} {dee} {own_session} {scratch_pod} {unknown} (a random id).
    path: &'static str,
    body: Option<fn(&Ctx) -> Value>,
    /// Anonymous, Developer (payments), Manager (payments), OtherPodManager (growth), Admin.
    expect: [u16; 5],
}

fn rows() -> Vec<Row> {
    use Method as M;
    let row = |method: Method,
               path: &'static str,
               body: Option<fn(&Ctx) -> Value>,
               expect: [u16; 5]| Row {
        method,
        path,
        body,
        expect,
    };
    vec![
        row(
            M::POST,
            "/api/v1/auth/logout",
            None,
            [401, 204, 204, 204, 204],
        ),
        row(
            M::POST,
            "/api/v1/auth/logout-all",
            None,
            [401, 204, 204, 204, 204],
        ),
        row(
            M::GET,
            "/api/v1/auth/sessions",
            None,
            [401, 200, 200, 200, 200],
        ),
        row(
            M::DELETE,
            "/api/v1/auth/sessions/{own_session}",
            None,
            [401, 204, 204, 204, 204],
        ),
        row(M::GET, "/api/v1/me", None, [401, 200, 200, 200, 200]),
        row(
            M::POST,
            "/api/v1/me/password",
            Some(|_: &Ctx| json!({"current_password": PASSWORD, "new_password": PASSWORD})),
            [401, 422, 422, 422, 422],
        ),
        row(M::GET, "/api/v1/users", None, [401, 403, 403, 403, 200]),
        row(
            M::POST,
            "/api/v1/users",
            Some(
                |_: &Ctx| json!({"email": format!("u{}@example.com", uuid::Uuid::new_v4().simple()), "name": "Matrix User", "role": "developer"}),
            ),
            [401, 403, 403, 403, 201],
        ),
        row(
            M::GET,
            "/api/v1/users/{dee}",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(
            M::PATCH,
            "/api/v1/users/{dee}",
            Some(|_: &Ctx| json!({"name": "Dee D."})),
            [401, 403, 403, 403, 200],
        ),
        row(
            M::POST,
            "/api/v1/users/{dee}/unlock",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(M::GET, "/api/v1/pods", None, [401, 200, 200, 200, 200]),
        row(
            M::POST,
            "/api/v1/pods",
            Some(
                |_: &Ctx| json!({"name": format!("pod-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])}),
            ),
            [401, 403, 403, 403, 201],
        ),
        row(
            M::GET,
            "/api/v1/pods/{payments}",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::GET,
            "/api/v1/pods/{growth}",
            None,
            [401, 404, 404, 200, 200],
        ),
        row(
            M::PATCH,
            "/api/v1/pods/{payments}",
            Some(|_: &Ctx| json!({"slack_channel": "#payments-reviews"})),
            [401, 403, 403, 403, 200],
        ),
        row(
            M::DELETE,
            "/api/v1/pods/{scratch_pod}",
            None,
            [401, 403, 403, 403, 204],
        ),
        row(
            M::PUT,
            "/api/v1/pods/{growth}/managers",
            Some(|_: &Ctx| json!({"user_ids": []})),
            [401, 403, 403, 403, 200],
        ),
        row(M::GET, "/api/v1/instances", None, [401, 200, 200, 200, 200]),
        row(
            M::POST,
            "/api/v1/instances",
            Some(
                |_: &Ctx| json!({"name": format!("i-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), "engine": "sqlite", "path": "demo-shop.db", "environment": "demo"}),
            ),
            [401, 403, 403, 403, 201],
        ),
        row(
            M::GET,
            "/api/v1/instances/{payments_instance}",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::PATCH,
            "/api/v1/instances/{payments_instance}",
            Some(|_: &Ctx| json!({"required_approvals": 1})),
            [401, 403, 403, 403, 200],
        ),
        row(
            M::DELETE,
            "/api/v1/instances/{scratch_instance}",
            None,
            [401, 403, 403, 403, 204],
        ),
        row(
            M::POST,
            "/api/v1/instances/{payments_instance}/test",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(
            M::GET,
            "/api/v1/instances/{payments_instance}/databases",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::POST,
            "/api/v1/instances/{payments_instance}/databases/sync",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(M::GET, "/api/v1/requests", None, [401, 200, 200, 200, 200]),
        row(
            M::POST,
            "/api/v1/requests",
            Some(|c: &Ctx| {
                json!({"pod_id": c.ids.payments, "instance_id": c.ids.shop, "database": "main", "kind": "query",
                       "mode": "read", "content": "SELECT 1", "justification": "RBAC matrix request"})
            }),
            [401, 201, 201, 403, 201],
        ),
        row(
            M::GET,
            "/api/v1/requests/{fresh_request}",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::PATCH,
            "/api/v1/requests/{fresh_request}",
            Some(|_: &Ctx| json!({"content": "SELECT 2"})),
            [401, 200, 403, 404, 403],
        ),
        row(
            M::POST,
            "/api/v1/requests/{fresh_request}/cancel",
            None,
            [401, 200, 403, 404, 403],
        ),
        row(
            M::POST,
            "/api/v1/requests/{fresh_request}/clone",
            None,
            [401, 201, 201, 404, 201],
        ),
        row(
            M::POST,
            "/api/v1/requests/{fresh_request}/reviews",
            Some(|c: &Ctx| json!({"decision": "approve", "revision_hash": c.revision_hash})),
            [401, 403, 200, 404, 200],
        ),
        row(
            M::POST,
            "/api/v1/requests/{fresh_request}/run",
            None,
            [401, 409, 403, 404, 403],
        ),
        row(
            M::GET,
            "/api/v1/executions/{execution}",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::GET,
            "/api/v1/executions/{execution}/rows",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::GET,
            "/api/v1/executions/{execution}/result.csv",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::GET,
            "/api/v1/executions/{execution}/result.json",
            None,
            [401, 200, 200, 404, 200],
        ),
        row(
            M::POST,
            "/api/v1/requests/explain",
            Some(
                |c: &Ctx| json!({"instance_id": c.ids.shop, "database": "main", "content": "SELECT 1"}),
            ),
            [401, 200, 200, 200, 200],
        ),
        row(
            M::POST,
            "/api/v1/requests/check",
            Some(|_: &Ctx| json!({"kind": "query", "engine": "sqlite", "content": "SELECT 1"})),
            [401, 200, 200, 200, 200],
        ),
        row(M::GET, "/api/v1/audit", None, [401, 403, 403, 403, 200]),
        row(
            M::GET,
            "/api/v1/audit/verify",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(
            M::GET,
            "/api/v1/slack/deliveries",
            None,
            [401, 403, 403, 403, 200],
        ),
        row(
            M::POST,
            "/api/v1/slack/deliveries/{unknown}/retry",
            None,
            [401, 403, 403, 403, 404],
        ),
    ]
}

/// What a row's body may refer to.
struct Ctx<'a> {
    ids: &'a Ids,
    /// The current revision hash of the `{fresh_request}` in the path, if any.
    revision_hash: String,
}

struct Ids {
    shop: String,
    execution: String,
    payments: String,
    payments_instance: String,
    growth: String,
    dee: String,
}

async fn resolve(
    app: &TestApp,
    ids: &Ids,
    path: &str,
    session: Option<&crate::harness::Session>,
    hash: &mut String,
) -> String {
    let mut p = path
        .replace("{payments}", &ids.payments)
        .replace("{growth}", &ids.growth)
        .replace("{dee}", &ids.dee)
        .replace("{payments_instance}", &ids.payments_instance)
        .replace("{execution}", &ids.execution)
        .replace("{unknown}", &uuid::Uuid::new_v4().to_string());
    if p.contains("{scratch_instance}") {
        let admin = app.login(Actor::Admin).await;
        let name = format!(
            "scratch-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let body = json!({ "name": name, "engine": "sqlite", "path": "demo-shop.db", "environment": "demo" });
        let (_, i) = app.post("/api/v1/instances", &admin.token, body).await;
        p = p.replace("{scratch_instance}", i["id"].as_str().expect("instance id"));
    }
    if p.contains("{scratch_pod}") {
        let name = format!(
            "scratch-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        // A fresh admin session: the matrix's own logout rows end earlier ones.
        let admin = app.login(Actor::Admin).await;
        let (_, pod) = app
            .post("/api/v1/pods", &admin.token, json!({ "name": name }))
            .await;
        p = p.replace("{scratch_pod}", pod["id"].as_str().expect("pod id"));
    }
    if p.contains("{fresh_request}") {
        let dan = app.login(Actor::Developer).await;
        let created = app.file_request(&dan, "SELECT 'matrix'").await;
        *hash = created["revision_hash"].as_str().expect("hash").to_owned();
        p = p.replace(
            "{fresh_request}",
            created["id"].as_str().expect("request id"),
        );
    }
    if p.contains("{own_session}") {
        let id = match session {
            Some(s) => {
                let (_, list) = app.get("/api/v1/auth/sessions", &s.token).await;
                list.as_array()
                    .expect("sessions")
                    .iter()
                    .find(|x| x["current"] == true)
                    .expect("current")["id"]
                    .as_str()
                    .expect("id")
                    .to_owned()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        p = p.replace("{own_session}", &id);
    }
    p
}

store_tests! {
    async fn rbac_matrix(kind) {
        let app = TestApp::spawn(kind).await;
        let ids = Ids {
            execution: {
                // A finished execution of a payments request on demo-shop (runs on approval).
                let dan = app.login(Actor::Developer).await;
                let maya = app.login(Actor::Manager).await;
                let created = app.file_request(&dan, "SELECT id FROM customers LIMIT 2").await;
                let id = created["id"].as_str().expect("id").to_owned();
                let body = json!({"decision": "approve", "revision_hash": created["revision_hash"]});
                app.post(&format!("/api/v1/requests/{id}/reviews"), &maya.token, body).await;
                let mut execution = None;
                for _ in 0..200 {
                    let (_, r) = app.get(&format!("/api/v1/requests/{id}"), &dan.token).await;
                    if r["status"] == "succeeded" {
                        execution = r["executions"][0]["id"].as_str().map(str::to_owned);
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await;
                }
                execution.expect("the matrix's execution finished")
            },
            shop: app.shop_id().await,
            payments: app.pod_id("payments").await,
            growth: app.pod_id("growth").await,
            dee: app.user_id("dee@example.com").await,
            payments_instance: {
                let admin = app.login(Actor::Admin).await;
                let payments = app.pod_id("payments").await;
                let body = json!({"name": "payments-only", "engine": "sqlite", "path": "demo-shop.db", "environment": "staging", "allowed_pod_ids": [payments]});
                let (_, i) = app.post("/api/v1/instances", &admin.token, body).await;
                i["id"].as_str().expect("instance id").to_owned()
            },
        };
        let mut failures = Vec::new();
        for row in rows() {
            for (i, actor) in Actor::ALL.iter().enumerate() {
                // A fresh session per call: some rows sign the caller out.
                let session = match actor {
                    Actor::Anonymous => None,
                    a => Some(app.login(*a).await),
                };
                let mut revision_hash = String::new();
                let path = resolve(&app, &ids, row.path, session.as_ref(), &mut revision_hash).await;
                let body = row.body.map(|f| f(&Ctx { ids: &ids, revision_hash }));
                let (status, response) = app.call(row.method.clone(), &path, session.as_ref().map(|s| s.token.as_str()), body).await;
                if status.as_u16() != row.expect[i] {
                    failures.push(format!("{} {} as {actor:?}: expected {}, got {status} {response}", row.method, row.path, row.expect[i]));
                }
                if status.is_client_error() {
                    assert!(response["error"]["code"].is_string(), "{} {} as {actor:?}: no error envelope: {response}", row.method, row.path);
                }
            }
        }
        assert!(failures.is_empty(), "RBAC mismatches:\n{}", failures.join("\n"));
    }

    async fn other_pod_objects_reveal_nothing(kind) {
        let app = TestApp::spawn(kind).await;
        let dev = app.login(Actor::Developer).await;
        let growth = app.pod_id("growth").await;
        let missing = uuid::Uuid::new_v4();
        let (s1, b1) = app.get(&format!("/api/v1/pods/{growth}"), &dev.token).await;
        let (s2, b2) = app.get(&format!("/api/v1/pods/{missing}"), &dev.token).await;
        assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
        assert_eq!(b1["error"]["message"], b2["error"]["message"]);
        assert!(!b1.to_string().contains("growth"));
        let (_, pods) = app.get("/api/v1/pods", &dev.token).await;
        assert_eq!(pods["total"], 1);
        assert_eq!(pods["items"][0]["name"], "payments");
    }
}

#[test]
fn every_api_route_is_in_the_matrix() {
    let doc = serde_json::to_value(quorum_server::http::openapi()).expect("openapi json");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let placeholder = |p: &str| {
        p.replace("{payments}", "{id}")
            .replace("{growth}", "{id}")
            .replace("{dee}", "{id}")
            .replace("{scratch_pod}", "{id}")
            .replace("{own_session}", "{id}")
            .replace("{payments_instance}", "{id}")
            .replace("{scratch_instance}", "{id}")
            .replace("{fresh_request}", "{id}")
            .replace("{execution}", "{id}")
            .replace("{unknown}", "{id}")
    };
    let mut covered: BTreeSet<(String, String)> = rows()
        .iter()
        .map(|r| (r.method.to_string(), placeholder(r.path)))
        .collect();
    covered.extend(PUBLIC.iter().map(|(m, p)| (m.to_string(), p.to_string())));
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without an RBAC row: {missing:?}"
    );
    let stale: Vec<_> = covered.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "RBAC rows for routes that do not exist: {stale:?}"
    );
}
