//! Demo data for the embedded default (`cargo xtask run`): two PODs and a handful of accounts
//! sharing one known password, created only when the store has no users at all.

use secrecy::SecretString;
use serde_json::json;

use crate::auth::PasswordHasher;
use crate::domain::Role;
use crate::domain::audit::NewAuditEvent;
use std::path::Path;

use crate::clock::SharedClock;
use crate::domain::InstanceId;
use crate::domain::instance::{Engine, LimitOverrides, RunMode, TlsMode};
use crate::store::{Instance, NewUser, SharedStore};

pub const DEMO_PASSWORD: &str = "quorum-demo-password";

#[derive(Debug)]
pub struct DemoAccount {
    pub email: &'static str,
    pub name: &'static str,
    pub role: Role,
    pub pod: Option<&'static str>,
    pub manages: Option<&'static str>,
}

pub const ACCOUNTS: &[DemoAccount] = &[
    DemoAccount {
        email: "admin@example.com",
        name: "Ada Admin",
        role: Role::Admin,
        pod: None,
        manages: None,
    },
    DemoAccount {
        email: "maya@example.com",
        name: "Maya Manager",
        role: Role::Manager,
        pod: Some("payments"),
        manages: Some("payments"),
    },
    DemoAccount {
        email: "dan@example.com",
        name: "Dan Developer",
        role: Role::Developer,
        pod: Some("payments"),
        manages: None,
    },
    DemoAccount {
        email: "dee@example.com",
        name: "Dee Developer",
        role: Role::Developer,
        pod: Some("payments"),
        manages: None,
    },
    DemoAccount {
        email: "gina@example.com",
        name: "Gina Growth",
        role: Role::Manager,
        pod: Some("growth"),
        manages: Some("growth"),
    },
    DemoAccount {
        email: "gus@example.com",
        name: "Gus Growth",
        role: Role::Developer,
        pod: Some("growth"),
        manages: None,
    },
];

pub const PODS: &[(&str, &str)] = &[
    ("payments", "#payments-approvals"),
    ("growth", "#growth-approvals"),
];

/// The demo SQLite instance: a small shop database in the data directory.
pub const SHOP_INSTANCE: &str = "demo-shop";
pub const SHOP_FILE: &str = "demo-shop.db";

/// Seeds the demo organisation into an empty store; returns whether it did.
pub async fn seed(
    store: &SharedStore,
    hasher: &PasswordHasher,
    data_dir: &Path,
    clock: &SharedClock,
) -> anyhow::Result<bool> {
    if store.count_users().await? > 0 {
        return Ok(false);
    }
    let source = json!({ "source": "demo" });
    for (name, channel) in PODS {
        if store.find_pod_by_name(name).await?.is_none() {
            store
                .create_pod(
                    name,
                    Some(channel),
                    NewAuditEvent::new("pod.created").details(source.clone()),
                )
                .await?;
        }
    }
    let hash = hasher.hash(SecretString::from(DEMO_PASSWORD)).await?;
    for a in ACCOUNTS {
        let home = match a.pod {
            Some(p) => store.find_pod_by_name(p).await?.map(|p| p.id),
            None => None,
        };
        let new = NewUser {
            email: a.email.to_owned(),
            name: a.name.to_owned(),
            role: a.role,
            home_pod_id: home,
            password_hash: hash.clone(),
            must_change_password: false,
        };
        let user = store
            .create_user(
                &new,
                NewAuditEvent::new("user.created").details(source.clone()),
            )
            .await?;
        if let Some(pod) = a.manages
            && let Some(pod) = store.find_pod_by_name(pod).await?
        {
            store
                .add_pod_manager(
                    pod.id,
                    user.id,
                    NewAuditEvent::new("pod.managers_set").details(source.clone()),
                )
                .await?;
        }
    }
    create_shop_database(&data_dir.join(SHOP_FILE)).await?;
    let now = clock.now();
    let mut allowed = Vec::new();
    for (name, _) in PODS {
        allowed.extend(store.find_pod_by_name(name).await?.map(|p| p.id));
    }
    let shop = Instance {
        id: InstanceId::new(),
        name: SHOP_INSTANCE.to_owned(),
        engine: Engine::Sqlite,
        host: None,
        port: None,
        username: None,
        tls_mode: TlsMode::Disable,
        uri: None,
        path: Some(SHOP_FILE.to_owned()),
        environment: "demo".to_owned(),
        required_approvals: 1,
        run_mode: RunMode::OnApproval,
        slack_approval: true,
        limits: LimitOverrides::default(),
        secret: None,
        allowed_pods: allowed,
        databases_synced_at: None,
        created_at: now,
        updated_at: now,
    };
    store
        .create_instance(
            &shop,
            NewAuditEvent::new("instance.created").details(source.clone()),
        )
        .await?;
    store
        .set_instance_databases(
            shop.id,
            &[String::from("main")],
            NewAuditEvent::new("instance.databases_synced"),
        )
        .await?;
    Ok(true)
}

