//! User administration (admins only).

use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{AdministerOrg, ClientMeta, JsonBody, PathId, QueryParams, Require};
use super::views::{PodRef, UserPage, UserView, double_option, paging, pod_refs};
use crate::domain::audit::NewAuditEvent;
use crate::domain::org::{UserChangeRefusal, check_user_change};
use crate::domain::password::{self, check_new_password};
use crate::domain::text::{find_forbidden_in_line, normalize_email};
use crate::domain::{PodId, Role, UserId};
use crate::store::{NewUser, RevokeReason, StoreError, User, UserChange, UserQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(unlock_user))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
    Locked,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Matches email or name (case-insensitive substring).
    #[validate(length(max = 200))]
    pub q: Option<String>,
    pub role: Option<Role>,
    /// Home POD.
    pub pod_id: Option<Uuid>,
    pub status: Option<UserStatus>,
    #[validate(range(min = 1, max = 100_000))]
    pub page: Option<u32>,
    #[validate(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// List users, filtered and paginated (sorted by email).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])), params(UserListQuery),
    responses((status = 200, body = UserPage), (status = 403, body = ErrorEnvelope)))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: Require<AdministerOrg>,
    QueryParams(q): QueryParams<UserListQuery>,
) -> ApiResult<axum::Json<UserPage>> {
    let (page, per_page, limit, offset) = paging(q.page, q.per_page);
    let query = UserQuery {
        search: q.q.filter(|s| !s.trim().is_empty()),
        role: q.role,
        pod_id: q.pod_id.map(PodId),
        disabled: match q.status {
            Some(UserStatus::Active) => Some(false),
            Some(UserStatus::Disabled) => Some(true),
            _ => None,
        },
        locked: match q.status {
            Some(UserStatus::Locked) => Some(true),
            Some(UserStatus::Active) => Some(false),
            _ => None,
        },
        limit,
        offset,
    };
    let result = state.store.list_users(&query).await?;
    Ok(axum::Json(UserPage {
        items: result.items.iter().map(UserView::from).collect(),
        total: result.total,
        page,
        per_page,
    }))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[validate(length(min = 3, max = 320, message = "must be 3 to 320 characters"))]
    pub email: String,
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    pub name: String,
    pub role: Role,
    pub home_pod_id: Option<Uuid>,
    /// Initial password; omit to have one generated. The user must change it at first sign-in.
    #[validate(length(max = 1024))]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserDetail {
    pub user: UserView,
    pub home_pod: Option<PodRef>,
    pub managed_pods: Vec<PodRef>,
    /// Present once, when the server generated the password; give it to the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<String>,
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::unprocessable(
            "validation_failed",
            "name: must not be blank",
        ));
    }
    if let Some(bad) = find_forbidden_in_line(name) {
        return Err(ApiError::unprocessable(
            "invalid_character",
            format!(
                "name contains a control or invisible character ({})",
                bad.describe()
            ),
        ));
    }
    Ok(name.to_owned())
}

async fn existing_pod(state: &AppState, id: Option<Uuid>) -> ApiResult<Option<PodId>> {
    match id {
        None => Ok(None),
        Some(id) => match state.store.get_pod(PodId(id)).await? {
            Some(p) => Ok(Some(p.id)),
            None => Err(ApiError::unprocessable(
                "unknown_pod",
                format!("there is no POD with id {id}"),
            )),
        },
    }
}

async fn detail(
    state: &AppState,
    user: &User,
    initial_password: Option<String>,
) -> ApiResult<UserDetail> {
    let (home_pod, managed_pods) = pod_refs(state, user).await?;
    Ok(UserDetail {
        user: UserView::from(user),
        home_pod,
        managed_pods,
        initial_password,
    })
}

/// Create a user with an initial password they must change at first sign-in.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUserRequest,
    responses(
        (status = 201, body = UserDetail),
        (status = 409, description = "Email already in use", body = ErrorEnvelope),
        (status = 422, body = ErrorEnvelope),
    ))]
pub async fn create_user(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    JsonBody(body): JsonBody<CreateUserRequest>,
) -> ApiResult<(StatusCode, axum::Json<UserDetail>)> {
    let email = normalize_email(&body.email).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_email",
            "email must be a plain ASCII address like name@example.com",
        )
    })?;
    let name = check_name(&body.name)?;
    let home_pod_id = existing_pod(&state, body.home_pod_id).await?;
    let (password, generated) = match body.password {
        Some(p) => {
            check_new_password(&p, &email, state.config.auth.password_min_length)
                .map_err(|e| ApiError::unprocessable("weak_password", e.message()))?;
            (p, None)
        }
        None => {
            let p = password::generate();
            (p.clone(), Some(p))
        }
    };
    let password_hash = state.hasher.hash(SecretString::from(password)).await?;
    let new = NewUser {
        email,
        name,
        role: body.role,
        home_pod_id,
        password_hash,
        must_change_password: true,
    };
    let event = NewAuditEvent::new("user.created")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({ "email": new.email, "role": new.role.as_str(), "home_pod_id": new.home_pod_id }));
    let user = state
        .store
        .create_user(&new, event)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::conflict("email_taken", m),
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        axum::Json(detail(&state, &user, generated).await?),
    ))
}

