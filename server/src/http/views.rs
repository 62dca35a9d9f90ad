//! Response bodies. Built from store records here, so nothing the store holds (password hashes,
//! token hashes) can reach a response by accident.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::Role;
use crate::domain::audit::AuditEvent;
use crate::store::{Pod, PodSummary, Session, User};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub home_pod_id: Option<Uuid>,
    pub disabled: bool,
    /// Locked after too many failed sign-ins; an admin must unlock.
    pub locked: bool,
    pub must_change_password: bool,
    pub failed_logins: i32,
    /// Sign-in attempts are refused until then (after repeated failures).
    pub delayed_until: Option<DateTime<Utc>>,
    pub locked_at: Option<DateTime<Utc>>,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.0,
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            home_pod_id: u.home_pod_id.map(|p| p.0),
            disabled: u.disabled,
            locked: u.locked_at.is_some(),
            must_change_password: u.must_change_password,
            failed_logins: u.failed_logins,
            delayed_until: u.delayed_until,
            locked_at: u.locked_at,
            password_changed_at: u.password_changed_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A person as other people see them (POD member lists).
#[derive(Debug, Serialize, ToSchema)]
pub struct PersonView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
}

impl From<&User> for PersonView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.0,
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            disabled: u.disabled,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PodRef {
    pub id: Uuid,
    pub name: String,
}

impl From<&Pod> for PodRef {
    fn from(p: &Pod) -> Self {
        Self {
            id: p.id.0,
            name: p.name.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PodView {
    pub id: Uuid,
    pub name: String,
    pub slack_channel: Option<String>,
    pub manager_count: i64,
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&PodSummary> for PodView {
    fn from(s: &PodSummary) -> Self {
        Self {
            id: s.pod.id.0,
            name: s.pod.name.clone(),
            slack_channel: s.pod.slack_channel.clone(),
            manager_count: s.manager_count,
            member_count: s.member_count,
            created_at: s.pod.created_at,
            updated_at: s.pod.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PodDetail {
    pub id: Uuid,
    pub name: String,
    pub slack_channel: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub managers: Vec<PersonView>,
    /// Users whose home POD this is.
    pub members: Vec<PersonView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The session this request was made from.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: &Session, current: bool) -> Self {
        Self {
            id: s.id.0,
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            current,
        }
    }
}

macro_rules! page_type {
    ($name:ident, $item:ty) => {
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Matching items across all pages.
            pub total: i64,
            pub page: u32,
            pub per_page: u32,
        }
    };
}

page_type!(UserPage, UserView);
page_type!(PodPage, PodView);
page_type!(AuditPage, AuditEvent);

/// A user's home POD and the PODs they manage (sorted by name).
pub async fn pod_refs(
    state: &super::AppState,
    user: &User,
) -> Result<(Option<PodRef>, Vec<PodRef>), super::error::ApiError> {
    let home = match user.home_pod_id {
        Some(id) => state.store.get_pod(id).await?.as_ref().map(PodRef::from),
        None => None,
    };
    let mut managed = Vec::new();
    for id in state.store.managed_pods(user.id).await? {
        if let Some(p) = state.store.get_pod(id).await? {
            managed.push(PodRef::from(&p));
        }
    }
    managed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((home, managed))
}

/// Page number and size from a query, with defaults (1, 50) and bounds validated by the query.
pub fn paging(page: Option<u32>, per_page: Option<u32>) -> (u32, u32, i64, i64) {
    let page = page.unwrap_or(1).max(1);
    let per_page = per_page.unwrap_or(50).clamp(1, 100);
    (
        page,
        per_page,
        i64::from(per_page),
        i64::from(page - 1) * i64::from(per_page),
    )
}

/// For PATCH fields where `null` means "clear" and absence means "leave alone".
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