/// Writes the demo shop (customers, products, orders: a few thousand rows) unless it exists.
/// The rows come from a fixed-seed generator, so every demo has the same data.
async fn create_shop_database(path: &Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    if path.exists() {
        return Ok(());
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    let mut tx = conn.begin().await?;
    for ddl in [
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, \
         country TEXT NOT NULL, created_at TEXT NOT NULL)",
        "CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL, \
         price_cents INTEGER NOT NULL CHECK (price_cents > 0))",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers (id), \
         product_id INTEGER NOT NULL REFERENCES products (id), quantity INTEGER NOT NULL, \
         status TEXT NOT NULL CHECK (status IN ('open', 'paid', 'shipped', 'refunded')), \
         total_cents INTEGER NOT NULL, created_at TEXT NOT NULL)",
        "CREATE INDEX orders_customer ON orders (customer_id)",
        "CREATE INDEX orders_status ON orders (status, created_at)",
    ] {
        sqlx::query(ddl).execute(&mut *tx).await?;
    }
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    const FIRST: &[&str] = &[
        "Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Gao", "Hugo", "Ines", "Jonas", "Kemi",
        "Luis",
    ];
    const LAST: &[&str] = &[
        "Silva", "Okafor", "Müller", "Tanaka", "Nguyen", "Rossi", "Kowalski", "Haddad", "Smith",
        "García",
    ];
    const COUNTRIES: &[&str] = &["BR", "DE", "FR", "GB", "IN", "JP", "NG", "PL", "US", "VN"];
    const PRODUCTS: &[&str] = &[
        "Espresso beans",
        "Pour-over kettle",
        "Burr grinder",
        "Paper filters",
        "Travel mug",
        "Milk frother",
    ];
    for id in 1..=1000_u64 {
        let first = FIRST[next(FIRST.len() as u64) as usize];
        let last = LAST[next(LAST.len() as u64) as usize];
        let day = 1 + next(28);
        let month = 1 + next(12);
        sqlx::query("INSERT INTO customers (id, email, name, country, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id as i64)
            .bind(format!("customer{id}@shop.example"))
            .bind(format!("{first} {last}"))
            .bind(COUNTRIES[next(COUNTRIES.len() as u64) as usize])
            .bind(format!("2025-{month:02}-{day:02}T10:00:00Z"))
            .execute(&mut *tx)
            .await?;
    }
    for (i, name) in PRODUCTS.iter().enumerate() {
        sqlx::query("INSERT INTO products (id, sku, name, price_cents) VALUES ($1, $2, $3, $4)")
            .bind(i as i64 + 1)
            .bind(format!("SKU-{:04}", i + 1))
            .bind(*name)
            .bind(500 + next(9500) as i64)
            .execute(&mut *tx)
            .await?;
    }
    const STATUSES: &[&str] = &[
        "open", "paid", "paid", "shipped", "shipped", "shipped", "refunded",
    ];
    for id in 1..=4000_u64 {
        let quantity = 1 + next(4) as i64;
        let price = 500 + next(9500) as i64;
        let day = 1 + next(28);
        let month = 1 + next(12);
        sqlx::query(
            "INSERT INTO orders (id, customer_id, product_id, quantity, status, total_cents, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id as i64)
        .bind(1 + next(1000) as i64)
        .bind(1 + next(PRODUCTS.len() as u64) as i64)
        .bind(quantity)
        .bind(STATUSES[next(STATUSES.len() as u64) as usize])
        .bind(quantity * price)
        .bind(format!("2026-{month:02}-{day:02}T12:00:00Z"))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// What to tell a newcomer at start-up.
pub fn banner(url: &str) -> String {
    let mut s = format!(
        "\nQuorum demo is running at {url}\nSign in with any of these accounts (password: {DEMO_PASSWORD}):\n"
    );
    for a in ACCOUNTS {
        let what = match (a.role, a.pod) {
            (Role::Admin, _) => "admin".to_owned(),
            (role, Some(pod)) => format!("{} in POD {pod}", role.as_str()),
            (role, None) => role.as_str().to_owned(),
        };
        s.push_str(&format!("  {:<22} {what}\n", a.email));
    }
    s.push_str(&format!(
        "API: curl -s -X POST {url}/api/v1/auth/login -H 'content-type: application/json' \\\n       -d '{{\"email\":\"dan@example.com\",\"password\":\"{DEMO_PASSWORD}\"}}'\n"
    ));
    s
}
