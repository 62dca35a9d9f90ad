//! Demo data for the embedded default (`cargo xtask run`): two PODs and a handful of accounts
//! sharing one known password, created only when the store has no users at all.

use secrecy::SecretString;
use serde_json::json;

use crate::auth::PasswordHasher;
use crate::domain::Role;
use crate::domain::audit::NewAuditEvent;
use crate::store::{NewUser, SharedStore};

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

/// Seeds the demo organisation into an empty store; returns whether it did.
pub async fn seed(store: &SharedStore, hasher: &PasswordHasher) -> anyhow::Result<bool> {
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
            let mut managers: Vec<_> = store
                .pod_people(pod.id)
                .await?
                .0
                .iter()
                .map(|u| u.id)
                .collect();
            managers.push(user.id);
            store
                .set_pod_managers(
                    pod.id,
                    &managers,
                    NewAuditEvent::new("pod.managers_set").details(source.clone()),
                )
                .await?;
        }
    }
    Ok(true)
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
