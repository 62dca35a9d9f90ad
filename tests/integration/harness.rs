//! `TestApp`: the real server (`quorum_server::run`) on 127.0.0.1:0 over a fresh store, seeded
//! with the demo organisation, and an HTTP client that speaks to it.
//!
//! PostgreSQL comes from `QUORUM_TEST_PG_URL`, the throwaway cluster `cargo xtask test` starts;
//! each test gets its own database in it. Without that variable the PostgreSQL half of every test
//! fails (it is never skipped): run the suite through `cargo xtask test`.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use quorum_server::clock::OffsetClock;
use quorum_server::config::Config;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const PASSWORD: &str = quorum_server::demo::DEMO_PASSWORD;
pub const JWT_SECRET: &str = "test-only-signing-key-0123456789-abcdefghijklmnop";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// The demo accounts the tests act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Anonymous,
    /// dan@example.com, developer in `payments`.
    Developer,
    /// maya@example.com, manager of `payments`.
    Manager,
    /// gina@example.com, manager of `growth`.
    OtherPodManager,
    /// admin@example.com.
    Admin,
}

impl Actor {
    pub const ALL: [Actor; 5] = [
        Actor::Anonymous,
        Actor::Developer,
        Actor::Manager,
        Actor::OtherPodManager,
        Actor::Admin,
    ];

    pub fn email(self) -> Option<&'static str> {
        match self {
            Actor::Anonymous => None,
            Actor::Developer => Some("dan@example.com"),
            Actor::Manager => Some("maya@example.com"),
            Actor::OtherPodManager => Some("gina@example.com"),
            Actor::Admin => Some("admin@example.com"),
        }
    }
}

pub fn pg_admin_url() -> String {
    std::env::var("QUORUM_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("QUORUM_TEST_PG_URL is not set: run the suite with `cargo xtask test`, which starts a throwaway PostgreSQL cluster")
    })
}

/// Creates an empty database in the test cluster and returns its URL.
pub async fn fresh_pg_database() -> String {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let name = format!("qt_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("url has a database");
    format!("{base}/{name}")
}

/// A target database for instances: its own database in the test cluster and a least-privilege
/// login role that may only read and change the rows of its one table (no DDL, no other tables).
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
}

pub async fn pg_target() -> PgTarget {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let authority = admin
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("host:port in the admin url");
    let (host, port) = authority.rsplit_once(':').expect("port");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let target = PgTarget {
        host: host.to_owned(),
        port: port.parse().expect("port"),
        database: format!("qt_shop_{suffix}"),
        user: format!("qt_reader_{suffix}"),
        password: format!("canary-{suffix}-pw"),
    };
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect admin");
    sqlx::query(&format!(
        "CREATE ROLE {} LOGIN PASSWORD '{}'",
        target.user, target.password
    ))
    .execute(&mut conn)
    .await
    .expect("role");
    sqlx::query(&format!("CREATE DATABASE {}", target.database))
        .execute(&mut conn)
        .await
        .expect("database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).expect("base");
    let mut db = sqlx::PgConnection::connect(&format!("{base}/{}", target.database))
        .await
        .expect("connect target");
    for sql in [
        "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL)",
        "INSERT INTO items VALUES (1, 'kettle', 25.00), (2, 'grinder', 99.90), (3, 'filter', 4.50)",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        &format!("GRANT USAGE ON SCHEMA public TO {}", target.user),
        &format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON items TO {}",
            target.user
        ),
    ] {
        sqlx::query(sql).execute(&mut db).await.expect(sql);
    }
    target
}

impl PgTarget {
    /// A superuser connection to the target database, to check what really happened there.
    pub async fn inspect(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let admin = pg_admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).expect("base");
        sqlx::PgConnection::connect(&format!("{base}/{}", self.database))
            .await
            .expect("connect target")
    }
}

/// Path of the `quorum` binary next to this test binary (built by `cargo xtask test`).
pub fn quorum_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join("quorum");
    assert!(
        bin.exists(),
        "{} is missing: `cargo xtask test` builds it (cargo build -p quorum-server)",
        bin.display()
    );
    bin
}