/// One user, with their home and managed PODs.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = UserDetail), (status = 404, body = ErrorEnvelope)))]
pub async fn get_user(
    State(state): State<AppState>,
    _admin: Require<AdministerOrg>,
    PathId(id): PathId<UserId>,
) -> ApiResult<axum::Json<UserDetail>> {
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(axum::Json(detail(&state, &user, None).await?))
}

#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    pub name: Option<String>,
    /// Changing the role ends the user's sessions.
    pub role: Option<Role>,
    /// `null` removes the home POD.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>, nullable)]
    pub home_pod_id: Option<Option<Uuid>>,
    /// Disabling ends the user's sessions.
    pub disabled: Option<bool>,
    /// Generate a new initial password (returned once) that must be changed at next sign-in;
    /// ends the user's sessions.
    #[serde(default)]
    pub reset_password: bool,
}

/// Change a user's name, role, home POD or status, or reset their password.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = UpdateUserRequest,
    responses(
        (status = 200, body = UserDetail),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "Would leave no admin, or an admin locking themselves out", body = ErrorEnvelope),
    ))]
pub async fn update_user(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<UserId>,
    JsonBody(body): JsonBody<UpdateUserRequest>,
) -> ApiResult<axum::Json<UserDetail>> {
    let target = state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let name = body.name.as_deref().map(check_name).transpose()?;
    let home_pod_id = match body.home_pod_id {
        Some(inner) => Some(existing_pod(&state, inner).await?),
        None => None,
    };
    let disable = body.disabled == Some(true) && !target.disabled;
    let active_admins = state.store.count_active_admins().await?;
    check_user_change(
        admin.user.id,
        target.id,
        target.role,
        body.role,
        disable,
        u64::try_from(active_admins).unwrap_or(0),
    )
    .map_err(|r| match r {
        UserChangeRefusal::LastAdmin => ApiError::conflict(
            "last_admin",
            "this would leave no active admin; promote someone else first",
        ),
        UserChangeRefusal::SelfLockout => ApiError::conflict(
            "cannot_modify_self",
            "admins cannot disable or demote themselves; ask another admin",
        ),
    })?;
    let role_changed = body.role.is_some_and(|r| r != target.role);
    let (generated, reset_hash) = if body.reset_password {
        let p = password::generate();
        let hash = state.hasher.hash(SecretString::from(p.clone())).await?;
        (Some(p), Some(hash))
    } else {
        (None, None)
    };
    let revoke = if disable {
        Some(RevokeReason::Disabled)
    } else if role_changed {
        Some(RevokeReason::RoleChange)
    } else if body.reset_password {
        Some(RevokeReason::PasswordChange)
    } else {
        None
    };
    let change = UserChange {
        name,
        role: body.role,
        home_pod_id,
        disabled: body.disabled,
        reset_password_hash: reset_hash,
    };
    let event = NewAuditEvent::new("user.updated")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent)
        .details(json!({
            "name": change.name,
            "role": change.role.map(Role::as_str),
            "home_pod_id": change.home_pod_id,
            "disabled": change.disabled,
            "password_reset": body.reset_password,
            "sessions_revoked": revoke.map(RevokeReason::as_str),
        }));
    let user = state.store.update_user(id, &change, revoke, event).await?;
    Ok(axum::Json(detail(&state, &user, generated).await?))
}

/// Clear a user's failed sign-in counter, delay and lock.
#[utoipa::path(post, path = "/api/v1/users/{id}/unlock", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = UserDetail), (status = 404, body = ErrorEnvelope)))]
pub async fn unlock_user(
    State(state): State<AppState>,
    meta: ClientMeta,
    Require(admin, _): Require<AdministerOrg>,
    PathId(id): PathId<UserId>,
) -> ApiResult<axum::Json<UserDetail>> {
    let event = NewAuditEvent::new("user.unlocked")
        .actor(admin.user.id)
        .origin(meta.ip, meta.user_agent);
    if !state.store.unlock_user(id, event).await? {
        return Err(ApiError::not_found("user"));
    }
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(axum::Json(detail(&state, &user, None).await?))
}