/// Runs `quorum audit verify` against the app's store; returns (exit code, output).
pub fn audit_verify(app: &TestApp) -> (i32, String) {
    let out = std::process::Command::new(quorum_bin())
        .args(["audit", "verify"])
        .env_clear()
        .env("QUORUM__DATA_DIR", app.data_dir.path())
        .env("QUORUM__DATABASE__URL", app.database_url())
        .output()
        .expect("run quorum audit verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// One directory of compiled guests for every test app: compiling is seconds of CPU that each
/// app would otherwise spend again in its own data directory. Its files are named by wasmtime
/// version, engine settings and guest, so an older build's file is never taken.
pub fn shared_sandbox_cache() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-cache")
}

pub struct TestApp {
    pub kind: StoreKind,
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
    /// The server's clock; `clock.advance(…)` moves its time forward.
    pub clock: Arc<OffsetClock>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(kind: StoreKind) -> TestApp {
        Self::spawn_with(kind, "").await
    }

    /// Starts the server with `extra_toml` layered over the test configuration.
    pub async fn spawn_with(kind: StoreKind, extra_toml: &str) -> TestApp {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let url = match kind {
            StoreKind::Sqlite => {
                format!("sqlite://{}", data_dir.path().join("quorum.db").display())
            }
            StoreKind::Postgres => fresh_pg_database().await,
        };
        Self::spawn_on(kind, data_dir, &url, extra_toml).await
    }

    /// Starts a server over an existing store URL (a second replica).
    pub async fn spawn_on(
        kind: StoreKind,
        data_dir: tempfile::TempDir,
        url: &str,
        extra_toml: &str,
    ) -> TestApp {
        let toml = format!(
            r#"
demo = true
data_dir = "{dir}"
[database]
url = "{url}"
max_connections = 5
[auth]
jwt_secret = "{JWT_SECRET}"
hash_concurrency = 2
[rate_limit]
auth_per_minute = 60000
auth_burst = 10000
api_per_second = 10000
api_burst = 10000
[log]
filter = "warn"
[executor]
sandbox_cache_dir = "{cache}"
"#,
            dir = data_dir.path().display(),
            cache = shared_sandbox_cache().display()
        );
        let base_cfg: toml::Table = toml.parse().expect("toml");
        let extra: toml::Table = extra_toml.parse().expect("extra toml");
        let merged = merge(base_cfg, extra);
        let config =
            Config::from_toml_over_defaults(&merged.to_string()).expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let clock = Arc::new(OffsetClock::default());
        let server = tokio::spawn(quorum_server::run_with_clock(
            config.clone(),
            listener,
            async move {
                let _ = stopped.await;
            },
            clock.clone(),
        ));
        let app = TestApp {
            kind,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            config,
            data_dir,
            clock,
            stop: Some(stop),
            server: Some(server),
        };
        app.wait_ready().await;
        app
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server at {} did not become ready", self.base);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    pub fn database_url(&self) -> String {
        self.config.database_url()
    }

    /// Signs in as a demo actor.
    pub async fn login(&self, actor: Actor) -> Session {
        let email = actor.email().expect("anonymous cannot sign in");
        self.login_as(email, PASSWORD).await
    }

    pub async fn login_as(&self, email: &str, password: &str) -> Session {
        let r = self.raw_login(email, password, "quorum-tests").await;
        assert_eq!(r.status(), StatusCode::OK, "login as {email}");
        Session::from_login(r).await
    }

    pub async fn raw_login(
        &self,
        email: &str,
        password: &str,
        user_agent: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .header("user-agent", user_agent)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login request")
    }

    /// A request with an optional bearer token; returns status and JSON body (Null if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    /// Id of a demo POD by name.
    pub async fn pod_id(&self, name: &str) -> String {
        let admin = self.login(Actor::Admin).await;
        let (_, pods) = self.get("/api/v1/pods", &admin.token).await;
        pods["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|p| p["name"] == name)
            .expect("pod")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Id of the demo SQLite instance.
    pub async fn shop_id(&self) -> String {
        let admin = self.login(Actor::Admin).await;
        let (_, list) = self.get("/api/v1/instances", &admin.token).await;
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["name"] == "demo-shop")
            .expect("demo-shop")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Files a read query on demo-shop for `payments` as `who`; returns the request detail.
    pub async fn file_request(&self, who: &Session, content: &str) -> Value {
        let body = json!({
            "pod_id": self.pod_id("payments").await, "instance_id": self.shop_id().await, "database": "main",
            "kind": "query", "mode": "read", "content": content,
            "justification": "Investigating a customer ticket about missing orders",
        });
        let (status, created) = self.post("/api/v1/requests", &who.token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// Id of a user by email.
    pub async fn user_id(&self, email: &str) -> String {
        let admin = self.login(Actor::Admin).await;
        let (_, users) = self
            .get(&format!("/api/v1/users?q={email}"), &admin.token)
            .await;
        users["items"][0]["id"]
            .as_str()
            .expect("user id")
            .to_owned()
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.data_dir, dir)
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(30), server).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("server did not shut down cleanly: {other:?}"),
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn merge(mut base: toml::Table, extra: toml::Table) -> toml::Table {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => {
                let merged = merge(std::mem::take(b), e);
                *b = merged;
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

/// A signed-in client: access token plus the refresh cookie.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub refresh: Option<String>,
    pub body: Value,
}

impl Session {
    pub async fn from_login(r: reqwest::Response) -> Session {
        let refresh = refresh_cookie(&r);
        let body: Value = r.json().await.expect("json");
        Session {
            token: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh,
            body,
        }
    }

    pub fn user_id(&self) -> &str {
        self.body["user"]["id"].as_str().expect("user id")
    }
}

/// The refresh token value from a response's `Set-Cookie`, if any (empty when cleared).
pub fn refresh_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("quorum_refresh="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// Runs each test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! store_tests {
    ($(async fn $name:ident($kind:ident) $body:block)*) => {
        $(
            mod $name {
                use super::*;

                async fn body($kind: $crate::harness::StoreKind) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    body($crate::harness::StoreKind::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    body($crate::harness::StoreKind::Postgres).await
                }
            }
        )*
    };
}

/// Polls until the execution leaves `running`.
pub async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..600 {
        let (status, e) = app.get(&format!("/api/v1/executions/{id}"), token).await;
        assert_eq!(status, StatusCode::OK, "{e}");
        if e["status"] != "running" && e["status"] != "queued" {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("execution {id} did not finish");
}

/// The rows an execution shows (`GET …/rows`), as the developer sees them.
pub async fn shown_rows(app: &TestApp, execution: &Value) -> Value {
    let dan = app.login(Actor::Developer).await;
    let id = execution["id"].as_str().expect("execution id");
    let (status, rows) = app
        .get(&format!("/api/v1/executions/{id}/rows"), &dan.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{rows}");
    rows
}

/// A PostgreSQL instance on `target`, usable by the payments POD.
pub async fn pg_instance(app: &TestApp, target: &PgTarget, run_mode: &str) -> String {
    let admin = app.login(Actor::Admin).await;
    let body = json!({"name": format!("shop-{}", &target.database[8..]), "engine": "postgres", "host": target.host, "port": target.port,
        "user": target.user, "secret": target.password, "tls": "disable", "environment": "staging",
        "allowed_pod_ids": [app.pod_id("payments").await], "run_mode": run_mode});
    let (status, i) = app.post("/api/v1/instances", &admin.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{i}");
    i["id"].as_str().expect("id").to_owned()
}

/// The `items` prices on `target`, in id order.
pub async fn prices(target: &PgTarget) -> Vec<String> {
    let mut c = target.inspect().await;
    sqlx::query_scalar("SELECT price::text FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .expect("prices")
}

/// The MongoDB-wire test server `cargo xtask test` started (secantusdb, as a replica set).
pub fn mongo_url() -> String {
    std::env::var("QUORUM_TEST_MONGO_URL").unwrap_or_else(|_| {
        panic!("QUORUM_TEST_MONGO_URL is not set: run the suite with `cargo xtask test`, which starts a secantusdb server")
    })
}

/// The same server software started `--standalone`: no replica set, hence no transactions.
pub fn mongo_standalone_url() -> String {
    std::env::var("QUORUM_TEST_MONGO_STANDALONE_URL").unwrap_or_else(|_| {
        panic!("QUORUM_TEST_MONGO_STANDALONE_URL is not set: run the suite with `cargo xtask test`, which starts a standalone secantusdb server")
    })
}

/// A database of its own on the MongoDB test server, seeded with three `orders`.
pub struct MongoTarget {
    pub name: String,
    pub db: mongodb::Database,
}

/// The `_id` of the first seeded order.
pub const FIRST_ORDER: &str = "65a000000000000000000001";

pub async fn mongo_target() -> MongoTarget {
    mongo_target_at(&mongo_url()).await
}

/// `mongo_target` on the server at `url`.
pub async fn mongo_target_at(url: &str) -> MongoTarget {
    use mongodb::bson::{self, doc, oid::ObjectId};
    let client = mongodb::Client::with_uri_str(url)
        .await
        .expect("mongodb client");
    let name = format!("qt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let db = client.database(&name);
    let first = ObjectId::parse_str(FIRST_ORDER).expect("oid");
    let placed = bson::DateTime::from_millis(1_700_000_000_000);
    db.collection("orders")
        .insert_many([
            doc! {"_id": first, "status": "open", "qty": 3, "total": "19.99".parse::<bson::Decimal128>().expect("decimal"),
                  "big": 9_007_199_254_740_993_i64, "placed": placed,
                  "blob": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2, 3] }},
            doc! {"status": "open", "qty": 1},
            doc! {"status": "closed", "qty": 5},
        ])
        .await
        .expect("seed orders");
    MongoTarget { name, db }
}

impl MongoTarget {
    /// Documents of `collection` matching `filter`.
    pub async fn count(&self, collection: &str, filter: mongodb::bson::Document) -> u64 {
        self.db
            .collection::<mongodb::bson::Document>(collection)
            .count_documents(filter)
            .await
            .expect("count")
    }

    pub async fn collections(&self) -> Vec<String> {
        let mut names = self.db.list_collection_names().await.expect("collections");
        names.sort();
        names
    }
}

/// A MongoDB instance on the test server, usable by the payments POD, with its databases synced.
pub async fn mongo_instance(app: &TestApp, run_mode: &str) -> String {
    mongo_instance_at(app, run_mode, &mongo_url()).await
}

/// `mongo_instance` for the server at `url`.
pub async fn mongo_instance_at(app: &TestApp, run_mode: &str, url: &str) -> String {
    let admin = app.login(Actor::Admin).await;
    let body = json!({"name": format!("events-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]), "engine": "mongodb",
        "uri": url, "environment": "staging", "tls": "disable",
        "allowed_pod_ids": [app.pod_id("payments").await], "run_mode": run_mode});
    let (status, i) = app.post("/api/v1/instances", &admin.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{i}");
    let id = i["id"].as_str().expect("id").to_owned();
    let (status, dbs) = app
        .post(
            &format!("/api/v1/instances/{id}/databases/sync"),
            &admin.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dbs}");
    id
}
